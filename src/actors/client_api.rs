//! `ClientApiActor`: where client requests enter the node.
//!
//! Writes: validated, wrapped in a `LogCommand` tagged (node id, sequence), proposed to the
//! RaftActor, and parked until the StorageActor reports the entry applied. The tag is how an
//! applied entry is matched to its request; the index the RaftActor answers is how a request
//! learns it lost: if the entry applied at its index is not its own, a new leader overwrote it,
//! and it is failed as certainly not applied. If this node stops being leader while writes are
//! pending, their outcome is unknown (a new leader may still commit them), and they fail with a
//! status saying so.
//!
//! Reads: linearizable reads get a read index from the RaftActor (a quorum confirms the
//! leadership), then the StorageActor answers once it has applied up to that index.
//! Serializable reads go straight to the StorageActor.
//!
//! Overflow policy: at most `max_pending` writes and `max_pending` reads are in flight; beyond
//! that a request is refused at once with `RESOURCE_EXHAUSTED`.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use actix::prelude::*;
use raft::StateRole;
use tokio::sync::oneshot;

use crate::actors::messages::*;
use crate::error::Error;
use crate::proto::raftpb::{log_command::Op, DeleteOp, LogCommand, SetOp};
use crate::storage::CommandOutcome;

/// Capacity of the ClientApiActor's mailbox; the gRPC layer uses `try_send` and answers
/// `RESOURCE_EXHAUSTED` when it is full.
pub const CLIENT_API_MAILBOX_CAPACITY: usize = 8_192;

/// Limits the ClientApiActor enforces.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// Largest key in bytes.
    pub max_key_bytes: usize,
    /// Largest value in bytes.
    pub max_value_bytes: usize,
    /// Most writes, and most reads, in flight.
    pub max_pending: usize,
    /// Largest List page.
    pub max_list_limit: usize,
    /// Largest List page in encoded bytes (one key always fits, however big).
    pub max_list_bytes: usize,
    /// UNSAFE, for testing the consistency checker only: answer every read from the local
    /// state machine, on any node, without ReadIndex (reads may be stale).
    pub unsafe_stale_reads: bool,
}

/// A write waiting to be applied.
struct PendingWrite {
    /// Where the outcome goes.
    reply: Reply<WriteResult>,
    /// (index, term) the RaftActor gave the proposal, once known.
    placed: Option<(u64, u64)>,
}

/// The client API actor.
pub struct ClientApiActor {
    /// This node's id (the `origin_node` of its commands).
    node_id: u64,
    /// Input limits.
    limits: ClientLimits,
    /// The RaftActor, once connected.
    raft: Option<Addr<crate::actors::RaftActor>>,
    /// Where reads go.
    storage: Recipient<Read>,
    /// Where status questions about the state machine go.
    storage_status: Recipient<GetStorageStatus>,
    /// Where hash questions go.
    storage_hash: Option<Recipient<GetStateHash>>,
    /// Whether this node is leader, and who is.
    role: StateRole,
    /// Known leader id (0: none).
    leader_id: u64,
    /// The leader's client address, if known.
    leader_addr: Option<String>,
    /// Next command sequence number; starts at a random 63-bit number so numbers are not
    /// reused across restarts.
    next_seq: u64,
    /// Pending writes by sequence.
    pending: HashMap<u64, PendingWrite>,
    /// Pending writes with a known index, by index.
    by_index: BTreeMap<u64, u64>,
    /// Highest applied index reported.
    applied: u64,
    /// Reads in flight.
    reads_in_flight: Rc<Cell<usize>>,
}

