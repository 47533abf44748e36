//! Tier 4: multi-process tests of the real binaries.
//!
//! Every test here runs the `distributed_kv` node binary and the `kvctl` client binary that
//! Cargo built (found by `kv_harness::target_bin`), the way a user would, and checks what can
//! only be seen from outside a process: `kill -9` and restart from the data dir, `SIGTERM`
//! shutdown and exit status, command-line exit codes and output, start-up errors on stderr, and
//! robustness against garbage on the sockets.
//!
//! The harness (real processes on free ports, generated configs, kill-on-drop, polling with
//! deadlines) is the `kv_harness` crate's `BlockingCluster`, shared with the GUI tests; node
//! ids run from 1. Writes and reads use the library's async `Client` on the cluster's tokio
//! runtime; CLI checks run `kvctl` through
//! `run_to_exit`, which bounds every command by a deadline. Every test has its own ports and
//! temp dir, so the tests run in parallel.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distributed_kv::proto::raftpb::raft_transport_client::RaftTransportClient;
use distributed_kv::proto::raftpb::{RaftBatch, SnapshotChunk};
use kv_api::client::{Client, ClientError};
use kv_api::proto::{Role, StatusResponse};
use rand::{Rng, RngCore, SeedableRng};
use tokio::runtime::Runtime;

use kv_harness::*;

// ---------------------------------------------------------------------------------------------
// 1. kill -9 the leader under load
// ---------------------------------------------------------------------------------------------

/// Concurrent writers in the kill -9 test.
const WRITERS: usize = 4;
/// Writes acknowledged before the leader is killed.
const ACKS_BEFORE_KILL: usize = 150;
/// Writes started and acknowledged after the kill before the writers stop.
const ACKS_AFTER_KILL: usize = 150;
/// A new leader must serve a write within this long of the old one's SIGKILL.
const FAILOVER_LIMIT: Duration = Duration::from_secs(3);
/// How long the writers get, in all, to reach their targets.
const WRITE_PHASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one write in the kill -9 test, retries included.
const WRITER_OP_TIMEOUT: Duration = Duration::from_secs(4);

/// One acknowledged write.
#[derive(Debug, Clone)]
struct Ack {
    /// The key, unique per write.
    key: String,
    /// The value written.
    value: String,
    /// When the client started the write.
    started: Instant,
    /// When the client got the acknowledgement.
    finished: Instant,
}

/// What the writers have recorded.
#[derive(Default)]
struct WriteLog {
    /// Acknowledged writes.
    acked: Vec<Ack>,
    /// Writes that failed: their outcome may be unknown; (key, value, error).
    failed: Vec<(String, String, ClientError)>,
}

