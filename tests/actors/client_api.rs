//! The ClientApiActor: validation, leader hints and overload alone over a fake storage; and
//! writes and reads through real RaftActors and StorageActors wired as a node wires them.

use distributed_kv::consensus::RoleChange;
use distributed_kv::error::{LEADER_ADDR_METADATA, LEADER_ID_METADATA};

use super::*;

/// Records `RoleChanged` after passing a copy on to `to`, so once the test has received a
/// role from the channel, `to` already has it in its mailbox.
struct RoleTee {
    /// The real receiver of role changes.
    to: Recipient<RoleChanged>,
    /// Where received role changes go.
    tx: mpsc::Sender<RoleChanged>,
}

impl Actor for RoleTee {
    type Context = Context<Self>;
}

impl Handler<RoleChanged> for RoleTee {
    type Result = ();
    fn handle(&mut self, msg: RoleChanged, _: &mut Context<Self>) {
        self.to.do_send(RoleChanged {
            change: msg.change.clone(),
            leader_client_addr: msg.leader_client_addr.clone(),
            handed_over: msg.handed_over,
        });
        record(&self.tx, msg);
    }
}

/// A stand-in for the StorageActor behind a ClientApiActor: records each `Read` (min index
/// and query) and answers it with "no value" at applied index 0.
struct FakeStorage {
    /// Where the received reads go.
    tx: mpsc::Sender<(u64, ReadQuery)>,
}

impl Actor for FakeStorage {
    type Context = Context<Self>;
}

impl Handler<Read> for FakeStorage {
    type Result = ();
    fn handle(&mut self, msg: Read, _: &mut Context<Self>) {
        let _ = msg.reply.send(Ok(ReadAnswer {
            result: ReadResult::Value(None),
            applied_index: 0,
            term: 0,
        }));
        record(&self.tx, (msg.min_index, msg.query));
    }
}

impl Handler<GetStorageStatus> for FakeStorage {
    type Result = MessageResult<GetStorageStatus>;
    fn handle(&mut self, _: GetStorageStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(StorageStatus::default())
    }
}

/// Sends a client write and waits for its outcome.
async fn client_write(
    api: &Addr<ClientApiActor>,
    op: WriteOp,
) -> distributed_kv::Result<WriteResult> {
    let (reply, rx) = oneshot::channel();
    api.do_send(ClientWrite {
        op,
        api: Api::KvV1,
        reply,
    });
    answer(rx, "a ClientWrite").await
}

/// Sends a client read and waits for its answer.
async fn client_read(
    api: &Addr<ClientApiActor>,
    query: ReadQuery,
    serializable: bool,
) -> distributed_kv::Result<ReadAnswer> {
    let (reply, rx) = oneshot::channel();
    api.do_send(ClientRead {
        query,
        serializable,
        api: Api::KvV1,
        reply,
    });
    answer(rx, "a ClientRead").await
}

/// A Set write.
fn set_op(key: &[u8], value: &[u8]) -> WriteOp {
    WriteOp::set(key, value)
}

