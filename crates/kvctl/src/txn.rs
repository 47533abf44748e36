//! The syntax of `kvctl txn`: its compares (`--if`) and operations (`--then`, `--else`),
//! parsed into etcd's `TxnRequest` before any connection is made.
//!
//! A **compare** is `TARGET(KEY) OP OPERAND`:
//!
//! | target | compares | operand |
//! |---|---|---|
//! | `value` | the key's value, byte by byte | a string |
//! | `version` | how many puts since the key was created (0: it does not exist) | a whole number |
//! | `create` | the revision that created it (0: it does not exist) | a whole number |
//! | `mod` | the revision of its last put (0: it does not exist) | a whole number |
//! | `lease` | the lease it is attached to (0: none) | a whole number |
//!
//! `OP` is one of `=`, `!=`, `<`, `>` (etcd has no `<=` or `>=`). Examples: `mod(k) = 5`,
//! `version(k) = 0` (k does not exist), `value("my key") != "old"`, `create(k) > 0`.
//!
//! An **operation** is one of:
//!
//! | operation | does |
//! |---|---|
//! | `put KEY VALUE` | sets KEY to VALUE |
//! | `get KEY` | reads KEY |
//! | `get KEY END` | reads the keys in `[KEY, END)` |
//! | `get --prefix P` | reads the keys starting with P (`--prefix ""`: every key) |
//! | `get --from KEY` | reads KEY and every key after it |
//! | `del KEY`, `del KEY END`, `del --prefix P`, `del --from KEY` | deletes the same (`delete` also works) |
//!
//! **Words.** Keys, values and operands are bare words (no spaces, no `"`; in a compare's key
//! also no `)`), or double-quoted strings, in which `\"`, `\\`, `\n`, `\t`, `\r`, `\0` and
//! `\xHH` (any byte) are understood. A quoted word is never a flag: `get "--prefix"` reads the
//! key `--prefix`. A number may be quoted too (`mod(k) > "0"`, as etcdctl writes it).
//!
//! Every error names the piece of text it is about; nothing is sent when any part is wrong.

use etcd_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use etcd_api::etcdserverpb::{
    request_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use etcd_api::range::{prefix_end, FROM_KEY};

/// One operation of a branch: what is sent, and how the output names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// The operation as the output heads its result: `put k`, `get --prefix app/`.
    pub label: String,
    pub request: RequestOp,
}

/// A whole transaction: the request, and the labels of each branch's operations in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Txn {
    pub request: TxnRequest,
    /// Labels of the operations run when every compare holds.
    pub then_labels: Vec<String>,
    /// Labels of the operations run otherwise.
    pub else_labels: Vec<String>,
}

