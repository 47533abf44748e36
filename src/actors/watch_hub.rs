//! `WatchHubActor`: the [`WatchHub`] behind a mailbox, on an arbiter of its own so that
//! matching events against many watchers stays off the thread that serves gRPC.
//!
//! It adds to the hub:
//! - **the feeds**: [`LiveEvents`] from the StorageActor after every apply batch, and the
//!   history reads the hub asks for, one at a time ([`ReadHistory`]: each a bounded batch,
//!   so the StorageActor's applies wait for at most one);
//! - **the timers**: every [`SYNC_INTERVAL`] it retries what waited for room in a stream's
//!   outbox, sweeps streams whose client has gone, reads history for watchers that can take
//!   it again, and after a tick with no live batch asks the store's revision, in case the
//!   last batches were dropped; every `progress_interval` it ticks progress notices;
//! - **the revision of a new watcher**: a create request first asks the StorageActor for
//!   its current revision ([`GetRevision`]), so that "from now on" means after every write
//!   acknowledged before the request, as in etcd;
//! - **`prev_kv` on demand**: it tells the StorageActor ([`WantPrevKv`]) whether live
//!   events must carry the old values, so a store with no such watcher never reads them.
//!
//! Mailbox: at most [`HUB_MAILBOX`] messages wait. The StorageActor's events are offered
//! with `try_send` and dropped when it is full (the next batch shows the gap, and the
//! watchers concerned catch up from history); the Watch service's requests wait for room,
//! which holds back the client that sends them.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::prelude::*;
use etcd_api::etcdserverpb::watch_request::RequestUnion;
use etcd_api::etcdserverpb::{ResponseHeader, WatchResponse};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

use crate::actors::messages::{
    CloseWatchStream, EndWatchStreams, GetRevision, LiveEvents, OpenWatchStream, ReadHistory,
    WantPrevKv, WatchStreamRequest,
};
use crate::watch::{
    HubCounters, HubLimits, LiveBatch, Offer, Outbox, Room, StreamEnd, StreamId, WatchHub,
};

/// Messages waiting for the hub at most (see the module docs for what happens past it).
pub const HUB_MAILBOX: usize = 1_024;

/// How often the hub retries answers and history reads that waited for room, and looks for
/// streams whose client has gone: etcd's `syncWatchers` runs every 100 ms too.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// How often a hub with watchers logs what it did (its [`HubCounters`]) since the last time.
pub const STATS_INTERVAL: Duration = Duration::from_secs(10);

/// Answers one stream's outbox holds for its client: with the live feed's answers each one
/// apply batch's events, this bounds a fast client's queue.
pub const WATCH_STREAM_QUEUE: usize = 64;

/// Bytes (encoded) of answers one stream's outbox holds: with history answers each up to
/// [`crate::mvcc::history::HISTORY_BATCH_BYTES`], this bounds what a slow client costs the
/// member — without it, 64 history answers would be 16 MiB a stream, built and held for a
/// client that reads 100 events a second.
pub const WATCH_STREAM_BYTES: usize = 1024 * 1024;

/// Room an outbox needs before its unsynced watchers are caught up
/// ([`HubLimits::catch_up_room`]): half of it, in answers and in bytes.
pub const CATCH_UP_ROOM: Room = Room {
    answers: WATCH_STREAM_QUEUE / 2,
    bytes: WATCH_STREAM_BYTES / 2,
};

/// Answers to a stream's own requests held while its outbox is full; past it the stream is
/// ended ([`HubLimits::max_backlog`]).
pub const MAX_CONTROL_BACKLOG: usize = 1_024;

/// An answer on its way to the gRPC response stream, with its encoded size.
type Queued = (usize, Result<WatchResponse, Status>);

/// The answers of one stream, on their way to the gRPC response stream. The channel has
/// one slot more than [`WATCH_STREAM_QUEUE`], kept for the error that ends the stream, so
/// ending it never needs room that a slow client has not made.
pub struct ChannelOutbox {
    tx: mpsc::Sender<Queued>,
    /// Bytes of the answers in the channel: added here, taken off by [`OutboxStream`].
    bytes: Arc<AtomicUsize>,
}

/// The receiving half of a [`ChannelOutbox`], which the response stream reads.
pub struct OutboxStream {
    rx: mpsc::Receiver<Queued>,
    bytes: Arc<AtomicUsize>,
}

impl Stream for OutboxStream {
    type Item = Result<WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some((bytes, _))) = &polled {
            self.bytes.fetch_sub(*bytes, Ordering::Relaxed);
        }
        polled.map(|queued| queued.map(|(_, answer)| answer))
    }
}

