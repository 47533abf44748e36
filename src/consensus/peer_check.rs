//! Checks a Raft message from a peer before raft-rs sees it.
//!
//! raft-rs trusts its peers: a message that no correct node would send can reach one of its
//! `fatal!`s (a panic, and with `panic = "abort"` the end of the process), or corrupt the log.
//! For example a heartbeat whose commit index lies past this node's log ends in `commit_to`'s
//! "out of range", and an append whose entries skip an index leaves a hole in the log. Peer
//! authentication will come; this check stays as defence in depth. It refuses, without stepping:
//!
//! - message types a peer never sends (local events such as `MsgHup`, `MsgBeat`,
//!   `MsgUnreachable`, `MsgSnapStatus`, `MsgCheckQuorum`, and proposals, which travel only as
//!   client requests here), and messages not from a member or not for this node;
//! - a message without a term (raft-rs takes those for its own node's events: a vote request
//!   of term 0 makes it answer with no term, which is a `fatal!`), and a forwarded read index
//!   request with one (it has none, and forwarding it again with a term is a `fatal!`);
//! - terms and indexes so large that raft-rs's arithmetic on them would overflow;
//! - a heartbeat whose commit index lies past this node's last entry (a leader sends at most
//!   what the follower acknowledged);
//! - an append whose previous entry has no term (raft-rs reads the term of an index past its
//!   log as 0, so it would "match" and commit entries this node lacks), whose entries do not
//!   follow its previous index one by one, whose terms are 0, fall
//!   below the previous entry's or rise above the message's, that are not plain entries (the
//!   membership is static), or whose previous-entry term is below this node's term at its
//!   commit index (raft-rs would search for a conflict below the compaction point);
//! - a successful append response claiming entries past this node's last one, and any
//!   `request_snapshot` (this node never asks for one that way);
//! - a snapshot that is empty, from the future, or whose configuration is not exactly the
//!   static membership (raft-rs aborts on a configuration it cannot restore);
//! - `MsgTransferLeader` at a node that is not the leader (a follower forwards it with its
//!   term still set, which raft-rs's send treats as a `fatal!`);
//! - `MsgTimeoutNow` from anyone but the leader this node follows (when it knows one), and
//!   `MsgReadIndexResp` from anyone but its leader;
//! - a read-index request or answer that does not carry exactly one entry (its context) of at
//!   most [`MAX_READ_CONTEXT_BYTES`]: raft-rs reads the first entry unchecked.
//!
//! A correct peer never sends any of these, so refusing them changes nothing for a healthy
//! cluster; the in-process cluster tests step every message through this check and fail on any
//! refusal, which keeps it from refusing what a correct peer sends.

use raft::prelude::{ConfState, EntryType, Message, MessageType};

/// Largest read-index context a peer may send, in bytes; this cluster's are 16 (node id and
/// counter, `actors::read_batch`), and the leader keeps each pending one until answered.
pub const MAX_READ_CONTEXT_BYTES: usize = 64;

/// Terms and indexes at or above this are refused: no real cluster gets near it, and raft-rs
/// adds to them unchecked.
pub const MAX_TERM_OR_INDEX: u64 = u64::MAX / 2;

/// What the check needs to know of this node.
pub struct LogView<'a> {
    /// This node's id: a message must be addressed to it, and not come from it.
    pub id: u64,
    /// The static membership.
    pub voters: &'a [u64],
    /// The leader this node follows (0: none).
    pub leader_id: u64,
    /// Whether this node is that leader.
    pub is_leader: bool,
    /// This node's current term: heartbeats and appends of an older one are let through
    /// unchecked, since raft-rs only answers them with its term.
    pub term: u64,
    pub committed: u64,
    /// No heartbeat commit index, nor acknowledged append, may lie past this.
    pub last_index: u64,
    /// The term of the entry at the commit index.
    pub committed_term: u64,
}

/// Why a message was refused.
pub type Refusal = String;

