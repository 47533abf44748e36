//! The GUI's network worker: a thread with a tokio runtime that runs client calls.
//!
//! Overflow policy: the request queue holds [`JOB_QUEUE_CAPACITY`] jobs; when it is full,
//! [`Worker::submit`] refuses the job and the UI shows "busy". The result queue holds
//! [`RESULT_QUEUE_CAPACITY`] results; when the UI falls that far behind, the worker waits for it
//! (results are never dropped).
//!
//! User operations share one client and run one after another, in the order they were made;
//! status polls use a second client, so a slow poll (a node down) never delays an operation.
//! The watch panel's watch and history reads run beside both ([`crate::watch_feed`]); a
//! watch hands over each batch of events as a result of its request, and a watch that
//! outpaces the UI waits for it like any result (events are never dropped).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use kv_api::client::{Client, ClientError, VersionedValue};
use kv_api::proto::{ListRequest, Role};

use crate::key_lease::{key_lease, KeyLease};
use crate::watch_feed::{self, EventRow, History, LiveUpdate};

/// Jobs waiting for the worker before `submit` refuses more.
pub const JOB_QUEUE_CAPACITY: usize = 64;
/// Results waiting for the UI before the worker waits.
pub const RESULT_QUEUE_CAPACITY: usize = 256;
/// Keys fetched per "load more".
pub const LIST_PAGE_KEYS: u32 = 100;
/// How long one status question to one node may take.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(1_500);
/// Threads of the worker's runtime.
const RUNTIME_THREADS: usize = 2;

/// What the UI asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Read a key, linearizably.
    Get(Vec<u8>),
    /// Set a key (first) to a value (second).
    Set(Vec<u8>, Vec<u8>),
    /// Delete a key.
    Delete(Vec<u8>),
    /// A page of keys with `prefix`, from `start`.
    List {
        prefix: Vec<u8>,
        /// First key (inclusive); empty for the start.
        start: Vec<u8>,
    },
    /// Every node's status; polls run beside the operations, on a client of their own.
    Status,
    /// Watch every key under `prefix` from revision `from` (0: the next one), beside the
    /// operations; each batch of events is a result of this request, until it is stopped or
    /// fails. A new watch replaces the running one.
    Watch { prefix: Vec<u8>, from: i64 },
    /// Stop the running watch.
    StopWatch,
    /// Every revision of a key the store still has.
    History(Vec<u8>),
    /// The lease of a key (first), shown as the second, if it has one.
    Lease(Vec<u8>, String),
    /// Use these endpoints from now on.
    Connect(Vec<String>),
}

/// One node as the cluster panel shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeRow {
    /// Node id (0 when it did not answer).
    pub id: u64,
    /// The client address it was asked at, whether or not it answered.
    pub addr: String,
    /// Its Raft role; `None` when it did not answer.
    pub role: Option<Role>,
    pub term: u64,
    /// The leader it knows (0: none).
    pub leader_id: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// How many entries it has applied fewer than the leader committed.
    pub lag: u64,
    /// Whether it answered; when it did not, only `addr` and `role` are filled in.
    pub reachable: bool,
}

impl NodeRow {
    /// Whether it answered as the leader.
    pub fn is_leader(&self) -> bool {
        self.role == Some(Role::Leader)
    }

    /// The role as the panel shows it.
    pub fn role_label(&self) -> &'static str {
        self.role.map_or("unreachable", Role::label)
    }
}

/// What a request produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Get: the value and its revisions, if the key exists.
    Value(Option<VersionedValue>),
    /// Set: the write's log index.
    Written(u64),
    /// Delete: whether the key existed.
    Deleted(bool),
    /// List: keys and the first key of the next page.
    Keys {
        keys: Vec<Vec<u8>>,
        /// Where the next page starts, if there is one.
        next: Option<Vec<u8>>,
        /// Whether this page continues an earlier one (load more) or replaces it.
        append: bool,
    },
    /// Status: one row per node.
    Nodes(Vec<NodeRow>),
    /// Connect: done.
    Connected,
    /// Watch: it is made, and events from this revision on follow.
    Watching(i64),
    /// Watch: a batch of events, oldest first.
    Events(Vec<EventRow>),
    /// StopWatch: done.
    WatchStopped,
    /// History: the key's revisions.
    History(History),
    /// Lease: the key's lease, if it has one.
    Lease(Option<KeyLease>),
}

