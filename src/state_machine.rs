//! The key-value state machine over a sled tree.
//!
//! Committed Raft entries are applied in log order, a whole batch of them in one sled `Batch`
//! that also records the applied index and term and the key count. Because the applied index
//! moves atomically with the data it covers, a restart resumes exactly after the last applied
//! entry and never applies one twice.
//!
//! Durability: applying neither flushes nor syncs. The WAL holds every committed entry durably
//! and the snapshot file everything the WAL has discarded, so whatever sled loses — to a kill,
//! or to a power cut that takes back every write not yet synced — is applied again from them at
//! start-up. sled's periodic flusher is off; the database is made durable as a whole
//! ([`StateMachine::sync`]: flush, then fsync every file and directory under it) at chosen
//! points: after opening, after a snapshot is made or restored, at shutdown, and after a batch
//! holding a value large enough for sled to keep in a blob file of its own.
//!
//! sled itself is not built to survive a power cut between those points, so a marker beside
//! the database ([`TrustMarker`]) says whether it was cleanly synced, or written to since within
//! the same boot of the machine; if neither, opening throws it away and starts empty, and
//! recovery fills it again from the snapshot file and the log.
//!
//! The data is etcd's multi-version store ([`crate::mvcc`]): its layout in the `sm` tree,
//! revisions, compaction and the migration of the older `d`-prefixed data are documented
//! there. This file adds the applied index (`mapplied`: index and term), written in the same
//! batch as the entries it covers, and turns log entries into store commands: etcd's Put,
//! DeleteRange, Txn and Compaction, and the older kv.v1 `Set` (a Put) and `Delete` (a
//! DeleteRange of one key). Each command first gets etcd's stateless checks again (a proposer
//! makes them, but the log is input like any other), with no limit on a Txn's size.
//!
//! Physical compaction runs between applies ([`StateMachine::compact_step`]), in bounded
//! steps of their own batches; nothing a client or a replica comparison sees depends on how
//! far it has got.

pub mod snapshot_job;
pub mod trust;

pub use snapshot_job::SnapshotJob;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use prost::Message as _;
use raft::prelude::{ConfState, Entry, EntryType, Snapshot};

use crate::consensus::LogId;
use crate::durable::sync_parent;
use crate::error::{Error, Result};
use crate::mvcc::keys::{be_i64, Revision};
use crate::mvcc::write::{Finished, Writer};
use crate::mvcc::{check_delete_range, check_put, check_txn, History, LeaseChange, MvccStore};
use crate::proto::raftpb::{log_command::Op, LogCommand};
use etcd_api::etcdserverpb::{
    CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, HashKvResponse,
    LeaseCheckpointResponse, LeaseGrantResponse, LeaseRevokeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnResponse,
};
use etcd_api::mvccpb::{Event, KeyValue};
use etcd_api::EtcdError;
use trust::{Trust, TrustMarker};

/// Name of the sled tree holding the state machine.
pub const SM_TREE: &str = "sm";
/// Index and term of the last applied entry, 8 bytes each.
const APPLIED_KEY: &[u8] = b"mapplied";
/// Values at least this large may be stored by sled in a blob file of their own (sled's limit
/// is a quarter of its 512 KiB segment, less headers); a batch holding one is synced at once.
pub const SLED_BLOB_BYTES: usize = 64 * 1024;

/// What applying one entry did.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandOutcome {
    /// The entry carried no command (a new leader's empty entry, a configuration change).
    Noop,
    /// The command was applied; its answer, with `header.revision` set (the rest of the
    /// header — cluster, member, term — is the gRPC layer's to fill).
    Done(WriteResponse),
    /// The command failed a check that depends on the state (a compacted or future revision,
    /// `ignore_value` on a missing key, an unknown lease): every replica fails it alike, and
    /// it changed nothing.
    Failed(EtcdError),
    /// The entry could not be decoded, or its command had no operation; it changed nothing.
    Rejected(String),
}

/// The answer to an applied write command, as etcd's API gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseCheckpoint(LeaseCheckpointResponse),
}

/// The tag a proposer puts in its `LogCommand` (`origin_node`, `origin_seq`) so that it can
/// recognise its own write when the entry is applied, whatever index it ended up at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProposalTag {
    /// The node that proposed the write.
    pub node: u64,
    /// The proposer's sequence number for the write, unique per node and run.
    pub seq: u64,
}

/// A digest of the whole state machine, for telling whether two replicas hold the same data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateHash {
    /// The applied index the digest covers: two replicas are comparable only at the same one.
    pub applied_index: u64,
    /// FNV-1a over the logical MVCC state (every record compaction leaves, the revision, the
    /// compact revision) and the applied index: see [`StateMachine::hash`].
    pub hash: u64,
}

/// One applied entry, reported back to whoever proposed it.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedEntry {
    /// Log index of the entry; with `term`, what the proposer's write is answered with.
    pub index: u64,
    pub term: u64,
    /// Who proposed it, when the entry carried a client command.
    pub origin: Option<ProposalTag>,
    pub outcome: CommandOutcome,
}

/// One page of a List.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Keys and values (values empty when keys only were asked for).
    pub kvs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The first key of the next page, when more keys match.
    pub next_key: Option<Vec<u8>>,
}

/// The most a List answer (`kv.v1.ListResponse`) spends besides its entries and `next_key`:
/// the response header, three 64-bit varints of at most 10 bytes with a 1-byte tag each,
/// framed by a tag and a 1-byte length, and the `more` flag, a tag and 1 byte.
pub const LIST_ANSWER_FIXED_BYTES: usize = 2 + 3 * (1 + 10) + 2;

