//! [`Lessor`]: the leases of one member, with the leader's deadlines (see the module docs).
//! Runtime-free: every call that depends on the time is given it.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::mvcc::{Lease, LeaseChange};

/// How a lessor behaves; the LeaseActor derives it from the node's configuration.
#[derive(Debug, Clone, Copy)]
pub struct LessorConfig {
    /// What a new leader adds to every lease's remaining TTL: an election timeout.
    pub promote_extension: Duration,
    /// How often the leader checkpoints the remaining TTL of leases that have more than this
    /// left (etcd: 5 minutes).
    pub checkpoint_interval: Duration,
    /// Revokes proposed in one tick at most.
    pub max_revokes_per_tick: usize,
    /// How long the revoke of an expired lease is given to be applied before it is proposed
    /// again (etcd: 3 s).
    pub revoke_retry: Duration,
    /// Checkpoints proposed in one entry at most (etcd: 1 000).
    pub max_checkpoints: usize,
}

/// A lease as one member holds it.
#[derive(Debug, Clone, Copy)]
struct Held {
    lease: Lease,
    /// When it expires: on the leader only.
    deadline: Option<Instant>,
    /// When its revoke was last proposed, while that may still be applied.
    revoke_sent: Option<Instant>,
    /// When its remaining TTL is next checkpointed: on the leader only, for long leases.
    checkpoint_at: Option<Instant>,
    /// A checkpoint of it was handed out for proposing and has not been applied yet: a
    /// renewal must clear it too, or it would land after the renewal and shorten the lease.
    checkpoint_pending: bool,
}

impl Held {
    /// A lease as a member first learns of it: no countdown yet.
    fn new(lease: Lease) -> Held {
        Held {
            lease,
            deadline: None,
            revoke_sent: None,
            checkpoint_at: None,
            checkpoint_pending: false,
        }
    }
}

/// What a keep-alive did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed for its whole TTL (seconds). `clear_checkpoint`: it had a checkpointed
    /// remaining TTL (or one is on its way), which must be cleared through Raft before the
    /// renewal is answered.
    Renewed { ttl: i64, clear_checkpoint: bool },
    /// No such lease, or it has expired (its revoke is on its way): a keep-alive must not
    /// bring it back.
    NotFound,
    /// This member is not the leader.
    NotLeader,
}

/// What a time-to-live question gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeLeft {
    /// Granted TTL and seconds left.
    Left {
        granted: i64,
        remaining: i64,
    },
    NotFound,
    NotLeader,
}

/// The leases of one member (see the module docs).
#[derive(Debug)]
pub struct Lessor {
    config: LessorConfig,
    /// Whether this member leads: only then do leases have deadlines.
    primary: bool,
    leases: HashMap<i64, Held>,
    /// `(deadline, id)` of every lease with a deadline, soonest first.
    deadlines: BTreeSet<(Instant, i64)>,
    /// `(time, id)` of every checkpoint scheduled, soonest first.
    checkpoints: BTreeSet<(Instant, i64)>,
    /// The deliberate fault `unsafe_lease_expiry`: renewals are answered, not made.
    renewals_ignored: bool,
}

/// `seconds` as a duration (negative as zero).
fn secs(seconds: i64) -> Duration {
    Duration::from_secs(seconds.max(0) as u64)
}

impl Lessor {
    pub fn new(config: LessorConfig) -> Lessor {
        Lessor {
            config,
            primary: false,
            leases: HashMap::new(),
            deadlines: BTreeSet::new(),
            checkpoints: BTreeSet::new(),
            renewals_ignored: false,
        }
    }

    /// Turns the deliberate fault `unsafe_lease_expiry` on or off: keep-alives are answered
    /// as if they renewed, and renew nothing, so leases expire their TTL after their grant.
    pub fn ignore_renewals(&mut self, ignored: bool) {
        self.renewals_ignored = ignored;
    }

