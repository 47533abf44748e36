//! [`EtcdCluster`]: a real etcd — one member, or several — as a reference store for the
//! compatibility tests and benchmarks.
//!
//! [`EtcdCluster::start`] finds `etcd` on `PATH` (Debian's package [`ETCD_PACKAGE`]; a clear
//! [`HarnessError`] names it when it is missing), reserves a client and a peer port per member
//! on loopback ([`reserve_addr`], held until just before the members start), gives each member
//! a data dir in a temp dir the cluster owns, starts every member as a [`Proc`] (so it is
//! killed when dropped, and — through `PR_SET_PDEATHSIG` — when the thread that started it
//! ends), and returns once every member answers a linearizable Range. Dropped during a panic,
//! it prints the tail of every member's log first.
//!
//! etcd reads flags from `ETCD_*` variables too; they are removed from each member's
//! environment, so the caller's cannot change what runs.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use etcd_api::etcdserverpb::kv_client::KvClient;
use etcd_api::etcdserverpb::RangeRequest;
use tempfile::TempDir;
use tonic::transport::Endpoint;

use crate::cluster::LOG_TAIL_LINES;
use crate::command::tail;
use crate::error::HarnessError;
use crate::ports::reserve_addr;
use crate::process::Proc;
use crate::timing::{ETCD_START_TIMEOUT, POLL_INTERVAL, PROBE_TIMEOUT};
use crate::wait::poll;

/// The etcd server binary, looked up on `PATH`.
pub const ETCD_BIN: &str = "etcd";
/// The Debian package that has [`ETCD_BIN`].
pub const ETCD_PACKAGE: &str = "etcd-server";
/// etcd's command-line client, looked up on `PATH`.
pub const ETCDCTL_BIN: &str = "etcdctl";
/// The Debian package that has [`ETCDCTL_BIN`].
pub const ETCDCTL_PACKAGE: &str = "etcd-client";
/// The key the start-up probe reads (it need not exist).
const PROBE_KEY: &[u8] = b"harness-probe";

/// The executable `name` in a directory of the search path `path` (as `PATH` lists them), or
/// an error naming the Debian `package` that has it.
fn find_bin(path: Option<&OsStr>, name: &str, package: &str) -> Result<PathBuf, HarnessError> {
    path.into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            crate::harness_error!(
                "`{name}` is not installed (not on PATH): install Debian's package {package} \
                 (apt-get install {package}; .ci/run does)"
            )
        })
}

/// The `etcd` binary, or an error naming the package to install.
pub fn etcd_bin() -> Result<PathBuf, HarnessError> {
    find_bin(std::env::var_os("PATH").as_deref(), ETCD_BIN, ETCD_PACKAGE)
}

/// The `etcdctl` binary, or an error naming the package to install.
pub fn etcdctl_bin() -> Result<PathBuf, HarnessError> {
    find_bin(
        std::env::var_os("PATH").as_deref(),
        ETCDCTL_BIN,
        ETCDCTL_PACKAGE,
    )
}

/// Removes every `ETCD_*` and `ETCDCTL_*` variable from `cmd`'s environment.
pub fn clean_etcd_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCD") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// One member of an [`EtcdCluster`].
struct Member {
    /// Its name (`e1`, `e2`, ...), as `member list` shows it.
    name: String,
    /// Its client address, `127.0.0.1:port`.
    client_addr: String,
    /// Where its stdout and stderr go.
    log_path: PathBuf,
    /// The process.
    proc: Proc,
}

/// Real etcd members on loopback ports, in a temp dir of their own (see the module doc).
pub struct EtcdCluster {
    /// The members, in start order; declared first, so they are killed before the dir goes.
    members: Vec<Member>,
    /// Data dirs and logs.
    dir: TempDir,
}

