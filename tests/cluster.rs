//! Tier 3 of the test plan (ARCHITECTURE.md, "Test tiers"): an in-process cluster.
//!
//! Three or five [`RaftNode`]s run in one thread, each over its own data dir in a temporary
//! directory, opened as a node opens it (`recovery::recover`: the WAL-backed log store for the
//! log, a sled [`StateMachine`] for the data, the snapshot file). There is no actix runtime, no
//! network and no wall clock: time is a manual tick, and the network is the [`SimCluster`]
//! harness below.
//!
//! # How the harness drives a round
//! [`SimCluster::tick`] ticks every running node once, then [`SimCluster::settle`]s: it calls
//! `ready()` on every running node until it returns `None`, carrying out each output the way
//! the RaftActor and StorageActor do — restore a received snapshot into the state machine,
//! apply the committed entries, report the applied index with `advance_applied`, record read
//! states, and make a snapshot (then compact the log) every `snapshot_every` applied entries.
//! The messages collected are then delivered, in order, with `step()` unless the link is cut or
//! an end is stopped; a delivered `MsgSnapshot` is reported to its sender as finished, a dropped
//! one as failed. Passes repeat until no node has anything to do, so one round ends quiescent
//! and message delivery is instantaneous relative to ticks.
//!
//! The only randomness is raft-rs's randomised election timeout; every wait is a bounded tick
//! budget large enough for a few split votes. After every pass the harness checks two Raft
//! safety properties: at most one leader per term, and every node applies the same term at
//! the same index.
//!
//! Each node also has the write tracker its ClientApiActor holds ([`Proposals`]), fed the
//! events that actor sees — a tracked proposal's placement, the entries applied, the node
//! stopping to lead (handed over, if it began a transfer) — so the answers its clients would
//! get come from real Raft behaviour.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use distributed_kv::actors::messages::WriteResult;
use distributed_kv::actors::proposals::{Proposals, ReplyHandle, WriteAnswer};
use distributed_kv::consensus::{LogId, LogOptions, RaftNode, RaftParams, ReadyOutput, RoleChange};
use distributed_kv::proto::raftpb::{log_command::Op, LogCommand, SetOp};
use distributed_kv::recovery::{recover, Recovered};
use distributed_kv::state_machine::encode_command;
use distributed_kv::state_machine::StateMachine;
use protobuf::ProtobufEnum as _;
use raft::prelude::{Message, MessageType};
use raft::{ReadState, StateRole, Storage as _};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

/// Election timeout in ticks; raft-rs draws each timeout from `[this, 2 × this)`.
const ELECTION_TICKS: usize = 10;
/// Leader heartbeat interval in ticks.
const HEARTBEAT_TICKS: usize = 2;
/// Ticks within which a quorum must elect a leader, allowing for several split votes.
const ELECTION_BUDGET: usize = 10 * ELECTION_TICKS;
/// Ticks within which committed entries must reach every connected node.
const REPLICATION_BUDGET: usize = 4 * HEARTBEAT_TICKS;
/// Ticks within which a healed or restarted cluster must converge.
const CONVERGE_BUDGET: usize = 10 * ELECTION_TICKS;
/// Ticks a healthy cluster is watched to check that leadership stays put.
const STABILITY_TICKS: usize = 5 * ELECTION_TICKS;
/// Ticks a cut-off leader is run: far beyond check-quorum's step-down after one timeout.
const PARTITION_TICKS: usize = 10 * ELECTION_TICKS;
/// Passes of ready/deliver in one round after which the harness assumes a livelock.
const MAX_SETTLE_PASSES: usize = 1_000;
/// Tracked writes each node's tracker holds at most (`max_pending_requests`).
const MAX_TRACKED_WRITES: usize = 64;
/// Sequence number of a node's first tracked write.
const FIRST_TRACKED_SEQ: u64 = 1;

/// The snapshot policy of a cluster.
#[derive(Debug, Clone, Copy, Default)]
struct Options {
    /// Make a snapshot and compact the log every this many applied entries; `None`: never.
    snapshot_every: Option<u64>,
    /// `RaftParams::log_retain_entries`: entries kept behind a snapshot when compacting.
    log_retain_entries: u64,
}

/// One member of the cluster: what a node process holds, minus the actors.
struct Peer {
    /// The Raft half, over this peer's sled log and snapshot store.
    node: RaftNode,
    /// The key-value data, in the same sled database as the log.
    sm: StateMachine,
}

/// Opens (or reopens) the peer stored in `dir`, with the start-up steps of `Node::start`.
fn open_peer(dir: &Path, id: u64, voters: &[u64], opts: Options) -> Peer {
    std::fs::create_dir_all(dir).expect("create the node dir");
    let Recovered { log, sm, .. } =
        recover(dir, voters, LogOptions::default()).expect("open the node's storage");
    let params = RaftParams {
        id,
        election_ticks: ELECTION_TICKS,
        heartbeat_ticks: HEARTBEAT_TICKS,
        applied: sm.applied().index,
        log_retain_entries: opts.log_retain_entries,
    };
    let node = RaftNode::new(&params, log).expect("create the raft node");
    Peer { node, sm }
}

/// The data of a log entry that sets `key` to `value`.
fn set_command(seq: u64, key: &str, value: &str) -> Vec<u8> {
    encode_command(&LogCommand {
        origin_node: 0,
        origin_seq: seq,
        op: Some(Op::Set(SetOp {
            key: key.into(),
            value: value.into(),
        })),
    })
}

/// A client waiting for a tracked write, by name. It never gives up: deadlines are not
/// simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Caller(&'static str);

impl ReplyHandle for Caller {
    fn is_closed(&self) -> bool {
        false
    }
}

/// The answer a node's tracker gave a caller.
#[derive(Debug)]
struct Answered {
    /// The node whose tracker answered.
    node: u64,
    /// Who was answered.
    caller: Caller,
    /// What the client is told.
    result: distributed_kv::Result<WriteResult>,
}

