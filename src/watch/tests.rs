//! The hub's rules, one a test, each a short session between a store, the hub and its
//! clients, with no runtime: the store is a list of events, a client an outbox of a given
//! size that the test reads from.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use etcd_api::etcdserverpb::watch_create_request::FilterType;
use etcd_api::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use etcd_api::mvccpb::{event::EventType, Event, KeyValue};
use rand::{Rng, SeedableRng};

use super::hub::{fragments, DUPLICATE_ID, EMPTY_RANGE, NO_WATCH_ID};
use super::*;
use crate::mvcc::History;

/// What a client has been sent and not yet read.
#[derive(Default)]
struct Client {
    /// Answers with their encoded sizes.
    queue: VecDeque<(WatchResponse, usize)>,
    capacity: usize,
    /// Bytes of answers it holds at most (`usize::MAX` unless a test sets it).
    byte_capacity: usize,
    gone: bool,
    ended: Option<StreamEnd>,
}

#[derive(Clone)]
struct TestOutbox(Rc<RefCell<Client>>);

impl Outbox for TestOutbox {
    /// Takes whatever fits its count of answers, so that the tests see whether the hub keeps
    /// to the byte bound itself.
    fn offer(&mut self, answer: WatchResponse, bytes: usize) -> Offer {
        let mut c = self.0.borrow_mut();
        if c.gone {
            Offer::Closed
        } else if c.queue.len() >= c.capacity {
            Offer::Full(answer)
        } else {
            c.queue.push_back((answer, bytes));
            Offer::Queued
        }
    }
    fn room(&self) -> Room {
        let c = self.0.borrow();
        let held: usize = c.queue.iter().map(|(_, bytes)| bytes).sum();
        Room {
            answers: c.capacity.saturating_sub(c.queue.len()),
            bytes: c.byte_capacity.saturating_sub(held),
        }
    }
    fn capacity(&self) -> Room {
        let c = self.0.borrow();
        Room {
            answers: c.capacity,
            bytes: c.byte_capacity,
        }
    }
    fn end(&mut self, why: StreamEnd) {
        self.0.borrow_mut().ended = Some(why);
    }
}

impl TestOutbox {
    fn read(&self) -> Vec<WatchResponse> {
        self.0
            .borrow_mut()
            .queue
            .drain(..)
            .map(|(a, _)| a)
            .collect()
    }
    fn read_one(&self) -> Option<WatchResponse> {
        self.0.borrow_mut().queue.pop_front().map(|(a, _)| a)
    }
}

/// A store's revision log, as events, from revision 2 on.
struct Log {
    events: Vec<Event>,
    revision: i64,
    compact: i64,
}

/// Revisions of one history batch in these tests: small, so catching up takes several.
const TEST_HISTORY_REVISIONS: i64 = 3;

impl Log {
    fn new() -> Log {
        Log {
            events: Vec::new(),
            revision: 1,
            compact: -1,
        }
    }

    /// One write of the given puts (`Some(value)`) and deletes (`None`), as one batch.
    fn write(&mut self, changes: &[(&str, Option<&str>)]) -> LiveBatch {
        let after = self.revision;
        self.revision += 1;
        let events: Vec<Event> = changes
            .iter()
            .map(|(k, v)| self.event(k, *v, self.revision))
            .collect();
        self.events.extend(events.iter().cloned());
        LiveBatch {
            after,
            revision: self.revision,
            events,
            with_prev: true,
        }
    }

    fn put(&mut self, k: &str, v: &str) -> LiveBatch {
        self.write(&[(k, Some(v))])
    }

