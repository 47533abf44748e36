//! The lock checker: several clients take and release one lock through etcd's lock recipe
//! ([`kv_api::lease::lock`]) while the nemesis works, and no two may ever hold it at once.
//!
//! **What a hold is.** A client holds the lock from the moment `lock` returns to it until it
//! starts releasing it — or until its lease may have expired, whichever comes first: past
//! [`kv_api::lease::Session::expires`] (the send time of its last answered keep-alive plus
//! the TTL) the server may have revoked the lease and given the lock to another, so a correct
//! client stops acting as holder there, and the check holds the store to nothing more. Times
//! are one clock, the test process's, so holds of different clients compare directly.
//!
//! **The verdict.** Holds sorted by start; any hold that starts before an earlier one of
//! another client ends is two holders at once ([`LockVerdict::Overlap`]).
//!
//! **Teeth.** `unsafe_lease_expiry` makes the leader answer keep-alives without renewing:
//! leases expire their TTL after their grant while their clients, told the lease lives, go on
//! holding; the next contender takes the lock meanwhile, and the checker must say so.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kv_api::lease::{lock, unlock, Session};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The lock the lockers share: its keys (`klock/<lease>`) fall under the watch checker's
/// prefix, so the watchers of a run are told of every lock change too — puts, releases, and
/// the deletes of leases revoked or expired — and each must match the committed history.
pub const LOCK_NAME: &str = "klock";
/// The TTL of each locker's lease, in seconds: short, so that expiry happens in a short run.
pub const LOCK_TTL_SECS: i64 = 2;
/// How long a locker holds the lock at most by default (each hold is random below it): short,
/// so that a run has many holds.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_millis(200);
/// How long a locker waits for the lock before it gives up this try (and tries again).
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Pause after a failed grant or lock, before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// One time a client held the lock, in nanoseconds since the run began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub client: usize,
    pub from: u64,
    pub to: u64,
}

/// What the checker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockVerdict {
    /// No two holds of different clients overlap.
    Exclusive { holds: usize },
    /// `second` began while `first` still held the lock.
    Overlap { first: Hold, second: Hold },
}

impl LockVerdict {
    pub fn is_exclusive(&self) -> bool {
        matches!(self, LockVerdict::Exclusive { .. })
    }
}

impl fmt::Display for LockVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockVerdict::Exclusive { holds } => write!(f, "exclusive({holds} holds)"),
            LockVerdict::Overlap { first, second } => write!(
                f,
                "TWO HOLDERS (client {} held {:.3}-{:.3}s, client {} took it at {:.3}s)",
                first.client,
                secs(first.from),
                secs(first.to),
                second.client,
                secs(second.from)
            ),
        }
    }
}

fn secs(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// The verdict on `holds` (see the module docs).
pub fn check_holds(holds: &[Hold]) -> LockVerdict {
    let mut sorted = holds.to_vec();
    sorted.sort_by_key(|h| (h.from, h.to));
    let mut latest: Option<Hold> = None;
    for h in sorted {
        if let Some(l) = latest {
            if h.from < l.to && h.client != l.client {
                return LockVerdict::Overlap {
                    first: l,
                    second: h,
                };
            }
        }
        if latest.is_none_or(|l| h.to > l.to) {
            latest = Some(h);
        }
    }
    LockVerdict::Exclusive { holds: holds.len() }
}

/// A client that takes and releases the lock until told to stop, recording its holds.
pub struct Locker {
    pub client: usize,
    pub endpoints: Vec<String>,
    pub timeout: Duration,
    pub start: Instant,
    pub stop: Arc<AtomicBool>,
    pub holds: Arc<Mutex<Vec<Hold>>>,
    pub seed: u64,
    /// Each hold lasts a random time up to this; longer than [`LOCK_TTL_SECS`], a hold
    /// outlives the lease's first TTL and stands on keep-alives alone.
    pub max_hold: Duration,
}

impl Locker {
    fn at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_nanos() as u64
    }

    /// Runs until `stop`: a session, then lock, hold, unlock, as long as the session lives;
    /// a new session when it is lost.
    pub async fn run(self) {
        let mut rng = StdRng::seed_from_u64(self.seed);
        while !self.stop.load(Ordering::Relaxed) {
            let session = match Session::grant(&self.endpoints, self.timeout, LOCK_TTL_SECS).await {
                Ok(s) => s,
                Err(_) => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            while !self.stop.load(Ordering::Relaxed) && session.is_alive() {
                let taken = tokio::time::timeout(
                    LOCK_WAIT,
                    lock(&self.endpoints, self.timeout, LOCK_NAME, &session),
                )
                .await;
                let Ok(Ok(held)) = taken else {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    break;
                };
                let from = Instant::now();
                let max_ms = self.max_hold.as_millis().max(1) as u64;
                let hold = Duration::from_millis(rng.gen_range(1..=max_ms));
                let until = (from + hold).min(session.expires());
                tokio::time::sleep_until(until.into()).await;
                // The client stops claiming the lock here: it starts releasing, or its lease
                // may be gone.
                let to = Instant::now().min(session.expires());
                if to > from {
                    self.holds.lock().expect("holds").push(Hold {
                        client: self.client,
                        from: self.at(from),
                        to: self.at(to),
                    });
                }
                if unlock(&self.endpoints, self.timeout, &held).await.is_err() {
                    // The release may or may not have been applied: this session's key is
                    // in doubt, so the session ends (its revoke releases the lock for sure).
                    break;
                }
            }
            let _ = session.revoke().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(client: usize, from: u64, to: u64) -> Hold {
        Hold { client, from, to }
    }

    #[test]
    fn holds_one_after_another_are_exclusive() {
        let holds = [hold(1, 0, 10), hold(2, 10, 20), hold(1, 25, 30)];
        assert_eq!(check_holds(&holds), LockVerdict::Exclusive { holds: 3 });
    }

    #[test]
    fn a_hold_inside_another_clients_is_two_holders() {
        let holds = [hold(1, 0, 100), hold(2, 50, 60), hold(3, 120, 130)];
        assert_eq!(
            check_holds(&holds),
            LockVerdict::Overlap {
                first: hold(1, 0, 100),
                second: hold(2, 50, 60)
            }
        );
        assert!(
            !check_holds(&[hold(1, 0, 100), hold(1, 10, 20), hold(3, 90, 95)]).is_exclusive(),
            "caught against the longest hold so far, not only the last"
        );
    }
}
