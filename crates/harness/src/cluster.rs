//! A local cluster of real `distributed_kv` processes that a nemesis can hurt.
//!
//! Every node reaches every other node through its own [`LinkProxy`] per direction, so links
//! can be cut one by one (partitions) without root. Processes can be killed (SIGKILL) and
//! restarted from their data dir, or paused (SIGSTOP) and resumed (SIGCONT); their links can be
//! slowed (`delay`) or limited in bandwidth (`throttle`). With
//! [`ClusterOptions::power_fs`] each node's data dir lies on its own [`PowerFs`] mount, and a
//! power cut kills nodes and throws away everything they had not synced before restarting
//! them. Dropping the cluster kills every node, then unmounts; the caller owns the directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use powerfs::PowerFs;

use crate::ports::reserve_addr;
use crate::proxy::{LinkProxy, LinkState};
use distributed_kv::config::NodeConfig;
use distributed_kv::state_machine::trust::BOOT_ID_ENV;
use kv_api::Client;

/// Raft tick in the generated configs, in milliseconds (fast elections keep runs short).
pub const CHAOS_TICK_MS: u64 = 50;
/// Election timeout in ticks.
pub const CHAOS_ELECTION_TICKS: usize = 10;
/// A node request's deadline, in milliseconds.
pub const CHAOS_REQUEST_TIMEOUT_MS: u64 = 2_000;
/// How long a node may take to start answering.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one Status or Hash question may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between two probes of a condition.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// One node process and its settings.
struct ChaosNode {
    /// Its client address.
    client_addr: String,
    /// Its config file.
    config_path: PathBuf,
    /// Its log file.
    log_path: PathBuf,
    /// The process, when running.
    child: Option<Child>,
    /// Whether it is stopped with SIGSTOP.
    paused: bool,
    /// Power cuts it has been through: each one is a new boot of its "machine", which the node
    /// sees as a new boot id.
    boots: u64,
}

/// How the nodes of a [`LocalCluster`] are set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterOptions {
    /// Start the nodes with `unsafe_stale_reads` (to show the checker catches stale reads).
    pub unsafe_stale_reads: bool,
    /// Start the nodes with `unsafe_no_fsync` (to show the power-cut test catches lost writes).
    pub unsafe_no_fsync: bool,
    /// Keep each node's data dir on its own power-cut filesystem, so power cuts can be injected.
    /// Needs root and /dev/fuse.
    pub power_fs: bool,
}

/// A local cluster under a nemesis.
pub struct LocalCluster {
    /// The node binary.
    binary: PathBuf,
    /// The nodes, by id.
    nodes: BTreeMap<u64, ChaosNode>,
    /// One proxy per directed link (from, to).
    links: BTreeMap<(u64, u64), LinkProxy>,
    /// Each node's power-cut filesystem, by id, when the options asked for them. Declared after
    /// `nodes` and unmounted only after `Drop` has killed every node.
    power: BTreeMap<u64, PowerFs>,
    /// How the nodes are started, again at every restart.
    options: ClusterOptions,
}

fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?
        .success();
    ok.then_some(())
        .ok_or_else(|| format!("kill -{sig} {pid} failed"))
}

