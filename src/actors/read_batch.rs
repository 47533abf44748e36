//! `ReadBatch`: linearizable reads waiting for a read index, batched so one quorum round
//! serves many. A plain struct, no runtime: the `RaftActor` feeds it events and sends the
//! answers it returns; the unit tests below drive it directly.
//!
//! # How a read gets its index
//! Reads arriving on the leader are `queue`d. At the next Ready loop, once the leader may ask
//! (`RaftNode::can_read_index`: it has committed an entry of its own term), `issue` asks
//! raft-rs for **one** read index for the whole queue, under a fresh context — this node's id
//! and a counter, 8 bytes big-endian each — and the queue becomes a batch waiting under that
//! context. The id matters once followers ask too: the leader keeps one pending request per
//! context and drops a second with the same bytes, so two members' contexts must never meet. raft-rs confirms
//! leadership with a quorum and hands back a `ReadState` carrying the context; `completed`
//! gives every read of that batch its index. When the node stops leading, every read still
//! queued or waiting fails `NotLeader`: a deposed leader may never hear from a quorum again,
//! and raft-rs forgets its requests.
//!
//! A follower (serving etcd's API) asks the same way; raft-rs sends the request to the leader
//! and the answer comes back as a `ReadState` here. That request can be lost — a leader that
//! has not yet committed an entry of its term drops it, and so does a dropped message — so a
//! batch still waiting after [`READ_INDEX_RETRY_TICKS`] is asked for again under the same
//! context (a second answer finds no batch and is ignored). When the leader changes, the
//! follower's reads fail `NotLeader` as a deposed leader's do.
//!
//! Overflow policy: at most [`MAX_PENDING_READ_INDEXES`] reads queued and waiting together;
//! more are refused at once with `Overloaded` (`RESOURCE_EXHAUSTED`).

use std::collections::HashMap;

use raft::ReadState;

use crate::error::{Error, Result};

/// Most read-index requests queued or waiting for a quorum, counted in requests; more are
/// refused with `RESOURCE_EXHAUSTED`.
pub const MAX_PENDING_READ_INDEXES: usize = 8_192;

/// Ticks a batch waits for its read index before it is asked for again: 5 ticks, half a
/// second at the default tick, well over a heartbeat round trip on a healthy cluster.
pub const READ_INDEX_RETRY_TICKS: u32 = 5;

/// A batch asked for and not yet answered.
struct Waiting<R> {
    replies: Vec<R>,
    /// Ticks since it was last asked for.
    ticks: u32,
}

/// An answer to send: the read's reply handle and the index it must wait for.
pub type IndexAnswer<R> = (R, Result<u64>);

/// Reads waiting for a read index: those not yet asked for, and batches asked for by context.
///
/// Invariant: `count` is the number of replies in `queued` and `waiting` together.
pub struct ReadBatch<R> {
    /// Reads that arrived since the last read index was asked for.
    queued: Vec<R>,
    /// Batches asked for and waiting for a quorum, by context.
    waiting: HashMap<u64, Waiting<R>>,
    /// Replies held, queued or waiting.
    count: usize,
    /// This node's id, the first half of every context.
    node_id: u64,
    /// The counter of the next read index asked for, the second half of its context.
    next_ctx: u64,
}

/// The context bytes of read-index request `counter` of node `node_id`.
fn context(node_id: u64, counter: u64) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(16);
    ctx.extend_from_slice(&node_id.to_be_bytes());
    ctx.extend_from_slice(&counter.to_be_bytes());
    ctx
}

impl<R> ReadBatch<R> {
    /// No reads waiting, on node `node_id`.
    pub fn new(node_id: u64) -> ReadBatch<R> {
        ReadBatch {
            queued: Vec::new(),
            waiting: HashMap::new(),
            count: 0,
            node_id,
            // A random start, as for command sequence numbers: an answer to a request of an
            // earlier run of this node, still on its way, must not match a batch of this one.
            next_ctx: rand::random::<u64>() >> 1,
        }
    }

    /// Number of reads queued or waiting.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no read is queued or waiting.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// A new read, to be covered by the next read index asked for; refused, its reply handed
    /// back with the error to send, when [`MAX_PENDING_READ_INDEXES`] reads are held already.
    pub fn queue(&mut self, reply: R) -> std::result::Result<(), (R, Error)> {
        if self.count >= MAX_PENDING_READ_INDEXES {
            let e = Error::Overloaded(format!(
                "{MAX_PENDING_READ_INDEXES} reads are already waiting for a quorum"
            ));
            return Err((reply, e));
        }
        self.count += 1;
        self.queued.push(reply);
        Ok(())
    }

