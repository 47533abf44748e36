//! kvctl: the command-line client.
//!
//! Exit status: 0 success; 1 key not found; 2 bad usage or input the server refused;
//! 3 no leader or node could be reached; 4 a write's outcome is unknown; 5 other server error;
//! 6 and 7 `chaos` verdicts; 8 a `txn` whose compares failed (its `--else` branch ran);
//! 9 a revision compacted away or not yet reached (`get --rev`, `compact`); 10 `lock` lost
//! its lease while its command ran. `lock` otherwise exits with its command's status.
//!
//! `set KEY` without a value reads it from standard input, as `etcdctl put KEY < FILE` does:
//! a value of a megabyte does not fit a command line ("Argument list too long").
//!
//! `set`, `get`, `delete`, `list` and `status` use distributed_kv's own kv.v1 API and the
//! leader-following [`Client`]; `get --rev`, `txn` and `compact` use etcd's v3 KV API on the
//! same port ([`etcd`]), so they work against etcd too; so do `watch`, `lease`, `set --lease`
//! and `lock` ([`lease`]). `txn`'s syntax is in [`txn`].

mod etcd;
mod lease;
mod txn;
mod watch;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use etcd_api::etcdserverpb::{request_op, CompactionRequest, RangeRequest};
use kv_api::client::{endpoints_from, Client, ClientError};
use kv_api::proto::ListRequest;

use crate::etcd::{kv_call, Call};

