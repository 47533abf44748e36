//! The client API service (`kv.v1.Kv`).

use std::time::Duration;

use actix::prelude::*;
use tonic::{Request, Response, Status};

use crate::actors::messages::*;
use crate::actors::ClientApiActor;
use crate::error::Reason;
use crate::proto::kv::kv_server::Kv;
use crate::proto::kv::*;
use crate::state_machine::StateHash;

/// Serves `kv.v1.Kv` by sending messages to the [`ClientApiActor`].
pub struct KvService {
    /// Requests go in with `try_send`: a full mailbox is answered overloaded at once rather
    /// than waited on.
    api: Addr<ClientApiActor>,
    /// This node's id, for response headers.
    node_id: u64,
    /// How long a request may wait for its answer; past it the client gets a timeout, and a
    /// write's outcome is unknown.
    timeout: Duration,
}

impl KvService {
    pub fn new(api: Addr<ClientApiActor>, node_id: u64, timeout: Duration) -> KvService {
        KvService {
            api,
            node_id,
            timeout,
        }
    }

    /// Asks the ClientApiActor (see [`super::ask`]); a failure becomes kv.v1's status.
    async fn call<T, M>(&self, what: &str, make: impl FnOnce(Reply<T>) -> M) -> Result<T, Status>
    where
        M: Message<Result = ()> + Send + 'static,
        ClientApiActor: Handler<M>,
    {
        Ok(super::ask(&self.api, self.timeout, what, make).await?)
    }

    fn header(&self, term: u64, index: u64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            node_id: self.node_id,
            term,
            index,
        })
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let r = request.into_inner();
        let query = ReadQuery::Get { key: r.key };
        let a = self
            .call("get", |reply| ClientRead {
                query,
                serializable: r.serializable,
                api: Api::KvV1,
                reply,
            })
            .await?;
        let ReadResult::Value(value) = a.result else {
            return Err(Reason::Internal.status("wrong answer kind"));
        };
        let found = value.is_some();
        let kv = value.unwrap_or_default();
        Ok(Response::new(GetResponse {
            header: self.header(0, a.applied_index),
            found,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
        }))
    }

    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let r = request.into_inner();
        let op = WriteOp::set(r.key, r.value);
        let w = self
            .call("set", |reply| ClientWrite {
                op,
                api: Api::KvV1,
                reply,
            })
            .await?;
        Ok(Response::new(SetResponse {
            header: self.header(w.term, w.index),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let r = request.into_inner();
        let op = WriteOp::delete(r.key);
        let w = self
            .call("delete", |reply| ClientWrite {
                op,
                api: Api::KvV1,
                reply,
            })
            .await?;
        Ok(Response::new(DeleteResponse {
            header: self.header(w.term, w.index),
            existed: w.deleted() > 0,
        }))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let r = request.into_inner();
        let query = ReadQuery::List {
            prefix: r.prefix,
            start: r.start_key,
            limit: r.limit as usize,
            // Clients cannot ask for a byte bound; the ClientApiActor applies max_list_bytes.
            max_bytes: 0,
            keys_only: r.keys_only,
        };
        let a = self
            .call("list", |reply| ClientRead {
                query,
                serializable: r.serializable,
                api: Api::KvV1,
                reply,
            })
            .await?;
        let ReadResult::Page(page) = a.result else {
            return Err(Reason::Internal.status("wrong answer kind"));
        };
        Ok(Response::new(ListResponse {
            header: self.header(0, a.applied_index),
            more: page.next_key.is_some(),
            next_key: page.next_key.unwrap_or_default(),
            kvs: page
                .kvs
                .into_iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
        }))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let StateHash {
            applied_index,
            hash,
        } = self.call("hash", |reply| ClientHash { reply }).await?;
        Ok(Response::new(HashResponse {
            node_id: self.node_id,
            applied_index,
            hash,
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let s = self.call("status", |reply| ClientStatus { reply }).await?;
        let client_addr = s
            .members
            .iter()
            .find(|m| m.0 == self.node_id)
            .and_then(|m| m.2.clone())
            .unwrap_or_default();
        Ok(Response::new(StatusResponse {
            node_id: self.node_id,
            client_addr,
            role: wire_role(s.raft.role) as i32,
            term: s.raft.term,
            leader_id: s.raft.leader_id,
            commit_index: s.raft.commit_index,
            applied_index: s.applied_index,
            members: s
                .members
                .into_iter()
                .map(|(id, peer_addr, client_addr)| Member {
                    id,
                    peer_addr,
                    client_addr: client_addr.unwrap_or_default(),
                })
                .collect(),
            leader_client_addr: s.leader_client_addr.unwrap_or_default(),
            snapshot_index: s.snapshot_index,
            key_count: s.key_count,
        }))
    }
}

/// raft-rs's role as the client API names it.
fn wire_role(role: raft::StateRole) -> Role {
    match role {
        raft::StateRole::Follower => Role::Follower,
        raft::StateRole::Candidate => Role::Candidate,
        raft::StateRole::PreCandidate => Role::PreCandidate,
        raft::StateRole::Leader => Role::Leader,
    }
}
