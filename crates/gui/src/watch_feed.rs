//! The GUI's two uses of etcd's Watch API, run on the worker's runtime:
//!
//! - **the watch panel**: live events under a prefix ([`live`]), through
//!   [`kv_api::watch::watch`], so the panel goes on from another node when its own goes away.
//!   Pausing stops the watch; resuming starts it again from the revision after the last event
//!   shown, so a pause loses nothing;
//! - **a key's history** ([`history`]): every revision of one key still in the store, by a
//!   watch from revision 1 (from the compact revision when older ones are gone) followed by a
//!   progress request, which the store answers once the replay is complete.

use std::time::Duration;

use etcd_api::etcdserverpb::watch_client::WatchClient;
use etcd_api::etcdserverpb::{
    watch_request, WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use etcd_api::mvccpb::{event::EventType, Event};
use kv_api::client::{lazy_channel, ClientError};
use kv_api::watch::{WatchEnd, WatchSpec, WatchUpdate};
use tokio::sync::mpsc;

/// One event as the panels show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub revision: i64,
    pub deleted: bool,
    pub key: Vec<u8>,
    /// The value a put wrote (empty for a delete).
    pub value: Vec<u8>,
    /// The key's version after a put (0 after a delete).
    pub version: i64,
}

impl EventRow {
    pub fn of(e: &Event) -> Option<EventRow> {
        let kv = e.kv.as_ref()?;
        Some(EventRow {
            revision: kv.mod_revision,
            deleted: e.r#type == EventType::Delete as i32,
            key: kv.key.clone(),
            value: kv.value.clone(),
            version: kv.version,
        })
    }
}

/// A key's history: its events oldest first, and the compact revision when the store has
/// forgotten what came before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub events: Vec<EventRow>,
    pub compacted_before: Option<i64>,
}

/// What a live watch hands over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveUpdate {
    /// The watch is made: events from this revision on follow.
    Watching(i64),
    /// A batch of events, oldest first.
    Events(Vec<EventRow>),
}

/// Watches every key under `prefix` from revision `from` (0: the next), handing what
/// happens to `send` until it returns false; how the watch ended, as an error.
pub async fn live(
    endpoints: Vec<String>,
    timeout: Duration,
    prefix: Vec<u8>,
    from: i64,
    mut send: impl FnMut(LiveUpdate) -> bool,
) -> ClientError {
    let range_end = etcd_api::range::prefix_end(&prefix);
    let spec = WatchSpec {
        key: prefix,
        range_end,
        start: from,
        prev_kv: false,
    };
    let end = kv_api::watch::watch(&endpoints, timeout, spec, |update| match update {
        WatchUpdate::Events(events) => send(LiveUpdate::Events(
            events.iter().filter_map(EventRow::of).collect(),
        )),
        WatchUpdate::Watching { from, .. } => send(LiveUpdate::Watching(from)),
        WatchUpdate::Lost { .. } => true,
    })
    .await;
    match end {
        WatchEnd::Stopped => ClientError::Invalid("the watch was stopped".into()),
        WatchEnd::Compacted { from, compact } => ClientError::Invalid(format!(
            "revision {from} has been compacted away; the history starts at revision {compact}"
        )),
        WatchEnd::Refused(why) => ClientError::Invalid(format!("the watch was refused: {why}")),
        WatchEnd::Unreachable(why) => ClientError::Unavailable(why),
    }
}

/// Every revision of `key` the store still has, from the first endpoint that answers.
pub async fn history(
    endpoints: &[String],
    timeout: Duration,
    key: &[u8],
) -> Result<History, ClientError> {
    let mut last = ClientError::Unavailable(kv_api::client::NO_ENDPOINTS.into());
    for addr in endpoints {
        let attempt = tokio::time::timeout(timeout, history_on(addr, key, 1)).await;
        match attempt {
            Ok(Ok(h)) => return Ok(h),
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = ClientError::Unavailable(format!(
                    "{addr}: no complete history within {} ms",
                    timeout.as_millis()
                ))
            }
        }
    }
    Err(last)
}

/// The history of `key` from `from` on, from `addr`; from the compact revision if `from`
/// is older.
async fn history_on(addr: &str, key: &[u8], from: i64) -> Result<History, ClientError> {
    let mut start = from;
    let mut compacted_before = None;
    loop {
        let mut client = WatchClient::new(lazy_channel(addr)?);
        let (requests, rx) = mpsc::channel(2);
        let create = WatchCreateRequest {
            key: key.to_vec(),
            start_revision: start,
            ..Default::default()
        };
        let _ = requests.try_send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
        });
        // Answered once the replay is complete (every watcher of the stream synced).
        let _ = requests.try_send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::ProgressRequest(
                WatchProgressRequest {},
            )),
        });
        let unavailable =
            |e: tonic::Status| ClientError::Unavailable(format!("{addr}: {}", e.message()));
        let mut stream = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(unavailable)?
            .into_inner();
        let mut events = Vec::new();
        loop {
            let Some(answer) = stream.message().await.map_err(unavailable)? else {
                return Err(ClientError::Unavailable(format!(
                    "{addr}: the stream ended"
                )));
            };
            if answer.canceled && answer.compact_revision != 0 {
                start = answer.compact_revision;
                compacted_before = Some(answer.compact_revision);
                break;
            }
            if answer.canceled {
                return Err(ClientError::Invalid(answer.cancel_reason));
            }
            if answer.created {
                continue;
            }
            if answer.watch_id == -1 && answer.events.is_empty() {
                drop(requests);
                return Ok(History {
                    events,
                    compacted_before,
                });
            }
            events.extend(answer.events.iter().filter_map(EventRow::of));
        }
    }
}
