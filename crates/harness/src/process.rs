//! The multi-process test harness shared by the tier-4 tests (`tests/process.rs`) and the GUI
//! tests (`tests/gui.rs`): real `distributed_kv` processes from generated TOML files on free
//! loopback ports, in a temp dir, killed when dropped.
//!
//! - [`free_port`] binds `127.0.0.1:0`, reads the port and drops the listener; a process-wide
//!   set makes sure two tests in one binary never get the same port.
//! - [`Cluster::start`] makes a `tempfile::tempdir()`, writes one generated TOML config per node
//!   into it (from [`NodeConfig`], so every field name is the real one), with the data dirs
//!   inside it, and spawns one node per config. Each node's stdout and stderr go to
//!   `node<id>.log` in the temp dir.
//! - [`Proc`] owns one child process and kills it (SIGKILL) when dropped, so no process is left
//!   behind even when a test panics. When a [`Cluster`] is dropped during a panic, it prints the
//!   tail of every node's log.
//! - [`poll_until`] retries a probe until it succeeds or a deadline passes; there are no fixed
//!   sleeps where a condition can be polled.
//!
//! Raft timing in the generated configs is fast but realistic: 50 ms ticks, heartbeats every
//! tick, an election timeout of 10 ticks (0.5–1 s after randomisation).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use distributed_kv::config::NodeConfig;
use kv_api::proto::StatusResponse;
use kv_api::{Client, ClientError};
use tempfile::TempDir;
use tokio::runtime::Runtime;

/// The node binary under test.
pub fn node_bin() -> PathBuf {
    crate::target_bin("distributed_kv")
}

/// The command-line client under test.
pub fn kvctl_bin() -> PathBuf {
    crate::target_bin("kvctl")
}

/// Raft tick length in generated configs, in milliseconds.
pub const TICK_INTERVAL_MS: u64 = 50;
/// Ticks between leader heartbeats in generated configs.
pub const HEARTBEAT_TICKS: usize = 1;
/// Election timeout in ticks in generated configs (randomised by Raft up to twice this).
pub const ELECTION_TICKS: usize = 10;
/// How long a node lets a client request wait, in milliseconds, in generated configs.
pub const REQUEST_TIMEOUT_MS: u64 = 3_000;
/// Cluster name in generated configs.
pub const CLUSTER_NAME: &str = "process-test";

/// How long a node may take from spawn until its client API answers.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a cluster may take to elect a leader that every live node follows.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node may take to exit after SIGTERM (or a bad start to exit by itself).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one `kvctl` invocation may take before the test gives up on it.
pub const KVCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a restarted node may take to apply everything the leader committed.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two probes of a polled condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Deadline of one Status RPC to one node.
pub const STATUS_RPC_TIMEOUT: Duration = Duration::from_secs(1);
/// Deadline of one client operation, retries included.
pub const CLIENT_OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of each node's log printed when a test fails.
pub const LOG_TAIL_LINES: usize = 60;

pub use crate::ports::{free_addr, free_port};

/// Retries `probe` every [`POLL_INTERVAL`] until it returns `Some`, and returns that; panics
/// naming `what` if `timeout` passes first.
pub fn poll_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Removes every `KV_*` variable from `cmd`'s environment, so the caller's environment cannot
/// change what a test starts, and turns off colours in logs.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KV_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1")
}

