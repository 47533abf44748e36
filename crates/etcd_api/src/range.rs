//! Key ranges as etcd's API spells them.
//!
//! A request names a key and a `range_end`: an empty `range_end` means the key alone, the
//! single byte `"\0"` means every key from `key` on, and anything else the half-open range
//! `[key, range_end)` in byte order. A `key` of `"\0"` with a `range_end` of `"\0"` is every
//! key. A `range_end` at or before `key` is an empty range, not an error.

/// The `range_end` meaning "every key from `key` on".
pub const FROM_KEY: &[u8] = b"\0";

/// The `range_end` that makes `[prefix, end)` exactly the keys starting with `prefix`: the
/// prefix with its last byte below 0xff incremented and what follows dropped. A prefix of
/// nothing but 0xff bytes (or an empty one) has no such end; it gets [`FROM_KEY`], as in
/// etcd's clients.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    FROM_KEY.to_vec()
}

/// Whether `key` falls in the range (`key`, `range_end`) names, by the rules above.
pub fn contains(start: &[u8], range_end: &[u8], key: &[u8]) -> bool {
    if range_end.is_empty() {
        key == start
    } else if range_end == FROM_KEY {
        key >= start
    } else {
        key >= start && key < range_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"foo"), b"fop");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), FROM_KEY);
        assert_eq!(prefix_end(b""), FROM_KEY);
    }

    #[test]
    fn contains_follows_the_three_forms() {
        assert!(contains(b"a", b"", b"a") && !contains(b"a", b"", b"ab"));
        assert!(contains(b"a", FROM_KEY, b"zzz") && !contains(b"b", FROM_KEY, b"a"));
        assert!(contains(b"a", b"c", b"b") && !contains(b"a", b"c", b"c"));
        assert!(
            !contains(b"c", b"a", b"b"),
            "an end before the key is empty"
        );
        assert!(contains(FROM_KEY, FROM_KEY, b"\0"), "\\0..\\0 is every key");
    }
}
