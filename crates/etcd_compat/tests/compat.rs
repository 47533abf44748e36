//! etcd_compat's own tier: the differential runner, its comparer and the etcdctl transcript
//! checker, against real etcd (`/usr/bin/etcd`, Debian's `etcd-server`; `etcdctl` from
//! `etcd-client`).
//!
//! - Self-checks: two real etcds given the same generated sequence agree on every field of
//!   every reply — one member against one member, and one member against three members with
//!   the requests spread over the three. A generator, runner or comparer that was not
//!   deterministic, or compared something that differs between stores by nature, fails here.
//! - Teeth: etcd against etcd again, but one store's replies deliberately wrong in one way
//!   ([`Perturb`]); the comparer must stop at exactly the op that was altered and name the
//!   altered field. One test per kind of wrong answer.
//! - The transcript checker must catch a wrong revision, a wrong exit code and a missing line.
//!
//! Every etcd runs on its own reserved loopback ports in its own temp dir and is killed when
//! the test ends, panics included.

use etcd_compat::transcript::Transcript;
use etcd_compat::{run, seed_from_env, Perturb, RunOptions, Spread, Store};
use kv_harness::{etcdctl_bin, EtcdCluster};

/// Ops of the one-member-against-one-member self-check.
const SELF_CHECK_OPS: usize = 3_000;
/// Ops of the one-member-against-three-members self-check.
const SPREAD_CHECK_OPS: usize = 1_000;
/// Longest a teeth run goes on; each perturbation fits a reply long before.
const TEETH_OPS: usize = 600;
/// The op from which a perturbation may apply: not the first reply of a fresh store.
const PERTURB_FROM: usize = 30;
/// Default seed of the runs (override with `COMPAT_SEED`).
const SEED: u64 = 0x5eed_e7cd;

