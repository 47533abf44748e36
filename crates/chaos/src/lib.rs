//! Tools for chaos testing: recording what clients saw while a nemesis injects faults, and
//! deciding whether it was linearizable. The cluster under test and its fault-injecting proxies
//! come from the `kv_harness` crate.
//!
//! - [`history`]: the record of a run — [`Operation`]s (invocation, completion, outcome) and
//!   [`Fault`]s — and its JSON-lines file format.
//! - [`checker`]: a WGL (Wing & Gong with Lowe's optimisations) linearizability checker for a
//!   key-value map seen as one register per key (get, set, delete, compare-and-set), with a time budget and a shrinker that reports
//!   the smallest failing per-key sub-history it finds.
//! - [`etcd_cas`]: the compare-and-set workload over etcd's v3 API, requests to random members,
//!   and how etcd's errors map to outcomes.
//! - [`watch_check`]: watchers on every member through the faults, each held to the committed
//!   history: atomic per revision, ordered, unique, nothing missing.
//! - [`runner`]: a whole run — workload, nemesis, healing, convergence, verdict — as used by
//!   `kvctl chaos` and the chaos tests.
//!
//! The checker is pure: it needs no cluster, no runtime and no clock other than its budget, so a
//! history saved by a failing run can be checked again later, or by hand.

pub mod checker;
pub mod etcd_cas;
pub mod history;
pub mod lock_check;
pub mod runner;
pub mod watch_check;

pub use checker::{check, check_operations, Verdict};
pub use history::{Fault, History, OpKind, OpResult, Operation, Outcome, Record, Seen};
