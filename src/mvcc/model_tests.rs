//! The store against a plain model of etcd's semantics, on a few thousand seeded random
//! operations: puts, deletes, Txns, compactions, reads at random revisions. Two stores get
//! the same commands — one compacts physically in random steps, one never does — and must
//! agree with the model and with each other (reads, HashKV, the state digest). Commands are
//! grouped into apply batches of random size, so later commands read through the overlay.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use etcd_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_api::etcdserverpb::{CompactionRequest, RangeRequest, RequestOp, TxnRequest};
use etcd_api::EtcdError;

use super::tests::{cmp, del_req, op_del, op_put, op_range, put_req, range_req, txn, Harness};
use super::write::Writer;
use crate::error::Error;

/// Operations each seed runs.
const OPS: usize = 3_000;
/// Seeds tried.
const SEEDS: [u64; 3] = [1, 7, 42];
/// Keys the operations pick from, with zero bytes and prefixes of each other.
const KEYS: [&str; 7] = ["a", "a\0", "ab", "b", "c", "d\0x", "e"];

/// One key's state at a revision: value, create revision, mod revision, version.
type State = (Vec<u8>, i64, i64, i64);

#[derive(Default)]
struct Model {
    /// Each key's changes: main revision, and the state after it (`None`: deleted).
    history: BTreeMap<Vec<u8>, Vec<(i64, Option<State>)>>,
    revision: i64,
    compact: i64,
}

impl Model {
    fn new() -> Model {
        Model {
            revision: 1,
            compact: -1,
            ..Default::default()
        }
    }

    fn at(&self, key: &[u8], rev: i64) -> Option<State> {
        self.history
            .get(key)?
            .iter()
            .rev()
            .find(|(m, _)| *m <= rev)
            .and_then(|(_, s)| s.clone())
    }

    fn put(&mut self, key: &[u8], value: &[u8], main: i64) {
        let (create, version) = match self.at(key, i64::MAX) {
            Some((_, c, _, v)) => (c, v + 1),
            None => (main, 1),
        };
        let state = (value.to_vec(), create, main, version);
        self.history
            .entry(key.to_vec())
            .or_default()
            .push((main, Some(state)));
    }

    /// Deletes the live keys in `[key, end)` (one key if `end` is empty); how many.
    fn delete(&mut self, key: &[u8], end: &[u8], main: i64) -> usize {
        let doomed: Vec<Vec<u8>> = self
            .history
            .keys()
            .filter(|k| in_range(k, key, end) && self.at(k, i64::MAX).is_some())
            .cloned()
            .collect();
        for k in &doomed {
            self.history.get_mut(k).unwrap().push((main, None));
        }
        doomed.len()
    }

    /// A range as etcd answers it: key-values and count, or the error.
    fn range(
        &self,
        key: &[u8],
        end: &[u8],
        rev: i64,
        limit: i64,
    ) -> Result<(Vec<State>, bool, i64), EtcdError> {
        if rev > self.revision {
            return Err(EtcdError::FutureRevision);
        }
        let rev = if rev <= 0 { self.revision } else { rev };
        if rev < self.compact {
            return Err(EtcdError::Compacted);
        }
        let mut kvs: Vec<State> = self
            .history
            .keys()
            .filter(|k| in_range(k, key, end))
            .filter_map(|k| {
                self.at(k, rev).map(|mut s| {
                    // The model keeps the key beside the value, for comparing.
                    let mut kv = k.clone();
                    kv.push(b'=');
                    kv.extend_from_slice(&s.0);
                    s.0 = kv;
                    s
                })
            })
            .collect();
        let count = kvs.len() as i64;
        let more = limit > 0 && kvs.len() as i64 > limit;
        if more {
            kvs.truncate(limit as usize);
        }
        Ok((kvs, more, count))
    }
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    etcd_api::range::contains(key, end, k)
}

