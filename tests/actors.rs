//! Tier-2 tests (see ARCHITECTURE.md, "Test tiers"): actor level.
//!
//! Each test starts ONE actor under test (a `StorageActor`, a `RaftActor` or a
//! `ClientApiActor`) inside the actix `System` that `#[actix_rt::test]` creates, sends it
//! messages directly, and asserts both its replies and what it sent on to other actors.
//! The exception is `client_api_with_real_raft_and_storage_writes_and_reads`, which wires the
//! three real actors together the way `src/node.rs` does (without gRPC or peers); one test also
//! drives the real peer service (`RaftService`) into a RaftActor.
//!
//! What an actor sends on is observed through test doubles:
//! - [`Recorder<M>`] is a tiny actor that accepts one message type `M` and forwards every
//!   message it receives, unchanged, into a bounded `tokio::sync::mpsc` channel. The actor
//!   under test is given the recorder's `Recipient<M>` wherever it would normally be given
//!   another actor, and the test awaits the channel.
//! - [`RoleTee`] records `RoleChanged` like a recorder, but first passes a copy on to a real
//!   `ClientApiActor`, so a test knows exactly when that actor has been told about a role.
//! - [`FakeStorage`] stands in for the `StorageActor` behind a `ClientApiActor`: it records
//!   every `Read` and answers it with an empty value.
//!
//! Nothing here sleeps for a fixed time: every wait is a `tokio::time::timeout` around the
//! event the test expects, and "nothing happened yet" is checked after a round-trip message
//! through the same mailbox (actors handle their mailbox in order).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use actix::prelude::*;
use raft::prelude::{ConfState, Entry, Message as RaftMessage, MessageType};
use tempfile::TempDir;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use distributed_kv::actors::messages::*;
use distributed_kv::actors::{ClientApiActor, ClientLimits, RaftActor, StorageActor};
use distributed_kv::consensus::{
    LogOptions, LogStore, RaftNode, RaftParams, RoleChange, SnapshotStore,
};
use distributed_kv::error::{LEADER_ADDR_METADATA, LEADER_ID_METADATA};
use distributed_kv::proto::raftpb::{log_command::Op, DeleteOp, LogCommand, SetOp};
use distributed_kv::storage::state_machine::{encode_command, list_answer_bytes};
use distributed_kv::storage::{CommandOutcome, ListPage, StateMachine};
use distributed_kv::Error;

/// Longest wait for anything a test expects to happen (a reply, a recorded message).
/// Generous, because a loaded CI machine may be slow; a passing test never waits this long.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Capacity of each recorder's channel, in messages; a test that overflows it fails.
const RECORDER_CAPACITY: usize = 1_024;
/// Tick interval of a RaftActor that should act promptly (a single-node cluster).
const FAST_TICK: Duration = Duration::from_millis(10);
/// Tick interval of a RaftActor that must not time out on its own while a test runs: with
/// [`SLOW_ELECTION_TICKS`] its first election timeout is at least 10 s away.
const SLOW_TICK: Duration = Duration::from_secs(1);
/// Election timeout in ticks for fast RaftActors.
const FAST_ELECTION_TICKS: usize = 10;
/// Election timeout in ticks for slow RaftActors.
const SLOW_ELECTION_TICKS: usize = 10;
/// Heartbeat interval in ticks.
const HEARTBEAT_TICKS: usize = 3;
/// Log entries a RaftNode keeps behind a snapshot.
const LOG_RETAIN_ENTRIES: u64 = 100;
/// Snapshot threshold large enough that tests not about snapshots never make one.
const NO_SNAPSHOTS: u64 = 1_000_000;
/// The client address the RaftActor under test advertises for itself.
const OWN_CLIENT_ADDR: &str = "127.0.0.1:1";
/// The peer address of node 1 in the member maps.
const OWN_PEER_ADDR: &str = "127.0.0.1:2";
/// Largest key a ClientApiActor here accepts, in bytes.
const MAX_KEY_BYTES: usize = 16;
/// Largest value a ClientApiActor here accepts, in bytes.
const MAX_VALUE_BYTES: usize = 64;
/// Most writes (and reads) a ClientApiActor here keeps in flight.
const MAX_PENDING: usize = 8;
/// Largest List page a ClientApiActor here returns, in keys.
const MAX_LIST_LIMIT: usize = 10;
/// Largest List page a ClientApiActor here returns, in encoded bytes.
const MAX_LIST_BYTES: usize = 4_096;

/// The limits every ClientApiActor here enforces.
fn limits() -> ClientLimits {
    ClientLimits {
        max_key_bytes: MAX_KEY_BYTES,
        max_value_bytes: MAX_VALUE_BYTES,
        max_pending: MAX_PENDING,
        max_list_limit: MAX_LIST_LIMIT,
        max_list_bytes: MAX_LIST_BYTES,
        unsafe_stale_reads: false,
    }
}

// ---------------------------------------------------------------------------------------------
// Test doubles
// ---------------------------------------------------------------------------------------------

/// Puts `msg` into a recorder channel. A full channel fails the test (it would otherwise hide
/// messages); a closed one means the test has finished and no longer listens.
fn record<M>(tx: &mpsc::Sender<M>, msg: M) {
    match tx.try_send(msg) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            panic!("a recorder received more than {RECORDER_CAPACITY} unread messages")
        }
    }
}

/// An actor that forwards every `M` it receives into a channel the test reads.
struct Recorder<M> {
    /// Where received messages go.
    tx: mpsc::Sender<M>,
}

impl<M: Message<Result = ()> + Send + 'static> Actor for Recorder<M> {
    type Context = Context<Self>;
}

impl<M: Message<Result = ()> + Send + 'static> Handler<M> for Recorder<M> {
    type Result = ();
    fn handle(&mut self, msg: M, _: &mut Context<Self>) {
        record(&self.tx, msg);
    }
}

/// Starts a [`Recorder`] for `M`: the recipient to hand to the actor under test, and the
/// channel its messages arrive on.
fn recorder<M: Message<Result = ()> + Send + 'static>() -> (Recipient<M>, mpsc::Receiver<M>) {
    let (tx, rx) = mpsc::channel(RECORDER_CAPACITY);
    (Recorder { tx }.start().recipient(), rx)
}

/// Records `RoleChanged` after passing a copy on to `to`, so once the test has received a
/// role from the channel, `to` already has it in its mailbox.
struct RoleTee {
    /// The real receiver of role changes.
    to: Recipient<RoleChanged>,
    /// Where received role changes go.
    tx: mpsc::Sender<RoleChanged>,
}

impl Actor for RoleTee {
    type Context = Context<Self>;
}

impl Handler<RoleChanged> for RoleTee {
    type Result = ();
    fn handle(&mut self, msg: RoleChanged, _: &mut Context<Self>) {
        self.to.do_send(RoleChanged {
            change: msg.change.clone(),
            leader_client_addr: msg.leader_client_addr.clone(),
            handed_over: msg.handed_over,
        });
        record(&self.tx, msg);
    }
}

