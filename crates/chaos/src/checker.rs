//! A linearizability checker for a key-value store, modelled as one register per key.
//!
//! # What is checked
//!
//! A history is linearizable when every operation can be given a single point in time (its
//! linearization point) between its invocation and its completion, such that performing the
//! operations one by one in the order of those points, on a sequential key-value map that starts
//! empty, gives every answer the clients saw. Failed operations ([`Outcome::Fail`]) are dropped
//! first. An operation with an unknown outcome has no completion (it is +infinity) and its answer
//! is unconstrained, and it may also never take effect at all.
//!
//! # Per-key split
//!
//! Operations on different keys commute, and linearizability is local (Herlihy & Wing: a history
//! is linearizable iff its restriction to each object is), so the history is split by key and each
//! key is checked on its own as a register whose state is `Option<Vec<u8>>`, initially `None`:
//! Get answers the state, Set replaces it, Delete clears it and answers whether it was `Some`,
//! and a compare-and-set replaces it with its new value if it equals the expected one (answering
//! that it succeeded), else leaves it and answers that it failed (and, when the client knows it,
//! what the state was).
//! The search below is exponential in the worst case, but in the number of operations that are
//! concurrent *on one key*, which the split keeps small.
//!
//! # The search (Wing & Gong, with Lowe's optimisations: "WGL", as in Porcupine and Knossos)
//!
//! Every operation with a known outcome becomes two events, a call at its invocation and a
//! return at its completion, and the events are sorted by time into a doubly-linked list behind
//! a head sentinel (the *known list*). On a tie the call goes first, so two operations that merely
//! touch (one completes at the instant the other is invoked) count as concurrent: the checker
//! never reports a violation that depends on the order of equal timestamps.
//!
//! The search walks the list from the front. At a call event it tries to linearize that
//! operation next: if the model accepts it from the current state, the operation is *lifted*
//! (its call and return are unlinked from the list, their own links kept so they can be put back),
//! pushed on a stack together with the state before it, and the walk restarts at the front. At a
//! return event the walk has run out of candidates: that operation completed, so it should have
//! been linearized before anything invoked after it, and it was not. The search backtracks: pops
//! the last linearized operation, *unlifts* it (relinks its two events, dancing-links style, which
//! is exact because lifts and unlifts nest like the stack) and continues from the event after
//! that operation's call, i.e. tries the next candidate at that depth. An empty stack at a return
//! event means no linearization exists.
//!
//! Invariant: the list always holds exactly the events of the operations not yet linearized, in
//! time order, and the candidates tried at each depth are the calls that precede the first
//! return; those are exactly the operations that may come next in real-time order.
//!
//! Lowe's cache: the rest of the search depends only on *which* operations are linearized and on
//! the model state, not on the order they were linearized in. Each configuration (set of
//! linearized operations, state) the search backtracks out of has failed, and is remembered; a
//! step into a remembered configuration is skipped. (Configurations on the current path need no
//! entry: along a path the linearized set only grows.) Sets of known operations are bitsets
//! hashed by Zobrist hashing (XOR of one random word per set bit, updated in O(1) per step), and
//! values are interned to small integers so a state is one `u64`; values that nothing tells
//! apart (no known Get read them, no compare-and-set expects them or saw them when it failed)
//! all share one number, since no answer depends on which of them the state is.
//!
//! # Unknown outcomes
//!
//! An operation with an unknown outcome may take effect at any point after its invocation, with
//! any answer, or never. Never is the same as "after everything else, observed by nobody", so
//! such operations need not be linearized: the search succeeds as soon as every *known* operation
//! is. They have no return event (it would be at +infinity and never force a backtrack) and live
//! in a second list of calls only, the *unknown list*. At each depth the search first tries the
//! known candidates; only when the walk reaches the first return left in the known list does it
//! try the unknown operations invoked by then.
//!
//! Unknown operations are what makes a WGL search blow up (each one that never took effect can
//! be slotted in at every step), so four prunings keep them in check, each sound because the
//! configuration it skips is *dominated*: every way to finish from it is also a way to finish
//! from a configuration the search explores anyway.
//!
//! - Dominance in the cache: with the same known operations linearized and the same state, having
//!   fewer unknown operations linearized is at least as good (the others stay available and
//!   optional). So the cache keeps, per (known set, state), the minimal sets of unknown
//!   operations that failed, and skips a configuration whose unknown set contains one of them.
//! - An unknown operation that would leave the state unchanged (an unknown Get, an unknown
//!   Delete of an absent key, an unknown compare-and-set whose expected value is not the state)
//!   is not tried: the current configuration dominates the result.
//! - Two available unknown operations with the same effect (acting from the same states — any
//!   state for a Set or Delete, the expected one for a compare-and-set — and reaching the same
//!   state) are interchangeable from then on (both stay available for good), so a depth tries
//!   only the first of them. (A Set and a compare-and-set reaching the same state are not: the
//!   Set stays usable from more states.)
//! - After an unknown operation, the next step must be an operation that needs its effect (does
//!   something else from the state it left than from the state before it): one that does the
//!   same leads where it alone led, one depth up, which was tried first. A known one that needs
//!   it fails from the state before it, or is a failed compare-and-set; an unknown Set or
//!   Delete never needs it (it overwrites it), so two unknown operations in a row are tried
//!   only when the second is a compare-and-set that expects what the first wrote.
//!
//! With these, searches over histories like the tests' (20,000 operations over a few keys, some
//! percent of them unknown) stay close to linear in the number of operations, violations
//! included.
//!
//! # Budget and reports
//!
//! [`check`] never runs past its budget: the search looks at the clock every
//! `CLOCK_CHECK_INTERVAL` steps and gives up with [`Verdict::Unknown`], as it does when the
//! cache outgrows `MAX_CACHE_BYTES`. When a key is not linearizable, the rest of the budget goes
//! to shrinking its operations (delta debugging: drop chunks of halving size, then single
//! operations, for as long as what remains still fails), and the smallest failing sub-history
//! found is reported. The shrinker only drops operations that could be removed from any
//! linearization without breaking it (a read; a write nobody kept read and no kept observation
//! depends on; see `sound_to_drop`), and, first, everything before a known Delete that no other
//! known operation overlaps (`cut_at_quiet_delete`): every linearization puts that Delete after
//! everything that completed before it and before everything invoked after it, and leaves the
//! key absent, as at the start. (Compare-and-sets make this cut matter: each one that succeeds
//! needs the write before it, so without the cut a witness drags the whole chain of writes since
//! the start along.) So the reported sub-history is a witness: it being not linearizable proves
//! the whole history is not, and it never "fails" merely because the write a read saw was left
//! out — unless that write came before such a Delete, after which the value was gone for good.
//! Malformed input (an answer of the wrong kind, a completion before the
//! invocation) is also reported as [`Verdict::Unknown`], with a reason saying so.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::{Duration, Instant};

use super::history::{History, OpKind, OpResult, Operation, Outcome, Seen};

/// Search steps between two looks at the clock.
const CLOCK_CHECK_INTERVAL: u64 = 1024;
/// Give up (with [`Verdict::Unknown`]) when the cache of failed configurations would outgrow
/// this (an estimate, from `CACHE_ENTRY_OVERHEAD_BYTES` and the bitset sizes).
const MAX_CACHE_BYTES: usize = 4 << 30;
/// Bookkeeping bytes per cache entry besides its bitset (hash-table slot, vector header).
const CACHE_ENTRY_OVERHEAD_BYTES: usize = 64;
/// Bits in one word of a bitset.
const WORD_BITS: usize = u64::BITS as usize;
/// The interned register state meaning "key absent".
const ABSENT: u64 = 0;
/// The interned state for every value that no known Get of the key read: nothing can tell
/// such values apart, so they share one state.
const UNREAD: u64 = 1;
/// The interned number of the first value some known Get read; the others follow.
const FIRST_READ_VALUE: u64 = 2;
/// Index of the head sentinel in the event list.
const HEAD: usize = 0;
/// "No node": the end of the event list.
const NIL: usize = usize::MAX;
/// The time of a return that never comes (an answer recorded without a completion time).
const INFINITY: u128 = u128::MAX;
/// Seed of the per-operation Zobrist words.
const ZOBRIST_SEED: u64 = 0x2545_F491_4F6C_DD1D;
/// splitmix64's increment (the golden ratio), also used to spread the state into the hash.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
/// splitmix64's first mixing multiplier.
const MIX_MULTIPLIER_1: u64 = 0xBF58_476D_1CE4_E5B9;
/// splitmix64's second mixing multiplier.
const MIX_MULTIPLIER_2: u64 = 0x94D0_49BB_1331_11EB;
/// Longest key prefix quoted in a [`Verdict::Unknown`] reason.
const MAX_KEY_DISPLAY_BYTES: usize = 64;

/// The checker's conclusion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's operations have a linearization.
    Linearizable,
    /// This key's operations have none.
    NotLinearizable {
        /// The key.
        key: Vec<u8>,
        /// The smallest failing set of that key's operations the shrinker found within the
        /// budget (at worst all of them, failed ones excluded), in the order of the input. Checked
        /// on its own it is still not linearizable, and that alone proves the key's whole
        /// history is not (only operations that no linearization depends on were dropped).
        minimal_subhistory: Vec<Operation>,
    },
    /// The checker could not decide: the budget ran out, the search outgrew its memory limit, or
    /// the history is malformed. The reason says which.
    Unknown {
        /// Why, for a human.
        reason: String,
    },
}

impl Verdict {
    /// Whether the verdict is [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// Checks the operations of `history` (its faults are ignored), spending at most about `budget`
/// of wall-clock time, shrinking included.
pub fn check(history: &History, budget: Duration) -> Verdict {
    check_operations(&history.ops, budget)
}

/// Checks these operations, spending at most about `budget` of wall-clock time, shrinking
/// included. Keys are checked in byte order; the first key found not linearizable is reported.
pub fn check_operations(ops: &[Operation], budget: Duration) -> Verdict {
    let deadline = Deadline::after(budget);
    if let Err(reason) = validate(ops) {
        return Verdict::Unknown { reason };
    }
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.outcome != Outcome::Fail) {
        by_key.entry(op.key.as_slice()).or_default().push(op);
    }
    let total_keys = by_key.len();
    let mut undecided: Vec<String> = Vec::new();
    for (key, key_ops) in by_key {
        let outcome = if deadline.passed() {
            SearchOutcome::OutOfTime
        } else {
            check_key(&key_ops, &deadline)
        };
        match outcome {
            SearchOutcome::Linearizable => {}
            SearchOutcome::Violation { reach } => {
                let minimal = shrink(key_ops, reach, &deadline);
                return Verdict::NotLinearizable {
                    key: key.to_vec(),
                    minimal_subhistory: minimal.into_iter().cloned().collect(),
                };
            }
            SearchOutcome::OutOfTime => {
                undecided.push(format!("{}: time budget exhausted", display_key(key)))
            }
            SearchOutcome::OutOfMemory => undecided.push(format!(
                "{}: search cache exceeded {MAX_CACHE_BYTES} bytes",
                display_key(key)
            )),
        }
    }
    if undecided.is_empty() {
        Verdict::Linearizable
    } else {
        Verdict::Unknown {
            reason: format!(
                "{} of {total_keys} keys undecided ({}); no violation found in the others",
                undecided.len(),
                undecided.join("; ")
            ),
        }
    }
}

/// A key for a human: text when it is UTF-8, else its bytes, cut to a readable length.
fn display_key(key: &[u8]) -> String {
    let shown = &key[..key.len().min(MAX_KEY_DISPLAY_BYTES)];
    let more = if key.len() > shown.len() { "…" } else { "" };
    match std::str::from_utf8(shown) {
        Ok(text) => format!("key {text:?}{more}"),
        Err(_) => format!("key {shown:?}{more}"),
    }
}

