//! kvctl's commands over etcd's v3 KV API (`get --rev`, `txn`, `compact`): which node they go
//! to, what their failures mean, and how their answers are printed.
//!
//! **Which node.** Every member answers etcd's calls itself (a follower forwards a write to the
//! leader), so there is no leader to find: a call goes to the first endpoint of kvctl's list
//! that accepts a connection, and moves on only when one does not
//! ([`kv_api::client::on_first_reachable`], which builds its channels as the kv.v1 client
//! does). The same commands work against etcd itself.
//!
//! **Failures.** etcd's own errors are recognised by [`EtcdError::from_status`] and explained
//! with the exit status of the matching kv.v1 failure; a revision that is compacted away or not
//! yet reached has a status of its own, [`EXIT_REVISION`], so a script can tell it from the
//! rest.

use std::io::{self, Write};
use std::time::Duration;

use etcd_api::etcdserverpb::kv_client::KvClient;
use etcd_api::etcdserverpb::response_op::Response;
use etcd_api::etcdserverpb::TxnResponse;
use etcd_api::mvccpb::KeyValue;
use etcd_api::EtcdError;
use kv_api::client::{on_first_reachable, ClientError};
use kv_api::status::never_sent;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::Failure;

/// Exit status: the revision asked for has been compacted away, or the store has not reached it.
pub const EXIT_REVISION: u8 = 9;
/// Exit status of bad input (as kv.v1's).
const EXIT_INVALID: u8 = 2;
/// Exit status when the cluster cannot answer now (as kv.v1's).
const EXIT_UNAVAILABLE: u8 = 3;
/// Exit status of a write whose outcome is unknown (as kv.v1's).
const EXIT_UNKNOWN: u8 = 4;
/// Exit status of any other server error (as kv.v1's).
const EXIT_SERVER: u8 = 5;

/// What a call asked for, so that its failure can be told in its terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// A read of the store as of this revision.
    ReadAt(i64),
    /// A transaction; `writes` when a branch puts or deletes, so a lost answer leaves its
    /// outcome unknown.
    Txn { writes: bool },
    /// A compaction up to this revision.
    Compact(i64),
    /// A lease call, or a put with a lease; `writes` when it changes the store.
    Lease { writes: bool },
}

impl Call {
    fn writes(self) -> bool {
        match self {
            Call::ReadAt(_) => false,
            Call::Txn { writes } => writes,
            Call::Compact(_) => true,
            Call::Lease { writes } => writes,
        }
    }
}