/// Command-line client for distributed_kv. Finds the leader by itself.
#[derive(Parser, Debug)]
#[command(name = "kvctl", version)]
struct Cli {
    /// Comma-separated client addresses of any nodes (default: $KV_ENDPOINTS or 127.0.0.1:50051).
    #[arg(long, global = true)]
    endpoints: Option<String>,
    /// Read consistency: l (linearizable, the default) or s (serializable: local, may be stale).
    #[arg(long, global = true, value_enum, default_value = "l")]
    consistency: Consistency,
    /// How long one command may take, retries included, in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Consistency {
    /// Linearizable.
    #[value(alias = "linearizable")]
    L,
    /// Serializable.
    #[value(alias = "serializable")]
    S,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Set KEY to VALUE; without VALUE, to every byte of standard input (`kvctl set KEY < FILE`),
    /// for values too large for a command line or not UTF-8.
    Set {
        key: String,
        /// The value; read from standard input when left out (an empty input sets an empty
        /// value, like an empty argument does).
        value: Option<String>,
        /// Attach the key to this lease (hex id, as `lease grant` prints it): it is deleted
        /// when the lease expires or is revoked. Goes through etcd's API.
        #[arg(long, value_name = "ID")]
        lease: Option<String>,
    },
    /// Print the value of KEY (exit 1 if it does not exist).
    Get {
        key: String,
        /// Read KEY as it was at this store revision, through etcd's API (exit 9 when the
        /// revision has been compacted away or is not reached yet).
        #[arg(long, value_name = "REV", value_parser = clap::value_parser!(i64).range(1..))]
        rev: Option<i64>,
        /// Print `create_revision=C mod_revision=M version=V` on a line before the value.
        #[arg(long)]
        show_revisions: bool,
    },
    /// Delete KEY (exit 1 if it did not exist).
    Delete { key: String },
    /// List keys in byte order: one `key<TAB>value` per line.
    List {
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Start from this key (inclusive).
        #[arg(long, default_value = "")]
        from: String,
        /// Print at most this many keys.
        #[arg(long)]
        limit: Option<u64>,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
    },
    /// If every compare holds, run the --then operations, else the --else ones, atomically
    /// (etcd's Txn). Prints SUCCESS or FAILURE, then each operation's result; exit 0 when the
    /// compares held, 8 when they did not.
    ///
    /// Compares: TARGET(KEY) OP OPERAND; TARGET is value, version, create, mod or lease; OP is
    /// =, !=, < or >. Operations: put KEY VALUE; get or del with KEY, KEY END ([KEY, END)),
    /// --prefix P, or --from KEY. Words with spaces go in double quotes, which also know \"
    /// \\ \n \t \r \0 \xHH.
    ///
    /// Example: kvctl txn --if 'mod(k) = 5' --if 'value(k) = "v"' --then 'put k v2'
    /// --then 'del --prefix tmp/' --else 'get k'
    Txn {
        /// A compare that must hold (all must), e.g. 'version(k) = 0', 'value(k) != "old"'.
        #[arg(long = "if", value_name = "COMPARE")]
        compares: Vec<String>,
        /// An operation to run when every compare holds, e.g. 'put k v', 'del --prefix a/'.
        #[arg(long = "then", value_name = "OP")]
        then: Vec<String>,
        /// An operation to run when a compare fails, e.g. 'get k'.
        #[arg(long = "else", value_name = "OP")]
        otherwise: Vec<String>,
        /// Show the store's revision after the txn, and each read key's revisions.
        #[arg(long)]
        show_revisions: bool,
    },
    /// Discard the store's history before revision REV (etcd's Compact): reads of older
    /// revisions fail from then on. Exit 9 if REV is not after the last compaction or is in
    /// the future.
    Compact {
        #[arg(value_name = "REV", value_parser = clap::value_parser!(i64).range(1..))]
        revision: i64,
        /// Answer only once the history is gone from disk, not merely unreadable.
        #[arg(long)]
        physical: bool,
    },
    /// Print the changes of KEY (or of every key under a prefix) as they are made, one line
    /// each: `REVISION<TAB>PUT<TAB>KEY<TAB>VALUE` or `REVISION<TAB>DELETE<TAB>KEY` (etcd's
    /// Watch). Runs until stopped; when the node watched goes away, goes on from another
    /// endpoint without missing or repeating a change. Exit 9 if --rev was compacted away.
    Watch {
        key: String,
        /// Watch every key that starts with KEY.
        #[arg(long)]
        prefix: bool,
        /// Start at this store revision, replaying the changes since (default: the next one).
        #[arg(long, value_name = "REV", value_parser = clap::value_parser!(i64).range(1..))]
        rev: Option<i64>,
        /// Add each change's previous value as a last column (when there was one).
        #[arg(long)]
        prev_kv: bool,
    },
    /// Leases (etcd's Lease API): keys that go when their lease expires or is revoked.
    Lease {
        #[command(subcommand)]
        command: lease::LeaseCommand,
    },
    /// Hold lock NAME while COMMAND runs (etcd's lock recipe, so it excludes `etcdctl lock`
    /// holders too), then release it; exit with COMMAND's status. Waits while another holds
    /// it. If the lock's lease may have expired meanwhile, COMMAND is killed and the exit is
    /// 10.
    Lock {
        name: String,
        /// Seconds the lock outlives kvctl if kvctl dies without releasing it.
        #[arg(long, default_value_t = 60)]
        ttl: i64,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Show every node: id, address, role, term, leader, commit and applied index.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start a local cluster, run a workload under faults, and check it was linearizable.
    /// Exit 0 when it was and all nodes converged, 6 on a violation, 7 when undecided.
    Chaos(ChaosArgs),
}

#[derive(clap::Args, Debug)]
struct ChaosArgs {
    /// How long the workload runs, in seconds.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Faults to inject, in turn: any of kill,pause,partition,delay,power (empty: none). power
    /// keeps the nodes' data on power-cut filesystems (needs root and /dev/fuse).
    #[arg(long, default_value = "kill,pause,partition")]
    faults: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Distinct keys (few keys: more contention).
    #[arg(long, default_value_t = 5)]
    keys: usize,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// What the clients do: kv (get/set/delete over kv.v1, following the leader) or etcd-cas
    /// (compare-and-set Txns and linearizable Ranges over etcd's API, each request to a random
    /// member).
    #[arg(long, default_value = "kv")]
    workload: String,
    /// How long each fault lasts, and the healthy time between faults, in seconds.
    #[arg(long, default_value_t = 4)]
    fault_hold: u64,
    /// Seconds the checker may spend.
    #[arg(long, default_value_t = 120)]
    check_budget: u64,
    /// Where a violation's history files go.
    #[arg(long, default_value = ".")]
    output: std::path::PathBuf,
    /// The node binary (default: distributed_kv next to kvctl).
    #[arg(long)]
    node_binary: Option<std::path::PathBuf>,
    /// UNSAFE nodes that serve stale reads, to see the checker catch them.
    #[arg(long)]
    unsafe_stale_reads: bool,
    /// UNSAFE nodes that never fdatasync their Raft log, to see power cuts lose acknowledged
    /// writes and the checker catch it.
    #[arg(long)]
    unsafe_no_fsync: bool,
    /// Keep a watcher on every node through the run, resumed on another node whenever its
    /// stream ends, and check each was told exactly the committed history.
    #[arg(long)]
    watchers: bool,
    /// UNSAFE nodes that silently drop some watch events, to see the watch checker catch it.
    #[arg(long)]
    unsafe_watch_gaps: bool,
    /// Clients that take and release one lock through etcd's lock recipe beside the workload,
    /// checked for two holders at once.
    #[arg(long, default_value_t = 0)]
    lockers: usize,
    /// UNSAFE nodes whose leader answers keep-alives without renewing leases, to see the lock
    /// checker catch two holders at once.
    #[arg(long)]
    unsafe_lease_expiry: bool,
    /// Random seed (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
}

/// Exit status: key not found.
const EXIT_NOT_FOUND: u8 = 1;
/// Exit status: bad usage.
const EXIT_USAGE: u8 = 2;
/// Exit status: a txn's compares did not all hold; its `--else` operations ran.
const EXIT_TXN_FAILED: u8 = 8;
/// Exit status: nothing reachable.
const EXIT_UNREACHABLE: u8 = 3;
/// How long `status` waits for each node.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys asked for per List page.
const LIST_PAGE_KEYS: u64 = 1_000;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(5);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// Why a command failed: the message for stderr, and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

/// Exit status: the chaos run found a violation or did not converge.
const EXIT_VIOLATION: u8 = 6;
/// Exit status: the checker could not decide within its budget.
const EXIT_UNDECIDED: u8 = 7;
/// One operation's deadline in a chaos run.
const CHAOS_OP_TIMEOUT: Duration = Duration::from_secs(2);

async fn chaos(args: ChaosArgs) -> Result<ExitCode, ClientError> {
    use kv_chaos::runner::{run, ChaosOptions, FaultKind, Workload};
    let faults = FaultKind::parse_list(&args.faults).map_err(ClientError::Invalid)?;
    let workload = Workload::parse(&args.workload).map_err(ClientError::Invalid)?;
    let node_binary = match args.node_binary {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| ClientError::Invalid(format!("cannot find kvctl's own path: {e}")))?
            .with_file_name("distributed_kv"),
    };
    if !node_binary.exists() {
        return Err(ClientError::Invalid(format!(
            "{} does not exist; build it or pass --node-binary",
            node_binary.display()
        )));
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let work_dir = std::env::temp_dir().join(format!(
        "distributed_kv-chaos-{}-{seed}",
        std::process::id()
    ));
    let opts = ChaosOptions {
        node_binary,
        work_dir,
        output_dir: args.output,
        nodes: args.nodes,
        workload,
        duration: Duration::from_secs(args.duration),
        faults,
        clients: args.clients,
        keys: args.keys,
        fault_hold: Duration::from_secs(args.fault_hold),
        op_timeout: CHAOS_OP_TIMEOUT,
        check_budget: Duration::from_secs(args.check_budget),
        unsafe_stale_reads: args.unsafe_stale_reads,
        unsafe_no_fsync: args.unsafe_no_fsync,
        watchers: args.watchers,
        unsafe_watch_gaps: args.unsafe_watch_gaps,
        lockers: args.lockers,
        unsafe_lease_expiry: args.unsafe_lease_expiry,
        lock_hold: kv_chaos::lock_check::DEFAULT_MAX_HOLD,
        seed,
    };
    let report = run(opts)
        .await
        .map_err(|e| ClientError::Server(e.to_string()))?;
    println!("{report} seed={seed}");
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else if matches!(report.verdict, kv_chaos::Verdict::Unknown { .. }) {
        ExitCode::from(EXIT_UNDECIDED)
    } else {
        ExitCode::from(EXIT_VIOLATION)
    })
}

