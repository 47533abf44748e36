//! `Proposals`: the writes a node has proposed and not yet answered, and the rule that settles
//! each of them. A plain struct, no runtime: the `ClientApiActor` feeds it events and sends the
//! answers it returns; the unit tests below and the in-process cluster tests drive it directly.
//!
//! # How a write is settled
//! Each write gets a sequence number (`submit`), which the proposer puts in its `LogCommand`
//! as `(origin_node, origin_seq)`; the RaftActor then answers where raft-rs placed it
//! (`placed`, a [`LogId`]). Every client sees exactly one of:
//!
//! - **applied**: an applied entry carries this node's id and the write's sequence number.
//!   Matched by the tag, not the index, so it works whatever order the placement and the apply
//!   notification arrive in.
//! - **certainly not applied** (`NotApplied`, safe to retry): the index the write was placed at
//!   is applied and the entry there was not the write — a new leader overwrote it, and an
//!   overwritten entry never comes back. Also when the placement arrives after its index was
//!   applied by another entry.
//! - **outcome unknown** (`OutcomeUnknown`): this node stopped leading before the write was
//!   applied (a new leader may still commit it, or not), or the node is stopping.
//! - **refused**: the RaftActor did not place it (not the leader, overloaded); nothing was
//!   appended.
//!
//! A leader that *handed over* leadership (shutdown) sent its whole log to its successor, so
//! its pending writes stay pending and are settled by the entries that arrive from the new
//! leader: applied, or seen overwritten.
//!
//! # Overload and deadlines
//! At most `max_pending` writes wait. The caller's deadline is kept by the gRPC layer, which
//! gives up by dropping its end of the reply ([`ReplyHandle::is_closed`]); such a write is
//! forgotten, without an answer, when the table is full and room is needed. A write still
//! refused then gets `Overloaded` (`RESOURCE_EXHAUSTED`).

use std::collections::{BTreeMap, HashMap};

use crate::actors::messages::WriteResult;
use crate::consensus::LogId;
use crate::error::{Error, Result};
#[cfg(test)]
use crate::state_machine::WriteResponse;
use crate::state_machine::{AppliedEntry, CommandOutcome, ProposalTag};
#[cfg(test)]
use etcd_api::etcdserverpb::DeleteRangeResponse;

/// Why a write overwritten by another leader's entry is not applied.
const OVERWRITTEN: &str = "a new leader overwrote the entry";
/// Why a write is in doubt when a snapshot from the leader replaced the log around it.
const COVERED_BY_SNAPSHOT: &str = "a snapshot from the leader replaced this node's log past \
                                   the write's entry; it may or may not have taken effect";
/// Why a write is in doubt once its leader is deposed.
const LEADERSHIP_LOST: &str =
    "this node lost leadership before the write was applied; it may or may not take effect";
/// Why a write is in doubt when the node stops.
const SHUTTING_DOWN: &str = "the node is shutting down";

/// Where an answer goes: the sending half of a reply channel, or anything a test uses instead.
pub trait ReplyHandle {
    /// The caller gave up waiting (its deadline passed) and will read no answer.
    fn is_closed(&self) -> bool;
}

/// An answer to send: the write's reply handle and its outcome.
pub type WriteAnswer<R> = (R, Result<WriteResult>);

/// A write waiting to be settled.
struct Pending<R> {
    reply: R,
    /// Where raft-rs placed the entry, once the RaftActor has said.
    placed: Option<LogId>,
}

/// The writes this node proposed and has not answered, by sequence number and by index.
///
/// Invariants: every write in `by_index` is in `pending` with that placement; every index in
/// `by_index` is above `applied` (an index at or below it is settled the moment it is seen).
pub struct Proposals<R> {
    /// This node's id: applied entries tagged with another origin are not ours.
    node_id: u64,
    /// Most writes waiting at once; at it, writes whose caller gave up are forgotten to make
    /// room, and if none did a new write is refused.
    max_pending: usize,
    /// The sequence number the next write gets: it starts at `first_seq` and only counts up,
    /// so no two writes of a run share one.
    next_seq: u64,
    /// Waiting writes by sequence number.
    pending: HashMap<u64, Pending<R>>,
    /// Sequence number of the waiting write placed at each index.
    by_index: BTreeMap<u64, u64>,
    /// Highest applied index reported.
    applied: u64,
}

