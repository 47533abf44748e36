//! The newest snapshot of the state machine, kept as one file in the data dir.
//!
//! The file holds a protobuf-encoded raft `Snapshot` (metadata: index, term, ConfState; data:
//! the state machine's dump). It is written to a temporary file, fsynced, and renamed over the
//! old one, so a crash leaves either the old or the new snapshot, never half of one. Two writers
//! exist: the StorageActor saves the snapshots it makes, only moving forward; the RaftActor
//! saves a snapshot received from the leader, which always wins (it is above the commit index,
//! so above anything made here, and it is what the log records next).
//!
//! Invariant used at start-up: the file's index is never below the index where the Raft log
//! was truncated, so a node whose state machine is behind the log's start can always restore.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use protobuf::Message as _;
use raft::prelude::Snapshot;

use crate::consensus::LogId;
use crate::durable::write_durably;
use crate::error::{Error, Result};

/// File name of the snapshot inside the data dir.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";

/// Shared handle to the snapshot file; cheap to clone.
#[derive(Clone)]
pub struct SnapshotStore {
    path: PathBuf,
    /// Serialises writers, and remembers the (index, term) of the stored snapshot.
    current: Arc<Mutex<LogId>>,
}

impl SnapshotStore {
    /// Opens the store in `dir`, reading the stored snapshot's metadata if there is one.
    pub fn open(dir: &Path) -> Result<SnapshotStore> {
        let path = dir.join(SNAPSHOT_FILE);
        let store = SnapshotStore {
            path,
            current: Arc::new(Mutex::new(LogId::default())),
        };
        if let Some(snap) = store.load()? {
            let m = snap.get_metadata();
            *store.current.lock().expect("snapshot lock") = LogId::of(m);
        }
        Ok(store)
    }

    /// Index and term of the stored snapshot; (0, 0) when there is none.
    pub fn current(&self) -> LogId {
        *self.current.lock().expect("snapshot lock")
    }

    /// Reads the stored snapshot, data included.
    pub fn load(&self) -> Result<Option<Snapshot>> {
        match fs::read(&self.path) {
            Ok(bytes) => Snapshot::parse_from_bytes(&bytes).map(Some).map_err(|e| {
                Error::Disk(format!("{}: corrupt snapshot: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Disk(format!("{}: {e}", self.path.display()))),
        }
    }

    /// Stores `snap` (one the state machine made) durably unless a snapshot at the same or a
    /// later index is already stored. Returns whether it was stored.
    pub fn save(&self, snap: &Snapshot) -> Result<bool> {
        let mut current = self.current.lock().expect("snapshot lock");
        let m = snap.get_metadata();
        if m.index <= current.index && current.index != 0 {
            return Ok(false);
        }
        write_durably(&self.path, &snap.write_to_bytes()?)?;
        *current = LogId::of(m);
        Ok(true)
    }

    /// Stores a snapshot received from the leader durably, whatever is stored. raft-rs hands one
    /// over only above this node's commit index, so it is newer than any snapshot this node
    /// made; a stored one at a higher index can only be an earlier received snapshot that a
    /// crash kept out of the log, and the log is about to record this one instead.
    pub fn save_received(&self, snap: &Snapshot) -> Result<()> {
        let mut current = self.current.lock().expect("snapshot lock");
        let m = snap.get_metadata();
        write_durably(&self.path, &snap.write_to_bytes()?)?;
        *current = LogId::of(m);
        Ok(())
    }
}
