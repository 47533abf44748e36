//! Tier 7: etcd compatibility — distributed_kv against a real etcd 3.4.23 over etcd's v3 gRPC
//! API, on real processes over loopback.
//!
//! - Differential: thousands of generated etcd KV requests (`etcd_compat`) sent to a real
//!   one-member etcd and to distributed_kv — one node, and three nodes with every request sent
//!   to a random member — and every field of every reply compared (headers on `revision`
//!   only); the first difference fails the test with the seed, op index, request and field.
//! - etcdctl transcripts: `tests/cmd/etcdctl.md` (every command of issue 10 from an empty
//!   store), played against a real etcd — so its expectations are etcd's own — and against a
//!   3-node cluster through a follower; `tests/cmd/etcdctl-cluster.md` (member ids, names and
//!   addresses) against the 3-node cluster, with JSON checks of the leader, cluster id and
//!   HashKV on every member.
//! - Bad input: what etcd answers to requests it refuses, or takes although they look wrong,
//!   and that nothing changed afterwards — checked against etcd, and asserted of distributed_kv.
//! - Watch: `tests/cmd/etcdctl-watch.md` (`etcdctl watch` replaying history: a key, a prefix,
//!   a range, `--prev-kv`, the output formats, a compacted start, an empty range) against a
//!   real etcd and through a follower of three nodes.
//! - Lock and elect: etcdctl's recipes against a real etcd and through a follower — a command
//!   under a lock, holders one at a time, a second candidate leading once the first resigns.
//! - Lease: `tests/cmd/etcdctl-lease.md` (grant, put with a lease, time-to-live with keys,
//!   keep-alive, list, revoke deleting the keys, bad input) against a real etcd and through a
//!   follower of three nodes; bad lease requests over gRPC (a taken id, TTLs of zero, below
//!   zero and over the limit, unknown leases) answered as etcd answers them, nothing changed.
//!
//! etcd and etcdctl come from Debian's `etcd-server` and
//! `etcd-client` (`.ci/run` installs them). `COMPAT_SEED=n` replays another seed,
//! `COMPAT_OPS=n` sets a differential run's length, `COMPAT_TRACE=1` prints every op and both
//! replies.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use etcd_api::etcdserverpb::{
    compare, request_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, WatchCreateRequest, WatchResponse,
};
use etcd_compat::transcript::Transcript;
use etcd_compat::watch::{
    cancel_request, create_request, finale, first_event_difference, told, watches, watches_from,
    Recorder,
};
use etcd_compat::{
    first_difference, ops_from_env, run, seed_from_env, Answer, Op, RunOptions, Spread, Store,
};
use kv_harness::{
    etcdctl_bin, run_to_exit, BlockingCluster, ClusterOptions, EtcdCluster, KVCTL_TIMEOUT,
    LEADER_TIMEOUT,
};
use tonic::Code;

/// Ops of the differential run against one node.
const ONE_NODE_OPS: usize = 2_000;
/// Ops of the differential run against three nodes.
const THREE_NODE_OPS: usize = 1_500;
/// Default seed of the differential runs (override with `COMPAT_SEED`).
const SEED: u64 = 0xe7cd_0010;
/// The transcript of etcdctl's commands from an empty store.
const KV_TRANSCRIPT: &str = "tests/cmd/etcdctl.md";
/// The transcript of the 3-node cluster's identity.
const CLUSTER_TRANSCRIPT: &str = "tests/cmd/etcdctl-cluster.md";
/// `etcdctl watch`, played against etcd and through a follower.
const WATCH_TRANSCRIPT: &str = "tests/cmd/etcdctl-watch.md";
/// `etcdctl lease` and `put --lease`, played against etcd and through a follower.
const LEASE_TRANSCRIPT: &str = "tests/cmd/etcdctl-lease.md";
/// Bytes of a value over etcd's request limit (1.5 MiB) but under its gRPC limit (2 MiB).
const TOO_LARGE_VALUE_BYTES: usize = 1_600_000;
/// Bytes of a value over etcd's gRPC message limit (2 MiB).
const OVER_GRPC_LIMIT_BYTES: usize = 3_000_000;
/// etcd's limit on the ops of a txn branch and on its compares.
const MAX_TXN_OPS: usize = 128;

