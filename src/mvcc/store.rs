//! The MVCC store over the state machine's sled tree: its state (revision, compact
//! revision, key count, physical-compaction cursor), the key index built from the revision
//! log at open, the reads served outside an apply, the digests, snapshots, and the
//! migration of data written in earlier layouts.

use etcd_api::etcdserverpb::{HashKvResponse, RangeRequest, RangeResponse};
use etcd_api::mvccpb::KeyValue;
use etcd_api::EtcdError;

use super::compact;
use super::index::{Change, KeyIndex};
use super::keys::{be_i64, rev_key, rev_of_key, KeyRange, Live, Record, Revision, REV_PREFIX};
use super::lease::{lease_key, Lease, LeaseTable};
use super::overlay::View;
use super::read::{corrupt, Reader};
use super::snapshot::{self, SnapshotRecord};
use super::write::{header, Writer};
use crate::error::{Error, Result};

/// `mrev`: the current revision (absent: 1, nothing written yet).
pub const REVISION_KEY: &[u8] = b"mrev";
/// `mcompact`: the compact revision (absent: -1, never compacted).
pub const COMPACT_KEY: &[u8] = b"mcompact";
/// `mcount`: the number of live keys, checked against the key index built at open.
pub const COUNT_KEY: &[u8] = b"mcount";
/// `mcompacted`: the first revision-log position physical compaction has not looked at.
pub const CURSOR_KEY: &[u8] = b"mcompacted";
/// Prefix of the data written before revisions existed: `d` + key → value.
pub const OLD_DATA_PREFIX: u8 = b'd';
/// Prefixes of the history and live indexes an earlier layout kept in the tree, beside the
/// revision log; the key index in memory replaced both, and opening removes them.
pub const OLD_INDEX_PREFIXES: [u8; 2] = [b'h', b'k'];
/// The revision of an empty store (etcd's: the first write makes revision 2).
pub const FIRST_REVISION: i64 = 1;
/// The compact revision of a store never compacted.
pub const NEVER_COMPACTED: i64 = -1;

/// Where the store stands, as the tree's `m` keys record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreState {
    pub revision: i64,
    pub compact: i64,
    pub key_count: u64,
    /// The first revision-log position physical compaction has not looked at.
    pub cursor: Revision,
}

impl Default for StoreState {
    fn default() -> StoreState {
        StoreState {
            revision: FIRST_REVISION,
            compact: NEVER_COMPACTED,
            key_count: 0,
            cursor: Revision::default(),
        }
    }
}

impl StoreState {
    /// Writes into `batch` the `m` keys that differ from `old`.
    pub fn write_changes(&self, old: &StoreState, batch: &mut sled::Batch) {
        if self.revision != old.revision {
            batch.insert(REVISION_KEY, &self.revision.to_be_bytes()[..]);
        }
        if self.compact != old.compact {
            batch.insert(COMPACT_KEY, &self.compact.to_be_bytes()[..]);
        }
        if self.key_count != old.key_count {
            batch.insert(COUNT_KEY, &self.key_count.to_be_bytes()[..]);
        }
        if self.cursor != old.cursor {
            batch.insert(CURSOR_KEY, &self.cursor.to_bytes()[..]);
        }
    }

    /// Writes every `m` key into `batch`.
    pub fn write_all(&self, batch: &mut sled::Batch) {
        let unlike = StoreState {
            revision: !self.revision,
            compact: !self.compact,
            key_count: !self.key_count,
            cursor: Revision {
                main: !self.cursor.main,
                sub: 0,
            },
        };
        self.write_changes(&unlike, batch);
    }
}

/// The MVCC data of one node: the records are in the tree, the state and the key index
/// also in memory.
pub struct MvccStore {
    tree: sled::Tree,
    state: StoreState,
    index: KeyIndex,
    leases: LeaseTable,
}

/// What a snapshot restores, for [`MvccStore::install`] once its batch is written.
pub struct Restored {
    pub state: StoreState,
    pub index: KeyIndex,
    pub leases: LeaseTable,
}

