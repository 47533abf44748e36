//! Byte encodings of the MVCC records in the `sm` tree (the layout is in the module docs of
//! [`crate::mvcc`]).
//!
//! Every integer is big-endian, so sled's byte order is numeric order. Revisions are never
//! negative on disk (the first write is revision 2), so an `i64` is stored as its `u64` bits.
//! Decoding never trusts the bytes: a short or malformed record decodes to `None`, and the
//! caller turns that into a corruption error rather than a panic.

/// Prefix of the revision log: `r` + revision → [`Meta`] + key + value.
pub const REV_PREFIX: u8 = b'r';
/// Bytes of an encoded revision: main and sub, 8 bytes each.
pub const REVISION_BYTES: usize = 16;
/// Bytes of an encoded [`Meta`]: the tombstone flag, then create revision, version and lease,
/// 8 bytes each.
pub const META_BYTES: usize = 1 + 3 * 8;
/// Bytes of the key length in a revision-log record (a `u32`).
const KEY_LEN_BYTES: usize = 4;
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
/// version and the lease) or a tombstone (all zero). A revision-log record starts with it,
/// and the key index holds it for every change.
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
    /// The meta of the put that made this state.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_bytes_decode_to_none() {
        assert_eq!(Record::decode(&[0; 10]), None);
        let mut bad_len = Record::encode(&Meta::default(), b"key", b"v");
        bad_len[META_BYTES] = 0xFF;
        assert_eq!(Record::decode(&bad_len), None, "key longer than the record");
        assert_eq!(Meta::decode(&[2; META_BYTES]), None, "flag is 0 or 1");
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
    }
}
