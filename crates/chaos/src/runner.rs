//! A whole chaos run: a local cluster, a workload, a nemesis, healing, and the verdict.
//!
//! 1. Start a [`LocalCluster`] (real processes, proxied peer links).
//! 2. Clients run the workload over a few keys (so keys are contended), every value unique,
//!    every operation recorded with its invocation and completion times and its outcome. A
//!    write whose fate the client cannot know (deadline, lost connection, leadership lost) is
//!    recorded as unknown, never as a failure. The [`Workload`] says which API and operations:
//!    random get/set/delete over kv.v1 with a leader-following client, or compare-and-sets
//!    (etcd Txns) and linearizable reads over etcd's v3 API, each request to a random member
//!    (see [`crate::etcd_cas`]).
//! 3. Meanwhile the nemesis cycles through the chosen faults — kill -9 and restart, SIGSTOP and
//!    SIGCONT, a node cut off from the rest, slow links, and power cuts (one node, a minority or
//!    every node killed at once, with every write they had not synced thrown away) — each held
//!    for a while, then healed, and logs each into the history with its time.
//! 4. After the run everything is healed, and every node must converge: the same applied index
//!    and the same state hash. One final linearizable read per key joins the history, so a lost
//!    acknowledged write shows up as a violation.
//! 5. With [`ChaosOptions::watchers`], a watcher on every member has been watching every key
//!    since the start, resuming on another member whenever its stream ended; each must have
//!    been told exactly the committed history ([`crate::watch_check`]).
//! 6. The checker decides. On a violation the history and the smallest failing per-key
//!    sub-history are written to files the report names.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::{check, Verdict};
use crate::etcd_cas::{EtcdClient, Members};
use crate::history::{Fault, History, OpKind, OpResult, Operation, Outcome};
use crate::lock_check::{check_holds, LockVerdict, Locker};
use crate::watch_check::{check_watchers, WatchVerdict, Watcher, CATCH_UP_TIMEOUT};
use kv_api::client::{Client, ClientError};
use kv_harness::{ClusterOptions, HarnessError, LocalCluster};

/// Fraction of operations that are reads, in percent.
const READ_PERCENT: u32 = 50;
/// Fraction of operations that are deletes, in percent (the rest are sets).
const DELETE_PERCENT: u32 = 10;
/// How much a delay fault slows each chunk of bytes on a link.
pub const LINK_DELAY: Duration = Duration::from_millis(150);
/// How long the cluster may take to converge after healing.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of the final reads.
const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(20);

/// Which API the clients use, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workload {
    /// kv.v1 through the leader-following client: get, set, delete.
    #[default]
    KvV1,
    /// etcd's v3 KV API, every request to a random member: linearizable Range reads,
    /// compare-and-sets as Txns (on the value, or on the `mod_revision` a read saw), and a few
    /// DeleteRanges ([`crate::etcd_cas`]).
    EtcdCas,
}

impl Workload {
    /// Parses `kv` or `etcd-cas`.
    pub fn parse(s: &str) -> Result<Workload, String> {
        match s.trim() {
            "kv" => Ok(Workload::KvV1),
            "etcd-cas" => Ok(Workload::EtcdCas),
            other => Err(format!(
                "unknown workload `{other}` (expected kv or etcd-cas)"
            )),
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::KvV1 => "kv",
            Workload::EtcdCas => "etcd-cas",
        }
    }
}

/// A kind of fault the nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL a node, restart it from its data dir later.
    Kill,
    /// SIGSTOP a node, SIGCONT it later.
    Pause,
    /// Slow every link to and from a node by [`LINK_DELAY`], restore later.
    Delay,
    /// Cut a minority off from the majority — one node, or in clusters of five or more
    /// sometimes several — and heal later.
    Partition,
    /// Cut the power of one node, a minority, or every node at once: SIGKILL them, throw away
    /// every write their filesystems had not made durable, restart them. Needs
    /// [`ChaosOptions::power_fs`].
    Power,
}

