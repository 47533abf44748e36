//! The store's rules, one a test, each reading like an etcd session. Revisions in comments
//! are the store's after the line. Where a rule was probed on etcd 3.4.23 the probe is named
//! (BRIEF = docs/research/etcd-v3/BRIEF.md, §4 rule N).

use etcd_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use etcd_api::etcdserverpb::{
    request_op, response_op, CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse,
};
use etcd_api::mvccpb::KeyValue;
use etcd_api::EtcdError;

use super::keys::{live_key, rev_key, Record, Revision};
use super::write::Writer;
use super::MvccStore;
use crate::error::Error;

/// A store in a temporary sled database, each command applied as its own batch.
pub(super) struct Harness {
    /// Kept so the database outlives the store.
    _db: sled::Db,
    pub tree: sled::Tree,
    pub store: MvccStore,
}

impl Harness {
    pub fn new() -> Harness {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("sm").unwrap();
        Harness {
            store: MvccStore::open(tree.clone()).unwrap(),
            tree,
            _db: db,
        }
    }

    /// Runs `f` on a writer and writes its batch.
    pub fn commit<R>(&mut self, f: impl FnOnce(&mut Writer<'_>) -> R) -> R {
        let mut w = self.store.writer();
        let r = f(&mut w);
        let (batch, state, _) = w.finish();
        self.tree.apply_batch(batch).unwrap();
        self.store.set_state(state);
        r
    }

    pub fn try_put(&mut self, req: PutRequest) -> Result<PutResponse, EtcdError> {
        self.commit(|w| w.put(&req).unwrap())
    }

    pub fn put(&mut self, k: &str, v: &str) -> PutResponse {
        self.try_put(put_req(k, v)).unwrap()
    }

    pub fn del(&mut self, k: &str, end: &str) -> DeleteRangeResponse {
        let req = del_req(k, end);
        self.commit(|w| w.delete_range(&req).unwrap().unwrap())
    }

    pub fn txn(&mut self, req: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.commit(|w| w.txn(&req).unwrap())
    }

    pub fn compact(&mut self, revision: i64) -> Result<CompactionResponse, EtcdError> {
        let req = CompactionRequest {
            revision,
            physical: false,
        };
        self.commit(|w| w.compaction(&req).unwrap())
    }

    pub fn range(&self, req: RangeRequest) -> Result<RangeResponse, EtcdError> {
        match self.store.range(&req) {
            Ok(r) => Ok(r),
            Err(Error::Etcd(e)) => Err(e),
            Err(e) => panic!("storage error: {e}"),
        }
    }

    /// Keys and values of a range, as strings.
    pub fn kvs(&self, req: RangeRequest) -> Vec<(String, String)> {
        self.range(req).unwrap().kvs.iter().map(pair).collect()
    }

    pub fn get(&self, k: &str) -> Option<KeyValue> {
        self.store.get(k.as_bytes()).unwrap()
    }

    pub fn revision(&self) -> i64 {
        self.store.revision()
    }
}

fn pair(kv: &KeyValue) -> (String, String) {
    (
        String::from_utf8(kv.key.clone()).unwrap(),
        String::from_utf8(kv.value.clone()).unwrap(),
    )
}

fn strs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn put_req(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }
}

pub(super) fn del_req(k: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

pub(super) fn range_req(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

/// Every key.
fn all() -> RangeRequest {
    range_req("\0", "\0")
}

pub(super) fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(put_req(k, v))),
    }
}

pub(super) fn op_del(k: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(del_req(k, end))),
    }
}

pub(super) fn op_range(req: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(req)),
    }
}

fn op_txn(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestTxn(t)),
    }
}

pub(super) fn txn(
    compare: Vec<Compare>,
    success: Vec<RequestOp>,
    failure: Vec<RequestOp>,
) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

pub(super) fn cmp(
    key: &str,
    target: CompareTarget,
    result: CompareResult,
    operand: TargetUnion,
) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        target_union: Some(operand),
        range_end: vec![],
    }
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// The responses of a Txn, unwrapped.
fn responses(t: &TxnResponse) -> Vec<response_op::Response> {
    t.responses
        .iter()
        .map(|r| r.response.clone().unwrap())
        .collect()
}

fn as_range(r: &response_op::Response) -> &RangeResponse {
    match r {
        response_op::Response::ResponseRange(r) => r,
        other => panic!("not a range: {other:?}"),
    }
}

#[test]
fn an_empty_store_is_at_revision_1() {
    // BRIEF §4.1: `get nothing -w json` → revision 1.
    let s = Harness::new();
    assert_eq!(s.revision(), 1);
    let r = s.range(range_req("nothing", "")).unwrap();
    assert_eq!((r.header, r.count, r.kvs.len()), (header(1), 0, 0));
    assert_eq!(s.store.compact_revision(), -1);
}