#[test]
fn kill9_leader_under_concurrent_writes_loses_no_acknowledged_write() {
    let mut cluster = BlockingCluster::start(ClusterOptions::default());
    let leader = cluster.wait_leader();

    let log = Arc::new(Mutex::new(WriteLog::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (log, stop) = (log.clone(), stop.clone());
            let mut client = Client::new(cluster.endpoints()).with_timeout(WRITER_OP_TIMEOUT);
            cluster.rt().spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("w{w}/{n:06}");
                    let value = format!("value {w}-{n} {}", "x".repeat((n % 7) as usize));
                    let started = Instant::now();
                    let result = client.set(key.as_bytes(), value.as_bytes()).await;
                    let finished = Instant::now();
                    let mut log = log.lock().unwrap();
                    match result {
                        Ok(_) => log.acked.push(Ack {
                            key,
                            value,
                            started,
                            finished,
                        }),
                        Err(e) => log.failed.push((key, value, e)),
                    }
                    n += 1;
                }
            })
        })
        .collect();

    poll_until(
        "writes acknowledged before the kill",
        WRITE_PHASE_TIMEOUT,
        || (log.lock().unwrap().acked.len() >= ACKS_BEFORE_KILL).then_some(()),
    );
    let killed_at = cluster.kill(leader);
    let killed_id = leader;

    // The first write that started after the kill and was acknowledged: the old leader cannot
    // have served it.
    let first_after = poll_until(
        "a write acknowledged by a new leader",
        WRITE_PHASE_TIMEOUT,
        || {
            let log = log.lock().unwrap();
            log.acked
                .iter()
                .filter(|a| a.started >= killed_at)
                .map(|a| a.finished)
                .min()
        },
    );
    let failover = first_after - killed_at;
    println!(
        "failover: first write after SIGKILL of node {killed_id} acknowledged in {failover:?}"
    );
    assert!(
        failover <= FAILOVER_LIMIT,
        "a new leader took {failover:?} to acknowledge a write after the leader was killed \
         (limit {FAILOVER_LIMIT:?})"
    );
    poll_until(
        "writes acknowledged after the kill",
        WRITE_PHASE_TIMEOUT,
        || {
            let log = log.lock().unwrap();
            let after = log.acked.iter().filter(|a| a.started >= killed_at).count();
            (after >= ACKS_AFTER_KILL).then_some(())
        },
    );
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        cluster.rt().block_on(w).expect("writer task");
    }
    let log = std::mem::take(&mut *log.lock().unwrap());
    println!(
        "{} writes acknowledged, {} failed (outcome possibly unknown)",
        log.acked.len(),
        log.failed.len()
    );
    for (key, _, e) in &log.failed {
        assert!(
            !matches!(e, ClientError::Invalid(_) | ClientError::Server(_)),
            "write of {key} failed with an unexpected error: {e:?}"
        );
    }

    // What the cluster committed while the node was down.
    let new_leader = cluster.wait_leader();
    assert_ne!(new_leader, leader, "the killed node cannot be leader");
    let target = cluster
        .status(new_leader)
        .expect("leader status")
        .commit_index;

    cluster.restart(&[leader]);
    let caught_up = poll_until(
        "the restarted node to apply what the leader committed",
        CATCH_UP_TIMEOUT,
        || {
            cluster
                .status(leader)
                .ok()
                .filter(|s| s.applied_index >= target)
        },
    );
    println!(
        "restarted node {killed_id}: applied {} (target {target}), role {}",
        caught_up.applied_index, caught_up.role
    );

    // Every acknowledged write, read linearizably through the cluster...
    let mut client = cluster.client();
    let mut wrong = Vec::new();
    for ack in &log.acked {
        let got = cluster
            .rt()
            .block_on(client.get(ack.key.as_bytes(), false))
            .unwrap_or_else(|e| panic!("linearizable get {}: {e}", ack.key));
        if got.as_deref() != Some(ack.value.as_bytes()) {
            wrong.push((
                ack.key.clone(),
                got.map(|v| String::from_utf8_lossy(&v).into_owned()),
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged writes are lost or wrong (linearizable read), e.g. {:?}",
        wrong.len(),
        log.acked.len(),
        &wrong[..wrong.len().min(10)]
    );
    // ... a write with an unknown outcome either happened, with its value, or did not...
    for (key, value, _) in &log.failed {
        let got = cluster
            .rt()
            .block_on(client.get(key.as_bytes(), false))
            .unwrap_or_else(|e| panic!("linearizable get {key}: {e}"));
        assert!(
            got.is_none() || got.as_deref() == Some(value.as_bytes()),
            "{key} holds {got:?}, which was never written"
        );
    }
    // ... and locally (serializable) on the restarted node, which has caught up.
    let mut local =
        Client::new(vec![cluster.client_addr(leader).to_string()]).with_timeout(CLIENT_OP_TIMEOUT);
    for ack in &log.acked {
        let got = cluster
            .rt()
            .block_on(local.get(ack.key.as_bytes(), true))
            .unwrap_or_else(|e| panic!("serializable get {} on node {killed_id}: {e}", ack.key));
        if got.as_deref() != Some(ack.value.as_bytes()) {
            wrong.push((
                ack.key.clone(),
                got.map(|v| String::from_utf8_lossy(&v).into_owned()),
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged writes are missing or wrong on the restarted node {killed_id} \
         (serializable read), e.g. {:?}",
        wrong.len(),
        log.acked.len(),
        &wrong[..wrong.len().min(10)]
    );
}

// ---------------------------------------------------------------------------------------------
// 2. full cluster restart
// ---------------------------------------------------------------------------------------------

/// Keys written before the full restart.
const RESTART_KEYS: usize = 100;
/// Of those, how many are deleted again before the restart (every n-th).
const RESTART_DELETE_EVERY: usize = 10;

#[test]
fn full_cluster_restart_after_sigterm_keeps_every_acknowledged_write() {
    let mut cluster = BlockingCluster::start(ClusterOptions::default());
    cluster.wait_leader();
    let mut client = cluster.client();
    let mut expected: BTreeMap<String, Option<String>> = BTreeMap::new();
    for n in 0..RESTART_KEYS {
        let (key, value) = (format!("restart/{n:04}"), format!("v{n}"));
        cluster
            .rt()
            .block_on(client.set(key.as_bytes(), value.as_bytes()))
            .unwrap_or_else(|e| panic!("set {key}: {e}"));
        expected.insert(key, Some(value));
    }
    for n in (0..RESTART_KEYS).step_by(RESTART_DELETE_EVERY) {
        let key = format!("restart/{n:04}");
        let existed = cluster
            .rt()
            .block_on(client.delete(key.as_bytes()))
            .unwrap_or_else(|e| panic!("delete {key}: {e}"));
        assert!(existed, "{key} was written, so delete must find it");
        expected.insert(key, None);
    }
    drop(client);

    let all = cluster.ids();
    let statuses = cluster.terminate(&all);
    for (id, status) in all.iter().zip(&statuses) {
        assert_eq!(
            status.code(),
            Some(0),
            "node {id} exited with {status:?} after SIGTERM"
        );
    }

    cluster.restart(&all);
    cluster.wait_leader();
    let mut client = cluster.client();
    for (key, want) in &expected {
        let got = cluster
            .rt()
            .block_on(client.get(key.as_bytes(), false))
            .unwrap_or_else(|e| panic!("get {key} after restart: {e}"));
        assert_eq!(
            got.map(|v| String::from_utf8(v).unwrap()).as_ref(),
            want.as_ref(),
            "{key} after a full restart"
        );
    }
    // A write still works after the restart.
    cluster
        .rt()
        .block_on(client.set(b"restart/after", b"yes"))
        .expect("write after restart");
}

// ---------------------------------------------------------------------------------------------
// 2b. catch-up by snapshot
// ---------------------------------------------------------------------------------------------

/// Applied entries between snapshots in the snapshot test.
const SNAPSHOT_THRESHOLD: u64 = 200;
/// Keys written while one node is down.
const SNAPSHOT_KEYS: usize = 1_200;
/// Size of each value: the snapshot (about 9.6 MiB) is far over gRPC's 4 MiB message limit.
const SNAPSHOT_VALUE_BYTES: usize = 8 * 1024;
/// What the node logs when it installs a snapshot from the leader.
const SNAPSHOT_RESTORED_LOG: &str = "state restored from the leader's snapshot";

/// Nodes that snapshot every [`SNAPSHOT_THRESHOLD`] entries and keep no log behind a snapshot,
/// so a node that missed writes can only catch up by a snapshot.
fn snapshot_often(config: &mut distributed_kv::config::NodeConfig) {
    config.snapshot_threshold = SNAPSHOT_THRESHOLD;
    config.log_retain_entries = 0;
}

#[test]
fn a_node_that_missed_many_writes_catches_up_by_a_chunked_snapshot() {
    let mut cluster = BlockingCluster::start(ClusterOptions {
        configure: snapshot_often,
        ..ClusterOptions::default()
    });
    let leader = cluster.wait_leader();
    let lagger = cluster.follower_of(leader);
    let status = cluster.terminate(&[lagger]);
    assert_eq!(status[0].code(), Some(0));

    let mut client = cluster.client();
    let value = |n: usize| format!("{n:08}").repeat(SNAPSHOT_VALUE_BYTES / 8);
    for n in 0..SNAPSHOT_KEYS {
        let key = format!("snap/{n:05}");
        cluster
            .rt()
            .block_on(client.set(key.as_bytes(), value(n).as_bytes()))
            .unwrap_or_else(|e| panic!("set {key}: {e}"));
    }
    let leader_status = cluster.status(leader).expect("leader status");
    assert!(
        leader_status.snapshot_index >= SNAPSHOT_THRESHOLD,
        "the leader made a snapshot and compacted its log: {leader_status:?}"
    );

    cluster.restart(&[lagger]);
    cluster.converge();
    let log = fs::read_to_string(cluster.log_path(lagger)).unwrap_or_default();
    assert!(
        log.contains(SNAPSHOT_RESTORED_LOG),
        "the node caught up by installing the leader's snapshot (its log says so)"
    );
    let lagger_status = cluster.status(lagger).expect("status");
    assert!(
        lagger_status.snapshot_index >= SNAPSHOT_THRESHOLD,
        "{lagger_status:?}"
    );
    // Its own state machine answers with the data written while it was down.
    let mut local = Client::new(vec![cluster.client_addr(lagger).to_string()]);
    let last = SNAPSHOT_KEYS - 1;
    let got = cluster
        .rt()
        .block_on(local.get(format!("snap/{last:05}").as_bytes(), true))
        .expect("serializable get on the restarted node");
    assert_eq!(got, Some(value(last).into_bytes()));
}

// ---------------------------------------------------------------------------------------------
// 3. kvctl against a cluster
// ---------------------------------------------------------------------------------------------

/// How long a test waits for `kvctl watch` to print what it expects.
const WATCH_LINES_TIMEOUT: Duration = Duration::from_secs(20);

/// `kvctl watch` printing to a pipe, its lines read on a thread; killed when dropped.
struct WatchingKvctl {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    got: Vec<String>,
}

impl WatchingKvctl {
    fn start(endpoints: &str, args: &[&str]) -> WatchingKvctl {
        let mut child = Command::new(kvctl_bin())
            .arg("--endpoints")
            .arg(endpoints)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("harness: kvctl starts");
        let stdout = child.stdout.take().expect("harness: kvctl's stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        WatchingKvctl {
            child,
            lines,
            got: Vec::new(),
        }
    }

    /// Every line printed so far, once there are at least `n` (or the timeout has passed).
    fn lines(&mut self, n: usize) -> &[String] {
        let deadline = Instant::now() + WATCH_LINES_TIMEOUT;
        while self.got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.got.push(line),
                Err(_) => break,
            }
        }
        &self.got
    }
}

impl Drop for WatchingKvctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Proves `kvctl watch` prints every change once and in order through the loss of the
/// member it watches: it goes on from the next endpoint at the revision after its last line.
#[test]
fn kvctl_watch_resumes_on_another_member_without_a_gap_or_a_repeat() {
    let mut cluster = BlockingCluster::start(ClusterOptions::default());
    let leader = cluster.wait_leader();
    // The first endpoint, the one watched, is a follower: it is killed half way.
    let watched = cluster.follower_of(leader);
    let mut endpoints = vec![cluster.client_addr(watched).to_string()];
    endpoints.extend(
        cluster
            .ids()
            .into_iter()
            .filter(|&id| id != watched)
            .map(|id| cluster.client_addr(id).to_string()),
    );
    let mut kvctl = WatchingKvctl::start(
        &endpoints.join(","),
        &["watch", "k", "--prefix", "--rev", "1"],
    );
    let mut client = cluster.client();
    let expected: Vec<String> = (0..40)
        .map(|i| format!("{}\tPUT\tk{}\t{i}", i + 2, i % 3))
        .collect();
    // Write number i puts `k(i % 3)` = i (at revision i + 2).
    let write = |cluster: &BlockingCluster, client: &mut Client, writes: std::ops::Range<usize>| {
        for i in writes {
            let (key, value) = (format!("k{}", i % 3), i.to_string());
            cluster
                .rt()
                .block_on(client.set(key.as_bytes(), value.as_bytes()))
                .expect("a majority takes the write");
        }
    };
    write(&cluster, &mut client, 0..20);
    assert_eq!(
        kvctl.lines(20),
        &expected[..20],
        "before the member is lost"
    );
    cluster.kill(watched);
    write(&cluster, &mut client, 20..40);
    assert_eq!(
        kvctl.lines(40),
        &expected[..],
        "after it: no change missed or printed twice"
    );
}

/// `max_value_bytes` of the kvctl test cluster.
const KVCTL_MAX_VALUE_BYTES: usize = 1024;
/// `max_list_limit` of the kvctl test cluster: small, so `list` must page.
const KVCTL_MAX_LIST_LIMIT: u32 = 2;
/// kvctl's own deadline when nothing is reachable, in milliseconds.
const UNREACHABLE_TIMEOUT_MS: u64 = 500;
/// kvctl must give up on unreachable endpoints within this long.
const UNREACHABLE_EXIT_LIMIT: Duration = Duration::from_secs(5);

/// Asserts kvctl exited with `code`, showing everything it printed if not.
fn assert_exit(out: &Finished, code: i32, what: &str) {
    assert_eq!(out.code(), code, "{what}: wrong exit status\n{out}");
}

/// kvctl through a follower: the transcript `tests/cmd/kvctl.md` (set, get, delete, list and
/// their exit codes), then what a transcript cannot say — every endpoint at once, `status
/// --json` discovering every member, values over the limit, nothing reachable.
#[test]
fn kvctl_commands_output_and_exit_codes() {
    let cluster = BlockingCluster::start(ClusterOptions {
        configure: |c| {
            c.max_value_bytes = KVCTL_MAX_VALUE_BYTES;
            c.max_list_limit = KVCTL_MAX_LIST_LIMIT;
        },
        ..ClusterOptions::default()
    });
    let leader = cluster.wait_leader();
    // Only a follower's address: kvctl must follow the leader hint.
    let follower = cluster.client_addr(cluster.follower_of(leader)).to_string();
    let all = cluster.endpoints().join(",");
    let run = |args: &[&str]| cluster.kvctl(&follower, args);

    // The commands and their output, as a user would see them: tests/cmd/kvctl.md.
    play_kvctl_transcript(&follower, "tests/cmd/kvctl.md");

    // Every endpoint given: the same answer.
    let out = cluster.kvctl(&all, &["get", "apple"]);
    assert_exit(&out, 0, "get via all endpoints");
    assert_eq!(out.stdout, "fruit\n");

    // status --json, through the follower: every member is discovered.
    let statuses = poll_until(
        "kvctl status --json to report three reachable nodes",
        LEADER_TIMEOUT,
        || {
            let out = run(&["status", "--json"]);
            assert_exit(&out, 0, "status --json");
            let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
                .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{out}"));
            let arr = v.as_array().expect("status --json prints an array").clone();
            (arr.len() == 3 && arr.iter().all(|n| n["reachable"] == true)).then_some(arr)
        },
    );
    let fields = [
        "id",
        "client_addr",
        "role",
        "term",
        "leader_id",
        "commit_index",
        "applied_index",
        "reachable",
    ];
    for node in &statuses {
        for f in fields {
            assert!(node.get(f).is_some(), "status entry lacks `{f}`: {node}");
        }
    }
    let leaders: Vec<_> = statuses.iter().filter(|n| n["role"] == "leader").collect();
    assert_eq!(leaders.len(), 1, "exactly one leader: {statuses:?}");
    let leader_id = leaders[0]["id"].as_u64().expect("numeric id");
    let mut ids: Vec<u64> = statuses.iter().map(|n| n["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3]);
    let mut addrs: Vec<String> = statuses
        .iter()
        .map(|n| n["client_addr"].as_str().unwrap().to_string())
        .collect();
    addrs.sort();
    let mut want_addrs = cluster.endpoints();
    want_addrs.sort();
    assert_eq!(addrs, want_addrs, "client addresses");
    for node in &statuses {
        assert_eq!(node["leader_id"].as_u64(), Some(leader_id), "{node}");
        assert!(node["term"].as_u64().unwrap() >= 1, "{node}");
        assert!(
            node["applied_index"].as_u64().unwrap() <= node["commit_index"].as_u64().unwrap(),
            "{node}"
        );
    }

    // Bad input: exit 2, and the message says why.
    let out = run(&["set", "", "x"]);
    assert_exit(&out, 2, "set with an empty key");
    assert!(out.stderr.contains("empty"), "{out}");
    for len in [KVCTL_MAX_VALUE_BYTES + 1, 3 * KVCTL_MAX_VALUE_BYTES] {
        let big = "v".repeat(len);
        let out = run(&["set", "big", &big]);
        assert_exit(&out, 2, &format!("set with a {len}-byte value"));
        assert!(
            out.stderr.contains(&KVCTL_MAX_VALUE_BYTES.to_string())
                && out.stderr.contains("max_value_bytes"),
            "stderr names the limit\n{out}"
        );
    }
    assert_exit(&run(&["get", "big"]), 1, "a refused value is not stored");
    let at_limit = "v".repeat(KVCTL_MAX_VALUE_BYTES);
    assert_exit(
        &run(&["set", "big", &at_limit]),
        0,
        "value of exactly the limit",
    );

    // Nothing reachable: exit 3, soon after the deadline.
    let closed = free_addr();
    let started = Instant::now();
    let timeout_ms = UNREACHABLE_TIMEOUT_MS.to_string();
    let out = cluster.kvctl(&closed, &["--timeout-ms", &timeout_ms, "get", "k"]);
    assert_exit(&out, 3, "no node reachable");
    assert!(
        started.elapsed() < UNREACHABLE_EXIT_LIMIT,
        "kvctl took {:?} to give up",
        started.elapsed()
    );
    assert!(!out.stderr.trim().is_empty(), "says why: {out}");
    let out = cluster.kvctl(&closed, &["--timeout-ms", &timeout_ms, "set", "k", "v"]);
    assert_exit(&out, 3, "set with no node reachable");
    let out = cluster.kvctl(&closed, &["status", "--json"]);
    assert_exit(&out, 3, "status with no node reachable");
}

/// kvctl's etcd-API commands through a follower of a fresh cluster: the transcript
/// `tests/cmd/kvctl-etcd.md` (`txn`, `get --rev`, `compact`, `--show-revisions`), whose
/// expected output is etcd's own (`crates/kvctl/tests/etcd.rs` runs it against etcd 3.4); then
/// kv.v1 Get answering the same revisions as etcd's API.
#[test]
fn kvctl_etcd_commands_match_etcd() {
    let cluster = BlockingCluster::start(ClusterOptions::default());
    let leader = cluster.wait_leader();
    let follower = cluster.client_addr(cluster.follower_of(leader)).to_string();

    play_kvctl_transcript(&follower, "tests/cmd/kvctl-etcd.md");

    // The transcript leaves greeting created at revision 2 and last put at 3, its second put.
    let out = cluster.kvctl(&follower, &["get", "greeting", "--show-revisions"]);
    assert_exit(&out, 0, "kv.v1 get --show-revisions");
    assert_eq!(
        out.stdout, "create_revision=2 mod_revision=3 version=2\nhello world\n",
        "kv.v1 Get's revisions are etcd's\n{out}"
    );
}

/// A value far over `max_value_bytes` (but under the OS limit on one argument) should be refused
/// with a message naming the configured limit, like a value slightly over it: the server's gRPC
/// decode limit must not answer first with a transport error.
#[test]
fn kvctl_far_oversized_value_names_the_configured_limit() {
    let cluster = BlockingCluster::start(ClusterOptions {
        nodes: 1,
        configure: |c| c.max_value_bytes = KVCTL_MAX_VALUE_BYTES,
        ..ClusterOptions::default()
    });
    cluster.wait_leader();
    let huge = "v".repeat(100 * 1024);
    let out = cluster.kvctl(cluster.client_addr(1), &["set", "huge", &huge]);
    assert_exit(&out, 2, "set with a value 100x over max_value_bytes");
    assert!(
        out.stderr.contains(&KVCTL_MAX_VALUE_BYTES.to_string())
            && out.stderr.contains("max_value_bytes"),
        "stderr names the configured limit\n{out}"
    );
}

/// `max_value_bytes` of the stdin test cluster: the server's default limit, 1 MiB.
const STDIN_MAX_VALUE_BYTES: usize = 1024 * 1024;

/// A `len`-byte printable value with newlines and tabs in it (and a newline at the end), the
/// same for every run.
fn text_value(len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 \t\n";
    let mut v: Vec<u8> = (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
        .collect();
    if let Some(last) = v.last_mut() {
        *last = b'\n';
    }
    v
}

/// `kvctl set KEY` with no VALUE stores every byte of standard input: a 1 MiB value, which no
/// command line can carry, arrives exactly (a trailing newline included), bytes that are not
/// UTF-8 too, an empty input sets an empty value just as `set KEY ""` does, and the limit
/// still applies.
#[test]
fn kvctl_set_without_a_value_reads_it_from_stdin() {
    let cluster = BlockingCluster::start(ClusterOptions {
        configure: |c| c.max_value_bytes = STDIN_MAX_VALUE_BYTES,
        ..ClusterOptions::default()
    });
    let leader = cluster.wait_leader();
    let follower = cluster.client_addr(cluster.follower_of(leader)).to_string();
    let dir = cluster.dir();
    let mut client = cluster.client();
    let mut stored = |key: &str| {
        cluster
            .rt()
            .block_on(client.get(key.as_bytes(), false))
            .expect("get")
    };

    let big = text_value(STDIN_MAX_VALUE_BYTES);
    let big_file = dir.join("big.value");
    fs::write(&big_file, &big).expect("write the value file");
    let out = kvctl_with_stdin(dir, &follower, &["set", "big"], &big_file);
    assert_exit(&out, 0, "set of a 1 MiB value from stdin via a follower");
    assert_eq!(stored("big").as_deref(), Some(&big[..]), "stored exactly");
    let out = cluster.kvctl(&follower, &["get", "big"]);
    assert_exit(&out, 0, "get of the 1 MiB value");
    assert!(
        out.stdout.len() == big.len() + 1
            && out.stdout.as_bytes()[..big.len()] == big[..]
            && out.stdout.ends_with('\n'),
        "kvctl get prints the value exactly, then a newline ({} bytes printed)",
        out.stdout.len()
    );

    let binary = [0xff, 0x00, 0xfe, b'\n', 0x80];
    let binary_file = dir.join("binary.value");
    fs::write(&binary_file, binary).expect("write the value file");
    let out = kvctl_with_stdin(dir, &follower, &["set", "binary"], &binary_file);
    assert_exit(&out, 0, "set of a non-UTF-8 value from stdin");
    assert_eq!(stored("binary").as_deref(), Some(&binary[..]));

    let empty_file = dir.join("empty.value");
    fs::write(&empty_file, b"").expect("write the value file");
    let out = kvctl_with_stdin(dir, &follower, &["set", "from-stdin"], &empty_file);
    assert_exit(&out, 0, "set from an empty stdin");
    let out = cluster.kvctl(&follower, &["set", "from-arg", ""]);
    assert_exit(&out, 0, "set to an empty argument");
    for key in ["from-stdin", "from-arg"] {
        assert_eq!(stored(key), Some(Vec::new()), "{key}: an empty value");
        let out = cluster.kvctl(&follower, &["get", key]);
        assert_exit(&out, 0, "get of an empty value");
        assert_eq!(out.stdout, "\n", "{key}");
    }

    let over = text_value(STDIN_MAX_VALUE_BYTES + 1);
    let over_file = dir.join("over.value");
    fs::write(&over_file, &over).expect("write the value file");
    let out = kvctl_with_stdin(dir, &follower, &["set", "over"], &over_file);
    assert_exit(&out, 2, "set of a value over the limit from stdin");
    assert!(
        out.stderr.contains(&STDIN_MAX_VALUE_BYTES.to_string())
            && out.stderr.contains("max_value_bytes"),
        "stderr names the limit\n{out}"
    );
    assert_eq!(stored("over"), None, "a refused value is not stored");
}

/// Size of each value in the big List test.
const BIG_LIST_VALUE_BYTES: usize = 512 * 1024;
/// Number of values in the big List test: 6 MiB in all, twice the default page bound.
const BIG_LIST_VALUES: usize = 12;

/// 12 values of 512 KiB, listed with the default `max_list_bytes` (3 MiB), arrive whole in
/// several pages, each under the bound as encoded on the wire: to a plain gRPC client with
/// tonic's default 4 MiB decode limit, and through `kvctl list`, which pages by `next_key`.
#[test]
fn a_list_of_big_values_arrives_whole_in_pages_under_the_byte_bound() {
    use distributed_kv::config::DEFAULT_MAX_LIST_BYTES;
    use kv_api::proto::kv_client::KvClient;
    use kv_api::proto::ListRequest;
    use prost::Message as _;

    let cluster = BlockingCluster::start(ClusterOptions {
        nodes: 1,
        configure: |c| c.max_value_bytes = 1024 * 1024,
        ..ClusterOptions::default()
    });
    assert_eq!(
        cluster.config(1).max_list_bytes,
        DEFAULT_MAX_LIST_BYTES,
        "the test cluster runs with the default byte bound"
    );
    cluster.wait_leader();
    let addr = cluster.client_addr(1).to_string();
    let key = |i: usize| format!("big/{i:02}");
    let value = |i: usize| {
        char::from(b'a' + i as u8)
            .to_string()
            .repeat(BIG_LIST_VALUE_BYTES)
    };
    let mut client = cluster.client();
    for i in 0..BIG_LIST_VALUES {
        cluster
            .rt()
            .block_on(client.set(key(i).as_bytes(), value(i).as_bytes()))
            .expect("set a big value");
    }

    let (pages, got) = cluster.rt().block_on(async {
        let mut raw = KvClient::connect(format!("http://{addr}"))
            .await
            .expect("connect with tonic's default limits");
        let mut pages = Vec::new();
        let mut got = Vec::new();
        let mut start = Vec::new();
        loop {
            let page = raw
                .list(ListRequest {
                    prefix: b"big/".to_vec(),
                    start_key: start.clone(),
                    ..Default::default()
                })
                .await
                .expect("a page fits a default gRPC client")
                .into_inner();
            let encoded = page.encoded_len();
            assert!(
                encoded <= DEFAULT_MAX_LIST_BYTES,
                "a page of {encoded} bytes, over {DEFAULT_MAX_LIST_BYTES}"
            );
            assert!(!page.kvs.is_empty(), "every page holds a key");
            assert_eq!(page.more, !page.next_key.is_empty(), "more says next_key");
            pages.push((page.kvs.len(), encoded));
            got.extend(page.kvs.into_iter().map(|kv| (kv.key, kv.value)));
            if !page.more {
                break (pages, got);
            }
            start = page.next_key;
        }
    });
    // 5 values of 512 KiB and their framing fit in 3 MiB; a 6th does not.
    assert_eq!(
        pages.iter().map(|p| p.0).collect::<Vec<_>>(),
        [5, 5, 2],
        "pages cut by bytes: {pages:?}"
    );
    let want: Vec<_> = (0..BIG_LIST_VALUES)
        .map(|i| (key(i).into_bytes(), value(i).into_bytes()))
        .collect();
    assert!(got == want, "every value arrives whole, in order, once");

    let out = cluster.kvctl(&addr, &["list", "--prefix", "big/"]);
    assert_exit(&out, 0, "kvctl list of big values");
    let want_out: String = (0..BIG_LIST_VALUES)
        .map(|i| format!("{}\t{}\n", key(i), value(i)))
        .collect();
    assert!(
        out.stdout == want_out,
        "kvctl list prints every value whole across pages ({} of {} bytes printed)",
        out.stdout.len(),
        want_out.len()
    );
    let out = cluster.kvctl(&addr, &["list", "--prefix", "big/", "--limit", "7"]);
    assert_exit(&out, 0, "kvctl list --limit across a byte cut");
    assert!(
        out.stdout == want_out[..7 * (key(0).len() + 1 + BIG_LIST_VALUE_BYTES + 1)],
        "--limit 7 stops within the second page"
    );
}

// ---------------------------------------------------------------------------------------------
// 3b. advertised addresses
// ---------------------------------------------------------------------------------------------

/// Nodes listening on 0.0.0.0 with `advertise_client_addr` / `advertise_peer_addr` set to their
/// 127.0.0.1 addresses: a follower's leader hint, Status and kvctl all carry the advertised
/// addresses, never 0.0.0.0, and a client given only a follower completes a write at the leader.
#[test]
fn nodes_listening_on_0_0_0_0_hint_their_advertised_addresses() {
    use distributed_kv::error::LEADER_ADDR_METADATA;
    use kv_api::proto::kv_client::KvClient;
    use kv_api::proto::SetRequest;

    let cluster = BlockingCluster::start(ClusterOptions {
        listen_on_unspecified: true,
        ..ClusterOptions::default()
    });
    for id in cluster.ids() {
        let config = cluster.config(id);
        assert!(
            config.client_addr.starts_with("0.0.0.0:") && config.peer_addr.starts_with("0.0.0.0:"),
            "node {id} listens on 0.0.0.0: {config:?}"
        );
    }
    let leader = cluster.wait_leader();
    let leader_addr = cluster.client_addr(leader).to_string();
    assert!(leader_addr.starts_with("127.0.0.1:"), "{leader_addr}");
    let f = cluster.follower_of(leader);
    let follower = cluster.client_addr(f).to_string();

    // The hint itself, as a follower sends it.
    let hint = cluster.rt().block_on(async {
        let mut raw = KvClient::connect(format!("http://{follower}"))
            .await
            .expect("connect to the follower");
        let status = raw
            .set(SetRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            })
            .await
            .expect_err("a follower refuses a write");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        status
            .metadata()
            .get(LEADER_ADDR_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    assert_eq!(hint.as_deref(), Some(&leader_addr[..]), "the leader hint");

    // Status names advertised addresses only: the node's own, the leader's, and every
    // member's peer address (initial_cluster, which lists the advertised ones).
    let status = cluster.status(f).expect("follower status");
    assert_eq!(status.client_addr, follower);
    assert_eq!(status.leader_client_addr, leader_addr);
    let peers: Vec<&str> = status.members.iter().map(|m| &m.peer_addr[..]).collect();
    let want_peers: Vec<&str> = cluster
        .ids()
        .into_iter()
        .map(|id| cluster.config(id).advertised_peer_addr())
        .collect();
    assert_eq!(peers, want_peers, "members' peer addresses");
    assert!(
        peers.iter().all(|p| p.starts_with("127.0.0.1:")),
        "{peers:?}"
    );

    // The library client, given only the follower, follows the hint and writes.
    let mut client = Client::new(vec![follower.clone()]).with_timeout(CLIENT_OP_TIMEOUT);
    cluster
        .rt()
        .block_on(client.set(b"advertised", b"yes"))
        .expect("a write through the follower's hint");
    assert_eq!(client.current_endpoint(), leader_addr);
    assert_eq!(client.endpoints(), [follower.clone(), leader_addr.clone()]);

    // kvctl likewise; status --json shows the advertised client address of every node.
    let out = cluster.kvctl(&follower, &["set", "greeting", "hello"]);
    assert_exit(&out, 0, "kvctl set via a follower");
    let out = cluster.kvctl(&follower, &["get", "greeting"]);
    assert_exit(&out, 0, "kvctl get via a follower");
    assert_eq!(out.stdout, "hello\n");
    let mut want_addrs = cluster.endpoints();
    want_addrs.sort();
    poll_until(
        "kvctl status --json to show every node's advertised address",
        LEADER_TIMEOUT,
        || {
            let out = cluster.kvctl(&follower, &["status", "--json"]);
            assert_exit(&out, 0, "status --json");
            let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
                .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{out}"));
            let mut addrs: Vec<String> = v
                .as_array()?
                .iter()
                .filter(|n| n["reachable"] == true)
                .map(|n| n["client_addr"].as_str().unwrap_or("").to_string())
                .collect();
            addrs.sort();
            (addrs == want_addrs).then_some(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// 4. bad input to the node binary
// ---------------------------------------------------------------------------------------------

/// Runs the node binary with `args` in `dir` and expects it to refuse to start: a non-zero exit
/// code (not a signal), one line on stderr containing every string in `names`, and no panic.
fn expect_refused(dir: &Path, what: &str, args: &[&OsStr], names: &[&str]) -> Finished {
    let mut cmd = Command::new(node_bin());
    clean_env(&mut cmd).current_dir(dir).args(args);
    let out = run_to_exit(&mut cmd, dir, EXIT_TIMEOUT);
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("{what}: died from a signal (a panic or abort?)\n{out}"));
    assert_ne!(code, 0, "{what}: must not succeed\n{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: stderr must be one line\n{out}");
    let lower = out.stderr.to_lowercase();
    assert!(
        !lower.contains("panicked") && !lower.contains("backtrace"),
        "{what}: a panic\n{out}"
    );
    for name in names {
        assert!(
            out.stderr.contains(name),
            "{what}: stderr must name `{name}`\n{out}"
        );
    }
    out
}

/// Removes every `KV_*` variable from this test process's environment, once, so that the
/// transcripts' commands (which inherit it) start from a known state.
fn clear_kv_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KV_") {
                std::env::remove_var(key);
            }
        }
    });
}

/// The node's answers to bad configuration, as the transcript `tests/cmd/config-errors.md`
/// shows them: one line naming the file (and line) and the field, exit 2 (exit 1 for a data
/// dir that cannot be created), and no port bound.
/// Plays the kvctl transcript `case` (trycmd) against the nodes at `endpoints`, with no
/// `KV_*` variable of the test's own environment leaking in.
fn play_kvctl_transcript(endpoints: &str, case: &str) {
    clear_kv_env();
    trycmd::TestCases::new()
        .register_bin("kvctl", kvctl_bin())
        .env("KV_ENDPOINTS", endpoints)
        .env("NO_COLOR", "1")
        .timeout(KVCTL_TIMEOUT)
        .case(case)
        .run();
}

#[test]
fn bad_config_transcript() {
    clear_kv_env();
    trycmd::TestCases::new()
        .register_bin("distributed_kv", node_bin())
        .env("NO_COLOR", "1")
        .timeout(EXIT_TIMEOUT)
        .case("tests/cmd/config-errors.md")
        .run();
}

/// A single-node store started from flags only, in `dir`, with its data in `data_dir`.
fn single_node_from_flags(dir: &Path, node_id: u64, data_dir: &Path, log: &Path) -> (Proc, String) {
    let client = free_addr();
    let log = File::create(log).expect("create log");
    let mut cmd = Command::new(node_bin());
    clean_env(&mut cmd)
        .current_dir(dir)
        .env("KV_TICK_INTERVAL_MS", TICK_INTERVAL_MS.to_string())
        .arg("--node-id")
        .arg(node_id.to_string())
        .arg("--client-addr")
        .arg(&client)
        .arg("--peer-addr")
        .arg(free_addr())
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    (
        Proc::spawn(format!("single node {node_id}"), &mut cmd).unwrap_or_else(|e| panic!("{e}")),
        client,
    )
}

/// Polls until the node at `addr` (run by `proc`) answers Status; returns the status.
fn wait_single_serving(rt: &Runtime, proc: &mut Proc, addr: &str, log: &Path) -> StatusResponse {
    poll_until(
        &format!("a node to serve at {addr}"),
        NODE_START_TIMEOUT,
        || {
            if let Some(status) = proc.try_status() {
                panic!(
                    "{} exited during start-up: {status:?}\n{}",
                    proc.name(),
                    tail(log, LOG_TAIL_LINES)
                );
            }
            rt.block_on(status_of(addr)).ok()
        },
    )
}

#[test]
fn data_dir_in_use_or_of_another_node_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let rt = Runtime::new().expect("runtime");
    let data = dir.join("node1-data");
    let log1 = dir.join("node1.log");
    let (mut first, addr) = single_node_from_flags(dir, 1, &data, &log1);
    wait_single_serving(&rt, &mut first, &addr, &log1);

    // A second process on the same data dir, while the first runs.
    let data_s = data.display().to_string();
    let out = expect_refused(
        dir,
        "data dir in use",
        &[
            OsStr::new("--client-addr"),
            OsStr::new(&free_addr()),
            OsStr::new("--peer-addr"),
            OsStr::new(&free_addr()),
            OsStr::new("--data-dir"),
            data.as_os_str(),
        ],
        &[&data_s],
    );
    assert!(
        out.stderr.contains("in use"),
        "says the dir is in use\n{out}"
    );
    // The refused process did not disturb the running one.
    assert!(first.is_running(), "the first node must keep running");
    let mut client = Client::new(vec![addr.clone()]).with_timeout(CLIENT_OP_TIMEOUT);
    rt.block_on(client.set(b"k", b"v"))
        .expect("the first node still serves");

    first.terminate().expect("harness: SIGTERM to node 1");
    let status = first
        .wait_timeout(EXIT_TIMEOUT)
        .expect("node 1 exits after SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "node 1 exit status after SIGTERM; its log:\n{}",
        tail(&log1, LOG_TAIL_LINES)
    );

    // Node 2 started on node 1's data dir.
    let out = expect_refused(
        dir,
        "node 2 on node 1's data dir",
        &[
            OsStr::new("--node-id"),
            OsStr::new("2"),
            OsStr::new("--client-addr"),
            OsStr::new(&free_addr()),
            OsStr::new("--peer-addr"),
            OsStr::new(&free_addr()),
            OsStr::new("--data-dir"),
            data.as_os_str(),
        ],
        &[&data_s],
    );
    assert!(
        out.stderr.contains("node 1") && out.stderr.contains("node 2"),
        "the message names both the owner and the intruder\n{out}"
    );

    // Node 1's data is intact: it starts again and still has its key.
    let (mut again, addr) = single_node_from_flags(dir, 1, &data, &dir.join("node1-again.log"));
    wait_single_serving(&rt, &mut again, &addr, &dir.join("node1-again.log"));
    let mut client = Client::new(vec![addr]).with_timeout(CLIENT_OP_TIMEOUT);
    let got = rt
        .block_on(client.get(b"k", false))
        .expect("get after restart");
    assert_eq!(got.as_deref(), Some(&b"v"[..]));
}

// ---------------------------------------------------------------------------------------------
// 5. garbage on the sockets
// ---------------------------------------------------------------------------------------------

/// Bytes of random garbage sent per connection.
const GARBAGE_BYTES: usize = 256 * 1024;
/// How long to wait for the node to close a garbage connection.
const GARBAGE_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The HTTP/2 connection preface: garbage after it reaches the frame parser.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Opens a raw TCP connection to `addr`, writes `prefix` then `len` random bytes, and reads
/// whatever comes back until the node closes the connection or a timeout passes. Write and
/// read errors (the node hanging up) are expected and ignored.
fn send_garbage(addr: &str, prefix: &[u8], len: usize, rng: &mut impl RngCore) {
    let mut stream = TcpStream::connect(addr).expect("connect for garbage");
    stream
        .set_write_timeout(Some(GARBAGE_READ_TIMEOUT))
        .unwrap();
    stream.set_read_timeout(Some(GARBAGE_READ_TIMEOUT)).unwrap();
    let mut bytes = prefix.to_vec();
    let start = bytes.len();
    bytes.resize(start + len, 0);
    rng.fill_bytes(&mut bytes[start..]);
    let _ = stream.write_all(&bytes);
    let _ = stream.flush();
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
}

#[test]
fn garbage_on_peer_and_client_ports_does_not_crash_a_node() {
    let mut cluster = BlockingCluster::start(ClusterOptions::default());
    let target = cluster.wait_leader();
    let seed: u64 = rand::thread_rng().gen();
    println!("garbage seed: {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let peer = cluster.config(target).peer_addr.clone();
    let client = cluster.client_addr(target).to_string();

    for addr in [&peer, &client] {
        send_garbage(addr, b"", GARBAGE_BYTES, &mut rng);
        send_garbage(addr, HTTP2_PREFACE, GARBAGE_BYTES, &mut rng);
        send_garbage(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1024, &mut rng);
        // Many short connections that say a little and hang up.
        for _ in 0..50 {
            let len = rng.gen_range(1..64);
            send_garbage(addr, b"", len, &mut rng);
        }
    }
    // Well-formed gRPC carrying garbage Raft messages.
    let batches = cluster.rt().block_on(async {
        let mut raft = RaftTransportClient::connect(format!("http://{peer}"))
            .await
            .expect("connect to the peer service");
        let mut answers = Vec::new();
        for _ in 0..20 {
            let len = rng.gen_range(0..512);
            let mut junk = vec![0u8; len];
            rng.fill_bytes(&mut junk);
            let batch = RaftBatch {
                from: rng.gen(),
                from_client_addr: "garbage".into(),
                messages: vec![junk.clone(), vec![0xff; 16]],
            };
            answers.push(raft.send(batch).await.map(|_| ()));
            let chunk = SnapshotChunk {
                from: 99,
                from_client_addr: "garbage".into(),
                message: junk,
                data: vec![1, 2, 3],
            };
            let stream = tokio_stream::iter(vec![chunk]);
            answers.push(raft.send_snapshot(stream).await.map(|_| ()));
        }
        answers
    });
    assert!(
        batches.iter().all(|r| r.is_err()),
        "garbage Raft messages must be refused: {batches:?}"
    );

    let exited = cluster.exited(target);
    assert!(exited.is_none(), "the node died from garbage: {exited:?}");
    let status = cluster
        .status(target)
        .expect("the node still answers Status after garbage");
    assert_eq!(status.node_id, target);
    // The cluster, and the node that got the garbage, still serve.
    let mut c = cluster.client();
    cluster
        .rt()
        .block_on(c.set(b"after-garbage", b"ok"))
        .expect("write after garbage");
    let mut local = Client::new(vec![client]).with_timeout(CLIENT_OP_TIMEOUT);
    let got = cluster
        .rt()
        .block_on(local.get(b"after-garbage", false))
        .expect("linearizable read on the node that got the garbage");
    assert_eq!(got.as_deref(), Some(&b"ok"[..]));
    let leader = cluster.wait_leader();
    assert_eq!(cluster.running().len(), 3);
    println!("leader after garbage: node {leader}");
}

// ---------------------------------------------------------------------------------------------
// 6. no config file: flags and environment only
// ---------------------------------------------------------------------------------------------

#[test]
fn single_node_from_flags_and_env_serves() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let rt = Runtime::new().expect("runtime");
    let data = dir.join("store");
    let log = dir.join("node.log");
    let (mut node, addr) = single_node_from_flags(dir, 1, &data, &log);
    let status = wait_single_serving(&rt, &mut node, &addr, &log);
    assert_eq!(status.members.len(), 1, "a single-node cluster: {status:?}");
    let status = poll_until("the single node to lead", LEADER_TIMEOUT, || {
        rt.block_on(status_of(&addr))
            .ok()
            .filter(|s| s.role() == Role::Leader)
    });
    assert_eq!(status.leader_id, 1);

    let out = kvctl(dir, &addr, &["set", "flag-key", "flag-value"]);
    assert_exit(&out, 0, "set on a flags-only node");
    let out = kvctl(dir, &addr, &["get", "flag-key"]);
    assert_exit(&out, 0, "get on a flags-only node");
    assert_eq!(out.stdout, "flag-value\n");
    let mut client = Client::new(vec![addr.clone()]).with_timeout(CLIENT_OP_TIMEOUT);
    rt.block_on(client.set(b"lib-key", b"lib-value"))
        .expect("library client set");
    assert_eq!(
        rt.block_on(client.get(b"lib-key", false)).expect("get"),
        Some(b"lib-value".to_vec())
    );

    assert!(data.is_dir(), "--data-dir {} was used", data.display());
    assert!(
        !dir.join("data").exists(),
        "the default ./data must not be used when --data-dir is given"
    );
    node.terminate().expect("harness: SIGTERM to the node");
    let status = node.wait_timeout(EXIT_TIMEOUT).expect("exit after SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM; the node's log:\n{}",
        tail(&log, LOG_TAIL_LINES)
    );
}

#[test]
fn node_help_lists_the_flags() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(node_bin());
    clean_env(&mut cmd).current_dir(tmp.path()).arg("--help");
    let out = run_to_exit(&mut cmd, tmp.path(), EXIT_TIMEOUT);
    assert_eq!(out.code(), 0, "--help exits 0\n{out}");
    for flag in [
        "--election-ticks",
        "--initial-cluster",
        "--config",
        "--data-dir",
    ] {
        assert!(out.stdout.contains(flag), "--help lists {flag}\n{out}");
    }
    assert!(
        !out.stdout.contains("--unsafe-"),
        "the testing-only unsafe options stay out of --help\n{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. gRPC server reflection
// ---------------------------------------------------------------------------------------------

/// Proves: reflection lists both client APIs, kv.v1 and etcd's, so grpcurl can call them.
#[test]
fn grpc_reflection_lists_the_client_api() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let cluster = BlockingCluster::start(ClusterOptions {
        nodes: 1,
        ..ClusterOptions::default()
    });
    let addr = cluster.client_addr(1).to_string();
    let names = cluster.rt().block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut c = ServerReflectionClient::new(channel);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = c
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .expect("reflection call")
            .into_inner();
        match answers
            .message()
            .await
            .expect("answer")
            .expect("one answer")
            .message_response
        {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
            }
            other => panic!("unexpected reflection answer: {other:?}"),
        }
    });
    for served in [
        "kv.v1.Kv",
        "etcdserverpb.KV",
        "etcdserverpb.Maintenance",
        "etcdserverpb.Cluster",
    ] {
        assert!(names.iter().any(|n| n == served), "{served}: {names:?}");
    }
}

/// What the node logs when start-up finishes the install of a snapshot that a crash
/// interrupted.
const INSTALL_FINISHED_LOG: &str = "finishing the install of a received snapshot";
/// Keys written while the node is down in the interrupted-install test.
const INTERRUPTED_KEYS: usize = 300;

/// A crash after a received snapshot was stored in the data dir but before the log recorded it
/// leaves the snapshot file ahead of the log. Copying the leader's snapshot file into a stopped
/// follower's data dir creates exactly that state; the follower must start, finish the install,
/// and converge.
#[test]
fn a_snapshot_stored_but_not_recorded_before_a_crash_is_installed_at_start_up() {
    let mut cluster = BlockingCluster::start(ClusterOptions {
        configure: snapshot_often,
        ..ClusterOptions::default()
    });
    let leader = cluster.wait_leader();
    let follower = cluster.follower_of(leader);
    cluster.terminate(&[follower]);
    let mut client = cluster.client();
    for n in 0..INTERRUPTED_KEYS {
        let key = format!("crash/{n:04}");
        cluster
            .rt()
            .block_on(client.set(key.as_bytes(), b"v"))
            .unwrap_or_else(|e| panic!("set {key}: {e}"));
    }
    let snapshot = |id: u64| {
        cluster
            .config(id)
            .data_dir
            .join(distributed_kv::consensus::snapshot::SNAPSHOT_FILE)
    };
    fs::copy(snapshot(leader), snapshot(follower)).expect("copy the leader's snapshot");

    cluster.restart(&[follower]);
    cluster.converge();
    let log = fs::read_to_string(cluster.log_path(follower)).unwrap_or_default();
    assert!(
        log.contains(INSTALL_FINISHED_LOG),
        "start-up finished the install"
    );
}

// ---------------------------------------------------------------------------------------------
// A leader's SIGTERM, and overload, under many writers
// ---------------------------------------------------------------------------------------------

/// Writers of the leader-shutdown and overload tests.
const LOAD_WRITERS: usize = 64;
/// Acknowledged writes before the leader is stopped.
const ACKS_BEFORE_SIGTERM: usize = 500;
/// A stopping leader must exit within this (the bound).
const SIGTERM_EXIT_LIMIT: Duration = Duration::from_secs(2);
/// Writes that may end as "outcome unknown" because a leader stopped: near zero.
const MAX_UNKNOWN_ON_HANDOVER: usize = 2;
/// `max_pending_requests` of the overload test's nodes; it runs twice as many writers.
const OVERLOAD_PENDING_LIMIT: usize = 32;
/// How long the overload test loads the cluster.
const OVERLOAD_TIME: Duration = Duration::from_secs(8);
/// The overload test's bound on the p99 latency of acknowledged writes.
const OVERLOAD_P99_LIMIT: Duration = Duration::from_secs(1);

/// What the writers of a load test saw.
#[derive(Default)]
struct LoadLog {
    /// Acknowledged writes: key, when it started, how long it took.
    acked: Vec<(String, Instant, Duration)>,
    /// Writes whose outcome is unknown.
    unknown: Vec<(String, Instant, String)>,
    /// Writes that certainly did not happen.
    failed: usize,
}

/// Starts `writers` tasks writing distinct keys through their own clients until `stop`.
fn start_writers(
    cluster: &BlockingCluster,
    writers: usize,
    log: &Arc<Mutex<LoadLog>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let (log, stop) = (log.clone(), stop.clone());
            let mut client = Client::new(cluster.endpoints()).with_timeout(WRITER_OP_TIMEOUT);
            cluster.rt().spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("load{w}/{n:06}");
                    let started = Instant::now();
                    let result = client.set(key.as_bytes(), b"v").await;
                    let took = started.elapsed();
                    let mut log = log.lock().unwrap();
                    match result {
                        Ok(_) => log.acked.push((key, started, took)),
                        Err(ClientError::Unknown(e)) => log.unknown.push((key, started, e)),
                        Err(_) => log.failed += 1,
                    }
                    n += 1;
                }
            })
        })
        .collect()
}