impl FaultKind {
    /// Parses `kill,pause,partition`.
    pub fn parse_list(s: &str) -> Result<Vec<FaultKind>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|f| match f {
                "kill" => Ok(FaultKind::Kill),
                "pause" => Ok(FaultKind::Pause),
                "partition" => Ok(FaultKind::Partition),
                "delay" => Ok(FaultKind::Delay),
                "power" => Ok(FaultKind::Power),
                other => Err(format!(
                    "unknown fault `{other}` (expected kill, pause, partition, delay, power)"
                )),
            })
            .collect()
    }

    fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Delay => "delay",
            FaultKind::Power => "power",
        }
    }
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The `distributed_kv` binary.
    pub node_binary: PathBuf,
    /// Where configs, data and logs go (created; removed after a clean run).
    pub work_dir: PathBuf,
    /// Where a failing run's history files go.
    pub output_dir: PathBuf,
    /// Cluster size.
    pub nodes: u64,
    /// What the clients do.
    pub workload: Workload,
    /// How long the workload runs.
    pub duration: Duration,
    /// Faults to cycle through; empty for none.
    pub faults: Vec<FaultKind>,
    /// Concurrent clients.
    pub clients: usize,
    /// Distinct keys.
    pub keys: usize,
    /// How long each fault lasts; the cluster is also left healthy this long between faults.
    pub fault_hold: Duration,
    /// One operation's deadline, retries included.
    pub op_timeout: Duration,
    /// Time the checker may spend.
    pub check_budget: Duration,
    /// Start the nodes with `unsafe_stale_reads` (to show the checker catches stale reads).
    pub unsafe_stale_reads: bool,
    /// Start the nodes with `unsafe_no_fsync` (to show power cuts then lose acknowledged writes).
    pub unsafe_no_fsync: bool,
    /// Keep a watcher on every member through the run, and check what each was told against
    /// the committed history ([`crate::watch_check`]).
    pub watchers: bool,
    /// Start the nodes with `unsafe_watch_gaps` (to show the watch checker catches lost events).
    pub unsafe_watch_gaps: bool,
    /// Clients that take and release one lock through etcd's lock recipe beside the workload,
    /// checked for two holders at once ([`crate::lock_check`]); 0 for none.
    pub lockers: usize,
    /// Start the nodes with `unsafe_lease_expiry` (to show the lock checker catches two
    /// holders at once).
    pub unsafe_lease_expiry: bool,
    /// The longest a locker holds the lock ([`crate::lock_check::DEFAULT_MAX_HOLD`]).
    pub lock_hold: Duration,
    /// Random seed for the workload and the nemesis.
    pub seed: u64,
}

/// What a run found.
#[derive(Debug)]
pub struct ChaosReport {
    /// Operations that completed.
    pub ok: usize,
    /// Operations that certainly did not take effect.
    pub fail: usize,
    /// Operations whose outcome is unknown.
    pub unknown: usize,
    /// Compare-and-sets that answered that they succeeded.
    pub cas_succeeded: usize,
    /// Compare-and-sets that answered that they failed (the key held another value).
    pub cas_failed: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// (applied index, hash) all nodes agreed on, or why they did not.
    pub converged: Result<(u64, u64), String>,
    /// The checker's verdict.
    pub verdict: Verdict,
    /// The watch checker's verdict, when the run kept watchers.
    pub watch: Option<WatchVerdict>,
    /// The lock checker's verdict, when the run had lockers.
    pub lock: Option<LockVerdict>,
    /// How long the checker took.
    pub check_time: Duration,
    /// What a failed run left behind: the whole history and the minimal failing sub-history
    /// (on a violation), and the cluster's directory with the nodes' configs, data and logs.
    pub files: Vec<PathBuf>,
}

impl ChaosReport {
    /// Whether the run passed: converged and linearizable.
    pub fn passed(&self) -> bool {
        self.converged.is_ok()
            && self.verdict.is_linearizable()
            && self.watch.as_ref().is_none_or(WatchVerdict::is_exact)
            && self.lock.as_ref().is_none_or(LockVerdict::is_exclusive)
    }
}

