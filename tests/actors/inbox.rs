//! The peer inbox budget (`src/actors/inbox.rs`): peer messages reach a RaftActor through the
//! real peer service (`RaftService`) however full client load has made its mailbox.

use super::*;

/// Proposals flooding the RaftActor's mailbox past its capacity in the peer-inbox test.
const FLOOD_PROPOSALS: usize = distributed_kv::actors::raft::RAFT_MAILBOX_CAPACITY + 1_000;

/// A mailbox that client requests have filled past its capacity still takes a peer's message:
/// peer messages have their own budget, so client load cannot crowd out heartbeats (before, the
/// peer service's `try_send` dropped them exactly then).
#[actix_rt::test]
async fn raft_a_mailbox_full_of_proposals_still_takes_a_peer_heartbeat() {
    use distributed_kv::grpc::RaftService;
    use distributed_kv::proto::raftpb::raft_transport_server::RaftTransport;
    use distributed_kv::proto::raftpb::RaftBatch;
    use protobuf::Message as _;

    let dir = tempfile::tempdir().unwrap();
    let (raft, _sent) = start_follower_raft(&dir);
    // The actor runs on this thread, so nothing is handled until the test awaits: these all
    // wait in its mailbox, past its capacity.
    for _ in 0..FLOOD_PROPOSALS {
        raft.do_send(Propose { data: Vec::new() });
    }
    let service = RaftService::new(1, raft.clone());
    // Heartbeats of two terms, one batch each: actix lets one message past a full mailbox and
    // then refuses a plain `try_send`, so the second is the one that would have been lost.
    for term in [7, 8] {
        let mut hb = raft_msg(MessageType::MsgHeartbeat, 2, term);
        hb.commit = 0;
        let batch = RaftBatch {
            from: 2,
            from_client_addr: String::new(),
            messages: vec![hb.write_to_bytes().unwrap()],
        };
        service
            .send(tonic::Request::new(batch))
            .await
            .expect("the peer service takes the batch");
    }
    let status = ask(&raft, GetRaftStatus).await;
    assert_eq!(
        (status.raft.term, status.raft.leader_id),
        (8, 2),
        "both heartbeats from node 2 were stepped"
    );
}