/// A store's range in the model's terms.
fn store_range(s: &Harness, req: &RangeRequest) -> Result<(Vec<State>, bool, i64), EtcdError> {
    match s.store.range(req) {
        Err(Error::Etcd(e)) => Err(e),
        Err(e) => panic!("storage error: {e}"),
        Ok(r) => Ok((
            r.kvs
                .iter()
                .map(|kv| {
                    let mut k = kv.key.clone();
                    k.push(b'=');
                    k.extend_from_slice(&kv.value);
                    (k, kv.create_revision, kv.mod_revision, kv.version)
                })
                .collect(),
            r.more,
            r.count,
        )),
    }
}

fn key(rng: &mut StdRng) -> &'static str {
    KEYS[rng.gen_range(0..KEYS.len())]
}

/// A random range: one key, a span, or everything from a key on.
fn range_of(rng: &mut StdRng) -> (&'static str, &'static str) {
    match rng.gen_range(0..4) {
        0 => (key(rng), ""),
        1 => (key(rng), "\0"),
        _ => {
            let (a, b) = (key(rng), key(rng));
            (a.min(b), a.max(b))
        }
    }
}

/// A command, as the model and the stores take it.
enum Command {
    Put(&'static str, String),
    Delete(&'static str, &'static str),
    /// Compare `value(key) == value`; on success put the keys, else delete `other`.
    Txn {
        key: &'static str,
        value: String,
        puts: Vec<(&'static str, String)>,
        other: &'static str,
    },
    Compact(i64),
}

impl Command {
    fn random(rng: &mut StdRng, model: &Model) -> Command {
        match rng.gen_range(0..20) {
            0..=9 => Command::Put(key(rng), format!("v{}", rng.gen_range(0..5))),
            10..=12 => {
                let (a, b) = range_of(rng);
                Command::Delete(a, b)
            }
            13..=18 => {
                let mut puts: Vec<(&str, String)> = Vec::new();
                for _ in 0..rng.gen_range(1..4) {
                    let k = key(rng);
                    if puts.iter().all(|(p, _)| *p != k) {
                        puts.push((k, format!("t{}", rng.gen_range(0..5))));
                    }
                }
                Command::Txn {
                    key: key(rng),
                    value: format!("v{}", rng.gen_range(0..5)),
                    puts,
                    other: key(rng),
                }
            }
            _ => Command::Compact(rng.gen_range(model.compact - 1..=model.revision + 1)),
        }
    }

    /// Applies the command to the model; whether it failed.
    fn model(&self, m: &mut Model) -> Option<EtcdError> {
        let main = m.revision + 1;
        match self {
            Command::Put(k, v) => {
                m.put(k.as_bytes(), v.as_bytes(), main);
                m.revision = main;
            }
            Command::Delete(k, end) => {
                if m.delete(k.as_bytes(), end.as_bytes(), main) > 0 {
                    m.revision = main;
                }
            }
            Command::Txn {
                key,
                value,
                puts,
                other,
            } => {
                let holds = m
                    .at(key.as_bytes(), i64::MAX)
                    .is_some_and(|s| s.0 == value.as_bytes());
                let changed = if holds {
                    for (k, v) in puts {
                        m.put(k.as_bytes(), v.as_bytes(), main);
                    }
                    true
                } else {
                    m.delete(other.as_bytes(), b"", main) > 0
                };
                if changed {
                    m.revision = main;
                }
            }
            Command::Compact(rev) => {
                if *rev <= m.compact {
                    return Some(EtcdError::Compacted);
                }
                if *rev > m.revision {
                    return Some(EtcdError::FutureRevision);
                }
                m.compact = *rev;
            }
        }
        None
    }

    /// Runs the command on a store's writer; whether it failed.
    fn store(&self, w: &mut Writer<'_>) -> Option<EtcdError> {
        match self {
            Command::Put(k, v) => w.put(&put_req(k, v)).unwrap().err(),
            Command::Delete(k, end) => w.delete_range(&del_req(k, end)).unwrap().err(),
            Command::Txn {
                key,
                value,
                puts,
                other,
            } => {
                let c = cmp(
                    key,
                    CompareTarget::Value,
                    CompareResult::Equal,
                    TargetUnion::Value(value.clone().into_bytes()),
                );
                let mut success: Vec<RequestOp> = puts.iter().map(|(k, v)| op_put(k, v)).collect();
                success.push(op_range(range_req("\0", "\0")));
                let t: TxnRequest = txn(vec![c], success, vec![op_del(other, "")]);
                w.txn(&t).unwrap().err()
            }
            Command::Compact(rev) => w
                .compaction(&CompactionRequest {
                    revision: *rev,
                    physical: false,
                })
                .unwrap()
                .err(),
        }
    }
}

#[test]
fn the_store_agrees_with_a_model_of_etcd() {
    for seed in SEEDS {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut model = Model::new();
        // `a` compacts physically as it goes; `b` never does.
        let (mut a, mut b) = (Harness::new(), Harness::new());
        let mut done = 0;
        while done < OPS {
            let batch: Vec<(Command, Option<EtcdError>)> = (0..rng.gen_range(1..5))
                .map(|_| {
                    let c = Command::random(&mut rng, &model);
                    let failed = c.model(&mut model);
                    (c, failed)
                })
                .collect();
            done += batch.len();
            let expected: Vec<Option<EtcdError>> = batch.iter().map(|(_, f)| *f).collect();
            for s in [&mut a, &mut b] {
                let got: Vec<Option<EtcdError>> =
                    s.commit(|w| batch.iter().map(|(c, _)| c.store(w)).collect());
                assert_eq!(got, expected, "seed {seed} after {done} ops");
            }
            assert_eq!(a.revision(), model.revision, "seed {seed} after {done} ops");
            assert_eq!(a.store.compact_revision(), model.compact);
            if rng.gen_bool(0.3) {
                a.commit_step(rng.gen_range(1..8));
            }
            for _ in 0..2 {
                let (k, end) = range_of(&mut rng);
                let mut req = range_req(k, end);
                req.revision = rng.gen_range(model.compact - 2..=model.revision + 1);
                req.limit = rng.gen_range(-1..4);
                let expected = model.range(k.as_bytes(), end.as_bytes(), req.revision, req.limit);
                assert_eq!(
                    store_range(&a, &req),
                    expected,
                    "seed {seed}, {done} ops, {req:?}"
                );
                assert_eq!(
                    store_range(&b, &req),
                    expected,
                    "seed {seed}, {done} ops, {req:?}"
                );
            }
            if rng.gen_bool(0.02) {
                assert_eq!(
                    a.store.hash_kv(0).unwrap(),
                    b.store.hash_kv(0).unwrap(),
                    "seed {seed}"
                );
                let digest = |s: &Harness| {
                    let mut v = Vec::new();
                    s.store.digest(|x| v.extend_from_slice(x)).unwrap();
                    v
                };
                assert_eq!(digest(&a), digest(&b), "seed {seed}");
                assert_eq!(a.store.key_count(), b.store.key_count());
            }
        }
        // A store reopened (its key index rebuilt from the revision log) and one restored
        // from a snapshot read as the store that wrote them, at every revision.
        let reopened = b.reopened();
        let restored = b.restored_elsewhere();
        assert_eq!(reopened.every_revision(), b.every_revision(), "seed {seed}");
        assert_eq!(restored.every_revision(), b.every_revision(), "seed {seed}");
        while a.commit_step(50) {}
        assert_eq!(a.every_revision(), b.every_revision(), "seed {seed}");
        assert_eq!(
            a.reopened().every_revision(),
            b.every_revision(),
            "seed {seed}"
        );
        assert_eq!(a.store.hash_kv(0).unwrap(), b.store.hash_kv(0).unwrap());
        assert_eq!(a.store.physically_compacted(), model.compact.max(-1));
    }
}