impl MvccStore {
    /// Opens the store in `tree`: converts data from before revisions first (in one batch:
    /// every key becomes live at revision 2, sub-revisions in key order), removes the
    /// on-disk indexes of the layout before the key index, then builds the key index from
    /// the revision log and checks it against the key count.
    pub fn open(tree: sled::Tree) -> Result<MvccStore> {
        let meta = |key: &[u8]| -> Result<Option<i64>> {
            match tree.get(key)? {
                None => Ok(None),
                Some(v) => be_i64(&v, 0)
                    .map(Some)
                    .ok_or_else(|| corrupt("metadata", key)),
            }
        };
        let revision = meta(REVISION_KEY)?;
        let mut state = StoreState {
            revision: revision.unwrap_or(FIRST_REVISION),
            compact: meta(COMPACT_KEY)?.unwrap_or(NEVER_COMPACTED),
            key_count: meta(COUNT_KEY)?.unwrap_or(0) as u64,
            cursor: match tree.get(CURSOR_KEY)? {
                None => Revision::default(),
                Some(v) => {
                    Revision::from_bytes(&v).ok_or_else(|| corrupt("metadata", CURSOR_KEY))?
                }
            },
        };
        if revision.is_none() {
            let mut batch = sled::Batch::default();
            let mut old = Vec::new();
            for kv in tree.scan_prefix([OLD_DATA_PREFIX]) {
                let (k, v) = kv?;
                batch.remove(k.clone());
                old.push((k.subslice(1, k.len() - 1), v));
            }
            if !old.is_empty() {
                let pairs = old.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
                state = import_unversioned(pairs, &mut batch).0;
                state.write_all(&mut batch);
                tree.apply_batch(batch)?;
                tracing::info!(
                    keys = state.key_count,
                    "state machine data migrated to revisions"
                );
            }
        }
        remove_old_indexes(&tree)?;
        let index = build_index(&tree)?;
        if index.live_count() != state.key_count {
            return Err(Error::Disk(format!(
                "state machine data is corrupt: the key count says {} live keys, the revision \
                 log has {}",
                state.key_count,
                index.live_count()
            )));
        }
        let leases = LeaseTable::load(&tree)?;
        check_leases(&index, &leases)?;
        Ok(MvccStore {
            tree,
            state,
            index,
            leases,
        })
    }

    /// Whether `tree` holds data from before revisions, which [`MvccStore::open`] converts.
    pub fn needs_migration(tree: &sled::Tree) -> Result<bool> {
        Ok(!tree.contains_key(REVISION_KEY)?
            && tree.scan_prefix([OLD_DATA_PREFIX]).next().is_some())
    }

    pub fn state(&self) -> StoreState {
        self.state
    }

    /// Takes the state a batch written to the tree left (after [`Writer::finish`]).
    pub fn set_state(&mut self, state: StoreState) {
        self.state = state;
    }

    pub fn revision(&self) -> i64 {
        self.state.revision
    }

    pub fn compact_revision(&self) -> i64 {
        self.state.compact
    }

    pub fn key_count(&self) -> u64 {
        self.state.key_count
    }

    /// The records in the revision log: what a snapshot holds, so what it costs.
    pub fn record_count(&self) -> usize {
        self.index.change_count()
    }

    /// The revision up to which unreachable history has been removed (-1: never compacted).
    pub fn physically_compacted(&self) -> i64 {
        let s = &self.state;
        if s.compact == NEVER_COMPACTED || s.cursor.main > s.compact {
            s.compact
        } else {
            (s.cursor.main - 1).max(NEVER_COMPACTED)
        }
    }

