//! etcdctl transcripts: a session at a terminal, written as Markdown, run against a store and
//! matched line by line.
//!
//! The format is trycmd's (`tests/cmd/*.md`), plus standard input for `etcdctl txn`, which
//! trycmd's Markdown cannot give:
//!
//! - only ```` ```console ```` blocks count; prose around them is ignored;
//! - `$ etcdctl <args>` runs etcdctl, the args split as a shell would;
//!   `$ printf '<text>' | etcdctl <args>` runs it with `<text>` on stdin, with printf's `\n`,
//!   `\t`, `\\` and `%%`;
//! - an optional `? <code>` line after the command gives the exit code (0 when absent);
//! - the lines after, up to the next `$ ` or the end of the block, are the output, stdout and
//!   stderr interleaved as written; the last newline is for layout (so an output ends with an
//!   empty line before the next command);
//! - `[..]` in an expected line matches any text within the line; `[NAME]` variables stand for
//!   values the test gives (endpoints, ports): in arguments they are replaced by the value, in
//!   output the value is replaced by them before matching;
//! - `[=NAME]` in an expected line *captures* a word (letters, digits, `_`) of the actual line
//!   there — an id the store chose, such as a lease's — as the variable `[NAME]` for the
//!   commands and outputs after it.
//!
//! etcdctl's client logs a JSON warning line on stderr for every failed call
//! (`{"level":"warn",...,"msg":"retrying of unary invoker failed",...}`); those lines are
//! dropped before matching, as they carry timestamps and client ids.
//!
//! Every command runs, even after a mismatch, so that a failure shows the whole session as the
//! store played it ([`Played::actual`]), ready to review against the file.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kv_harness::{HarnessError, Proc};

/// How long one etcdctl command may take (etcdctl's own deadline is 5 s a call).
pub const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// One command of a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Its line in the file (from 1).
    pub line: usize,
    /// The command as written, after `$ `.
    pub command: String,
    /// etcdctl's arguments.
    pub args: Vec<String>,
    /// What it reads on stdin.
    pub stdin: Option<String>,
    /// The exit code expected.
    pub status: i32,
    /// The output expected, with masks and variables.
    pub expected: String,
}

/// A parsed transcript.
#[derive(Debug, Clone)]
pub struct Transcript {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its commands, in order.
    pub steps: Vec<Step>,
}

