//! `HarnessError`: the harness itself could not do what a test asked — start a node, signal a
//! process, mount a filesystem, reach a cluster in time.
//!
//! It is kept apart from what a test *observes* of the store (an operation that failed, a
//! history that is not linearizable, nodes that did not converge): those are outcomes, recorded
//! and judged; this is a broken experiment, reported as such and never counted as a finding.

/// A failure of the test harness, not of the store under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "harness: {}", self.0)
    }
}

impl std::error::Error for HarnessError {}

impl From<String> for HarnessError {
    fn from(what: String) -> Self {
        HarnessError(what)
    }
}

impl From<&str> for HarnessError {
    fn from(what: &str) -> Self {
        HarnessError(what.to_string())
    }
}

impl From<std::io::Error> for HarnessError {
    fn from(e: std::io::Error) -> Self {
        HarnessError(e.to_string())
    }
}

/// A [`HarnessError`] from a format string, as `format!` takes one.
#[macro_export]
macro_rules! harness_error {
    ($($arg:tt)*) => {
        $crate::HarnessError(format!($($arg)*))
    };
}