/// A finished request.
#[derive(Debug, Clone)]
pub struct Done {
    /// The id `submit` returned.
    pub id: u64,
    /// Handed back, so the UI knows what finished.
    pub request: Request,
    pub result: Result<Reply, ClientError>,
    /// From when the worker began it to its result; time queued is not counted.
    pub latency: Duration,
}

/// A request with its id.
struct Job {
    id: u64,
    request: Request,
}

/// Handle to the worker thread. Dropping it closes the queue, and the thread ends.
pub struct Worker {
    /// Holds at most [`JOB_QUEUE_CAPACITY`] jobs; `submit` refuses one more.
    jobs: Sender<Job>,
    /// Holds at most [`RESULT_QUEUE_CAPACITY`] results; the worker waits while it is full.
    results: Receiver<Done>,
    /// The id the next accepted job gets; a refused job uses none.
    next_id: u64,
}

impl Worker {
    /// Starts the worker for `endpoints`. `repaint` is called after every result.
    pub fn start(
        endpoints: Vec<String>,
        op_timeout: Duration,
        repaint: impl Fn() + Send + Sync + 'static,
    ) -> Worker {
        let (jobs, job_rx) = bounded::<Job>(JOB_QUEUE_CAPACITY);
        let (result_tx, results) = bounded::<Done>(RESULT_QUEUE_CAPACITY);
        let repaint: Arc<dyn Fn() + Send + Sync> = Arc::new(repaint);
        std::thread::Builder::new()
            .name("gui-worker".into())
            .spawn(move || run(endpoints, op_timeout, job_rx, result_tx, repaint))
            .expect("spawn the GUI worker thread");
        Worker {
            jobs,
            results,
            next_id: 1,
        }
    }

    /// Queues a request; returns its id, or `None` when the queue is full.
    pub fn submit(&mut self, request: Request) -> Option<u64> {
        let id = self.next_id;
        match self.jobs.try_send(Job { id, request }) {
            Ok(()) => {
                self.next_id += 1;
                Some(id)
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => None,
        }
    }

    /// Results that arrived since the last call.
    pub fn poll(&self) -> Vec<Done> {
        self.results.try_iter().collect()
    }
}

fn run(
    endpoints: Vec<String>,
    op_timeout: Duration,
    jobs: Receiver<Job>,
    results: Sender<Done>,
    repaint: Arc<dyn Fn() + Send + Sync>,
) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_THREADS)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("GUI worker cannot start its runtime: {e}");
            return;
        }
    };
    // Operations go to one task that runs them in order; status polls run beside it.
    let (ops_tx, mut ops_rx) = tokio::sync::mpsc::channel::<Job>(JOB_QUEUE_CAPACITY);
    let finish = {
        let (results, repaint) = (results.clone(), repaint.clone());
        move |id, request, result, started: Instant| {
            let done = Done {
                id,
                request,
                result,
                latency: started.elapsed(),
            };
            // Waits when the UI is far behind: results are never dropped.
            let _ = tokio::task::block_in_place(|| results.send(done).map_err(drop));
            repaint();
        }
    };
    let ops_finish = finish.clone();
    let ops_endpoints = endpoints.clone();
    rt.spawn(async move {
        let mut client = Client::new(ops_endpoints).with_timeout(op_timeout);
        while let Some(Job { id, request }) = ops_rx.recv().await {
            let started = Instant::now();
            let result = match &request {
                Request::Connect(eps) => {
                    client = Client::new(eps.clone()).with_timeout(op_timeout);
                    Ok(Reply::Connected)
                }
                other => execute(&mut client, other).await,
            };
            ops_finish(id, request, result, started);
        }
    });
    let new_status_client = |eps| Arc::new(tokio::sync::Mutex::new(Client::new(eps)));
    let mut status_client = new_status_client(endpoints.clone());
    // The endpoints the watch and history calls use (the last connect's).
    let mut watch_endpoints = endpoints;
    let mut running_watch: Option<tokio::task::JoinHandle<()>> = None;
    while let Ok(job) = jobs.recv() {
        match &job.request {
            Request::Watch { prefix, from } => {
                if let Some(w) = running_watch.take() {
                    w.abort();
                }
                let (finish, eps) = (finish.clone(), watch_endpoints.clone());
                let (prefix, from) = (prefix.clone(), *from);
                running_watch = Some(rt.spawn(async move {
                    let started = Instant::now();
                    let request = job.request.clone();
                    let end = watch_feed::live(eps, op_timeout, prefix, from, |update| {
                        let reply = match update {
                            LiveUpdate::Watching(from) => Reply::Watching(from),
                            LiveUpdate::Events(rows) => Reply::Events(rows),
                        };
                        finish(job.id, request.clone(), Ok(reply), started);
                        true
                    })
                    .await;
                    finish(job.id, job.request, Err(end), started);
                }));
            }
            Request::StopWatch => {
                if let Some(w) = running_watch.take() {
                    w.abort();
                }
                finish(job.id, job.request, Ok(Reply::WatchStopped), Instant::now());
            }
            Request::History(key) => {
                let (finish, eps, key) = (finish.clone(), watch_endpoints.clone(), key.clone());
                rt.spawn(async move {
                    let started = Instant::now();
                    let result = watch_feed::history(&eps, op_timeout, &key).await;
                    finish(job.id, job.request, result.map(Reply::History), started);
                });
            }
            Request::Lease(key, shown) => {
                let (finish, eps) = (finish.clone(), watch_endpoints.clone());
                let (key, shown) = (key.clone(), shown.clone());
                rt.spawn(async move {
                    let started = Instant::now();
                    let result = key_lease(&eps, op_timeout, &key, shown).await;
                    finish(job.id, job.request, result.map(Reply::Lease), started);
                });
            }
            Request::Status => {
                let (client, finish) = (status_client.clone(), finish.clone());
                rt.spawn(async move {
                    let started = Instant::now();
                    let rows = node_rows(&mut *client.lock().await).await;
                    finish(job.id, job.request, Ok(Reply::Nodes(rows)), started);
                });
            }
            other => {
                if let Request::Connect(eps) = other {
                    status_client = new_status_client(eps.clone());
                    watch_endpoints = eps.clone();
                    if let Some(w) = running_watch.take() {
                        w.abort();
                    }
                }
                if ops_tx.blocking_send(job).is_err() {
                    return;
                }
            }
        }
    }
}

