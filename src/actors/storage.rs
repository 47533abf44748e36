//! `StorageActor`: the state machine behind a mailbox.
//!
//! It applies committed entries in the order the RaftActor sends them (a sync actor on exactly
//! one thread: more threads would reorder them), reports each batch to the ClientApiActor and
//! the applied index to the RaftActor, answers reads once the state machine has caught up with
//! their read index, and makes a snapshot every `snapshot_threshold` applied entries, or
//! after as many entries as the last snapshot held records of history, if that is more.
//!
//! Snapshots: taking one (a sync, and noting the applied index and revision) is done here;
//! building it (reading and serializing the whole revision log, in time proportional to the
//! history) is done on a thread of its own, one at a time, while applies and reads go on.
//! The built snapshot comes back as [`SnapshotBuilt`], and only then is the RaftActor told
//! it may compact its log. Until then physical compaction is held back, because it is the
//! one thing that removes records the build may still have to read; a snapshot from the
//! leader waits for the build to end before it replaces the state.
//!
//! Compaction: applying a Compact only moves the compacted revision (reads below it fail at
//! once); removing the history it made unreadable is done here afterwards, one bounded step
//! ([`COMPACTION_STEP_RECORDS`] records) per [`CompactionStep`] message. Each step sends the
//! next to this actor's own mailbox behind whatever is queued, so applies and reads that
//! arrive meanwhile wait for at most one step, never for the whole removal.

use std::collections::BTreeMap;
use std::thread::JoinHandle;
use std::time::Instant;

use actix::prelude::*;

use crate::actors::messages::*;
use crate::config::UNSAFE_WATCH_GAP_EVERY;
use crate::consensus::SnapshotStore;
use crate::error::{fatal_disk, Error};
use crate::mvcc::COMPACTION_STEP_RECORDS;
use crate::state_machine::StateHash;
use crate::state_machine::StateMachine;

/// Most reads parked waiting for their read index to be applied; more are refused with
/// `RESOURCE_EXHAUSTED` (they would otherwise pile up while apply lags).
pub const MAX_PARKED_READS: usize = 8_192;

/// StorageActor → itself: remove the next step of compacted history.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CompactionStep;

/// The snapshot builder thread → StorageActor: the snapshot of `index` is built, and saved
/// (`Ok(true)`), or found older than the stored one (`Ok(false)`), or failed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SnapshotBuilt {
    pub index: u64,
    pub result: crate::Result<bool>,
    /// Time the build took, for the log.
    pub took: std::time::Duration,
}

/// The name of the snapshot builder thread.
const SNAPSHOT_THREAD: &str = "snapshot";

/// A read waiting for the applied index to reach its read index.
type ParkedRead = (ReadQuery, Reply<ReadAnswer>);

/// Applies committed entries and answers reads, on one thread (see the module docs).
pub struct StorageActor {
    sm: StateMachine,
    /// The snapshot file, shared with the log store; a snapshot made here is what the RaftActor
    /// then compacts the log to.
    snapshots: SnapshotStore,
    /// A new snapshot is made once the applied index is this far past the stored one.
    snapshot_threshold: u64,
    /// Gets every applied batch (the ClientApiActor).
    applied_to: Option<Recipient<Applied>>,
    /// Gets the applied index (the RaftActor).
    progress_to: Option<Recipient<ApplyProgress>>,
    /// Gets new snapshot indexes (the RaftActor).
    snapshot_to: Option<Recipient<SnapshotCreated>>,
    /// Reads waiting for their index, keyed by it.
    parked: BTreeMap<u64, Vec<ParkedRead>>,
    /// Reads in `parked`, all indexes together; at [`MAX_PARKED_READS`] new ones are refused.
    parked_count: usize,
    /// A [`CompactionStep`] is in the mailbox: at most one at a time.
    compaction_scheduled: bool,
    /// Reads waiting for physical compaction to reach a revision (etcd's `physical`
    /// compactions), answered after the step that gets there. At most [`MAX_PARKED_READS`]
    /// of them; those whose caller has gone are dropped when that limit is reached.
    compaction_waiters: Vec<(i64, Reply<ReadAnswer>)>,
    /// The thread building a snapshot, if one is, and the index of that snapshot; at most
    /// one at a time.
    snapshot_build: Option<(u64, JoinHandle<()>)>,
    /// A compaction step was due while a snapshot was being built; it runs once the build
    /// is done.
    compaction_deferred: bool,
    /// Records of history when the last snapshot was taken (at start: now), which sets the
    /// interval to the next ([`StorageActor::snapshot_interval`]).
    snapshot_records: u64,
    /// Gets the events of every apply batch that changed the store (the WatchHubActor).
    events_to: Option<Recipient<LiveEvents>>,
    /// The LeaseActor: the lease table, then what each apply batch changes in it.
    leases_to: Option<ConnectLeases>,
    /// The applied term the LeaseActor was last told.
    lease_term_sent: u64,
    /// Whether those events carry `prev_kv`, which costs a read of each old value: only
    /// while some watcher wants it.
    prev_kv_wanted: bool,
    /// The deliberate fault `unsafe_watch_gaps`: batches of events sent so far, and, after
    /// one was left out, the revision the next must claim to follow so the hub sees no gap.
    watch_gaps: Option<(u64, Option<i64>)>,
}