impl ClientApiActor {
    /// A client API for node `node_id` that reads from `storage`.
    pub fn new(
        node_id: u64,
        limits: ClientLimits,
        storage: Recipient<Read>,
        storage_status: Recipient<GetStorageStatus>,
    ) -> ClientApiActor {
        // A random start: sequence numbers of this run never meet those of an earlier run still
        // in the log, whatever the clock did in between.
        let first_seq = rand::random::<u64>() >> 1;
        ClientApiActor {
            node_id,
            limits,
            raft: None,
            storage,
            storage_status,
            storage_hash: None,
            role: StateRole::Follower,
            leader_id: 0,
            leader_addr: None,
            next_seq: first_seq,
            pending: HashMap::new(),
            by_index: BTreeMap::new(),
            applied: 0,
            reads_in_flight: Rc::new(Cell::new(0)),
        }
    }

    /// Lets the actor answer [`ClientHash`] from `storage`.
    pub fn with_hash(mut self, storage: Recipient<GetStateHash>) -> Self {
        self.storage_hash = Some(storage);
        self
    }

    fn not_leader(&self) -> Error {
        Error::NotLeader {
            leader_id: (self.leader_id != 0).then_some(self.leader_id),
            leader_addr: self.leader_addr.clone(),
        }
    }

    fn check_key(&self, key: &[u8]) -> crate::Result<()> {
        if key.is_empty() {
            return Err(Error::InvalidArgument("key must not be empty".into()));
        }
        if key.len() > self.limits.max_key_bytes {
            return Err(Error::InvalidArgument(format!(
                "key is {} bytes; the limit is {} bytes (max_key_bytes)",
                key.len(),
                self.limits.max_key_bytes
            )));
        }
        Ok(())
    }

    fn validate_write(&self, op: &WriteOp) -> crate::Result<()> {
        match op {
            WriteOp::Set { key, value } => {
                self.check_key(key)?;
                if value.len() > self.limits.max_value_bytes {
                    return Err(Error::InvalidArgument(format!(
                        "value is {} bytes; the limit is {} bytes (max_value_bytes)",
                        value.len(),
                        self.limits.max_value_bytes
                    )));
                }
                Ok(())
            }
            WriteOp::Delete { key } => self.check_key(key),
        }
    }

    fn validate_read(&self, query: &mut ReadQuery) -> crate::Result<()> {
        match query {
            ReadQuery::Get { key } => self.check_key(key),
            ReadQuery::List {
                prefix,
                start,
                limit,
                max_bytes,
                ..
            } => {
                if prefix.len() > self.limits.max_key_bytes
                    || start.len() > self.limits.max_key_bytes
                {
                    return Err(Error::InvalidArgument(format!(
                        "prefix and start key must be at most {} bytes (max_key_bytes)",
                        self.limits.max_key_bytes
                    )));
                }
                if *limit == 0 || *limit > self.limits.max_list_limit {
                    *limit = self.limits.max_list_limit;
                }
                if *max_bytes == 0 || *max_bytes > self.limits.max_list_bytes {
                    *max_bytes = self.limits.max_list_bytes;
                }
                Ok(())
            }
        }
    }

    fn on_proposed(&mut self, seq: u64, result: crate::Result<(u64, u64)>) {
        match result {
            Ok((index, term)) => {
                let Some(p) = self.pending.get_mut(&seq) else {
                    return;
                };
                if index <= self.applied {
                    // Something else was applied at our index: our entry is gone.
                    if let Some(p) = self.pending.remove(&seq) {
                        let _ = p.reply.send(Err(Error::NotApplied(
                            "a new leader overwrote the entry".into(),
                        )));
                    }
                } else {
                    p.placed = Some((index, term));
                    self.by_index.insert(index, seq);
                }
            }
            Err(e) => {
                if let Some(p) = self.pending.remove(&seq) {
                    let e = match e {
                        Error::NotLeader { .. } => self.not_leader(),
                        other => other,
                    };
                    let _ = p.reply.send(Err(e));
                }
            }
        }
    }

    fn fail_all_pending(&mut self, why: &str) {
        self.by_index.clear();
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Err(Error::OutcomeUnknown(why.to_string())));
        }
    }
}

impl Actor for ClientApiActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(CLIENT_API_MAILBOX_CAPACITY);
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.fail_all_pending("the node is shutting down");
        Running::Stop
    }
}

