//! The compare-and-set workload over etcd's v3 KV API ([`Workload::EtcdCas`]).
//!
//! Each client sends every request to a member picked at random, never following the leader:
//! etcd's clients do not follow redirects, so any member must answer — a follower forwards a
//! write to the leader, and asks the leader for a read index before a linearizable read. What a
//! client does, over a few contended keys, every value it writes unique:
//!
//! - a linearizable Range (`serializable = false`) of one key, recorded as a Get;
//! - a compare-and-set as one Txn: compare the key's value with the value the client last saw
//!   (for "absent": `create_revision = 0`), on success put a new value, on failure Range the key,
//!   so a failed one also says what the key held instead; recorded as a Cas;
//! - the same, comparing the `mod_revision` a Range just saw (the Range is a Get of its own).
//!   Every value is written at most once, so a revision names the one write that put the value
//!   there, and comparing the revision is comparing the value read with it: recorded as a Cas
//!   expecting that value (its `mod_revision` says what was sent), which keeps the checker's
//!   register free of revisions;
//! - now and then a DeleteRange, recorded as a Delete, so keys become absent again.
//!
//! A write's failure is an outcome only when it certainly did not take effect
//! ([`write_outcome`]); anything else is unknown, which is always safe: an unknown write may
//! or may not have happened, and the checker tries both.
//!
//! [`Workload::EtcdCas`]: crate::runner::Workload::EtcdCas

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_api::etcdserverpb::kv_client::KvClient;
use etcd_api::etcdserverpb::request_op::Request;
use etcd_api::etcdserverpb::response_op::Response;
use etcd_api::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use etcd_api::mvccpb::KeyValue;
use etcd_api::EtcdError;
use rand::rngs::StdRng;
use rand::Rng;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::history::{OpKind, OpResult, Operation, Outcome, Seen};
use crate::runner::{key_name, Recorder};

/// Percent of operations that are linearizable Range reads.
const READ_PERCENT: u32 = 40;
/// Percent of operations that are DeleteRanges (the rest are compare-and-sets).
const DELETE_PERCENT: u32 = 10;
/// Percent of the compare-and-sets that compare the `mod_revision` a read just saw (the rest
/// compare the value the client last saw).
const REVISION_CAS_PERCENT: u32 = 50;
/// How long a client waits for a TCP connection to a member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One client's connections: a lazily connected channel to every member's client port (a
/// channel reconnects by itself after a member restarts).
pub(crate) struct Members {
    clients: Vec<KvClient<Channel>>,
    /// One request's deadline.
    timeout: Duration,
}

impl Members {
    /// Channels to these client addresses; nothing connects until the first request.
    pub(crate) fn new(endpoints: &[String], timeout: Duration) -> Result<Members, String> {
        let clients = endpoints
            .iter()
            .map(|addr| {
                let channel = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| format!("endpoint {addr}: {e}"))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .connect_lazy();
                Ok(KvClient::new(channel))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if clients.is_empty() {
            return Err("no members to talk to".into());
        }
        Ok(Members { clients, timeout })
    }

    /// A member picked at random.
    fn any(&mut self, rng: &mut StdRng) -> &mut KvClient<Channel> {
        let i = rng.gen_range(0..self.clients.len());
        &mut self.clients[i]
    }
}

/// A request with the deadline on it (so the member stops waiting too).
fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(timeout);
    r
}

/// Runs `call` with at most `timeout` to answer; a deadline passed here is a
/// `DEADLINE_EXCEEDED` status without any of etcd's texts (so its outcome is unknown).
async fn within<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded("the client's deadline passed")),
    }
}

/// A linearizable Range of `key`: the key-value, or `None` when absent.
async fn range(
    client: &mut KvClient<Channel>,
    key: &[u8],
    timeout: Duration,
) -> Result<Option<KeyValue>, Status> {
    let req = RangeRequest {
        key: key.to_vec(),
        serializable: false,
        ..Default::default()
    };
    let r = within(timeout, client.range(request(req, timeout))).await?;
    Ok(r.kvs.into_iter().find(|kv| kv.key == key))
}

/// The Txn of a compare-and-set of `key` to `new`: compare the key's `mod_revision` with
/// `mod_revision` when given, else its value with `expect`; `expect = None` compares
/// `create_revision = 0` ("absent", etcd's idiom: a missing key compares as zeros) whatever
/// `mod_revision` says. On failure it reads the key, to say what it held.
pub fn cas_txn(
    key: &[u8],
    expect: Option<&[u8]>,
    mod_revision: Option<u64>,
    new: &[u8],
) -> TxnRequest {
    let (target, union) = match (expect, mod_revision) {
        (None, _) => (CompareTarget::Create, TargetUnion::CreateRevision(0)),
        (Some(_), Some(revision)) => (
            CompareTarget::Mod,
            TargetUnion::ModRevision(i64::try_from(revision).unwrap_or(i64::MAX)),
        ),
        (Some(value), None) => (CompareTarget::Value, TargetUnion::Value(value.to_vec())),
    };
    TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: target as i32,
            key: key.to_vec(),
            target_union: Some(union),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.to_vec(),
                value: new.to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: key.to_vec(),
                ..Default::default()
            })),
        }],
    }
}

