//! The RaftActor alone: election, proposals, read index, status, bad peer messages. What it
//! sends the StorageActor, the PeerActors and the ClientApiActor goes to recorders.

use ::raft::prelude::Entry;

use distributed_kv::proto::raftpb::{log_command::Op, LogCommand, SetOp};
use distributed_kv::state_machine::encode_command;

use super::*;

/// A single-node RaftActor under test and the channels of its recorders.
struct SingleRaft {
    /// The actor.
    addr: Addr<RaftActor>,
    /// What it sent to the StorageActor.
    applies: mpsc::Receiver<Apply>,
    /// What it sent as role changes.
    roles: mpsc::Receiver<RoleChanged>,
    /// Kept so the log outlives the actor.
    _dir: TempDir,
}

/// Starts the RaftActor of a one-voter cluster {1}, with recorders for `Apply` and
/// `RoleChanged` and no peers.
fn start_single_raft() -> SingleRaft {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = raft_node(&dir, &[1], FAST_ELECTION_TICKS);
    let (apply_to, applies) = recorder::<Apply>();
    let (role_to, roles) = recorder::<RoleChanged>();
    let addr = RaftActor::new(
        node,
        FAST_TICK,
        OWN_CLIENT_ADDR.into(),
        members(&[1]),
        apply_to,
        HashMap::new(),
        vec![role_to],
    )
    .start();
    SingleRaft {
        addr,
        applies,
        roles,
        _dir: dir,
    }
}

/// Waits until a recorded `Apply` carries the entry at `index`; returns that entry.
async fn until_applied(applies: &mut mpsc::Receiver<Apply>, index: u64) -> Entry {
    loop {
        let a = next(applies, &format!("an Apply with entry {index}")).await;
        if let Some(e) = a.entries.into_iter().find(|e| e.index == index) {
            return e;
        }
    }
}

/// Asks a RaftActor for a read index and waits for the answer.
async fn read_index(raft: &Addr<RaftActor>) -> distributed_kv::Result<u64> {
    let (reply, rx) = oneshot::channel();
    ask(raft, read_index_request(reply)).await;
    answer(rx, "ReadIndex").await
}

