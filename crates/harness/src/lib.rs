//! Local clusters of real `distributed_kv` processes on loopback, for the multi-process tests,
//! the GUI tests, the chaos suite and the scripts (through the `kvcluster` binary). There is
//! one implementation of spawning, waiting for, stopping, hurting and addressing nodes:
//! [`LocalCluster`].
//!
//! - [`cluster`]: [`LocalCluster`] and its [`ClusterOptions`] — node count, a temp dir it owns
//!   or a caller's dir, proxied or direct peer links, power-cut filesystems, unsafe flags,
//!   changes to the generated [`NodeConfig`](distributed_kv::config::NodeConfig). Node ids
//!   run from 1, as in the configs. It can kill, restart, stop (SIGTERM), pause, partition,
//!   slow down and power-cut nodes, wait for a leader and for convergence; dropped, it kills
//!   every node, and during a panic it prints the tail of every node's log first.
//! - [`blocking`]: [`BlockingCluster`], the same cluster for synchronous tests: it owns the
//!   runtime and blocks on the cluster's `async` methods.
//! - [`timing`]: the one set of timings — Raft timing in generated configs, and every wait.
//! - [`ports`]: loopback ports that no two users in one process are ever given, held bound
//!   until the node (or proxy) that will listen there starts.
//! - [`proxy`]: a fault-injecting TCP proxy per directed peer link (partitions without root).
//! - [`process`]: [`Proc`], the owner of one child process, which kills it when dropped.
//! - [`command`]: commands run to completion under a deadline ([`run_to_exit`]), and the
//!   `kvctl` runner.
//! - [`etcd`]: [`EtcdCluster`], real etcd members (one or several) on loopback, the reference
//!   store of the etcd compatibility tests (`crates/etcd_compat`, `tests/etcd.rs`).
//! - [`wait`]: polling a condition until a deadline ([`poll_until`] for synchronous tests).
//!
//! The `kvcluster` binary (`src/bin/kvcluster.rs`) runs a [`LocalCluster`] until SIGINT or
//! SIGTERM, for `scripts/bench.sh` and `scripts/gui-screenshot.sh`.
//!
//! Binaries are found next to the running executable's `target/<profile>/` directory
//! ([`target_bin`]): `cargo test --all-targets` at the workspace root builds every package's
//! binaries before it runs any test.

use std::path::PathBuf;

pub mod blocking;
pub mod cluster;
pub mod command;
pub mod error;
pub mod etcd;
mod node;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod timing;
pub mod wait;

pub use blocking::BlockingCluster;
pub use cluster::{status_of, ClusterOptions, LocalCluster, LOG_TAIL_LINES};
pub use command::{
    clean_env, kvctl, kvctl_with_stdin, run_to_exit, run_to_exit_with_stdin, tail, Finished,
};
pub use error::HarnessError;
pub use etcd::{etcd_bin, etcdctl_bin, EtcdCluster};
pub use ports::{free_addr, free_port};
pub use process::Proc;
pub use timing::*;
pub use wait::poll_until;

/// Path of the workspace binary `name` in the target directory the running executable was
/// built into (`target/debug/deps/<test>` → `target/debug/<name>`).
///
/// `cargo test` leaves a package's binaries there only when that package has integration
/// tests of its own (they are what `CARGO_BIN_EXE_*` needs), so every package whose binary other
/// crates' tests run has a `tests/` file: the server's `distributed_kv`, kvctl's `kvctl`.
///
/// # Panics
/// When it does not exist: a test cannot run without it, and the message says how to build it.
pub fn target_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the running executable");
    let mut dir = exe
        .parent()
        .expect("the executable's directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} does not exist: build it first (cargo build --bins, or cargo test --all-targets at the workspace root)",
        path.display()
    );
    path
}

/// The node binary under test.
pub fn node_bin() -> PathBuf {
    target_bin("distributed_kv")
}

/// The command-line client under test.
pub fn kvctl_bin() -> PathBuf {
    target_bin("kvctl")
}