/// A compare-and-set's answer from its Txn's: whether the compare held, and for a failed one
/// what the failure branch's Range of `key` found (`None` if it answered no Range).
pub fn cas_answer(key: &[u8], response: &TxnResponse) -> OpResult {
    if response.succeeded {
        return OpResult::Cas {
            succeeded: true,
            current: None,
        };
    }
    let current = response
        .responses
        .iter()
        .find_map(|op| match &op.response {
            Some(Response::ResponseRange(r)) => Some(r),
            _ => None,
        })
        .map(|r| Seen {
            value: r
                .kvs
                .iter()
                .find(|kv| kv.key == key)
                .map(|kv| kv.value.clone()),
        });
    OpResult::Cas {
        succeeded: false,
        current,
    }
}

/// What a failed write tells about its fate: [`Outcome::Fail`] only when it certainly did not
/// take effect, else [`Outcome::Unknown`].
///
/// Certain: the request never left this process (`kv_api::status::never_sent`: no connection
/// could be made, or it was dropped unsent); an `INVALID_ARGUMENT` (refused before it was
/// proposed, or applied as nothing, alike on every replica); and the etcd errors that the
/// member says mean "not applied" ([`etcd_error_not_applied`]). Everything else — a deadline
/// (the client's or the member's), a broken connection after sending, a leader that failed
/// or a connection to it lost while a forwarded write was in flight, a member stopping, an
/// internal error, a status this version does not know — may have been applied.
pub fn write_outcome(status: &Status) -> Outcome {
    if kv_api::status::never_sent(status) {
        return Outcome::Fail;
    }
    let not_applied = match EtcdError::from_status(status) {
        Some(e) => etcd_error_not_applied(e),
        None => status.code() == Code::InvalidArgument,
    };
    if not_applied {
        Outcome::Fail
    } else {
        Outcome::Unknown
    }
}

/// Whether a write answered with this etcd error certainly did not take effect, as our members
/// send them (`src/grpc/etcd.rs`, `status_of`, and the forwarder): "no leader" is sent by a
/// member that knows no leader (nothing proposed) or could not reach the leader to forward to;
/// "leader changed" by one that is not the leader (a forwarded write arriving after the leader
/// moved: nothing proposed) or whose proposal another entry replaced in the log (it can never
/// apply); "too many requests" before proposing, for a full queue. The request checks and
/// the state checks made when applying change nothing. The timeouts and "server stopped" are
/// sent once a write may have been proposed. (A new variant must be placed here by hand.)
pub fn etcd_error_not_applied(e: EtcdError) -> bool {
    match e {
        EtcdError::KeyNotProvided
        | EtcdError::ValueProvided
        | EtcdError::LeaseProvided
        | EtcdError::KeyNotFound
        | EtcdError::TooManyOps
        | EtcdError::DuplicateKey
        | EtcdError::Compacted
        | EtcdError::FutureRevision
        | EtcdError::RequestTooLarge
        | EtcdError::LeaseNotFound
        | EtcdError::LeaseExist
        | EtcdError::LeaseTtlTooLarge
        | EtcdError::NoLeader
        | EtcdError::LeaderChanged
        | EtcdError::TooManyRequests => true,
        EtcdError::Timeout
        | EtcdError::TimeoutDueToLeaderFail
        | EtcdError::TimeoutDueToConnectionLost
        | EtcdError::Stopped => false,
    }
}

/// What one client needs: where it records, whom it talks to, what it may touch.
pub(crate) struct EtcdClient {
    pub(crate) rec: Recorder,
    pub(crate) members: Members,
    /// The client's number, also its process id in the history.
    pub(crate) client: u64,
    /// Its first operation id; it numbers its operations from there.
    pub(crate) first_id: u64,
    /// Distinct keys.
    pub(crate) keys: usize,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) rng: StdRng,
}

