//! `ClientApiActor`: where client requests enter the node.
//!
//! Writes: validated, wrapped in a `LogCommand` tagged (node id, sequence), proposed to the
//! RaftActor, and parked until the StorageActor reports the entry applied. Which answer each
//! write gets — applied, certainly not applied, outcome unknown — is decided by [`Proposals`],
//! a plain struct; this actor feeds it the events (submitted, placed, applied, leadership lost,
//! stopping) and sends what it returns.
//!
//! Reads: linearizable reads get a read index from the RaftActor (a quorum confirms the
//! leadership), then the StorageActor answers once it has applied up to that index.
//! Serializable reads go straight to the StorageActor. On kv.v1 only the leader serves
//! linearizable reads (a follower answers not-leader, and the client goes to the leader); on
//! etcd's API a follower serves them too: raft-rs forwards its read-index request to the
//! leader, which confirms its leadership with a quorum and answers its commit index, and the
//! follower reads once it has applied that far. Read load so spreads over every member.
//!
//! Overflow policy: at most `max_pending` writes and `max_pending` reads are in flight; beyond
//! that a request is refused at once with `RESOURCE_EXHAUSTED`.

use std::cell::Cell;
use std::rc::Rc;

use actix::prelude::*;
use raft::StateRole;
use tokio::sync::oneshot;

use crate::actors::messages::*;
use crate::actors::proposals::{Proposals, ReplyHandle, WriteAnswer};
use crate::consensus::LogId;
use crate::error::Error;
use crate::proto::raftpb::LogCommand;
use etcd_api::etcdserverpb::{DeleteRangeRequest, PutRequest};

/// Capacity of the ClientApiActor's mailbox; the gRPC layer uses `try_send` and answers
/// `RESOURCE_EXHAUSTED` when it is full.
pub const CLIENT_API_MAILBOX_CAPACITY: usize = 8_192;

/// Limits the ClientApiActor checks before a request goes any further: a key or value over
/// them is refused as invalid, a List page is cut down to them, and a request beyond
/// `max_pending` is refused as overloaded.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// Largest key in bytes; it bounds a List's prefix and start key too.
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// Most writes, and most reads, in flight, counted apart; one more is refused at once.
    pub max_pending: usize,
    /// Most keys in one List page; a request asking for none, or for more, gets this many.
    pub max_list_limit: usize,
    /// Largest List page in encoded bytes (one key always fits, however big).
    pub max_list_bytes: usize,
    /// UNSAFE, for testing the consistency checker only: answer every read from the local
    /// state machine, on any node, without ReadIndex (reads may be stale).
    pub unsafe_stale_reads: bool,
}

/// `KvService` drops its receiver when the request's deadline passes.
impl<T> ReplyHandle for oneshot::Sender<T> {
    fn is_closed(&self) -> bool {
        oneshot::Sender::is_closed(self)
    }
}

/// Sends each answer; a caller that gave up is not waiting for it.
fn send_writes(answers: impl IntoIterator<Item = WriteAnswer<Reply<WriteResult>>>) {
    for (reply, result) in answers {
        let _ = reply.send(result);
    }
}

/// Validates each client request, proposes writes and holds them until applied, and sends
/// linearizable reads through ReadIndex first (see the module docs).
pub struct ClientApiActor {
    /// This node's id (the `origin_node` of its commands).
    node_id: u64,
    limits: ClientLimits,
    /// `None` until [`Connect`] arrives; until then writes, linearizable reads and status
    /// questions are refused as shutting down.
    raft: Option<Addr<crate::actors::RaftActor>>,
    /// The StorageActor, which holds each read until it has applied up to the read's index.
    storage: Recipient<Read>,
    /// The StorageActor's part of a [`ClientStatus`] answer: applied index, keys, snapshot.
    storage_status: Recipient<GetStorageStatus>,
    /// Set by [`ClientApiActor::with_hash`]; without it [`ClientHash`] is refused.
    storage_hash: Option<Recipient<GetStateHash>>,
    /// As the last [`RoleChanged`] said; writes and linearizable reads are refused as
    /// not-leader unless it is `Leader`.
    role: StateRole,
    /// Known leader id (0: none).
    leader_id: u64,
    /// The term of the last [`RoleChanged`], for etcd's response headers.
    term: u64,
    /// The leader's client address, if known; a not-leader answer carries it so the client
    /// can go there.
    leader_addr: Option<String>,
    /// Pending writes, and the command sequence numbers they are tagged with.
    proposals: Proposals<Reply<WriteResult>>,
    /// Reads not yet answered, those parked in the StorageActor included. Each read's task
    /// holds a clone and counts itself out when it answers or its caller gives up.
    reads_in_flight: Rc<Cell<usize>>,
}

