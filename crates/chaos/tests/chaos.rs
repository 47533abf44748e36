//! Chaos tier: a short Jepsen-style run on real processes, and proof that it has teeth.
//!
//! `short_run_under_faults_is_linearizable` starts a local 3-node cluster (peer links through
//! fault-injecting proxies), runs contended clients for 45 s while the nemesis kills and
//! restarts, pauses and resumes, partitions, and slows nodes, then heals and checks: all nodes
//! converge to the same state hash and the history is linearizable.
//!
//! `stale_reads_are_caught` starts the nodes with the documented unsafe option that answers
//! reads from local state without ReadIndex, partitions nodes, and requires the checker to find
//! a violation. A suite that cannot fail proves nothing.
//!
//! Compare-and-set over etcd's API (issue 10): `cas_over_etcd_under_faults_is_linearizable`
//! runs the etcd-cas workload — linearizable Ranges and compare-and-set Txns, each request to a
//! random member, so followers forward writes and ask for read indexes — through kills, pauses
//! and partitions, and checks it against a compare-and-set register.
//! It also keeps a watcher on every member, each resumed on another member whenever its
//! stream ends, and requires each to have been told exactly the committed history;
//! `lost_watch_events_are_caught` runs nodes that silently drop some events, which the watch
//! checker must catch. Beside them, clients take one lock through etcd's lock recipe and
//! must never hold it two at a time while their leases live (`kv_chaos::lock_check`);
//! `two_lock_holders_are_caught` runs nodes whose leader answers keep-alives without
//! renewing, which the lock checker must catch. `stale_reads_over_etcd_are_caught` is its twin with reads answered from local state (a
//! partitioned follower's too), which the checker must catch.
//!
//! Power cuts: each node's data dir lies on its own power-cut filesystem (`powerfs`), which on a
//! cut throws away every write and every directory change not yet made durable by fsync.
//! `power_cuts_keep_the_history_linearizable` runs the workload through cuts of every node at
//! once, of one node, and of a minority; `every_acknowledged_write_survives_cutting_every_node`
//! counts lost keys directly. Each has a twin that runs the same with `unsafe_no_fsync` (the
//! Raft log written but never synced) and must catch the loss. These tests need root and
//! /dev/fuse, as CI has.
//!
//! `a_follower_catches_up_over_a_slow_link_while_the_leader_keeps_serving` (issue 8, bulk
//! replication starving heartbeats): a follower that missed 50 MiB of writes catches up through
//! links throttled to 20 Mbit/s, while the leader keeps its term and office and small writes
//! keep succeeding.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_api::client::{Client, ClientError};
use kv_api::proto::{Role, StatusResponse};
use kv_chaos::lock_check::LockVerdict;
use kv_chaos::runner::{run, ChaosOptions, FaultKind, Workload};
use kv_chaos::watch_check::WatchVerdict;
use kv_chaos::{check_operations, OpKind, Outcome, Verdict};
use kv_harness::timing::{POLL_INTERVAL, PROBE_TIMEOUT};
use kv_harness::{node_bin, ClusterOptions, LocalCluster};