/// Asserts `r` is `Error::InvalidArgument` whose message contains `limit`, and that it becomes
/// `INVALID_ARGUMENT` over gRPC. `what` names the case in failure messages.
fn assert_invalid<T: std::fmt::Debug>(r: distributed_kv::Result<T>, limit: &str, what: &str) {
    match r {
        Err(Error::InvalidArgument(msg)) => {
            assert!(msg.contains(limit), "{what}: `{msg}` does not name {limit}");
            let status = tonic::Status::from(Error::InvalidArgument(msg));
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}");
        }
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

/// Starts a [`FakeStorage`]: where a ClientApiActor sends its reads and status questions, and
/// the channel of the reads it received.
fn fake_storage() -> (
    Recipient<Read>,
    Recipient<GetStorageStatus>,
    mpsc::Receiver<(u64, ReadQuery)>,
) {
    let (tx, reads) = mpsc::channel(RECORDER_CAPACITY);
    let storage = FakeStorage { tx }.start();
    (storage.clone().recipient(), storage.recipient(), reads)
}

/// A ClientApiActor of node 1 over a [`FakeStorage`], not connected to any RaftActor; and the
/// channel of the reads the fake storage received.
fn start_client_api() -> (Addr<ClientApiActor>, mpsc::Receiver<(u64, ReadQuery)>) {
    let (read, status, reads) = fake_storage();
    (
        ClientApiActor::new(1, limits(), read, status).start(),
        reads,
    )
}

/// `wiring` with a [`FakeStorage`] in the StorageActor's place behind the ClientApiActor; and
/// the channel of the reads the fake storage received.
fn with_fake_storage(wiring: Wiring) -> (Wiring, mpsc::Receiver<(u64, ReadQuery)>) {
    let (read, status, reads) = fake_storage();
    (wiring.with_reads_from(read, status), reads)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Invalid keys and values are refused with INVALID_ARGUMENT naming the limit; inputs exactly
/// at the limits pass validation (and then fail only because no RaftActor is connected).
#[actix_rt::test]
async fn client_api_validates_keys_and_values() {
    let (api, mut reads) = start_client_api();
    let max_key = vec![b'k'; MAX_KEY_BYTES];
    let long_key = vec![b'k'; MAX_KEY_BYTES + 1];
    let max_value = vec![b'v'; MAX_VALUE_BYTES];
    let long_value = vec![b'v'; MAX_VALUE_BYTES + 1];

    assert_invalid(
        client_write(&api, set_op(b"", b"v")).await,
        "empty",
        "empty key",
    );
    assert_invalid(
        client_write(&api, WriteOp::delete(vec![])).await,
        "empty",
        "empty key in a delete",
    );
    assert_invalid(
        client_write(&api, set_op(&long_key, b"v")).await,
        "max_key_bytes",
        "long key",
    );
    assert_invalid(
        client_write(&api, WriteOp::delete(long_key.clone())).await,
        "max_key_bytes",
        "long key in a delete",
    );
    assert_invalid(
        client_write(&api, set_op(b"k", &long_value)).await,
        "max_value_bytes",
        "long value",
    );
    assert_invalid(
        client_read(&api, ReadQuery::Get { key: vec![] }, true).await,
        "empty",
        "empty key in a read",
    );
    assert_invalid(
        client_read(
            &api,
            ReadQuery::Get {
                key: long_key.clone(),
            },
            true,
        )
        .await,
        "max_key_bytes",
        "long key in a read",
    );
    assert_invalid(
        client_read(
            &api,
            ReadQuery::List {
                prefix: long_key.clone(),
                start: vec![],
                limit: 1,
                max_bytes: 0,
                keys_only: false,
            },
            true,
        )
        .await,
        "max_key_bytes",
        "long prefix in a list",
    );

    // Exactly at the limits: valid, refused only for want of a RaftActor.
    match client_write(&api, set_op(&max_key, &max_value)).await {
        Err(e @ Error::ShuttingDown(_)) => {
            assert_eq!(tonic::Status::from(e).code(), tonic::Code::Unavailable)
        }
        other => panic!("a write at the limits: expected ShuttingDown, got {other:?}"),
    }
    // No invalid read reached the storage; a valid serializable one does, with the List
    // limit clamped to max_list_limit and its byte bound to max_list_bytes.
    assert!(reads.try_recv().is_err(), "an invalid read reached storage");
    for (asked_bytes, forwarded_bytes) in [
        (0, MAX_LIST_BYTES),
        (MAX_LIST_BYTES + 1, MAX_LIST_BYTES),
        (usize::MAX, MAX_LIST_BYTES),
        (100, 100),
    ] {
        client_read(
            &api,
            ReadQuery::List {
                prefix: max_key.clone(),
                start: vec![],
                limit: 0,
                max_bytes: asked_bytes,
                keys_only: false,
            },
            true,
        )
        .await
        .expect("serializable list");
        let (min_index, query) = next(&mut reads, "the forwarded List").await;
        assert_eq!(min_index, 0);
        assert_eq!(
            query,
            ReadQuery::List {
                prefix: max_key.clone(),
                start: vec![],
                limit: MAX_LIST_LIMIT,
                max_bytes: forwarded_bytes,
                keys_only: false,
            },
            "a List asking for {asked_bytes} bytes"
        );
    }
}

/// A follower refuses writes and linearizable reads with NOT_LEADER naming the leader from
/// the last RoleChanged, mapped to UNAVAILABLE with the leader in the metadata.
#[actix_rt::test]
async fn client_api_not_leader_carries_leader_hint() {
    const LEADER_ADDR: &str = "127.0.0.1:7002";
    let dir = tempfile::tempdir().unwrap();
    // Node 1 of three, a follower that never campaigns; the test tells the ClientApiActor
    // about roles by hand.
    let (wiring, mut reads) = with_fake_storage(fresh_wiring(
        &dir,
        &[1, 2, 3],
        SLOW_TICK,
        SLOW_ELECTION_TICKS,
    ));
    let (peers_to, _sent) = recorder::<SendToPeer>();
    let Actors {
        client_api: api,
        raft,
        ..
    } = wiring
        .with_peers_to(peers_to)
        .with_roles_to(None)
        .start()
        .expect("the actors start");
    api.do_send(RoleChanged {
        change: RoleChange {
            role: ::raft::StateRole::Follower,
            leader_id: 2,
            term: 3,
        },
        leader_client_addr: Some(LEADER_ADDR.into()),
        handed_over: false,
    });

    let err = client_write(&api, set_op(b"k", b"v")).await.unwrap_err();
    match &err {
        Error::NotLeader {
            leader_id,
            leader_addr,
        } => {
            assert_eq!(*leader_id, Some(2));
            assert_eq!(leader_addr.as_deref(), Some(LEADER_ADDR));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let md = status.metadata();
    assert_eq!(
        md.get(LEADER_ADDR_METADATA).and_then(|v| v.to_str().ok()),
        Some(LEADER_ADDR)
    );
    assert_eq!(
        md.get("x-leader-addr").unwrap().to_str().unwrap(),
        LEADER_ADDR
    );
    assert_eq!(
        md.get(LEADER_ID_METADATA).and_then(|v| v.to_str().ok()),
        Some("2")
    );

    match client_read(&api, get("k"), false).await {
        Err(Error::NotLeader {
            leader_id: Some(2),
            leader_addr: Some(addr),
        }) => assert_eq!(addr, LEADER_ADDR),
        other => panic!("linearizable read on a follower: {other:?}"),
    }
    assert!(reads.try_recv().is_err(), "a refused read reached storage");
    // A serializable read is served locally.
    client_read(&api, get("k"), true)
        .await
        .expect("serializable read on a follower");
    assert_eq!(
        next(&mut reads, "the serializable read").await,
        (0, get("k"))
    );

    // With no leader known, the error says so and carries no hint.
    api.do_send(RoleChanged {
        change: RoleChange {
            role: ::raft::StateRole::Candidate,
            leader_id: 0,
            term: 4,
        },
        leader_client_addr: None,
        handed_over: false,
    });
    let err = client_write(&api, set_op(b"k", b"v")).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotLeader {
                leader_id: None,
                leader_addr: None
            }
        ),
        "{err:?}"
    );
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.metadata().get(LEADER_ADDR_METADATA).is_none());

    // The RaftActor itself agrees it is not the leader.
    let refused = ask(
        &raft,
        Propose {
            data: b"x".to_vec(),
        },
    )
    .await;
    assert!(
        matches!(refused, Err(Error::NotLeader { .. })),
        "{refused:?}"
    );
}

/// A single node wired as `src/node.rs` wires it: a write completes with its index, a
/// linearizable read sees it, and deletes report whether the key existed.
#[actix_rt::test]
async fn client_api_with_real_raft_and_storage_writes_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let wiring = fresh_wiring(&dir, &[1], FAST_TICK, FAST_ELECTION_TICKS);
    // Role changes pass through a tee on their way to the ClientApiActor, so the test knows
    // when it has been told it leads.
    let (tx, mut roles) = mpsc::channel(RECORDER_CAPACITY);
    let tee = RoleTee {
        to: wiring.client_api().recipient(),
        tx,
    }
    .start();
    let Actors {
        client_api: api,
        raft,
        ..
    } = wiring
        .with_roles_to(Some(tee.recipient()))
        .start()
        .expect("the actors start");
    until_leader(&mut roles).await;

    let w = client_write(&api, set_op(b"k", b"v1"))
        .await
        .expect("write");
    assert!(
        w.index >= 2,
        "index {} is not after the leader's entry",
        w.index
    );
    assert!(w.deleted() == 0);

    let r = client_read(&api, get("k"), false).await.expect("read");
    let ReadResult::Value(Some(kv)) = r.result else {
        panic!("no value read: {:?}", r.result);
    };
    assert_eq!(kv.value, b"v1");
    assert!(r.applied_index >= w.index);

    let d1 = client_write(&api, WriteOp::delete(b"k".to_vec()))
        .await
        .expect("first delete");
    assert!(d1.deleted() == 1, "the key was there");
    assert!(d1.index > w.index);
    let d2 = client_write(&api, WriteOp::delete(b"k".to_vec()))
        .await
        .expect("second delete");
    assert!(d2.deleted() == 0, "the key was already gone");
    assert_eq!(d2.index, d1.index + 1);

    let r = client_read(&api, get("k"), false).await.expect("read");
    assert_eq!(r.result, ReadResult::Value(None));

    // The status combines Raft's view and the state machine's.
    let (reply, rx) = oneshot::channel();
    api.do_send(ClientStatus { reply });
    let status = answer(rx, "ClientStatus").await.expect("status");
    assert_eq!(status.raft.role, ::raft::StateRole::Leader);
    assert!(status.applied_index >= d2.index);
    assert_eq!(status.key_count, 0);

    // Raft learned the applied index from the StorageActor (ApplyProgress, wired by
    // Connect). The StorageActor sent it before it answered the status above, so it is already
    // in the RaftActor's mailbox, ahead of this request.
    let raft_status = ask(&raft, GetRaftStatus).await;
    assert!(
        raft_status.raft.applied_index >= d2.index,
        "RaftActor's applied index {} is behind {}",
        raft_status.raft.applied_index,
        d2.index
    );
}

