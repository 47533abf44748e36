//! Tier-2 tests (see ARCHITECTURE.md, "Test tiers"): actors with test doubles, no network.
//!
//! Each test runs inside the actix `System` that `#[actix_rt::test]` creates, sends messages
//! straight to the actor under test, and asserts both its replies and what it sent on to other
//! actors. No test opens a socket: peer messages go to recorders, and the one test of the peer
//! service calls it as a plain method. Each test is in the file of the actor it exercises:
//! - [`storage`]: the StorageActor alone, its Raft side played by recorders;
//! - [`raft`]: the RaftActor alone, with recorders for storage, peers and roles;
//! - [`client_api`]: the ClientApiActor, alone over a fake storage, or wired with real actors;
//! - [`inbox`]: the RaftActor's peer inbox budget, through the real peer service.
//!
//! No test drives a PeerActor: it only speaks gRPC to another node, which tier 4 runs.
//!
//! A test that needs more than one real actor wires them with the node's own
//! `distributed_kv::actors::Wiring`, started from [`fresh_wiring`] exactly as `src/node.rs` starts it.
//! Where the test watches an actor, or plays it by hand, a test double takes that actor's place
//! through `Wiring`'s `with_*` methods; the wiring itself is never written again here.
//!
//! What an actor sends on is observed through test doubles:
//! - [`Recorder<M>`] is a tiny actor that accepts one message type `M` and forwards every
//!   message it receives, unchanged, into a bounded `tokio::sync::mpsc` channel. The actor
//!   under test is given the recorder's `Recipient<M>` wherever it would normally be given
//!   another actor, and the test awaits the channel.
//! - `client_api::RoleTee` records `RoleChanged` like a recorder, but first passes a copy on to
//!   a real `ClientApiActor`, so a test knows exactly when that actor has been told about a role.
//! - `client_api::FakeStorage` stands in for the `StorageActor` behind a `ClientApiActor`: it
//!   records every `Read` and answers it with an empty value.
//!
//! Nothing here sleeps for a fixed time: every wait is a `tokio::time::timeout` around the
//! event the test expects, and "nothing happened yet" is checked after a round-trip message
//! through the same mailbox (actors handle their mailbox in order).
//!
//! The tier is one test binary (one per tier keeps linking cheap); the actors' files are its
//! modules, and the helpers they share are here.

mod client_api;
mod inbox;
// This module hides the `raft` crate's name here and in its siblings: the crate is `::raft`.
mod raft;
mod storage;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ::raft::prelude::{Message as RaftMessage, MessageType};
use actix::prelude::*;
use tempfile::TempDir;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use distributed_kv::actors::messages::*;
use distributed_kv::actors::wiring::{self, Settings};
use distributed_kv::actors::{
    Actors, ClientApiActor, ClientLimits, RaftActor, StorageActor, Wiring,
};
use distributed_kv::consensus::{LogId, LogOptions, LogStore, RaftNode, RaftParams, SnapshotStore};
use distributed_kv::recovery::recover;
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

/// A Get query.
fn get(key: &str) -> ReadQuery {
    ReadQuery::Get { key: key.into() }
}

/// A RaftNode for node 1 over a fresh log in `dir`, whose initial voters are `members`.
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

/// Node 1 of the cluster `ids`, over storage recovered from a fresh data dir in `dir`, ready to
/// be started as `src/node.rs` starts it; a test double takes an actor's place through the
/// `Wiring::with_*` methods.
fn fresh_wiring(dir: &TempDir, ids: &[u64], tick: Duration, election_ticks: usize) -> Wiring {
    let recovered = recover(dir.path(), ids, LogOptions::default()).expect("recover");
    let settings = Settings {
        id: 1,
        members: members(ids),
        client_addr: OWN_CLIENT_ADDR.into(),
        tick_interval: tick,
        election_ticks,
        heartbeat_ticks: HEARTBEAT_TICKS,
        log_retain_entries: LOG_RETAIN_ENTRIES,
        snapshot_threshold: NO_SNAPSHOTS,
        limits: limits(),
        cluster_id: 1,
        watch_progress_interval: Duration::from_secs(600),
        unsafe_watch_gaps: false,
        lease_checkpoint_interval: Duration::from_secs(300),
        unsafe_lease_expiry: false,
    };
    Wiring::new(recovered, settings).expect("wiring")
}

/// Waits until `roles` reports this node as leader; returns that report.
async fn until_leader(roles: &mut mpsc::Receiver<RoleChanged>) -> RoleChanged {
    loop {
        let r = next(roles, "RoleChanged to Leader").await;
        if r.change.role == ::raft::StateRole::Leader {
            return r;
        }
    }
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
        Vec::new(),
    )
    .start();
    (addr, sent)
}