/// Proves: SIGTERM to a leader under 64 writers hands leadership over, exits 0 within 2 s,
/// and the writes in flight complete or are redirected — next to none end "outcome unknown",
/// and every acknowledged one is there afterwards.
#[test]
fn sigterm_of_a_loaded_leader_hands_over_and_exits_at_once() {
    let mut cluster = BlockingCluster::start(ClusterOptions::default());
    let leader = cluster.wait_leader();
    let log = Arc::new(Mutex::new(LoadLog::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&cluster, LOAD_WRITERS, &log, &stop);
    poll_until("writes before the SIGTERM", WRITE_PHASE_TIMEOUT, || {
        (log.lock().unwrap().acked.len() >= ACKS_BEFORE_SIGTERM).then_some(())
    });

    let sent = Instant::now();
    let status = cluster.terminate(&[leader])[0];
    let exit_time = sent.elapsed();
    let new_leader = cluster.wait_leader();
    poll_until("writes after the SIGTERM", WRITE_PHASE_TIMEOUT, || {
        let log = log.lock().unwrap();
        (log.acked.iter().filter(|a| a.1 > sent).count() >= ACKS_BEFORE_SIGTERM).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        cluster.rt().block_on(w).expect("harness: a writer task");
    }

    let log = log.lock().unwrap();
    println!(
        "SIGTERM of leader node {}: exit {:?} after {exit_time:?}; node {} leads; {} writes \
         acknowledged, {} outcome unknown, {} refused",
        leader,
        status.code(),
        new_leader,
        log.acked.len(),
        log.unknown.len(),
        log.failed
    );
    assert_eq!(status.code(), Some(0), "a stopped leader exits 0");
    assert!(
        exit_time <= SIGTERM_EXIT_LIMIT,
        "the leader took {exit_time:?} to exit"
    );
    assert!(
        log.unknown.len() <= MAX_UNKNOWN_ON_HANDOVER,
        "writes with unknown outcome: {:?}",
        log.unknown
    );
    // Every acknowledged write is there.
    let mut reader = cluster.client();
    for (key, _, _) in log.acked.iter().step_by(7) {
        let v = cluster
            .rt()
            .block_on(reader.get(key.as_bytes(), false))
            .unwrap_or_else(|e| panic!("read {key}: {e}"));
        assert_eq!(
            v.as_deref(),
            Some(&b"v"[..]),
            "acknowledged {key} is missing"
        );
    }
}

/// Proves: twice as many concurrent writers as a node's pending-request limit neither depose
/// the leader (client load cannot crowd out heartbeats) nor let acknowledged writes' latency
/// grow without bound.
#[test]
fn overload_of_twice_the_pending_limit_keeps_the_leader() {
    let cluster = BlockingCluster::start(ClusterOptions {
        configure: |c| c.max_pending_requests = OVERLOAD_PENDING_LIMIT,
        ..ClusterOptions::default()
    });
    let leader = cluster.wait_leader();
    let before = cluster
        .status(leader)
        .expect("harness: the leader's status");
    let log = Arc::new(Mutex::new(LoadLog::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&cluster, 2 * OVERLOAD_PENDING_LIMIT, &log, &stop);
    let started = Instant::now();
    let mut terms = Vec::new();
    while started.elapsed() < OVERLOAD_TIME {
        if let Ok(s) = cluster.status(leader) {
            terms.push((s.role(), s.term));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        cluster.rt().block_on(w).expect("harness: a writer task");
    }
    let log = log.lock().unwrap();
    let mut lat: Vec<Duration> = log.acked.iter().map(|a| a.2).collect();
    lat.sort();
    let p99 = lat[lat.len() * 99 / 100];
    println!(
        "overload ({} writers, limit {OVERLOAD_PENDING_LIMIT}): {} acknowledged in {OVERLOAD_TIME:?}, \
         p50 {:?}, p99 {p99:?}, {} refused, {} unknown",
        2 * OVERLOAD_PENDING_LIMIT,
        lat.len(),
        lat[lat.len() / 2],
        log.failed,
        log.unknown.len()
    );
    assert!(
        terms
            .iter()
            .all(|(role, term)| *role == Role::Leader && *term == before.term),
        "the leader stepped down or the term moved under load: {terms:?}"
    );
    assert!(
        p99 <= OVERLOAD_P99_LIMIT,
        "p99 of acknowledged writes {p99:?}"
    );
    assert!(lat.len() > 100, "too few writes to mean anything");
}

/// How long a require-leader watch may take to end once its member is cut off: the election
/// timeout before the member gives its leader up, [`NO_LEADER_CHECKS`] checks of one election
/// timeout each, and room for a busy machine.
const NO_LEADER_END_TIMEOUT: Duration = Duration::from_secs(15);

/// Proves a watch that requires a leader (etcd's `WithRequireLeader`, which etcdctl's watch
/// uses) on a member cut off from the others is ended with etcd's "no leader", and that a new
/// one there is refused at once, so clients go on from another member.
#[test]
fn a_require_leader_watch_ends_when_its_member_is_cut_off() {
    use distributed_kv::grpc::etcd::watch::{NO_LEADER_CHECKS, REQUIRE_LEADER_KEY};
    use etcd_api::etcdserverpb::watch_client::WatchClient;
    use etcd_api::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest};
    let cluster = BlockingCluster::start(ClusterOptions {
        proxied_links: true,
        ..ClusterOptions::default()
    });
    let leader = cluster.wait_leader();
    let cut = cluster.follower_of(leader);
    let addr = format!("http://{}", cluster.client_addr(cut));
    let open = |addr: String| async move {
        let mut client = WatchClient::connect(addr)
            .await
            .expect("harness: dial the member");
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let create = WatchCreateRequest {
            key: b"k".to_vec(),
            ..Default::default()
        };
        tx.try_send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
        })
        .expect("harness: queue the create request");
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.metadata_mut().insert(
            REQUIRE_LEADER_KEY,
            tonic::metadata::MetadataValue::from_static("true"),
        );
        (client.watch(request).await, tx)
    };
    let (stream, _keep) = cluster.rt().block_on(open(addr.clone()));
    let mut stream = stream
        .expect("a member with a leader takes the watch")
        .into_inner();
    let created = cluster.rt().block_on(stream.message()).expect("an answer");
    assert!(created.is_some_and(|a| a.created), "the watch is created");

    cluster.partition(&[cut]);
    let started = Instant::now();
    let end = cluster.rt().block_on(async {
        tokio::time::timeout(NO_LEADER_END_TIMEOUT, async {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
    });
    let status = match end {
        Ok(Err(status)) => status,
        other => {
            panic!("the stream must end with an error within {NO_LEADER_END_TIMEOUT:?}: {other:?}")
        }
    };
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unavailable, "etcdserver: no leader"),
        "after {:?} ({NO_LEADER_CHECKS} checks without a leader)",
        started.elapsed()
    );
    let (again, _keep) = cluster.rt().block_on(open(addr));
    let refused = again.expect_err("a member without a leader refuses the watch");
    assert_eq!(refused.message(), "etcdserver: no leader");
    cluster.heal_links();
}

// ---------------------------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------------------------

/// The TTL of the leases of the lease tests, in seconds.
const LEASE_TTL_SECS: i64 = 2;
/// How often the lease tests' client sends a keep-alive: a quarter of the TTL.
const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(500);
/// How long one keep-alive or read of the lease tests may take on one member.
const LEASE_CALL_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How often the lease tests look at the leased key.
const LEASE_POLL: Duration = Duration::from_millis(50);

/// The cluster's election timeout as its nodes are configured (Raft may wait up to twice it).
fn election_timeout() -> Duration {
    Duration::from_millis(TICK_INTERVAL_MS * ELECTION_TICKS as u64)
}

/// A lease of [`LEASE_TTL_SECS`] granted through `addr`, and `key` put with it; the lease id.
fn leased_key(rt: &Runtime, addr: &str, key: &str) -> i64 {
    use etcd_api::etcdserverpb::kv_client::KvClient;
    use etcd_api::etcdserverpb::lease_client::LeaseClient;
    use etcd_api::etcdserverpb::{LeaseGrantRequest, PutRequest};
    rt.block_on(async {
        let url = format!("http://{addr}");
        let mut leases = LeaseClient::connect(url.clone())
            .await
            .expect("harness: dial the member");
        let granted = leases
            .lease_grant(LeaseGrantRequest {
                ttl: LEASE_TTL_SECS,
                id: 0,
            })
            .await
            .expect("a grant")
            .into_inner();
        assert_eq!(granted.ttl, LEASE_TTL_SECS, "granted as asked");
        let mut kv = KvClient::connect(url)
            .await
            .expect("harness: dial the member");
        kv.put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease: granted.id,
            ..Default::default()
        })
        .await
        .expect("a put with the lease");
        granted.id
    })
}