/// Rejects what no register could be asked to explain: answers of the wrong kind and completions
/// before invocations. Failed operations are dropped unexamined.
fn validate(ops: &[Operation]) -> Result<(), String> {
    for op in ops {
        match &op.outcome {
            Outcome::Fail | Outcome::Unknown => {}
            Outcome::Ok(result) => {
                if !op.result_matches_kind() {
                    return Err(format!(
                        "malformed history: operation {} is a {:?} but answered {result:?}",
                        op.id, op.kind
                    ));
                }
                if let Some(complete) = op.complete {
                    if complete < op.invoke {
                        return Err(format!(
                            "malformed history: operation {} completes at {complete} before its \
                             invocation at {}",
                            op.id, op.invoke
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// When the checker must stop; `None` when the budget is too large to represent.
struct Deadline(Option<Instant>);

impl Deadline {
    fn after(budget: Duration) -> Self {
        Deadline(Instant::now().checked_add(budget))
    }

    fn passed(&self) -> bool {
        self.0.is_some_and(|deadline| Instant::now() >= deadline)
    }
}

/// How the search of one key ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchOutcome {
    Linearizable,
    /// No linearization. `reach` is the latest event time the search looked at: operations
    /// invoked after it played no part, and dropping them leaves a search that fails the same way.
    Violation {
        reach: u128,
    },
    OutOfTime,
    OutOfMemory,
}

/// What an operation asks of the register, values interned.
#[derive(Debug, Clone, Copy)]
enum Input {
    Get,
    Set(u64),
    Delete,
    /// If the state is `expect`, it becomes `new`.
    Cas {
        expect: u64,
        new: u64,
    },
}

/// What an operation's answer requires, values interned.
#[derive(Debug, Clone, Copy)]
enum Output {
    /// A Get saw this state.
    Read(u64),
    /// A Set was acknowledged.
    Written,
    /// A Delete saw the key present (`true`) or absent.
    Deleted(bool),
    /// A compare-and-set found the expected state and wrote.
    Swapped,
    /// A compare-and-set found another state than the expected one: this one, when known.
    Refused(Option<u64>),
    /// Unknown outcome: any answer will do.
    Any,
}

/// One operation of one key, ready for the search.
#[derive(Debug, Clone, Copy)]
struct ModelOp {
    input: Input,
    output: Output,
    invoke: u128,
    ret: u128,
    /// Whether the outcome is known (`Ok`), i.e. the operation must be linearized.
    known: bool,
}

/// The register's step: the state after `op` from `state`, or `None` when `op`'s answer could
/// not have come from `state`.
fn step(state: u64, op: &ModelOp) -> Option<u64> {
    match (op.input, op.output) {
        (Input::Get, Output::Read(seen)) => (seen == state).then_some(state),
        (Input::Get, Output::Any) => Some(state),
        (Input::Set(value), Output::Written | Output::Any) => Some(value),
        (Input::Delete, Output::Deleted(existed)) => {
            ((state != ABSENT) == existed).then_some(ABSENT)
        }
        (Input::Delete, Output::Any) => Some(ABSENT),
        (Input::Cas { expect, new }, Output::Swapped) => (state == expect).then_some(new),
        (Input::Cas { expect, .. }, Output::Refused(seen)) => {
            (state != expect && seen.is_none_or(|seen| seen == state)).then_some(state)
        }
        (Input::Cas { expect, new }, Output::Any) => {
            Some(if state == expect { new } else { state })
        }
        // Kinds and answers are matched by `validate`; a mismatch explains nothing.
        _ => None,
    }
}

/// The values `op` tells apart from every other value: the one a known Get read, or a failed
/// compare-and-set saw, and the one a compare-and-set expects (whatever its outcome: even an
/// unknown one takes effect only from that value).
fn told_apart(op: &Operation) -> impl Iterator<Item = &[u8]> {
    let seen = match &op.outcome {
        Outcome::Ok(OpResult::Read(Some(seen)))
        | Outcome::Ok(OpResult::Cas {
            current: Some(Seen { value: Some(seen) }),
            ..
        }) => Some(seen.as_slice()),
        _ => None,
    };
    let expected = match &op.kind {
        OpKind::Cas {
            expect: Some(expect),
            ..
        } => Some(expect.as_slice()),
        _ => None,
    };
    seen.into_iter().chain(expected)
}

/// Numbers the values of one key: [`ABSENT`] for none, [`UNREAD`] for a value no operation
/// can tell from others, and from [`FIRST_READ_VALUE`] on, in order of appearance, for values
/// that some operation tells apart: a known Get that read it, a compare-and-set that expects
/// it (whatever its outcome: even an unknown one takes effect only from that value), or a
/// failed compare-and-set that saw it.
struct Interner<'a> {
    read: HashSet<&'a [u8]>,
    numbers: HashMap<&'a [u8], u64>,
}

impl<'a> Interner<'a> {
    fn new(ops: &[&'a Operation]) -> Self {
        let read = ops.iter().flat_map(|op| told_apart(op)).collect();
        Interner {
            read,
            numbers: HashMap::new(),
        }
    }

    fn intern(&mut self, value: Option<&'a [u8]>) -> u64 {
        match value {
            None => ABSENT,
            Some(bytes) if !self.read.contains(bytes) => UNREAD,
            Some(bytes) => {
                let next = FIRST_READ_VALUE + self.numbers.len() as u64;
                *self.numbers.entry(bytes).or_insert(next)
            }
        }
    }
}

/// Interns the values of one key's operations and turns them into [`ModelOp`]s.
fn prepare(ops: &[&Operation]) -> Vec<ModelOp> {
    let mut values = Interner::new(ops);
    ops.iter()
        .map(|op| {
            let input = match &op.kind {
                OpKind::Get => Input::Get,
                OpKind::Set(value) => Input::Set(values.intern(Some(value))),
                OpKind::Delete => Input::Delete,
                OpKind::Cas { expect, new, .. } => Input::Cas {
                    expect: values.intern(expect.as_deref()),
                    new: values.intern(Some(new)),
                },
            };
            let (output, ret, known) = match &op.outcome {
                Outcome::Ok(result) => {
                    let output = match result {
                        OpResult::Read(seen) => Output::Read(values.intern(seen.as_deref())),
                        OpResult::Written => Output::Written,
                        OpResult::Deleted { existed } => Output::Deleted(*existed),
                        OpResult::Cas {
                            succeeded: true, ..
                        } => Output::Swapped,
                        OpResult::Cas {
                            succeeded: false,
                            current,
                        } => Output::Refused(
                            current.as_ref().map(|c| values.intern(c.value.as_deref())),
                        ),
                    };
                    // An answer without a completion time still constrains the state; only
                    // its real-time order is unknown.
                    let ret = op.complete.map_or(INFINITY, u128::from);
                    (output, ret, true)
                }
                Outcome::Unknown | Outcome::Fail => (Output::Any, INFINITY, false),
            };
            ModelOp {
                input,
                output,
                invoke: u128::from(op.invoke),
                ret,
                known,
            }
        })
        .collect()
}

/// One event in a list. Call nodes of known operations know their return node.
#[derive(Debug, Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    op: usize,
    /// The event's time (0 for the head).
    time: u128,
    /// Whether this is a call event (the head is not).
    is_call: bool,
    /// For a call of a known operation: its return node.
    ret: Option<usize>,
}

/// A doubly-linked list of events sorted by time, head sentinel at [`HEAD`].
struct EventList {
    nodes: Vec<Node>,
}

impl EventList {
    /// Call events at `invoke` for all `ops`; and return events at `ret` too when
    /// `with_returns`. Sorted by time, calls before returns on a tie.
    fn new(ops: &[ModelOp], members: &[usize], with_returns: bool) -> Self {
        const CALL: u8 = 0;
        const RETURN: u8 = 1;
        let mut events: Vec<(u128, u8, usize)> = Vec::with_capacity(2 * members.len());
        for &op in members {
            events.push((ops[op].invoke, CALL, op));
            if with_returns {
                events.push((ops[op].ret, RETURN, op));
            }
        }
        events.sort_unstable();
        let len = events.len();
        let mut nodes = Vec::with_capacity(len + 1);
        nodes.push(Node {
            prev: NIL,
            next: if len == 0 { NIL } else { 1 },
            op: usize::MAX,
            time: 0,
            is_call: false,
            ret: None,
        });
        let mut return_node = vec![NIL; ops.len()];
        for (position, &(time, kind, op)) in events.iter().enumerate() {
            let index = position + 1;
            if kind == RETURN {
                return_node[op] = index;
            }
            nodes.push(Node {
                prev: index - 1,
                next: if index == len { NIL } else { index + 1 },
                op,
                time,
                is_call: kind == CALL,
                ret: None,
            });
        }
        if with_returns {
            for (position, &(_, kind, op)) in events.iter().enumerate() {
                if kind == CALL {
                    nodes[position + 1].ret = Some(return_node[op]);
                }
            }
        }
        EventList { nodes }
    }

    fn first(&self) -> usize {
        self.nodes[HEAD].next
    }

    /// Unlinks a node; it keeps its own links for [`EventList::relink`].
    fn unlink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    /// Undoes the matching [`EventList::unlink`]; unlinks and relinks must nest.
    fn relink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = node;
        if next != NIL {
            self.nodes[next].prev = node;
        }
    }

    /// Unlinks a call and its return (if any).
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(ret) = self.nodes[call].ret {
            self.unlink(ret);
        }
    }

    /// Undoes the matching [`EventList::lift`].
    fn unlift(&mut self, call: usize) {
        if let Some(ret) = self.nodes[call].ret {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// splitmix64's finaliser: a well-spread word from any word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(MIX_MULTIPLIER_1);
    z = (z ^ (z >> 27)).wrapping_mul(MIX_MULTIPLIER_2);
    z ^ (z >> 31)
}

/// The cache key of a configuration: which known operations are linearized, and the state.
#[derive(Clone, PartialEq, Eq)]
struct KnownConfig {
    /// Bit `slot` set when the known operation in that slot is linearized.
    bits: Vec<u64>,
    /// The interned register state.
    state: u64,
    /// XOR of the Zobrist words of the set bits.
    zobrist: u64,
}

impl Hash for KnownConfig {
    fn hash<H: Hasher>(&self, hasher: &mut H) {
        hasher.write_u64(mix(self.zobrist ^ self.state.wrapping_mul(GOLDEN_GAMMA)));
    }
}

/// A hasher that passes on the one word [`KnownConfig`] already mixed.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = mix(self.0 ^ u64::from(byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 ^= word;
    }
}

/// Failed configurations: for each (known set, state), the minimal sets of unknown operations
/// linearized with it (a superset is dominated, see the module documentation).
type FailedCache = HashMap<KnownConfig, Vec<Vec<u64>>, BuildHasherDefault<PassThroughHasher>>;

fn set_bit(bits: &mut [u64], slot: usize) {
    bits[slot / WORD_BITS] |= 1 << (slot % WORD_BITS);
}

fn clear_bit(bits: &mut [u64], slot: usize) {
    bits[slot / WORD_BITS] &= !(1 << (slot % WORD_BITS));
}

fn is_subset(small: &[u64], big: &[u64]) -> bool {
    small.iter().zip(big).all(|(s, b)| s & !b == 0)
}

/// Whether a failed configuration dominates (known, unknown): same known set and state, and a
/// subset of the unknown operations linearized.
fn dominated(failed: &FailedCache, known: &KnownConfig, unknown: &[u64]) -> bool {
    failed
        .get(known)
        .is_some_and(|sets| sets.iter().any(|set| is_subset(set, unknown)))
}

/// Where the walk is at one depth of the search.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// At this node of the known list.
    Known(usize),
    /// At this node of the unknown list, trying unknown calls invoked by `limit` (the time of
    /// the first return left in the known list). The effects this depth already tried with an
    /// unknown operation are `tried[mark..]`.
    Unknown {
        node: usize,
        limit: u128,
        mark: usize,
    },
}

/// A linearized operation on the search stack.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Where its call was found (to unlink it back and go on from there).
    cursor: Cursor,
    /// The state before it.
    old_state: u64,
    /// The length of `tried` just after it was pushed, to cut back to when it is undone.
    tried_end: usize,
}

/// Whether `op` is worth trying right after the last step, from `state`: always, unless that
/// step was an unknown operation (from its frame's `old_state` to `state`). Then only if `op`
/// does something else from `state` than from the state before: if it does the same, the
/// configuration without the unknown operation gets as far with fewer operations used (for
/// an unknown `op` that would change nothing from the state before, the configuration before
/// both). An unconditional write never needs the unknown operation before it; a read of the
/// state it left, or a compare-and-set that expects that state, does.
fn needs_last(stack: &[Frame], op: &ModelOp, state: u64) -> bool {
    match stack.last() {
        Some(Frame {
            cursor: Cursor::Unknown { .. },
            old_state,
            ..
        }) => step(*old_state, op) != step(state, op),
        _ => true,
    }
}

/// Runs the WGL search on one key's operations.
fn check_key(ops: &[&Operation], deadline: &Deadline) -> SearchOutcome {
    search(&prepare(ops), deadline)
}

/// The WGL search (see the module documentation).
fn search(ops: &[ModelOp], deadline: &Deadline) -> SearchOutcome {
    let known: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].known).collect();
    let unknown: Vec<usize> = (0..ops.len()).filter(|&i| !ops[i].known).collect();
    let mut remaining_known = known.len();
    if remaining_known == 0 {
        return SearchOutcome::Linearizable;
    }
    // Bit positions, per class.
    let mut slot = vec![0usize; ops.len()];
    for (i, &op) in known.iter().enumerate() {
        slot[op] = i;
    }
    for (i, &op) in unknown.iter().enumerate() {
        slot[op] = i;
    }
    let zobrist: Vec<u64> = (0..known.len() as u64)
        .map(|i| mix(ZOBRIST_SEED.wrapping_add(i.wrapping_mul(GOLDEN_GAMMA))))
        .collect();
    let mut known_list = EventList::new(ops, &known, true);
    let mut unknown_list = EventList::new(ops, &unknown, false);
    let known_words = known.len().div_ceil(WORD_BITS);
    let unknown_words = unknown.len().div_ceil(WORD_BITS);
    let entry_bytes =
        (known_words + unknown_words) * std::mem::size_of::<u64>() + CACHE_ENTRY_OVERHEAD_BYTES;

    let mut config = KnownConfig {
        bits: vec![0; known_words],
        state: ABSENT,
        zobrist: 0,
    };
    let mut unknown_bits: Vec<u64> = vec![0; unknown_words];
    let mut failed = FailedCache::default();
    let mut cache_bytes = 0usize;
    let mut stack: Vec<Frame> = Vec::new();
    // Effects of the unknown operations tried, per depth of the unknown phase (see `Cursor`):
    // the state a compare-and-set expected (`None` for an unconditional write) and the state
    // reached.
    let mut tried: Vec<(Option<u64>, u64)> = Vec::new();
    // Whether an unknown operation may act only from some states (a compare-and-set): then one
    // may need another unknown one just before it.
    let conditional_unknowns = unknown
        .iter()
        .any(|&op| matches!(ops[op].input, Input::Cas { .. }));
    let mut cursor = Cursor::Known(known_list.first());
    let mut steps: u64 = 0;
    let mut reach: u128 = 0;

    while remaining_known > 0 {
        steps += 1;
        if steps.is_multiple_of(CLOCK_CHECK_INTERVAL) && deadline.passed() {
            return SearchOutcome::OutOfTime;
        }
        let mut backtrack = false;
        match cursor {
            Cursor::Known(at) => match known_list.nodes.get(at).copied() {
                Some(node) if node.is_call => {
                    reach = reach.max(node.time);
                    let op = node.op;
                    cursor = Cursor::Known(node.next);
                    // Right after an unknown operation, only a known one that needs its effect
                    // is worth trying: any other does the same from the state before it, which
                    // the depth below tried first.
                    let needs_last = needs_last(&stack, &ops[op], config.state);
                    if let Some(new_state) = step(config.state, &ops[op]).filter(|_| needs_last) {
                        let old_state = config.state;
                        set_bit(&mut config.bits, slot[op]);
                        config.zobrist ^= zobrist[slot[op]];
                        config.state = new_state;
                        if dominated(&failed, &config, &unknown_bits) {
                            clear_bit(&mut config.bits, slot[op]);
                            config.zobrist ^= zobrist[slot[op]];
                            config.state = old_state;
                        } else {
                            stack.push(Frame {
                                cursor: Cursor::Known(at),
                                old_state,
                                tried_end: tried.len(),
                            });
                            known_list.lift(at);
                            remaining_known -= 1;
                            cursor = Cursor::Known(known_list.first());
                        }
                    }
                }
                Some(node) => {
                    // The first return left: known candidates are exhausted at this depth;
                    // unknown calls invoked by then are the other candidates. Unless the last
                    // step was itself an unknown operation and no unknown compare-and-set is
                    // left: two unconditional writes in a row are dominated by the second alone
                    // (it overwrites the first, and was a candidate just as well at the depth
                    // below, where the search tries it on its own). A compare-and-set may need
                    // the unknown write before it; `needs_last` picks those.
                    reach = reach.max(node.time);
                    let after_unknown = stack
                        .last()
                        .is_some_and(|frame| matches!(frame.cursor, Cursor::Unknown { .. }));
                    if after_unknown && !conditional_unknowns {
                        backtrack = true;
                    } else {
                        cursor = Cursor::Unknown {
                            node: unknown_list.first(),
                            limit: node.time,
                            mark: tried.len(),
                        };
                    }
                }
                // Cannot happen while a known operation is left (its return is in the list).
                None => backtrack = true,
            },
            Cursor::Unknown {
                node: at,
                limit,
                mark,
            } => match unknown_list.nodes.get(at).copied() {
                Some(node) if node.time <= limit => {
                    reach = reach.max(node.time);
                    let op = node.op;
                    cursor = Cursor::Unknown {
                        node: node.next,
                        limit,
                        mark,
                    };
                    // An unknown operation that leaves the state as it is gains nothing: the
                    // configuration without it (the current one) dominates. Two available
                    // unknown operations with the same effect (from the same states, to the
                    // same state) are interchangeable from here on, so only the first one is
                    // tried. After another unknown operation, only one that needs it is.
                    let guard = match ops[op].input {
                        Input::Cas { expect, .. } => Some(expect),
                        Input::Get | Input::Set(_) | Input::Delete => None,
                    };
                    let new_state = step(config.state, &ops[op])
                        .filter(|&new_state| new_state != config.state)
                        .filter(|&new_state| !tried[mark..].contains(&(guard, new_state)))
                        .filter(|_| needs_last(&stack, &ops[op], config.state));
                    if let Some(new_state) = new_state {
                        tried.push((guard, new_state));
                        let old_state = config.state;
                        set_bit(&mut unknown_bits, slot[op]);
                        config.state = new_state;
                        if dominated(&failed, &config, &unknown_bits) {
                            clear_bit(&mut unknown_bits, slot[op]);
                            config.state = old_state;
                        } else {
                            stack.push(Frame {
                                cursor: Cursor::Unknown {
                                    node: at,
                                    limit,
                                    mark,
                                },
                                old_state,
                                tried_end: tried.len(),
                            });
                            unknown_list.lift(at);
                            cursor = Cursor::Known(known_list.first());
                        }
                    }
                }
                Some(node) => {
                    reach = reach.max(node.time);
                    backtrack = true;
                }
                None => backtrack = true,
            },
        }
        if !backtrack {
            continue;
        }

        // Every candidate at this depth failed: remember the configuration as failed, keeping
        // only minimal unknown sets, then undo the last step and try the next candidate there.
        cache_bytes += entry_bytes;
        if cache_bytes > MAX_CACHE_BYTES {
            return SearchOutcome::OutOfMemory;
        }
        match failed.get_mut(&config) {
            Some(sets) => {
                sets.retain(|set| !is_subset(&unknown_bits, set));
                sets.push(unknown_bits.clone());
            }
            None => {
                failed.insert(config.clone(), vec![unknown_bits.clone()]);
            }
        }
        let Some(frame) = stack.pop() else {
            return SearchOutcome::Violation { reach };
        };
        match frame.cursor {
            Cursor::Known(at) => {
                let Node { op, next, .. } = known_list.nodes[at];
                clear_bit(&mut config.bits, slot[op]);
                config.zobrist ^= zobrist[slot[op]];
                known_list.unlift(at);
                remaining_known += 1;
                cursor = Cursor::Known(next);
            }
            Cursor::Unknown {
                node: at,
                limit,
                mark,
            } => {
                let Node { op, next, .. } = unknown_list.nodes[at];
                clear_bit(&mut unknown_bits, slot[op]);
                unknown_list.unlift(at);
                cursor = Cursor::Unknown {
                    node: next,
                    limit,
                    mark,
                };
            }
        }
        config.state = frame.old_state;
        tried.truncate(frame.tried_end);
    }
    SearchOutcome::Linearizable
}