    /// A writer for one apply batch.
    pub fn writer(&mut self) -> Writer<'_> {
        Writer::new(&self.tree, &mut self.index, &mut self.leases, self.state)
    }

    /// Every lease, as the log has granted, revoked and checkpointed them.
    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// The tree the records are in (for the history reads of `history.rs`).
    pub(super) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// The key index (read by tests and the state machine's checks).
    pub fn index(&self) -> &KeyIndex {
        &self.index
    }

    fn reader(&self) -> Reader<'_> {
        Reader {
            view: View::tree(&self.tree),
            index: &self.index,
            leases: &self.leases,
            current: self.state.revision,
            compact: self.state.compact,
        }
    }

    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        self.reader().range(req)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.reader().get(key)
    }

    /// Live keys from `from` (inclusive) that start with `prefix`, in order, each with its
    /// state; the caller stops the walk by returning false.
    pub fn walk_live(
        &self,
        prefix: &[u8],
        from: &[u8],
        mut f: impl FnMut(&[u8], Live) -> Result<bool>,
    ) -> Result<()> {
        let start = if from > prefix { from } else { prefix };
        let end = etcd_api::range::prefix_end(prefix);
        let range = if prefix.is_empty() || end == etcd_api::range::FROM_KEY {
            KeyRange::Span(start, None)
        } else {
            KeyRange::Span(start, Some(&end))
        };
        self.index.visit(range, self.state.revision, |k, live| {
            if !k.starts_with(prefix) {
                return Ok(false);
            }
            f(k, live)
        })
    }

    /// The value a live key's state points at.
    pub fn value(&self, live: &Live) -> Result<Vec<u8>> {
        self.reader().value(live.modified)
    }

    /// Calls `f` with every record that survives compaction, in revision order, up to
    /// revision `upto`.
    fn visible_records(
        &self,
        upto: i64,
        mut f: impl FnMut(Revision, &Record<'_>, &[u8]),
    ) -> Result<()> {
        let hi = rev_key(Revision::after_main(upto));
        for item in self.tree.range(&[REV_PREFIX][..]..&hi[..]) {
            let (k, v) = item?;
            let rev = rev_of_key(&k).ok_or_else(|| corrupt("revision-log key", &k))?;
            let rec = Record::decode(&v).ok_or_else(|| corrupt("revision-log", &k))?;
            if self
                .index
                .survives(rec.key, rev, &rec.meta, self.state.compact)
            {
                f(rev, &rec, &v);
            }
        }
        Ok(())
    }

    /// etcd's HashKV: a CRC-32 of every record up to `revision` (0: the current one) that
    /// compaction leaves, so equal on replicas with the same history however far each has
    /// physically compacted. Bounds as etcd's: `0 < revision <= compact` is `Compacted`,
    /// `revision > current` is `FutureRevision`; a negative revision hashes nothing.
    pub fn hash_kv(&self, revision: i64) -> Result<HashKvResponse> {
        let s = &self.state;
        if revision > 0 && revision <= s.compact {
            return Err(Error::Etcd(EtcdError::Compacted));
        }
        if revision > s.revision {
            return Err(Error::Etcd(EtcdError::FutureRevision));
        }
        let upto = if revision == 0 { s.revision } else { revision };
        let mut crc = crc32fast::Hasher::new();
        if upto > 0 {
            self.visible_records(upto, |rev, _, bytes| {
                crc.update(&rev.to_bytes());
                crc.update(bytes);
            })?;
        }
        Ok(HashKvResponse {
            header: header(s.revision),
            hash: crc.finalize(),
            compact_revision: s.compact,
        })
    }

    /// Feeds `eat` with everything the state hash covers: each record compaction leaves,
    /// each lease, then the revision and compact revision.
    pub fn digest(&self, mut eat: impl FnMut(&[u8])) -> Result<()> {
        self.visible_records(self.state.revision, |rev, _, bytes| {
            eat(&rev.to_bytes());
            eat(bytes);
        })?;
        for (id, lease) in self.leases.iter() {
            eat(&lease_key(id));
            eat(&lease.to_bytes());
        }
        eat(&self.state.revision.to_be_bytes());
        eat(&self.state.compact.to_be_bytes());
        Ok(())
    }

    /// One bounded step of physical compaction (`compact.rs`): the batch to write and
    /// whether more remains. The caller writes the batch, then calls [`MvccStore::set_state`]
    /// with the state returned.
    pub fn compact_step(&mut self, max_records: usize) -> Result<(sled::Batch, StoreState, bool)> {
        compact::step(&self.tree, &mut self.index, &self.state, max_records)
    }

    /// What a snapshot of the store as it is now reads, detached from the store so that it
    /// can be built on another thread while applies go on ([`SnapshotSource::data`]).
    pub fn snapshot_source(&self) -> SnapshotSource {
        SnapshotSource {
            tree: self.tree.clone(),
            revision: self.state.revision,
            compact: self.state.compact,
            leases: self.leases.iter().collect(),
        }
    }

    /// The snapshot data of the store as it is now, built here and now.
    pub fn snapshot_data(&self) -> Result<Vec<u8>> {
        self.snapshot_source().data()
    }

    /// Fills `batch` (which already removes everything in the tree) with the state of
    /// snapshot `data`, new format or old, and returns that state, its key index and its
    /// leases, for [`MvccStore::install`] once the batch is written.
    pub fn restore_into(data: &[u8], batch: &mut sled::Batch) -> Result<Restored> {
        let restored = match snapshot::parse(data)? {
            snapshot::Parsed::Unversioned(pairs) => {
                let mut pairs = pairs;
                // Old snapshots are in key order; sort anyway, the last value of a key wins.
                pairs.sort_by(|a, b| a.0.cmp(b.0));
                pairs.reverse();
                pairs.dedup_by(|a, b| a.0 == b.0);
                pairs.reverse();
                let (state, index) = import_unversioned(pairs.into_iter(), batch);
                Restored {
                    state,
                    index,
                    leases: LeaseTable::default(),
                }
            }
            snapshot::Parsed::Versioned {
                revision,
                compact,
                leases,
                records,
            } => import_records(revision, compact, leases, records, batch)?,
        };
        restored.state.write_all(batch);
        Ok(restored)
    }

    /// Takes what a restored snapshot holds (after [`MvccStore::restore_into`]'s batch is
    /// written).
    pub fn install(&mut self, restored: Restored) {
        self.state = restored.state;
        self.index = restored.index;
        self.leases = restored.leases;
    }
}

