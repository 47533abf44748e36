//! Leases from a client's side, and the lock recipe built on them, over etcd's API (so they
//! work against etcd too), as etcd's Go client does them (`clientv3/concurrency`).
//!
//! # A session
//!
//! [`Session::grant`] takes a lease and keeps it alive from a task of its own: a keep-alive
//! every third of the TTL, to the first endpoint that answers. The client can never know the
//! server's deadline, only a bound on it: a keep-alive *sent* at time `t` and answered with TTL
//! `s` makes the lease live at least until `t + s`, since the leader renewed it after `t`
//! (and a new leader only ever gives more, never less: the lessor's invariant). So
//! [`Session::expires`] is that bound, and a holder of anything tied to the lease — a lock —
//! must stop acting as holder by then. A keep-alive answered with TTL 0 means the lease is
//! gone: the session is lost at once.
//!
//! # The lock
//!
//! [`lock`] is etcd's `Mutex`: the lock `NAME` is held by whoever owns the key under
//! `NAME/` with the smallest create revision. A contender puts `NAME/<lease id in hex>` with
//! its lease, in a Txn that puts it only if it does not exist yet, and then waits for every
//! key under `NAME/` created before its own to be deleted (released, or its lease expired),
//! watching the newest of them each time. [`unlock`] deletes the key. A contender whose
//! session is lost while it waits or holds has lost the lock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_api::etcdserverpb::kv_client::KvClient;
use etcd_api::etcdserverpb::lease_client::LeaseClient;
use etcd_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use etcd_api::etcdserverpb::watch_client::WatchClient;
use etcd_api::etcdserverpb::{
    request_op, response_op, watch_request, Compare, DeleteRangeRequest, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest,
};
use etcd_api::mvccpb::event::EventType;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Status;

use crate::client::{lazy_channel, on_first_reachable, ClientError};

/// What a session's keep-alive may take on one endpoint before the next is tried.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a lock waiter pauses after its watch of the key ahead failed, before it looks
/// again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A lease kept alive (see the module docs).
pub struct Session {
    id: i64,
    ttl: i64,
    /// The latest time the lease is known to live until.
    expires: Arc<Mutex<Instant>>,
    /// True once a keep-alive said the lease is gone.
    lost: watch::Receiver<bool>,
    keeper: JoinHandle<()>,
    endpoints: Vec<String>,
    timeout: Duration,
}

/// A failed call, as the kv.v1 client's errors say it: etcd's refusals of the input are
/// `Invalid`, "try again" is `Unavailable`.
fn failed(status: Status) -> ClientError {
    use tonic::Code;
    let message = status.message().to_string();
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange | Code::NotFound | Code::FailedPrecondition => {
            ClientError::Invalid(message)
        }
        Code::Unavailable => ClientError::Unavailable(message),
        _ => ClientError::Server(format!("{}: {message}", status.code())),
    }
}

/// One unary call on the first reachable endpoint, its failure as a [`ClientError`].
async fn call<T, F, Fut>(endpoints: &[String], timeout: Duration, f: F) -> Result<T, ClientError>
where
    F: FnMut(tonic::transport::Channel) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    on_first_reachable(endpoints, timeout, f)
        .await?
        .map_err(failed)
}

/// One keep-alive of lease `id`, on each of `endpoints` in turn until one answers: the TTL it
/// gave (0: the lease is gone), or `None` if none answered.
pub async fn keep_alive_once(endpoints: &[String], id: i64) -> Option<i64> {
    for addr in endpoints {
        let attempt = async {
            let channel = lazy_channel(addr).ok()?;
            let once = tokio_stream::once(LeaseKeepAliveRequest { id });
            let mut answers = LeaseClient::new(channel)
                .lease_keep_alive(once)
                .await
                .ok()?
                .into_inner();
            answers.message().await.ok()?.map(|a| a.ttl)
        };
        if let Ok(Some(ttl)) = tokio::time::timeout(KEEP_ALIVE_TIMEOUT, attempt).await {
            return Some(ttl);
        }
    }
    None
}

