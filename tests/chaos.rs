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

use std::path::PathBuf;
use std::time::Duration;

use distributed_kv::chaos::runner::{run, ChaosOptions, FaultKind};
use distributed_kv::chaos::Verdict;

/// The node binary under test.
const NODE_BIN: &str = env!("CARGO_BIN_EXE_distributed_kv");
/// How long each fault lasts, and the healthy gap between faults.
const FAULT_HOLD: Duration = Duration::from_secs(3);
/// One operation's deadline in the workload.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// The checker's time budget.
const CHECK_BUDGET: Duration = Duration::from_secs(60);

fn options(
    dir: &tempfile::TempDir,
    duration: Duration,
    faults: Vec<FaultKind>,
    unsafe_stale_reads: bool,
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
        unsafe_stale_reads,
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
    let report = run(options(&dir, Duration::from_secs(45), faults, false))
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
        true,
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