    /// Asks for one read index for every queued read, through `read_index` (given the
    /// context); call only when the node may ask. If it refuses, the queued reads fail with its
    /// error. Does nothing when no read is queued.
    pub fn issue(&mut self, read_index: impl FnOnce(Vec<u8>) -> Result<()>) -> Vec<IndexAnswer<R>> {
        if self.queued.is_empty() {
            return Vec::new();
        }
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        let batch = std::mem::take(&mut self.queued);
        match read_index(context(self.node_id, ctx)) {
            Ok(()) => {
                let waiting = Waiting {
                    replies: batch,
                    ticks: 0,
                };
                self.waiting.insert(ctx, waiting);
                Vec::new()
            }
            Err(e) => {
                self.count -= batch.len();
                batch
                    .into_iter()
                    .map(|reply| (reply, Err(clone_not_leader(&e))))
                    .collect()
            }
        }
    }

    /// raft-rs completed a read index: the batch asked for under its context gets its index.
    /// A context this batch did not hand out answers nothing.
    pub fn completed(&mut self, state: &ReadState) -> Vec<IndexAnswer<R>> {
        let ctx = &state.request_ctx;
        let mine = ctx.len() == 16 && ctx[..8] == self.node_id.to_be_bytes();
        let Some(batch) = ctx
            .get(8..16)
            .filter(|_| mine)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
            .and_then(|c| self.waiting.remove(&c))
        else {
            return Vec::new();
        };
        self.count -= batch.replies.len();
        batch
            .replies
            .into_iter()
            .map(|reply| (reply, Ok(state.index)))
            .collect()
    }

    /// One tick passed: every batch that has waited [`READ_INDEX_RETRY_TICKS`] is asked for
    /// again through `read_index`. A refusal changes nothing: the batch keeps waiting, and
    /// fails when the leader changes.
    pub fn tick(&mut self, mut read_index: impl FnMut(Vec<u8>) -> Result<()>) {
        for (ctx, batch) in self.waiting.iter_mut() {
            batch.ticks += 1;
            if batch.ticks >= READ_INDEX_RETRY_TICKS {
                batch.ticks = 0;
                let _ = read_index(context(self.node_id, *ctx));
            }
        }
    }

    /// The node stopped leading, or the leader a follower asked is no longer the leader: every
    /// read, waiting or queued, fails with `not_leader` (the error carrying the leader hint).
    pub fn stopped_leading(&mut self, not_leader: &Error) -> Vec<IndexAnswer<R>> {
        self.count = 0;
        let waiting = self.waiting.drain().flat_map(|(_, batch)| batch.replies);
        waiting
            .chain(self.queued.drain(..))
            .map(|reply| (reply, Err(clone_not_leader(not_leader))))
            .collect()
    }
}