/// Bytes a proto3 `bytes` field of `len` bytes takes (tags here are all 1 byte): nothing when
/// empty, since proto3 leaves empty fields out.
fn bytes_field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + prost::length_delimiter_len(len) + len
    }
}

/// Bytes one entry adds to an encoded List answer: a `KeyValue` in `ListResponse.kvs`, tags
/// and lengths included. Counting the encoding, not just the key and value, keeps a page of
/// many tiny keys within the bound too (framing is most of such a page).
pub fn list_entry_bytes(key_len: usize, value_len: usize) -> usize {
    let inner = bytes_field_len(key_len) + bytes_field_len(value_len);
    1 + prost::length_delimiter_len(inner) + inner
}

/// The most bytes an encoded List answer holding `page` takes (the header at its largest).
pub fn list_answer_bytes(page: &ListPage) -> usize {
    LIST_ANSWER_FIXED_BYTES
        + page
            .kvs
            .iter()
            .map(|(k, v)| list_entry_bytes(k.len(), v.len()))
            .sum::<usize>()
        + page
            .next_key
            .as_ref()
            .map_or(0, |k| bytes_field_len(k.len()))
}

/// The key-value data of one node.
pub struct StateMachine {
    /// The database, for flushes.
    db: sled::Db,
    /// The database's directory, for syncs.
    path: PathBuf,
    /// Says whether the database may be believed after a restart.
    trust: TrustMarker,
    /// Blob files already fsynced: sled writes each once and never changes it, so a sync
    /// needs to fsync only the new ones.
    synced_blobs: HashSet<PathBuf>,
    /// The [`SM_TREE`] tree: the MVCC records and their `m` keys, and the applied index,
    /// written in the same batch as the entries it follows.
    tree: sled::Tree,
    /// Index and term of the last applied entry, as the tree holds it.
    applied: LogId,
    /// The MVCC store over `tree`.
    store: MvccStore,
    /// The revision-log records the last apply batch wrote, until [`StateMachine::events`]
    /// takes them (the next batch replaces them): the watch events of that batch.
    written: Vec<(Revision, sled::IVec)>,
    /// What the last apply batch did to the lease table, until [`StateMachine::lease_changes`]
    /// takes it.
    lease_changes: Vec<LeaseChange>,
}

fn applied_value(index: u64, term: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&index.to_be_bytes());
    v[8..].copy_from_slice(&term.to_be_bytes());
    v
}

/// The outcome of a command the writer ran.
fn outcome<T>(
    result: std::result::Result<T, EtcdError>,
    wrap: impl FnOnce(T) -> WriteResponse,
) -> CommandOutcome {
    match result {
        Ok(resp) => CommandOutcome::Done(wrap(resp)),
        Err(e) => CommandOutcome::Failed(e),
    }
}

/// Runs one log command's operation: the stateless checks, then the store command.
fn execute(w: &mut Writer<'_>, op: Op) -> Result<CommandOutcome> {
    let put = |w: &mut Writer<'_>, p: PutRequest| -> Result<CommandOutcome> {
        if let Err(e) = check_put(&p) {
            return Ok(CommandOutcome::Failed(e));
        }
        Ok(outcome(w.put(&p)?, WriteResponse::Put))
    };
    let delete = |w: &mut Writer<'_>, d: DeleteRangeRequest| -> Result<CommandOutcome> {
        if let Err(e) = check_delete_range(&d) {
            return Ok(CommandOutcome::Failed(e));
        }
        Ok(outcome(w.delete_range(&d)?, WriteResponse::DeleteRange))
    };
    match op {
        Op::Set(s) => put(
            w,
            PutRequest {
                key: s.key,
                value: s.value,
                ..Default::default()
            },
        ),
        Op::Delete(d) => delete(
            w,
            DeleteRangeRequest {
                key: d.key,
                ..Default::default()
            },
        ),
        Op::Put(p) => put(w, p),
        Op::DeleteRange(d) => delete(w, d),
        Op::Txn(t) => {
            // No size limit here: the proposer applied its configured one.
            if let Err(e) = check_txn(&t, usize::MAX) {
                return Ok(CommandOutcome::Failed(e));
            }
            Ok(outcome(w.txn(&t)?, WriteResponse::Txn))
        }
        Op::Compaction(c) => Ok(outcome(w.compaction(&c)?, WriteResponse::Compaction)),
        Op::LeaseGrant(g) => Ok(outcome(w.lease_grant(&g)?, WriteResponse::LeaseGrant)),
        Op::LeaseRevoke(r) => Ok(outcome(w.lease_revoke(&r)?, WriteResponse::LeaseRevoke)),
        Op::LeaseCheckpoint(c) => Ok(outcome(
            w.lease_checkpoint(&c)?,
            WriteResponse::LeaseCheckpoint,
        )),
    }
}