/// `printf`'s escapes in `format`: `\n`, `\t`, `\\`, `\"` and `%%`; other `%` are refused.
fn printf(format: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                other => return Err(format!("unsupported escape \\{other:?} in printf")),
            },
            '%' => match chars.next() {
                Some('%') => out.push('%'),
                other => return Err(format!("unsupported %{other:?} in printf")),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

/// etcdctl's arguments and stdin from a command line.
fn parse_command(command: &str) -> Result<(Vec<String>, Option<String>), String> {
    let split = |text: &str| shlex::split(text).ok_or_else(|| format!("cannot split `{text}`"));
    let (feed, etcdctl) = match command.split_once(" | ") {
        Some((feed, rest)) => (Some(feed), rest),
        None => (None, command),
    };
    let stdin = match feed {
        None => None,
        Some(feed) => match split(feed)?.as_slice() {
            [p, format] if p == "printf" => Some(printf(format)?),
            _ => {
                return Err(format!(
                    "only `printf '<text>' | etcdctl ...` may feed stdin: `{feed}`"
                ))
            }
        },
    };
    let mut words = split(etcdctl)?;
    if words.first().map(String::as_str) != Some("etcdctl") {
        return Err(format!("not an etcdctl command: `{command}`"));
    }
    words.remove(0);
    Ok((words, stdin))
}

impl Transcript {
    /// Reads and parses the transcript at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Transcript, HarnessError> {
        let path = path.as_ref().to_path_buf();
        let text = fs::read_to_string(&path)
            .map_err(|e| kv_harness::harness_error!("{}: {e}", path.display()))?;
        let steps = Transcript::parse(&text)
            .map_err(|e| kv_harness::harness_error!("{}: {e}", path.display()))?;
        Ok(Transcript { path, steps })
    }

    /// A transcript from `text`, named `name` in reports.
    pub fn from_text(name: &str, text: &str) -> Result<Transcript, HarnessError> {
        let steps =
            Transcript::parse(text).map_err(|e| kv_harness::harness_error!("{name}: {e}"))?;
        Ok(Transcript {
            path: PathBuf::from(name),
            steps,
        })
    }

    /// Parses a transcript's text (see the module doc).
    pub fn parse(text: &str) -> Result<Vec<Step>, String> {
        let lines: Vec<&str> = text.lines().collect();
        let mut steps = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            let fence = lines[i].trim_end();
            i += 1;
            if !fence.starts_with("```") {
                continue;
            }
            if fence.trim_start_matches('`').trim() != "console" {
                // Another block: skip to its end.
                while i < lines.len() && !lines[i].starts_with("```") {
                    i += 1;
                }
                i += 1;
                continue;
            }
            while i < lines.len() && !lines[i].starts_with("```") {
                let line = i + 1;
                let command = lines[i]
                    .strip_prefix("$ ")
                    .ok_or_else(|| format!("line {line}: expected `$ `, got `{}`", lines[i]))?;
                let (args, stdin) =
                    parse_command(command).map_err(|e| format!("line {line}: {e}"))?;
                i += 1;
                let mut status = 0;
                if let Some(code) = lines.get(i).and_then(|l| l.strip_prefix("? ")) {
                    status = code
                        .trim()
                        .parse()
                        .map_err(|e| format!("line {}: exit code `{code}`: {e}", i + 1))?;
                    i += 1;
                }
                let mut expected = String::new();
                while i < lines.len() && !lines[i].starts_with("$ ") && !lines[i].starts_with("```")
                {
                    expected.push_str(lines[i]);
                    expected.push('\n');
                    i += 1;
                }
                expected.pop();
                steps.push(Step {
                    line,
                    command: command.to_string(),
                    args,
                    stdin,
                    status,
                    expected,
                });
            }
            i += 1;
        }
        if steps.is_empty() {
            return Err("no commands in ```console blocks".into());
        }
        Ok(steps)
    }

    /// Runs every command with `etcdctl` against `endpoints` (comma-separated, as
    /// `ETCDCTL_ENDPOINTS` takes them), `vars` standing for their values; commands run in
    /// `dir`, where their output files go.
    pub fn play(
        &self,
        etcdctl: &Path,
        endpoints: &str,
        vars: &[(&str, String)],
        dir: &Path,
    ) -> Result<Played, HarnessError> {
        let mut results = Vec::new();
        let mut vars: Vec<(String, String)> = vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect();
        for (n, step) in self.steps.iter().enumerate() {
            let args: Vec<String> = step.args.iter().map(|a| substitute(a, &vars)).collect();
            let out_path = dir.join(format!("etcdctl{n}.out"));
            let out = File::create(&out_path)?;
            let mut cmd = Command::new(etcdctl);
            kv_harness::etcd::clean_etcd_env(&mut cmd)
                .current_dir(dir)
                .env("ETCDCTL_API", "3")
                .args(&args)
                .stdout(out.try_clone()?)
                .stderr(out);
            // etcdctl refuses the variable and the flag together.
            if !args.iter().any(|a| a.starts_with("--endpoints")) {
                cmd.env("ETCDCTL_ENDPOINTS", endpoints);
            }
            match &step.stdin {
                Some(text) => {
                    let in_path = dir.join(format!("etcdctl{n}.in"));
                    fs::write(&in_path, text)?;
                    cmd.stdin(File::open(&in_path)?);
                }
                None => {
                    cmd.stdin(Stdio::null());
                }
            }
            let mut proc = Proc::spawn(format!("etcdctl {}", args.join(" ")), &mut cmd)?;
            let status = proc.wait_timeout(ETCDCTL_TIMEOUT);
            let raw = fs::read_to_string(&out_path)?;
            vars.extend(captures(&step.expected, &masked_output(&raw, &vars)));
            let output = masked_output(&raw, &vars);
            let status = match status {
                Some(s) => s.code().unwrap_or(-1),
                None => {
                    proc.kill9();
                    -1
                }
            };
            results.push(Outcome { status, output });
        }
        Ok(Played {
            transcript: self.clone(),
            results,
        })
    }
}

