//! [`WatchHub`]: every watch stream of a member, and which events each watcher is owed.
//! The protocol and its invariants are in the [module docs](super).

use std::collections::{BTreeSet, HashMap, VecDeque};

use etcd_api::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use etcd_api::mvccpb::Event;
use prost::Message as _;

use super::watcher::{Keys, Watcher};
use crate::mvcc::History;

/// Names a watch stream within one hub.
pub type StreamId = u64;

/// A watcher: its stream, and its id there.
type Ref = (StreamId, i64);

/// The watch id of a create request that leaves the choice to the server (etcd's
/// `AutoWatchID`), and of an answer that concerns no watcher (etcd's `InvalidWatchID`).
pub const AUTO_WATCH_ID: i64 = 0;
pub const NO_WATCH_ID: i64 = -1;

/// etcd's reasons for refusing a create request, as its clients see them.
pub const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
pub const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

/// What an outbox did with an answer.
#[derive(Debug)]
pub enum Offer {
    Queued,
    /// The outbox is full; the answer comes back.
    Full(WatchResponse),
    /// The client has gone.
    Closed,
}

/// Why the hub ends a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// More than this many answers to the client's requests waited for it to read.
    Overflow { backlog: usize },
    /// The member is stopping.
    Stopping,
}

/// Where a stream's answers wait for its client: a bounded queue the hub never waits on.
pub trait Outbox {
    /// Offers `answer`, whose encoded size is `bytes`.
    fn offer(&mut self, answer: WatchResponse, bytes: usize) -> Offer;
    /// What it would take now.
    fn room(&self) -> Room;
    /// What it takes when empty.
    fn capacity(&self) -> Room;
    /// Ends the stream, after what is queued, with an error saying why.
    fn end(&mut self, why: StreamEnd);
}

/// Room in an outbox, in both of the units that bound it: a count of answers bounds the
/// many small answers of a busy live feed, the bytes bound the few large ones a catch-up
/// from history sends. An answer larger than the whole byte bound still goes into an empty
/// outbox (otherwise a large revision could never be sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub answers: usize,
    /// Encoded (protobuf) size of answers.
    pub bytes: usize,
}

impl Room {
    /// Whether there is at least `need` of both.
    pub fn holds(&self, need: Room) -> bool {
        self.answers >= need.answers && self.bytes >= need.bytes
    }
}

/// A history read the hub wants: the events from `from` on, for its unsynced watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRead {
    pub from: i64,
    pub with_prev: bool,
}

/// The events of one apply batch, as the state machine hands them over.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveBatch {
    /// The store's revision before the batch.
    pub after: i64,
    /// The store's revision after it: the batch's events are all in `after + 1..=revision`.
    pub revision: i64,
    pub events: Vec<Event>,
    /// Whether the events carry `prev_kv`.
    pub with_prev: bool,
}

/// Limits of one hub.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Answers to a stream's own requests (created, canceled, progress) held while its
    /// outbox is full; one more and the stream is ended (the client is not reading).
    pub max_backlog: usize,
    /// An answer larger than this is split for a watcher that allows fragments.
    pub fragment_bytes: usize,
    /// Room an outbox must have before its unsynced watchers are caught up: a client that
    /// reads one answer now and then is caught up in bursts, one history read serving many
    /// answers, not one read per answer it takes.
    pub catch_up_room: Room,
}

/// What the hub has done since it was made (or since [`WatchHub::take_counters`]): how a
/// member's watch load is made up, which etcd shows as metrics (`etcd_debugging_mvcc_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubCounters {
    pub live_batches: u64,
    /// Live batches that showed a gap before them.
    pub gaps: u64,
    /// Answers with events sent from live batches, and from history batches.
    pub live_answers: u64,
    pub history_answers: u64,
    /// Events sent, from both.
    pub events_sent: u64,
    pub history_batches: u64,
    /// Events the history batches held, whether or not anyone was sent them.
    pub history_events: u64,
    /// Times a synced watcher became unsynced.
    pub unsynced: u64,
}

