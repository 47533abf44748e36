//! Leases in time: the leader's lessor, which decides when a lease has expired.
//!
//! # The protocol
//!
//! What leases exist is replicated state ([`crate::mvcc::lease`]): grants, revokes and
//! checkpoints go through Raft, and every member applies them alike. *When* a lease expires
//! is decided by the leader alone, on its own clock:
//!
//! 1. **Deadlines live on the leader only.** Every member's [`Lessor`] mirrors the lease
//!    table, but only the leader's gives leases deadlines. A grant applied on the leader
//!    starts its lease's countdown from its whole TTL; a keep-alive (which any member takes,
//!    and a follower passes to the leader) starts it again.
//! 2. **Expiry is a proposal.** When a deadline passes, the leader proposes a revoke through
//!    Raft, as any client could; the lease and its keys go only when that revoke is applied,
//!    on every member alike. A revoke that does not get applied (the leader lost its office)
//!    is proposed again after [`LessorConfig::revoke_retry`] by whoever leads then.
//! 3. **A new leader never expires a lease early.** It takes office once it has applied its
//!    own first entry of the term (so every revoke and checkpoint of earlier terms is in its
//!    table), and then gives every lease its remaining TTL afresh, plus an election timeout
//!    ([`LessorConfig::promote_extension`]):
//!    the keep-alives a client sent to the old leader while the election ran went unanswered,
//!    and must not count against it. The remaining TTL is the lease's whole TTL, or, for a
//!    long lease, the one the last leader checkpointed through Raft (every
//!    [`LessorConfig::checkpoint_interval`]), so a lease of an hour is not given its hour
//!    again by every leader change. A keep-alive clears a checkpoint (through Raft again).
//! 4. **A renewal is the leader's only while it leads.** The LeaseActor answers a keep-alive
//!    only after a quorum has confirmed this member still leads, and, when the lease had a
//!    checkpoint to clear, only once the clearing is applied (etcd 3.5 does both).
//! 5. **A follower answers for no deadline.** It passes keep-alives and time-to-live
//!    questions to the leader; one that knows no leader says so.
//!
//! # Invariants
//!
//! - A lease is revoked only by an applied revoke; no member deletes a key of its own accord.
//! - On the leader, a lease's deadline is never before the time its client was last told it
//!   had TTL seconds left, plus those seconds: renewals only move deadlines later, and
//!   promotion sets them from the replicated remaining TTL, which is at least what was left.
//! - Revokes are proposed at most [`LessorConfig::max_revokes_per_tick`] per tick, so many
//!   leases expiring at once are revoked over a few ticks instead of flooding the log.

pub mod lessor;

#[cfg(test)]
mod tests;

pub use lessor::{Lessor, LessorConfig, Renewal, TimeLeft};
