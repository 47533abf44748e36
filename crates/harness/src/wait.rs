//! Waiting for a condition by polling it, never by a fixed sleep: [`poll_until`] for
//! synchronous tests (it panics when time runs out), [`poll`] for the asynchronous harness (it
//! returns the error).

use crate::error::HarnessError;
use std::time::{Duration, Instant};

use crate::timing::POLL_INTERVAL;

/// Retries `probe` every [`POLL_INTERVAL`] until it returns `Some`, and returns that; panics
/// naming `what` if `timeout` passes first.
pub fn poll_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Awaits `probe` every `interval` until it answers `Ok(Some(_))`, and returns that. An
/// `Err` from the probe ends the wait at once with that error; when `timeout` passes first the
/// error names `what`.
pub async fn poll<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut probe: impl AsyncFnMut() -> Result<Option<T>, HarnessError>,
) -> Result<T, HarnessError> {
    let deadline = Instant::now() + timeout;
    while Instant::now() <= deadline {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        tokio::time::sleep(interval).await;
    }
    Err(crate::harness_error!(
        "timed out after {timeout:?} waiting for {what}"
    ))
}