struct Stream<O> {
    outbox: O,
    watchers: HashMap<i64, Watcher>,
    /// The next id to try for a watcher whose client leaves the choice to the server.
    next_id: i64,
    /// Answers to the client's requests not yet in the outbox, oldest first. While any
    /// wait, no event goes out on the stream, so a watcher's `created` comes first.
    backlog: VecDeque<WatchResponse>,
    /// A progress request waits for every watcher of the stream to be synced.
    progress_wanted: bool,
}

/// Every watch stream of one member (see the module docs).
pub struct WatchHub<O> {
    /// Cluster id, member id and Raft term of every answer; the revision is set per answer.
    header: ResponseHeader,
    limits: HubLimits,
    streams: HashMap<StreamId, Stream<O>>,
    next_stream: StreamId,
    /// The revision up to which every live event has been fed to the hub.
    fed: i64,
    /// The newest store revision the hub has heard of (a create's, a history read's); ahead
    /// of `fed` while live batches are on their way. Answers' headers carry the larger of
    /// the two, so they never go back; progress answers wait until `fed` has caught up.
    seen: i64,
    /// Synced single-key watchers, by their key.
    by_key: HashMap<Vec<u8>, BTreeSet<Ref>>,
    /// Synced watchers of a range.
    ranges: BTreeSet<Ref>,
    unsynced: BTreeSet<Ref>,
    /// A history read is out (at most one at a time).
    reading: bool,
    /// Watchers that want `prev_kv`, so live events must carry it.
    prev_kv_watchers: usize,
    counters: HubCounters,
}

impl<O: Outbox> WatchHub<O> {
    /// A hub whose answers carry `header`, for a store at revision `fed`.
    pub fn new(header: ResponseHeader, limits: HubLimits, fed: i64) -> WatchHub<O> {
        WatchHub {
            header,
            limits,
            streams: HashMap::new(),
            next_stream: 1,
            fed,
            seen: fed,
            by_key: HashMap::new(),
            ranges: BTreeSet::new(),
            unsynced: BTreeSet::new(),
            reading: false,
            prev_kv_watchers: 0,
            counters: HubCounters::default(),
        }
    }

    pub fn fed(&self) -> i64 {
        self.fed
    }

    pub fn set_term(&mut self, term: u64) {
        self.header.raft_term = term;
    }

    /// Whether live events must carry `prev_kv` for some watcher.
    pub fn wants_prev_kv(&self) -> bool {
        self.prev_kv_watchers > 0
    }

