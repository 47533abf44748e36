//! The client that kvctl, kvbench and the GUI share: finds the leader and follows it.
//!
//! Any endpoint may be given; a follower answers `UNAVAILABLE` with the leader's client address
//! in `x-leader-addr`, and the client retries there at once. With no hint (an election is under
//! way, or a node is down), it tries the next endpoint, pausing [`RETRY_PAUSE`] after each full
//! round, until the operation's deadline.
//!
//! Writes are retried only when the server certainly did not apply them (not the leader, not
//! applied, connection refused). A write whose outcome is unknown (deadline exceeded, leadership
//! lost, connection lost mid-request) is reported as [`ClientError::Unknown`], never retried
//! behind the caller's back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::{LEADER_ADDR_METADATA, LEADER_ID_METADATA};
use crate::proto::kv::kv_client::KvClient as GrpcKvClient;
use crate::proto::kv::*;

/// Default endpoint when none is given.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:50051";
/// Environment variable with comma-separated endpoints.
pub const ENDPOINTS_ENV: &str = "KV_ENDPOINTS";
/// Fragments of tonic's messages for a connection that could not be made at all.
const CONNECT_FAILURES: [&str; 3] = [
    "tcp connect error",
    "error trying to connect",
    "Connection refused",
];
/// The error for a client given no endpoints.
pub const NO_ENDPOINTS: &str = "no endpoints given: expected host:port[,host:port...]";
/// Pause after every endpoint failed once, before the next round.
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Default time an operation may take, retries included.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a TCP connection to one endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Why an operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    /// The server refused the input (bad key, value too large, ...). Nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// No leader or no node could be reached before the deadline.
    #[error("{0}")]
    Unavailable(String),
    /// A write may or may not have taken effect.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// Any other server error.
    #[error("{0}")]
    Server(String),
}

impl ClientError {
    /// The kvctl exit status for this error: 2 bad input, 3 unreachable, 4 unknown outcome,
    /// 5 other server error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Invalid(_) => 2,
            ClientError::Unavailable(_) => 3,
            ClientError::Unknown(_) => 4,
            ClientError::Server(_) => 5,
        }
    }
}

/// Reads the endpoint list: the argument if given, else `KV_ENDPOINTS`, else the default.
/// The list is empty when what was given names no endpoint (`--endpoints ,`); a client over
/// an empty list answers every call with [`NO_ENDPOINTS`].
pub fn endpoints_from(arg: Option<&str>) -> Vec<String> {
    let env = std::env::var(ENDPOINTS_ENV).ok();
    let raw = arg
        .map(str::to_string)
        .or(env)
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    raw.split(',')
        .map(|s| s.trim().trim_start_matches("http://").to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// What to do after a failed attempt.
enum Next {
    /// Give up with this error.
    Fail(ClientError),
    /// Retry at this address (a leader hint).
    Redirect(String),
    /// Try the next endpoint.
    Rotate(String),
}

/// Whether an operation may be retried after an ambiguous failure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

fn classify(status: &Status, kind: Kind) -> Next {
    let msg = status.message().to_string();
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            Next::Fail(ClientError::Invalid(msg))
        }
        Code::Unavailable => {
            if let Some(addr) = status
                .metadata()
                .get(LEADER_ADDR_METADATA)
                .and_then(|v| v.to_str().ok())
            {
                return Next::Redirect(addr.to_string());
            }
            let ours = msg.starts_with("not the leader") || msg.starts_with("not applied");
            // Only a failed connection proves the request never left; a connection that broke
            // later ("connection reset", "disconnected") may have carried it.
            let not_sent = CONNECT_FAILURES.iter().any(|m| msg.contains(m));
            if kind == Kind::Write && !ours && !not_sent {
                Next::Fail(ClientError::Unknown(msg))
            } else {
                Next::Rotate(msg)
            }
        }
        Code::ResourceExhausted => Next::Rotate(msg),
        Code::DeadlineExceeded | Code::Unknown | Code::Cancelled if kind == Kind::Write => {
            Next::Fail(ClientError::Unknown(msg))
        }
        Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => Next::Rotate(msg),
        _ => Next::Fail(ClientError::Server(format!("{:?}: {msg}", status.code()))),
    }
}

/// A client for a whole cluster.
pub struct Client {
    /// Known endpoints (given ones, plus leaders learned from hints).
    endpoints: Vec<String>,
    /// Index into `endpoints` of the one to try first (the last that worked).
    current: usize,
    /// One lazily connected channel per endpoint.
    channels: HashMap<String, GrpcKvClient<Channel>>,
    /// How long one operation may take, retries included.
    timeout: Duration,
}

impl Client {
    /// A client for the cluster reachable at any of `endpoints` (host:port).
    pub fn new(endpoints: Vec<String>) -> Client {
        Client {
            endpoints,
            current: 0,
            channels: HashMap::new(),
            timeout: DEFAULT_OPERATION_TIMEOUT,
        }
    }

    /// Sets how long one operation may take, retries included.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The endpoint the next operation goes to first.
    pub fn current_endpoint(&self) -> &str {
        self.endpoints.get(self.current).map_or("", String::as_str)
    }