/// Checks `m`; `Err` says why it must not be stepped.
pub fn check(m: &Message, view: &LogView) -> Result<(), Refusal> {
    use MessageType::*;
    let t = m.get_msg_type();
    if !matches!(
        t,
        MsgAppend
            | MsgAppendResponse
            | MsgRequestVote
            | MsgRequestVoteResponse
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse
            | MsgSnapshot
            | MsgHeartbeat
            | MsgHeartbeatResponse
            | MsgTransferLeader
            | MsgTimeoutNow
            | MsgReadIndex
            | MsgReadIndexResp
    ) {
        return Err(format!("{t:?} is not a message a peer sends"));
    }
    if m.to != view.id {
        return Err(format!("addressed to node {}", m.to));
    }
    if m.from == view.id || !view.voters.contains(&m.from) {
        return Err(format!("node {} is not a peer of this cluster", m.from));
    }
    // raft-rs treats a message of term 0 as raised by this node itself; only a follower's
    // forwarded read-index request legitimately comes without a term.
    if (m.term == 0) != (t == MsgReadIndex) {
        return Err(format!(
            "{t:?} {} a term",
            if m.term == 0 { "without" } else { "with" }
        ));
    }
    for (what, v) in [
        ("term", m.term),
        ("log term", m.log_term),
        ("index", m.index),
        ("commit", m.commit),
        ("reject hint", m.reject_hint),
    ] {
        if v >= MAX_TERM_OR_INDEX {
            return Err(format!("{what} {v} is impossibly large"));
        }
    }
    // raft-rs answers a heartbeat or append from an older term only with its own term (so a
    // deposed leader learns it is one) and never looks at its contents; checking them would
    // refuse exactly the messages that answer must go to.
    let current = m.term >= view.term;
    match t {
        MsgHeartbeat if current && m.commit > view.last_index => Err(format!(
            "heartbeat commit {} lies past this node's last entry {}",
            m.commit, view.last_index
        )),
        MsgAppend if current => check_append(m, view),
        MsgAppend => Ok(()),
        MsgAppendResponse if m.request_snapshot != 0 => {
            Err("append responses never request snapshots here".into())
        }
        MsgAppendResponse if !m.reject && m.index > view.last_index => Err(format!(
            "acknowledges entry {} past this node's last entry {}",
            m.index, view.last_index
        )),
        MsgSnapshot => check_snapshot(m, view),
        // A transfer's go-ahead comes from the leader (perhaps one not heard of yet, when its
        // term is new here); a read index answers a request this node sent its leader.
        MsgTimeoutNow if m.from != view.leader_id && view.leader_id != 0 => Err(format!(
            "{t:?} from node {}, which is not the leader",
            m.from
        )),
        // A follower would forward it to its leader with the term still set: a `fatal!`.
        MsgTransferLeader if !view.is_leader => {
            Err("a leadership transfer request reached a node that is not the leader".into())
        }
        MsgReadIndex | MsgReadIndexResp
            if m.entries.len() != 1 || m.entries[0].data.len() > MAX_READ_CONTEXT_BYTES =>
        {
            Err(format!(
                "{t:?} must carry one context entry of at most {MAX_READ_CONTEXT_BYTES} bytes"
            ))
        }
        MsgReadIndexResp if m.from != view.leader_id => Err(format!(
            "{t:?} from node {}, which is not the leader",
            m.from
        )),
        // Read-index requests and responses carry their context as an entry.
        _ if !m.entries.is_empty() && !matches!(t, MsgReadIndex | MsgReadIndexResp) => {
            Err(format!("{t:?} does not carry entries"))
        }
        _ => Ok(()),
    }
}

fn check_append(m: &Message, view: &LogView) -> Result<(), Refusal> {
    // raft-rs reads the term of an index past its log as 0, so a previous entry "of term 0"
    // would match any index and commit entries this node does not have.
    if m.index > 0 && m.log_term == 0 {
        return Err(format!("previous entry {} without a term", m.index));
    }
    if m.log_term > m.term {
        return Err(format!(
            "previous entry's term {} is above the message's {}",
            m.log_term, m.term
        ));
    }
    if m.index >= view.committed && m.log_term < view.committed_term {
        return Err(format!(
            "previous entry {} of term {} is below the term {} of committed entry {}",
            m.index, m.log_term, view.committed_term, view.committed
        ));
    }
    let mut term = m.log_term;
    for (i, e) in m.entries.iter().enumerate() {
        let want = m.index + 1 + i as u64;
        if e.index != want {
            return Err(format!("entry {} where {want} belongs", e.index));
        }
        if e.term == 0 || e.term < term || e.term > m.term {
            return Err(format!(
                "entry {} has term {} outside [{term}, {}]",
                e.index, e.term, m.term
            ));
        }
        if e.get_entry_type() != EntryType::EntryNormal {
            return Err(format!(
                "entry {} is a {:?}; membership is static",
                e.index,
                e.get_entry_type()
            ));
        }
        term = e.term;
    }
    if m.index + m.entries.len() as u64 >= MAX_TERM_OR_INDEX {
        return Err("entries reach an impossibly large index".into());
    }
    Ok(())
}

