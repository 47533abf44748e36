//! Every message that passes between the actors of a node, in one place.
//!
//! Who sends what:
//! - gRPC services → `ClientApiActor`: [`ClientWrite`], [`ClientRead`], [`ClientStatus`],
//!   [`ClientHash`].
//! - `ClientApiActor` → `RaftActor`: [`Propose`], [`ReadIndex`], [`GetRaftStatus`].
//! - `ClientApiActor` → `StorageActor`: [`Read`], [`GetStorageStatus`].
//! - peer gRPC service → `RaftActor`: [`StepMessage`].
//! - `RaftActor` → `PeerActor`: [`SendToPeer`]; `PeerActor` → `RaftActor`: [`PeerReport`].
//! - `RaftActor` → `StorageActor`: [`Apply`]; `StorageActor` → `RaftActor`: [`ApplyProgress`],
//!   [`SnapshotCreated`].
//! - `StorageActor` → `ClientApiActor`: [`Applied`]; `RaftActor` → `ClientApiActor`:
//!   [`RoleChanged`].
//! - `StorageActor` → `WatchHubActor`: [`LiveEvents`]; `WatchHubActor` → `StorageActor`:
//!   [`ReadHistory`], [`GetRevision`], [`WantPrevKv`].
//! - etcd Watch service → `WatchHubActor`: [`OpenWatchStream`], [`WatchStreamRequest`],
//!   [`CloseWatchStream`]; → `ClientApiActor`: [`GetLeader`].
//! - `StorageActor` → `LeaseActor`: [`LeaseChanges`], [`LeasesLoaded`]; etcd Lease service →
//!   `LeaseActor`: [`RenewLease`], [`LeaseTimeLeft`], [`ListLeases`]; `LeaseActor` →
//!   `ClientApiActor`: [`ClientWrite`] (the revokes and checkpoints it proposes); →
//!   `RaftActor`: [`ReadIndex`] (confirming leadership before a renewal); `RaftActor` →
//!   `LeaseActor`: [`RoleChanged`].
//! - node start-up → all: [`Connect`], wiring in the `RaftActor`'s address once it exists;
//!   → `StorageActor`: [`ConnectWatch`], the hub's, and [`ConnectLeases`], the LeaseActor's.
//!
//! Requests that may complete much later (a read parked until its index is applied, a read
//! index waiting for a quorum) carry a [`Reply`] instead of using actix's return value, so the
//! receiving actor can keep it without holding up its mailbox.

use actix::prelude::*;
use raft::prelude::{ConfState, Entry, Message as RaftMessage, Snapshot};
use tokio::sync::oneshot;

use crate::consensus::LogId;
use crate::consensus::{RaftStatus, RoleChange};
use crate::error::Result;
use crate::proto::raftpb::log_command::Op;
use crate::state_machine::StateHash;
use crate::state_machine::{AppliedEntry, ListPage, WriteResponse};
use etcd_api::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, HashKvResponse, LeaseCheckpointRequest,
    LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RangeResponse, TxnRequest,
};
use etcd_api::mvccpb::KeyValue;

/// The sending half of a one-shot answer.
pub type Reply<T> = oneshot::Sender<Result<T>>;

/// A client write, as the gRPC layer hands it over: one of etcd's write requests, the one
/// command model of both client APIs (kv.v1's Set is a Put, its Delete a DeleteRange of one
/// key). Each becomes one `LogCommand`, so a Txn is applied atomically in one entry.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compaction(CompactionRequest),
    /// The id is set: the proposer picks one for a request that left it 0.
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    /// Proposed by the leader's lessor only.
    LeaseCheckpoint(LeaseCheckpointRequest),
}

impl WriteOp {
    /// kv.v1's Set.
    pub fn set(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> WriteOp {
        WriteOp::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
    }

    /// kv.v1's Delete: a DeleteRange of the key alone.
    pub fn delete(key: impl Into<Vec<u8>>) -> WriteOp {
        WriteOp::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        })
    }

    /// The operation of the log command that carries it.
    pub fn into_command_op(self) -> Op {
        match self {
            WriteOp::Put(r) => Op::Put(r),
            WriteOp::DeleteRange(r) => Op::DeleteRange(r),
            WriteOp::Txn(r) => Op::Txn(r),
            WriteOp::Compaction(r) => Op::Compaction(r),
            WriteOp::LeaseGrant(r) => Op::LeaseGrant(r),
            WriteOp::LeaseRevoke(r) => Op::LeaseRevoke(r),
            WriteOp::LeaseCheckpoint(r) => Op::LeaseCheckpoint(r),
        }
    }
}

