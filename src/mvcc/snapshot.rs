//! The bytes of a state-machine snapshot.
//!
//! The data is a sequence of parts, each a 4-byte big-endian length and that many bytes,
//! taken two by two — the framing snapshots had before revisions existed, when each pair
//! was a key and its value. The framing is kept so that whoever checks a received snapshot
//! by that framing (`state_machine::snapshot_pairs`) takes both formats.
//!
//! - **Versioned** (this store): the first pair is an empty part and a header:
//!   [`SNAPSHOT_MAGIC`], the format byte [`SNAPSHOT_FORMAT`], then the revision and the compact
//!   revision (8 bytes each). Then, in format 2, one pair per lease, in id order: its 9-byte
//!   record key (`l` + id) and its 16-byte record ([`super::lease`]); format 1, written before
//!   leases, has none. Every other pair is one revision-log record up to the
//!   revision, in revision order: the 16-byte revision and the record's bytes. Records that
//!   compaction made unreachable may be among them if physical compaction had not removed
//!   them yet; the receiver rebuilds its key index from the records and removes those itself.
//! - **Unversioned** (old): every pair is a key and its value, in key order. Imported as a
//!   migration: every key live at revision 2. An old snapshot is taken for a versioned one
//!   only if its first key is empty and its value is exactly a header, which no old store
//!   wrote.

use super::keys::{be_i64, Revision, REVISION_BYTES};
use super::lease::{self, Lease};
use crate::error::{Error, Result};

/// What a versioned snapshot's header starts with.
pub const SNAPSHOT_MAGIC: &[u8] = b"\xffmvcc";
/// The format of versioned snapshots this code writes: 2, with leases. It also reads 1.
pub const SNAPSHOT_FORMAT: u8 = 2;
/// The format written before leases existed.
const FORMAT_WITHOUT_LEASES: u8 = 1;
/// Bytes of a part's length.
const LEN_BYTES: usize = 4;
/// Bytes of a header: the magic, the format byte, the revision, the compact revision.
const HEADER_BYTES: usize = SNAPSHOT_MAGIC.len() + 1 + 2 * 8;

/// One record of a versioned snapshot, borrowed from its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRecord<'a> {
    pub rev: Revision,
    pub bytes: &'a [u8],
}

/// What snapshot data holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    Unversioned(Vec<(&'a [u8], &'a [u8])>),
    Versioned {
        revision: i64,
        compact: i64,
        leases: Vec<(i64, Lease)>,
        records: Vec<SnapshotRecord<'a>>,
    },
}

fn push_part(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u32).to_be_bytes());
    out.extend_from_slice(part);
}

/// The start of a versioned snapshot.
pub fn header(revision: i64, compact: i64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_BYTES);
    h.extend_from_slice(SNAPSHOT_MAGIC);
    h.push(SNAPSHOT_FORMAT);
    h.extend_from_slice(&revision.to_be_bytes());
    h.extend_from_slice(&compact.to_be_bytes());
    let mut out = Vec::new();
    push_part(&mut out, &[]);
    push_part(&mut out, &h);
    out
}

/// Adds a lease; every lease goes after the header and before the first record.
pub fn push_lease(out: &mut Vec<u8>, id: i64, lease: Lease) {
    push_part(out, &lease::lease_key(id));
    push_part(out, &lease.to_bytes());
}

pub fn push_record(out: &mut Vec<u8>, rev: Revision, bytes: &[u8]) {
    push_part(out, &rev.to_bytes());
    push_part(out, bytes);
}

fn corrupt(why: &str) -> Error {
    Error::Disk(format!("snapshot data is corrupt: {why}"))
}

/// The pairs of the framing; data that is not whole pairs is refused.
pub fn pairs(data: &[u8]) -> Result<Vec<(&[u8], &[u8])>> {
    fn part<'a>(data: &'a [u8], at: &mut usize) -> Result<&'a [u8]> {
        let len: [u8; LEN_BYTES] = data
            .get(*at..*at + LEN_BYTES)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("a part is cut short"))?;
        let start = *at + LEN_BYTES;
        let end = start
            .checked_add(u32::from_be_bytes(len) as usize)
            .ok_or_else(|| corrupt("a part is cut short"))?;
        let bytes = data
            .get(start..end)
            .ok_or_else(|| corrupt("a part is cut short"))?;
        *at = end;
        Ok(bytes)
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let k = part(data, &mut at)?;
        let v = part(data, &mut at)?;
        out.push((k, v));
    }
    Ok(out)
}