fn check_snapshot(m: &Message, view: &LogView) -> Result<(), Refusal> {
    let meta = m.get_snapshot().get_metadata();
    if meta.index == 0 || meta.term == 0 {
        return Err("empty snapshot".into());
    }
    if meta.index >= MAX_TERM_OR_INDEX || meta.term > m.term {
        return Err(format!(
            "snapshot at index {} of term {} from a message of term {}",
            meta.index, meta.term, m.term
        ));
    }
    let cs = meta.get_conf_state();
    let mut voters = cs.voters.clone();
    voters.sort_unstable();
    let mut members = view.voters.to_vec();
    members.sort_unstable();
    let static_membership = ConfState {
        voters: members.clone(),
        ..Default::default()
    };
    if voters != members
        || !cs.learners.is_empty()
        || !cs.voters_outgoing.is_empty()
        || !cs.learners_next.is_empty()
        || cs.auto_leave
    {
        return Err(format!(
            "snapshot configuration {cs:?} is not the membership {static_membership:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::Entry;

    fn view() -> LogView<'static> {
        LogView {
            id: 2,
            voters: &[1, 2, 3],
            leader_id: 1,
            is_leader: false,
            term: 3,
            committed: 5,
            last_index: 8,
            committed_term: 2,
        }
    }

    fn msg(t: MessageType) -> Message {
        Message {
            msg_type: t,
            from: 1,
            to: 2,
            term: 3,
            ..Default::default()
        }
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    /// raft-rs indexes a read-index message's first entry unchecked: one without, or with an
    /// oversized context, never reaches it; the one a follower really sends does.
    #[test]
    fn a_read_index_request_without_its_context_is_refused() {
        let mut ri = msg(MessageType::MsgReadIndex);
        ri.term = 0;
        assert!(check(&ri, &view()).unwrap_err().contains("context"));
        ri.entries = vec![Entry {
            data: vec![0; MAX_READ_CONTEXT_BYTES + 1].into(),
            ..Default::default()
        }]
        .into();
        assert!(check(&ri, &view()).unwrap_err().contains("context"));
        ri.entries = vec![Entry {
            data: vec![0; 16].into(),
            ..Default::default()
        }]
        .into();
        assert_eq!(check(&ri, &view()), Ok(()));
    }

    #[test]
    fn what_a_leader_sends_passes() {
        let mut hb = msg(MessageType::MsgHeartbeat);
        hb.commit = 8;
        assert_eq!(check(&hb, &view()), Ok(()));
        let mut app = msg(MessageType::MsgAppend);
        app.index = 8;
        app.log_term = 2;
        app.entries = vec![entry(9, 2), entry(10, 3)].into();
        assert_eq!(check(&app, &view()), Ok(()));
    }

    #[test]
    fn a_heartbeat_committing_past_the_log_is_refused() {
        let mut hb = msg(MessageType::MsgHeartbeat);
        hb.commit = u64::MAX;
        assert!(check(&hb, &view()).is_err());
        hb.commit = 9;
        assert!(check(&hb, &view()).unwrap_err().contains("past"));
    }

    #[test]
    fn a_deposed_leader_s_messages_pass_so_raft_can_answer_with_its_term() {
        let mut app = msg(MessageType::MsgAppend);
        app.term = 2;
        app.index = 8;
        app.log_term = 1;
        assert_eq!(
            check(&app, &view()),
            Ok(()),
            "older term: raft-rs only answers"
        );
        app.entries = vec![entry(9, 2), entry(11, 1)].into();
        assert_eq!(
            check(&app, &view()),
            Ok(()),
            "even with entries raft-rs ignores"
        );
        let mut hb = msg(MessageType::MsgHeartbeat);
        hb.term = 2;
        hb.commit = 50;
        assert_eq!(check(&hb, &view()), Ok(()));
    }

    #[test]
    fn appends_with_holes_or_odd_terms_are_refused() {
        let mut app = msg(MessageType::MsgAppend);
        app.index = 8;
        app.log_term = 2;
        app.entries = vec![entry(9, 2), entry(11, 2)].into();
        assert!(check(&app, &view()).is_err(), "a hole");
        app.entries = vec![entry(9, 4)].into();
        assert!(check(&app, &view()).is_err(), "a term from the future");
        app.entries = vec![entry(9, 1)].into();
        assert!(check(&app, &view()).is_err(), "a term going back");
        app.entries = Vec::new().into();
        app.log_term = 1;
        assert!(check(&app, &view()).is_err(), "below the committed term");
    }

    #[test]
    fn local_types_strangers_and_wrong_configurations_are_refused() {
        for t in [
            MessageType::MsgHup,
            MessageType::MsgBeat,
            MessageType::MsgPropose,
            MessageType::MsgUnreachable,
            MessageType::MsgSnapStatus,
            MessageType::MsgCheckQuorum,
        ] {
            assert!(check(&msg(t), &view()).is_err(), "{t:?}");
        }
        let mut stranger = msg(MessageType::MsgHeartbeat);
        stranger.from = 9;
        assert!(check(&stranger, &view()).is_err());
        let mut timeout = msg(MessageType::MsgTimeoutNow);
        timeout.from = 3;
        assert!(check(&timeout, &view()).is_err(), "only the leader");
        let mut snap = msg(MessageType::MsgSnapshot);
        snap.mut_snapshot().mut_metadata().index = 20;
        snap.mut_snapshot().mut_metadata().term = 3;
        snap.mut_snapshot().mut_metadata().mut_conf_state().voters = vec![1, 2];
        assert!(check(&snap, &view()).is_err(), "another membership");
        snap.mut_snapshot().mut_metadata().mut_conf_state().voters = vec![3, 1, 2];
        assert_eq!(check(&snap, &view()), Ok(()));
    }
}