impl StateMachine {
    /// Opens (or creates) the state machine stored in the sled database at `path`, and makes
    /// what sled recovered durable. A database its marker does not vouch for is thrown away
    /// first: the state machine then starts empty, to be filled from the snapshot and the log.
    /// Data from before revisions is converted (see [`crate::mvcc`]).
    pub fn open(path: &Path) -> Result<StateMachine> {
        let (trust, verdict) = TrustMarker::read(&path.with_extension("trust"));
        if let Trust::Untrusted(why) = verdict {
            tracing::warn!(db = %path.display(), "rebuilding the state machine: {why}");
            if path.exists() {
                fs::remove_dir_all(path).map_err(|e| {
                    Error::Disk(format!("{}: cannot remove it: {e}", path.display()))
                })?;
                sync_parent(path)?;
            }
        }
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .open()
            .map_err(|e| {
                Error::Disk(format!("{}: cannot open the database: {e}", path.display()))
            })?;
        let tree = db.open_tree(SM_TREE)?;
        let applied = tree
            .get(APPLIED_KEY)?
            .map(|v| LogId {
                index: be_i64(&v, 0).unwrap_or(0) as u64,
                term: be_i64(&v, 8).unwrap_or(0) as u64,
            })
            .unwrap_or_default();
        let (mut trust, mut synced_blobs) = (trust, HashSet::new());
        if MvccStore::needs_migration(&tree)? {
            // The migration writes to the database: what sled recovered is made durable
            // first, and the marker says dirty before the first write, as for an apply.
            db.flush()?;
            sync_tree(path, &mut synced_blobs)?;
            trust.set_clean()?;
            trust.set_dirty()?;
        }
        let store = MvccStore::open(tree.clone())?;
        let mut sm = StateMachine {
            db,
            path: path.to_path_buf(),
            trust,
            synced_blobs,
            tree,
            applied,
            store,
            written: Vec::new(),
            lease_changes: Vec::new(),
        };
        // The database directory's own name, when sled has just created it.
        sync_parent(path)?;
        sm.sync()?;
        Ok(sm)
    }

    /// The sled database, for the start-up migration of an old log kept in it.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes everything applied so far durable: sled's flush, then an fsync of every file
    /// and directory of the database (blob files once each), then the marker says `clean`.
    pub fn sync(&mut self) -> Result<()> {
        self.db.flush()?;
        sync_tree(&self.path, &mut self.synced_blobs)?;
        self.trust.set_clean()
    }

    /// Marks the database for rebuilding at the next start (sled failed at run time).
    pub fn mark_untrusted(&mut self) {
        self.trust.set_untrusted();
    }

    /// Index and term of the last applied entry.
    pub fn applied(&self) -> LogId {
        self.applied
    }

    /// Keys alive at the current revision.
    pub fn key_count(&self) -> u64 {
        self.store.key_count()
    }

    /// The records of history the state machine holds (a snapshot writes every one).
    pub fn record_count(&self) -> usize {
        self.store.record_count()
    }

    /// The store's revision (1 when nothing was ever written).
    pub fn revision(&self) -> i64 {
        self.store.revision()
    }

    /// The compact revision (-1 when never compacted).
    pub fn compact_revision(&self) -> i64 {
        self.store.compact_revision()
    }

    /// The revision up to which physical compaction has removed what compaction made
    /// unreachable (-1 when never compacted).
    pub fn physically_compacted(&self) -> i64 {
        self.store.physically_compacted()
    }

    /// Bytes the database takes on disk, as sled counts them (0 if it cannot tell).
    pub fn db_size(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Applies committed entries in order, atomically with the new applied index.
    /// Entries at or below the applied index are skipped (they were applied before a restart).
    pub fn apply(&mut self, entries: &[Entry]) -> Result<Vec<AppliedEntry>> {
        let mut writer = self.store.writer();
        let mut applied = self.applied;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries.iter().filter(|e| e.index > self.applied.index) {
            if e.index != applied.index + 1 {
                return Err(Error::Disk(format!(
                    "entry {} applied out of order after {}",
                    e.index, applied.index
                )));
            }
            applied = LogId {
                index: e.index,
                term: e.term,
            };
            let (origin, outcome) =
                if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
                    (None, CommandOutcome::Noop)
                } else {
                    match LogCommand::decode(e.data.as_ref()) {
                        Err(err) => (
                            None,
                            CommandOutcome::Rejected(format!("undecodable command: {err}")),
                        ),
                        Ok(cmd) => {
                            let origin = Some(ProposalTag {
                                node: cmd.origin_node,
                                seq: cmd.origin_seq,
                            });
                            let outcome = match cmd.op {
                                None => CommandOutcome::Rejected("command has no operation".into()),
                                Some(op) => execute(&mut writer, op)?,
                            };
                            (origin, outcome)
                        }
                    }
                };
            out.push(AppliedEntry {
                index: e.index,
                term: e.term,
                origin,
                outcome,
            });
        }
        if out.is_empty() {
            return Ok(out);
        }
        let Finished {
            mut batch,
            state,
            largest_value,
            records,
            lease_changes,
        } = writer.finish();
        batch.insert(APPLIED_KEY, &applied_value(applied.index, applied.term));
        self.trust.set_dirty()?;
        self.tree.apply_batch(batch)?;
        self.applied = applied;
        self.store.set_state(state);
        self.written = records;
        self.lease_changes = lease_changes;
        if largest_value >= SLED_BLOB_BYTES {
            self.sync()?;
        }
        Ok(out)
    }

    /// Every lease, as the log has granted, revoked and checkpointed them.
    pub fn leases(&self) -> &crate::mvcc::LeaseTable {
        self.store.leases()
    }

    /// What the last apply batch did to the lease table; empty once taken.
    pub fn lease_changes(&mut self) -> Vec<LeaseChange> {
        std::mem::take(&mut self.lease_changes)
    }

    /// The live keys attached to lease `id`, in key order.
    pub fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.store
            .index()
            .lease_keys(id)
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// The watch events of the last apply batch, each with the key as it was before if
    /// `with_prev`; empty once taken, or when the batch changed nothing.
    pub fn events(&mut self, with_prev: bool) -> Result<Vec<Event>> {
        let written = std::mem::take(&mut self.written);
        self.store.events_of(&written, with_prev)
    }

