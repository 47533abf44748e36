//! Opening a node's storage, and bringing its parts back in step after a crash or a power cut.
//!
//! A data dir holds three stores, each durable on its own terms:
//!
//! | path | what | durable when |
//! |---|---|---|
//! | `wal/` | the Raft log and `HardState` ([`LogStore`]) | every `Ready` that must sync, before acting on it |
//! | `snapshot.bin` | the newest snapshot ([`SnapshotStore`]) | before it is used or the log is compacted past it |
//! | `db/` | the state machine in sled ([`StateMachine`]) | only at chosen points; it is redone from the other two |
//!
//! After a power cut each store holds what it last synced, so they can disagree in only these
//! ways, each repaired here, in this order:
//! 1. The snapshot file is ahead of the log: a received snapshot was stored, but its record in
//!    the log was not. Record it now (the install completes).
//! 2. The state machine is behind the start of the log: restore it from the snapshot file.
//! 3. The state machine is ahead of the log's commit index (the commit index is written
//!    lazily): what was applied was committed, so raise the commit index.
//!
//! The state machine ahead of the log's last entry cannot happen while the log syncs; if it
//! does, the log lost synced writes, and the node refuses to start rather than diverge.
//!
//! The state machine is derived data: the snapshot file plus the log always cover it (the log
//! is compacted only up to an index the snapshot file covers). So a sled database that no
//! longer opens — sled is not built for power cuts between our syncs — is moved aside and the
//! state machine rebuilt from them, never trusted half-way.
//!
//! A data dir written before the WAL existed keeps its log in sled's `raft` tree: it is copied
//! into the WAL, synced, and only then dropped.

use std::path::Path;

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, SnapshotMetadata};

use crate::consensus::{LogOptions, LogStore, SnapshotStore};
use crate::error::{Error, Result};
use crate::state_machine::StateMachine;

/// Name of the WAL directory in the data dir.
pub const WAL_DIR: &str = "wal";
/// Name of the sled database directory in the data dir.
pub const DB_DIR: &str = "db";
/// The sled tree that held the Raft log before the WAL.
const OLD_RAFT_TREE: &str = "raft";

/// A node's storage, consistent and ready for a `RaftNode` and a `StorageActor`.
pub struct Recovered {
    pub log: LogStore,
    pub sm: StateMachine,
    /// The snapshot file (shared by the log and the state machine's actor).
    pub snapshots: SnapshotStore,
}

/// Opens the stores in `dir` and repairs what a crash left out of step (see the module docs).
/// A new data dir starts with `voters` as its configuration.
pub fn recover(dir: &Path, voters: &[u64], options: LogOptions) -> Result<Recovered> {
    let snapshots = SnapshotStore::open(dir)?;
    let wal_dir = dir.join(WAL_DIR);
    // Without a WAL, sled may hold the only copy of an old-layout log: never rebuild it then.
    let mut sm = if wal_dir.exists() {
        open_or_rebuild(&dir.join(DB_DIR))?
    } else {
        StateMachine::open(&dir.join(DB_DIR))?
    };
    let old_log = has_old_log(&sm);
    if old_log && wal_dir.exists() {
        // A migration that a crash interrupted: the node never ran on this WAL (the old tree is
        // dropped before recovery returns), so start the copy again from the old tree.
        tracing::warn!("discarding a WAL left by an interrupted migration");
        std::fs::remove_dir_all(&wal_dir)
            .map_err(|e| Error::Disk(format!("{}: cannot remove it: {e}", wal_dir.display())))?;
    }
    let mut log = LogStore::open(&wal_dir, options, snapshots.clone(), voters)?;
    if old_log {
        migrate_sled_log(&mut sm, &mut log)?;
    }

    // 1. A received snapshot stored but not recorded in the log.
    if snapshots.current().index > raft::Storage::last_index(&log)? {
        if let Some(snap) = snapshots.load()? {
            let meta = snap.get_metadata();
            tracing::info!(
                index = meta.index,
                "finishing the install of a received snapshot"
            );
            log.persist(Some(meta), &[], None, true)?;
        }
    }
    // 2. The state machine is behind the start of the log.
    if sm.applied().index < log.truncated().index {
        let snap = snapshots.load()?.ok_or_else(|| {
            Error::Disk(format!(
                "state machine is at {} but the log starts after {} and no snapshot is stored",
                sm.applied().index,
                log.truncated().index
            ))
        })?;
        // The snapshot must cover the log's start and agree with the log about the term there;
        // anything else is a snapshot the log never recorded, and restoring it would claim
        // entries as committed that nobody checked.
        let (index, term) = (snap.get_metadata().index, snap.get_metadata().term);
        let agrees = index >= log.truncated().index
            && raft::Storage::term(&log, index).is_ok_and(|t| t == term);
        if !agrees {
            return Err(Error::Disk(format!(
                "the snapshot file (index {index}, term {term}) does not match the raft log \
                 (compacted through {} at term {}, last index {})",
                log.truncated().index,
                log.truncated().term,
                raft::Storage::last_index(&log)?
            )));
        }
        tracing::info!(
            index = snap.get_metadata().index,
            "restoring the state machine from the stored snapshot"
        );
        sm.restore(&snap)?;
    }
    let last = raft::Storage::last_index(&log)?;
    if sm.applied().index > last {
        return Err(Error::Disk(format!(
            "the state machine has applied entry {} but the raft log ends at {last}: the log \
             lost writes it had synced, and this node must not take part until it is rebuilt",
            sm.applied().index
        )));
    }
    // 3. Applied entries are committed; the commit index itself is written lazily. A commit
    //    index outside the log (only a damaged or foreign log has one) is brought inside it:
    //    raft-rs would stop the process over it.
    let commit = log
        .hard_state()
        .commit
        .max(sm.applied().index)
        .clamp(log.truncated().index, last);
    if commit != log.hard_state().commit {
        log.set_commit(commit)?;
    }
    Ok(Recovered { log, sm, snapshots })
}

