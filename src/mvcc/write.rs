//! Applying etcd's write commands: Put, DeleteRange, Txn (in `txn.rs`), Compaction, and the
//! lease commands (grant, revoke, checkpoint; see [`super::lease`]).
//!
//! A [`Writer`] stages one apply batch: the records go into an [`Overlay`], the revision and
//! compact revision into a copy of the store's state (the key count is the index's), and
//! each change into the key index at once (later commands read it there), so nothing reaches sled until the
//! state machine writes the whole batch, applied index included, at once.
//!
//! Each command runs atomically: a state-dependent failure (`Error::Etcd`) undoes whatever
//! the command wrote, records and index changes, and leaves the state as it was, and the
//! command is reported as failed.
//!
//! Revisions: a command starts at the store's revision `begin`; its changes (each put, each
//! deleted key) get `(begin + 1, 0)`, `(begin + 1, 1)`, … in execution order, and the store
//! moves to `begin + 1` only if there was at least one. A Put writes one record, to the
//! revision log `r` (meta, key, value), and appends its change to the key index; a deleted
//! key gets a tombstone record and change.

use etcd_api::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, ResponseHeader,
};
use etcd_api::EtcdError;

use super::index::{Change, KeyIndex};
use super::keys::{rev_key, KeyRange, Live, Meta, Record, Revision};
use super::lease::{lease_key, Lease, LeaseTable, MAX_LEASE_TTL, NO_LEASE};
use super::overlay::{Overlay, View};
use super::read::Reader;
use super::store::StoreState;
use crate::error::{Error, Result};

/// The revision bookkeeping of one command (nested Txns included).
#[derive(Debug, Clone, Copy)]
pub struct Changes {
    /// The store's revision when the command started.
    pub begin: i64,
    /// Changes made so far; the next one gets this sub-revision.
    pub made: i64,
}

impl Changes {
    pub fn new(begin: i64) -> Changes {
        Changes { begin, made: 0 }
    }

    /// The revision a read inside the command sees: `begin`, or `begin + 1` once the
    /// command has changed something (etcd's `storeTxnWrite.Range`).
    pub fn current(&self) -> i64 {
        if self.made > 0 {
            self.begin + 1
        } else {
            self.begin
        }
    }

    fn next(&mut self) -> Revision {
        let rev = Revision {
            main: self.begin + 1,
            sub: self.made,
        };
        self.made += 1;
        rev
    }
}

/// A header carrying only the revision: the gRPC layer fills in cluster, member and term of
/// a top-level answer; answers nested in a Txn keep just this, as etcd's do.
pub fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// A staged apply batch, ready to be written.
pub struct Finished {
    /// Every write of the batch, `m` keys included.
    pub batch: sled::Batch,
    /// The store's state once the batch is written.
    pub state: StoreState,
    /// Length of the largest value written, so the caller knows whether sled may have put
    /// one in a blob file of its own.
    pub largest_value: usize,
    /// The revision-log records the batch writes, in revision order: its watch events
    /// ([`MvccStore::events_of`](super::MvccStore::events_of)).
    pub records: Vec<(Revision, sled::IVec)>,
    /// What the batch did to the lease table, in order: what the lessor must hear.
    pub lease_changes: Vec<LeaseChange>,
}

/// One change an apply batch made to the lease table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseChange {
    /// Granted, or its remaining TTL checkpointed: the lease as it now is.
    Set(i64, Lease),
    Revoked(i64),
}

/// One apply batch being staged.
pub struct Writer<'a> {
    tree: &'a sled::Tree,
    index: &'a mut KeyIndex,
    /// Changed in place, like the index: only commands that never fail after a change touch
    /// it (grant, revoke, checkpoint), so an undo never needs to.
    leases: &'a mut LeaseTable,
    overlay: Overlay,
    /// The keys the current undoable command changed in the index, in order, so a failure
    /// part-way takes their changes back (newest first).
    index_undo: Vec<Vec<u8>>,
    /// Whether the current command may fail after writing (a Txn).
    undoable: bool,
    /// The store's state before the batch, to write only the `m` keys that changed.
    base: StoreState,
    /// The state as the batch so far leaves it.
    pub(super) state: StoreState,
    /// Length of the largest value written, so the caller knows whether sled may have put
    /// one in a blob file of its own.
    largest_value: usize,
    lease_changes: Vec<LeaseChange>,
}

