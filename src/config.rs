//! Node configuration: a TOML file, environment variables and command-line flags.
//!
//! Precedence is flag > environment variable (`KV_*`) > file > default. Every field of
//! [`NodeConfig`] has a flag of the same name in kebab case (`election_ticks` is
//! `--election-ticks` and `KV_ELECTION_TICKS`). Unknown fields in a file are an error, and every
//! error names the file (or `<flags>`) and the field, on one line.

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default client (gRPC API) listen address.
pub const DEFAULT_CLIENT_ADDR: &str = "127.0.0.1:50051";
/// Default peer (Raft transport) listen address.
pub const DEFAULT_PEER_ADDR: &str = "127.0.0.1:50052";
/// Default data directory, relative to the directory the node is started in.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// Default `max_list_bytes`: under the 4 MiB that gRPC implementations (tonic, grpc-go,
/// grpc-java) decode by default, so any client can receive a whole page.
pub const DEFAULT_MAX_LIST_BYTES: usize = 3 * 1024 * 1024;

/// Where a value came from, for error messages when it did not come from a file.
pub const FLAGS_SOURCE: &str = "<flags/env>";

/// The complete, validated configuration of one node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's Raft id: a positive number, unique in the cluster.
    pub node_id: u64,
    /// Name of the cluster; recorded in the data dir so a node cannot join the wrong one.
    pub cluster_name: String,
    /// Address the client gRPC API listens on (and that other nodes tell clients about).
    pub client_addr: String,
    /// Address the peer (Raft) gRPC service listens on.
    pub peer_addr: String,
    /// The client address this node tells others about (leader hints, Status), when it is not
    /// the listen address: a node listening on `0.0.0.0` must name an address clients can
    /// connect to, or followers would send them to `0.0.0.0`. Empty: `client_addr`.
    pub advertise_client_addr: String,
    /// The peer address other nodes know this node by: its own entry in `initial_cluster` must
    /// be this one, and Status reports it. Needed when `peer_addr` is `0.0.0.0` (or behind NAT).
    /// Empty: `peer_addr`.
    pub advertise_peer_addr: String,
    /// Directory for the sled database, the snapshot file and the lock file.
    pub data_dir: PathBuf,
    /// Every voter of the first configuration: `1=host:port,2=host:port,...` (peer addresses).
    /// Empty means a single-node cluster of this node at `peer_addr`.
    pub initial_cluster: String,
    /// `tracing` filter, e.g. `info` or `distributed_kv=debug,info`.
    pub log_level: String,
    /// Length of one Raft tick in milliseconds.
    pub tick_interval_ms: u64,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// Ticks without a leader before a follower campaigns (randomised up to twice this).
    pub election_ticks: usize,
    /// Applied entries between two snapshots, at least; each snapshot lets the log be
    /// compacted. A snapshot serializes the whole MVCC state, history included, so its cost
    /// grows with the store; it is built beside the applies, but takes CPU and disk from
    /// them. So once the last snapshot held more records than this, the next waits for that
    /// many entries instead (its cost per write stays constant). The default is etcd's
    /// `--snapshot-count` (100 000): at 10 000, with the build still on the apply thread, it
    /// put 0.3–0.9 s into put p99 at 256 clients (BENCHMARKS.md). The price is a longer log
    /// to replay after a crash.
    pub snapshot_threshold: u64,
    /// Entries kept in the log behind a snapshot, so briefly lagging followers catch up
    /// from the log rather than by a full snapshot.
    pub log_retain_entries: u64,
    /// Largest accepted key, in bytes.
    pub max_key_bytes: usize,
    /// Largest accepted value, in bytes.
    pub max_value_bytes: usize,
    /// How long a client request may wait for commit or a read index, in milliseconds.
    pub request_timeout_ms: u64,
    /// Most client requests in flight at once on this node; more get `RESOURCE_EXHAUSTED`.
    pub max_pending_requests: usize,
    /// Largest page a List returns, in keys.
    pub max_list_limit: u32,
    /// Largest page a List returns, in bytes of encoded answer (keys, values and framing). The
    /// StorageActor builds a page while applies wait, and it is sent as one gRPC message, so
    /// this bounds both. A page always holds its first key, even one alone larger than this,
    /// so any positive value works; above 4 MiB, clients with gRPC's default decode limit
    /// cannot receive full pages.
    pub max_list_bytes: usize,
    /// How often a watcher that asked for progress notices (`progress_notify`) and was sent
    /// nothing meanwhile is sent an empty answer with the current revision, in
    /// milliseconds. etcd's default (`--experimental-watch-progress-notify-interval`): 10
    /// minutes.
    pub watch_progress_notify_interval_ms: u64,
    /// How often the leader checkpoints, through Raft, the remaining TTL of every lease that
    /// has more than this left, in milliseconds, so that a new leader does not give a long
    /// lease its whole TTL again. etcd's default (`--experimental-lease-checkpoint-interval`):
    /// 5 minutes.
    pub lease_checkpoint_interval_ms: u64,
    /// Deliberate faults for proving the test suites have teeth. Not part of the config file
    /// (a file naming them is refused as naming an unknown field) nor of the environment: only
    /// the hidden `--unsafe-*` flags set them.
    #[serde(skip)]
    pub testing: TestingFaults,
}

