//! `RaftActor`: the [`RaftNode`] behind a mailbox, on its own arbiter.
//!
//! It ticks the node every `tick_interval`, steps in messages from peers, accepts proposals and
//! read-index requests, and runs the Ready loop. The Ready loop does not run once per message:
//! handlers only note that there is work and schedule one `Drive`; actix drains every message
//! already in the mailbox before it runs, so one log flush covers all of them (group commit).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use actix::prelude::*;
use raft::StateRole;

use crate::actors::messages::*;
use crate::actors::read_batch::{IndexAnswer, ReadBatch};
use crate::consensus::LogId;
use crate::consensus::{RaftNode, ReadyOutput};
use crate::error::{fatal_disk, Error};

/// Capacity of the RaftActor's mailbox. Client requests `send` and wait while it is full; peer
/// messages bypass it within a budget of their own (`actors::inbox`), so client load cannot
/// crowd them out.
pub const RAFT_MAILBOX_CAPACITY: usize = 4_096;
/// Most committed entries handed to the StorageActor and not yet applied. Beyond this the
/// RaftActor refuses new proposals (`RESOURCE_EXHAUSTED`) so the apply queue stays bounded.
pub const MAX_APPLY_BACKLOG_ENTRIES: u64 = 50_000;

/// Runs the Ready loop; scheduled at most once at a time.
#[derive(Message)]
#[rtype(result = "()")]
struct Drive;

/// Owns the [`RaftNode`] and carries out what its Ready loop asks for (see the module docs).
pub struct RaftActor {
    node: RaftNode,
    /// Wall-clock length of one tick, the unit raft-rs counts election and heartbeat
    /// timeouts in.
    tick_interval: Duration,
    /// This node's client address, for leader hints about itself.
    client_addr: String,
    /// The StorageActor: committed entries and received snapshots go there as [`Apply`].
    storage: Recipient<Apply>,
    /// Told of every role or leader change: the ClientApiActor and the LeaseActor (or the
    /// test doubles in their places).
    role_to: Vec<Recipient<RoleChanged>>,
    /// The PeerActor of each other voter; a message for any other id is dropped with a warning.
    peers: HashMap<u64, Recipient<SendToPeer>>,
    /// Peer addresses of all voters, this node included; a message from a node not here is
    /// dropped unread.
    members: BTreeMap<u64, String>,
    /// Client addresses learned from peers' messages, by id.
    peer_client_addrs: HashMap<u64, String>,
    /// Read-index requests: those that arrived since the last Drive, which the next Drive
    /// covers with one read index (one heartbeat round instead of one per read), and batches
    /// waiting for a quorum.
    reads: ReadBatch<Reply<u64>>,
    /// Whether a `Drive` is already scheduled.
    drive_scheduled: bool,
    /// Index of the last committed entry (or snapshot) handed to the StorageActor.
    dispatched_index: u64,
    /// Applied index the StorageActor last reported. `dispatched_index` less this is the apply
    /// backlog; past [`MAX_APPLY_BACKLOG_ENTRIES`] proposals are refused.
    applied_index: u64,
    /// Leader id last reported to `role_to`, and whether its client address was known then.
    reported_leader: (u64, bool),
    /// Leadership is being handed over (shutdown): losing it is then on purpose.
    handing_over: bool,
}

