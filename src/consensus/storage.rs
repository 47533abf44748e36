//! raft-rs `Storage` over a sled tree.
//!
//! Layout of the `raft` tree (one tree, so one sled `Batch` is atomic across all of it):
//!
//! | key              | value                                   |
//! |------------------|-----------------------------------------|
//! | `hs`             | `HardState` (protobuf)                  |
//! | `cs`             | `ConfState` (protobuf)                  |
//! | `trunc`          | index, term of the last discarded entry |
//! | `e` + index (BE) | term (8 bytes BE) + `Entry` (protobuf)  |
//!
//! The term sits in front of each entry so `term()` — called on every append — reads 8 bytes
//! instead of decoding an entry. Big-endian indexes make sled's key order the log order.
//!
//! Durability: [`SledRaftStorage::persist`] writes new entries, the `HardState` and a received
//! snapshot's metadata in one batch and flushes when raft-rs says it must (`Ready::must_sync`),
//! before any message that depends on them is sent. In-memory copies of the small records
//! answer raft-rs's frequent questions without touching sled.

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::consensus::snapshot::SnapshotStore;
use crate::error::{Error, Result};

/// Name of the sled tree holding the Raft log and state.
pub const RAFT_TREE: &str = "raft";
const HARD_STATE_KEY: &[u8] = b"hs";
const CONF_STATE_KEY: &[u8] = b"cs";
const TRUNCATED_KEY: &[u8] = b"trunc";
const ENTRY_PREFIX: u8 = b'e';

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64> {
    bytes
        .get(at..at + 8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| Error::Storage("raft log record is truncated".into()))
}

