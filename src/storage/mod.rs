//! The replicated state machine: the key-value data in sled, as a plain struct.

pub mod state_machine;
pub mod trust;

pub use state_machine::{AppliedEntry, CommandOutcome, ListPage, StateMachine};
