//! `EtcdCluster`: etcd's Cluster service; MemberList only, until membership changes are built.

use etcd_api::etcdserverpb::cluster_server::Cluster;
use etcd_api::etcdserverpb::*;
use tonic::{Request, Response, Status};

use super::{status_of, EtcdFront};
use crate::actors::messages::ClientStatus;

/// Serves etcd's MemberList for one member.
pub struct EtcdCluster {
    front: EtcdFront,
}

impl EtcdCluster {
    pub fn new(front: EtcdFront) -> EtcdCluster {
        EtcdCluster { front }
    }
}

/// A member's name as etcd shows it: `node<id>`.
pub fn member_name(id: u64) -> String {
    format!("node{id}")
}

#[tonic::async_trait]
impl Cluster for EtcdCluster {
    /// The members this member knows, answered locally (as etcd 3.4 does). A member whose
    /// client address this one has not yet heard lists no client URL. The header carries no
    /// revision, like etcd's.
    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let f = &self.front;
        let s = super::super::ask(&f.api, f.timeout, "member list", |reply| ClientStatus {
            reply,
        })
        .await
        .map_err(status_of)?;
        let members = s
            .members
            .into_iter()
            .map(|(id, peer_addr, client_addr)| Member {
                id,
                name: member_name(id),
                peer_ur_ls: vec![format!("http://{peer_addr}")],
                client_ur_ls: client_addr
                    .map(|a| vec![format!("http://{a}")])
                    .unwrap_or_default(),
                is_learner: false,
            })
            .collect();
        Ok(Response::new(MemberListResponse {
            header: f.header(0, s.raft.term),
            members,
        }))
    }
}