/// Makes one call to etcd's KV service on the first reachable of `endpoints`, turning a
/// failure into kvctl's message and exit status.
pub async fn kv_call<T, F, Fut>(
    endpoints: &[String],
    timeout: Duration,
    what: Call,
    mut f: F,
) -> Result<T, Failure>
where
    F: FnMut(KvClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    let answer = on_first_reachable(endpoints, timeout, |channel| {
        f(KvClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    })
    .await?;
    answer.map_err(|status| explain(&status, what))
}

/// What a failed etcd call means, in words and as an exit status.
pub fn explain(status: &Status, what: Call) -> Failure {
    let msg = status.message();
    let fail = |code: u8, message: String| Failure { code, message };
    let lost = |m: String| {
        if what.writes() {
            fail(
                EXIT_UNKNOWN,
                format!("outcome unknown: the write may or may not have been applied ({m})"),
            )
        } else {
            fail(EXIT_UNAVAILABLE, format!("no answer: {m}"))
        }
    };
    use EtcdError::*;
    match EtcdError::from_status(status) {
        Some(Compacted) => fail(
            EXIT_REVISION,
            match what {
                Call::ReadAt(rev) => format!(
                    "revision {rev} has been compacted: the store keeps no history before its \
                     last compaction; ask for a later revision ({msg})"
                ),
                Call::Compact(rev) => format!(
                    "revision {rev} is not after the last compaction: there is nothing left \
                     to compact up to it ({msg})"
                ),
                Call::Txn { .. } | Call::Lease { .. } => {
                    format!("a revision has been compacted ({msg})")
                }
            },
        ),
        Some(FutureRevision) => fail(
            EXIT_REVISION,
            match what {
                Call::ReadAt(rev) | Call::Compact(rev) => format!(
                    "revision {rev} is in the future: the store has not reached it yet ({msg})"
                ),
                Call::Txn { .. } | Call::Lease { .. } => {
                    format!("a revision is in the future ({msg})")
                }
            },
        ),
        Some(KeyNotProvided) => fail(
            EXIT_INVALID,
            format!("refused: a key must not be empty ({msg})"),
        ),
        Some(TooManyOps) => fail(
            EXIT_INVALID,
            format!("refused: the txn has more compares, or more operations in one branch, than the server allows ({msg})"),
        ),
        Some(DuplicateKey) => fail(
            EXIT_INVALID,
            format!("refused: a branch puts one key twice, or puts a key it also deletes ({msg})"),
        ),
        Some(RequestTooLarge) => fail(
            EXIT_INVALID,
            format!("refused: the request is larger than the server allows ({msg})"),
        ),
        Some(ValueProvided | LeaseProvided | KeyNotFound | LeaseNotFound | LeaseExist) => {
            fail(EXIT_INVALID, format!("refused: {msg}"))
        }
        Some(LeaseTtlTooLarge) => fail(
            EXIT_INVALID,
            format!("refused: a lease's TTL may be at most 9000000000 seconds ({msg})"),
        ),
        Some(NoLeader) => fail(
            EXIT_UNAVAILABLE,
            format!("the cluster has no leader; try again once it has elected one ({msg})"),
        ),
        Some(LeaderChanged) => fail(
            EXIT_UNAVAILABLE,
            format!("the leader changed while the request was in flight; it was not applied, try again ({msg})"),
        ),
        Some(Stopped | TooManyRequests) => fail(
            EXIT_UNAVAILABLE,
            format!("the node cannot take the request now; try again ({msg})"),
        ),
        Some(Timeout | TimeoutDueToLeaderFail | TimeoutDueToConnectionLost) => lost(msg.into()),
        None if never_sent(status) => fail(
            EXIT_UNAVAILABLE,
            format!("the request could not be sent: {msg}"),
        ),
        None => match status.code() {
            Code::Unimplemented => fail(
                EXIT_SERVER,
                format!("the endpoint does not serve etcd's KV API ({msg})"),
            ),
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                fail(EXIT_INVALID, format!("refused: {msg}"))
            }
            Code::ResourceExhausted => fail(
                EXIT_UNAVAILABLE,
                format!("the node cannot take the request now; try again ({msg})"),
            ),
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => {
                lost(msg.into())
            }
            code => fail(EXIT_SERVER, format!("{code:?}: {msg}")),
        },
    }
}

/// A key's revisions as kvctl prints them: `create_revision=C mod_revision=M version=V`.
pub fn revisions(create_revision: i64, mod_revision: i64, version: i64) -> String {
    format!("create_revision={create_revision} mod_revision={mod_revision} version={version}")
}

/// Prints what `kvctl txn` answers: `SUCCESS` or `FAILURE` (with `revision=N`, the store's
/// revision after it, when `show_revisions`), then a line per operation of the branch that ran,
/// `LABEL: RESULT`, and after a `get` one `key<TAB>value` line per key (with the key's
/// revisions between them when `show_revisions`).
pub fn print_txn(
    out: &mut impl Write,
    resp: &TxnResponse,
    labels: &[String],
    show_revisions: bool,
) -> io::Result<()> {
    let outcome = if resp.succeeded { "SUCCESS" } else { "FAILURE" };
    if show_revisions {
        let rev = resp.header.as_ref().map_or(0, |h| h.revision);
        writeln!(out, "{outcome} revision={rev}")?;
    } else {
        writeln!(out, "{outcome}")?;
    }
    for (i, op) in resp.responses.iter().enumerate() {
        let label = labels.get(i).map_or("?", String::as_str);
        match &op.response {
            Some(Response::ResponsePut(_)) => writeln!(out, "{label}: OK")?,
            Some(Response::ResponseDeleteRange(d)) => {
                writeln!(out, "{label}: {} deleted", d.deleted)?
            }
            Some(Response::ResponseRange(r)) => {
                let n = r.kvs.len();
                writeln!(out, "{label}: {n} {}", if n == 1 { "key" } else { "keys" })?;
                for kv in &r.kvs {
                    print_kv(out, kv, show_revisions)?;
                }
            }
            Some(Response::ResponseTxn(_)) => writeln!(out, "{label}: a nested txn")?,
            None => writeln!(out, "{label}: no answer")?,
        }
    }
    Ok(())
}

