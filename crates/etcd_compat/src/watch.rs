//! Watch streams compared between two stores: the same watchers on each, the same writes,
//! and every event each watcher was sent, field by field.
//!
//! A [`Recorder`] holds one watch stream open on one member and keeps every answer that
//! comes on it. [`WATCHES`] are the watchers a differential run makes before its first op:
//! every key, a prefix, one key, a range, with and without `prev_kv`, each filter. After the
//! run, [`finale`] makes two last writes that every one of them sees — a Txn putting every
//! key of the generator's key space, then a delete of all keys — so a recorder knows it has
//! everything when each of its watchers has had its last event ([`Recorder::wait_for`]),
//! without waiting for a time.
//!
//! Streams are compared as the events each watcher got, in order ([`first_event_difference`]):
//! how a store groups events into answers may differ (etcd sends the events of each write in
//! an answer of its own, and a history replay in large ones), which events, in which order,
//! with which fields, may not.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_api::etcdserverpb::watch_client::WatchClient;
use etcd_api::etcdserverpb::watch_create_request::FilterType;
use etcd_api::etcdserverpb::{
    request_op, watch_request, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use etcd_api::mvccpb::Event;
use etcd_api::range::{prefix_end, FROM_KEY};
use kv_harness::HarnessError;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::gen::{Op, KEYS};
use crate::show;

/// How long a recorder waits for the answers it expects before the harness gives up.
pub const WATCH_DEADLINE: Duration = Duration::from_secs(30);

/// Requests a recorder may have queued for its stream.
const REQUEST_QUEUE: usize = 64;

/// The watchers of a differential run, each with the id it is created with (ids are the
/// client's, so both stores number them alike): `(id, request)`.
pub fn watches() -> Vec<(i64, WatchCreateRequest)> {
    let all = WatchCreateRequest {
        key: FROM_KEY.to_vec(),
        range_end: FROM_KEY.to_vec(),
        ..Default::default()
    };
    vec![
        (
            1,
            WatchCreateRequest {
                prev_kv: true,
                ..all.clone()
            },
        ),
        (
            2,
            WatchCreateRequest {
                key: b"b".to_vec(),
                range_end: prefix_end(b"b"),
                ..Default::default()
            },
        ),
        (
            3,
            WatchCreateRequest {
                key: b"a".to_vec(),
                prev_kv: true,
                ..Default::default()
            },
        ),
        (
            4,
            WatchCreateRequest {
                key: b"a\0".to_vec(),
                range_end: b"b0".to_vec(),
                filters: vec![FilterType::Noput as i32],
                prev_kv: true,
                ..Default::default()
            },
        ),
        (
            5,
            WatchCreateRequest {
                filters: vec![FilterType::Nodelete as i32],
                ..all
            },
        ),
        (
            6,
            WatchCreateRequest {
                key: b"\xff\xff".to_vec(),
                ..Default::default()
            },
        ),
    ]
}

/// The same watches as [`watches`], from revision `start` on, with ids from `first_id`.
pub fn watches_from(start: i64, first_id: i64) -> Vec<(i64, WatchCreateRequest)> {
    watches()
        .into_iter()
        .enumerate()
        .map(|(i, (_, req))| {
            (
                first_id + i as i64,
                WatchCreateRequest {
                    start_revision: start,
                    ..req
                },
            )
        })
        .collect()
}

/// The two writes every watcher of [`watches`] sees, after a run that ended at some
/// revision `r`: at `r + 1` a put of every key (the keyspace's), at `r + 2` a delete of all.
pub fn finale() -> [Op; 2] {
    let puts = KEYS
        .iter()
        .map(|k| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: k.to_vec(),
                value: b"finale".to_vec(),
                ..Default::default()
            })),
        })
        .collect();
    [
        Op::Txn(TxnRequest {
            success: puts,
            ..Default::default()
        }),
        Op::DeleteRange(DeleteRangeRequest {
            key: FROM_KEY.to_vec(),
            range_end: FROM_KEY.to_vec(),
            ..Default::default()
        }),
    ]
}

/// The revision of a watcher's last event once the finale at `end - 1` and `end` has been
/// applied: `end` (the delete), or `end - 1` for a watcher that filters deletes out.
pub fn last_revision(req: &WatchCreateRequest, end: i64) -> i64 {
    if req.filters.contains(&(FilterType::Nodelete as i32)) {
        end - 1
    } else {
        end
    }
}