/// The value of a harness step, or a panic that says the harness failed.
fn harness<T>(result: Result<T, kv_harness::HarnessError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// A one-member etcd, started on `cluster`'s runtime from the test's thread.
fn etcd_beside(cluster: &BlockingCluster) -> EtcdCluster {
    harness(cluster.rt().block_on(EtcdCluster::start(1)))
}

/// A store of `endpoints`, connected on `rt`.
fn store(rt: &tokio::runtime::Runtime, name: &str, endpoints: &[String], spread: Spread) -> Store {
    let seed = seed_from_env(SEED);
    harness(rt.block_on(Store::connect(name, endpoints, spread, seed)))
}

// ---------------------------------------------------------------------------------------------
// Differential
// ---------------------------------------------------------------------------------------------

/// A recorder on `addr` with the [`watches`] made.
fn recorder(rt: &tokio::runtime::Runtime, name: String, addr: &str) -> Recorder {
    harness(rt.block_on(Recorder::open(name, addr, &watches())))
}

/// Sends `ops` generated requests to a fresh one-member etcd and to `cluster`'s nodes (spread
/// as `spread` says); fails at the first reply that differs. Watchers made before the first
/// op — on etcd, and on every member of `cluster` — and watchers made after the last from
/// past revisions must then have been sent the same events, field for field, by both.
fn differential(nodes: u64, ops: usize, spread: Spread) {
    let cluster = BlockingCluster::start(ClusterOptions {
        nodes,
        ..ClusterOptions::default()
    });
    cluster.wait_leader();
    let etcd = etcd_beside(&cluster);
    let rt = cluster.rt();
    let mut reference = store(rt, "etcd", &etcd.endpoints(), Spread::First);
    let mut ours = store(rt, "distributed_kv", &cluster.endpoints(), spread);
    let mut theirs = recorder(rt, "etcd".into(), etcd.client_addr(0));
    let mut mine: Vec<Recorder> = (1..=nodes)
        .map(|id| recorder(rt, format!("member {id}"), cluster.client_addr(id)))
        .collect();
    let options = RunOptions::new(seed_from_env(SEED), ops_from_env(ops));
    let summary = rt
        .block_on(run(&mut reference, &mut ours, options))
        .expect_agreed();
    println!("{summary}");

    // The finale every watcher sees, then watchers from the past: before the compaction,
    // just after it, half way to the end.
    for (i, op) in finale().iter().enumerate() {
        let ((_, left), (_, right)) = rt.block_on(async {
            tokio::join!(
                reference.send(options.ops + i, op),
                ours.send(options.ops + i, op)
            )
        });
        assert_eq!(first_difference(&left, &right), None, "the finale: {op}");
    }
    let end = summary.final_revision + 2;
    let compacted = summary.compacted.max(1);
    let mut all = watches();
    for (k, start) in [compacted - 1, compacted + 1, (compacted + end) / 2]
        .into_iter()
        .filter(|s| *s >= 1)
        .enumerate()
    {
        let replays = watches_from(start, 100 * (k as i64 + 1));
        for r in std::iter::once(&mut theirs).chain(mine.iter_mut()) {
            harness(rt.block_on(r.create(&replays)));
        }
        all.extend(replays);
    }
    harness(rt.block_on(theirs.wait_for_finale(&all, end)));
    let reference_answers = theirs.answers();
    for r in &mut mine {
        harness(rt.block_on(r.wait_for_finale(&all, end)));
        if let Some(d) = first_event_difference(&reference_answers, &r.answers(), &all) {
            panic!(
                "etcd and distributed_kv's {} told a watcher different things: {d}",
                r.name()
            );
        }
    }
    let events: usize = all
        .iter()
        .map(|(id, _)| told(&reference_answers, *id).events.len())
        .sum();
    println!(
        "watch: {} watchers on each of {nodes} members agreed with etcd on {events} events",
        all.len()
    );
}

/// Proves one node answers thousands of generated etcd KV requests field for field as a real
/// one-member etcd does, and sends its watchers the events etcd sends.
#[test]
fn one_node_answers_generated_requests_as_etcd_does() {
    differential(1, ONE_NODE_OPS, Spread::First);
}

/// Proves three nodes, each request sent to a random member, answer generated etcd KV
/// requests field for field as a real one-member etcd does, and that watchers on every
/// member are sent the events etcd sends.
#[test]
fn three_nodes_answer_generated_requests_as_etcd_does() {
    differential(3, THREE_NODE_OPS, Spread::Random);
}

// ---------------------------------------------------------------------------------------------
// etcdctl transcripts
// ---------------------------------------------------------------------------------------------

/// Plays the transcript at `path` with etcdctl against `endpoint`, `vars` standing for their
/// values, in a temp dir; panics with every mismatch and the session as played.
fn play(path: &str, endpoint: &str, vars: &[(&str, String)]) {
    let etcdctl = harness(etcdctl_bin());
    let dir = tempfile::tempdir().expect("a temp dir");
    let transcript = harness(Transcript::load(path));
    harness(transcript.play(&etcdctl, endpoint, vars, dir.path())).assert_matches();
}

/// Proves the etcdctl transcript is what etcd 3.4.23 prints: every command of issue 10 from an
/// empty store, against a real one-member etcd.
#[test]
fn etcdctl_transcript_is_what_etcd_prints() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let etcd = harness(rt.block_on(EtcdCluster::start(1)));
    let ep = etcd.client_addr(0).to_string();
    play(KV_TRANSCRIPT, &ep, &[("[EP]", ep.clone())]);
}

/// Proves the watch transcript is what etcd 3.4.23 prints.
#[test]
fn etcdctl_watch_transcript_is_what_etcd_prints() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let etcd = harness(rt.block_on(EtcdCluster::start(1)));
    let ep = etcd.client_addr(0).to_string();
    play(WATCH_TRANSCRIPT, &ep, &[("[EP]", ep.clone())]);
}

/// Proves a follower replays history to `etcdctl watch` as etcd does: the same events,
/// formats, compaction error and refusal.
#[test]
fn etcdctl_watch_transcript_through_a_follower_of_three_nodes() {
    let (_cluster, follower) = three_nodes_and_a_follower();
    play(WATCH_TRANSCRIPT, &follower, &[("[EP]", follower.clone())]);
}

/// Proves the lease transcript is what etcd 3.4.23 prints.
#[test]
fn etcdctl_lease_transcript_is_what_etcd_prints() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let etcd = harness(rt.block_on(EtcdCluster::start(1)));
    let ep = etcd.client_addr(0).to_string();
    play(LEASE_TRANSCRIPT, &ep, &[("[EP]", ep.clone())]);
}

/// Proves a follower serves etcdctl's lease commands as etcd does, passing grants, revokes,
/// keep-alives and time-to-live questions on to the leader.
#[test]
fn etcdctl_lease_transcript_through_a_follower_of_three_nodes() {
    let (_cluster, follower) = three_nodes_and_a_follower();
    play(LEASE_TRANSCRIPT, &follower, &[("[EP]", follower.clone())]);
}