impl Session {
    /// Grants a lease of `ttl` seconds (the server may raise it) and starts keeping it alive.
    pub async fn grant(
        endpoints: &[String],
        timeout: Duration,
        ttl: i64,
    ) -> Result<Session, ClientError> {
        let sent = Instant::now();
        let granted = call(endpoints, timeout, |channel| async move {
            LeaseClient::new(channel)
                .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                .await
        })
        .await?;
        if !granted.error.is_empty() {
            return Err(ClientError::Server(granted.error));
        }
        let expires = Arc::new(Mutex::new(sent + secs(granted.ttl)));
        let (lost_tx, lost) = watch::channel(false);
        let keeper = tokio::spawn(keep(
            endpoints.to_vec(),
            granted.id,
            granted.ttl,
            expires.clone(),
            lost_tx,
        ));
        Ok(Session {
            id: granted.id,
            ttl: granted.ttl,
            expires,
            lost,
            keeper,
            endpoints: endpoints.to_vec(),
            timeout,
        })
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    /// Seconds, as granted.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// The latest time the lease is known to live until: past it, it may have expired.
    pub fn expires(&self) -> Instant {
        *self.expires.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the lease is known to be alive now.
    pub fn is_alive(&self) -> bool {
        !*self.lost.borrow() && Instant::now() < self.expires()
    }

    /// Resolves once the lease may be gone: a keep-alive said so, or the known deadline
    /// passed without a renewal.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        loop {
            let deadline = self.expires();
            if *lost.borrow() || Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = lost.changed() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    /// Stops keeping the lease alive and revokes it (its keys go with it).
    pub async fn revoke(self) -> Result<(), ClientError> {
        self.keeper.abort();
        let id = self.id;
        call(&self.endpoints, self.timeout, |channel| async move {
            LeaseClient::new(channel)
                .lease_revoke(LeaseRevokeRequest { id })
                .await
        })
        .await
        .map(|_| ())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}

/// The keep-alive task of a session.
async fn keep(
    endpoints: Vec<String>,
    id: i64,
    ttl: i64,
    expires: Arc<Mutex<Instant>>,
    lost: watch::Sender<bool>,
) {
    let every = (secs(ttl) / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        let known = *expires.lock().unwrap_or_else(|e| e.into_inner());
        if sent >= known {
            // The lease may be gone: whatever a late answer says, the session is over.
            let _ = lost.send(true);
            return;
        }
        match keep_alive_once(&endpoints, id).await {
            Some(0) => {
                let _ = lost.send(true);
                return;
            }
            Some(ttl) => {
                let mut e = expires.lock().unwrap_or_else(|e| e.into_inner());
                *e = (*e).max(sent + secs(ttl));
            }
            // No member answered: the known deadline stands, and the next try comes sooner.
            None => {}
        }
    }
}

/// A lock held (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// The holder's key, `NAME/<lease id in hex>`.
    pub key: Vec<u8>,
    /// Its create revision: the holder's place in the queue.
    pub revision: i64,
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    etcd_api::range::prefix_end(prefix)
}

/// Takes lock `name` for `session`'s lease, waiting as long as others hold it or queue before
/// this one, or until the session is lost (an error).
pub async fn lock(
    endpoints: &[String],
    timeout: Duration,
    name: &str,
    session: &Session,
) -> Result<Lock, ClientError> {
    let prefix = format!("{name}/").into_bytes();
    let key = format!("{name}/{:x}", session.id()).into_bytes();
    let lease = session.id();
    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: key.clone(),
            target_union: Some(TargetUnion::CreateRevision(0)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.clone(),
                lease,
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: key.clone(),
                ..Default::default()
            })),
        }],
    };
    let answer = call(endpoints, timeout, |channel| {
        let txn = txn.clone();
        async move { KvClient::new(channel).txn(txn).await }
    })
    .await?;
    let revision = if answer.succeeded {
        answer.header.map_or(0, |h| h.revision)
    } else {
        match answer.responses.first().and_then(|r| r.response.as_ref()) {
            Some(response_op::Response::ResponseRange(r)) => {
                r.kvs.first().map_or(0, |kv| kv.create_revision)
            }
            _ => 0,
        }
    };
    if revision == 0 {
        return Err(ClientError::Server(
            "the lock's key was neither put nor found".into(),
        ));
    }
    let held = Lock { key, revision };
    let lost = || {
        ClientError::Unavailable("the session's lease was lost while waiting for the lock".into())
    };
    tokio::select! {
        waited = wait_for_earlier(endpoints, timeout, &prefix, revision) => waited?,
        _ = session.lost() => return Err(lost()),
    }
    // The key must still be this one (etcd's Mutex reads it back): a delete of it that was
    // thought lost (a release that timed out) may have been applied meanwhile.
    let own = RangeRequest {
        key: held.key.clone(),
        ..Default::default()
    };
    let found = call(endpoints, timeout, |channel| {
        let own = own.clone();
        async move { KvClient::new(channel).range(own).await }
    })
    .await?;
    if found.kvs.first().map(|kv| kv.create_revision) != Some(revision) || !session.is_alive() {
        return Err(lost());
    }
    Ok(held)
}