/// The cancel request of watch `id`.
pub fn cancel_request(id: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CancelRequest(
            etcd_api::etcdserverpb::WatchCancelRequest { watch_id: id },
        )),
    }
}

/// The create request of watch `id`.
pub fn create_request((id, req): &(i64, WatchCreateRequest)) -> WatchRequest {
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                watch_id: *id,
                ..req.clone()
            },
        )),
    }
}

/// One watch stream held open on one member, keeping every answer.
pub struct Recorder {
    /// The store and member, in reports.
    name: String,
    requests: mpsc::Sender<WatchRequest>,
    answers: Arc<Mutex<Vec<WatchResponse>>>,
    /// Moves on with every answer (its count), so waiting is a wait for news, not a sleep.
    arrived: watch::Receiver<usize>,
}

impl Recorder {
    /// Opens a watch stream on `addr` (`host:port`) and makes `watches` on it, waiting
    /// until each is answered `created`.
    pub async fn open(
        name: impl Into<String>,
        addr: &str,
        watches: &[(i64, WatchCreateRequest)],
    ) -> Result<Recorder, HarnessError> {
        let name = name.into();
        let mut client = WatchClient::connect(format!("http://{addr}"))
            .await
            .map_err(|e| kv_harness::harness_error!("{name}: cannot dial {addr}: {e}"))?;
        let (requests, rx) = mpsc::channel(REQUEST_QUEUE.max(watches.len()));
        for w in watches {
            let _ = requests.try_send(create_request(w));
        }
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (tell, arrived) = watch::channel(0);
        let kept = answers.clone();
        // The call runs in the task: etcd sends a stream's response headers only with its
        // first answer, and the call returns only once it has them, so it must not hold up
        // the requests that bring that answer about.
        let failed = format!("{name}: cannot open a watch stream");
        tokio::spawn(async move {
            let mut stream = match client.watch(ReceiverStream::new(rx)).await {
                Ok(response) => response.into_inner(),
                Err(e) => {
                    eprintln!("{failed}: {e}");
                    return;
                }
            };
            while let Ok(Some(answer)) = stream.message().await {
                let mut all = kept.lock().expect("the answers");
                all.push(answer);
                let _ = tell.send(all.len());
            }
        });
        let mut recorder = Recorder {
            name,
            requests,
            answers,
            arrived,
        };
        recorder.wait_created(watches).await?;
        Ok(recorder)
    }

    /// Makes `watches`, and waits until each is answered `created`.
    pub async fn create(
        &mut self,
        watches: &[(i64, WatchCreateRequest)],
    ) -> Result<(), HarnessError> {
        for w in watches {
            self.send(create_request(w)).await?;
        }
        self.wait_created(watches).await
    }

    async fn wait_created(
        &mut self,
        watches: &[(i64, WatchCreateRequest)],
    ) -> Result<(), HarnessError> {
        self.wait_for(|answers| {
            watches
                .iter()
                .all(|(id, _)| answers.iter().any(|a| a.created && a.watch_id == *id))
        })
        .await
    }

    /// Sends one request on the stream.
    pub async fn send(&mut self, request: WatchRequest) -> Result<(), HarnessError> {
        self.requests
            .send(request)
            .await
            .map_err(|_| kv_harness::harness_error!("{}: the watch stream ended", self.name))
    }

