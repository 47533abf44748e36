//! What a chaos run records: client operations on keys, and the faults a nemesis injected.
//!
//! An [`Operation`] is one client call as the client saw it: when it was invoked, when (if ever)
//! it completed, and what came back. Times are in any monotonic unit (nanoseconds since the start
//! of the run, say) shared by every client of the run; only their order matters.
//!
//! The three [`Outcome`]s mean different things to the checker:
//!
//! - [`Outcome::Ok`]: the call returned an answer. The operation took effect exactly once,
//!   somewhere between `invoke` and `complete`, and its [`OpResult`] is an observation that must
//!   agree with that point: the value a Get saw, whether the key existed for a Delete, whether a
//!   compare-and-set found the value it expected (and, when it did not, what it found).
//! - [`Outcome::Fail`]: the call certainly did not take effect (the request was rejected before
//!   it was proposed). The checker drops it.
//! - [`Outcome::Unknown`]: the call timed out or the connection broke. It may have taken effect
//!   at any time after `invoke` (even after the client gave up) or never; its completion counts
//!   as +infinity and its result is unconstrained.
//!
//! A [`History`] holds the operations and the [`Fault`]s of a run. It is written to a file as
//! JSON lines, one [`Record`] a line in time order, so a failing run can be kept and re-checked.

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

/// What an operation asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpKind {
    /// Read the key.
    Get,
    /// Write the value to the key.
    Set(Vec<u8>),
    /// Remove the key.
    Delete,
    /// Compare-and-set: if the key holds `expect` (`None`: if it is absent), write `new`;
    /// otherwise change nothing. Atomic: one linearization point decides and writes.
    Cas {
        /// The value the key must hold for the write to happen; `None` for "absent".
        expect: Option<Vec<u8>>,
        /// The value written when the comparison holds.
        new: Vec<u8>,
        /// When set, the server was asked to compare the key's `mod_revision` with this
        /// (the revision a read saw together with the value `expect`), not its value. With
        /// every value written at most once the two conditions are the same — a revision
        /// names the one write that put the value there — so the checker compares `expect`
        /// and ignores this; it says what was sent, for whoever reads a failing history.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mod_revision: Option<u64>,
    },
}

/// What a successful operation answered; the variant must match the operation's [`OpKind`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpResult {
    /// A Get's answer: the value seen, or `None` when the key was absent.
    Read(Option<Vec<u8>>),
    /// A Set's acknowledgement (it carries nothing).
    Written,
    /// A Delete's answer.
    Deleted {
        /// Whether the key existed when it was deleted; checked like a read.
        existed: bool,
    },
    /// A compare-and-set's answer.
    Cas {
        /// Whether the comparison held, so `new` was written.
        succeeded: bool,
        /// For a failed one, what the key held when the comparison failed, when the server
        /// said (etcd's Txn answers it from its failure branch); checked like a read. `None`
        /// when not known, and always for one that succeeded (it held `expect`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        current: Option<Seen>,
    },
}

/// A value as a read saw it: present with these bytes, or absent (`None`). A struct rather
/// than a bare `Option`, so that "seen absent" and "not seen" stay apart in JSON (`null` could
/// mean either).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Seen {
    /// The value, or `None` when the key was absent.
    pub value: Option<Vec<u8>>,
}

/// How an operation ended, as far as the client knows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// It completed with this answer, and took effect exactly once before completing.
    Ok(OpResult),
    /// It certainly did not take effect.
    Fail,
    /// It may have taken effect at any time after its invocation, or never; its answer, if any,
    /// is unknown.
    Unknown,
}

/// One client call on one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    /// Identifier, unique within the history; reports name operations by it.
    pub id: u64,
    /// The client (a sequential process) that issued it.
    pub client: u64,
    /// The key it touched.
    pub key: Vec<u8>,
    /// What it asked for.
    pub kind: OpKind,
    /// When it was invoked.
    pub invoke: u64,
    /// When it completed; `None` when it never did. Ignored for [`Outcome::Unknown`], whose
    /// completion is +infinity whatever the client recorded.
    pub complete: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
}