#[test]
fn every_put_bumps_the_revision_even_with_the_same_value() {
    // BRIEF §4.2: the first put is revision 2; a put of the same value still bumps.
    let mut s = Harness::new();
    assert_eq!(s.put("foo", "bar").header, header(2));
    assert_eq!(s.put("foo", "bar").header, header(3));
    let kv = s.get("foo").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
}

#[test]
fn a_delete_of_nothing_does_not_bump_and_a_delete_of_many_bumps_once() {
    // BRIEF §4.3: `del nothing` → 0, header unchanged; `del foo --prefix` of 2 keys: +1.
    let mut s = Harness::new();
    s.put("foo", "1"); // 2
    s.put("foo1", "1"); // 3
    let none = s.del("nothing", "");
    assert_eq!((none.deleted, none.header), (0, header(3)));
    let two = s.del("foo", "fop");
    assert_eq!((two.deleted, two.header, s.revision()), (2, header(4), 4));
    assert_eq!(s.store.key_count(), 0);
}

#[test]
fn a_read_only_txn_and_a_txn_deleting_nothing_do_not_bump() {
    // BRIEF §4.4 (t3.txt: 16→16, 19→19).
    let mut s = Harness::new();
    s.put("k", "v"); // 2
    let t = s
        .txn(txn(vec![], vec![op_range(range_req("k", ""))], vec![]))
        .unwrap();
    assert_eq!((t.header, s.revision()), (header(2), 2));
    let t = s
        .txn(txn(vec![], vec![op_del("nope", "")], vec![]))
        .unwrap();
    assert_eq!((t.header, s.revision()), (header(2), 2));
}

#[test]
fn a_txn_bumps_once_and_numbers_its_changes_by_sub_revision() {
    // BRIEF §4.4: two puts in one txn both show mod_revision 19 (here 2); header 2.
    let mut s = Harness::new();
    let t = s
        .txn(txn(
            vec![],
            vec![op_put("a", "1"), op_put("b", "2"), op_del("a", "")],
            vec![],
        ))
        .unwrap();
    assert_eq!((t.header, s.revision()), (header(2), 2));
    let subs: Vec<_> = (0..3)
        .map(|sub| {
            let v = s
                .tree
                .get(rev_key(Revision { main: 2, sub }))
                .unwrap()
                .unwrap();
            let rec = Record::decode(&v).unwrap();
            (
                String::from_utf8(rec.key.to_vec()).unwrap(),
                rec.meta.tombstone,
            )
        })
        .collect();
    let expected = [("a", false), ("b", false), ("a", true)];
    assert_eq!(subs, expected.map(|(k, t)| (k.to_string(), t)));
    assert_eq!(s.kvs(all()), strs(&[("b", "2")]));
}

#[test]
fn a_range_in_a_txn_sees_the_txns_earlier_put() {
    // BRIEF §4.4 (`put c 1; get c` → create_revision 20); probed: a range before any change
    // has the txn's starting revision in its header, after a change the new one.
    let mut s = Harness::new();
    s.put("a", "1"); // 2
    let t = s
        .txn(txn(
            vec![],
            vec![
                op_range(range_req("a", "")),
                op_put("c", "1"),
                op_range(range_req("c", "")),
            ],
            vec![],
        ))
        .unwrap();
    let r = responses(&t);
    assert_eq!(as_range(&r[0]).header, header(2));
    let after = as_range(&r[2]);
    assert_eq!(after.header, header(3));
    assert_eq!(
        (after.kvs[0].create_revision, after.kvs[0].value.as_slice()),
        (3, &b"1"[..])
    );
}

