//! raft-rs `Storage` over the write-ahead log ([`Wal`]).
//!
//! The log store keeps in memory what raft-rs asks for on every message — the `HardState`, the
//! `ConfState`, the compaction point, and each live entry's term and place in the WAL — and
//! the newest entries themselves up to [`LogOptions::entry_cache_bytes`]; older entries are read back from
//! their segment when a lagging follower needs them.
//!
//! Durability: [`LogStore::persist`] appends a received snapshot's metadata, the new entries
//! and the `HardState` as one group of WAL records and, when raft-rs says it must
//! (`Ready::must_sync`), `fdatasync`s them, before any message that depends on them is sent.
//! A commit index learned later is only remembered and rides along with the next write: losing
//! it costs nothing (it is re-learned from the leader, or from the state machine's applied
//! index at start-up).
//!
//! Compaction discards entries covered by the snapshot file, which is fsynced before the log
//! is compacted; segments that hold only discarded entries are deleted once the compaction
//! record is synced.

use std::collections::VecDeque;
use std::path::Path;

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::consensus::snapshot::SnapshotStore;
use crate::consensus::wal::{Location, Record, Wal, DEFAULT_SEGMENT_BYTES};
use crate::consensus::LogId;
use crate::error::{Error, Result};

/// Default for [`LogOptions::entry_cache_bytes`].
pub const DEFAULT_ENTRY_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// How a log store is kept.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// Whether writes are really synced. `false` is the deliberately unsafe test mode
    /// (`unsafe_no_fsync`) that shows the power-cut test has teeth.
    pub fsync: bool,
    /// Size past which a WAL segment is closed and a new one begun, in bytes.
    pub segment_bytes: u64,
    /// Most bytes of entries kept in memory; older entries are read back from the WAL when a
    /// lagging follower needs them. Followers that keep up are served from memory.
    pub entry_cache_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            fsync: true,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            entry_cache_bytes: DEFAULT_ENTRY_CACHE_BYTES,
        }
    }
}

/// Indexes at or above this are refused as damage when the log is read back.
const MAX_LOG_INDEX: u64 = u64::MAX / 2;