/// Every byte of standard input, as is (a trailing newline included), read before any
/// connection is made so a failed read changes nothing.
fn read_stdin() -> Result<Vec<u8>, ClientError> {
    use std::io::Read;
    let mut value = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut value)
        .map_err(|e| {
            ClientError::Invalid(format!("cannot read the value from standard input: {e}"))
        })?;
    Ok(value)
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let endpoints = endpoints_from(cli.endpoints.as_deref());
    if endpoints.is_empty() && !matches!(cli.command, Command::Chaos(_)) {
        return Err(ClientError::Invalid(kv_api::client::NO_ENDPOINTS.into()).into());
    }
    let timeout = Duration::from_millis(cli.timeout_ms);
    let mut client = Client::new(endpoints.clone()).with_timeout(timeout);
    let serializable = cli.consistency == Consistency::S;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Chaos(args) => return Ok(chaos(args).await?),
        Command::Set { key, value, lease } => {
            let value = match value {
                Some(v) => v.into_bytes(),
                None => read_stdin()?,
            };
            match lease {
                None => {
                    client.set(key.as_bytes(), &value).await?;
                }
                Some(id) => {
                    let id = lease::parse_id(&id)?;
                    lease::put_with_lease(&endpoints, timeout, key.into_bytes(), value, id).await?
                }
            }
        }
        Command::Lease { command } => {
            return lease::lease(&endpoints, timeout, command, &mut out).await;
        }
        Command::Lock { name, ttl, command } => {
            return lease::lock(&endpoints, timeout, &name, ttl, &command).await;
        }
        Command::Get {
            key,
            rev,
            show_revisions,
        } => {
            let found = match rev {
                None => client
                    .get_versioned(key.as_bytes(), serializable)
                    .await?
                    .map(|v| (v.value, v.create_revision, v.mod_revision, v.version)),
                Some(rev) => {
                    let req = RangeRequest {
                        key: key.clone().into_bytes(),
                        revision: rev,
                        serializable,
                        ..Default::default()
                    };
                    let resp = kv_call(&endpoints, timeout, Call::ReadAt(rev), |mut c| {
                        let req = req.clone();
                        async move { c.range(req).await }
                    })
                    .await?;
                    resp.kvs
                        .into_iter()
                        .next()
                        .map(|kv| (kv.value, kv.create_revision, kv.mod_revision, kv.version))
                }
            };
            match found {
                Some((value, create, modified, version)) => {
                    if show_revisions {
                        let _ = writeln!(out, "{}", etcd::revisions(create, modified, version));
                    }
                    let _ = out.write_all(&value);
                    let _ = out.write_all(b"\n");
                }
                None => {
                    match rev {
                        Some(rev) => eprintln!("key not found at revision {rev}: {key}"),
                        None => eprintln!("key not found: {key}"),
                    }
                    return Ok(ExitCode::from(EXIT_NOT_FOUND));
                }
            }
        }
        Command::Txn {
            compares,
            then,
            otherwise,
            show_revisions,
        } => {
            let txn = txn::parse_txn(&compares, &then, &otherwise).map_err(|message| Failure {
                code: EXIT_USAGE,
                message,
            })?;
            let writes = txn
                .request
                .success
                .iter()
                .chain(&txn.request.failure)
                .any(|op| !matches!(op.request, Some(request_op::Request::RequestRange(_))));
            let req = txn.request.clone();
            let resp = kv_call(&endpoints, timeout, Call::Txn { writes }, |mut c| {
                let req = req.clone();
                async move { c.txn(req).await }
            })
            .await?;
            let labels = if resp.succeeded {
                &txn.then_labels
            } else {
                &txn.else_labels
            };
            let _ = etcd::print_txn(&mut out, &resp, labels, show_revisions);
            if !resp.succeeded {
                return Ok(ExitCode::from(EXIT_TXN_FAILED));
            }
        }
        Command::Watch {
            key,
            prefix,
            rev,
            prev_kv,
        } => {
            let key = key.into_bytes();
            let range_end = if prefix {
                etcd_api::range::prefix_end(&key)
            } else {
                Vec::new()
            };
            let spec = kv_api::watch::WatchSpec {
                key,
                range_end,
                start: rev.unwrap_or(0),
                prev_kv,
            };
            return Err(watch::watch(&endpoints, timeout, spec, &mut out).await);
        }
        Command::Compact { revision, physical } => {
            let req = CompactionRequest { revision, physical };
            kv_call(
                &endpoints,
                timeout,
                Call::Compact(revision),
                |mut c| async move { c.compact(req).await },
            )
            .await?;
        }
        Command::Delete { key } => {
            if !client.delete(key.as_bytes()).await? {
                eprintln!("key not found: {key}");
                return Ok(ExitCode::from(EXIT_NOT_FOUND));
            }
        }
        Command::List {
            prefix,
            from,
            limit,
            keys_only,
        } => {
            let mut left = limit.unwrap_or(u64::MAX);
            let mut start = from.into_bytes();
            while left > 0 {
                let req = ListRequest {
                    prefix: prefix.clone().into_bytes(),
                    start_key: start.clone(),
                    limit: left.min(LIST_PAGE_KEYS) as u32,
                    keys_only,
                    serializable,
                };
                let page = client.list(req).await?;
                for kv in &page.kvs {
                    let _ = out.write_all(&kv.key);
                    if !keys_only {
                        let _ = out.write_all(b"\t");
                        let _ = out.write_all(&kv.value);
                    }
                    let _ = out.write_all(b"\n");
                }
                left -= page.kvs.len() as u64;
                if !page.more || page.kvs.is_empty() {
                    break;
                }
                start = page.next_key;
            }
        }
        Command::Status { json } => {
            let nodes = client.cluster_status(STATUS_TIMEOUT).await;
            let any = nodes.iter().any(|(_, r)| r.is_ok());
            if json {
                let arr: Vec<serde_json::Value> = nodes
                    .iter()
                    .map(|(addr, r)| match r {
                        Ok(s) => serde_json::json!({
                            "id": s.node_id, "client_addr": addr, "role": s.role().label(), "term": s.term,
                            "leader_id": s.leader_id, "commit_index": s.commit_index,
                            "applied_index": s.applied_index, "reachable": true,
                        }),
                        Err(e) => serde_json::json!({
                            "id": null, "client_addr": addr, "role": null, "term": null, "leader_id": null,
                            "commit_index": null, "applied_index": null, "reachable": false, "error": e.to_string(),
                        }),
                    })
                    .collect();
                let _ = writeln!(out, "{}", serde_json::Value::Array(arr));
            } else {
                let _ = writeln!(
                    out,
                    "{:<4} {:<22} {:<13} {:>6} {:>6} {:>10} {:>10}",
                    "ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED"
                );
                for (addr, r) in &nodes {
                    match r {
                        Ok(s) => {
                            let _ = writeln!(
                                out,
                                "{:<4} {:<22} {:<13} {:>6} {:>6} {:>10} {:>10}",
                                s.node_id,
                                addr,
                                s.role().label(),
                                s.term,
                                s.leader_id,
                                s.commit_index,
                                s.applied_index
                            );
                        }
                        Err(e) => {
                            let _ = writeln!(out, "{:<4} {:<22} unreachable: {e}", "?", addr);
                        }
                    }
                }
            }
            if !any {
                return Ok(ExitCode::from(EXIT_UNREACHABLE));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