    fn event(&self, key: &str, value: Option<&str>, rev: i64) -> Event {
        let prev = self
            .events
            .iter()
            .rev()
            .find(|e| e.kv.as_ref().unwrap().key == key.as_bytes());
        let prev_kv = prev
            .filter(|e| e.r#type == EventType::Put as i32)
            .and_then(|e| e.kv.clone());
        match value {
            Some(v) => Event {
                r#type: EventType::Put as i32,
                kv: Some(KeyValue {
                    key: key.into(),
                    value: v.into(),
                    mod_revision: rev,
                    create_revision: prev_kv.as_ref().map_or(rev, |p| p.create_revision),
                    version: prev_kv.as_ref().map_or(1, |p| p.version + 1),
                    lease: 0,
                }),
                prev_kv,
            },
            None => Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: key.into(),
                    mod_revision: rev,
                    ..Default::default()
                }),
                prev_kv,
            },
        }
    }

    /// The history batch the store would answer `read` with.
    fn read(&self, read: HistoryRead) -> History {
        let mut h = History {
            events: Vec::new(),
            from: read.from,
            upto: read.from - 1,
            revision: self.revision,
            compact: self.compact,
            with_prev: read.with_prev,
        };
        if read.from < self.compact {
            return h;
        }
        h.upto = (read.from + TEST_HISTORY_REVISIONS - 1).min(self.revision);
        h.events = self
            .events
            .iter()
            .filter(|e| (read.from..=h.upto).contains(&e.kv.as_ref().unwrap().mod_revision))
            .map(|e| Event {
                prev_kv: e.prev_kv.clone().filter(|_| read.with_prev),
                ..e.clone()
            })
            .collect();
        h
    }
}

const LIMITS: HubLimits = HubLimits {
    max_backlog: 8,
    fragment_bytes: 1536 * 1024,
    catch_up_room: Room {
        answers: 1,
        bytes: 0,
    },
};

fn hub(fed: i64) -> WatchHub<TestOutbox> {
    hub_with(LIMITS, fed)
}

/// A hub with `limits` instead of the tests' usual ones.
fn hub_with(limits: HubLimits, fed: i64) -> WatchHub<TestOutbox> {
    WatchHub::new(
        ResponseHeader {
            cluster_id: 7,
            member_id: 1,
            revision: 0,
            raft_term: 2,
        },
        limits,
        fed,
    )
}

fn client(capacity: usize) -> TestOutbox {
    client_of_bytes(capacity, usize::MAX)
}

/// A client whose outbox holds `capacity` answers and `byte_capacity` bytes of them.
fn client_of_bytes(capacity: usize, byte_capacity: usize) -> TestOutbox {
    TestOutbox(Rc::new(RefCell::new(Client {
        capacity,
        byte_capacity,
        ..Default::default()
    })))
}

fn watch(key: &str) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.into(),
        ..Default::default()
    }
}

fn watch_prefix(prefix: &str) -> WatchCreateRequest {
    WatchCreateRequest {
        key: prefix.into(),
        range_end: etcd_api::range::prefix_end(prefix.as_bytes()),
        ..Default::default()
    }
}

fn from(req: WatchCreateRequest, start: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        start_revision: start,
        ..req
    }
}

/// An empty store, a hub, and one client with room for 16 answers on a stream of its own.
fn session() -> (Log, WatchHub<TestOutbox>, TestOutbox, StreamId) {
    let mut hub = hub(1);
    let c = client(16);
    let s = hub.open(c.clone());
    (Log::new(), hub, c, s)
}

/// Runs history reads until the hub wants none (the sync ticks between them included).
fn catch_up(hub: &mut WatchHub<TestOutbox>, log: &Log) {
    while let Some(read) = hub.history_wanted() {
        let _ = hub.feed_history(log.read(read));
    }
}

/// `(key, value or "-" for a delete, mod revision)` of every event in `answers`.
fn events(answers: &[WatchResponse]) -> Vec<(String, String, i64)> {
    answers
        .iter()
        .flat_map(|a| a.events.iter())
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            let value = if e.r#type == EventType::Delete as i32 {
                "-".to_string()
            } else {
                String::from_utf8_lossy(&kv.value).into_owned()
            };
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                value,
                kv.mod_revision,
            )
        })
        .collect()
}

fn ev(k: &str, v: &str, rev: i64) -> (String, String, i64) {
    (k.into(), v.into(), rev)
}

/// A watcher is answered `created` at once, then sent the events of its key as they are
/// applied, in their own answers, with the revision of the store in the header.
#[test]
fn created_comes_first_then_the_events_of_the_key() {
    let (mut log, mut hub, c, s) = session();
    hub.create(s, &watch("a"), 1);
    let created = c.read();
    assert_eq!(created.len(), 1);
    assert!(created[0].created && !created[0].canceled);
    assert_eq!(
        (created[0].watch_id, created[0].header.unwrap().revision),
        (0, 1)
    );
    assert_eq!(created[0].header.unwrap().cluster_id, 7);

    hub.feed(log.put("a", "1")); // 2
    hub.feed(log.put("b", "1")); // 3: not a's
    hub.feed(log.write(&[("a", Some("2")), ("b", None), ("a2", Some("x"))])); // 4
    let got = c.read();
    assert_eq!(events(&got), [ev("a", "1", 2), ev("a", "2", 4)]);
    assert_eq!(got.len(), 2, "one answer per batch");
    assert_eq!(got[1].header.unwrap().revision, 4);
    assert!(got.iter().all(|a| a.watch_id == 0 && !a.created));
    assert!(
        got[1].events[0].prev_kv.is_none(),
        "prev_kv only when asked for"
    );
}