impl Handler<Connect> for ClientApiActor {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        self.raft = Some(msg.raft);
    }
}

impl Handler<ClientWrite> for ClientApiActor {
    type Result = ();
    fn handle(&mut self, msg: ClientWrite, ctx: &mut Context<Self>) {
        if let Err(e) = self.validate_write(&msg.op) {
            let _ = msg.reply.send(Err(e));
            return;
        }
        let Some(raft) = self.raft.clone() else {
            let _ = msg
                .reply
                .send(Err(Error::ShuttingDown("raft is not running".into())));
            return;
        };
        if self.role != StateRole::Leader {
            let _ = msg.reply.send(Err(self.not_leader()));
            return;
        }
        if self.pending.len() >= self.limits.max_pending {
            let closed: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| p.reply.is_closed())
                .map(|(s, _)| *s)
                .collect();
            for seq in closed {
                if let Some(PendingWrite {
                    placed: Some((idx, _)),
                    ..
                }) = self.pending.remove(&seq)
                {
                    self.by_index.remove(&idx);
                }
            }
            if self.pending.len() >= self.limits.max_pending {
                let _ = msg.reply.send(Err(Error::Overloaded(format!(
                    "{} writes are already in flight on this node",
                    self.limits.max_pending
                ))));
                return;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let op = match msg.op {
            WriteOp::Set { key, value } => Op::Set(SetOp { key, value }),
            WriteOp::Delete { key } => Op::Delete(DeleteOp { key }),
        };
        let data = crate::storage::state_machine::encode_command(&LogCommand {
            origin_node: self.node_id,
            origin_seq: seq,
            op: Some(op),
        });
        self.pending.insert(
            seq,
            PendingWrite {
                reply: msg.reply,
                placed: None,
            },
        );
        ctx.spawn(
            raft.send(Propose { data })
                .into_actor(self)
                .map(move |res, act, _| {
                    act.on_proposed(seq, res.unwrap_or_else(|e| Err(e.into())));
                }),
        );
    }
}

impl Handler<ClientRead> for ClientApiActor {
    type Result = ();
    fn handle(&mut self, mut msg: ClientRead, _: &mut Context<Self>) {
        if let Err(e) = self.validate_read(&mut msg.query) {
            let _ = msg.reply.send(Err(e));
            return;
        }
        // Serializable reads (and every read in the unsafe testing mode) skip ReadIndex.
        let local = msg.serializable || self.limits.unsafe_stale_reads;
        let raft = match (local, self.raft.clone()) {
            (true, _) => None,
            (false, None) => {
                let _ = msg
                    .reply
                    .send(Err(Error::ShuttingDown("raft is not running".into())));
                return;
            }
            (false, Some(_)) if self.role != StateRole::Leader => {
                let _ = msg.reply.send(Err(self.not_leader()));
                return;
            }
            (false, Some(raft)) => Some(raft),
        };
        if self.reads_in_flight.get() >= self.limits.max_pending {
            let _ = msg.reply.send(Err(Error::Overloaded(format!(
                "{} reads are already in flight on this node",
                self.limits.max_pending
            ))));
            return;
        }
        let in_flight = self.reads_in_flight.clone();
        in_flight.set(in_flight.get() + 1);
        let storage = self.storage.clone();
        actix::spawn(async move {
            let work = async {
                let min_index = match raft {
                    None => 0,
                    Some(raft) => {
                        let (tx, rx) = oneshot::channel();
                        raft.send(ReadIndex { reply: tx }).await?;
                        rx.await??
                    }
                };
                let (tx, rx) = oneshot::channel();
                storage.do_send(Read {
                    min_index,
                    query: msg.query,
                    reply: tx,
                });
                rx.await?
            };
            // A caller that gave up (deadline) stops counting at once.
            let mut reply = msg.reply;
            tokio::select! {
                answer = work => {
                    let _ = reply.send(answer);
                }
                _ = reply.closed() => {}
            }
            // Counted until answered, so reads parked in the StorageActor count too.
            in_flight.set(in_flight.get() - 1);
        });
    }
}

impl Handler<ClientStatus> for ClientApiActor {
    type Result = ();
    fn handle(&mut self, msg: ClientStatus, _: &mut Context<Self>) {
        let Some(raft) = self.raft.clone() else {
            let _ = msg
                .reply
                .send(Err(Error::ShuttingDown("raft is not running".into())));
            return;
        };
        let storage = self.storage_status.clone();
        actix::spawn(async move {
            let result = async {
                let mut status = raft.send(GetRaftStatus).await?;
                let s = storage.send(GetStorageStatus).await?;
                status.applied_index = s.applied_index;
                status.key_count = s.key_count;
                status.snapshot_index = s.snapshot_index;
                Ok(status)
            }
            .await;
            let _ = msg.reply.send(result);
        });
    }
}

impl Handler<ClientHash> for ClientApiActor {
    type Result = ();
    fn handle(&mut self, msg: ClientHash, _: &mut Context<Self>) {
        let Some(storage) = self.storage_hash.clone() else {
            let _ = msg.reply.send(Err(Error::ShuttingDown(
                "state hashing is not wired".into(),
            )));
            return;
        };
        actix::spawn(async move {
            let result = match storage.send(GetStateHash).await {
                Ok(r) => r,
                Err(e) => Err(e.into()),
            };
            let _ = msg.reply.send(result);
        });
    }
}

impl Handler<Applied> for ClientApiActor {
    type Result = ();
    fn handle(&mut self, msg: Applied, _: &mut Context<Self>) {
        for e in msg.entries {
            let Some((node, seq)) = e.origin else {
                continue;
            };
            if node != self.node_id {
                continue;
            }
            let Some(p) = self.pending.remove(&seq) else {
                continue;
            };
            if let Some((idx, _)) = p.placed {
                self.by_index.remove(&idx);
            }
            let result = match e.outcome {
                CommandOutcome::Set => Ok(WriteResult {
                    index: e.index,
                    term: e.term,
                    existed: false,
                }),
                CommandOutcome::Deleted { existed } => Ok(WriteResult {
                    index: e.index,
                    term: e.term,
                    existed,
                }),
                CommandOutcome::Noop => Ok(WriteResult {
                    index: e.index,
                    term: e.term,
                    existed: false,
                }),
                CommandOutcome::Rejected(why) => Err(Error::InvalidArgument(why)),
            };
            let _ = p.reply.send(result);
        }
        self.applied = self.applied.max(msg.applied_index);
        // Pending writes placed at an index that is now applied, but were not matched above,
        // were overwritten by another leader's entry: they will never apply.
        let overwritten: Vec<u64> = self
            .by_index
            .range(..=self.applied)
            .map(|(i, _)| *i)
            .collect();
        for idx in overwritten {
            if let Some(seq) = self.by_index.remove(&idx) {
                if let Some(p) = self.pending.remove(&seq) {
                    let _ = p.reply.send(Err(Error::NotApplied(
                        "a new leader overwrote the entry".into(),
                    )));
                }
            }
        }
    }
}

impl Handler<RoleChanged> for ClientApiActor {
    type Result = ();
    fn handle(&mut self, msg: RoleChanged, _: &mut Context<Self>) {
        let was_leader = self.role == StateRole::Leader;
        self.role = msg.change.role;
        self.leader_id = msg.change.leader_id;
        self.leader_addr = msg.leader_client_addr;
        // A leader that handed over gave its whole log to the new one: its pending writes will
        // be applied here, or be seen overwritten, as entries from the new leader arrive. A
        // leader deposed otherwise may never hear their fate.
        if was_leader && self.role != StateRole::Leader && !msg.handed_over {
            self.fail_all_pending("this node lost leadership before the write was applied; it may or may not take effect");
        }
        tracing::info!(role = ?self.role, leader = self.leader_id, term = msg.change.term, "role changed");
    }
}
