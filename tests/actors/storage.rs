//! The StorageActor alone: applying, parked reads, snapshots, lists. What it sends the
//! ClientApiActor and the RaftActor goes to recorders.

use ::raft::prelude::{ConfState, Entry};

use distributed_kv::proto::raftpb::{log_command::Op, DeleteOp, LogCommand, SetOp};
use distributed_kv::state_machine::{encode_command, list_answer_bytes};
use distributed_kv::state_machine::{CommandOutcome, ListPage, StateMachine, WriteResponse};
use etcd_api::etcdserverpb::{DeleteRangeResponse, PutResponse, ResponseHeader};

use super::*;

/// A log entry at `index` (term 1) carrying `op`, tagged with origin (node 1, seq `index`),
/// as the ClientApiActor of node 1 would propose it.
fn command(index: u64, op: Op) -> Entry {
    let cmd = LogCommand {
        origin_node: 1,
        origin_seq: index,
        op: Some(op),
    };
    Entry {
        index,
        term: 1,
        data: encode_command(&cmd).into(),
        ..Default::default()
    }
}

/// A Set entry; see [`command`].
fn set(index: u64, key: &str, value: &str) -> Entry {
    command(
        index,
        Op::Set(SetOp {
            key: key.into(),
            value: value.into(),
        }),
    )
}

/// A Delete entry; see [`command`].
fn del(index: u64, key: &str) -> Entry {
    command(index, Op::Delete(DeleteOp { key: key.into() }))
}

/// A configuration with these voters.
/// The value a Get answered.
fn value_of(result: ReadResult) -> Option<Vec<u8>> {
    match result {
        ReadResult::Value(kv) => kv.map(|kv| kv.value),
        other => panic!("not a Get answer: {other:?}"),
    }
}

/// The outcome of a DeleteRange that removed `n` keys.
/// The store's revision in an answer's header.
fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// A DeleteRange of `n` keys that left the store at `revision`.
fn deleted(n: i64, revision: i64) -> CommandOutcome {
    CommandOutcome::Done(WriteResponse::DeleteRange(DeleteRangeResponse {
        header: header(revision),
        deleted: n,
        ..Default::default()
    }))
}

/// A Put at `revision`.
fn put_at(revision: i64) -> CommandOutcome {
    CommandOutcome::Done(WriteResponse::Put(PutResponse {
        header: header(revision),
        prev_kv: None,
    }))
}

fn voters(ids: &[u64]) -> ConfState {
    ConfState {
        voters: ids.to_vec(),
        ..Default::default()
    }
}

/// An `Apply` of `entries` with no snapshot, in a one-voter configuration.
fn apply(entries: Vec<Entry>) -> Apply {
    Apply {
        snapshot: None,
        entries,
        conf_state: voters(&[1]),
    }
}

/// A StorageActor under test, its data dir, and the channels of its recorders.
struct StorageUnderTest {
    /// The actor.
    addr: Addr<StorageActor>,
    /// The snapshot store it writes to.
    snapshots: SnapshotStore,
    /// What it sent as `Applied`.
    applied: mpsc::Receiver<Applied>,
    /// What it sent as `ApplyProgress`.
    progress: mpsc::Receiver<ApplyProgress>,
    /// What it sent as `SnapshotCreated`.
    created: mpsc::Receiver<SnapshotCreated>,
    /// Kept so the data outlives the actor.
    _dir: TempDir,
}

/// Opens a fresh state machine in a temporary directory and starts a StorageActor over it
/// (on one sync thread, by `wiring::start_storage` as a node does), with recorders for
/// everything it sends on.
fn start_storage(snapshot_threshold: u64) -> StorageUnderTest {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = StateMachine::open(&dir.path().join("db")).expect("state machine");
    let snapshots = SnapshotStore::open(dir.path()).expect("snapshot store");
    let (applied_to, applied) = recorder::<Applied>();
    let (progress_to, progress) = recorder::<ApplyProgress>();
    let (created_to, created) = recorder::<SnapshotCreated>();
    let addr = wiring::start_storage(
        StorageActor::new(sm, snapshots.clone(), snapshot_threshold, Some(applied_to))
            .with_raft(progress_to, created_to),
    );
    StorageUnderTest {
        addr,
        snapshots,
        applied,
        progress,
        created,
        _dir: dir,
    }
}

