//! etcd's Watch, as one member serves it: the hub that knows every watcher and what it is
//! owed, with no runtime (the `WatchHubActor` is its shell).
//!
//! # The protocol
//!
//! A client opens a **stream** and sends create, cancel and progress requests on it; each
//! create makes a **watcher** of a key or a range, from a start revision (0: the revision
//! after the current one). The member answers `created` first, then sends the watcher every
//! event of its keys from its start revision on, in revision order, all the events of one
//! revision in one answer (several revisions may share one), each event once. A start
//! revision below the compact revision gets `created`, then `canceled` with
//! `compact_revision` set. Filters drop puts or deletes; `prev_kv` adds the key as it was
//! before each event; `progress_notify` asks for an empty answer now and then while
//! nothing happens; a progress request asks once, for the whole stream.
//!
//! # Where the events come from
//!
//! The events are the member's own applied history, so a watch goes on unchanged through a
//! leader change: the hub never talks to Raft.
//! - **Live**: after every apply batch, the state machine hands the hub that batch's events
//!   ([`LiveBatch`]), and the hub moves its **fed** revision to the batch's. Handing them
//!   over never waits: if the hub's mailbox is full, the batch is dropped, and the next one
//!   shows the gap (its `after` is beyond the fed revision).
//! - **History**: a watcher that starts in the past, or fell behind, is caught up from the
//!   revision log in bounded batches ([`crate::mvcc::history`]), one read at a time for all
//!   such watchers together, from the smallest revision any of them needs.
//!
//! # Synced and unsynced
//!
//! Each watcher has a revision `next`, and is one of:
//! - **synced**: it has been sent every event it wants from `next` up to the fed revision;
//!   live batches are matched against it (single keys by a map, ranges one by one) and it is
//!   sent what it wants of them at once;
//! - **unsynced**: it has been sent every event it wants before `next`; history batches are
//!   matched against it, and it becomes synced when `next` passes the fed revision.
//!
//! A synced watcher becomes unsynced, owed everything from its first unsent revision,
//! when its stream cannot take an answer now, when a gap shows, or when it wants `prev_kv`
//! and a live batch came without it. That is how a slow client is contained: the hub never
//! waits for it and never holds its events; they stay in the revision log until the client
//! reads again, and only compaction can take them away (then the watcher is canceled with
//! the compact revision, as etcd does).
//!
//! # Bounded memory
//!
//! A stream's outbox holds a fixed number of answers and a fixed number of bytes of them
//! ([`Room`]); an answer is at most one apply batch's events or one history batch, and one
//! larger than the byte bound goes only into an empty outbox. Answers to the client's own requests (created,
//! canceled, progress) wait in a backlog while the outbox is full, and no event goes out on
//! the stream while any wait, so `created` always comes before the watcher's events; a
//! backlog over its limit means the client sends requests and reads nothing, and ends the
//! stream with an error.
//!
//! # Invariants
//!
//! - Every watcher is in exactly one of the synced sets or the unsynced set.
//! - The fed revision never goes back; a synced watcher's `next` is at most one past it
//!   unless it asked to start later.
//! - Every event a watcher is sent has a revision at least its `next` at the time, and
//!   `next` only grows: nothing is sent twice, and nothing between two answers is skipped
//!   (a watcher only moves `next` past revisions it was sent, or that a history batch or a
//!   live batch covered completely).
//! - A history batch gives no event past the fed revision (the rest comes live), answers'
//!   headers carry the newest revision the hub has seen, and a progress answer or notice
//!   goes out only once the fed revision has caught up with it: headers never go back, and a
//!   progress revision never claims an event not yet sent.
//! - A batch dropped at the end of a burst shows as a gap at the next quiet sync tick (the
//!   actor asks the store's revision), not only when another batch comes.

pub mod hub;
pub mod watcher;

#[cfg(test)]
mod tests;

pub use hub::{
    HistoryRead, HubCounters, HubLimits, LiveBatch, Offer, Outbox, Room, StreamEnd, StreamId,
    WatchHub,
};
pub use watcher::{Keys, Watcher};
