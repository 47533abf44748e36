//! [`first_difference`]: the field-by-field comparer of two stores' replies to one request.
//!
//! What is compared:
//! - a header's presence and its `revision` — not `cluster_id`, `member_id` or `raft_term`,
//!   which differ between two stores by nature;
//! - every field of every key-value (key, value, create and mod revision, version, lease), in
//!   order, in `kvs`, `prev_kv` and `prev_kvs`;
//! - `count`, `more`, `deleted`, `succeeded`, and each nested response of a Txn, recursively,
//!   including which kind of response it is;
//! - for a failed call, the gRPC code and the exact message (etcd's clients recognise errors
//!   by their text).
//!
//! The first difference found is reported as a [`Difference`]: the path of the field, in the
//! protobuf field names etcd's JSON uses (`txn.responses[1].response_range.kvs[0].version`),
//! and both values.

use std::fmt::Debug;

use etcd_api::etcdserverpb::{
    response_op, DeleteRangeResponse, PutResponse, RangeResponse, ResponseHeader, ResponseOp,
    TxnResponse,
};
use etcd_api::mvccpb::KeyValue;

use crate::show;
use crate::store::{Answer, Reply};

/// The first field in which two replies differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Where: `range.kvs[2].mod_revision`, `error.message`, `outcome`, ...
    pub path: String,
    /// The left store's value there.
    pub left: String,
    /// The right store's value there.
    pub right: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {} vs {}", self.path, self.left, self.right)
    }
}

/// Ok while no difference has been found.
type Walk = Result<(), Difference>;

fn differ(path: &str, left: String, right: String) -> Walk {
    Err(Difference {
        path: path.to_string(),
        left,
        right,
    })
}

fn same<T: PartialEq + Debug>(path: &str, left: &T, right: &T) -> Walk {
    if left == right {
        Ok(())
    } else {
        differ(path, format!("{left:?}"), format!("{right:?}"))
    }
}

fn same_bytes(path: &str, left: &[u8], right: &[u8]) -> Walk {
    if left == right {
        Ok(())
    } else {
        differ(path, show::bytes(left), show::bytes(right))
    }
}

/// The first difference between two replies, or `None` when they agree.
pub fn first_difference(left: &Reply, right: &Reply) -> Option<Difference> {
    reply(left, right).err()
}

/// A reply in a few words, for the `outcome` difference.
fn outcome(reply: &Reply) -> String {
    match reply {
        Ok(answer) => format!("ok ({})", kind(answer)),
        Err(failure) => format!("error ({failure})"),
    }
}

fn kind(answer: &Answer) -> &'static str {
    match answer {
        Answer::Range(_) => "range",
        Answer::Put(_) => "put",
        Answer::DeleteRange(_) => "delete_range",
        Answer::Txn(_) => "txn",
        Answer::Compact(_) => "compact",
    }
}

fn reply(left: &Reply, right: &Reply) -> Walk {
    match (left, right) {
        (Err(l), Err(r)) => {
            same("error.code", &l.code, &r.code)?;
            same("error.message", &l.message, &r.message)
        }
        (Ok(l), Ok(r)) => match (l, r) {
            (Answer::Range(l), Answer::Range(r)) => range("range", l, r),
            (Answer::Put(l), Answer::Put(r)) => put("put", l, r),
            (Answer::DeleteRange(l), Answer::DeleteRange(r)) => delete("delete_range", l, r),
            (Answer::Txn(l), Answer::Txn(r)) => txn("txn", l, r),
            (Answer::Compact(l), Answer::Compact(r)) => {
                header("compact.header", &l.header, &r.header)
            }
            _ => differ("outcome", outcome(left), outcome(right)),
        },
        _ => differ("outcome", outcome(left), outcome(right)),
    }
}

fn header(path: &str, left: &Option<ResponseHeader>, right: &Option<ResponseHeader>) -> Walk {
    match (left, right) {
        (None, None) => Ok(()),
        (Some(l), Some(r)) => same(&format!("{path}.revision"), &l.revision, &r.revision),
        (l, r) => {
            let shown = |h: &Option<ResponseHeader>| {
                h.as_ref()
                    .map_or("absent".to_string(), |h| format!("revision {}", h.revision))
            };
            differ(path, shown(l), shown(r))
        }
    }
}

