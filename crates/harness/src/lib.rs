//! Local clusters of real `distributed_kv` processes on loopback, for the multi-process tests,
//! the GUI tests, the chaos suite and the benchmark script.
//!
//! - [`ports`]: loopback ports that no two clusters of one process are ever given, held bound
//!   until the node that will listen there starts.
//! - [`proxy`]: a fault-injecting TCP proxy per directed peer link (partitions without root).
//! - [`cluster`]: [`LocalCluster`], nodes behind those proxies that a nemesis can kill, restart,
//!   pause, partition, slow down and power-cut.
//! - [`process`]: the synchronous harness of the multi-process tests: [`process::Cluster`]
//!   from generated TOML files, processes killed on drop, `kvctl` runs, polling helpers.
//!
//! Binaries are found next to the running executable's `target/<profile>/` directory
//! ([`target_bin`]): `cargo test --all-targets` at the workspace root builds every package's
//! binaries before it runs any test.

use std::path::PathBuf;

pub mod cluster;
pub mod ports;
pub mod process;
pub mod proxy;

pub use cluster::{ClusterOptions, LocalCluster};

/// Path of the workspace binary `name` in the target directory the running executable was
/// built into (`target/debug/deps/<test>` → `target/debug/<name>`).
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