/// Parses the `--if`, `--then` and `--else` texts of `kvctl txn`. An error names the flag and
/// the text it is about.
pub fn parse_txn(ifs: &[String], thens: &[String], elses: &[String]) -> Result<Txn, String> {
    let compare = ifs
        .iter()
        .map(|t| parse_compare(t).map_err(|e| format!("--if '{t}': {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let branch = |flag: &str, texts: &[String]| {
        texts
            .iter()
            .map(|t| parse_op(t).map_err(|e| format!("--{flag} '{t}': {e}")))
            .collect::<Result<Vec<_>, _>>()
    };
    let (then_ops, else_ops) = (branch("then", thens)?, branch("else", elses)?);
    Ok(Txn {
        then_labels: then_ops.iter().map(|o| o.label.clone()).collect(),
        else_labels: else_ops.iter().map(|o| o.label.clone()).collect(),
        request: TxnRequest {
            compare,
            success: then_ops.into_iter().map(|o| o.request).collect(),
            failure: else_ops.into_iter().map(|o| o.request).collect(),
        },
    })
}

/// The compare targets by name, with the operand each takes.
const TARGETS: [(&str, CompareTarget); 5] = [
    ("value", CompareTarget::Value),
    ("version", CompareTarget::Version),
    ("create", CompareTarget::Create),
    ("mod", CompareTarget::Mod),
    ("lease", CompareTarget::Lease),
];

/// What a compare should look like, for error messages.
const COMPARE_FORM: &str =
    "a compare is TARGET(KEY) OP OPERAND, with TARGET value, version, create, mod or lease and OP =, !=, < or >";

/// Parses one compare: `TARGET(KEY) OP OPERAND`.
pub fn parse_compare(text: &str) -> Result<Compare, String> {
    let mut s = Scanner::new(text);
    s.skip_spaces();
    let name = s.take_while(|b| b.is_ascii_alphabetic());
    let name = std::str::from_utf8(name).unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(format!("expected a target; {COMPARE_FORM}"));
    }
    let target = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| format!("unknown target `{name}`; {COMPARE_FORM}"))?;
    s.skip_spaces();
    if !s.eat(b'(') {
        return Err(format!(
            "expected `(` after `{name}`: the key goes in parentheses, as in {name}(KEY)"
        ));
    }
    s.skip_spaces();
    let key = s
        .word(|b| b == b')')
        .map_err(|e| format!("in the key: {e}"))?
        .ok_or_else(|| format!("expected a key inside {name}( )"))?;
    if key.bytes.is_empty() {
        return Err("the key must not be empty".into());
    }
    s.skip_spaces();
    if !s.eat(b')') {
        return Err(format!("expected `)` after the key of {name}(...)"));
    }
    s.skip_spaces();
    let result = if s.eat_str("!=") {
        CompareResult::NotEqual
    } else if s.eat_str("<=") || s.eat_str(">=") {
        return Err("etcd compares with =, !=, < or > only; there is no <= or >=".into());
    } else if s.eat_str("==") || s.eat(b'=') {
        CompareResult::Equal
    } else if s.eat(b'<') {
        CompareResult::Less
    } else if s.eat(b'>') {
        CompareResult::Greater
    } else {
        return Err(format!(
            "expected =, !=, < or > after {name}(...), found {}",
            s.rest_for_error()
        ));
    };
    s.skip_spaces();
    let operand = s
        .word(|_| false)
        .map_err(|e| format!("in the operand: {e}"))?
        .ok_or_else(|| format!("expected something to compare {name}(...) with"))?;
    s.skip_spaces();
    if !s.at_end() {
        return Err(format!(
            "unexpected {} after the compare (quote an operand with spaces: \"a b\")",
            s.rest_for_error()
        ));
    }
    let number = || -> Result<i64, String> {
        std::str::from_utf8(&operand.bytes)
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| {
                format!(
                    "{name} compares with a whole number, not {}",
                    show_bytes(&operand.bytes)
                )
            })
    };
    let target_union = match target {
        CompareTarget::Value => TargetUnion::Value(operand.bytes.clone()),
        CompareTarget::Version => TargetUnion::Version(number()?),
        CompareTarget::Create => TargetUnion::CreateRevision(number()?),
        CompareTarget::Mod => TargetUnion::ModRevision(number()?),
        CompareTarget::Lease => TargetUnion::Lease(number()?),
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key: key.bytes,
        range_end: Vec::new(),
        target_union: Some(target_union),
    })
}

/// What the operations look like, for error messages.
const OP_FORMS: &str = "put KEY VALUE, get KEY [END], get --prefix P, get --from KEY, \
     del KEY [END], del --prefix P, del --from KEY";