/// Shrinks a failing set of one key's operations whose search reached `reach`.
///
/// First, and after every pass, cuts off the history before the latest quiet Delete after which
/// it still fails ([`cut_at_quiet_delete`]). First and after every successful step, drops the
/// operations
/// invoked after the search's reach (no check needed: the search fails the same way without
/// them). Then delta-debugging style:
/// tries dropping chunks of half the size, then a quarter, ..., then single operations (repeated
/// until a pass drops nothing), keeping every drop that [`sound_to_drop`] allows and after which
/// the rest still fails. Stops early, returning the smallest failing set so far, when the
/// deadline passes; a check that runs out of time counts as "does not fail".
fn shrink<'a>(ops: Vec<&'a Operation>, reach: u128, deadline: &Deadline) -> Vec<&'a Operation> {
    let mut current = match cut_at_quiet_delete(&ops, deadline) {
        Some((rest, reach)) => drop_beyond(rest, reach),
        None => drop_beyond(ops, reach),
    };
    let mut chunk = (current.len() / 2).max(1);
    loop {
        let mut dropped_any = false;
        let mut start = 0;
        while start < current.len() {
            if deadline.passed() {
                return current;
            }
            let end = (start + chunk).min(current.len());
            let others: Vec<&Operation> = current[..start]
                .iter()
                .chain(&current[end..])
                .copied()
                .collect();
            let drop = sound_part(&current[start..end], &others, deadline);
            let stays = drop.iter().filter(|&&d| !d).count();
            let outcome = if stays < end - start {
                let candidate: Vec<&Operation> = current[..start]
                    .iter()
                    .chain(
                        current[start..end]
                            .iter()
                            .zip(&drop)
                            .filter(|(_, &d)| !d)
                            .map(|(op, _)| op),
                    )
                    .chain(&current[end..])
                    .copied()
                    .collect();
                match check_key(&candidate, deadline) {
                    SearchOutcome::Violation { reach } => Some((candidate, reach)),
                    _ => None,
                }
            } else {
                None
            };
            if let Some((candidate, reach)) = outcome {
                // What had to stay of the chunk now sits at `start`; the pass goes on after it.
                current = drop_beyond(candidate, reach);
                start += stays;
                dropped_any = true;
            } else {
                start = end;
            }
        }
        // Dropping operations may have left a Delete with nothing around it: cut there.
        if let Some((rest, reach)) = cut_at_quiet_delete(&current, deadline) {
            current = drop_beyond(rest, reach);
            dropped_any = true;
        }
        if chunk > 1 {
            chunk = (chunk / 2).max(1);
        } else if !dropped_any {
            return current;
        }
    }
}

