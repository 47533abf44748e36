//! `EtcdLease`: etcd's Lease service (`etcdserverpb.Lease`) — LeaseGrant, LeaseRevoke,
//! LeaseKeepAlive, LeaseTimeToLive, LeaseLeases.
//!
//! - **Grant and revoke are writes**: proposed through the ClientApiActor like a Put, and
//!   forwarded to the leader by a follower. A grant gets its id here when the client left it
//!   0 (a random positive one; a taken id is refused as etcd refuses it, and the client may
//!   ask again), and its TTL raised to the member's least TTL
//!   ([`min_lease_ttl`]: etcd's, an election timeout and a half, in whole seconds), so that
//!   applying it is the same on every member. A TTL over 9 000 000 000 s is refused before
//!   proposing, with etcd's "too large lease TTL".
//! - **Keep-alives and time-to-live are the leader's**: it alone knows deadlines
//!   ([`crate::lease`]). The LeaseActor answers on the leader; a follower passes each request
//!   on to the leader (a keep-alive as a one-request stream of the leader's own
//!   LeaseKeepAlive) and answers with the leader's answer under its own member id. A
//!   keep-alive of an unknown or expired lease answers TTL 0; a time-to-live of one answers
//!   TTL -1 (etcdctl: "already expired").
//! - **LeaseLeases is local, and linearizable**: every member's lessor mirrors the applied
//!   lease table; the member first waits, as for a linearizable read, until it has applied
//!   everything committed when the call came (so a lease revoked just before is not listed).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use etcd_api::etcdserverpb::lease_client::LeaseClient;
use etcd_api::etcdserverpb::lease_server::Lease;
use etcd_api::etcdserverpb::*;
use etcd_api::EtcdError;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::{check_message_size, is_forwarded, EtcdFront};
use crate::actors::messages::{
    Api, ClientRead, GetLeaseKeys, GetRevision, LeaseAnswer, LeaseTimeLeft, ListLeases, ReadQuery,
    RenewLease, WriteOp,
};
use crate::actors::LeaseActor;
use crate::lease::{Renewal, TimeLeft};
use crate::mvcc::{MAX_LEASE_TTL, NO_LEASE};
use crate::state_machine::WriteResponse;

/// Keep-alive answers one stream holds for a client that is slow to read them; renewals wait
/// for room meanwhile.
pub const KEEP_ALIVE_QUEUE: usize = 64;

/// Keep-alives of one stream being renewed at once at most; the stream's next requests are
/// read once one is done.
pub const KEEP_ALIVE_IN_FLIGHT: usize = 64;

/// etcd's least lease TTL for a member with this election timeout: one and a half election
/// timeouts, rounded up to whole seconds (etcd's `minTTL`), so that a lease outlives the
/// election that may follow the loss of its leader.
pub fn min_lease_ttl(election_timeout: Duration) -> i64 {
    let ms = election_timeout.as_millis() as i64 * 3 / 2;
    ((ms + 999) / 1000).max(1)
}

/// A random positive lease id, for a grant that left the choice to the server.
fn pick_id() -> i64 {
    loop {
        let id = (rand::random::<u64>() >> 1) as i64;
        if id != NO_LEASE {
            return id;
        }
    }
}

/// Serves etcd's Lease calls for one member.
#[derive(Clone)]
pub struct EtcdLease {
    front: EtcdFront,
    lease: Addr<LeaseActor>,
    /// The store's revision and a lease's keys, for answers that carry them.
    revision: Recipient<GetRevision>,
    keys: Recipient<GetLeaseKeys>,
    /// Seconds: every grant's TTL is raised to this.
    min_ttl: i64,
}

/// The answers of one keep-alive stream.
type KeepAlives = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

impl EtcdLease {
    pub fn new(
        front: EtcdFront,
        lease: Addr<LeaseActor>,
        revision: Recipient<GetRevision>,
        keys: Recipient<GetLeaseKeys>,
        min_ttl: i64,
    ) -> EtcdLease {
        EtcdLease {
            front,
            lease,
            revision,
            keys,
            min_ttl,
        }
    }

    async fn ask<M>(&self, msg: M) -> Result<M::Result, Status>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        LeaseActor: Handler<M>,
    {
        self.lease
            .send(msg)
            .await
            .map_err(|_| EtcdError::Stopped.status())
    }

    /// A header for an answer made here: the store's revision now and the term.
    async fn header(&self, term: u64) -> Result<Option<ResponseHeader>, Status> {
        let revision = self
            .revision
            .send(GetRevision)
            .await
            .map_err(|_| EtcdError::Stopped.status())?;
        Ok(self.front.header(revision, term))
    }

    /// Returns once this member has applied everything committed when it was called (a
    /// linearizable read's wait, for a read of nothing): the lease changes applied by then
    /// reached the LeaseActor before any message sent after this returns.
    async fn caught_up(&self) -> Result<(), Status> {
        let f = &self.front;
        let nothing = RangeRequest {
            key: vec![0],
            count_only: true,
            ..Default::default()
        };
        crate::grpc::ask(&f.api, f.timeout, "the lease list", |reply| ClientRead {
            query: ReadQuery::Range(nothing),
            serializable: false,
            api: Api::Etcd,
            reply,
        })
        .await
        .map(|_| ())
        .map_err(super::status_of)
    }