impl fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults = if self.faults.is_empty() {
            "none".to_string()
        } else {
            self.faults
                .iter()
                .map(|(k, n)| format!("{k}:{n}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let converged = match &self.converged {
            Ok((applied, _)) => format!("yes(applied={applied})"),
            Err(e) => format!("NO({e})"),
        };
        let verdict = match &self.verdict {
            Verdict::Linearizable => "linearizable".to_string(),
            Verdict::NotLinearizable {
                key,
                minimal_subhistory,
            } => format!(
                "NOT LINEARIZABLE (key {:?}, {} ops in the smallest failing sub-history)",
                String::from_utf8_lossy(key),
                minimal_subhistory.len()
            ),
            Verdict::Unknown { reason } => format!("unknown ({reason})"),
        };
        write!(
            f,
            "ops={} ok={} fail={} unknown={} ",
            self.ok + self.fail + self.unknown,
            self.ok,
            self.fail,
            self.unknown,
        )?;
        if self.cas_succeeded + self.cas_failed > 0 {
            write!(
                f,
                "cas_succeeded={} cas_failed={} ",
                self.cas_succeeded, self.cas_failed
            )?;
        }
        write!(
            f,
            "faults={faults} converged={converged} verdict={verdict} check_time={:.2}s",
            self.check_time.as_secs_f64()
        )?;
        if let Some(w) = &self.watch {
            write!(f, " watch={w}")?;
        }
        if let Some(l) = &self.lock {
            write!(f, " lock={l}")?;
        }
        for file in &self.files {
            write!(f, " file={}", file.display())?;
        }
        Ok(())
    }
}

/// Shared recording of a run, timed from `start`.
#[derive(Clone)]
pub(crate) struct Recorder {
    start: Instant,
    history: Arc<Mutex<History>>,
}

impl Recorder {
    /// Nanoseconds since the start of the run.
    pub(crate) fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn fault(&self, description: String) {
        tracing::info!("nemesis: {description}");
        let time = self.now();
        self.history
            .lock()
            .expect("history")
            .faults
            .push(Fault { time, description });
    }

    pub(crate) fn op(&self, op: Operation) {
        self.history.lock().expect("history").ops.push(op);
    }
}

/// The name of key number `i`.
pub(crate) fn key_name(i: usize) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

/// Runs one operation and records it.
async fn one_op(
    rec: &Recorder,
    reads: &mut Client,
    writes: &mut Client,
    client: u64,
    id: u64,
    key: Vec<u8>,
    kind: OpKind,
) {
    let invoke = rec.now();
    let outcome = match &kind {
        OpKind::Get => match reads.get(&key, false).await {
            Ok(v) => Outcome::Ok(OpResult::Read(v)),
            Err(_) => Outcome::Fail,
        },
        OpKind::Set(v) => write_outcome(writes.set(&key, v).await.map(|_| OpResult::Written)),
        OpKind::Delete => write_outcome(
            writes
                .delete(&key)
                .await
                .map(|existed| OpResult::Deleted { existed }),
        ),
        // kv.v1 has no compare-and-set and its workload never asks for one; not sent, it
        // did not take effect.
        OpKind::Cas { .. } => Outcome::Fail,
    };
    let complete = Some(rec.now());
    rec.op(Operation {
        id,
        client,
        key,
        kind,
        invoke,
        complete,
        outcome,
    });
}

/// A write's outcome as far as the client knows.
fn write_outcome(r: Result<OpResult, ClientError>) -> Outcome {
    match r {
        Ok(res) => Outcome::Ok(res),
        // The client reports Invalid and Unavailable only when no node could have applied it.
        Err(ClientError::Invalid(_)) | Err(ClientError::Unavailable(_)) => Outcome::Fail,
        Err(ClientError::Unknown(_)) | Err(ClientError::Server(_)) => Outcome::Unknown,
    }
}