/// How long each fault lasts, and the healthy gap between faults.
const FAULT_HOLD: Duration = Duration::from_secs(3);
/// One operation's deadline in the workload.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// The checker's time budget.
const CHECK_BUDGET: Duration = Duration::from_secs(60);
/// Length of the etcd-cas run under faults: room for one kill, one pause and one partition,
/// each held for [`FAULT_HOLD`] after as long healthy.
const CAS_RUN: Duration = Duration::from_secs(27);
/// Length of the run whose nodes drop watch events: long enough for many apply batches.
const WATCH_GAPS_RUN: Duration = Duration::from_secs(8);
/// Length of the etcd-cas run with stale reads: a few partitions.
const STALE_RUN: Duration = Duration::from_secs(20);
/// Fewest compare-and-sets that must succeed, and fail, for the etcd-cas run to mean anything.
const MIN_CAS_EACH_WAY: usize = 20;
/// Clients taking the lock beside the etcd-cas workload.
const LOCKERS: usize = 3;
/// Holds of the lock a faulted run must see at least to mean anything.
const MIN_LOCK_HOLDS: usize = 20;
/// The lock checker's teeth run: long enough for several leases to outlive their TTL under
/// keep-alives that renew nothing.
const LEASE_EXPIRY_RUN: Duration = Duration::from_secs(12);
/// The longest hold of the teeth run: past the lockers' lease TTL (2 s).
const TEETH_HOLD: Duration = Duration::from_secs(3);
/// Distinct keys of the power-cut runs: enough that many keys are not written again between a
/// cut and the next read of them, so a lost write is seen.
const POWER_KEYS: usize = 20;
/// Distinct keys written and acknowledged before the power cut of every node.
const ACKED_WRITES: usize = 150;
/// Bandwidth of the follower's links in the catch-up test, in bytes per second (20 Mbit/s).
const SLOW_LINK_BYTES_PER_SEC: u64 = 2_500_000;
/// Size of one value of the backlog the follower misses, in bytes.
const BACKLOG_VALUE_BYTES: usize = 256 * 1024;
/// Values in the backlog: 200 of 256 KiB, 50 MiB.
const BACKLOG_VALUES: usize = 200;
/// Time allowed for the catch-up beyond the backlog's bare transfer time at the link's rate:
/// the node's start, Raft finding where the follower's log ends, protocol overhead, and the
/// follower syncing and applying 50 MiB, on a busy 2-core machine.
const CATCH_UP_MARGIN: Duration = Duration::from_secs(10);
/// Pace of the small writes during the catch-up: one started every this long (20 per second).
const SMALL_WRITE_INTERVAL: Duration = Duration::from_millis(50);
/// Size of one small write's value, in bytes.
const SMALL_VALUE_BYTES: usize = 100;
/// One small write's deadline, retries included: longer than the nodes' own
/// ([`kv_harness::timing::REQUEST_TIMEOUT_MS`]).
const SMALL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the cluster may take to converge after the catch-up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one Hash may take in the catch-up test: hashing 50 MiB takes about 0.5 s in a debug
/// build, too close to the harness's usual probe timeout on a busy machine.
const HASH_TIMEOUT: Duration = Duration::from_secs(5);

/// The unsafe mode a run's nodes start in, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unsafe {
    /// The real thing.
    No,
    /// Reads served from local state without ReadIndex.
    StaleReads,
    /// The Raft log never synced.
    NoFsync,
    /// Some apply batches' watch events silently dropped.
    WatchGaps,
    /// Keep-alives answered without renewing leases.
    LeaseExpiry,
}