/// Which client API a request came in on: the two differ in what a follower does and in which
/// limits apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// kv.v1: keys and values within `max_key_bytes`/`max_value_bytes`; a follower answers
    /// writes and linearizable reads with not-leader and the leader's address, and the client
    /// goes there.
    KvV1,
    /// etcd's v3 API: the gRPC layer has already made etcd's checks; etcd's clients do not
    /// follow redirects, so a follower serves linearizable reads itself, with a read index
    /// from the leader (writes it forwards in the gRPC layer).
    Etcd,
}

/// What an applied write reports: where its entry sits in the log, for the response header,
/// and the state machine's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteResult {
    /// Log index of the entry that applied the write.
    pub index: u64,
    /// Term of that entry: the term of the leader that appended it.
    pub term: u64,
    /// The state machine's answer; `None` only for an entry that carried no command.
    pub response: Option<WriteResponse>,
}

impl WriteResult {
    /// Keys a DeleteRange removed (0 for any other write).
    pub fn deleted(&self) -> i64 {
        match &self.response {
            Some(WriteResponse::DeleteRange(d)) => d.deleted,
            _ => 0,
        }
    }
}

/// A read of the state machine.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadQuery {
    /// One key, at the current revision (kv.v1's Get).
    Get { key: Vec<u8> },
    /// etcd's Range, checked already by the gRPC layer.
    Range(RangeRequest),
    /// etcd's HashKV at `revision` (0: current).
    HashKv { revision: i64 },
    /// Wait until the history compaction made unreadable up to `revision` is gone from disk
    /// too (etcd's `physical` compaction); answered [`ReadResult::PhysicallyCompacted`].
    PhysicallyCompacted { revision: i64 },
    /// A page of keys.
    List {
        /// Only keys with this prefix.
        prefix: Vec<u8>,
        /// Start at this key, inclusive.
        start: Vec<u8>,
        /// At most this many keys; 0, and anything over `max_list_limit`, means
        /// `max_list_limit`.
        limit: usize,
        /// At most this many bytes of encoded answer (the first key comes however big it is):
        /// the StorageActor builds the page while applies wait behind it, and it travels as
        /// one gRPC message. 0, and anything over `max_list_bytes`, means `max_list_bytes`.
        max_bytes: usize,
        /// Leave values out: the page holds empty values, so only keys and their framing
        /// count against `max_bytes`.
        keys_only: bool,
    },
}

/// The answer to a read.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadResult {
    /// Answer to `Get`: the key with its revisions, if it exists.
    Value(Option<KeyValue>),
    /// Answer to `List`.
    Page(ListPage),
    /// Answer to `Range`; `header.revision` is the store's revision.
    Range(RangeResponse),
    /// Answer to `HashKv`.
    HashKv(HashKvResponse),
    /// Answer to `PhysicallyCompacted`: the revision removal has reached.
    PhysicallyCompacted(i64),
}

/// A read answer with the applied index it observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadAnswer {
    pub result: ReadResult,
    /// The state machine's applied index when it was read; the response header carries it.
    pub applied_index: u64,
    /// The Raft term the ClientApiActor knew when the read came in (the StorageActor, which
    /// knows no terms, leaves 0); etcd's response header carries it.
    pub term: u64,
}

/// gRPC → ClientApiActor: a write; answered once applied (or failed).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ClientWrite {
    pub op: WriteOp,
    pub api: Api,
    /// Answered once: applied, not applied, outcome unknown or refused (see `Proposals`). The
    /// gRPC layer drops its end when the deadline passes.
    pub reply: Reply<WriteResult>,
}

/// gRPC → ClientApiActor: a Get or List.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ClientRead {
    pub query: ReadQuery,
    /// Read local state without ReadIndex (may be stale).
    pub serializable: bool,
    pub api: Api,
    /// Dropped by the gRPC layer when the deadline passes, which also stops the read counting
    /// against `max_pending`.
    pub reply: Reply<ReadAnswer>,
}

/// Everything a node reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// Role, term, leader and log indexes as raft-rs has them, from the RaftActor.
    pub raft: RaftStatus,
    /// Members: (id, peer address, client address if known).
    pub members: Vec<(u64, String, Option<String>)>,
    /// The leader's client address, if known.
    pub leader_client_addr: Option<String>,
    /// The StorageActor's applied index. It and the two fields below come from the
    /// StorageActor, added by the ClientApiActor; the rest from the RaftActor.
    pub applied_index: u64,
    pub key_count: u64,
    /// Index of the newest stored snapshot.
    pub snapshot_index: u64,
    /// The store's revision and the database's size on disk, in bytes.
    pub revision: i64,
    pub db_size: u64,
}

/// gRPC → ClientApiActor: this node's status.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ClientStatus {
    pub reply: Reply<NodeStatus>,
}

/// gRPC → ClientApiActor: a digest of the state machine.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ClientHash {
    pub reply: Reply<StateHash>,
}