/// Reads snapshot data of either format.
pub fn parse(data: &[u8]) -> Result<Parsed<'_>> {
    let all = pairs(data)?;
    let versioned = all.first().is_some_and(|(k, v)| {
        k.is_empty() && v.len() == HEADER_BYTES && v.starts_with(SNAPSHOT_MAGIC)
    });
    if !versioned {
        return Ok(Parsed::Unversioned(all));
    }
    let h = all[0].1;
    let format = h[SNAPSHOT_MAGIC.len()];
    if format != SNAPSHOT_FORMAT && format != FORMAT_WITHOUT_LEASES {
        return Err(corrupt(&format!("unknown format {format}")));
    }
    let at = SNAPSHOT_MAGIC.len() + 1;
    let (Some(revision), Some(compact)) = (be_i64(h, at), be_i64(h, at + 8)) else {
        return Err(corrupt("short header"));
    };
    let mut rest = &all[1..];
    let mut leases: Vec<(i64, Lease)> = Vec::new();
    while let Some(((key, value), more)) = rest.split_first() {
        let Some(id) = lease::id_of_key(key) else {
            break;
        };
        let lease = Lease::from_bytes(value).ok_or_else(|| corrupt("a bad lease"))?;
        if leases.last().is_some_and(|(last, _)| *last >= id) {
            return Err(corrupt("leases out of order"));
        }
        leases.push((id, lease));
        rest = more;
    }
    if format == FORMAT_WITHOUT_LEASES && !leases.is_empty() {
        return Err(corrupt("leases in a format without them"));
    }
    let mut records = Vec::with_capacity(rest.len());
    let mut last: Option<Revision> = None;
    for (rev, bytes) in rest {
        if rev.len() != REVISION_BYTES {
            return Err(corrupt("a record's revision is not 16 bytes"));
        }
        let rev = Revision::from_bytes(rev).ok_or_else(|| corrupt("bad revision"))?;
        if last.is_some_and(|l| l >= rev) || rev.main > revision || rev.main < 0 {
            return Err(corrupt("records out of order or beyond the revision"));
        }
        last = Some(rev);
        records.push(SnapshotRecord { rev, bytes });
    }
    Ok(Parsed::Versioned {
        revision,
        compact,
        leases,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_parse_and_share_the_framing() {
        let mut data = header(7, 3);
        push_record(&mut data, Revision { main: 4, sub: 0 }, b"rec");
        assert_eq!(
            pairs(&data).unwrap().len(),
            2,
            "old framing reads the new format"
        );
        match parse(&data).unwrap() {
            Parsed::Versioned {
                revision: 7,
                compact: 3,
                leases,
                records,
            } => {
                assert_eq!(records[0].bytes, b"rec");
                assert!(leases.is_empty());
            }
            other => panic!("parsed as {other:?}"),
        }
        let mut old = Vec::new();
        push_part(&mut old, b"k");
        push_part(&mut old, b"v");
        assert_eq!(
            parse(&old).unwrap(),
            Parsed::Unversioned(vec![(&b"k"[..], &b"v"[..])])
        );
        assert_eq!(parse(&[]).unwrap(), Parsed::Unversioned(vec![]));
    }

    #[test]
    fn leases_come_between_the_header_and_the_records() {
        let lease = Lease {
            ttl: 10,
            remaining: 4,
        };
        let mut data = header(7, 3);
        push_lease(&mut data, 5, lease);
        push_lease(&mut data, 9, lease);
        push_record(&mut data, Revision { main: 4, sub: 0 }, b"rec");
        match parse(&data).unwrap() {
            Parsed::Versioned {
                leases, records, ..
            } => {
                assert_eq!(leases, vec![(5, lease), (9, lease)]);
                assert_eq!(records.len(), 1);
            }
            other => panic!("parsed as {other:?}"),
        }
        let mut unordered = header(7, 3);
        push_lease(&mut unordered, 9, lease);
        push_lease(&mut unordered, 5, lease);
        assert!(parse(&unordered).is_err(), "leases out of order");
        let mut old = header(7, 3);
        old[LEN_BYTES * 2 + SNAPSHOT_MAGIC.len()] = FORMAT_WITHOUT_LEASES;
        push_record(&mut old, Revision { main: 4, sub: 0 }, b"rec");
        assert!(parse(&old).is_ok(), "format 1 still reads");
    }

    #[test]
    fn damaged_data_is_refused_not_panicked_on() {
        let mut data = header(7, 3);
        push_record(&mut data, Revision { main: 9, sub: 0 }, b"rec");
        assert!(parse(&data).is_err(), "a record beyond the revision");
        assert!(parse(&data[..data.len() - 1]).is_err(), "cut short");
        let mut unknown = header(7, 3);
        unknown[LEN_BYTES * 2 + SNAPSHOT_MAGIC.len()] = 99;
        assert!(parse(&unknown).is_err(), "unknown format byte");
        assert!(parse(&[0, 0, 0, 9, 1]).is_err());
    }
}
