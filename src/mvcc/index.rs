//! The key index: every key's changes, in memory (etcd's `treeIndex`).
//!
//! The revision log in sled (`r`) is the only durable record of the store; each record
//! carries its key and [`Meta`]. The index is what reads need from it without reading
//! values: for each key, the revisions that changed it, oldest first, each with its meta.
//! It is built by one walk of the revision log when the store opens, and kept in step with
//! the log after that by the writer (each change appended as its record is staged) and by
//! physical compaction (each removal made as its record is removed).
//!
//! Why memory and not more sled records: a put then costs one sled insert (its record)
//! instead of three (record, history entry, live entry), and on this project's 2-core
//! machine sled inserts, their allocations and the bytes they write are most of a put's
//! CPU. A read at the current revision looks up the key here and fetches one record; a
//! count never touches sled. The price is memory, a few dozen bytes per change kept (until
//! compaction removes it) plus the key once, and a walk of the log at start.
//!
//! # Invariants
//!
//! - A key's changes are in revision order, and none is empty: a key whose last change is
//!   removed leaves the map.
//! - Every record in the revision log has its change here and the other way round, except
//!   within an apply batch, whose records are staged and whose changes are already here (a
//!   failure to write the batch stops the node, so the two never diverge on a running one).
//! - `live` is the number of keys whose newest change is a put.
//! - `by_lease` holds exactly the live keys with a lease, under that lease: the keys a
//!   revoke deletes, and a TimeToLive lists.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;

use super::keys::{KeyRange, Live, Meta, Revision};

/// One change of a key: the revision that made it, and what it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub rev: Revision,
    pub meta: Meta,
}

impl Change {
    /// The state this change leaves its key in: alive, unless it is a tombstone.
    fn alive(&self) -> Option<Live> {
        (!self.meta.tombstone).then_some(Live {
            create: self.meta.create,
            modified: self.rev,
            version: self.meta.version,
            lease: self.meta.lease,
        })
    }
}

/// Every key's changes; see the module docs.
#[derive(Debug, Default)]
pub struct KeyIndex {
    /// A deque because compaction removes from the front, one change at a time, and a hot
    /// key's history may be long.
    keys: BTreeMap<Vec<u8>, VecDeque<Change>>,
    live: u64,
    /// Changes held, over every key: the length of the revision log.
    changes: usize,
    /// The live keys of each lease that has any.
    by_lease: HashMap<i64, BTreeSet<Vec<u8>>>,
}

impl KeyIndex {
    /// The number of keys alive now.
    pub fn live_count(&self) -> u64 {
        self.live
    }

    /// The number of changes held, over every key: the records in the revision log.
    pub fn change_count(&self) -> usize {
        self.changes
    }