/// After the run: the store's revision now, the committed history up to it (a fresh watch
/// from revision 1), each watcher given time to reach it, and the watch checker's verdict.
async fn check_watch(
    endpoints: &[String],
    watchers: Vec<Watcher>,
) -> Result<WatchVerdict, HarnessError> {
    let channel = kv_api::client::lazy_channel(&endpoints[0]).map_err(|e| e.to_string())?;
    let mut kv = etcd_api::etcdserverpb::kv_client::KvClient::new(channel);
    let probe = etcd_api::etcdserverpb::RangeRequest {
        key: crate::watch_check::WATCHED_PREFIX.to_vec(),
        count_only: true,
        ..Default::default()
    };
    let revision = tokio::time::timeout(FINAL_READ_TIMEOUT, kv.range(probe))
        .await
        .map_err(|_| "the store's revision: no answer in time".to_string())?
        .map_err(|e| format!("the store's revision: {e}"))?
        .into_inner()
        .header
        .map_or(0, |h| h.revision);
    let reference = Watcher::start(
        "reference".into(),
        endpoints.to_vec(),
        FINAL_READ_TIMEOUT,
        1,
    )
    .finish(revision, CATCH_UP_TIMEOUT)
    .await;
    if reference.last_revision() < revision {
        return Err(kv_harness::harness_error!(
            "the committed history could not be read up to revision {revision} (got to {})",
            reference.last_revision()
        ));
    }
    let committed: Vec<etcd_api::mvccpb::Event> = reference.answers.into_iter().flatten().collect();
    let mut logs = Vec::new();
    for w in watchers {
        logs.push(w.finish(revision, CATCH_UP_TIMEOUT).await);
    }
    Ok(check_watchers(&committed, &logs))
}