/// Parses one operation: `put KEY VALUE`, or `get`/`del` of a key, a range, a prefix or every
/// key from one on.
pub fn parse_op(text: &str) -> Result<Op, String> {
    let words = split_words(text)?;
    let Some((verb, args)) = words.split_first() else {
        return Err(format!("expected an operation: {OP_FORMS}"));
    };
    let verb_text = if verb.quoted {
        None
    } else {
        std::str::from_utf8(&verb.bytes).ok()
    };
    match verb_text {
        Some("put") => {
            let [key, value] = args else {
                return Err(format!(
                    "put takes a key and a value (put KEY VALUE), got {} word(s); quote a value with spaces: put k \"a b\"",
                    args.len()
                ));
            };
            let key = non_empty_key(key)?;
            Ok(Op {
                label: format!("put {}", show_bytes(&key)),
                request: RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key,
                        value: value.bytes.clone(),
                        ..Default::default()
                    })),
                },
            })
        }
        Some(verb @ ("get" | "del" | "delete")) => {
            let verb = if verb == "get" { "get" } else { "del" };
            let (key, range_end, label) = key_range(verb, args)?;
            let request = if verb == "get" {
                request_op::Request::RequestRange(RangeRequest {
                    key,
                    range_end,
                    ..Default::default()
                })
            } else {
                request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                    key,
                    range_end,
                    ..Default::default()
                })
            };
            Ok(Op {
                label: format!("{verb} {label}"),
                request: RequestOp {
                    request: Some(request),
                },
            })
        }
        _ => Err(format!(
            "unknown operation {}; the operations are {OP_FORMS}",
            show_bytes(&verb.bytes)
        )),
    }
}

/// The key, `range_end` and label of the arguments of `get` or `del`.
fn key_range(verb: &str, args: &[Word]) -> Result<(Vec<u8>, Vec<u8>, String), String> {
    fn flag(w: &Word) -> Option<&str> {
        (!w.quoted).then(|| std::str::from_utf8(&w.bytes).ok())?
    }
    match args {
        [f, p] if flag(f) == Some("--prefix") => {
            let label = format!("--prefix {}", show_bytes(&p.bytes));
            if p.bytes.is_empty() {
                // Every key: from the smallest key on, as etcd's clients spell it.
                Ok((FROM_KEY.to_vec(), FROM_KEY.to_vec(), label))
            } else {
                Ok((p.bytes.clone(), prefix_end(&p.bytes), label))
            }
        }
        [f, k] if flag(f) == Some("--from") => {
            let label = format!("--from {}", show_bytes(&k.bytes));
            let key = if k.bytes.is_empty() {
                FROM_KEY.to_vec()
            } else {
                k.bytes.clone()
            };
            Ok((key, FROM_KEY.to_vec(), label))
        }
        [f, ..] if flag(f).is_some_and(|t| t.starts_with("--")) => Err(format!(
            "{verb} knows --prefix P and --from KEY (one at a time, with one word after it), not {}",
            args.iter()
                .map(|w| show_bytes(&w.bytes))
                .collect::<Vec<_>>()
                .join(" ")
        )),
        [k] => {
            let key = non_empty_key(k)?;
            let label = show_bytes(&key);
            Ok((key, Vec::new(), label))
        }
        [k, end] => {
            let key = non_empty_key(k)?;
            if end.bytes.is_empty() {
                return Err(format!(
                    "the end of a range must not be empty (use {verb} --from KEY for every key from KEY on)"
                ));
            }
            let label = format!("{} {}", show_bytes(&key), show_bytes(&end.bytes));
            Ok((key, end.bytes.clone(), label))
        }
        _ => Err(format!(
            "{verb} takes KEY, KEY END, --prefix P or --from KEY, got {} word(s)",
            args.len()
        )),
    }
}

fn non_empty_key(w: &Word) -> Result<Vec<u8>, String> {
    if w.bytes.is_empty() {
        Err("the key must not be empty".into())
    } else {
        Ok(w.bytes.clone())
    }
}

