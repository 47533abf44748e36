//! [`LocalCluster`]: the one local cluster of real `distributed_kv` processes on loopback.
//!
//! [`LocalCluster::start`] reserves two loopback ports per node ([`reserve_addr`], each held
//! bound until just before its node starts), generates one TOML config per node from
//! [`NodeConfig`] (so every field name is the real one; timing from [`crate::timing`]), writes
//! configs, data dirs and logs (`node<id>.toml`, `data<id>`, `node<id>.log`) under the
//! cluster's directory, starts every node and returns once each answers. Node ids run from 1.
//!
//! With [`ClusterOptions::proxied_links`] each node reaches each other node through its own
//! [`LinkProxy`] per direction, so links can be cut one by one (partitions) without root,
//! slowed (`delay`) or limited in bandwidth (`throttle`). Processes can be killed (SIGKILL)
//! and restarted from their data dir, stopped gracefully (SIGTERM), or paused (SIGSTOP) and
//! resumed (SIGCONT). With [`ClusterOptions::power_fs`] each node's data dir lies on its own
//! [`PowerFs`] mount, and a power cut kills nodes and throws away everything they had not
//! synced before restarting them.
//!
//! Dropping the cluster kills every node (each is a [`Proc`](crate::process::Proc)), unmounts,
//! and removes the directory if the cluster made it; when it is dropped during a panic it
//! first prints the tail of every node's log. Its methods are `async` where they talk to the
//! nodes; [`BlockingCluster`](crate::BlockingCluster) is the same cluster for synchronous
//! tests.

use crate::error::HarnessError;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use distributed_kv::config::{NodeConfig, TestingFaults};
use kv_api::proto::{Role, StatusResponse};
use kv_api::{Client, ClientError};
use powerfs::PowerFs;
use tempfile::TempDir;

use crate::command::tail;
use crate::node::Node;
use crate::ports::reserve_addr;
use crate::proxy::{LinkProxy, LinkState};
use crate::timing::{
    CLIENT_OP_TIMEOUT, ELECTION_TICKS, HEARTBEAT_TICKS, LEADER_TIMEOUT, NODE_START_TIMEOUT,
    POLL_INTERVAL, PROBE_TIMEOUT, REQUEST_TIMEOUT_MS, TICK_INTERVAL_MS,
};
use crate::wait::poll;

/// Cluster name in generated configs.
pub const CLUSTER_NAME: &str = "local";
/// Lines of each node's log printed when a cluster is dropped during a panic, or a node fails
/// to start.
pub const LOG_TAIL_LINES: usize = 60;

/// How the nodes of a [`LocalCluster`] are set up.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes; their ids are 1 to `nodes`.
    pub nodes: u64,
    /// Where configs, data dirs and logs go: created if missing, and left in place. `None`: a
    /// temp dir the cluster owns and removes when dropped.
    pub dir: Option<PathBuf>,
    /// The node binary. `None`: `distributed_kv` in the running executable's target directory
    /// ([`node_bin`](crate::node_bin)).
    pub binary: Option<PathBuf>,
    /// Each node reaches each other node through its own [`LinkProxy`] per direction, as
    /// partitions, delays and throttles need. Off (the default), nodes talk to each other
    /// directly and `initial_cluster` lists their own peer addresses.
    pub proxied_links: bool,
    /// Keep each node's data dir on its own power-cut filesystem, so power cuts can be
    /// injected. Needs root and /dev/fuse.
    pub power_fs: bool,
    /// Start the nodes with `unsafe_stale_reads` (to show the checker catches stale reads).
    pub unsafe_stale_reads: bool,
    /// Start the nodes with `unsafe_no_fsync` (to show the power-cut test catches lost writes).
    pub unsafe_no_fsync: bool,
    /// Start the nodes with `unsafe_watch_gaps` (to show the watch checker catches lost events).
    pub unsafe_watch_gaps: bool,
    /// Start the nodes with `unsafe_lease_expiry` (to show the lock checker catches two
    /// holders at once).
    pub unsafe_lease_expiry: bool,
    /// Every node listens on `0.0.0.0` (client and peer ports) and advertises its `127.0.0.1`
    /// addresses, which are the ones `initial_cluster` and the harness's clients use.
    pub listen_on_unspecified: bool,
    /// Changes to every node's generated config, made last: limits, snapshot thresholds, log
    /// level, timing (the node's id is in the config it is given). It must leave ids,
    /// addresses and `data_dir` alone.
    pub configure: fn(&mut NodeConfig),
}