/// A simulated cluster: the peers, the network between them, and what was observed.
struct SimCluster {
    /// Every voter id, ascending.
    ids: Vec<u64>,
    /// The peers by id. A peer is missing only for the moment of a restart.
    peers: BTreeMap<u64, Peer>,
    /// Stopped peers: not ticked, not driven, every message to or from them dropped.
    down: BTreeSet<u64>,
    /// Cut directed links `(from, to)`: every message on them is dropped.
    cut: BTreeSet<(u64, u64)>,
    /// Snapshot policy, and what restarted peers are opened with.
    opts: Options,
    /// Sequence number of the next proposed command.
    next_seq: u64,
    /// Each node's write tracker, as its ClientApiActor holds it.
    trackers: BTreeMap<u64, Proposals<Caller>>,
    /// The sequence number after the last one each node's tracker handed out, so a restarted
    /// node's new tracker does not meet the numbers of its earlier run in the log.
    next_tracked_seq: BTreeMap<u64, u64>,
    /// Nodes that began handing leadership over: losing it then is on purpose (as
    /// `RaftActor::handing_over`).
    handing_over: BTreeSet<u64>,
    /// Every answer the trackers gave, in order.
    answers: Vec<Answered>,
    /// Completed read indexes, per node, in the order they were produced.
    read_states: BTreeMap<u64, Vec<ReadState>>,
    /// The last role change each node reported through `ReadyOutput::role_change`.
    role_changes: BTreeMap<u64, RoleChange>,
    /// `MsgSnapshot`s delivered, per receiving node.
    snapshots_delivered: BTreeMap<u64, usize>,
    /// Snapshots from a leader restored into a state machine, per node.
    snapshots_restored: BTreeMap<u64, usize>,
    /// Messages dropped by a cut link or a stopped peer.
    dropped: usize,
    /// The leader seen in each term (Election Safety: never two in one term).
    leaders_by_term: BTreeMap<u64, u64>,
    /// The term of the entry applied at each index, by whichever node applied it first
    /// (State Machine Safety: no node applies a different entry at that index).
    applied_terms: BTreeMap<u64, u64>,
    /// Root of the peers' data dirs. Declared last so it is removed after the peers close.
    dir: TempDir,
}

impl SimCluster {
    /// A new cluster of `n` voters with ids `1..=n`; nobody has ticked yet.
    fn new(n: u64, opts: Options) -> SimCluster {
        let dir = tempfile::tempdir().expect("create the cluster dir");
        let ids: Vec<u64> = (1..=n).collect();
        let peers = ids
            .iter()
            .map(|&id| {
                (
                    id,
                    open_peer(&dir.path().join(id.to_string()), id, &ids, opts),
                )
            })
            .collect();
        let trackers = ids
            .iter()
            .map(|&id| {
                (
                    id,
                    Proposals::new(id, MAX_TRACKED_WRITES, FIRST_TRACKED_SEQ),
                )
            })
            .collect();
        SimCluster {
            ids,
            peers,
            down: BTreeSet::new(),
            cut: BTreeSet::new(),
            opts,
            next_seq: 1,
            trackers,
            next_tracked_seq: BTreeMap::new(),
            handing_over: BTreeSet::new(),
            answers: Vec::new(),
            read_states: BTreeMap::new(),
            role_changes: BTreeMap::new(),
            snapshots_delivered: BTreeMap::new(),
            snapshots_restored: BTreeMap::new(),
            dropped: 0,
            leaders_by_term: BTreeMap::new(),
            applied_terms: BTreeMap::new(),
            dir,
        }
    }

    fn peer(&self, id: u64) -> &Peer {
        self.peers
            .get(&id)
            .unwrap_or_else(|| panic!("no peer {id}"))
    }

    fn peer_mut(&mut self, id: u64) -> &mut Peer {
        self.peers
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no peer {id}"))
    }

    fn node(&self, id: u64) -> &RaftNode {
        &self.peer(id).node
    }

    fn sm(&self, id: u64) -> &StateMachine {
        &self.peer(id).sm
    }

    /// Ids of the peers that are not stopped.
    fn running(&self) -> Vec<u64> {
        self.ids
            .iter()
            .copied()
            .filter(|id| !self.down.contains(id))
            .collect()
    }

    /// Ids other than `excluded`.
    fn others(&self, excluded: &[u64]) -> Vec<u64> {
        self.ids
            .iter()
            .copied()
            .filter(|id| !excluded.contains(id))
            .collect()
    }

    // ---- network faults -------------------------------------------------------------------

    /// Cuts every link between the groups `a` and `b`, both ways.
    fn partition(&mut self, a: &[u64], b: &[u64]) {
        for &x in a {
            for &y in b {
                self.cut.insert((x, y));
                self.cut.insert((y, x));
            }
        }
    }

    /// Cuts `id` off from every other peer.
    fn isolate(&mut self, id: u64) {
        let others = self.others(&[id]);
        self.partition(&[id], &others);
    }

    /// Restores every cut link.
    fn heal(&mut self) {
        self.cut.clear();
    }

    /// Stops `id`: it is no longer ticked or driven, and nothing reaches it or leaves it.
    fn stop(&mut self, id: u64) {
        self.down.insert(id);
    }

    /// Restarts a stopped peer: closes its database and reopens everything from disk. Its
    /// tracker starts empty: the writes of the stopped run are never answered (a crash).
    fn restart(&mut self, id: u64) {
        assert!(self.down.contains(&id), "restart {id}: it is running");
        drop(self.peers.remove(&id));
        let first = self
            .next_tracked_seq
            .get(&id)
            .copied()
            .unwrap_or(FIRST_TRACKED_SEQ);
        self.trackers
            .insert(id, Proposals::new(id, MAX_TRACKED_WRITES, first));
        self.handing_over.remove(&id);
        let peer = open_peer(
            &self.dir.path().join(id.to_string()),
            id,
            &self.ids,
            self.opts,
        );
        self.peers.insert(id, peer);
        self.down.remove(&id);
    }

    fn blocked(&self, from: u64, to: u64) -> bool {
        self.down.contains(&from) || self.down.contains(&to) || self.cut.contains(&(from, to))
    }

    // ---- driving ----------------------------------------------------------------------------

    /// One unit of logical time: tick every running node, then settle.
    fn tick(&mut self) {
        for id in self.running() {
            self.peer_mut(id).node.tick();
        }
        self.settle();
    }

    /// Runs `ticks` rounds.
    fn run(&mut self, ticks: usize) {
        for _ in 0..ticks {
            self.tick();
        }
    }

