//! `kvctl watch`: etcd's Watch on a key or a prefix, printed as the events come, one line
//! each, resumed on another member when the one watched goes away.
//!
//! **Lines.** `REVISION<TAB>PUT<TAB>KEY<TAB>VALUE` or `REVISION<TAB>DELETE<TAB>KEY`; with
//! `--prev-kv`, an event that had a previous value adds it as a last column. Keys and values
//! that are not UTF-8 are printed lossily, as `list` prints them.
//!
//! **Resuming.** Every member serves watches from its own applied history, so when the
//! stream ends — the member stopped, or the connection broke — kvctl opens it again on the
//! next endpoint of its list, from the revision after the last event it printed: nothing is
//! printed twice and nothing is skipped. Only when no endpoint can be reached for the
//! command's timeout does it give up (exit 3). A start revision that compaction has removed
//! ends it with exit 9; a watch the server refuses, with exit 2.

use std::io::Write;
use std::time::{Duration, Instant};

use etcd_api::etcdserverpb::watch_client::WatchClient;
use etcd_api::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest};
use etcd_api::mvccpb::{event::EventType, Event};
use kv_api::client::lazy_channel;
use kv_api::status::connect_failed;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::etcd::EXIT_REVISION;
use crate::Failure;

/// Exit status: the server refused the watch (as kv.v1's bad input).
const EXIT_REFUSED: u8 = 2;
/// Exit status: no endpoint could be reached (as kv.v1's).
const EXIT_UNREACHABLE: u8 = 3;
/// The pause after every endpoint has failed once, before trying them again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What to watch.
pub struct WatchOptions {
    pub key: Vec<u8>,
    /// Empty: the key alone.
    pub range_end: Vec<u8>,
    /// The first revision to print; 0: the next one.
    pub start: i64,
    pub prev_kv: bool,
}

/// Why a stream on one member ended.
enum Ended {
    /// The member was not reached, or did not answer in time.
    Unreachable(String),
    /// The stream broke after it was made: resume elsewhere.
    Lost(String),
    /// The watch cannot go on anywhere.
    Refused(Failure),
}

/// Watches as `opts` says on `endpoints`, printing to `out`, until the watch is refused or
/// nothing can be reached for `timeout`; it never ends otherwise.
pub async fn watch(
    endpoints: &[String],
    timeout: Duration,
    opts: WatchOptions,
    out: &mut impl Write,
) -> Failure {
    let mut next = opts.start;
    let mut unreachable_since: Option<Instant> = None;
    let mut last_error = String::new();
    for turn in 0.. {
        let addr = &endpoints[turn % endpoints.len()];
        match watch_on(addr, timeout, &opts, &mut next, out).await {
            Ended::Refused(failure) => return failure,
            Ended::Lost(why) => {
                unreachable_since = None;
                eprintln!("kvctl: the watch on {addr} ended ({why}); resuming at revision {next}");
            }
            Ended::Unreachable(why) => {
                last_error = format!("{addr}: {why}");
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= timeout {
                    break;
                }
                if (turn + 1) % endpoints.len() == 0 {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }
    Failure {
        code: EXIT_UNREACHABLE,
        message: format!(
            "no endpoint could be watched within {} ms (last error: {last_error})",
            timeout.as_millis()
        ),
    }
}

/// One stream on `addr`, from revision `next` on; `next` follows the events printed.
async fn watch_on(
    addr: &str,
    timeout: Duration,
    opts: &WatchOptions,
    next: &mut i64,
    out: &mut impl Write,
) -> Ended {
    let channel = match lazy_channel(addr) {
        Ok(c) => c,
        Err(e) => {
            return Ended::Refused(Failure {
                code: EXIT_REFUSED,
                message: e.to_string(),
            })
        }
    };
    let mut client = WatchClient::new(channel).max_decoding_message_size(usize::MAX);
    // The create request is queued before the call: etcd answers the call's headers only
    // with the stream's first answer. The sender lives as long as the stream.
    let (requests, rx) = mpsc::channel(1);
    let create = WatchCreateRequest {
        key: opts.key.clone(),
        range_end: opts.range_end.clone(),
        start_revision: *next,
        prev_kv: opts.prev_kv,
        ..Default::default()
    };
    let _ = requests.try_send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
    });
    let mut stream =
        match tokio::time::timeout(timeout, client.watch(ReceiverStream::new(rx))).await {
            Err(_) => {
                return Ended::Unreachable(format!("no answer within {} ms", timeout.as_millis()))
            }
            Ok(Err(status)) if connect_failed(&status) => {
                return Ended::Unreachable(status.message().to_string())
            }
            Ok(Err(status)) => return Ended::Lost(status.message().to_string()),
            Ok(Ok(response)) => response.into_inner(),
        };
    loop {
        let answer = match stream.message().await {
            Ok(Some(answer)) => answer,
            Ok(None) => return Ended::Lost("the stream ended".into()),
            Err(status) => return Ended::Lost(status.message().to_string()),
        };
        if answer.created {
            if answer.canceled {
                return Ended::Refused(Failure {
                    code: EXIT_REFUSED,
                    message: format!("the watch was refused: {}", answer.cancel_reason),
                });
            }
            if *next == 0 {
                *next = answer.header.map_or(0, |h| h.revision) + 1;
            }
            continue;
        }
        if answer.canceled {
            if answer.compact_revision != 0 {
                return Ended::Refused(Failure {
                    code: EXIT_REVISION,
                    message: format!(
                        "revision {next} has been compacted away; the history starts at revision {}",
                        answer.compact_revision
                    ),
                });
            }
            return Ended::Lost(format!("canceled by the server: {}", answer.cancel_reason));
        }
        for event in &answer.events {
            if let Some(rev) = print_event(event, out) {
                *next = rev + 1;
            }
        }
        let _ = out.flush();
    }
}

/// Prints `event` as one line; its revision.
fn print_event(event: &Event, out: &mut impl Write) -> Option<i64> {
    let kv = event.kv.as_ref()?;
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
    Some(kv.mod_revision)
}
