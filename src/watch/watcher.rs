//! One watcher: what it listens to, and where it stands.

use etcd_api::etcdserverpb::watch_create_request::FilterType;
use etcd_api::etcdserverpb::WatchCreateRequest;
use etcd_api::mvccpb::{event::EventType, Event};

/// The keys a watcher listens to, as etcd's create request names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    /// One key (an empty `range_end`).
    Single(Vec<u8>),
    /// `[start, end)`; every key from `start` on when `end` is `None` (`range_end` "\0").
    Span(Vec<u8>, Option<Vec<u8>>),
}

impl Keys {
    /// The keys of `req`: an empty key stands for "\0", the smallest key, as in etcd.
    /// `None` when the range is empty (its end at or before its start), which etcd refuses.
    pub fn of(req: &WatchCreateRequest) -> Option<Keys> {
        let key = if req.key.is_empty() {
            vec![0]
        } else {
            req.key.clone()
        };
        match req.range_end.as_slice() {
            [] => Some(Keys::Single(key)),
            [0] => Some(Keys::Span(key, None)),
            end if end <= key.as_slice() => None,
            end => Some(Keys::Span(key, Some(end.to_vec()))),
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            Keys::Single(k) => k.as_slice() == key,
            Keys::Span(start, end) => {
                key >= start.as_slice() && end.as_deref().is_none_or(|e| key < e)
            }
        }
    }
}

/// One watcher of a stream.
#[derive(Debug, Clone)]
pub struct Watcher {
    pub keys: Keys,
    /// The first revision this watcher may be sent. A synced watcher has been sent every
    /// event it wants from here up to the hub's fed revision; an unsynced one every event
    /// before here, and catches up from here.
    pub next: i64,
    /// Whether it is fed from the live events (else from history).
    pub synced: bool,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    pub progress_notify: bool,
    pub fragment: bool,
    /// Nothing has been sent to it since the last progress tick: the next tick sends it a
    /// progress notice (etcd's per-watcher progress flag).
    pub quiet: bool,
}

impl Watcher {
    /// A watcher for `req` from revision `next` on (not yet synced or unsynced: the hub
    /// decides).
    pub fn new(req: &WatchCreateRequest, keys: Keys, next: i64) -> Watcher {
        let has = |f: FilterType| req.filters.contains(&(f as i32));
        Watcher {
            keys,
            next,
            synced: false,
            no_put: has(FilterType::Noput),
            no_delete: has(FilterType::Nodelete),
            prev_kv: req.prev_kv,
            progress_notify: req.progress_notify,
            fragment: req.fragment,
            quiet: true,
        }
    }

    /// Whether `event` is one this watcher is sent (keys, filters and revision alike).
    pub fn wants(&self, event: &Event) -> bool {
        let Some(kv) = &event.kv else {
            return false;
        };
        if kv.mod_revision < self.next || !self.keys.contains(&kv.key) {
            return false;
        }
        if event.r#type == EventType::Delete as i32 {
            !self.no_delete
        } else {
            !self.no_put
        }
    }

    /// `event` as this watcher gets it: without `prev_kv` unless it asked for it.
    pub fn shape(&self, event: &Event) -> Event {
        if self.prev_kv || event.prev_kv.is_none() {
            event.clone()
        } else {
            Event {
                r#type: event.r#type,
                kv: event.kv.clone(),
                prev_kv: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(key: &[u8], end: &[u8]) -> WatchCreateRequest {
        WatchCreateRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn keys_read_as_etcd_reads_a_create_request() {
        assert_eq!(
            Keys::of(&create(b"a", b"")),
            Some(Keys::Single(b"a".to_vec()))
        );
        assert_eq!(
            Keys::of(&create(b"", b"")),
            Some(Keys::Single(vec![0])),
            "empty key is \\0"
        );
        assert_eq!(
            Keys::of(&create(b"a", b"\0")),
            Some(Keys::Span(b"a".to_vec(), None))
        );
        assert_eq!(Keys::of(&create(b"b", b"a")), None, "end before start");
        assert_eq!(Keys::of(&create(b"a", b"a")), None, "end at start");
        let span = Keys::of(&create(b"a", b"c")).unwrap();
        assert!(span.contains(b"a") && span.contains(b"bz") && !span.contains(b"c"));
    }
}