    /// Where a follower passes a question on, or why it cannot.
    fn leader<T>(&self, answer: &LeaseAnswer<T>, forwarded: bool) -> Result<String, Status> {
        match (&answer.leader_addr, forwarded) {
            (None, _) => Err(EtcdError::NoLeader.status()),
            // The leader moved under a request passed on to it.
            (Some(_), true) => Err(EtcdError::LeaderChanged.status()),
            (Some(addr), false) => Ok(addr.clone()),
        }
    }

    /// One keep-alive, answered here on the leader or by the leader through this member.
    async fn keep_alive(&self, id: i64, forwarded: bool) -> Result<LeaseKeepAliveResponse, Status> {
        let answer = self.ask(RenewLease { id }).await?;
        let ttl = match answer.answer {
            Renewal::Renewed { ttl, .. } => ttl,
            Renewal::NotFound => 0,
            Renewal::NotLeader => {
                let addr = self.leader(&answer, forwarded)?;
                let r = self
                    .front
                    .pass_on(
                        &addr,
                        LeaseKeepAliveRequest { id },
                        |r: &mut LeaseKeepAliveResponse| &mut r.header,
                        |channel, request| async move {
                            let (metadata, extensions, req) = request.into_parts();
                            let once =
                                Request::from_parts(metadata, extensions, tokio_stream::once(req));
                            let mut answers =
                                LeaseClient::new(channel).lease_keep_alive(once).await?;
                            match answers.get_mut().message().await? {
                                Some(r) => Ok(Response::new(r)),
                                None => Err(Status::unavailable("the leader ended the stream")),
                            }
                        },
                    )
                    .await?;
                return Ok(r);
            }
        };
        Ok(LeaseKeepAliveResponse {
            header: self.header(answer.term).await?,
            id,
            ttl,
        })
    }
}

/// A Lease client on `channel`, for passing calls on to the leader.
fn lease_client(channel: Channel) -> LeaseClient<Channel> {
    LeaseClient::new(channel)
}

#[tonic::async_trait]
impl Lease for EtcdLease {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        check_message_size(&req)?;
        if req.ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge.status());
        }
        let grant = LeaseGrantRequest {
            ttl: req.ttl.max(self.min_ttl),
            id: if req.id == NO_LEASE {
                pick_id()
            } else {
                req.id
            },
        };
        self.front
            .propose(
                forwarded,
                req,
                WriteOp::LeaseGrant(grant),
                |r| match r {
                    WriteResponse::LeaseGrant(r) => Some(r),
                    _ => None,
                },
                |r| &mut r.header,
                |channel, req| async move { lease_client(channel).lease_grant(req).await },
            )
            .await
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        self.front
            .propose(
                forwarded,
                req,
                WriteOp::LeaseRevoke(req),
                |r| match r {
                    WriteResponse::LeaseRevoke(r) => Some(r),
                    _ => None,
                },
                |r| &mut r.header,
                |channel, req| async move { lease_client(channel).lease_revoke(req).await },
            )
            .await
    }

    type LeaseKeepAliveStream = KeepAlives;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAlives>, Status> {
        let forwarded = is_forwarded(&request);
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEP_ALIVE_QUEUE);
        let this = self.clone();
        tokio::spawn(async move {
            // Up to KEEP_ALIVE_IN_FLIGHT renewals at a time, each answered when done (each
            // answer names its lease, and etcd's clients match them by it), so that one
            // stream's keep-alives share leadership confirmations instead of waiting for one
            // each in turn. An error ends the stream, as in etcd (the client opens another).
            let in_flight = Arc::new(Semaphore::new(KEEP_ALIVE_IN_FLIGHT));
            while let Ok(Some(req)) = requests.message().await {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                let (renewer, answers) = (this.clone(), tx.clone());
                tokio::spawn(async move {
                    let answer = renewer.keep_alive(req.id, forwarded).await;
                    let _ = answers.send(answer).await;
                    drop(permit);
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let answer = self.ask(LeaseTimeLeft { id: req.id }).await?;
        let (granted, remaining) = match answer.answer {
            TimeLeft::Left { granted, remaining } => (granted, remaining),
            TimeLeft::NotFound => (0, -1),
            TimeLeft::NotLeader => {
                let addr = self.leader(&answer, forwarded)?;
                let r = self
                    .front
                    .pass_on(
                        &addr,
                        req,
                        |r: &mut LeaseTimeToLiveResponse| &mut r.header,
                        |channel, req| async move {
                            lease_client(channel).lease_time_to_live(req).await
                        },
                    )
                    .await?;
                return Ok(Response::new(r));
            }
        };
        let keys = if req.keys && remaining >= 0 {
            self.keys
                .send(GetLeaseKeys { id: req.id })
                .await
                .map_err(|_| EtcdError::Stopped.status())?
        } else {
            Vec::new()
        };
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: self.header(answer.term).await?,
            id: req.id,
            ttl: remaining,
            granted_ttl: granted,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.caught_up().await?;
        let answer = self.ask(ListLeases).await?;
        Ok(Response::new(LeaseLeasesResponse {
            header: self.header(answer.term).await?,
            leases: answer
                .answer
                .into_iter()
                .map(|id| LeaseStatus { id })
                .collect(),
        }))
    }
}