impl Default for ClusterOptions {
    /// Three nodes with direct links in a temp dir, the harness's timing, nothing unsafe.
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            dir: None,
            binary: None,
            proxied_links: false,
            power_fs: false,
            unsafe_stale_reads: false,
            unsafe_no_fsync: false,
            unsafe_watch_gaps: false,
            unsafe_lease_expiry: false,
            listen_on_unspecified: false,
            configure: |_| {},
        }
    }
}

/// A cluster of real node processes on loopback ports (see the module doc).
pub struct LocalCluster {
    /// The node binary.
    binary: PathBuf,
    /// Configs, data dirs and logs; the nodes' working directory.
    dir: PathBuf,
    /// The nodes, by id.
    nodes: BTreeMap<u64, Node>,
    /// One proxy per directed link (from, to), when the links are proxied.
    links: BTreeMap<(u64, u64), LinkProxy>,
    /// Each node's power-cut filesystem, by id, when the options asked for them. Declared after
    /// `nodes` and unmounted only after `Drop` has killed every node.
    power: BTreeMap<u64, PowerFs>,
    /// `dir` when the cluster made it: removed last, after the unmounts.
    _temp: Option<TempDir>,
}

/// Asks the node at `addr` for its status, once, within [`PROBE_TIMEOUT`].
pub async fn status_of(addr: &str) -> Result<StatusResponse, ClientError> {
    Client::new(vec![addr.to_string()])
        .status_of(addr, PROBE_TIMEOUT)
        .await
}

/// A method was given an id the cluster does not have: a mistake in the caller.
fn no_node(id: u64) -> ! {
    panic!("the cluster has no node {id}")
}

/// The generated config of node `id`, listening on `client` and `peer` (`127.0.0.1:port`).
fn node_config(
    options: &ClusterOptions,
    id: u64,
    (client, peer): (String, String),
    data_dir: PathBuf,
    initial_cluster: String,
) -> NodeConfig {
    let (client_addr, peer_addr, advertise_client_addr, advertise_peer_addr) =
        if options.listen_on_unspecified {
            let unspecified = |addr: &str| addr.replace("127.0.0.1:", "0.0.0.0:");
            (unspecified(&client), unspecified(&peer), client, peer)
        } else {
            (client, peer, String::new(), String::new())
        };
    let mut config = NodeConfig {
        node_id: id,
        cluster_name: CLUSTER_NAME.into(),
        client_addr,
        peer_addr,
        advertise_client_addr,
        advertise_peer_addr,
        data_dir,
        initial_cluster,
        log_level: "info".into(),
        tick_interval_ms: TICK_INTERVAL_MS,
        heartbeat_ticks: HEARTBEAT_TICKS,
        election_ticks: ELECTION_TICKS,
        request_timeout_ms: REQUEST_TIMEOUT_MS,
        testing: TestingFaults {
            stale_reads: options.unsafe_stale_reads,
            no_fsync: options.unsafe_no_fsync,
            watch_gaps: options.unsafe_watch_gaps,
            lease_expiry: options.unsafe_lease_expiry,
        },
        ..NodeConfig::default()
    };
    (options.configure)(&mut config);
    config
}

impl LocalCluster {
    /// Generates the configs and starts every node; returns once every node answers.
    pub async fn start(options: ClusterOptions) -> Result<LocalCluster, HarnessError> {
        if options.nodes == 0 {
            return Err("a cluster needs at least one node".into());
        }
        let io = |e: std::io::Error| e.to_string();
        let (dir, temp) = match &options.dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::tempdir().map_err(io)?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // The nodes run in `dir`: every path they are given must not depend on the caller's.
        let dir = std::path::absolute(&dir).map_err(io)?;
        let binary = options.binary.clone().unwrap_or_else(crate::node_bin);
        let binary = std::path::absolute(&binary).map_err(io)?;
        let ids: Vec<u64> = (1..=options.nodes).collect();
        let mut addrs = BTreeMap::new();
        for &id in &ids {
            let (client, held_client) = reserve_addr().map_err(io)?;
            let (peer, held_peer) = reserve_addr().map_err(io)?;
            addrs.insert(id, (client, peer, vec![held_client, held_peer]));
        }
        let mut links = BTreeMap::new();
        if options.proxied_links {
            for &from in &ids {
                for &to in ids.iter().filter(|to| **to != from) {
                    let proxy = LinkProxy::start(addrs[&to].1.clone()).await.map_err(io)?;
                    links.insert((from, to), proxy);
                }
            }
        }
        let mut cluster = LocalCluster {
            binary,
            dir,
            nodes: BTreeMap::new(),
            links,
            power: BTreeMap::new(),
            _temp: temp,
        };
        let peers: BTreeMap<u64, String> = addrs.iter().map(|(id, a)| (*id, a.1.clone())).collect();
        for (id, (client, peer, held)) in addrs {
            let data_dir = cluster.data_dir(id, options.power_fs)?;
            let initial_cluster = cluster.initial_cluster(id, &peers);
            let config = node_config(&options, id, (client, peer), data_dir, initial_cluster);
            let node = Node::new(config, &cluster.dir, held)?;
            cluster.nodes.insert(id, node);
        }
        for &id in &ids {
            cluster.spawn(id)?;
        }
        for &id in &ids {
            cluster.wait_serving(id).await?;
        }
        Ok(cluster)
    }