/// Which operations of `chunk` can be dropped together, soundly (see [`sound_to_drop`]), while
/// `others` and the rest of the chunk stay: starts from the whole chunk and puts back what is
/// unsafe to drop until what is left to drop is safe. An unknown write, say, can rarely be
/// dropped, and should not keep the known operations around it from being dropped. Drops
/// nothing once the deadline has passed.
fn sound_part(chunk: &[&Operation], others: &[&Operation], deadline: &Deadline) -> Vec<bool> {
    let mut drop = vec![true; chunk.len()];
    loop {
        if deadline.passed() {
            return vec![false; chunk.len()];
        }
        let kept: Vec<&Operation> = others
            .iter()
            .copied()
            .chain(
                chunk
                    .iter()
                    .zip(&drop)
                    .filter(|(_, &d)| !d)
                    .map(|(op, _)| *op),
            )
            .collect();
        let dropping: Vec<&Operation> = chunk
            .iter()
            .zip(&drop)
            .filter(|(_, &d)| d)
            .map(|(op, _)| *op)
            .collect();
        let safe = droppable(&dropping, &kept);
        if safe.iter().all(|&s| s) {
            return drop;
        }
        let mut verdicts = safe.into_iter();
        for d in drop.iter_mut().filter(|d| **d) {
            *d = verdicts.next().unwrap_or(false);
        }
    }
}

/// The known Deletes of `ops` that no other known operation overlaps in real time (touching
/// counts as overlapping), latest first, as indices into `ops`.
fn quiet_deletes(ops: &[&Operation]) -> Vec<usize> {
    let span = |op: &Operation| (op.invoke, op.complete.unwrap_or(u64::MAX));
    let mut known: Vec<usize> = (0..ops.len())
        .filter(|&i| matches!(ops[i].outcome, Outcome::Ok(_)))
        .collect();
    known.sort_by_key(|&i| ops[i].invoke);
    let mut quiet = Vec::new();
    // The latest completion among the known operations invoked before the one at `p`.
    let mut completed_by: Option<u64> = None;
    for (p, &i) in known.iter().enumerate() {
        let (invoke, complete) = span(ops[i]);
        let overlapped_before = completed_by.is_some_and(|c| c >= invoke);
        let overlapped_after = known
            .get(p + 1)
            .is_some_and(|&next| ops[next].invoke <= complete);
        if ops[i].kind == OpKind::Delete && !overlapped_before && !overlapped_after {
            quiet.push(i);
        }
        completed_by = Some(completed_by.map_or(complete, |c| c.max(complete)));
    }
    quiet.sort_by_key(|&i| std::cmp::Reverse(ops[i].complete));
    quiet
}

/// Most quiet Deletes tried as a cut before the shrinker goes on without one.
const MAX_CUT_TRIES: usize = 16;

/// The operations of `ops` after the quiet Delete `ops[cut]`: the known ones invoked after it
/// completed, and every unknown one (it may take effect after the Delete). Every linearization
/// of `ops` ends, after that Delete, with a linearization of these from an absent key, so if
/// these fail, `ops` fails.
fn after_cut<'a>(ops: &[&'a Operation], cut: usize) -> Vec<&'a Operation> {
    let end = ops[cut].complete.unwrap_or(u64::MAX);
    ops.iter()
        .copied()
        .filter(|op| match op.outcome {
            Outcome::Ok(_) => op.invoke > end,
            Outcome::Fail | Outcome::Unknown => true,
        })
        .collect()
}

/// Cuts a failing set of one key's operations at the latest quiet Delete (see
/// [`quiet_deletes`]) after which what is left still fails, trying at most [`MAX_CUT_TRIES`]
/// from the latest on; returns what is left and its search's reach, or `None` when no cut
/// keeps it failing in time. Any cut whose rest fails is a witness (see [`after_cut`]), even one
/// after the first violation the search met: the latest leaves the least.
fn cut_at_quiet_delete<'a>(
    ops: &[&'a Operation],
    deadline: &Deadline,
) -> Option<(Vec<&'a Operation>, u128)> {
    for cut in quiet_deletes(ops).into_iter().take(MAX_CUT_TRIES) {
        if deadline.passed() {
            break;
        }
        let rest = after_cut(ops, cut);
        if let SearchOutcome::Violation { reach } = check_key(&rest, deadline) {
            return Some((rest, reach));
        }
    }
    None
}

/// Drops the operations invoked after `reach` from a failing set whose search reached `reach`,
/// when [`sound_to_drop`] allows. Their events all sort after everything that search visited, so
/// it runs unchanged without them and fails the same way (it cannot even succeed early for lack
/// of known operations: it never linearized any of them).
fn drop_beyond(ops: Vec<&Operation>, reach: u128) -> Vec<&Operation> {
    let (kept, beyond): (Vec<&Operation>, Vec<&Operation>) = ops
        .iter()
        .copied()
        .partition(|op| u128::from(op.invoke) <= reach);
    if !beyond.is_empty() && sound_to_drop(&beyond, &kept) {
        kept
    } else {
        ops
    }
}

/// Whether dropping `dropped` from a history, leaving `kept`, keeps every linearization valid:
/// then `kept` failing proves the history fails, so the shrinker's result is a real witness and
/// not a violation made up by leaving out the write that explained a read.
///
/// Take a linearization of the history and remove one operation `o` from it. Only the operations
/// between `o` and the next write `w` (a Set, a Delete, or a compare-and-set that takes effect)
/// see a different state, `w` included; those are observers (Gets, Deletes that found the key
/// absent, compare-and-sets that did not take effect), which must not have depended on what `o`
/// left, and `w` itself:
///
/// - an operation that changes no state — a Get, a Delete that found the key absent, a
///   compare-and-set that failed — is always safe;
/// - a Set of `v`, or a compare-and-set writing `v` that succeeded or has an unknown outcome:
///   safe when no kept operation told `v` apart (a Get that read it, a compare-and-set that
///   expects it, whatever its outcome, a failed one that saw it), no kept Delete that found
///   the key present (maybe only thanks to `v`) can be `w`, and no kept failed compare-and-set
///   whose current value is not known can be between `o` and `w` (the state before `o` might
///   be the value it expected);
/// - a Delete that found the key present (or an unknown Delete): safe when no kept Get of
///   `None`, Delete that found the key absent, failed compare-and-set that saw the key absent
///   or whose current value is not known, or compare-and-set that expects the key absent
///   (whatever its outcome) can come between `o` and `w` or be `w`.
///
/// An observer `r` can only be affected if it can be linearized after `o` (`r` completes no
/// earlier than `o` is invoked) and before any known kept write `x` that real time puts between
/// them (`o` completes before `x` is invoked, `x` completes before `r` is invoked), since `x` then
/// comes after `w` or is `w`.
///
/// The operations that change no state are dropped first, then Deletes, then writes of values,
/// so each rule holds against what is left at its turn, which is why checking them all against
/// `kept` is enough — with two additions for the compare-and-sets that write and are dropped
/// too. They are still there when the Deletes go, so one expecting the key absent counts as
/// observing a Delete. And the writes of values go one by one, each after every compare-and-set
/// that expects the value it writes ([`drops_in_order`]); when no such order exists (a cycle of
/// compare-and-sets expecting each other's values, which cannot happen when every value is
/// written once) their expected values count as told apart.
fn sound_to_drop(dropped: &[&Operation], kept: &[&Operation]) -> bool {
    droppable(dropped, kept).into_iter().all(|safe| safe)
}

/// Whether `op` changes no state in any linearization: a Get, a Delete that found the key
/// absent, a compare-and-set that failed.
fn changes_nothing(op: &Operation) -> bool {
    matches!(
        (&op.kind, &op.outcome),
        (OpKind::Get, _)
            | (
                OpKind::Delete,
                Outcome::Ok(OpResult::Deleted { existed: false })
            )
            | (
                OpKind::Cas { .. },
                Outcome::Ok(OpResult::Cas {
                    succeeded: false,
                    ..
                })
            )
    )
}

/// Whether these writes (Sets and compare-and-sets that write) can be dropped one at a time so
/// that none goes while a compare-and-set expecting the value it writes is still there: the
/// relation "expects the value written by" has no cycle among them (Kahn's algorithm).
fn drops_in_order(writes: &[&Operation]) -> bool {
    fn written(op: &Operation) -> Option<&[u8]> {
        match &op.kind {
            OpKind::Set(value) | OpKind::Cas { new: value, .. } => Some(value),
            OpKind::Get | OpKind::Delete => None,
        }
    }
    fn expected(op: &Operation) -> Option<&[u8]> {
        match &op.kind {
            OpKind::Cas {
                expect: Some(expect),
                ..
            } => Some(expect),
            _ => None,
        }
    }
    let mut writers: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, op) in writes.iter().enumerate() {
        if let Some(value) = written(op) {
            writers.entry(value).or_default().push(i);
        }
    }
    // For each write, how many of the others still there expect the value it writes.
    let mut expecting = vec![0usize; writes.len()];
    for op in writes {
        for &x in expected(op)
            .and_then(|v| writers.get(v))
            .into_iter()
            .flatten()
        {
            expecting[x] += 1;
        }
    }
    let mut free: Vec<usize> = (0..writes.len()).filter(|&i| expecting[i] == 0).collect();
    let mut gone = 0;
    while let Some(y) = free.pop() {
        gone += 1;
        for &x in expected(writes[y])
            .and_then(|v| writers.get(v))
            .into_iter()
            .flatten()
        {
            expecting[x] -= 1;
            if expecting[x] == 0 {
                free.push(x);
            }
        }
    }
    gone == writes.len()
}

