//! `LeaseActor`: the [`Lessor`] behind a mailbox (the protocol is in [`crate::lease`]).
//!
//! It adds to the lessor:
//! - **the table**: the StorageActor sends the whole lease table at start and after a
//!   restore ([`LeasesLoaded`]), and after every apply batch what it changed
//!   ([`LeaseChanges`]);
//! - **the role**: the RaftActor's [`RoleChanged`] demotes the lessor, or, once this node
//!   has applied its own first entry of the term it leads (every lease change of earlier
//!   terms applied), promotes it; it also gives the leader's client address that a follower's
//!   answers carry;
//! - **renewals as etcd 3.5 makes them**: a keep-alive is answered only after a quorum has
//!   confirmed this node still leads (a leader cut off from its cluster, or stalled on its
//!   disk, renews nothing a new leader may revoke), and, when the lease had a checkpointed
//!   remaining TTL, only once its clearing is applied;
//! - **the tick**: every quarter election timeout, at most [`LEASE_TICK`], on the leader, the
//!   expired leases' revokes and the
//!   checkpoints due are proposed, through the ClientApiActor as any write is; their outcome
//!   comes back as applied changes, so a failed proposal needs no handling here but a log
//!   line (the lessor proposes an unapplied revoke again after its retry interval);
//! - **the time**: the lessor is given `Instant::now()` at each message.
//!
//! Mailbox: unbounded, as every actor's on the System arbiter here; its senders are the
//! StorageActor (one message per apply batch with lease changes), the RaftActor (role
//! changes) and the Lease service (one message per request, each awaited).

use std::time::{Duration, Instant};

use actix::prelude::*;
use etcd_api::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest, LeaseRevokeRequest};
use raft::StateRole;
use tokio::sync::oneshot;

use crate::actors::messages::{
    Api, ClientWrite, Connect, LeaseAnswer, LeaseChanges, LeaseTimeLeft, LeasesLoaded, ListLeases,
    ReadIndex, RenewLease, RoleChanged, WriteOp,
};
use crate::actors::ClientApiActor;
use crate::lease::{Lessor, LessorConfig, Renewal, TimeLeft};

/// How often the leader looks for expired leases and checkpoints due at most (etcd: 500 ms);
/// with short election timeouts, every quarter of one, so that a lease is gone within its TTL
/// and an election timeout of its last keep-alive (the tick, then its revoke's commit).
pub const LEASE_TICK: Duration = Duration::from_millis(500);

/// Revokes proposed per second at most, spread over the ticks (etcd's `leaseRevokeRate`), so
/// that many leases expiring at once do not flood the log ahead of clients' writes.
pub const REVOKES_PER_SECOND: usize = 1_000;

/// How long a proposed revoke is given to be applied before it is proposed again (etcd's
/// `expiredLeaseRetryInterval`).
pub const REVOKE_RETRY: Duration = Duration::from_secs(3);

/// Checkpoints in one proposed entry at most (etcd's `maxLeaseCheckpointBatchSize`).
pub const MAX_CHECKPOINTS_PER_ENTRY: usize = 1_000;

/// The leases of one member (see the module docs).
pub struct LeaseActor {
    lessor: Lessor,
    /// Where revokes and checkpoints are proposed.
    api: Addr<ClientApiActor>,
    /// The leader's client address, as the last role change gave it: what a follower's
    /// answers carry.
    leader_addr: Option<String>,
    /// The term of the last role change, for response headers.
    term: u64,
    /// The term this node leads in, from the role change that said so; the lessor takes
    /// office once the applied term reaches it.
    leading_since: Option<u64>,
    /// The term of the last entry the StorageActor applied.
    applied_term: u64,
    /// Where leadership is confirmed before each renewal; set at start-up (`Connect`).
    raft: Option<Recipient<ReadIndex>>,
    /// How often [`LeaseActor::tick`] runs.
    tick_every: Duration,
}

impl LeaseActor {
    /// `election_timeout` is what a new leader adds to every lease; long leases are
    /// checkpointed every `checkpoint_interval`.
    pub fn new(
        api: Addr<ClientApiActor>,
        election_timeout: Duration,
        checkpoint_interval: Duration,
    ) -> LeaseActor {
        let tick_every = (election_timeout / 4).clamp(Duration::from_millis(1), LEASE_TICK);
        let per_tick = REVOKES_PER_SECOND as u128 * tick_every.as_millis() / 1000;
        LeaseActor {
            lessor: Lessor::new(LessorConfig {
                promote_extension: election_timeout,
                checkpoint_interval,
                max_revokes_per_tick: (per_tick as usize).max(1),
                revoke_retry: REVOKE_RETRY,
                max_checkpoints: MAX_CHECKPOINTS_PER_ENTRY,
            }),
            api,
            leader_addr: None,
            term: 0,
            leading_since: None,
            applied_term: 0,
            raft: None,
            tick_every,
        }
    }

    /// The deliberate fault `unsafe_lease_expiry`: keep-alives are answered but renew nothing.
    pub fn with_renewals_ignored(mut self, ignored: bool) -> LeaseActor {
        self.lessor.ignore_renewals(ignored);
        self
    }

    fn answer<T>(&self, answer: T) -> LeaseAnswer<T> {
        // A leader whose lessor has not taken office yet names no leader: asked again, it
        // answers once it has.
        let waiting = self.leading_since.is_some() && !self.lessor.is_primary();
        LeaseAnswer {
            answer,
            leader_addr: if waiting {
                None
            } else {
                self.leader_addr.clone()
            },
            term: self.term,
        }
    }