    /// `initial_cluster` of node `id`: every node's peer address (`peers`), or for the others
    /// the address of `id`'s proxy to them when the links are proxied.
    fn initial_cluster(&self, id: u64, peers: &BTreeMap<u64, String>) -> String {
        let members: Vec<String> = peers
            .iter()
            .map(|(&other, peer)| match self.links.get(&(id, other)) {
                Some(proxy) => format!("{other}={}", proxy.addr()),
                None => format!("{other}={peer}"),
            })
            .collect();
        members.join(",")
    }

    /// Node `id`'s data dir: `data<id>` in the cluster's directory, or `data` on the power-cut
    /// filesystem it mounts at `power<id>`.
    fn data_dir(&mut self, id: u64, power_fs: bool) -> Result<PathBuf, HarnessError> {
        if !power_fs {
            return Ok(self.dir.join(format!("data{id}")));
        }
        let mnt = self.dir.join(format!("power{id}"));
        fs::create_dir_all(&mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
        let pfs = PowerFs::mount(&mnt).map_err(|e| {
            format!(
                "cannot mount a power-cut filesystem at {} (needs root and /dev/fuse): {e}",
                mnt.display()
            )
        })?;
        self.power.insert(id, pfs);
        Ok(mnt.join("data"))
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes.get(&id).unwrap_or_else(|| no_node(id))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).unwrap_or_else(|| no_node(id))
    }

    /// Node ids, ascending from 1.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The directory of configs, data dirs and logs (also where commands of the tests run).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Node `id`'s generated config.
    pub fn config(&self, id: u64) -> &NodeConfig {
        &self.node(id).config
    }

    /// Where node `id`'s stdout and stderr go (appended across restarts).
    pub fn log_path(&self, id: u64) -> &Path {
        &self.node(id).log_path
    }

    /// Node `id`'s client address, as it advertises it (its listen address unless it listens
    /// on `0.0.0.0`).
    pub fn client_addr(&self, id: u64) -> &str {
        self.node(id).config.advertised_client_addr()
    }

