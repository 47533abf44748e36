//! Tools for checking that a store answers etcd's v3 API as etcd does, by sending it and a
//! real etcd the same requests and comparing every field of the answers.
//!
//! - [`gen`]: [`Generator`], a seeded random source of etcd KV requests ([`Op`]) over a small
//!   key space with awkward bytes (`\0`, `\xff`), aimed at the revisions the store is at —
//!   Range (every option), Put, DeleteRange, Txn (every compare target and result, nested
//!   txns, too many ops, duplicate keys) and Compact (past, current, future, compacted).
//! - [`store`]: [`Store`], one store under test as a list of client endpoints, each request
//!   sent to one of them as its [`Spread`] picks; the [`Reply`] it gave.
//! - [`compare`]: [`first_difference`], the field-by-field comparer: headers on `revision`
//!   only (cluster and member ids and the raft term differ between stores by nature), every
//!   field of every key-value, counts, flags, nested responses, and errors by gRPC code and
//!   exact message.
//! - [`perturb`]: [`Perturb`], deliberately wrong answers, to show the comparer has teeth.
//! - [`run`]: [`run::run`], the differential run of one generated sequence against two
//!   stores, ending at the first difference with a [`Divergence`] that names the seed, the op
//!   index, the request and the differing field.
//! - [`transcript`]: etcdctl transcripts — a session at a terminal written as Markdown, run
//!   against a store and matched line by line with `[..]` masks.
//! - [`watch`]: watch streams on two stores compared watcher by watcher, event by event;
//!   the watchers a differential run makes, and the finale that tells them it is over.
//! - [`show`]: how requests, key-values and bytes are printed in reports.
//!
//! A failure of the tooling itself (no etcd installed, an endpoint that cannot be dialled) is
//! a [`kv_harness::HarnessError`]; what the stores answered is an outcome, compared and
//! judged.

pub mod compare;
pub mod gen;
pub mod perturb;
pub mod run;
pub mod show;
pub mod store;
pub mod transcript;
pub mod watch;

pub use compare::{first_difference, Difference};
pub use gen::{Generator, Op};
pub use perturb::Perturb;
pub use run::{run, Divergence, RunOptions, Summary, Verdict};
pub use store::{Answer, Failure, Reply, Spread, Store};

/// The variable that overrides a test's seed, to replay a reported run.
pub const SEED_ENV: &str = "COMPAT_SEED";

/// The variable that overrides a differential test's op count, for a longer or shorter run.
pub const OPS_ENV: &str = "COMPAT_OPS";

/// The op count in [`OPS_ENV`] if it is set, else `default`.
///
/// # Panics
/// When the variable is set but is not a number.
pub fn ops_from_env(default: usize) -> usize {
    match std::env::var(OPS_ENV) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{OPS_ENV}={s:?} is not an op count: {e}")),
        Err(_) => default,
    }
}

/// The seed in [`SEED_ENV`] if it is set (decimal), else `default`.
///
/// # Panics
/// When the variable is set but is not a number.
pub fn seed_from_env(default: u64) -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{SEED_ENV}={s:?} is not a seed: {e}")),
        Err(_) => default,
    }
}