    /// Promotes the lessor once this node leads and has applied its own first entry of the
    /// term: every lease change committed in earlier terms (a revoke, a checkpoint cleared)
    /// is then in the table the leases start from.
    fn take_office(&mut self) {
        let ready = self
            .leading_since
            .is_some_and(|term| self.applied_term >= term);
        if ready && !self.lessor.is_primary() {
            self.lessor.promote(Instant::now());
            tracing::info!(
                leases = self.lessor.len(),
                "leading: every lease starts again from its remaining TTL"
            );
        }
    }

    /// Proposes `op` as a write of its own; the outcome comes back through the apply path.
    fn propose(&self, op: WriteOp, ctx: &mut Context<Self>) {
        let (reply, answer) = oneshot::channel();
        let what = format!("{op:?}");
        self.api.do_send(ClientWrite {
            op,
            api: Api::Etcd,
            reply,
        });
        ctx.spawn(
            async move {
                match answer.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::debug!("lease proposal {what} not applied: {e}"),
                    Err(_) => tracing::debug!("lease proposal {what}: no answer"),
                }
            }
            .into_actor(self),
        );
    }

    /// One tick on the leader: revokes of the expired, then the checkpoints due.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        for id in self.lessor.expired(now) {
            tracing::debug!(lease = id, "lease expired: revoking it");
            self.propose(WriteOp::LeaseRevoke(LeaseRevokeRequest { id }), ctx);
        }
        let due = self.lessor.checkpoints_due(now);
        if !due.is_empty() {
            let checkpoints = due
                .into_iter()
                .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                .collect();
            self.propose(
                WriteOp::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints }),
                ctx,
            );
        }
    }
}

impl Actor for LeaseActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.tick_every, |act, ctx| act.tick(ctx));
    }
}

impl Handler<LeasesLoaded> for LeaseActor {
    type Result = ();
    fn handle(&mut self, msg: LeasesLoaded, _: &mut Self::Context) {
        self.lessor.reset(msg.0, Instant::now());
    }
}

impl Handler<LeaseChanges> for LeaseActor {
    type Result = ();
    fn handle(&mut self, msg: LeaseChanges, _: &mut Self::Context) {
        let now = Instant::now();
        for change in msg.changes {
            self.lessor.apply(change, now);
        }
        self.applied_term = self.applied_term.max(msg.applied_term);
        self.take_office();
    }
}

impl Handler<Connect> for LeaseActor {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        self.raft = Some(msg.raft.recipient());
    }
}

impl Handler<RoleChanged> for LeaseActor {
    type Result = ();
    fn handle(&mut self, msg: RoleChanged, _: &mut Self::Context) {
        self.leader_addr = msg.leader_client_addr;
        self.term = msg.change.term;
        if msg.change.role == StateRole::Leader {
            self.leading_since = Some(msg.change.term);
            self.take_office();
        } else {
            self.leading_since = None;
            if self.lessor.is_primary() {
                self.lessor.demote();
            }
        }
    }
}

impl Handler<RenewLease> for LeaseActor {
    type Result = ResponseActFuture<Self, LeaseAnswer<Renewal>>;
    fn handle(&mut self, msg: RenewLease, _: &mut Self::Context) -> Self::Result {
        let id = msg.id;
        let not_leader = |act: &LeaseActor| act.answer(Renewal::NotLeader);
        let (Some(raft), true) = (self.raft.clone(), self.lessor.is_primary()) else {
            return Box::pin(fut::ready(self.answer(Renewal::NotLeader)));
        };
        // 1. A quorum confirms this node still leads, after the keep-alive arrived: a
        //    leader cut off (or stalled) must not renew what a new leader may revoke.
        let (reply, confirmed) = oneshot::channel();
        raft.do_send(ReadIndex {
            reply,
            leader_only: true,
        });
        Box::pin(
            async move { matches!(confirmed.await, Ok(Ok(_))) }
                .into_actor(self)
                .then(move |led, act, _| {
                    if !led || !act.lessor.is_primary() {
                        return fut::ready(not_leader(act)).boxed_local();
                    }
                    // 2. The renewal, counted from now.
                    let renewal = act.lessor.renew(id, Instant::now());
                    let Renewal::Renewed {
                        clear_checkpoint: true,
                        ..
                    } = renewal
                    else {
                        return fut::ready(act.answer(renewal)).boxed_local();
                    };
                    // 3. A checkpointed remaining TTL is cleared through Raft before the
                    //    renewal is answered: a leader elected after the answer must not
                    //    start the lease from the old, shorter checkpoint.
                    let clear = LeaseCheckpointRequest {
                        checkpoints: vec![LeaseCheckpoint {
                            id,
                            remaining_ttl: 0,
                        }],
                    };
                    let (reply, applied) = oneshot::channel();
                    act.api.do_send(ClientWrite {
                        op: WriteOp::LeaseCheckpoint(clear),
                        api: Api::Etcd,
                        reply,
                    });
                    async move { matches!(applied.await, Ok(Ok(_))) }
                        .into_actor(act)
                        .map(move |cleared, act, _| {
                            if cleared {
                                act.answer(renewal)
                            } else {
                                not_leader(act)
                            }
                        })
                        .boxed_local()
                }),
        )
    }
}

impl Handler<LeaseTimeLeft> for LeaseActor {
    type Result = MessageResult<LeaseTimeLeft>;
    fn handle(&mut self, msg: LeaseTimeLeft, _: &mut Self::Context) -> Self::Result {
        let left: TimeLeft = self.lessor.time_left(msg.id, Instant::now());
        MessageResult(self.answer(left))
    }
}

impl Handler<ListLeases> for LeaseActor {
    type Result = MessageResult<ListLeases>;
    fn handle(&mut self, _: ListLeases, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.answer(self.lessor.ids()))
    }
}