/// Waits until no key under `prefix` created before `revision` is left.
async fn wait_for_earlier(
    endpoints: &[String],
    timeout: Duration,
    prefix: &[u8],
    revision: i64,
) -> Result<(), ClientError> {
    loop {
        // The newest of those created before this one: the one just ahead in the queue.
        let ahead = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            limit: 1,
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Create as i32,
            max_create_revision: revision - 1,
            ..Default::default()
        };
        let found = call(endpoints, timeout, |channel| {
            let ahead = ahead.clone();
            async move { KvClient::new(channel).range(ahead).await }
        })
        .await?;
        let Some(kv) = found.kvs.first() else {
            return Ok(());
        };
        let at = found.header.map_or(0, |h| h.revision);
        // A lost stream is not an answer: the loop looks again, after a pause.
        if wait_for_delete(endpoints, &kv.key, at).await.is_err() {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// Waits for a delete of `key` at revision `from` or later, on the first endpoint that takes
/// the watch; returns when it comes, or with an error when the stream ends without it.
async fn wait_for_delete(endpoints: &[String], key: &[u8], from: i64) -> Result<(), Status> {
    let mut last = Status::unavailable("no endpoint");
    for addr in endpoints {
        let Ok(channel) = lazy_channel(addr) else {
            continue;
        };
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: key.to_vec(),
                    start_revision: from,
                    ..Default::default()
                },
            )),
        };
        // The request half stays open while the watch runs.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let _ = tx.try_send(create);
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        // A member cut off from its cluster ends the watch ("no leader") instead of keeping
        // a waiter waiting for a delete it may never hear of.
        request.metadata_mut().insert(
            crate::watch::REQUIRE_LEADER_KEY,
            tonic::metadata::MetadataValue::from_static("true"),
        );
        let mut answers = match WatchClient::new(channel).watch(request).await {
            Ok(r) => r.into_inner(),
            Err(e) => {
                last = e;
                continue;
            }
        };
        loop {
            match answers.message().await {
                Ok(Some(a)) => {
                    if a.canceled {
                        return Err(Status::aborted(a.cancel_reason));
                    }
                    if a.events
                        .iter()
                        .any(|e| e.r#type == EventType::Delete as i32)
                    {
                        return Ok(());
                    }
                }
                Ok(None) => return Err(Status::unavailable("the watch ended")),
                Err(e) => return Err(e),
            }
        }
    }
    Err(last)
}

/// Releases `lock`: deletes its key.
pub async fn unlock(
    endpoints: &[String],
    timeout: Duration,
    lock: &Lock,
) -> Result<(), ClientError> {
    let delete = DeleteRangeRequest {
        key: lock.key.clone(),
        ..Default::default()
    };
    call(endpoints, timeout, |channel| {
        let delete = delete.clone();
        async move { KvClient::new(channel).delete_range(delete).await }
    })
    .await
    .map(|_| ())
}