/// Three nodes whose leader is known, and a follower's client address.
fn three_nodes_and_a_follower() -> (BlockingCluster, String) {
    let cluster = BlockingCluster::start(ClusterOptions::default());
    let leader = cluster.wait_leader();
    let follower = cluster.client_addr(cluster.follower_of(leader)).to_string();
    (cluster, follower)
}

/// Proves etcdctl prints for three nodes, through a follower, what it prints for a real etcd:
/// the same transcript, every revision, count, error and exit code.
#[test]
fn etcdctl_transcript_through_a_follower_of_three_nodes() {
    let (_cluster, follower) = three_nodes_and_a_follower();
    play(KV_TRANSCRIPT, &follower, &[("[EP]", follower.clone())]);
}

/// etcdctl with `args` against `endpoints`, run in `dir`; its stdout as JSON.
fn etcdctl_json(dir: &Path, endpoints: &str, args: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(harness(etcdctl_bin()));
    kv_harness::etcd::clean_etcd_env(&mut cmd)
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints)
        .args(args);
    let out = run_to_exit(&mut cmd, dir, KVCTL_TIMEOUT);
    assert_eq!(out.code(), 0, "etcdctl {args:?}\n{out}");
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("etcdctl {args:?} printed no JSON ({e}):\n{out}"))
}

/// Proves etcdctl shows the three nodes as etcd members — ids 1 to 3, names, addresses —
/// and that they agree on one leader, one non-zero cluster id and their HashKV.
#[test]
fn etcdctl_shows_three_nodes_as_members_that_agree() {
    let (cluster, follower) = three_nodes_and_a_follower();
    let mut vars = Vec::new();
    let names = [
        ("[EP1]", "[PEER1]"),
        ("[EP2]", "[PEER2]"),
        ("[EP3]", "[PEER3]"),
    ];
    for (id, (ep, peer)) in (1..=3).zip(names) {
        vars.push((ep, cluster.client_addr(id).to_string()));
        vars.push((peer, cluster.config(id).advertised_peer_addr().to_string()));
    }
    play(CLUSTER_TRANSCRIPT, &follower, &vars);

    let dir = cluster.dir();
    let statuses = etcdctl_json(
        dir,
        &follower,
        &["endpoint", "status", "--cluster", "-w", "json"],
    );
    let statuses = statuses.as_array().expect("an array of statuses");
    assert_eq!(statuses.len(), 3, "{statuses:?}");
    let field = |s: &serde_json::Value, path: &[&str]| -> u64 {
        let mut v = &s["Status"];
        for p in path {
            v = &v[p];
        }
        v.as_u64().unwrap_or_else(|| panic!("no {path:?} in {s}"))
    };
    let cluster_id = field(&statuses[0], &["header", "cluster_id"]);
    let leader = field(&statuses[0], &["leader"]);
    assert_ne!(cluster_id, 0, "a non-zero cluster id");
    assert!(
        (1..=3).contains(&leader),
        "the leader is a node id: {leader}"
    );
    for s in statuses {
        assert_eq!(field(s, &["header", "cluster_id"]), cluster_id, "{s}");
        assert_eq!(
            field(s, &["leader"]),
            leader,
            "one leader named by all: {s}"
        );
        assert!(
            field(s, &["raftAppliedIndex"]) <= field(s, &["raftIndex"]),
            "{s}"
        );
    }

    // HashKV is computed locally: once every member has applied the last write, all agree.
    kv_harness::poll_until("every member's HashKV to agree", LEADER_TIMEOUT, || {
        let hashes = etcdctl_json(
            dir,
            &follower,
            &["endpoint", "hashkv", "--cluster", "-w", "json"],
        );
        let seen: Vec<(u64, u64, i64)> = hashes
            .as_array()
            .expect("an array of hashes")
            .iter()
            .map(|h| {
                let kv = &h["HashKV"];
                (
                    kv["header"]["revision"].as_u64().unwrap_or(0),
                    kv["hash"].as_u64().unwrap_or(0),
                    kv["compact_revision"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        (seen.len() == 3 && seen.windows(2).all(|w| w[0] == w[1])).then_some(seen)
    });
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

/// What etcd does with one request.
enum Expect {
    /// Refused with this code and exactly this message; nothing changes.
    Refused(Code, &'static str),
    /// Refused with this code; the message is the gRPC library's own (grpc-go's for etcd);
    /// nothing changes.
    RefusedWithCode(Code),
    /// Answered, the answer passing the check; the revision moves by `bump`.
    Answered {
        bump: i64,
        check: fn(&Answer) -> Result<(), String>,
    },
}

/// A Range of `key`..`end`.
fn range_of(key: &[u8], end: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        range_end: end.to_vec(),
        ..RangeRequest::default()
    }
}

/// A put of `key` in a txn.
fn put_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: b"x".to_vec(),
            ..PutRequest::default()
        })),
    }
}

/// A read of `key` in a txn.
fn read_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(range_of(
            key.as_bytes(),
            b"",
        ))),
    }
}

/// A Txn that puts `k1` if `compare` holds.
fn txn_if(compare: Compare) -> Op {
    Op::Txn(TxnRequest {
        compare: vec![compare],
        success: vec![put_op("k1")],
        failure: vec![],
    })
}

