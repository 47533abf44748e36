//! Byte encodings of the MVCC records in the `sm` tree (the layout is in the module docs of
//! [`crate::mvcc`]).
//!
//! Every integer is big-endian, so sled's byte order is numeric order. Revisions are never
//! negative on disk (the first write is revision 2), so an `i64` is stored as its `u64` bits.
//! Decoding never trusts the bytes: a short or malformed record decodes to `None`, and the
//! caller turns that into a corruption error rather than a panic.

/// Prefix of the revision log: `r` + revision → [`Meta`] + key + value.
pub const REV_PREFIX: u8 = b'r';
/// Prefix of the per-key history index: `h` + escaped key + revision → [`Meta`].
pub const HIST_PREFIX: u8 = b'h';
/// Prefix of the live-key index: `k` + key → [`Live`].
pub const LIVE_PREFIX: u8 = b'k';
/// Bytes of an encoded revision: main and sub, 8 bytes each.
pub const REVISION_BYTES: usize = 16;
/// Bytes of an encoded [`Meta`]: the tombstone flag, then create revision, version and lease,
/// 8 bytes each.
pub const META_BYTES: usize = 1 + 3 * 8;
/// Bytes of an encoded [`Live`]: create revision, modification revision (main and sub),
/// version and lease, 8 bytes each.
pub const LIVE_BYTES: usize = 5 * 8;
/// Bytes of the key length in a revision-log record (a `u32`).
const KEY_LEN_BYTES: usize = 4;
/// The escape byte of [`escape_into`]: a `0x00` in a key is written `0x00 0xFF`, and the key
/// ends with `0x00 0x00`.
const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: [u8; 2] = [0x00, 0x00];

/// A point in the store's history: `main` counts the writes (one per Put, DeleteRange or
/// Txn that changed something), `sub` numbers the changes within one write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    /// The revision right after every change of write `main`.
    pub fn after_main(main: i64) -> Revision {
        Revision {
            main: main.saturating_add(1),
            sub: 0,
        }
    }

    pub fn to_bytes(self) -> [u8; REVISION_BYTES] {
        let mut b = [0u8; REVISION_BYTES];
        b[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        b[8..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Revision> {
        Some(Revision {
            main: be_i64(b, 0)?,
            sub: be_i64(b, 8)?,
        })
    }
}

/// The 8 bytes at `at` as a big-endian integer, if there are 8.
pub fn be_i64(b: &[u8], at: usize) -> Option<i64> {
    let bytes: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes) as i64)
}

/// What one revision of a key was: a put (with the generation's create revision, the
/// version and the lease) or a tombstone (all zero). The history index holds exactly this;
/// a revision-log record starts with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    pub tombstone: bool,
    pub create: i64,
    pub version: i64,
    pub lease: i64,
}

impl Meta {
    pub const TOMBSTONE: Meta = Meta {
        tombstone: true,
        create: 0,
        version: 0,
        lease: 0,
    };

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.tombstone));
        out.extend_from_slice(&(self.create as u64).to_be_bytes());
        out.extend_from_slice(&(self.version as u64).to_be_bytes());
        out.extend_from_slice(&(self.lease as u64).to_be_bytes());
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(META_BYTES);
        self.encode_into(&mut v);
        v
    }

    pub fn decode(b: &[u8]) -> Option<Meta> {
        let tombstone = match *b.first()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        Some(Meta {
            tombstone,
            create: be_i64(b, 1)?,
            version: be_i64(b, 9)?,
            lease: be_i64(b, 17)?,
        })
    }
}

/// The current state of a live key: where its value is (the revision that wrote it) and
/// what a read returns besides the value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Live {
    pub create: i64,
    pub modified: Revision,
    pub version: i64,
    pub lease: i64,
}

