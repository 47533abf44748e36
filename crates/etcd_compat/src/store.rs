//! [`Store`]: one store under test — a real etcd, or distributed_kv — as a list of client
//! endpoints; each request goes to one of them, as the store's [`Spread`] picks, and comes
//! back as a [`Reply`].
//!
//! A linearizable request gives the same answer on every member. One a member may answer from
//! its own state (a serializable Range, or a Txn that only reads serializably or not at all)
//! may lag behind; before sending one to a store of several members, the store waits, by
//! polling that member with serializable Ranges, until it has reached the highest revision the
//! store has shown so far. The comparison then stays exact while serializable reads are still
//! sent to followers.

use std::time::{Duration, Instant};

use etcd_api::etcdserverpb::kv_client::KvClient;
use etcd_api::etcdserverpb::{
    request_op, CompactionResponse, DeleteRangeResponse, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, TxnRequest, TxnResponse,
};
use kv_harness::HarnessError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::gen::Op;
use crate::perturb::Perturb;

/// Deadline of one request to one member.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dialling one member may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a member may take to reach the store's revision before a request it may answer
/// from its own state.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two catch-up probes of a member.
pub const CATCH_UP_POLL: Duration = Duration::from_millis(5);
/// Largest response accepted, in bytes (tonic's default is 4 MiB; etcd sends up to 2 GiB).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// To a Range.
    Range(RangeResponse),
    /// To a Put.
    Put(PutResponse),
    /// To a DeleteRange.
    DeleteRange(DeleteRangeResponse),
    /// To a Txn.
    Txn(TxnResponse),
    /// To a Compact.
    Compact(CompactionResponse),
}

impl Answer {
    /// Its top-level header.
    pub fn header(&self) -> Option<&ResponseHeader> {
        match self {
            Answer::Range(r) => r.header.as_ref(),
            Answer::Put(r) => r.header.as_ref(),
            Answer::DeleteRange(r) => r.header.as_ref(),
            Answer::Txn(r) => r.header.as_ref(),
            Answer::Compact(r) => r.header.as_ref(),
        }
    }

    /// The revision its header gives (0 without a header).
    pub fn revision(&self) -> i64 {
        self.header().map_or(0, |h| h.revision)
    }

    /// The header, for changing it.
    pub fn header_mut(&mut self) -> Option<&mut ResponseHeader> {
        match self {
            Answer::Range(r) => r.header.as_mut(),
            Answer::Put(r) => r.header.as_mut(),
            Answer::DeleteRange(r) => r.header.as_mut(),
            Answer::Txn(r) => r.header.as_mut(),
            Answer::Compact(r) => r.header.as_mut(),
        }
    }
}

/// A failed call: the gRPC status's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The gRPC code.
    pub code: Code,
    /// The message, exactly.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Failure {
        Failure {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

/// What a store answered.
pub type Reply = Result<Answer, Failure>;

/// How a store's requests are spread over its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// Every request to the first endpoint.
    First,
    /// Endpoint after endpoint.
    RoundRobin,
    /// A random endpoint per request, from the store's seeded generator.
    Random,
}

/// Whether a member may answer `op` from its own state, without agreeing with the others.
pub fn may_be_served_locally(op: &Op) -> bool {
    match op {
        Op::Range(r) => r.serializable,
        Op::Txn(t) => txn_reads_locally(t),
        _ => false,
    }
}

/// A Txn only of serializable Ranges (or of no ops at all), which etcd answers from the
/// member's own state.
fn txn_reads_locally(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).all(
        |op| matches!(&op.request, Some(request_op::Request::RequestRange(r)) if r.serializable),
    )
}

/// One store under test (see the module doc).
pub struct Store {
    /// What it is, in reports.
    name: String,
    /// Its members' client addresses and clients.
    members: Vec<(String, KvClient<Channel>)>,
    /// How requests are spread over the members.
    spread: Spread,
    /// Picks members for [`Spread::Random`].
    rng: StdRng,
    /// The member the next [`Spread::RoundRobin`] request goes to.
    next: usize,
    /// The highest header revision the store has answered with.
    revision: i64,
    /// A deliberately wrong answer to make, and the op index it was made at.
    perturb: Option<(Perturb, usize)>,
    /// The index of the op whose reply was perturbed.
    perturbed_at: Option<usize>,
}