/// A Range answer with `n` key-values, all counted, in key order (`k1`, `k2`, ...).
fn kvs_in_key_order(a: &Answer, n: usize) -> Result<(), String> {
    let Answer::Range(r) = a else {
        return Err(format!("not a Range answer: {a:?}"));
    };
    let keys: Vec<Vec<u8>> = (1..=n).map(|i| format!("k{i}").into_bytes()).collect();
    let got: Vec<Vec<u8>> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
    if got == keys && r.count == n as i64 && !r.more {
        Ok(())
    } else {
        Err(format!(
            "expected {n} kvs k1.. in order, all counted: {r:?}"
        ))
    }
}

/// An empty Range answer.
fn nothing(a: &Answer) -> Result<(), String> {
    match a {
        Answer::Range(r) if r.kvs.is_empty() && r.count == 0 && !r.more => Ok(()),
        Answer::DeleteRange(d) if d.deleted == 0 && d.prev_kvs.is_empty() => Ok(()),
        _ => Err(format!("expected nothing: {a:?}")),
    }
}

/// A Txn answer whose compares held.
fn succeeded(a: &Answer) -> Result<(), String> {
    match a {
        Answer::Txn(t) if t.succeeded && t.responses.len() == 1 => Ok(()),
        _ => Err(format!(
            "expected a txn that took its success branch: {a:?}"
        )),
    }
}

/// Any successful answer.
fn any(_: &Answer) -> Result<(), String> {
    Ok(())
}