/// A watch from a past revision replays the history from there, then goes on with live
/// events with no gap and no duplicate, even when the history read saw further than the
/// live events had reached.
#[test]
fn a_watch_from_the_past_replays_history_then_goes_live() {
    let mut log = Log::new();
    let mut hub = hub(1);
    for i in 0..10 {
        hub.feed(log.put("k", &i.to_string())); // 2..=11
    }
    let c = client(64);
    let s = hub.open(c.clone());
    hub.create(s, &from(watch("k"), 4), log.revision);
    assert_eq!(hub.unsynced_count(), 1);
    // A write the history read sees before its live batch reaches the hub.
    let late = log.put("k", "late"); // 12
    catch_up(&mut hub, &log);
    assert_eq!(hub.unsynced_count(), 0);
    hub.feed(late);
    hub.feed(log.put("k", "live")); // 13
    let got = events(&c.read()[1..]);
    let want: Vec<_> = (4..=11)
        .map(|r| ev("k", &(r - 2).to_string(), r))
        .chain([ev("k", "late", 12), ev("k", "live", 13)])
        .collect();
    assert_eq!(got, want);
}

/// A start revision below the compact revision: `created`, then `canceled` with the compact
/// revision and no reason, as etcd answers.
#[test]
fn a_compacted_start_revision_is_canceled_with_the_compact_revision() {
    let mut log = Log::new();
    let mut hub = hub(1);
    for _ in 0..5 {
        hub.feed(log.put("k", "v")); // 2..=6
    }
    log.compact = 5;
    let c = client(16);
    let s = hub.open(c.clone());
    hub.create(s, &from(watch("k"), 3), log.revision);
    catch_up(&mut hub, &log);
    let got = c.read();
    assert_eq!(got.len(), 2);
    assert!(got[0].created);
    assert!(got[1].canceled && got[1].compact_revision == 5 && got[1].cancel_reason.is_empty());
    assert_eq!(hub.watcher_count(), 0);

    hub.create(s, &from(watch("k"), 5), log.revision);
    catch_up(&mut hub, &log);
    let got = c.read();
    assert_eq!(
        events(&got),
        [ev("k", "v", 5), ev("k", "v", 6)],
        "the compact revision itself is kept"
    );
}

/// A client that does not read: its outbox fills, its watcher falls back to history
/// instead of holding the hub or its events; once it reads again it gets every event it
/// missed, once, in order.
#[test]
fn a_slow_client_falls_back_to_history_and_misses_nothing() {
    let mut log = Log::new();
    let mut hub = hub(1);
    let slow = client(2);
    let fast = client(1000);
    let s = hub.open(slow.clone());
    let f = hub.open(fast.clone());
    hub.create(s, &watch_prefix("k"), 1);
    hub.create(f, &watch_prefix("k"), 1);
    let mut slow_got = slow.read();
    for i in 2..=40 {
        hub.feed(log.put(&format!("k{}", i % 3), &i.to_string()));
        if i % 10 == 0 {
            // The slow client reads one answer now and then.
            slow_got.extend(slow.read_one());
            hub.flush();
            catch_up(&mut hub, &log);
        }
    }
    assert_eq!(
        hub.unsynced_count(),
        1,
        "the slow watcher is unsynced, the fast one is not"
    );
    while hub.unsynced_count() > 0 {
        slow_got.extend(slow.read());
        catch_up(&mut hub, &log);
    }
    slow_got.extend(slow.read());
    let want: Vec<_> = (2..=40)
        .map(|i| ev(&format!("k{}", i % 3), &i.to_string(), i))
        .collect();
    assert_eq!(events(&slow_got), want);
    assert_eq!(events(&fast.read()), want);
}

