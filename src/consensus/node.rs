//! `RaftNode`: a raft-rs `RawNode` over [`LogStore`], plus the bookkeeping a node needs.
//!
//! # Protocol in brief
//! Raft keeps a replicated log. One node is leader for a term; it appends client commands to its
//! log and replicates them; an entry is *committed* once a majority has it on disk, and then it
//! is applied, in log order, to every node's state machine. raft-rs implements the protocol
//! (elections, log matching, commit rules, pre-vote, check-quorum, ReadIndex); this struct feeds
//! it time (`tick`), messages (`step`) and proposals, and carries out what it asks for in
//! [`RaftNode::ready`]: persist, send, apply.
//!
//! # Invariants kept here
//! - Nothing raft-rs hands over in a `Ready` is acted on before it is durable: entries, the
//!   `HardState` and a received snapshot's metadata are appended to the WAL with one write and
//!   `fdatasync`ed (when `must_sync`), the snapshot itself stored in its file first, before any
//!   message that depends on them is returned for sending.
//! - Applying is asynchronous (the StorageActor does it); raft-rs learns the applied index only
//!   through [`RaftNode::advance_applied`], so it never assumes more was applied than was.
//! - The log is compacted only up to an index covered by a stored snapshot.
//! - Proposals are accepted only on the leader; their (index, term) is returned so the proposer
//!   can tell whether the entry that was finally applied at that index is its own.

use raft::prelude::{Entry, Message, Snapshot};
use raft::{Config, RawNode, ReadState, SnapshotStatus, StateRole, Storage};

use crate::consensus::log_store::LogStore;
use crate::consensus::logger::raft_logger;
use crate::consensus::peer_check::{self, LogView};
use crate::consensus::LogId;
use crate::error::{Error, Result};

/// Largest total size of entries in one append message, in bytes. Keeps peer messages far
/// below the gRPC message limit while letting a lagging follower catch up in large steps.
pub const MAX_SIZE_PER_MSG_BYTES: u64 = 1024 * 1024;
/// Most append messages in flight to one follower before the leader waits for acks.
pub const MAX_INFLIGHT_MSGS: usize = 256;
/// Most bytes of proposals not yet committed; more are refused (overload protection).
pub const MAX_UNCOMMITTED_BYTES: u64 = 64 * 1024 * 1024;
/// Most bytes of committed entries handed out in one Ready, bounding the apply queue.
pub const MAX_COMMITTED_BYTES_PER_READY: u64 = 16 * 1024 * 1024;

/// The parameters of raft-rs that come from the node config.
#[derive(Debug, Clone)]
pub struct RaftParams {
    pub id: u64,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: usize,
    /// Index the state machine has applied up to (raft-rs will not hand those out again).
    pub applied: u64,
    /// Entries kept in the log behind a snapshot.
    pub log_retain_entries: u64,
}

/// A change of role or leader, reported so pending requests can be failed or redirected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleChange {
    /// This node's new role.
    pub role: StateRole,
    /// The leader now known (0: none).
    pub leader_id: u64,
    pub term: u64,
}

/// What one `ready` call produced, in the order it must be carried out.
#[derive(Debug, Default)]
pub struct ReadyOutput {
    /// A snapshot received from the leader, already durable in the snapshot store and the log;
    /// the state machine must restore it before applying `committed`.
    pub snapshot: Option<Snapshot>,
    /// Committed entries to apply, in order.
    pub committed: Vec<Entry>,
    /// Messages to send; everything they depend on is durable.
    pub messages: Vec<Message>,
    /// Completed ReadIndex requests: (context, index to wait for).
    pub read_states: Vec<ReadState>,
    /// Set when the role or the leader changed.
    pub role_change: Option<RoleChange>,
}

/// A snapshot of the node's Raft state, for status reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub id: u64,
    /// Its part in Raft now.
    pub role: StateRole,
    pub term: u64,
    /// Known leader (0: none).
    pub leader_id: u64,
    pub commit_index: u64,
    /// Applied index as reported by the state machine.
    pub applied_index: u64,
    /// Index of the last log entry.
    pub last_index: u64,
    /// Index up to which the log was compacted.
    pub truncated_index: u64,
    pub voters: Vec<u64>,
}

/// The Raft half of a node, without any runtime.
pub struct RaftNode {
    raw: RawNode<LogStore>,
    /// Entries kept behind a snapshot when compacting.
    log_retain_entries: u64,
    /// Role and leader as last reported, to detect changes.
    last_role: (StateRole, u64),
}

impl RaftNode {
    /// Creates the node over the log store `log`, resuming from what it holds.
    pub fn new(params: &RaftParams, log: LogStore) -> Result<RaftNode> {
        let config = Config {
            id: params.id,
            election_tick: params.election_ticks,
            heartbeat_tick: params.heartbeat_ticks,
            applied: params.applied,
            max_size_per_msg: MAX_SIZE_PER_MSG_BYTES,
            max_inflight_msgs: MAX_INFLIGHT_MSGS,
            check_quorum: true,
            pre_vote: true,
            max_uncommitted_size: MAX_UNCOMMITTED_BYTES,
            max_committed_size_per_ready: MAX_COMMITTED_BYTES_PER_READY,
            ..Default::default()
        };
        config.validate()?;
        let raw = RawNode::new(&config, log, &raft_logger())?;
        Ok(RaftNode {
            raw,
            log_retain_entries: params.log_retain_entries,
            last_role: (StateRole::Follower, 0),
        })
    }

    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    /// Advances logical time by one tick. Returns whether there may be a Ready.
    pub fn tick(&mut self) -> bool {
        self.raw.tick()
    }