impl RaftActor {
    /// Wraps `node`. `peers` maps each other voter to its PeerActor.
    pub fn new(
        node: RaftNode,
        tick_interval: Duration,
        client_addr: String,
        members: BTreeMap<u64, String>,
        storage: Recipient<Apply>,
        peers: HashMap<u64, Recipient<SendToPeer>>,
        role_to: Vec<Recipient<RoleChanged>>,
    ) -> RaftActor {
        let applied = node.status().applied_index;
        let reads = ReadBatch::new(node.id());
        RaftActor {
            node,
            tick_interval,
            client_addr,
            storage,
            role_to,
            peers,
            members,
            peer_client_addrs: HashMap::new(),
            reads,
            drive_scheduled: false,
            dispatched_index: applied,
            applied_index: applied,
            reported_leader: (0, false),
            handing_over: false,
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if !self.drive_scheduled {
            self.drive_scheduled = true;
            ctx.notify(Drive);
        }
    }

    fn leader_client_addr(&self, leader: u64) -> Option<String> {
        if leader == 0 {
            None
        } else if leader == self.node.id() {
            Some(self.client_addr.clone())
        } else {
            self.peer_client_addrs.get(&leader).cloned()
        }
    }

    fn not_leader(&self) -> Error {
        let leader = self.node.leader_id();
        Error::NotLeader {
            leader_id: (leader != 0).then_some(leader),
            leader_addr: self.leader_client_addr(leader),
        }
    }

    fn report_role(&mut self, change: crate::consensus::RoleChange) {
        let addr = self.leader_client_addr(change.leader_id);
        self.reported_leader = (change.leader_id, addr.is_some());
        let handed_over = self.handing_over && change.role != StateRole::Leader;
        for to in &self.role_to {
            to.do_send(RoleChanged {
                change: change.clone(),
                leader_client_addr: addr.clone(),
                handed_over,
            });
        }
    }

    fn dispatch(&mut self, out: ReadyOutput) {
        if let Some(change) = out.role_change {
            if change.role != StateRole::Leader {
                let err = self.not_leader();
                send_reads(self.reads.stopped_leading(&err));
            }
            self.report_role(change);
        }
        send_to_peers(&self.peers, out.messages);
        let last = out.committed.last().map(|e| e.index);
        let snap = out.snapshot.as_ref().map(|s| s.get_metadata().index);
        self.dispatched_index = self.dispatched_index.max(last.or(snap).unwrap_or(0));
        if out.snapshot.is_some() || !out.committed.is_empty() {
            self.storage.do_send(Apply {
                snapshot: out.snapshot,
                entries: out.committed,
                conf_state: self.node.conf_state(),
            });
        }
        for rs in &out.read_states {
            send_reads(self.reads.completed(rs));
        }
    }
}

/// Sends each read index (or error) to its read.
fn send_reads(answers: Vec<IndexAnswer<Reply<u64>>>) {
    for (reply, result) in answers {
        let _ = reply.send(result);
    }
}

/// Hands each message to its peer's outbox.
fn send_to_peers(peers: &HashMap<u64, Recipient<SendToPeer>>, msgs: Vec<raft::prelude::Message>) {
    for msg in msgs {
        match peers.get(&msg.to) {
            Some(peer) => peer.do_send(SendToPeer { msg }),
            None => tracing::warn!(to = msg.to, "message for an unknown peer dropped"),
        }
    }
}

impl RaftActor {
    /// Asks raft-rs for one read index covering every read that arrived since the last one.
    /// A new leader waits until it has committed an entry of its term (the reads stay queued).
    fn issue_read_index(&mut self) {
        if !self.node.can_read_index() {
            return;
        }
        let node = &mut self.node;
        send_reads(self.reads.issue(|ctx| node.read_index(ctx)));
    }
}

impl Actor for RaftActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(RAFT_MAILBOX_CAPACITY);
        ctx.run_interval(self.tick_interval, |act, ctx| {
            act.node.tick();
            let node = &mut act.node;
            act.reads.tick(|read_ctx| node.read_index(read_ctx));
            act.schedule(ctx);
        });
        // A cluster of one needs no votes but its own: elect it at once instead of after an
        // election timeout.
        if self.members.len() == 1 && self.members.contains_key(&self.node.id()) {
            if let Err(e) = self.node.campaign() {
                tracing::warn!("campaign failed: {e}");
            }
        }
        self.schedule(ctx);
    }
}

impl Handler<Drive> for RaftActor {
    type Result = ();
    fn handle(&mut self, _: Drive, _: &mut Context<Self>) {
        self.drive_scheduled = false;
        loop {
            self.issue_read_index();
            let peers = &self.peers;
            match self.node.ready_with(|msgs| send_to_peers(peers, msgs)) {
                Ok(Some(out)) => self.dispatch(out),
                Ok(None) => break,
                Err(e) => fatal_disk("persisting the raft log", &e),
            }
        }
    }
}