    pub fn watcher_count(&self) -> usize {
        self.streams.values().map(|s| s.watchers.len()).sum()
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Watchers catching up from history.
    pub fn unsynced_count(&self) -> usize {
        self.unsynced.len()
    }

    /// The counters since the last call, which starts them again from zero.
    pub fn take_counters(&mut self) -> HubCounters {
        std::mem::take(&mut self.counters)
    }

    /// The revision answers' headers carry now.
    fn newest(&self) -> i64 {
        self.seen.max(self.fed)
    }

    fn header_at(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision,
            ..self.header
        })
    }

    pub fn open(&mut self, outbox: O) -> StreamId {
        let id = self.next_stream;
        self.next_stream += 1;
        self.streams.insert(
            id,
            Stream {
                outbox,
                watchers: HashMap::new(),
                next_id: AUTO_WATCH_ID,
                backlog: VecDeque::new(),
                progress_wanted: false,
            },
        );
        id
    }

    /// Removes a stream and its watchers (the client has gone, or the stream is ended).
    pub fn close(&mut self, stream: StreamId) {
        let Some(s) = self.streams.remove(&stream) else {
            return;
        };
        for (id, w) in s.watchers {
            self.unindex((stream, id), &w);
        }
    }

    /// A create request, with the store at `current`: answers `created` (or refuses, as
    /// etcd does: `created` and `canceled` with a reason), and from then on sends the
    /// watcher every event it wants from its start revision on.
    pub fn create(&mut self, stream: StreamId, req: &WatchCreateRequest, current: i64) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let refuse = |reason: &str| WatchResponse {
            watch_id: NO_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        let (answer, watcher) = match Keys::of(req) {
            None => (refuse(EMPTY_RANGE), None),
            Some(_) if req.watch_id != AUTO_WATCH_ID && s.watchers.contains_key(&req.watch_id) => {
                (refuse(DUPLICATE_ID), None)
            }
            Some(keys) => {
                let id = if req.watch_id == AUTO_WATCH_ID {
                    while s.watchers.contains_key(&s.next_id) {
                        s.next_id += 1;
                    }
                    s.next_id += 1;
                    s.next_id - 1
                } else {
                    req.watch_id
                };
                // 0: from the next revision; below 1 (there is nothing before revision 1): from the start.
                let next = match req.start_revision {
                    0 => current + 1,
                    r => r.max(1),
                };
                let watcher = Watcher::new(req, keys, next);
                let answer = WatchResponse {
                    watch_id: id,
                    created: true,
                    ..Default::default()
                };
                (answer, Some((id, watcher)))
            }
        };
        // The watcher starts after `current`; the header says so, as etcd's does.
        self.seen = self.seen.max(current);
        let answer = WatchResponse {
            header: self.header_at(current),
            ..answer
        };
        self.control(stream, answer);
        if let Some((id, watcher)) = watcher {
            let Some(s) = self.streams.get_mut(&stream) else {
                return;
            };
            let synced = watcher.next > self.fed;
            if watcher.prev_kv {
                self.prev_kv_watchers += 1;
            }
            s.watchers.insert(id, watcher);
            self.set_synced((stream, id), synced);
        }
    }

    /// A cancel request: the watcher goes, and `canceled` says so. An unknown id gets no
    /// answer, as in etcd.
    pub fn cancel(&mut self, stream: StreamId, watch_id: i64) {
        self.end_watcher((stream, watch_id), 0);
    }

    /// A progress request: once every watcher of the stream is synced, an answer with no
    /// watch id and no events says how far the stream has come (etcd 3.5's behaviour).
    pub fn request_progress(&mut self, stream: StreamId) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.progress_wanted = true;
        }
        self.answer_progress();
    }

    /// The events of an apply batch: every synced watcher is sent those it wants, or, if
    /// its stream cannot take them now, becomes unsynced and catches up from history.
    pub fn feed(&mut self, batch: LiveBatch) {
        let fed = self.fed;
        self.seen = self.seen.max(batch.revision);
        self.counters.live_batches += 1;
        if batch.after > fed {
            self.counters.gaps += 1;
            // Revisions fed+1..=after never reached the hub (dropped, or skipped by a
            // restore): every synced watcher that may want them catches up from history.
            for r in self.synced_refs() {
                if self.watcher(r).is_some_and(|w| w.next <= batch.after) {
                    self.unsync(r, fed + 1);
                }
            }
        }
        let mut owed: HashMap<Ref, Vec<usize>> = HashMap::new();
        for (i, event) in batch.events.iter().enumerate() {
            let Some(kv) = &event.kv else { continue };
            if kv.mod_revision <= fed {
                continue;
            }
            let keyed = self.by_key.get(&kv.key).into_iter().flatten();
            for &r in keyed.chain(self.ranges.iter()) {
                if self.watcher(r).is_some_and(|w| w.wants(event)) {
                    owed.entry(r).or_default().push(i);
                }
            }
        }
        let mut owed: Vec<_> = owed.into_iter().collect();
        owed.sort_unstable();
        for (r, indexes) in owed {
            let Some(w) = self.watcher(r) else { continue };
            let first_unsent = w.next.max(fed + 1);
            if w.prev_kv && !batch.with_prev {
                self.unsync(r, first_unsent);
                continue;
            }
            let events = indexes.iter().map(|&i| w.shape(&batch.events[i])).collect();
            if self.deliver(r, events) {
                self.counters.live_answers += 1;
            } else {
                self.unsync(r, first_unsent);
            }
        }
        self.fed = self.fed.max(batch.revision);
        self.answer_progress();
    }

    /// The history read to make next, if unsynced watchers whose streams have room wait
    /// for one and none is out. The caller must answer with [`WatchHub::feed_history`] or
    /// [`WatchHub::history_failed`].
    pub fn history_wanted(&mut self) -> Option<HistoryRead> {
        if self.reading {
            return None;
        }
        let mut read: Option<HistoryRead> = None;
        for &(stream, id) in &self.unsynced {
            let Some(s) = self.streams.get(&stream) else {
                continue;
            };
            let need = Room {
                answers: self.limits.catch_up_room.answers.max(1),
                ..self.limits.catch_up_room
            };
            if !s.backlog.is_empty() || !s.outbox.room().holds(need) {
                continue;
            }
            let Some(w) = s.watchers.get(&id) else {
                continue;
            };
            let r = read.get_or_insert(HistoryRead {
                from: w.next,
                with_prev: false,
            });
            r.from = r.from.min(w.next);
            r.with_prev |= w.prev_kv;
        }
        self.reading = read.is_some();
        read
    }

    /// The history read failed: the next call to [`WatchHub::history_wanted`] asks again.
    pub fn history_failed(&mut self) {
        self.reading = false;
    }

    /// A history batch: each unsynced watcher it covers is sent what it wants of it, and
    /// is synced once it has caught up with the live events; one that wants revisions
    /// compaction has removed is canceled with the compact revision. Returns whether to read
    /// again at once: the batch stopped short of the store's revision and moved a watcher
    /// on (a backlog is being worked through); otherwise the next read waits for the next
    /// sync tick, so watchers near the head are caught up a few times a second, together.
    pub fn feed_history(&mut self, h: History) -> bool {
        self.reading = false;
        self.seen = self.seen.max(h.revision);
        self.counters.history_batches += 1;
        self.counters.history_events += h.events.len() as u64;
        let mut moved = false;
        // What this batch can give: up to the fed revision, not beyond. Events the read saw
        // past it are in live batches still on their way (or shown lost by a gap), and come
        // from there; so no answer's header is ahead of the fed revision, which progress
        // answers carry, and headers never go back.
        let upto = h.upto.min(self.fed);
        let refs: Vec<Ref> = self.unsynced.iter().copied().collect();
        for r in refs {
            let Some(w) = self.watcher(r) else { continue };
            if w.next < h.compact {
                self.compacted(r, h.compact);
                continue;
            }
            if w.next < h.from || (w.prev_kv && !h.with_prev) {
                // Became unsynced after the read was asked for: the next read covers it.
                continue;
            }
            if w.next <= upto {
                if !self.has_room(r.0) {
                    continue;
                }
                let events: Vec<Event> = h
                    .events
                    .iter()
                    .filter(|e| {
                        w.wants(e) && e.kv.as_ref().is_some_and(|kv| kv.mod_revision <= upto)
                    })
                    .map(|e| w.shape(e))
                    .collect();
                if !events.is_empty() {
                    if !self.deliver(r, events) {
                        continue;
                    }
                    self.counters.history_answers += 1;
                }
                if let Some(w) = self.watcher_mut(r) {
                    w.next = upto + 1;
                    moved = true;
                }
            }
            if self.watcher(r).is_some_and(|w| w.next > self.fed) {
                self.set_synced(r, true);
            }
        }
        self.answer_progress();
        moved && upto < self.fed
    }

    /// A progress tick: every synced watcher that asked for progress notices and was sent
    /// nothing since the last tick is sent an empty answer at the fed revision.
    pub fn progress_tick(&mut self) {
        // A notice claims every event up to its header was sent: only once the live batches
        // have caught up with what the hub has seen.
        let caught_up = self.fed >= self.seen;
        let refs: Vec<Ref> = self.synced_refs();
        for r in refs {
            let Some(w) = self.watcher(r) else { continue };
            if caught_up && w.progress_notify && w.quiet && self.has_room(r.0) {
                self.deliver(r, Vec::new());
            }
            if let Some(w) = self.watcher_mut(r) {
                w.quiet = true;
            }
        }
    }

    /// Removes the streams whose client has gone, as `gone` tells from their outbox: a
    /// stream that is sent nothing would otherwise never find out.
    pub fn sweep(&mut self, gone: impl Fn(&O) -> bool) {
        let ids: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| gone(&s.outbox))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.close(id);
        }
    }

    /// Ends every stream (the member is stopping): their clients go on elsewhere.
    pub fn end_all(&mut self) {
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for id in ids {
            if let Some(s) = self.streams.get_mut(&id) {
                s.outbox.end(StreamEnd::Stopping);
            }
            self.close(id);
        }
    }

    /// Moves waiting answers to requests into outboxes that have room again.
    pub fn flush(&mut self) {
        let ids: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.backlog.is_empty())
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.drain_backlog(id);
        }
        self.answer_progress();
    }

    fn watcher(&self, (stream, id): Ref) -> Option<&Watcher> {
        self.streams.get(&stream)?.watchers.get(&id)
    }

    fn watcher_mut(&mut self, (stream, id): Ref) -> Option<&mut Watcher> {
        self.streams.get_mut(&stream)?.watchers.get_mut(&id)
    }

    fn synced_refs(&self) -> Vec<Ref> {
        let mut refs: Vec<Ref> = self
            .by_key
            .values()
            .flatten()
            .chain(self.ranges.iter())
            .copied()
            .collect();
        refs.sort_unstable();
        refs
    }

    fn has_room(&self, stream: StreamId) -> bool {
        self.streams
            .get(&stream)
            .is_some_and(|s| s.backlog.is_empty() && s.outbox.room().answers > 0)
    }

    /// Files `r` under synced or unsynced, from wherever it was.
    fn set_synced(&mut self, r: Ref, synced: bool) {
        let Some(w) = self.watcher(r) else { return };
        let keys = w.keys.clone();
        self.remove_from_sets(r, &keys);
        if let Some(w) = self.watcher_mut(r) {
            w.synced = synced;
        }
        if !synced {
            self.unsynced.insert(r);
        } else {
            match keys {
                Keys::Single(k) => {
                    self.by_key.entry(k).or_default().insert(r);
                }
                Keys::Span(..) => {
                    self.ranges.insert(r);
                }
            }
        }
    }

    /// Makes a synced watcher unsynced, owed everything from `first_unsent` on.
    fn unsync(&mut self, r: Ref, first_unsent: i64) {
        if let Some(w) = self.watcher_mut(r) {
            w.next = w.next.max(first_unsent);
        }
        self.counters.unsynced += 1;
        self.set_synced(r, false);
    }

    fn remove_from_sets(&mut self, r: Ref, keys: &Keys) {
        self.unsynced.remove(&r);
        match keys {
            Keys::Single(k) => {
                if let Some(set) = self.by_key.get_mut(k) {
                    set.remove(&r);
                    if set.is_empty() {
                        self.by_key.remove(k);
                    }
                }
            }
            Keys::Span(..) => {
                self.ranges.remove(&r);
            }
        }
    }

    /// Forgets a watcher already taken out of its stream.
    fn unindex(&mut self, r: Ref, w: &Watcher) {
        self.remove_from_sets(r, &w.keys);
        if w.prev_kv {
            self.prev_kv_watchers -= 1;
        }
    }

    /// Cancels `r` because it wants history from before `compact`, as etcd does: an
    /// answer with `canceled` and the compact revision, and no reason.
    fn compacted(&mut self, r: Ref, compact: i64) {
        self.end_watcher(r, compact);
    }

    /// Removes watcher `r`, if there is one, and answers `canceled` for it, with
    /// `compact_revision` (0: not because of compaction).
    fn end_watcher(&mut self, (stream, id): Ref, compact_revision: i64) {
        let Some(w) = self
            .streams
            .get_mut(&stream)
            .and_then(|s| s.watchers.remove(&id))
        else {
            return;
        };
        self.unindex((stream, id), &w);
        let answer = WatchResponse {
            header: self.header_at(self.newest()),
            watch_id: id,
            canceled: true,
            compact_revision,
            ..Default::default()
        };
        self.control(stream, answer);
    }

    /// Sends events (or, with none, a progress notice) to watcher `r`, split into fragments
    /// if it allows them and the answer is too large. Whether they went out: not if the
    /// stream has a backlog or too little room.
    fn deliver(&mut self, r: Ref, events: Vec<Event>) -> bool {
        let header = self.header_at(self.newest());
        let fragment_bytes = self.limits.fragment_bytes;
        let Some(s) = self.streams.get_mut(&r.0) else {
            return false;
        };
        let Some(w) = s.watchers.get_mut(&r.1) else {
            return false;
        };
        let whole = WatchResponse {
            header,
            watch_id: r.1,
            events,
            ..Default::default()
        };
        let mut answers = if w.fragment {
            fragments(whole, fragment_bytes)
        } else {
            vec![whole]
        };
        if answers.len() > s.outbox.capacity().answers {
            // More fragments than the outbox can ever hold: whole, as to a watcher that did
            // not ask for fragments, rather than never.
            let mut events = Vec::new();
            for a in &mut answers {
                events.append(&mut a.events);
            }
            let mut whole = answers.swap_remove(0);
            whole.events = events;
            whole.fragment = false;
            answers = vec![whole];
        }
        let sizes: Vec<usize> = answers.iter().map(|a| a.encoded_len()).collect();
        let room = s.outbox.room();
        let fits = room.holds(Room {
            answers: answers.len(),
            bytes: sizes.iter().sum(),
        }) || (room == s.outbox.capacity() && answers.len() <= room.answers);
        if !s.backlog.is_empty() || !fits {
            return false;
        }
        w.quiet = false;
        let sent: usize = answers.iter().map(|a| a.events.len()).sum();
        self.counters.events_sent += sent as u64;
        for (answer, bytes) in answers.into_iter().zip(sizes) {
            match s.outbox.offer(answer, bytes) {
                Offer::Queued => {}
                // Room was checked, and only the hub sends: a full outbox here is a bug
                // of the outbox; the watcher catches up from history instead.
                Offer::Full(_) => return false,
                Offer::Closed => {
                    self.close(r.0);
                    return false;
                }
            }
        }
        true
    }

    /// Sends an answer to a request of the stream's client, behind any that wait.
    fn control(&mut self, stream: StreamId, answer: WatchResponse) {
        let max_backlog = self.limits.max_backlog;
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        s.backlog.push_back(answer);
        if s.backlog.len() > max_backlog {
            s.outbox.end(StreamEnd::Overflow {
                backlog: max_backlog,
            });
            self.close(stream);
            return;
        }
        self.drain_backlog(stream);
    }

    fn drain_backlog(&mut self, stream: StreamId) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        while let Some(answer) = s.backlog.pop_front() {
            let bytes = answer.encoded_len();
            match s.outbox.offer(answer, bytes) {
                Offer::Queued => {}
                Offer::Full(answer) => {
                    s.backlog.push_front(answer);
                    return;
                }
                Offer::Closed => {
                    self.close(stream);
                    return;
                }
            }
        }
    }

    /// Answers the progress requests whose streams are all synced now.
    fn answer_progress(&mut self) {
        if self.fed < self.seen {
            return;
        }
        let ready: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| s.progress_wanted && s.watchers.values().all(|w| w.synced))
            .map(|(&id, _)| id)
            .collect();
        for stream in ready {
            if let Some(s) = self.streams.get_mut(&stream) {
                s.progress_wanted = false;
            }
            let answer = WatchResponse {
                header: self.header_at(self.fed),
                watch_id: NO_WATCH_ID,
                ..Default::default()
            };
            self.control(stream, answer);
        }
    }
}

/// `whole` split as etcd splits it: only if it is at least `max_bytes` and has two events
/// or more; each part but the last marked `fragment`, each under `max_bytes` unless one
/// event alone is larger.
pub fn fragments(whole: WatchResponse, max_bytes: usize) -> Vec<WatchResponse> {
    if whole.encoded_len() < max_bytes || whole.events.len() < 2 {
        return vec![whole];
    }
    let empty = WatchResponse {
        events: Vec::new(),
        fragment: true,
        ..whole.clone()
    };
    let mut parts = Vec::new();
    let mut current = empty.clone();
    for event in whole.events {
        current.events.push(event);
        if current.events.len() > 1 && current.encoded_len() >= max_bytes {
            let event = current.events.pop().expect("just pushed");
            parts.push(std::mem::replace(&mut current, empty.clone()));
            current.events.push(event);
        }
    }
    current.fragment = false;
    parts.push(current);
    parts
}
