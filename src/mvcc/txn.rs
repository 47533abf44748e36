//! Txn: compares, the path through nested Txns, and executing the chosen operations.
//!
//! This is etcd 3.4's `applierV3backend.Txn`, in its order, which matters:
//!
//! 1. **The path is decided first, on the state before the Txn.** The top-level compares
//!    pick a branch, and so do the compares of every nested Txn on that branch, all read
//!    before any operation runs (etcd's `compareToPath`). So a nested compare does not see
//!    a put made earlier in the same Txn (probed: `put x; txn{value(x) = "X"}` takes the
//!    nested failure branch when `x` did not exist before).
//! 2. **Then the operations on the path are checked, on the same state:** a put with
//!    `ignore_value`/`ignore_lease` whose key does not exist is `KeyNotFound`, a put with a
//!    lease that does not exist is `LeaseNotFound`, then a range whose revision is above the
//!    Txn's starting revision is `FutureRevision` and one below the compact revision
//!    `Compacted`. A revision of 0 passes; a negative one is compared as it is, so after any
//!    compaction a range at a negative revision inside a Txn is `Compacted` (probed; a
//!    Range on its own takes a negative revision as the current one).
//! 3. **Then the operations run in order**, each seeing the ones before: a range after a put
//!    returns it. Answers nested in the Txn carry only a revision (the one the operation
//!    saw or made), and a nested Txn's answer an empty header (probed through the gateway).
//!
//! A compare holds for a range only if it holds for every key in it. On no key at all, a
//! VALUE compare fails and the others compare against a zero key-value (`version("nope") =
//! "0"` holds). An unknown result holds; an unknown target, or a target whose operand is of
//! another kind, compares against 0 (etcd's `compareKV`, probed).
//!
//! A Txn changes the revision once, however many changes it makes, and not at all when it
//! makes none (a read-only Txn, or one whose only write deletes nothing).

use etcd_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_api::etcdserverpb::{
    request_op, response_op, Compare, RangeRequest, RequestOp, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};
use etcd_api::mvccpb::KeyValue;
use etcd_api::EtcdError;

use super::keys::KeyRange;
use super::read::Reader;
use super::write::{header, Changes, Writer};
use crate::error::{Error, Result};

/// The branches a Txn takes: its own, and those of the nested Txns on it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub succeeded: bool,
    pub nested: Vec<Path>,
}

