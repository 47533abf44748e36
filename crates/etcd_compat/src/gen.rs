//! [`Generator`]: a seeded random source of etcd KV requests.
//!
//! The key space is small ([`KEYS`]), so requests collide — the same key is put, read at old
//! revisions, deleted and created again — and its keys hold the bytes that break careless
//! code: `\0` (etcd's "from this key on" marker, and a key of its own), `\xff` (the byte a
//! prefix end cannot increment), keys that are prefixes of others. Every option of every
//! request is drawn, and so are requests etcd refuses: empty keys, unknown leases,
//! `ignore_value` with a value, too many txn ops, duplicate keys in a txn, revisions in the
//! future or compacted away.
//!
//! The generator follows the store through [`Generator::observe`]: the revision the last
//! answer showed and the last compaction, so that revisions are aimed at the past, the
//! present, the future, the compaction point and before it. Given the same seed and the same
//! answers it makes the same requests.
//!
//! The key space has at most 12 keys: etcd sorts a Range's results with Go's `sort.Sort`,
//! which is stable only up to 12 elements (an insertion sort); with more, keys that tie on
//! the sort target could come back in an order no other store could be expected to match.

use etcd_api::etcdserverpb::{
    compare, request_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use etcd_api::range::{prefix_end, FROM_KEY};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::store::Reply;

/// The keys requests name (12: see the module doc).
pub const KEYS: [&[u8]; 12] = [
    b"\0",
    b"a",
    b"a\0",
    b"a\xff",
    b"ab",
    b"b",
    b"b/1",
    b"b/2",
    b"b\xff\xff",
    b"c",
    b"\xff",
    b"\xff\xff",
];

/// Prefixes of `--prefix`-style ranges; the empty prefix is every key.
const PREFIXES: [&[u8]; 8] = [b"", b"a", b"a\0", b"b", b"b/", b"b\xff", b"\xff", b"z"];

/// Bounds of explicit ranges besides the keys: between keys, before all, after all.
const BOUNDS: [&[u8]; 5] = [b"a\0\0", b"b0", b"bb", b"\x01", b"\xff\xff\xff"];

/// Values of puts and of value compares.
const VALUES: [&[u8]; 8] = [b"", b"v", b"v1", b"v2", b"w", b"x\0y", b"\xff", b"\xfe\xff"];

/// Size of the occasional big value, in bytes.
pub const BIG_VALUE_BYTES: usize = 4 * 1024;
/// etcd's default limit on the ops of one txn branch (and on its compares).
pub const MAX_TXN_OPS: usize = 128;
/// Ops in the outer branch of a txn that puts the nested-txn budget to the test: a nested txn
/// may have only `MAX_TXN_OPS` minus the outer op count.
const BUDGET_OUTER_OPS: usize = 100;
/// How deep generated txns nest (a txn inside a txn inside a txn).
const MAX_TXN_DEPTH: usize = 2;

/// One request.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `KV/Range`.
    Range(RangeRequest),
    /// `KV/Put`.
    Put(PutRequest),
    /// `KV/DeleteRange`.
    DeleteRange(DeleteRangeRequest),
    /// `KV/Txn`.
    Txn(TxnRequest),
    /// `KV/Compact`.
    Compact(CompactionRequest),
}

impl Op {
    /// Its RPC's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Range(_) => "Range",
            Op::Put(_) => "Put",
            Op::DeleteRange(_) => "DeleteRange",
            Op::Txn(_) => "Txn",
            Op::Compact(_) => "Compact",
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Op::Range(r) => crate::show::range(r),
            Op::Put(p) => crate::show::put(p),
            Op::DeleteRange(d) => crate::show::delete_range(d),
            Op::Txn(t) => crate::show::txn(t),
            Op::Compact(c) => crate::show::compact(c),
        };
        f.write_str(&text)
    }
}

/// A seeded source of requests (see the module doc).
pub struct Generator {
    /// The seed it was made with.
    seed: u64,
    /// Every draw.
    rng: StdRng,
    /// The store's revision as the last answer showed it (1: a new, empty store).
    revision: i64,
    /// The revision of the last successful compaction (0: none yet).
    compacted: i64,
    /// A compaction succeeded and no write has moved the revision since: a member that has
    /// reached the revision may not have applied the compaction yet, so no serializable reads
    /// (their answers could differ by member).
    compacted_since_write: bool,
    /// Whether Ranges inside a Txn may name a revision (see [`Generator::without_txn_range_revisions`]).
    txn_range_revisions: bool,
    /// How deep in a txn the request being made is (0: not in one).
    txn_depth: usize,
}

impl Generator {
    /// A generator for a new, empty store (at revision 1).
    pub fn new(seed: u64) -> Generator {
        Generator {
            seed,
            rng: StdRng::seed_from_u64(seed),
            revision: 1,
            compacted: 0,
            compacted_since_write: false,
            txn_range_revisions: true,
            txn_depth: 0,
        }
    }