impl Operation {
    /// Whether an `Ok` answer is of the kind this operation can give (a Get answers
    /// [`OpResult::Read`], a Set [`OpResult::Written`], a Delete [`OpResult::Deleted`], a Cas
    /// [`OpResult::Cas`], with a `current` value only when it failed). `Fail` and `Unknown`
    /// carry no answer and always match.
    pub fn result_matches_kind(&self) -> bool {
        match &self.outcome {
            Outcome::Ok(result) => matches!(
                (&self.kind, result),
                (OpKind::Get, OpResult::Read(_))
                    | (OpKind::Set(_), OpResult::Written)
                    | (OpKind::Delete, OpResult::Deleted { .. })
                    | (
                        OpKind::Cas { .. },
                        OpResult::Cas {
                            succeeded: false,
                            ..
                        }
                    )
                    | (
                        OpKind::Cas { .. },
                        OpResult::Cas {
                            succeeded: true,
                            current: None
                        }
                    )
            ),
            Outcome::Fail | Outcome::Unknown => true,
        }
    }
}

/// Something a nemesis did to the cluster during a run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fault {
    /// When it happened, in the same unit as [`Operation::invoke`].
    pub time: u64,
    /// What happened ("partition {1} | {2,3}", "kill node 2", "heal").
    pub description: String,
}

/// One line of a history file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// A client operation.
    Op(Operation),
    /// A nemesis event.
    Fault(Fault),
}