/// Whether `key` exists, read (linearizably) from the first of `addrs` that answers.
async fn key_exists(addrs: &[String], key: &str) -> Option<bool> {
    use etcd_api::etcdserverpb::kv_client::KvClient;
    use etcd_api::etcdserverpb::RangeRequest;
    for addr in addrs {
        let call = async {
            let mut kv = KvClient::connect(format!("http://{addr}")).await.ok()?;
            let req = RangeRequest {
                key: key.into(),
                count_only: true,
                ..Default::default()
            };
            kv.range(req).await.ok().map(|r| r.into_inner().count > 0)
        };
        if let Ok(Some(exists)) = tokio::time::timeout(LEASE_CALL_TIMEOUT, call).await {
            return Some(exists);
        }
    }
    None
}

/// Keeps lease `id` alive through `addrs` until `until`, watching `key` all along; panics if
/// the key is ever missing or a keep-alive says the lease is gone.
fn keep_alive_until(rt: &Runtime, addrs: &[String], id: i64, key: &str, until: Instant) {
    rt.block_on(async {
        let mut next_keep_alive = Instant::now();
        while Instant::now() < until {
            if Instant::now() >= next_keep_alive {
                let ttl = kv_api::lease::keep_alive_once(addrs, id).await;
                assert_ne!(ttl, Some(0), "the lease was lost while kept alive");
                next_keep_alive = Instant::now() + KEEP_ALIVE_EVERY;
            }
            let exists = key_exists(addrs, key).await;
            assert_ne!(
                exists,
                Some(false),
                "the leased key vanished while kept alive"
            );
            tokio::time::sleep(LEASE_POLL).await;
        }
    });
}