/// The bad-input cases, on a store holding `k1`, `k2`, `k3` and never compacted; in order (the
/// last two compact).
fn bad_input_cases() -> Vec<(&'static str, Op, Expect)> {
    use Expect::*;
    let cmp = |target: i32, result: i32, union| Compare {
        key: b"k1".to_vec(),
        target,
        result,
        target_union: Some(union),
        range_end: vec![],
    };
    let compacted = "etcdserver: mvcc: required revision has been compacted";
    vec![
        (
            "a range whose end is before its key is empty, not an error",
            Op::Range(range_of(b"k2", b"k1")),
            Answered {
                bump: 0,
                check: nothing,
            },
        ),
        (
            "a range whose end is its key is empty",
            Op::Range(range_of(b"k2", b"k2")),
            Answered {
                bump: 0,
                check: nothing,
            },
        ),
        (
            "a delete whose end is before its key deletes nothing",
            Op::DeleteRange(DeleteRangeRequest {
                key: b"k2".to_vec(),
                range_end: b"k1".to_vec(),
                prev_kv: true,
            }),
            Answered {
                bump: 0,
                check: nothing,
            },
        ),
        (
            "a negative limit is no limit",
            Op::Range(RangeRequest {
                limit: -5,
                ..range_of(b"k", b"l")
            }),
            Answered {
                bump: 0,
                check: |a| kvs_in_key_order(a, 3),
            },
        ),
        (
            "a negative revision reads the current one",
            Op::Range(RangeRequest {
                revision: -7,
                ..range_of(b"k1", b"")
            }),
            Answered {
                bump: 0,
                check: |a| kvs_in_key_order(a, 1),
            },
        ),
        (
            "an undefined sort order (with the key as target) leaves key order",
            Op::Range(RangeRequest {
                sort_order: 7,
                ..range_of(b"k", b"l")
            }),
            Answered {
                bump: 0,
                check: |a| kvs_in_key_order(a, 3),
            },
        ),
        (
            "a future revision",
            Op::Range(RangeRequest {
                revision: 5,
                ..range_of(b"k1", b"")
            }),
            Refused(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
        ),
        (
            "an empty key",
            Op::Range(range_of(b"", b"k9")),
            Refused(Code::InvalidArgument, "etcdserver: key is not provided"),
        ),
        (
            "a compare with an empty key",
            Op::Txn(TxnRequest {
                compare: vec![Compare::default()],
                ..TxnRequest::default()
            }),
            Refused(Code::InvalidArgument, "etcdserver: key is not provided"),
        ),
        (
            "129 puts in one branch",
            Op::Txn(TxnRequest {
                success: (0..=MAX_TXN_OPS)
                    .map(|i| put_op(&format!("t{i}")))
                    .collect(),
                ..TxnRequest::default()
            }),
            Refused(
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
        ),
        (
            "129 compares",
            Op::Txn(TxnRequest {
                compare: (0..=MAX_TXN_OPS)
                    .map(|_| cmp(0, 0, compare::TargetUnion::Version(1)))
                    .collect(),
                ..TxnRequest::default()
            }),
            Refused(
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
        ),
        (
            "128 reads in one branch are allowed",
            Op::Txn(TxnRequest {
                success: (0..MAX_TXN_OPS).map(|_| read_op("k1")).collect(),
                ..TxnRequest::default()
            }),
            Answered {
                bump: 0,
                check: any,
            },
        ),
        (
            "two puts of one key in a branch",
            Op::Txn(TxnRequest {
                success: vec![put_op("k1"), put_op("k1")],
                ..TxnRequest::default()
            }),
            Refused(
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
        ),
        (
            "a put inside a delete of the same branch",
            Op::Txn(TxnRequest {
                success: vec![
                    RequestOp {
                        request: Some(request_op::Request::RequestDeleteRange(
                            DeleteRangeRequest {
                                key: b"k".to_vec(),
                                range_end: b"l".to_vec(),
                                prev_kv: false,
                            },
                        )),
                    },
                    put_op("k2"),
                ],
                ..TxnRequest::default()
            }),
            Refused(
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
        ),
        (
            "an empty op in a txn",
            Op::Txn(TxnRequest {
                success: vec![RequestOp { request: None }],
                ..TxnRequest::default()
            }),
            Refused(Code::InvalidArgument, "etcdserver: key not found"),
        ),
        (
            "ignore_value with a value",
            Op::Put(PutRequest {
                key: b"k1".to_vec(),
                value: b"x".to_vec(),
                ignore_value: true,
                ..PutRequest::default()
            }),
            Refused(Code::InvalidArgument, "etcdserver: value is provided"),
        ),
        (
            "ignore_lease with a lease",
            Op::Put(PutRequest {
                key: b"k1".to_vec(),
                ignore_lease: true,
                lease: 5,
                ..PutRequest::default()
            }),
            Refused(Code::InvalidArgument, "etcdserver: lease is provided"),
        ),
        (
            "ignore_value on a missing key",
            Op::Put(PutRequest {
                key: b"nope".to_vec(),
                ignore_value: true,
                ..PutRequest::default()
            }),
            Refused(Code::InvalidArgument, "etcdserver: key not found"),
        ),
        (
            "a lease that does not exist",
            Op::Put(PutRequest {
                key: b"k1".to_vec(),
                lease: 77,
                ..PutRequest::default()
            }),
            Refused(Code::NotFound, "etcdserver: requested lease not found"),
        ),
        (
            "a value over the request limit (1.5 MiB)",
            Op::Put(PutRequest {
                key: b"big".to_vec(),
                value: vec![b'a'; TOO_LARGE_VALUE_BYTES],
                ..PutRequest::default()
            }),
            Refused(Code::InvalidArgument, "etcdserver: request is too large"),
        ),
        (
            "a value over the gRPC message limit (2 MiB)",
            Op::Put(PutRequest {
                key: b"big".to_vec(),
                value: vec![b'a'; OVER_GRPC_LIMIT_BYTES],
                ..PutRequest::default()
            }),
            RefusedWithCode(Code::ResourceExhausted),
        ),
        (
            "an undefined compare target compares as equal: the txn succeeds and writes",
            txn_if(cmp(9, 0, compare::TargetUnion::Version(5))),
            Answered {
                bump: 1,
                check: succeeded,
            },
        ),
        (
            "an undefined compare result holds whatever the comparison: the txn writes",
            txn_if(cmp(0, 9, compare::TargetUnion::Version(5))),
            Answered {
                bump: 1,
                check: succeeded,
            },
        ),
        (
            "a negative compaction on a store never compacted is 'compacted'",
            Op::Compact(CompactionRequest {
                revision: -1,
                physical: false,
            }),
            Refused(Code::OutOfRange, compacted),
        ),
        (
            "a compaction at 0 on a store never compacted succeeds",
            Op::Compact(CompactionRequest {
                revision: 0,
                physical: false,
            }),
            Answered {
                bump: 0,
                check: any,
            },
        ),
        (
            "then a compaction at 0 again is 'compacted'",
            Op::Compact(CompactionRequest {
                revision: 0,
                physical: false,
            }),
            Refused(Code::OutOfRange, compacted),
        ),
    ]
}

/// Every key of `store`, as a Range answer (its header gives the revision).
async fn everything(store: &mut Store) -> etcd_compat::Reply {
    let all = Op::Range(range_of(b"\0", b"\0"));
    store.send(0, &all).await.1
}

/// Writes `k1`..`k3` into the fresh `store`, then sends every bad-input case and checks etcd's
/// answer and that nothing else changed.
async fn bad_input_answers_as_etcd_does(store: &mut Store) {
    for key in ["k1", "k2", "k3"] {
        let put = Op::Put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        });
        let (_, reply) = store.send(0, &put).await;
        reply.unwrap_or_else(|e| panic!("setting up {key}: {e}"));
    }
    for (index, (what, op, expect)) in bad_input_cases().into_iter().enumerate() {
        let before = everything(store).await.expect("a Range of every key");
        let revision = before.revision();
        let (_, reply) = store.send(index, &op).await;
        let after = everything(store).await.expect("a Range of every key");
        let unchanged = || {
            if let Some(d) = first_difference(&Ok(before.clone()), &Ok(after.clone())) {
                panic!("{what}: the store changed: {d}");
            }
        };
        match (expect, reply) {
            (Expect::Refused(code, message), Err(f)) => {
                assert_eq!((f.code, f.message.as_str()), (code, message), "{what}");
                unchanged();
            }
            (Expect::RefusedWithCode(code), Err(f)) => {
                assert_eq!(f.code, code, "{what}: {f}");
                unchanged();
            }
            (Expect::Answered { bump, check }, Ok(answer)) => {
                check(&answer).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(
                    answer.revision(),
                    revision + bump,
                    "{what}: header revision"
                );
                assert_eq!(after.revision(), revision + bump, "{what}: revision after");
                if bump == 0 {
                    unchanged();
                }
            }
            (_, reply) => panic!("{what}: unexpected reply {reply:?}"),
        }
    }
}

/// Proves the bad-input expectations are etcd's: a real one-member etcd answers each as
/// recorded and changes nothing it should not.
#[test]
fn bad_input_gets_these_answers_from_etcd() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let etcd = harness(rt.block_on(EtcdCluster::start(1)));
    let mut store = store(&rt, "etcd", &etcd.endpoints(), Spread::First);
    rt.block_on(bad_input_answers_as_etcd_does(&mut store));
}

/// Proves one node answers bad input exactly as etcd does and changes nothing it should not;
/// and that a Range with an undefined sort target (which crashes etcd 3.4.23) gets an answer
/// and leaves the node serving.
#[test]
fn bad_input_gets_etcds_answers_from_one_node() {
    let cluster = BlockingCluster::start(ClusterOptions {
        nodes: 1,
        ..ClusterOptions::default()
    });
    cluster.wait_leader();
    let rt = cluster.rt();
    let mut store = store(rt, "distributed_kv", &cluster.endpoints(), Spread::First);
    rt.block_on(bad_input_answers_as_etcd_does(&mut store));

    let crash_etcd = Op::Range(RangeRequest {
        sort_order: 1,
        sort_target: 9,
        ..range_of(b"k", b"l")
    });
    let (_, reply) = rt.block_on(store.send(0, &crash_etcd));
    println!("an undefined sort target: {reply:?}");
    rt.block_on(everything(&mut store))
        .unwrap_or_else(|e| panic!("the node stopped serving after an undefined sort target: {e}"));
}

// ---------------------------------------------------------------------------------------------
// Watch: bad input
// ---------------------------------------------------------------------------------------------

/// What a watch answer says, without its header: `watch ID: created, canceled (compact C,
/// "reason"), events TYPE key@rev ...`.
fn describe(a: &WatchResponse) -> String {
    let mut out = format!("watch {}:", a.watch_id);
    if a.created {
        out.push_str(" created");
    }
    if a.canceled {
        out.push_str(&format!(
            " canceled (compact {}, {:?})",
            a.compact_revision, a.cancel_reason
        ));
    }
    for e in &a.events {
        out.push_str(&format!(" {}", etcd_compat::show::event(e)));
    }
    out
}

fn create(id: i64, key: &[u8], range_end: &[u8], start: i64) -> (i64, WatchCreateRequest) {
    let req = WatchCreateRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        start_revision: start,
        ..Default::default()
    };
    (id, req)
}

/// Bad and odd watch requests on a fresh store (`addr`, written through `kv`), and every
/// answer they got, in order.
async fn watch_bad_input(addr: &str, kv: &mut Store) -> Vec<String> {
    let put = |key: &[u8]| {
        Op::Put(PutRequest {
            key: key.to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        })
    };
    for (i, op) in [put(b"k"), put(b"k"), put(b"k")].iter().enumerate() {
        kv.send(i, op).await.1.expect("a put"); // revisions 2, 3, 4
    }
    let compact = Op::Compact(CompactionRequest {
        revision: 3,
        ..Default::default()
    });
    kv.send(3, &compact).await.1.expect("a compaction");
    let mut r = harness(Recorder::open(addr, addr, &[]).await);
    let count = |n: usize| move |answers: &[WatchResponse]| answers.len() >= n;
    // Below the compact revision: created, then canceled with it.
    harness(r.send(create_request(&create(1, b"k", b"", 2))).await);
    harness(r.wait_for(count(2)).await);
    // A future revision: created, and quiet until the store gets there.
    harness(r.send(create_request(&create(2, b"k", b"", 7))).await);
    // An id in use, and a range that ends before it starts: refused.
    harness(r.send(create_request(&create(2, b"k", b"", 0))).await);
    harness(r.send(create_request(&create(3, b"b", b"a", 0))).await);
    harness(r.wait_for(count(5)).await);
    // An id no watcher has: no answer at all.
    harness(r.send(cancel_request(99)).await);
    // The empty key: the key "\0".
    harness(r.send(create_request(&create(4, b"", b"", 0))).await);
    harness(r.wait_for(count(6)).await);
    for (i, op) in [put(b"k"), put(b"k"), put(b"k"), put(b"\0")]
        .iter()
        .enumerate()
    {
        kv.send(10 + i, op).await.1.expect("a put"); // revisions 5, 6, 7, 8
    }
    harness(r.wait_for(count(8)).await);
    r.answers().iter().map(describe).collect()
}

/// etcd's answers to [`watch_bad_input`].
const WATCH_BAD_INPUT_ANSWERS: [&str; 8] = [
    "watch 1: created",
    "watch 1: canceled (compact 3, \"\")",
    "watch 2: created",
    "watch -1: created canceled (compact 0, \"mvcc: duplicate watch ID provided on the WatchStream\")",
    "watch -1: created canceled (compact 0, \"mvcc: watcher range is empty\")",
    "watch 4: created",
    "watch 2: PUT {key=\"k\" value=\"v\" create=2 mod=7 version=6 lease=0}",
    "watch 4: PUT {key=\"\\x00\" value=\"v\" create=8 mod=8 version=1 lease=0}",
];

/// Proves the watch bad-input answers are etcd's.
#[test]
fn watch_bad_input_gets_these_answers_from_etcd() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let etcd = harness(rt.block_on(EtcdCluster::start(1)));
    let mut kv = store(&rt, "etcd", &etcd.endpoints(), Spread::First);
    let got = rt.block_on(watch_bad_input(etcd.client_addr(0), &mut kv));
    assert_eq!(got, WATCH_BAD_INPUT_ANSWERS);
}