impl Live {
    pub fn to_bytes(&self) -> [u8; LIVE_BYTES] {
        let mut b = [0u8; LIVE_BYTES];
        b[..8].copy_from_slice(&(self.create as u64).to_be_bytes());
        b[8..24].copy_from_slice(&self.modified.to_bytes());
        b[24..32].copy_from_slice(&(self.version as u64).to_be_bytes());
        b[32..].copy_from_slice(&(self.lease as u64).to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Live> {
        if b.len() != LIVE_BYTES {
            return None;
        }
        Some(Live {
            create: be_i64(b, 0)?,
            modified: Revision::from_bytes(&b[8..24])?,
            version: be_i64(b, 24)?,
            lease: be_i64(b, 32)?,
        })
    }

    /// The history entry of the put that made this state.
    pub fn meta(&self) -> Meta {
        Meta {
            tombstone: false,
            create: self.create,
            version: self.version,
            lease: self.lease,
        }
    }
}

/// A revision-log record, borrowed from its encoding: [`Meta`], then the key's length as a
/// `u32`, the key, and the value (nothing for a tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub meta: Meta,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> Record<'a> {
    pub fn encode(meta: &Meta, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(META_BYTES + KEY_LEN_BYTES + key.len() + value.len());
        meta.encode_into(&mut v);
        v.extend_from_slice(&(key.len() as u32).to_be_bytes());
        v.extend_from_slice(key);
        v.extend_from_slice(value);
        v
    }

    pub fn decode(b: &'a [u8]) -> Option<Record<'a>> {
        let meta = Meta::decode(b.get(..META_BYTES)?)?;
        let len_bytes: [u8; KEY_LEN_BYTES] = b
            .get(META_BYTES..META_BYTES + KEY_LEN_BYTES)?
            .try_into()
            .ok()?;
        let key_start = META_BYTES + KEY_LEN_BYTES;
        let key_end = key_start.checked_add(u32::from_be_bytes(len_bytes) as usize)?;
        Some(Record {
            meta,
            key: b.get(key_start..key_end)?,
            value: b.get(key_end..)?,
        })
    }
}

/// `r` + revision.
pub fn rev_key(rev: Revision) -> [u8; 1 + REVISION_BYTES] {
    let mut k = [0u8; 1 + REVISION_BYTES];
    k[0] = REV_PREFIX;
    k[1..].copy_from_slice(&rev.to_bytes());
    k
}

/// The revision a revision-log key names.
pub fn rev_of_key(k: &[u8]) -> Option<Revision> {
    match k.split_first() {
        Some((&REV_PREFIX, rest)) if rest.len() == REVISION_BYTES => Revision::from_bytes(rest),
        _ => None,
    }
}

/// Appends `key` escaped so that the encodings keep byte order and none is a prefix of
/// another: each `0x00` becomes `0x00 0xFF`, and `0x00 0x00` ends it (FoundationDB's tuple
/// scheme). Then for keys `a < b`, `esc(a) < esc(b)`, and whatever follows `esc(a)` in a
/// history key still sorts before `esc(b)`.
pub fn escape_into(key: &[u8], out: &mut Vec<u8>) {
    for &b in key {
        out.push(b);
        if b == ESCAPE {
            out.push(ESCAPED_ZERO);
        }
    }
    out.extend_from_slice(&TERMINATOR);
}

/// `h` + escaped `key`: every history entry of `key` starts with it, and no other key's.
pub fn hist_prefix(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len() + TERMINATOR.len() + REVISION_BYTES);
    k.push(HIST_PREFIX);
    escape_into(key, &mut k);
    k
}

/// The history key of `key` at `rev`.
pub fn hist_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut k = hist_prefix(key);
    k.extend_from_slice(&rev.to_bytes());
    k
}