/// A stand-in for the StorageActor behind a ClientApiActor: records each `Read` (min index
/// and query) and answers it with "no value" at applied index 0.
struct FakeStorage {
    /// Where the received reads go.
    tx: mpsc::Sender<(u64, ReadQuery)>,
}

impl Actor for FakeStorage {
    type Context = Context<Self>;
}

impl Handler<Read> for FakeStorage {
    type Result = ();
    fn handle(&mut self, msg: Read, _: &mut Context<Self>) {
        let _ = msg.reply.send(Ok(ReadAnswer {
            result: ReadResult::Value(None),
            applied_index: 0,
        }));
        record(&self.tx, (msg.min_index, msg.query));
    }
}

impl Handler<GetStorageStatus> for FakeStorage {
    type Result = MessageResult<GetStorageStatus>;
    fn handle(&mut self, _: GetStorageStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(StorageStatus::default())
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Waits for the next message on a recorder channel; fails the test after [`EVENT_TIMEOUT`].
async fn next<T>(rx: &mut mpsc::Receiver<T>, what: &str) -> T {
    timeout(EVENT_TIMEOUT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("recorder for {what} stopped"))
}

/// Waits for a one-shot answer; fails the test after [`EVENT_TIMEOUT`] or if it was dropped.
async fn answer<T>(
    rx: oneshot::Receiver<distributed_kv::Result<T>>,
    what: &str,
) -> distributed_kv::Result<T> {
    timeout(EVENT_TIMEOUT, rx)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for the answer to {what}"))
        .unwrap_or_else(|_| panic!("the answer to {what} was dropped"))
}

/// Awaits an actix request; fails the test after [`EVENT_TIMEOUT`] or if the mailbox failed.
async fn ask<A, M>(addr: &Addr<A>, msg: M) -> M::Result
where
    A: Actor + Handler<M>,
    A::Context: actix::dev::ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    timeout(EVENT_TIMEOUT, addr.send(msg))
        .await
        .expect("actor did not answer in time")
        .expect("actor mailbox closed")
}

/// A log entry at `index` (term 1) carrying `op`, tagged with origin (node 1, seq `index`),
/// as the ClientApiActor of node 1 would propose it.
fn command(index: u64, op: Op) -> Entry {
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

/// A Set entry; see [`command`].
fn set(index: u64, key: &str, value: &str) -> Entry {
    command(
        index,
        Op::Set(SetOp {
            key: key.into(),
            value: value.into(),
        }),
    )
}

/// A Delete entry; see [`command`].
fn del(index: u64, key: &str) -> Entry {
    command(index, Op::Delete(DeleteOp { key: key.into() }))
}

/// A configuration with these voters.
fn voters(ids: &[u64]) -> ConfState {
    ConfState {
        voters: ids.to_vec(),
        ..Default::default()
    }
}

/// An `Apply` of `entries` with no snapshot, in a one-voter configuration.
fn apply(entries: Vec<Entry>) -> Apply {
    Apply {
        snapshot: None,
        entries,
        conf_state: voters(&[1]),
    }
}

/// A Get query.
fn get(key: &str) -> ReadQuery {
    ReadQuery::Get { key: key.into() }
}

/// A StorageActor under test, its data dir, and the channels of its recorders.
struct StorageUnderTest {
    /// The actor.
    addr: Addr<StorageActor>,
    /// The snapshot store it writes to.
    snapshots: SnapshotStore,
    /// What it sent as `Applied`.
    applied: mpsc::Receiver<Applied>,
    /// What it sent as `ApplyProgress`.
    progress: mpsc::Receiver<ApplyProgress>,
    /// What it sent as `SnapshotCreated`.
    created: mpsc::Receiver<SnapshotCreated>,
    /// Kept so the data outlives the actor.
    _dir: TempDir,
}

/// Opens a fresh state machine in a temporary directory and starts a StorageActor over it
/// (one sync thread, as in `src/node.rs`), with recorders for everything it sends on.
fn start_storage(snapshot_threshold: u64) -> StorageUnderTest {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = StateMachine::open(&dir.path().join("db")).expect("state machine");
    let snapshots = SnapshotStore::open(dir.path()).expect("snapshot store");
    let (applied_to, applied) = recorder::<Applied>();
    let (progress_to, progress) = recorder::<ApplyProgress>();
    let (created_to, created) = recorder::<SnapshotCreated>();
    let sm = Mutex::new(Some(sm));
    let snaps = snapshots.clone();
    let addr = SyncArbiter::start(1, move || {
        let sm = sm
            .lock()
            .unwrap()
            .take()
            .expect("the storage actor starts once");
        StorageActor::new(
            sm,
            snaps.clone(),
            snapshot_threshold,
            Some(applied_to.clone()),
        )
        .with_raft(progress_to.clone(), created_to.clone())
    });
    StorageUnderTest {
        addr,
        snapshots,
        applied,
        progress,
        created,
        _dir: dir,
    }
}

/// Sends a `Read` and returns the receiver of its answer without waiting for it.
fn send_read(
    addr: &Addr<StorageActor>,
    min_index: u64,
    query: ReadQuery,
) -> oneshot::Receiver<distributed_kv::Result<ReadAnswer>> {
    let (reply, rx) = oneshot::channel();
    addr.do_send(Read {
        min_index,
        query,
        reply,
    });
    rx
}

/// Reads through the StorageActor and waits for the answer, which must be a success.
async fn read(addr: &Addr<StorageActor>, min_index: u64, query: ReadQuery) -> ReadAnswer {
    answer(send_read(addr, min_index, query), "a Read")
        .await
        .expect("read failed")
}

/// The value of `key` in a StorageActor, read without waiting for any index.
async fn value(addr: &Addr<StorageActor>, key: &str) -> Option<Vec<u8>> {
    match read(addr, 0, get(key)).await.result {
        ReadResult::Value(v) => v,
        other => panic!("Get answered {other:?}"),
    }
}

/// A RaftNode for node 1 over a fresh sled log in `dir`, whose initial voters are `members`.
fn raft_node(dir: &TempDir, members: &[u64], election_ticks: usize) -> RaftNode {
    let snapshots = SnapshotStore::open(dir.path()).expect("snapshot store");
    let log = LogStore::open(
        &dir.path().join("wal"),
        LogOptions::default(),
        snapshots,
        members,
    )
    .expect("raft log");
    let params = RaftParams {
        id: 1,
        election_ticks,
        heartbeat_ticks: HEARTBEAT_TICKS,
        applied: 0,
        log_retain_entries: LOG_RETAIN_ENTRIES,
    };
    RaftNode::new(&params, log).expect("raft node")
}

/// Peer addresses for members `ids` (node n at 127.0.0.1:n*10, node 1 at [`OWN_PEER_ADDR`]).
fn members(ids: &[u64]) -> BTreeMap<u64, String> {
    ids.iter()
        .map(|&id| {
            let addr = if id == 1 {
                OWN_PEER_ADDR.to_string()
            } else {
                format!("127.0.0.1:{}", id * 10)
            };
            (id, addr)
        })
        .collect()
}

/// A single-node RaftActor under test and the channels of its recorders.
struct SingleRaft {
    /// The actor.
    addr: Addr<RaftActor>,
    /// What it sent to the StorageActor.
    applies: mpsc::Receiver<Apply>,
    /// What it sent as role changes.
    roles: mpsc::Receiver<RoleChanged>,
    /// Kept so the log outlives the actor.
    _dir: TempDir,
}

/// Starts the RaftActor of a one-voter cluster {1}, with recorders for `Apply` and
/// `RoleChanged` and no peers.
fn start_single_raft() -> SingleRaft {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = raft_node(&dir, &[1], FAST_ELECTION_TICKS);
    let (apply_to, applies) = recorder::<Apply>();
    let (role_to, roles) = recorder::<RoleChanged>();
    let addr = RaftActor::new(
        node,
        FAST_TICK,
        OWN_CLIENT_ADDR.into(),
        members(&[1]),
        apply_to,
        HashMap::new(),
        Some(role_to),
    )
    .start();
    SingleRaft {
        addr,
        applies,
        roles,
        _dir: dir,
    }
}

/// Waits until `roles` reports this node as leader; returns that report.
async fn until_leader(roles: &mut mpsc::Receiver<RoleChanged>) -> RoleChanged {
    loop {
        let r = next(roles, "RoleChanged to Leader").await;
        if r.change.role == raft::StateRole::Leader {
            return r;
        }
    }
}

/// Waits until a recorded `Apply` carries the entry at `index`; returns that entry.
async fn until_applied(applies: &mut mpsc::Receiver<Apply>, index: u64) -> Entry {
    loop {
        let a = next(applies, &format!("an Apply with entry {index}")).await;
        if let Some(e) = a.entries.into_iter().find(|e| e.index == index) {
            return e;
        }
    }
}

/// Asks a RaftActor for a read index and waits for the answer.
async fn read_index(raft: &Addr<RaftActor>) -> distributed_kv::Result<u64> {
    let (reply, rx) = oneshot::channel();
    ask(raft, ReadIndex { reply }).await;
    answer(rx, "ReadIndex").await
}

/// A raft message of `kind` from `from` to node 1 at `term`.
fn raft_msg(kind: MessageType, from: u64, term: u64) -> RaftMessage {
    let mut m = RaftMessage::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = 1;
    m.term = term;
    m
}

/// Steps `msg` into a RaftActor as if the peer service had received it.
fn step(raft: &Addr<RaftActor>, msg: RaftMessage) {
    raft.do_send(StepMessage {
        msg,
        from_client_addr: String::new(),
        slot: None,
    });
}

/// Sends a client write and waits for its outcome.
async fn client_write(
    api: &Addr<ClientApiActor>,
    op: WriteOp,
) -> distributed_kv::Result<WriteResult> {
    let (reply, rx) = oneshot::channel();
    api.do_send(ClientWrite { op, reply });
    answer(rx, "a ClientWrite").await
}

/// Sends a client read and waits for its answer.
async fn client_read(
    api: &Addr<ClientApiActor>,
    query: ReadQuery,
    serializable: bool,
) -> distributed_kv::Result<ReadAnswer> {
    let (reply, rx) = oneshot::channel();
    api.do_send(ClientRead {
        query,
        serializable,
        reply,
    });
    answer(rx, "a ClientRead").await
}

/// A Set write.
fn set_op(key: &[u8], value: &[u8]) -> WriteOp {
    WriteOp::Set {
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

/// Asserts `r` is `Error::InvalidArgument` whose message contains `limit`, and that it becomes
/// `INVALID_ARGUMENT` over gRPC. `what` names the case in failure messages.
fn assert_invalid<T: std::fmt::Debug>(r: distributed_kv::Result<T>, limit: &str, what: &str) {
    match r {
        Err(Error::InvalidArgument(msg)) => {
            assert!(msg.contains(limit), "{what}: `{msg}` does not name {limit}");
            let status = tonic::Status::from(Error::InvalidArgument(msg));
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}");
        }
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

/// A ClientApiActor of node 1 over a [`FakeStorage`], not connected to any RaftActor; and the
/// channel of the reads the fake storage received.
fn start_client_api() -> (Addr<ClientApiActor>, mpsc::Receiver<(u64, ReadQuery)>) {
    let (tx, reads) = mpsc::channel(RECORDER_CAPACITY);
    let storage = FakeStorage { tx }.start();
    let api = ClientApiActor::new(
        1,
        limits(),
        storage.clone().recipient(),
        storage.recipient(),
    )
    .start();
    (api, reads)
}

/// A RaftActor of node 1 in the three-voter cluster {1, 2, 3} that ticks slowly enough never
/// to campaign during a test; its outgoing peer messages go to the returned channel.
fn start_follower_raft(dir: &TempDir) -> (Addr<RaftActor>, mpsc::Receiver<SendToPeer>) {
    let node = raft_node(dir, &[1, 2, 3], SLOW_ELECTION_TICKS);
    let (apply_to, _applies) = recorder::<Apply>();
    let (peer_to, sent) = recorder::<SendToPeer>();
    let peers = HashMap::from([(2, peer_to.clone()), (3, peer_to)]);
    let addr = RaftActor::new(
        node,
        SLOW_TICK,
        OWN_CLIENT_ADDR.into(),
        members(&[1, 2, 3]),
        apply_to,
        peers,
        None,
    )
    .start();
    (addr, sent)
}

// ---------------------------------------------------------------------------------------------
// StorageActor
// ---------------------------------------------------------------------------------------------

/// Applying a batch reports each entry's outcome and origin to the ClientApiActor, the applied
/// index to the RaftActor, and makes the data readable.
#[actix_rt::test]
async fn storage_applies_batch_and_reports_outcomes_and_progress() {
    let mut s = start_storage(NO_SNAPSHOTS);
    let noop = Entry {
        index: 1,
        term: 1,
        ..Default::default()
    };
    s.addr.do_send(apply(vec![
        noop,
        set(2, "a", "1"),
        set(3, "b", "2"),
        del(4, "b"),
        del(5, "missing"),
        set(6, "a", "3"),
    ]));

    let applied = next(&mut s.applied, "Applied").await;
    assert_eq!(applied.applied_index, 6);
    let summary: Vec<_> = applied
        .entries
        .iter()
        .map(|e| (e.index, e.term, e.origin, e.outcome.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, 1, None, CommandOutcome::Noop),
            (2, 1, Some((1, 2)), CommandOutcome::Set),
            (3, 1, Some((1, 3)), CommandOutcome::Set),
            (
                4,
                1,
                Some((1, 4)),
                CommandOutcome::Deleted { existed: true }
            ),
            (
                5,
                1,
                Some((1, 5)),
                CommandOutcome::Deleted { existed: false }
            ),
            (6, 1, Some((1, 6)), CommandOutcome::Set),
        ]
    );
    assert_eq!(next(&mut s.progress, "ApplyProgress").await.index, 6);

    let a = read(&s.addr, 0, get("a")).await;
    assert_eq!(a.result, ReadResult::Value(Some(b"3".to_vec())));
    assert_eq!(a.applied_index, 6);
    assert_eq!(value(&s.addr, "b").await, None, "b was deleted");
    let status = ask(&s.addr, GetStorageStatus).await;
    assert_eq!((status.applied_index, status.key_count), (6, 1));

    // Re-sending entries already applied (as after a restart) changes nothing and reports
    // no outcomes for them.
    s.addr
        .do_send(apply(vec![set(6, "a", "stale"), set(7, "c", "4")]));
    let again = next(&mut s.applied, "Applied after a partial resend").await;
    assert_eq!(again.applied_index, 7);
    assert_eq!(
        again.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![7]
    );
    assert_eq!(value(&s.addr, "a").await, Some(b"3".to_vec()));
}

/// A read whose read index is ahead of the state machine waits until an Apply reaches it,
/// and each parked read is woken exactly when its own index is applied.
#[actix_rt::test]
async fn storage_parks_reads_until_their_index_is_applied() {
    let mut s = start_storage(NO_SNAPSHOTS);
    s.addr.do_send(apply(vec![
        set(1, "k", "v1"),
        set(2, "x", "1"),
        set(3, "x", "2"),
    ]));
    assert_eq!(next(&mut s.progress, "ApplyProgress").await.index, 3);

    let mut at_4 = send_read(&s.addr, 4, get("k"));
    let mut at_6 = send_read(&s.addr, 6, get("k"));
    // A round-trip through the same (ordered) mailbox: both reads have been handled.
    assert_eq!(ask(&s.addr, GetStorageStatus).await.applied_index, 3);
    assert!(
        at_4.try_recv().is_err(),
        "a read at index 4 was answered at applied index 3"
    );

    s.addr
        .do_send(apply(vec![set(4, "k", "v4"), set(5, "k", "v5")]));
    let a = answer(at_4, "the read parked at 4")
        .await
        .expect("parked read");
    assert_eq!(a.applied_index, 5);
    assert_eq!(
        a.result,
        ReadResult::Value(Some(b"v5".to_vec())),
        "the answer reflects everything applied when it was woken"
    );
    assert_eq!(ask(&s.addr, GetStorageStatus).await.applied_index, 5);
    assert!(
        at_6.try_recv().is_err(),
        "a read at index 6 was answered at applied index 5"
    );

    s.addr.do_send(apply(vec![del(6, "k")]));
    let a = answer(at_6, "the read parked at 6")
        .await
        .expect("parked read");
    assert_eq!((a.result, a.applied_index), (ReadResult::Value(None), 6));
}

/// Past the snapshot threshold the StorageActor stores a snapshot and tells the RaftActor;
/// a second StorageActor given that snapshot in an Apply restores the same state.
#[actix_rt::test]
async fn storage_snapshots_past_threshold_and_another_restores_it() {
    const THRESHOLD: u64 = 3;
    let mut s = start_storage(THRESHOLD);
    s.addr
        .do_send(apply(vec![set(1, "a", "1"), set(2, "b", "2")]));
    // A round-trip through the mailbox: the Apply, snapshot decision included, is done.
    let status = ask(&s.addr, GetStorageStatus).await;
    assert_eq!((status.applied_index, status.snapshot_index), (2, 0));
    assert_eq!(s.snapshots.current(), (0, 0), "below the threshold");
    assert_eq!(next(&mut s.progress, "ApplyProgress").await.index, 2);

    s.addr
        .do_send(apply(vec![set(3, "c", "3"), del(4, "a"), set(5, "d", "4")]));
    assert_eq!(next(&mut s.created, "SnapshotCreated").await.index, 5);
    assert_eq!(s.snapshots.current(), (5, 1));

    // The next snapshot comes THRESHOLD entries after this one, not before.
    s.addr
        .do_send(apply(vec![set(6, "e", "5"), set(7, "f", "6")]));
    assert_eq!(next(&mut s.progress, "ApplyProgress").await.index, 5);
    assert_eq!(next(&mut s.progress, "ApplyProgress").await.index, 7);
    let status = ask(&s.addr, GetStorageStatus).await;
    assert_eq!(
        (status.applied_index, status.snapshot_index),
        (7, 5),
        "no snapshot before the threshold"
    );
    assert_eq!(s.snapshots.current(), (5, 1));

    let snap = s
        .snapshots
        .load()
        .expect("load snapshot")
        .expect("a snapshot is stored");
    assert_eq!(snap.get_metadata().index, 5);
    assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1]);

    // A fresh node receives the snapshot from its leader.
    let mut fresh = start_storage(NO_SNAPSHOTS);
    fresh.addr.do_send(Apply {
        snapshot: Some(snap),
        entries: vec![],
        conf_state: voters(&[1]),
    });
    assert_eq!(next(&mut fresh.progress, "ApplyProgress").await.index, 5);
    let restored = next(&mut fresh.applied, "Applied after a restore").await;
    assert_eq!(restored.applied_index, 5);
    assert!(restored.entries.is_empty());
    for (key, want) in [
        ("a", None),
        ("b", Some("2")),
        ("c", Some("3")),
        ("d", Some("4")),
    ] {
        assert_eq!(
            value(&fresh.addr, key).await,
            want.map(|v| v.as_bytes().to_vec()),
            "key {key} after restore"
        );
    }
    let status = ask(&fresh.addr, GetStorageStatus).await;
    assert_eq!((status.applied_index, status.key_count), (5, 3));

    // Same state as the original had at index 5: compare hashes there, by applying the
    // same later entries to the restored actor too.
    fresh
        .addr
        .do_send(apply(vec![set(6, "e", "5"), set(7, "f", "6")]));
    assert_eq!(next(&mut fresh.progress, "ApplyProgress").await.index, 7);
    let h1 = ask(&s.addr, GetStateHash).await.expect("hash");
    let h2 = ask(&fresh.addr, GetStateHash).await.expect("hash");
    assert_eq!(h1, h2);
    assert_eq!(h1.0, 7);

    // A snapshot older than what is applied is ignored.
    let old = s.snapshots.load().unwrap().unwrap();
    fresh.addr.do_send(Apply {
        snapshot: Some(old),
        entries: vec![],
        conf_state: voters(&[1]),
    });
    assert_eq!(next(&mut fresh.progress, "ApplyProgress").await.index, 7);
    assert_eq!(value(&fresh.addr, "f").await, Some(b"6".to_vec()));
}

/// List through `Read` pages by prefix and start key, and says where the next page starts.
#[actix_rt::test]
async fn storage_lists_in_pages_with_next_key() {
    let mut s = start_storage(NO_SNAPSHOTS);
    let keys = ["a/1", "a/2", "a/3", "b/1"];
    s.addr.do_send(apply(
        keys.iter()
            .enumerate()
            .map(|(i, k)| set(i as u64 + 1, k, &format!("v{i}")))
            .collect(),
    ));
    assert_eq!(next(&mut s.progress, "ApplyProgress").await.index, 4);

    let list = |start: &str, limit, keys_only| ReadQuery::List {
        prefix: b"a/".to_vec(),
        start: start.into(),
        limit,
        max_bytes: usize::MAX,
        keys_only,
    };
    let page = |a: ReadAnswer| match a.result {
        ReadResult::Page(p) => p,
        other => panic!("List answered {other:?}"),
    };
    let first = page(read(&s.addr, 0, list("", 2, false)).await);
    assert_eq!(
        first,
        ListPage {
            kvs: vec![
                (b"a/1".to_vec(), b"v0".to_vec()),
                (b"a/2".to_vec(), b"v1".to_vec())
            ],
            next_key: Some(b"a/3".to_vec()),
        }
    );
    let start = String::from_utf8(first.next_key.unwrap()).unwrap();
    let second = page(read(&s.addr, 0, list(&start, 2, true)).await);
    assert_eq!(
        second,
        ListPage {
            kvs: vec![(b"a/3".to_vec(), vec![])],
            next_key: None,
        },
        "last page of the prefix, keys only"
    );
    let all = page(
        read(
            &s.addr,
            4,
            ReadQuery::List {
                prefix: vec![],
                start: vec![],
                limit: 10,
                max_bytes: usize::MAX,
                keys_only: true,
            },
        )
        .await,
    );
    assert_eq!(all.kvs.len(), 4);
    assert_eq!(all.next_key, None);
}

/// A List of big values comes in pages, each within the byte bound yet never empty, that
/// together hold every value whole; keys only, the same bound holds them all in one page.
/// An Apply sent behind a List is handled once that one bounded page is built.
#[actix_rt::test]
async fn storage_lists_big_values_in_pages_within_the_byte_bound() {
    /// Size of each value: large enough for sled to keep it in a blob file.
    const VALUE_BYTES: usize = 64 * 1024;
    /// Number of values.
    const VALUES: u64 = 10;
    /// The byte bound of each page: room for three values, not four.
    const PAGE_BYTES: usize = 3 * VALUE_BYTES + 1_024;
    let mut s = start_storage(NO_SNAPSHOTS);
    let key = |i: u64| format!("big/{i:02}");
    let big_value = |i: u64| char::from(b'a' + i as u8).to_string().repeat(VALUE_BYTES);
    s.addr.do_send(apply(
        (1..=VALUES)
            .map(|i| set(i, &key(i), &big_value(i)))
            .collect(),
    ));
    assert_eq!(next(&mut s.progress, "ApplyProgress").await.index, VALUES);

    let list = |start: Vec<u8>, max_bytes, keys_only| ReadQuery::List {
        prefix: b"big/".to_vec(),
        start,
        limit: usize::MAX,
        max_bytes,
        keys_only,
    };
    let page = |a: ReadAnswer| match a.result {
        ReadResult::Page(p) => p,
        other => panic!("List answered {other:?}"),
    };
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    let mut start = Vec::new();
    loop {
        let p = page(read(&s.addr, 0, list(start, PAGE_BYTES, false)).await);
        assert!(!p.kvs.is_empty(), "a page holds at least one key");
        let bytes = list_answer_bytes(&p);
        assert!(bytes <= PAGE_BYTES, "a page of {bytes} bytes");
        sizes.push(p.kvs.len());
        got.extend(p.kvs);
        match p.next_key {
            Some(k) => start = k,
            None => break,
        }
    }
    assert_eq!(sizes, [3, 3, 3, 1], "pages cut by bytes, not by count");
    let want: Vec<_> = (1..=VALUES)
        .map(|i| (key(i).into_bytes(), big_value(i).into_bytes()))
        .collect();
    assert!(got == want, "every value arrives whole and in order");

    // A bound below one value still returns one, so the client advances.
    let p = page(read(&s.addr, 0, list(vec![], 1, false)).await);
    assert!(p.kvs == want[..1], "the first value alone, whole");
    assert_eq!(p.next_key, Some(key(2).into_bytes()));

    // Keys only: only keys count.
    let p = page(read(&s.addr, 0, list(vec![], PAGE_BYTES, true)).await);
    assert_eq!(p.kvs.len(), VALUES as usize);
    assert_eq!(p.next_key, None);

    // An apply queued behind a List runs once that page is built: the List's answer is the
    // state before it, a read after it sees it.
    let listed = send_read(&s.addr, 0, list(vec![], PAGE_BYTES, false));
    s.addr.do_send(apply(vec![set(VALUES + 1, &key(0), "new")]));
    let before = page(answer(listed, "the List").await.expect("list"));
    assert_eq!(before.kvs[0].0, key(1).into_bytes());
    assert_eq!(
        next(&mut s.progress, "ApplyProgress").await.index,
        VALUES + 1
    );
    assert_eq!(value(&s.addr, &key(0)).await, Some(b"new".to_vec()));
}

// ---------------------------------------------------------------------------------------------
// RaftActor
// ---------------------------------------------------------------------------------------------

/// A one-voter RaftActor elects itself, accepts a proposal, and sends the committed entry to
/// the StorageActor.
#[actix_rt::test]
async fn raft_single_node_elects_itself_and_applies_proposals() {
    let mut r = start_single_raft();
    let role = until_leader(&mut r.roles).await;
    assert_eq!(role.change.leader_id, 1);
    assert_eq!(role.leader_client_addr.as_deref(), Some(OWN_CLIENT_ADDR));

    // The new leader's empty entry comes first.
    let noop = until_applied(&mut r.applies, 1).await;
    assert!(noop.data.is_empty());

    let data = encode_command(&LogCommand {
        origin_node: 1,
        origin_seq: 42,
        op: Some(Op::Set(SetOp {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        })),
    });
    let (index, term) = ask(&r.addr, Propose { data: data.clone() })
        .await
        .expect("propose");
    assert_eq!((index, term), (2, role.change.term));
    let entry = until_applied(&mut r.applies, index).await;
    assert_eq!((entry.index, entry.term), (index, term));
    assert_eq!(entry.data.as_ref(), data.as_slice());

    let (i2, _) = ask(
        &r.addr,
        Propose {
            data: b"x".to_vec(),
        },
    )
    .await
    .expect("second propose");
    assert_eq!(i2, index + 1, "indexes are consecutive");
    assert_eq!(until_applied(&mut r.applies, i2).await.data.as_ref(), b"x");
}

/// ReadIndex and GetRaftStatus of a one-voter leader; ApplyProgress moves the applied index.
#[actix_rt::test]
async fn raft_read_index_and_status() {
    let mut r = start_single_raft();
    let role = until_leader(&mut r.roles).await;
    let (index, _) = ask(
        &r.addr,
        Propose {
            data: b"p".to_vec(),
        },
    )
    .await
    .expect("propose");
    until_applied(&mut r.applies, index).await;

    let ri = read_index(&r.addr).await.expect("read index");
    assert!(
        ri >= index,
        "read index {ri} is below the committed proposal {index}"
    );

    ask(&r.addr, ApplyProgress { index }).await;
    let status = ask(&r.addr, GetRaftStatus).await;
    assert_eq!(status.raft.role, "leader");
    assert_eq!(status.raft.id, 1);
    assert_eq!(status.raft.leader_id, 1);
    assert_eq!(status.raft.term, role.change.term);
    assert!(status.raft.commit_index >= index);
    assert_eq!(status.raft.applied_index, index);
    assert_eq!(status.raft.voters, vec![1]);
    assert_eq!(status.leader_client_addr.as_deref(), Some(OWN_CLIENT_ADDR));
    assert_eq!(
        status.members,
        vec![(
            1,
            OWN_PEER_ADDR.to_string(),
            Some(OWN_CLIENT_ADDR.to_string())
        )]
    );
}

/// Messages raft-rs refuses (local-only types, responses from unknown peers) or answers to a
/// peer that does not exist are dropped without harming the actor.
#[actix_rt::test]
async fn raft_survives_bad_peer_messages() {
    let mut r = start_single_raft();
    let role = until_leader(&mut r.roles).await;
    let term = role.change.term;

    // Local-only message types: raft-rs refuses them from the network.
    step(&r.addr, raft_msg(MessageType::MsgHup, 1, 0));
    step(&r.addr, raft_msg(MessageType::MsgBeat, 2, term));
    step(&r.addr, raft_msg(MessageType::MsgCheckQuorum, 99, term));
    // Responses from a node that is not a member.
    let mut resp = raft_msg(MessageType::MsgAppendResponse, 99, term);
    resp.index = 1_000;
    step(&r.addr, resp);
    step(
        &r.addr,
        raft_msg(MessageType::MsgHeartbeatResponse, 99, term),
    );
    // A pre-vote request from a non-member, which the leader refuses in a message to a peer
    // it has no outbox for.
    step(&r.addr, raft_msg(MessageType::MsgRequestPreVote, 99, term));
    // A message with a remembered client address for a non-member.
    r.addr.do_send(StepMessage {
        msg: raft_msg(MessageType::MsgHeartbeatResponse, 98, term),
        from_client_addr: "127.0.0.1:9898".into(),
        slot: None,
    });

    let status = ask(&r.addr, GetRaftStatus).await;
    assert_eq!(status.raft.role, "leader");
    assert_eq!((status.raft.leader_id, status.raft.term), (1, term));
    assert_eq!(status.members.len(), 1, "a message does not make a member");
    // And it still works.
    let (index, _) = ask(
        &r.addr,
        Propose {
            data: b"ok".to_vec(),
        },
    )
    .await
    .expect("propose after bad messages");
    until_applied(&mut r.applies, index).await;
}

/// A newly elected leader of a three-voter cluster that receives a ReadIndex before its
/// empty entry is committed must still answer it (with an index, or a retryable error)
/// instead of dropping it. The test plays peer 2 by hand: it grants the vote, acknowledges
/// the leader's entry and answers heartbeats until the ReadIndex is answered.
#[actix_rt::test]
async fn raft_new_leader_answers_read_index_sent_before_first_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (raft, mut sent) = start_follower_raft(&dir);
    // Peer 2, as leader of term 1, asks node 1 to take over at once (leadership transfer: no
    // pre-vote, no wait).
    step(&raft, raft_msg(MessageType::MsgTimeoutNow, 2, 1));
    let vote = loop {
        let m = next(&mut sent, "a vote request").await.msg;
        if m.get_msg_type() == MessageType::MsgRequestVote && m.to == 2 {
            break m;
        }
    };
    step(
        &raft,
        raft_msg(MessageType::MsgRequestVoteResponse, 2, vote.term),
    );
    let leader_term = loop {
        let status = ask(&raft, GetRaftStatus).await;
        if status.raft.role == "leader" {
            break status.raft.term;
        }
        // Not yet: wait for the next thing it sends (its Ready has not run).
        next(&mut sent, "the new leader's first messages").await;
    };

    // The leader's empty entry is not committed yet: nobody has acknowledged it.
    let (reply, mut first) = oneshot::channel();
    ask(&raft, ReadIndex { reply }).await;

    // Peer 2 acknowledges the leader's entry, which commits it.
    let entry_index = ask(&raft, GetRaftStatus).await.raft.last_index;
    let mut ack = raft_msg(MessageType::MsgAppendResponse, 2, leader_term);
    ack.index = entry_index;
    step(&raft, ack);
    while ask(&raft, GetRaftStatus).await.raft.commit_index < entry_index {
        next(&mut sent, "the leader's commit").await;
    }
    // A control: a ReadIndex sent after the first commit.
    let (reply, mut second) = oneshot::channel();
    ask(&raft, ReadIndex { reply }).await;

    // Peer 2 answers heartbeats (which carry the read contexts) until both are answered.
    let (mut first_answer, mut second_answer) = (None, None);
    let _ = timeout(EVENT_TIMEOUT, async {
        while first_answer.is_none() || second_answer.is_none() {
            tokio::select! {
                r = &mut first, if first_answer.is_none() => {
                    first_answer = Some(r.expect("first ReadIndex reply dropped"));
                }
                r = &mut second, if second_answer.is_none() => {
                    second_answer = Some(r.expect("second ReadIndex reply dropped"));
                }
                m = sent.recv() => {
                    let m = m.expect("peer recorder stopped").msg;
                    if m.get_msg_type() == MessageType::MsgHeartbeat && m.to == 2 {
                        let mut hb = raft_msg(MessageType::MsgHeartbeatResponse, 2, m.term);
                        hb.context = m.context.clone();
                        step(&raft, hb);
                    }
                }
            }
        }
    })
    .await;
    match second_answer
        .expect("test harness: a ReadIndex after the first commit was never answered")
    {
        Ok(index) => assert!(index >= entry_index, "read index {index} < {entry_index}"),
        Err(e) => panic!("a ReadIndex on a committed leader failed: {e}"),
    }
    match first_answer.expect("the ReadIndex sent before the first commit was never answered") {
        Ok(index) => assert!(index >= entry_index, "read index {index} < {entry_index}"),
        Err(e) => assert_eq!(
            tonic::Status::from(e).code(),
            tonic::Code::Unavailable,
            "a refused ReadIndex must be retryable"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// ClientApiActor
// ---------------------------------------------------------------------------------------------

/// Invalid keys and values are refused with INVALID_ARGUMENT naming the limit; inputs exactly
/// at the limits pass validation (and then fail only because no RaftActor is connected).
#[actix_rt::test]
async fn client_api_validates_keys_and_values() {
    let (api, mut reads) = start_client_api();
    let max_key = vec![b'k'; MAX_KEY_BYTES];
    let long_key = vec![b'k'; MAX_KEY_BYTES + 1];
    let max_value = vec![b'v'; MAX_VALUE_BYTES];
    let long_value = vec![b'v'; MAX_VALUE_BYTES + 1];

    assert_invalid(
        client_write(&api, set_op(b"", b"v")).await,
        "empty",
        "empty key",
    );
    assert_invalid(
        client_write(&api, WriteOp::Delete { key: vec![] }).await,
        "empty",
        "empty key in a delete",
    );
    assert_invalid(
        client_write(&api, set_op(&long_key, b"v")).await,
        "max_key_bytes",
        "long key",
    );
    assert_invalid(
        client_write(
            &api,
            WriteOp::Delete {
                key: long_key.clone(),
            },
        )
        .await,
        "max_key_bytes",
        "long key in a delete",
    );
    assert_invalid(
        client_write(&api, set_op(b"k", &long_value)).await,
        "max_value_bytes",
        "long value",
    );
    assert_invalid(
        client_read(&api, ReadQuery::Get { key: vec![] }, true).await,
        "empty",
        "empty key in a read",
    );
    assert_invalid(
        client_read(
            &api,
            ReadQuery::Get {
                key: long_key.clone(),
            },
            true,
        )
        .await,
        "max_key_bytes",
        "long key in a read",
    );
    assert_invalid(
        client_read(
            &api,
            ReadQuery::List {
                prefix: long_key.clone(),
                start: vec![],
                limit: 1,
                max_bytes: 0,
                keys_only: false,
            },
            true,
        )
        .await,
        "max_key_bytes",
        "long prefix in a list",
    );

    // Exactly at the limits: valid, refused only for want of a RaftActor.
    match client_write(&api, set_op(&max_key, &max_value)).await {
        Err(e @ Error::ShuttingDown(_)) => {
            assert_eq!(tonic::Status::from(e).code(), tonic::Code::Unavailable)
        }
        other => panic!("a write at the limits: expected ShuttingDown, got {other:?}"),
    }
    // No invalid read reached the storage; a valid serializable one does, with the List
    // limit clamped to max_list_limit and its byte bound to max_list_bytes.
    assert!(reads.try_recv().is_err(), "an invalid read reached storage");
    for (asked_bytes, forwarded_bytes) in [
        (0, MAX_LIST_BYTES),
        (MAX_LIST_BYTES + 1, MAX_LIST_BYTES),
        (usize::MAX, MAX_LIST_BYTES),
        (100, 100),
    ] {
        client_read(
            &api,
            ReadQuery::List {
                prefix: max_key.clone(),
                start: vec![],
                limit: 0,
                max_bytes: asked_bytes,
                keys_only: false,
            },
            true,
        )
        .await
        .expect("serializable list");
        let (min_index, query) = next(&mut reads, "the forwarded List").await;
        assert_eq!(min_index, 0);
        assert_eq!(
            query,
            ReadQuery::List {
                prefix: max_key.clone(),
                start: vec![],
                limit: MAX_LIST_LIMIT,
                max_bytes: forwarded_bytes,
                keys_only: false,
            },
            "a List asking for {asked_bytes} bytes"
        );
    }
}

/// A follower refuses writes and linearizable reads with NOT_LEADER naming the leader from
/// the last RoleChanged, mapped to UNAVAILABLE with the leader in the metadata.
#[actix_rt::test]
async fn client_api_not_leader_carries_leader_hint() {
    const LEADER_ADDR: &str = "127.0.0.1:7002";
    let dir = tempfile::tempdir().unwrap();
    let (raft, _sent) = start_follower_raft(&dir);
    let (api, mut reads) = start_client_api();
    api.do_send(Connect { raft: raft.clone() });
    api.do_send(RoleChanged {
        change: RoleChange {
            role: raft::StateRole::Follower,
            leader_id: 2,
            term: 3,
        },
        leader_client_addr: Some(LEADER_ADDR.into()),
        handed_over: false,
    });

    let err = client_write(&api, set_op(b"k", b"v")).await.unwrap_err();
    match &err {
        Error::NotLeader {
            leader_id,
            leader_addr,
        } => {
            assert_eq!(*leader_id, Some(2));
            assert_eq!(leader_addr.as_deref(), Some(LEADER_ADDR));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let md = status.metadata();
    assert_eq!(
        md.get(LEADER_ADDR_METADATA).and_then(|v| v.to_str().ok()),
        Some(LEADER_ADDR)
    );
    assert_eq!(
        md.get("x-leader-addr").unwrap().to_str().unwrap(),
        LEADER_ADDR
    );
    assert_eq!(
        md.get(LEADER_ID_METADATA).and_then(|v| v.to_str().ok()),
        Some("2")
    );

    match client_read(&api, get("k"), false).await {
        Err(Error::NotLeader {
            leader_id: Some(2),
            leader_addr: Some(addr),
        }) => assert_eq!(addr, LEADER_ADDR),
        other => panic!("linearizable read on a follower: {other:?}"),
    }
    assert!(reads.try_recv().is_err(), "a refused read reached storage");
    // A serializable read is served locally.
    client_read(&api, get("k"), true)
        .await
        .expect("serializable read on a follower");
    assert_eq!(
        next(&mut reads, "the serializable read").await,
        (0, get("k"))
    );

    // With no leader known, the error says so and carries no hint.
    api.do_send(RoleChanged {
        change: RoleChange {
            role: raft::StateRole::Candidate,
            leader_id: 0,
            term: 4,
        },
        leader_client_addr: None,
        handed_over: false,
    });
    let err = client_write(&api, set_op(b"k", b"v")).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotLeader {
                leader_id: None,
                leader_addr: None
            }
        ),
        "{err:?}"
    );
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.metadata().get(LEADER_ADDR_METADATA).is_none());

    // The RaftActor itself agrees it is not the leader.
    let refused = ask(
        &raft,
        Propose {
            data: b"x".to_vec(),
        },
    )
    .await;
    assert!(
        matches!(refused, Err(Error::NotLeader { .. })),
        "{refused:?}"
    );
}

/// A single node wired as `src/node.rs` wires it: a write completes with its index, a
/// linearizable read sees it, and deletes report whether the key existed.
#[actix_rt::test]
async fn client_api_with_real_raft_and_storage_writes_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let sm = Mutex::new(Some(StateMachine::open(&dir.path().join("db")).unwrap()));
    let snapshots = SnapshotStore::open(dir.path()).unwrap();

    // The StorageActor reports to the ClientApiActor, which reads from the StorageActor:
    // create the ClientApiActor's context first to learn its address (as src/node.rs does).
    let api_ctx = Context::<ClientApiActor>::new();
    let applied_to = api_ctx.address().recipient::<Applied>();
    let snaps = snapshots.clone();
    let storage = SyncArbiter::start(1, move || {
        let sm = sm.lock().unwrap().take().expect("starts once");
        StorageActor::new(sm, snaps.clone(), NO_SNAPSHOTS, Some(applied_to.clone()))
    });
    let api = api_ctx.run(ClientApiActor::new(
        1,
        limits(),
        storage.clone().recipient(),
        storage.clone().recipient(),
    ));
    let (tx, mut roles) = mpsc::channel(RECORDER_CAPACITY);
    let tee = RoleTee {
        to: api.clone().recipient(),
        tx,
    }
    .start();
    let raft_dir = tempfile::tempdir().unwrap();
    let raft = RaftActor::new(
        raft_node(&raft_dir, &[1], FAST_ELECTION_TICKS),
        FAST_TICK,
        OWN_CLIENT_ADDR.into(),
        members(&[1]),
        storage.clone().recipient(),
        HashMap::new(),
        Some(tee.recipient()),
    )
    .start();
    storage.do_send(Connect { raft: raft.clone() });
    api.do_send(Connect { raft: raft.clone() });
    until_leader(&mut roles).await;

    let w = client_write(&api, set_op(b"k", b"v1"))
        .await
        .expect("write");
    assert!(
        w.index >= 2,
        "index {} is not after the leader's entry",
        w.index
    );
    assert!(!w.existed);

    let r = client_read(&api, get("k"), false).await.expect("read");
    assert_eq!(r.result, ReadResult::Value(Some(b"v1".to_vec())));
    assert!(r.applied_index >= w.index);

    let d1 = client_write(&api, WriteOp::Delete { key: b"k".to_vec() })
        .await
        .expect("first delete");
    assert!(d1.existed, "the key was there");
    assert!(d1.index > w.index);
    let d2 = client_write(&api, WriteOp::Delete { key: b"k".to_vec() })
        .await
        .expect("second delete");
    assert!(!d2.existed, "the key was already gone");
    assert_eq!(d2.index, d1.index + 1);

    let r = client_read(&api, get("k"), false).await.expect("read");
    assert_eq!(r.result, ReadResult::Value(None));

    // The status combines Raft's view and the state machine's.
    let (reply, rx) = oneshot::channel();
    api.do_send(ClientStatus { reply });
    let status = answer(rx, "ClientStatus").await.expect("status");
    assert_eq!(status.raft.role, "leader");
    assert!(status.applied_index >= d2.index);
    assert_eq!(status.key_count, 0);

    // Raft learned the applied index from the StorageActor (ApplyProgress, wired by
    // Connect). The StorageActor sent it before the Applied that completed the last write, so
    // it is already in the RaftActor's mailbox, ahead of this request.
    let raft_status = ask(&raft, GetRaftStatus).await;
    assert!(
        raft_status.raft.applied_index >= d2.index,
        "RaftActor's applied index {} is behind {}",
        raft_status.raft.applied_index,
        d2.index
    );
}

/// Writes beyond `max_pending` are refused at once with RESOURCE_EXHAUSTED; when the node then
/// loses leadership, every pending write fails with "outcome unknown" (gRPC UNKNOWN), never
/// silently and never as done.
#[actix_rt::test]
async fn client_api_refuses_overload_and_fails_pending_writes_on_lost_leadership() {
    let mut single = start_single_raft();
    until_leader(&mut single.roles).await;
    let (api, _reads) = start_client_api();
    api.do_send(Connect {
        raft: single.addr.clone(),
    });
    let leader = |role, leader_id| RoleChanged {
        change: RoleChange {
            role,
            leader_id,
            term: 1,
        },
        leader_client_addr: None,
        handed_over: false,
    };
    api.do_send(leader(raft::StateRole::Leader, 1));

    // The RaftActor commits these, but nothing applies them (its Apply goes to a recorder), so
    // they stay pending.
    let mut pending = Vec::new();
    for n in 0..MAX_PENDING {
        let (reply, rx) = oneshot::channel();
        let op = set_op(format!("k{n}").as_bytes(), b"v");
        api.do_send(ClientWrite { op, reply });
        pending.push(rx);
    }
    let over = client_write(&api, set_op(b"one-too-many", b"v")).await;
    match over {
        Err(e @ Error::Overloaded(_)) => {
            assert_eq!(
                tonic::Status::from(e).code(),
                tonic::Code::ResourceExhausted
            )
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }

    api.do_send(leader(raft::StateRole::Follower, 2));
    for rx in pending {
        match answer(rx, "a pending write").await {
            Err(e @ Error::OutcomeUnknown(_)) => {
                assert_eq!(tonic::Status::from(e).code(), tonic::Code::Unknown)
            }
            other => panic!("expected OutcomeUnknown, got {other:?}"),
        }
    }
}

/// Proposals flooding the RaftActor's mailbox past its capacity in the peer-inbox test.
const FLOOD_PROPOSALS: usize = distributed_kv::actors::raft::RAFT_MAILBOX_CAPACITY + 1_000;

/// A mailbox that client requests have filled past its capacity still takes a peer's message:
/// peer messages have their own budget, so client load cannot crowd out heartbeats (before, the
/// peer service's `try_send` dropped them exactly then).
#[actix_rt::test]
async fn raft_a_mailbox_full_of_proposals_still_takes_a_peer_heartbeat() {
    use distributed_kv::grpc::RaftService;
    use distributed_kv::proto::raftpb::raft_transport_server::RaftTransport;
    use distributed_kv::proto::raftpb::RaftBatch;
    use protobuf::Message as _;

    let dir = tempfile::tempdir().unwrap();
    let (raft, _sent) = start_follower_raft(&dir);
    // The actor runs on this thread, so nothing is handled until the test awaits: these all
    // wait in its mailbox, past its capacity.
    for _ in 0..FLOOD_PROPOSALS {
        raft.do_send(Propose { data: Vec::new() });
    }
    let service = RaftService::new(1, raft.clone());
    // Heartbeats of two terms, one batch each: actix lets one message past a full mailbox and
    // then refuses a plain `try_send`, so the second is the one that would have been lost.
    for term in [7, 8] {
        let mut hb = raft_msg(MessageType::MsgHeartbeat, 2, term);
        hb.commit = 0;
        let batch = RaftBatch {
            from: 2,
            from_client_addr: String::new(),
            messages: vec![hb.write_to_bytes().unwrap()],
        };
        service
            .send(tonic::Request::new(batch))
            .await
            .expect("the peer service takes the batch");
    }
    let status = ask(&raft, GetRaftStatus).await;
    assert_eq!(
        (status.raft.term, status.raft.leader_id),
        (8, 2),
        "both heartbeats from node 2 were stepped"
    );
}