/// The borrowed twin of [`Record`], so writing a history clones nothing. It must serialize
/// exactly like `Record` (same tag, same names); the round-trip test holds it to that.
#[derive(Serialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum RecordRef<'a> {
    Op(&'a Operation),
    Fault(&'a Fault),
}

/// Everything a run recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The client operations, in any order.
    pub ops: Vec<Operation>,
    /// The nemesis events, in any order; the checker ignores them, reports show them.
    pub faults: Vec<Fault>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// A history of these operations and no faults.
    pub fn from_ops(ops: Vec<Operation>) -> Self {
        Self {
            ops,
            faults: Vec::new(),
        }
    }

    /// Writes the history as JSON lines, one [`Record`] a line, ordered by time (an operation
    /// by its invocation, a fault by its time; operations first on a tie).
    pub fn write_json_lines<W: Write>(&self, mut out: W) -> io::Result<()> {
        let mut records: Vec<(u64, RecordRef<'_>)> = self
            .ops
            .iter()
            .map(|op| (op.invoke, RecordRef::Op(op)))
            .chain(self.faults.iter().map(|f| (f.time, RecordRef::Fault(f))))
            .collect();
        // Stable, so operations (listed first) stay ahead of faults at the same time.
        records.sort_by_key(|(time, _)| *time);
        for (_, record) in &records {
            serde_json::to_writer(&mut out, record)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// Reads a history written by [`History::write_json_lines`]. Blank lines are skipped; a
    /// line that is not a [`Record`] is an `InvalidData` error naming its (1-based) number.
    pub fn read_json_lines<R: BufRead>(input: R) -> io::Result<History> {
        let mut history = History::new();
        for (index, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let record: Record = serde_json::from_str(&line).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("history line {}: {e}", index + 1),
                )
            })?;
            match record {
                Record::Op(op) => history.ops.push(op),
                Record::Fault(fault) => history.faults.push(fault),
            }
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        History {
            ops: vec![
                Operation {
                    id: 1,
                    client: 7,
                    key: b"k".to_vec(),
                    kind: OpKind::Set(b"v".to_vec()),
                    invoke: 10,
                    complete: Some(20),
                    outcome: Outcome::Ok(OpResult::Written),
                },
                Operation {
                    id: 2,
                    client: 8,
                    key: b"k".to_vec(),
                    kind: OpKind::Get,
                    invoke: 30,
                    complete: Some(40),
                    outcome: Outcome::Ok(OpResult::Read(Some(b"v".to_vec()))),
                },
                Operation {
                    id: 3,
                    client: 9,
                    key: b"k".to_vec(),
                    kind: OpKind::Delete,
                    invoke: 5,
                    complete: None,
                    outcome: Outcome::Unknown,
                },
                Operation {
                    id: 4,
                    client: 9,
                    key: b"j".to_vec(),
                    kind: OpKind::Delete,
                    invoke: 50,
                    complete: Some(60),
                    outcome: Outcome::Ok(OpResult::Deleted { existed: false }),
                },
                Operation {
                    id: 5,
                    client: 7,
                    key: b"j".to_vec(),
                    kind: OpKind::Get,
                    invoke: 55,
                    complete: Some(56),
                    outcome: Outcome::Fail,
                },
            ],
            faults: vec![
                Fault {
                    time: 25,
                    description: "partition {1} | {2,3}".to_string(),
                },
                Fault {
                    time: 0,
                    description: "start".to_string(),
                },
            ],
        }
    }

    #[test]
    fn json_lines_round_trip_in_time_order() {
        let history = sample();
        let mut buf = Vec::new();
        history.write_json_lines(&mut buf).expect("write");
        let text = String::from_utf8(buf.clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7);
        // Time order: fault@0, op3@5, op1@10, fault@25, op2@30, op4@50, op5@55.
        assert!(lines[0].contains("\"record\":\"fault\""), "{}", lines[0]);
        assert!(lines[1].contains("\"id\":3"), "{}", lines[1]);
        assert!(lines[3].contains("partition"), "{}", lines[3]);
        // Each line is a Record on its own.
        for line in &lines {
            let _: Record = serde_json::from_str(line).expect("record");
        }
        let back = History::read_json_lines(&buf[..]).expect("read");
        let mut want_ops = history.ops.clone();
        want_ops.sort_by_key(|op| op.invoke);
        let mut want_faults = history.faults.clone();
        want_faults.sort_by_key(|f| f.time);
        assert_eq!(back.ops, want_ops);
        assert_eq!(back.faults, want_faults);
    }

    #[test]
    fn read_skips_blank_lines_and_names_bad_line() {
        let good = "\n{\"record\":\"fault\",\"time\":3,\"description\":\"heal\"}\n  \n";
        let history = History::read_json_lines(good.as_bytes()).expect("read");
        assert_eq!(history.faults.len(), 1);
        assert!(history.ops.is_empty());

        let bad =
            "{\"record\":\"fault\",\"time\":3,\"description\":\"heal\"}\n{\"record\":\"op\"}\n";
        let err = History::read_json_lines(bad.as_bytes()).expect_err("bad line");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn cas_records_round_trip_and_old_records_still_parse() {
        let cas = |id, mod_revision, outcome| Operation {
            id,
            client: 1,
            key: b"k".to_vec(),
            kind: OpKind::Cas {
                expect: None,
                new: b"n".to_vec(),
                mod_revision,
            },
            invoke: id * 10,
            complete: Some(id * 10 + 5),
            outcome,
        };
        let history = History::from_ops(vec![
            cas(
                1,
                None,
                Outcome::Ok(OpResult::Cas {
                    succeeded: true,
                    current: None,
                }),
            ),
            cas(
                2,
                Some(7),
                Outcome::Ok(OpResult::Cas {
                    succeeded: false,
                    current: Some(Seen { value: None }),
                }),
            ),
            cas(
                3,
                None,
                Outcome::Ok(OpResult::Cas {
                    succeeded: false,
                    current: Some(Seen {
                        value: Some(b"x".to_vec()),
                    }),
                }),
            ),
            cas(4, None, Outcome::Unknown),
        ]);
        let mut buf = Vec::new();
        history.write_json_lines(&mut buf).expect("write");
        let text = String::from_utf8(buf.clone()).expect("utf8");
        // Optional fields stay out of the records that do not need them.
        let first = text.lines().next().expect("a line");
        assert!(!first.contains("mod_revision"), "{first}");
        assert!(!first.contains("current"), "{first}");
        assert_eq!(History::read_json_lines(&buf[..]).expect("read"), history);

        // A record written before compare-and-set existed reads as it did.
        let old = "{\"record\":\"op\",\"id\":1,\"client\":7,\"key\":[107],\
                   \"kind\":{\"Set\":[118]},\"invoke\":10,\"complete\":20,\
                   \"outcome\":{\"Ok\":\"Written\"}}";
        let back = History::read_json_lines(old.as_bytes()).expect("old record");
        assert_eq!(back.ops, vec![sample().ops[0].clone()]);
    }

    #[test]
    fn result_kind_matching() {
        let mut op = sample().ops[0].clone();
        assert!(op.result_matches_kind());
        op.outcome = Outcome::Ok(OpResult::Read(None));
        assert!(!op.result_matches_kind());
        op.outcome = Outcome::Unknown;
        assert!(op.result_matches_kind());
        op.kind = OpKind::Delete;
        op.outcome = Outcome::Ok(OpResult::Deleted { existed: true });
        assert!(op.result_matches_kind());
        op.kind = OpKind::Get;
        assert!(!op.result_matches_kind());
        op.kind = OpKind::Cas {
            expect: None,
            new: b"n".to_vec(),
            mod_revision: None,
        };
        assert!(!op.result_matches_kind());
        let seen = Some(Seen { value: None });
        for (succeeded, current, matches) in [
            (true, None, true),
            (false, None, true),
            (false, seen.clone(), true),
            // One that succeeded found what it expected: a `current` would contradict it.
            (true, seen, false),
        ] {
            op.outcome = Outcome::Ok(OpResult::Cas { succeeded, current });
            assert_eq!(op.result_matches_kind(), matches, "{:?}", op.outcome);
        }
    }
}