/// Faults a node can be started with on purpose, so that a checker can be shown to catch what
/// they break. Every one of them breaks a guarantee; none belongs in production.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TestingFaults {
    /// Every node answers every read from its local state machine without ReadIndex, so reads
    /// can be stale (`--unsafe-stale-reads`; the linearizability checker must catch it).
    pub stale_reads: bool,
    /// The Raft log is written but never `fdatasync`ed, so a power cut can take back
    /// acknowledged writes and votes (`--unsafe-no-fsync`; the power-cut tests must catch it).
    pub no_fsync: bool,
    /// The StorageActor leaves out the events of one apply batch in
    /// [`UNSAFE_WATCH_GAP_EVERY`] and hides the gap from the watch hub, so watchers silently
    /// miss events (`--unsafe-watch-gaps`; the chaos suite's watch checker must catch it).
    pub watch_gaps: bool,
    /// The leader takes keep-alives but does not renew the lease, so every lease expires its
    /// TTL after its grant while its client believes it alive (`--unsafe-lease-expiry`; the
    /// chaos suite's lock checker must catch two holders at once).
    pub lease_expiry: bool,
}

/// With `--unsafe-watch-gaps`, one apply batch in this many loses its events.
pub const UNSAFE_WATCH_GAP_EVERY: u64 = 50;

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 1,
            cluster_name: "distributed_kv".into(),
            client_addr: DEFAULT_CLIENT_ADDR.into(),
            peer_addr: DEFAULT_PEER_ADDR.into(),
            advertise_client_addr: String::new(),
            advertise_peer_addr: String::new(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            initial_cluster: String::new(),
            log_level: "info".into(),
            tick_interval_ms: 100,
            heartbeat_ticks: 1,
            election_ticks: 10,
            snapshot_threshold: 100_000,
            log_retain_entries: 5_000,
            max_key_bytes: 4 * 1024,
            max_value_bytes: 1024 * 1024,
            request_timeout_ms: 5_000,
            max_pending_requests: 4_096,
            max_list_limit: 1_000,
            max_list_bytes: DEFAULT_MAX_LIST_BYTES,
            watch_progress_notify_interval_ms: 600_000,
            lease_checkpoint_interval_ms: 300_000,
            testing: TestingFaults::default(),
        }
    }
}

