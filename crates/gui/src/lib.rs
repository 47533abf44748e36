//! The desktop GUI (`cargo run --bin gui`), as a library module so its tests can drive it.
//!
//! Two halves that never block each other:
//! - [`app::KvApp`], the egui UI, runs on the UI thread. It never waits on the network: it hands
//!   requests to the worker and picks up results at the start of each frame.
//! - [`worker::Worker`] owns a thread with its own tokio runtime and the shared
//!   [`Client`](kv_api::client::Client) (the same leader-following client kvctl uses). Requests and
//!   results travel over bounded crossbeam channels; after each result it asks egui to repaint.
//!   [`watch_feed`] is its use of etcd's Watch API: the watch panel and a key's history;
//!   [`key_lease`], of the Lease API: the lease of the key the editor shows.

pub mod app;
pub mod key_lease;
pub mod watch_feed;
pub mod watch_panel;
pub mod worker;

pub use app::KvApp;
pub use worker::{NodeRow, Worker};