/// Proves expiry is timely and never early: a key whose lease's keep-alives stop is there
/// for the whole TTL after the last one was sent, and gone within TTL + an election timeout
/// of it.
#[test]
fn a_leased_key_is_gone_within_its_ttl_and_an_election_timeout_after_keep_alives_stop() {
    let cluster = BlockingCluster::start(ClusterOptions::default());
    let leader = cluster.wait_leader();
    let follower = cluster.client_addr(cluster.follower_of(leader)).to_string();
    let rt = cluster.rt();
    let id = leased_key(rt, &follower, "leased");
    let addrs = vec![follower];
    // Kept alive through the follower past its first TTL.
    keep_alive_until(
        rt,
        &addrs,
        id,
        "leased",
        Instant::now() + Duration::from_secs(3),
    );
    let sent = Instant::now();
    assert_eq!(
        rt.block_on(kv_api::lease::keep_alive_once(&addrs, id)),
        Some(LEASE_TTL_SECS),
        "the last keep-alive"
    );
    let ttl = Duration::from_secs(LEASE_TTL_SECS as u64);
    let latest = sent + ttl + election_timeout();
    let gone_at = rt.block_on(async {
        loop {
            let now = Instant::now();
            let exists = key_exists(&addrs, "leased").await;
            if exists == Some(false) {
                return now;
            }
            assert!(
                now < latest,
                "still there {:?} after the last keep-alive",
                now - sent
            );
            tokio::time::sleep(LEASE_POLL).await;
        }
    });
    assert!(
        gone_at >= sent + ttl,
        "gone {:?} after the last keep-alive: before its TTL",
        gone_at - sent
    );
}