/// The records of history `sm` holds.
fn record_count(sm: &StateMachine) -> u64 {
    u64::try_from(sm.record_count()).unwrap_or(u64::MAX)
}

impl StorageActor {
    /// Wraps `sm`. `applied_to` receives every applied batch.
    pub fn new(
        sm: StateMachine,
        snapshots: SnapshotStore,
        snapshot_threshold: u64,
        applied_to: Option<Recipient<Applied>>,
    ) -> StorageActor {
        StorageActor {
            snapshot_records: record_count(&sm),
            sm,
            snapshots,
            snapshot_threshold,
            applied_to,
            progress_to: None,
            snapshot_to: None,
            parked: BTreeMap::new(),
            parked_count: 0,
            compaction_scheduled: false,
            compaction_waiters: Vec::new(),
            snapshot_build: None,
            compaction_deferred: false,
            events_to: None,
            leases_to: None,
            lease_term_sent: 0,
            prev_kv_wanted: false,
            watch_gaps: None,
        }
    }

    /// The deliberate fault `unsafe_watch_gaps` (for the watch checker's teeth): one batch
    /// of events in [`UNSAFE_WATCH_GAP_EVERY`] is left out, and the gap hidden.
    pub fn with_watch_gaps(mut self) -> Self {
        self.watch_gaps = Some((0, None));
        self
    }

    /// Sets where progress and snapshot notices go (tests use this instead of [`Connect`]).
    pub fn with_raft(
        mut self,
        progress: Recipient<ApplyProgress>,
        snapshot: Recipient<SnapshotCreated>,
    ) -> Self {
        self.progress_to = Some(progress);
        self.snapshot_to = Some(snapshot);
        self
    }

    fn answer(&self, query: &ReadQuery) -> crate::Result<ReadAnswer> {
        let result = match query {
            ReadQuery::Get { key } => ReadResult::Value(self.sm.get(key)?),
            ReadQuery::Range(req) => ReadResult::Range(self.sm.range(req)?),
            ReadQuery::HashKv { revision } => ReadResult::HashKv(self.sm.hash_kv(*revision)?),
            ReadQuery::PhysicallyCompacted { .. } => {
                ReadResult::PhysicallyCompacted(self.sm.physically_compacted())
            }
            ReadQuery::List {
                prefix,
                start,
                limit,
                max_bytes,
                keys_only,
            } => ReadResult::Page(
                self.sm
                    .list(prefix, start, *limit, *max_bytes, *keys_only)?,
            ),
        };
        Ok(ReadAnswer {
            result,
            applied_index: self.sm.applied().index,
            term: 0,
        })
    }