/// ClientApiActor → RaftActor: append an encoded `LogCommand`. Answers where it was placed.
#[derive(Debug, Message)]
#[rtype(result = "Result<LogId>")]
pub struct Propose {
    /// A `LogCommand` tagged with the proposer's node id and sequence number, as
    /// `encode_command` makes it.
    pub data: Vec<u8>,
}

/// ClientApiActor → RaftActor: confirm leadership with a quorum (on a follower: have the
/// leader confirm its own); answers the index a linearizable read must wait for.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReadIndex {
    /// Answered with the batch of reads it joins once a quorum confirms the leadership, or
    /// with not-leader if this node stops leading first.
    pub reply: Reply<u64>,
    /// Answer not-leader at once unless this node leads, instead of asking the leader it
    /// knows: the LeaseActor's check that this node still leads before it renews a lease.
    pub leader_only: bool,
}

/// ClientApiActor → RaftActor: Raft's status plus what the RaftActor knows of its peers.
#[derive(Debug, Message)]
#[rtype(result = "NodeStatus")]
pub struct GetRaftStatus;

/// Peer gRPC service → RaftActor: a message from another node.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StepMessage {
    /// Dropped unless its sender is a member; checked by `RaftNode::step` before raft-rs sees
    /// it.
    pub msg: RaftMessage,
    /// The sender's client address, remembered for leader hints.
    pub from_client_addr: String,
    /// The place this message holds in the peer inbox budget, given back when it is handled
    /// (or dropped unhandled). `None` for messages that bypass the budget (tests).
    pub slot: Option<crate::actors::inbox::InboxSlot>,
}

/// Node shutdown → RaftActor: if this node leads, hand leadership to the most up-to-date
/// follower. Answers the follower chosen, or `None` when this node does not lead (or has no
/// follower to hand over to).
#[derive(Debug, Message)]
#[rtype(result = "Option<u64>")]
pub struct TransferLeadership;

/// RaftActor → PeerActor: send this message to the peer.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SendToPeer {
    pub msg: RaftMessage,
}

/// PeerActor → RaftActor: how delivery to a peer went.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum PeerReport {
    /// A message could not be delivered (connection down or outbox full).
    /// raft-rs then probes the peer again instead of streaming appends to it.
    Unreachable { peer: u64 },
    /// A snapshot transfer finished.
    SnapshotSent {
        peer: u64,
        /// Whether the peer received all of it.
        ok: bool,
    },
}

/// RaftActor → StorageActor: restore `snapshot` (if any), then apply `entries` in order.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Apply {
    /// A snapshot received from the leader, restored only if it is ahead of the applied index.
    pub snapshot: Option<Snapshot>,
    /// Committed entries in log order; those at or below the applied index are skipped.
    pub entries: Vec<Entry>,
    /// The configuration to record in snapshots made after these entries.
    pub conf_state: ConfState,
}

/// StorageActor → RaftActor: the state machine has applied up to `index`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ApplyProgress {
    /// The RaftActor tells raft-rs, and measures its apply backlog against it.
    pub index: u64,
}

/// StorageActor → RaftActor: a snapshot at `index` is stored; the log may be compacted.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SnapshotCreated {
    /// The RaftActor compacts the log up to here, less the entries it keeps behind a snapshot.
    pub index: u64,
}

/// ClientApiActor → StorageActor: read once the applied index reaches `min_index`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Read {
    /// Answer only after applying up to here (0: now).
    pub min_index: u64,
    pub query: ReadQuery,
    pub reply: Reply<ReadAnswer>,
}

/// The state machine's status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStatus {
    pub applied_index: u64,
    pub key_count: u64,
    /// Index of the newest stored snapshot.
    pub snapshot_index: u64,
    pub revision: i64,
    /// Bytes the database takes on disk.
    pub db_size: u64,
}

/// Anyone → StorageActor: its status.
#[derive(Debug, Message)]
#[rtype(result = "StorageStatus")]
pub struct GetStorageStatus;

/// Anyone → StorageActor: a digest of the whole state, for comparing nodes.
#[derive(Debug, Message)]
#[rtype(result = "Result<StateHash>")]
pub struct GetStateHash;

/// Node shutdown → StorageActor: flush everything to disk.
#[derive(Debug, Message)]
#[rtype(result = "Result<()>")]
pub struct FlushStorage;

/// StorageActor → ClientApiActor: entries were applied.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Applied {
    /// What each entry did, with its proposer's tag, so the ClientApiActor can answer its own
    /// writes.
    pub entries: Vec<AppliedEntry>,
    /// The applied index after them: a pending write placed at or below it that no entry
    /// matched was overwritten.
    pub applied_index: u64,
    /// The index of a snapshot from the leader restored before these entries, if one was:
    /// the writes it covers cannot be matched to entries.
    pub restored_to: Option<u64>,
}