impl EtcdCluster {
    /// Starts a cluster of `members` etcd members (1 for a single-member store); returns once
    /// every member answers a linearizable Range. Call it on a thread that outlives the
    /// cluster (a test's own thread), as [`Proc`] requires.
    pub async fn start(members: usize) -> Result<EtcdCluster, HarnessError> {
        if members == 0 {
            return Err("an etcd cluster needs at least one member".into());
        }
        let binary = etcd_bin()?;
        let dir = tempfile::Builder::new().prefix("etcd-").tempdir()?;
        let mut addrs = Vec::new();
        for i in 1..=members {
            let (client, held_client) = reserve_addr()?;
            let (peer, held_peer) = reserve_addr()?;
            addrs.push((format!("e{i}"), client, peer, [held_client, held_peer]));
        }
        let initial_cluster: Vec<String> = addrs
            .iter()
            .map(|(name, _, peer, _)| format!("{name}=http://{peer}"))
            .collect();
        let initial_cluster = initial_cluster.join(",");
        // Unique per cluster, so members of two clusters could never join each other.
        let token = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "etcd-harness".into());
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            dir,
        };
        for (name, client, peer, held) in addrs {
            let log_path = cluster.dir.path().join(format!("{name}.log"));
            let log = File::create(&log_path)?;
            let mut cmd = Command::new(&binary);
            clean_etcd_env(&mut cmd)
                .current_dir(cluster.dir.path())
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(cluster.dir.path().join(format!("{name}.data")))
                .arg(format!("--listen-client-urls=http://{client}"))
                .arg(format!("--advertise-client-urls=http://{client}"))
                .arg(format!("--listen-peer-urls=http://{peer}"))
                .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
                .arg(format!("--initial-cluster={initial_cluster}"))
                .arg(format!("--initial-cluster-token={token}"))
                .args(["--initial-cluster-state", "new"])
                .args(["--logger", "zap", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            // The member binds its ports now.
            drop(held);
            let proc = Proc::spawn(format!("etcd {name}"), &mut cmd)?;
            cluster.members.push(Member {
                name,
                client_addr: client,
                log_path,
                proc,
            });
        }
        for i in 0..cluster.members.len() {
            cluster.wait_serving(i).await?;
        }
        Ok(cluster)
    }

    /// Waits until member `i` answers a linearizable Range; fails at once, with the end of its
    /// log, if it exits first.
    async fn wait_serving(&mut self, i: usize) -> Result<(), HarnessError> {
        let member = &mut self.members[i];
        let addr = member.client_addr.clone();
        let what = format!("etcd {} to answer a Range at {addr}", member.name);
        let proc = &mut member.proc;
        let answered = poll(&what, ETCD_START_TIMEOUT, POLL_INTERVAL, async || {
            if let Some(status) = proc.try_status() {
                return Err(crate::harness_error!(
                    "etcd exited during start-up ({status})"
                ));
            }
            Ok(probe(&addr).await.then_some(()))
        })
        .await;
        answered.map_err(|e| {
            let log = &self.members[i].log_path;
            let lines = tail(log, LOG_TAIL_LINES);
            crate::harness_error!("{}; the end of {}:\n{lines}", e.0, log.display())
        })
    }

    /// Every member's client address (`127.0.0.1:port`), in start order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_addr.clone()).collect()
    }

    /// Member `i`'s client address (members count from 0).
    pub fn client_addr(&self, i: usize) -> &str {
        &self.members[i].client_addr
    }

    /// Member `i`'s name (`e1` for member 0).
    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// The directory of data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether every member's process still runs.
    pub fn all_running(&mut self) -> bool {
        self.members.iter_mut().all(|m| m.proc.is_running())
    }
}

/// Whether etcd at `addr` answers a linearizable Range within [`PROBE_TIMEOUT`].
async fn probe(addr: &str) -> bool {
    let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) else {
        return false;
    };
    let endpoint = endpoint
        .connect_timeout(PROBE_TIMEOUT)
        .timeout(PROBE_TIMEOUT);
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let request = RangeRequest {
        key: PROBE_KEY.to_vec(),
        ..RangeRequest::default()
    };
    KvClient::new(channel).range(request).await.is_ok()
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.proc.kill9();
        }
        if std::thread::panicking() {
            for member in &self.members {
                eprintln!(
                    "----- etcd {} log ({}), last {LOG_TAIL_LINES} lines -----\n{}",
                    member.name,
                    member.log_path.display(),
                    tail(&member.log_path, LOG_TAIL_LINES)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_etcd_is_a_harness_error_naming_the_package() {
        let empty = tempfile::tempdir().expect("a temp dir");
        let path = empty.path().as_os_str();
        let e = find_bin(Some(path), ETCD_BIN, ETCD_PACKAGE).expect_err("no etcd there");
        assert!(e.0.contains("etcd-server") && e.0.contains("`etcd`"), "{e}");
        let e = find_bin(None, ETCDCTL_BIN, ETCDCTL_PACKAGE).expect_err("no PATH at all");
        assert!(e.0.contains("etcd-client"), "{e}");
    }
}
