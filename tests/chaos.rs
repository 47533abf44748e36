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
//! Power cuts: each node's data dir lies on its own power-cut filesystem (`powerfs`), which on a
//! cut throws away every write and every directory change not yet made durable by fsync.
//! `power_cuts_keep_the_history_linearizable` runs the workload through cuts of every node at
//! once, of one node, and of a minority; `every_acknowledged_write_survives_cutting_every_node`
//! counts lost keys directly. Each has a twin that runs the same with `unsafe_no_fsync` (the
//! Raft log written but never synced) and must catch the loss. These tests need root and
//! /dev/fuse, as CI has.

use std::path::PathBuf;
use std::time::Duration;

use distributed_kv::chaos::cluster::{ClusterOptions, LocalCluster};
use distributed_kv::chaos::runner::{run, ChaosOptions, FaultKind};
use distributed_kv::chaos::Verdict;
use distributed_kv::client::Client;

/// The node binary under test.
const NODE_BIN: &str = env!("CARGO_BIN_EXE_distributed_kv");
/// How long each fault lasts, and the healthy gap between faults.
const FAULT_HOLD: Duration = Duration::from_secs(3);
/// One operation's deadline in the workload.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// The checker's time budget.
const CHECK_BUDGET: Duration = Duration::from_secs(60);
/// Distinct keys of the power-cut runs: enough that many keys are not written again between a
/// cut and the next read of them, so a lost write is seen.
const POWER_KEYS: usize = 20;
/// Distinct keys written and acknowledged before the power cut of every node.
const ACKED_WRITES: usize = 150;

/// The unsafe mode a run's nodes start in, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unsafe {
    /// The real thing.
    No,
    /// Reads served from local state without ReadIndex.
    StaleReads,
    /// The Raft log never synced.
    NoFsync,
}

fn options(
    dir: &tempfile::TempDir,
    duration: Duration,
    faults: Vec<FaultKind>,
    mode: Unsafe,
) -> ChaosOptions {
    ChaosOptions {
        node_binary: PathBuf::from(NODE_BIN),
        work_dir: dir.path().join("cluster"),
        output_dir: dir.path().join("out"),
        nodes: 3,
        duration,
        faults,
        clients: 6,
        keys: 3,
        fault_hold: FAULT_HOLD,
        op_timeout: OP_TIMEOUT,
        check_budget: CHECK_BUDGET,
        unsafe_stale_reads: mode == Unsafe::StaleReads,
        unsafe_no_fsync: mode == Unsafe::NoFsync,
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
async fn keys_lost_to_a_power_cut(dir: &tempfile::TempDir, n: usize, mode: Unsafe) -> Vec<String> {
    let options = ClusterOptions {
        power_fs: true,
        unsafe_no_fsync: mode == Unsafe::NoFsync,
        ..ClusterOptions::default()
    };
    let mut cluster =
        LocalCluster::start(&PathBuf::from(NODE_BIN), &dir.path().join("c"), 3, options)
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
    let dir = tempfile::tempdir().unwrap();
    let lost = keys_lost_to_a_power_cut(&dir, ACKED_WRITES, Unsafe::No).await;
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

/// Proves the lost-write count has teeth: without fsync, the same cut loses acknowledged writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fsync_a_power_cut_loses_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let lost = keys_lost_to_a_power_cut(&dir, ACKED_WRITES, Unsafe::NoFsync).await;
    assert!(
        !lost.is_empty(),
        "an unsynced log must lose writes to a power cut"
    );
    println!(
        "{} of {ACKED_WRITES} acknowledged writes lost without fsync",
        lost.len()
    );
}
