//! The watch checker: watchers on every member, kept through every fault, must each have
//! been told exactly the committed history.
//!
//! **The watchers.** One per member, each watching every key of the workload (the `k`
//! prefix) from revision 1, its endpoint list rotated so that it starts on its own member.
//! They watch through [`kv_api::watch`], which, when a stream ends (a member killed, a
//! connection cut), opens it again on the next member from the revision after the last event
//! it got — the resume etcd's clients make. Every answer is kept as it came ([`WatchLog`]).
//!
//! **The reference.** After the run, once the cluster has converged, a fresh watcher replays
//! the whole history from revision 1 up to the store's revision then: the committed history.
//! Every watcher is given time to reach that revision too.
//!
//! **The verdict** ([`check_watchers`]) holds a watcher's log to three rules, and names the
//! first it breaks:
//! 1. *atomic*: all the events of one revision came in one answer;
//! 2. *ordered and unique*: revisions never go back, and no event came twice;
//! 3. *reliable*: its events are exactly the committed history from its start revision —
//!    none missing, none changed, none extra.
//!
//! The checker is pure; its teeth are shown in its unit tests (a lost, a repeated, a changed
//! event, a revision split over two answers) and in the chaos tier, where nodes started with
//! `--unsafe-watch-gaps` silently drop events and the run must be caught.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_api::mvccpb::Event;
use kv_api::watch::{WatchSpec, WatchUpdate};
use tokio::task::JoinHandle;

/// The prefix every workload key has ([`crate::runner`]'s `k0`, `k1`, …).
pub const WATCHED_PREFIX: &[u8] = b"k";

/// How long the watchers may take to reach the final revision after the cluster converged.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the runner looks whether every watcher has reached the final revision.
const CATCH_UP_POLL: Duration = Duration::from_millis(50);

/// What one watcher was told.
#[derive(Debug, Clone, Default)]
pub struct WatchLog {
    /// Which watcher, in reports.
    pub name: String,
    /// The revision it asked to start at.
    pub start: i64,
    /// Every answer's events, as they came.
    pub answers: Vec<Vec<Event>>,
    /// How many times its stream ended and was opened again on another member.
    pub resumes: usize,
}

impl WatchLog {
    /// The revision of the last event it got (0: none).
    pub fn last_revision(&self) -> i64 {
        self.answers
            .iter()
            .flatten()
            .filter_map(|e| e.kv.as_ref())
            .map(|kv| kv.mod_revision)
            .max()
            .unwrap_or(0)
    }
}

/// The checker's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchVerdict {
    /// Every watcher was told exactly the committed history.
    Exact {
        watchers: usize,
        /// Events in the committed history.
        events: usize,
        /// Resumes on another member, over all watchers.
        resumes: usize,
    },
    /// A watcher broke a rule.
    Broken { watcher: String, problem: String },
}

impl WatchVerdict {
    pub fn is_exact(&self) -> bool {
        matches!(self, WatchVerdict::Exact { .. })
    }
}

impl std::fmt::Display for WatchVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchVerdict::Exact {
                watchers,
                events,
                resumes,
            } => write!(
                f,
                "exact({watchers} watchers, {events} events, {resumes} resumes)"
            ),
            WatchVerdict::Broken { watcher, problem } => write!(f, "BROKEN({watcher}: {problem})"),
        }
    }
}

/// `(key, mod revision, version)` of an event, for reports.
fn describe(e: &Event) -> String {
    match &e.kv {
        Some(kv) => format!(
            "{} {}@{} v{}",
            if e.r#type == 1 { "DELETE" } else { "PUT" },
            String::from_utf8_lossy(&kv.key),
            kv.mod_revision,
            kv.version
        ),
        None => "an event without a key".into(),
    }
}