/// The operations of the branch `succeeded` picks.
fn branch(req: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

/// The path of `req` through the state `reader` reads.
pub fn path(reader: &Reader<'_>, req: &TxnRequest) -> Result<Path> {
    let mut succeeded = true;
    for c in &req.compare {
        if !holds(reader, c)? {
            succeeded = false;
            break;
        }
    }
    let mut nested = Vec::new();
    for op in branch(req, succeeded) {
        if let Some(request_op::Request::RequestTxn(t)) = &op.request {
            nested.push(path(reader, t)?);
        }
    }
    Ok(Path { succeeded, nested })
}

/// Whether compare `c` holds now, for every key it names.
pub fn holds(reader: &Reader<'_>, c: &Compare) -> Result<bool> {
    let is_value = c.target == CompareTarget::Value as i32;
    let kvs = reader.key_values(KeyRange::new(&c.key, &c.range_end), is_value)?;
    if kvs.is_empty() {
        return Ok(!is_value && compare_kv(c, &KeyValue::default()));
    }
    Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
}

/// etcd's `compareKV`.
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use CompareTarget::{Create, Lease, Mod, Value, Version};
    let order = match CompareTarget::try_from(c.target) {
        Ok(Value) => {
            let v: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        Ok(target) => {
            let field = match target {
                Version => kv.version,
                Create => kv.create_revision,
                Mod => kv.mod_revision,
                Lease | Value => kv.lease,
            };
            // An operand of another kind than the target counts as 0.
            let operand = match (target, &c.target_union) {
                (Version, Some(TargetUnion::Version(n)))
                | (Create, Some(TargetUnion::CreateRevision(n)))
                | (Mod, Some(TargetUnion::ModRevision(n)))
                | (Lease, Some(TargetUnion::Lease(n))) => *n,
                _ => 0,
            };
            field.cmp(&operand)
        }
        Err(_) => std::cmp::Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => order.is_eq(),
        Ok(CompareResult::NotEqual) => order.is_ne(),
        Ok(CompareResult::Greater) => order.is_gt(),
        Ok(CompareResult::Less) => order.is_lt(),
        Err(_) => true,
    }
}

/// Step 2 of the module docs for the puts on the path, then for the ranges.
fn check_path(reader: &Reader<'_>, req: &TxnRequest, path: &Path) -> Result<()> {
    check_puts(reader, req, path)?;
    check_ranges(reader, req, path)
}

fn check_puts(reader: &Reader<'_>, req: &TxnRequest, path: &Path) -> Result<()> {
    let mut nested = path.nested.iter();
    for op in branch(req, path.succeeded) {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) => {
                if (p.ignore_value || p.ignore_lease) && reader.live(&p.key)?.is_none() {
                    return Err(Error::Etcd(EtcdError::KeyNotFound));
                }
                if p.lease != super::NO_LEASE && !reader.leases.contains(p.lease) {
                    return Err(Error::Etcd(EtcdError::LeaseNotFound));
                }
            }
            Some(request_op::Request::RequestTxn(t)) => {
                if let Some(p) = nested.next() {
                    check_puts(reader, t, p)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_ranges(reader: &Reader<'_>, req: &TxnRequest, path: &Path) -> Result<()> {
    let mut nested = path.nested.iter();
    for op in branch(req, path.succeeded) {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) => check_range_revision(reader, r)?,
            Some(request_op::Request::RequestTxn(t)) => {
                if let Some(p) = nested.next() {
                    check_ranges(reader, t, p)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// etcd's `checkRequestRange`: against the Txn's starting revision, a negative revision
/// included.
fn check_range_revision(reader: &Reader<'_>, r: &RangeRequest) -> Result<()> {
    if r.revision == 0 {
        Ok(())
    } else if r.revision > reader.current {
        Err(Error::Etcd(EtcdError::FutureRevision))
    } else if r.revision < reader.compact {
        Err(Error::Etcd(EtcdError::Compacted))
    } else {
        Ok(())
    }
}

impl Writer<'_> {
    /// A whole Txn, as one command.
    pub(super) fn run_txn(&mut self, req: &TxnRequest) -> Result<TxnResponse> {
        let begin = self.state.revision;
        let before = self.reader(begin);
        let path = path(&before, req)?;
        check_path(&before, req, &path)?;
        let mut changes = Changes::new(begin);
        let mut resp = self.run_branch(&mut changes, req, &path)?;
        resp.header = header(changes.current());
        self.state.revision = changes.current();
        Ok(resp)
    }

    /// The operations of the branch `path` picks, in order; nested Txns answer with an
    /// empty header.
    fn run_branch(
        &mut self,
        changes: &mut Changes,
        req: &TxnRequest,
        path: &Path,
    ) -> Result<TxnResponse> {
        let ops = branch(req, path.succeeded);
        let mut nested = path.nested.iter();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    response_op::Response::ResponseRange(self.reader(changes.current()).range(r)?)
                }
                Some(request_op::Request::RequestPut(p)) => {
                    response_op::Response::ResponsePut(self.put_in(changes, p)?)
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    response_op::Response::ResponseDeleteRange(self.delete_in(changes, d)?)
                }
                Some(request_op::Request::RequestTxn(t)) => {
                    let p = nested.next().ok_or(Error::Etcd(EtcdError::KeyNotFound))?;
                    let mut inner = self.run_branch(changes, t, p)?;
                    inner.header = Some(ResponseHeader::default());
                    response_op::Response::ResponseTxn(inner)
                }
                // The stateless checks refuse an empty operation before it is proposed.
                None => return Err(Error::Etcd(EtcdError::KeyNotFound)),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded: path.succeeded,
            responses,
        })
    }
}