/// RaftActor → ClientApiActor: role, leader or term changed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RoleChanged {
    /// The new role, leader id and term.
    pub change: RoleChange,
    /// The leader's client address, when known. It may become known only after the change,
    /// which is then reported again with it.
    pub leader_client_addr: Option<String>,
    /// This node stopped leading because it handed leadership over on purpose: its log went to
    /// the new leader whole, so writes pending here will still be applied (or seen overwritten)
    /// and are kept waiting instead of failed.
    pub handed_over: bool,
}

/// Start-up → StorageActor, ClientApiActor, PeerActor: the RaftActor now exists.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub raft: Addr<crate::actors::RaftActor>,
}

/// WatchHubActor → StorageActor: one bounded batch of history from revision `from` on.
#[derive(Debug, Message)]
#[rtype(result = "Result<crate::mvcc::History>")]
pub struct ReadHistory {
    pub from: i64,
    /// Whether each event carries the key as it was before it.
    pub with_prev: bool,
}

/// WatchHubActor → StorageActor: the store's current revision, for a new watcher.
#[derive(Debug, Message)]
#[rtype(result = "i64")]
pub struct GetRevision;

/// WatchHubActor → StorageActor: whether live events must carry `prev_kv` (some watcher
/// wants it); sent when that changes.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct WantPrevKv(pub bool);

/// Start-up → StorageActor: where the events of every apply batch go.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectWatch {
    pub events_to: Recipient<LiveEvents>,
}

/// StorageActor → WatchHubActor: the events of one apply batch. Sent with `try_send`:
/// dropped when the hub's mailbox is full (the next batch shows the gap).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LiveEvents {
    pub batch: crate::watch::LiveBatch,
    /// The Raft term of the last entry applied, for the answers' headers.
    pub term: u64,
}

/// etcd Watch service → WatchHubActor: a new stream, answered through `outbox`.
#[derive(Message)]
#[rtype(result = "crate::watch::StreamId")]
pub struct OpenWatchStream {
    pub outbox: crate::actors::watch_hub::ChannelOutbox,
}

/// etcd Watch service → WatchHubActor: a request the client sent on a stream. Answered
/// once the hub has acted on it, so the service sends the stream's next one only then and
/// a stream's requests keep their order.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct WatchStreamRequest {
    pub stream: crate::watch::StreamId,
    pub request: etcd_api::etcdserverpb::watch_request::RequestUnion,
}

/// etcd Watch service → WatchHubActor: the client has gone.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CloseWatchStream {
    pub stream: crate::watch::StreamId,
}

/// Node shutdown → WatchHubActor: end every stream, so that their clients go on with
/// another member and the client server can finish.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EndWatchStreams;

/// etcd Watch service → ClientApiActor: the leader this member knows (0: none), for watch
/// streams whose client asked to be told when there is none (etcd's `WithRequireLeader`).
#[derive(Debug, Message)]
#[rtype(result = "u64")]
pub struct GetLeader;

/// StorageActor → LeaseActor: what an apply batch did to the lease table, sent before the
/// batch's writes are answered, so a keep-alive that follows a grant's answer finds the lease;
/// and the term of the last entry applied (sent when it changes too), since a new leader's
/// lessor takes office only once the leader's first entry of its term is applied — every
/// lease change of earlier terms is then applied too.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LeaseChanges {
    pub changes: Vec<crate::mvcc::LeaseChange>,
    pub applied_term: u64,
}

/// StorageActor → LeaseActor: the whole lease table, at start and after a snapshot is restored.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LeasesLoaded(pub Vec<(i64, crate::mvcc::Lease)>);

/// An answer of the LeaseActor, with the leader's client address when this member is not the
/// leader, for the gRPC layer to pass the question on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAnswer<T> {
    pub answer: T,
    pub leader_addr: Option<String>,
    /// The Raft term, for etcd's response headers.
    pub term: u64,
}

/// etcd Lease service → LeaseActor: a keep-alive.
#[derive(Debug, Message)]
#[rtype(result = "LeaseAnswer<crate::lease::Renewal>")]
pub struct RenewLease {
    pub id: i64,
}

/// etcd Lease service → LeaseActor: how long a lease has left.
#[derive(Debug, Message)]
#[rtype(result = "LeaseAnswer<crate::lease::TimeLeft>")]
pub struct LeaseTimeLeft {
    pub id: i64,
}

/// etcd Lease service → LeaseActor: every lease id, in order.
#[derive(Debug, Message)]
#[rtype(result = "LeaseAnswer<Vec<i64>>")]
pub struct ListLeases;

/// Start-up → StorageActor: where lease changes go.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ConnectLeases {
    pub changes_to: Recipient<LeaseChanges>,
    pub loaded_to: Recipient<LeasesLoaded>,
}

/// etcd Lease service → StorageActor: the live keys attached to a lease, in key order.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Vec<u8>>")]
pub struct GetLeaseKeys {
    pub id: i64,
}