#[test]
fn a_put_after_a_delete_starts_a_new_generation() {
    // BRIEF §4.6 (`vk`: v2@28 → del@29 → put@30 gives create 30, version 1).
    let mut s = Harness::new();
    s.put("vk", "1"); // 2
    s.put("vk", "2"); // 3
    s.del("vk", ""); // 4
    s.put("vk", "3"); // 5
    let kv = s.get("vk").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn a_range_at_a_past_revision_sees_that_revision() {
    // BRIEF §4.7: `get foo --rev 2` → bar, version 1, header still the current revision.
    let mut s = Harness::new();
    s.put("foo", "bar"); // 2
    s.put("foo", "bar2"); // 3
    s.put("gone", "x"); // 4
    s.del("gone", ""); // 5
    let at = |rev| {
        let mut r = all();
        r.revision = rev;
        s.range(r).unwrap()
    };
    let r2 = at(2);
    assert_eq!(r2.header, header(5));
    assert_eq!(
        r2.kvs.iter().map(pair).collect::<Vec<_>>(),
        strs(&[("foo", "bar")])
    );
    assert_eq!(r2.kvs[0].version, 1);
    assert_eq!(
        at(4).kvs.iter().map(pair).collect::<Vec<_>>(),
        strs(&[("foo", "bar2"), ("gone", "x")])
    );
    assert_eq!(at(5).count, 1, "the tombstone hides the key");
    assert_eq!(at(1).count, 0, "before the first write");
    let mut single = range_req("foo", "");
    single.revision = 2;
    assert_eq!(
        s.kvs(single),
        strs(&[("foo", "bar")]),
        "one key at a past revision"
    );
}

#[test]
fn count_is_taken_before_the_limit_and_more_says_it_cut() {
    // BRIEF §4.9–10: `get --prefix foo --limit 2` over 3 keys → 2 kvs, more, count 3.
    let mut s = Harness::new();
    for k in ["foo", "foo1", "foo2"] {
        s.put(k, "v");
    }
    let mut r = range_req("foo", "fop");
    r.limit = 2;
    let resp = s.range(r.clone()).unwrap();
    assert_eq!((resp.kvs.len(), resp.more, resp.count), (2, true, 3));
    r.limit = 3;
    let resp = s.range(r).unwrap();
    assert_eq!((resp.kvs.len(), resp.more, resp.count), (3, false, 3));
}

#[test]
fn a_negative_limit_is_no_limit_and_a_negative_revision_is_current() {
    // Probed on etcd 3.4.23: `"limit":-1` returns every key; `"revision":-7` the current.
    let mut s = Harness::new();
    for k in ["a", "b", "c"] {
        s.put(k, "v");
    }
    let mut r = all();
    r.limit = -1;
    let resp = s.range(r).unwrap();
    assert_eq!((resp.kvs.len(), resp.more), (3, false));
    let mut r = all();
    r.revision = -7;
    assert_eq!(s.range(r).unwrap().count, 3);
}

#[test]
fn sorting_follows_target_and_order_and_keeps_key_order_on_ties() {
    // BRIEF §4.11: `--sort-by=VERSION --order=DESCEND` puts foo (v3) first, then foo1, foo2.
    let mut s = Harness::new();
    s.put("foo", "c"); // 2
    s.put("foo1", "b"); // 3
    s.put("foo2", "a"); // 4
    s.put("foo", "c"); // 5
    s.put("foo", "c"); // 6
    let keys = |target: SortTarget, order: SortOrder| {
        let mut r = all();
        r.sort_target = target as i32;
        r.sort_order = order as i32;
        s.kvs(r).into_iter().map(|(k, _)| k).collect::<Vec<_>>()
    };
    assert_eq!(
        keys(SortTarget::Version, SortOrder::Descend),
        ["foo", "foo1", "foo2"]
    );
    assert_eq!(
        keys(SortTarget::Version, SortOrder::Ascend),
        ["foo1", "foo2", "foo"]
    );
    assert_eq!(
        keys(SortTarget::Key, SortOrder::Descend),
        ["foo2", "foo1", "foo"]
    );
    assert_eq!(
        keys(SortTarget::Value, SortOrder::Ascend),
        ["foo2", "foo1", "foo"]
    );
    assert_eq!(
        keys(SortTarget::Create, SortOrder::Descend),
        ["foo2", "foo1", "foo"]
    );
    assert_eq!(
        keys(SortTarget::Mod, SortOrder::Descend),
        ["foo", "foo2", "foo1"]
    );
    // A target other than KEY with no order sorts ascending (etcd's applier).
    assert_eq!(
        keys(SortTarget::Mod, SortOrder::None),
        ["foo1", "foo2", "foo"]
    );
}

#[test]
fn sorting_happens_before_the_limit() {
    // BRIEF §4.11: with a sort order etcd fetches everything, sorts, then cuts.
    let mut s = Harness::new();
    for k in ["a", "b", "c"] {
        s.put(k, "v");
    }
    let mut r = all();
    r.sort_order = SortOrder::Descend as i32;
    r.limit = 1;
    let resp = s.range(r).unwrap();
    assert_eq!(
        (pair(&resp.kvs[0]).0.as_str(), resp.more, resp.count),
        ("c", true, 3)
    );
}

#[test]
fn unknown_sort_order_sorts_nothing_and_unknown_target_sorts_by_key() {
    // Probed: etcd 3.4.23 returns key order for sort_order 5 (target VERSION); for an
    // unknown target it crashes (nil sorter) — here it sorts by key.
    let mut s = Harness::new();
    s.put("b", "v"); // 2
    s.put("a", "v"); // 3
    s.put("a", "v"); // 4
    let mut r = all();
    r.sort_order = 5;
    r.sort_target = SortTarget::Version as i32;
    assert_eq!(
        s.kvs(r).iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let mut r = all();
    r.sort_target = 9;
    r.sort_order = SortOrder::Descend as i32;
    assert_eq!(
        s.kvs(r).iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        ["b", "a"]
    );
}

#[test]
fn keys_only_drops_values_and_count_only_drops_kvs() {
    // BRIEF §4.12 and §4.9: keys_only keeps create/mod/version; count_only ignores limit.
    let mut s = Harness::new();
    s.put("a", "1");
    s.put("b", "2");
    let mut r = all();
    r.keys_only = true;
    let resp = s.range(r).unwrap();
    assert!(resp
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version == 1));
    assert_eq!(resp.kvs[1].mod_revision, 3);
    let mut r = all();
    r.count_only = true;
    r.limit = 1;
    let resp = s.range(r).unwrap();
    assert_eq!((resp.kvs.len(), resp.count, resp.more), (0, 2, false));
}

#[test]
fn min_and_max_filters_apply_after_counting() {
    // BRIEF §4.9 (t7.txt: min_mod_revision 33 returned 2 kvs with count 3).
    let mut s = Harness::new();
    s.put("a", "1"); // 2
    s.put("b", "1"); // 3
    s.put("c", "1"); // 4
    s.put("a", "2"); // 5
    let filtered = |f: &dyn Fn(&mut RangeRequest)| {
        let mut r = all();
        f(&mut r);
        let resp = s.range(r).unwrap();
        (
            resp.kvs.iter().map(|kv| pair(kv).0).collect::<Vec<_>>(),
            resp.count,
        )
    };
    assert_eq!(
        filtered(&|r| r.min_mod_revision = 4),
        (vec!["a".into(), "c".into()], 3)
    );
    assert_eq!(filtered(&|r| r.max_mod_revision = 3), (vec!["b".into()], 3));
    assert_eq!(
        filtered(&|r| r.min_create_revision = 3),
        (vec!["b".into(), "c".into()], 3)
    );
    assert_eq!(
        filtered(&|r| r.max_create_revision = 2),
        (vec!["a".into()], 3)
    );
    // A filter with a limit: filtering happens before the cut.
    assert_eq!(
        filtered(&|r| {
            r.min_create_revision = 3;
            r.limit = 1
        }),
        (vec!["b".into()], 3)
    );
}

#[test]
fn a_range_end_before_the_key_is_empty_not_an_error() {
    // BRIEF §3 notes: `get k1 a` and `get k1 k1` return nothing, rc 0.
    let mut s = Harness::new();
    s.put("k1", "v");
    assert_eq!(s.range(range_req("k1", "a")).unwrap().count, 0);
    assert_eq!(s.range(range_req("k1", "k1")).unwrap().count, 0);
    assert_eq!(s.del("k1", "a").deleted, 0);
}

#[test]
fn put_options_prev_kv_and_ignore_value() {
    // BRIEF §4.14: prev_kv returns the old pair; ignore_value keeps the value; both fail
    // with key not found on a missing key; a lease is not found (no leases exist).
    let mut s = Harness::new();
    s.put("k", "old"); // 2
    let mut p = put_req("k", "new");
    p.prev_kv = true;
    let resp = s.try_put(p).unwrap();
    assert_eq!(
        pair(resp.prev_kv.as_ref().unwrap()),
        ("k".into(), "old".into())
    );
    let mut p = put_req("k", "");
    p.ignore_value = true;
    s.try_put(p).unwrap(); // 4
    let kv = s.get("k").unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.version, kv.mod_revision),
        (&b"new"[..], 3, 4)
    );
    let mut p = put_req("missing", "");
    p.ignore_value = true;
    assert_eq!(s.try_put(p), Err(EtcdError::KeyNotFound));
    let mut p = put_req("missing", "");
    p.ignore_lease = true;
    assert_eq!(s.try_put(p), Err(EtcdError::KeyNotFound));
    let mut p = put_req("k", "v");
    p.lease = 0x1234;
    assert_eq!(s.try_put(p), Err(EtcdError::LeaseNotFound));
    assert_eq!(s.revision(), 4, "failed puts change nothing");
}