impl Store {
    /// Dials every endpoint (`host:port`) of a store named `name`; requests go to them as
    /// `spread` picks, random picks drawn from `seed`.
    pub async fn connect(
        name: impl Into<String>,
        endpoints: &[String],
        spread: Spread,
        seed: u64,
    ) -> Result<Store, HarnessError> {
        let name = name.into();
        if endpoints.is_empty() {
            return Err(kv_harness::harness_error!("store {name} has no endpoints"));
        }
        let mut members = Vec::new();
        for addr in endpoints {
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| kv_harness::harness_error!("store {name}: {addr}: {e}"))?
                .connect_timeout(CONNECT_TIMEOUT);
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| kv_harness::harness_error!("store {name}: cannot dial {addr}: {e}"))?;
            let client = KvClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
            members.push((addr.clone(), client));
        }
        Ok(Store {
            name,
            members,
            spread,
            rng: StdRng::seed_from_u64(seed),
            next: 0,
            revision: 0,
            perturb: None,
            perturbed_at: None,
        })
    }

    /// From op `from` on, alter the first reply `perturb` applies to (see [`Perturb`]).
    pub fn perturb(&mut self, perturb: Perturb, from: usize) {
        self.perturb = Some((perturb, from));
        self.perturbed_at = None;
    }

    /// The index of the op whose reply was perturbed, once one was.
    pub fn perturbed_at(&self) -> Option<usize> {
        self.perturbed_at
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its endpoints, in the order given.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|(a, _)| a.clone()).collect()
    }

    /// The member the next request goes to.
    fn pick(&mut self) -> usize {
        let n = self.members.len();
        match self.spread {
            Spread::First => 0,
            Spread::RoundRobin => {
                let i = self.next % n;
                self.next = (i + 1) % n;
                i
            }
            Spread::Random => self.rng.gen_range(0..n),
        }
    }

    /// Sends op number `index` to the next member; returns that member's address and its reply
    /// (perturbed, if this is the reply to perturb).
    pub async fn send(&mut self, index: usize, op: &Op) -> (String, Reply) {
        let member = self.pick();
        let addr = self.members[member].0.clone();
        let mut reply = match self.catch_up(member, op).await {
            Ok(()) => self.call(member, op).await,
            Err(failure) => Err(failure),
        };
        if let Ok(answer) = &reply {
            self.revision = self.revision.max(answer.revision());
        }
        if let Some((perturb, from)) = self.perturb {
            if index >= from && self.perturbed_at.is_none() && perturb.apply(&mut reply) {
                self.perturbed_at = Some(index);
            }
        }
        (addr, reply)
    }

    /// Before an op the member may answer from its own state, waits until it has reached the
    /// store's revision (see the module doc).
    async fn catch_up(&mut self, member: usize, op: &Op) -> Result<(), Failure> {
        if self.members.len() < 2 || !may_be_served_locally(op) {
            return Ok(());
        }
        let probe = RangeRequest {
            key: etcd_api::range::FROM_KEY.to_vec(),
            range_end: etcd_api::range::FROM_KEY.to_vec(),
            count_only: true,
            serializable: true,
            ..RangeRequest::default()
        };
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        let mut seen = 0;
        loop {
            if let Ok(Answer::Range(r)) = self.call(member, &Op::Range(probe.clone())).await {
                seen = r.header.map_or(0, |h| h.revision);
                if seen >= self.revision {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(Failure {
                    code: Code::DeadlineExceeded,
                    message: format!(
                        "compat runner: member {} of {} was still at revision {seen}, not {}, \
                         after {CATCH_UP_TIMEOUT:?}",
                        self.members[member].0, self.name, self.revision
                    ),
                });
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
    }

    /// One call to one member, under [`REQUEST_TIMEOUT`].
    async fn call(&mut self, member: usize, op: &Op) -> Reply {
        fn request<T>(message: T) -> tonic::Request<T> {
            let mut request = tonic::Request::new(message);
            request.set_timeout(REQUEST_TIMEOUT);
            request
        }
        let client = &mut self.members[member].1;
        let result = match op.clone() {
            Op::Range(r) => client
                .range(request(r))
                .await
                .map(|a| Answer::Range(a.into_inner())),
            Op::Put(p) => client
                .put(request(p))
                .await
                .map(|a| Answer::Put(a.into_inner())),
            Op::DeleteRange(d) => client
                .delete_range(request(d))
                .await
                .map(|a| Answer::DeleteRange(a.into_inner())),
            Op::Txn(t) => client
                .txn(request(t))
                .await
                .map(|a| Answer::Txn(a.into_inner())),
            Op::Compact(c) => client
                .compact(request(c))
                .await
                .map(|a| Answer::Compact(a.into_inner())),
        };
        result.map_err(Failure::from)
    }
}