/// Proves a lease kept alive outlives the loss of its leader: kill -9 of one leader, then
/// SIGSTOP of the next, and the key is never missing.
#[test]
fn a_kept_alive_lease_survives_kill9_and_sigstop_of_the_leader() {
    let mut cluster = BlockingCluster::start(ClusterOptions::default());
    let first = cluster.wait_leader();
    let addrs: Vec<String> = (1..=3)
        .map(|id| cluster.client_addr(id).to_string())
        .collect();
    let id = leased_key(cluster.rt(), &addrs[0], "kept");
    let hold = Duration::from_secs(2 * LEASE_TTL_SECS as u64);
    keep_alive_until(cluster.rt(), &addrs, id, "kept", Instant::now() + hold);

    cluster.kill(first);
    let live: Vec<String> = (1..=3)
        .filter(|n| *n != first)
        .map(|n| cluster.client_addr(n).to_string())
        .collect();
    keep_alive_until(cluster.rt(), &live, id, "kept", Instant::now() + hold);
    let second = cluster.wait_leader();
    assert_ne!(second, first);

    cluster.pause(second).expect("harness: SIGSTOP the leader");
    let others: Vec<String> = (1..=3)
        .filter(|n| *n != first && *n != second)
        .map(|n| cluster.client_addr(n).to_string())
        .chain(std::iter::once(cluster.client_addr(second).to_string()))
        .collect();
    // One member of three cannot elect a leader: the store waits, and so does the lease.
    cluster.restart(&[first]);
    keep_alive_until(cluster.rt(), &others, id, "kept", Instant::now() + hold);
    cluster.resume(second).expect("harness: SIGCONT the leader");
    keep_alive_until(cluster.rt(), &addrs, id, "kept", Instant::now() + hold);
}