    pub fn is_primary(&self) -> bool {
        self.primary
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Every lease id, in order (etcd's LeaseLeases).
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Replaces every lease with `table`'s (at start, and after a snapshot is restored). On
    /// the leader each starts from its remaining TTL, as at promotion.
    pub fn reset(&mut self, table: impl IntoIterator<Item = (i64, Lease)>, now: Instant) {
        self.leases.clear();
        self.deadlines.clear();
        self.checkpoints.clear();
        for (id, lease) in table {
            self.leases.insert(id, Held::new(lease));
        }
        if self.primary {
            self.start_all(now);
        }
    }

    /// What an apply batch did to the lease table.
    pub fn apply(&mut self, change: LeaseChange, now: Instant) {
        match change {
            LeaseChange::Set(id, lease) => match self.leases.get_mut(&id) {
                // A checkpoint: the countdown on the leader goes on as it was.
                Some(held) => {
                    held.lease = lease;
                    held.checkpoint_pending = false;
                }
                None => {
                    self.leases.insert(id, Held::new(lease));
                    if self.primary {
                        self.start(id, secs(lease.ttl), now);
                    }
                }
            },
            LeaseChange::Revoked(id) => {
                if let Some(held) = self.leases.remove(&id) {
                    self.unschedule(id, &held);
                }
            }
        }
    }

    /// This member now leads: every lease gets its remaining TTL afresh, plus the extension.
    pub fn promote(&mut self, now: Instant) {
        self.primary = true;
        self.start_all(now + self.config.promote_extension);
    }

    /// This member no longer leads: no lease has a deadline here.
    pub fn demote(&mut self) {
        self.primary = false;
        self.deadlines.clear();
        self.checkpoints.clear();
        for held in self.leases.values_mut() {
            held.deadline = None;
            held.revoke_sent = None;
            held.checkpoint_at = None;
        }
    }

    /// A keep-alive for lease `id`.
    pub fn renew(&mut self, id: i64, now: Instant) -> Renewal {
        if !self.primary {
            return Renewal::NotLeader;
        }
        let Some(held) = self.leases.get(&id).copied() else {
            return Renewal::NotFound;
        };
        if held.deadline.is_none_or(|d| d <= now) {
            return Renewal::NotFound;
        }
        if !self.renewals_ignored {
            self.start(id, secs(held.lease.ttl), now);
        }
        Renewal::Renewed {
            ttl: held.lease.ttl,
            clear_checkpoint: held.lease.remaining > 0 || held.checkpoint_pending,
        }
    }

    /// How long lease `id` has left, in whole seconds (etcd truncates too).
    pub fn time_left(&self, id: i64, now: Instant) -> TimeLeft {
        if !self.primary {
            return TimeLeft::NotLeader;
        }
        match self.leases.get(&id) {
            None => TimeLeft::NotFound,
            Some(held) => TimeLeft::Left {
                granted: held.lease.ttl,
                remaining: held
                    .deadline
                    .map_or(0, |d| d.saturating_duration_since(now).as_secs() as i64),
            },
        }
    }

    /// The leases whose deadline has passed and whose revoke is not already on its way, at
    /// most [`LessorConfig::max_revokes_per_tick`], soonest first: the caller proposes their
    /// revokes.
    pub fn expired(&mut self, now: Instant) -> Vec<i64> {
        if !self.primary {
            return Vec::new();
        }
        let mut out = Vec::new();
        let due: Vec<i64> = self
            .deadlines
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|&(_, id)| id)
            .collect();
        for id in due {
            if out.len() >= self.config.max_revokes_per_tick {
                break;
            }
            let Some(held) = self.leases.get_mut(&id) else {
                continue;
            };
            if held
                .revoke_sent
                .is_some_and(|at| now < at + self.config.revoke_retry)
            {
                continue;
            }
            held.revoke_sent = Some(now);
            out.push(id);
        }
        out
    }

    /// The checkpoints due now, `(id, remaining TTL in seconds, rounded up)`, at most
    /// [`LessorConfig::max_checkpoints`]: the caller proposes them as one entry. Each lease
    /// still long enough gets its next one scheduled.
    pub fn checkpoints_due(&mut self, now: Instant) -> Vec<(i64, i64)> {
        if !self.primary {
            return Vec::new();
        }
        let due: Vec<(Instant, i64)> = self
            .checkpoints
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(self.config.max_checkpoints)
            .copied()
            .collect();
        let mut out = Vec::new();
        for (at, id) in due {
            self.checkpoints.remove(&(at, id));
            let Some(held) = self.leases.get_mut(&id) else {
                continue;
            };
            held.checkpoint_at = None;
            let Some(deadline) = held.deadline else {
                continue;
            };
            held.checkpoint_pending = true;
            let left = deadline.saturating_duration_since(now);
            // Rounded up: a checkpoint may lengthen a lease by under a second, never shorten it.
            let remaining = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
            out.push((id, remaining));
            self.schedule_checkpoint(id, left, now);
        }
        out
    }

    /// Starts the countdown of every lease from its remaining TTL at `from`.
    fn start_all(&mut self, from: Instant) {
        let ids: Vec<(i64, i64)> = self
            .leases
            .iter()
            .map(|(&id, h)| (id, h.lease.restart_ttl()))
            .collect();
        for (id, ttl) in ids {
            self.start(id, secs(ttl), from);
        }
    }

    /// Gives lease `id` the deadline `from + ttl`, and a checkpoint if it is long.
    fn start(&mut self, id: i64, ttl: Duration, from: Instant) {
        let Some(held) = self.leases.get(&id).copied() else {
            return;
        };
        self.unschedule(id, &held);
        let deadline = from + ttl;
        if let Some(h) = self.leases.get_mut(&id) {
            h.deadline = Some(deadline);
            h.revoke_sent = None;
            h.checkpoint_at = None;
        }
        self.deadlines.insert((deadline, id));
        self.schedule_checkpoint(id, ttl, from);
    }

    fn schedule_checkpoint(&mut self, id: i64, left: Duration, now: Instant) {
        if left <= self.config.checkpoint_interval {
            return;
        }
        let at = now + self.config.checkpoint_interval;
        if let Some(h) = self.leases.get_mut(&id) {
            h.checkpoint_at = Some(at);
            self.checkpoints.insert((at, id));
        }
    }

    fn unschedule(&mut self, id: i64, held: &Held) {
        if let Some(d) = held.deadline {
            self.deadlines.remove(&(d, id));
        }
        if let Some(at) = held.checkpoint_at {
            self.checkpoints.remove(&(at, id));
        }
    }
}