    /// Waits until `done` holds of the answers so far.
    pub async fn wait_for(
        &mut self,
        done: impl Fn(&[WatchResponse]) -> bool,
    ) -> Result<(), HarnessError> {
        let deadline = tokio::time::Instant::now() + WATCH_DEADLINE;
        loop {
            if done(&self.answers()) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, self.arrived.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(kv_harness::harness_error!(
                        "{}: the watch stream ended before the answers expected came",
                        self.name
                    ))
                }
                Err(_) => {
                    return Err(kv_harness::harness_error!(
                        "{}: the answers expected did not come within {WATCH_DEADLINE:?}",
                        self.name
                    ))
                }
            }
        }
    }

    /// Waits until every watcher of `watches` has had its last event of a finale ending at
    /// revision `end`, or was canceled.
    pub async fn wait_for_finale(
        &mut self,
        watches: &[(i64, WatchCreateRequest)],
        end: i64,
    ) -> Result<(), HarnessError> {
        self.wait_for(|answers| {
            watches.iter().all(|(id, req)| {
                let last = last_revision(req, end);
                answers.iter().any(|a| {
                    a.watch_id == *id
                        && (a.canceled
                            || a.events
                                .iter()
                                .any(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= last)))
                })
            })
        })
        .await
    }

    pub fn answers(&self) -> Vec<WatchResponse> {
        self.answers.lock().expect("the answers").clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What one watcher was told: its events in order, and whether and how it was canceled.
#[derive(Debug, Clone, PartialEq)]
pub struct Told {
    pub events: Vec<Event>,
    /// `(compact_revision, cancel_reason)` of the answer that canceled it.
    pub canceled: Option<(i64, String)>,
}

/// What watcher `id` was told on a stream.
pub fn told(answers: &[WatchResponse], id: i64) -> Told {
    let mine = || answers.iter().filter(|a| a.watch_id == id && !a.created);
    Told {
        events: mine().flat_map(|a| a.events.iter().cloned()).collect(),
        canceled: mine()
            .find(|a| a.canceled)
            .map(|a| (a.compact_revision, a.cancel_reason.clone())),
    }
}

/// Where the watchers of two streams were first told different things: which watcher, and
/// what each stream said at the first difference.
pub fn first_event_difference(
    left: &[WatchResponse],
    right: &[WatchResponse],
    watches: &[(i64, WatchCreateRequest)],
) -> Option<String> {
    for (id, req) in watches {
        let (l, r) = (told(left, *id), told(right, *id));
        if l.canceled != r.canceled {
            return Some(format!(
                "watch {id} (from {}): canceled {:?} against {:?}",
                req.start_revision, l.canceled, r.canceled
            ));
        }
        let n = l.events.len().max(r.events.len());
        for i in 0..n {
            let (a, b) = (l.events.get(i), r.events.get(i));
            if a != b {
                return Some(format!(
                    "watch {id} (from {}), event #{i} of {}/{}: {} against {}",
                    req.start_revision,
                    l.events.len(),
                    r.events.len(),
                    a.map_or("nothing".into(), show::event),
                    b.map_or("nothing".into(), show::event)
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_api::mvccpb::KeyValue;

    fn put(key: &str, rev: i64) -> Event {
        Event {
            kv: Some(KeyValue {
                key: key.into(),
                value: b"v".to_vec(),
                mod_revision: rev,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn answer(id: i64, events: Vec<Event>) -> WatchResponse {
        WatchResponse {
            watch_id: id,
            events,
            ..Default::default()
        }
    }

    /// The stream the broken ones below are made from: watcher 1 gets three events.
    fn good() -> Vec<WatchResponse> {
        vec![
            WatchResponse {
                watch_id: 1,
                created: true,
                ..Default::default()
            },
            answer(1, vec![put("a", 2), put("b", 2)]),
            answer(1, vec![put("a", 3)]),
        ]
    }

    fn one() -> Vec<(i64, WatchCreateRequest)> {
        vec![(1, WatchCreateRequest::default())]
    }

    /// The same events grouped into other answers are the same stream.
    #[test]
    fn grouping_is_not_a_difference() {
        let regrouped = vec![
            answer(1, vec![put("a", 2)]),
            answer(1, vec![put("b", 2), put("a", 3)]),
        ];
        assert_eq!(first_event_difference(&good(), &regrouped, &one()), None);
    }

    /// Each way of getting a stream wrong is reported: a lost event, a repeated one, two in
    /// the wrong order, a field changed, a cancel that should not be.
    #[test]
    fn every_wrong_stream_is_caught() {
        let mut lost = good();
        lost[2].events.clear();
        let mut repeated = good();
        repeated.push(answer(1, vec![put("a", 3)]));
        let mut reordered = good();
        reordered[1].events.reverse();
        let mut changed = good();
        changed[2].events[0].prev_kv = Some(KeyValue::default());
        let mut canceled = good();
        canceled.push(WatchResponse {
            watch_id: 1,
            canceled: true,
            compact_revision: 2,
            ..Default::default()
        });
        for (what, broken) in [
            ("lost", lost),
            ("repeated", repeated),
            ("reordered", reordered),
            ("changed", changed),
            ("canceled", canceled),
        ] {
            assert!(
                first_event_difference(&good(), &broken, &one()).is_some(),
                "a {what} event went unnoticed"
            );
        }
    }
}