/// One child process, killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    /// The process; `None` once it has been reaped.
    pub child: Option<Child>,
    /// What it is, for messages.
    pub name: String,
    /// Its exit status once known.
    pub status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd`.
    pub fn spawn(name: impl Into<String>, cmd: &mut Command) -> Proc {
        let name = name.into();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name}: {e}"));
        Proc {
            child: Some(child),
            name,
            status: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("process is reaped")
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            let child = self.child.as_mut().expect("child");
            if let Some(s) = child.try_wait().expect("try_wait") {
                self.status = Some(s);
            }
        }
        self.status
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends SIGTERM (through `kill(1)`: the crate has no libc binding).
    pub fn terminate(&mut self) {
        if !self.is_running() {
            return;
        }
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill -TERM")
            .success();
        assert!(ok, "kill -TERM {} ({}) failed", self.pid(), self.name);
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        if let Some(child) = self.child.as_mut() {
            if self.status.is_none() {
                let _ = child.kill();
                self.status = child.wait().ok();
            }
        }
        self.status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What a finished command produced.
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Finished {
    /// The exit code; panics if the process died from a signal (for example an abort).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {:?}\n{}", self.status, self))
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion with stdin closed and its output captured in files under `dir`;
/// panics (after killing it) if it takes longer than `timeout`.
pub fn run_to_exit(cmd: &mut Command, dir: &Path, timeout: Duration) -> Finished {
    run_to_exit_with_stdin(cmd, Stdio::null(), dir, timeout)
}

/// [`run_to_exit`] with `stdin` as the command's standard input.
pub fn run_to_exit_with_stdin(
    cmd: &mut Command,
    stdin: Stdio,
    dir: &Path,
    timeout: Duration,
) -> Finished {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let out_path = dir.join(format!("cmd{n}.stdout"));
    let err_path = dir.join(format!("cmd{n}.stderr"));
    cmd.stdin(stdin)
        .stdout(File::create(&out_path).expect("create stdout file"))
        .stderr(File::create(&err_path).expect("create stderr file"));
    let name = format!("{cmd:?}");
    let mut proc = Proc::spawn(name.clone(), cmd);
    let status = proc.wait_timeout(timeout);
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        Some(status) => Finished {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{name} still runs after {timeout:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
    }
}

/// Runs `kvctl --endpoints <endpoints> <args>` in `dir`.
pub fn kvctl(dir: &Path, endpoints: &str, args: &[&str]) -> Finished {
    run_kvctl(dir, endpoints, args, Stdio::null())
}

/// Runs `kvctl --endpoints <endpoints> <args>` in `dir` with the file at `input` as its
/// standard input.
pub fn kvctl_with_stdin(dir: &Path, endpoints: &str, args: &[&str], input: &Path) -> Finished {
    let stdin = File::open(input).expect("open kvctl's stdin file");
    run_kvctl(dir, endpoints, args, stdin.into())
}

fn run_kvctl(dir: &Path, endpoints: &str, args: &[&str], stdin: Stdio) -> Finished {
    let mut cmd = Command::new(kvctl_bin());
    clean_env(&mut cmd)
        .current_dir(dir)
        .arg("--endpoints")
        .arg(endpoints)
        .args(args);
    run_to_exit_with_stdin(&mut cmd, stdin, dir, KVCTL_TIMEOUT)
}

/// The last `n` lines of the file at `path` (or why it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Asks the node at `addr` for its status, once.
pub async fn status_of(addr: &str) -> Result<StatusResponse, ClientError> {
    Client::new(vec![addr.to_string()])
        .status_of(addr, STATUS_RPC_TIMEOUT)
        .await
}

/// Settings of a generated cluster that tests vary.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Number of nodes.
    pub nodes: u64,
    /// `max_value_bytes` of every node.
    pub max_value_bytes: usize,
    /// `max_list_limit` of every node.
    pub max_list_limit: u32,
    /// `max_pending_requests` of every node.
    pub max_pending_requests: usize,
    /// `snapshot_threshold` of every node.
    pub snapshot_threshold: u64,
    /// `log_retain_entries` of every node.
    pub log_retain_entries: u64,
    /// Every node listens on `0.0.0.0` (client and peer ports) and advertises its `127.0.0.1`
    /// addresses, which are the ones `initial_cluster` and the harness's clients use.
    pub listen_on_unspecified: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            nodes: 3,
            max_value_bytes: 64 * 1024,
            max_list_limit: 1_000,
            max_pending_requests: NodeConfig::default().max_pending_requests,
            snapshot_threshold: NodeConfig::default().snapshot_threshold,
            log_retain_entries: NodeConfig::default().log_retain_entries,
            listen_on_unspecified: false,
        }
    }
}

/// One node of a [`Cluster`]: its generated config and its process, if running.
pub struct NodeSlot {
    /// Node id.
    pub id: u64,
    /// The generated config.
    pub config: NodeConfig,
    /// Where the config file is.
    pub config_path: PathBuf,
    /// Where the node's stdout and stderr go (appended across restarts).
    pub log_path: PathBuf,
    /// The running process.
    pub proc: Option<Proc>,
    /// How many times it has been spawned.
    pub starts: usize,
}

/// A cluster of real node processes on free loopback ports, with configs, data dirs and logs in
/// one temp dir. Dropping it kills every node.
pub struct Cluster {
    /// The nodes, in id order (index = id - 1).
    pub nodes: Vec<NodeSlot>,
    /// The runtime the async client runs on.
    pub rt: Runtime,
    /// Holds configs, data dirs, logs and command output; removed on drop.
    pub dir: TempDir,
}

impl Cluster {
    /// Writes a config per node and starts every node; returns once every client API answers.
    pub fn start(settings: Settings) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let addrs: Vec<(u64, String, String)> = (1..=settings.nodes)
            .map(|id| (id, free_addr(), free_addr()))
            .collect();
        let initial_cluster = addrs
            .iter()
            .map(|(id, _, peer)| format!("{id}={peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = addrs
            .into_iter()
            .map(|(id, client_addr, peer_addr)| {
                let (client_addr, peer_addr, advertise_client_addr, advertise_peer_addr) =
                    if settings.listen_on_unspecified {
                        (
                            client_addr.replace("127.0.0.1:", "0.0.0.0:"),
                            peer_addr.replace("127.0.0.1:", "0.0.0.0:"),
                            client_addr,
                            peer_addr,
                        )
                    } else {
                        (client_addr, peer_addr, String::new(), String::new())
                    };
                let config = NodeConfig {
                    node_id: id,
                    cluster_name: CLUSTER_NAME.into(),
                    client_addr,
                    peer_addr,
                    advertise_client_addr,
                    advertise_peer_addr,
                    data_dir: dir.path().join(format!("data{id}")),
                    initial_cluster: initial_cluster.clone(),
                    log_level: "info".into(),
                    tick_interval_ms: TICK_INTERVAL_MS,
                    heartbeat_ticks: HEARTBEAT_TICKS,
                    election_ticks: ELECTION_TICKS,
                    max_value_bytes: settings.max_value_bytes,
                    max_list_limit: settings.max_list_limit,
                    max_pending_requests: settings.max_pending_requests,
                    snapshot_threshold: settings.snapshot_threshold,
                    log_retain_entries: settings.log_retain_entries,
                    request_timeout_ms: REQUEST_TIMEOUT_MS,
                    ..NodeConfig::default()
                };
                let config_path = dir.path().join(format!("node{id}.toml"));
                let text = toml::to_string(&config).expect("serialise config");
                fs::write(&config_path, text).expect("write config");
                NodeSlot {
                    id,
                    config,
                    config_path,
                    log_path: dir.path().join(format!("node{id}.log")),
                    proc: None,
                    starts: 0,
                }
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            rt: Runtime::new().expect("tokio runtime"),
            dir,
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i);
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_serving(i);
        }
        cluster
    }

    /// Spawns node `i` (index, not id) from its config file, appending to its log.
    pub fn spawn(&mut self, i: usize) {
        let slot = &mut self.nodes[i];
        assert!(slot.proc.is_none(), "node {} is already running", slot.id);
        slot.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&slot.log_path)
            .expect("open node log");
        writeln!(
            log,
            "===== start #{} of node {} =====",
            slot.starts, slot.id
        )
        .unwrap();
        let mut cmd = Command::new(node_bin());
        clean_env(&mut cmd)
            .current_dir(self.dir.path())
            .arg("--config")
            .arg(&slot.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        slot.proc = Some(Proc::spawn(format!("node {}", slot.id), &mut cmd));
    }

    /// Polls until node `i` answers Status.
    pub fn wait_serving(&mut self, i: usize) {
        let addr = self.client_addr(i).to_string();
        let what = format!("node {} to serve at {addr}", self.nodes[i].id);
        poll_until(&what, NODE_START_TIMEOUT, || {
            let proc = self.nodes[i].proc.as_mut().expect("node is running");
            if let Some(status) = proc.try_status() {
                panic!("node {} exited during start-up: {status:?}", i + 1);
            }
            self.rt.block_on(status_of(&addr)).ok()
        });
    }

    /// SIGKILLs node `i`; returns the instant just before the signal was sent.
    pub fn kill9(&mut self, i: usize) -> Instant {
        let mut proc = self.nodes[i].proc.take().expect("node is running");
        let at = Instant::now();
        proc.kill9();
        at
    }

    /// SIGTERMs every node in `indexes` at once, then waits for each to exit; returns the exit
    /// statuses in the same order.
    pub fn terminate(&mut self, indexes: &[usize]) -> Vec<ExitStatus> {
        for &i in indexes {
            self.nodes[i].proc.as_mut().expect("running").terminate();
        }
        indexes
            .iter()
            .map(|&i| {
                let mut proc = self.nodes[i].proc.take().expect("running");
                proc.wait_timeout(EXIT_TIMEOUT).unwrap_or_else(|| {
                    panic!(
                        "node {} did not exit within {EXIT_TIMEOUT:?} of SIGTERM",
                        i + 1
                    )
                })
            })
            .collect()
    }

    /// Node `i`'s client address, as it advertises it (its listen address unless it listens
    /// on `0.0.0.0`).
    pub fn client_addr(&self, i: usize) -> &str {
        self.nodes[i].config.advertised_client_addr()
    }

    /// Every node's client address.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.nodes.len())
            .map(|i| self.client_addr(i).to_string())
            .collect()
    }

    /// A client for the whole cluster.
    pub fn client(&self) -> Client {
        Client::new(self.endpoints()).with_timeout(CLIENT_OP_TIMEOUT)
    }

    /// Node `i`'s status, asked once.
    pub fn status(&self, i: usize) -> Result<StatusResponse, ClientError> {
        self.rt.block_on(status_of(self.client_addr(i)))
    }

    /// Indexes of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].proc.is_some())
            .collect()
    }

    /// Polls until one running node is leader and every running node follows it; returns its
    /// index.
    pub fn wait_for_leader(&self) -> usize {
        poll_until(
            "a leader every running node follows",
            LEADER_TIMEOUT,
            || {
                let statuses: Vec<(usize, StatusResponse)> = self
                    .running()
                    .into_iter()
                    .map(|i| self.status(i).ok().map(|s| (i, s)))
                    .collect::<Option<_>>()?;
                let (leader, status) = statuses
                    .iter()
                    .find(|(_, s)| s.role() == kv_api::proto::Role::Leader)?;
                statuses
                    .iter()
                    .all(|(_, s)| s.leader_id == status.node_id && s.term == status.term)
                    .then_some(*leader)
            },
        )
    }

    /// Polls until nodes `a` and `b` report the same applied index and state hash.
    pub fn wait_same_state(&self, a: usize, b: usize) {
        let addrs = [
            self.client_addr(a).to_string(),
            self.client_addr(b).to_string(),
        ];
        let mut client = Client::new(addrs.to_vec());
        let what = format!("nodes {} and {} to reach the same state", a + 1, b + 1);
        poll_until(&what, CATCH_UP_TIMEOUT, || {
            let x = self
                .rt
                .block_on(client.hash_of(&addrs[0], STATUS_RPC_TIMEOUT))
                .ok()?;
            let y = self
                .rt
                .block_on(client.hash_of(&addrs[1], STATUS_RPC_TIMEOUT))
                .ok()?;
            (x.applied_index == y.applied_index && x.hash == y.hash).then_some(())
        });
    }

    /// Index of a running node that is not `leader`.
    pub fn follower_of(&self, leader: usize) -> usize {
        self.running()
            .into_iter()
            .find(|&i| i != leader)
            .expect("a running follower")
    }

    /// Runs kvctl in the cluster's temp dir against `endpoints`.
    pub fn kvctl(&self, endpoints: &str, args: &[&str]) -> Finished {
        kvctl(self.dir.path(), endpoints, args)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for slot in &mut self.nodes {
            if let Some(mut proc) = slot.proc.take() {
                proc.kill9();
            }
        }
        if std::thread::panicking() {
            for slot in &self.nodes {
                eprintln!(
                    "----- node {} log ({}), last {LOG_TAIL_LINES} lines -----\n{}",
                    slot.id,
                    slot.log_path.display(),
                    tail(&slot.log_path, LOG_TAIL_LINES)
                );
            }
        }
    }
}