/// For each operation of `dropped`, whether its rule of [`sound_to_drop`] holds against `kept`.
fn droppable(dropped: &[&Operation], kept: &[&Operation]) -> Vec<bool> {
    // Known kept writes as (invoke, complete), complete +infinity when missing.
    let writes: Vec<(u64, u64)> = kept
        .iter()
        .filter(|op| match (&op.kind, &op.outcome) {
            (OpKind::Set(_) | OpKind::Delete, Outcome::Ok(_)) => true,
            (OpKind::Cas { .. }, Outcome::Ok(OpResult::Cas { succeeded, .. })) => *succeeded,
            _ => false,
        })
        .map(|op| (op.invoke, op.complete.unwrap_or(u64::MAX)))
        .collect();
    // Who may observe a dropped operation's effect: the kept operations, and the dropped
    // compare-and-sets that write (see `sound_to_drop`).
    let dropped_writes: Vec<&Operation> = dropped
        .iter()
        .copied()
        .filter(|op| !changes_nothing(op) && !matches!(op.kind, OpKind::Get | OpKind::Delete))
        .collect();
    let observers: Vec<&Operation> = kept
        .iter()
        .copied()
        .chain(
            dropped_writes
                .iter()
                .copied()
                .filter(|op| matches!(op.kind, OpKind::Cas { .. })),
        )
        .collect();
    let tellers = if drops_in_order(&dropped_writes) {
        kept
    } else {
        &observers[..]
    };
    let told_apart: HashSet<&[u8]> = tellers.iter().flat_map(|op| told_apart(op)).collect();
    // Whether an observer matching `observes` may see the state `o` leaves behind. An observer
    // with an unknown outcome counts as completing at +infinity.
    let observed = |o: &Operation, observes: &dyn Fn(&Operation) -> bool| {
        // Anything invoked after this instant is behind a write that follows `o`.
        let shield = match (&o.outcome, o.complete) {
            (Outcome::Ok(_), Some(complete)) => writes
                .iter()
                .filter(|&&(invoke, _)| invoke > complete)
                .map(|&(_, complete)| complete)
                .min()
                .unwrap_or(u64::MAX),
            _ => u64::MAX,
        };
        observers.iter().any(|r| {
            let complete = match r.outcome {
                Outcome::Ok(_) => r.complete,
                Outcome::Unknown => None,
                Outcome::Fail => return false,
            };
            observes(r) && complete.is_none_or(|c| c >= o.invoke) && r.invoke <= shield
        })
    };
    let refused_unseen = |r: &Operation| {
        matches!(
            r.outcome,
            Outcome::Ok(OpResult::Cas {
                succeeded: false,
                current: None
            })
        )
    };
    dropped
        .iter()
        .map(|op| {
            if changes_nothing(op) {
                return true;
            }
            match &op.kind {
                OpKind::Get => true,
                OpKind::Set(value) | OpKind::Cas { new: value, .. } => {
                    !told_apart.contains(value.as_slice())
                        && !observed(op, &|r| {
                            matches!(r.outcome, Outcome::Ok(OpResult::Deleted { existed: true }))
                                || refused_unseen(r)
                        })
                }
                OpKind::Delete => !observed(op, &|r| {
                    matches!(
                        r.outcome,
                        Outcome::Ok(OpResult::Read(None))
                            | Outcome::Ok(OpResult::Deleted { existed: false })
                            | Outcome::Ok(OpResult::Cas {
                                succeeded: false,
                                current: None | Some(Seen { value: None }),
                            })
                    ) || matches!(r.kind, OpKind::Cas { expect: None, .. })
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Generous budget for the small histories.
    const SMALL_BUDGET: Duration = Duration::from_secs(10);
    /// Budget for the long random history; the test asserts it finishes inside.
    const LONG_BUDGET: Duration = Duration::from_secs(10);

    fn op(
        id: u64,
        key: &str,
        kind: OpKind,
        invoke: u64,
        complete: u64,
        outcome: Outcome,
    ) -> Operation {
        Operation {
            id,
            client: id,
            key: key.as_bytes().to_vec(),
            kind,
            invoke,
            complete: Some(complete),
            outcome,
        }
    }

    fn set(id: u64, key: &str, value: &str, invoke: u64, complete: u64) -> Operation {
        op(
            id,
            key,
            OpKind::Set(value.as_bytes().to_vec()),
            invoke,
            complete,
            Outcome::Ok(OpResult::Written),
        )
    }

    fn get(id: u64, key: &str, seen: Option<&str>, invoke: u64, complete: u64) -> Operation {
        op(
            id,
            key,
            OpKind::Get,
            invoke,
            complete,
            Outcome::Ok(OpResult::Read(seen.map(|s| s.as_bytes().to_vec()))),
        )
    }

    fn del(id: u64, key: &str, existed: bool, invoke: u64, complete: u64) -> Operation {
        op(
            id,
            key,
            OpKind::Delete,
            invoke,
            complete,
            Outcome::Ok(OpResult::Deleted { existed }),
        )
    }

    fn unknown_set(id: u64, key: &str, value: &str, invoke: u64) -> Operation {
        Operation {
            complete: None,
            outcome: Outcome::Unknown,
            ..set(id, key, value, invoke, invoke)
        }
    }

    fn failed_set(id: u64, key: &str, value: &str, invoke: u64, complete: u64) -> Operation {
        Operation {
            outcome: Outcome::Fail,
            ..set(id, key, value, invoke, complete)
        }
    }

    /// A compare-and-set of `key` from `expect` to `new` with a known answer; `current` is what
    /// a failed one saw, when it says (`Some(None)`: the key was absent).
    #[allow(clippy::too_many_arguments)]
    fn cas(
        id: u64,
        key: &str,
        expect: Option<&str>,
        new: &str,
        invoke: u64,
        complete: u64,
        succeeded: bool,
        current: Option<Option<&str>>,
    ) -> Operation {
        op(
            id,
            key,
            OpKind::Cas {
                expect: expect.map(|e| e.as_bytes().to_vec()),
                new: new.as_bytes().to_vec(),
                mod_revision: None,
            },
            invoke,
            complete,
            Outcome::Ok(OpResult::Cas {
                succeeded,
                current: current.map(|c| Seen {
                    value: c.map(|v| v.as_bytes().to_vec()),
                }),
            }),
        )
    }

    fn cas_ok(
        id: u64,
        key: &str,
        expect: Option<&str>,
        new: &str,
        invoke: u64,
        complete: u64,
    ) -> Operation {
        cas(id, key, expect, new, invoke, complete, true, None)
    }

    fn unknown_cas(id: u64, key: &str, expect: Option<&str>, new: &str, invoke: u64) -> Operation {
        Operation {
            complete: None,
            outcome: Outcome::Unknown,
            ..cas_ok(id, key, expect, new, invoke, invoke)
        }
    }

    fn verdict(ops: &[Operation]) -> Verdict {
        check_operations(ops, SMALL_BUDGET)
    }

    fn assert_linearizable(ops: &[Operation]) {
        let v = verdict(ops);
        assert_eq!(v, Verdict::Linearizable, "history:\n{}", summary(ops));
    }

    /// Asserts a violation on `key`, with a minimal sub-history of that key's operations that
    /// is no larger than the input and still fails on its own. Returns it.
    fn assert_violation(ops: &[Operation], key: &str) -> Vec<Operation> {
        let Verdict::NotLinearizable {
            key: bad_key,
            minimal_subhistory,
        } = verdict(ops)
        else {
            panic!("expected a violation on {key}: {:?}", verdict(ops));
        };
        assert_eq!(bad_key, key.as_bytes());
        assert!(!minimal_subhistory.is_empty());
        assert!(minimal_subhistory.len() <= ops.len());
        for op in &minimal_subhistory {
            assert_eq!(op.key, key.as_bytes());
            assert!(ops.contains(op), "{op:?} is not from the input");
        }
        match verdict(&minimal_subhistory) {
            Verdict::NotLinearizable { key: again, .. } => assert_eq!(again, key.as_bytes()),
            other => panic!("minimal sub-history passes: {other:?}"),
        }
        minimal_subhistory
    }

    /// One short line per operation, for failure messages.
    fn summary(ops: &[Operation]) -> String {
        ops.iter()
            .map(|op| {
                format!(
                    "#{} {} {:?} [{}, {:?}] {:?}\n",
                    op.id,
                    String::from_utf8_lossy(&op.key),
                    op.kind,
                    op.invoke,
                    op.complete,
                    op.outcome
                )
            })
            .collect()
    }

    fn ids(ops: &[Operation]) -> Vec<u64> {
        let mut ids: Vec<u64> = ops.iter().map(|op| op.id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_linearizable(&[]);
        assert!(check(&History::new(), SMALL_BUDGET).is_linearizable());
    }

    #[test]
    fn sequential_history_is_linearizable() {
        assert_linearizable(&[
            get(1, "k", None, 0, 1),
            set(2, "k", "a", 2, 3),
            get(3, "k", Some("a"), 4, 5),
            set(4, "k", "b", 6, 7),
            get(5, "k", Some("b"), 8, 9),
            del(6, "k", true, 10, 11),
            get(7, "k", None, 12, 13),
            del(8, "k", false, 14, 15),
        ]);
    }

    #[test]
    fn concurrent_read_may_see_old_or_new_value() {
        for seen in [Some("a"), Some("b")] {
            assert_linearizable(&[
                set(1, "k", "a", 0, 10),
                set(2, "k", "b", 20, 40),
                get(3, "k", seen, 25, 35),
            ]);
        }
    }

    #[test]
    fn concurrent_writes_and_reads_linearizable() {
        // Two overlapping writes; readers fix the order b then a, and a reader overlapping
        // both may see either.
        assert_linearizable(&[
            set(1, "k", "a", 0, 100),
            set(2, "k", "b", 10, 90),
            get(3, "k", Some("b"), 20, 30),
            get(4, "k", Some("a"), 40, 95),
            get(5, "k", Some("a"), 110, 120),
            del(6, "k", true, 115, 130),
            get(7, "k", Some("a"), 116, 125),
            get(8, "k", None, 135, 140),
        ]);
    }

    #[test]
    fn reads_that_touch_a_write_count_as_concurrent() {
        // The read is invoked at the instant the write completes: either order is allowed.
        assert_linearizable(&[set(1, "k", "a", 0, 10), get(2, "k", None, 10, 20)]);
    }

    #[test]
    fn stale_read_after_completed_write_is_a_violation() {
        let ops = [
            set(1, "k", "a", 0, 10),
            set(2, "k", "b", 20, 30),
            get(3, "k", Some("a"), 40, 50),
        ];
        let minimal = assert_violation(&ops, "k");
        assert_eq!(ids(&minimal), vec![1, 2, 3]);
    }

    #[test]
    fn read_of_initial_value_after_completed_write_is_a_violation() {
        let ops = [set(1, "k", "a", 0, 10), get(2, "k", None, 20, 30)];
        assert_violation(&ops, "k");
    }

    #[test]
    fn lost_acknowledged_write_is_a_violation() {
        // b was acknowledged, then every later read sees the older a again.
        let ops = [
            set(1, "k", "a", 0, 10),
            get(2, "k", Some("a"), 12, 18),
            set(3, "k", "b", 20, 30),
            get(4, "k", Some("b"), 32, 38),
            get(5, "k", Some("a"), 40, 50),
            get(6, "k", Some("a"), 60, 70),
        ];
        let minimal = assert_violation(&ops, "k");
        assert!(minimal.len() <= 3, "{}", summary(&minimal));
    }

    #[test]
    fn read_then_later_read_of_older_value_is_a_violation() {
        // Both reads overlap the write of b, but not each other: once b was seen, a is gone.
        let ops = [
            set(1, "k", "a", 0, 10),
            set(2, "k", "b", 20, 100),
            get(3, "k", Some("b"), 30, 40),
            get(4, "k", Some("a"), 50, 60),
        ];
        let minimal = assert_violation(&ops, "k");
        assert_eq!(ids(&minimal), vec![1, 2, 3, 4]);
    }

    #[test]
    fn overlapping_reads_may_disagree_while_a_write_is_in_flight() {
        // Same as above but the reads overlap: a then b is a valid order.
        assert_linearizable(&[
            set(1, "k", "a", 0, 10),
            set(2, "k", "b", 20, 100),
            get(3, "k", Some("b"), 30, 55),
            get(4, "k", Some("a"), 50, 60),
        ]);
    }

    #[test]
    fn unknown_write_that_took_effect_is_linearizable() {
        assert_linearizable(&[
            set(1, "k", "a", 0, 10),
            unknown_set(2, "k", "b", 20),
            get(3, "k", Some("a"), 30, 40),
            get(4, "k", Some("b"), 1_000, 1_010),
            get(5, "k", Some("b"), 2_000, 2_010),
        ]);
    }

    #[test]
    fn unknown_write_that_never_took_effect_is_linearizable() {
        assert_linearizable(&[
            set(1, "k", "a", 0, 10),
            unknown_set(2, "k", "b", 20),
            get(3, "k", Some("a"), 30, 40),
            get(4, "k", Some("a"), 1_000, 1_010),
            unknown_set(5, "k", "c", 1_100),
            del(6, "k", true, 2_000, 2_010),
            get(7, "k", None, 3_000, 3_010),
        ]);
    }

    #[test]
    fn unknown_write_cannot_take_effect_before_its_invocation() {
        let ops = [
            set(1, "k", "a", 0, 10),
            get(2, "k", Some("b"), 20, 30),
            unknown_set(3, "k", "b", 40),
        ];
        assert_violation(&ops, "k");
    }

    #[test]
    fn unknown_write_cannot_be_undone_once_seen() {
        let ops = [
            set(1, "k", "a", 0, 10),
            unknown_set(2, "k", "b", 20),
            get(3, "k", Some("b"), 30, 40),
            get(4, "k", Some("a"), 50, 60),
        ];
        assert_violation(&ops, "k");
    }

    #[test]
    fn unknown_operations_accept_any_answer() {
        let unknown_get = Operation {
            kind: OpKind::Get,
            ..unknown_set(2, "k", "", 5)
        };
        let unknown_delete = Operation {
            kind: OpKind::Delete,
            ..unknown_set(3, "k", "", 6)
        };
        assert_linearizable(&[
            set(1, "k", "a", 0, 10),
            unknown_get,
            unknown_delete,
            get(4, "k", None, 20, 30),
        ]);
    }

    #[test]
    fn failed_writes_are_dropped() {
        let mut ops = vec![
            set(1, "k", "a", 0, 10),
            failed_set(2, "k", "b", 20, 30),
            get(3, "k", Some("a"), 40, 50),
        ];
        assert_linearizable(&ops);
        // A failed write that is seen anyway is a violation; the failed op is not reported.
        ops.push(get(4, "k", Some("b"), 60, 70));
        let minimal = assert_violation(&ops, "k");
        assert!(
            !minimal.iter().any(|op| op.id == 2),
            "{}",
            summary(&minimal)
        );
    }

    #[test]
    fn read_of_a_value_never_written_is_a_violation() {
        let ops = [
            set(1, "k", "a", 0, 10),
            set(2, "k", "b", 5, 15),
            get(3, "k", Some("zzz"), 7, 20),
        ];
        let minimal = assert_violation(&ops, "k");
        assert_eq!(ids(&minimal), vec![3]);
    }

    #[test]
    fn delete_existed_flag_must_match_the_state() {
        // Deleting a key that was just written cannot find it absent.
        let ops = [set(1, "k", "a", 0, 10), del(2, "k", false, 20, 30)];
        assert_violation(&ops, "k");
        // Deleting a key never written cannot find it present.
        let minimal = assert_violation(&[del(1, "k", true, 0, 10)], "k");
        assert_eq!(ids(&minimal), vec![1]);
        // Two concurrent deletes cannot both find the key present.
        let ops = [
            set(1, "k", "a", 0, 10),
            del(2, "k", true, 20, 40),
            del(3, "k", true, 25, 45),
            get(4, "k", None, 50, 60),
        ];
        let minimal = assert_violation(&ops, "k");
        assert_eq!(ids(&minimal), vec![1, 2, 3]);
        // One of them finding it absent is fine, in either order of invocation.
        assert_linearizable(&[
            set(1, "k", "a", 0, 10),
            del(2, "k", false, 20, 40),
            del(3, "k", true, 25, 45),
        ]);
    }

    /// Proves: compare-and-sets that chain, fail when the value moved on, and create an absent
    /// key, in sequence and overlapping, are accepted.
    #[test]
    fn cas_history_is_linearizable() {
        assert_linearizable(&[
            cas_ok(1, "k", None, "a", 0, 10),
            cas_ok(2, "k", Some("a"), "b", 20, 30),
            // Expected a, found b: fails, and says so.
            cas(3, "k", Some("a"), "c", 40, 50, false, Some(Some("b"))),
            cas(4, "k", None, "c", 40, 50, false, None),
            get(5, "k", Some("b"), 60, 70),
            del(6, "k", true, 80, 90),
            cas(7, "k", Some("b"), "d", 100, 110, false, Some(None)),
            cas_ok(8, "k", None, "d", 120, 130),
            // Two racing from d: one wins, the other sees the winner's value.
            cas_ok(9, "k", Some("d"), "e", 140, 160),
            cas(10, "k", Some("d"), "f", 145, 165, false, Some(Some("e"))),
            get(11, "k", Some("e"), 170, 180),
        ]);
    }

    /// Proves the checker has teeth for compare-and-set: two that start from the same value
    /// cannot both succeed (a lost update), whatever the overlap.
    #[test]
    fn two_cas_from_the_same_value_both_succeeding_is_a_violation() {
        let ops = [
            set(1, "k", "a", 0, 10),
            cas_ok(2, "k", Some("a"), "b", 20, 40),
            cas_ok(3, "k", Some("a"), "c", 25, 45),
        ];
        let minimal = assert_violation(&ops, "k");
        assert_eq!(ids(&minimal), vec![1, 2, 3]);
        // Also when both create the key.
        let ops = [
            cas_ok(1, "k", None, "b", 0, 20),
            cas_ok(2, "k", None, "c", 5, 25),
        ];
        assert_violation(&ops, "k");
    }

    /// Proves: a failed compare-and-set is an observation — failing while the key held the
    /// expected value, or seeing a value the key did not hold, is caught.
    #[test]
    fn failed_cas_must_agree_with_the_state() {
        // Nothing else touched k: the comparison must have held.
        let ops = [
            set(1, "k", "a", 0, 10),
            cas(2, "k", Some("a"), "b", 20, 30, false, None),
        ];
        let minimal = assert_violation(&ops, "k");
        assert_eq!(ids(&minimal), vec![1, 2]);
        // Failing on an absent key that was never written.
        assert_violation(&[cas(1, "k", None, "b", 0, 10, false, None)], "k");
        // Seeing a stale value in its failure answer.
        let ops = [
            set(1, "k", "a", 0, 10),
            set(2, "k", "b", 20, 30),
            cas(3, "k", Some("x"), "c", 40, 50, false, Some(Some("a"))),
        ];
        assert_violation(&ops, "k");
        // Seeing the key absent while it held a value.
        let ops = [
            set(1, "k", "a", 0, 10),
            cas(2, "k", Some("x"), "c", 20, 30, false, Some(None)),
        ];
        assert_violation(&ops, "k");
        // A failure that sees the value it expected contradicts itself.
        assert_violation(
            &[cas(1, "k", Some("a"), "c", 20, 30, false, Some(Some("a")))],
            "k",
        );
    }

    /// Proves: a compare-and-set with an unknown outcome may have taken effect (later, even
    /// chained through another unknown one) or not, but only from the value it expected, and
    /// not before its invocation.
    #[test]
    fn cas_with_unknown_outcome_may_or_may_not_take_effect() {
        // Took effect.
        assert_linearizable(&[
            set(1, "k", "a", 0, 10),
            unknown_cas(2, "k", Some("a"), "b", 20),
            get(3, "k", Some("b"), 1_000, 1_010),
        ]);
        // Never took effect.
        assert_linearizable(&[
            set(1, "k", "a", 0, 10),
            unknown_cas(2, "k", Some("a"), "b", 20),
            get(3, "k", Some("a"), 1_000, 1_010),
            cas_ok(4, "k", Some("a"), "c", 1_100, 1_110),
            get(5, "k", Some("c"), 1_200, 1_210),
        ]);
        // Two unknown ones in a row, the second expecting what the first wrote, the last one
        // invoked first: only both together explain the read.
        assert_linearizable(&[
            set(1, "k", "a", 0, 10),
            unknown_cas(2, "k", Some("b"), "c", 20),
            unknown_cas(3, "k", Some("a"), "b", 30),
            get(4, "k", Some("c"), 1_000, 1_010),
        ]);
        // An unknown Set, then an unknown compare-and-set from its value.
        assert_linearizable(&[
            set(1, "k", "a", 0, 10),
            unknown_set(2, "k", "b", 20),
            unknown_cas(3, "k", Some("b"), "c", 30),
            get(4, "k", Some("c"), 1_000, 1_010),
        ]);
        // It could not take effect: the key no longer held a when it was invoked.
        let ops = [
            set(1, "k", "a", 0, 10),
            set(2, "k", "x", 20, 30),
            unknown_cas(3, "k", Some("a"), "b", 40),
            get(4, "k", Some("b"), 1_000, 1_010),
        ];
        assert_violation(&ops, "k");
        // Not before its invocation.
        let ops = [
            set(1, "k", "a", 0, 10),
            get(2, "k", Some("b"), 20, 30),
            unknown_cas(3, "k", Some("a"), "b", 40),
        ];
        assert_violation(&ops, "k");
        // Once its value was seen, it cannot be undone.
        let ops = [
            set(1, "k", "a", 0, 10),
            unknown_cas(2, "k", Some("a"), "b", 20),
            get(3, "k", Some("b"), 30, 40),
            get(4, "k", Some("a"), 50, 60),
        ];
        assert_violation(&ops, "k");
    }

    /// Proves: compare-and-sets mixed with gets, sets and deletes are checked together, both
    /// ways: a valid mix passes, and a CAS that succeeded from a value a later set replaced is
    /// caught.
    #[test]
    fn cas_mixed_with_get_set_and_delete() {
        assert_linearizable(&[
            set(1, "k", "a", 0, 10),
            cas_ok(2, "k", Some("a"), "b", 5, 30),
            set(3, "k", "c", 15, 25),
            // Order a, c... then b cannot follow (it expected a), so: a, b, c.
            get(4, "k", Some("c"), 40, 50),
            del(5, "k", true, 60, 70),
            cas(6, "k", Some("c"), "d", 65, 80, false, Some(None)),
            unknown_set(7, "k", "e", 90),
            cas(8, "k", None, "f", 100, 110, false, Some(Some("e"))),
            get(9, "k", Some("e"), 120, 130),
        ]);
        let ops = [
            set(1, "k", "a", 0, 10),
            set(2, "k", "c", 20, 30),
            cas_ok(3, "k", Some("a"), "b", 40, 50),
        ];
        assert_violation(&ops, "k");
        // The failed CAS pins the order: c came after b, so the final read of b is stale.
        let ops = [
            set(1, "k", "a", 0, 10),
            cas_ok(2, "k", Some("a"), "b", 20, 100),
            set(3, "k", "c", 20, 100),
            cas(4, "k", Some("a"), "x", 110, 120, false, Some(Some("c"))),
            get(5, "k", Some("b"), 130, 140),
        ];
        assert_violation(&ops, "k");
    }

    #[test]
    fn keys_are_independent_and_the_bad_key_is_named() {
        let ops = [
            set(1, "a", "x", 0, 10),
            set(2, "b", "x", 0, 10),
            get(3, "a", Some("x"), 20, 30),
            // Key a's value read on b: linearizable only if keys were mixed up.
            set(4, "a", "y", 40, 50),
            get(5, "b", Some("y"), 60, 70),
            get(6, "c", None, 60, 70),
        ];
        let minimal = assert_violation(&ops, "b");
        assert_eq!(ids(&minimal), vec![5]);
    }

    #[test]
    fn malformed_histories_are_reported_as_unknown() {
        let mut wrong_answer = get(1, "k", None, 0, 10);
        wrong_answer.outcome = Outcome::Ok(OpResult::Written);
        let Verdict::Unknown { reason } = verdict(&[wrong_answer]) else {
            panic!("wrong answer kind accepted");
        };
        assert!(reason.contains("malformed"), "{reason}");

        let backwards = set(2, "k", "a", 10, 5);
        let Verdict::Unknown { reason } = verdict(&[backwards]) else {
            panic!("completion before invocation accepted");
        };
        assert!(reason.contains("operation 2"), "{reason}");
    }

    #[test]
    fn ok_answer_without_completion_still_constrains_the_state() {
        let mut read = get(2, "k", Some("b"), 20, 0);
        read.complete = None;
        assert_violation(&[set(1, "k", "a", 0, 10), read.clone()], "k");
        assert_linearizable(&[set(1, "k", "b", 0, 10), read]);
    }

    #[test]
    fn exhausted_budget_gives_unknown() {
        let ops = random_linearizable_history(&GeneratorParams {
            seed: 7,
            ops: 200,
            keys: 2,
            ..GeneratorParams::default()
        });
        let Verdict::Unknown { reason } = check_operations(&ops, Duration::ZERO) else {
            panic!("zero budget decided");
        };
        assert!(reason.contains("time budget"), "{reason}");
    }

    #[test]
    fn violation_appended_to_a_long_history_shrinks_to_a_few_ops() {
        let mut ops = random_linearizable_history(&GeneratorParams {
            seed: 11,
            ops: 2_000,
            keys: 3,
            // An unknown Delete, pending forever, would explain the read below.
            unknown_per_mille: 0,
            ..GeneratorParams::default()
        });
        let end = ops.iter().filter_map(|op| op.complete).max().unwrap_or(0);
        // A value written and acknowledged, then a read of the initial state long after.
        ops.push(set(1_000_000, "key1", "fresh", end + 10, end + 20));
        ops.push(get(1_000_001, "key1", None, end + 30, end + 40));
        let key_ops = ops.iter().filter(|op| op.key == b"key1").count();
        let minimal = assert_violation(&ops, "key1");
        assert!(minimal.len() < key_ops);
        assert_eq!(ids(&minimal), vec![1_000_000, 1_000_001]);
    }

    #[test]
    fn stale_read_in_the_middle_of_a_long_history_with_timeouts_is_found_and_shrunk() {
        let mut ops = random_linearizable_history(&GeneratorParams {
            seed: 3,
            ops: 20_000,
            keys: 5,
            clients: 10,
            unknown_per_mille: 20,
            ..GeneratorParams::default()
        });
        // Halfway through, make an acknowledged read of key2 return the value of an
        // acknowledged write that completed long before it was invoked (the newest such): a
        // stale read, as a node serving reads from an old state would give.
        const LONG_BEFORE: u64 = 500;
        let key = b"key2".to_vec();
        let read = (ops.len() / 2..ops.len())
            .find(|&i| {
                ops[i].key == key
                    && ops[i].kind == OpKind::Get
                    && matches!(ops[i].outcome, Outcome::Ok(_))
            })
            .expect("a read of key2");
        let invoke = ops[read].invoke;
        let stale = ops
            .iter()
            .filter(|op| op.key == key && op.outcome == Outcome::Ok(OpResult::Written))
            .filter(|op| op.complete.is_some_and(|c| c + LONG_BEFORE < invoke))
            .max_by_key(|op| op.complete)
            .map(|op| op.kind.clone());
        let Some(OpKind::Set(value)) = stale else {
            panic!("no old write of key2");
        };
        let read_id = ops[read].id;
        ops[read].outcome = Outcome::Ok(OpResult::Read(Some(value)));

        let started = Instant::now();
        let minimal = assert_violation(&ops, "key2");
        let elapsed = started.elapsed();
        eprintln!("found and shrunk to {} ops in {elapsed:?}", minimal.len());
        assert!(ids(&minimal).contains(&read_id), "{}", summary(&minimal));
        assert!(minimal.len() <= 4, "{}", summary(&minimal));
    }

    /// Shape of a random linearizable history.
    struct GeneratorParams {
        seed: u64,
        ops: usize,
        keys: usize,
        clients: u64,
        /// Per mille of operations that time out (half of them take effect anyway).
        unknown_per_mille: u32,
        /// Per mille of operations that fail (and do not take effect).
        fail_per_mille: u32,
        /// Percent of operations that are compare-and-sets (taken from the reads and writes
        /// alike; 0 leaves the mix, and the random stream, as without them).
        cas_percent: u32,
    }

    impl Default for GeneratorParams {
        fn default() -> Self {
            GeneratorParams {
                seed: 1,
                ops: 1_000,
                keys: 5,
                clients: 10,
                unknown_per_mille: 20,
                fail_per_mille: 20,
                cas_percent: 0,
            }
        }
    }

    /// Clients issue operations one after another, each overlapping those of other clients;
    /// each operation that takes effect gets a linearization point inside its interval, and the
    /// answers come from running a sequential map in the order of those points. So the history
    /// is linearizable by construction.
    fn random_linearizable_history(params: &GeneratorParams) -> Vec<Operation> {
        const MAX_THINK_TIME: u64 = 5;
        const MAX_HALF_LATENCY: u64 = 60;
        let mut rng = StdRng::seed_from_u64(params.seed);
        let mut client_free_at = vec![0u64; params.clients as usize];
        // (operation, linearization point if it takes effect)
        let mut drafts: Vec<(Operation, Option<u64>)> = Vec::with_capacity(params.ops);
        for id in 0..params.ops as u64 {
            let client = id % params.clients;
            let invoke = client_free_at[client as usize] + rng.gen_range(0..=MAX_THINK_TIME);
            let point = invoke + rng.gen_range(0..=MAX_HALF_LATENCY);
            let complete = point + rng.gen_range(0..=MAX_HALF_LATENCY);
            client_free_at[client as usize] = complete + 1;
            let key = format!("key{}", rng.gen_range(0..params.keys)).into_bytes();
            let roll = rng.gen_range(0..100);
            let kind = if roll < params.cas_percent {
                // What it expects is chosen below, at its linearization point.
                OpKind::Cas {
                    expect: None,
                    new: format!("v{id}").into_bytes(),
                    mod_revision: None,
                }
            } else {
                match roll {
                    0..=49 => OpKind::Get,
                    50..=84 => OpKind::Set(format!("v{id}").into_bytes()),
                    _ => OpKind::Delete,
                }
            };
            let roll = rng.gen_range(0..1_000);
            let (outcome, takes_effect) = if roll < params.unknown_per_mille {
                (Outcome::Unknown, rng.gen_bool(0.5))
            } else if roll < params.unknown_per_mille + params.fail_per_mille {
                (Outcome::Fail, false)
            } else {
                // Placeholder answer, filled in below.
                (Outcome::Ok(OpResult::Written), true)
            };
            let op = Operation {
                id,
                client,
                key,
                kind,
                invoke,
                complete: Some(complete),
                outcome,
            };
            drafts.push((op, takes_effect.then_some(point)));
        }
        let mut order: Vec<usize> = (0..drafts.len())
            .filter(|&i| drafts[i].1.is_some())
            .collect();
        order.sort_by_key(|&i| (drafts[i].1, i));
        let mut map: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        // The value each key held before its current one, for compare-and-sets that fail.
        let mut previous: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for i in order {
            let op = &mut drafts[i].0;
            if let OpKind::Cas { expect, .. } = &mut op.kind {
                // Most expect the value the key holds at their point (as a client that just
                // read it would), the others an older value or the key absent.
                *expect = match rng.gen_range(0..10) {
                    0..=5 => map.get(&op.key).cloned(),
                    6..=8 => previous.get(&op.key).cloned(),
                    _ => None,
                };
            }
            let before = map.get(&op.key).cloned();
            let answer = match &op.kind {
                OpKind::Get => OpResult::Read(map.get(&op.key).cloned()),
                OpKind::Set(value) => {
                    map.insert(op.key.clone(), value.clone());
                    OpResult::Written
                }
                OpKind::Delete => OpResult::Deleted {
                    existed: map.remove(&op.key).is_some(),
                },
                OpKind::Cas { expect, new, .. } => {
                    if map.get(&op.key) == expect.as_ref() {
                        map.insert(op.key.clone(), new.clone());
                        OpResult::Cas {
                            succeeded: true,
                            current: None,
                        }
                    } else {
                        // Half the failures say what they found instead.
                        let current = op.id.is_multiple_of(2).then(|| Seen {
                            value: map.get(&op.key).cloned(),
                        });
                        OpResult::Cas {
                            succeeded: false,
                            current,
                        }
                    }
                }
            };
            if let Some(before) = before.filter(|b| map.get(&op.key) != Some(b)) {
                previous.insert(op.key.clone(), before);
            }
            if op.outcome != Outcome::Unknown {
                op.outcome = Outcome::Ok(answer);
            }
        }
        drafts.into_iter().map(|(op, _)| op).collect()
    }

    #[test]
    fn random_histories_are_linearizable() {
        for seed in 0..20 {
            let ops = random_linearizable_history(&GeneratorParams {
                seed,
                ops: 500,
                keys: 2,
                unknown_per_mille: 100,
                ..GeneratorParams::default()
            });
            assert_eq!(verdict(&ops), Verdict::Linearizable, "seed {seed}");
        }
    }

    #[test]
    fn random_histories_with_one_corrupted_read_fail() {
        let mut found = 0;
        for seed in 0..10 {
            let mut ops = random_linearizable_history(&GeneratorParams {
                seed,
                ops: 300,
                keys: 2,
                ..GeneratorParams::default()
            });
            // Make one acknowledged read see a value nobody wrote.
            let Some(read) = ops
                .iter_mut()
                .rev()
                .find(|op| op.kind == OpKind::Get && matches!(op.outcome, Outcome::Ok(_)))
            else {
                continue;
            };
            read.outcome = Outcome::Ok(OpResult::Read(Some(b"never written".to_vec())));
            let key = String::from_utf8(read.key.clone()).expect("utf8 key");
            let minimal = assert_violation(&ops, &key);
            assert_eq!(minimal.len(), 1, "seed {seed}: {}", summary(&minimal));
            found += 1;
        }
        assert!(found > 0);
    }

    /// Linearizability by brute force: tries every order of each key's operations that respects
    /// real time, stopping once every known operation is placed (unknown ones may stay out).
    fn brute_force_linearizable(ops: &[Operation]) -> bool {
        fn completion(op: &Operation) -> Option<u64> {
            match op.outcome {
                Outcome::Ok(_) => op.complete,
                Outcome::Fail | Outcome::Unknown => None,
            }
        }
        fn apply(op: &Operation, state: &Option<Vec<u8>>) -> Option<Option<Vec<u8>>> {
            let answer = match &op.outcome {
                Outcome::Ok(answer) => Some(answer),
                Outcome::Fail | Outcome::Unknown => None,
            };
            match (&op.kind, answer) {
                (OpKind::Get, None) => Some(state.clone()),
                (OpKind::Get, Some(OpResult::Read(seen))) => (seen == state).then(|| state.clone()),
                (OpKind::Set(value), _) => Some(Some(value.clone())),
                (OpKind::Delete, None) => Some(None),
                (OpKind::Delete, Some(OpResult::Deleted { existed })) => {
                    (state.is_some() == *existed).then_some(None)
                }
                (OpKind::Cas { expect, new, .. }, None) => Some(if state == expect {
                    Some(new.clone())
                } else {
                    state.clone()
                }),
                (
                    OpKind::Cas { expect, new, .. },
                    Some(OpResult::Cas {
                        succeeded: true, ..
                    }),
                ) => (state == expect).then(|| Some(new.clone())),
                (
                    OpKind::Cas { expect, .. },
                    Some(OpResult::Cas {
                        succeeded: false,
                        current,
                    }),
                ) => (state != expect && current.as_ref().is_none_or(|c| c.value == *state))
                    .then(|| state.clone()),
                _ => None,
            }
        }
        fn go(ops: &[&Operation], used: &mut [bool], state: &Option<Vec<u8>>) -> bool {
            let done = (0..ops.len()).all(|i| used[i] || !matches!(ops[i].outcome, Outcome::Ok(_)));
            if done {
                return true;
            }
            for i in 0..ops.len() {
                let blocked = (0..ops.len()).any(|j| {
                    !used[j] && j != i && completion(ops[j]).is_some_and(|c| c < ops[i].invoke)
                });
                if used[i] || blocked {
                    continue;
                }
                if let Some(next) = apply(ops[i], state) {
                    used[i] = true;
                    let found = go(ops, used, &next);
                    used[i] = false;
                    if found {
                        return true;
                    }
                }
            }
            false
        }
        let mut keys: Vec<&[u8]> = ops.iter().map(|op| op.key.as_slice()).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.iter().all(|key| {
            let key_ops: Vec<&Operation> = ops
                .iter()
                .filter(|op| op.key == *key && op.outcome != Outcome::Fail)
                .collect();
            go(&key_ops, &mut vec![false; key_ops.len()], &None)
        })
    }

    /// A small arbitrary history (linearizable or not) over few keys and values, with
    /// compare-and-sets among its operations when `cas`.
    fn small_random_history_of(rng: &mut StdRng, cas: bool) -> Vec<Operation> {
        const VALUES: [&str; 3] = ["a", "b", "c"];
        let kinds = if cas { 4 } else { 3 };
        let len = rng.gen_range(1..=7);
        (0..len)
            .map(|id| {
                let key = if rng.gen_bool(0.8) { "k" } else { "j" };
                let invoke = rng.gen_range(0..20);
                let complete = invoke + rng.gen_range(0..10);
                let value = |rng: &mut StdRng| VALUES[rng.gen_range(0..VALUES.len())];
                let (kind, answer) = match rng.gen_range(0..kinds) {
                    0 => {
                        let seen = rng.gen_bool(0.7).then(|| value(rng).as_bytes().to_vec());
                        (OpKind::Get, OpResult::Read(seen))
                    }
                    1 => (
                        OpKind::Set(value(rng).as_bytes().to_vec()),
                        OpResult::Written,
                    ),
                    3 => {
                        let expect = rng.gen_bool(0.7).then(|| value(rng).as_bytes().to_vec());
                        let new = value(rng).as_bytes().to_vec();
                        let succeeded = rng.gen_bool(0.5);
                        let current = (!succeeded && rng.gen_bool(0.5)).then(|| Seen {
                            value: rng.gen_bool(0.7).then(|| value(rng).as_bytes().to_vec()),
                        });
                        (
                            OpKind::Cas {
                                expect,
                                new,
                                mod_revision: None,
                            },
                            OpResult::Cas { succeeded, current },
                        )
                    }
                    _ => (
                        OpKind::Delete,
                        OpResult::Deleted {
                            existed: rng.gen_bool(0.5),
                        },
                    ),
                };
                let outcome = match rng.gen_range(0..10) {
                    0 | 1 => Outcome::Unknown,
                    2 => Outcome::Fail,
                    _ => Outcome::Ok(answer),
                };
                Operation {
                    id,
                    client: id,
                    key: key.as_bytes().to_vec(),
                    kind,
                    invoke,
                    complete: Some(complete),
                    outcome,
                }
            })
            .collect()
    }

    /// Checks `HISTORIES` small random histories (with compare-and-sets when `cas`) against the
    /// brute force: no missed violation, no false one, and every minimal sub-history fails.
    fn agrees_with_brute_force(seed: u64, cas: bool) {
        const HISTORIES: usize = 3_000;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut violations = 0;
        for round in 0..HISTORIES {
            let ops = small_random_history_of(&mut rng, cas);
            let expected = brute_force_linearizable(&ops);
            match verdict(&ops) {
                Verdict::Linearizable => {
                    assert!(
                        expected,
                        "round {round}: missed violation in\n{}",
                        summary(&ops)
                    )
                }
                Verdict::NotLinearizable {
                    minimal_subhistory, ..
                } => {
                    assert!(
                        !expected,
                        "round {round}: false violation in\n{}",
                        summary(&ops)
                    );
                    assert!(
                        !brute_force_linearizable(&minimal_subhistory),
                        "round {round}: minimal sub-history passes:\n{}",
                        summary(&minimal_subhistory)
                    );
                    violations += 1;
                }
                other => panic!("round {round}: {other:?}"),
            }
        }
        // The generator makes both kinds often enough for the comparison to mean something.
        assert!(
            violations > HISTORIES / 10 && violations < HISTORIES * 9 / 10,
            "{violations} violations in {HISTORIES}"
        );
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        agrees_with_brute_force(5, false);
    }

    /// Proves the compare-and-set model and the prunings that had to change for it (effects
    /// with a guard, an unknown compare-and-set right after another unknown operation) find
    /// exactly the linearizations a brute force finds.
    #[test]
    fn agrees_with_brute_force_on_small_random_histories_with_cas() {
        agrees_with_brute_force(15, true);
    }

    /// For linearizable histories X and any drop that `sound_to_drop` allows, what is left
    /// must still be linearizable: that is what makes the shrinker's result a witness.
    fn shrinking_is_sound(seed: u64, cas: bool) {
        const HISTORIES: usize = 3_000;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tried = 0;
        for round in 0..HISTORIES {
            let mut ops = small_random_history_of(&mut rng, cas);
            ops.retain(|op| op.key == b"k" && op.outcome != Outcome::Fail);
            if !brute_force_linearizable(&ops) {
                continue;
            }
            let refs: Vec<&Operation> = ops.iter().collect();
            let (dropped, kept): (Vec<&Operation>, Vec<&Operation>) =
                refs.iter().partition(|_| rng.gen_bool(0.4));
            if dropped.is_empty() || !sound_to_drop(&dropped, &kept) {
                continue;
            }
            tried += 1;
            let kept: Vec<Operation> = kept.into_iter().cloned().collect();
            assert!(
                brute_force_linearizable(&kept),
                "round {round}: dropping\n{}from\n{}broke it",
                summary(&dropped.into_iter().cloned().collect::<Vec<_>>()),
                summary(&ops)
            );
        }
        assert!(tried > HISTORIES / 10, "only {tried} drops tried");
    }

    #[test]
    fn shrinking_drops_only_what_no_linearization_needs() {
        shrinking_is_sound(6, false);
    }

    /// Proves the shrinker's rules for compare-and-sets (what they tell apart, what they
    /// observe) keep its minimal sub-histories witnesses.
    #[test]
    fn shrinking_drops_only_what_no_linearization_needs_with_cas() {
        shrinking_is_sound(16, true);
    }

    /// Proves the cut at a quiet Delete is sound: in linearizable histories, what is left after
    /// any quiet Delete is linearizable too.
    #[test]
    fn cutting_at_a_quiet_delete_keeps_linearizable_histories_linearizable() {
        const HISTORIES: usize = 3_000;
        let mut rng = StdRng::seed_from_u64(17);
        let mut tried = 0;
        for round in 0..HISTORIES {
            let mut ops = small_random_history_of(&mut rng, true);
            ops.retain(|op| op.key == b"k" && op.outcome != Outcome::Fail);
            if !brute_force_linearizable(&ops) {
                continue;
            }
            let refs: Vec<&Operation> = ops.iter().collect();
            for cut in quiet_deletes(&refs) {
                tried += 1;
                let rest: Vec<Operation> = after_cut(&refs, cut).into_iter().cloned().collect();
                assert!(
                    brute_force_linearizable(&rest),
                    "round {round}: cutting at #{} left\n{}from\n{}",
                    refs[cut].id,
                    summary(&rest),
                    summary(&ops)
                );
            }
        }
        assert!(tried > HISTORIES / 20, "only {tried} cuts tried");
    }

    /// Proves only Deletes that no known operation overlaps (touching included) are cuts, and
    /// unknown operations do not count.
    #[test]
    fn quiet_deletes_are_the_ones_nothing_known_overlaps() {
        let ops = [
            set(1, "k", "a", 0, 10),
            del(2, "k", true, 11, 20),
            // Touches the next Delete.
            get(3, "k", None, 21, 30),
            del(4, "k", false, 30, 40),
            unknown_set(5, "k", "b", 45),
            del(6, "k", false, 50, 60),
            get(7, "k", None, 55, 70),
            del(8, "k", false, 80, 90),
        ];
        let refs: Vec<&Operation> = ops.iter().collect();
        let quiet: Vec<u64> = quiet_deletes(&refs).iter().map(|&i| ops[i].id).collect();
        assert_eq!(quiet, vec![8, 2]);
    }

    /// Proves a witness no longer drags along every write since the start: a stale read at the
    /// end of a long chain of compare-and-sets shrinks to the chain since the last quiet Delete.
    #[test]
    fn stale_read_after_a_long_cas_chain_shrinks_to_the_chain_since_a_quiet_delete() {
        const OLD_CHAIN: u64 = 300;
        const NEW_CHAIN: u64 = 20;
        const STALE: u64 = 10;
        const STEP: u64 = 10;
        let mut ops = Vec::new();
        let mut id = 0;
        let mut chain = |ops: &mut Vec<Operation>, prefix: &str, len: u64, start: u64| {
            for i in 0..len {
                let expect = (i > 0).then(|| format!("{prefix}{}", i - 1));
                let invoke = start + i * STEP;
                id += 1;
                ops.push(cas_ok(
                    id,
                    "k",
                    expect.as_deref(),
                    &format!("{prefix}{i}"),
                    invoke,
                    invoke + STEP - 1,
                ));
                // A read overlapping each write, so the history is not all sequential.
                id += 1;
                ops.push(get(
                    id,
                    "k",
                    Some(&format!("{prefix}{i}")),
                    invoke + 5,
                    invoke + 12,
                ));
            }
            start + len * STEP + STEP
        };
        let end = chain(&mut ops, "a", OLD_CHAIN, 0);
        ops.push(del(1_000_000, "k", true, end, end + 5));
        let end = chain(&mut ops, "b", NEW_CHAIN, end + STEP);
        let stale = get(2_000_000, "k", Some(&format!("b{STALE}")), end, end + 5);
        ops.push(stale.clone());
        let minimal = assert_violation(&ops, "k");
        assert!(minimal.contains(&stale), "{}", summary(&minimal));
        assert!(
            minimal.iter().all(|op| op.id > 2 * OLD_CHAIN),
            "the old chain is not needed:\n{}",
            summary(&minimal)
        );
        // The writes b0 to b(STALE + 1), and the read.
        assert!(
            minimal.len() as u64 <= STALE + 3,
            "{} ops:\n{}",
            minimal.len(),
            summary(&minimal)
        );
    }

    #[test]
    fn long_random_history_is_checked_quickly() {
        let ops = random_linearizable_history(&GeneratorParams {
            seed: 2024,
            ops: 20_000,
            keys: 5,
            clients: 10,
            ..GeneratorParams::default()
        });
        let started = Instant::now();
        let v = check_operations(&ops, LONG_BUDGET);
        let elapsed = started.elapsed();
        eprintln!("checked {} ops over 5 keys in {elapsed:?}", ops.len());
        assert_eq!(v, Verdict::Linearizable);
        assert!(elapsed < LONG_BUDGET);
    }

    /// Proves the search stays fast with compare-and-sets among many operations, a tenth of
    /// them with unknown outcomes (the shape of a chaos run's history).
    #[test]
    fn long_random_cas_history_with_timeouts_is_checked_quickly() {
        let ops = random_linearizable_history(&GeneratorParams {
            seed: 4242,
            ops: 10_000,
            keys: 3,
            clients: 10,
            unknown_per_mille: 100,
            cas_percent: 50,
            ..GeneratorParams::default()
        });
        let succeeded = ops
            .iter()
            .filter(|op| {
                matches!(
                    op.outcome,
                    Outcome::Ok(OpResult::Cas {
                        succeeded: true,
                        ..
                    })
                )
            })
            .count();
        let started = Instant::now();
        let v = check_operations(&ops, LONG_BUDGET);
        let elapsed = started.elapsed();
        eprintln!(
            "checked {} ops ({succeeded} successful compare-and-sets) in {elapsed:?}",
            ops.len()
        );
        assert!(succeeded > ops.len() / 20, "{succeeded} successful CAS");
        assert_eq!(v, Verdict::Linearizable);
        assert!(elapsed < LONG_BUDGET);
    }

    /// Proves random histories with compare-and-sets and unknown outcomes pass, and that
    /// making one successful compare-and-set answer "failed" instead is caught.
    #[test]
    fn random_cas_histories_are_linearizable_and_a_flipped_answer_is_caught() {
        let mut caught = 0;
        for seed in 0..20 {
            let mut ops = random_linearizable_history(&GeneratorParams {
                seed,
                ops: 400,
                keys: 2,
                unknown_per_mille: 100,
                cas_percent: 40,
                ..GeneratorParams::default()
            });
            assert_eq!(verdict(&ops), Verdict::Linearizable, "seed {seed}");
            // The last successful CAS whose new value was read later: it claims it failed.
            let read_later = |ops: &[Operation], i: usize| {
                let OpKind::Cas { new, .. } = &ops[i].kind else {
                    return false;
                };
                ops.iter().any(|r| {
                    r.key == ops[i].key
                        && r.outcome == Outcome::Ok(OpResult::Read(Some(new.clone())))
                })
            };
            let Some(flip) = (0..ops.len()).rev().find(|&i| {
                matches!(
                    ops[i].outcome,
                    Outcome::Ok(OpResult::Cas {
                        succeeded: true,
                        ..
                    })
                ) && read_later(&ops, i)
            }) else {
                continue;
            };
            ops[flip].outcome = Outcome::Ok(OpResult::Cas {
                succeeded: false,
                current: None,
            });
            let key = String::from_utf8(ops[flip].key.clone()).expect("utf8 key");
            assert_violation(&ops, &key);
            caught += 1;
        }
        assert!(caught > 10, "only {caught} histories had a CAS to flip");
    }

    #[test]
    fn single_key_with_many_concurrent_clients_is_linearizable() {
        let ops = random_linearizable_history(&GeneratorParams {
            seed: 99,
            ops: 5_000,
            keys: 1,
            clients: 10,
            ..GeneratorParams::default()
        });
        let started = Instant::now();
        assert_eq!(check_operations(&ops, LONG_BUDGET), Verdict::Linearizable);
        eprintln!("checked 5000 ops on one key in {:?}", started.elapsed());
    }
}