    /// The live keys attached to lease `id`, in key order.
    pub fn lease_keys(&self, id: i64) -> impl Iterator<Item = &[u8]> + '_ {
        self.by_lease
            .get(&id)
            .into_iter()
            .flatten()
            .map(Vec::as_slice)
    }

    /// The leases that have live keys.
    pub fn lease_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.by_lease.keys().copied()
    }

    /// Files `key` under the lease of `change`, or takes it out, as the change is its newest
    /// or stops being it.
    fn lease_of(&mut self, key: &[u8], change: Option<&Change>, attach: bool) {
        let Some(lease) = change.and_then(Change::alive).map(|l| l.lease) else {
            return;
        };
        if lease == 0 {
            return;
        }
        if attach {
            self.by_lease.entry(lease).or_default().insert(key.to_vec());
        } else if let Some(keys) = self.by_lease.get_mut(&lease) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_lease.remove(&lease);
            }
        }
    }

    /// The state of `key` now.
    pub fn live(&self, key: &[u8]) -> Option<Live> {
        self.keys.get(key)?.back()?.alive()
    }

    /// The state of `key` at revision `rev`: its newest change with `main <= rev`, unless
    /// that is a tombstone.
    pub fn at(&self, key: &[u8], rev: i64) -> Option<Live> {
        newest_at(self.keys.get(key)?, rev)?.alive()
    }

    /// Calls `f` with every key alive at `rev` in `range`, in key order, with its state
    /// then, until `f` returns false. `rev` at or above the newest revision reads now.
    pub fn visit<E>(
        &self,
        range: KeyRange<'_>,
        rev: i64,
        mut f: impl FnMut(&[u8], Live) -> Result<bool, E>,
    ) -> Result<(), E> {
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = match range {
            KeyRange::Single(key) => {
                if let Some((k, changes)) = self.keys.get_key_value(key) {
                    if let Some(live) = newest_at(changes, rev).and_then(Change::alive) {
                        f(k, live)?;
                    }
                }
                return Ok(());
            }
            KeyRange::Span(start, Some(end)) if end <= start => return Ok(()),
            KeyRange::Span(start, Some(end)) => (Bound::Included(start), Bound::Excluded(end)),
            KeyRange::Span(start, None) => (Bound::Included(start), Bound::Unbounded),
        };
        for (key, changes) in self.keys.range::<[u8], _>(bounds) {
            if let Some(live) = newest_at(changes, rev).and_then(Change::alive) {
                if !f(key, live)? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Appends a change of `key`, newer than all its others.
    pub fn record(&mut self, key: &[u8], change: Change) {
        let changes = match self.keys.get_mut(key) {
            Some(c) => c,
            None => self.keys.entry(key.to_vec()).or_default(),
        };
        debug_assert!(changes.back().is_none_or(|c| c.rev < change.rev));
        let old = changes.back().copied();
        let was_alive = old.is_some_and(|c| !c.meta.tombstone);
        changes.push_back(change);
        self.changes += 1;
        self.live = self.live + u64::from(!change.meta.tombstone) - u64::from(was_alive);
        if old.is_some_and(|c| c.meta.lease != 0) || change.meta.lease != 0 {
            self.lease_of(key, old.as_ref(), false);
            self.lease_of(key, Some(&change), true);
        }
    }

    /// Takes back the newest change of `key` (a command that failed part-way).
    pub fn unrecord(&mut self, key: &[u8]) {
        let Some(changes) = self.keys.get_mut(key) else {
            return;
        };
        let Some(gone) = changes.pop_back() else {
            return;
        };
        self.changes -= 1;
        let now = changes.back().copied();
        let now_alive = now.is_some_and(|c| !c.meta.tombstone);
        self.live = self.live + u64::from(now_alive) - u64::from(!gone.meta.tombstone);
        if changes.is_empty() {
            self.keys.remove(key);
        }
        if now.is_some_and(|c| c.meta.lease != 0) || gone.meta.lease != 0 {
            self.lease_of(key, Some(&gone), false);
            self.lease_of(key, now.as_ref(), true);
        }
    }

    /// Whether the record of `key` at `rev` survives compaction at `compact`: anything
    /// above it does; at or below it, only a key's newest change there, and only a put.
    pub fn survives(&self, key: &[u8], rev: Revision, meta: &Meta, compact: i64) -> bool {
        if rev.main > compact {
            return true;
        }
        if meta.tombstone {
            return false;
        }
        let Some(changes) = self.keys.get(key) else {
            return true;
        };
        let after = changes.partition_point(|c| c.rev <= rev);
        changes
            .get(after)
            .is_none_or(|next| next.rev.main > compact)
    }

    /// Physical compaction reaching the record of `key` at `rev` (at or below the compact
    /// revision): removes the change just before it, superseded by it, and the change
    /// itself if it is a tombstone. Returns the revisions removed, for the caller to remove
    /// their records.
    pub fn compact_at(&mut self, key: &[u8], rev: Revision) -> Vec<Revision> {
        let mut removed = Vec::new();
        let Some(changes) = self.keys.get_mut(key) else {
            return removed;
        };
        let mut at = changes.partition_point(|c| c.rev < rev);
        if at > 0 {
            if let Some(old) = changes.remove(at - 1) {
                removed.push(old.rev);
            }
            at -= 1;
        }
        if changes
            .get(at)
            .is_some_and(|c| c.rev == rev && c.meta.tombstone)
        {
            changes.remove(at);
            removed.push(rev);
        }
        self.changes -= removed.len();
        // Neither removal changes whether the key is alive: a removed predecessor is not
        // the newest change, and a removed tombstone leaves the key as dead as it was.
        if changes.is_empty() {
            self.keys.remove(key);
        }
        removed
    }
}

/// The newest of `changes` with `main <= rev`.
fn newest_at(changes: &VecDeque<Change>, rev: i64) -> Option<&Change> {
    match changes.back() {
        Some(last) if last.rev.main <= rev => Some(last),
        _ => {
            let after = changes.partition_point(|c| c.rev.main <= rev);
            after.checked_sub(1).and_then(|i| changes.get(i))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(main: i64, create: i64, version: i64) -> Change {
        Change {
            rev: Revision { main, sub: 0 },
            meta: Meta {
                tombstone: false,
                create,
                version,
                lease: 0,
            },
        }
    }

    fn tombstone(main: i64) -> Change {
        Change {
            rev: Revision { main, sub: 0 },
            meta: Meta::TOMBSTONE,
        }
    }

    /// a: put 2, put 3, deleted 4, put 6; b: put 5.
    fn sample() -> KeyIndex {
        let mut ix = KeyIndex::default();
        ix.record(b"a", put(2, 2, 1));
        ix.record(b"a", put(3, 2, 2));
        ix.record(b"a", tombstone(4));
        ix.record(b"b", put(5, 5, 1));
        ix.record(b"a", put(6, 6, 1));
        ix
    }

    #[test]
    fn reads_see_each_keys_newest_change_at_the_revision() {
        let ix = sample();
        assert_eq!(ix.live(b"a").map(|l| (l.create, l.version)), Some((6, 1)));
        assert_eq!(ix.at(b"a", 3).map(|l| l.version), Some(2));
        assert_eq!(ix.at(b"a", 4), None, "deleted at 4");
        assert_eq!(ix.at(b"a", 5), None);
        assert_eq!(ix.at(b"a", 1), None, "before its first put");
        assert_eq!(ix.at(b"c", 9), None);
        assert_eq!(ix.live_count(), 2);
        let mut seen = Vec::new();
        ix.visit::<()>(KeyRange::Span(b"a", None), 4, |k, _| {
            seen.push(k.to_vec());
            Ok(true)
        })
        .unwrap();
        assert_eq!(
            seen,
            Vec::<Vec<u8>>::new(),
            "at 4 a is dead and b not yet made"
        );
        ix.visit::<()>(KeyRange::Span(b"a", Some(b"b")), 9, |k, _| {
            seen.push(k.to_vec());
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, vec![b"a".to_vec()], "the end is exclusive");
        ix.visit::<()>(KeyRange::Span(b"b", Some(b"a")), 9, |_, _| panic!("empty"))
            .unwrap();
    }

    #[test]
    fn unrecord_restores_the_count_and_drops_empty_keys() {
        let mut ix = sample();
        ix.record(b"b", tombstone(7));
        assert_eq!(ix.live_count(), 1);
        ix.unrecord(b"b");
        assert_eq!(ix.live_count(), 2);
        ix.record(b"c", put(7, 7, 1));
        ix.unrecord(b"c");
        assert_eq!((ix.live_count(), ix.live(b"c")), (2, None));
        assert!(
            !ix.keys.contains_key(&b"c"[..]),
            "an emptied key leaves the map"
        );
    }

    fn leased(main: i64, lease: i64) -> Change {
        let mut c = put(main, main, 1);
        c.meta.lease = lease;
        c
    }

    fn keys_of(ix: &KeyIndex, lease: i64) -> Vec<&[u8]> {
        ix.lease_keys(lease).collect()
    }

    #[test]
    fn each_lease_knows_its_live_keys_through_puts_deletes_and_undo() {
        let mut ix = KeyIndex::default();
        ix.record(b"a", leased(2, 7));
        ix.record(b"b", leased(3, 7));
        assert_eq!(keys_of(&ix, 7), [&b"a"[..], b"b"]);
        ix.record(b"a", leased(4, 8));
        assert_eq!(
            keys_of(&ix, 7),
            [&b"b"[..]],
            "a put moves a key to its new lease"
        );
        assert_eq!(keys_of(&ix, 8), [&b"a"[..]]);
        ix.record(b"b", tombstone(5));
        assert!(keys_of(&ix, 7).is_empty(), "a deleted key has no lease");
        ix.record(b"a", put(6, 6, 1));
        assert!(
            keys_of(&ix, 8).is_empty(),
            "a put without a lease detaches it"
        );
        ix.unrecord(b"a");
        ix.unrecord(b"b");
        assert_eq!(keys_of(&ix, 8), [&b"a"[..]], "undo puts them back");
        assert_eq!(keys_of(&ix, 7), [&b"b"[..]]);
        ix.unrecord(b"a");
        assert_eq!(keys_of(&ix, 7), [&b"a"[..], b"b"]);
        assert!(
            !ix.by_lease.contains_key(&8),
            "an empty lease leaves the map"
        );
    }

    #[test]
    fn compaction_removes_superseded_changes_and_tombstones() {
        let mut ix = sample();
        // Compact(5), reaching each record at or below 5 in revision order.
        let mut removed = Vec::new();
        for (key, main) in [(&b"a"[..], 2), (b"a", 3), (b"a", 4), (b"b", 5)] {
            removed.extend(ix.compact_at(key, Revision { main, sub: 0 }));
        }
        let mains: Vec<i64> = removed.iter().map(|r| r.main).collect();
        assert_eq!(mains, vec![2, 3, 4], "a's puts 2 and 3, then its tombstone");
        assert_eq!(ix.change_count(), 2, "a@6 and b@5 remain");
        assert_eq!(ix.keys.values().map(VecDeque::len).sum::<usize>(), 2);
        assert_eq!(ix.live(b"a").map(|l| l.modified.main), Some(6));
    }

    #[test]
    fn survival_is_decided_by_the_next_change() {
        let ix = sample();
        let a = |main| Revision { main, sub: 0 };
        let live_meta = put(0, 2, 1).meta;
        assert!(
            ix.survives(b"a", a(3), &live_meta, 2),
            "above the compact revision"
        );
        assert!(!ix.survives(b"a", a(2), &live_meta, 3), "superseded at 3");
        assert!(ix.survives(b"a", a(3), &live_meta, 3), "newest at 3");
        assert!(
            !ix.survives(b"a", a(4), &Meta::TOMBSTONE, 4),
            "a tombstone goes"
        );
        assert!(ix.survives(b"b", a(5), &live_meta, 9), "newest of b");
    }
}