fn options(
    dir: &tempfile::TempDir,
    duration: Duration,
    faults: Vec<FaultKind>,
    mode: Unsafe,
) -> ChaosOptions {
    ChaosOptions {
        node_binary: node_bin(),
        work_dir: dir.path().join("cluster"),
        output_dir: dir.path().join("out"),
        nodes: 3,
        workload: Workload::KvV1,
        duration,
        faults,
        clients: 6,
        keys: 3,
        fault_hold: FAULT_HOLD,
        op_timeout: OP_TIMEOUT,
        check_budget: CHECK_BUDGET,
        unsafe_stale_reads: mode == Unsafe::StaleReads,
        unsafe_no_fsync: mode == Unsafe::NoFsync,
        watchers: false,
        unsafe_watch_gaps: mode == Unsafe::WatchGaps,
        lockers: 0,
        unsafe_lease_expiry: mode == Unsafe::LeaseExpiry,
        lock_hold: kv_chaos::lock_check::DEFAULT_MAX_HOLD,
        seed: 7,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_run_under_faults_is_linearizable() {
    let dir = tempfile::tempdir().unwrap();
    let faults = vec![
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Delay,
    ];
    let report = run(options(&dir, Duration::from_secs(45), faults, Unsafe::No))
        .await
        .unwrap();
    println!("chaos: {report}");
    assert!(report.verdict.is_linearizable(), "{report}");
    assert!(report.converged.is_ok(), "{report}");
    for kind in ["kill", "pause", "partition", "delay"] {
        assert!(
            report.faults.get(kind).copied().unwrap_or(0) >= 1,
            "no {kind} fault was injected: {report}"
        );
    }
    assert!(
        report.ok > 100,
        "too few operations completed to mean anything: {report}"
    );
    assert!(report.files.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(options(
        &dir,
        Duration::from_secs(20),
        vec![FaultKind::Partition],
        Unsafe::StaleReads,
    ))
    .await
    .unwrap();
    println!("chaos (unsafe_stale_reads): {report}");
    match &report.verdict {
        Verdict::NotLinearizable {
            minimal_subhistory, ..
        } => {
            assert!(!minimal_subhistory.is_empty());
            assert_eq!(
                report.files.len(),
                3,
                "history, minimal sub-history and the cluster dir: {report}"
            );
            assert!(report.files.iter().all(|f| f.exists()));
        }
        other => panic!("stale reads under partitions must be caught, got {other:?}: {report}"),
    }
}

/// Proves: compare-and-sets (Txns on the value or the mod_revision) and linearizable reads
/// over etcd's API, each sent to a random member, stay linearizable through kills, pauses and
/// partitions, and the nodes converge; a watcher on every member, resumed on another
/// whenever its stream ends, is told exactly the committed history; and clients taking one
/// lock through etcd's lock recipe never hold it two at a time while their leases live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_over_etcd_under_faults_is_linearizable() {
    let dir = tempfile::tempdir().unwrap();
    let faults = vec![FaultKind::Kill, FaultKind::Pause, FaultKind::Partition];
    let report = run(ChaosOptions {
        workload: Workload::EtcdCas,
        watchers: true,
        lockers: LOCKERS,
        ..options(&dir, CAS_RUN, faults, Unsafe::No)
    })
    .await
    .expect("harness: the run");
    println!("chaos (etcd-cas, watchers): {report}");
    assert!(report.verdict.is_linearizable(), "{report}");
    assert!(report.converged.is_ok(), "{report}");
    match &report.watch {
        Some(WatchVerdict::Exact {
            resumes, events, ..
        }) => {
            assert!(
                *resumes >= 1,
                "a kill must have made a watcher resume elsewhere: {report}"
            );
            assert!(
                *events >= MIN_CAS_EACH_WAY,
                "too few events to mean anything: {report}"
            );
        }
        other => panic!("every watcher must be told exactly the committed history: {other:?}"),
    }
    match &report.lock {
        Some(LockVerdict::Exclusive { holds }) => assert!(
            *holds >= MIN_LOCK_HOLDS,
            "too few holds of the lock to mean anything: {report}"
        ),
        other => panic!("the lock must never have two holders: {other:?}"),
    }
    for kind in ["kill", "pause", "partition"] {
        assert!(
            report.faults.get(kind).copied().unwrap_or(0) >= 1,
            "no {kind} fault was injected: {report}"
        );
    }
    assert!(
        report.cas_succeeded >= MIN_CAS_EACH_WAY && report.cas_failed >= MIN_CAS_EACH_WAY,
        "compare-and-sets must both succeed and fail often enough to mean anything: {report}"
    );
    assert!(report.files.is_empty());
}

/// Proves the lock checker has teeth: with keep-alives answered but not renewing, leases
/// expire under clients that believe them alive, and a second client takes the lock while the
/// first still holds it. Holds run up to [`TEETH_HOLD`], past the lease's TTL, so that expiries
/// fall inside holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lock_holders_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(ChaosOptions {
        workload: Workload::EtcdCas,
        clients: 1,
        lockers: LOCKERS,
        lock_hold: TEETH_HOLD,
        ..options(&dir, LEASE_EXPIRY_RUN, Vec::new(), Unsafe::LeaseExpiry)
    })
    .await
    .expect("harness: the run");
    println!("chaos (lockers, unsafe_lease_expiry): {report}");
    assert!(
        matches!(report.lock, Some(LockVerdict::Overlap { .. })),
        "two holders at once must be caught: {report}"
    );
    assert!(!report.passed());
}

/// Proves the watch checker has teeth: nodes that silently drop the events of some apply
/// batches (and hide the gap from their watch hub) are caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_watch_events_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(ChaosOptions {
        workload: Workload::EtcdCas,
        watchers: true,
        ..options(&dir, WATCH_GAPS_RUN, Vec::new(), Unsafe::WatchGaps)
    })
    .await
    .expect("harness: the run");
    println!("chaos (etcd-cas, unsafe_watch_gaps): {report}");
    match &report.watch {
        Some(WatchVerdict::Broken { problem, .. }) => {
            assert!(problem.contains("missing"), "{report}")
        }
        other => panic!("lost watch events must be caught: {other:?}"),
    }
    assert!(!report.passed());
}