#[test]
fn delete_prev_kv_returns_every_deleted_pair_in_key_order() {
    // BRIEF §4.15.
    let mut s = Harness::new();
    s.put("b", "2");
    s.put("a", "1");
    let mut d = del_req("a", "c");
    d.prev_kv = true;
    let resp = s.commit(|w| w.delete_range(&d).unwrap().unwrap());
    assert_eq!(
        resp.prev_kvs.iter().map(pair).collect::<Vec<_>>(),
        strs(&[("a", "1"), ("b", "2")])
    );
}

#[test]
fn compares_on_each_target() {
    // BRIEF §2.3 and §4.16: value bytewise; version, create, mod, lease numerically.
    use CompareResult::*;
    use CompareTarget::*;
    let mut s = Harness::new();
    s.put("k", "v1"); // 2
    s.put("k", "v2"); // 3
    let mut holds = |c: Compare| s.txn(txn(vec![c], vec![], vec![])).unwrap().succeeded;
    assert!(holds(cmp(
        "k",
        Value,
        Equal,
        TargetUnion::Value(b"v2".to_vec())
    )));
    assert!(holds(cmp(
        "k",
        Value,
        Less,
        TargetUnion::Value(b"v3".to_vec())
    )));
    assert!(!holds(cmp(
        "k",
        Value,
        Greater,
        TargetUnion::Value(b"v3".to_vec())
    )));
    assert!(holds(cmp("k", Version, Equal, TargetUnion::Version(2))));
    assert!(holds(cmp(
        "k",
        Create,
        Equal,
        TargetUnion::CreateRevision(2)
    )));
    assert!(holds(cmp("k", Mod, Greater, TargetUnion::ModRevision(2))));
    assert!(holds(cmp("k", Mod, NotEqual, TargetUnion::ModRevision(2))));
    assert!(holds(cmp("k", Lease, Equal, TargetUnion::Lease(0))));
}