/// Writes beyond `max_pending` are refused at once with RESOURCE_EXHAUSTED; when the node then
/// loses leadership, every pending write fails with "outcome unknown" (gRPC UNKNOWN), never
/// silently and never as done.
#[actix_rt::test]
async fn client_api_refuses_overload_and_fails_pending_writes_on_lost_leadership() {
    let dir = tempfile::tempdir().unwrap();
    let (wiring, _reads) =
        with_fake_storage(fresh_wiring(&dir, &[1], FAST_TICK, FAST_ELECTION_TICKS));
    let (apply_to, _applies) = recorder::<Apply>();
    let (roles_to, mut roles) = recorder::<RoleChanged>();
    let api = wiring
        .with_apply_to(apply_to)
        .with_roles_to(Some(roles_to))
        .start()
        .expect("the actors start")
        .client_api;
    // The RaftActor leads; the test tells the ClientApiActor so by hand.
    until_leader(&mut roles).await;
    let leader = |role, leader_id| RoleChanged {
        change: RoleChange {
            role,
            leader_id,
            term: 1,
        },
        leader_client_addr: None,
        handed_over: false,
    };
    api.do_send(leader(::raft::StateRole::Leader, 1));

    // The RaftActor commits these, but nothing applies them (its Apply goes to a recorder), so
    // they stay pending.
    let mut pending = Vec::new();
    for n in 0..MAX_PENDING {
        let (reply, rx) = oneshot::channel();
        let op = set_op(format!("k{n}").as_bytes(), b"v");
        api.do_send(ClientWrite {
            op,
            api: Api::KvV1,
            reply,
        });
        pending.push(rx);
    }
    let over = client_write(&api, set_op(b"one-too-many", b"v")).await;
    match over {
        Err(e @ Error::Overloaded(_)) => {
            assert_eq!(
                tonic::Status::from(e).code(),
                tonic::Code::ResourceExhausted
            )
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }

    api.do_send(leader(::raft::StateRole::Follower, 2));
    for rx in pending {
        match answer(rx, "a pending write").await {
            Err(e @ Error::OutcomeUnknown(_)) => {
                assert_eq!(tonic::Status::from(e).code(), tonic::Code::Unknown)
            }
            other => panic!("expected OutcomeUnknown, got {other:?}"),
        }
    }
}