async fn execute(client: &mut Client, request: &Request) -> Result<Reply, ClientError> {
    match request {
        Request::Get(key) => client.get_versioned(key, false).await.map(Reply::Value),
        Request::Set(key, value) => client.set(key, value).await.map(Reply::Written),
        Request::Delete(key) => client.delete(key).await.map(Reply::Deleted),
        Request::List { prefix, start } => {
            let page = client
                .list(ListRequest {
                    prefix: prefix.clone(),
                    start_key: start.clone(),
                    limit: LIST_PAGE_KEYS,
                    keys_only: true,
                    serializable: false,
                })
                .await?;
            Ok(Reply::Keys {
                keys: page.kvs.into_iter().map(|kv| kv.key).collect(),
                next: page.more.then_some(page.next_key),
                append: !start.is_empty(),
            })
        }
        Request::Status
        | Request::Connect(_)
        | Request::Watch { .. }
        | Request::StopWatch
        | Request::History(_)
        | Request::Lease(..) => Err(ClientError::Invalid("not an operation".into())),
    }
}

/// Asks every node for its status and turns the answers into rows.
pub async fn node_rows(client: &mut Client) -> Vec<NodeRow> {
    let answers = client.cluster_status(STATUS_TIMEOUT).await;
    let leader_commit = answers
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .filter(|s| s.role() == Role::Leader)
        .map(|s| s.commit_index)
        .max()
        .unwrap_or(0);
    answers
        .into_iter()
        .map(|(addr, r)| match r {
            Ok(s) => NodeRow {
                id: s.node_id,
                addr,
                role: Some(s.role()),
                term: s.term,
                leader_id: s.leader_id,
                commit_index: s.commit_index,
                applied_index: s.applied_index,
                lag: leader_commit.saturating_sub(s.applied_index),
                reachable: true,
            },
            Err(_) => NodeRow {
                addr,
                ..Default::default()
            },
        })
        .collect()
}