impl ClientApiActor {
    /// A client API for node `node_id` that reads from the StorageActor at `storage`.
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
            proposals: Proposals::new(node_id, limits.max_pending, first_seq),
            limits,
            raft: None,
            storage,
            storage_status,
            storage_hash: None,
            role: StateRole::Follower,
            leader_id: 0,
            term: 0,
            leader_addr: None,
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

    /// kv.v1's limits. etcd's requests were checked by the gRPC layer, as etcd checks them.
    fn validate_write(&self, api: Api, op: &WriteOp) -> crate::Result<()> {
        if api == Api::Etcd {
            return Ok(());
        }
        match op {
            WriteOp::Put(PutRequest { key, value, .. }) => {
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
            WriteOp::DeleteRange(DeleteRangeRequest { key, .. }) => self.check_key(key),
            _ => Ok(()),
        }
    }

    fn validate_read(&self, query: &mut ReadQuery) -> crate::Result<()> {
        match query {
            ReadQuery::Get { key } => self.check_key(key),
            ReadQuery::Range(_)
            | ReadQuery::HashKv { .. }
            | ReadQuery::PhysicallyCompacted { .. } => Ok(()),
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

    fn on_proposed(&mut self, seq: u64, result: crate::Result<LogId>) {
        let answer = match result {
            Ok(placed) => self.proposals.placed(seq, placed),
            Err(Error::NotLeader { .. }) => {
                let e = self.not_leader();
                self.proposals.refused(seq, e)
            }
            Err(e) => self.proposals.refused(seq, e),
        };
        send_writes(answer);
    }
}

impl Actor for ClientApiActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(CLIENT_API_MAILBOX_CAPACITY);
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        send_writes(self.proposals.shutting_down());
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
        if let Err(e) = self.validate_write(msg.api, &msg.op) {
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
        let seq = match self.proposals.submit(msg.reply) {
            Ok(seq) => seq,
            Err((reply, e)) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let data = crate::state_machine::encode_command(&LogCommand {
            origin_node: self.node_id,
            origin_seq: seq,
            op: Some(msg.op.into_command_op()),
        });
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
            // A follower asks the leader for a read index on etcd's API; with no leader
            // known there is nobody to ask.
            (false, Some(_))
                if self.role != StateRole::Leader
                    && (msg.api == Api::KvV1 || self.leader_id == 0) =>
            {
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
        let term = self.term;
        actix::spawn(async move {
            let work = async {
                let min_index = match raft {
                    None => 0,
                    Some(raft) => {
                        let (tx, rx) = oneshot::channel();
                        raft.send(ReadIndex {
                            reply: tx,
                            leader_only: false,
                        })
                        .await?;
                        rx.await??
                    }
                };
                let (tx, rx) = oneshot::channel();
                storage.do_send(Read {
                    min_index,
                    query: msg.query,
                    reply: tx,
                });
                rx.await?.map(|answer| ReadAnswer { term, ..answer })
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

impl Handler<GetLeader> for ClientApiActor {
    type Result = u64;
    fn handle(&mut self, _: GetLeader, _: &mut Context<Self>) -> u64 {
        self.leader_id
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
                status.revision = s.revision;
                status.db_size = s.db_size;
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
        if let Some(index) = msg.restored_to {
            send_writes(self.proposals.restored(index));
        }
        send_writes(self.proposals.applied(msg.entries, msg.applied_index));
    }
}

impl Handler<RoleChanged> for ClientApiActor {
    type Result = ();
    fn handle(&mut self, msg: RoleChanged, _: &mut Context<Self>) {
        let was_leader = self.role == StateRole::Leader;
        self.role = msg.change.role;
        self.leader_id = msg.change.leader_id;
        self.term = msg.change.term;
        self.leader_addr = msg.leader_client_addr;
        if was_leader && self.role != StateRole::Leader {
            send_writes(self.proposals.stopped_leading(msg.handed_over));
        }
        tracing::info!(role = ?self.role, leader = self.leader_id, term = msg.change.term, "role changed");
    }
}