    /// Runs rounds until `done` holds; returns how many ticks it took. Panics after `budget`.
    fn run_until(
        &mut self,
        budget: usize,
        what: &str,
        done: impl Fn(&SimCluster) -> bool,
    ) -> usize {
        for ticks in 0..=budget {
            if done(self) {
                return ticks;
            }
            self.tick();
        }
        panic!(
            "{what}: not reached within {budget} ticks\n{}",
            self.describe()
        );
    }

    /// Handles every pending Ready and delivers every message, until nothing is left to do.
    fn settle(&mut self) {
        for _ in 0..MAX_SETTLE_PASSES {
            let mut outbox = Vec::new();
            let mut busy = false;
            for id in self.running() {
                while let Some(out) = self.peer_mut(id).node.ready().expect("ready") {
                    busy = true;
                    self.handle(id, out, &mut outbox);
                }
            }
            self.check_election_safety();
            if !busy && outbox.is_empty() {
                return;
            }
            for msg in outbox {
                self.deliver(msg);
            }
        }
        panic!(
            "no quiescence after {MAX_SETTLE_PASSES} passes\n{}",
            self.describe()
        );
    }

    /// Carries out one Ready of node `id`, as the RaftActor, StorageActor and ClientApiActor
    /// would.
    fn handle(&mut self, id: u64, out: ReadyOutput, outbox: &mut Vec<Message>) {
        if let Some(change) = out.role_change {
            let was_leader = self
                .role_changes
                .get(&id)
                .is_some_and(|c| c.role == StateRole::Leader);
            if was_leader && change.role != StateRole::Leader {
                let handed_over = self.handing_over.contains(&id);
                let answers = self.tracker(id).stopped_leading(handed_over);
                self.record(id, answers);
            }
            self.role_changes.insert(id, change);
        }
        let peer = self
            .peers
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no peer {id}"));
        let mut restored_to = None;
        if let Some(snap) = &out.snapshot {
            if snap.get_metadata().index > peer.sm.applied().index {
                peer.sm.restore(snap).expect("restore a snapshot");
                *self.snapshots_restored.entry(id).or_default() += 1;
                restored_to = Some(snap.get_metadata().index);
            }
        }
        let applied = peer.sm.apply(&out.committed).expect("apply");
        peer.node.advance_applied(peer.sm.applied().index);
        let applied_index = peer.sm.applied().index;
        for e in &applied {
            let term = *self.applied_terms.entry(e.index).or_insert(e.term);
            assert_eq!(
                term, e.term,
                "node {id} applied term {} at index {}, another node applied term {term}",
                e.term, e.index
            );
        }
        if let Some(index) = restored_to {
            let answers = self.tracker(id).restored(index);
            self.record(id, answers);
        }
        let answers = self.tracker(id).applied(applied, applied_index);
        self.record(id, answers);
        let peer = self
            .peers
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no peer {id}"));
        if let Some(every) = self.opts.snapshot_every {
            let store = peer.node.log_store().snapshots().clone();
            let index = peer.sm.applied().index;
            if index >= store.current().index + every {
                let snap = peer
                    .sm
                    .snapshot(&peer.node.conf_state())
                    .expect("make a snapshot");
                if store.save(&snap).expect("store a snapshot") {
                    peer.node.compact_to_snapshot(index).expect("compact");
                }
            }
        }
        self.read_states
            .entry(id)
            .or_default()
            .extend(out.read_states);
        outbox.extend(out.messages);
    }

    // ---- client writes, as the ClientApiActor tracks them ---------------------------------

    fn tracker(&mut self, id: u64) -> &mut Proposals<Caller> {
        self.trackers
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no tracker {id}"))
    }

    fn record(&mut self, node: u64, answers: impl IntoIterator<Item = WriteAnswer<Caller>>) {
        for (caller, result) in answers {
            self.answers.push(Answered {
                node,
                caller,
                result,
            });
        }
    }

    /// Proposes `key = value` on `id` (which must lead) for `caller`, as its ClientApiActor
    /// does: admitted by the tracker, tagged (node, sequence), placed. Returns the placement.
    fn propose_tracked(&mut self, id: u64, caller: &'static str, key: &str, value: &str) -> LogId {
        let seq = self
            .tracker(id)
            .submit(Caller(caller))
            .unwrap_or_else(|(_, e)| panic!("node {id}'s tracker refused {caller}: {e}"));
        self.next_tracked_seq.insert(id, seq + 1);
        let data = encode_command(&LogCommand {
            origin_node: id,
            origin_seq: seq,
            op: Some(Op::Set(SetOp {
                key: key.into(),
                value: value.into(),
            })),
        });
        let LogId { index, term } = self
            .peer_mut(id)
            .node
            .propose(data)
            .unwrap_or_else(|e| panic!("node {id} refused a proposal: {e}"));
        let at = LogId { index, term };
        let answer = self.tracker(id).placed(seq, at);
        self.record(id, answer);
        at
    }

    /// Starts handing leadership over from `id`, as `Node::shutdown` does; from then on its
    /// losing leadership counts as handed over. Returns the follower chosen.
    fn hand_over(&mut self, id: u64) -> Option<u64> {
        let target = self.peer_mut(id).node.transfer_leadership();
        if target.is_some() {
            self.handing_over.insert(id);
        }
        target
    }

    /// What each answer to `caller` told it, with the answering node: "applied at
    /// index/term", or the error as the client reads it.
    fn told(&self, caller: &'static str) -> Vec<(u64, String)> {
        self.answers
            .iter()
            .filter(|a| a.caller == Caller(caller))
            .map(|a| {
                let told = match &a.result {
                    Ok(w) => format!("applied at {}/{}", w.index, w.term),
                    Err(e) => e.to_string(),
                };
                (a.node, told)
            })
            .collect()
    }

    /// Delivers `msg` unless its link is down; reports snapshot transfers to the sender.
    fn deliver(&mut self, msg: Message) {
        let (from, to) = (msg.from, msg.to);
        let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        if self.blocked(from, to) {
            self.dropped += 1;
            if is_snapshot && !self.down.contains(&from) {
                self.peer_mut(from).node.report_snapshot(to, false);
            }
            return;
        }
        let kind = msg.get_msg_type();
        self.peer_mut(to)
            .node
            .step(msg)
            .unwrap_or_else(|e| panic!("node {to} refused {kind:?} from {from}: {e}"));
        if is_snapshot {
            *self.snapshots_delivered.entry(to).or_default() += 1;
            self.peer_mut(from).node.report_snapshot(to, true);
        }
    }