/// One `key<TAB>value` line, with `<TAB>revisions` after the key when `show_revisions`.
fn print_kv(out: &mut impl Write, kv: &KeyValue, show_revisions: bool) -> io::Result<()> {
    out.write_all(&kv.key)?;
    if show_revisions {
        let r = revisions(kv.create_revision, kv.mod_revision, kv.version);
        write!(out, "\t{r}")?;
    }
    out.write_all(b"\t")?;
    out.write_all(&kv.value)?;
    out.write_all(b"\n")
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure {
            code: e.exit_code() as u8,
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_api::etcdserverpb::{
        DeleteRangeResponse, PutResponse, RangeResponse, ResponseHeader, ResponseOp,
    };

    #[test]
    fn revision_errors_have_their_own_exit_status_and_say_which_revision() {
        let f = explain(&EtcdError::Compacted.status(), Call::ReadAt(3));
        assert_eq!(f.code, EXIT_REVISION);
        assert!(
            f.message.starts_with("revision 3 has been compacted"),
            "{f:?}"
        );
        assert!(f.message.contains(EtcdError::Compacted.message()), "{f:?}");
        let f = explain(&EtcdError::FutureRevision.status(), Call::ReadAt(99));
        assert_eq!(f.code, EXIT_REVISION);
        assert!(
            f.message.starts_with("revision 99 is in the future"),
            "{f:?}"
        );
        let f = explain(&EtcdError::Compacted.status(), Call::Compact(2));
        assert!(f
            .message
            .starts_with("revision 2 is not after the last compaction"));
    }

    #[test]
    fn a_lost_answer_leaves_only_a_write_unknown() {
        let lost = Status::deadline_exceeded("no answer from a:1 within 10 ms");
        assert_eq!(
            explain(&lost, Call::Txn { writes: true }).code,
            EXIT_UNKNOWN
        );
        assert_eq!(explain(&lost, Call::Compact(5)).code, EXIT_UNKNOWN);
        assert_eq!(
            explain(&lost, Call::Txn { writes: false }).code,
            EXIT_UNAVAILABLE
        );
        assert_eq!(explain(&lost, Call::ReadAt(5)).code, EXIT_UNAVAILABLE);
        let timeout = EtcdError::Timeout.status();
        assert_eq!(explain(&timeout, Call::Compact(5)).code, EXIT_UNKNOWN);
    }

    #[test]
    fn other_etcd_errors_map_to_kvctls_exit_statuses() {
        for (e, code) in [
            (EtcdError::KeyNotProvided, EXIT_INVALID),
            (EtcdError::DuplicateKey, EXIT_INVALID),
            (EtcdError::TooManyOps, EXIT_INVALID),
            (EtcdError::NoLeader, EXIT_UNAVAILABLE),
            (EtcdError::LeaderChanged, EXIT_UNAVAILABLE),
            (EtcdError::TooManyRequests, EXIT_UNAVAILABLE),
        ] {
            let f = explain(&e.status(), Call::Txn { writes: true });
            assert_eq!(f.code, code, "{e:?}: {f:?}");
            assert!(f.message.contains(e.message()), "{e:?}: {f:?}");
        }
        let f = explain(&Status::unimplemented(""), Call::ReadAt(1));
        assert_eq!(f.code, EXIT_SERVER);
        assert!(f.message.contains("does not serve etcd's KV API"), "{f:?}");
    }

    #[test]
    fn a_txn_prints_its_outcome_then_each_operation() {
        let kv = |k: &str, v: &str, c, m, ver| KeyValue {
            key: k.into(),
            value: v.into(),
            create_revision: c,
            mod_revision: m,
            version: ver,
            lease: 0,
        };
        let op = |r| ResponseOp { response: Some(r) };
        let resp = TxnResponse {
            header: Some(ResponseHeader {
                revision: 7,
                ..Default::default()
            }),
            succeeded: true,
            responses: vec![
                op(Response::ResponsePut(PutResponse::default())),
                op(Response::ResponseDeleteRange(DeleteRangeResponse {
                    deleted: 2,
                    ..Default::default()
                })),
                op(Response::ResponseRange(RangeResponse {
                    kvs: vec![kv("a", "1", 2, 5, 3)],
                    ..Default::default()
                })),
                op(Response::ResponseRange(RangeResponse::default())),
            ],
        };
        let labels: Vec<String> = ["put k", "del --prefix x", "get a", "get b"]
            .map(String::from)
            .to_vec();
        let mut out = Vec::new();
        print_txn(&mut out, &resp, &labels, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "SUCCESS\nput k: OK\ndel --prefix x: 2 deleted\nget a: 1 key\na\t1\nget b: 0 keys\n"
        );
        let mut out = Vec::new();
        print_txn(&mut out, &resp, &labels, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("SUCCESS revision=7\n"), "{text}");
        assert!(
            text.contains("a\tcreate_revision=2 mod_revision=5 version=3\t1\n"),
            "{text}"
        );

        let failed = TxnResponse::default();
        let mut out = Vec::new();
        print_txn(&mut out, &failed, &[], false).unwrap();
        assert_eq!(out, b"FAILURE\n");
    }
}