/// Sends a `Read` and returns the receiver of its answer without waiting for it.
fn send_read(
    addr: &Addr<StorageActor>,
    min_index: u64,
    query: ReadQuery,
) -> oneshot::Receiver<distributed_kv::Result<ReadAnswer>> {
    let (reply, rx) = oneshot::channel();
    addr.do_send(Read {
        min_index,
        query,
        reply,
    });
    rx
}

/// Reads through the StorageActor and waits for the answer, which must be a success.
async fn read(addr: &Addr<StorageActor>, min_index: u64, query: ReadQuery) -> ReadAnswer {
    answer(send_read(addr, min_index, query), "a Read")
        .await
        .expect("read failed")
}

/// The value of `key` in a StorageActor, read without waiting for any index.
async fn value(addr: &Addr<StorageActor>, key: &str) -> Option<Vec<u8>> {
    match read(addr, 0, get(key)).await.result {
        ReadResult::Value(v) => v.map(|kv| kv.value),
        other => panic!("Get answered {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Applying a batch reports each entry's outcome and origin to the ClientApiActor, the applied
/// index to the RaftActor, and makes the data readable.
#[actix_rt::test]
async fn storage_applies_batch_and_reports_outcomes_and_progress() {
    let mut s = start_storage(NO_SNAPSHOTS);
    let noop = Entry {
        index: 1,
        term: 1,
        ..Default::default()
    };
    s.addr.do_send(apply(vec![
        noop,
        set(2, "a", "1"),
        set(3, "b", "2"),
        del(4, "b"),
        del(5, "missing"),
        set(6, "a", "3"),
    ]));

    let applied = next(&mut s.applied, "Applied").await;
    assert_eq!(applied.applied_index, 6);
    let summary: Vec<_> = applied
        .entries
        .iter()
        .map(|e| {
            (
                e.index,
                e.term,
                e.origin.map(|t| (t.node, t.seq)),
                e.outcome.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, 1, None, CommandOutcome::Noop),
            (2, 1, Some((1, 2)), put_at(2)),
            (3, 1, Some((1, 3)), put_at(3)),
            (4, 1, Some((1, 4)), deleted(1, 4)),
            (5, 1, Some((1, 5)), deleted(0, 4)),
            (6, 1, Some((1, 6)), put_at(5)),
        ]
    );
    assert_eq!(next(&mut s.progress, "ApplyProgress").await.index, 6);

    let a = read(&s.addr, 0, get("a")).await;
    assert_eq!(value_of(a.result), Some(b"3".to_vec()));
    assert_eq!(a.applied_index, 6);
    assert_eq!(value(&s.addr, "b").await, None, "b was deleted");
    let status = ask(&s.addr, GetStorageStatus).await;
    assert_eq!((status.applied_index, status.key_count), (6, 1));

    // Re-sending entries already applied (as after a restart) changes nothing and reports
    // no outcomes for them.
    s.addr
        .do_send(apply(vec![set(6, "a", "stale"), set(7, "c", "4")]));
    let again = next(&mut s.applied, "Applied after a partial resend").await;
    assert_eq!(again.applied_index, 7);
    assert_eq!(
        again.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![7]
    );
    assert_eq!(value(&s.addr, "a").await, Some(b"3".to_vec()));
}

/// A read whose read index is ahead of the state machine waits until an Apply reaches it,
/// and each parked read is woken exactly when its own index is applied.
#[actix_rt::test]
async fn storage_parks_reads_until_their_index_is_applied() {
    let mut s = start_storage(NO_SNAPSHOTS);
    s.addr.do_send(apply(vec![
        set(1, "k", "v1"),
        set(2, "x", "1"),
        set(3, "x", "2"),
    ]));
    assert_eq!(next(&mut s.progress, "ApplyProgress").await.index, 3);

    let mut at_4 = send_read(&s.addr, 4, get("k"));
    let mut at_6 = send_read(&s.addr, 6, get("k"));
    // A round-trip through the same (ordered) mailbox: both reads have been handled.
    assert_eq!(ask(&s.addr, GetStorageStatus).await.applied_index, 3);
    assert!(
        at_4.try_recv().is_err(),
        "a read at index 4 was answered at applied index 3"
    );

    s.addr
        .do_send(apply(vec![set(4, "k", "v4"), set(5, "k", "v5")]));
    let a = answer(at_4, "the read parked at 4")
        .await
        .expect("parked read");
    assert_eq!(a.applied_index, 5);
    assert_eq!(
        value_of(a.result),
        Some(b"v5".to_vec()),
        "the answer reflects everything applied when it was woken"
    );
    assert_eq!(ask(&s.addr, GetStorageStatus).await.applied_index, 5);
    assert!(
        at_6.try_recv().is_err(),
        "a read at index 6 was answered at applied index 5"
    );

    s.addr.do_send(apply(vec![del(6, "k")]));
    let a = answer(at_6, "the read parked at 6")
        .await
        .expect("parked read");
    assert_eq!((a.result, a.applied_index), (ReadResult::Value(None), 6));
}

/// Past the snapshot threshold the StorageActor stores a snapshot and tells the RaftActor;
/// a second StorageActor given that snapshot in an Apply restores the same state.
#[actix_rt::test]
async fn storage_snapshots_past_threshold_and_another_restores_it() {
    const THRESHOLD: u64 = 3;
    let mut s = start_storage(THRESHOLD);
    s.addr
        .do_send(apply(vec![set(1, "a", "1"), set(2, "b", "2")]));
    // A round-trip through the mailbox: the Apply, snapshot decision included, is done.
    let status = ask(&s.addr, GetStorageStatus).await;
    assert_eq!((status.applied_index, status.snapshot_index), (2, 0));
    assert_eq!(
        s.snapshots.current(),
        LogId::default(),
        "below the threshold"
    );
    assert_eq!(next(&mut s.progress, "ApplyProgress").await.index, 2);

    s.addr
        .do_send(apply(vec![set(3, "c", "3"), del(4, "a"), set(5, "d", "4")]));
    assert_eq!(next(&mut s.created, "SnapshotCreated").await.index, 5);
    assert_eq!(s.snapshots.current(), LogId { index: 5, term: 1 });

    // The next snapshot comes THRESHOLD entries after this one, not before.
    s.addr
        .do_send(apply(vec![set(6, "e", "5"), set(7, "f", "6")]));
    assert_eq!(next(&mut s.progress, "ApplyProgress").await.index, 5);
    assert_eq!(next(&mut s.progress, "ApplyProgress").await.index, 7);
    let status = ask(&s.addr, GetStorageStatus).await;
    assert_eq!(
        (status.applied_index, status.snapshot_index),
        (7, 5),
        "no snapshot before the threshold"
    );
    assert_eq!(s.snapshots.current(), LogId { index: 5, term: 1 });

    let snap = s
        .snapshots
        .load()
        .expect("load snapshot")
        .expect("a snapshot is stored");
    assert_eq!(snap.get_metadata().index, 5);
    assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1]);

    // A fresh node receives the snapshot from its leader.
    let mut fresh = start_storage(NO_SNAPSHOTS);
    fresh.addr.do_send(Apply {
        snapshot: Some(snap),
        entries: vec![],
        conf_state: voters(&[1]),
    });
    assert_eq!(next(&mut fresh.progress, "ApplyProgress").await.index, 5);
    let restored = next(&mut fresh.applied, "Applied after a restore").await;
    assert_eq!(restored.applied_index, 5);
    assert!(restored.entries.is_empty());
    for (key, want) in [
        ("a", None),
        ("b", Some("2")),
        ("c", Some("3")),
        ("d", Some("4")),
    ] {
        assert_eq!(
            value(&fresh.addr, key).await,
            want.map(|v| v.as_bytes().to_vec()),
            "key {key} after restore"
        );
    }
    let status = ask(&fresh.addr, GetStorageStatus).await;
    assert_eq!((status.applied_index, status.key_count), (5, 3));

    // Same state as the original had at index 5: compare hashes there, by applying the
    // same later entries to the restored actor too.
    fresh
        .addr
        .do_send(apply(vec![set(6, "e", "5"), set(7, "f", "6")]));
    assert_eq!(next(&mut fresh.progress, "ApplyProgress").await.index, 7);
    let h1 = ask(&s.addr, GetStateHash).await.expect("hash");
    let h2 = ask(&fresh.addr, GetStateHash).await.expect("hash");
    assert_eq!(h1, h2);
    assert_eq!(h1.applied_index, 7);

    // A snapshot older than what is applied is ignored.
    let old = s.snapshots.load().unwrap().unwrap();
    fresh.addr.do_send(Apply {
        snapshot: Some(old),
        entries: vec![],
        conf_state: voters(&[1]),
    });
    assert_eq!(next(&mut fresh.progress, "ApplyProgress").await.index, 7);
    assert_eq!(value(&fresh.addr, "f").await, Some(b"6".to_vec()));
}

/// List through `Read` pages by prefix and start key, and says where the next page starts.
#[actix_rt::test]
async fn storage_lists_in_pages_with_next_key() {
    let mut s = start_storage(NO_SNAPSHOTS);
    let keys = ["a/1", "a/2", "a/3", "b/1"];
    s.addr.do_send(apply(
        keys.iter()
            .enumerate()
            .map(|(i, k)| set(i as u64 + 1, k, &format!("v{i}")))
            .collect(),
    ));
    assert_eq!(next(&mut s.progress, "ApplyProgress").await.index, 4);

    let list = |start: &str, limit, keys_only| ReadQuery::List {
        prefix: b"a/".to_vec(),
        start: start.into(),
        limit,
        max_bytes: usize::MAX,
        keys_only,
    };
    let page = |a: ReadAnswer| match a.result {
        ReadResult::Page(p) => p,
        other => panic!("List answered {other:?}"),
    };
    let first = page(read(&s.addr, 0, list("", 2, false)).await);
    assert_eq!(
        first,
        ListPage {
            kvs: vec![
                (b"a/1".to_vec(), b"v0".to_vec()),
                (b"a/2".to_vec(), b"v1".to_vec())
            ],
            next_key: Some(b"a/3".to_vec()),
        }
    );
    let start = String::from_utf8(first.next_key.unwrap()).unwrap();
    let second = page(read(&s.addr, 0, list(&start, 2, true)).await);
    assert_eq!(
        second,
        ListPage {
            kvs: vec![(b"a/3".to_vec(), vec![])],
            next_key: None,
        },
        "last page of the prefix, keys only"
    );
    let all = page(
        read(
            &s.addr,
            4,
            ReadQuery::List {
                prefix: vec![],
                start: vec![],
                limit: 10,
                max_bytes: usize::MAX,
                keys_only: true,
            },
        )
        .await,
    );
    assert_eq!(all.kvs.len(), 4);
    assert_eq!(all.next_key, None);
}

/// A List of big values comes in pages, each within the byte bound yet never empty, that
/// together hold every value whole; keys only, the same bound holds them all in one page.
/// An Apply sent behind a List is handled once that one bounded page is built.
#[actix_rt::test]
async fn storage_lists_big_values_in_pages_within_the_byte_bound() {
    /// Size of each value: large enough for sled to keep it in a blob file.
    const VALUE_BYTES: usize = 64 * 1024;
    /// Number of values.
    const VALUES: u64 = 10;
    /// The byte bound of each page: room for three values, not four.
    const PAGE_BYTES: usize = 3 * VALUE_BYTES + 1_024;
    let mut s = start_storage(NO_SNAPSHOTS);
    let key = |i: u64| format!("big/{i:02}");
    let big_value = |i: u64| char::from(b'a' + i as u8).to_string().repeat(VALUE_BYTES);
    s.addr.do_send(apply(
        (1..=VALUES)
            .map(|i| set(i, &key(i), &big_value(i)))
            .collect(),
    ));
    assert_eq!(next(&mut s.progress, "ApplyProgress").await.index, VALUES);

    let list = |start: Vec<u8>, max_bytes, keys_only| ReadQuery::List {
        prefix: b"big/".to_vec(),
        start,
        limit: usize::MAX,
        max_bytes,
        keys_only,
    };
    let page = |a: ReadAnswer| match a.result {
        ReadResult::Page(p) => p,
        other => panic!("List answered {other:?}"),
    };
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    let mut start = Vec::new();
    loop {
        let p = page(read(&s.addr, 0, list(start, PAGE_BYTES, false)).await);
        assert!(!p.kvs.is_empty(), "a page holds at least one key");
        let bytes = list_answer_bytes(&p);
        assert!(bytes <= PAGE_BYTES, "a page of {bytes} bytes");
        sizes.push(p.kvs.len());
        got.extend(p.kvs);
        match p.next_key {
            Some(k) => start = k,
            None => break,
        }
    }
    assert_eq!(sizes, [3, 3, 3, 1], "pages cut by bytes, not by count");
    let want: Vec<_> = (1..=VALUES)
        .map(|i| (key(i).into_bytes(), big_value(i).into_bytes()))
        .collect();
    assert!(got == want, "every value arrives whole and in order");

    // A bound below one value still returns one, so the client advances.
    let p = page(read(&s.addr, 0, list(vec![], 1, false)).await);
    assert!(p.kvs == want[..1], "the first value alone, whole");
    assert_eq!(p.next_key, Some(key(2).into_bytes()));

    // Keys only: only keys count.
    let p = page(read(&s.addr, 0, list(vec![], PAGE_BYTES, true)).await);
    assert_eq!(p.kvs.len(), VALUES as usize);
    assert_eq!(p.next_key, None);

    // An apply queued behind a List runs once that page is built: the List's answer is the
    // state before it, a read after it sees it.
    let listed = send_read(&s.addr, 0, list(vec![], PAGE_BYTES, false));
    s.addr.do_send(apply(vec![set(VALUES + 1, &key(0), "new")]));
    let before = page(answer(listed, "the List").await.expect("list"));
    assert_eq!(before.kvs[0].0, key(1).into_bytes());
    assert_eq!(
        next(&mut s.progress, "ApplyProgress").await.index,
        VALUES + 1
    );
    assert_eq!(value(&s.addr, &key(0)).await, Some(b"new".to_vec()));
}

/// A snapshot is built while applies and compaction are pending: it holds the state at its
/// own index (not what was applied while it was being built), physical compaction held back
/// for it still completes afterwards, and a node restored from it compacts what it brought.
#[actix_rt::test]
async fn a_snapshot_built_beside_applies_and_compaction_holds_its_own_index() {
    const THRESHOLD: u64 = 4;
    let mut s = start_storage(THRESHOLD);
    let compact = |index, revision| {
        command(
            index,
            Op::Compaction(etcd_api::etcdserverpb::CompactionRequest {
                revision,
                physical: false,
            }),
        )
    };
    // Revisions 2, 3, 4; then a compaction at 4, which makes a@2 unreachable.
    s.addr.do_send(apply(vec![
        set(1, "a", "1"),
        set(2, "a", "2"),
        set(3, "b", "1"),
        compact(4, 4),
    ]));
    // Applied while the snapshot of index 4 may still be being built.
    s.addr.do_send(apply(vec![set(5, "a", "3")]));
    assert_eq!(next(&mut s.created, "SnapshotCreated").await.index, 4);
    let compacted = read(&s.addr, 0, ReadQuery::PhysicallyCompacted { revision: 4 }).await;
    assert!(
        matches!(compacted.result, ReadResult::PhysicallyCompacted(r) if r >= 4),
        "compaction held back for the build completes: {:?}",
        compacted.result
    );

    let snap = s.snapshots.load().unwrap().expect("a snapshot is stored");
    assert_eq!(snap.get_metadata().index, 4);
    let mut fresh = start_storage(NO_SNAPSHOTS);
    fresh.addr.do_send(Apply {
        snapshot: Some(snap),
        entries: vec![],
        conf_state: voters(&[1]),
    });
    assert_eq!(next(&mut fresh.progress, "ApplyProgress").await.index, 4);
    assert_eq!(
        value(&fresh.addr, "a").await,
        Some(b"2".to_vec()),
        "a at index 4"
    );
    fresh.addr.do_send(apply(vec![set(5, "a", "3")]));
    assert_eq!(next(&mut fresh.progress, "ApplyProgress").await.index, 5);
    let restored = read(
        &fresh.addr,
        0,
        ReadQuery::PhysicallyCompacted { revision: 4 },
    )
    .await;
    assert!(matches!(restored.result, ReadResult::PhysicallyCompacted(r) if r >= 4));
    let h1 = ask(&s.addr, GetStateHash).await.expect("hash");
    let h2 = ask(&fresh.addr, GetStateHash).await.expect("hash");
    assert_eq!(h1, h2, "the same state at index 5");
}

/// Snapshots come every `snapshot_threshold` entries while the history is small, and then
/// only after as many entries as the last snapshot wrote records, so their cost per write
/// stays constant as the store grows.
#[actix_rt::test]
async fn snapshots_grow_apart_as_the_history_grows() {
    const THRESHOLD: u64 = 2;
    let mut s = start_storage(THRESHOLD);
    let mut snapshots = Vec::new();
    for index in 1..=8 {
        s.addr
            .do_send(apply(vec![set(index, &format!("k{index}"), "v")]));
        assert_eq!(next(&mut s.progress, "ApplyProgress").await.index, index);
        // Where a snapshot is due, wait for its build (on its own thread) before the next
        // entry; a snapshot anywhere else would be the next one received here.
        if [2, 4, 8].contains(&index) {
            snapshots.push(next(&mut s.created, "SnapshotCreated").await.index);
        }
    }
    assert_eq!(
        snapshots,
        vec![2, 4, 8],
        "intervals 2, 2 (threshold), then 4 records"
    );
    let status = ask(&s.addr, GetStorageStatus).await;
    assert_eq!(status.snapshot_index, 8);
}