impl EtcdClient {
    /// Runs operations until told to stop.
    pub(crate) async fn run(mut self) {
        // What this client last learned each key held: the value its compare-and-sets by
        // value expect (absent when it knows nothing).
        let mut known: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let key = key_name(self.rng.gen_range(0..self.keys));
            let roll = self.rng.gen_range(0..100);
            if roll < READ_PERCENT {
                if let Ok(kv) = self.get(&mut n, &key).await {
                    known.insert(key, kv.map(|kv| kv.value));
                }
            } else if roll < READ_PERCENT + DELETE_PERCENT {
                self.delete(&mut n, &key, &mut known).await;
            } else {
                let new = format!("c{}-{n}", self.client).into_bytes();
                if self.rng.gen_range(0..100) < REVISION_CAS_PERCENT {
                    // Read, then compare on the revision the read saw.
                    let Ok(kv) = self.get(&mut n, &key).await else {
                        continue;
                    };
                    let (expect, revision) = match kv {
                        // A present key's revision is positive; were it not, comparing it
                        // would not name one write, so the value is compared instead.
                        Some(kv) => (
                            Some(kv.value),
                            u64::try_from(kv.mod_revision).ok().filter(|r| *r > 0),
                        ),
                        None => (None, None),
                    };
                    self.cas(&mut n, &key, expect, revision, new, &mut known)
                        .await;
                } else {
                    let expect = known.get(&key).cloned().flatten();
                    self.cas(&mut n, &key, expect, None, new, &mut known).await;
                }
            }
        }
    }

    /// The next operation id.
    fn next_id(&self, n: &mut u64) -> u64 {
        let id = self.first_id + *n;
        *n += 1;
        id
    }

    /// Records one operation that ran from `invoke` until now.
    fn record(&self, id: u64, key: &[u8], kind: OpKind, invoke: u64, outcome: Outcome) {
        self.rec.op(Operation {
            id,
            client: self.client,
            key: key.to_vec(),
            kind,
            invoke,
            complete: Some(self.rec.now()),
            outcome,
        });
    }

    /// A linearizable read of `key` from a random member, recorded; a read that failed
    /// changed nothing, so it is a [`Outcome::Fail`].
    async fn get(&mut self, n: &mut u64, key: &[u8]) -> Result<Option<KeyValue>, Status> {
        let id = self.next_id(n);
        let timeout = self.members.timeout;
        let invoke = self.rec.now();
        let r = range(self.members.any(&mut self.rng), key, timeout).await;
        let outcome = match &r {
            Ok(kv) => Outcome::Ok(OpResult::Read(kv.as_ref().map(|kv| kv.value.clone()))),
            Err(_) => Outcome::Fail,
        };
        self.record(id, key, OpKind::Get, invoke, outcome);
        r
    }

    /// A DeleteRange of `key` through a random member, recorded.
    async fn delete(
        &mut self,
        n: &mut u64,
        key: &[u8],
        known: &mut HashMap<Vec<u8>, Option<Vec<u8>>>,
    ) {
        let id = self.next_id(n);
        let timeout = self.members.timeout;
        let req = DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let invoke = self.rec.now();
        let client = self.members.any(&mut self.rng);
        let outcome = match within(timeout, client.delete_range(request(req, timeout))).await {
            Ok(r) => {
                known.insert(key.to_vec(), None);
                Outcome::Ok(OpResult::Deleted {
                    existed: r.deleted > 0,
                })
            }
            Err(status) => write_outcome(&status),
        };
        self.record(id, key, OpKind::Delete, invoke, outcome);
    }

    /// A compare-and-set of `key` through a random member, recorded; what it learns of the
    /// key goes into `known`.
    async fn cas(
        &mut self,
        n: &mut u64,
        key: &[u8],
        expect: Option<Vec<u8>>,
        mod_revision: Option<u64>,
        new: Vec<u8>,
        known: &mut HashMap<Vec<u8>, Option<Vec<u8>>>,
    ) {
        let id = self.next_id(n);
        let timeout = self.members.timeout;
        let req = cas_txn(key, expect.as_deref(), mod_revision, &new);
        let invoke = self.rec.now();
        let client = self.members.any(&mut self.rng);
        let outcome = match within(timeout, client.txn(request(req, timeout))).await {
            Ok(r) => {
                let answer = cas_answer(key, &r);
                match &answer {
                    OpResult::Cas {
                        succeeded: true, ..
                    } => {
                        known.insert(key.to_vec(), Some(new.clone()));
                    }
                    OpResult::Cas {
                        current: Some(Seen { value }),
                        ..
                    } => {
                        known.insert(key.to_vec(), value.clone());
                    }
                    _ => {}
                }
                Outcome::Ok(answer)
            }
            Err(status) => write_outcome(&status),
        };
        let kind = OpKind::Cas {
            expect,
            new,
            mod_revision,
        };
        self.record(id, key, kind, invoke, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_api::etcdserverpb::{RangeResponse, ResponseOp};

    /// Proves the outcome table: only the failures that prove a write was not applied are
    /// `Fail`; deadlines, lost connections, a failed leader and unknown statuses are `Unknown`.
    #[test]
    fn only_certain_failures_are_fail() {
        for e in EtcdError::ALL {
            let expected = match e {
                EtcdError::Timeout
                | EtcdError::TimeoutDueToLeaderFail
                | EtcdError::TimeoutDueToConnectionLost
                | EtcdError::Stopped => Outcome::Unknown,
                _ => Outcome::Fail,
            };
            assert_eq!(write_outcome(&e.status()), expected, "{e:?}");
        }
        for (status, expected) in [
            (
                Status::invalid_argument("key must not be empty"),
                Outcome::Fail,
            ),
            (
                Status::deadline_exceeded("the client's deadline passed"),
                Outcome::Unknown,
            ),
            (Status::unavailable("transport error"), Outcome::Unknown),
            (
                Status::cancelled("operation was canceled"),
                Outcome::Unknown,
            ),
            (Status::internal("disk"), Outcome::Unknown),
            (Status::unknown("h2 protocol error"), Outcome::Unknown),
            // etcd's code with another text is not etcd's error: not recognised, unknown.
            (
                Status::unavailable("etcdserver: no leader."),
                Outcome::Unknown,
            ),
        ] {
            assert_eq!(write_outcome(&status), expected, "{status:?}");
        }
    }

    /// Proves a write to a port nobody listens on is `Fail`: it was never sent.
    #[tokio::test]
    async fn a_refused_connection_is_fail() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let mut members =
            Members::new(&[addr.to_string()], Duration::from_secs(5)).expect("members");
        let client = &mut members.clients[0];
        let req = cas_txn(b"k", None, None, b"v");
        let status = within(
            Duration::from_secs(5),
            client.txn(request(req, Duration::from_secs(5))),
        )
        .await
        .expect_err("nothing listens there");
        assert_eq!(write_outcome(&status), Outcome::Fail, "{status:?}");
    }

    /// Proves the Txn compares what the history says it compares.
    #[test]
    fn cas_txns_compare_value_absence_or_revision() {
        let compare = |t: &TxnRequest| {
            let c = &t.compare[0];
            (c.target, c.result, c.target_union.clone())
        };
        let eq = CompareResult::Equal as i32;
        assert_eq!(
            compare(&cas_txn(b"k", Some(b"a"), None, b"b")),
            (
                CompareTarget::Value as i32,
                eq,
                Some(TargetUnion::Value(b"a".to_vec()))
            )
        );
        assert_eq!(
            compare(&cas_txn(b"k", None, None, b"b")),
            (
                CompareTarget::Create as i32,
                eq,
                Some(TargetUnion::CreateRevision(0))
            )
        );
        assert_eq!(
            compare(&cas_txn(b"k", Some(b"a"), Some(7), b"b")),
            (
                CompareTarget::Mod as i32,
                eq,
                Some(TargetUnion::ModRevision(7))
            )
        );
        let t = cas_txn(b"k", None, Some(7), b"b");
        assert_eq!(compare(&t).0, CompareTarget::Create as i32, "absent wins");
        assert!(matches!(
            &t.success[0].request,
            Some(Request::RequestPut(p)) if p.key == b"k" && p.value == b"b"
        ));
        assert!(matches!(
            &t.failure[0].request,
            Some(Request::RequestRange(r)) if r.key == b"k"
        ));
    }

    /// Proves a failed Txn's Range becomes the CAS's `current`, absent included.
    #[test]
    fn failed_cas_reports_what_the_key_held() {
        let failed = |kvs: Vec<KeyValue>| TxnResponse {
            succeeded: false,
            responses: vec![ResponseOp {
                response: Some(Response::ResponseRange(RangeResponse {
                    kvs,
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: b"x".to_vec(),
            ..Default::default()
        };
        assert_eq!(
            cas_answer(b"k", &failed(vec![kv])),
            OpResult::Cas {
                succeeded: false,
                current: Some(Seen {
                    value: Some(b"x".to_vec())
                })
            }
        );
        assert_eq!(
            cas_answer(b"k", &failed(vec![])),
            OpResult::Cas {
                succeeded: false,
                current: Some(Seen { value: None })
            }
        );
        let succeeded = TxnResponse {
            succeeded: true,
            ..Default::default()
        };
        assert_eq!(
            cas_answer(b"k", &succeeded),
            OpResult::Cas {
                succeeded: true,
                current: None
            }
        );
        assert_eq!(
            cas_answer(b"k", &TxnResponse::default()),
            OpResult::Cas {
                succeeded: false,
                current: None
            }
        );
    }
}