/// How long a `kvctl lock` holder of the lock test holds the lock, in seconds (for `sleep`).
const KVCTL_HOLD: &str = "0.3";
/// `kvctl lock` holders of the lock test, started at once.
const KVCTL_HOLDERS: usize = 3;

/// Proves kvctl's lease commands and `lock` do what their help says: ids in hex, keys that
/// go with a revoked lease, exit 1 for a lease that is gone, etcd's refusals as bad input;
/// lock holders one at a time, the command's status passed on, and a holder whose lease is
/// revoked under it killed with exit 10.
#[test]
fn kvctl_lease_commands_and_lock() {
    let cluster = BlockingCluster::start(ClusterOptions::default());
    let leader = cluster.wait_leader();
    let follower = cluster.client_addr(cluster.follower_of(leader)).to_string();
    let run = |args: &[&str]| cluster.kvctl(&follower, args);

    let granted = run(&["lease", "grant", "60"]);
    assert_exit(&granted, 0, "lease grant");
    let id = granted.stdout.trim().to_string();
    assert_eq!(id.len(), 16, "a hex id: {granted}");
    assert_exit(&run(&["set", "--lease", &id, "k", "v"]), 0, "set --lease");
    let ttl = run(&["lease", "ttl", "--keys", &id]);
    assert_exit(&ttl, 0, "lease ttl");
    assert!(ttl.stdout.starts_with("granted=60 remaining="), "{ttl}");
    assert!(ttl.stdout.ends_with("\nk\n"), "its key: {ttl}");
    assert!(run(&["lease", "list"]).stdout.lines().any(|l| l == id));
    assert_exit(&run(&["lease", "revoke", &id]), 0, "lease revoke");
    assert_exit(&run(&["get", "k"]), 1, "the key went with the lease");
    assert_exit(
        &run(&["lease", "ttl", &id]),
        1,
        "lease ttl of a revoked lease",
    );
    assert_exit(&run(&["lease", "revoke", &id]), 1, "lease revoke again");
    let too_long = run(&["lease", "grant", "9000000001"]);
    assert_exit(&too_long, 2, "a TTL over the limit");
    assert!(
        too_long.stderr.contains("too large lease TTL"),
        "{too_long}"
    );
    let unknown = run(&["set", "--lease", "1234", "k", "v"]);
    assert_exit(&unknown, 2, "set with an unknown lease");
    assert!(
        unknown.stderr.contains("requested lease not found"),
        "{unknown}"
    );
    assert_exit(
        &run(&["lease", "ttl", "zz"]),
        2,
        "a lease id that is not hex",
    );

    // Holders started at once take the lock one after the other.
    let dir = tempfile::tempdir().expect("a temp dir");
    let log = dir.path().join("log");
    let script = format!(
        "echo \"$0 in\" >> {log}; sleep {KVCTL_HOLD}; echo \"$0 out\" >> {log}",
        log = log.display()
    );
    let holders: Vec<std::thread::JoinHandle<Finished>> = (0..KVCTL_HOLDERS)
        .map(|i| {
            let (kvctl, follower, script) = (kvctl_bin(), follower.clone(), script.clone());
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let mut cmd = Command::new(kvctl);
                cmd.args(["--endpoints", &follower, "lock", "L", "--", "sh", "-c"])
                    .arg(&script)
                    .arg(format!("h{i}"));
                run_to_exit(&mut cmd, &dir, KVCTL_TIMEOUT)
            })
        })
        .collect();
    for h in holders {
        assert_exit(&h.join().expect("a holder's thread"), 0, "a lock holder");
    }
    let text = fs::read_to_string(&log).expect("the holders' log");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 * KVCTL_HOLDERS, "{text}");
    for pair in lines.chunks(2) {
        let who = pair[0].trim_end_matches(" in");
        assert_eq!(pair, [format!("{who} in"), format!("{who} out")], "{text}");
    }
    assert_exit(
        &run(&["lock", "L", "--", "sh", "-c", "exit 3"]),
        3,
        "lock passes the command's status on",
    );

    // A holder whose lease is revoked under it is killed, and says so.
    let mut cmd = Command::new(kvctl_bin());
    cmd.args([
        "--endpoints",
        &follower,
        "lock",
        "--ttl",
        "5",
        "L",
        "--",
        "sleep",
        "60",
    ]);
    let holder = {
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || run_to_exit(&mut cmd, &dir, KVCTL_TIMEOUT))
    };
    // Its key, `L/<lease id>`, once it holds the lock.
    let held = poll_until("the holder to take the lock", KVCTL_TIMEOUT, || {
        let listed = run(&["list", "--prefix", "L/", "--keys-only"]);
        let key = listed.stdout.lines().next()?.to_string();
        key.strip_prefix("L/").map(str::to_string)
    });
    assert_exit(
        &run(&["lease", "revoke", &held]),
        0,
        "revoke the holder's lease",
    );
    let lost = holder.join().expect("the holder's thread");
    assert_exit(&lost, 10, "a holder that lost its lease");
    assert!(lost.stderr.contains("may have expired"), "{lost}");
}