/// A snapshot's view of the store: the tree, and the revision and compact revision when the
/// snapshot was taken.
pub struct SnapshotSource {
    tree: sled::Tree,
    revision: i64,
    compact: i64,
    /// The lease table then: unlike records, it changes in place, so it is copied at once.
    leases: Vec<(i64, Lease)>,
}

impl SnapshotSource {
    /// The snapshot data: the header, then every revision-log record up to `revision`, in
    /// revision order. A record at or below `revision` never changes once written; only
    /// physical compaction removes such records, and the caller must hold it back while this
    /// runs (the StorageActor does). So the data is the store as it was at `revision`,
    /// however far applies have got meanwhile. It may hold records compaction has made
    /// unreachable and not yet removed: the receiver's own physical compaction removes them
    /// (its cursor starts at the beginning).
    pub fn data(&self) -> Result<Vec<u8>> {
        let mut out = snapshot::header(self.revision, self.compact);
        for &(id, lease) in &self.leases {
            snapshot::push_lease(&mut out, id, lease);
        }
        let hi = rev_key(Revision::after_main(self.revision));
        for item in self.tree.range(&[REV_PREFIX][..]..&hi[..]) {
            let (k, v) = item?;
            let rev = rev_of_key(&k).ok_or_else(|| corrupt("revision-log key", &k))?;
            snapshot::push_record(&mut out, rev, &v);
        }
        Ok(out)
    }
}

/// Removes the history (`h`) and live (`k`) indexes of the layout before the key index, in
/// one batch; the revision log holds everything they did.
fn remove_old_indexes(tree: &sled::Tree) -> Result<()> {
    let mut batch = sled::Batch::default();
    let mut removed = 0usize;
    for prefix in OLD_INDEX_PREFIXES {
        for kv in tree.scan_prefix([prefix]) {
            batch.remove(kv?.0);
            removed += 1;
        }
    }
    if removed > 0 {
        tree.apply_batch(batch)?;
        tracing::info!(
            records = removed,
            "on-disk key indexes replaced by the key index"
        );
    }
    Ok(())
}