impl LocalCluster {
    /// Starts `size` nodes of `binary` with configs, data and logs under `dir`; returns once
    /// every node answers.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        size: u64,
        options: ClusterOptions,
    ) -> Result<LocalCluster, String> {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let io = |e: std::io::Error| e.to_string();
        let mut addrs = BTreeMap::new();
        let mut reserved = Vec::new();
        for id in 1..=size {
            let (client, held_client) = reserve_addr().map_err(io)?;
            let (peer, held_peer) = reserve_addr().map_err(io)?;
            reserved.extend([held_client, held_peer]);
            addrs.insert(id, (client, peer));
        }
        let mut links = BTreeMap::new();
        for from in 1..=size {
            for to in (1..=size).filter(|t| *t != from) {
                let proxy = LinkProxy::start(addrs[&to].1.clone()).await.map_err(io)?;
                links.insert((from, to), proxy);
            }
        }
        let mut nodes = BTreeMap::new();
        let mut power = BTreeMap::new();
        for (id, (client_addr, peer_addr)) in &addrs {
            let data_dir = if options.power_fs {
                let mnt = dir.join(format!("power{id}"));
                fs::create_dir_all(&mnt).map_err(io)?;
                let pfs = PowerFs::mount(&mnt).map_err(|e| {
                    format!(
                        "cannot mount a power-cut filesystem at {} (needs root and /dev/fuse): {e}",
                        mnt.display()
                    )
                })?;
                power.insert(*id, pfs);
                mnt.join("data")
            } else {
                dir.join(format!("data{id}"))
            };
            let initial_cluster = (1..=size)
                .map(|other| {
                    let addr = if other == *id {
                        peer_addr.clone()
                    } else {
                        links[&(*id, other)].addr().to_string()
                    };
                    format!("{other}={addr}")
                })
                .collect::<Vec<_>>()
                .join(",");
            let config = NodeConfig {
                node_id: *id,
                cluster_name: "chaos".into(),
                client_addr: client_addr.clone(),
                peer_addr: peer_addr.clone(),
                data_dir,
                initial_cluster,
                log_level: "warn".into(),
                tick_interval_ms: CHAOS_TICK_MS,
                election_ticks: CHAOS_ELECTION_TICKS,
                request_timeout_ms: CHAOS_REQUEST_TIMEOUT_MS,
                ..NodeConfig::default()
            };
            let config_path = dir.join(format!("node{id}.toml"));
            fs::write(
                &config_path,
                toml::to_string(&config).map_err(|e| e.to_string())?,
            )
            .map_err(io)?;
            let log_path = dir.join(format!("node{id}.log"));
            nodes.insert(
                *id,
                ChaosNode {
                    client_addr: client_addr.clone(),
                    config_path,
                    log_path,
                    child: None,
                    paused: false,
                    boots: 0,
                },
            );
        }
        let mut cluster = LocalCluster {
            binary: binary.to_path_buf(),
            nodes,
            links,
            power,
            options,
        };
        // The nodes bind their ports now.
        drop(reserved);
        for id in 1..=size {
            cluster.spawn(id)?;
        }
        for id in 1..=size {
            cluster.wait_serving(id).await?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, id: u64) -> Result<(), String> {
        let binary = self.binary.clone();
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| format!("no node {id}"))?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&binary);
        cmd.arg("--config").arg(&node.config_path);
        // The deliberate faults are flags only: no config file can turn them on.
        if self.options.unsafe_stale_reads {
            cmd.arg("--unsafe-stale-reads");
        }
        if self.options.unsafe_no_fsync {
            cmd.arg("--unsafe-no-fsync");
        }
        let child = cmd
            .env("NO_COLOR", "1")
            .env(BOOT_ID_ENV, format!("chaos-node{id}-boot{}", node.boots))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    async fn wait_serving(&mut self, id: u64) -> Result<(), String> {
        let addr = self.nodes[&id].client_addr.clone();
        let mut client = Client::new(vec![addr.clone()]);
        let deadline = Instant::now() + NODE_START_TIMEOUT;
        loop {
            if client.status_of(&addr, PROBE_TIMEOUT).await.is_ok() {
                return Ok(());
            }
            if let Some(child) = self.nodes.get_mut(&id).and_then(|n| n.child.as_mut()) {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "node {id} exited during start-up ({status}); see {}",
                        self.nodes[&id].log_path.display()
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node {id} did not answer within {NODE_START_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Every node's client address.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.client_addr.clone()).collect()
    }

    /// Node `id`'s client address.
    pub fn client_addr(&self, id: u64) -> Option<&str> {
        self.nodes.get(&id).map(|n| n.client_addr.as_str())
    }

    /// Waits until some node says it is the leader; returns its id.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(id) = self.leader().await {
                return Ok(id);
            }
            if Instant::now() > deadline {
                return Err(format!("no leader within {timeout:?}"));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// The leader, if some node that answers says it is one.
    pub async fn leader(&self) -> Option<u64> {
        let mut client = Client::new(self.endpoints());
        for n in self
            .nodes
            .values()
            .filter(|n| n.child.is_some() && !n.paused)
        {
            if let Ok(s) = client.status_of(&n.client_addr, PROBE_TIMEOUT).await {
                if s.role() == kv_api::proto::Role::Leader {
                    return Some(s.node_id);
                }
            }
        }
        None
    }

    /// SIGKILLs node `id`.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts node `id` from its data dir (no-op when it runs).
    pub async fn restart(&mut self, id: u64) -> Result<(), String> {
        if self.nodes.get(&id).is_some_and(|n| n.child.is_none()) {
            self.spawn(id)?;
            self.wait_serving(id).await?;
        }
        Ok(())
    }

    /// Cuts the power of nodes `ids` at once: SIGKILLs them, throws away everything their
    /// filesystems had not made durable, and restarts them. Returns what each cut dropped.
    pub async fn power_cut(&mut self, ids: &[u64]) -> Result<String, String> {
        for id in ids {
            self.kill(*id);
        }
        let mut dropped = Vec::new();
        for id in ids {
            let pfs = self
                .power
                .get(id)
                .ok_or_else(|| format!("node {id} has no power-cut filesystem"))?;
            dropped.push(format!("node {id}: {}", pfs.power_cut()));
            if let Some(node) = self.nodes.get_mut(id) {
                node.boots += 1;
            }
        }
        for id in ids {
            self.spawn(*id)?;
        }
        for id in ids {
            self.wait_serving(*id).await?;
        }
        Ok(dropped.join("; "))
    }

    /// SIGSTOPs node `id`.
    pub fn pause(&mut self, id: u64) -> Result<(), String> {
        self.set_paused(id, true)
    }

    /// SIGCONTs node `id`.
    pub fn resume(&mut self, id: u64) -> Result<(), String> {
        self.set_paused(id, false)
    }

    fn set_paused(&mut self, id: u64, paused: bool) -> Result<(), String> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| format!("no node {id}"))?;
        if let Some(child) = &node.child {
            if node.paused != paused {
                signal(child.id(), if paused { "STOP" } else { "CONT" })?;
                node.paused = paused;
            }
        }
        Ok(())
    }

    /// Cuts every link between `side` and the other nodes, both ways.
    pub fn partition(&self, side: &[u64]) {
        for ((from, to), proxy) in &self.links {
            if side.contains(from) != side.contains(to) {
                proxy.set(LinkState::Down);
            }
        }
    }

    /// Slows every link to and from `id` by `delay`.
    pub fn delay(&self, id: u64, delay: Duration) {
        for ((from, to), proxy) in &self.links {
            if *from == id || *to == id {
                proxy.set(LinkState::Delay(delay));
            }
        }
    }

    /// Limits every link to and from `id` to `bytes_per_sec`. The limit holds for each
    /// direction of each TCP connection on its own ([`LinkState::Throttle`]): a node keeps two
    /// connections to each peer (bulk and control lanes), and each gets the whole rate.
    pub fn throttle(&self, id: u64, bytes_per_sec: u64) {
        for ((from, to), proxy) in &self.links {
            if *from == id || *to == id {
                proxy.set(LinkState::Throttle { bytes_per_sec });
            }
        }
    }

    /// Restores every link.
    pub fn heal_links(&self) {
        for proxy in self.links.values() {
            proxy.set(LinkState::Up);
        }
    }

    /// Restores everything: links up, paused nodes resumed, killed nodes restarted.
    pub async fn heal_all(&mut self) -> Result<(), String> {
        self.heal_links();
        for id in self.ids() {
            self.resume(id)?;
            self.restart(id).await?;
        }
        Ok(())
    }

    /// Waits until every node reports the same applied index and the same state hash twice in
    /// a row; returns them.
    pub async fn converge(&self, timeout: Duration) -> Result<(u64, u64), String> {
        self.converge_with(timeout, PROBE_TIMEOUT).await
    }

    /// [`converge`](Self::converge), allowing each Hash `hash_timeout`: hashing a state of tens
    /// of MiB takes longer than [`PROBE_TIMEOUT`].
    pub async fn converge_with(
        &self,
        timeout: Duration,
        hash_timeout: Duration,
    ) -> Result<(u64, u64), String> {
        let mut client = Client::new(self.endpoints());
        let deadline = Instant::now() + timeout;
        let mut previous = None;
        let mut last = String::from("no answer yet");
        loop {
            let mut seen = Vec::new();
            for n in self.nodes.values() {
                match client.hash_of(&n.client_addr, hash_timeout).await {
                    Ok(h) => seen.push((h.applied_index, h.hash)),
                    Err(e) => last = e.to_string(),
                }
            }
            if seen.len() == self.nodes.len() && seen.windows(2).all(|w| w[0] == w[1]) {
                if previous == Some(seen[0]) {
                    return Ok(seen[0]);
                }
                previous = Some(seen[0]);
            } else {
                previous = None;
                if seen.len() == self.nodes.len() {
                    last = format!("nodes differ: (applied, hash) = {seen:?}");
                }
            }
            if Instant::now() > deadline {
                return Err(format!("nodes did not converge within {timeout:?}: {last}"));
            }
            tokio::time::sleep(PROBE_INTERVAL * 4).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                if node.paused {
                    let _ = signal(child.id(), "CONT");
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
