//! `EtcdCluster`: etcd's Cluster service; MemberList only, until membership changes are built.

use etcd_api::etcdserverpb::cluster_server::Cluster;
use etcd_api::etcdserverpb::*;
use tonic::{Request, Response, Status};

use super::{is_forwarded, status_of, EtcdFront};
use crate::actors::messages::ClientStatus;
use etcd_api::etcdserverpb::cluster_client::ClusterClient;

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
    /// The members, answered locally as etcd 3.4 does, with one difference: a member learns
    /// another's client address only from messages it gets from it, and followers hear only
    /// from the leader, so a follower that lacks one asks the leader, which hears from
    /// everyone. With no leader it answers what it knows (such members list no client URL).
    /// The header carries no revision, like etcd's.
    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let f = &self.front;
        let s = super::super::ask(&f.api, f.timeout, "member list", |reply| ClientStatus {
            reply,
        })
        .await
        .map_err(status_of)?;
        let incomplete = s.members.iter().any(|m| m.2.is_none());
        let leader = s.leader_client_addr.as_deref();
        if let (true, false, Some(addr)) = (incomplete, forwarded, leader) {
            if s.raft.leader_id != f.member_id {
                let req = request.into_inner();
                let call = |ch, r| async move { ClusterClient::new(ch).member_list(r).await };
                if let Ok(r) = f.forwarder.forward(addr, req, f.timeout, call).await {
                    return Ok(Response::new(r));
                }
            }
        }
        let members = s
            .members
            .into_iter()
            .map(|(id, peer_addr, client_addr)| Member {
                id,
                name: member_name(id),
                peer_ur_ls: vec![format!("http://{peer_addr}")],
                // `host:port`, without etcd's `http://`: etcdctl 3.4 dials each listed URL for
                // `endpoint status --cluster` and sends it whole as the HTTP/2 `:authority`,
                // which etcd's Go server takes but the Rust HTTP/2 server refuses as malformed
                // (h2 issue 525). etcd's clients all take an endpoint without a scheme.
                client_ur_ls: client_addr.map(|a| vec![a]).unwrap_or_default(),
                is_learner: false,
            })
            .collect();
        Ok(Response::new(MemberListResponse {
            header: f.header(0, s.raft.term),
            members,
        }))
    }
}
