//! [`Perturb`]: deliberately wrong answers, made on purpose by a [`Store`](crate::Store) to
//! its own replies, so a test can show that the comparer catches each kind of mistake a store
//! could make (the comparer's teeth). Each applies to the first reply it fits, at or after the
//! op index the store is given, and the store records that index.

use etcd_api::etcdserverpb::response_op;
use tonic::Code;

use crate::store::{Answer, Reply};

/// A deliberately wrong answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perturb {
    /// A successful reply's header revision, one higher.
    RevisionOffByOne,
    /// A Range reply with key-values, its last one dropped.
    DropKv,
    /// A Range reply's `count`, one higher.
    WrongCount,
    /// A Range reply with more than one key-value, its first two swapped.
    SwapKvs,
    /// A Range reply with a key-value, its `version` one higher.
    WrongVersion,
    /// An error's message, with a full stop added.
    ErrorMessage,
    /// An error's code, changed to `UNKNOWN`.
    ErrorCode,
    /// A Put reply with a `prev_kv`, without it.
    DropPrevKv,
    /// A Txn reply's `succeeded`, flipped.
    FlipSucceeded,
    /// A Txn reply with a nested Range answer that has key-values, the first one's
    /// `mod_revision` one higher.
    NestedModRevision,
    /// A DeleteRange reply that deleted something, `deleted` one lower.
    WrongDeleted,
    /// A success turned into an `UNAVAILABLE` error.
    SpuriousError,
}

impl Perturb {
    /// Every kind, for tests that walk them.
    pub const ALL: [Perturb; 12] = [
        Perturb::RevisionOffByOne,
        Perturb::DropKv,
        Perturb::WrongCount,
        Perturb::SwapKvs,
        Perturb::WrongVersion,
        Perturb::ErrorMessage,
        Perturb::ErrorCode,
        Perturb::DropPrevKv,
        Perturb::FlipSucceeded,
        Perturb::NestedModRevision,
        Perturb::WrongDeleted,
        Perturb::SpuriousError,
    ];

    /// Alters `reply` if this perturbation fits it; whether it did.
    pub fn apply(self, reply: &mut Reply) -> bool {
        match (self, reply) {
            (Perturb::ErrorMessage, Err(f)) => {
                f.message.push('.');
                true
            }
            (Perturb::ErrorCode, Err(f)) => {
                f.code = Code::Unknown;
                true
            }
            (Perturb::SpuriousError, reply @ Ok(_)) => {
                *reply = Err(crate::store::Failure {
                    code: Code::Unavailable,
                    message: "etcdserver: request timed out".into(),
                });
                true
            }
            (_, Err(_)) => false,
            (perturb, Ok(answer)) => perturb.apply_to_answer(answer),
        }
    }

    fn apply_to_answer(self, answer: &mut Answer) -> bool {
        match (self, answer) {
            (Perturb::RevisionOffByOne, answer) => match answer.header_mut() {
                Some(h) => {
                    h.revision += 1;
                    true
                }
                None => false,
            },
            (Perturb::DropKv, Answer::Range(r)) => r.kvs.pop().is_some(),
            (Perturb::WrongCount, Answer::Range(r)) => {
                r.count += 1;
                true
            }
            (Perturb::SwapKvs, Answer::Range(r)) if r.kvs.len() > 1 => {
                r.kvs.swap(0, 1);
                true
            }
            (Perturb::WrongVersion, Answer::Range(r)) => match r.kvs.first_mut() {
                Some(kv) => {
                    kv.version += 1;
                    true
                }
                None => false,
            },
            (Perturb::DropPrevKv, Answer::Put(p)) => p.prev_kv.take().is_some(),
            (Perturb::FlipSucceeded, Answer::Txn(t)) => {
                t.succeeded = !t.succeeded;
                true
            }
            (Perturb::NestedModRevision, Answer::Txn(t)) => {
                let nested = t
                    .responses
                    .iter_mut()
                    .find_map(|op| match &mut op.response {
                        Some(response_op::Response::ResponseRange(r)) => r.kvs.first_mut(),
                        _ => None,
                    });
                match nested {
                    Some(kv) => {
                        kv.mod_revision += 1;
                        true
                    }
                    None => false,
                }
            }
            (Perturb::WrongDeleted, Answer::DeleteRange(d)) if d.deleted > 0 => {
                d.deleted -= 1;
                true
            }
            _ => false,
        }
    }

    /// How the path of the field the comparer names for this perturbation must end.
    pub fn expected_path_end(self) -> &'static str {
        match self {
            Perturb::RevisionOffByOne => "header.revision",
            Perturb::DropKv => "]",
            Perturb::WrongCount => "count",
            Perturb::SwapKvs => "kvs[0].key",
            Perturb::WrongVersion => "kvs[0].version",
            Perturb::ErrorMessage => "error.message",
            Perturb::ErrorCode => "error.code",
            Perturb::DropPrevKv => "prev_kv",
            Perturb::FlipSucceeded => "succeeded",
            Perturb::NestedModRevision => "response_range.kvs[0].mod_revision",
            Perturb::WrongDeleted => "deleted",
            Perturb::SpuriousError => "outcome",
        }
    }
}