#[test]
fn a_compare_over_a_range_must_hold_for_every_key() {
    // BRIEF §4.16.
    use CompareResult::*;
    use CompareTarget::*;
    let mut s = Harness::new();
    s.put("a", "1"); // 2
    s.put("b", "1"); // 3
    s.put("b", "1"); // 4
    let mut over = |result, version| {
        let mut c = cmp("a", Version, result, TargetUnion::Version(version));
        c.range_end = b"c".to_vec();
        s.txn(txn(vec![c], vec![], vec![])).unwrap().succeeded
    };
    assert!(over(Greater, 0), "every key has a version");
    assert!(!over(Equal, 1), "b is at version 2");
    assert!(over(Less, 3));
}

#[test]
fn compares_on_missing_keys_fail_on_value_and_see_zeros_otherwise() {
    // BRIEF §4.16 (t7.txt: `version("nope") = "0"` true, `create("nope") < "5"` true).
    use CompareResult::*;
    use CompareTarget::*;
    let mut s = Harness::new();
    let mut holds = |c: Compare| s.txn(txn(vec![c], vec![], vec![])).unwrap().succeeded;
    assert!(holds(cmp("nope", Version, Equal, TargetUnion::Version(0))));
    assert!(holds(cmp(
        "nope",
        Create,
        Less,
        TargetUnion::CreateRevision(5)
    )));
    assert!(!holds(cmp(
        "nope",
        Value,
        Equal,
        TargetUnion::Value(vec![])
    )));
    assert!(!holds(cmp(
        "nope",
        Value,
        NotEqual,
        TargetUnion::Value(b"x".to_vec())
    )));
}

#[test]
fn unknown_compare_results_hold_and_unknown_targets_compare_equal() {
    // Probed on etcd 3.4.23: result 7 on a value that differs holds; target 9 with EQUAL
    // holds and with GREATER does not; target VERSION with a value operand compares to 0.
    use CompareTarget::*;
    let mut s = Harness::new();
    s.put("a", "11"); // 2
    s.put("a", "11"); // 3
    let mut holds = |c: Compare| s.txn(txn(vec![c], vec![], vec![])).unwrap().succeeded;
    let raw = |result: i32, target: i32, operand| Compare {
        result,
        target,
        key: b"a".to_vec(),
        target_union: Some(operand),
        range_end: vec![],
    };
    assert!(holds(raw(
        7,
        Value as i32,
        TargetUnion::Value(b"x".to_vec())
    )));
    assert!(holds(raw(0, 9, TargetUnion::Version(5))));
    assert!(!holds(raw(1, 9, TargetUnion::Version(5))));
    assert!(!holds(raw(
        0,
        Version as i32,
        TargetUnion::Value(b"x".to_vec())
    )));
    let mut missing = raw(0, 9, TargetUnion::Version(0));
    missing.key = b"nope".to_vec();
    assert!(holds(missing), "unknown target on a missing key");
}

#[test]
fn the_failure_branch_runs_when_a_compare_fails() {
    // BRIEF §2.3: `value("k1") = "nomatch"` → FAILURE, the `get`s of the failure branch.
    let mut s = Harness::new();
    s.put("k1", "new1");
    let c = cmp(
        "k1",
        CompareTarget::Value,
        CompareResult::Equal,
        TargetUnion::Value(b"nomatch".to_vec()),
    );
    let t = s
        .txn(txn(
            vec![c],
            vec![op_put("k1", "x")],
            vec![op_range(range_req("k1", ""))],
        ))
        .unwrap();
    assert!(!t.succeeded);
    assert_eq!(as_range(&responses(&t)[0]).kvs[0].value, b"new1");
    assert_eq!(s.revision(), 2);
}