    fn wake_parked(&mut self) {
        let applied = self.sm.applied().index;
        while let Some(entry) = self.parked.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for (query, reply) in entry.remove() {
                self.parked_count -= 1;
                let _ = reply.send(self.answer(&query));
            }
        }
    }

    /// Stops the node on a state machine failure, marking the database for rebuilding first:
    /// after a sled error nothing it holds is believed at the next start.
    fn fatal(&mut self, context: &str, e: &Error) -> ! {
        self.sm.mark_untrusted();
        fatal_disk(context, e)
    }

    /// Removes one step of compacted history, schedules the next if more remains, and
    /// answers the waiters it has satisfied.
    fn compaction_step(&mut self, ctx: &mut SyncContext<Self>) {
        if self.snapshot_build.is_some() {
            self.compaction_deferred = true;
            return;
        }
        match self.sm.compact_step(COMPACTION_STEP_RECORDS) {
            Ok(true) if !self.compaction_scheduled => {
                self.compaction_scheduled = true;
                ctx.address().do_send(CompactionStep);
            }
            Ok(_) => {}
            Err(e) => self.fatal("removing compacted history", &e),
        }
        if self.compaction_waiters.is_empty() {
            return;
        }
        let done = self.sm.physically_compacted();
        let (ready, waiting) = std::mem::take(&mut self.compaction_waiters)
            .into_iter()
            .partition(|(revision, _)| *revision <= done);
        self.compaction_waiters = waiting;
        for (_, reply) in ready {
            let answer = self.answer(&ReadQuery::PhysicallyCompacted { revision: done });
            let _ = reply.send(answer);
        }
    }

    /// Takes a snapshot once [`StorageActor::snapshot_interval`] entries were applied since
    /// the stored one, unless one is being built, and starts its build on a thread of its
    /// own.
    fn maybe_snapshot(&mut self, conf_state: &raft::prelude::ConfState, ctx: &SyncContext<Self>) {
        let applied = self.sm.applied().index;
        if self.snapshot_build.is_some()
            || applied < self.snapshots.current().index + self.snapshot_interval()
        {
            return;
        }
        let job = match self.sm.snapshot_job(conf_state) {
            Ok(job) => job,
            Err(e) => self.fatal("taking a snapshot", &e),
        };
        self.snapshot_records = record_count(&self.sm);
        let (snapshots, to) = (self.snapshots.clone(), ctx.address());
        let spawned = std::thread::Builder::new()
            .name(SNAPSHOT_THREAD.into())
            .spawn(move || {
                let started = Instant::now();
                let index = job.index();
                let result = job.build().and_then(|snap| snapshots.save(&snap));
                to.do_send(SnapshotBuilt {
                    index,
                    result,
                    took: started.elapsed(),
                });
            });
        match spawned {
            Ok(handle) => self.snapshot_build = Some((applied, handle)),
            Err(e) => self.fatal("starting the snapshot thread", &Error::Disk(e.to_string())),
        }
    }

    /// Entries between two snapshots: `snapshot_threshold`, or as many as the records of
    /// history the last snapshot wrote, whichever is more. A snapshot costs time in
    /// proportion to the whole history, so waiting for at least that many entries keeps its
    /// cost per write constant however large the store grows (intervals at most double while
    /// every write adds a record); the price is a log, and a replay after a crash, at most
    /// about as long as the history itself.
    fn snapshot_interval(&self) -> u64 {
        self.snapshot_threshold.max(self.snapshot_records)
    }

    /// Hands the events of the entries just applied, which follow revision `after`, to the
    /// watch hub, if they changed the store or a restore came first. After a restore `after`
    /// is the restored revision, so the hub sees the revisions the snapshot skipped as a gap
    /// and catches its watchers up from history.
    fn send_events(&mut self, after: i64, restored: bool) {
        let revision = self.sm.revision();
        if self.events_to.is_none() || (revision == after && !restored) {
            return;
        }
        let events = match self.sm.events(self.prev_kv_wanted) {
            Ok(events) => events,
            Err(e) => self.fatal("reading the events of applied entries", &e),
        };
        let Some(to) = &self.events_to else {
            return;
        };
        let mut after = after;
        if let Some((sent, hidden)) = &mut self.watch_gaps {
            *sent += 1;
            if *sent % UNSAFE_WATCH_GAP_EVERY == 0 {
                hidden.get_or_insert(after);
                return;
            }
            after = hidden.take().unwrap_or(after);
        }
        let batch = LiveEvents {
            batch: crate::watch::LiveBatch {
                after,
                revision,
                events,
                with_prev: self.prev_kv_wanted,
            },
            term: self.sm.applied().term,
        };
        // A full hub drops the batch: the next one shows it the gap.
        let _ = to.try_send(batch);
    }

    /// Waits for the snapshot being built, if any (its [`SnapshotBuilt`] still arrives).
    fn finish_snapshot_build(&mut self) {
        if let Some((_, handle)) = self.snapshot_build.take() {
            if handle.join().is_err() {
                self.fatal(
                    "building a snapshot",
                    &Error::Disk("the snapshot thread panicked".into()),
                );
            }
        }
    }
}

