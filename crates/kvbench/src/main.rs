//! kvbench: load generator. N concurrent clients do put, get or mixed operations against a
//! cluster for a fixed number of operations or a fixed time, then one line reports ops/s and
//! latency, and — given the servers' process ids — the CPU time they spent per operation,
//! their resident memory after the run, and the CPU time kvbench itself spent (the clients
//! share the machine with the servers).
//!
//! Example: `kvbench --endpoints 127.0.0.1:50051 --clients 64 --duration-secs 15 --value-size 256 --workload put --server-pids 101,102,103`
//!
//! `--target etcd` runs the same load through etcd's v3 gRPC KV API (Put, and Range with
//! etcd's default linearizable reads) — against etcd itself, or against distributed_kv, which
//! serves that API too — so both stores can be measured on the same machine in the same run,
//! by the same client code; see `scripts/bench.sh`.
//!
//! `--idle-watchers`, `--slow-watchers` and `--watchers` add watchers of those kinds
//! ([`watchers`]) for the length of the run; the line then also says how many, and what the
//! reading ones got: events per second, and latency from put to event. `--leases`,
//! `--leased-keys` and `--keep-alives` add leases ([`leases`]): many of them held by
//! keep-alives, or many expiring at once during the run. Every line gives the slowest
//! operation (`max`): a stall shows there.

mod leases;
mod watchers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use etcd_api::etcdserverpb::kv_client::KvClient as EtcdClient;
use etcd_api::etcdserverpb::{PutRequest, RangeRequest};
use kv_api::client::{endpoints_from, Client};
use tonic::transport::{Channel, Endpoint};

/// Load generator for distributed_kv.
#[derive(Parser, Debug)]
#[command(name = "kvbench", version)]
struct Cli {
    /// Comma-separated client addresses (default: $KV_ENDPOINTS or 127.0.0.1:50051).
    #[arg(long)]
    endpoints: Option<String>,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Total operations across all clients.
    #[arg(long, default_value_t = 20_000)]
    ops: u64,
    /// Run for this many seconds instead of a number of operations.
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Comma-separated process ids of the servers: their user + system CPU time during the
    /// timed run is reported, in total and per operation.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Distinct keys the operations spread over.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Which operations to run: writes, reads, or both.
    #[arg(long, value_enum, default_value = "put")]
    workload: Workload,
    /// Serializable (local, possibly stale) reads instead of linearizable ones.
    #[arg(long)]
    serializable: bool,
    /// Which store the endpoints belong to.
    #[arg(long, value_enum, default_value = "kv")]
    target: Target,
    /// Watchers of keys nobody writes, for the length of the run.
    #[arg(long, default_value_t = 0)]
    idle_watchers: usize,
    /// Watchers of every key written whose clients take 10 ms over each event they get (and
    /// 100 ms at least over each answer): at most 100 events a second.
    #[arg(long, default_value_t = 0)]
    slow_watchers: usize,
    /// Watchers of every key written that read everything, timing each event from its put.
    #[arg(long, default_value_t = 0)]
    watchers: usize,
    /// Leases granted before the run (not timed).
    #[arg(long, default_value_t = 0)]
    leases: usize,
    /// The TTL of those leases, in seconds: shorter than the run, and they expire during it.
    #[arg(long, default_value_t = 600)]
    lease_ttl: i64,
    /// Attach one key to each lease, so that each expiry deletes a key.
    #[arg(long)]
    leased_keys: bool,
    /// Keep-alives per second over the leases, for the length of the run.
    #[arg(long, default_value_t = 0)]
    keep_alives: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Target {
    /// distributed_kv.
    Kv,
    /// etcd's v3 API (etcd, or distributed_kv's etcd API); each client talks to one member,
    /// which forwards writes to its leader.
    Etcd,
}

/// One benchmark client's connection.
enum Conn {
    /// A leader-following distributed_kv client.
    Kv(Client),
    /// An etcd client bound to one member.
    Etcd(EtcdClient<Channel>),
}

impl Conn {
    fn new(target: Target, endpoints: &[String], index: usize) -> anyhow::Result<Conn> {
        Ok(match target {
            Target::Kv => Conn::Kv(Client::new(endpoints.to_vec()).with_timeout(OP_TIMEOUT)),
            Target::Etcd => {
                let addr = &endpoints[index % endpoints.len()];
                let channel = Endpoint::from_shared(format!("http://{addr}"))?
                    .tcp_nodelay(true)
                    .connect_lazy();
                Conn::Etcd(EtcdClient::new(channel))
            }
        })
    }

    async fn put(&mut self, key: &[u8], value: &[u8]) -> bool {
        match self {
            Conn::Kv(c) => c.set(key, value).await.is_ok(),
            Conn::Etcd(c) => {
                let req = PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    ..Default::default()
                };
                tokio::time::timeout(OP_TIMEOUT, c.put(req))
                    .await
                    .map(|r| r.is_ok())
                    .unwrap_or(false)
            }
        }
    }