/// A batch that never reached the hub (its mailbox was full) shows as a gap in the next
/// one; synced watchers catch up the missing revisions from history.
#[test]
fn a_dropped_batch_is_caught_up_from_history() {
    let (mut log, mut hub, c, s) = session();
    hub.create(s, &watch("k"), 1);
    c.read();
    hub.feed(log.put("k", "1")); // 2
    let _dropped = log.put("k", "2"); // 3
    hub.feed(log.put("k", "3")); // 4: after = 3 > fed = 2
    assert_eq!(hub.unsynced_count(), 1);
    catch_up(&mut hub, &log);
    assert_eq!(
        events(&c.read()),
        [ev("k", "1", 2), ev("k", "2", 3), ev("k", "3", 4)]
    );
}

/// A restore from a snapshot moves the store forward with no events: fed as an empty
/// batch, it is a gap like any other.
#[test]
fn a_restore_is_a_gap_caught_up_from_history() {
    let (mut log, mut hub, c, s) = session();
    hub.create(s, &watch("k"), 1);
    c.read();
    log.put("k", "1");
    log.put("k", "2"); // 3
    hub.feed(LiveBatch {
        after: 3,
        revision: 3,
        ..Default::default()
    });
    catch_up(&mut hub, &log);
    assert_eq!(events(&c.read()), [ev("k", "1", 2), ev("k", "2", 3)]);
}