impl Actor for StorageActor {
    type Context = SyncContext<Self>;

    /// A snapshot being built is finished before the actor goes: the file it writes is
    /// replaced atomically, so stopping half-way would lose nothing, but a node that stops
    /// should leave no thread of its own behind.
    fn stopped(&mut self, _: &mut Self::Context) {
        self.finish_snapshot_build();
    }
}

impl Handler<SnapshotBuilt> for StorageActor {
    type Result = ();
    fn handle(&mut self, msg: SnapshotBuilt, ctx: &mut Self::Context) {
        // The build restoring a leader's snapshot waited for is over already, and a later
        // one may be running: only this message's own build is joined (it has ended).
        if self
            .snapshot_build
            .as_ref()
            .is_some_and(|(i, _)| *i == msg.index)
        {
            self.finish_snapshot_build();
        }
        match msg.result {
            // Tell the RaftActor only if this is still the newest snapshot: one received from
            // the leader meanwhile covers more, and the log is already compacted to it.
            Ok(true) if self.snapshots.current().index == msg.index => {
                tracing::info!(
                    index = msg.index,
                    took_ms = msg.took.as_millis() as u64,
                    "snapshot stored"
                );
                if let Some(to) = &self.snapshot_to {
                    to.do_send(SnapshotCreated { index: msg.index });
                }
            }
            Ok(_) => {}
            Err(e) => self.fatal("creating a snapshot", &e),
        }
        if std::mem::take(&mut self.compaction_deferred) {
            self.compaction_step(ctx);
        }
    }
}

impl Handler<Connect> for StorageActor {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        self.progress_to = Some(msg.raft.clone().recipient());
        self.snapshot_to = Some(msg.raft.recipient());
    }
}

impl Handler<CompactionStep> for StorageActor {
    type Result = ();
    fn handle(&mut self, _: CompactionStep, ctx: &mut Self::Context) {
        self.compaction_scheduled = false;
        self.compaction_step(ctx);
    }
}

impl Handler<Apply> for StorageActor {
    type Result = ();
    fn handle(&mut self, msg: Apply, ctx: &mut Self::Context) {
        let mut restored_to = None;
        // The revision the applied entries' events follow: the restored one after a restore.
        let mut events_after = self.sm.revision();
        if let Some(snap) = &msg.snapshot {
            if snap.get_metadata().index > self.sm.applied().index {
                // The build reads the tree the restore is about to replace.
                self.finish_snapshot_build();
                if let Err(e) = self.sm.restore(snap) {
                    self.fatal("restoring a snapshot", &e);
                }
                restored_to = Some(snap.get_metadata().index);
                events_after = self.sm.revision();
                tracing::info!(
                    index = snap.get_metadata().index,
                    "state restored from the leader's snapshot"
                );
            }
        }
        let entries = match self.sm.apply(&msg.entries) {
            Ok(entries) => entries,
            Err(e) => self.fatal("applying committed entries", &e),
        };
        if restored_to.is_some() {
            self.send_lease_table();
        }
        self.send_lease_changes();
        let applied_index = self.sm.applied().index;
        if let Some(to) = &self.applied_to {
            to.do_send(Applied {
                entries,
                applied_index,
                restored_to,
            });
        }
        self.send_events(events_after, restored_to.is_some());
        if let Some(to) = &self.progress_to {
            to.do_send(ApplyProgress {
                index: applied_index,
            });
        }
        self.wake_parked();
        self.maybe_snapshot(&msg.conf_state, ctx);
        self.compaction_step(ctx);
    }
}