    /// Election Safety: at most one leader per term, over the whole run.
    fn check_election_safety(&mut self) {
        for id in self.running() {
            let node = self.node(id);
            if node.is_leader() {
                let term = node.status().term;
                let first = *self.leaders_by_term.entry(term).or_insert(id);
                assert_eq!(first, id, "two leaders in term {term}: {first} and {id}");
            }
        }
    }

    // ---- observing --------------------------------------------------------------------------

    /// The nodes among `among` that believe they lead.
    fn leaders(&self, among: &[u64]) -> Vec<u64> {
        among
            .iter()
            .copied()
            .filter(|&id| self.node(id).is_leader())
            .collect()
    }

    /// The leader, if exactly one node of `among` leads and all of `among` know it in its term.
    fn agreed_leader(&self, among: &[u64]) -> Option<u64> {
        let [leader] = self.leaders(among)[..] else {
            return None;
        };
        let term = self.node(leader).status().term;
        among
            .iter()
            .all(|&id| {
                let s = self.node(id).status();
                s.leader_id == leader && s.term == term
            })
            .then_some(leader)
    }

    /// Runs until `among` agree on one leader; returns it.
    fn elect(&mut self, among: &[u64]) -> u64 {
        self.run_until(ELECTION_BUDGET, "a leader agreed on", |c| {
            c.agreed_leader(among).is_some()
        });
        self.agreed_leader(among).expect("agreed leader")
    }

    fn term(&self, id: u64) -> u64 {
        self.node(id).status().term
    }

    /// Proposes `key = value` on `id` (which must lead); returns where the entry was placed.
    fn propose_set(&mut self, id: u64, key: &str, value: &str) -> LogId {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.peer_mut(id)
            .node
            .propose(set_command(seq, key, value))
            .unwrap_or_else(|e| panic!("node {id} refused a proposal: {e}"))
    }

    /// Whether every node of `among` has applied up to `index`.
    fn applied_on(&self, among: &[u64], index: u64) -> bool {
        among.iter().all(|&id| self.sm(id).applied().index >= index)
    }

    /// Proposes `key{i} = value{i}` for `i` in `range` on `leader`, then runs until every
    /// node of `among` has applied them. Returns the index of the last one.
    fn write_all(
        &mut self,
        leader: u64,
        among: &[u64],
        prefix: &str,
        range: std::ops::Range<u32>,
    ) -> u64 {
        let mut last = 0;
        for i in range {
            last = self
                .propose_set(leader, &format!("{prefix}{i}"), &format!("value{i}"))
                .index;
        }
        self.settle();
        self.run_until(REPLICATION_BUDGET, "writes applied", |c| {
            c.applied_on(among, last)
        });
        last
    }

    /// Whether `among` hold identical state machines, have applied everything the leader
    /// committed, and agree on that leader.
    fn converged(&self, among: &[u64]) -> bool {
        let Some(leader) = self.agreed_leader(among) else {
            return false;
        };
        let commit = self.node(leader).status().commit_index;
        let hash = self.hash(leader);
        among
            .iter()
            .all(|&id| self.sm(id).applied().index == commit && self.hash(id) == hash)
    }

    fn hash(&self, id: u64) -> u64 {
        self.sm(id).hash().expect("hash")
    }

    fn get(&self, id: u64, key: &str) -> Option<String> {
        self.sm(id)
            .get(key.as_bytes())
            .expect("get")
            .map(|v| String::from_utf8(v.value).expect("utf-8 value"))
    }

    /// Every peer's status, for failure messages.
    fn describe(&self) -> String {
        let mut s = String::new();
        for (id, peer) in &self.peers {
            let st = peer.node.status();
            s += &format!(
                "  node {id}{}: {:?} term={} leader={} commit={} applied={} last={} truncated={} \
                 sm_applied={:?}\n",
                if self.down.contains(id) {
                    " (stopped)"
                } else {
                    ""
                },
                st.role,
                st.term,
                st.leader_id,
                st.commit_index,
                st.applied_index,
                st.last_index,
                st.truncated_index,
                peer.sm.applied(),
            );
        }
        s + &format!("  cut links: {:?}, dropped: {}", self.cut, self.dropped)
    }
}

/// Exactly one leader emerges within the budget; every node agrees on it and its term, says
/// so through `role_change`, and leadership stays put while the network is healthy.
#[test]
fn one_leader_is_elected_and_known_to_all() {
    let mut c = SimCluster::new(3, Options::default());
    let all = c.ids.clone();
    assert!(
        c.leaders(&all).is_empty(),
        "nobody leads before time passes"
    );

    let ticks = c.run_until(ELECTION_BUDGET, "a leader agreed on", |c| {
        c.agreed_leader(&all).is_some()
    });
    assert!(
        ticks >= ELECTION_TICKS,
        "no election before the first timeout (took {ticks})"
    );
    let leader = c.agreed_leader(&all).expect("leader");
    let term = c.term(leader);
    assert!(term >= 1);
    assert_eq!(c.leaders(&all), vec![leader]);
    for &id in &all {
        let change = c
            .role_changes
            .get(&id)
            .unwrap_or_else(|| panic!("node {id} reported no role change"));
        assert_eq!((change.leader_id, change.term), (leader, term), "node {id}");
        assert_eq!(change.role == StateRole::Leader, id == leader, "node {id}");
    }

    c.run(STABILITY_TICKS);
    assert_eq!(c.agreed_leader(&all), Some(leader), "leadership moved");
    assert_eq!(c.term(leader), term, "a needless election happened");
}

