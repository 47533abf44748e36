//! [`run`]: one differential run — the same generated sequence of requests sent to two stores,
//! op by op, each reply compared field by field — ending at the first difference.
//!
//! Both stores get op *i* before either gets op *i + 1*, so each sees the same sequence of
//! writes; the generator follows the left store's answers (they agree with the right one's up
//! to the first difference). The outcome is a [`Verdict`]: agreement, with a [`Summary`] of
//! what was sent and answered, or a [`Divergence`] naming the seed, the op index, the request
//! and the first differing field, with the ops just before it.

use std::collections::{BTreeMap, VecDeque};

use crate::compare::{first_difference, Difference};
use crate::gen::{Generator, Op};
use crate::store::{Reply, Store};

/// Ops before the differing one shown in a [`Divergence`].
pub const CONTEXT_OPS: usize = 8;

/// The variable that makes a run print every op and both replies on stderr.
pub const TRACE_ENV: &str = "COMPAT_TRACE";

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// The generator's seed.
    pub seed: u64,
    /// How many ops to send.
    pub ops: usize,
    /// Whether Ranges inside a Txn may name a revision: false when either store is an etcd of
    /// several members ([`Generator::without_txn_range_revisions`] says why).
    pub txn_range_revisions: bool,
}

impl RunOptions {
    /// `ops` ops from `seed`, every kind of request included.
    pub fn new(seed: u64, ops: usize) -> RunOptions {
        RunOptions {
            seed,
            ops,
            txn_range_revisions: true,
        }
    }
}

/// What an agreeing run sent and what came back.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Ops sent to each store.
    pub ops: usize,
    /// Ops by RPC.
    pub by_kind: BTreeMap<&'static str, usize>,
    /// Ops both stores refused, by error message.
    pub errors: BTreeMap<String, usize>,
    /// Txns whose compares held.
    pub txn_succeeded: usize,
    /// Txns whose compares did not hold.
    pub txn_failed: usize,
    /// The revision both stores ended at.
    pub final_revision: i64,
    /// The last compaction (0: none).
    pub compacted: i64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let refused: usize = self.errors.values().sum();
        writeln!(
            f,
            "{} ops {:?}; txns succeeded {} / failed {}; revision {}, compacted at {}; {} refused:",
            self.ops,
            self.by_kind,
            self.txn_succeeded,
            self.txn_failed,
            self.final_revision,
            self.compacted,
            refused
        )?;
        for (message, n) in &self.errors {
            writeln!(f, "  {n:5} {message}")?;
        }
        Ok(())
    }
}

/// Where two stores first answered differently.
#[derive(Debug, Clone)]
pub struct Divergence {
    /// The run's seed.
    pub seed: u64,
    /// The op's index in the run (from 0).
    pub index: usize,
    /// The request.
    pub op: Op,
    /// The left store's name and the member that answered.
    pub left: (String, String),
    /// The right store's name and the member that answered.
    pub right: (String, String),
    /// The first differing field.
    pub difference: Difference,
    /// Both replies in full.
    pub replies: (Reply, Reply),
    /// The ops just before (index and request), oldest first.
    pub before: Vec<(usize, Op)>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (l, r) = (&self.left, &self.right);
        writeln!(
            f,
            "seed {}, op #{}: {} (at {}) and {} (at {}) answered differently",
            self.seed, self.index, l.0, l.1, r.0, r.1
        )?;
        writeln!(f, "  request: {}", self.op)?;
        writeln!(
            f,
            "  first difference at `{}`: {} says {}, {} says {}",
            self.difference.path, l.0, self.difference.left, r.0, self.difference.right
        )?;
        writeln!(f, "  {} replied: {:?}", l.0, self.replies.0)?;
        writeln!(f, "  {} replied: {:?}", r.0, self.replies.1)?;
        writeln!(f, "  the ops before:")?;
        for (i, op) in &self.before {
            writeln!(f, "    #{i}: {op}")?;
        }
        write!(
            f,
            "  replay with {}={} (same op count)",
            crate::SEED_ENV,
            self.seed
        )
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Every reply agreed.
    Agreed(Summary),
    /// A reply differed.
    Diverged(Box<Divergence>),
}

impl Verdict {
    /// The summary of an agreeing run.
    ///
    /// # Panics
    /// On a divergence, with its report.
    pub fn expect_agreed(self) -> Summary {
        match self {
            Verdict::Agreed(summary) => summary,
            Verdict::Diverged(d) => panic!("the stores diverged:\n{d}"),
        }
    }

    /// The divergence of a run that diverged.
    ///
    /// # Panics
    /// When the stores agreed.
    pub fn expect_diverged(self) -> Divergence {
        match self {
            Verdict::Diverged(d) => *d,
            Verdict::Agreed(summary) => panic!("the stores agreed:\n{summary}"),
        }
    }
}

/// Sends `options.ops` generated ops to `left` and `right` (see the module doc).
pub async fn run(left: &mut Store, right: &mut Store, options: RunOptions) -> Verdict {
    let mut generator = Generator::new(options.seed);
    if !options.txn_range_revisions {
        generator = generator.without_txn_range_revisions();
    }
    let mut summary = Summary::default();
    let mut before: VecDeque<(usize, Op)> = VecDeque::new();
    let trace = std::env::var_os(TRACE_ENV).is_some();
    for index in 0..options.ops {
        let op = generator.next_op();
        let ((left_at, left_reply), (right_at, right_reply)) =
            tokio::join!(left.send(index, &op), right.send(index, &op));
        if trace {
            eprintln!("#{index} {op}\n  {left_at}: {left_reply:?}\n  {right_at}: {right_reply:?}");
        }
        if let Some(difference) = first_difference(&left_reply, &right_reply) {
            return Verdict::Diverged(Box::new(Divergence {
                seed: options.seed,
                index,
                op,
                left: (left.name().to_string(), left_at),
                right: (right.name().to_string(), right_at),
                difference,
                replies: (left_reply, right_reply),
                before: before.into(),
            }));
        }
        generator.observe(&op, &left_reply);
        summary.ops += 1;
        *summary.by_kind.entry(op.kind()).or_default() += 1;
        match &left_reply {
            Err(failure) => *summary.errors.entry(failure.to_string()).or_default() += 1,
            Ok(crate::store::Answer::Txn(t)) if t.succeeded => summary.txn_succeeded += 1,
            Ok(crate::store::Answer::Txn(_)) => summary.txn_failed += 1,
            Ok(_) => {}
        }
        before.push_back((index, op));
        if before.len() > CONTEXT_OPS {
            before.pop_front();
        }
    }
    summary.final_revision = generator.revision();
    summary.compacted = generator.compacted();
    Verdict::Agreed(summary)
}