impl Handler<Read> for StorageActor {
    type Result = ();
    fn handle(&mut self, msg: Read, _: &mut Self::Context) {
        if let ReadQuery::PhysicallyCompacted { revision } = msg.query {
            if revision > self.sm.physically_compacted() {
                if self.compaction_waiters.len() >= MAX_PARKED_READS {
                    self.compaction_waiters
                        .retain(|(_, reply)| !reply.is_closed());
                }
                if self.compaction_waiters.len() >= MAX_PARKED_READS {
                    let _ = msg.reply.send(Err(Error::Overloaded(format!(
                        "{MAX_PARKED_READS} calls already wait for compaction"
                    ))));
                } else {
                    self.compaction_waiters.push((revision, msg.reply));
                }
                return;
            }
        }
        if msg.min_index <= self.sm.applied().index {
            let _ = msg.reply.send(self.answer(&msg.query));
            return;
        }
        if self.parked_count >= MAX_PARKED_READS {
            // Drop reads whose caller gave up before refusing a live one.
            for reads in self.parked.values_mut() {
                let before = reads.len();
                reads.retain(|(_, reply)| !reply.is_closed());
                self.parked_count -= before - reads.len();
            }
            self.parked.retain(|_, reads| !reads.is_empty());
        }
        if self.parked_count >= MAX_PARKED_READS {
            let _ = msg.reply.send(Err(Error::Overloaded(format!(
                "{MAX_PARKED_READS} reads are already waiting for the state machine to catch up"
            ))));
            return;
        }
        self.parked_count += 1;
        self.parked
            .entry(msg.min_index)
            .or_default()
            .push((msg.query, msg.reply));
    }
}

impl Handler<GetStorageStatus> for StorageActor {
    type Result = MessageResult<GetStorageStatus>;
    fn handle(&mut self, _: GetStorageStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(StorageStatus {
            applied_index: self.sm.applied().index,
            key_count: self.sm.key_count(),
            snapshot_index: self.snapshots.current().index,
            revision: self.sm.revision(),
            db_size: self.sm.db_size(),
        })
    }
}

impl Handler<GetStateHash> for StorageActor {
    type Result = crate::Result<StateHash>;
    fn handle(&mut self, _: GetStateHash, _: &mut Self::Context) -> Self::Result {
        Ok(StateHash {
            applied_index: self.sm.applied().index,
            hash: self.sm.hash()?,
        })
    }
}

impl Handler<FlushStorage> for StorageActor {
    type Result = crate::Result<()>;
    fn handle(&mut self, _: FlushStorage, _: &mut Self::Context) -> Self::Result {
        self.sm.sync()
    }
}

impl StorageActor {
    fn send_lease_table(&self) {
        if let Some(to) = &self.leases_to {
            to.loaded_to
                .do_send(LeasesLoaded(self.sm.leases().iter().collect()));
        }
    }

    /// Hands what the entries just applied did to the lease table to the LeaseActor, before
    /// their writes are answered, with the term applied to (whenever it changes, too).
    fn send_lease_changes(&mut self) {
        let changes = self.sm.lease_changes();
        let applied_term = self.sm.applied().term;
        let Some(to) = &self.leases_to else {
            return;
        };
        if !changes.is_empty() || applied_term != self.lease_term_sent {
            self.lease_term_sent = applied_term;
            to.changes_to.do_send(LeaseChanges {
                changes,
                applied_term,
            });
        }
    }
}

impl Handler<GetLeaseKeys> for StorageActor {
    type Result = MessageResult<GetLeaseKeys>;
    fn handle(&mut self, msg: GetLeaseKeys, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.sm.lease_keys(msg.id))
    }
}

impl Handler<ConnectLeases> for StorageActor {
    type Result = ();
    fn handle(&mut self, msg: ConnectLeases, _: &mut Self::Context) {
        self.leases_to = Some(msg);
        self.send_lease_table();
    }
}

impl Handler<ConnectWatch> for StorageActor {
    type Result = ();
    fn handle(&mut self, msg: ConnectWatch, _: &mut Self::Context) {
        self.events_to = Some(msg.events_to);
    }
}

impl Handler<WantPrevKv> for StorageActor {
    type Result = ();
    fn handle(&mut self, msg: WantPrevKv, _: &mut Self::Context) {
        self.prev_kv_wanted = msg.0;
    }
}

impl Handler<GetRevision> for StorageActor {
    type Result = i64;
    fn handle(&mut self, _: GetRevision, _: &mut Self::Context) -> i64 {
        self.sm.revision()
    }
}

impl Handler<ReadHistory> for StorageActor {
    type Result = crate::Result<crate::mvcc::History>;
    fn handle(&mut self, msg: ReadHistory, _: &mut Self::Context) -> Self::Result {
        self.sm.history(msg.from, msg.with_prev)
    }
}
