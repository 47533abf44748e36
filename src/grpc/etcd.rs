//! etcd's v3 API on the client port: the `etcdserverpb` KV, Watch, Lease, Maintenance and Cluster services,
//! so etcdctl and etcd's client libraries work against distributed_kv unchanged.
//!
//! # One command model
//! These services translate onto the same actor messages as kv.v1: a Put, DeleteRange, Txn or
//! Compaction becomes a [`ClientWrite`](crate::actors::messages::ClientWrite) carrying etcd's
//! request as it is, proposed as one log entry and answered with the state machine's
//! response; a Range or HashKV becomes a
//! [`ClientRead`](crate::actors::messages::ClientRead). What is etcd's own lives here:
//!
//! 1. **Checks before proposing**, as etcd makes them (empty keys, txn limits, duplicate keys,
//!    request size), so a bad request gets etcd's code and text and changes nothing.
//!    Checks that depend on the state (a compacted revision, `ignore_value` on a missing key)
//!    are made when the entry is applied, alike on every replica.
//! 2. **Any member answers.** etcd's clients do not follow redirects. A follower serves a
//!    linearizable read itself (the leader confirms a read index; the follower waits until it
//!    has applied that far), a serializable read from its own state, and forwards a write to
//!    the leader ([`forward`]), returning the leader's answer. A forwarded request carries
//!    [`FORWARDED_METADATA`]; a member that gets one and is not the leader answers "leader
//!    changed" instead of forwarding again, so a request never circles.
//! 3. **Headers**: every response carries the cluster id (derived from `cluster_name`, the same
//!    on every member), this member's id (its Raft id), the store's revision, and the Raft term.
//! 4. **Errors** as etcd sends them ([`status_of`]): clientv3 recognises an error by its exact
//!    message, and retries a read elsewhere only on `UNAVAILABLE`.

pub mod cluster;
pub mod forward;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use etcd_api::etcdserverpb::ResponseHeader;
use etcd_api::EtcdError;
use tonic::Status;

use crate::actors::messages::{Api, ClientWrite, WriteOp, WriteResult};
use crate::actors::ClientApiActor;
use crate::error::Error;
use crate::state_machine::WriteResponse;

pub use cluster::EtcdCluster;
pub use forward::Forwarder;
pub use kv::EtcdKv;
pub use lease::EtcdLease;
pub use maintenance::EtcdMaintenance;
pub use watch::EtcdWatch;

/// Metadata a forwarding member puts on a request it passes to the leader (its member id).
pub const FORWARDED_METADATA: &str = "x-kv-forwarded-by";

/// etcd's limit on one request, in bytes (its `--max-request-bytes` default, 1.5 MiB): a
/// larger one is refused with "request is too large".
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// What etcd's gRPC server takes beyond [`MAX_REQUEST_BYTES`] before it refuses a message
/// itself, as `RESOURCE_EXHAUSTED`: 512 KiB.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The largest message etcd's gRPC server takes (2 MiB): larger ones get grpc-go's own
/// `RESOURCE_EXHAUSTED` answer, which [`check_message_size`] gives in its words.
pub const MAX_GRPC_MESSAGE_BYTES: usize = MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES;

/// What tonic decodes at most for the etcd services (8 MiB): more than etcd takes, so that
/// the checks here see, and answer as etcd does, messages up to this size; beyond it tonic
/// refuses them itself (`OUT_OF_RANGE`) before holding them whole.
pub const MAX_DECODED_BYTES: usize = 8 * 1024 * 1024;

/// The version Status reports. Not an etcd version: this store serves etcd's KV, Watch, Lease,
/// Maintenance and Cluster calls but not Auth, and a version like "3.4.0" would claim it to
/// tools that decide by it.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The cluster id every member derives from the cluster's name: FNV-1a over it, never 0
/// (etcd's clients treat 0 as "unknown").
pub fn cluster_id(cluster_name: &str) -> u64 {
    let mut h = crate::fnv::Fnv1a::new();
    h.write(cluster_name.as_bytes());
    h.finish().max(1)
}

/// What every etcd service of one member shares.
#[derive(Clone)]
pub struct EtcdFront {
    api: Addr<ClientApiActor>,
    cluster_id: u64,
    member_id: u64,
    /// How long a request may wait for its answer; past it a write's outcome is unknown.
    timeout: Duration,
    forwarder: Arc<Forwarder>,
}

impl EtcdFront {
    pub fn new(
        api: Addr<ClientApiActor>,
        cluster_id: u64,
        member_id: u64,
        timeout: Duration,
    ) -> EtcdFront {
        EtcdFront {
            api,
            cluster_id,
            member_id,
            timeout,
            forwarder: Arc::new(Forwarder::new(member_id)),
        }
    }