    /// The same generator, but Ranges inside a Txn always read the current revision. For runs
    /// against an etcd of several members: etcd 3.4 drops a write Txn's Ranges on every member
    /// but the one the client asked (etcd issue 18667), so a Range there that fails — at a
    /// compacted or future revision, or at a negative one once etcd has compacted — fails the
    /// Txn on that member only, while the others apply its writes, and the members' data part.
    /// The draws stay the same, so the sequence is otherwise the one the seed gives.
    pub fn without_txn_range_revisions(mut self) -> Generator {
        self.txn_range_revisions = false;
        self
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The store's revision as last seen.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The last compaction's revision as last seen (0: none).
    pub fn compacted(&self) -> i64 {
        self.compacted
    }

    /// Takes note of what the store answered to `op`.
    pub fn observe(&mut self, op: &Op, reply: &Reply) {
        let Ok(answer) = reply else { return };
        if answer.revision() > self.revision {
            self.revision = answer.revision();
            self.compacted_since_write = false;
        }
        if let Op::Compact(c) = op {
            self.compacted = self.compacted.max(c.revision);
            self.compacted_since_write = true;
        }
    }

    /// The next request.
    pub fn next_op(&mut self) -> Op {
        match self.pick(&[33, 30, 12, 21, 4]) {
            0 => Op::Range(self.range()),
            1 => Op::Put(self.put()),
            2 => Op::DeleteRange(self.delete_range()),
            3 => Op::Txn(self.txn(0)),
            _ => Op::Compact(self.compact()),
        }
    }

    /// An index drawn with the given weights.
    fn pick(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.rng.gen_range(0..total);
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    fn key(&mut self) -> Vec<u8> {
        KEYS.choose(&mut self.rng).expect("keys").to_vec()
    }

    fn value(&mut self) -> Vec<u8> {
        match self.pick(&[90, 8, 2]) {
            0 => VALUES.choose(&mut self.rng).expect("values").to_vec(),
            1 => {
                let len = self.rng.gen_range(1..16);
                (0..len).map(|_| self.rng.gen()).collect()
            }
            _ => vec![b'B'; BIG_VALUE_BYTES],
        }
    }

    /// A revision between `lo` and `hi`, both included (`lo` when the span is empty).
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            lo
        } else {
            self.rng.gen_range(lo..=hi)
        }
    }

    /// A key and range end. `weights` are those of: one key, a prefix, from a key on, an
    /// explicit range (its end may be at or before its key), every key, an empty key.
    fn span(&mut self, weights: &[u32; 6]) -> (Vec<u8>, Vec<u8>) {
        match self.pick(weights) {
            0 => (self.key(), Vec::new()),
            1 => {
                let prefix = PREFIXES.choose(&mut self.rng).expect("prefixes").to_vec();
                if prefix.is_empty() {
                    (FROM_KEY.to_vec(), FROM_KEY.to_vec())
                } else {
                    let end = prefix_end(&prefix);
                    (prefix, end)
                }
            }
            2 => (self.key(), FROM_KEY.to_vec()),
            3 => {
                let bound = |g: &mut Self| {
                    if g.chance(0.7) {
                        g.key()
                    } else {
                        BOUNDS.choose(&mut g.rng).expect("bounds").to_vec()
                    }
                };
                let (a, b) = (bound(self), bound(self));
                // Mostly in order; sometimes backwards or empty, which etcd answers with nothing.
                if self.chance(0.8) && a > b {
                    (b, a)
                } else {
                    (a, b)
                }
            }
            4 => (FROM_KEY.to_vec(), FROM_KEY.to_vec()),
            _ => {
                let end = if self.chance(0.5) {
                    Vec::new()
                } else {
                    self.key()
                };
                (Vec::new(), end)
            }
        }
    }

    /// A revision to read at: current (0), the revision itself, the past, the future, the
    /// compaction point, before it, or a negative one (which etcd reads as current).
    fn read_revision(&mut self) -> i64 {
        let now = self.revision;
        let floor = self.compacted.max(1);
        match self.pick(&[55, 8, 17, 5, 5, 5, 5]) {
            0 => 0,
            1 => now,
            2 => self.between(floor, now),
            3 => now + self.rng.gen_range(1..=3),
            4 if self.compacted > 1 => self.between(1, self.compacted - 1),
            5 if self.compacted > 0 => self.compacted,
            6 => -self.rng.gen_range(1..=3),
            _ => 0,
        }
    }

    /// A revision near those the store has: for filters and revision compares.
    fn near_revision(&mut self) -> i64 {
        self.between(0, self.revision + 1)
    }