/// Proves a follower answers bad and odd watch requests as etcd does: a compacted start
/// canceled with the compact revision, a future one waited for, a duplicate id and an
/// empty range refused with etcd's reasons, an unknown cancel ignored, the empty key
/// watched as "\0".
#[test]
fn watch_bad_input_gets_etcds_answers_from_a_follower() {
    let (cluster, follower) = three_nodes_and_a_follower();
    let mut kv = store(
        cluster.rt(),
        "distributed_kv",
        std::slice::from_ref(&follower),
        Spread::First,
    );
    let got = cluster.rt().block_on(watch_bad_input(&follower, &mut kv));
    assert_eq!(got, WATCH_BAD_INPUT_ANSWERS);
}

// ---------------------------------------------------------------------------------------------
// etcdctl lock and elect
// ---------------------------------------------------------------------------------------------

/// How long `etcdctl lock` and `elect` may take to get what they wait for.
const RECIPE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a lock holder of the lock test holds it.
const HOLD: &str = "0.3";
/// Lock holders of the lock test, all started at once.
const HOLDERS: usize = 3;

/// `etcdctl` with `args` against `endpoint`, run in `dir` with its output (stdout and stderr)
/// in the file `out` there.
fn etcdctl_in_background(endpoint: &str, dir: &Path, args: &[&str], out: &str) -> kv_harness::Proc {
    let etcdctl = harness(etcdctl_bin());
    let file = std::fs::File::create(dir.join(out)).expect("harness: an output file");
    let mut cmd = Command::new(etcdctl);
    kv_harness::etcd::clean_etcd_env(&mut cmd)
        .current_dir(dir)
        .env("ETCDCTL_API", "3")
        .env("ETCDCTL_ENDPOINTS", endpoint)
        .args(args)
        .stdout(file.try_clone().expect("harness: the output file"))
        .stderr(file);
    harness(kv_harness::Proc::spawn(
        format!("etcdctl {}", args.join(" ")),
        &mut cmd,
    ))
}

