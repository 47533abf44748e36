//! A watch of etcd's Watch API that outlives the member it is on: kvctl's, the GUI's, the
//! chaos suite's.
//!
//! Every member serves watches from its own applied history, so when a stream ends — the
//! member stopped, the connection broke — [`watch`] opens it again on the next endpoint,
//! from the revision after the last event it handed over: nothing twice, nothing skipped.
//! Streams require a leader, as etcdctl's do: a member cut off from its cluster ends the stream
//! ("no leader"), and the watch goes on from another. It gives up only when no endpoint can be
//! watched for `timeout`, when the watch is refused
//! (an empty range, say), when its start revision has been compacted away, or when the
//! caller says stop.

use std::time::{Duration, Instant};

use etcd_api::etcdserverpb::watch_client::WatchClient;
use etcd_api::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest};
use etcd_api::mvccpb::Event;
use tokio::sync::mpsc;

use crate::client::lazy_channel;

/// The metadata key of etcd's `WithRequireLeader`: a member that knows no leader refuses the
/// stream, or ends it when it loses the leader.
pub const REQUIRE_LEADER_KEY: &str = "hasleader";

/// The pause after every endpoint has failed once, before trying them again.
pub const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What to watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSpec {
    pub key: Vec<u8>,
    /// Empty: the key alone; etcd's range end otherwise.
    pub range_end: Vec<u8>,
    /// The first revision wanted; 0: the next one.
    pub start: i64,
    pub prev_kv: bool,
}

/// What the caller is told as the watch goes on.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchUpdate {
    /// The watch is made on `addr`; events from revision `from` on follow (the first time,
    /// the revision after the store's, when the spec said 0).
    Watching { addr: String, from: i64 },
    /// Events, in revision order, all of a revision together.
    Events(Vec<Event>),
    /// The stream on `addr` ended (`why`); it is opened again elsewhere.
    Lost { addr: String, why: String },
}

/// Why a watch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEnd {
    /// The caller's callback said stop.
    Stopped,
    /// The revision asked for is below the compact revision `compact`.
    Compacted { from: i64, compact: i64 },
    /// The server refused the watch, for this reason.
    Refused(String),
    /// No endpoint could be watched within the timeout; the last error.
    Unreachable(String),
}

/// Watches `spec` on `endpoints`, telling `on` what happens until it returns false or the
/// watch ends (see the module docs). `timeout` bounds each attempt to open a stream and the
/// time with no endpoint reachable.
pub async fn watch(
    endpoints: &[String],
    timeout: Duration,
    spec: WatchSpec,
    mut on: impl FnMut(WatchUpdate) -> bool,
) -> WatchEnd {
    if endpoints.is_empty() {
        return WatchEnd::Unreachable(crate::client::NO_ENDPOINTS.into());
    }
    let mut next = spec.start;
    let mut unreachable_since: Option<Instant> = None;
    let mut last_error = String::new();
    // Streams tried since one last brought events: a round of them all pauses first.
    let mut fruitless = 0;
    for turn in 0.. {
        let addr = &endpoints[turn % endpoints.len()];
        let before = next;
        match watch_on(addr, timeout, &spec, &mut next, &mut on).await {
            Attempt::Ended(end) => return end,
            Attempt::Lost(why) => {
                unreachable_since = None;
                if !on(WatchUpdate::Lost {
                    addr: addr.clone(),
                    why,
                }) {
                    return WatchEnd::Stopped;
                }
            }
            Attempt::Unreachable(why) => {
                last_error = format!("{addr}: {why}");
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= timeout {
                    break;
                }
            }
        }
        fruitless = if next != before { 0 } else { fruitless + 1 };
        if fruitless > 0 && fruitless % endpoints.len() == 0 {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
    WatchEnd::Unreachable(last_error)
}

/// How one stream ended.
enum Attempt {
    Unreachable(String),
    Lost(String),
    Ended(WatchEnd),
}

/// One stream on `addr`, from revision `next` on; `next` follows the events handed over.
async fn watch_on(
    addr: &str,
    timeout: Duration,
    spec: &WatchSpec,
    next: &mut i64,
    on: &mut impl FnMut(WatchUpdate) -> bool,
) -> Attempt {
    let channel = match lazy_channel(addr) {
        Ok(c) => c,
        Err(e) => return Attempt::Ended(WatchEnd::Refused(e.to_string())),
    };
    let mut client = WatchClient::new(channel).max_decoding_message_size(usize::MAX);
    // The create request is queued before the call: etcd sends a stream's response headers
    // only with its first answer, and the call returns only with them. The sender lives as
    // long as the stream: a client that ends its side keeps its watchers, but has no more
    // to say.
    let (requests, rx) = mpsc::channel(1);
    let create = WatchCreateRequest {
        key: spec.key.clone(),
        range_end: spec.range_end.clone(),
        start_revision: *next,
        prev_kv: spec.prev_kv,
        ..Default::default()
    };
    let _ = requests.try_send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
    });
    // Require a leader (etcd's `WithRequireLeader`): a member cut off from its cluster ends
    // the stream, and the watch goes on from one that is not.
    let mut call = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    call.metadata_mut().insert(
        REQUIRE_LEADER_KEY,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let call = client.watch(call);
    let mut stream = match tokio::time::timeout(timeout, call).await {
        Err(_) => {
            return Attempt::Unreachable(format!("no answer within {} ms", timeout.as_millis()))
        }
        // Refused ("no leader", a stopping member) or not reached: either way no stream here.
        Ok(Err(status)) => return Attempt::Unreachable(status.message().to_string()),
        Ok(Ok(response)) => response.into_inner(),
    };
    loop {
        let answer = match stream.message().await {
            Ok(Some(answer)) => answer,
            Ok(None) => return Attempt::Lost("the stream ended".into()),
            Err(status) => return Attempt::Lost(status.message().to_string()),
        };
        if answer.created {
            if answer.canceled {
                return Attempt::Ended(WatchEnd::Refused(answer.cancel_reason));
            }
            if *next == 0 {
                *next = answer.header.map_or(0, |h| h.revision) + 1;
            }
            let watching = WatchUpdate::Watching {
                addr: addr.to_string(),
                from: *next,
            };
            if !on(watching) {
                return Attempt::Ended(WatchEnd::Stopped);
            }
            continue;
        }
        if answer.canceled {
            if answer.compact_revision != 0 {
                return Attempt::Ended(WatchEnd::Compacted {
                    from: *next,
                    compact: answer.compact_revision,
                });
            }
            return Attempt::Lost(format!("canceled by the server: {}", answer.cancel_reason));
        }
        if answer.events.is_empty() {
            continue;
        }
        if let Some(rev) = answer
            .events
            .last()
            .and_then(|e| e.kv.as_ref())
            .map(|kv| kv.mod_revision)
        {
            *next = rev + 1;
        }
        if !on(WatchUpdate::Events(answer.events)) {
            return Attempt::Ended(WatchEnd::Stopped);
        }
    }
}