#[test]
fn nested_txns_answer_with_an_empty_header_and_decide_on_the_state_before() {
    // Probed through etcd's gateway: in `range a; put x; range x; txn{value(x) = "X" ?
    // put y : range x, del nope}` on a store without x, the nested compare reads the state
    // before the txn (fails), the nested answer's header is `{}`, nested ops carry only the
    // revision they saw (9), the top-level header 9.
    let mut s = Harness::new();
    s.put("a", "11"); // 2
    let nested = txn(
        vec![cmp(
            "x",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(b"X".to_vec()),
        )],
        vec![op_put("y", "1")],
        vec![op_range(range_req("x", "")), op_del("nope", "")],
    );
    let t = s
        .txn(txn(
            vec![],
            vec![
                op_range(range_req("a", "")),
                op_put("x", "X"),
                op_range(range_req("x", "")),
                op_txn(nested),
            ],
            vec![],
        ))
        .unwrap();
    assert_eq!((t.header, t.succeeded), (header(3), true));
    let r = responses(&t);
    assert_eq!(as_range(&r[0]).header, header(2));
    let response_op::Response::ResponseTxn(inner) = &r[3] else {
        panic!("not a txn: {:?}", r[3]);
    };
    assert_eq!(inner.header, Some(ResponseHeader::default()));
    assert!(!inner.succeeded, "decided before the outer put");
    let ir = responses(inner);
    assert_eq!(as_range(&ir[0]).kvs[0].value, b"X", "but runs after it");
    let response_op::Response::ResponseDeleteRange(d) = &ir[1] else {
        panic!("not a delete: {:?}", ir[1]);
    };
    assert_eq!((d.header, d.deleted), (header(3), 0));
    assert!(s.get("y").is_none());
}

#[test]
fn txn_checks_on_the_state_fail_the_whole_txn() {
    // etcd's checkRequestPut/checkRequestRange, on the chosen path, before anything runs.
    let mut s = Harness::new();
    s.put("k", "v"); // 2
    let mut ignore = put_req("missing", "");
    ignore.ignore_value = true;
    let with_ignore = txn(
        vec![],
        vec![
            op_put("a", "1"),
            RequestOp {
                request: Some(request_op::Request::RequestPut(ignore)),
            },
        ],
        vec![],
    );
    assert_eq!(s.txn(with_ignore), Err(EtcdError::KeyNotFound));
    let mut leased = put_req("b", "1");
    leased.lease = 7;
    let with_lease = txn(
        vec![],
        vec![
            op_put("a", "1"),
            RequestOp {
                request: Some(request_op::Request::RequestPut(leased)),
            },
        ],
        vec![],
    );
    assert_eq!(s.txn(with_lease), Err(EtcdError::LeaseNotFound));
    // Probed: a range at the txn's own new revision is a future revision.
    let mut future = range_req("a", "");
    future.revision = 3;
    let t = txn(vec![], vec![op_put("a", "1"), op_range(future)], vec![]);
    assert_eq!(s.txn(t), Err(EtcdError::FutureRevision));
    // Only the chosen path is checked.
    let mut ignore = put_req("missing", "");
    ignore.ignore_value = true;
    let other_branch = txn(
        vec![],
        vec![op_put("a", "1")],
        vec![RequestOp {
            request: Some(request_op::Request::RequestPut(ignore)),
        }],
    );
    assert!(s.txn(other_branch).is_ok());
    assert_eq!(
        (s.revision(), s.kvs(all()).len()),
        (3, 2),
        "only the last txn applied"
    );
}

#[test]
fn a_negative_range_revision_in_a_txn_is_compacted_once_compacted() {
    // Probed: after `compaction 0`, a txn's range at revision -5 is "compacted" while a
    // plain range at -5 is the current revision; a txn's range at revision 0 is fine.
    let mut s = Harness::new();
    s.put("a", "1"); // 2
    let neg = |rev| {
        let mut r = range_req("a", "");
        r.revision = rev;
        txn(vec![], vec![op_range(r)], vec![])
    };
    assert!(
        s.txn(neg(-1)).is_ok(),
        "-1 is not below the never-compacted -1"
    );
    s.compact(0).unwrap();
    assert_eq!(s.txn(neg(-5)), Err(EtcdError::Compacted));
    assert!(s.txn(neg(0)).is_ok());
    let mut plain = range_req("a", "");
    plain.revision = -5;
    assert_eq!(s.range(plain).unwrap().count, 1);
}