/// A started etcd, or a harness failure that says why (etcd not installed, ...).
async fn etcd(members: usize) -> EtcdCluster {
    EtcdCluster::start(members)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A store of `cluster`'s members.
async fn store(name: &str, cluster: &EtcdCluster, spread: Spread, seed: u64) -> Store {
    Store::connect(name, &cluster.endpoints(), spread, seed)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Proves the generator, runner and comparer are deterministic: two one-member etcds agree on
/// every reply to thousands of generated ops.
#[tokio::test]
async fn two_etcds_agree_on_thousands_of_generated_ops() {
    let seed = seed_from_env(SEED);
    let (a, b) = (etcd(1).await, etcd(1).await);
    let mut left = store("etcd-a", &a, Spread::First, seed).await;
    let mut right = store("etcd-b", &b, Spread::First, seed).await;
    let options = RunOptions::new(seed, SELF_CHECK_OPS);
    let summary = run(&mut left, &mut right, options).await.expect_agreed();
    println!("{summary}");
    assert_eq!(summary.ops, SELF_CHECK_OPS);
    assert!(summary.final_revision > 1, "writes happened: {summary}");
    assert!(
        !summary.errors.is_empty(),
        "some requests were refused: {summary}"
    );
    assert!(
        summary.txn_succeeded > 0 && summary.txn_failed > 0,
        "both txn branches taken: {summary}"
    );
}

/// Proves spreading requests over members (and waiting for a member to catch up before a
/// serializable read) keeps the comparison exact: a one-member etcd and a three-member etcd
/// with every request sent to a random member agree on every reply.
#[tokio::test]
async fn one_etcd_and_three_etcd_members_with_requests_spread_agree() {
    let seed = seed_from_env(SEED);
    let (one, three) = (etcd(1).await, etcd(3).await);
    let mut left = store("etcd-1", &one, Spread::First, seed).await;
    let mut right = store("etcd-3", &three, Spread::Random, seed).await;
    let options = RunOptions {
        txn_range_revisions: false,
        ..RunOptions::new(seed, SPREAD_CHECK_OPS)
    };
    let summary = run(&mut left, &mut right, options).await.expect_agreed();
    println!("{summary}");
    assert_eq!(summary.ops, SPREAD_CHECK_OPS);
}

/// Runs etcd against etcd with `perturb` altering the right store's replies, and asserts the
/// comparer stops at the altered op and names the altered field.
async fn caught(perturb: Perturb) {
    let seed = seed_from_env(SEED);
    let (a, b) = (etcd(1).await, etcd(1).await);
    let mut left = store("etcd", &a, Spread::First, seed).await;
    let mut right = store("etcd-perturbed", &b, Spread::First, seed).await;
    right.perturb(perturb, PERTURB_FROM);
    let options = RunOptions::new(seed, TEETH_OPS);
    let divergence = run(&mut left, &mut right, options).await.expect_diverged();
    let at = right
        .perturbed_at()
        .unwrap_or_else(|| panic!("{perturb:?} fitted no reply in {TEETH_OPS} ops"));
    assert_eq!(
        divergence.index, at,
        "{perturb:?}: reported at the altered op\n{divergence}"
    );
    assert!(
        divergence
            .difference
            .path
            .ends_with(perturb.expected_path_end()),
        "{perturb:?}: the altered field is named\n{divergence}"
    );
    let report = divergence.to_string();
    assert!(
        report.contains(&format!("seed {seed}, op #{at}")) && report.contains("request: "),
        "the report names the seed, the op and the request:\n{report}"
    );
}

/// Proves a header revision off by one is caught.
#[tokio::test]
async fn a_revision_off_by_one_is_caught() {
    caught(Perturb::RevisionOffByOne).await;
}

/// Proves a key-value missing from a Range is caught.
#[tokio::test]
async fn a_dropped_kv_is_caught() {
    caught(Perturb::DropKv).await;
}

/// Proves a wrong Range count is caught.
#[tokio::test]
async fn a_wrong_count_is_caught() {
    caught(Perturb::WrongCount).await;
}

/// Proves key-values in the wrong order are caught.
#[tokio::test]
async fn kvs_out_of_order_are_caught() {
    caught(Perturb::SwapKvs).await;
}

/// Proves a wrong version of a key is caught.
#[tokio::test]
async fn a_wrong_version_is_caught() {
    caught(Perturb::WrongVersion).await;
}

/// Proves an error message that differs by one character is caught.
#[tokio::test]
async fn a_changed_error_message_is_caught() {
    caught(Perturb::ErrorMessage).await;
}

/// Proves a wrong gRPC code is caught.
#[tokio::test]
async fn a_wrong_error_code_is_caught() {
    caught(Perturb::ErrorCode).await;
}

/// Proves a Put's missing prev_kv is caught.
#[tokio::test]
async fn a_missing_prev_kv_is_caught() {
    caught(Perturb::DropPrevKv).await;
}

/// Proves a Txn that took the other branch is caught.
#[tokio::test]
async fn a_flipped_txn_outcome_is_caught() {
    caught(Perturb::FlipSucceeded).await;
}

/// Proves a wrong field inside a Txn's nested Range response is caught.
#[tokio::test]
async fn a_wrong_nested_mod_revision_is_caught() {
    caught(Perturb::NestedModRevision).await;
}

/// Proves a wrong DeleteRange count is caught.
#[tokio::test]
async fn a_wrong_deleted_count_is_caught() {
    caught(Perturb::WrongDeleted).await;
}

/// Proves an error where etcd succeeded is caught.
#[tokio::test]
async fn a_spurious_error_is_caught() {
    caught(Perturb::SpuriousError).await;
}

/// Proves the transcript checker catches a wrong revision, a wrong exit code and a line too
/// many, and passes what etcd really prints.
#[tokio::test]
async fn the_transcript_checker_catches_wrong_output_and_exit_codes() {
    let etcd = etcd(1).await;
    let etcdctl = etcdctl_bin().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("a temp dir");
    let ep = etcd.client_addr(0).to_string();
    let vars = [("[EP]", ep.clone())];
    let play = |text: &str| {
        Transcript::from_text("inline", text)
            .and_then(|t| t.play(&etcdctl, &ep, &vars, dir.path()))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let right = "```console\n$ etcdctl put foo bar\nOK\n\n$ etcdctl get foo -w json\n{\"header\":{\"cluster_id\":[..],\"member_id\":[..],\"revision\":2,\"raft_term\":[..]},\"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":2,\"mod_revision\":2,\"version\":1,\"value\":\"YmFy\"}],\"count\":1}\n\n$ etcdctl get foo --rev 99\n? 1\nError: etcdserver: mvcc: required revision is a future revision\n\n$ etcdctl --endpoints [EP] endpoint health\n[EP] is healthy: successfully committed proposal: took = [..]\n\n```\n";
    let played = play(right);
    played.assert_matches();

    // Each a deliberately wrong expectation, against the same (now written) store: a
    // revision off by one, an exit code of 0 for a failing command, a line too many.
    let wrong_revision = "```console\n$ etcdctl get foo -w json\n{\"header\":{\"cluster_id\":[..],\"member_id\":[..],\"revision\":3,\"raft_term\":[..]},[..]}\n\n```\n";
    let wrong_code = "```console\n$ etcdctl get foo --rev 99\nError: etcdserver: mvcc: required revision is a future revision\n\n```\n";
    let extra_line = "```console\n$ etcdctl get foo\nfoo\nbar\nbaz\n\n```\n";
    for (what, text) in [
        ("revision", wrong_revision),
        ("exit code", wrong_code),
        ("extra line", extra_line),
    ] {
        let mismatches = play(text).mismatches();
        assert_eq!(
            mismatches.len(),
            1,
            "a wrong {what} is caught: {mismatches:?}"
        );
    }
}