impl ChannelOutbox {
    /// A new outbox, and the receiving half the response stream reads.
    pub fn channel() -> (ChannelOutbox, OutboxStream) {
        let (tx, rx) = mpsc::channel(WATCH_STREAM_QUEUE + 1);
        let bytes = Arc::new(AtomicUsize::new(0));
        let outbox = ChannelOutbox {
            tx,
            bytes: bytes.clone(),
        };
        (outbox, OutboxStream { rx, bytes })
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl Outbox for ChannelOutbox {
    fn offer(&mut self, answer: WatchResponse, bytes: usize) -> Offer {
        if self.tx.is_closed() {
            return Offer::Closed;
        }
        let room = self.room();
        if room.answers == 0 || (bytes > room.bytes && room != self.capacity()) {
            return Offer::Full(answer);
        }
        // Counted before it can be taken off, so the count never goes below zero.
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        match self.tx.try_send((bytes, Ok(answer))) {
            Ok(()) => Offer::Queued,
            Err(e) => {
                self.bytes.fetch_sub(bytes, Ordering::Relaxed);
                match e {
                    mpsc::error::TrySendError::Full((_, Ok(answer))) => Offer::Full(answer),
                    _ => Offer::Closed,
                }
            }
        }
    }

    fn room(&self) -> Room {
        Room {
            answers: self.tx.capacity().saturating_sub(1),
            bytes: WATCH_STREAM_BYTES.saturating_sub(self.bytes.load(Ordering::Relaxed)),
        }
    }

    fn capacity(&self) -> Room {
        Room {
            answers: self.tx.max_capacity().saturating_sub(1),
            bytes: WATCH_STREAM_BYTES,
        }
    }

    fn end(&mut self, why: StreamEnd) {
        let status = match why {
            StreamEnd::Overflow { backlog } => {
                let reason = format!(
                    "etcdserver: watch stream ended: more than {backlog} answers to its requests waited for the client to read them"
                );
                tracing::warn!("{reason}");
                Status::resource_exhausted(reason)
            }
            StreamEnd::Stopping => etcd_api::EtcdError::Stopped.status(),
        };
        let _ = self.tx.try_send((0, Err(status)));
    }
}

/// Where the hub reads from the StorageActor.
pub struct HubStorage {
    pub history: Recipient<ReadHistory>,
    pub revision: Recipient<GetRevision>,
    pub prev_kv: Recipient<WantPrevKv>,
}

/// The watch hub of one member (see the module docs).
pub struct WatchHubActor {
    hub: WatchHub<ChannelOutbox>,
    storage: HubStorage,
    /// What the StorageActor was last told about `prev_kv`.
    prev_kv_told: bool,
    /// How often watchers that asked for them get progress notices.
    progress_interval: Duration,
    /// The fed revision at the last sync tick: when a whole tick went by without a live
    /// batch, the hub asks whether the store has moved on anyway (its last batches dropped).
    fed_at_tick: i64,
}

impl WatchHubActor {
    /// A hub whose answers carry `header` (cluster and member id), for a store at `revision`.
    pub fn new(
        header: ResponseHeader,
        revision: i64,
        storage: HubStorage,
        progress_interval: Duration,
    ) -> WatchHubActor {
        let limits = HubLimits {
            max_backlog: MAX_CONTROL_BACKLOG,
            fragment_bytes: crate::grpc::etcd::MAX_REQUEST_BYTES,
            catch_up_room: CATCH_UP_ROOM,
        };
        WatchHubActor {
            hub: WatchHub::new(header, limits, revision),
            storage,
            prev_kv_told: false,
            progress_interval,
            fed_at_tick: revision,
        }
    }

    /// A dropped batch shows as a gap only when a later one comes: after a quiet tick, the
    /// store's revision says whether the last batches were dropped, and if they were the
    /// hub is fed the gap, so its watchers catch up from history instead of waiting for the
    /// next write.
    fn check_for_a_dropped_tail(&mut self, ctx: &mut Context<Self>) {
        let quiet = self.hub.fed() == self.fed_at_tick;
        self.fed_at_tick = self.hub.fed();
        if !quiet || self.hub.watcher_count() == 0 {
            return;
        }
        self.storage
            .revision
            .send(GetRevision)
            .into_actor(self)
            .map(|answer, act, ctx| {
                if let Ok(revision) = answer {
                    if revision > act.hub.fed() {
                        act.hub.feed(LiveBatch {
                            after: revision,
                            revision,
                            events: Vec::new(),
                            with_prev: true,
                        });
                        act.pump(ctx);
                    }
                }
            })
            .spawn(ctx);
    }

    /// Logs what the hub did over the last [`STATS_INTERVAL`], if it has watchers or did
    /// anything: a member's watch load at a glance.
    fn log_counters(&mut self) {
        let c: HubCounters = self.hub.take_counters();
        if self.hub.watcher_count() == 0 && c == HubCounters::default() {
            return;
        }
        tracing::info!(
            watchers = self.hub.watcher_count(),
            unsynced = self.hub.unsynced_count(),
            streams = self.hub.stream_count(),
            live_batches = c.live_batches,
            gaps = c.gaps,
            live_answers = c.live_answers,
            history_batches = c.history_batches,
            history_events = c.history_events,
            history_answers = c.history_answers,
            events_sent = c.events_sent,
            became_unsynced = c.unsynced,
            "watch hub, last {} s",
            STATS_INTERVAL.as_secs()
        );
    }

    /// After every change: tells the StorageActor whether `prev_kv` is wanted.
    fn tell_prev_kv(&mut self) {
        let wanted = self.hub.wants_prev_kv();
        if wanted != self.prev_kv_told {
            self.prev_kv_told = wanted;
            // The StorageActor's mailbox is unbounded: this always arrives.
            self.storage.prev_kv.do_send(WantPrevKv(wanted));
        }
    }

    /// Starts the history read the hub wants, if any. Called at each sync tick, for a new
    /// watcher, and after a history batch that left a backlog — not after every live batch,
    /// which would make every write a read of the log while any watcher lags.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        self.tell_prev_kv();
        let Some(read) = self.hub.history_wanted() else {
            return;
        };
        self.storage
            .history
            .send(ReadHistory {
                from: read.from,
                with_prev: read.with_prev,
            })
            .into_actor(self)
            .map(|answer, act, ctx| match answer {
                Ok(Ok(history)) => {
                    if act.hub.feed_history(history) {
                        act.pump(ctx);
                    }
                }
                // Tried again at the next sync tick, not at once: a failing read would
                // otherwise spin.
                Ok(Err(e)) => {
                    tracing::warn!("reading history for watchers: {e}");
                    act.hub.history_failed();
                }
                Err(e) => {
                    tracing::warn!("reading history for watchers: {e}");
                    act.hub.history_failed();
                }
            })
            .spawn(ctx);
    }
}

impl Actor for WatchHubActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(HUB_MAILBOX);
        ctx.run_interval(SYNC_INTERVAL, |act, ctx| {
            act.hub.sweep(|outbox| outbox.is_closed());
            act.hub.flush();
            act.check_for_a_dropped_tail(ctx);
            act.pump(ctx);
        });
        ctx.run_interval(self.progress_interval, |act, _| {
            act.hub.progress_tick();
        });
        ctx.run_interval(STATS_INTERVAL, |act, _| act.log_counters());
    }
}