#[test]
fn a_txn_failing_midway_leaves_nothing_behind() {
    // `del --from-key a; put b --ignore-value` passes etcd's checks (b exists before the
    // txn; a delete to the end covers nothing in the duplicate check) but the put then
    // finds b deleted: etcd 3.4 panics there; this store fails the txn and undoes the delete.
    let mut s = Harness::new();
    s.put("a", "1"); // 2
    s.put("b", "2"); // 3
    let mut ignore = put_req("b", "");
    ignore.ignore_value = true;
    let t = txn(
        vec![],
        vec![
            op_del("a", "\0"),
            RequestOp {
                request: Some(request_op::Request::RequestPut(ignore)),
            },
        ],
        vec![],
    );
    assert_eq!(s.txn(t), Err(EtcdError::KeyNotFound));
    assert_eq!(
        (s.revision(), s.kvs(all())),
        (3, strs(&[("a", "1"), ("b", "2")]))
    );
    assert_eq!(s.store.key_count(), 2);
}

#[test]
fn compaction_bounds() {
    // BRIEF §4.19: R ≤ compact → compacted, R > current → future, R = current allowed,
    // and a compaction does not bump. Probed: on a fresh store `compaction 0` succeeds
    // (the compact revision starts at -1), a second `compaction 0` and `compaction -1` fail.
    let mut s = Harness::new();
    assert!(s.compact(0).is_ok());
    assert_eq!(s.compact(0), Err(EtcdError::Compacted));
    assert_eq!(s.compact(-1), Err(EtcdError::Compacted));
    s.put("a", "1"); // 2
    s.put("a", "2"); // 3
    assert_eq!(s.compact(4), Err(EtcdError::FutureRevision));
    let resp = s.compact(3).unwrap();
    assert_eq!(
        (resp.header, s.revision(), s.store.compact_revision()),
        (header(3), 3, 3)
    );
    assert_eq!(s.compact(3), Err(EtcdError::Compacted));
    assert_eq!(s.compact(2), Err(EtcdError::Compacted));
}

#[test]
fn the_compact_revision_is_readable_and_below_it_is_not() {
    // BRIEF §4.20: compact 5, `get foo --rev 5` OK, `--rev 4` compacted; future revisions too.
    let mut s = Harness::new();
    for v in ["1", "2", "3", "4"] {
        s.put("foo", v); // 2..5
    }
    s.put("bar", "x"); // 6
    s.compact(5).unwrap();
    let at = |rev| {
        let mut r = range_req("foo", "");
        r.revision = rev;
        s.range(r)
    };
    assert_eq!(at(5).unwrap().kvs[0].value, b"4");
    assert_eq!(at(4), Err(EtcdError::Compacted));
    assert_eq!(at(7), Err(EtcdError::FutureRevision));
    assert_eq!(at(6).unwrap().kvs[0].value, b"4");
}

#[test]
fn compaction_drops_a_key_whose_newest_change_before_it_is_a_tombstone() {
    // BRIEF §4.19: once removal has run, nothing of `gone` is left at or below C.
    let mut s = Harness::new();
    s.put("gone", "1"); // 2
    s.del("gone", ""); // 3
    s.put("kept", "1"); // 4
    s.put("kept", "2"); // 5
    s.compact(5).unwrap();
    while s.commit_step(2) {}
    let remaining: Vec<_> = s
        .tree
        .scan_prefix(b"r")
        .map(|kv| kv.unwrap().0.to_vec())
        .collect();
    assert_eq!(
        remaining,
        vec![rev_key(Revision { main: 5, sub: 0 }).to_vec()]
    );
    assert_eq!(s.tree.scan_prefix(b"h").count(), 1);
    assert_eq!(s.kvs(all()), strs(&[("kept", "2")]));
}

impl Harness {
    /// One physical-compaction step, written; whether more remains.
    pub fn commit_step(&mut self, max_records: usize) -> bool {
        let (batch, state, more) = self.store.compact_step(max_records).unwrap();
        self.tree.apply_batch(batch).unwrap();
        self.store.set_state(state);
        more
    }

    /// Reads at every revision from the compact revision on, for comparing stores.
    pub fn every_revision(&self) -> Vec<Vec<(String, String, i64, i64)>> {
        (self.store.compact_revision().max(1)..=self.revision())
            .map(|rev| {
                let mut r = all();
                r.revision = rev;
                self.range(r)
                    .unwrap()
                    .kvs
                    .iter()
                    .map(|kv| {
                        let (k, v) = pair(kv);
                        (k, v, kv.create_revision, kv.version)
                    })
                    .collect()
            })
            .collect()
    }
}