/// Command-line flags; each also reads an environment variable. `None` means "not given".
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ConfigOverrides {
    /// This node's Raft id.
    #[arg(long, env = "KV_NODE_ID")]
    pub node_id: Option<u64>,
    /// Name of the cluster, recorded in the data dir.
    #[arg(long, env = "KV_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Client API listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "KV_CLIENT_ADDR")]
    pub client_addr: Option<String>,
    /// Peer (Raft) listen address [default: 127.0.0.1:50052].
    #[arg(long, env = "KV_PEER_ADDR")]
    pub peer_addr: Option<String>,
    /// Client address given to clients and other nodes, if not the listen address (required
    /// when client_addr is 0.0.0.0) [default: client_addr].
    #[arg(long, env = "KV_ADVERTISE_CLIENT_ADDR")]
    pub advertise_client_addr: Option<String>,
    /// Peer address other nodes know this node by, as in initial_cluster (required when
    /// peer_addr is 0.0.0.0) [default: peer_addr].
    #[arg(long, env = "KV_ADVERTISE_PEER_ADDR")]
    pub advertise_peer_addr: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long, env = "KV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Initial voters: 1=host:port,2=host:port,... (peer addresses).
    #[arg(long, env = "KV_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Log filter, e.g. info or distributed_kv=debug [default: info].
    #[arg(long, env = "KV_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Raft tick length in milliseconds [default: 100].
    #[arg(long, env = "KV_TICK_INTERVAL_MS")]
    pub tick_interval_ms: Option<u64>,
    /// Ticks between heartbeats [default: 1].
    #[arg(long, env = "KV_HEARTBEAT_TICKS")]
    pub heartbeat_ticks: Option<usize>,
    /// Election timeout in ticks [default: 10].
    #[arg(long, env = "KV_ELECTION_TICKS")]
    pub election_ticks: Option<usize>,
    /// Applied entries between snapshots, at least [default: 100000].
    #[arg(long, env = "KV_SNAPSHOT_THRESHOLD")]
    pub snapshot_threshold: Option<u64>,
    /// Log entries kept behind a snapshot [default: 5000].
    #[arg(long, env = "KV_LOG_RETAIN_ENTRIES")]
    pub log_retain_entries: Option<u64>,
    /// Largest key in bytes [default: 4096].
    #[arg(long, env = "KV_MAX_KEY_BYTES")]
    pub max_key_bytes: Option<usize>,
    /// Largest value in bytes [default: 1048576].
    #[arg(long, env = "KV_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Client request timeout in milliseconds [default: 5000].
    #[arg(long, env = "KV_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Most client requests in flight [default: 4096].
    #[arg(long, env = "KV_MAX_PENDING_REQUESTS")]
    pub max_pending_requests: Option<usize>,
    /// Largest List page in keys [default: 1000].
    #[arg(long, env = "KV_MAX_LIST_LIMIT")]
    pub max_list_limit: Option<u32>,
    /// Interval of watch progress notices in milliseconds [default: 600000].
    #[arg(long, env = "KV_WATCH_PROGRESS_NOTIFY_INTERVAL_MS")]
    pub watch_progress_notify_interval_ms: Option<u64>,
    /// Interval of lease TTL checkpoints in milliseconds [default: 300000].
    #[arg(long, env = "KV_LEASE_CHECKPOINT_INTERVAL_MS")]
    pub lease_checkpoint_interval_ms: Option<u64>,
    /// Largest List page in bytes; its first key always comes [default: 3145728].
    #[arg(long, env = "KV_MAX_LIST_BYTES")]
    pub max_list_bytes: Option<usize>,
    /// UNSAFE, testing only: serve reads from local state without ReadIndex (stale reads).
    /// Hidden from `--help` and not readable from a file or the environment: it exists for
    /// the consistency suite, not for operators.
    #[arg(long, hide = true)]
    pub unsafe_stale_reads: bool,
    /// UNSAFE, testing only: never fdatasync the Raft log (a power cut loses acknowledged
    /// writes). Hidden and flag-only, like the other unsafe option.
    #[arg(long, hide = true)]
    pub unsafe_no_fsync: bool,
    /// UNSAFE, testing only: lose the watch events of some apply batches without telling the
    /// watchers. Hidden and flag-only, like the other unsafe options.
    #[arg(long, hide = true)]
    pub unsafe_watch_gaps: bool,
    /// UNSAFE, testing only: answer keep-alives without renewing leases, so they expire early.
    /// Hidden and flag-only, like the other unsafe options.
    #[arg(long, hide = true)]
    pub unsafe_lease_expiry: bool,
}