/// Proposals on the leader are committed and applied everywhere; followers refuse proposals.
#[test]
fn writes_on_the_leader_are_applied_on_every_node() {
    const WRITES: u32 = 20;
    let mut c = SimCluster::new(3, Options::default());
    let all = c.ids.clone();
    let leader = c.elect(&all);

    let follower = c.others(&[leader])[0];
    assert!(
        c.peer_mut(follower)
            .node
            .propose(set_command(0, "k", "v"))
            .is_err(),
        "a follower accepted a proposal"
    );

    let last = c.write_all(leader, &all, "key", 0..WRITES);
    for &id in &all {
        assert!(c.node(id).status().commit_index >= last, "node {id}");
        for i in 0..WRITES {
            assert_eq!(
                c.get(id, &format!("key{i}")),
                Some(format!("value{i}")),
                "node {id}, key{i}"
            );
        }
        assert_eq!(c.sm(id).key_count(), u64::from(WRITES), "node {id}");
        assert_eq!(c.get(id, "k"), None, "node {id} has the refused write");
    }
    c.run_until(REPLICATION_BUDGET, "state machines equal", |c| {
        c.converged(&all)
    });
}

/// When the leader stops, the others elect a new one in a higher term and keep accepting
/// writes; nothing committed is lost. The old leader, restarted from disk, catches up.
#[test]
fn a_new_leader_is_elected_when_the_leader_stops() {
    let mut c = SimCluster::new(3, Options::default());
    let all = c.ids.clone();
    let old = c.elect(&all);
    let old_term = c.term(old);
    let committed = c.write_all(old, &all, "before", 0..10);

    c.stop(old);
    let rest = c.others(&[old]);
    let new = c.elect(&rest);
    assert_ne!(new, old);
    assert!(
        c.term(new) > old_term,
        "new term {} <= {old_term}",
        c.term(new)
    );

    c.write_all(new, &rest, "after", 0..10);
    for &id in &rest {
        for i in 0..10 {
            assert_eq!(c.get(id, &format!("before{i}")), Some(format!("value{i}")));
            assert_eq!(c.get(id, &format!("after{i}")), Some(format!("value{i}")));
        }
    }

    c.restart(old);
    assert!(
        c.node(old).last_log_id().index >= committed,
        "the restarted node lost durable log entries\n{}",
        c.describe()
    );
    c.run_until(CONVERGE_BUDGET, "restarted node caught up", |c| {
        c.converged(&all)
    });
    assert_eq!(c.agreed_leader(&all), Some(new));
    assert_eq!(c.get(old, "after9"), Some("value9".into()));
}

/// A leader cut off with a minority commits nothing and serves no ReadIndex, and steps down
/// (check-quorum); the majority elects a new leader and commits. After healing, the old
/// leader's uncommitted entries are overwritten and every state machine is the same.
#[test]
fn a_partitioned_leader_commits_nothing_and_is_overwritten() {
    let mut c = SimCluster::new(5, Options::default());
    let all = c.ids.clone();
    let old = c.elect(&all);
    let old_term = c.term(old);
    c.write_all(old, &all, "before", 0..5);

    // The harness really produces read states: a healthy leader answers a ReadIndex.
    c.peer_mut(old)
        .node
        .read_index(b"healthy".to_vec())
        .expect("read_index on the leader");
    c.run_until(REPLICATION_BUDGET, "healthy read index", |c| {
        c.read_states
            .get(&old)
            .is_some_and(|r| r.iter().any(|rs| rs.request_ctx == b"healthy"))
    });

    let buddy = c.others(&[old])[0];
    let minority = [old, buddy];
    let majority = c.others(&minority);
    c.partition(&minority, &majority);
    let commit_at_cut = c.node(old).status().commit_index;

    // Still leader until check-quorum notices: it accepts these, but cannot commit them.
    let lost: Vec<LogId> = (0..3)
        .map(|i| c.propose_set(old, &format!("lost{i}"), "x"))
        .collect();
    c.peer_mut(old)
        .node
        .read_index(b"cut".to_vec())
        .expect("read_index right after the cut");
    c.settle();
    assert!(
        c.node(buddy).last_log_id().index >= lost[2].index,
        "the minority follower did not get the entries"
    );

    let mut stepped_down_after = None;
    for t in 0..PARTITION_TICKS {
        c.tick();
        for &id in &minority {
            let commit = c.node(id).status().commit_index;
            assert!(
                commit <= commit_at_cut,
                "node {id} committed {commit} > {commit_at_cut} in a minority"
            );
        }
        if stepped_down_after.is_none() && !c.node(old).is_leader() {
            stepped_down_after = Some(t);
        }
    }
    let stepped_down_after = stepped_down_after.expect("the cut-off leader never stepped down");
    assert!(
        stepped_down_after <= 2 * ELECTION_TICKS,
        "check-quorum step-down took {stepped_down_after} ticks"
    );
    assert!(
        !c.read_states
            .get(&old)
            .is_some_and(|r| r.iter().any(|rs| rs.request_ctx == b"cut")),
        "a leader without a quorum served a ReadIndex"
    );

    let new = c
        .agreed_leader(&majority)
        .unwrap_or_else(|| panic!("the majority has no leader\n{}", c.describe()));
    assert!(c.term(new) > old_term);
    c.write_all(new, &majority, "during", 0..5);
    for &id in &minority {
        assert!(c.node(id).status().commit_index <= commit_at_cut);
    }

    c.heal();
    c.run_until(CONVERGE_BUDGET, "cluster converged after healing", |c| {
        c.converged(&all)
    });
    assert_eq!(c.agreed_leader(&all), Some(new));
    for &id in &all {
        for (i, &LogId { index, term }) in lost.iter().enumerate() {
            assert_eq!(c.get(id, &format!("lost{i}")), None, "node {id}");
            let now = c.node(id).log_store().term(index).expect("term");
            assert_ne!(now, term, "node {id} kept the uncommitted entry {index}");
        }
        for i in 0..5 {
            assert_eq!(c.get(id, &format!("before{i}")), Some(format!("value{i}")));
            assert_eq!(c.get(id, &format!("during{i}")), Some(format!("value{i}")));
        }
    }
    assert!(
        !c.read_states
            .get(&old)
            .is_some_and(|r| r.iter().any(|rs| rs.request_ctx == b"cut")),
        "the dropped ReadIndex was served after healing"
    );
}