/// `[NAME]` in `text` replaced by its value.
fn substitute(text: &str, vars: &[(String, String)]) -> String {
    vars.iter()
        .fold(text.to_string(), |t, (name, value)| t.replace(name, value))
}

/// The `[=NAME]` captures of `expected` in `actual`, line by line, as `([NAME], word)`. A
/// line that does not match around its captures captures nothing (and fails to match).
fn captures(expected: &str, actual: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (pattern, line) in expected.split('\n').zip(actual.split('\n')) {
        let mut rest = line;
        let mut pattern = pattern;
        let mut got = Vec::new();
        while !pattern.is_empty() {
            if let Some(after) = pattern.strip_prefix("[=") {
                let Some(close) = after.find(']') else { break };
                let word: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                got.push((format!("[{}]", &after[..close]), word.clone()));
                rest = &rest[word.len()..];
                pattern = &after[close + 1..];
            } else if let Some(after) = pattern.strip_prefix("[..]") {
                // Any text, up to the literal text that follows (or the end of the line).
                let literal_end = after.find('[').unwrap_or(after.len());
                let literal = &after[..literal_end];
                if literal.is_empty() {
                    rest = &rest[rest.len()..];
                } else {
                    let Some(at) = rest.find(literal) else { break };
                    rest = &rest[at..];
                }
                pattern = after;
            } else {
                let c = pattern.chars().next().expect("not empty");
                match rest.strip_prefix(c) {
                    Some(r) => rest = r,
                    None => break,
                }
                pattern = &pattern[c.len_utf8()..];
            }
        }
        if pattern.is_empty() {
            found.extend(got.into_iter().filter(|(_, word)| !word.is_empty()));
        }
    }
    found
}

/// etcdctl's output without its warning lines, each variable's value replaced by its name
/// (longest values first, so a value that contains another is replaced whole).
fn masked_output(raw: &str, vars: &[(String, String)]) -> String {
    let mut kept: String = raw
        .split_inclusive('\n')
        .filter(|line| !(line.starts_with('{') && line.contains("\"level\":\"warn\"")))
        .collect();
    let mut by_length: Vec<&(String, String)> = vars.iter().collect();
    by_length.sort_by_key(|(_, value)| std::cmp::Reverse(value.len()));
    for (name, value) in by_length {
        if !value.is_empty() {
            kept = kept.replace(value.as_str(), name.as_str());
        }
    }
    kept
}

/// Whether `actual` matches the expected `pattern` line, `[..]` matching any text.
pub fn line_matches(pattern: &str, actual: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == actual;
    }
    if !actual.starts_with(first)
        || !actual.ends_with(last)
        || actual.len() < first.len() + last.len()
    {
        return false;
    }
    let end = actual.len() - last.len();
    let mut at = first.len();
    for middle in &parts[1..parts.len() - 1] {
        match actual[at..end].find(middle) {
            Some(found) => at += found + middle.len(),
            None => return false,
        }
    }
    true
}

/// Whether a whole output matches, line by line (a capture `[=NAME]` matches what it
/// captured, which the output shows as `[NAME]`).
pub fn output_matches(expected: &str, actual: &str) -> bool {
    let expected = expected.replace("[=", "[");
    let (e, a): (Vec<&str>, Vec<&str>) =
        (expected.split('\n').collect(), actual.split('\n').collect());
    e.len() == a.len() && e.iter().zip(&a).all(|(p, l)| line_matches(p, l))
}

/// What one command did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Its exit code (-1: killed, or still running after [`ETCDCTL_TIMEOUT`]).
    pub status: i32,
    /// Its output, masked as the module doc says.
    pub output: String,
}

/// A transcript as played against a store.
#[derive(Debug, Clone)]
pub struct Played {
    /// What was played.
    pub transcript: Transcript,
    /// What each command did, in order.
    pub results: Vec<Outcome>,
}

impl Played {
    /// Every command whose exit code or output differed from the transcript's, described.
    pub fn mismatches(&self) -> Vec<String> {
        let path = self.transcript.path.display();
        let mut found = Vec::new();
        for (step, got) in self.transcript.steps.iter().zip(&self.results) {
            let actual = got.output.as_str();
            let output_ok = output_matches(&step.expected, actual);
            if got.status != step.status || !output_ok {
                found.push(format!(
                    "{path}:{}: $ {}\n  exit code: expected {}, got {}\n  expected output:\n{}\n  actual output:\n{}",
                    step.line,
                    step.command,
                    step.status,
                    got.status,
                    indent(&step.expected),
                    indent(actual)
                ));
            }
        }
        found
    }