/// The TTL of the long lease of the checkpoint test, in seconds.
const LONG_LEASE_SECS: i64 = 30;
/// How often that test's leader checkpoints remaining TTLs, in milliseconds.
const FAST_CHECKPOINT_MS: u64 = 500;
/// How long that test lets the lease run down before the leader is killed.
const RUN_DOWN: Duration = Duration::from_secs(6);

/// The seconds lease `id` has left as a live member of `addrs` tells it.
fn seconds_left(rt: &Runtime, addrs: &[String], id: i64) -> i64 {
    use etcd_api::etcdserverpb::lease_client::LeaseClient;
    use etcd_api::etcdserverpb::LeaseTimeToLiveRequest;
    poll_until(
        "a member to say how long the lease has left",
        LEADER_TIMEOUT,
        || {
            rt.block_on(async {
                for addr in addrs {
                    let ask = async {
                        let mut c = LeaseClient::connect(format!("http://{addr}")).await.ok()?;
                        let req = LeaseTimeToLiveRequest { id, keys: false };
                        c.lease_time_to_live(req)
                            .await
                            .ok()
                            .map(|r| r.into_inner().ttl)
                    };
                    if let Ok(Some(ttl)) = tokio::time::timeout(LEASE_CALL_TIMEOUT, ask).await {
                        return Some(ttl);
                    }
                }
                None
            })
        },
    )
}

/// Checkpoints every [`FAST_CHECKPOINT_MS`].
fn fast_checkpoints(c: &mut distributed_kv::config::NodeConfig) {
    c.lease_checkpoint_interval_ms = FAST_CHECKPOINT_MS;
}

/// The node's defaults (checkpoints every 5 minutes: none in a test).
fn default_checkpoints(_: &mut distributed_kv::config::NodeConfig) {}

/// A long lease left to run down, then its leader killed: what the new leader says it has
/// left, with nodes configured by `configure`.
fn left_after_failover(configure: fn(&mut distributed_kv::config::NodeConfig)) -> i64 {
    use etcd_api::etcdserverpb::lease_client::LeaseClient;
    use etcd_api::etcdserverpb::LeaseGrantRequest;
    let mut cluster = BlockingCluster::start(ClusterOptions {
        configure,
        ..ClusterOptions::default()
    });
    let leader = cluster.wait_leader();
    let id = cluster.rt().block_on(async {
        let url = format!("http://{}", cluster.client_addr(leader));
        let mut c = LeaseClient::connect(url)
            .await
            .expect("harness: dial the leader");
        c.lease_grant(LeaseGrantRequest {
            ttl: LONG_LEASE_SECS,
            id: 0,
        })
        .await
        .expect("a grant")
        .into_inner()
        .id
    });
    std::thread::sleep(RUN_DOWN);
    cluster.kill(leader);
    let live: Vec<String> = (1..=3)
        .filter(|n| *n != leader)
        .map(|n| cluster.client_addr(n).to_string())
        .collect();
    seconds_left(cluster.rt(), &live, id)
}

/// Proves remaining TTLs are checkpointed through Raft: a lease that has run down for a
/// while keeps (about) what it had left when its leader dies, instead of being given its
/// whole TTL again — which is what happens without checkpoints.
#[test]
fn a_new_leader_starts_a_long_lease_from_its_checkpointed_remaining_ttl() {
    let ran_down = RUN_DOWN.as_secs() as i64;
    let with = left_after_failover(fast_checkpoints);
    // At most what was left at the last checkpoint (a second before the kill, rounded up),
    // plus the election timeout a new leader adds.
    assert!(
        with <= LONG_LEASE_SECS - ran_down + 2,
        "{with} s left of {LONG_LEASE_SECS} after {ran_down} s and a failover"
    );
    let without = left_after_failover(default_checkpoints);
    assert!(
        without >= LONG_LEASE_SECS,
        "without checkpoints a new leader gives the whole TTL: {without} s"
    );
}
