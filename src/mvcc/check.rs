//! The checks etcd makes of a request before proposing it: they need no state, so a bad
//! request is refused at once instead of costing a log entry.
//!
//! They are etcd 3.4's `v3rpc/key.go` (`checkRangeRequest`, `checkPutRequest`,
//! `checkDeleteRequest`, `checkTxnRequest`, `checkIntervals`), checked against a running etcd
//! 3.4.23 through its JSON gateway (`curl -d '{…}' http://127.0.0.1:24791/v3/kv/txn`):
//!
//! - An empty key (a Range's, a Put's, a DeleteRange's, a Compare's) is `KeyNotProvided`;
//!   `ignore_value` with a value is `ValueProvided`; `ignore_lease` with a lease is
//!   `LeaseProvided`.
//! - A Txn may have at most `max_txn_ops` compares, and as many operations in each branch;
//!   the three are counted separately and the largest must fit. A nested Txn gets what
//!   its parent leaves: its limit is `max_txn_ops` less the parent's largest count (probed:
//!   an outer branch of 100 operations, one of them a Txn, admits 28 operations in the inner
//!   branch and refuses 29; an outer branch of 128 admits an empty inner Txn only).
//! - An operation with nothing in it is `KeyNotFound` (probed: `{"success":[{}]}`).
//! - Duplicates (`DuplicateKey`), per branch, nested Txns included: a key put twice, or put
//!   inside a delete's range. Deletes may overlap each other, and the success and failure
//!   branches of one nested Txn may put the same key (only one of them runs). Two quirks of
//!   etcd's interval code, both probed and kept, since a request etcd takes must be taken:
//!   a delete to the end of the key space (`range_end` `"\0"`) covers nothing in this check
//!   (`del --from-key zz; put zzz` in one Txn succeeds), and a nested Txn's puts are checked
//!   against the deletes of the nested Txns *before* it only (`txn{put k}; txn{del k}` is
//!   taken, `txn{del k}; txn{put k}` refused).
//!
//! Everything else is taken as etcd 3.4 takes it (probed): a negative `limit` is no limit, a
//! negative `revision` is the current one, an unknown sort order sorts nothing, an unknown
//! compare result holds, an unknown compare target compares as equal. An unknown sort target
//! crashes etcd 3.4.23 (a nil sorter; etcd 3.5 refuses it with "invalid sort option", an
//! error clients here do not know); this store sorts such a range by key.

use std::collections::HashSet;

use etcd_api::etcdserverpb::{
    request_op, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use etcd_api::EtcdError;

/// etcd's default `--max-txn-ops`: the most compares, or operations in one branch, of a Txn.
pub const MAX_TXN_OPS: usize = 128;

pub fn check_range(req: &RangeRequest) -> Result<(), EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::KeyNotProvided);
    }
    Ok(())
}

pub fn check_put(req: &PutRequest) -> Result<(), EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::KeyNotProvided);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete_range(req: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::KeyNotProvided);
    }
    Ok(())
}