/// The key index of the revision log in `tree`: one walk, in revision order.
fn build_index(tree: &sled::Tree) -> Result<KeyIndex> {
    let mut index = KeyIndex::default();
    for item in tree.scan_prefix([REV_PREFIX]) {
        let (k, v) = item?;
        let rev = rev_of_key(&k).ok_or_else(|| corrupt("revision-log key", &k))?;
        let rec = Record::decode(&v).ok_or_else(|| corrupt("revision-log", &k))?;
        index.record(
            rec.key,
            Change {
                rev,
                meta: rec.meta,
            },
        );
    }
    Ok(index)
}

/// Writes keys without history as live at revision 2 (sub-revisions in the order given,
/// which is key order), each a first version; returns the state and the key index. No
/// keys: an empty store.
fn import_unversioned<'a>(
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    batch: &mut sled::Batch,
) -> (StoreState, KeyIndex) {
    const MIGRATED_REVISION: i64 = FIRST_REVISION + 1;
    let mut state = StoreState::default();
    let mut index = KeyIndex::default();
    for (sub, (key, value)) in pairs.enumerate() {
        let rev = Revision {
            main: MIGRATED_REVISION,
            sub: sub as i64,
        };
        let meta = Live {
            create: rev.main,
            modified: rev,
            version: 1,
            lease: 0,
        }
        .meta();
        batch.insert(&rev_key(rev)[..], Record::encode(&meta, key, value));
        index.record(key, Change { rev, meta });
        state.key_count += 1;
        state.revision = MIGRATED_REVISION;
    }
    (state, index)
}

/// Writes a versioned snapshot's records and builds their key index. The records must be
/// in revision order, as [`MvccStore::snapshot_data`] writes them: a snapshot from a peer
/// is not trusted to be.
fn import_records(
    revision: i64,
    compact: i64,
    leases: Vec<(i64, Lease)>,
    records: Vec<SnapshotRecord<'_>>,
    batch: &mut sled::Batch,
) -> Result<Restored> {
    let bad = |what: &str| Error::Disk(format!("snapshot data is corrupt: {what}"));
    let mut index = KeyIndex::default();
    let mut last: Option<Revision> = None;
    for r in &records {
        let rec = Record::decode(r.bytes).ok_or_else(|| bad("a bad record"))?;
        if last.is_some_and(|l| l >= r.rev) || r.rev.main > revision {
            return Err(bad("records out of revision order"));
        }
        last = Some(r.rev);
        batch.insert(&rev_key(r.rev)[..], r.bytes);
        index.record(
            rec.key,
            Change {
                rev: r.rev,
                meta: rec.meta,
            },
        );
    }
    // Physical compaction starts from the beginning: the snapshot may hold records that
    // compaction made unreachable (`SnapshotSource::data`).
    let state = StoreState {
        revision,
        compact,
        key_count: index.live_count(),
        cursor: Revision::default(),
    };
    let mut table = LeaseTable::default();
    for (id, lease) in leases {
        batch.insert(&lease_key(id)[..], &lease.to_bytes()[..]);
        table.insert(id, lease);
    }
    check_leases(&index, &table)?;
    Ok(Restored {
        state,
        index,
        leases: table,
    })
}

/// Every live key's lease must exist (the lease table's invariant): data that says
/// otherwise is damaged.
fn check_leases(index: &KeyIndex, leases: &LeaseTable) -> Result<()> {
    match index.lease_ids().find(|id| !leases.contains(*id)) {
        Some(id) => Err(Error::Disk(format!(
            "state machine data is corrupt: keys are attached to lease {id:x}, which does not exist"
        ))),
        None => Ok(()),
    }
}
