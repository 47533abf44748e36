//! The peer inbox budget: room in the RaftActor's mailbox that client load cannot take.
//!
//! Client requests reach the RaftActor with `send`, which waits while its mailbox is full; peer
//! messages must never wait (the peer service would stall) nor be pushed out by client load,
//! or heartbeats and votes are lost exactly when the node is busiest and a healthy leader is
//! deposed. So peer messages bypass the mailbox's capacity and are bounded by a budget of their
//! own: each holds an [`InboxSlot`] until the RaftActor has handled it. Overflow policy: when
//! all [`PEER_INBOX_CAPACITY`] slots are taken the message is dropped (Raft resends).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Peer messages waiting in the RaftActor's mailbox at most.
pub const PEER_INBOX_CAPACITY: usize = 8_192;

/// The budget shared by the peer service, which takes slots, and the messages holding them.
#[derive(Debug, Clone, Default)]
pub struct PeerInbox {
    /// Slots taken: raised by [`PeerInbox::take`], never past [`PEER_INBOX_CAPACITY`], and
    /// lowered when an [`InboxSlot`] drops.
    used: Arc<AtomicUsize>,
}

/// One taken slot; dropping it gives it back.
#[derive(Debug)]
pub struct InboxSlot {
    /// The counter of the budget it was taken from, lowered when the slot drops.
    used: Arc<AtomicUsize>,
}

impl PeerInbox {
    /// Takes a slot, or `None` when all are taken.
    pub fn take(&self) -> Option<InboxSlot> {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < PEER_INBOX_CAPACITY).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| InboxSlot {
            used: self.used.clone(),
        })
    }

    /// Slots taken at this moment; the peer service may take or give back more at once.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for InboxSlot {
    fn drop(&mut self) {
        self.used.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let inbox = PeerInbox::default();
        let slots: Vec<InboxSlot> = (0..PEER_INBOX_CAPACITY)
            .map(|_| inbox.take().expect("a free slot"))
            .collect();
        assert!(inbox.take().is_none(), "the budget is full");
        drop(slots);
        assert_eq!(inbox.used(), 0);
        assert!(inbox.take().is_some());
    }
}
