//! Tools for chaos testing: recording what clients saw while a nemesis injects faults, and
//! deciding whether it was linearizable.
//!
//! - [`history`]: the record of a run — [`Operation`]s (invocation, completion, outcome) and
//!   [`Fault`]s — and its JSON-lines file format.
//! - [`checker`]: a WGL (Wing & Gong with Lowe's optimisations) linearizability checker for a
//!   key-value map seen as one register per key, with a time budget and a shrinker that reports
//!   the smallest failing per-key sub-history it finds.
//!
//! - [`proxy`]: a fault-injecting TCP proxy per directed peer link (partitions without root).
//! - [`cluster`]: real `distributed_kv` processes behind those proxies, which a nemesis can
//!   kill, restart, pause, resume and partition.
//! - [`runner`]: a whole run — workload, nemesis, healing, convergence, verdict — as used by
//!   `kvctl chaos` and the chaos tests.
//!
//! The checker is pure: it needs no cluster, no runtime and no clock other than its budget, so a
//! history saved by a failing run can be checked again later, or by hand.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod proxy;
pub mod runner;

pub use checker::{check, check_operations, Verdict};
pub use history::{Fault, History, OpKind, OpResult, Operation, Outcome, Record};