fn store_err(e: Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

/// One live entry: its term, where it lies in the WAL, and the entry while it is cached.
struct Slot {
    /// The entry's term, needed on every append and vote.
    term: u64,
    /// Its record in the WAL.
    location: Location,
    /// The entry itself, while it is among the newest [`LogOptions::entry_cache_bytes`].
    cached: Option<Entry>,
}

/// What replaying the WAL found, before it becomes a [`LogStore`].
#[derive(Default)]
struct Replay {
    hard_state: Option<HardState>,
    conf_state: Option<ConfState>,
    truncated: LogId,
    /// Index of the first slot; may be above `truncated.0 + 1` while replaying after old
    /// segments were deleted, until a compaction record covers the gap.
    first: u64,
    slots: VecDeque<(u64, Location)>,
}

impl Replay {
    fn visit(&mut self, record: Record, loc: Location) -> Result<()> {
        let index = match &record {
            Record::Entry(e) => e.index,
            Record::Compact { index, .. } | Record::Snapshot { index, .. } => *index,
            Record::HardState(hs) => hs.commit,
            Record::ConfState(_) => 0,
        };
        // A real log never comes near this; a record that does is damage, and arithmetic on
        // it would overflow.
        if index >= MAX_LOG_INDEX || matches!(&record, Record::Entry(e) if e.index == 0) {
            return Err(Error::Disk(format!(
                "raft log record at segment {} offset {} has an impossible index {index}",
                loc.segment, loc.offset
            )));
        }
        match record {
            Record::Entry(e) => {
                let next = self.first + self.slots.len() as u64;
                if self.slots.is_empty() || e.index > next {
                    // The first entry, or one after a gap that a later compaction must cover
                    // (the segment that held the gap was deleted because it was compacted).
                    self.slots.clear();
                    self.first = e.index;
                } else if e.index < self.first {
                    // A leader overwrote entries that began in a segment since deleted: the
                    // log goes on from here, and a later compaction record must cover what
                    // lies before it (checked once replay ends).
                    self.slots.clear();
                    self.first = e.index;
                } else {
                    self.slots.truncate((e.index - self.first) as usize);
                }
                self.slots.push_back((e.term, loc));
            }
            Record::HardState(hs) => self.hard_state = Some(hs),
            Record::ConfState(cs) => self.conf_state = Some(cs),
            Record::Compact { index, term } => {
                if index > self.truncated.index {
                    self.truncated = LogId { index, term };
                }
                while !self.slots.is_empty() && self.first <= self.truncated.index {
                    self.slots.pop_front();
                    self.first += 1;
                }
            }
            Record::Snapshot {
                index,
                term,
                conf_state,
            } => {
                self.truncated = LogId { index, term };
                self.slots.clear();
                self.first = index + 1;
                self.conf_state = Some(conf_state);
            }
        }
        Ok(())
    }
}

/// The Raft log and state of one node.
pub struct LogStore {
    /// Every change is a record here; entries not in the cache are read back from it.
    wal: Wal,
    /// `HardState` (term, vote, commit) as last given; durable except for a newer commit.
    hard_state: HardState,
    /// The commit index changed since the last record was written.
    commit_unwritten: bool,
    /// Voters and learners: `initial_voters` for a new log, later what a received snapshot
    /// carries; repeated at the head of every segment.
    conf_state: ConfState,
    /// Index and term of the last entry discarded by compaction or a snapshot.
    truncated: LogId,
    /// Entries `truncated.0 + 1 ..`, in order.
    slots: VecDeque<Slot>,
    /// Bytes of the entries held in `slots[..].cached`.
    cached_bytes: u64,
    /// Index of the oldest cached entry; every entry from here to the end is cached.
    cached_from: u64,
    /// [`LogOptions::entry_cache_bytes`]; past it, `evict` drops the oldest cached entries.
    cache_limit: u64,
    /// Where snapshots live; `snapshot()` reads from here.
    snapshots: SnapshotStore,
}

impl LogStore {
    /// Opens the log in `dir` (the WAL directory), replaying it. A new log starts with
    /// `initial_voters` as its configuration.
    pub fn open(
        dir: &Path,
        options: LogOptions,
        snapshots: SnapshotStore,
        initial_voters: &[u64],
    ) -> Result<Self> {
        let mut replay = Replay {
            first: 1,
            ..Default::default()
        };
        let mut wal = Wal::open(dir, options.fsync, options.segment_bytes, |r, loc| {
            replay.visit(r, loc)
        })?;
        if !replay.slots.is_empty() && replay.first != replay.truncated.index + 1 {
            return Err(Error::Disk(format!(
                "{}: the raft log has a hole: it was compacted through {} but its entries start at {}",
                dir.display(),
                replay.truncated.index,
                replay.first
            )));
        }
        let conf_state = match replay.conf_state {
            Some(cs) => cs,
            None => {
                let cs = ConfState {
                    voters: initial_voters.to_vec(),
                    ..Default::default()
                };
                wal.append(&[Record::ConfState(cs.clone())])?;
                wal.sync()?;
                cs
            }
        };
        let mut store = LogStore {
            wal,
            hard_state: replay.hard_state.unwrap_or_default(),
            commit_unwritten: false,
            conf_state,
            truncated: replay.truncated,
            slots: replay
                .slots
                .into_iter()
                .map(|(term, location)| Slot {
                    term,
                    location,
                    cached: None,
                })
                .collect(),
            cached_bytes: 0,
            cached_from: 0,
            cache_limit: options.entry_cache_bytes,
            snapshots,
        };
        store.cached_from = store.last() + 1;
        // Warm the cache with the newest entries, as a running node would have it.
        while store.cached_from > store.truncated.index + 1
            && store.cached_bytes < store.cache_limit
        {
            let idx = store.cached_from - 1;
            let slot = &store.slots[store.offset(idx)];
            let e = store.wal.read_entry(slot.location)?;
            store.cached_bytes += u64::from(slot.location.len);
            let at = store.offset(idx);
            store.slots[at].cached = Some(e);
            store.cached_from = idx;
        }
        Ok(store)
    }

    fn offset(&self, index: u64) -> usize {
        (index - self.truncated.index - 1) as usize
    }

    /// Index of the last entry (equals `truncated.0` when the log is empty).
    fn last(&self) -> u64 {
        self.truncated.index + self.slots.len() as u64
    }

    /// The `HardState` as last given.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Index and term of the last discarded entry.
    pub fn truncated(&self) -> LogId {
        self.truncated
    }

    /// The snapshot store this log reads snapshots from.
    pub fn snapshots(&self) -> &SnapshotStore {
        &self.snapshots
    }

    /// Number of WAL segment files and their total size in bytes.
    pub fn wal_size(&self) -> (usize, u64) {
        (self.wal.segment_count(), self.wal.size_bytes())
    }

    /// The records a new segment starts with: everything needed to read it alone.
    fn head_records(&self) -> [Record; 3] {
        [
            Record::Compact {
                index: self.truncated.index,
                term: self.truncated.term,
            },
            Record::ConfState(self.conf_state.clone()),
            Record::HardState(self.hard_state.clone()),
        ]
    }

    /// Writes `entries`, `hard_state` and a received snapshot's metadata as one group of
    /// records, and makes them durable when `sync` is set.
    ///
    /// Entries at or after the first new index replace what was there (a leader overwrote
    /// them). A snapshot discards the whole log: the log then starts after it.
    pub fn persist(
        &mut self,
        snapshot: Option<&SnapshotMetadata>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<()> {
        let (mut truncated, mut last_index) = (self.truncated, self.last());
        let mut records = Vec::with_capacity(entries.len() + 2);
        if let Some(meta) = snapshot {
            truncated = LogId::of(meta);
            last_index = meta.index;
            records.push(Record::Snapshot {
                index: meta.index,
                term: meta.term,
                conf_state: meta.get_conf_state().clone(),
            });
        }
        if let Some(first) = entries.first() {
            if first.index <= truncated.index {
                return Err(Error::Disk(format!(
                    "append at index {} overlaps the compacted log (truncated at {})",
                    first.index, truncated.index
                )));
            }
            if first.index > last_index + 1 {
                return Err(Error::Disk(format!(
                    "append at index {} leaves a gap after last index {last_index}",
                    first.index
                )));
            }
            records.extend(entries.iter().cloned().map(Record::Entry));
        }
        let mut new_hs = hard_state.cloned();
        if self.commit_unwritten && new_hs.is_none() && !records.is_empty() {
            new_hs = Some(self.hard_state.clone());
        }
        if let Some(meta) = snapshot {
            let hs = new_hs.get_or_insert_with(|| self.hard_state.clone());
            hs.term = hs.term.max(meta.term);
            hs.commit = hs.commit.max(meta.index);
        }
        if let Some(hs) = &new_hs {
            records.push(Record::HardState(hs.clone()));
        }
        if records.is_empty() {
            return Ok(());
        }
        if self.wal.should_rotate() {
            let head = self.head_records();
            self.wal.rotate(&head)?;
        }
        let locations = self.wal.append(&records)?;
        if sync {
            self.wal.sync()?;
        }

        // The records are written: bring the memory view up to date.
        if let Some(meta) = snapshot {
            self.slots.clear();
            self.cached_bytes = 0;
            self.truncated = LogId::of(meta);
            self.cached_from = meta.index + 1;
            self.conf_state = meta.get_conf_state().clone();
        }
        if let Some(first) = entries.first() {
            let keep = self.offset(first.index);
            for slot in self.slots.drain(keep..) {
                if slot.cached.is_some() {
                    self.cached_bytes -= u64::from(slot.location.len);
                }
            }
            self.cached_from = self.cached_from.min(first.index);
            for (e, location) in entries.iter().zip(locations) {
                self.cached_bytes += u64::from(location.len);
                self.slots.push_back(Slot {
                    term: e.term,
                    location,
                    cached: Some(e.clone()),
                });
            }
            self.evict();
        }
        if let Some(hs) = new_hs {
            self.hard_state = hs;
            self.commit_unwritten = false;
        }
        Ok(())
    }

    /// Drops the oldest cached entries until the cache fits its limit.
    fn evict(&mut self) {
        while self.cached_bytes > self.cache_limit && self.cached_from <= self.last() {
            let at = self.offset(self.cached_from);
            if self.slots[at].cached.take().is_some() {
                self.cached_bytes -= u64::from(self.slots[at].location.len);
            }
            self.cached_from += 1;
        }
    }

    /// Records a new commit index. It is written with the next record, not synced on its own:
    /// a lost commit index is re-learned from the leader.
    pub fn set_commit(&mut self, commit: u64) -> Result<()> {
        if commit != self.hard_state.commit {
            self.hard_state.commit = commit;
            self.commit_unwritten = true;
        }
        Ok(())
    }

    /// Writes any commit index not yet written and syncs the log. Nothing needs it for
    /// safety (a lost commit index is re-learned); tests use it to write a complete state.
    pub fn sync(&mut self) -> Result<()> {
        if self.commit_unwritten {
            let hs = self.hard_state.clone();
            self.persist(None, &[], Some(&hs), true)?;
        }
        self.wal.sync()
    }

    /// Discards every entry up to and including `index`, which must be applied and covered by
    /// a stored snapshot. Does nothing if `index` is already discarded.
    pub fn compact(&mut self, index: u64) -> Result<()> {
        if index <= self.truncated.index {
            return Ok(());
        }
        if index > self.last() {
            return Err(Error::Disk(format!(
                "cannot compact to {index}: last index is {}",
                self.last()
            )));
        }
        let term = self.slots[self.offset(index)].term;
        self.wal.append(&[Record::Compact { index, term }])?;
        for _ in self.truncated.index..index {
            if let Some(slot) = self.slots.pop_front() {
                if slot.cached.is_some() {
                    self.cached_bytes -= u64::from(slot.location.len);
                }
            }
        }
        self.truncated = LogId { index, term };
        self.cached_from = self.cached_from.max(index + 1);
        // Syncs the compaction record, then deletes segments that only it made unnecessary.
        self.wal.remove_through(index)
    }

    fn entry_at(&self, idx: u64) -> Result<Entry> {
        let slot = &self.slots[self.offset(idx)];
        match &slot.cached {
            Some(e) => Ok(e.clone()),
            None => {
                let e = self.wal.read_entry(slot.location)?;
                if (e.index, e.term) != (idx, slot.term) {
                    return Err(Error::Disk(format!(
                        "raft log entry {idx} read back as entry {} of term {}",
                        e.index, e.term
                    )));
                }
                Ok(e)
            }
        }
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into();
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for idx in low..high {
            let e = self.entry_at(idx).map_err(store_err)?;
            size += u64::from(e.compute_size());
            if let Some(max) = max_size {
                if !out.is_empty() && size > max {
                    break;
                }
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated.index {
            return Ok(self.truncated.term);
        }
        if idx < self.truncated.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.slots[self.offset(idx)].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        match self.snapshots.load().map_err(store_err)? {
            Some(s) if s.get_metadata().index >= request_index && s.get_metadata().index > 0 => {
                Ok(s)
            }
            _ => Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 10].into(),
            ..Default::default()
        }
    }

    fn open_with(dir: &std::path::Path, options: LogOptions) -> LogStore {
        LogStore::open(
            &dir.join("wal"),
            options,
            SnapshotStore::open(dir).unwrap(),
            &[1, 2, 3],
        )
        .unwrap()
    }

    fn open(dir: &std::path::Path) -> LogStore {
        open_with(dir, LogOptions::default())
    }

    fn ctx() -> GetEntriesContext {
        GetEntriesContext::empty(false)
    }

    #[test]
    fn new_log_has_initial_voters_and_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let st = s.initial_state().unwrap();
        assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 0));
        assert_eq!(s.term(0).unwrap(), 0);
    }

    #[test]
    fn append_terms_entries_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = open(dir.path());
            let hs = HardState {
                term: 2,
                vote: 1,
                commit: 2,
                ..Default::default()
            };
            s.persist(
                None,
                &[entry(1, 1), entry(2, 1), entry(3, 2)],
                Some(&hs),
                true,
            )
            .unwrap();
            assert_eq!(s.term(3).unwrap(), 2);
            assert_eq!(s.entries(1, 4, None, ctx()).unwrap().len(), 3);
            assert!(matches!(
                s.term(4),
                Err(raft::Error::Store(StorageError::Unavailable))
            ));
        }
        let s = open(dir.path());
        assert_eq!(s.last_index().unwrap(), 3);
        assert_eq!(s.initial_state().unwrap().hard_state.term, 2);
        assert_eq!(s.entries(2, 4, None, ctx()).unwrap()[1], entry(3, 2));
    }

    #[test]
    fn append_with_conflict_truncates_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.persist(None, &[entry(1, 1), entry(2, 1), entry(3, 1)], None, true)
            .unwrap();
        s.persist(None, &[entry(2, 2)], None, true).unwrap();
        assert_eq!(s.last_index().unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
        assert!(
            s.persist(None, &[entry(5, 2)], None, true).is_err(),
            "gaps are refused"
        );
    }

    #[test]
    fn entries_respect_max_size_but_return_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.persist(None, &[entry(1, 1), entry(2, 1), entry(3, 1)], None, true)
            .unwrap();
        assert_eq!(s.entries(1, 4, Some(1), ctx()).unwrap().len(), 1);
        let one = u64::from(entry(1, 1).compute_size());
        assert_eq!(s.entries(1, 4, Some(2 * one), ctx()).unwrap().len(), 2);
    }

    #[test]
    fn compaction_keeps_the_term_of_the_last_discarded_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.persist(None, &[entry(1, 1), entry(2, 2), entry(3, 3)], None, true)
            .unwrap();
        s.compact(2).unwrap();
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 2);
        assert!(matches!(
            s.term(1),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            s.entries(2, 4, None, ctx()),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        drop(s);
        let s = open(dir.path());
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (3, 3));
    }

    #[test]
    fn applying_a_snapshot_replaces_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.persist(None, &[entry(1, 1), entry(2, 1)], None, true)
            .unwrap();
        let mut meta = SnapshotMetadata {
            index: 10,
            term: 4,
            ..Default::default()
        };
        meta.set_conf_state(ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        });
        s.persist(Some(&meta), &[], None, true).unwrap();
        assert_eq!(
            (s.first_index().unwrap(), s.last_index().unwrap()),
            (11, 10)
        );
        assert_eq!(s.term(10).unwrap(), 4);
        assert_eq!(s.hard_state().commit, 10);
        s.persist(None, &[entry(11, 4)], None, true).unwrap();
        assert_eq!(s.last_index().unwrap(), 11);
    }

    #[test]
    fn snapshot_is_served_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        assert!(matches!(
            s.snapshot(0, 2),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 7;
        snap.mut_metadata().term = 2;
        snap.data = b"state".to_vec().into();
        assert!(s.snapshots().save(&snap).unwrap());
        assert_eq!(s.snapshot(5, 2).unwrap(), snap);
        snap.mut_metadata().index = 6;
        assert!(
            !s.snapshots().save(&snap).unwrap(),
            "older snapshots never replace newer ones"
        );
    }

    #[test]
    fn entries_beyond_the_cache_are_read_back_from_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let one = u64::from(entry(1, 1).compute_size());
        let options = LogOptions {
            entry_cache_bytes: 2 * one,
            ..LogOptions::default()
        };
        let mut s = open_with(dir.path(), options);
        let all: Vec<Entry> = (1..=5).map(|i| entry(i, 1)).collect();
        s.persist(None, &all, None, true).unwrap();
        assert!(s.cached_bytes <= 2 * one, "the cache keeps to its limit");
        assert_eq!(s.entries(1, 6, None, ctx()).unwrap(), all);
        drop(s);
        let s = open_with(dir.path(), options);
        assert_eq!(s.entries(1, 6, None, ctx()).unwrap(), all);
    }

    #[test]
    fn rotated_and_compacted_segments_reopen_to_the_same_log() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            segment_bytes: 200,
            ..LogOptions::default()
        };
        let mut s = open_with(dir.path(), options);
        for i in 1..=20 {
            let hs = HardState {
                term: 1,
                vote: 1,
                commit: i,
                ..Default::default()
            };
            s.persist(None, &[entry(i, 1)], Some(&hs), true).unwrap();
        }
        let segments = s.wal_size().0;
        assert!(segments > 3, "small segments rotate: {segments}");
        s.compact(15).unwrap();
        assert!(s.wal_size().0 < segments, "compacted segments are removed");
        drop(s);
        let s = open_with(dir.path(), options);
        assert_eq!(
            (s.first_index().unwrap(), s.last_index().unwrap()),
            (16, 20)
        );
        assert_eq!(s.term(15).unwrap(), 1);
        assert_eq!(s.hard_state().commit, 20);
        assert_eq!(
            s.entries(16, 21, None, ctx()).unwrap(),
            (16..=20).map(|i| entry(i, 1)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_commit_index_rides_with_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.persist(None, &[entry(1, 1)], None, true).unwrap();
        s.set_commit(1).unwrap();
        assert_eq!(s.hard_state().commit, 1);
        s.persist(None, &[entry(2, 1)], None, true).unwrap();
        drop(s);
        assert_eq!(open(dir.path()).hard_state().commit, 1);
    }
}