fn kv(path: &str, left: &KeyValue, right: &KeyValue) -> Walk {
    same_bytes(&format!("{path}.key"), &left.key, &right.key)?;
    same_bytes(&format!("{path}.value"), &left.value, &right.value)?;
    same(
        &format!("{path}.create_revision"),
        &left.create_revision,
        &right.create_revision,
    )?;
    same(
        &format!("{path}.mod_revision"),
        &left.mod_revision,
        &right.mod_revision,
    )?;
    same(&format!("{path}.version"), &left.version, &right.version)?;
    same(&format!("{path}.lease"), &left.lease, &right.lease)
}

fn optional_kv(path: &str, left: &Option<KeyValue>, right: &Option<KeyValue>) -> Walk {
    match (left, right) {
        (None, None) => Ok(()),
        (Some(l), Some(r)) => kv(path, l, r),
        (l, r) => {
            let shown = |x: &Option<KeyValue>| x.as_ref().map_or("absent".into(), show::kv);
            differ(path, shown(l), shown(r))
        }
    }
}

fn kvs(path: &str, left: &[KeyValue], right: &[KeyValue]) -> Walk {
    for i in 0..left.len().max(right.len()) {
        let at = format!("{path}[{i}]");
        match (left.get(i), right.get(i)) {
            (Some(l), Some(r)) => kv(&at, l, r)?,
            (l, r) => {
                let shown = |x: Option<&KeyValue>, all: &[KeyValue]| {
                    x.map_or(format!("absent (only {} kvs)", all.len()), show::kv)
                };
                return differ(&at, shown(l, left), shown(r, right));
            }
        }
    }
    Ok(())
}

fn range(path: &str, left: &RangeResponse, right: &RangeResponse) -> Walk {
    header(&format!("{path}.header"), &left.header, &right.header)?;
    kvs(&format!("{path}.kvs"), &left.kvs, &right.kvs)?;
    same(&format!("{path}.more"), &left.more, &right.more)?;
    same(&format!("{path}.count"), &left.count, &right.count)
}

fn put(path: &str, left: &PutResponse, right: &PutResponse) -> Walk {
    header(&format!("{path}.header"), &left.header, &right.header)?;
    optional_kv(&format!("{path}.prev_kv"), &left.prev_kv, &right.prev_kv)
}

fn delete(path: &str, left: &DeleteRangeResponse, right: &DeleteRangeResponse) -> Walk {
    header(&format!("{path}.header"), &left.header, &right.header)?;
    same(&format!("{path}.deleted"), &left.deleted, &right.deleted)?;
    kvs(&format!("{path}.prev_kvs"), &left.prev_kvs, &right.prev_kvs)
}

fn txn(path: &str, left: &TxnResponse, right: &TxnResponse) -> Walk {
    header(&format!("{path}.header"), &left.header, &right.header)?;
    same(
        &format!("{path}.succeeded"),
        &left.succeeded,
        &right.succeeded,
    )?;
    let (l, r) = (&left.responses, &right.responses);
    for i in 0..l.len().max(r.len()) {
        let at = format!("{path}.responses[{i}]");
        match (l.get(i), r.get(i)) {
            (Some(a), Some(b)) => response_op(&at, a, b)?,
            (a, b) => {
                let shown = |x: Option<&ResponseOp>, all: &[ResponseOp]| {
                    x.map_or(format!("absent (only {} responses)", all.len()), |op| {
                        response_kind(op).to_string()
                    })
                };
                return differ(&at, shown(a, l), shown(b, r));
            }
        }
    }
    Ok(())
}

fn response_kind(op: &ResponseOp) -> &'static str {
    match &op.response {
        None => "(empty)",
        Some(response_op::Response::ResponseRange(_)) => "response_range",
        Some(response_op::Response::ResponsePut(_)) => "response_put",
        Some(response_op::Response::ResponseDeleteRange(_)) => "response_delete_range",
        Some(response_op::Response::ResponseTxn(_)) => "response_txn",
    }
}