impl Handler<LiveEvents> for WatchHubActor {
    type Result = ();
    fn handle(&mut self, msg: LiveEvents, _: &mut Self::Context) {
        self.hub.set_term(msg.term);
        self.hub.feed(msg.batch);
        self.tell_prev_kv();
    }
}

impl Handler<EndWatchStreams> for WatchHubActor {
    type Result = ();
    fn handle(&mut self, _: EndWatchStreams, _: &mut Self::Context) {
        self.hub.end_all();
    }
}

impl Handler<OpenWatchStream> for WatchHubActor {
    type Result = MessageResult<OpenWatchStream>;
    fn handle(&mut self, msg: OpenWatchStream, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.hub.open(msg.outbox))
    }
}

impl Handler<CloseWatchStream> for WatchHubActor {
    type Result = ();
    fn handle(&mut self, msg: CloseWatchStream, ctx: &mut Self::Context) {
        self.hub.close(msg.stream);
        self.pump(ctx);
    }
}

impl Handler<WatchStreamRequest> for WatchHubActor {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, msg: WatchStreamRequest, ctx: &mut Self::Context) -> Self::Result {
        let stream: StreamId = msg.stream;
        match msg.request {
            RequestUnion::CreateRequest(req) => Box::pin(
                self.storage
                    .revision
                    .send(GetRevision)
                    .into_actor(self)
                    .map(move |current, act, ctx| {
                        // Without the StorageActor the node is stopping; the stream goes
                        // with it.
                        if let Ok(current) = current {
                            act.hub.create(stream, &req, current);
                            act.pump(ctx);
                        }
                    }),
            ),
            RequestUnion::CancelRequest(req) => {
                self.hub.cancel(stream, req.watch_id);
                self.pump(ctx);
                Box::pin(fut::ready(()))
            }
            RequestUnion::ProgressRequest(_) => {
                self.hub.request_progress(stream);
                Box::pin(fut::ready(()))
            }
        }
    }
}

/// Starts the hub on an arbiter of its own; the arbiter is stopped at node shutdown.
pub fn start_hub(actor: WatchHubActor) -> (Addr<WatchHubActor>, Arbiter) {
    let arbiter = Arbiter::new();
    let addr = WatchHubActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
    (addr, arbiter)
}