    /// The events of the history from revision `from` on, one bounded batch
    /// ([`crate::mvcc::history`]).
    pub fn history(&self, from: i64, with_prev: bool) -> Result<History> {
        self.store.history(from, with_prev)
    }

    /// One bounded step of physical compaction: looks at up to `max_records` records of
    /// the revision log and removes those compaction made unreachable, in one batch of its
    /// own. Returns whether more remains. Safe to stop at any point: a restart resumes.
    pub fn compact_step(&mut self, max_records: usize) -> Result<bool> {
        let (batch, state, more) = self.store.compact_step(max_records)?;
        if state == self.store.state() && !more {
            return Ok(false);
        }
        self.trust.set_dirty()?;
        self.tree.apply_batch(batch)?;
        self.store.set_state(state);
        Ok(more)
    }

    /// etcd's Range at the current state (see [`crate::mvcc::read`]); a compacted or future
    /// revision is `Err(Error::Etcd(..))`.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        self.store.range(req)
    }

    /// `key` at the current revision.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.store.get(key)
    }

    /// etcd's HashKV at `revision` (0: the current one).
    pub fn hash_kv(&self, revision: i64) -> Result<HashKvResponse> {
        self.store.hash_kv(revision)
    }

    /// Up to `limit` live keys with `prefix`, from `start` (inclusive) in byte order, and no
    /// more than fits in `max_bytes` of encoded answer ([`list_answer_bytes`]): the
    /// StorageActor builds the page while applies wait, and the gRPC layer sends it as one
    /// message, so its size must be bounded however large the values are. The page stops
    /// before the entry that would take it past `max_bytes`, counting the `next_key` it
    /// would then carry; the first entry is always included, however large, so a client
    /// always makes progress.
    pub fn list(
        &self,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
        max_bytes: usize,
        keys_only: bool,
    ) -> Result<ListPage> {
        let mut page = ListPage::default();
        let mut used = LIST_ANSWER_FIXED_BYTES;
        // Takes `key` into the page unless the page ends before it (then it is the next
        // key); `following` is the length of the key after it, if any, which would ride
        // along as `next_key` should the page end after this entry.
        let mut place = |page: &mut ListPage,
                         key: &[u8],
                         live: &crate::mvcc::keys::Live,
                         following: Option<usize>|
         -> Result<bool> {
            if page.kvs.len() >= limit {
                page.next_key = Some(key.to_vec());
                return Ok(false);
            }
            let value = if keys_only {
                Vec::new()
            } else {
                self.store.value(live)?
            };
            let next_key_bytes = following.map_or(0, bytes_field_len);
            let cost = list_entry_bytes(key.len(), value.len());
            if !page.kvs.is_empty() && used + cost + next_key_bytes > max_bytes {
                page.next_key = Some(key.to_vec());
                return Ok(false);
            }
            used += cost;
            page.kvs.push((key.to_vec(), value));
            Ok(true)
        };
        // Each entry is placed once the key after it is known (reading it costs nothing
        // extra: the entry after a page is read anyway, to name `next_key`).
        let mut pending: Option<(Vec<u8>, crate::mvcc::keys::Live)> = None;
        let mut open = true;
        self.store.walk_live(prefix, start, |key, live| {
            if let Some((k, l)) = pending.take() {
                if !place(&mut page, &k, &l, Some(key.len()))? {
                    open = false;
                    return Ok(false);
                }
            }
            pending = Some((key.to_vec(), live));
            Ok(true)
        })?;
        if let (true, Some((k, l))) = (open, pending) {
            place(&mut page, &k, &l, None)?;
        }
        Ok(page)
    }

    /// A digest of the logical state — every record compaction leaves, the revision and the
    /// compact revision — and the applied index (FNV-1a), so nodes can be compared. It does
    /// not depend on how far physical compaction has got.
    pub fn hash(&self) -> Result<u64> {
        let mut h = crate::fnv::Fnv1a::new();
        // Each part length-prefixed, so two different sequences of parts never read the same.
        let mut eat = |bytes: &[u8]| {
            h.write(&(bytes.len() as u64).to_be_bytes());
            h.write(bytes);
        };
        self.store.digest(&mut eat)?;
        eat(&self.applied.index.to_be_bytes());
        Ok(h.finish())
    }

    /// A snapshot of everything applied so far, with `conf_state` as its configuration:
    /// the whole MVCC state ([`crate::mvcc::snapshot`]), built here and now.
    pub fn snapshot(&mut self, conf_state: &ConfState) -> Result<Snapshot> {
        self.snapshot_job(conf_state)?.build()
    }

    /// Takes a snapshot of everything applied so far, to be built by [`SnapshotJob::build`],
    /// on any thread, while applies go on ([`snapshot_job`]). Syncs first, so a restart
    /// after it rarely has much to apply again.
    pub fn snapshot_job(&mut self, conf_state: &ConfState) -> Result<SnapshotJob> {
        self.sync()?;
        Ok(SnapshotJob {
            source: self.store.snapshot_source(),
            applied: self.applied,
            conf_state: conf_state.clone(),
        })
    }

    /// Replaces the whole state with `snap`'s, atomically, and syncs. Takes snapshots of
    /// the format from before revisions too, converting them as opening converts a database.
    pub fn restore(&mut self, snap: &Snapshot) -> Result<()> {
        let mut batch = sled::Batch::default();
        for kv in self.tree.iter() {
            batch.remove(kv?.0);
        }
        let restored = MvccStore::restore_into(&snap.data, &mut batch)?;
        let m = snap.get_metadata();
        batch.insert(APPLIED_KEY, &applied_value(m.index, m.term));
        self.trust.set_dirty()?;
        self.tree.apply_batch(batch)?;
        self.sync()?;
        self.applied = LogId::of(m);
        self.store.install(restored);
        self.written.clear();
        self.lease_changes.clear();
        Ok(())
    }
}