impl<R: ReplyHandle> Proposals<R> {
    /// An empty table for node `node_id` holding at most `max_pending` writes, numbering them
    /// from `first_seq` (random in a node, so a restart never meets the numbers of an earlier
    /// run still in the log).
    pub fn new(node_id: u64, max_pending: usize, first_seq: u64) -> Proposals<R> {
        Proposals {
            node_id,
            max_pending,
            next_seq: first_seq,
            pending: HashMap::new(),
            by_index: BTreeMap::new(),
            applied: 0,
        }
    }

    /// Number of writes waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no write is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// A new write: records it and returns the sequence number to tag its command with. When
    /// `max_pending` writes wait, those whose caller gave up are forgotten first; if none did,
    /// the write is refused and its reply handed back with the error to send.
    pub fn submit(&mut self, reply: R) -> std::result::Result<u64, (R, Error)> {
        if self.pending.len() >= self.max_pending {
            self.forget_abandoned();
            if self.pending.len() >= self.max_pending {
                let e = Error::Overloaded(format!(
                    "{} writes are already in flight on this node",
                    self.max_pending
                ));
                return Err((reply, e));
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(
            seq,
            Pending {
                reply,
                placed: None,
            },
        );
        Ok(seq)
    }

    /// Drops the writes whose caller gave up; nobody is waiting for their answer.
    fn forget_abandoned(&mut self) {
        let closed: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.reply.is_closed())
            .map(|(seq, _)| *seq)
            .collect();
        for seq in closed {
            if let Some(Pending {
                placed: Some(at), ..
            }) = self.pending.remove(&seq)
            {
                self.by_index.remove(&at.index);
            }
        }
    }

    /// The RaftActor appended write `seq` at `at`. If that index is already applied, the entry
    /// applied there was another one (ours would have been matched by its tag): not applied.
    /// Nothing happens for a write already settled (applied before its placement arrived, or
    /// failed meanwhile).
    pub fn placed(&mut self, seq: u64, at: LogId) -> Option<WriteAnswer<R>> {
        let p = self.pending.get_mut(&seq)?;
        if at.index <= self.applied {
            let p = self.pending.remove(&seq)?;
            return Some((p.reply, Err(Error::NotApplied(OVERWRITTEN.into()))));
        }
        p.placed = Some(at);
        self.by_index.insert(at.index, seq);
        None
    }

    /// The RaftActor refused to append write `seq`: it fails with `error`.
    pub fn refused(&mut self, seq: u64, error: Error) -> Option<WriteAnswer<R>> {
        let p = self.pending.remove(&seq)?;
        Some((p.reply, Err(error)))
    }

    /// The state machine restored a snapshot from the leader up to `index` (a node that
    /// handed leadership over keeps its writes pending, and may be sent one). The entries it
    /// covers are never reported one by one, so a write placed at or below it cannot be told
    /// applied or overwritten: it fails as outcome unknown — never "not applied", which would
    /// invite a retry of a write that may be in the snapshot.
    pub fn restored(&mut self, index: u64) -> Vec<WriteAnswer<R>> {
        let covered: Vec<u64> = self
            .by_index
            .range(..=index)
            .map(|(index, _)| *index)
            .collect();
        let mut answers = Vec::new();
        for at in covered {
            if let Some(seq) = self.by_index.remove(&at) {
                if let Some(p) = self.pending.remove(&seq) {
                    let e = Error::OutcomeUnknown(COVERED_BY_SNAPSHOT.into());
                    answers.push((p.reply, Err(e)));
                }
            }
        }
        self.applied = self.applied.max(index);
        answers
    }

    /// The state machine applied `entries`, reaching `applied_index`. Our entries answer their
    /// writes with what they did; then every write still placed at an index now applied was
    /// overwritten: not applied.
    pub fn applied(
        &mut self,
        entries: impl IntoIterator<Item = AppliedEntry>,
        applied_index: u64,
    ) -> Vec<WriteAnswer<R>> {
        let mut answers = Vec::new();
        for e in entries {
            let Some(ProposalTag { node, seq }) = e.origin else {
                continue;
            };
            if node != self.node_id {
                continue;
            }
            let Some(p) = self.pending.remove(&seq) else {
                continue;
            };
            if let Some(at) = p.placed {
                self.by_index.remove(&at.index);
            }
            let result = match e.outcome {
                CommandOutcome::Rejected(why) => Err(Error::InvalidArgument(why)),
                CommandOutcome::Failed(why) => Err(Error::Etcd(why)),
                CommandOutcome::Done(response) => Ok(WriteResult {
                    index: e.index,
                    term: e.term,
                    response: Some(response),
                }),
                CommandOutcome::Noop => Ok(WriteResult {
                    index: e.index,
                    term: e.term,
                    response: None,
                }),
            };
            answers.push((p.reply, result));
        }
        self.applied = self.applied.max(applied_index);
        let overwritten: Vec<u64> = self
            .by_index
            .range(..=self.applied)
            .map(|(index, _)| *index)
            .collect();
        for index in overwritten {
            if let Some(seq) = self.by_index.remove(&index) {
                if let Some(p) = self.pending.remove(&seq) {
                    answers.push((p.reply, Err(Error::NotApplied(OVERWRITTEN.into()))));
                }
            }
        }
        answers
    }

    /// This node stopped leading. A deposed leader may never learn whether its writes commit:
    /// every one fails as outcome unknown. One that `handed_over` sent its log to the new
    /// leader: its writes stay, to be settled by the entries it applies from there.
    pub fn stopped_leading(&mut self, handed_over: bool) -> Vec<WriteAnswer<R>> {
        if handed_over {
            return Vec::new();
        }
        self.fail_all(LEADERSHIP_LOST)
    }

    /// The node is stopping: every waiting write fails as outcome unknown.
    pub fn shutting_down(&mut self) -> Vec<WriteAnswer<R>> {
        self.fail_all(SHUTTING_DOWN)
    }

    fn fail_all(&mut self, why: &str) -> Vec<WriteAnswer<R>> {
        self.by_index.clear();
        self.pending
            .drain()
            .map(|(_, p)| (p.reply, Err(Error::OutcomeUnknown(why.to_string()))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// Writes a table here holds at most.
    const MAX_PENDING: usize = 3;
    /// This node's id.
    const ME: u64 = 1;
    /// Another node's id.
    const OTHER: u64 = 2;
    const FIRST_SEQ: u64 = 100;

    /// A caller, by name, who may give up waiting.
    #[derive(Debug)]
    struct Caller {
        name: &'static str,
        gone: Rc<Cell<bool>>,
    }

    impl ReplyHandle for Caller {
        fn is_closed(&self) -> bool {
            self.gone.get()
        }
    }

    /// A caller that waits.
    fn caller(name: &'static str) -> Caller {
        Caller {
            name,
            gone: Rc::default(),
        }
    }

    fn table() -> Proposals<Caller> {
        Proposals::new(ME, MAX_PENDING, FIRST_SEQ)
    }

    /// Submits a write for `name`, which must be admitted; returns its sequence number.
    fn submit(p: &mut Proposals<Caller>, name: &'static str) -> u64 {
        p.submit(caller(name))
            .unwrap_or_else(|(_, e)| panic!("{name} refused: {e}"))
    }

    fn at(index: u64, term: u64) -> LogId {
        LogId { index, term }
    }

    /// An applied entry at `index` in `term` tagged (node, seq), that set a key.
    fn set(index: u64, term: u64, (node, seq): (u64, u64)) -> AppliedEntry {
        AppliedEntry {
            index,
            term,
            origin: Some(ProposalTag { node, seq }),
            outcome: CommandOutcome::Done(WriteResponse::Put(Default::default())),
        }
    }

    /// A new leader's empty entry at `index` in `term`.
    fn noop(index: u64, term: u64) -> AppliedEntry {
        AppliedEntry {
            index,
            term,
            origin: None,
            outcome: CommandOutcome::Noop,
        }
    }

    /// Answers as (caller, what the client is told), in the order they came.
    fn show(answers: impl IntoIterator<Item = WriteAnswer<Caller>>) -> Vec<(&'static str, String)> {
        answers
            .into_iter()
            .map(|(c, r)| {
                let told = match r {
                    Ok(w) if w.deleted() > 0 => {
                        format!("applied at {}/{}, existed", w.index, w.term)
                    }
                    Ok(w) => format!("applied at {}/{}", w.index, w.term),
                    Err(e) => e.to_string(),
                };
                (c.name, told)
            })
            .collect()
    }

    /// Like [`show`], sorted by caller: for answers given in no particular order.
    fn show_sorted(answers: Vec<WriteAnswer<Caller>>) -> Vec<(&'static str, String)> {
        let mut shown = show(answers);
        shown.sort();
        shown
    }

    /// Sequence numbers count up from the first one given.
    #[test]
    fn writes_are_numbered_consecutively_from_the_first_sequence() {
        let mut p = table();
        assert_eq!(submit(&mut p, "a"), FIRST_SEQ);
        assert_eq!(submit(&mut p, "b"), FIRST_SEQ + 1);
        assert_eq!(p.len(), 2);
    }

    /// Placed, then applied: the write is answered with the index and term of its entry.
    #[test]
    fn placed_then_applied_answers_the_entry() {
        let mut p = table();
        let a = submit(&mut p, "a");
        assert!(p.placed(a, at(5, 2)).is_none());
        assert_eq!(
            show(p.applied(vec![noop(4, 2), set(5, 2, (ME, a))], 5)),
            [("a", "applied at 5/2".into())]
        );
        assert!(p.is_empty());
    }

    /// Applied before placed: the tag alone answers the write; the late placement, nothing.
    #[test]
    fn applied_before_placed_is_answered_once_by_its_tag() {
        let mut p = table();
        let a = submit(&mut p, "a");
        assert_eq!(
            show(p.applied(vec![set(5, 2, (ME, a))], 5)),
            [("a", "applied at 5/2".into())]
        );
        assert!(p.placed(a, at(5, 2)).is_none());
        assert!(p.is_empty());
    }

    /// The placement arrives after another entry was applied at its index: not applied.
    #[test]
    fn placed_at_an_index_another_entry_already_applied_is_not_applied() {
        let mut p = table();
        let a = submit(&mut p, "a");
        assert!(p.applied(vec![noop(5, 3)], 5).is_empty());
        assert_eq!(
            show(p.placed(a, at(5, 2))),
            [("a", "not applied: a new leader overwrote the entry".into())]
        );
        assert!(p.is_empty());
    }

    /// A new leader's entry applied at the write's index: not applied; later writes wait on.
    #[test]
    fn an_index_overwritten_by_a_new_leader_is_not_applied() {
        let mut p = table();
        let a = submit(&mut p, "a");
        let b = submit(&mut p, "b");
        p.placed(a, at(5, 2));
        p.placed(b, at(7, 2));
        assert_eq!(
            show(p.applied(vec![noop(5, 3), noop(6, 3)], 6)),
            [("a", "not applied: a new leader overwrote the entry".into())]
        );
        assert_eq!(p.len(), 1);
    }

    /// An entry proposed by another node with the same sequence number is not ours.
    #[test]
    fn another_nodes_entry_with_the_same_sequence_answers_nothing() {
        let mut p = table();
        let a = submit(&mut p, "a");
        assert!(p.applied(vec![set(3, 1, (OTHER, a))], 3).is_empty());
        assert_eq!(p.len(), 1);
    }

    /// A delete says whether the key existed; a command the state machine rejected is invalid.
    #[test]
    fn applied_outcomes_reach_the_client() {
        let mut p = table();
        let del = submit(&mut p, "del");
        let bad = submit(&mut p, "bad");
        let deleted = AppliedEntry {
            outcome: CommandOutcome::Done(WriteResponse::DeleteRange(DeleteRangeResponse {
                deleted: 1,
                ..Default::default()
            })),
            ..set(8, 4, (ME, del))
        };
        let rejected = AppliedEntry {
            outcome: CommandOutcome::Rejected("command has no operation".into()),
            ..set(9, 4, (ME, bad))
        };
        assert_eq!(
            show(p.applied(vec![deleted, rejected], 9)),
            [
                ("del", "applied at 8/4, existed".into()),
                ("bad", "invalid argument: command has no operation".into()),
            ]
        );
    }

    /// A snapshot restored past a pending write's index leaves its fate unknown: it fails as
    /// outcome unknown, not "not applied"; a write placed after the snapshot stays pending.
    #[test]
    fn a_write_covered_by_a_restored_snapshot_has_an_unknown_outcome() {
        let mut p = table();
        let a = submit(&mut p, "a");
        let b = submit(&mut p, "b");
        assert!(p.placed(a, at(5, 2)).is_none());
        assert!(p.placed(b, at(9, 2)).is_none());
        let told = show(p.restored(7));
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].0, "a");
        assert!(told[0].1.starts_with("outcome unknown"), "{}", told[0].1);
        assert_eq!(
            p.len(),
            1,
            "b, placed after the snapshot, waits for its entry"
        );
    }

    /// The RaftActor refuses the proposal: the write fails with its error.
    #[test]
    fn a_refused_proposal_fails_with_the_raft_error() {
        let mut p = table();
        let a = submit(&mut p, "a");
        let e = Error::Overloaded("60000 committed entries are waiting to be applied".into());
        assert_eq!(
            show(p.refused(a, e)),
            [(
                "a",
                "overloaded: 60000 committed entries are waiting to be applied".into()
            )]
        );
        assert!(p.is_empty());
    }

    /// Leadership lost: every waiting write is unknown, placed or not, and is answered once.
    #[test]
    fn leadership_lost_makes_every_waiting_write_unknown() {
        let mut p = table();
        let a = submit(&mut p, "a");
        let b = submit(&mut p, "b");
        p.placed(a, at(5, 2));
        let unknown = "outcome unknown: this node lost leadership before the write was applied; \
                       it may or may not take effect";
        assert_eq!(
            show_sorted(p.stopped_leading(false)),
            [("a", unknown.into()), ("b", unknown.into())]
        );
        assert!(p.applied(vec![set(5, 2, (ME, a))], 5).is_empty());
        assert!(p.placed(b, at(6, 2)).is_none());
    }

    /// Handed over: writes keep waiting, then are settled by what applies: applied, overwritten.
    #[test]
    fn handed_over_keeps_waiting_writes_until_applied_or_overwritten() {
        let mut p = table();
        let a = submit(&mut p, "a");
        let b = submit(&mut p, "b");
        p.placed(a, at(5, 2));
        p.placed(b, at(6, 2));
        assert!(p.stopped_leading(true).is_empty());
        assert_eq!(
            show(p.applied(vec![set(5, 2, (ME, a)), noop(6, 3)], 6)),
            [
                ("a", "applied at 5/2".into()),
                ("b", "not applied: a new leader overwrote the entry".into()),
            ]
        );
    }

    /// At the configured limit a write is refused, with the exact text clients see today.
    #[test]
    fn overload_refuses_past_the_limit() {
        let mut p = table();
        for name in ["a", "b", "c"] {
            submit(&mut p, name);
        }
        let (refused, e) = p.submit(caller("d")).expect_err("over the limit");
        assert_eq!(refused.name, "d");
        assert_eq!(
            e.to_string(),
            "overloaded: 3 writes are already in flight on this node"
        );
        assert!(matches!(e, Error::Overloaded(_)));
        assert_eq!(p.len(), MAX_PENDING);
    }

    /// Deadline passed: the abandoned write makes room when full and is never answered.
    #[test]
    fn a_write_past_its_deadline_makes_room_and_is_never_answered() {
        let mut p = table();
        let a = p.submit(caller("a")).expect("admitted");
        let late = caller("late");
        let gone = late.gone.clone();
        let l = p.submit(late).expect("admitted");
        submit(&mut p, "b");
        p.placed(l, at(5, 2));
        gone.set(true);
        let c = submit(&mut p, "c");
        assert_eq!(p.len(), MAX_PENDING);
        p.placed(a, at(4, 2));
        p.placed(c, at(6, 2));
        assert_eq!(
            show(p.applied(vec![set(4, 2, (ME, a)), set(5, 2, (ME, l))], 5)),
            [("a", "applied at 4/2".into())]
        );
    }

    /// The node stops: every waiting write's outcome is unknown.
    #[test]
    fn shutting_down_makes_every_waiting_write_unknown() {
        let mut p = table();
        submit(&mut p, "a");
        assert_eq!(
            show(p.shutting_down()),
            [("a", "outcome unknown: the node is shutting down".into())]
        );
        assert!(p.is_empty());
    }
}