fn response_op(path: &str, left: &ResponseOp, right: &ResponseOp) -> Walk {
    use response_op::Response as R;
    match (&left.response, &right.response) {
        (None, None) => Ok(()),
        (Some(R::ResponseRange(l)), Some(R::ResponseRange(r))) => {
            range(&format!("{path}.response_range"), l, r)
        }
        (Some(R::ResponsePut(l)), Some(R::ResponsePut(r))) => {
            put(&format!("{path}.response_put"), l, r)
        }
        (Some(R::ResponseDeleteRange(l)), Some(R::ResponseDeleteRange(r))) => {
            delete(&format!("{path}.response_delete_range"), l, r)
        }
        (Some(R::ResponseTxn(l)), Some(R::ResponseTxn(r))) => {
            txn(&format!("{path}.response_txn"), l, r)
        }
        _ => differ(
            path,
            response_kind(left).to_string(),
            response_kind(right).to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Failure;
    use tonic::Code;

    fn header(revision: i64, member_id: u64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: member_id * 7,
            member_id,
            revision,
            raft_term: member_id + 1,
        })
    }

    fn kv_of(key: &[u8], mod_revision: i64) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: 2,
            mod_revision,
            version: 1,
            value: b"v".to_vec(),
            lease: 0,
        }
    }

    fn range_reply(revision: i64, member: u64, kvs: Vec<KeyValue>) -> Reply {
        Ok(Answer::Range(RangeResponse {
            header: header(revision, member),
            count: kvs.len() as i64,
            kvs,
            more: false,
        }))
    }

    #[test]
    fn ids_and_terms_are_not_compared_revisions_are() {
        let a = range_reply(5, 1, vec![kv_of(b"a", 3)]);
        let b = range_reply(5, 99, vec![kv_of(b"a", 3)]);
        assert_eq!(first_difference(&a, &b), None);
        let c = range_reply(6, 1, vec![kv_of(b"a", 3)]);
        let d = first_difference(&a, &c).expect("a revision off by one");
        assert_eq!(d.path, "range.header.revision");
        assert_eq!((d.left.as_str(), d.right.as_str()), ("5", "6"));
    }

    #[test]
    fn a_missing_kv_and_a_wrong_field_are_named_by_path() {
        let a = range_reply(5, 1, vec![kv_of(b"a", 3), kv_of(b"b\0", 4)]);
        let b = range_reply(5, 1, vec![kv_of(b"a", 3)]);
        let d = first_difference(&a, &b).expect("a dropped kv");
        assert_eq!(d.path, "range.kvs[1]");
        assert!(
            d.left.contains(r#"key="b\x00""#) && d.right.contains("absent"),
            "{d}"
        );
        let c = range_reply(5, 1, vec![kv_of(b"a", 3), kv_of(b"b\0", 9)]);
        let d = first_difference(&a, &c).expect("a wrong mod_revision");
        assert_eq!(d.path, "range.kvs[1].mod_revision");
    }

    #[test]
    fn errors_are_compared_by_code_and_exact_message() {
        let e = |code, message: &str| -> Reply {
            Err(Failure {
                code,
                message: message.into(),
            })
        };
        let a = e(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        );
        assert_eq!(first_difference(&a, &a.clone()), None);
        let b = e(
            Code::InvalidArgument,
            "etcdserver: mvcc: required revision is a future revision",
        );
        assert_eq!(first_difference(&a, &b).expect("code").path, "error.code");
        let c = e(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision.",
        );
        assert_eq!(
            first_difference(&a, &c).expect("text").path,
            "error.message"
        );
        let ok = range_reply(5, 1, vec![]);
        assert_eq!(
            first_difference(&a, &ok).expect("ok vs error").path,
            "outcome"
        );
    }

    #[test]
    fn nested_txn_responses_are_compared_recursively() {
        use response_op::Response as R;
        let nested = |count| TxnResponse {
            header: Some(ResponseHeader::default()),
            succeeded: true,
            responses: vec![ResponseOp {
                response: Some(R::ResponseRange(RangeResponse {
                    header: header(7, 0),
                    kvs: vec![],
                    more: false,
                    count,
                })),
            }],
        };
        let outer = |count| -> Reply {
            Ok(Answer::Txn(TxnResponse {
                header: header(7, 1),
                succeeded: false,
                responses: vec![ResponseOp {
                    response: Some(R::ResponseTxn(nested(count))),
                }],
            }))
        };
        assert_eq!(first_difference(&outer(1), &outer(1)), None);
        let d = first_difference(&outer(1), &outer(2)).expect("nested count");
        assert_eq!(
            d.path,
            "txn.responses[0].response_txn.responses[0].response_range.count"
        );
        let mut absent = outer(1);
        if let Ok(Answer::Txn(t)) = &mut absent {
            if let Some(R::ResponseTxn(n)) = &mut t.responses[0].response {
                n.header = None;
            }
        }
        let d = first_difference(&outer(1), &absent).expect("a nested header left out");
        assert_eq!(d.path, "txn.responses[0].response_txn.header");
    }
}
