//! `kvcluster`: a local cluster of `distributed_kv` nodes for scripts and for trying the store
//! by hand, started and stopped by the harness's [`LocalCluster`].
//!
//! It starts N nodes on free loopback ports with configs, data dirs and logs under `--dir`
//! (`node<id>.toml`, `data<id>`, `node<id>.log`), and once every node answers prints two lines
//! on stdout: the client endpoints, then the nodes' pids, each comma-separated. Then it runs
//! until SIGINT or SIGTERM, stops every node with SIGTERM (SIGKILL after a timeout) and exits
//! 0. It exits 1 if the cluster does not start. Nodes run with the node's default Raft timing
//! (as deployed, not the tests' fast timing) and log at `warn`, but for the watch hub's counters.
//!
//! ```sh
//! kvcluster --dir /tmp/kv >/tmp/kv.out &   # line 1 of /tmp/kv.out: the endpoints, line 2: pids
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use distributed_kv::config::NodeConfig;
use kv_harness::{ClusterOptions, LocalCluster};
use tokio::signal::unix::{signal, SignalKind};

/// How often the nodes are checked for having exited by themselves.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Runs a local cluster until SIGINT or SIGTERM.
#[derive(Parser)]
#[command(name = "kvcluster")]
struct Args {
    /// Where configs, data dirs and logs go (created if missing, left in place).
    #[arg(long)]
    dir: PathBuf,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// The node binary [default: distributed_kv next to kvcluster].
    #[arg(long)]
    node_binary: Option<PathBuf>,
    /// Peer links through the harness's fault-injecting proxies instead of direct.
    #[arg(long)]
    proxied_links: bool,
}

/// The node's own defaults for Raft timing and client requests, and `warn` logs, but for
/// the watch hub's counters every 10 s while it has watchers (a benchmark's watch load as
/// each member saw it).
fn as_deployed(config: &mut NodeConfig) {
    let default = NodeConfig::default();
    config.tick_interval_ms = default.tick_interval_ms;
    config.heartbeat_ticks = default.heartbeat_ticks;
    config.election_ticks = default.election_ticks;
    config.request_timeout_ms = default.request_timeout_ms;
    config.log_level = "warn,distributed_kv::actors::watch_hub=info".into();
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let options = ClusterOptions {
        nodes: args.nodes,
        dir: Some(args.dir.clone()),
        binary: Some(
            args.node_binary
                .unwrap_or_else(|| kv_harness::target_bin("distributed_kv")),
        ),
        proxied_links: args.proxied_links,
        configure: as_deployed,
        ..ClusterOptions::default()
    };
    // Ask for the signals before the nodes start, so none is missed.
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(int), Ok(term)) => (int, term),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("kvcluster: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cluster = match LocalCluster::start(options).await {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("kvcluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ids = cluster.ids();
    let pids: Vec<String> = ids
        .iter()
        .filter_map(|&id| cluster.pid(id))
        .map(|pid| pid.to_string())
        .collect();
    let mut out = std::io::stdout().lock();
    // Nothing else goes to stdout: a reader may have closed it by the time the cluster stops.
    let _ = writeln!(out, "{}\n{}", cluster.endpoints().join(","), pids.join(","));
    let _ = out.flush();
    drop(out);
    eprintln!(
        "kvcluster: {} nodes serving at {}; configs, data and logs in {}; SIGINT or SIGTERM stops them",
        ids.len(),
        cluster.endpoints().join(","),
        args.dir.display()
    );
    let mut watch = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = watch.tick() => {
                for &id in &ids {
                    if let Some(status) = cluster.exited(id) {
                        eprintln!("kvcluster: node {id} exited by itself ({status}); see {}",
                            cluster.log_path(id).display());
                        // Reaped: it is reported once.
                        cluster.kill(id);
                    }
                }
            }
        }
    }
    let running: Vec<u64> = ids
        .into_iter()
        .filter(|&id| cluster.pid(id).is_some())
        .collect();
    match cluster.terminate(&running) {
        Ok(_) => eprintln!("kvcluster: nodes stopped"),
        Err(e) => eprintln!("kvcluster: {e}; the rest are killed"),
    }
    ExitCode::SUCCESS
}