fn store_err(e: Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

/// The sled-backed Raft log and state of one node.
pub struct SledRaftStorage {
    /// The database; `flush` on it makes a batch durable.
    db: sled::Db,
    /// The `raft` tree inside `db`.
    tree: sled::Tree,
    /// Cached `HardState` (term, vote, commit), as last persisted.
    hard_state: HardState,
    /// Cached voters and learners.
    conf_state: ConfState,
    /// Index and term of the last entry discarded by compaction or a snapshot.
    truncated: (u64, u64),
    /// Index of the last entry in the log (equals `truncated.0` when the log is empty).
    last_index: u64,
    /// Where snapshots live; `snapshot()` reads from here.
    snapshots: SnapshotStore,
}

impl SledRaftStorage {
    /// Opens the log in `db`. A new log starts with `initial_voters` as its configuration.
    pub fn open(db: &sled::Db, snapshots: SnapshotStore, initial_voters: &[u64]) -> Result<Self> {
        let tree = db.open_tree(RAFT_TREE)?;
        let conf_state = match tree.get(CONF_STATE_KEY)? {
            Some(v) => ConfState::parse_from_bytes(&v)?,
            None => {
                let cs = ConfState {
                    voters: initial_voters.to_vec(),
                    ..Default::default()
                };
                tree.insert(CONF_STATE_KEY, cs.write_to_bytes()?)?;
                db.flush()?;
                cs
            }
        };
        let hard_state = match tree.get(HARD_STATE_KEY)? {
            Some(v) => HardState::parse_from_bytes(&v)?,
            None => HardState::default(),
        };
        let truncated = match tree.get(TRUNCATED_KEY)? {
            Some(v) => (u64_at(&v, 0)?, u64_at(&v, 8)?),
            None => (0, 0),
        };
        let last_index = match tree.scan_prefix([ENTRY_PREFIX]).next_back() {
            Some(kv) => u64_at(&kv?.0, 1)?,
            None => truncated.0,
        };
        Ok(SledRaftStorage {
            db: db.clone(),
            tree,
            hard_state,
            conf_state,
            truncated,
            last_index,
            snapshots,
        })
    }

    /// The persisted `HardState`.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The current configuration.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Index and term of the last discarded entry.
    pub fn truncated(&self) -> (u64, u64) {
        self.truncated
    }

    /// The snapshot store this log reads snapshots from.
    pub fn snapshots(&self) -> &SnapshotStore {
        &self.snapshots
    }

    /// Writes `entries`, `hard_state` and a received snapshot's metadata in one atomic batch,
    /// and flushes it to disk when `sync` is set.
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
        let mut batch = sled::Batch::default();
        let mut truncated = self.truncated;
        let mut last_index = self.last_index;
        let mut conf_state = None;
        if let Some(meta) = snapshot {
            for idx in self.truncated.0 + 1..=self.last_index {
                batch.remove(&entry_key(idx));
            }
            truncated = (meta.index, meta.term);
            last_index = meta.index;
            let mut t = Vec::with_capacity(16);
            t.extend_from_slice(&meta.index.to_be_bytes());
            t.extend_from_slice(&meta.term.to_be_bytes());
            batch.insert(TRUNCATED_KEY, t);
            let cs = meta.get_conf_state().clone();
            batch.insert(CONF_STATE_KEY, cs.write_to_bytes()?);
            conf_state = Some(cs);
        }
        if let Some(first) = entries.first() {
            if first.index <= truncated.0 {
                return Err(Error::Storage(format!(
                    "append at index {} overlaps the compacted log (truncated at {})",
                    first.index, truncated.0
                )));
            }
            if first.index > last_index + 1 {
                return Err(Error::Storage(format!(
                    "append at index {} leaves a gap after last index {last_index}",
                    first.index
                )));
            }
            for idx in first.index..=last_index {
                batch.remove(&entry_key(idx));
            }
            for e in entries {
                let mut v = Vec::with_capacity(8 + e.compute_size() as usize);
                v.extend_from_slice(&e.term.to_be_bytes());
                e.write_to_vec(&mut v)?;
                batch.insert(&entry_key(e.index), v);
            }
            last_index = entries.last().expect("non-empty").index;
        }
        let mut new_hs = hard_state.cloned();
        if let Some(meta) = snapshot {
            let hs = new_hs.get_or_insert_with(|| self.hard_state.clone());
            hs.term = hs.term.max(meta.term);
            hs.commit = hs.commit.max(meta.index);
        }
        if let Some(hs) = &new_hs {
            batch.insert(HARD_STATE_KEY, hs.write_to_bytes()?);
        }
        self.tree.apply_batch(batch)?;
        if sync {
            self.db.flush()?;
        }
        self.truncated = truncated;
        self.last_index = last_index;
        if let Some(hs) = new_hs {
            self.hard_state = hs;
        }
        if let Some(cs) = conf_state {
            self.conf_state = cs;
        }
        Ok(())
    }

    /// Records a new commit index (not synced: a lost commit index is re-learned from the leader).
    pub fn set_commit(&mut self, commit: u64) -> Result<()> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.persist(None, &[], Some(&hs), false)
    }

    /// Discards every entry up to and including `index`, which must be applied and covered by
    /// a stored snapshot. Does nothing if `index` is already discarded.
    pub fn compact(&mut self, index: u64) -> Result<()> {
        if index <= self.truncated.0 {
            return Ok(());
        }
        if index > self.last_index {
            return Err(Error::Storage(format!(
                "cannot compact to {index}: last index is {}",
                self.last_index
            )));
        }
        let term = self.entry_term(index)?;
        let mut batch = sled::Batch::default();
        for idx in self.truncated.0 + 1..=index {
            batch.remove(&entry_key(idx));
        }
        let mut t = Vec::with_capacity(16);
        t.extend_from_slice(&index.to_be_bytes());
        t.extend_from_slice(&term.to_be_bytes());
        batch.insert(TRUNCATED_KEY, t);
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        self.truncated = (index, term);
        Ok(())
    }

    fn entry_term(&self, idx: u64) -> Result<u64> {
        match self.tree.get(entry_key(idx))? {
            Some(v) => u64_at(&v, 0),
            None => Err(Error::Storage(format!("raft log entry {idx} is missing"))),
        }
    }
}

impl raft::Storage for SledRaftStorage {
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
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into();
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for kv in self.tree.range(entry_key(low)..entry_key(high)) {
            let (_, v) = kv.map_err(|e| store_err(e.into()))?;
            let e = Entry::parse_from_bytes(&v[8..]).map_err(|e| store_err(e.into()))?;
            if e.index != low + out.len() as u64 {
                return Err(store_err(Error::Storage(format!(
                    "raft log has a hole at {} in [{low}, {high})",
                    low + out.len() as u64
                ))));
            }
            size += u64::from(e.compute_size());
            if let Some(max) = max_size {
                if !out.is_empty() && size > max {
                    return Ok(out);
                }
            }
            out.push(e);
        }
        if out.len() as u64 != high - low {
            return Err(store_err(Error::Storage(format!(
                "raft log has a hole in [{low}, {high})"
            ))));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if idx < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.entry_term(idx).map_err(store_err)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
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

    fn open(dir: &std::path::Path) -> SledRaftStorage {
        let db = sled::open(dir.join("db")).unwrap();
        SledRaftStorage::open(&db, SnapshotStore::open(dir).unwrap(), &[1, 2, 3]).unwrap()
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
}