    /// Every node's client address, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .values()
            .map(|n| n.config.advertised_client_addr().to_string())
            .collect()
    }

    /// A client for the whole cluster, each operation bounded by [`CLIENT_OP_TIMEOUT`].
    pub fn client(&self) -> Client {
        Client::new(self.endpoints()).with_timeout(CLIENT_OP_TIMEOUT)
    }

    /// Ids of the nodes whose process runs and is not paused.
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.is_running())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Node `id`'s process id, while it has a process.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).pid()
    }

    /// A running node that is not `leader`.
    pub fn follower_of(&self, leader: u64) -> u64 {
        self.running()
            .into_iter()
            .find(|&id| id != leader)
            .unwrap_or_else(|| panic!("no running node besides {leader}"))
    }

    /// Starts node `id` from its config and data dir without waiting for it to answer.
    pub fn spawn(&mut self, id: u64) -> Result<(), HarnessError> {
        let (binary, dir) = (self.binary.clone(), self.dir.clone());
        self.node_mut(id).spawn(&binary, &dir)
    }

    /// Waits until node `id` answers Status; fails at once, with the end of its log, if it
    /// exits first.
    async fn wait_serving(&mut self, id: u64) -> Result<(), HarnessError> {
        let addr = self.client_addr(id).to_string();
        let what = format!("node {id} to answer at {addr}");
        let node = self.node_mut(id);
        let answered = poll(&what, NODE_START_TIMEOUT, POLL_INTERVAL, async || {
            if let Some(status) = node.exited() {
                return Err(crate::harness_error!(
                    "node {id} exited during start-up ({status})"
                ));
            }
            Ok(status_of(&addr).await.ok().map(|_| ()))
        })
        .await;
        answered.map_err(|e| {
            let log = self.log_path(id);
            let lines = tail(log, LOG_TAIL_LINES);
            crate::harness_error!("{}; the end of {}:\n{lines}", e.0, log.display())
        })
    }

    /// Starts each node of `ids` that has no process from its data dir, then waits until each
    /// answers. Running and paused nodes are left as they are.
    pub async fn restart(&mut self, ids: &[u64]) -> Result<(), HarnessError> {
        let stopped: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|&id| !self.node(id).has_process())
            .collect();
        for &id in &stopped {
            self.spawn(id)?;
        }
        for &id in &stopped {
            self.wait_serving(id).await?;
        }
        Ok(())
    }

    /// SIGKILLs node `id` (if it runs) and reaps it; returns the instant just before the signal.
    pub fn kill(&mut self, id: u64) -> Instant {
        self.node_mut(id).kill()
    }

    /// SIGTERMs every node of `ids` at once, then waits for each to exit (blocking the thread
    /// up to [`EXIT_TIMEOUT`](crate::timing::EXIT_TIMEOUT) per node); returns the exit
    /// statuses in the same order. A node that does not exit in time is killed.
    pub fn terminate(&mut self, ids: &[u64]) -> Result<Vec<ExitStatus>, HarnessError> {
        use crate::timing::EXIT_TIMEOUT;
        for &id in ids {
            self.node_mut(id).terminate()?;
        }
        ids.iter()
            .map(|&id| {
                let mut proc = self.node_mut(id).reap().expect("a node just sent SIGTERM");
                proc.wait_timeout(EXIT_TIMEOUT).ok_or_else(|| {
                    crate::harness_error!(
                        "node {id} did not exit within {EXIT_TIMEOUT:?} of SIGTERM"
                    )
                })
            })
            .collect()
    }

    /// The exit status of node `id`'s process if it has ended without being stopped by the
    /// cluster (a crash); `None` while it runs or when it has no process.
    pub fn exited(&mut self, id: u64) -> Option<ExitStatus> {
        self.node_mut(id).exited()
    }

    /// SIGSTOPs node `id`.
    pub fn pause(&mut self, id: u64) -> Result<(), HarnessError> {
        self.node_mut(id).set_paused(true)
    }

    /// SIGCONTs node `id`.
    pub fn resume(&mut self, id: u64) -> Result<(), HarnessError> {
        self.node_mut(id).set_paused(false)
    }

    /// Sets every directed link `(from, to)` that `chosen` picks to `state`.
    ///
    /// # Panics
    /// When a fault is asked of a cluster of several nodes whose links are not proxied.
    fn set_links(&self, state: LinkState, chosen: impl Fn(u64, u64) -> bool) {
        assert!(
            state == LinkState::Up || self.nodes.len() < 2 || !self.links.is_empty(),
            "links can be hurt only with ClusterOptions::proxied_links"
        );
        for (&(from, to), proxy) in &self.links {
            if chosen(from, to) {
                proxy.set(state);
            }
        }
    }

    /// Cuts every link between `side` and the other nodes, both ways.
    pub fn partition(&self, side: &[u64]) {
        self.set_links(LinkState::Down, |from, to| {
            side.contains(&from) != side.contains(&to)
        });
    }

    /// Slows every link to and from `id` by `delay`.
    pub fn delay(&self, id: u64, delay: Duration) {
        self.set_links(LinkState::Delay(delay), |from, to| from == id || to == id);
    }

    /// Limits every link to and from `id` to `bytes_per_sec`. The limit holds for each
    /// direction of each TCP connection on its own ([`LinkState::Throttle`]): a node keeps two
    /// connections to each peer (bulk and control lanes), and each gets the whole rate.
    pub fn throttle(&self, id: u64, bytes_per_sec: u64) {
        let state = LinkState::Throttle { bytes_per_sec };
        self.set_links(state, |from, to| from == id || to == id);
    }

    /// Restores every link.
    pub fn heal_links(&self) {
        self.set_links(LinkState::Up, |_, _| true);
    }

    /// Restores everything: links up, paused nodes resumed, killed nodes restarted.
    pub async fn heal_all(&mut self) -> Result<(), HarnessError> {
        self.heal_links();
        let ids = self.ids();
        for &id in &ids {
            self.resume(id)?;
        }
        self.restart(&ids).await
    }

    /// Cuts the power of nodes `ids` at once: SIGKILLs them, throws away everything their
    /// filesystems had not made durable, and restarts them. Returns what each cut dropped.
    pub async fn power_cut(&mut self, ids: &[u64]) -> Result<String, HarnessError> {
        for &id in ids {
            self.kill(id);
        }
        let mut dropped = Vec::new();
        for &id in ids {
            let pfs = self
                .power
                .get(&id)
                .ok_or_else(|| format!("node {id} has no power-cut filesystem"))?;
            dropped.push(format!("node {id}: {}", pfs.power_cut()));
            self.node_mut(id).reboot();
        }
        self.restart(ids).await?;
        Ok(dropped.join("; "))
    }

    /// Node `id`'s status, asked once.
    pub async fn status(&self, id: u64) -> Result<StatusResponse, ClientError> {
        status_of(self.client_addr(id)).await
    }

    /// The leader, if some running node that answers says it is one.
    pub async fn leader(&self) -> Option<u64> {
        for id in self.running() {
            if let Ok(s) = self.status(id).await {
                if s.role() == Role::Leader {
                    return Some(s.node_id);
                }
            }
        }
        None
    }

    /// The leader, if every running node answers and follows it in its term.
    async fn followed_leader(&self) -> Option<u64> {
        let mut statuses = Vec::new();
        for id in self.running() {
            statuses.push(self.status(id).await.ok()?);
        }
        let leader = statuses.iter().find(|s| s.role() == Role::Leader)?;
        statuses
            .iter()
            .all(|s| s.leader_id == leader.node_id && s.term == leader.term)
            .then_some(leader.node_id)
    }

    /// Waits up to [`LEADER_TIMEOUT`] until one running node is leader and every running node
    /// follows it; returns its id.
    pub async fn wait_leader(&self) -> Result<u64, HarnessError> {
        let what = "a leader every running node follows";
        poll(what, LEADER_TIMEOUT, POLL_INTERVAL, async || {
            Ok(self.followed_leader().await)
        })
        .await
    }

    /// Waits until every node reports the same applied index and the same state hash twice in
    /// a row; returns them.
    pub async fn converge(&self, timeout: Duration) -> Result<(u64, u64), HarnessError> {
        self.converge_with(timeout, PROBE_TIMEOUT).await
    }

    /// [`converge`](Self::converge), allowing each Hash `hash_timeout`: hashing a state of tens
    /// of MiB takes longer than [`PROBE_TIMEOUT`].
    pub async fn converge_with(
        &self,
        timeout: Duration,
        hash_timeout: Duration,
    ) -> Result<(u64, u64), HarnessError> {
        let endpoints = self.endpoints();
        let mut client = Client::new(endpoints.clone());
        let mut previous = None;
        let mut last = String::from("no answer yet");
        let what = "every node to report the same applied index and state hash twice in a row";
        let converged = poll(what, timeout, POLL_INTERVAL * 4, async || {
            let mut seen = Vec::new();
            for addr in &endpoints {
                match client.hash_of(addr, hash_timeout).await {
                    Ok(h) => seen.push((h.applied_index, h.hash)),
                    Err(e) => last = e.to_string(),
                }
            }
            let answered = seen.len() == endpoints.len();
            let agreed = (answered && seen.windows(2).all(|w| w[0] == w[1])).then(|| seen[0]);
            if answered && agreed.is_none() {
                last = format!("nodes differ: (applied, hash) = {seen:?}");
            }
            let twice = agreed.is_some() && agreed == previous;
            previous = agreed;
            Ok(agreed.filter(|_| twice))
        })
        .await;
        converged.map_err(|e| crate::harness_error!("{}: {last}", e.0))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            node.kill();
        }
        if std::thread::panicking() {
            for (id, node) in &self.nodes {
                eprintln!(
                    "----- node {id} log ({}), last {LOG_TAIL_LINES} lines -----\n{}",
                    node.log_path.display(),
                    tail(&node.log_path, LOG_TAIL_LINES)
                );
            }
        }
    }
}
