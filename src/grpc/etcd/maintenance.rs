//! `EtcdMaintenance`: etcd's Maintenance service, the calls `etcdctl endpoint status` and
//! `endpoint hashkv` make.

use etcd_api::etcdserverpb::maintenance_server::Maintenance;
use etcd_api::etcdserverpb::*;
use etcd_api::EtcdError;
use tonic::{Request, Response, Status};

use super::{status_of, EtcdFront, SERVER_VERSION};
use crate::actors::messages::{Api, ClientRead, ClientStatus, ReadQuery, ReadResult};

/// Serves etcd's Status and HashKV for one member.
pub struct EtcdMaintenance {
    front: EtcdFront,
}

impl EtcdMaintenance {
    pub fn new(front: EtcdFront) -> EtcdMaintenance {
        EtcdMaintenance { front }
    }
}

#[tonic::async_trait]
impl Maintenance for EtcdMaintenance {
    /// This member's own view, answered without a leader (with "no leader" among the errors,
    /// as etcd reports it).
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let f = &self.front;
        let s = super::super::ask(&f.api, f.timeout, "status", |reply| ClientStatus { reply })
            .await
            .map_err(status_of)?;
        let mut errors = Vec::new();
        if s.raft.leader_id == 0 {
            errors.push(EtcdError::NoLeader.message().to_string());
        }
        let db_size = i64::try_from(s.db_size).unwrap_or(i64::MAX);
        Ok(Response::new(StatusResponse {
            header: f.header(s.revision, s.raft.term),
            version: SERVER_VERSION.to_string(),
            db_size,
            leader: s.raft.leader_id,
            raft_index: s.raft.commit_index,
            raft_term: s.raft.term,
            raft_applied_index: s.applied_index,
            errors,
            db_size_in_use: db_size,
            is_learner: false,
        }))
    }

    /// A digest of the history up to a revision, from this member's own state (as etcd's is),
    /// so members can be compared.
    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let revision = request.into_inner().revision;
        let f = &self.front;
        let answer = super::super::ask(&f.api, f.timeout, "hashkv", |reply| ClientRead {
            query: ReadQuery::HashKv { revision },
            serializable: true,
            api: Api::Etcd,
            reply,
        })
        .await
        .map_err(status_of)?;
        let ReadResult::HashKv(mut r) = answer.result else {
            return Err(Status::internal("the state machine answered another call"));
        };
        f.stamp(&mut r.header, answer.term);
        Ok(Response::new(r))
    }
}