/// The lines of `dir/out` once `ready` says they are complete.
fn lines_when(dir: &Path, out: &str, what: &str, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
    kv_harness::poll_until(what, RECIPE_TIMEOUT, || {
        let text = std::fs::read_to_string(dir.join(out)).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        ready(&lines).then_some(lines)
    })
}

/// etcdctl's lock and elect recipes against `endpoint`: a command run under a lock; holders
/// started at once take the lock one after the other, never two at a time; an election's
/// second candidate waits, and leads once the first resigns; an observer sees the leader.
fn lock_and_elect(endpoint: &str) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let d = dir.path();
    let mut once = etcdctl_in_background(endpoint, d, &["lock", "L", "echo", "held"], "once");
    assert!(
        once.wait_timeout(RECIPE_TIMEOUT)
            .is_some_and(|s| s.success()),
        "etcdctl lock L echo held exits 0"
    );
    assert_eq!(
        lines_when(d, "once", "the command's output", |l| !l.is_empty()),
        ["held"]
    );

    // Each holder writes "in" and "out" around its hold to one log; under the lock, no "in"
    // ever follows another.
    let script = format!("echo \"$0 in\" >> log; sleep {HOLD}; echo \"$0 out\" >> log");
    let mut holders: Vec<kv_harness::Proc> = (0..HOLDERS)
        .map(|i| {
            let name = format!("h{i}");
            let args = [
                "lock",
                "L",
                "--",
                "sh",
                "-c",
                script.as_str(),
                name.as_str(),
            ];
            etcdctl_in_background(endpoint, d, &args, &name)
        })
        .collect();
    for h in &mut holders {
        assert!(
            h.wait_timeout(RECIPE_TIMEOUT).is_some_and(|s| s.success()),
            "every holder gets the lock in turn and exits 0"
        );
    }
    let log = std::fs::read_to_string(d.join("log")).expect("the holders' log");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2 * HOLDERS, "{log}");
    for pair in lines.chunks(2) {
        let who = pair[0].trim_end_matches(" in");
        assert_eq!(pair, [format!("{who} in"), format!("{who} out")], "{log}");
    }

    let mut first = etcdctl_in_background(endpoint, d, &["elect", "E", "p1"], "first");
    let led = lines_when(d, "first", "the first candidate to lead", |l| l.len() >= 2);
    assert!(led[0].starts_with("E/") && led[1] == "p1", "{led:?}");
    let mut second = etcdctl_in_background(endpoint, d, &["elect", "E", "p2"], "second");
    let mut observer = etcdctl_in_background(endpoint, d, &["elect", "--listen", "E"], "observer");
    let seen = lines_when(d, "observer", "the observer to see p1", |l| l.len() >= 2);
    assert_eq!(seen[1], "p1");
    assert!(
        std::fs::read_to_string(d.join("second"))
            .unwrap_or_default()
            .is_empty(),
        "the second candidate waits while the first leads"
    );
    harness(first.signal(libc::SIGINT));
    let led = lines_when(d, "second", "the second candidate to lead", |l| {
        l.len() >= 2
    });
    assert!(led[0].starts_with("E/") && led[1] == "p2", "{led:?}");
    let seen = lines_when(d, "observer", "the observer to see p2", |l| l.len() >= 4);
    assert_eq!(seen[3], "p2");
    for p in [&mut first, &mut second, &mut observer] {
        let _ = p.signal(libc::SIGINT);
        p.wait_timeout(RECIPE_TIMEOUT);
    }
}

/// Proves the lock and elect checks hold of etcd itself.
#[test]
fn etcdctl_lock_and_elect_work_against_etcd() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let etcd = harness(rt.block_on(EtcdCluster::start(1)));
    lock_and_elect(etcd.client_addr(0));
}

/// Proves etcdctl's lock and elect recipes — Txn on create revision, leases, Range sorted by
/// create revision, Watch from a revision — work through a follower of three nodes.
#[test]
fn etcdctl_lock_and_elect_work_through_a_follower_of_three_nodes() {
    let (_cluster, follower) = three_nodes_and_a_follower();
    lock_and_elect(&follower);
}

// ---------------------------------------------------------------------------------------------
// Lease bad input
// ---------------------------------------------------------------------------------------------

