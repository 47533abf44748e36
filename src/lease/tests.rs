//! The lessor's rules, one a test, each a short session on a made-up clock.

use std::time::{Duration, Instant};

use super::*;
use crate::mvcc::{Lease, LeaseChange};

const CONFIG: LessorConfig = LessorConfig {
    promote_extension: Duration::from_secs(1),
    checkpoint_interval: Duration::from_secs(30),
    max_revokes_per_tick: 3,
    revoke_retry: Duration::from_secs(3),
    max_checkpoints: 1000,
};

fn lease(ttl: i64) -> Lease {
    Lease { ttl, remaining: 0 }
}

fn at(t0: Instant, seconds: f64) -> Instant {
    t0 + Duration::from_secs_f64(seconds)
}

/// A leader's lessor at `t0` with lease 7 granted then, for `ttl` seconds.
fn leader_with(ttl: i64) -> (Lessor, Instant) {
    let t0 = Instant::now();
    let mut l = Lessor::new(CONFIG);
    l.promote(t0);
    l.apply(LeaseChange::Set(7, lease(ttl)), t0);
    (l, t0)
}

/// A lease granted on the leader expires after its TTL, not a moment before.
#[test]
fn a_granted_lease_expires_after_its_ttl() {
    let (mut l, t0) = leader_with(10);
    assert!(l.expired(at(t0, 9.9)).is_empty());
    assert_eq!(
        l.time_left(7, at(t0, 2.5)),
        TimeLeft::Left {
            granted: 10,
            remaining: 7
        }
    );
    assert_eq!(l.expired(at(t0, 10.0)), [7]);
}

/// A keep-alive starts the TTL again; one after the deadline does not bring the lease back.
#[test]
fn a_keep_alive_renews_until_the_deadline_and_not_after() {
    let (mut l, t0) = leader_with(10);
    assert_eq!(
        l.renew(7, at(t0, 8.0)),
        Renewal::Renewed {
            ttl: 10,
            clear_checkpoint: false
        }
    );
    assert!(l.expired(at(t0, 17.9)).is_empty(), "renewed at 8 for 10 s");
    assert_eq!(l.renew(7, at(t0, 18.0)), Renewal::NotFound, "expired at 18");
    assert_eq!(l.renew(99, t0), Renewal::NotFound);
}

/// A follower gives no lease a deadline: it expires nothing and answers for nothing.
#[test]
fn a_follower_expires_nothing_and_passes_questions_on() {
    let t0 = Instant::now();
    let mut l = Lessor::new(CONFIG);
    l.apply(LeaseChange::Set(7, lease(1)), t0);
    assert!(l.expired(at(t0, 100.0)).is_empty());
    assert_eq!(l.renew(7, t0), Renewal::NotLeader);
    assert_eq!(l.time_left(7, t0), TimeLeft::NotLeader);
    assert_eq!(l.ids(), [7], "but it knows the lease");
}

/// A new leader gives every lease its remaining TTL afresh plus an election timeout: the
/// whole TTL, or the checkpointed remainder of a long lease.
#[test]
fn a_new_leader_never_expires_a_lease_early() {
    let t0 = Instant::now();
    let mut l = Lessor::new(CONFIG);
    l.apply(LeaseChange::Set(7, lease(10)), t0);
    let checkpointed = Lease {
        ttl: 100,
        remaining: 40,
    };
    l.apply(LeaseChange::Set(8, checkpointed), t0);
    l.promote(at(t0, 50.0));
    assert!(l.expired(at(t0, 60.9)).is_empty(), "50 + 1 + 10");
    assert_eq!(l.expired(at(t0, 61.0)), [7]);
    l.apply(LeaseChange::Revoked(7), at(t0, 61.1));
    assert!(l.expired(at(t0, 90.9)).is_empty(), "50 + 1 + 40");
    assert_eq!(l.expired(at(t0, 91.0)), [8]);
}

/// Losing office takes every deadline away; taking it again starts them afresh.
#[test]
fn demotion_stops_every_countdown() {
    let (mut l, t0) = leader_with(10);
    l.demote();
    assert!(l.expired(at(t0, 100.0)).is_empty());
    l.promote(at(t0, 100.0));
    assert!(l.expired(at(t0, 110.9)).is_empty());
    assert_eq!(l.expired(at(t0, 111.0)), [7]);
}

