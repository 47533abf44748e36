//! How requests, key-values and bytes are printed in reports: bytes as a quoted string with
//! `\0`, `\xff` and other non-printable bytes escaped, long values shortened, and only the
//! fields of a request that differ from their defaults.

use std::fmt::Write;

use etcd_api::etcdserverpb::{
    compare, range_request, request_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use etcd_api::mvccpb::KeyValue;

/// Bytes shown in full; longer ones are cut and their length given.
const SHOWN_BYTES: usize = 40;

/// `bytes` as a double-quoted string, escaped, cut after [`SHOWN_BYTES`].
pub fn bytes(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes.iter().take(SHOWN_BYTES) {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    if bytes.len() > SHOWN_BYTES {
        let _ = write!(out, "...({} bytes)", bytes.len());
    }
    out
}

/// A key-value with every field.
pub fn kv(kv: &KeyValue) -> String {
    format!(
        "{{key={} value={} create={} mod={} version={} lease={}}}",
        bytes(&kv.key),
        bytes(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease
    )
}

/// A watch event: its type, its key-value, and the one before it if sent.
pub fn event(e: &etcd_api::mvccpb::Event) -> String {
    let kind = if e.r#type == 1 { "DELETE" } else { "PUT" };
    let mut out = format!("{kind} {}", e.kv.as_ref().map_or("(no kv)".into(), kv));
    if let Some(prev) = &e.prev_kv {
        out.push_str(&format!(" prev {}", kv(prev)));
    }
    out
}

/// `key` alone, or `key..range_end` (`..` then `\0` is "to the end").
fn span(key: &[u8], range_end: &[u8]) -> String {
    if range_end.is_empty() {
        bytes(key)
    } else {
        format!("{}..{}", bytes(key), bytes(range_end))
    }
}

/// A Range request: its span and every option that is set.
pub fn range(r: &RangeRequest) -> String {
    let mut out = format!("Range {}", span(&r.key, &r.range_end));
    let mut opt = |on: bool, text: String| {
        if on {
            out.push(' ');
            out.push_str(&text);
        }
    };
    opt(r.limit != 0, format!("limit={}", r.limit));
    opt(r.revision != 0, format!("rev={}", r.revision));
    let order = range_request::SortOrder::try_from(r.sort_order)
        .map(|o| o.as_str_name().to_string())
        .unwrap_or_else(|_| r.sort_order.to_string());
    let target = range_request::SortTarget::try_from(r.sort_target)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| r.sort_target.to_string());
    opt(
        r.sort_order != 0 || r.sort_target != 0,
        format!("sort={order}/{target}"),
    );
    opt(r.serializable, "serializable".into());
    opt(r.keys_only, "keys_only".into());
    opt(r.count_only, "count_only".into());
    opt(
        r.min_mod_revision != 0,
        format!("min_mod={}", r.min_mod_revision),
    );
    opt(
        r.max_mod_revision != 0,
        format!("max_mod={}", r.max_mod_revision),
    );
    opt(
        r.min_create_revision != 0,
        format!("min_create={}", r.min_create_revision),
    );
    opt(
        r.max_create_revision != 0,
        format!("max_create={}", r.max_create_revision),
    );
    out
}

/// A Put request.
pub fn put(p: &PutRequest) -> String {
    let mut out = format!("Put {} = {}", bytes(&p.key), bytes(&p.value));
    if p.lease != 0 {
        let _ = write!(out, " lease={}", p.lease);
    }
    for (on, name) in [
        (p.prev_kv, "prev_kv"),
        (p.ignore_value, "ignore_value"),
        (p.ignore_lease, "ignore_lease"),
    ] {
        if on {
            out.push(' ');
            out.push_str(name);
        }
    }
    out
}

/// A DeleteRange request.
pub fn delete_range(d: &DeleteRangeRequest) -> String {
    let mut out = format!("DeleteRange {}", span(&d.key, &d.range_end));
    if d.prev_kv {
        out.push_str(" prev_kv");
    }
    out
}

/// One compare, as etcdctl's txn syntax writes it (`mod("a") > 3`).
pub fn compare(c: &Compare) -> String {
    let target = compare::CompareTarget::try_from(c.target)
        .map(|t| t.as_str_name().to_lowercase())
        .unwrap_or_else(|_| format!("target#{}", c.target));
    let result = match compare::CompareResult::try_from(c.result) {
        Ok(compare::CompareResult::Equal) => "=".to_string(),
        Ok(compare::CompareResult::NotEqual) => "!=".to_string(),
        Ok(compare::CompareResult::Greater) => ">".to_string(),
        Ok(compare::CompareResult::Less) => "<".to_string(),
        Err(_) => format!("result#{}", c.result),
    };
    let against = match &c.target_union {
        None => "(none)".to_string(),
        Some(compare::TargetUnion::Version(v)) => format!("version:{v}"),
        Some(compare::TargetUnion::CreateRevision(v)) => format!("create:{v}"),
        Some(compare::TargetUnion::ModRevision(v)) => format!("mod:{v}"),
        Some(compare::TargetUnion::Value(v)) => format!("value:{}", bytes(v)),
        Some(compare::TargetUnion::Lease(v)) => format!("lease:{v}"),
    };
    format!(
        "{target}({}) {result} {against}",
        span(&c.key, &c.range_end)
    )
}

/// One operation of a Txn branch.
pub fn request_op(op: &RequestOp) -> String {
    match &op.request {
        None => "(empty op)".into(),
        Some(request_op::Request::RequestRange(r)) => range(r),
        Some(request_op::Request::RequestPut(p)) => put(p),
        Some(request_op::Request::RequestDeleteRange(d)) => delete_range(d),
        Some(request_op::Request::RequestTxn(t)) => format!("({})", txn(t)),
    }
}

/// A branch: its ops, or how many when there are too many to list.
fn branch(ops: &[RequestOp]) -> String {
    /// Ops of a branch listed one by one; a longer branch is summarised.
    const LISTED_OPS: usize = 6;
    if ops.len() > LISTED_OPS {
        let nested = ops
            .iter()
            .filter(|o| matches!(o.request, Some(request_op::Request::RequestTxn(_))))
            .count();
        return format!("[{} ops, {nested} of them txns]", ops.len());
    }
    let shown: Vec<String> = ops.iter().map(request_op).collect();
    format!("[{}]", shown.join("; "))
}

/// A Txn request: compares, success branch, failure branch.
pub fn txn(t: &TxnRequest) -> String {
    let compares: Vec<String> = if t.compare.len() > 6 {
        vec![format!("{} compares", t.compare.len())]
    } else {
        t.compare.iter().map(compare).collect()
    };
    format!(
        "Txn if [{}] then {} else {}",
        compares.join(", "),
        branch(&t.success),
        branch(&t.failure)
    )
}

/// A Compact request.
pub fn compact(c: &CompactionRequest) -> String {
    if c.physical {
        format!("Compact {} physical", c.revision)
    } else {
        format!("Compact {}", c.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_escaped_and_long_ones_cut() {
        assert_eq!(bytes(b"a\0\xff\"\\"), r#""a\x00\xff\"\\""#);
        let long = vec![b'v'; 100];
        assert!(bytes(&long).ends_with("...(100 bytes)"));
    }

    #[test]
    fn a_range_shows_only_what_is_set() {
        let r = RangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            limit: 2,
            sort_order: 2,
            sort_target: 3,
            ..RangeRequest::default()
        };
        assert_eq!(range(&r), r#"Range "a".."b" limit=2 sort=DESCEND/MOD"#);
    }
}
