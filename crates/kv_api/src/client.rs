//! The client that kvctl, kvbench and the GUI share: finds the leader and follows it.
//!
//! Any endpoint may be given; a follower answers `UNAVAILABLE` with the leader's client address
//! in `x-leader-addr`, and the client retries there at once. With no hint (an election is under
//! way, or a node is down), it tries the next endpoint, pausing [`RETRY_PAUSE`] after each full
//! round, until the operation's deadline.
//!
//! A hint is only a hint: one that names an unspecified address (`0.0.0.0`, `::`) or port 0 is
//! never followed, and when a hinted leader cannot be connected to, the client goes on with the
//! endpoints after the node that hinted it and does not follow hints to that address again until
//! the next round; so a wrong advertised address slows a call down but cannot trap it.
//!
//! Writes are retried only when the server certainly did not apply them (not the leader, not
//! applied, connection refused). A write whose outcome is unknown (deadline exceeded, leadership
//! lost, connection lost mid-request) is reported as [`ClientError::Unknown`], never retried
//! behind the caller's back.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::proto::kv_client::KvClient as GrpcKvClient;
use crate::proto::*;
use crate::status::{connect_failed, never_sent, Reason, LEADER_ADDR_METADATA, LEADER_ID_METADATA};

/// Default endpoint when none is given.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:50051";
/// Environment variable with comma-separated endpoints.
pub const ENDPOINTS_ENV: &str = "KV_ENDPOINTS";
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

/// A key's value and its revisions, as kv.v1 Get answers them (the names and meanings of
/// etcd's `mvccpb.KeyValue`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VersionedValue {
    pub value: Vec<u8>,
    /// The revision of the put that created the key (since it was last deleted).
    pub create_revision: i64,
    /// The revision of the key's last put.
    pub mod_revision: i64,
    /// The number of puts since the key was created (1 after its first).
    pub version: i64,
}

/// A channel to one endpoint (`host:port`), connected on its first call, that gives up on a
/// connection after [`CONNECT_TIMEOUT`]. Shared by [`Client`] and [`on_first_reachable`], so
/// every client of the port reaches a node the same way.
pub fn lazy_channel(addr: &str) -> Result<Channel, ClientError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ClientError::Invalid(format!("bad endpoint {addr}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// Makes one call, with any service's client (`call` builds it on the channel it is given),
/// on the first of `endpoints` that accepts a connection — for APIs that any node answers
/// itself, such as etcd's, which a follower forwards to the leader.
///
/// Only a failure to connect ([`connect_failed`]) moves the call on to the next endpoint: such
/// a request was never sent, so even a write is safe to send again. After every endpoint has
/// failed to connect once, the next round starts after [`RETRY_PAUSE`], until `timeout` has
/// passed: then the error is [`ClientError::Unavailable`], naming the last failure.
///
/// Every other answer, success or not, is the caller's to read (the inner result): a call that
/// reached a node but got no answer within `timeout` comes back as `DEADLINE_EXCEEDED`, since
/// only the caller knows whether that leaves a write's outcome unknown.
pub async fn on_first_reachable<T, F, Fut>(
    endpoints: &[String],
    timeout: Duration,
    mut call: F,
) -> Result<Result<T, Status>, ClientError>
where
    F: FnMut(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    if endpoints.is_empty() {
        return Err(ClientError::Invalid(NO_ENDPOINTS.into()));
    }
    let deadline = Instant::now() + timeout;
    let mut last_error = String::from("no endpoint was tried");
    loop {
        for addr in endpoints {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClientError::Unavailable(format!(
                    "no endpoint could be connected to within {} ms (last error: {last_error})",
                    timeout.as_millis()
                )));
            }
            match tokio::time::timeout(remaining, call(lazy_channel(addr)?)).await {
                Ok(Ok(resp)) => return Ok(Ok(resp.into_inner())),
                Ok(Err(status)) if connect_failed(&status) => {
                    last_error = format!("{addr}: {}", status.message());
                }
                Ok(Err(status)) => return Ok(Err(status)),
                Err(_) => {
                    return Ok(Err(Status::deadline_exceeded(format!(
                        "no answer from {addr} within {} ms",
                        timeout.as_millis()
                    ))))
                }
            }
        }
        tokio::time::sleep(RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now())))
            .await;
    }
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