/// Runs the whole thing.
pub async fn run(opts: ChaosOptions) -> Result<ChaosReport, HarnessError> {
    if opts.clients == 0 || opts.keys == 0 || opts.nodes == 0 {
        return Err("clients, keys and nodes must be positive".into());
    }
    let cluster_options = ClusterOptions {
        nodes: opts.nodes,
        dir: Some(opts.work_dir.clone()),
        binary: Some(opts.node_binary.clone()),
        proxied_links: true,
        unsafe_stale_reads: opts.unsafe_stale_reads,
        unsafe_no_fsync: opts.unsafe_no_fsync,
        unsafe_watch_gaps: opts.unsafe_watch_gaps,
        unsafe_lease_expiry: opts.unsafe_lease_expiry,
        power_fs: opts.faults.contains(&FaultKind::Power),
        ..ClusterOptions::default()
    };
    let mut cluster = LocalCluster::start(cluster_options).await?;
    let endpoints = cluster.endpoints();
    let rec = Recorder {
        start: Instant::now(),
        history: Arc::new(Mutex::new(History::new())),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let ids_per_client = u64::MAX / (opts.clients as u64 + 2);
    // The watchers, one starting on each member, from the first revision.
    let watchers: Vec<Watcher> = if opts.watchers {
        (0..endpoints.len())
            .map(|i| {
                let mut eps = endpoints.clone();
                eps.rotate_left(i);
                Watcher::start(
                    format!("watcher on node {}", i + 1),
                    eps,
                    opts.op_timeout,
                    1,
                )
            })
            .collect()
    } else {
        Vec::new()
    };

    // The workload, and the lockers beside it.
    let mut workers = Vec::new();
    let holds = Arc::new(Mutex::new(Vec::new()));
    for l in 0..opts.lockers {
        let mut eps = endpoints.clone();
        eps.rotate_left(l % endpoints.len());
        let locker = Locker {
            client: l,
            endpoints: eps,
            timeout: opts.op_timeout,
            start: rec.start,
            stop: stop.clone(),
            holds: holds.clone(),
            seed: opts.seed.wrapping_add(1_000 + l as u64),
            max_hold: opts.lock_hold,
        };
        workers.push(tokio::spawn(locker.run()));
    }
    for c in 0..opts.clients {
        if opts.workload == Workload::EtcdCas {
            let client = EtcdClient {
                rec: rec.clone(),
                members: Members::new(&endpoints, opts.op_timeout)?,
                client: c as u64,
                first_id: c as u64 * ids_per_client,
                keys: opts.keys,
                stop: stop.clone(),
                rng: StdRng::seed_from_u64(opts.seed.wrapping_add(c as u64 + 1)),
            };
            workers.push(tokio::spawn(client.run()));
            continue;
        }
        // Each client starts at a different node; reads and writes have their own connection,
        // so a client keeps reading where it started unless that node redirects it.
        let mut eps = endpoints.clone();
        let first = c % eps.len();
        eps.rotate_left(first);
        let mut reads = Client::new(eps.clone()).with_timeout(opts.op_timeout);
        let mut writes = Client::new(eps).with_timeout(opts.op_timeout);
        let (rec, stop, keys) = (rec.clone(), stop.clone(), opts.keys);
        let mut rng = StdRng::seed_from_u64(opts.seed.wrapping_add(c as u64 + 1));
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = key_name(rng.gen_range(0..keys));
                let roll = rng.gen_range(0..100);
                let kind = if roll < READ_PERCENT {
                    OpKind::Get
                } else if roll < READ_PERCENT + DELETE_PERCENT {
                    OpKind::Delete
                } else {
                    OpKind::Set(format!("c{c}-{n}").into_bytes())
                };
                let id = c as u64 * ids_per_client + n;
                one_op(&rec, &mut reads, &mut writes, c as u64, id, key, kind).await;
                n += 1;
            }
        }));
    }

    // The nemesis.
    let mut faults = BTreeMap::new();
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let deadline = rec.start + opts.duration;
    let mut next = 0;
    while Instant::now() + opts.fault_hold * 2 <= deadline && !opts.faults.is_empty() {
        tokio::time::sleep(opts.fault_hold).await;
        let kind = opts.faults[next % opts.faults.len()];
        next += 1;
        // Half the time the leader, else any node.
        let ids = cluster.ids();
        let target = match (rng.gen_bool(0.5), cluster.leader().await) {
            (true, Some(l)) => l,
            _ => ids[rng.gen_range(0..ids.len())],
        };
        match kind {
            FaultKind::Kill => {
                rec.fault(format!("kill -9 node {target}"));
                cluster.kill(target);
                tokio::time::sleep(opts.fault_hold).await;
                cluster.restart(&[target]).await?;
                rec.fault(format!("restart node {target}"));
            }
            FaultKind::Pause => {
                rec.fault(format!("pause (SIGSTOP) node {target}"));
                cluster.pause(target)?;
                tokio::time::sleep(opts.fault_hold).await;
                cluster.resume(target)?;
                rec.fault(format!("resume (SIGCONT) node {target}"));
            }
            FaultKind::Delay => {
                rec.fault(format!("delay links of node {target} by {LINK_DELAY:?}"));
                cluster.delay(target, LINK_DELAY);
                tokio::time::sleep(opts.fault_hold).await;
                cluster.heal_links();
                rec.fault("restore link speed".to_string());
            }
            FaultKind::Power => {
                // Every node, one node, a minority, in turn: the first cut is of every node, so
                // even a short run has the cut that can lose the most.
                let minority = (ids.len() - 1) / 2;
                let turn = faults.get(kind.name()).copied().unwrap_or(0) % 3;
                let victims: Vec<u64> = match turn {
                    1 => vec![target],
                    2 => {
                        let mut side = vec![target];
                        let mut others: Vec<u64> =
                            ids.iter().copied().filter(|i| *i != target).collect();
                        while side.len() < minority.max(1) {
                            side.push(others.swap_remove(rng.gen_range(0..others.len())));
                        }
                        side
                    }
                    _ => ids.clone(),
                };
                rec.fault(format!("power cut {victims:?}"));
                let dropped = cluster.power_cut(&victims).await?;
                rec.fault(format!("power back {victims:?} ({dropped})"));
                tokio::time::sleep(opts.fault_hold).await;
            }
            FaultKind::Partition => {
                // In a cluster of five or more, half the partitions cut off a whole minority
                // (the target and others) instead of one node.
                let minority = (ids.len() - 1) / 2;
                let mut side = vec![target];
                if minority > 1 && rng.gen_bool(0.5) {
                    let mut others: Vec<u64> =
                        ids.iter().copied().filter(|i| *i != target).collect();
                    while side.len() < minority {
                        side.push(others.swap_remove(rng.gen_range(0..others.len())));
                    }
                }
                let rest: Vec<u64> = ids.iter().copied().filter(|i| !side.contains(i)).collect();
                rec.fault(format!("partition {side:?} | {rest:?}"));
                cluster.partition(&side);
                tokio::time::sleep(opts.fault_hold).await;
                cluster.heal_links();
                rec.fault("heal partition".to_string());
            }
        }
        *faults.entry(kind.name()).or_insert(0) += 1;
    }
    if let Some(left) = deadline.checked_duration_since(Instant::now()) {
        tokio::time::sleep(left).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }

    // Heal, converge, read every key once more.
    cluster.heal_all().await?;
    rec.fault("heal all".to_string());
    // Not converging is an outcome of the run, not a failure of the harness.
    let converged = cluster.converge(CONVERGE_TIMEOUT).await.map_err(|e| e.0);
    let mut reader = Client::new(endpoints.clone()).with_timeout(FINAL_READ_TIMEOUT);
    for k in 0..opts.keys {
        let id = opts.clients as u64 * ids_per_client + k as u64;
        one_op(
            &rec,
            &mut reader,
            &mut Client::new(endpoints.clone()),
            opts.clients as u64,
            id,
            key_name(k),
            OpKind::Get,
        )
        .await;
    }
    let watch = if opts.watchers {
        Some(check_watch(&endpoints, watchers).await?)
    } else {
        None
    };
    let lock = (opts.lockers > 0).then(|| check_holds(&holds.lock().expect("holds")));
    drop(cluster);

    let history = rec.history.lock().expect("history").clone();
    let count = |f: fn(&Outcome) -> bool| history.ops.iter().filter(|o| f(&o.outcome)).count();
    let (ok, fail, unknown) = (
        count(|o| matches!(o, Outcome::Ok(_))),
        count(|o| matches!(o, Outcome::Fail)),
        count(|o| matches!(o, Outcome::Unknown)),
    );
    let (cas_succeeded, cas_failed) = (
        count(|o| {
            matches!(
                o,
                Outcome::Ok(OpResult::Cas {
                    succeeded: true,
                    ..
                })
            )
        }),
        count(|o| {
            matches!(
                o,
                Outcome::Ok(OpResult::Cas {
                    succeeded: false,
                    ..
                })
            )
        }),
    );
    let started = Instant::now();
    let verdict = check(&history, opts.check_budget);
    let check_time = started.elapsed();
    let mut files = Vec::new();
    if let Verdict::NotLinearizable {
        minimal_subhistory, ..
    } = &verdict
    {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        std::fs::create_dir_all(&opts.output_dir).map_err(|e| e.to_string())?;
        let full = opts.output_dir.join(format!("chaos-{stamp}-history.jsonl"));
        let minimal = opts.output_dir.join(format!("chaos-{stamp}-minimal.jsonl"));
        let write = |path: &PathBuf, h: &History| -> Result<(), HarnessError> {
            let file =
                std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
            h.write_json_lines(std::io::BufWriter::new(file))
                .map_err(|e| kv_harness::harness_error!("{}: {e}", path.display()))
        };
        write(&full, &history)?;
        write(&minimal, &History::from_ops(minimal_subhistory.clone()))?;
        files = vec![full, minimal];
    }
    let mut report = ChaosReport {
        ok,
        fail,
        unknown,
        cas_succeeded,
        cas_failed,
        faults,
        converged,
        verdict,
        watch,
        lock,
        check_time,
        files,
    };
    if report.passed() {
        let _ = std::fs::remove_dir_all(&opts.work_dir);
    } else {
        // Keep the nodes' configs, data and logs for the post-mortem.
        report.files.push(opts.work_dir.clone());
    }
    Ok(report)
}