    fn range(&mut self) -> RangeRequest {
        let (key, range_end) = self.span(&[40, 15, 10, 20, 13, 2]);
        let mut r = RangeRequest {
            key,
            range_end,
            revision: self.read_revision(),
            ..RangeRequest::default()
        };
        r.limit = match self.pick(&[65, 30, 5]) {
            0 => 0,
            1 => self.rng.gen_range(1..=4),
            _ => -1,
        };
        r.sort_order = self.pick(&[65, 15, 20]) as i32;
        r.sort_target = if self.chance(0.5) {
            0
        } else {
            self.rng.gen_range(1..=4)
        };
        r.keys_only = self.chance(0.15);
        r.count_only = self.chance(0.1);
        for filter in [
            &mut r.min_mod_revision,
            &mut r.max_mod_revision,
            &mut r.min_create_revision,
            &mut r.max_create_revision,
        ] {
            if self.rng.gen_bool(0.08) {
                *filter = self.between(0, self.revision + 1);
            }
        }
        r.serializable = !self.compacted_since_write && self.chance(0.2);
        if self.txn_depth > 0 && !self.txn_range_revisions {
            r.revision = 0;
        }
        r
    }

    fn put(&mut self) -> PutRequest {
        let key = if self.chance(0.02) {
            Vec::new()
        } else {
            self.key()
        };
        self.put_of(key)
    }

    /// A put of `key`: mostly plain, sometimes with `prev_kv`, `ignore_value`, `ignore_lease`
    /// or a lease that does not exist.
    fn put_of(&mut self, key: Vec<u8>) -> PutRequest {
        let mut p = PutRequest {
            key,
            value: self.value(),
            prev_kv: self.chance(0.5),
            ..PutRequest::default()
        };
        if self.chance(0.05) {
            p.ignore_value = true;
            if self.chance(0.8) {
                p.value.clear();
            }
        }
        if self.chance(0.05) {
            p.ignore_lease = true;
        }
        if self.chance(0.02) {
            p.lease = self.rng.gen_range(1..=0xfff);
        }
        p
    }