/// The user key and revision of a history key.
pub fn split_hist_key(k: &[u8]) -> Option<(Vec<u8>, Revision)> {
    let (&HIST_PREFIX, rest) = k.split_first()? else {
        return None;
    };
    let mut key = Vec::with_capacity(rest.len().saturating_sub(REVISION_BYTES + 2));
    let mut i = 0;
    loop {
        match *rest.get(i)? {
            ESCAPE => match *rest.get(i + 1)? {
                ESCAPED_ZERO => key.push(ESCAPE),
                ESCAPE => break,
                _ => return None,
            },
            b => {
                key.push(b);
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    let rev = rest.get(i + 2..)?;
    if rev.len() != REVISION_BYTES {
        return None;
    }
    Some((key, Revision::from_bytes(rev)?))
}

/// `k` + `key`. The live index needs no escaping: its keys are user keys alone, in their
/// own order.
pub fn live_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(LIVE_PREFIX);
    k.extend_from_slice(key);
    k
}

/// The first tree key after every key starting with `prefix`, or `None` if there is none
/// (`prefix` is all 0xFF). Tree prefixes here are single ASCII letters, so it always exists
/// for them.
pub fn after_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A set of user keys as etcd's requests name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRange<'a> {
    /// One key (an empty `range_end`).
    Single(&'a [u8]),
    /// `[start, end)`, or every key from `start` on when `end` is `None` (`range_end` is
    /// `"\0"`). Empty when `end <= start`.
    Span(&'a [u8], Option<&'a [u8]>),
}

impl<'a> KeyRange<'a> {
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> KeyRange<'a> {
        if range_end.is_empty() {
            KeyRange::Single(key)
        } else if range_end == etcd_api::range::FROM_KEY {
            KeyRange::Span(key, None)
        } else {
            KeyRange::Span(key, Some(range_end))
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match *self {
            KeyRange::Single(k) => k == key,
            KeyRange::Span(start, end) => key >= start && end.is_none_or(|e| key < e),
        }
    }

    /// Tree bounds `[lo, hi)` of this range in the live index; `None` if it is empty.
    pub fn live_bounds(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match *self {
            KeyRange::Single(k) => {
                let lo = live_key(k);
                let mut hi = lo.clone();
                hi.push(0);
                Some((lo, hi))
            }
            KeyRange::Span(start, end) => {
                let hi = match end {
                    Some(e) if e <= start => return None,
                    Some(e) => live_key(e),
                    None => vec![LIVE_PREFIX + 1],
                };
                Some((live_key(start), hi))
            }
        }
    }

    /// Tree bounds `[lo, hi)` of this range in the history index; `None` if it is empty.
    pub fn hist_bounds(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match *self {
            KeyRange::Single(k) => {
                let lo = hist_prefix(k);
                Some((lo.clone(), after_prefix(&lo)?))
            }
            KeyRange::Span(start, end) => {
                let hi = match end {
                    Some(e) if e <= start => return None,
                    Some(e) => hist_prefix(e),
                    None => vec![HIST_PREFIX + 1],
                };
                Some((hist_prefix(start), hi))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_order_and_is_prefix_free() {
        // Keys in byte order, with zero bytes where escaping matters.
        let keys: [&[u8]; 7] = [b"", b"\0", b"\0\0", b"\0\x01", b"a", b"a\0", b"a\0b"];
        for w in keys.windows(2) {
            let (a, b) = (hist_key(w[0], Revision::default()), hist_prefix(w[1]));
            assert!(a < b, "{:?} sorts before {:?}", w[0], w[1]);
            let max = hist_key(
                w[0],
                Revision {
                    main: i64::MAX,
                    sub: i64::MAX,
                },
            );
            assert!(
                max < b,
                "every revision of {:?} sorts before {:?}",
                w[0],
                w[1]
            );
        }
        for k in keys {
            let rev = Revision { main: 7, sub: 3 };
            assert_eq!(split_hist_key(&hist_key(k, rev)), Some((k.to_vec(), rev)));
        }
    }

    #[test]
    fn malformed_bytes_decode_to_none() {
        assert_eq!(split_hist_key(b"h\0\x01"), None, "bad escape");
        assert_eq!(split_hist_key(b"ha\0\0short"), None, "short revision");
        assert_eq!(Record::decode(&[0; 10]), None);
        let mut bad_len = Record::encode(&Meta::default(), b"key", b"v");
        bad_len[META_BYTES] = 0xFF;
        assert_eq!(Record::decode(&bad_len), None, "key longer than the record");
        assert_eq!(Meta::decode(&[2; META_BYTES]), None, "flag is 0 or 1");
        assert_eq!(Live::decode(&[0; 3]), None);
    }

    #[test]
    fn records_round_trip() {
        let meta = Meta {
            tombstone: false,
            create: 2,
            version: 5,
            lease: 9,
        };
        let enc = Record::encode(&meta, b"key", b"value");
        let rec = Record::decode(&enc).unwrap();
        assert_eq!(
            (rec.meta, rec.key, rec.value),
            (meta, &b"key"[..], &b"value"[..])
        );
        let live = Live {
            create: 2,
            modified: Revision { main: 4, sub: 1 },
            version: 3,
            lease: 0,
        };
        assert_eq!(Live::decode(&live.to_bytes()), Some(live));
    }

    #[test]
    fn ranges_map_to_tree_bounds() {
        assert_eq!(
            KeyRange::new(b"b", b"a").live_bounds(),
            None,
            "end before key"
        );
        assert_eq!(KeyRange::new(b"a", b"a").hist_bounds(), None);
        let all = KeyRange::new(b"\0", b"\0");
        assert!(all.contains(b"\0") && all.contains(b"\xff\xff"));
        let (lo, hi) = KeyRange::new(b"a", b"c").hist_bounds().unwrap();
        assert!(lo <= hist_key(b"a", Revision::default()));
        assert!(hist_key(b"b\xff", Revision::default()) < hi && hist_prefix(b"c") == hi);
    }
}