/// Every check of a Txn: sizes and keys first (all of them, as etcd does, so a large
/// request costs no more than linear work), then duplicates in each branch.
pub fn check_txn(req: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    check_txn_ops(req, max_txn_ops)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

fn check_txn_ops(req: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if ops > max_txn_ops {
        return Err(EtcdError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::KeyNotProvided);
    }
    for op in req.success.iter().chain(&req.failure) {
        check_op(op, max_txn_ops - ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_txn_ops: usize) -> Result<(), EtcdError> {
    match &op.request {
        Some(request_op::Request::RequestRange(r)) => check_range(r),
        Some(request_op::Request::RequestPut(p)) => check_put(p),
        Some(request_op::Request::RequestDeleteRange(d)) => check_delete_range(d),
        Some(request_op::Request::RequestTxn(t)) => check_txn_ops(t, max_txn_ops),
        None => Err(EtcdError::KeyNotFound),
    }
}

/// A delete's keys as etcd's duplicate check sees them: one key, or `[start, end)`; a
/// `range_end` at or before the key (which includes `"\0"`) covers nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Deleted {
    Key(Vec<u8>),
    Span(Vec<u8>, Vec<u8>),
}

impl Deleted {
    fn of(req: &DeleteRangeRequest) -> Deleted {
        if req.range_end.is_empty() {
            Deleted::Key(req.key.clone())
        } else {
            Deleted::Span(req.key.clone(), req.range_end.clone())
        }
    }

    fn covers(&self, key: &[u8]) -> bool {
        match self {
            Deleted::Key(k) => k == key,
            Deleted::Span(start, end) => start.as_slice() <= key && key < end.as_slice(),
        }
    }
}

/// The puts and deletes of one branch, for its parent's check.
struct Branch {
    puts: HashSet<Vec<u8>>,
    dels: Vec<Deleted>,
}

/// etcd's `checkIntervals`, step by step: this level's deletes; then each nested Txn's
/// puts against the puts and deletes gathered so far (whereupon its deletes join them);
/// then this level's puts against all of it.
fn check_intervals(ops: &[RequestOp]) -> Result<Branch, EtcdError> {
    let mut dels: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(request_op::Request::RequestDeleteRange(d)) => Some(Deleted::of(d)),
            _ => None,
        })
        .collect();
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    let deleted = |dels: &[Deleted], key: &[u8]| dels.iter().any(|d| d.covers(key));
    for op in ops {
        let Some(request_op::Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let then = check_intervals(&t.success)?;
        let otherwise = check_intervals(&t.failure)?;
        for k in &then.puts {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
        }
        puts.extend(then.puts.iter().cloned());
        for k in &otherwise.puts {
            let clash = puts.contains(k) && !then.puts.contains(k);
            if clash || deleted(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
        }
        puts.extend(otherwise.puts);
        dels.extend(then.dels);
        dels.extend(otherwise.dels);
    }
    for op in ops {
        let Some(request_op::Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(EtcdError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok(Branch { puts, dels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_api::etcdserverpb::Compare;

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: k.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }
    }

    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: k.into(),
                    range_end: end.into(),
                    ..Default::default()
                },
            )),
        }
    }

    fn get(k: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestTxn(txn(success, failure))),
        }
    }

    fn check(t: &TxnRequest) -> Result<(), EtcdError> {
        check_txn(t, MAX_TXN_OPS)
    }

    #[test]
    fn empty_keys_are_not_provided() {
        // `get ""`, `put "" x`, `del ""` and a compare on "" all fail alike.
        assert_eq!(
            check_range(&RangeRequest::default()),
            Err(EtcdError::KeyNotProvided)
        );
        assert_eq!(
            check_put(&PutRequest::default()),
            Err(EtcdError::KeyNotProvided)
        );
        assert_eq!(
            check_delete_range(&DeleteRangeRequest::default()),
            Err(EtcdError::KeyNotProvided)
        );
        let t = TxnRequest {
            compare: vec![Compare::default()],
            ..Default::default()
        };
        assert_eq!(check(&t), Err(EtcdError::KeyNotProvided));
        assert_eq!(
            check(&txn(vec![put("")], vec![])),
            Err(EtcdError::KeyNotProvided)
        );
    }

    #[test]
    fn ignore_flags_refuse_what_they_ignore() {
        // `ignore_value` with a value, `ignore_lease` with a lease.
        let p = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(check_put(&p), Err(EtcdError::ValueProvided));
        let p = PutRequest {
            key: b"k".to_vec(),
            lease: 5,
            ignore_lease: true,
            ..Default::default()
        };
        assert_eq!(check_put(&p), Err(EtcdError::LeaseProvided));
    }

    #[test]
    fn an_empty_operation_is_key_not_found() {
        // etcd: `{"success":[{}]}` → "etcdserver: key not found".
        let t = txn(vec![RequestOp { request: None }], vec![]);
        assert_eq!(check(&t), Err(EtcdError::KeyNotFound));
    }

    #[test]
    fn op_limit_counts_compares_and_branches_separately() {
        // 128 puts pass, 129 fail; 128 compares plus 128 puts per branch still pass.
        let puts = |n: usize| (0..n).map(|i| put(&format!("k{i}"))).collect::<Vec<_>>();
        assert_eq!(check(&txn(puts(128), puts(128))), Ok(()));
        assert_eq!(check(&txn(puts(129), vec![])), Err(EtcdError::TooManyOps));
        assert_eq!(check(&txn(vec![], puts(129))), Err(EtcdError::TooManyOps));
        let compares = TxnRequest {
            compare: (0..129)
                .map(|_| Compare {
                    key: b"k".to_vec(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        assert_eq!(check(&compares), Err(EtcdError::TooManyOps));
    }

    #[test]
    fn a_nested_txn_gets_what_its_parent_leaves() {
        // Probed on etcd 3.4.23: 99 ranges + a nested txn (outer branch of 100) admit 28
        // inner ops and refuse 29; an outer branch of 128 admits only an empty nested txn.
        let gets = |n: usize| (0..n).map(|i| get(&format!("o{i}"))).collect::<Vec<_>>();
        let with_inner = |outer: usize, inner: usize| {
            let mut ops = gets(outer);
            ops.push(nested(gets(inner), vec![]));
            txn(ops, vec![])
        };
        assert_eq!(check(&with_inner(99, 28)), Ok(()));
        assert_eq!(check(&with_inner(99, 29)), Err(EtcdError::TooManyOps));
        assert_eq!(check(&with_inner(10, 117)), Ok(()));
        assert_eq!(check(&with_inner(10, 118)), Err(EtcdError::TooManyOps));
        assert_eq!(check(&with_inner(127, 0)), Ok(()));
        assert_eq!(check(&with_inner(127, 1)), Err(EtcdError::TooManyOps));
    }

    #[test]
    fn duplicate_puts_and_puts_under_deletes_are_refused() {
        // `put a 1; put a 2`, `put a 1; del a`, `del [p/, p0); put p/b` (BRIEF §3).
        let dup = Err(EtcdError::DuplicateKey);
        assert_eq!(check(&txn(vec![put("a"), put("a")], vec![])), dup);
        assert_eq!(check(&txn(vec![put("a"), del("a", "")], vec![])), dup);
        assert_eq!(check(&txn(vec![del("p/", "p0"), put("p/b")], vec![])), dup);
        // Per branch: the same key on the success and the failure branch is fine.
        assert_eq!(check(&txn(vec![put("a")], vec![put("a")])), Ok(()));
        // Deletes may overlap each other.
        assert_eq!(
            check(&txn(vec![del("a", "c"), del("b", "")], vec![])),
            Ok(())
        );
    }

    #[test]
    fn nested_txns_are_checked_with_their_parent() {
        // Probed: `del [p, q); txn{put pa}` and `put k; txn{else put k}` are refused; one
        // nested txn's two branches may put the same key.
        let dup = Err(EtcdError::DuplicateKey);
        let t = txn(vec![del("p", "q"), nested(vec![put("pa")], vec![])], vec![]);
        assert_eq!(check(&t), dup);
        let t = txn(vec![put("k"), nested(vec![], vec![put("k")])], vec![]);
        assert_eq!(check(&t), dup);
        let t = txn(vec![nested(vec![put("k")], vec![put("k")])], vec![]);
        assert_eq!(check(&t), Ok(()));
        let t = txn(
            vec![
                nested(vec![put("k")], vec![]),
                nested(vec![put("k")], vec![]),
            ],
            vec![],
        );
        assert_eq!(check(&t), dup, "two nested txns both putting k");
    }

    #[test]
    fn etcds_interval_quirks_are_kept() {
        // Probed: a delete to the end (`range_end` "\0") covers nothing here, and a nested
        // txn's put meets only the deletes of nested txns before it.
        let t = txn(vec![del("zz", "\0"), put("zzz")], vec![]);
        assert_eq!(check(&t), Ok(()), "del --from-key zz; put zzz");
        let put_then_del = txn(
            vec![
                nested(vec![put("k")], vec![]),
                nested(vec![del("k", "")], vec![]),
            ],
            vec![],
        );
        assert_eq!(check(&put_then_del), Ok(()));
        let del_then_put = txn(
            vec![
                nested(vec![del("k", "")], vec![]),
                nested(vec![put("k")], vec![]),
            ],
            vec![],
        );
        assert_eq!(check(&del_then_put), Err(EtcdError::DuplicateKey));
    }
}