    async fn get(&mut self, key: &[u8], serializable: bool) -> bool {
        match self {
            Conn::Kv(c) => c.get(key, serializable).await.is_ok(),
            Conn::Etcd(c) => {
                let req = RangeRequest {
                    key: key.to_vec(),
                    serializable,
                    ..Default::default()
                };
                tokio::time::timeout(OP_TIMEOUT, c.range(req))
                    .await
                    .map(|r| r.is_ok())
                    .unwrap_or(false)
            }
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Workload {
    /// Only writes.
    Put,
    /// Only reads (keys are written first, not timed).
    Get,
    /// Half reads, half writes.
    Mixed,
}

/// Timeout of one operation, retries included.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// User + system CPU time of process `pid` so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at its closing paren;
    // utime and stime are fields 14 and 15, i.e. the 12th and 13th after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11)
        .zip(fields.get(12))
        .and_then(|(u, s)| Some(u.parse::<u64>().ok()? + s.parse::<u64>().ok()?))
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))?;
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(ticks * 1_000_000 / per_sec))
}

/// Resident memory of process `pid` now, in bytes, from `/proc/<pid>/status`.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

fn servers_cpu(pids: &[u32]) -> anyhow::Result<Duration> {
    pids.iter().map(|p| cpu_time(*p)).sum()
}

fn key(i: u64) -> Vec<u8> {
    format!("bench/{i:010}").into_bytes()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.clients > 0 && cli.keys > 0,
        "--clients and --keys must be positive"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let endpoints = endpoints_from(cli.endpoints.as_deref());
    anyhow::ensure!(!endpoints.is_empty(), kv_api::client::NO_ENDPOINTS);
    let value = vec![b'x'; cli.value_size];
    if cli.workload != Workload::Put {
        // Preload every key so reads find something.
        let mut c = Conn::new(cli.target, &endpoints, 0)?;
        for i in 0..cli.keys.min(cli.ops) {
            anyhow::ensure!(c.put(&key(i), &value).await, "preloading key {i} failed");
        }
    }
    let load = watchers::WatchLoad {
        idle: cli.idle_watchers,
        slow: cli.slow_watchers,
        fast: cli.watchers,
    };
    let epoch = Instant::now();
    let watching = if load.is_empty() {
        None
    } else {
        Some(watchers::Watching::start(&endpoints, load, epoch).await?)
    };
    let mut leases = if cli.leases > 0 {
        let mut l =
            leases::Leases::grant(&endpoints, cli.leases, cli.lease_ttl, cli.leased_keys).await?;
        l.keep_alive(cli.keep_alives)?;
        Some(l)
    } else {
        None
    };
    let stamped = load.fast > 0;
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu_before = servers_cpu(&cli.server_pids)?;
    let own_cpu_before = cpu_time(std::process::id())?;
    let started = Instant::now();
    let deadline = cli.duration_secs.map(|s| started + Duration::from_secs(s));
    let mut tasks = Vec::new();
    for index in 0..cli.clients {
        let mut c = Conn::new(cli.target, &endpoints, index)?;
        let (value, next, errors) = (value.clone(), next.clone(), errors.clone());
        let (ops, keys, workload, serializable) = (
            if deadline.is_some() {
                u64::MAX
            } else {
                cli.ops
            },
            if deadline.is_some() {
                cli.keys
            } else {
                cli.keys.min(cli.ops).max(1)
            },
            cli.workload,
            cli.serializable,
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= ops || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let k = key(n % keys);
                let write = match workload {
                    Workload::Put => true,
                    Workload::Get => false,
                    Workload::Mixed => n % 2 == 0,
                };
                let t = Instant::now();
                let ok = if write && stamped {
                    let mut v = value.clone();
                    watchers::stamp(epoch, &mut v);
                    c.put(&k, &v).await
                } else if write {
                    c.put(&k, &value).await
                } else {
                    c.get(&k, serializable).await
                };
                if ok {
                    lat.push(t.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let elapsed = started.elapsed();
    let cpu = servers_cpu(&cli.server_pids)?.saturating_sub(cpu_before);
    let own_cpu = cpu_time(std::process::id())?.saturating_sub(own_cpu_before);
    all.sort();
    let cpu_report = if cli.server_pids.is_empty() {
        String::new()
    } else {
        let memory: u64 = cli.server_pids.iter().filter_map(|p| rss(*p).ok()).sum();
        format!(
            " server_cpu={:.2}s cpu_per_op={:.0}us client_cpu={:.2}s server_rss={:.0}MiB",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / all.len().max(1) as f64,
            own_cpu.as_secs_f64(),
            memory as f64 / (1024.0 * 1024.0)
        )
    };
    let watch_report = watching
        .as_ref()
        .map_or(String::new(), |w| w.report(elapsed));
    let lease_report = match leases.as_mut() {
        Some(l) => l.report(elapsed, cli.leased_keys).await,
        None => String::new(),
    };
    println!(
        "target={:?} workload={:?} clients={} ops={} errors={} value_size={} elapsed={:.2}s ops/s={:.0} p50={:.2}ms p99={:.2}ms max={:.2}ms{cpu_report}{watch_report}{lease_report}",
        cli.target,
        cli.workload,
        cli.clients,
        all.len(),
        errors.load(Ordering::Relaxed),
        cli.value_size,
        elapsed.as_secs_f64(),
        all.len() as f64 / elapsed.as_secs_f64(),
        percentile(&all, 0.50).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        all.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}