    /// All endpoints known so far.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn channel(&mut self, addr: &str) -> Result<GrpcKvClient<Channel>, ClientError> {
        if let Some(c) = self.channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ClientError::Invalid(format!("bad endpoint {addr}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let client = GrpcKvClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        self.channels.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    async fn call<T, F, Fut>(&mut self, kind: Kind, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut(GrpcKvClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        if self.endpoints.is_empty() {
            return Err(ClientError::Invalid(NO_ENDPOINTS.into()));
        }
        let deadline = Instant::now() + self.timeout;
        let mut failures_in_round = 0;
        let mut last_error = String::from("no endpoint was tried");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClientError::Unavailable(format!(
                    "no leader could be reached within {} ms (last error: {last_error})",
                    self.timeout.as_millis()
                )));
            }
            let addr = self.endpoints[self.current].clone();
            let client = self.channel(&addr)?;
            let outcome = match tokio::time::timeout(remaining, f(client)).await {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) => classify(&status, kind),
                Err(_) if kind == Kind::Write => {
                    return Err(ClientError::Unknown(format!(
                        "no answer from {addr} within the deadline"
                    )))
                }
                Err(_) => Next::Rotate(format!("no answer from {addr}")),
            };
            match outcome {
                Next::Fail(e) => return Err(e),
                Next::Redirect(leader) => {
                    last_error = format!("{addr} redirected to the leader at {leader}");
                    self.current = match self.endpoints.iter().position(|e| *e == leader) {
                        Some(i) => i,
                        None => {
                            self.endpoints.push(leader);
                            self.endpoints.len() - 1
                        }
                    };
                    if self.endpoints[self.current] == addr {
                        // A stale hint pointing at the node that sent it: wait for the election.
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
                Next::Rotate(e) => {
                    last_error = format!("{addr}: {e}");
                    self.current = (self.current + 1) % self.endpoints.len();
                    failures_in_round += 1;
                    if failures_in_round >= self.endpoints.len() {
                        failures_in_round = 0;
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
        }
    }

    /// The value of `key`, or `None`. Linearizable unless `serializable`.
    pub async fn get(
        &mut self,
        key: &[u8],
        serializable: bool,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let req = GetRequest {
            key: key.to_vec(),
            serializable,
        };
        let r = self
            .call(Kind::Read, |mut c| {
                let req = req.clone();
                async move { c.get(req).await }
            })
            .await?;
        Ok(r.found.then_some(r.value))
    }

    /// Sets `key` to `value`; returns the log index of the write.
    pub async fn set(&mut self, key: &[u8], value: &[u8]) -> Result<u64, ClientError> {
        let req = SetRequest {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        let r = self
            .call(Kind::Write, |mut c| {
                let req = req.clone();
                async move { c.set(req).await }
            })
            .await?;
        Ok(r.header.map(|h| h.index).unwrap_or(0))
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&mut self, key: &[u8]) -> Result<bool, ClientError> {
        let req = DeleteRequest { key: key.to_vec() };
        let r = self
            .call(Kind::Write, |mut c| {
                let req = req.clone();
                async move { c.delete(req).await }
            })
            .await?;
        Ok(r.existed)
    }

    /// One page of keys.
    pub async fn list(&mut self, req: ListRequest) -> Result<ListResponse, ClientError> {
        self.call(Kind::Read, |mut c| {
            let req = req.clone();
            async move { c.list(req).await }
        })
        .await
    }

    /// The status of one node, asked directly (no leader following).
    pub async fn status_of(
        &mut self,
        addr: &str,
        timeout: Duration,
    ) -> Result<StatusResponse, ClientError> {
        let mut c = self.channel(addr)?;
        ask_node(addr, timeout, c.status(StatusRequest {})).await
    }

    /// (applied index, state hash) of one node, asked directly.
    pub async fn hash_of(
        &mut self,
        addr: &str,
        timeout: Duration,
    ) -> Result<HashResponse, ClientError> {
        let mut c = self.channel(addr)?;
        ask_node(addr, timeout, c.hash(HashRequest {})).await
    }

    /// The status of every node: the given endpoints plus every member they report.
    /// Returns (client address, status or error) per node, in order of node id where known.
    pub async fn cluster_status(
        &mut self,
        timeout: Duration,
    ) -> Vec<(String, Result<StatusResponse, ClientError>)> {
        let mut addrs: Vec<String> = self.endpoints.clone();
        let mut out: Vec<(String, Result<StatusResponse, ClientError>)> = Vec::new();
        let mut i = 0;
        while i < addrs.len() {
            let addr = addrs[i].clone();
            let r = self.status_of(&addr, timeout).await;
            if let Ok(s) = &r {
                for m in &s.members {
                    if !m.client_addr.is_empty() && !addrs.contains(&m.client_addr) {
                        addrs.push(m.client_addr.clone());
                    }
                }
            }
            out.push((addr, r));
            i += 1;
        }
        out.sort_by_key(|(_, r)| r.as_ref().map(|s| s.node_id).unwrap_or(u64::MAX));
        out
    }
}

/// One call to one node, bounded by `timeout`; any failure means the node did not answer.
async fn ask_node<T>(
    addr: &str,
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(ClientError::Unavailable(format!("{addr}: {}", s.message()))),
        Err(_) => Err(ClientError::Unavailable(format!(
            "{addr}: no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// The leader id carried by an `UNAVAILABLE` status, if any.
pub fn leader_id_hint(status: &Status) -> Option<u64> {
    status
        .metadata()
        .get(LEADER_ID_METADATA)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