/// Each bad or odd lease request sent to `addr`, and what came back, as lines (a TTL raised
/// to the least one is said as "raised", since the least differs between stores configured
/// differently); then what the store holds after them.
async fn lease_bad_input(addr: &str) -> Vec<String> {
    use etcd_api::etcdserverpb::kv_client::KvClient;
    use etcd_api::etcdserverpb::lease_client::LeaseClient;
    use etcd_api::etcdserverpb::{
        LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
        LeaseTimeToLiveRequest,
    };
    let url = format!("http://{addr}");
    let mut leases = LeaseClient::connect(url.clone())
        .await
        .expect("harness: dial the member");
    let mut kv = KvClient::connect(url)
        .await
        .expect("harness: dial the member");
    let status = |s: tonic::Status| format!("{:?} {:?}", s.code(), s.message());
    let mut out = Vec::new();
    for (what, ttl, id) in [
        ("grant ttl=0 id=0x1234", 0, 0x1234),
        ("grant ttl=-5 id=0x1235", -5, 0x1235),
        ("grant ttl=60 id=0x1234 again", 60, 0x1234),
        ("grant ttl=9000000001", 9_000_000_001, 0x1236),
    ] {
        let answer = match leases.lease_grant(LeaseGrantRequest { ttl, id }).await {
            Ok(r) => {
                let r = r.into_inner();
                let ttl = if r.ttl > ttl.max(0) {
                    "raised".into()
                } else {
                    r.ttl.to_string()
                };
                format!("id={:#x} ttl={ttl}", r.id)
            }
            Err(s) => status(s),
        };
        out.push(format!("{what}: {answer}"));
    }
    let unknown = 0x9999;
    let revoked = leases
        .lease_revoke(LeaseRevokeRequest { id: unknown })
        .await;
    out.push(format!(
        "revoke an unknown lease: {}",
        revoked.map_or_else(status, |_| "ok".into())
    ));
    let left = leases
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: unknown,
            keys: true,
        })
        .await
        .map(|r| r.into_inner());
    out.push(format!(
        "time to live of an unknown lease: {}",
        left.map_or_else(status, |r| format!(
            "ttl={} granted={}",
            r.ttl, r.granted_ttl
        ))
    ));
    let kept = leases
        .lease_keep_alive(tokio_stream::once(LeaseKeepAliveRequest { id: unknown }))
        .await
        .expect("a keep-alive stream")
        .into_inner()
        .message()
        .await;
    out.push(format!(
        "keep-alive of an unknown lease: {}",
        kept.map_or_else(status, |r| format!("ttl={}", r.map_or(-9, |r| r.ttl)))
    ));
    let put = PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: unknown,
        ..Default::default()
    };
    let answer = kv.put(put.clone()).await;
    out.push(format!(
        "put with an unknown lease: {}",
        answer.map_or_else(status, |_| "ok".into())
    ));
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put)),
        }],
        ..Default::default()
    };
    let answer = kv.txn(txn).await;
    out.push(format!(
        "txn put with an unknown lease: {}",
        answer.map_or_else(status, |_| "ok".into())
    ));
    for id in [0x1234, 0x1235] {
        let r = leases.lease_revoke(LeaseRevokeRequest { id }).await;
        out.push(format!(
            "revoke {id:#x}: {}",
            r.map_or_else(status, |_| "ok".into())
        ));
    }
    let listed = leases
        .lease_leases(LeaseLeasesRequest {})
        .await
        .expect("a lease list")
        .into_inner();
    let all = kv
        .range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("a range")
        .into_inner();
    out.push(format!(
        "after: leases={} keys={} revision={}",
        listed.leases.len(),
        all.count,
        all.header.map_or(0, |h| h.revision)
    ));
    out
}

/// What etcd 3.4.23 answers to [`lease_bad_input`] (checked by the test below).
const LEASE_BAD_INPUT_ANSWERS: [&str; 12] = [
    "grant ttl=0 id=0x1234: id=0x1234 ttl=raised",
    "grant ttl=-5 id=0x1235: id=0x1235 ttl=raised",
    "grant ttl=60 id=0x1234 again: FailedPrecondition \"etcdserver: lease already exists\"",
    "grant ttl=9000000001: OutOfRange \"etcdserver: too large lease TTL\"",
    "revoke an unknown lease: NotFound \"etcdserver: requested lease not found\"",
    "time to live of an unknown lease: ttl=-1 granted=0",
    "keep-alive of an unknown lease: ttl=0",
    "put with an unknown lease: NotFound \"etcdserver: requested lease not found\"",
    "txn put with an unknown lease: NotFound \"etcdserver: requested lease not found\"",
    "revoke 0x1234: ok",
    "revoke 0x1235: ok",
    "after: leases=0 keys=0 revision=1",
];

/// Proves the lease bad-input answers are etcd's.
#[test]
fn lease_bad_input_gets_these_answers_from_etcd() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let etcd = harness(rt.block_on(EtcdCluster::start(1)));
    let got = rt.block_on(lease_bad_input(etcd.client_addr(0)));
    assert_eq!(got, LEASE_BAD_INPUT_ANSWERS);
}

/// Proves a follower answers bad lease requests as etcd does — a taken id, a TTL over the
/// limit, unknown leases revoked, asked about, kept alive and put with — and changes nothing.
#[test]
fn lease_bad_input_gets_etcds_answers_from_a_follower() {
    let (cluster, follower) = three_nodes_and_a_follower();
    let got = cluster.rt().block_on(lease_bad_input(&follower));
    assert_eq!(got, LEASE_BAD_INPUT_ANSWERS);
}