    fn delete_range(&mut self) -> DeleteRangeRequest {
        let (key, range_end) = self.span(&[55, 15, 5, 20, 3, 2]);
        DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.chance(0.5),
        }
    }

    fn compact(&mut self) -> CompactionRequest {
        let now = self.revision;
        let revision = match self.pick(&[50, 20, 12, 13, 5]) {
            0 => self.between(self.compacted + 1, now),
            1 => now,
            2 => now + self.rng.gen_range(1..=3),
            3 => self.between(1, self.compacted.max(1)),
            _ => self.rng.gen_range(-2..=0),
        };
        CompactionRequest {
            revision,
            physical: self.chance(0.3),
        }
    }

    /// A txn at nesting `depth` (0 for a top-level one).
    fn txn(&mut self, depth: usize) -> TxnRequest {
        if depth == 0 {
            match self.pick(&[97, 1, 1, 1]) {
                0 => {}
                1 => return self.too_many_ops(),
                2 => return self.too_many_compares(),
                _ => return self.nested_budget(),
            }
        }
        let compares = self.pick(&[25, 40, 25, 10]);
        self.txn_depth += 1;
        let txn = TxnRequest {
            compare: (0..compares).map(|_| self.compare()).collect(),
            success: self.branch(depth),
            failure: self.branch(depth),
        };
        self.txn_depth -= 1;
        txn
    }

    /// One more op in a branch than etcd allows.
    fn too_many_ops(&mut self) -> TxnRequest {
        let ops = MAX_TXN_OPS + usize::from(self.chance(0.7));
        TxnRequest {
            success: (0..ops).map(|_| self.read_op()).collect(),
            ..TxnRequest::default()
        }
    }

    /// As many compares as etcd allows, or one more.
    fn too_many_compares(&mut self) -> TxnRequest {
        let compares = MAX_TXN_OPS + usize::from(self.chance(0.7));
        TxnRequest {
            compare: (0..compares).map(|_| self.compare()).collect(),
            ..TxnRequest::default()
        }
    }

    /// An outer branch of [`BUDGET_OUTER_OPS`] reads and a nested txn around what is left of
    /// etcd's op budget, just under or just over it.
    fn nested_budget(&mut self) -> TxnRequest {
        let left = MAX_TXN_OPS - BUDGET_OUTER_OPS - 1;
        let nested_ops = self.between(left as i64 - 2, left as i64 + 2) as usize;
        let nested = TxnRequest {
            success: (0..nested_ops).map(|_| self.read_op()).collect(),
            ..TxnRequest::default()
        };
        let mut success: Vec<RequestOp> = (0..BUDGET_OUTER_OPS).map(|_| self.read_op()).collect();
        success.push(RequestOp {
            request: Some(request_op::Request::RequestTxn(nested)),
        });
        TxnRequest {
            success,
            ..TxnRequest::default()
        }
    }

    /// A plain read of one key.
    fn read_op(&mut self) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: self.key(),
                ..RangeRequest::default()
            })),
        }
    }

    /// A branch of 0 to 3 ops. Puts mostly go to keys no other put of the branch names (two
    /// puts of one key are refused as duplicates); deletes may cover them, as may nested txns.
    fn branch(&mut self, depth: usize) -> Vec<RequestOp> {
        let ops = self.pick(&[15, 35, 30, 20]);
        let mut put_keys: Vec<Vec<u8>> = Vec::new();
        let nest = if depth < MAX_TXN_DEPTH { 5 } else { 0 };
        (0..ops)
            .map(|_| {
                let request = match self.pick(&[45, 30, 17, nest, 1]) {
                    0 => Some(request_op::Request::RequestRange(self.range())),
                    1 => {
                        let mut key = self.key();
                        if put_keys.contains(&key) && self.chance(0.85) {
                            let free: Vec<&[u8]> = KEYS
                                .iter()
                                .copied()
                                .filter(|k| !put_keys.iter().any(|p| p == k))
                                .collect();
                            if let Some(k) = free.choose(&mut self.rng) {
                                key = k.to_vec();
                            }
                        }
                        put_keys.push(key.clone());
                        Some(request_op::Request::RequestPut(self.put_of(key)))
                    }
                    2 => Some(request_op::Request::RequestDeleteRange(self.delete_range())),
                    3 => Some(request_op::Request::RequestTxn(self.txn(depth + 1))),
                    _ => None,
                };
                RequestOp { request }
            })
            .collect()
    }

    /// A compare: a target, a result, a key or a range (now and then an empty key), and what
    /// to compare against — mostly of the target's own kind, sometimes of another or none;
    /// rarely a target or result etcd does not define.
    fn compare(&mut self) -> Compare {
        let (key, range_end) = if self.chance(0.8) {
            (self.key(), Vec::new())
        } else {
            self.span(&[0, 30, 15, 40, 10, 5])
        };
        let target = if self.chance(0.01) {
            self.rng.gen_range(5..=9)
        } else {
            self.rng.gen_range(0..=4)
        };
        let result = if self.chance(0.01) {
            self.rng.gen_range(4..=9)
        } else {
            self.rng.gen_range(0..=3)
        };
        let union_kind = if self.chance(0.92) {
            target
        } else {
            self.rng.gen_range(0..=5)
        };
        let target_union = match union_kind {
            0 => Some(compare::TargetUnion::Version(self.rng.gen_range(0..=3))),
            1 => Some(compare::TargetUnion::CreateRevision(self.near_revision())),
            2 => Some(compare::TargetUnion::ModRevision(self.near_revision())),
            3 => Some(compare::TargetUnion::Value(
                VALUES.choose(&mut self.rng).expect("values").to_vec(),
            )),
            4 => Some(compare::TargetUnion::Lease(i64::from(self.chance(0.1)))),
            _ => None,
        };
        Compare {
            result,
            target,
            key,
            range_end,
            target_union,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_requests() {
        let (mut a, mut b) = (Generator::new(7), Generator::new(7));
        for _ in 0..500 {
            assert_eq!(a.next_op(), b.next_op());
        }
        let mut c = Generator::new(8);
        let differ = (0..50).any(|_| a.next_op() != c.next_op());
        assert!(differ, "another seed, other requests");
    }

    #[test]
    fn every_kind_of_request_is_made() {
        let mut g = Generator::new(1);
        let mut kinds = std::collections::BTreeSet::new();
        for _ in 0..500 {
            kinds.insert(g.next_op().kind());
        }
        assert_eq!(kinds.len(), 5, "{kinds:?}");
    }

    #[test]
    fn revisions_follow_what_the_store_answered() {
        use crate::store::Answer;
        use etcd_api::etcdserverpb::{CompactionResponse, PutResponse, ResponseHeader};
        let mut g = Generator::new(3);
        let header = |revision| {
            Some(ResponseHeader {
                revision,
                ..ResponseHeader::default()
            })
        };
        let put = Op::Put(PutRequest::default());
        g.observe(
            &put,
            &Ok(Answer::Put(PutResponse {
                header: header(40),
                prev_kv: None,
            })),
        );
        assert_eq!(g.revision(), 40);
        let compact = Op::Compact(CompactionRequest {
            revision: 30,
            physical: false,
        });
        g.observe(
            &compact,
            &Ok(Answer::Compact(CompactionResponse { header: header(40) })),
        );
        assert_eq!(g.compacted(), 30);
        for _ in 0..300 {
            if let Op::Range(r) = g.next_op() {
                assert!(r.revision <= 43, "{r:?}");
                assert!(
                    !r.serializable,
                    "no serializable reads right after a compaction"
                );
            }
        }
    }
}