/// Opens the state machine at `path`; if sled cannot open it, moves it aside (the newest such
/// copy is kept for a post-mortem, as `db.unopenable`) and starts an empty one, which recovery
/// then fills from the snapshot file and the log.
fn open_or_rebuild(path: &Path) -> Result<StateMachine> {
    match StateMachine::open(path) {
        Ok(sm) => Ok(sm),
        Err(e) if path.exists() => {
            let aside = path.with_extension("unopenable");
            if aside.exists() {
                std::fs::remove_dir_all(&aside).map_err(|re| {
                    Error::Disk(format!(
                        "{e}; and removing {} failed: {re}",
                        aside.display()
                    ))
                })?;
            }
            tracing::error!(
                db = %path.display(),
                moved_to = %aside.display(),
                "the state machine does not open ({e}); rebuilding it from the snapshot file and the log"
            );
            std::fs::rename(path, &aside)
                .map_err(|re| Error::Disk(format!("{e}; and moving it aside failed: {re}")))?;
            crate::durable::sync_parent(path)?;
            StateMachine::open(path)
        }
        Err(e) => Err(e),
    }
}

fn be_u64(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_be_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| Error::Disk("old raft log record is truncated".into()))
}

/// Whether sled still holds a log in the old layout's `raft` tree.
fn has_old_log(sm: &StateMachine) -> bool {
    sm.db()
        .tree_names()
        .iter()
        .any(|n| n == OLD_RAFT_TREE.as_bytes())
}