    /// The session as the store played it, in the transcript's format (without masks).
    pub fn actual(&self) -> String {
        let mut out = String::from("```console\n");
        for (step, got) in self.transcript.steps.iter().zip(&self.results) {
            out.push_str(&format!("$ {}\n", step.command));
            if got.status != 0 {
                out.push_str(&format!("? {}\n", got.status));
            }
            out.push_str(&got.output);
            out.push('\n');
        }
        out.push_str("```\n");
        out
    }

    /// Panics with every mismatch and the whole session as played, if any command differed.
    pub fn assert_matches(&self) {
        let mismatches = self.mismatches();
        assert!(
            mismatches.is_empty(),
            "{} of {} etcdctl commands differ from {}:\n\n{}\n\nThe whole session as played:\n{}",
            mismatches.len(),
            self.results.len(),
            self.transcript.path.display(),
            mismatches.join("\n\n"),
            self.actual()
        );
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    |{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_match_within_a_line_only() {
        assert!(line_matches("a [..] c", "a b c"));
        assert!(line_matches("[..]", "anything"));
        assert!(line_matches("x[..]y[..]z", "x1y2y3z"));
        assert!(!line_matches("a [..] c", "a b d"));
        assert!(
            !line_matches("ab[..]ba", "aba"),
            "prefix and suffix may not overlap"
        );
        assert!(!line_matches("exact", "exactly"));
        assert!(output_matches("OK\n[..]", "OK\nfoo"));
        assert!(
            !output_matches("OK", "OK\nfoo"),
            "a line more is a mismatch"
        );
    }

    #[test]
    fn a_transcript_is_commands_codes_stdin_and_output() {
        let text = "prose\n```console\n$ etcdctl put foo bar\nOK\n\n$ etcdctl get foo --rev 99\n? 1\nError: x\n\n$ printf 'value(\"a\") = \"1\"\\n\\nput a 2\\n\\n\\n' | etcdctl txn -w json\nSUCCESS\n```\n```text\n$ not a command\n```\n";
        let steps = Transcript::parse(text).expect("parses");
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0].args, ["put", "foo", "bar"]);
        assert_eq!((steps[0].status, steps[0].expected.as_str()), (0, "OK\n"));
        assert_eq!(
            (steps[1].status, steps[1].expected.as_str()),
            (1, "Error: x\n")
        );
        assert_eq!(steps[2].args, ["txn", "-w", "json"]);
        assert_eq!(
            steps[2].stdin.as_deref(),
            Some("value(\"a\") = \"1\"\n\nput a 2\n\n\n")
        );
        assert_eq!(steps[2].expected, "SUCCESS");
    }

    #[test]
    fn warnings_are_dropped_and_values_become_variables() {
        let raw = "{\"level\":\"warn\",\"ts\":\"now\"}\nError: 127.0.0.1:23790 down\n";
        let vars = [("[EP]".to_string(), "127.0.0.1:23790".to_string())];
        assert_eq!(masked_output(raw, &vars), "Error: [EP] down\n");
    }

    #[test]
    fn captures_name_the_words_the_store_chose() {
        let got = captures(
            "found\nlease [=L1] granted with TTL(60s)",
            "found\nlease 694d7f3c1a granted with TTL(60s)",
        );
        assert_eq!(got, [("[L1]".to_string(), "694d7f3c1a".to_string())]);
        assert_eq!(
            captures(
                "lease [=L2] granted with TTL([..]s)",
                "lease 3f granted with TTL(2s)"
            ),
            [("[L2]".to_string(), "3f".to_string())],
            "beside a mask"
        );
        assert!(
            captures("lease [=L1] granted", "lease 694d refused").is_empty(),
            "a line that does not match captures nothing"
        );
        assert!(output_matches(
            "lease [=L1] granted",
            &masked_output("lease 694d granted", &got_vars("[L1]", "694d"))
        ));
    }

    fn got_vars(name: &str, value: &str) -> Vec<(String, String)> {
        vec![(name.to_string(), value.to_string())]
    }
}