    /// Starts an election now (used by single-node clusters at start and by tests).
    pub fn campaign(&mut self) -> Result<()> {
        Ok(self.raw.campaign()?)
    }

    /// Feeds a message from a peer, once [`peer_check::check`] finds it is one a correct peer
    /// could send; otherwise it is refused and raft-rs never sees it.
    pub fn step(&mut self, msg: Message) -> Result<()> {
        let raft = &self.raw.raft;
        let voters = &self.raw.store().conf_state().voters;
        let committed = raft.raft_log.committed;
        let view = LogView {
            id: raft.id,
            voters,
            leader_id: raft.leader_id,
            is_leader: raft.state == StateRole::Leader,
            term: raft.term,
            committed,
            last_index: raft.raft_log.last_index(),
            committed_term: raft.raft_log.term(committed).unwrap_or(0),
        };
        if let Err(why) = peer_check::check(&msg, &view) {
            return Err(Error::InvalidArgument(format!(
                "{:?} from node {} refused: {why}",
                msg.get_msg_type(),
                msg.from
            )));
        }
        Ok(self.raw.step(msg)?)
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader id known to this node (0: none).
    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    /// Appends a command to the leader's log. Returns its (index, term).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<LogId> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        match self.raw.propose(Vec::new(), data) {
            Ok(()) => Ok(LogId {
                index: self.raw.raft.raft_log.last_index(),
                term: self.raw.raft.term,
            }),
            Err(raft::Error::ProposalDropped) => Err(Error::Overloaded(
                "proposal dropped by raft (leader transfer or too many uncommitted bytes)".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The error for a request that needs the leader. It names the leader's id but not its
    /// address, which only the RaftActor knows and adds.
    pub fn not_leader(&self) -> Error {
        let leader = self.raw.raft.leader_id;
        Error::NotLeader {
            leader_id: (leader != 0).then_some(leader),
            leader_addr: None,
        }
    }

    /// Whether a read index can be asked for now: a leader only once it has committed an entry
    /// of its own term (before that it does not know the cluster's commit index, and raft-rs
    /// silently drops the request); a follower whenever it knows a leader, to which raft-rs
    /// forwards the request.
    pub fn can_read_index(&self) -> bool {
        if self.is_leader() {
            self.raw.raft.commit_to_current_term()
        } else {
            self.raw.raft.state == StateRole::Follower && self.leader_id() != 0
        }
    }

    /// Asks for a read index; it appears in a later Ready's `read_states` with this context,
    /// once a quorum has confirmed that the leader is still the leader. Call only when
    /// [`RaftNode::can_read_index`] holds; otherwise the request is refused (a not-leader
    /// error) rather than dropped unseen. A follower's request can still be lost on the way
    /// (a new leader that has not committed in its term drops it, as does a lost message): the
    /// caller asks again after a while ([`crate::actors::read_batch`]).
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<()> {
        if !self.can_read_index() {
            return Err(Error::NotLeader {
                leader_id: (self.leader_id() != 0).then_some(self.leader_id()),
                leader_addr: None,
            });
        }
        self.raw.read_index(ctx);
        Ok(())
    }

    /// Hands leadership to the follower whose log matches the leader's furthest, so it needs
    /// the fewest entries before it can take over. raft-rs sends it the rest, then tells it to
    /// campaign at once; proposals are refused meanwhile. Returns the follower, or `None` when
    /// this node does not lead or has none.
    pub fn transfer_leadership(&mut self) -> Option<u64> {
        if !self.is_leader() {
            return None;
        }
        let id = self.id();
        let target = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(peer, _)| **peer != id)
            .max_by_key(|(_, pr)| pr.matched)
            .map(|(peer, _)| *peer)?;
        self.raw.transfer_leader(target);
        Some(target)
    }

    /// Tells raft-rs a peer could not be reached, so it stops pipelining to it.
    pub fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }

    /// Tells raft-rs how sending a snapshot to `peer` went.
    pub fn report_snapshot(&mut self, peer: u64, ok: bool) {
        let status = if ok {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.raw.report_snapshot(peer, status);
    }

    /// Records that the state machine has applied everything up to `index`.
    pub fn advance_applied(&mut self, index: u64) {
        let applied = self.raw.raft.raft_log.applied;
        let committed = self.raw.raft.raft_log.committed;
        if index > applied && index <= committed {
            self.raw.advance_apply_to(index);
        }
    }

    /// A snapshot at `index` is stored: discard the log up to `index - log_retain_entries`.
    pub fn compact_to_snapshot(&mut self, index: u64) -> Result<()> {
        let applied = self.raw.raft.raft_log.applied;
        let target = index.min(applied).saturating_sub(self.log_retain_entries);
        if target > 0 {
            self.raw.mut_store().compact(target)?;
        }
        Ok(())
    }

    pub fn status(&self) -> RaftStatus {
        let raft = &self.raw.raft;
        let store = self.raw.store();
        RaftStatus {
            id: raft.id,
            role: raft.state,
            term: raft.term,
            leader_id: raft.leader_id,
            commit_index: raft.raft_log.committed,
            applied_index: raft.raft_log.applied,
            last_index: raft.raft_log.last_index(),
            truncated_index: store.truncated().index,
            voters: store.conf_state().voters.clone(),
        }
    }

    /// The current configuration, as the log store holds it; the RaftActor sends it with each
    /// [`Apply`](crate::actors::messages::Apply), for the snapshots made after it.
    pub fn conf_state(&self) -> raft::prelude::ConfState {
        self.raw.store().conf_state().clone()
    }

    /// Handles one Ready, if there is one; every message comes back in the output, to be sent
    /// after this returns. See [`RaftNode::ready_with`].
    pub fn ready(&mut self) -> Result<Option<ReadyOutput>> {
        let mut early = Vec::new();
        let out = self.ready_with(|msgs| early = msgs)?;
        Ok(out.map(|mut out| {
            early.append(&mut out.messages);
            out.messages = early;
            out
        }))
    }

    /// Handles one Ready, if there is one. `send_early` gets the messages a leader may send
    /// before its own write is durable, and is called before the write. Each numbered step says
    /// why it comes where it does.
    pub fn ready_with(
        &mut self,
        send_early: impl FnOnce(Vec<Message>),
    ) -> Result<Option<ReadyOutput>> {
        // 1. Nothing to do unless raft-rs has something for us.
        if !self.raw.has_ready() {
            return Ok(None);
        }
        let mut rd = self.raw.ready();
        let mut out = ReadyOutput::default();

        // 2. Role and leader changes first, so the caller can fail or redirect requests that
        //    depended on the old role before it sees anything else from this Ready.
        if let Some(ss) = rd.ss() {
            let now = (ss.raft_state, ss.leader_id);
            if now != self.last_role {
                self.last_role = now;
                out.role_change = Some(RoleChange {
                    role: ss.raft_state,
                    leader_id: ss.leader_id,
                    term: self.raw.raft.term,
                });
            }
        }

        // 3. Messages a leader may send before its own write completes (raft thesis 10.2.1):
        //    followers persist the new entries while the leader does, instead of after it. The
        //    leader counts itself towards a commit only once step 5's flush is done. (raft-rs
        //    puts messages here only on a leader; a follower's wait for step 6.)
        send_early(rd.take_messages());

        // 4. A snapshot from the leader goes to the snapshot store first: if we crash after
        //    step 5 recorded it in the log, the restart restores the state machine from it.
        let snapshot = (!rd.snapshot().is_empty()).then(|| rd.snapshot().clone());
        if let Some(snap) = &snapshot {
            self.raw.store().snapshots().save_received(snap)?;
        }

        // 5. Persist snapshot metadata, new entries and the HardState in one batch, flushed if
        //    raft-rs requires it. Everything after this may depend on it being durable.
        self.raw.mut_store().persist(
            snapshot.as_ref().map(|s| s.get_metadata()),
            rd.entries(),
            rd.hs(),
            rd.must_sync(),
        )?;
        out.snapshot = snapshot;

        // 6. Messages that must wait for the write (a follower's acks and votes).
        out.messages.extend(rd.take_persisted_messages());

        // 7. Committed entries, for the state machine, after the snapshot they may follow.
        out.committed = rd.take_committed_entries();

        // 8. Completed read indexes.
        out.read_states = rd.take_read_states();

        // 9. Tell raft-rs the Ready is persisted; it may now have a new commit index, entries
        //    newly committed by it, and messages to send (a leader's commit broadcast).
        let mut light = self.raw.advance_append(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        out.messages.extend(light.take_messages());
        out.committed.extend(light.take_committed_entries());

        // 10. A persisted snapshot counts as applied for raft-rs at once. Its log now starts
        //     after the snapshot, so raft-rs must never look for entries between its old
        //     applied index and the snapshot (an election would, and would find them compacted).
        //     The state machine restores the snapshot before anything after it, in order.
        if let Some(snap) = &out.snapshot {
            let index = snap.get_metadata().index;
            if index > self.raw.raft.raft_log.applied {
                self.raw.advance_apply_to(index);
            }
        }
        Ok(Some(out))
    }

    /// Read access to the Raft log store, for tests and status.
    pub fn log_store(&self) -> &LogStore {
        self.raw.store()
    }

    /// The last index of the log and the term of that entry.
    pub fn last_log_id(&self) -> LogId {
        let idx = self.raw.raft.raft_log.last_index();
        LogId {
            index: idx,
            term: self.raw.store().term(idx).unwrap_or(0),
        }
    }
}