/// An expired lease's revoke is proposed once, then again only after the retry interval if
/// it was not applied; once applied, the lease is gone.
#[test]
fn a_revoke_is_proposed_again_only_after_the_retry_interval() {
    let (mut l, t0) = leader_with(1);
    assert_eq!(l.expired(at(t0, 1.0)), [7]);
    assert!(l.expired(at(t0, 3.9)).is_empty(), "on its way");
    assert_eq!(l.expired(at(t0, 4.0)), [7], "not applied in 3 s: again");
    l.apply(LeaseChange::Revoked(7), at(t0, 4.1));
    assert!(l.expired(at(t0, 100.0)).is_empty());
    assert!(l.is_empty());
}

/// Many leases expiring at once are revoked a few a tick, soonest first.
#[test]
fn revokes_are_spread_over_ticks() {
    let t0 = Instant::now();
    let mut l = Lessor::new(CONFIG);
    l.promote(t0);
    for id in 1..=7 {
        l.apply(LeaseChange::Set(id, lease(1)), t0);
    }
    let now = at(t0, 1.0);
    let ticks: Vec<Vec<i64>> = (0..4).map(|_| l.expired(now)).collect();
    assert_eq!(ticks, [vec![1, 2, 3], vec![4, 5, 6], vec![7], vec![]]);
}

/// A long lease's remaining TTL is checkpointed every interval for as long as it had more
/// than an interval left at the last one; a keep-alive afterwards asks for the checkpoint to
/// be cleared.
#[test]
fn long_leases_are_checkpointed_and_renewal_clears_it() {
    let (mut l, t0) = leader_with(100);
    assert!(l.checkpoints_due(at(t0, 29.0)).is_empty());
    assert_eq!(l.checkpoints_due(at(t0, 30.0)), [(7, 70)]);
    assert_eq!(l.checkpoints_due(at(t0, 60.5)), [(7, 40)], "rounded up");
    assert_eq!(l.checkpoints_due(at(t0, 95.0)), [(7, 5)]);
    assert!(
        l.checkpoints_due(at(t0, 200.0)).is_empty(),
        "5 s left at the last: no more"
    );
    l.apply(
        LeaseChange::Set(
            7,
            Lease {
                ttl: 100,
                remaining: 40,
            },
        ),
        at(t0, 61.0),
    );
    assert!(
        l.expired(at(t0, 99.9)).is_empty(),
        "a checkpoint moves no deadline"
    );
    assert_eq!(
        l.renew(7, at(t0, 62.0)),
        Renewal::Renewed {
            ttl: 100,
            clear_checkpoint: true
        }
    );
}

/// A reset (start, snapshot) replaces the leases; on the leader each starts afresh.
#[test]
fn a_reset_replaces_every_lease() {
    let (mut l, t0) = leader_with(10);
    l.reset([(8, lease(5))], at(t0, 1.0));
    assert_eq!(l.ids(), [8]);
    assert_eq!(l.expired(at(t0, 6.0)), [8]);
}

/// A checkpoint handed out for proposing and not yet applied must be cleared by a renewal
/// too: otherwise it lands after the renewal and shortens the lease on the next leader.
#[test]
fn a_renewal_clears_a_checkpoint_still_on_its_way() {
    let (mut l, t0) = leader_with(100);
    assert_eq!(l.checkpoints_due(at(t0, 30.0)), [(7, 70)]);
    assert_eq!(
        l.renew(7, at(t0, 31.0)),
        Renewal::Renewed {
            ttl: 100,
            clear_checkpoint: true
        },
        "the checkpoint of 70 s is not applied yet"
    );
    l.apply(
        LeaseChange::Set(
            7,
            Lease {
                ttl: 100,
                remaining: 0,
            },
        ),
        at(t0, 31.5),
    );
    assert_eq!(
        l.renew(7, at(t0, 32.0)),
        Renewal::Renewed {
            ttl: 100,
            clear_checkpoint: false
        },
        "applied, and cleared: nothing to clear"
    );
}