/// The pairs of a snapshot's data: each part a 4-byte big-endian length and the bytes.
/// Data that is not made of whole pairs is refused. Snapshots of both formats are framed
/// so ([`crate::mvcc::snapshot`]): before revisions, each pair was a key and its value.
pub fn snapshot_pairs(data: &[u8]) -> Result<Vec<(&[u8], &[u8])>> {
    crate::mvcc::snapshot::pairs(data)
}

/// Whether `data` is snapshot data this state machine can restore, of either format.
pub fn check_snapshot(data: &[u8]) -> Result<()> {
    crate::mvcc::snapshot::parse(data).map(|_| ())
}

/// Fsyncs every file and directory under `dir`, children before their directory, skipping
/// the blob files in `synced_blobs` and adding those it syncs.
fn sync_tree(dir: &Path, synced_blobs: &mut HashSet<PathBuf>) -> Result<()> {
    let err =
        |p: &Path, e: std::io::Error| Error::Disk(format!("{}: cannot sync: {e}", p.display()));
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| err(dir, e))? {
        let item = item.map_err(|e| err(dir, e))?;
        let path = item.path();
        if item.file_type().map_err(|e| err(&path, e))?.is_dir() {
            dirs.push(path);
        } else {
            files.push(path);
        }
    }
    for d in &dirs {
        sync_tree(d, synced_blobs)?;
    }
    let in_blobs = dir.file_name().is_some_and(|n| n == "blobs");
    for f in &files {
        if in_blobs && synced_blobs.contains(f) {
            continue;
        }
        match fs::File::open(f) {
            Ok(file) => {
                file.sync_all().map_err(|e| err(f, e))?;
                if in_blobs {
                    synced_blobs.insert(f.clone());
                }
            }
            // sled removes old snapshot and blob files as it goes.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(f, e)),
        }
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err(dir, e))
}