/// Proves the etcd-cas run has teeth: with reads answered from each member's local state (no
/// read index, on followers too) and a member cut off, the checker finds a read of a stale
/// value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_over_etcd_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(ChaosOptions {
        workload: Workload::EtcdCas,
        ..options(
            &dir,
            STALE_RUN,
            vec![FaultKind::Partition],
            Unsafe::StaleReads,
        )
    })
    .await
    .expect("harness: the run");
    println!("chaos (etcd-cas, unsafe_stale_reads): {report}");
    let Verdict::NotLinearizable {
        key,
        minimal_subhistory,
    } = &report.verdict
    else {
        panic!("stale reads under partitions must be caught: {report}");
    };
    for op in minimal_subhistory {
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let kind = match &op.kind {
            OpKind::Cas { expect, new, .. } => {
                format!("cas {:?} -> {}", expect.as_deref().map(text), text(new))
            }
            other => format!("{other:?}"),
        };
        println!(
            "  client {} {kind} [{}, {:?}] {:?}",
            op.client, op.invoke, op.complete, op.outcome
        );
    }
    // Only reads can be stale here (a Txn, its failure branch's Range too, runs on the
    // leader): the witness must hold a read that answered, and without its reads the rest of
    // it — compare-and-sets and deletes — must be linearizable.
    assert!(
        minimal_subhistory
            .iter()
            .any(|op| op.kind == OpKind::Get && matches!(op.outcome, Outcome::Ok(_))),
        "key {:?}: a violation without a read is not the stale read sought: {report}",
        String::from_utf8_lossy(key)
    );
    let writes: Vec<_> = minimal_subhistory
        .iter()
        .filter(|op| op.kind != OpKind::Get)
        .cloned()
        .collect();
    assert_eq!(
        check_operations(&writes, CHECK_BUDGET),
        Verdict::Linearizable,
        "the violation must be in what the reads saw: {report}"
    );
    assert_eq!(
        report.files.len(),
        3,
        "history, minimal sub-history and the cluster dir: {report}"
    );
    assert!(report.files.iter().all(|f| f.exists()));
}

/// Proves: through power cuts of every node at once, of one node and of a minority, no
/// acknowledged write is lost and every read is linearizable; the nodes converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_keep_the_history_linearizable() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(ChaosOptions {
        keys: POWER_KEYS,
        ..options(
            &dir,
            Duration::from_secs(30),
            vec![FaultKind::Power],
            Unsafe::No,
        )
    })
    .await
    .unwrap();
    println!("chaos (power): {report}");
    assert!(report.verdict.is_linearizable(), "{report}");
    assert!(report.converged.is_ok(), "{report}");
    assert!(
        report.faults.get("power").copied().unwrap_or(0) >= 3,
        "every kind of cut (all nodes, one, a minority) must happen: {report}"
    );
    assert!(
        report.ok > 100,
        "too few operations to mean anything: {report}"
    );
}

/// Proves the power-cut run has teeth: with the log never synced, one cut of every node loses
/// acknowledged writes, and the checker says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_without_fsync_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough for exactly one cut, which is a cut of every node.
    let report = run(ChaosOptions {
        keys: POWER_KEYS,
        ..options(
            &dir,
            Duration::from_secs(12),
            vec![FaultKind::Power],
            Unsafe::NoFsync,
        )
    })
    .await
    .unwrap();
    println!("chaos (power, unsafe_no_fsync): {report}");
    assert_eq!(report.faults.get("power"), Some(&1), "{report}");
    assert!(
        matches!(report.verdict, Verdict::NotLinearizable { .. }),
        "a power cut without fsync must be caught losing writes: {report}"
    );
}

/// Writes `n` distinct keys one by one (each acknowledged), cuts the power of every node at
/// once, and returns the keys that a linearizable read no longer finds.
async fn keys_lost_to_a_power_cut(n: usize, mode: Unsafe) -> Vec<String> {
    let options = ClusterOptions {
        power_fs: true,
        unsafe_no_fsync: mode == Unsafe::NoFsync,
        ..ClusterOptions::default()
    };
    let mut cluster = LocalCluster::start(options)
        .await
        .expect("harness: start the cluster");
    let mut client = Client::new(cluster.endpoints()).with_timeout(Duration::from_secs(10));
    let keys: Vec<String> = (0..n).map(|i| format!("acked-{i:04}")).collect();
    for k in &keys {
        client
            .set(k.as_bytes(), b"v")
            .await
            .expect("harness: a write on a healthy cluster is acknowledged");
    }
    let dropped = cluster
        .power_cut(&cluster.ids())
        .await
        .expect("harness: cut the power and restart");
    println!("power cut of every node: {dropped}");
    let mut lost = Vec::new();
    for k in &keys {
        let v = client
            .get(k.as_bytes(), false)
            .await
            .expect("harness: a read after the restart is answered");
        if v.is_none() {
            lost.push(k.clone());
        }
    }
    lost
}

/// Proves: every write acknowledged before a power cut of every node is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_cutting_every_node() {
    let lost = keys_lost_to_a_power_cut(ACKED_WRITES, Unsafe::No).await;
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