/// A copy of `e` for one more reply: `NotLeader` keeps its hint; anything else (never expected
/// here) becomes `ShuttingDown` with its text.
fn clone_not_leader(e: &Error) -> Error {
    match e {
        Error::NotLeader {
            leader_id,
            leader_addr,
        } => Error::NotLeader {
            leader_id: *leader_id,
            leader_addr: leader_addr.clone(),
        },
        other => Error::ShuttingDown(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads by name; answers as (reader, what it is told), in the order they came.
    fn show(answers: Vec<IndexAnswer<&'static str>>) -> Vec<(&'static str, String)> {
        answers
            .into_iter()
            .map(|(name, r)| match r {
                Ok(index) => (name, format!("index {index}")),
                Err(e) => (name, e.to_string()),
            })
            .collect()
    }

    /// Asks for a read index and records the context it was given.
    fn ask(batch: &mut ReadBatch<&'static str>) -> Vec<u8> {
        let mut asked = None;
        let failed = batch.issue(|ctx| {
            asked = Some(ctx);
            Ok(())
        });
        assert!(failed.is_empty());
        asked.expect("a read index was asked for")
    }

    fn state(ctx: &[u8], index: u64) -> ReadState {
        ReadState {
            index,
            request_ctx: ctx.to_vec(),
        }
    }

    /// The error of a node whose leader is node 2.
    fn not_leader() -> Error {
        Error::NotLeader {
            leader_id: Some(2),
            leader_addr: Some("127.0.0.1:20".into()),
        }
    }

    /// Reads queued together share one read index; each batch is matched by its context.
    #[test]
    fn reads_are_batched_and_matched_by_context() {
        let mut b = ReadBatch::new(1);
        b.queue("a").unwrap();
        b.queue("b").unwrap();
        let first = ask(&mut b);
        b.queue("c").unwrap();
        let second = ask(&mut b);
        assert_ne!(first, second);
        assert_eq!(b.len(), 3);
        assert_eq!(
            show(b.completed(&state(&second, 9))),
            [("c", "index 9".into())]
        );
        assert_eq!(
            show(b.completed(&state(&first, 7))),
            [("a", "index 7".into()), ("b", "index 7".into())]
        );
        assert!(b.is_empty());
    }

    /// Nothing queued asks nothing; a context never handed out, or answered, answers nothing.
    #[test]
    fn only_queued_reads_ask_and_only_known_contexts_answer() {
        let mut b: ReadBatch<&'static str> = ReadBatch::new(1);
        assert!(b.issue(|_| panic!("asked with nothing queued")).is_empty());
        b.queue("a").unwrap();
        let ctx = ask(&mut b);
        assert!(b.completed(&state(b"healthy", 3)).is_empty());
        assert!(b.completed(&state(&[], 3)).is_empty());
        assert_eq!(
            show(b.completed(&state(&ctx, 3))),
            [("a", "index 3".into())]
        );
        assert!(b.completed(&state(&ctx, 3)).is_empty());
    }

    /// Leadership lost: every read, asked for or still queued, fails NotLeader with the hint.
    #[test]
    fn leadership_lost_fails_every_read_with_the_hint() {
        let mut b = ReadBatch::new(1);
        b.queue("asked").unwrap();
        let ctx = ask(&mut b);
        b.queue("queued").unwrap();
        let told = "not the leader; leader is node 2 at 127.0.0.1:20";
        assert_eq!(
            show(b.stopped_leading(&not_leader())),
            [("asked", told.into()), ("queued", told.into())]
        );
        assert!(b.is_empty());
        assert!(b.completed(&state(&ctx, 5)).is_empty());
    }

    /// raft-rs refuses the read index: the queued reads fail with its error and free places.
    #[test]
    fn a_refused_read_index_fails_the_queued_reads() {
        let mut b = ReadBatch::new(1);
        b.queue("a").unwrap();
        assert_eq!(
            show(b.issue(|_| Err(not_leader()))),
            [(
                "a",
                "not the leader; leader is node 2 at 127.0.0.1:20".into()
            )]
        );
        assert!(b.is_empty());
    }

    /// At the limit a read is refused with today's exact text; an answered batch frees places.
    #[test]
    fn reads_past_the_limit_are_refused() {
        let mut b = ReadBatch::new(1);
        for _ in 0..MAX_PENDING_READ_INDEXES {
            b.queue("r").unwrap();
        }
        let (refused, e) = b.queue("one-too-many").expect_err("over the limit");
        assert_eq!(refused, "one-too-many");
        assert!(matches!(e, Error::Overloaded(_)));
        assert_eq!(
            e.to_string(),
            "overloaded: 8192 reads are already waiting for a quorum"
        );
        let ctx = ask(&mut b);
        assert_eq!(b.completed(&state(&ctx, 1)).len(), MAX_PENDING_READ_INDEXES);
        assert!(b.queue("next").is_ok());
    }

    /// A batch still waiting after the retry interval is asked for again under the same
    /// context, and answered once however many answers come back.
    #[test]
    fn a_lost_request_is_asked_for_again_and_answered_once() {
        let mut b = ReadBatch::new(1);
        b.queue("r1").unwrap();
        let ctx = ask(&mut b);
        let mut again = Vec::new();
        for _ in 0..READ_INDEX_RETRY_TICKS - 1 {
            b.tick(|c| {
                again.push(c);
                Ok(())
            });
        }
        assert!(again.is_empty(), "not before the retry interval");
        b.tick(|c| {
            again.push(c);
            Ok(())
        });
        assert_eq!(again, vec![ctx.clone()], "asked again, same context");
        assert_eq!(
            show(b.completed(&state(&ctx, 7))),
            [("r1", "index 7".into())]
        );
        assert!(
            b.completed(&state(&ctx, 8)).is_empty(),
            "the second answer finds nothing"
        );
        assert!(b.is_empty());
    }

    /// Contexts carry the node id: another member's answer with the same counter is not ours.
    #[test]
    fn contexts_of_different_members_never_meet() {
        let mut one = ReadBatch::new(1);
        let mut two: ReadBatch<&'static str> = ReadBatch::new(2);
        one.queue("r1").unwrap();
        two.queue("r2").unwrap();
        let (c1, c2) = (ask(&mut one), ask(&mut two));
        assert_ne!(c1, c2, "same counter, different members");
        assert!(one.completed(&state(&c2, 5)).is_empty());
        assert_eq!(
            show(one.completed(&state(&c1, 5))),
            [("r1", "index 5".into())]
        );
    }
}