/// What a failed attempt means, by the node's [`Reason`] when the answer is a node's, and by
/// the transport's evidence when it is not (see [`crate::status`]).
fn classify(status: &Status, kind: Kind) -> Next {
    let msg = status.message().to_string();
    let hint = status
        .metadata()
        .get(LEADER_ADDR_METADATA)
        .and_then(|v| v.to_str().ok());
    match Reason::of(status) {
        Some(Reason::InvalidArgument) => Next::Fail(ClientError::Invalid(msg)),
        Some(Reason::NotLeader) => match hint {
            Some(addr) => Next::Redirect(addr.to_string()),
            None => Next::Rotate(msg),
        },
        Some(Reason::NotApplied | Reason::Overloaded) => Next::Rotate(msg),
        Some(Reason::OutcomeUnknown | Reason::Timeout | Reason::ShuttingDown) => match kind {
            Kind::Write => Next::Fail(ClientError::Unknown(msg)),
            Kind::Read => Next::Rotate(msg),
        },
        Some(Reason::Internal) => {
            Next::Fail(ClientError::Server(format!("{:?}: {msg}", status.code())))
        }
        // Not a node's answer: tonic's own, about the connection or the framing.
        None => match status.code() {
            // Only proof that the request never left (no connection; dropped unsent from
            // hyper's queue) makes a write safe to retry; a connection that broke later
            // ("connection reset", "disconnected") may have carried it.
            _ if never_sent(status) => Next::Rotate(msg),
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                Next::Fail(ClientError::Invalid(msg))
            }
            // A limit of the transport, refused before any handler ran.
            Code::ResourceExhausted => Next::Rotate(msg),
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
                if kind == Kind::Write =>
            {
                Next::Fail(ClientError::Unknown(msg))
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => {
                Next::Rotate(msg)
            }
            _ => Next::Fail(ClientError::Server(format!("{:?}: {msg}", status.code()))),
        },
    }
}

/// Why a leader hint cannot be followed, if it cannot: an unspecified IP (`0.0.0.0`, `::`) or
/// port 0 is what a node listening on a wildcard says when it advertises no real address, and
/// connecting there would reach whatever listens on the client's own machine, not the leader.
fn unusable_hint(addr: &str) -> Option<&'static str> {
    match addr.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => Some("an unspecified address"),
        Ok(a) if a.port() == 0 => Some("port 0"),
        Ok(_) => None,
        Err(_) if Endpoint::from_shared(format!("http://{addr}")).is_err() => {
            Some("not a host:port address")
        }
        Err(_) => None,
    }
}

