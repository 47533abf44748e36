//! `kvctl watch`: etcd's Watch on a key or a prefix, printed as the events come, one line
//! each, resumed on another member when the one watched goes away ([`kv_api::watch`]).
//!
//! **Lines.** `REVISION<TAB>PUT<TAB>KEY<TAB>VALUE` or `REVISION<TAB>DELETE<TAB>KEY`; with
//! `--prev-kv`, an event that had a previous value adds it as a last column. Keys and values
//! that are not UTF-8 are printed lossily, as `list` prints them. A resume is told on
//! standard error.
//!
//! **Exit.** It runs until stopped. A start revision that compaction has removed ends it with
//! exit 9; a watch the server refuses, with exit 2; no endpoint reachable for the command's
//! timeout, with exit 3.

use std::io::Write;
use std::time::Duration;

use etcd_api::mvccpb::{event::EventType, Event};
use kv_api::watch::{WatchEnd, WatchSpec, WatchUpdate};

use crate::etcd::EXIT_REVISION;
use crate::Failure;

/// Exit status: the server refused the watch (as kv.v1's bad input).
const EXIT_REFUSED: u8 = 2;
/// Exit status: no endpoint could be reached (as kv.v1's).
const EXIT_UNREACHABLE: u8 = 3;

/// Watches `spec` on `endpoints`, printing to `out`, until the watch cannot go on.
pub async fn watch(
    endpoints: &[String],
    timeout: Duration,
    spec: WatchSpec,
    out: &mut impl Write,
) -> Failure {
    let end = kv_api::watch::watch(endpoints, timeout, spec, |update| {
        match update {
            WatchUpdate::Events(events) => {
                for e in &events {
                    print_event(e, out);
                }
                let _ = out.flush();
            }
            WatchUpdate::Lost { addr, why } => {
                eprintln!(
                    "kvctl: the watch on {addr} ended ({why}); going on from the next endpoint"
                );
            }
            WatchUpdate::Watching { .. } => {}
        }
        true
    })
    .await;
    match end {
        WatchEnd::Compacted { from, compact } => Failure {
            code: EXIT_REVISION,
            message: format!(
                "revision {from} has been compacted away; the history starts at revision {compact}"
            ),
        },
        WatchEnd::Refused(why) => Failure {
            code: EXIT_REFUSED,
            message: format!("the watch was refused: {why}"),
        },
        WatchEnd::Unreachable(why) => Failure {
            code: EXIT_UNREACHABLE,
            message: format!(
                "no endpoint could be watched within {} ms (last error: {why})",
                timeout.as_millis()
            ),
        },
        WatchEnd::Stopped => Failure {
            code: EXIT_UNREACHABLE,
            message: "the watch stopped".into(),
        },
    }
}

/// Prints `event` as one line.
fn print_event(event: &Event, out: &mut impl Write) {
    let Some(kv) = event.kv.as_ref() else {
        return;
    };
    let key = String::from_utf8_lossy(&kv.key);
    let _ = if event.r#type == EventType::Delete as i32 {
        write!(out, "{}\tDELETE\t{key}", kv.mod_revision)
    } else {
        write!(
            out,
            "{}\tPUT\t{key}\t{}",
            kv.mod_revision,
            String::from_utf8_lossy(&kv.value)
        )
    };
    if let Some(prev) = &event.prev_kv {
        let _ = write!(out, "\t{}", String::from_utf8_lossy(&prev.value));
    }
    let _ = writeln!(out);
}