impl Handler<StepMessage> for RaftActor {
    type Result = ();
    fn handle(&mut self, msg: StepMessage, ctx: &mut Context<Self>) {
        let from = msg.msg.from;
        // Only members take part: nothing else a stranger says is remembered. What a member
        // says is checked by `RaftNode::step` before raft-rs sees it.
        if !self.members.contains_key(&from) || from == self.node.id() {
            tracing::debug!(from, "message from a non-member dropped");
            return;
        }
        if !msg.from_client_addr.is_empty()
            && self.peer_client_addrs.get(&from) != Some(&msg.from_client_addr)
        {
            self.peer_client_addrs.insert(from, msg.from_client_addr);
        }
        if let Err(e) = self.node.step(msg.msg) {
            tracing::warn!(from, "peer message not stepped: {e}");
        }
        // The first message from a new leader tells us its client address: pass it on so
        // clients get a useful hint.
        let leader = self.node.leader_id();
        if leader == from
            && self.reported_leader == (leader, false)
            && self.peer_client_addrs.contains_key(&leader)
        {
            let status = self.node.status();
            self.report_role(crate::consensus::RoleChange {
                role: if self.node.is_leader() {
                    StateRole::Leader
                } else {
                    StateRole::Follower
                },
                leader_id: leader,
                term: status.term,
            });
        }
        self.schedule(ctx);
    }
}

impl Handler<Propose> for RaftActor {
    type Result = crate::Result<LogId>;
    fn handle(&mut self, msg: Propose, ctx: &mut Context<Self>) -> Self::Result {
        let backlog = self.dispatched_index.saturating_sub(self.applied_index);
        if backlog > MAX_APPLY_BACKLOG_ENTRIES {
            return Err(Error::Overloaded(format!(
                "{backlog} committed entries are waiting to be applied"
            )));
        }
        let result = self.node.propose(msg.data).map_err(|e| match e {
            Error::NotLeader { .. } => self.not_leader(),
            other => other,
        });
        self.schedule(ctx);
        result
    }
}

impl Handler<ReadIndex> for RaftActor {
    type Result = ();
    fn handle(&mut self, msg: ReadIndex, ctx: &mut Context<Self>) {
        // A follower asks the leader it knows (etcd's follower reads), unless the asker
        // needs this node itself to lead.
        if !self.node.is_leader() && (self.node.leader_id() == 0 || msg.leader_only) {
            let _ = msg.reply.send(Err(self.not_leader()));
            return;
        }
        if let Err((reply, e)) = self.reads.queue(msg.reply) {
            let _ = reply.send(Err(e));
            return;
        }
        self.schedule(ctx);
    }
}

impl Handler<PeerReport> for RaftActor {
    type Result = ();
    fn handle(&mut self, msg: PeerReport, ctx: &mut Context<Self>) {
        match msg {
            PeerReport::Unreachable { peer } => self.node.report_unreachable(peer),
            PeerReport::SnapshotSent { peer, ok } => self.node.report_snapshot(peer, ok),
        }
        self.schedule(ctx);
    }
}

impl Handler<ApplyProgress> for RaftActor {
    type Result = ();
    fn handle(&mut self, msg: ApplyProgress, ctx: &mut Context<Self>) {
        self.applied_index = self.applied_index.max(msg.index);
        self.node.advance_applied(msg.index);
        self.schedule(ctx);
    }
}

impl Handler<SnapshotCreated> for RaftActor {
    type Result = ();
    fn handle(&mut self, msg: SnapshotCreated, _: &mut Context<Self>) {
        if let Err(e) = self.node.compact_to_snapshot(msg.index) {
            fatal_disk("compacting the raft log", &e);
        }
    }
}

impl Handler<TransferLeadership> for RaftActor {
    type Result = Option<u64>;
    fn handle(&mut self, _: TransferLeadership, ctx: &mut Context<Self>) -> Option<u64> {
        let target = self.node.transfer_leadership();
        if let Some(to) = target {
            tracing::info!(to, "handing leadership over");
            self.handing_over = true;
            self.schedule(ctx);
        }
        target
    }
}

impl Handler<GetRaftStatus> for RaftActor {
    type Result = MessageResult<GetRaftStatus>;
    fn handle(&mut self, _: GetRaftStatus, _: &mut Context<Self>) -> Self::Result {
        let raft = self.node.status();
        let members = self
            .members
            .iter()
            .map(|(id, peer)| (*id, peer.clone(), self.leader_client_addr(*id)))
            .collect();
        let leader_client_addr = self.leader_client_addr(raft.leader_id);
        MessageResult(NodeStatus {
            raft,
            members,
            leader_client_addr,
            ..Default::default()
        })
    }
}