    /// A header for this member: `revision` from the store, `raft_term` from Raft.
    fn header(&self, revision: i64, raft_term: u64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term,
        })
    }

    /// Fills in the member's part of a header the store started (it set only the revision).
    fn stamp(&self, header: &mut Option<ResponseHeader>, raft_term: u64) {
        let revision = header.as_ref().map_or(0, |h| h.revision);
        *header = self.header(revision, raft_term);
    }

    /// Proposes `op`; on a follower, forwards `original` to the leader through `forward`
    /// unless it was forwarded here already. `pick` takes the response out of the state
    /// machine's answer.
    pub(crate) async fn propose<Req, Resp, F, Fut>(
        &self,
        forwarded: bool,
        original: Req,
        op: WriteOp,
        pick: impl FnOnce(WriteResponse) -> Option<Resp>,
        header: impl FnOnce(&mut Resp) -> &mut Option<ResponseHeader>,
        forward: F,
    ) -> Result<tonic::Response<Resp>, Status>
    where
        F: FnOnce(tonic::transport::Channel, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        match self.write(op).await {
            Ok((response, term)) => {
                let mut r = pick(response)
                    .ok_or_else(|| Status::internal("the state machine answered another call"))?;
                self.stamp(header(&mut r), term);
                Ok(tonic::Response::new(r))
            }
            Err(Error::NotLeader {
                leader_addr: Some(addr),
                ..
            }) if !forwarded => {
                let r = self.pass_on(&addr, original, header, forward).await?;
                Ok(tonic::Response::new(r))
            }
            Err(e) => Err(status_of(e)),
        }
    }

    /// Passes `req` on to the leader at `addr` through `call`; the leader's answer, as this
    /// member's (as a follower's is in etcd): the leader's revision and term, this member's id.
    pub(crate) async fn pass_on<Req, Resp, F, Fut>(
        &self,
        addr: &str,
        req: Req,
        header: impl FnOnce(&mut Resp) -> &mut Option<ResponseHeader>,
        call: F,
    ) -> Result<Resp, Status>
    where
        F: FnOnce(tonic::transport::Channel, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let mut r = self
            .forwarder
            .forward(addr, req, self.timeout, call)
            .await?;
        if let Some(h) = header(&mut r) {
            h.member_id = self.member_id;
        }
        Ok(r)
    }

    /// Proposes `op` through the local ClientApiActor; the state machine's answer, or the
    /// error as the actor gave it (a not-leader error is the caller's cue to forward).
    async fn write(&self, op: WriteOp) -> Result<(WriteResponse, u64), Error> {
        let WriteResult { term, response, .. } =
            super::ask(&self.api, self.timeout, "the write", |reply| ClientWrite {
                op,
                api: Api::Etcd,
                reply,
            })
            .await?;
        let response =
            response.ok_or_else(|| Error::Raft("a write was applied as an empty entry".into()))?;
        Ok((response, term))
    }
}

/// Refuses a message over etcd's gRPC limit with grpc-go's answer: in etcd this happens as
/// the message arrives, before any other check.
fn check_message_size(message: &impl prost::Message) -> Result<(), Status> {
    let len = message.encoded_len();
    if len > MAX_GRPC_MESSAGE_BYTES {
        return Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({len} vs. {MAX_GRPC_MESSAGE_BYTES})"
        )));
    }
    Ok(())
}

/// Refuses a request over etcd's request limit: in etcd this happens when it is proposed,
/// after the request's own checks.
fn check_request_size(message: &impl prost::Message) -> Result<(), Status> {
    if message.encoded_len() > MAX_REQUEST_BYTES {
        return Err(EtcdError::RequestTooLarge.status());
    }
    Ok(())
}

/// Whether another member forwarded this request here.
fn is_forwarded<T>(request: &tonic::Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_METADATA)
}

/// The status etcd would send for `e`.
pub fn status_of(e: Error) -> Status {
    let etcd = match &e {
        Error::Etcd(etcd) => *etcd,
        Error::NotLeader {
            leader_id: None, ..
        } => EtcdError::NoLeader,
        // A not-leader answer that reaches a client means the leader moved under a forwarded
        // request (or a read that needed it).
        Error::NotLeader { .. } => EtcdError::LeaderChanged,
        Error::NotApplied(_) => EtcdError::LeaderChanged,
        Error::OutcomeUnknown(_) => EtcdError::TimeoutDueToLeaderFail,
        Error::Timeout(_) => EtcdError::Timeout,
        Error::Overloaded(_) => EtcdError::TooManyRequests,
        Error::ShuttingDown(_) => EtcdError::Stopped,
        Error::InvalidArgument(why) => return Status::invalid_argument(why.clone()),
        Error::Config { .. }
        | Error::DataDir { .. }
        | Error::Disk(_)
        | Error::Raft(_)
        | Error::Transport(_) => return Status::internal(e.to_string()),
    };
    etcd.status()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_stable_and_never_zero() {
        assert_eq!(cluster_id("distributed_kv"), cluster_id("distributed_kv"));
        assert_ne!(cluster_id("a"), cluster_id("b"));
        assert_ne!(cluster_id(""), 0);
    }

    /// Each failure a client can see becomes the status etcd sends in its place.
    #[test]
    fn node_errors_become_etcds_statuses() {
        let cases = [
            (
                Error::NotLeader {
                    leader_id: None,
                    leader_addr: None,
                },
                EtcdError::NoLeader,
            ),
            (
                Error::NotLeader {
                    leader_id: Some(2),
                    leader_addr: None,
                },
                EtcdError::LeaderChanged,
            ),
            (Error::NotApplied("x".into()), EtcdError::LeaderChanged),
            (
                Error::OutcomeUnknown("x".into()),
                EtcdError::TimeoutDueToLeaderFail,
            ),
            (Error::Timeout("x".into()), EtcdError::Timeout),
            (Error::Overloaded("x".into()), EtcdError::TooManyRequests),
            (Error::ShuttingDown("x".into()), EtcdError::Stopped),
            (Error::Etcd(EtcdError::Compacted), EtcdError::Compacted),
        ];
        for (e, want) in cases {
            let s = status_of(e.clone());
            assert_eq!(EtcdError::from_status(&s), Some(want), "{e:?}");
        }
    }
}
