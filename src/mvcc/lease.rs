//! The lease table: which leases exist, the TTL each was granted, and the remaining TTL the
//! leader last checkpointed for it — the replicated half of etcd's leases.
//!
//! # What is replicated and what is not
//!
//! A lease's *deadline* is not replicated: it is a time on the leader's clock, kept by the
//! leader's lessor ([`crate::lease`]) and never written to the log, so no two members need
//! agree on a clock. What every member applies, in log order, is:
//! - **grant** (an id and a TTL in seconds, the id already chosen and the TTL already raised
//!   to the least TTL by the proposer, so applying it is deterministic): the lease exists;
//! - **revoke**: the lease is gone, and every key attached to it is deleted, all in one
//!   revision (none if it had no keys), so watchers see one atomic change;
//! - **checkpoint**: the remaining TTL the leader saw for some leases (0 clears it), which a
//!   new leader starts them from instead of their whole TTL.
//!
//! Which keys a lease has is not stored here: each live key's lease is in its meta, so the
//! key index keeps the reverse map ([`super::index::KeyIndex::lease_keys`]).
//!
//! # Layout
//!
//! `l` + id (8 bytes, big-endian) → TTL, remaining TTL (8 bytes each), in the same `sm` tree
//! and the same apply batches as the revision log.
//!
//! # Invariants
//!
//! - The table in memory and the `l` records say the same (within an apply batch, the
//!   records are staged in its overlay).
//! - A live key's lease, if not 0, is in the table: a put with an unknown lease fails, and a
//!   revoke deletes every key attached before the lease goes.

use std::collections::BTreeMap;

use super::keys::be_i64;
use crate::error::Result;

/// Prefix of the lease records.
pub const LEASE_PREFIX: u8 = b'l';
/// Bytes of a lease record's key: the prefix and the id.
const LEASE_KEY_BYTES: usize = 1 + 8;
/// Bytes of a lease record's value: TTL and remaining TTL.
const LEASE_VALUE_BYTES: usize = 16;
/// The longest TTL a lease may be granted, in seconds (etcd's `MaxLeaseTTL`, about 285
/// years).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// The id that means "no lease" on a key, and "pick one" in a grant request.
pub const NO_LEASE: i64 = 0;

/// One lease, as every member knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Seconds, as granted.
    pub ttl: i64,
    /// Seconds the leader last checkpointed as left; 0 when none was, or the lease was
    /// renewed since.
    pub remaining: i64,
}

impl Lease {
    /// What a new leader starts the lease's countdown from.
    pub fn restart_ttl(&self) -> i64 {
        if self.remaining > 0 {
            self.remaining
        } else {
            self.ttl
        }
    }

    pub fn to_bytes(self) -> [u8; LEASE_VALUE_BYTES] {
        let mut b = [0u8; LEASE_VALUE_BYTES];
        b[..8].copy_from_slice(&(self.ttl as u64).to_be_bytes());
        b[8..].copy_from_slice(&(self.remaining as u64).to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Lease> {
        if b.len() != LEASE_VALUE_BYTES {
            return None;
        }
        Some(Lease {
            ttl: be_i64(b, 0)?,
            remaining: be_i64(b, 8)?,
        })
    }
}

/// The tree key of lease `id`'s record.
pub fn lease_key(id: i64) -> [u8; LEASE_KEY_BYTES] {
    let mut k = [0u8; LEASE_KEY_BYTES];
    k[0] = LEASE_PREFIX;
    k[1..].copy_from_slice(&(id as u64).to_be_bytes());
    k
}

/// The lease id of a tree key, if it is a lease record's.
pub fn id_of_key(k: &[u8]) -> Option<i64> {
    if k.len() != LEASE_KEY_BYTES || k[0] != LEASE_PREFIX {
        return None;
    }
    be_i64(k, 1)
}

/// Every lease, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseTable {
    leases: BTreeMap<i64, Lease>,
}

impl LeaseTable {
    /// The table of the `l` records in `tree`.
    pub fn load(tree: &sled::Tree) -> Result<LeaseTable> {
        let mut table = LeaseTable::default();
        for item in tree.scan_prefix([LEASE_PREFIX]) {
            let (k, v) = item?;
            let bad = || super::read::corrupt("lease", &k);
            let id = id_of_key(&k).ok_or_else(bad)?;
            let lease = Lease::from_bytes(&v).ok_or_else(bad)?;
            table.leases.insert(id, lease);
        }
        Ok(table)
    }

    pub fn get(&self, id: i64) -> Option<Lease> {
        self.leases.get(&id).copied()
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Every lease, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, Lease)> + '_ {
        self.leases.iter().map(|(&id, &l)| (id, l))
    }

    pub(super) fn insert(&mut self, id: i64, lease: Lease) {
        self.leases.insert(id, lease);
    }

    pub(super) fn remove(&mut self, id: i64) -> Option<Lease> {
        self.leases.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_other_keys() {
        let lease = Lease {
            ttl: 60,
            remaining: 17,
        };
        assert_eq!(Lease::from_bytes(&lease.to_bytes()), Some(lease));
        assert_eq!(Lease::from_bytes(&[0; 15]), None);
        assert_eq!(id_of_key(&lease_key(0x1234)), Some(0x1234));
        assert_eq!(
            id_of_key(&lease_key(-5)),
            Some(-5),
            "etcd allows any non-zero id"
        );
        assert_eq!(id_of_key(b"mrev"), None);
        assert_eq!(lease.restart_ttl(), 17);
        assert_eq!(
            Lease {
                remaining: 0,
                ..lease
            }
            .restart_ttl(),
            60
        );
    }
}