/// A follower cut off while the leader writes and compacts its log past the follower's last
/// entry catches up through a snapshot, and ends with the leader's state machine.
#[test]
fn a_lagging_follower_catches_up_from_a_snapshot() {
    const SNAPSHOT_EVERY: u64 = 25;
    const BATCH: u32 = 25;
    const BATCHES: u32 = 12;
    let mut c = SimCluster::new(
        3,
        Options {
            snapshot_every: Some(SNAPSHOT_EVERY),
            log_retain_entries: 0,
        },
    );
    let all = c.ids.clone();
    let leader = c.elect(&all);
    c.write_all(leader, &all, "early", 0..5);

    let lagging = c.others(&[leader])[0];
    let lag_last = c.node(lagging).last_log_id().index;
    c.isolate(lagging);
    let connected = c.others(&[lagging]);
    for b in 0..BATCHES {
        c.write_all(leader, &connected, "key", b * BATCH..(b + 1) * BATCH);
        c.tick();
    }
    let truncated = c.node(leader).log_store().truncated().index;
    assert!(
        truncated > lag_last + 1,
        "the leader's log still holds what the follower needs (truncated {truncated}, \
         follower at {lag_last})"
    );
    assert_eq!(c.node(lagging).last_log_id().index, lag_last);
    assert!(!c.snapshots_delivered.contains_key(&lagging));

    c.heal();
    c.run_until(CONVERGE_BUDGET, "lagging follower caught up", |c| {
        c.converged(&all)
    });
    assert!(
        c.snapshots_delivered.get(&lagging).copied().unwrap_or(0) >= 1,
        "no MsgSnapshot was delivered"
    );
    assert!(
        c.snapshots_restored.get(&lagging).copied().unwrap_or(0) >= 1,
        "no snapshot was restored"
    );
    let follower_snap = c.node(lagging).log_store().snapshots().current().index;
    assert!(
        follower_snap >= truncated,
        "the follower stored snapshot {follower_snap}, older than the leader's log start"
    );
    assert!(c.node(lagging).log_store().truncated().index >= follower_snap);
    assert_eq!(c.hash(lagging), c.hash(leader));
    assert_eq!(
        c.sm(lagging).key_count(),
        5 + u64::from(BATCH * BATCHES),
        "key count"
    );
    for i in [0, BATCH * BATCHES / 2, BATCH * BATCHES - 1] {
        assert_eq!(
            c.get(lagging, &format!("key{i}")),
            Some(format!("value{i}"))
        );
    }
    assert_eq!(c.get(lagging, "early4"), Some("value4".into()));

    // And it keeps up with ordinary appends afterwards.
    let last = c.write_all(leader, &all, "late", 0..3);
    assert!(c.applied_on(&[lagging], last));
    assert_eq!(c.hash(lagging), c.hash(leader));
}

/// A follower that has persisted a snapshot from the leader but not yet restored it into its
/// state machine (the StorageActor is busy) must be able to campaign: its log now starts after
/// the snapshot, so raft-rs must treat the snapshot as applied at once. Before that was done,
/// an election timeout in this window aborted the process (raft-rs found the entries it wanted
/// compacted).
#[test]
fn a_follower_can_campaign_before_its_snapshot_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let mut peer = open_peer(dir.path(), 2, &[1, 2, 3], Options::default());
    let mut msg = Message {
        msg_type: MessageType::MsgSnapshot,
        from: 1,
        to: 2,
        term: 1,
        ..Default::default()
    };
    let snap = msg.mut_snapshot();
    snap.mut_metadata().index = 100;
    snap.mut_metadata().term = 1;
    snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    peer.node.step(msg).unwrap();
    let mut restored = false;
    while let Some(out) = peer.node.ready().unwrap() {
        restored |= out.snapshot.is_some();
    }
    assert!(restored, "the snapshot was handed out for restoring");
    // The state machine never restores it here, and the leader is gone: time passes.
    for _ in 0..ELECTION_BUDGET {
        peer.node.tick();
        while peer.node.ready().unwrap().is_some() {}
    }
    let status = peer.node.status();
    assert_ne!(
        status.role,
        StateRole::Follower,
        "it campaigned: {status:?}"
    );
    assert_eq!(
        status.applied_index, 100,
        "raft-rs counts the snapshot as applied"
    );
}

// ---------------------------------------------------------------------------------------------
// What the clients of tracked writes are told
// ---------------------------------------------------------------------------------------------

/// What a client of a write whose index a new leader took is told.
const NOT_APPLIED: &str = "not applied: a new leader overwrote the entry";
/// Whether `id` has a read state for `ctx`, and its index.
fn read_state_of(c: &SimCluster, id: u64, ctx: &[u8]) -> Option<u64> {
    c.read_states
        .get(&id)
        .and_then(|r| r.iter().find(|rs| rs.request_ctx == ctx))
        .map(|rs| rs.index)
}

/// Proves: a follower's read index is the leader's, and covers every write committed before
/// it was asked for — so a follower that reads once it has applied that far is linearizable
/// (etcd's follower reads).
#[test]
fn a_follower_read_index_covers_every_committed_write() {
    let mut c = SimCluster::new(3, Options::default());
    let all = c.ids.clone();
    let leader = c.elect(&all);
    let follower = c.others(&[leader])[0];
    let last = c.write_all(leader, &[leader], "k", 0..5);

    assert!(c.peer(follower).node.can_read_index());
    c.peer_mut(follower)
        .node
        .read_index(b"follower-read".to_vec())
        .expect("a follower that knows its leader may ask");
    c.run_until(REPLICATION_BUDGET, "the follower's read index", |c| {
        read_state_of(c, follower, b"follower-read").is_some()
    });
    let index = read_state_of(&c, follower, b"follower-read").unwrap();
    assert!(
        index >= last,
        "read index {index} is before the committed write at {last}"
    );
    assert!(
        read_state_of(&c, leader, b"follower-read").is_none(),
        "the answer goes to the follower that asked, not to the leader"
    );
}

/// Proves: with no leader known a follower may not ask (the request would vanish), so the
/// caller fails the read at once instead of waiting for a deadline.
#[test]
fn a_follower_without_a_leader_may_not_ask_for_a_read_index() {
    let mut c = SimCluster::new(3, Options::default());
    let all = c.ids.clone();
    let leader = c.elect(&all);
    let follower = c.others(&[leader])[0];
    c.stop(leader);
    c.isolate(follower);
    for _ in 0..ELECTION_BUDGET {
        c.tick();
        if c.node(follower).leader_id() == 0 {
            break;
        }
    }
    assert_eq!(
        c.node(follower).leader_id(),
        0,
        "the follower still sees a leader"
    );
    assert!(!c.peer(follower).node.can_read_index());
    assert!(c
        .peer_mut(follower)
        .node
        .read_index(b"nobody".to_vec())
        .is_err());
}