impl NodeConfig {
    /// Loads `file` (if any), applies `overrides`, and validates the result.
    pub fn load(file: Option<&Path>, overrides: &ConfigOverrides) -> Result<NodeConfig> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => NodeConfig::default(),
        };
        config.apply(overrides);
        let source = file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| FLAGS_SOURCE.into());
        config.validate(&source)?;
        Ok(config)
    }

    /// Parses a TOML file. Errors name the file, the line and the field.
    pub fn from_file(path: &Path) -> Result<NodeConfig> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(&file, "-", format!("cannot read config file: {e}")))?;
        toml::from_str(&text).map_err(|e| {
            let at = e.span().map(|s| s.start.min(text.len()));
            let line = at.map(|at| text[..at].matches('\n').count() + 1);
            // The field is the key on the line the error points at (`key = value`); failing
            // that, the first name the message quotes.
            let field = at
                .and_then(|at| {
                    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                    let line_text = text[start..].lines().next().unwrap_or("");
                    line_text
                        .split_once('=')
                        .map(|(k, _)| k.trim().trim_matches('"').to_string())
                })
                .filter(|k| !k.is_empty())
                .or_else(|| e.message().split('`').nth(1).map(str::to_string))
                .unwrap_or_else(|| "-".into());
            let message = e.message().replace('\n', " ");
            match line {
                Some(line) => Error::config(format!("{file}:{line}"), field, message),
                None => Error::config(file, field, message),
            }
        })
    }

    fn apply(&mut self, o: &ConfigOverrides) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &o.$f { self.$f = v.clone(); } )* };
        }
        set!(
            node_id,
            cluster_name,
            client_addr,
            peer_addr,
            advertise_client_addr,
            advertise_peer_addr,
            data_dir,
            initial_cluster,
            log_level,
            tick_interval_ms,
            heartbeat_ticks,
            election_ticks,
            snapshot_threshold,
            log_retain_entries,
            max_key_bytes,
            max_value_bytes,
            request_timeout_ms,
            max_pending_requests,
            max_list_limit,
            max_list_bytes,
            watch_progress_notify_interval_ms,
            lease_checkpoint_interval_ms
        );
        self.testing.stale_reads |= o.unsafe_stale_reads;
        self.testing.no_fsync |= o.unsafe_no_fsync;
        self.testing.watch_gaps |= o.unsafe_watch_gaps;
        self.testing.lease_expiry |= o.unsafe_lease_expiry;
    }

    /// Checks every field; the error names `source` and the field.
    pub fn validate(&self, source: &str) -> Result<()> {
        let err = |field: &str, msg: String| Err(Error::config(source, field, msg));
        if self.node_id == 0 {
            return err("node_id", "must be a positive number".into());
        }
        if self.cluster_name.is_empty() {
            return err("cluster_name", "must not be empty".into());
        }
        let client: SocketAddr = match self.client_addr.parse() {
            Ok(a) => a,
            Err(_) => {
                return err(
                    "client_addr",
                    format!("`{}` is not an ip:port address", self.client_addr),
                )
            }
        };
        let peer: SocketAddr = match self.peer_addr.parse() {
            Ok(a) => a,
            Err(_) => {
                return err(
                    "peer_addr",
                    format!("`{}` is not an ip:port address", self.peer_addr),
                )
            }
        };
        if client == peer {
            return err(
                "peer_addr",
                format!("must differ from client_addr ({client})"),
            );
        }
        let advertised_client = advertised(
            source,
            "advertise_client_addr",
            &self.advertise_client_addr,
            "client_addr",
            client,
        )?;
        let advertised_peer = advertised(
            source,
            "advertise_peer_addr",
            &self.advertise_peer_addr,
            "peer_addr",
            peer,
        )?;
        if advertised_client == advertised_peer {
            let field = if self.advertise_peer_addr.is_empty() {
                "advertise_client_addr"
            } else {
                "advertise_peer_addr"
            };
            return err(
                field,
                format!("the advertised client and peer addresses are both {advertised_client}"),
            );
        }
        let members = self
            .members()
            .map_err(|m| Error::config(source, "initial_cluster", m))?;
        match members.get(&self.node_id) {
            None => {
                return err(
                    "initial_cluster",
                    format!(
                        "node_id {} is not one of its members {:?}",
                        self.node_id,
                        members.keys().collect::<Vec<_>>()
                    ),
                )
            }
            // The others reach this node at its entry, so the entry must be where it says it is.
            Some(addr) if addr.parse::<SocketAddr>().ok() != Some(advertised_peer) => {
                let by = if self.advertise_peer_addr.is_empty() {
                    "peer_addr"
                } else {
                    "advertise_peer_addr"
                };
                return err(
                    "initial_cluster",
                    format!(
                        "lists node {} at {addr}, but {by} is {advertised_peer}",
                        self.node_id
                    ),
                );
            }
            Some(_) => {}
        }
        if self.tick_interval_ms == 0 {
            return err("tick_interval_ms", "must be at least 1".into());
        }
        if self.heartbeat_ticks == 0 {
            return err("heartbeat_ticks", "must be at least 1".into());
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return err(
                "election_ticks",
                format!(
                    "must be greater than heartbeat_ticks ({})",
                    self.heartbeat_ticks
                ),
            );
        }
        if self.snapshot_threshold == 0 {
            return err("snapshot_threshold", "must be at least 1".into());
        }
        if self.max_key_bytes == 0 {
            return err("max_key_bytes", "must be at least 1".into());
        }
        if self.max_value_bytes > MAX_VALUE_BYTES_LIMIT {
            return err(
                "max_value_bytes",
                format!("must be at most {MAX_VALUE_BYTES_LIMIT}"),
            );
        }
        if self.request_timeout_ms == 0 {
            return err("request_timeout_ms", "must be at least 1".into());
        }
        if self.max_pending_requests == 0 {
            return err("max_pending_requests", "must be at least 1".into());
        }
        if self.max_list_limit == 0 {
            return err("max_list_limit", "must be at least 1".into());
        }
        if self.max_list_bytes == 0 {
            return err("max_list_bytes", "must be at least 1".into());
        }
        if self.watch_progress_notify_interval_ms == 0 {
            return err(
                "watch_progress_notify_interval_ms",
                "must be at least 1".into(),
            );
        }
        if self.lease_checkpoint_interval_ms == 0 {
            return err("lease_checkpoint_interval_ms", "must be at least 1".into());
        }
        if self
            .log_level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return err(
                "log_level",
                format!("`{}` is not a valid log filter", self.log_level),
            );
        }
        Ok(())
    }

    /// The initial voters, id → peer address. Fails with a message on a malformed list,
    /// duplicate ids or duplicate addresses.
    pub fn members(&self) -> std::result::Result<BTreeMap<u64, String>, String> {
        if self.initial_cluster.trim().is_empty() {
            return Ok(BTreeMap::from([(
                self.node_id,
                self.advertised_peer_addr().to_string(),
            )]));
        }
        let mut members = BTreeMap::new();
        let mut addrs = HashSet::new();
        for item in self
            .initial_cluster
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (id, addr) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}` is not id=host:port"))?;
            let id: u64 = id
                .trim()
                .parse()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| format!("`{id}` in `{item}` is not a positive node id"))?;
            let addr = addr.trim().to_string();
            if addr
                .to_socket_addrs()
                .map(|mut a| a.next().is_none())
                .unwrap_or(true)
            {
                return Err(format!("`{addr}` for node {id} is not a host:port address"));
            }
            if !addrs.insert(addr.clone()) {
                return Err(format!("address {addr} is listed twice"));
            }
            if members.insert(id, addr).is_some() {
                return Err(format!("node id {id} is listed twice"));
            }
        }
        Ok(members)
    }

    /// The client address this node gives out: `advertise_client_addr`, or `client_addr`
    /// when that is not set. With a listen port of 0 it still says port 0; a running node
    /// uses [`NodeConfig::advertised_client_addr_bound`].
    pub fn advertised_client_addr(&self) -> &str {
        if self.advertise_client_addr.is_empty() {
            &self.client_addr
        } else {
            &self.advertise_client_addr
        }
    }

    /// The client address to give out once the client listener is bound at `bound`:
    /// `advertise_client_addr` if set, else the bound address, so a `client_addr` with port 0
    /// is advertised with the port the system picked.
    pub fn advertised_client_addr_bound(&self, bound: SocketAddr) -> String {
        if self.advertise_client_addr.is_empty() {
            bound.to_string()
        } else {
            self.advertise_client_addr.clone()
        }
    }

    /// The peer address the other nodes know this node by: `advertise_peer_addr`, or
    /// `peer_addr` when that is not set.
    pub fn advertised_peer_addr(&self) -> &str {
        if self.advertise_peer_addr.is_empty() {
            &self.peer_addr
        } else {
            &self.advertise_peer_addr
        }
    }

    /// `tick_interval_ms` as a `Duration`.
    pub fn tick_interval(&self) -> Duration {
        Duration::from_millis(self.tick_interval_ms)
    }

    /// `request_timeout_ms` as a `Duration`.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// `lease_checkpoint_interval_ms` as a `Duration`.
    pub fn lease_checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.lease_checkpoint_interval_ms)
    }

    /// `watch_progress_notify_interval_ms` as a `Duration`.
    pub fn watch_progress_notify_interval(&self) -> Duration {
        Duration::from_millis(self.watch_progress_notify_interval_ms)
    }
}

/// Checks the advertised address `given` (field `field`) of a listener configured at `listen`
/// (field `listen_field`) and returns the address to advertise. Others connect to what is
/// advertised, so it must be a concrete ip:port: an unspecified IP (`0.0.0.0`, `::`) or port 0
/// would send them nowhere, and a listener on an unspecified IP cannot stand in for it.
fn advertised(
    source: &str,
    field: &str,
    given: &str,
    listen_field: &str,
    listen: SocketAddr,
) -> Result<SocketAddr> {
    let err = |msg: String| Err(Error::config(source, field, msg));
    if given.is_empty() {
        if listen.ip().is_unspecified() {
            return err(format!(
                "must be set when {listen_field} listens on the unspecified address {listen}: \
                 give the ip:port other nodes and clients can connect to"
            ));
        }
        return Ok(listen);
    }
    let addr: SocketAddr = match given.parse() {
        Ok(a) => a,
        Err(_) => return err(format!("`{given}` is not an ip:port address")),
    };
    if addr.ip().is_unspecified() {
        return err(format!(
            "`{given}` is an unspecified address; give one others can connect to"
        ));
    }
    if addr.port() == 0 {
        return err(format!(
            "`{given}` has port 0; give the port others can connect to"
        ));
    }
    Ok(addr)
}

/// Hard ceiling for `max_value_bytes`: a value plus its key must fit one Raft message
/// and one gRPC message comfortably.
pub const MAX_VALUE_BYTES_LIMIT: usize = 64 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn defaults_are_a_single_node_store() {
        let c = NodeConfig::load(None, &ConfigOverrides::default()).unwrap();
        assert_eq!(c.client_addr, "127.0.0.1:50051");
        assert_eq!(c.peer_addr, "127.0.0.1:50052");
        assert_eq!(c.members().unwrap().len(), 1);
    }

    #[test]
    fn flags_beat_file() {
        let f = write("node_id = 2\ninitial_cluster = \"1=127.0.0.1:1,2=127.0.0.1:50052\"\n");
        let o = ConfigOverrides {
            election_ticks: Some(20),
            ..Default::default()
        };
        let c = NodeConfig::load(Some(f.path()), &o).unwrap();
        assert_eq!((c.node_id, c.election_ticks), (2, 20));
    }

    #[test]
    fn unknown_field_names_file_and_field() {
        let f = write("node_id = 1\nelection_tiks = 3\n");
        let e = NodeConfig::load(Some(f.path()), &ConfigOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        assert!(e.contains("election_tiks"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    /// The deliberate faults are not config: a file naming one is refused like any unknown
    /// field, and only the hidden flags turn them on.
    #[test]
    fn the_testing_faults_are_flags_only() {
        for field in [
            "unsafe_stale_reads",
            "unsafe_no_fsync",
            "unsafe_watch_gaps",
            "unsafe_lease_expiry",
        ] {
            let f = write(&format!("node_id = 1\n{field} = true\n"));
            let e = NodeConfig::load(Some(f.path()), &ConfigOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{e}");
        }
        let c = NodeConfig::load(None, &ConfigOverrides::default()).unwrap();
        assert_eq!(c.testing, TestingFaults::default());
        let overrides = ConfigOverrides {
            unsafe_stale_reads: true,
            unsafe_no_fsync: true,
            unsafe_watch_gaps: true,
            unsafe_lease_expiry: true,
            ..ConfigOverrides::default()
        };
        let c = NodeConfig::load(None, &overrides).unwrap();
        assert!(c.testing.stale_reads && c.testing.no_fsync && c.testing.watch_gaps);
        assert!(c.testing.lease_expiry);
        let text = toml::to_string(&c).unwrap();
        assert!(
            !text.contains("unsafe") && !text.contains("testing"),
            "{text}"
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let f = write("node_id = \"one\"\n");
        let e = NodeConfig::load(Some(f.path()), &ConfigOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("node_id"), "{e}");
    }

    #[test]
    fn cluster_errors() {
        let cases = [
            ("1=127.0.0.1:50052,1=127.0.0.1:2", "listed twice"),
            ("1=127.0.0.1:50052,2=127.0.0.1:50052", "listed twice"),
            ("2=127.0.0.1:3", "not one of its members"),
            ("1=nonsense", "not a host:port"),
        ];
        for (cluster, want) in cases {
            let o = ConfigOverrides {
                initial_cluster: Some(cluster.into()),
                ..Default::default()
            };
            let e = NodeConfig::load(None, &o).unwrap_err().to_string();
            assert!(
                e.contains("initial_cluster") && e.contains(want),
                "{cluster}: {e}"
            );
        }
    }

    /// Loads `text` as a config file; returns the file (kept alive) and the result.
    fn load_text(text: &str) -> (tempfile::NamedTempFile, Result<NodeConfig>) {
        let f = write(text);
        let r = NodeConfig::load(Some(f.path()), &ConfigOverrides::default());
        (f, r)
    }

    /// Asserts `text` is refused with one line naming its file, `field` and every one of `want`.
    fn assert_refused(text: &str, field: &str, want: &[&str]) {
        let (f, r) = load_text(text);
        let e = r.expect_err(text).to_string();
        let file = f.path().display().to_string();
        assert!(e.starts_with(&format!("{file}: {field}: ")), "{text}: {e}");
        for w in want {
            assert!(e.contains(w), "{text}: `{w}` missing from: {e}");
        }
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn advertised_addresses_default_to_the_listen_addresses() {
        let c = NodeConfig::load(None, &ConfigOverrides::default()).unwrap();
        assert_eq!(c.advertised_client_addr(), DEFAULT_CLIENT_ADDR);
        assert_eq!(c.advertised_peer_addr(), DEFAULT_PEER_ADDR);
        let bound: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert_eq!(c.advertised_client_addr_bound(bound), "127.0.0.1:40001");
    }

    #[test]
    fn advertised_addresses_stand_in_for_unspecified_listen_addresses() {
        let (_f, r) = load_text(
            "client_addr = \"0.0.0.0:50051\"\npeer_addr = \"0.0.0.0:50052\"\n\
             advertise_client_addr = \"10.0.0.1:50051\"\n\
             advertise_peer_addr = \"10.0.0.1:50052\"\n\
             initial_cluster = \"1=10.0.0.1:50052,2=10.0.0.2:50052\"\n",
        );
        let c = r.unwrap();
        assert_eq!(c.advertised_client_addr(), "10.0.0.1:50051");
        assert_eq!(c.advertised_peer_addr(), "10.0.0.1:50052");
        let bound: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        assert_eq!(c.advertised_client_addr_bound(bound), "10.0.0.1:50051");
        // Alone, a node is its own member at the address it advertises.
        let (_f, r) =
            load_text("peer_addr = \"[::]:50052\"\nadvertise_peer_addr = \"[::1]:50052\"\n");
        assert_eq!(
            r.unwrap().members().unwrap(),
            BTreeMap::from([(1, "[::1]:50052".to_string())])
        );
    }

    #[test]
    fn unspecified_listen_address_without_advertised_one_names_the_advertise_field() {
        assert_refused(
            "client_addr = \"0.0.0.0:50051\"\n",
            "advertise_client_addr",
            &["must be set", "0.0.0.0:50051"],
        );
        assert_refused(
            "client_addr = \"[::]:50051\"\n",
            "advertise_client_addr",
            &["must be set"],
        );
        assert_refused(
            "peer_addr = \"0.0.0.0:50052\"\ninitial_cluster = \"1=127.0.0.1:50052\"\n",
            "advertise_peer_addr",
            &["must be set", "0.0.0.0:50052"],
        );
    }

    #[test]
    fn bad_advertised_addresses_name_file_and_field() {
        let cases = [
            ("0.0.0.0:50051", "unspecified"),
            ("[::]:50051", "unspecified"),
            ("127.0.0.1:0", "port 0"),
            ("nonsense", "not an ip:port"),
            ("localhost:50051", "not an ip:port"),
            ("127.0.0.1", "not an ip:port"),
        ];
        for (addr, want) in cases {
            assert_refused(
                &format!("advertise_client_addr = \"{addr}\"\n"),
                "advertise_client_addr",
                &[want, addr],
            );
            assert_refused(
                &format!("advertise_peer_addr = \"{addr}\"\n"),
                "advertise_peer_addr",
                &[want, addr],
            );
        }
    }

    #[test]
    fn own_initial_cluster_entry_must_be_the_advertised_peer_addr() {
        assert_refused(
            "advertise_peer_addr = \"10.0.0.1:50052\"\n\
             initial_cluster = \"1=127.0.0.1:50052,2=10.0.0.2:50052\"\n",
            "initial_cluster",
            &["advertise_peer_addr is 10.0.0.1:50052"],
        );
    }

    #[test]
    fn advertised_client_and_peer_addresses_must_differ() {
        assert_refused(
            "advertise_client_addr = \"127.0.0.1:50052\"\n",
            "advertise_client_addr",
            &["127.0.0.1:50052"],
        );
    }

    #[test]
    fn advertised_addresses_from_flags_are_checked_and_named() {
        let o = ConfigOverrides {
            client_addr: Some("0.0.0.0:50051".into()),
            advertise_client_addr: Some("0.0.0.0:50051".into()),
            ..Default::default()
        };
        let e = NodeConfig::load(None, &o).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{FLAGS_SOURCE}: advertise_client_addr: ")),
            "{e}"
        );
        let f = write("advertise_client_addr = \"10.0.0.9:1\"\n");
        let o = ConfigOverrides {
            advertise_client_addr: Some("10.0.0.1:50051".into()),
            ..Default::default()
        };
        let c = NodeConfig::load(Some(f.path()), &o).unwrap();
        assert_eq!(
            c.advertised_client_addr(),
            "10.0.0.1:50051",
            "a flag beats the file"
        );
    }

    #[test]
    fn advertise_flags_and_environment_variables_are_declared() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            overrides: ConfigOverrides,
        }
        let cli = Cli::try_parse_from([
            "distributed_kv",
            "--advertise-client-addr",
            "10.0.0.1:50051",
            "--advertise-peer-addr",
            "10.0.0.1:50052",
        ])
        .unwrap();
        assert_eq!(
            cli.overrides.advertise_client_addr.as_deref(),
            Some("10.0.0.1:50051")
        );
        assert_eq!(
            cli.overrides.advertise_peer_addr.as_deref(),
            Some("10.0.0.1:50052")
        );
        let cmd = Cli::command();
        for (flag, env) in [
            ("advertise_client_addr", "KV_ADVERTISE_CLIENT_ADDR"),
            ("advertise_peer_addr", "KV_ADVERTISE_PEER_ADDR"),
        ] {
            let arg = cmd.get_arguments().find(|a| a.get_id() == flag).unwrap();
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env));
        }
    }

    #[test]
    fn max_list_bytes_defaults_under_grpc_decode_limit() {
        /// What gRPC implementations decode by default.
        const GRPC_DEFAULT_DECODE_BYTES: usize = 4 * 1024 * 1024;
        let c = NodeConfig::load(None, &ConfigOverrides::default()).unwrap();
        assert_eq!(c.max_list_bytes, DEFAULT_MAX_LIST_BYTES);
        assert!(c.max_list_bytes < GRPC_DEFAULT_DECODE_BYTES);
        let (_f, r) = load_text("max_list_bytes = 1\n");
        assert_eq!(
            r.unwrap().max_list_bytes,
            1,
            "a bound below one key is fine"
        );
    }

    #[test]
    fn bad_max_list_bytes_names_file_and_field() {
        assert_refused("max_list_bytes = 0\n", "max_list_bytes", &["at least 1"]);
        for text in ["max_list_bytes = -1\n", "max_list_bytes = \"3MiB\"\n"] {
            let (f, r) = load_text(text);
            let e = r.expect_err(text).to_string();
            // Malformed values are named with their line: `FILE:1: max_list_bytes: ...`.
            let file = f.path().display().to_string();
            assert!(e.starts_with(&format!("{file}:1: max_list_bytes: ")), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let o = ConfigOverrides {
            max_list_bytes: Some(0),
            ..Default::default()
        };
        let e = NodeConfig::load(None, &o).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{FLAGS_SOURCE}: max_list_bytes: ")),
            "{e}"
        );
    }

    #[test]
    fn max_list_bytes_flag_and_environment_variable_are_declared() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            overrides: ConfigOverrides,
        }
        let cli = Cli::try_parse_from(["distributed_kv", "--max-list-bytes", "65536"]).unwrap();
        assert_eq!(cli.overrides.max_list_bytes, Some(65_536));
        let arg = Cli::command()
            .get_arguments()
            .find(|a| a.get_id() == "max_list_bytes")
            .cloned()
            .unwrap();
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some("KV_MAX_LIST_BYTES")
        );
        let f = write("max_list_bytes = 1024\n");
        let c = NodeConfig::load(Some(f.path()), &cli.overrides).unwrap();
        assert_eq!(c.max_list_bytes, 65_536, "a flag beats the file");
        let c = NodeConfig::load(Some(f.path()), &ConfigOverrides::default()).unwrap();
        assert_eq!(c.max_list_bytes, 1_024);
    }

    #[test]
    fn missing_file_is_named() {
        let e = NodeConfig::load(
            Some(Path::new("/nonexistent/x.toml")),
            &ConfigOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("/nonexistent/x.toml"), "{e}");
    }
}