/// A client for a whole cluster: it follows leader hints, moves on to the next endpoint when
/// one fails, and retries a write only when the failure proves it was not applied.
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
        let client = GrpcKvClient::new(lazy_channel(addr)?)
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
        // Addresses that could not be connected to since the last pause between rounds.
        let mut unreachable: HashSet<String> = HashSet::new();
        // The index of the endpoint whose leader hint the current attempt follows.
        let mut hinted_by: Option<usize> = None;
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
            let (outcome, no_connection) = match tokio::time::timeout(remaining, f(client)).await {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) => (classify(&status, kind), connect_failed(&status)),
                Err(_) if kind == Kind::Write => {
                    return Err(ClientError::Unknown(format!(
                        "no answer from {addr} within the deadline"
                    )))
                }
                Err(_) => (Next::Rotate(format!("no answer from {addr}")), false),
            };
            if no_connection {
                unreachable.insert(addr.clone());
            }
            // A hint is not followed when it names no usable address, or one that could not be
            // connected to in this round: the hinting node sent it because it is not the leader,
            // so nothing was applied, and moving on to the other endpoints is safe. Following it
            // instead would bounce between the hinting node and the dead address until the
            // deadline, never trying the rest.
            let outcome = match outcome {
                Next::Redirect(leader) => match unusable_hint(&leader) {
                    Some(why) => Next::Rotate(format!("ignored a leader hint to {leader}: {why}")),
                    None if unreachable.contains(&leader) => Next::Rotate(format!(
                        "redirected to the leader at {leader}, which did not answer"
                    )),
                    None => Next::Redirect(leader),
                },
                other => other,
            };
            match outcome {
                Next::Fail(e) => return Err(e),
                Next::Redirect(leader) => {
                    last_error = format!("{addr} redirected to the leader at {leader}");
                    hinted_by = Some(self.current);
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
                    // After a hinted leader failed, go on after the node that hinted it (the
                    // hint may have been appended at the end, past every configured endpoint),
                    // passing over addresses that could not be connected to in this round.
                    let after = hinted_by.take().unwrap_or(self.current);
                    self.current = (after + 1) % self.endpoints.len();
                    failures_in_round += 1;
                    while unreachable.contains(&self.endpoints[self.current])
                        && failures_in_round < self.endpoints.len()
                    {
                        self.current = (self.current + 1) % self.endpoints.len();
                        failures_in_round += 1;
                    }
                    if failures_in_round >= self.endpoints.len() {
                        failures_in_round = 0;
                        // A new round tries every address again: a node may be back.
                        unreachable.clear();
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
        Ok(self
            .get_versioned(key, serializable)
            .await?
            .map(|v| v.value))
    }

    /// The value of `key` with its revisions, or `None`. Linearizable unless `serializable`.
    pub async fn get_versioned(
        &mut self,
        key: &[u8],
        serializable: bool,
    ) -> Result<Option<VersionedValue>, ClientError> {
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
        Ok(r.found.then_some(VersionedValue {
            value: r.value,
            create_revision: r.create_revision,
            mod_revision: r.mod_revision,
            version: r.version,
        }))
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

    /// One page of keys, linearizable unless `req.serializable`; the next page starts at its
    /// `next_key`.
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response};

    use super::*;
    use crate::proto::kv_server::{Kv, KvServer};

    /// How long one operation of these tests may take, retries included.
    const TEST_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

    /// A stand-in node: with a hint, a follower answering every call `UNAVAILABLE` with that
    /// leader hint, as a real follower does; without, a leader answering every call.
    struct FakeNode {
        hint: Option<String>,
        calls: Arc<AtomicUsize>,
    }

    impl FakeNode {
        fn answer<T: Default>(&self) -> Result<Response<T>, Status> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match &self.hint {
                Some(hint) => {
                    let mut s = Reason::NotLeader
                        .status(format!("not the leader; leader is node 9 at {hint}"));
                    s.metadata_mut()
                        .insert(LEADER_ADDR_METADATA, hint.parse().expect("ascii hint"));
                    Err(s)
                }
                None => Ok(Response::new(T::default())),
            }
        }
    }

    #[tonic::async_trait]
    impl Kv for FakeNode {
        async fn get(&self, _: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
            self.answer()
        }
        async fn set(&self, _: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
            self.answer()
        }
        async fn delete(
            &self,
            _: Request<DeleteRequest>,
        ) -> Result<Response<DeleteResponse>, Status> {
            self.answer()
        }
        async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
            self.answer()
        }
        async fn status(
            &self,
            _: Request<StatusRequest>,
        ) -> Result<Response<StatusResponse>, Status> {
            self.answer()
        }
        async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
            self.answer()
        }
    }

    /// Serves a [`FakeNode`] on a free loopback port; returns its address and its call counter.
    async fn serve(hint: Option<String>) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let calls = Arc::new(AtomicUsize::new(0));
        let node = FakeNode {
            hint,
            calls: calls.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(KvServer::new(node))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (addr, calls)
    }

    /// A loopback address nothing listens on (connections are refused).
    fn dead_addr() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn a_hinted_leader_that_does_not_answer_falls_back_to_the_other_endpoints() {
        let dead = dead_addr();
        let (follower, follower_calls) = serve(Some(dead.clone())).await;
        let (leader, leader_calls) = serve(None).await;
        // The follower comes first and its hint is appended after the leader: following the
        // hint and then rotating from it would land on the follower again, never the leader.
        let mut client = Client::new(vec![follower.clone(), leader.clone()])
            .with_timeout(TEST_OPERATION_TIMEOUT);
        assert_eq!(client.set(b"k", b"v").await, Ok(0), "the write completes");
        assert_eq!(leader_calls.load(Ordering::SeqCst), 1);
        assert_eq!(follower_calls.load(Ordering::SeqCst), 1, "asked once");
        assert_eq!(client.current_endpoint(), leader);
        assert_eq!(
            client.endpoints(),
            [follower.clone(), leader.clone(), dead.clone()]
        );

        // A read starting at the follower again falls back the same way.
        let mut client = Client::new(vec![follower.clone(), leader.clone()])
            .with_timeout(TEST_OPERATION_TIMEOUT);
        assert_eq!(client.get(b"k", false).await, Ok(None));
        assert_eq!(leader_calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_dead_hint_from_every_follower_is_tried_once_per_round() {
        let dead = dead_addr();
        let (a, a_calls) = serve(Some(dead.clone())).await;
        let (b, b_calls) = serve(Some(dead.clone())).await;
        let (leader, leader_calls) = serve(None).await;
        let mut client = Client::new(vec![a.clone(), b.clone(), leader.clone()])
            .with_timeout(TEST_OPERATION_TIMEOUT);
        assert_eq!(client.delete(b"k").await, Ok(false));
        assert_eq!(
            (
                a_calls.load(Ordering::SeqCst),
                b_calls.load(Ordering::SeqCst),
                leader_calls.load(Ordering::SeqCst)
            ),
            (1, 1, 1),
            "each node asked once: b's hint to the address that just failed is not followed"
        );
    }

    #[tokio::test]
    async fn a_hint_to_an_unspecified_address_or_port_0_is_never_followed() {
        let (leader, leader_calls) = serve(None).await;
        let port = leader.rsplit_once(':').unwrap().1.to_string();
        // On Linux a connection to 0.0.0.0 reaches the local machine, so following these
        // hints would reach the leader: only not following them leaves it unasked.
        for hint in [
            format!("0.0.0.0:{port}"),
            format!("[::]:{port}"),
            "127.0.0.1:0".to_string(),
        ] {
            let (follower, _) = serve(Some(hint.clone())).await;
            let mut client =
                Client::new(vec![follower.clone()]).with_timeout(Duration::from_millis(300));
            match client.set(b"k", b"v").await {
                Err(ClientError::Unavailable(msg)) => {
                    assert!(msg.contains("ignored a leader hint"), "{hint}: {msg}")
                }
                other => panic!("{hint}: a write refused by the only node: {other:?}"),
            }
            assert_eq!(
                leader_calls.load(Ordering::SeqCst),
                0,
                "{hint} was followed"
            );
            assert_eq!(
                client.endpoints(),
                std::slice::from_ref(&follower),
                "{hint} was learned"
            );

            let mut client = Client::new(vec![follower.clone(), leader.clone()])
                .with_timeout(TEST_OPERATION_TIMEOUT);
            assert_eq!(client.set(b"k", b"v").await, Ok(0));
            assert_eq!(client.endpoints(), [follower, leader.clone()]);
            leader_calls.store(0, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn on_first_reachable_passes_over_endpoints_that_cannot_be_connected_to() {
        let dead = dead_addr();
        let (follower, follower_calls) = serve(Some(dead_addr())).await;
        let (leader, leader_calls) = serve(None).await;
        let ask = |channel| async move { GrpcKvClient::new(channel).hash(HashRequest {}).await };

        // The dead endpoint is passed over; the follower answers, and its answer (a refusal
        // with a leader hint) is the caller's: it is not followed, nor is the leader asked.
        let endpoints = [dead.clone(), follower.clone(), leader.clone()];
        let answer = on_first_reachable(&endpoints, TEST_OPERATION_TIMEOUT, ask).await;
        let status = answer.expect("a node was reached").expect_err("a refusal");
        assert_eq!(Reason::of(&status), Some(Reason::NotLeader));
        assert_eq!(follower_calls.load(Ordering::SeqCst), 1);
        assert_eq!(leader_calls.load(Ordering::SeqCst), 0);

        let endpoints = [dead.clone(), leader.clone()];
        let answer = on_first_reachable(&endpoints, TEST_OPERATION_TIMEOUT, ask).await;
        assert!(
            matches!(answer, Ok(Ok(ref r)) if *r == HashResponse::default()),
            "{answer:?}"
        );
        assert_eq!(leader_calls.load(Ordering::SeqCst), 1);

        // Nothing to connect to: unavailable once the timeout has passed, naming the failure.
        let started = Instant::now();
        let short = Duration::from_millis(300);
        match on_first_reachable(std::slice::from_ref(&dead), short, ask).await {
            Err(ClientError::Unavailable(msg)) => assert!(msg.contains(&dead), "{msg}"),
            other => panic!("nothing listens at {dead}, yet: {other:?}"),
        }
        assert!(started.elapsed() >= short);
        let answer = on_first_reachable(&[], short, ask).await;
        assert!(
            matches!(answer, Err(ClientError::Invalid(ref m)) if m == NO_ENDPOINTS),
            "{answer:?}"
        );
    }

    #[test]
    fn unusable_hints() {
        for bad in ["0.0.0.0:1", "[::]:1", "10.0.0.1:0", "", "a b:1"] {
            assert!(unusable_hint(bad).is_some(), "{bad:?}");
        }
        for good in ["127.0.0.1:50051", "[::1]:50051", "node1.example:50051"] {
            assert_eq!(unusable_hint(good), None, "{good:?}");
        }
    }
}