/// Proves the lost-write count has teeth: without fsync, the same cut loses acknowledged writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fsync_a_power_cut_loses_acknowledged_writes() {
    let lost = keys_lost_to_a_power_cut(ACKED_WRITES, Unsafe::NoFsync).await;
    assert!(
        !lost.is_empty(),
        "an unsynced log must lose writes to a power cut"
    );
    println!(
        "{} of {ACKED_WRITES} acknowledged writes lost without fsync",
        lost.len()
    );
}

/// What one node said about the leadership, and when (since the follower's restart).
struct View {
    at: Duration,
    role: Role,
    term: u64,
    leader: u64,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "at {:.2?}: {} in term {}, leader {}",
            self.at,
            self.role.label(),
            self.term,
            self.leader
        )
    }
}

impl View {
    fn of(at: Duration, s: StatusResponse) -> View {
        View {
            at,
            role: s.role(),
            term: s.term,
            leader: s.leader_id,
        }
    }
}

/// The views that differ from `expected` (role, term, leader), each change once. With
/// `from_first_match`, views before the first one matching `expected` are passed over.
fn departures<'a>(
    views: &'a [View],
    expected: (Role, u64, u64),
    from_first_match: bool,
) -> Vec<&'a View> {
    let key = |v: &'a View| (v.role, v.term, v.leader);
    let start = if from_first_match {
        views
            .iter()
            .position(|v| key(v) == expected)
            .unwrap_or(views.len())
    } else {
        0
    };
    let mut last = expected;
    let mut out = Vec::new();
    for v in &views[start..] {
        if key(v) != last {
            last = key(v);
            out.push(v);
        }
    }
    out
}