impl<'a> Writer<'a> {
    pub fn new(
        tree: &'a sled::Tree,
        index: &'a mut KeyIndex,
        leases: &'a mut LeaseTable,
        state: StoreState,
    ) -> Writer<'a> {
        Writer {
            tree,
            index,
            leases,
            overlay: Overlay::default(),
            index_undo: Vec::new(),
            undoable: false,
            base: state,
            state,
            largest_value: 0,
            lease_changes: Vec::new(),
        }
    }

    /// The store as this batch has left it so far, reading at `current`.
    pub(super) fn reader(&self, current: i64) -> Reader<'_> {
        Reader {
            view: View::with(self.tree, &self.overlay),
            index: self.index,
            leases: self.leases,
            current,
            compact: self.state.compact,
        }
    }

    /// The staged writes as one batch (with the `m` keys that changed), the state after
    /// them, and the length of the largest value written. Once the batch is written, the
    /// store takes the state ([`MvccStore::set_state`](super::MvccStore::set_state)).
    /// The key count is the index's: it counts live keys as changes are recorded and undone.
    pub fn finish(mut self) -> Finished {
        self.state.key_count = self.index.live_count();
        let (mut batch, records) = self.overlay.into_batch();
        self.state.write_changes(&self.base, &mut batch);
        Finished {
            batch,
            state: self.state,
            largest_value: self.largest_value,
            records,
            lease_changes: self.lease_changes,
        }
    }

    /// Runs one command: its answer, or the etcd failure that made it change nothing.
    /// `undoable`: whether it may fail after writing (a Txn); the others fail before their
    /// first write or not at all.
    fn atomically<T>(
        &mut self,
        undoable: bool,
        command: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<Result<T, EtcdError>> {
        let before = self.state;
        self.overlay.begin(undoable);
        self.undoable = undoable;
        self.index_undo.clear();
        match command(self) {
            Ok(answer) => Ok(Ok(answer)),
            Err(Error::Etcd(e)) => {
                self.overlay.rollback();
                while let Some(key) = self.index_undo.pop() {
                    self.index.unrecord(&key);
                }
                self.state = before;
                Ok(Err(e))
            }
            Err(e) => Err(e),
        }
    }

    /// Ends a command: the store moves to the next revision if it changed anything.
    fn settle(&mut self, changes: Changes) {
        self.state.revision = changes.current();
    }

    pub fn put(&mut self, req: &PutRequest) -> Result<Result<PutResponse, EtcdError>> {
        self.atomically(false, |w| {
            // etcd checks the lease before anything else, when not inside a Txn.
            if req.lease != NO_LEASE && !w.leases.contains(req.lease) {
                return Err(Error::Etcd(EtcdError::LeaseNotFound));
            }
            let mut changes = Changes::new(w.state.revision);
            let resp = w.put_in(&mut changes, req)?;
            w.settle(changes);
            Ok(resp)
        })
    }

    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<Result<DeleteRangeResponse, EtcdError>> {
        self.atomically(false, |w| {
            let mut changes = Changes::new(w.state.revision);
            let resp = w.delete_in(&mut changes, req)?;
            w.settle(changes);
            Ok(resp)
        })
    }

    pub fn txn(
        &mut self,
        req: &etcd_api::etcdserverpb::TxnRequest,
    ) -> Result<Result<etcd_api::etcdserverpb::TxnResponse, EtcdError>> {
        self.atomically(true, |w| w.run_txn(req))
    }

    /// Compaction is logical here: reads below `revision` fail from now on; the records it
    /// makes unreachable are removed later, in steps (`compact.rs`). It does not change the
    /// revision.
    pub fn compaction(
        &mut self,
        req: &CompactionRequest,
    ) -> Result<Result<CompactionResponse, EtcdError>> {
        self.atomically(false, |w| {
            if req.revision <= w.state.compact {
                return Err(Error::Etcd(EtcdError::Compacted));
            }
            if req.revision > w.state.revision {
                return Err(Error::Etcd(EtcdError::FutureRevision));
            }
            w.state.compact = req.revision;
            Ok(CompactionResponse {
                header: header(w.state.revision),
            })
        })
    }

    /// Appends a change to the index, remembering it if the command may yet fail.
    fn record(&mut self, key: &[u8], change: Change) {
        self.index.record(key, change);
        if self.undoable {
            self.index_undo.push(key.to_vec());
        }
    }

    /// A Put as one change of a command (etcd's `applierV3backend.Put` inside a write txn).
    pub(super) fn put_in(
        &mut self,
        changes: &mut Changes,
        req: &PutRequest,
    ) -> Result<PutResponse> {
        if req.lease != NO_LEASE && !self.leases.contains(req.lease) {
            return Err(Error::Etcd(EtcdError::LeaseNotFound));
        }
        let reader = self.reader(changes.current());
        let old = reader.live(&req.key)?;
        let need_value = req.prev_kv || req.ignore_value;
        let prev = match &old {
            Some(l) if need_value => Some(reader.key_value(&req.key, l, true)?),
            _ => None,
        };
        if (req.ignore_value || req.ignore_lease) && old.is_none() {
            return Err(Error::Etcd(EtcdError::KeyNotFound));
        }
        let value: &[u8] = match &prev {
            Some(p) if req.ignore_value => &p.value,
            _ => &req.value,
        };
        let lease = match &old {
            Some(l) if req.ignore_lease => l.lease,
            _ => req.lease,
        };
        let rev = changes.next();
        let live = Live {
            create: old.map_or(rev.main, |o| o.create),
            modified: rev,
            version: old.map_or(1, |o| o.version.saturating_add(1)),
            lease,
        };
        let meta = live.meta();
        self.largest_value = self.largest_value.max(value.len());
        self.overlay.insert(
            rev_key(rev).to_vec(),
            Record::encode(&meta, &req.key, value),
        );
        self.record(&req.key, Change { rev, meta });
        Ok(PutResponse {
            header: header(rev.main),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    /// A DeleteRange as changes of a command, one per key deleted, in key order.
    pub(super) fn delete_in(
        &mut self,
        changes: &mut Changes,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse> {
        let reader = self.reader(changes.current());
        let range = KeyRange::new(&req.key, &req.range_end);
        let mut doomed: Vec<(Vec<u8>, Live)> = Vec::new();
        reader.visit(range, reader.current, |k, live| {
            doomed.push((k.to_vec(), live));
            Ok(true)
        })?;
        let prev_kvs = if req.prev_kv {
            doomed
                .iter()
                .map(|(k, l)| reader.key_value(k, l, true))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        for (key, _) in &doomed {
            self.tombstone(changes, key);
        }
        Ok(DeleteRangeResponse {
            header: header(changes.current()),
            deleted: doomed.len() as i64,
            prev_kvs,
        })
    }

    /// Deletes live `key` as the next change of a command.
    fn tombstone(&mut self, changes: &mut Changes, key: &[u8]) {
        let rev = changes.next();
        self.overlay.insert(
            rev_key(rev).to_vec(),
            Record::encode(&Meta::TOMBSTONE, key, &[]),
        );
        self.record(
            key,
            Change {
                rev,
                meta: Meta::TOMBSTONE,
            },
        );
    }

    /// etcd's lessor `Grant`, as applied: the proposer has picked the id and raised the TTL
    /// to its least TTL. A grant does not change the revision.
    pub fn lease_grant(
        &mut self,
        req: &LeaseGrantRequest,
    ) -> Result<Result<LeaseGrantResponse, EtcdError>> {
        self.atomically(false, |w| {
            if req.ttl > MAX_LEASE_TTL {
                return Err(Error::Etcd(EtcdError::LeaseTtlTooLarge));
            }
            if req.id == NO_LEASE {
                return Err(Error::Etcd(EtcdError::LeaseNotFound));
            }
            if w.leases.contains(req.id) {
                return Err(Error::Etcd(EtcdError::LeaseExist));
            }
            w.set_lease(
                req.id,
                Lease {
                    ttl: req.ttl,
                    remaining: 0,
                },
            );
            Ok(LeaseGrantResponse {
                header: header(w.state.revision),
                id: req.id,
                ttl: req.ttl,
                error: String::new(),
            })
        })
    }

    /// etcd's lessor `Revoke`: every key of the lease deleted, in key order, in one revision
    /// (none if it has no keys), then the lease gone.
    pub fn lease_revoke(
        &mut self,
        req: &LeaseRevokeRequest,
    ) -> Result<Result<LeaseRevokeResponse, EtcdError>> {
        self.atomically(false, |w| {
            if !w.leases.contains(req.id) {
                return Err(Error::Etcd(EtcdError::LeaseNotFound));
            }
            let keys: Vec<Vec<u8>> = w.index.lease_keys(req.id).map(<[u8]>::to_vec).collect();
            let mut changes = Changes::new(w.state.revision);
            for key in &keys {
                w.tombstone(&mut changes, key);
            }
            w.settle(changes);
            w.leases.remove(req.id);
            w.overlay.remove(lease_key(req.id).to_vec());
            w.lease_changes.push(LeaseChange::Revoked(req.id));
            Ok(LeaseRevokeResponse {
                header: header(w.state.revision),
            })
        })
    }

    /// etcd's lessor `Checkpoint`: the remaining TTLs the leader saw (0 clears one); leases
    /// revoked meanwhile are passed over.
    pub fn lease_checkpoint(
        &mut self,
        req: &LeaseCheckpointRequest,
    ) -> Result<Result<LeaseCheckpointResponse, EtcdError>> {
        for cp in &req.checkpoints {
            if let Some(lease) = self.leases.get(cp.id) {
                let remaining = cp.remaining_ttl.clamp(0, lease.ttl);
                self.set_lease(cp.id, Lease { remaining, ..lease });
            }
        }
        Ok(Ok(LeaseCheckpointResponse {
            header: header(self.state.revision),
        }))
    }

    fn set_lease(&mut self, id: i64, lease: Lease) {
        self.leases.insert(id, lease);
        self.lease_changes.push(LeaseChange::Set(id, lease));
        self.overlay
            .insert(lease_key(id).to_vec(), lease.to_bytes().to_vec());
    }
}