fn revision(e: &Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// Holds every log to the rules of the module docs against `committed`, the history from
/// revision 1 on.
pub fn check_watchers(committed: &[Event], logs: &[WatchLog]) -> WatchVerdict {
    let mut resumes = 0;
    for log in logs {
        resumes += log.resumes;
        let broken = |problem: String| WatchVerdict::Broken {
            watcher: log.name.clone(),
            problem,
        };
        // 1. Atomic: a revision never continues in a later answer.
        let mut last_of_previous = 0;
        for (i, answer) in log.answers.iter().enumerate() {
            if let Some(first) = answer.first() {
                if revision(first) <= last_of_previous {
                    return broken(format!(
                        "answer #{i} starts with {} although an earlier answer reached revision {last_of_previous}",
                        describe(first)
                    ));
                }
            }
            if let Some(last) = answer.last() {
                last_of_previous = revision(last);
            }
        }
        // 2. Ordered.
        let got: Vec<&Event> = log.answers.iter().flatten().collect();
        if let Some(w) = got.windows(2).find(|w| revision(w[1]) < revision(w[0])) {
            return broken(format!("{} came after {}", describe(w[1]), describe(w[0])));
        }
        // 2 and 3. Unique, reliable: exactly the committed history from the start.
        let want: Vec<&Event> = committed
            .iter()
            .filter(|e| revision(e) >= log.start)
            .collect();
        for i in 0..got.len().max(want.len()) {
            match (got.get(i), want.get(i)) {
                (Some(g), Some(w)) if g == w => {}
                (Some(g), Some(w)) => {
                    let problem = if got[..i].contains(g) {
                        format!("{} came twice; {} was due", describe(g), describe(w))
                    } else if revision(g) > revision(w) {
                        format!(
                            "{} is missing ({} came in its place)",
                            describe(w),
                            describe(g)
                        )
                    } else {
                        format!("{} differs from the committed {}", describe(g), describe(w))
                    };
                    return broken(format!("event #{i}: {problem}"));
                }
                (Some(g), None) => {
                    return broken(format!("event #{i}: {} was never committed", describe(g)))
                }
                (None, Some(w)) => {
                    return broken(format!(
                        "event #{i}: {} is missing (the watcher got {} events of {})",
                        describe(w),
                        got.len(),
                        want.len()
                    ))
                }
                (None, None) => {}
            }
        }
    }
    WatchVerdict::Exact {
        watchers: logs.len(),
        events: committed.len(),
        resumes,
    }
}

/// A running watcher and its log.
pub struct Watcher {
    log: Arc<Mutex<WatchLog>>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Starts watching the workload's keys from `start` on `endpoints` (the first is tried
    /// first), keeping every answer.
    pub fn start(name: String, endpoints: Vec<String>, timeout: Duration, start: i64) -> Watcher {
        let log = Arc::new(Mutex::new(WatchLog {
            name,
            start,
            ..WatchLog::default()
        }));
        let kept = log.clone();
        let task = tokio::spawn(async move {
            let spec = WatchSpec {
                key: WATCHED_PREFIX.to_vec(),
                range_end: etcd_api::range::prefix_end(WATCHED_PREFIX),
                start,
                prev_kv: false,
            };
            // A watch that cannot go on ends here; the checker sees what it got until then.
            let end = kv_api::watch::watch(&endpoints, timeout, spec, |update| {
                let mut log = kept.lock().expect("the watch log");
                match update {
                    WatchUpdate::Events(events) => log.answers.push(events),
                    WatchUpdate::Lost { .. } => log.resumes += 1,
                    WatchUpdate::Watching { .. } => {}
                }
                true
            })
            .await;
            tracing::warn!(
                "watcher {}: the watch ended: {end:?}",
                kept.lock().expect("the watch log").name
            );
        });
        Watcher { log, task }
    }

    /// Waits until the watcher has an event at `revision` or later (or `timeout` passed),
    /// then stops it; what it was told.
    pub async fn finish(self, revision: i64, timeout: Duration) -> WatchLog {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline
            && self.log.lock().expect("the watch log").last_revision() < revision
        {
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
        self.task.abort();
        let log = self.log.lock().expect("the watch log").clone();
        log
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_api::mvccpb::KeyValue;

    fn put(key: &str, rev: i64) -> Event {
        Event {
            kv: Some(KeyValue {
                key: key.into(),
                mod_revision: rev,
                version: 1,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Revisions 2 to 5, revision 4 a txn of two puts.
    fn committed() -> Vec<Event> {
        vec![
            put("k1", 2),
            put("k2", 3),
            put("k1", 4),
            put("k3", 4),
            put("k2", 5),
        ]
    }

    fn log(start: i64, answers: Vec<Vec<Event>>) -> WatchLog {
        WatchLog {
            name: "w".into(),
            start,
            answers,
            resumes: 0,
        }
    }

    /// The history from the start, however grouped into answers, is exact.
    #[test]
    fn the_committed_history_in_any_grouping_is_exact() {
        let c = committed();
        let whole = log(1, vec![c.clone()]);
        let split = log(
            3,
            vec![
                vec![c[1].clone()],
                vec![c[2].clone(), c[3].clone()],
                vec![c[4].clone()],
            ],
        );
        assert!(check_watchers(&c, &[whole, split]).is_exact());
    }

    /// Each way of getting a stream wrong is named: a lost event, a repeated one, a changed
    /// one, two out of order, a revision split over two answers, one never committed.
    #[test]
    fn every_broken_stream_is_caught() {
        let c = committed();
        let mut changed = c.clone();
        changed[1].kv.as_mut().unwrap().version = 9;
        let cases = [
            (
                "lost",
                vec![vec![c[0].clone(), c[2].clone(), c[3].clone(), c[4].clone()]],
                "missing",
            ),
            (
                "repeated",
                vec![vec![c[0].clone(), c[0].clone(), c[1].clone()]],
                "came twice",
            ),
            ("changed", vec![changed], "differs"),
            (
                "reordered",
                vec![vec![c[1].clone(), c[0].clone()]],
                "came after",
            ),
            (
                "split",
                vec![
                    vec![c[0].clone(), c[1].clone(), c[2].clone()],
                    vec![c[3].clone(), c[4].clone()],
                ],
                "starts with",
            ),
            (
                "invented",
                vec![c.clone(), vec![put("k9", 6)]],
                "never committed",
            ),
        ];
        for (what, answers, words) in cases {
            match check_watchers(&c, &[log(1, answers)]) {
                WatchVerdict::Broken { problem, .. } => {
                    assert!(problem.contains(words), "{what}: {problem}")
                }
                v => panic!("a {what} event went unnoticed: {v}"),
            }
        }
    }
}