/// Encodes a command as the data of a log entry.
pub fn encode_command(cmd: &LogCommand) -> Vec<u8> {
    cmd.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::raftpb::{DeleteOp, SetOp};

    fn set(index: u64, k: &str, v: &str) -> Entry {
        entry(
            index,
            Op::Set(SetOp {
                key: k.into(),
                value: v.into(),
            }),
        )
    }

    fn del(index: u64, k: &str) -> Entry {
        entry(index, Op::Delete(DeleteOp { key: k.into() }))
    }

    /// A log entry at `index` (term 1) carrying `op`, from node 1 with sequence `index`.
    /// How long [`reopen`] waits for the last instance's lock.
    const REOPEN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
    /// How often [`reopen`] tries again.
    const REOPEN_POLL: std::time::Duration = std::time::Duration::from_millis(2);

    /// Opens the state machine at `path` again, once the instance dropped before lets go of
    /// the database lock: sled's io threads finish their writes after the drop, and hold the
    /// lock until then (a process that exits has no such wait).
    fn reopen(path: &Path) -> StateMachine {
        let deadline = std::time::Instant::now() + REOPEN_DEADLINE;
        loop {
            match StateMachine::open(path) {
                Ok(sm) => return sm,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(REOPEN_POLL)
                }
                Err(e) => panic!("reopening {}: {e}", path.display()),
            }
        }
    }

    fn entry(index: u64, op: Op) -> Entry {
        let cmd = LogCommand {
            origin_node: 1,
            origin_seq: index,
            op: Some(op),
        };
        Entry {
            index,
            term: 1,
            data: encode_command(&cmd).into(),
            ..Default::default()
        }
    }

    #[test]
    fn apply_get_delete_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let noop = Entry {
            index: 1,
            term: 1,
            ..Default::default()
        };
        let out = sm
            .apply(&[
                noop,
                set(2, "a", "1"),
                set(3, "a", "2"),
                del(4, "b"),
                set(5, "b", "x"),
                del(6, "b"),
            ])
            .unwrap();
        assert_eq!(out[0].outcome, CommandOutcome::Noop);
        let deleted = |n, revision| {
            CommandOutcome::Done(WriteResponse::DeleteRange(DeleteRangeResponse {
                header: Some(etcd_api::etcdserverpb::ResponseHeader {
                    revision,
                    ..Default::default()
                }),
                deleted: n,
                ..Default::default()
            }))
        };
        assert_eq!(
            out[3].outcome,
            deleted(0, 3),
            "deleting nothing: revision unchanged"
        );
        assert_eq!(out[5].outcome, deleted(1, 5), "sees the same batch's write");
        assert_eq!(out[1].origin, Some(ProposalTag { node: 1, seq: 2 }));
        assert_eq!(
            sm.get(b"a").unwrap().map(|kv| kv.value),
            Some(b"2".to_vec())
        );
        assert_eq!(sm.get(b"b").unwrap(), None);
        assert_eq!(
            (sm.key_count(), sm.applied()),
            (1, LogId { index: 6, term: 1 })
        );
    }

    #[test]
    fn restart_resumes_after_last_applied_without_reapplying() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut sm = StateMachine::open(dir.path()).unwrap();
            sm.apply(&[set(1, "a", "1"), set(2, "b", "1")]).unwrap();
            sm.sync().unwrap();
        }
        let mut sm = reopen(dir.path());
        assert_eq!((sm.applied().index, sm.key_count()), (2, 2));
        let out = sm.apply(&[set(2, "b", "1"), del(3, "a")]).unwrap();
        assert_eq!(out.len(), 1, "entry 2 is not applied twice");
        assert_eq!(sm.key_count(), 1);
        assert!(sm.apply(&[set(9, "z", "1")]).is_err(), "gaps are refused");
    }

    #[test]
    fn list_pages_by_prefix_and_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let keys = ["a/1", "a/2", "a/3", "b/1"];
        let entries: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| set(i as u64 + 1, k, "v"))
            .collect();
        sm.apply(&entries).unwrap();
        let p = sm.list(b"a/", b"", 2, usize::MAX, false).unwrap();
        assert_eq!(
            p.kvs.iter().map(|kv| kv.0.clone()).collect::<Vec<_>>(),
            vec![b"a/1".to_vec(), b"a/2".to_vec()]
        );
        assert_eq!(p.next_key, Some(b"a/3".to_vec()));
        let p = sm.list(b"a/", b"a/3", 2, usize::MAX, true).unwrap();
        assert_eq!(p.kvs, vec![(b"a/3".to_vec(), vec![])]);
        assert_eq!(p.next_key, None);
        assert_eq!(
            sm.list(b"", b"", 10, usize::MAX, true).unwrap().kvs.len(),
            4
        );
    }

    /// `page` as the gRPC layer encodes it, with the largest header there is.
    fn encoded_answer(page: &ListPage) -> usize {
        use crate::proto::kv::{KeyValue, ListResponse, ResponseHeader};
        ListResponse {
            header: Some(ResponseHeader {
                node_id: u64::MAX,
                term: u64::MAX,
                index: u64::MAX,
            }),
            kvs: page
                .kvs
                .iter()
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            more: true,
            next_key: page.next_key.clone().unwrap_or_default(),
        }
        .encoded_len()
    }

    /// Keys of `page`, as strings.
    fn keys_of(page: &ListPage) -> Vec<String> {
        page.kvs
            .iter()
            .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
            .collect()
    }

    #[test]
    fn list_pages_are_cut_by_encoded_bytes() {
        /// Length of every value here.
        const VALUE_BYTES: usize = 100;
        /// One `KeyValue` of a 2-byte key and a [`VALUE_BYTES`] value, encoded: the key field
        /// (tag, length, 2 bytes), the value field (tag, length, 100 bytes), framed by a tag
        /// and a length.
        const ENTRY_BYTES: usize = 2 + (1 + 1 + 2) + (1 + 1 + VALUE_BYTES);
        /// A 2-byte `next_key`, encoded.
        const NEXT_KEY_BYTES: usize = 1 + 1 + 2;
        /// One `KeyValue` of a 2-byte key alone, encoded.
        const KEY_ONLY_BYTES: usize = 2 + (1 + 1 + 2);

        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let value = "v".repeat(VALUE_BYTES);
        let keys = ["k1", "k2", "k3", "k4", "k5"];
        let entries: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| set(i as u64 + 1, k, &value))
            .collect();
        sm.apply(&entries).unwrap();
        let list = |start: &str, max_bytes, keys_only| {
            sm.list(b"k", start.as_bytes(), usize::MAX, max_bytes, keys_only)
                .unwrap()
        };

        // Exactly room for two entries and the next key: two, and the answer is that size.
        let two = LIST_ANSWER_FIXED_BYTES + 2 * ENTRY_BYTES + NEXT_KEY_BYTES;
        let p = list("", two, false);
        assert_eq!(keys_of(&p), ["k1", "k2"]);
        assert_eq!(p.next_key.as_deref(), Some(&b"k3"[..]));
        assert_eq!(p.kvs[1].1, value.as_bytes(), "values come with the keys");
        assert_eq!(list_answer_bytes(&p), two);
        assert_eq!(encoded_answer(&p), two, "the count is the real encoding");
        // One byte less: the second entry would leave no room for the next key.
        let p = list("", two - 1, false);
        assert_eq!(keys_of(&p), ["k1"]);
        assert_eq!(p.next_key.as_deref(), Some(&b"k2"[..]));

        // A bound smaller than any entry still returns one, so a client always advances.
        let p = list("k4", 1, false);
        assert_eq!(keys_of(&p), ["k4"]);
        assert_eq!(p.next_key.as_deref(), Some(&b"k5"[..]));
        // The last entry needs no room for a next key.
        let last = LIST_ANSWER_FIXED_BYTES + ENTRY_BYTES;
        let p = list("k5", last, false);
        assert_eq!((keys_of(&p), p.next_key), (vec!["k5".to_string()], None));

        // Keys only: only keys count, so many more fit in the same bound.
        let keys_only = LIST_ANSWER_FIXED_BYTES + 3 * KEY_ONLY_BYTES + NEXT_KEY_BYTES;
        let p = list("", keys_only, true);
        assert_eq!(keys_of(&p), ["k1", "k2", "k3"]);
        assert!(p.kvs.iter().all(|(_, v)| v.is_empty()));
        assert_eq!(p.next_key.as_deref(), Some(&b"k4"[..]));
        assert_eq!(encoded_answer(&p), keys_only);
        assert!(
            keys_only < two,
            "the same three keys with values would not fit"
        );

        // Paging by next_key with any bound visits every key once, each page within it.
        for max_bytes in [1, two - 1, two, two + ENTRY_BYTES, 10_000] {
            let mut seen = Vec::new();
            let mut start = String::new();
            loop {
                let p = list(&start, max_bytes, false);
                assert!(
                    p.kvs.len() == 1 || encoded_answer(&p) <= max_bytes,
                    "a page of {} bytes over {max_bytes}",
                    encoded_answer(&p)
                );
                seen.extend(keys_of(&p));
                match p.next_key {
                    Some(next) => start = String::from_utf8(next).unwrap(),
                    None => break,
                }
            }
            assert_eq!(seen, keys, "paging with max_bytes {max_bytes}");
        }

        // The count limit still applies within the byte bound.
        let p = sm.list(b"k", b"", 2, usize::MAX, false).unwrap();
        assert_eq!(
            (keys_of(&p), p.next_key),
            (
                vec!["k1".to_string(), "k2".to_string()],
                Some(b"k3".to_vec())
            )
        );
    }

    #[test]
    fn snapshot_restores_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = StateMachine::open(&dir.path().join("a")).unwrap();
        a.apply(&[set(1, "x", "1"), set(2, "y", "2")]).unwrap();
        let snap = a
            .snapshot(&ConfState {
                voters: vec![1],
                ..Default::default()
            })
            .unwrap();
        let mut b = StateMachine::open(&dir.path().join("b")).unwrap();
        b.apply(&[set(1, "old", "gone")]).unwrap();
        b.restore(&snap).unwrap();
        assert_eq!(b.get(b"old").unwrap(), None);
        assert_eq!(
            (b.applied(), b.key_count()),
            (LogId { index: 2, term: 1 }, 2)
        );
        assert_eq!(a.hash().unwrap(), b.hash().unwrap());
    }

    fn compaction(index: u64, revision: i64) -> Entry {
        entry(
            index,
            Op::Compaction(etcd_api::etcdserverpb::CompactionRequest {
                revision,
                physical: false,
            }),
        )
    }

    fn value(sm: &StateMachine, key: &str) -> Option<String> {
        sm.get(key.as_bytes())
            .unwrap()
            .map(|kv| String::from_utf8(kv.value).unwrap())
    }

    fn range_at(sm: &StateMachine, revision: i64) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
        let req = RangeRequest {
            key: b"\0".to_vec(),
            range_end: b"\0".to_vec(),
            revision,
            ..Default::default()
        };
        sm.range(&req)
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value, kv.version))
            .collect()
    }

    #[test]
    fn data_from_before_revisions_is_migrated_on_open() {
        // Every `d` key becomes live at revision 2, sub-revisions in key order, version 1.
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new()
                .path(dir.path())
                .flush_every_ms(None)
                .open()
                .unwrap();
            let tree = db.open_tree(SM_TREE).unwrap();
            tree.insert(b"db", b"2").unwrap();
            tree.insert(b"da", b"1").unwrap();
            tree.insert(COUNT_KEY_BEFORE_REVISIONS, &2u64.to_be_bytes())
                .unwrap();
            tree.insert(APPLIED_KEY, &applied_value(7, 1)).unwrap();
            db.flush().unwrap();
        }
        let mut sm = StateMachine::open(dir.path()).unwrap();
        assert_eq!(
            (sm.revision(), sm.key_count(), sm.applied().index),
            (2, 2, 7)
        );
        let a = sm.get(b"a").unwrap().unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 2, 1));
        assert_eq!(value(&sm, "b").as_deref(), Some("2"));
        let first = sm
            .tree
            .get(crate::mvcc::keys::rev_key(Default::default()))
            .unwrap();
        assert!(first.is_none(), "nothing at revision 0");
        let sub0 = sm
            .tree
            .get(crate::mvcc::keys::rev_key(crate::mvcc::keys::Revision {
                main: 2,
                sub: 0,
            }))
            .unwrap()
            .unwrap();
        assert_eq!(crate::mvcc::keys::Record::decode(&sub0).unwrap().key, b"a");
        assert_eq!(
            sm.tree.scan_prefix(b"d").count(),
            0,
            "the old keys are gone"
        );
        sm.apply(&[set(8, "a", "new")]).unwrap();
        // Synced before the drop, as the node does at shutdown: sled's writer threads let go
        // of the database only once its writes are done, and the reopen below needs its lock.
        sm.sync().unwrap();
        drop(sm);
        let sm = reopen(dir.path());
        assert_eq!(
            (sm.revision(), sm.key_count()),
            (3, 2),
            "migrated once only"
        );
    }

    /// The key count's key before revisions (the same name the store uses now).
    const COUNT_KEY_BEFORE_REVISIONS: &[u8] = b"mcount";

    #[test]
    fn an_old_format_snapshot_is_imported_as_a_migration() {
        let mut data = Vec::new();
        for part in [&b"x"[..], b"1", b"y", b"2"] {
            data.extend_from_slice(&(part.len() as u32).to_be_bytes());
            data.extend_from_slice(part);
        }
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        snap.mut_metadata().index = 5;
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        sm.apply(&[set(1, "old", "gone")]).unwrap();
        sm.restore(&snap).unwrap();
        assert_eq!(
            (sm.revision(), sm.key_count(), sm.applied().index),
            (2, 2, 5)
        );
        assert_eq!(value(&sm, "old"), None);
        let y = sm.get(b"y").unwrap().unwrap();
        assert_eq!(
            (y.value.as_slice(), y.create_revision, y.version),
            (&b"2"[..], 2, 1)
        );
    }

    #[test]
    fn a_snapshot_carries_history_and_the_compact_revision() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = StateMachine::open(&dir.path().join("a")).unwrap();
        a.apply(&[
            set(1, "k", "1"),    // 2
            set(2, "k", "2"),    // 3
            set(3, "gone", "x"), // 4
            del(4, "gone"),      // 5
            compaction(5, 3),
            set(6, "k", "3"), // 6
        ])
        .unwrap();
        let snap = a.snapshot(&ConfState::default()).unwrap();
        assert!(check_snapshot(&snap.data).is_ok());
        assert!(
            snapshot_pairs(&snap.data).is_ok(),
            "framed as before revisions"
        );
        let mut b = StateMachine::open(&dir.path().join("b")).unwrap();
        b.restore(&snap).unwrap();
        assert_eq!((b.revision(), b.compact_revision()), (6, 3));
        for rev in 3..=6 {
            assert_eq!(range_at(&b, rev), range_at(&a, rev), "at revision {rev}");
        }
        assert!(
            range_at(&b, 4).contains(&(b"k".to_vec(), b"2".to_vec(), 2)),
            "history kept"
        );
        assert_eq!(b.hash_kv(0).unwrap(), a.hash_kv(0).unwrap());
        assert_eq!(b.hash().unwrap(), a.hash().unwrap());
        assert_eq!(
            b.physically_compacted(),
            -1,
            "a restored store removes what compaction made unreachable itself"
        );
        while b
            .compact_step(crate::mvcc::COMPACTION_STEP_RECORDS)
            .unwrap()
        {}
        assert_eq!(b.physically_compacted(), 3);
        assert_eq!(
            b.hash().unwrap(),
            a.hash().unwrap(),
            "the same state after removal"
        );
        assert!(b
            .range(&RangeRequest {
                key: b"k".to_vec(),
                revision: 2,
                ..Default::default()
            })
            .is_err());
    }

    #[test]
    fn a_failed_entry_changes_nothing_and_later_entries_still_apply() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let leased = PutRequest {
            key: b"b".to_vec(),
            value: b"v".to_vec(),
            lease: 9,
            ..Default::default()
        };
        let out = sm
            .apply(&[
                set(1, "a", "1"),
                entry(2, Op::Put(leased)),
                compaction(3, 99),
                entry(4, Op::Put(PutRequest::default())),
                Entry {
                    index: 5,
                    term: 1,
                    data: vec![0xff, 0xff].into(),
                    ..Default::default()
                },
                set(6, "c", "1"),
            ])
            .unwrap();
        assert_eq!(
            out[1].outcome,
            CommandOutcome::Failed(EtcdError::LeaseNotFound)
        );
        assert_eq!(
            out[2].outcome,
            CommandOutcome::Failed(EtcdError::FutureRevision)
        );
        assert_eq!(
            out[3].outcome,
            CommandOutcome::Failed(EtcdError::KeyNotProvided),
            "checked at apply too"
        );
        assert!(matches!(out[4].outcome, CommandOutcome::Rejected(_)));
        assert!(matches!(
            out[5].outcome,
            CommandOutcome::Done(WriteResponse::Put(_))
        ));
        assert_eq!(
            (sm.revision(), sm.key_count(), sm.applied().index),
            (3, 2, 6)
        );
        assert_eq!(value(&sm, "b"), None);
    }

    #[test]
    fn a_restart_keeps_the_revision_and_compact_revision() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut sm = StateMachine::open(dir.path()).unwrap();
            sm.apply(&[set(1, "a", "1"), set(2, "a", "2"), compaction(3, 2)])
                .unwrap();
            sm.sync().unwrap();
        }
        let sm = reopen(dir.path());
        assert_eq!(
            (sm.revision(), sm.compact_revision(), sm.key_count()),
            (3, 2, 1)
        );
        assert!(sm.db_size() > 0);
    }

    #[test]
    fn physical_compaction_resumes_after_a_restart_and_changes_no_hash() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<_> = (1..=20)
            .map(|i| set(i, &format!("k{}", i % 3), &format!("{i}")))
            .collect();
        let (hash, hash_kv, reads);
        {
            let mut sm = StateMachine::open(dir.path()).unwrap();
            sm.apply(&entries).unwrap();
            sm.apply(&[compaction(21, 18)]).unwrap();
            (hash, hash_kv, reads) = (
                sm.hash().unwrap(),
                sm.hash_kv(0).unwrap(),
                range_at(&sm, 18),
            );
            assert_eq!(sm.physically_compacted(), -1);
            assert!(sm.compact_step(4).unwrap(), "more remains after 4 records");
            assert!(sm.compact_step(4).unwrap());
            let part = sm.physically_compacted();
            assert!((0..18).contains(&part), "part-way: {part}");
            assert_eq!(
                (sm.hash().unwrap(), sm.hash_kv(0).unwrap()),
                (hash, hash_kv)
            );
            sm.sync().unwrap();
        }
        let mut sm = reopen(dir.path());
        let mut steps = 0;
        while sm
            .compact_step(crate::mvcc::COMPACTION_STEP_RECORDS)
            .unwrap()
        {
            steps += 1;
        }
        assert_eq!(steps, 0, "the rest fits in one step");
        assert_eq!(sm.physically_compacted(), 18);
        assert!(!sm.compact_step(1).unwrap(), "nothing left");
        assert_eq!(
            (
                sm.hash().unwrap(),
                sm.hash_kv(0).unwrap(),
                range_at(&sm, 18)
            ),
            (hash, hash_kv, reads)
        );
        let records = sm.tree.scan_prefix(b"r").count();
        assert_eq!(
            records,
            3 + 3,
            "each key's newest at or below 18, and revisions 19 to 21"
        );
    }
}