/// Shows bytes as a word that parses back to them: bare when it can be, else double-quoted with
/// escapes.
pub fn show_bytes(bytes: &[u8]) -> String {
    let bare = !bytes.is_empty()
        && std::str::from_utf8(bytes).is_ok_and(|s| {
            s.chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '"' | '\\'))
        });
    if bare {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\0' => out.push_str("\\0"),
                c if c.is_control() => {
                    let mut buf = [0; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// One word of an operation or compare.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    bytes: Vec<u8>,
    /// Whether any of it was quoted (so it is never a flag or a verb).
    quoted: bool,
}

/// Splits an operation into words at spaces, honouring double quotes.
fn split_words(text: &str) -> Result<Vec<Word>, String> {
    let mut s = Scanner::new(text);
    let mut words = Vec::new();
    loop {
        s.skip_spaces();
        match s.word(|_| false)? {
            Some(w) => words.push(w),
            None => return Ok(words),
        }
    }
}

/// A cursor over the bytes of one `--if`, `--then` or `--else` text.
struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Scanner<'a> {
        Scanner {
            bytes: text.as_bytes(),
            at: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn at_end(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn skip_spaces(&mut self) {
        self.take_while(|b| b.is_ascii_whitespace());
    }

    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.at;
        while self.peek().is_some_and(&keep) {
            self.at += 1;
        }
        &self.bytes[start..self.at]
    }

    fn eat(&mut self, b: u8) -> bool {
        let yes = self.peek() == Some(b);
        if yes {
            self.at += 1;
        }
        yes
    }

    fn eat_str(&mut self, s: &str) -> bool {
        let yes = self.bytes[self.at..].starts_with(s.as_bytes());
        if yes {
            self.at += s.len();
        }
        yes
    }

    /// What is left, quoted, for an error message.
    fn rest_for_error(&self) -> String {
        format!("`{}`", String::from_utf8_lossy(&self.bytes[self.at..]))
    }

    /// One word: bare bytes and quoted strings run together up to a space, the end, or a byte
    /// that `stops` outside quotes; `None` when there is no word here.
    fn word(&mut self, stops: impl Fn(u8) -> bool) -> Result<Option<Word>, String> {
        let mut word = Word {
            bytes: Vec::new(),
            quoted: false,
        };
        let mut any = false;
        while let Some(b) = self.peek() {
            if b.is_ascii_whitespace() || stops(b) {
                break;
            }
            any = true;
            if b == b'"' {
                self.at += 1;
                word.quoted = true;
                self.quoted_rest(&mut word.bytes)?;
            } else {
                word.bytes.push(b);
                self.at += 1;
            }
        }
        Ok(any.then_some(word))
    }

    /// The rest of a double-quoted string, its opening quote already taken.
    fn quoted_rest(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let start = self.at - 1;
        loop {
            let Some(b) = self.peek() else {
                return Err(format!(
                    "the quote opened at {} is not closed: `{}`",
                    start + 1,
                    String::from_utf8_lossy(&self.bytes[start..])
                ));
            };
            self.at += 1;
            match b {
                b'"' => return Ok(()),
                b'\\' => {
                    let Some(e) = self.peek() else { continue };
                    self.at += 1;
                    match e {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'0' => out.push(0),
                        b'x' => {
                            let hex = self.bytes.get(self.at..self.at + 2).and_then(|h| {
                                u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
                            });
                            match hex {
                                Some(v) => {
                                    out.push(v);
                                    self.at += 2;
                                }
                                None => {
                                    return Err(
                                        "\\x must be followed by two hex digits, as in \\x0a"
                                            .into(),
                                    )
                                }
                            }
                        }
                        other => {
                            return Err(format!(
                                "unknown escape \\{} in a quoted string (known: \\\" \\\\ \\n \\t \\r \\0 \\xHH)",
                                char::from(other)
                            ))
                        }
                    }
                }
                b => out.push(b),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_api::etcdserverpb::request_op::Request;

    fn cmp(target: CompareTarget, result: CompareResult, key: &[u8], u: TargetUnion) -> Compare {
        Compare {
            result: result as i32,
            target: target as i32,
            key: key.to_vec(),
            range_end: Vec::new(),
            target_union: Some(u),
        }
    }

    #[test]
    fn compares_on_every_target_with_every_operator() {
        use CompareResult::*;
        use CompareTarget::*;
        let cases = [
            (
                "mod(k) = 5",
                cmp(Mod, Equal, b"k", TargetUnion::ModRevision(5)),
            ),
            (
                "mod(k) == 5",
                cmp(Mod, Equal, b"k", TargetUnion::ModRevision(5)),
            ),
            (
                "  version( k )!=0 ",
                cmp(Version, NotEqual, b"k", TargetUnion::Version(0)),
            ),
            (
                "create(app/a) < \"7\"",
                cmp(Create, Less, b"app/a", TargetUnion::CreateRevision(7)),
            ),
            (
                "lease(k) > 0",
                cmp(Lease, Greater, b"k", TargetUnion::Lease(0)),
            ),
            (
                r#"value("my key") = "a \"b\"\n""#,
                cmp(
                    Value,
                    Equal,
                    b"my key",
                    TargetUnion::Value(b"a \"b\"\n".to_vec()),
                ),
            ),
            (
                "value(k) = v=1",
                cmp(Value, Equal, b"k", TargetUnion::Value(b"v=1".to_vec())),
            ),
            (
                r#"value(k) = "\xff\x00""#,
                cmp(Value, Equal, b"k", TargetUnion::Value(vec![0xff, 0])),
            ),
            (
                r#"value(k) = """#,
                cmp(Value, Equal, b"k", TargetUnion::Value(Vec::new())),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_compare(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn a_bad_compare_is_explained() {
        let cases = [
            ("", "expected a target"),
            ("modd(k) = 1", "unknown target `modd`"),
            ("mod k = 1", "expected `(` after `mod`"),
            ("mod() = 1", "expected a key inside mod( )"),
            (r#"mod("") = 1"#, "the key must not be empty"),
            ("mod(k = 1", "expected `)`"),
            ("mod(k) >= 1", "there is no <= or >="),
            (
                "mod(k) ~ 1",
                "expected =, !=, < or > after mod(...), found `~ 1`",
            ),
            ("mod(k) =", "expected something to compare mod(...) with"),
            ("mod(k) = x", "mod compares with a whole number, not x"),
            ("version(k) = 1.5", "whole number, not 1.5"),
            ("value(k) = a b", "unexpected `b` after the compare"),
            (r#"value(k) = "open"#, "is not closed"),
            (r#"value(k) = "\q""#, "unknown escape \\q"),
            (r#"value(k) = "\x4""#, "two hex digits"),
        ];
        for (text, want) in cases {
            match parse_compare(text) {
                Err(e) => assert!(e.contains(want), "{text:?}: {e:?} lacks {want:?}"),
                Ok(c) => panic!("{text:?} parsed as {c:?}"),
            }
        }
    }

    fn request(text: &str) -> Request {
        parse_op(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .request
            .request
            .expect("an operation")
    }

    #[test]
    fn operations_and_their_key_ranges() {
        assert_eq!(
            request(r#"put k "hello world""#),
            Request::RequestPut(PutRequest {
                key: b"k".to_vec(),
                value: b"hello world".to_vec(),
                ..Default::default()
            })
        );
        let range = |key: &[u8], end: &[u8]| {
            Request::RequestRange(RangeRequest {
                key: key.to_vec(),
                range_end: end.to_vec(),
                ..Default::default()
            })
        };
        let del = |key: &[u8], end: &[u8]| {
            Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.to_vec(),
                range_end: end.to_vec(),
                ..Default::default()
            })
        };
        assert_eq!(request("get k"), range(b"k", b""));
        assert_eq!(request("get a c"), range(b"a", b"c"));
        assert_eq!(request("get --prefix app/"), range(b"app/", b"app0"));
        assert_eq!(request(r#"get --prefix """#), range(b"\0", b"\0"));
        assert_eq!(request("get --from m"), range(b"m", b"\0"));
        assert_eq!(request(r#"get "--prefix""#), range(b"--prefix", b""));
        assert_eq!(request("del k"), del(b"k", b""));
        assert_eq!(request("delete --prefix a"), del(b"a", b"b"));
        assert_eq!(request("del --from m"), del(b"m", b"\0"));
        assert_eq!(request("del a c"), del(b"a", b"c"));
    }

    #[test]
    fn labels_name_the_operation_as_it_parses_back() {
        for (text, label) in [
            ("put  k   v", "put k"),
            (r#"put "a b" v"#, r#"put "a b""#),
            ("get --prefix app/", "get --prefix app/"),
            (r#"get --prefix """#, r#"get --prefix """#),
            ("delete a c", "del a c"),
            (r#"del "\xff\n""#, r#"del "\xff\n""#),
        ] {
            let op = parse_op(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(op.label, label, "{text}");
            if !label.starts_with("put") {
                // A put's label leaves its value out; the others are the operation itself.
                assert_eq!(parse_op(&op.label).map(|o| o.request), Ok(op.request));
            }
        }
    }

    #[test]
    fn a_bad_operation_is_explained() {
        let cases = [
            ("", "expected an operation"),
            ("   ", "expected an operation"),
            ("set k v", "unknown operation set"),
            (r#""put" k v"#, "unknown operation"),
            ("put k", "put takes a key and a value"),
            ("put k a b", "got 3 word(s)"),
            (r#"put "" v"#, "the key must not be empty"),
            (
                "get",
                "get takes KEY, KEY END, --prefix P or --from KEY, got 0",
            ),
            ("get a b c", "got 3 word(s)"),
            ("get --prefix", "get knows --prefix P and --from KEY"),
            ("del --range a", "del knows --prefix P and --from KEY"),
            (r#"get a """#, "the end of a range must not be empty"),
            (r#"get "unclosed"#, "is not closed"),
        ];
        for (text, want) in cases {
            match parse_op(text) {
                Err(e) => assert!(e.contains(want), "{text:?}: {e:?} lacks {want:?}"),
                Ok(op) => panic!("{text:?} parsed as {op:?}"),
            }
        }
    }

    #[test]
    fn a_txn_names_the_flag_and_text_of_its_error() {
        let s = |v: &[&str]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let txn = parse_txn(
            &s(&["mod(k) = 5", "value(k) = v"]),
            &s(&["put k v2", "del k3"]),
            &s(&["get k"]),
        )
        .expect("a good txn");
        assert_eq!(txn.request.compare.len(), 2);
        assert_eq!(txn.request.success.len(), 2);
        assert_eq!(txn.request.failure.len(), 1);
        assert_eq!(txn.then_labels, ["put k", "del k3"]);
        assert_eq!(txn.else_labels, ["get k"]);

        let empty = parse_txn(&[], &[], &[]).expect("an empty txn is etcd's too");
        assert_eq!(empty.request, TxnRequest::default());

        let e = parse_txn(&s(&["mod(k) = x"]), &[], &[]).unwrap_err();
        assert!(e.starts_with("--if 'mod(k) = x': mod compares"), "{e}");
        let e = parse_txn(&[], &s(&["put k v", "pu k v"]), &[]).unwrap_err();
        assert!(
            e.starts_with("--then 'pu k v': unknown operation pu"),
            "{e}"
        );
        let e = parse_txn(&[], &[], &s(&["get"])).unwrap_err();
        assert!(e.starts_with("--else 'get': get takes"), "{e}");
    }

    #[test]
    fn bytes_show_bare_or_quoted() {
        assert_eq!(show_bytes(b"app/a"), "app/a");
        assert_eq!(show_bytes("ключ".as_bytes()), "ключ");
        assert_eq!(show_bytes(b""), r#""""#);
        assert_eq!(show_bytes(b"a b"), r#""a b""#);
        assert_eq!(show_bytes(b"say \"hi\"\\"), r#""say \"hi\"\\""#);
        assert_eq!(show_bytes(&[0xff, b'\n', 0x01]), r#""\xff\n\x01""#);
    }
}