/// NOPUT and NODELETE leave out puts and deletes; `prev_kv` adds the key as it was.
#[test]
fn filters_drop_events_and_prev_kv_adds_the_old_value() {
    let (mut log, mut hub, c, s) = session();
    let no_put = WatchCreateRequest {
        filters: vec![FilterType::Noput as i32],
        prev_kv: true,
        watch_id: 10,
        ..watch("k")
    };
    let no_delete = WatchCreateRequest {
        filters: vec![FilterType::Nodelete as i32],
        watch_id: 11,
        ..watch("k")
    };
    hub.create(s, &no_put, 1);
    hub.create(s, &no_delete, 1);
    c.read();
    hub.feed(log.put("k", "1"));
    hub.feed(log.write(&[("k", None)]));
    let got = c.read();
    let of = |id| {
        got.iter()
            .filter(|a| a.watch_id == id)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(events(&of(10)), [ev("k", "-", 3)]);
    assert_eq!(of(10)[0].events[0].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(events(&of(11)), [ev("k", "1", 2)]);
}

/// A live batch without `prev_kv` (the state machine had not yet been asked for it) does
/// not reach a watcher that wants it: that one catches up from history, with `prev_kv`.
#[test]
fn a_prev_kv_watcher_never_gets_an_event_without_it() {
    let (mut log, mut hub, c, s) = session();
    hub.feed(log.put("k", "1"));
    hub.create(
        s,
        &WatchCreateRequest {
            prev_kv: true,
            ..watch("k")
        },
        2,
    );
    assert!(hub.wants_prev_kv());
    c.read();
    let mut batch = log.put("k", "2");
    batch.with_prev = false;
    for e in &mut batch.events {
        e.prev_kv = None;
    }
    hub.feed(batch);
    catch_up(&mut hub, &log);
    let got = c.read();
    assert_eq!(events(&got), [ev("k", "2", 3)]);
    assert_eq!(got[0].events[0].prev_kv.as_ref().unwrap().value, b"1");
}

/// Refusals as etcd answers them: `created` and `canceled`, watch id -1, and etcd's reason.
/// Ids the server picks skip those the client took.
#[test]
fn bad_create_requests_are_refused_and_ids_are_unique() {
    let (_, mut hub, c, s) = session();
    hub.create(
        s,
        &WatchCreateRequest {
            watch_id: 1,
            ..watch("a")
        },
        1,
    );
    hub.create(s, &watch("a"), 1); // 0
    hub.create(s, &watch("a"), 1); // 1 is taken: 2
    hub.create(
        s,
        &WatchCreateRequest {
            watch_id: 2,
            ..watch("a")
        },
        1,
    );
    hub.create(
        s,
        &WatchCreateRequest {
            range_end: b"a".to_vec(),
            ..watch("b")
        },
        1,
    );
    let got = c.read();
    let ids: Vec<i64> = got.iter().map(|a| a.watch_id).collect();
    assert_eq!(ids, [1, 0, 2, NO_WATCH_ID, NO_WATCH_ID]);
    assert_eq!(got[3].cancel_reason, DUPLICATE_ID);
    assert_eq!(got[4].cancel_reason, EMPTY_RANGE);
    assert!(got[3].created && got[3].canceled);
    assert_eq!(hub.watcher_count(), 3);
}

/// Cancel: the watcher is answered `canceled` and sent nothing more; an unknown id gets no
/// answer at all, as in etcd.
#[test]
fn cancel_stops_a_watcher_and_an_unknown_id_is_ignored() {
    let (mut log, mut hub, c, s) = session();
    hub.create(s, &watch("k"), 1);
    hub.cancel(s, 0);
    hub.cancel(s, 42);
    hub.feed(log.put("k", "1"));
    let got = c.read();
    assert_eq!(got.len(), 2);
    assert!(got[1].canceled && got[1].watch_id == 0);
    assert_eq!(hub.watcher_count(), 0);
}

/// A progress request is answered (watch id -1, the fed revision) only once every watcher
/// of the stream has caught up; progress notices go only to watchers sent nothing since the
/// last tick.
#[test]
fn progress_waits_for_the_stream_to_be_synced_and_notices_go_to_quiet_watchers() {
    let mut log = Log::new();
    let mut hub = hub(1);
    for _ in 0..5 {
        hub.feed(log.put("k", "v")); // 2..=6
    }
    let c = client(16);
    let s = hub.open(c.clone());
    hub.create(s, &from(watch("k"), 2), 6);
    hub.request_progress(s);
    assert_eq!(
        c.read().len(),
        1,
        "only `created`: the watcher is not synced yet"
    );
    catch_up(&mut hub, &log);
    let got = c.read();
    let progress = got.last().unwrap();
    assert!(progress.events.is_empty() && progress.watch_id == NO_WATCH_ID);
    assert_eq!(progress.header.unwrap().revision, 6);

    hub.create(
        s,
        &WatchCreateRequest {
            progress_notify: true,
            ..watch("q")
        },
        6,
    );
    c.read();
    hub.feed(log.put("q", "1"));
    c.read();
    hub.progress_tick();
    assert!(
        c.read().is_empty(),
        "q was sent an event since the last tick"
    );
    hub.progress_tick();
    let notice = c.read();
    assert_eq!(notice.len(), 1);
    assert!(notice[0].events.is_empty() && notice[0].watch_id == 1);
    assert_eq!(notice[0].header.unwrap().revision, 7);
}

/// A client that keeps asking and never reads: answers to its requests wait in a bounded
/// backlog; past it the stream is ended with an error and its watchers are gone.
#[test]
fn a_stream_that_never_reads_is_ended_past_its_backlog() {
    let mut hub = hub(1);
    let c = client(1);
    let s = hub.open(c.clone());
    for _ in 0..=LIMITS.max_backlog + 1 {
        hub.create(s, &watch("k"), 1);
    }
    assert_eq!(
        c.0.borrow().ended,
        Some(StreamEnd::Overflow {
            backlog: LIMITS.max_backlog
        })
    );
    assert_eq!(hub.stream_count(), 0);
    assert_eq!(hub.watcher_count(), 0);
}

/// A client gone: its stream and watchers go with the first answer that finds it gone.
#[test]
fn a_closed_client_takes_its_watchers_with_it() {
    let (mut log, mut hub, c, s) = session();
    hub.create(s, &watch("k"), 1);
    c.0.borrow_mut().gone = true;
    hub.feed(log.put("k", "1"));
    assert_eq!(hub.stream_count(), 0);
    assert_eq!(hub.watcher_count(), 0);
}

/// Fragments as etcd makes them: parts under the limit, all but the last marked, the
/// events in order; no split for a small answer or a single event.
#[test]
fn large_answers_are_split_into_fragments() {
    let event = |i: i64| Event {
        kv: Some(KeyValue {
            key: b"k".to_vec(),
            value: vec![b'x'; 100],
            mod_revision: i,
            ..Default::default()
        }),
        ..Default::default()
    };
    let whole = WatchResponse {
        events: (0..10).map(event).collect(),
        ..Default::default()
    };
    let parts = fragments(whole.clone(), 400);
    assert!(parts.len() > 1);
    assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
    assert!(!parts.last().unwrap().fragment);
    assert!(parts.iter().all(|p| prost::Message::encoded_len(p) < 400));
    let rejoined: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
    assert_eq!(rejoined, whole.events);
    assert_eq!(fragments(whole.clone(), 1 << 20).len(), 1);
}

/// Many watchers, random writes, random dropped batches, clients of random speed: every
/// watcher ends up with exactly the events of its keys from its start, once, in order.
#[test]
fn random_sessions_deliver_every_event_exactly_once() {
    for seed in 0..20u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut log = Log::new();
        let mut hub = hub(1);
        let mut clients = Vec::new();
        for i in 0..6 {
            let c = client(rng.gen_range(1..5));
            let s = hub.open(c.clone());
            clients.push((s, c, Vec::new(), i));
        }
        let mut watches = Vec::new(); // (client index, watch id, request)
        for step in 0..300 {
            match rng.gen_range(0..10) {
                0 => {
                    let ci = rng.gen_range(0..clients.len());
                    let key = format!("k{}", rng.gen_range(0..4));
                    let mut req = if rng.gen_bool(0.5) {
                        watch(&key)
                    } else {
                        watch_prefix("k")
                    };
                    req.start_revision = rng.gen_range(0..=log.revision + 1);
                    req.watch_id = step + 1;
                    hub.create(clients[ci].0, &req, log.revision);
                    watches.push((ci, req.watch_id, req));
                }
                1..=6 => {
                    let key = format!("k{}", rng.gen_range(0..4));
                    let batch = if rng.gen_bool(0.2) {
                        log.write(&[(&key, None)])
                    } else {
                        log.put(&key, &step.to_string())
                    };
                    if !rng.gen_bool(0.1) {
                        hub.feed(batch);
                    }
                }
                _ => {
                    let ci = rng.gen_range(0..clients.len());
                    let (_, c, got, _) = &mut clients[ci];
                    got.extend(c.read());
                    hub.flush();
                }
            }
            if rng.gen_bool(0.5) {
                catch_up(&mut hub, &log);
            }
        }
        // The end: the last batch arrives, the clients read until nothing is owed.
        hub.feed(LiveBatch {
            after: log.revision,
            revision: log.revision,
            ..Default::default()
        });
        for _ in 0..1000 {
            for (_, c, got, _) in &mut clients {
                got.extend(c.read());
            }
            hub.flush();
            catch_up(&mut hub, &log);
            if hub.unsynced_count() == 0 {
                break;
            }
        }
        for (_, c, got, _) in &mut clients {
            got.extend(c.read());
        }
        for (ci, id, req) in watches {
            let got: Vec<WatchResponse> = clients[ci]
                .2
                .iter()
                .filter(|a| a.watch_id == id && !a.created)
                .cloned()
                .collect();
            let keys = Keys::of(&req).unwrap();
            let start = if req.start_revision == 0 {
                // The revision the store was at when the watch was made is in `created`.
                let created = clients[ci].2.iter().find(|a| a.watch_id == id && a.created);
                created.unwrap().header.unwrap().revision + 1
            } else {
                req.start_revision
            };
            let want: Vec<Event> = log
                .events
                .iter()
                .filter(|e| {
                    let kv = e.kv.as_ref().unwrap();
                    kv.mod_revision >= start && keys.contains(&kv.key)
                })
                .cloned()
                .collect();
            assert_eq!(
                events(&got),
                events(&[WatchResponse {
                    events: want,
                    ..Default::default()
                }]),
                "seed {seed}, watch {id}"
            );
        }
    }
}

/// A history read that saw further than the live batches have reached gives only up to the
/// fed revision; the rest comes live. Headers never go back, and a progress answer waits
/// until the live batches have caught up with what the hub has seen.
#[test]
fn history_gives_no_more_than_the_live_batches_have_reached() {
    let (mut log, mut hub, c, s) = session();
    hub.feed(log.put("k", "1")); // 2
    let late = log.put("k", "2"); // 3: applied, its batch not yet at the hub
    hub.create(s, &from(watch("k"), 2), log.revision);
    catch_up(&mut hub, &log);
    hub.request_progress(s);
    hub.feed(late);
    let got = c.read();
    assert_eq!(events(&got), [ev("k", "1", 2), ev("k", "2", 3)]);
    let headers: Vec<i64> = got.iter().map(|a| a.header.unwrap().revision).collect();
    assert!(
        headers.windows(2).all(|w| w[0] <= w[1]),
        "headers went back: {headers:?}"
    );
    let progress = got.iter().position(|a| a.watch_id == NO_WATCH_ID).unwrap();
    assert_eq!(progress, got.len() - 1, "progress after the late event");
    assert_eq!(got[progress].header.unwrap().revision, 3);
}

/// A revision in more fragments than the outbox can ever hold goes out whole instead of
/// never.
#[test]
fn a_revision_too_large_for_the_outbox_in_fragments_goes_out_whole() {
    let mut log = Log::new();
    let mut hub = hub_with(
        HubLimits {
            fragment_bytes: 64,
            ..LIMITS
        },
        1,
    );
    let c = client(3);
    let s = hub.open(c.clone());
    hub.create(
        s,
        &WatchCreateRequest {
            fragment: true,
            ..watch_prefix("k")
        },
        1,
    );
    c.read();
    let puts: Vec<(String, Option<&str>)> = (0..10)
        .map(|i| (format!("k{i}"), Some("a value")))
        .collect();
    let changes: Vec<(&str, Option<&str>)> = puts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    hub.feed(log.write(&changes));
    let got = c.read();
    assert_eq!(got.len(), 1);
    assert!(!got[0].fragment);
    assert_eq!(got[0].events.len(), 10);
}

/// A client that reads one answer now and then is caught up only once its outbox has the
/// room the hub asks for, not one history read per answer it takes.
#[test]
fn catching_up_waits_for_room_for_several_answers() {
    let mut log = Log::new();
    let mut hub = hub_with(
        HubLimits {
            catch_up_room: Room {
                answers: 4,
                bytes: 0,
            },
            ..LIMITS
        },
        1,
    );
    let c = client(4);
    let s = hub.open(c.clone());
    for _ in 0..20 {
        hub.feed(log.put("k", "v"));
    }
    hub.create(s, &from(watch("k"), 2), log.revision);
    assert!(
        hub.history_wanted().is_none(),
        "`created` took one of its 4 places: room for 3"
    );
    c.read_one();
    let read = hub.history_wanted().expect("now it has room for 4");
    let _ = hub.feed_history(log.read(read));
    assert!(hub.history_wanted().is_none(), "full again after one batch");
}

/// Reads history as the actor does between two sync ticks: until a batch says to wait.
fn catch_up_until_a_tick(hub: &mut WatchHub<TestOutbox>, log: &Log) {
    while let Some(read) = hub.history_wanted() {
        if !hub.feed_history(log.read(read)) {
            break;
        }
    }
}

/// A slow client costs the member at most its outbox's bytes: catching up from history stops
/// at the byte bound, whatever the count of answers would allow, and goes on, with nothing
/// lost or repeated, once the client has read.
#[test]
fn catching_up_stops_at_the_outbox_byte_bound() {
    const BYTES: usize = 1000;
    let mut log = Log::new();
    let mut hub = hub(1);
    let value = "v".repeat(100);
    for _ in 0..30 {
        hub.feed(log.put("k", &value));
    }
    let c = client_of_bytes(1000, BYTES);
    let s = hub.open(c.clone());
    hub.create(s, &from(watch("k"), 2), log.revision);
    let mut got = Vec::new();
    for round in 0.. {
        catch_up_until_a_tick(&mut hub, &log);
        let held: usize = c.0.borrow().queue.iter().map(|(_, b)| b).sum();
        assert!(held <= BYTES, "round {round}: {held} bytes held");
        let answers = c.read();
        if answers.iter().all(|a| a.events.is_empty()) && hub.unsynced_count() == 0 {
            break;
        }
        assert!(round < 30, "never caught up");
        got.extend(events(&answers).into_iter().map(|(_, _, rev)| rev));
    }
    assert_eq!(
        got,
        (2..=31).collect::<Vec<_>>(),
        "every revision once, in order"
    );
}

/// An answer larger than the whole byte bound still goes out, into an empty outbox.
#[test]
fn an_answer_larger_than_the_byte_bound_goes_into_an_empty_outbox() {
    let mut log = Log::new();
    let mut hub = hub(1);
    let c = client_of_bytes(10, 50);
    let s = hub.open(c.clone());
    hub.create(s, &watch("k"), log.revision);
    c.read();
    hub.feed(log.put("k", &"v".repeat(200)));
    let got = c.read();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].events.len(), 1);
}