/// The `q`-quantile of `sorted` (ascending, not empty), nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Proves: a follower that missed 50 MiB of writes catches up through links limited to
/// 20 Mbit/s within the transfer time plus a margin, while the leader keeps its leadership and
/// term and every write made during the catch-up succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_over_a_slow_link_while_the_leader_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(ClusterOptions {
        dir: Some(dir.path().join("c")),
        proxied_links: true,
        ..ClusterOptions::default()
    })
    .await
    .expect("harness: start the cluster");
    let leader = cluster
        .wait_leader()
        .await
        .expect("harness: a leader is elected");
    let follower = cluster.follower_of(leader);
    let leader_addr = cluster.client_addr(leader).to_string();
    let follower_addr = cluster.client_addr(follower).to_string();
    cluster.kill(follower);

    let mut client = Client::new(cluster.endpoints()).with_timeout(Duration::from_secs(10));
    let written = Instant::now();
    for i in 0..BACKLOG_VALUES {
        let value = vec![(i % 251) as u8; BACKLOG_VALUE_BYTES];
        client
            .set(format!("backlog-{i:04}").as_bytes(), &value)
            .await
            .expect("a backlog write is acknowledged by the leader and the other follower");
    }
    let backlog_bytes = (BACKLOG_VALUES * BACKLOG_VALUE_BYTES) as u64;
    println!(
        "backlog: {BACKLOG_VALUES} values, {} MiB, written in {:.1?} while node {follower} was down",
        backlog_bytes >> 20,
        written.elapsed()
    );
    let before = client
        .status_of(&leader_addr, PROBE_TIMEOUT)
        .await
        .expect("harness: the leader answers Status");
    assert_eq!((before.role(), before.leader_id), (Role::Leader, leader));
    let (term, backlog_index) = (before.term, before.commit_index);

    cluster.throttle(follower, SLOW_LINK_BYTES_PER_SEC);
    let transfer = Duration::from_secs_f64(backlog_bytes as f64 / SLOW_LINK_BYTES_PER_SEC as f64);
    let bound = transfer + CATCH_UP_MARGIN;
    let restarted = Instant::now();
    cluster
        .restart(&[follower])
        .await
        .expect("harness: restart the follower");

    // Small writes at a steady pace, each outcome and latency recorded, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut client = Client::new(cluster.endpoints()).with_timeout(SMALL_WRITE_TIMEOUT);
        tokio::spawn(async move {
            let mut outcomes: Vec<(Duration, Result<u64, ClientError>)> = Vec::new();
            let mut pace = tokio::time::interval(SMALL_WRITE_INTERVAL);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::SeqCst) {
                pace.tick().await;
                let key = format!("small-{:05}", outcomes.len() % 50);
                let started = Instant::now();
                let r = client.set(key.as_bytes(), &[b's'; SMALL_VALUE_BYTES]).await;
                outcomes.push((started.elapsed(), r));
            }
            outcomes
        })
    };

    // Watch what the leader and the follower say about the leadership, and how far the
    // follower has applied.
    let mut probe = Client::new(cluster.endpoints());
    let (mut leader_views, mut follower_views) = (Vec::new(), Vec::new());
    let mut unanswered = 0;
    let caught_up = loop {
        let mut applied = 0;
        for (addr, views) in [
            (&leader_addr, &mut leader_views),
            (&follower_addr, &mut follower_views),
        ] {
            match probe.status_of(addr, PROBE_TIMEOUT).await {
                Ok(s) => {
                    applied = s.applied_index;
                    views.push(View::of(restarted.elapsed(), s));
                }
                Err(_) => unanswered += 1,
            }
        }
        if applied >= backlog_index {
            break Some(restarted.elapsed());
        }
        if restarted.elapsed() > bound {
            break None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    stop.store(true, Ordering::SeqCst);
    let outcomes = writer.await.expect("harness: the writer task");
    let failed: Vec<_> = outcomes.iter().filter(|(_, r)| r.is_err()).collect();
    let mut latencies: Vec<Duration> = outcomes.iter().map(|(d, _)| *d).collect();
    latencies.sort();
    let p99 = (!latencies.is_empty()).then(|| quantile(&latencies, 0.99));
    let leader_changes = departures(&leader_views, (Role::Leader, term, leader), false);
    // The follower may not know the leader in its first moments after the restart; from its
    // first heartbeat on it must never lose it (a heartbeat starved by the backlog would make
    // it campaign).
    let follower_changes = departures(&follower_views, (Role::Follower, term, leader), true);
    println!(
        "catch-up of {} MiB over {} Mbit/s links: {} (bare transfer {transfer:.1?}, bound \
         {bound:.1?}); {} small writes during it, {} failed, p50 {:.1?}, p99 {:.1?}, max {:.1?}; \
         leader node {leader} in term {term} throughout: {} (leader {} views, follower {} views, \
         {unanswered} unanswered)",
        backlog_bytes >> 20,
        SLOW_LINK_BYTES_PER_SEC * 8 / 1_000_000,
        caught_up.map_or("not within the bound".into(), |d| format!("{d:.1?}")),
        outcomes.len(),
        failed.len(),
        (!latencies.is_empty()).then(|| quantile(&latencies, 0.5)),
        p99,
        latencies.last(),
        leader_changes.is_empty() && follower_changes.is_empty(),
        leader_views.len(),
        follower_views.len(),
    );

    let mut problems = Vec::new();
    if caught_up.is_none() {
        problems.push(format!(
            "node {follower} did not apply the backlog (index {backlog_index}) within {bound:?}"
        ));
    }
    if !leader_changes.is_empty() {
        problems.push(format!(
            "the leader lost its office or term during the catch-up: {leader_changes:?}"
        ));
    }
    if follower_views.iter().all(|v| v.leader != leader) {
        problems.push(format!("node {follower} never heard from the leader"));
    }
    if !follower_changes.is_empty() {
        problems.push(format!(
            "node {follower} lost the leader during the catch-up: {follower_changes:?}"
        ));
    }
    if !failed.is_empty() {
        problems.push(format!("writes failed during the catch-up: {failed:?}"));
    }
    let min_writes = (transfer.as_millis() / SMALL_WRITE_INTERVAL.as_millis() / 2) as usize;
    if outcomes.len() < min_writes {
        problems.push(format!(
            "only {} small writes during the catch-up, expected at least {min_writes}",
            outcomes.len()
        ));
    }
    if !problems.is_empty() {
        // The cluster, dropped while this panics, prints the end of every node's log.
        let kept = dir.keep().join("c");
        panic!(
            "{}\nnode configs, data and logs kept in {}",
            problems.join("\n"),
            kept.display()
        );
    }

    // Every node agrees on the term and the leader, and holds the same state.
    cluster
        .converge_with(SETTLE_TIMEOUT, HASH_TIMEOUT)
        .await
        .expect("the nodes converge after the catch-up");
    for (addr, s) in probe.cluster_status(PROBE_TIMEOUT).await {
        let s = s.unwrap_or_else(|e| panic!("{addr} does not answer Status: {e}"));
        assert_eq!(
            (s.term, s.leader_id),
            (term, leader),
            "node {} after the catch-up",
            s.node_id
        );
    }
}