/// What a client of a write whose leader was deposed is told.
const OUTCOME_UNKNOWN: &str = "outcome unknown: this node lost leadership before the write was \
                               applied; it may or may not take effect";

/// Proves: on a healthy leader a tracked write is answered once, with where it was placed.
#[test]
fn a_tracked_write_is_answered_with_its_placement() {
    let mut c = SimCluster::new(3, Options::default());
    let all = c.ids.clone();
    let leader = c.elect(&all);
    let w = c.propose_tracked(leader, "w", "k", "v");
    c.run_until(REPLICATION_BUDGET, "the write applied", |c| {
        c.applied_on(&all, w.index)
    });
    let applied = format!("applied at {}/{}", w.index, w.term);
    assert_eq!(c.told("w"), [(leader, applied)]);
}

/// Proves: a write whose index a new leader filled is "not applied" once its proposer catches up.
#[test]
fn a_write_overwritten_by_a_new_leader_is_not_applied() {
    let mut c = SimCluster::new(3, Options::default());
    let all = c.ids.clone();
    let old = c.elect(&all);
    c.write_all(old, &all, "before", 0..3);

    // Cut off before the write leaves it, the leader begins handing over (as at shutdown), so
    // losing leadership keeps the write waiting instead of failing it as unknown.
    c.isolate(old);
    let w = c.propose_tracked(old, "w", "w", "lost");
    assert!(c.hand_over(old).is_some(), "no follower to hand over to");
    let rest = c.others(&[old]);
    let new = c.elect(&rest);
    c.write_all(new, &rest, "during", 0..3);
    c.run_until(PARTITION_TICKS, "the cut-off leader stepped down", |c| {
        !c.node(old).is_leader()
    });
    assert!(
        c.told("w").is_empty(),
        "answered before its index was applied"
    );
    let there = c.node(new).log_store().term(w.index).expect("term");
    assert_ne!(there, w.term, "the new leader has the write at {}", w.index);

    c.heal();
    c.run_until(CONVERGE_BUDGET, "the old leader caught up", |c| {
        c.converged(&all)
    });
    assert_eq!(c.told("w"), [(old, NOT_APPLIED.to_string())]);
    for &id in &all {
        assert_eq!(c.get(id, "w"), None, "node {id} applied the write");
    }
}

/// Proves: a leader deposed before its write applies answers "outcome unknown", and rightly:
/// the write is on the followers, and the next leader commits it.
#[test]
fn a_write_whose_leader_is_deposed_before_it_applies_has_an_unknown_outcome() {
    let mut c = SimCluster::new(3, Options::default());
    let all = c.ids.clone();
    let old = c.elect(&all);
    c.write_all(old, &all, "before", 0..3);

    // The followers hear the leader; the leader hears nobody, so never learns of a commit.
    let rest = c.others(&[old]);
    for &id in &rest {
        c.cut.insert((id, old));
    }
    let w = c.propose_tracked(old, "w", "w", "kept");
    c.settle();
    for &id in &rest {
        let term = c.node(id).log_store().term(w.index).expect("term");
        assert_eq!(term, w.term, "node {id} did not get the write");
    }
    c.run_until(PARTITION_TICKS, "the deaf leader stepped down", |c| {
        !c.node(old).is_leader()
    });
    assert!(
        c.sm(old).applied().index < w.index,
        "the old leader applied it"
    );
    assert_eq!(c.told("w"), [(old, OUTCOME_UNKNOWN.to_string())]);

    let new = c.elect(&rest);
    c.run_until(
        REPLICATION_BUDGET,
        "the new leader applied the write",
        |c| c.applied_on(&[new], w.index),
    );
    assert_eq!(c.get(new, "w"), Some("kept".into()));

    c.heal();
    c.run_until(CONVERGE_BUDGET, "the old leader caught up", |c| {
        c.converged(&all)
    });
    assert_eq!(c.get(old, "w"), Some("kept".into()));
    assert_eq!(
        c.told("w"),
        [(old, OUTCOME_UNKNOWN.to_string())],
        "answered twice"
    );
}

// ---------------------------------------------------------------------------------------------
// Messages no correct peer sends
// ---------------------------------------------------------------------------------------------

/// Random messages stepped into the single node of the property test, per seed.
const FUZZ_MESSAGES: usize = 4_000;
/// Seeds the property test runs.
const FUZZ_SEEDS: std::ops::Range<u64> = 11..16;
/// Forged messages injected into a working cluster.
const FORGED_MESSAGES: usize = 300;

/// A value near `around` (one time in sixteen, one of the extremes a forged message would use).
fn fuzz_u64(rng: &mut StdRng, around: u64) -> u64 {
    match rng.gen_range(0..64) {
        0 => 0,
        1 => u64::MAX,
        2 => u64::MAX / 2,
        3 => rng.gen(),
        _ => around
            .saturating_add(rng.gen_range(0..3))
            .saturating_sub(1)
            .max(1),
    }
}