/// Moves a log kept in sled's `raft` tree (the layout before the WAL) into `log`, a new WAL.
fn migrate_sled_log(sm: &mut StateMachine, log: &mut LogStore) -> Result<()> {
    let db = sm.db().clone();
    let tree = db.open_tree(OLD_RAFT_TREE)?;
    if !tree.is_empty() {
        let hs = match tree.get(b"hs")? {
            Some(v) => HardState::parse_from_bytes(&v)?,
            None => HardState::default(),
        };
        let mut meta = SnapshotMetadata::default();
        if let Some(v) = tree.get(b"trunc")? {
            meta.index = be_u64(&v, 0)?;
            meta.term = be_u64(&v, 8)?;
        }
        if let Some(v) = tree.get(b"cs")? {
            meta.set_conf_state(ConfState::parse_from_bytes(&v)?);
        } else {
            meta.set_conf_state(log.conf_state().clone());
        }
        let mut entries = Vec::new();
        for kv in tree.scan_prefix(b"e") {
            let (_, v) = kv?;
            entries.push(Entry::parse_from_bytes(v.get(8..).unwrap_or_default())?);
        }
        tracing::info!(
            entries = entries.len(),
            "moving the raft log from sled into the WAL"
        );
        log.persist(Some(&meta), &entries, Some(&hs), true)?;
    }
    // The WAL now holds the log durably; only then does the old copy go.
    db.drop_tree(OLD_RAFT_TREE)?;
    sm.sync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::LogId;
    use raft::Storage;

    #[test]
    fn an_unopenable_state_machine_is_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut r = recover(dir.path(), &[1], LogOptions::default()).unwrap();
            let e = Entry {
                index: 1,
                term: 1,
                ..Default::default()
            };
            let hs = HardState {
                term: 1,
                vote: 1,
                commit: 1,
                ..Default::default()
            };
            r.log
                .persist(None, std::slice::from_ref(&e), Some(&hs), true)
                .unwrap();
            r.sm.apply(&[e]).unwrap();
        }
        // sled's directory replaced by something sled cannot open.
        std::fs::remove_dir_all(dir.path().join(DB_DIR)).unwrap();
        std::fs::write(dir.path().join(DB_DIR), b"not a database").unwrap();
        let r = recover(dir.path(), &[1], LogOptions::default()).unwrap();
        assert_eq!(
            r.sm.applied().index,
            0,
            "a new state machine, to be filled from the log"
        );
        assert_eq!(r.log.hard_state().commit, 1);
        assert_eq!(r.log.last_index().unwrap(), 1);
        assert!(
            dir.path().join("db.unopenable").exists(),
            "the unopenable database is kept for a post-mortem"
        );
    }

    /// Recreates the on-disk state of a snapshot file the log never recorded (a received
    /// snapshot stored, then a crash, then a lower snapshot from another leader recorded
    /// instead, then a crash before it was restored): start-up must not restore it.
    #[test]
    fn a_snapshot_file_that_disagrees_with_the_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ConfState {
            voters: vec![1],
            ..Default::default()
        };
        let snapshot_at = |index, term| {
            let mut snap = raft::prelude::Snapshot::default();
            snap.mut_metadata().index = index;
            snap.mut_metadata().term = term;
            snap.mut_metadata().set_conf_state(cs.clone());
            snap
        };
        {
            let mut r = recover(dir.path(), &[1], LogOptions::default()).unwrap();
            // The log recorded snapshot T at 10 (term 2), then entries 11..=20 of term 2.
            let entries: Vec<Entry> = (11..=20)
                .map(|index| Entry {
                    index,
                    term: 2,
                    ..Default::default()
                })
                .collect();
            let t = snapshot_at(10, 2);
            r.log
                .persist(Some(t.get_metadata()), &entries, None, true)
                .unwrap();
            // The file holds F at 20, from a term the log does not have there.
            r.snapshots.save_received(&snapshot_at(20, 3)).unwrap();
        }
        let err = recover(dir.path(), &[1], LogOptions::default())
            .err()
            .expect("a disagreeing snapshot is refused");
        assert!(
            err.to_string().contains("does not match the raft log"),
            "{err}"
        );

        // The same file with the log's term at 20 is consistent with it, and is used.
        SnapshotStore::open(dir.path())
            .unwrap()
            .save_received(&snapshot_at(20, 2))
            .unwrap();
        let r = recover(dir.path(), &[1], LogOptions::default()).unwrap();
        assert_eq!(r.sm.applied(), LogId { index: 20, term: 2 });
        assert_eq!(r.log.hard_state().commit, 20);
    }

    /// Writes the old layout: the log in sled's `raft` tree, beside the state machine.
    fn write_old_layout(dir: &Path) {
        {
            let db = sled::open(dir.join(DB_DIR)).unwrap();
            let tree = db.open_tree(OLD_RAFT_TREE).unwrap();
            let hs = HardState {
                term: 3,
                vote: 2,
                commit: 2,
                ..Default::default()
            };
            tree.insert(b"hs", hs.write_to_bytes().unwrap()).unwrap();
            let cs = ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            };
            tree.insert(b"cs", cs.write_to_bytes().unwrap()).unwrap();
            for index in 1..=2 {
                let e = Entry {
                    index,
                    term: 3,
                    ..Default::default()
                };
                let mut key = vec![b'e'];
                key.extend_from_slice(&index.to_be_bytes());
                let mut v = 3u64.to_be_bytes().to_vec();
                v.extend_from_slice(&e.write_to_bytes().unwrap());
                tree.insert(key, v).unwrap();
            }
            db.flush().unwrap();
        }
    }

    #[test]
    fn a_log_kept_in_sled_moves_into_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        write_old_layout(dir.path());
        let r = recover(dir.path(), &[9], LogOptions::default()).unwrap();
        assert_eq!(r.log.hard_state().vote, 2);
        assert_eq!(r.log.hard_state().commit, 2);
        assert_eq!(r.log.conf_state().voters, vec![1, 2, 3]);
        assert_eq!(r.log.last_index().unwrap(), 2);
        assert_eq!(r.log.term(2).unwrap(), 3);
        assert!(!r
            .sm
            .db()
            .tree_names()
            .iter()
            .any(|n| n == OLD_RAFT_TREE.as_bytes()));
    }

    /// A migration cut short by a crash left a partial WAL and the old tree: the copy starts
    /// again from the old tree, so nothing of the old log is lost.
    #[test]
    fn an_interrupted_migration_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        write_old_layout(dir.path());
        {
            // What a crash mid-copy can leave: a WAL holding part of the log.
            let snapshots = SnapshotStore::open(dir.path()).unwrap();
            let mut partial = LogStore::open(
                &dir.path().join(WAL_DIR),
                LogOptions::default(),
                snapshots,
                &[9],
            )
            .unwrap();
            let first = Entry {
                index: 1,
                term: 3,
                ..Default::default()
            };
            partial.persist(None, &[first], None, true).unwrap();
        }
        let r = recover(dir.path(), &[9], LogOptions::default()).unwrap();
        assert_eq!(r.log.hard_state().vote, 2, "the old vote survives");
        assert_eq!(r.log.last_index().unwrap(), 2);
        assert_eq!(r.log.conf_state().voters, vec![1, 2, 3]);
    }
}