#[test]
fn physical_compaction_changes_no_read_and_no_hash() {
    // Removal in steps of one record leaves every readable revision, HashKV at each one
    // and the state digest as they were right after `compaction`.
    let mut s = Harness::new();
    for i in 0..6 {
        s.put(&format!("k{}", i % 3), &format!("v{i}")); // 2..7
    }
    s.del("k1", ""); // 8
    s.put("k1", "again"); // 9
    s.compact(8).unwrap();
    let digest = |s: &Harness| {
        let mut all = Vec::new();
        s.store.digest(|b| all.extend_from_slice(b)).unwrap();
        all
    };
    let hashes = |s: &Harness| [0, 9].map(|r| s.store.hash_kv(r).unwrap().hash);
    let before = (s.every_revision(), hashes(&s), digest(&s));
    let mut steps = 0;
    while s.commit_step(1) {
        steps += 1;
        assert_eq!(
            (s.every_revision(), hashes(&s), digest(&s)),
            before,
            "after step {steps}"
        );
    }
    assert_eq!((s.every_revision(), hashes(&s), digest(&s)), before);
    assert_eq!(s.store.physically_compacted(), 8);
    assert!(steps >= 6, "one record a step: {steps} steps");
}

#[test]
fn hash_kv_bounds_and_compact_revision() {
    // BRIEF §4.20, §4.22: 0 < rev ≤ compact → compacted; rev > current → future; 0 is the
    // current revision; compact_revision is -1 until a compaction. Probed: a negative
    // revision hashes nothing (etcd gave the hash of revision 1 for `--rev=-3`).
    let mut s = Harness::new();
    s.put("a", "1"); // 2
    s.put("a", "2"); // 3
    let h = s.store.hash_kv(0).unwrap();
    assert_eq!((h.compact_revision, h.header), (-1, header(3)));
    assert_eq!(h.hash, s.store.hash_kv(3).unwrap().hash);
    assert_ne!(h.hash, s.store.hash_kv(2).unwrap().hash);
    assert_eq!(
        s.store.hash_kv(-3).unwrap().hash,
        s.store.hash_kv(1).unwrap().hash
    );
    assert!(matches!(
        s.store.hash_kv(4),
        Err(Error::Etcd(EtcdError::FutureRevision))
    ));
    s.compact(2).unwrap();
    assert!(matches!(
        s.store.hash_kv(2),
        Err(Error::Etcd(EtcdError::Compacted))
    ));
    assert_eq!(s.store.hash_kv(3).unwrap().compact_revision, 2);
}

#[test]
fn hash_kv_is_equal_whatever_physical_compaction_has_done() {
    // Two replicas with the same history, one compacted physically and one not.
    let mut a = Harness::new();
    let mut b = Harness::new();
    for s in [&mut a, &mut b] {
        for i in 0..10 {
            s.put(&format!("k{}", i % 4), &format!("{i}"));
        }
        s.del("k2", "");
        s.compact(9).unwrap();
    }
    while a.commit_step(3) {}
    assert_eq!(a.store.hash_kv(0).unwrap(), b.store.hash_kv(0).unwrap());
    assert_eq!(a.store.hash_kv(10).unwrap(), b.store.hash_kv(10).unwrap());
    assert!(a.tree.len() < b.tree.len(), "a really removed records");
}

#[test]
fn a_later_compaction_removes_what_an_earlier_one_kept() {
    // `k`@2 is kept by compaction at 3 (it is k's newest at or below 3); after `k`@4 and a
    // compaction at 4, it goes too.
    let mut s = Harness::new();
    s.put("k", "1"); // 2
    s.put("other", "1"); // 3
    s.compact(3).unwrap();
    while s.commit_step(10) {}
    s.put("k", "2"); // 4
    s.compact(4).unwrap();
    while s.commit_step(10) {}
    let revs: Vec<_> = s
        .tree
        .scan_prefix(b"r")
        .map(|kv| super::keys::rev_of_key(&kv.unwrap().0).unwrap().main)
        .collect();
    assert_eq!(revs, vec![3, 4]);
}

#[test]
fn a_damaged_record_is_an_error_not_a_panic() {
    let mut s = Harness::new();
    s.put("a", "1");
    s.tree.insert(live_key(b"a"), &b"short"[..]).unwrap();
    assert!(matches!(s.store.range(&all()), Err(Error::Disk(_))));
    s.tree.insert(live_key(b"b"), &[0u8; 40][..]).unwrap();
    assert!(
        s.store.get(b"b").is_err(),
        "a live entry pointing at no record"
    );
    s.tree.insert(b"h\x01\0\x07", &b"x"[..]).unwrap();
    let mut past = all();
    past.revision = 1;
    assert!(s.store.range(&past).is_err(), "a bad history key");
}
