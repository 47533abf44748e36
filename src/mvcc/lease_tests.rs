//! The lease table's rules, as the store applies them, each a short etcd session. Revisions
//! in comments are the store's after the line; behaviour probed on etcd 3.4.23 with etcdctl
//! is marked "etcd:".

use etcd_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_api::etcdserverpb::{
    request_op, Compare, LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest,
    LeaseRevokeRequest, PutRequest, RequestOp, TxnRequest,
};
use etcd_api::EtcdError;

use super::lease::{Lease, MAX_LEASE_TTL};
use super::tests::{put_req, Harness};

impl Harness {
    fn grant(&mut self, id: i64, ttl: i64) -> Result<i64, EtcdError> {
        let req = LeaseGrantRequest { ttl, id };
        self.commit(|w| w.lease_grant(&req).unwrap()).map(|r| r.ttl)
    }

    fn revoke(&mut self, id: i64) -> Result<i64, EtcdError> {
        let req = LeaseRevokeRequest { id };
        self.commit(|w| w.lease_revoke(&req).unwrap())
            .map(|r| r.header.unwrap().revision)
    }

    fn put_leased(&mut self, k: &str, v: &str, lease: i64) -> Result<i64, EtcdError> {
        self.try_put(PutRequest {
            lease,
            ..put_req(k, v)
        })
        .map(|r| r.header.unwrap().revision)
    }

    fn keys_of(&self, lease: i64) -> Vec<String> {
        self.store
            .index()
            .lease_keys(lease)
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }
}

/// A grant makes a lease and no revision; a put attaches a key; a revoke deletes every key
/// of the lease in one revision and the lease with them.
#[test]
fn revoking_a_lease_deletes_all_its_keys_in_one_revision() {
    let mut s = Harness::new();
    assert_eq!(s.grant(7, 60), Ok(60));
    assert_eq!(s.revision(), 1, "a grant changes no revision");
    s.put_leased("a", "1", 7).unwrap(); // 2
    s.put_leased("b", "1", 7).unwrap(); // 3
    s.put("c", "1"); // 4
    assert_eq!(s.keys_of(7), ["a", "b"]);
    assert_eq!(s.get("a").unwrap().lease, 7);
    assert_eq!(s.revoke(7), Ok(5));
    assert_eq!(s.revision(), 5, "both deletes in revision 5");
    let deletes: Vec<_> = s
        .last_records
        .iter()
        .map(|(r, _)| (r.main, r.sub))
        .collect();
    assert_eq!(deletes, [(5, 0), (5, 1)]);
    assert!(s.get("a").is_none() && s.get("b").is_none());
    assert!(s.get("c").is_some(), "a key without the lease stays");
    assert!(!s.store.leases().contains(7));
    assert_eq!(s.revoke(7), Err(EtcdError::LeaseNotFound), "gone");
}

/// A lease without keys is revoked without a revision.
#[test]
fn revoking_a_lease_without_keys_changes_no_revision() {
    let mut s = Harness::new();
    s.grant(7, 60).unwrap();
    s.put_leased("a", "1", 7).unwrap(); // 2
    s.put("a", "2"); // 3: a put without a lease detaches the key (etcd: source)
    assert!(s.keys_of(7).is_empty());
    assert_eq!(s.revoke(7), Ok(3));
    assert_eq!(s.get("a").unwrap().value, b"2", "no longer the lease's");
}