/// Steps `msg` into a RaftActor as if the peer service had received it.
fn step(raft: &Addr<RaftActor>, msg: RaftMessage) {
    raft.do_send(StepMessage {
        msg,
        from_client_addr: String::new(),
        slot: None,
    });
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// A one-voter RaftActor elects itself, accepts a proposal, and sends the committed entry to
/// the StorageActor.
#[actix_rt::test]
async fn raft_single_node_elects_itself_and_applies_proposals() {
    let mut r = start_single_raft();
    let role = until_leader(&mut r.roles).await;
    assert_eq!(role.change.leader_id, 1);
    assert_eq!(role.leader_client_addr.as_deref(), Some(OWN_CLIENT_ADDR));

    // The new leader's empty entry comes first.
    let noop = until_applied(&mut r.applies, 1).await;
    assert!(noop.data.is_empty());

    let data = encode_command(&LogCommand {
        origin_node: 1,
        origin_seq: 42,
        op: Some(Op::Set(SetOp {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        })),
    });
    let LogId { index, term } = ask(&r.addr, Propose { data: data.clone() })
        .await
        .expect("propose");
    assert_eq!((index, term), (2, role.change.term));
    let entry = until_applied(&mut r.applies, index).await;
    assert_eq!((entry.index, entry.term), (index, term));
    assert_eq!(entry.data.as_ref(), data.as_slice());

    let LogId { index: i2, .. } = ask(
        &r.addr,
        Propose {
            data: b"x".to_vec(),
        },
    )
    .await
    .expect("second propose");
    assert_eq!(i2, index + 1, "indexes are consecutive");
    assert_eq!(until_applied(&mut r.applies, i2).await.data.as_ref(), b"x");
}

/// ReadIndex and GetRaftStatus of a one-voter leader; ApplyProgress moves the applied index.
#[actix_rt::test]
async fn raft_read_index_and_status() {
    let mut r = start_single_raft();
    let role = until_leader(&mut r.roles).await;
    let LogId { index, .. } = ask(
        &r.addr,
        Propose {
            data: b"p".to_vec(),
        },
    )
    .await
    .expect("propose");
    until_applied(&mut r.applies, index).await;

    let ri = read_index(&r.addr).await.expect("read index");
    assert!(
        ri >= index,
        "read index {ri} is below the committed proposal {index}"
    );

    ask(&r.addr, ApplyProgress { index }).await;
    let status = ask(&r.addr, GetRaftStatus).await;
    assert_eq!(status.raft.role, ::raft::StateRole::Leader);
    assert_eq!(status.raft.id, 1);
    assert_eq!(status.raft.leader_id, 1);
    assert_eq!(status.raft.term, role.change.term);
    assert!(status.raft.commit_index >= index);
    assert_eq!(status.raft.applied_index, index);
    assert_eq!(status.raft.voters, vec![1]);
    assert_eq!(status.leader_client_addr.as_deref(), Some(OWN_CLIENT_ADDR));
    assert_eq!(
        status.members,
        vec![(
            1,
            OWN_PEER_ADDR.to_string(),
            Some(OWN_CLIENT_ADDR.to_string())
        )]
    );
}

/// Messages raft-rs refuses (local-only types, responses from unknown peers) or answers to a
/// peer that does not exist are dropped without harming the actor.
#[actix_rt::test]
async fn raft_survives_bad_peer_messages() {
    let mut r = start_single_raft();
    let role = until_leader(&mut r.roles).await;
    let term = role.change.term;

    // Local-only message types: raft-rs refuses them from the network.
    step(&r.addr, raft_msg(MessageType::MsgHup, 1, 0));
    step(&r.addr, raft_msg(MessageType::MsgBeat, 2, term));
    step(&r.addr, raft_msg(MessageType::MsgCheckQuorum, 99, term));
    // Responses from a node that is not a member.
    let mut resp = raft_msg(MessageType::MsgAppendResponse, 99, term);
    resp.index = 1_000;
    step(&r.addr, resp);
    step(
        &r.addr,
        raft_msg(MessageType::MsgHeartbeatResponse, 99, term),
    );
    // A pre-vote request from a non-member, which the leader refuses in a message to a peer
    // it has no outbox for.
    step(&r.addr, raft_msg(MessageType::MsgRequestPreVote, 99, term));
    // A message with a remembered client address for a non-member.
    r.addr.do_send(StepMessage {
        msg: raft_msg(MessageType::MsgHeartbeatResponse, 98, term),
        from_client_addr: "127.0.0.1:9898".into(),
        slot: None,
    });

    let status = ask(&r.addr, GetRaftStatus).await;
    assert_eq!(status.raft.role, ::raft::StateRole::Leader);
    assert_eq!((status.raft.leader_id, status.raft.term), (1, term));
    assert_eq!(status.members.len(), 1, "a message does not make a member");
    // And it still works.
    let LogId { index, .. } = ask(
        &r.addr,
        Propose {
            data: b"ok".to_vec(),
        },
    )
    .await
    .expect("propose after bad messages");
    until_applied(&mut r.applies, index).await;
}

/// A newly elected leader of a three-voter cluster that receives a ReadIndex before its
/// empty entry is committed must still answer it (with an index, or a retryable error)
/// instead of dropping it. The test plays peer 2 by hand: it grants the vote, acknowledges
/// the leader's entry and answers heartbeats until the ReadIndex is answered.
#[actix_rt::test]
async fn raft_new_leader_answers_read_index_sent_before_first_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (raft, mut sent) = start_follower_raft(&dir);
    // Peer 2, as leader of term 1, asks node 1 to take over at once (leadership transfer: no
    // pre-vote, no wait).
    step(&raft, raft_msg(MessageType::MsgTimeoutNow, 2, 1));
    let vote = loop {
        let m = next(&mut sent, "a vote request").await.msg;
        if m.get_msg_type() == MessageType::MsgRequestVote && m.to == 2 {
            break m;
        }
    };
    step(
        &raft,
        raft_msg(MessageType::MsgRequestVoteResponse, 2, vote.term),
    );
    let leader_term = loop {
        let status = ask(&raft, GetRaftStatus).await;
        if status.raft.role == ::raft::StateRole::Leader {
            break status.raft.term;
        }
        // Not yet: wait for the next thing it sends (its Ready has not run).
        next(&mut sent, "the new leader's first messages").await;
    };

    // The leader's empty entry is not committed yet: nobody has acknowledged it.
    let (reply, mut first) = oneshot::channel();
    ask(&raft, read_index_request(reply)).await;

    // Peer 2 acknowledges the leader's entry, which commits it.
    let entry_index = ask(&raft, GetRaftStatus).await.raft.last_index;
    let mut ack = raft_msg(MessageType::MsgAppendResponse, 2, leader_term);
    ack.index = entry_index;
    step(&raft, ack);
    while ask(&raft, GetRaftStatus).await.raft.commit_index < entry_index {
        next(&mut sent, "the leader's commit").await;
    }
    // A control: a ReadIndex sent after the first commit.
    let (reply, mut second) = oneshot::channel();
    ask(&raft, read_index_request(reply)).await;

    // Peer 2 answers heartbeats (which carry the read contexts) until both are answered.
    let (mut first_answer, mut second_answer) = (None, None);
    let _ = timeout(EVENT_TIMEOUT, async {
        while first_answer.is_none() || second_answer.is_none() {
            tokio::select! {
                r = &mut first, if first_answer.is_none() => {
                    first_answer = Some(r.expect("first ReadIndex reply dropped"));
                }
                r = &mut second, if second_answer.is_none() => {
                    second_answer = Some(r.expect("second ReadIndex reply dropped"));
                }
                m = sent.recv() => {
                    let m = m.expect("peer recorder stopped").msg;
                    if m.get_msg_type() == MessageType::MsgHeartbeat && m.to == 2 {
                        let mut hb = raft_msg(MessageType::MsgHeartbeatResponse, 2, m.term);
                        hb.context = m.context.clone();
                        step(&raft, hb);
                    }
                }
            }
        }
    })
    .await;
    match second_answer
        .expect("test harness: a ReadIndex after the first commit was never answered")
    {
        Ok(index) => assert!(index >= entry_index, "read index {index} < {entry_index}"),
        Err(e) => panic!("a ReadIndex on a committed leader failed: {e}"),
    }
    match first_answer.expect("the ReadIndex sent before the first commit was never answered") {
        Ok(index) => assert!(index >= entry_index, "read index {index} < {entry_index}"),
        Err(e) => assert_eq!(
            tonic::Status::from(e).code(),
            tonic::Code::Unavailable,
            "a refused ReadIndex must be retryable"
        ),
    }
}

/// A ReadIndex as the ClientApiActor sends it (a follower may ask its leader).
fn read_index_request(reply: oneshot::Sender<distributed_kv::Result<u64>>) -> ReadIndex {
    ReadIndex {
        reply,
        leader_only: false,
    }
}