/// An arbitrary well-formed raft message from a member to node `to`, its fields near the
/// node's own state or at the extremes.
fn arbitrary_message(rng: &mut StdRng, to: u64, term: u64, last: u64) -> Message {
    let mut m = Message {
        msg_type: MessageType::from_i32(rng.gen_range(0..19)).expect("a message type"),
        from: [1, 3][rng.gen_range(0..2)],
        to,
        term: fuzz_u64(rng, term.saturating_add(1)),
        log_term: fuzz_u64(rng, term),
        index: fuzz_u64(rng, last),
        commit: fuzz_u64(rng, last),
        reject: rng.gen_bool(0.2),
        reject_hint: fuzz_u64(rng, last),
        request_snapshot: if rng.gen_bool(0.1) { rng.gen() } else { 0 },
        ..Default::default()
    };
    if m.get_msg_type() == MessageType::MsgReadIndex && rng.gen_bool(0.9) {
        m.term = 0;
    }
    let first = fuzz_u64(rng, m.index.saturating_add(1));
    for i in 0..rng.gen_range(0..4u64) {
        let mut e = raft::prelude::Entry {
            index: if rng.gen_bool(0.8) {
                first.saturating_add(i)
            } else {
                fuzz_u64(rng, last)
            },
            term: fuzz_u64(rng, term),
            ..Default::default()
        };
        if rng.gen_bool(0.1) {
            e.set_entry_type(
                raft::prelude::EntryType::from_i32(rng.gen_range(0..3)).expect("type"),
            );
        }
        if rng.gen_bool(0.5) {
            e.data = set_command(rng.gen(), "fuzz", "x").into();
        }
        m.entries.push(e);
    }
    if m.get_msg_type() == MessageType::MsgSnapshot {
        let meta = m.mut_snapshot().mut_metadata();
        meta.index = fuzz_u64(rng, last.saturating_add(10));
        meta.term = fuzz_u64(rng, term);
        meta.mut_conf_state().voters = match rng.gen_range(0..3) {
            0 => vec![1, 2, 3],
            1 => vec![],
            _ => vec![1, 2, 9],
        };
        if rng.gen_bool(0.2) {
            meta.mut_conf_state().learners = vec![2];
        }
    }
    m
}

/// Proves: whatever well-formed message a member sends, a node never panics, never fails to
/// persist, and keeps a log without holes. Runs [`FUZZ_SEEDS`] seeds; `FUZZ_SEED=n` runs
/// seed `n` alone (to explore more, or to replay a failure).
#[test]
fn a_node_stepped_with_arbitrary_peer_messages_never_panics() {
    let seeds: Vec<u64> = match std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => FUZZ_SEEDS.collect(),
    };
    for seed in seeds {
        fuzz_one_node(seed);
    }
}

fn fuzz_one_node(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut peer = open_peer(dir.path(), 2, &[1, 2, 3], Options::default());
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut stepped, mut refused) = (0, 0);
    for i in 0..FUZZ_MESSAGES {
        let status = peer.node.status();
        let m = arbitrary_message(&mut rng, 2, status.term, status.last_index);
        match peer.node.step(m) {
            Ok(()) => stepped += 1,
            Err(_) => refused += 1,
        }
        if i % 10 == 0 {
            peer.node.tick();
        }
        while let Some(out) = peer.node.ready().expect("ready never fails") {
            if let Some(snap) = &out.snapshot {
                if snap.get_metadata().index > peer.sm.applied().index {
                    peer.sm.restore(snap).expect("restore");
                }
            }
            peer.sm.apply(&out.committed).expect("apply");
            peer.node.advance_applied(peer.sm.applied().index);
        }
        let log = peer.node.log_store();
        let (first, last) = (log.first_index().unwrap(), log.last_index().unwrap());
        log.entries(first, last + 1, None, raft::GetEntriesContext::empty(false))
            .unwrap_or_else(|e| panic!("seed {seed}: the log [{first}, {last}] has a hole: {e}"));
    }
    // Both sides of the check must be exercised for the run to mean anything.
    assert!(
        stepped > FUZZ_MESSAGES / 10 && refused > FUZZ_MESSAGES / 10,
        "seed {seed}: stepped {stepped}, refused {refused}"
    );
}

/// A message that would crash or corrupt a node if stepped, addressed as if from `from`.
fn forged_message(rng: &mut StdRng, from: u64, to: u64, term: u64, last: u64) -> Message {
    let mut m = Message {
        from,
        to,
        term,
        ..Default::default()
    };
    match rng.gen_range(0..6) {
        0 => {
            m.set_msg_type(MessageType::MsgHeartbeat);
            m.commit = last + rng.gen_range(1..u64::MAX / 4);
        }
        1 => {
            // Entries that skip an index.
            m.set_msg_type(MessageType::MsgAppend);
            m.index = last;
            m.log_term = term;
            for index in [last + 1, last + 3] {
                m.entries.push(raft::prelude::Entry {
                    index,
                    term,
                    ..Default::default()
                });
            }
        }
        2 => {
            m.set_msg_type(MessageType::MsgAppendResponse);
            m.index = last + rng.gen_range(1..1_000);
        }
        3 => {
            m.set_msg_type(MessageType::MsgSnapshot);
            let meta = m.mut_snapshot().mut_metadata();
            meta.index = last + 1;
            meta.term = term;
            meta.mut_conf_state().voters = vec![from, to];
        }
        4 => m.set_msg_type(
            [
                MessageType::MsgHup,
                MessageType::MsgBeat,
                MessageType::MsgPropose,
                MessageType::MsgCheckQuorum,
            ][rng.gen_range(0..4)],
        ),
        _ => {
            m.set_msg_type(MessageType::MsgHeartbeat);
            m.term = u64::MAX;
        }
    }
    m
}

/// Proves: messages no correct peer sends — a commit past the log, entries with a hole, an
/// acknowledgement of entries that do not exist, a snapshot of another membership, local
/// events, an absurd term — are refused while the cluster works, and it goes on committing
/// the same entries on every node.
#[test]
fn forged_peer_messages_are_refused_and_change_nothing() {
    let mut c = SimCluster::new(3, Options::default());
    let mut rng = StdRng::seed_from_u64(5);
    let mut leader = c.elect(&[1, 2, 3]);
    for round in 0..FORGED_MESSAGES {
        if round % 10 == 0 {
            leader = c.elect(&[1, 2, 3]);
            c.propose_set(leader, &format!("k{round}"), "v");
        }
        let to = c.ids[rng.gen_range(0..3)];
        let from = *c.ids.iter().find(|&&i| i != to).expect("another member");
        let status = c.node(to).status();
        let m = forged_message(&mut rng, from, to, status.term, status.last_index);
        let kind = m.get_msg_type();
        let refused = c.peer_mut(to).node.step(m);
        assert!(
            refused.is_err(),
            "a forged {kind:?} to node {to} was stepped"
        );
        c.tick();
    }
    let last = c.write_all(leader, &[1, 2, 3], "after", 0..10);
    c.run_until(CONVERGE_BUDGET, "converged", |c| c.converged(&[1, 2, 3]));
    assert_eq!(c.get(1, "after9").as_deref(), Some("value9"));
    assert!(c.applied_on(&[1, 2, 3], last));
}
