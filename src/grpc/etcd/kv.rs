//! `EtcdKv`: etcd's KV service (`etcdserverpb.KV`) — Range, Put, DeleteRange, Txn, Compact.
//!
//! Each call is checked as etcd checks it (message size first, then the request's own checks,
//! then the request size), then becomes one ClientApiActor message. Writes that this member
//! cannot propose because it is not the leader are forwarded to the leader **at most once**:
//! the local refusal means nothing was proposed here, and a forwarded request that reaches a
//! member which is not the leader either is refused there too ("leader changed"). So a client
//! told "no leader" or "leader changed" knows its write was not applied; every answer that
//! leaves the outcome open says "request timed out" in one of etcd's forms.

use etcd_api::etcdserverpb::kv_client::KvClient;
use etcd_api::etcdserverpb::kv_server::Kv;
use etcd_api::etcdserverpb::*;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{check_message_size, check_request_size, is_forwarded, status_of, EtcdFront};
use crate::actors::messages::{Api, ClientRead, ReadQuery, ReadResult, WriteOp};
use crate::mvcc;
use crate::state_machine::WriteResponse;

/// Serves etcd's KV calls for one member.
pub struct EtcdKv {
    front: EtcdFront,
}

impl EtcdKv {
    pub fn new(front: EtcdFront) -> EtcdKv {
        EtcdKv { front }
    }
}

/// A KV client on `channel` that takes answers of any size (the leader has bounded them).
fn kv_client(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

#[tonic::async_trait]
impl Kv for EtcdKv {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        check_message_size(&req)?;
        mvcc::check_range(&req)?;
        check_request_size(&req)?;
        let serializable = req.serializable;
        let f = &self.front;
        let answer = super::super::ask(&f.api, f.timeout, "the range", |reply| ClientRead {
            query: ReadQuery::Range(req),
            serializable,
            api: Api::Etcd,
            reply,
        })
        .await
        .map_err(status_of)?;
        let ReadResult::Range(mut r) = answer.result else {
            return Err(Status::internal("the state machine answered another call"));
        };
        f.stamp(&mut r.header, answer.term);
        Ok(Response::new(r))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        check_message_size(&req)?;
        mvcc::check_put(&req)?;
        check_request_size(&req)?;
        self.front
            .propose(
                forwarded,
                req.clone(),
                WriteOp::Put(req),
                |w| match w {
                    WriteResponse::Put(r) => Some(r),
                    _ => None,
                },
                |r| &mut r.header,
                |ch, r| async move { kv_client(ch).put(r).await },
            )
            .await
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        check_message_size(&req)?;
        mvcc::check_delete_range(&req)?;
        check_request_size(&req)?;
        self.front
            .propose(
                forwarded,
                req.clone(),
                WriteOp::DeleteRange(req),
                |w| match w {
                    WriteResponse::DeleteRange(r) => Some(r),
                    _ => None,
                },
                |r| &mut r.header,
                |ch, r| async move { kv_client(ch).delete_range(r).await },
            )
            .await
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        check_message_size(&req)?;
        mvcc::check_txn(&req, mvcc::MAX_TXN_OPS)?;
        check_request_size(&req)?;
        self.front
            .propose(
                forwarded,
                req.clone(),
                WriteOp::Txn(req),
                |w| match w {
                    WriteResponse::Txn(r) => Some(r),
                    _ => None,
                },
                |r| &mut r.header,
                |ch, r| async move { kv_client(ch).txn(r).await },
            )
            .await
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let answer = self
            .front
            .propose(
                forwarded,
                req,
                WriteOp::Compaction(req),
                |w| match w {
                    WriteResponse::Compaction(r) => Some(r),
                    _ => None,
                },
                |r| &mut r.header,
                |ch, r| async move { kv_client(ch).compact(r).await },
            )
            .await?;
        // `physical`: answer only once this member has removed the history from disk too (a
        // forwarded request was waited for by the leader, for the leader's disk).
        if req.physical {
            let f = &self.front;
            let revision = req.revision;
            super::super::ask(&f.api, f.timeout, "the physical compaction", |reply| {
                ClientRead {
                    query: ReadQuery::PhysicallyCompacted { revision },
                    serializable: true,
                    api: Api::Etcd,
                    reply,
                }
            })
            .await
            .map_err(status_of)?;
        }
        Ok(answer)
    }
}