/// Bad grants and puts are refused with etcd's errors and change nothing.
#[test]
fn bad_grants_and_puts_get_etcds_errors_and_change_nothing() {
    let mut s = Harness::new();
    s.grant(7, 60).unwrap();
    assert_eq!(s.grant(7, 10), Err(EtcdError::LeaseExist));
    assert_eq!(
        s.store.leases().get(7).unwrap().ttl,
        60,
        "the first grant stands"
    );
    assert_eq!(
        s.grant(8, MAX_LEASE_TTL + 1),
        Err(EtcdError::LeaseTtlTooLarge),
        "etcd: too large lease TTL"
    );
    assert_eq!(
        s.grant(8, MAX_LEASE_TTL),
        Ok(MAX_LEASE_TTL),
        "the limit itself"
    );
    assert_eq!(
        s.grant(0, 10),
        Err(EtcdError::LeaseNotFound),
        "id 0 is no lease"
    );
    assert_eq!(
        s.put_leased("a", "1", 99),
        Err(EtcdError::LeaseNotFound),
        "etcd: requested lease not found"
    );
    assert!(s.get("a").is_none());
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                lease: 99,
                ..put_req("a", "1")
            })),
        }],
        ..Default::default()
    };
    assert_eq!(s.txn(txn), Err(EtcdError::LeaseNotFound));
    assert_eq!((s.revision(), s.get("a")), (1, None));
}

/// A Txn compares a key's lease (etcdctl's lock and elect do not, but clients do).
#[test]
fn a_txn_compares_on_a_keys_lease() {
    let mut s = Harness::new();
    s.grant(7, 60).unwrap();
    s.put_leased("a", "1", 7).unwrap();
    let on_lease = |lease| TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Lease as i32,
            key: b"a".to_vec(),
            target_union: Some(TargetUnion::Lease(lease)),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(s.txn(on_lease(7)).unwrap().succeeded);
    assert!(!s.txn(on_lease(8)).unwrap().succeeded);
}

/// Checkpoints keep a remaining TTL (at most the TTL, never below 0) until the next one;
/// a checkpoint of a lease gone meanwhile is passed over.
#[test]
fn checkpoints_record_the_remaining_ttl() {
    let mut s = Harness::new();
    s.grant(7, 60).unwrap();
    let checkpoint = |id, remaining_ttl| LeaseCheckpointRequest {
        checkpoints: vec![LeaseCheckpoint { id, remaining_ttl }],
    };
    let cp = checkpoint(7, 25);
    s.commit(|w| w.lease_checkpoint(&cp).unwrap()).unwrap();
    assert_eq!(
        s.store.leases().get(7),
        Some(Lease {
            ttl: 60,
            remaining: 25
        })
    );
    let cp = checkpoint(7, 600);
    s.commit(|w| w.lease_checkpoint(&cp).unwrap()).unwrap();
    assert_eq!(s.store.leases().get(7).unwrap().remaining, 60);
    let cp = checkpoint(9, 5);
    s.commit(|w| w.lease_checkpoint(&cp).unwrap()).unwrap();
    assert!(!s.store.leases().contains(9));
    assert_eq!(s.revision(), 1);
}

/// Leases and their keys come back when the store is opened again and in a snapshot.
#[test]
fn leases_survive_a_reopen_and_a_snapshot() {
    let mut s = Harness::new();
    s.grant(7, 60).unwrap();
    s.grant(8, 5).unwrap();
    s.put_leased("a", "1", 7).unwrap();
    let cp = LeaseCheckpointRequest {
        checkpoints: vec![LeaseCheckpoint {
            id: 7,
            remaining_ttl: 30,
        }],
    };
    s.commit(|w| w.lease_checkpoint(&cp).unwrap()).unwrap();
    for (how, other) in [
        ("reopened", s.reopened()),
        ("restored", s.restored_elsewhere()),
    ] {
        assert_eq!(other.store.leases(), s.store.leases(), "{how}");
        assert_eq!(other.keys_of(7), ["a"], "{how}");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        s.store.digest(|x| a.extend_from_slice(x)).unwrap();
        other.store.digest(|x| b.extend_from_slice(x)).unwrap();
        assert_eq!(a, b, "{how}: the state hash covers the leases alike");
    }
    let mut other = s.restored_elsewhere();
    assert_eq!(
        other.revoke(7),
        Ok(3),
        "the restored lease still deletes its key"
    );
    assert!(other.get("a").is_none());
}
