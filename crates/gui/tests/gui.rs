//! GUI tests: the real egui UI, driven through AccessKit with egui_kittest (no display needed),
//! against real `distributed_kv` processes started by the test (the `kv_harness` crate's
//! `BlockingCluster`).
//!
//! The UI's network calls run on its worker thread, so results arrive while the test steps the
//! UI frame by frame; [`step_until`] steps and polls until what the user would see appears, or
//! a deadline passes. Widgets are found the way a screen reader finds them: by their labels.

use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use kv_gui::KvApp;
use kv_harness::{free_addr, BlockingCluster, ClusterOptions};

/// Window size the UI is laid out in.
const WINDOW: [f32; 2] = [1200.0, 800.0];
/// How long the UI may take to show something after the action that causes it.
const UI_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between two frames while waiting (the worker needs time on the network).
const FRAME_PAUSE: Duration = Duration::from_millis(20);
/// Longest a single frame may take: the UI must never wait on the network.
const MAX_FRAME_TIME: Duration = Duration::from_millis(500);

/// The app under test, pointed at `endpoints`, remembering them in a temp file.
fn harness(endpoints: &[String], state_dir: &std::path::Path) -> Harness<'static, KvApp> {
    let app = KvApp::new(
        Some(endpoints.join(",")),
        Some(state_dir.join("gui-endpoints")),
        || {},
    );
    Harness::builder()
        .with_size(WINDOW)
        .build_ui_state(|ui, app: &mut KvApp| app.show(ui), app)
}

/// Steps the UI until `done` holds, checking that no frame blocks; panics after [`UI_TIMEOUT`].
fn step_until(h: &mut Harness<'_, KvApp>, what: &str, done: impl Fn(&Harness<'_, KvApp>) -> bool) {
    let deadline = Instant::now() + UI_TIMEOUT;
    loop {
        let frame = Instant::now();
        h.step();
        assert!(
            frame.elapsed() < MAX_FRAME_TIME,
            "a frame took {:?}: the UI blocked",
            frame.elapsed()
        );
        if done(h) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {UI_TIMEOUT:?} waiting for: {what}"
        );
        std::thread::sleep(FRAME_PAUSE);
    }
}

/// Clicks the field labelled `label` and types `text` into it.
fn type_into(h: &mut Harness<'_, KvApp>, label: &str, text: &str) {
    h.get_by_label(label).click();
    h.step();
    h.get_by_label(label).type_text(text);
    h.step();
}

/// Empties the field labelled `label` (select all, delete).
fn clear(h: &mut Harness<'_, KvApp>, label: &str) {
    h.get_by_label(label).click();
    h.step();
    h.key_combination_modifiers(egui::Modifiers::COMMAND, &[egui::Key::A]);
    h.key_press(egui::Key::Backspace);
    h.step();
}

/// Clicks the button labelled `label`, and runs one more frame to show what the click changed
/// (egui draws a frame before it learns of the click).
fn click(h: &mut Harness<'_, KvApp>, label: &str) {
    h.get_by_label(label).click();
    h.step();
    h.step();
}

/// Whether some widget's label contains `text`.
fn shows(h: &Harness<'_, KvApp>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

/// Rows of the cluster panel that say "leader".
fn leader_cells(h: &Harness<'_, KvApp>) -> usize {
    h.query_all_by_label("leader").count()
}

#[test]
fn set_get_browse_delete_and_cluster_panel() {
    let cluster = BlockingCluster::start(ClusterOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    // A key written by another client, so Get has something the UI did not write itself.
    let mut client = cluster.client();
    cluster
        .rt()
        .block_on(client.set(b"preset", b"from the cluster"))
        .unwrap();

    let mut h = harness(&cluster.endpoints(), tmp.path());
    step_until(
        &mut h,
        "3 nodes with exactly one leader in the cluster panel",
        |h| {
            h.state().nodes().len() == 3
                && h.state().nodes().iter().all(|n| n.reachable)
                && leader_cells(h) == 1
        },
    );

    // Set through the UI; the cluster has it.
    type_into(&mut h, "Key", "greeting");
    type_into(&mut h, "Value", "hello");
    click(&mut h, "Set");
    step_until(&mut h, "the set to succeed", |h| {
        shows(h, "set greeting: ok")
    });
    assert_eq!(
        cluster
            .rt()
            .block_on(client.get(b"greeting", false))
            .unwrap(),
        Some(b"hello".to_vec())
    );

    // Get shows the value: empty the value field, then Get fills it again.
    clear(&mut h, "Value");
    assert_eq!(h.get_by_label("Value").value().as_deref(), Some(""));
    click(&mut h, "Get");
    step_until(&mut h, "get to show the value", |h| {
        h.get_by_label("Value").value().as_deref() == Some("hello")
    });
    assert!(shows(&h, "get greeting: found"));

    // The browser lists both keys; clicking one loads it into the editor.
    click(&mut h, "Refresh");
    step_until(&mut h, "the browser to list the keys", |h| {
        h.query_by_label("greeting").is_some() && h.query_by_label("preset").is_some()
    });
    click(&mut h, "preset");
    step_until(&mut h, "the clicked key to load", |h| {
        h.get_by_label("Value").value().as_deref() == Some("from the cluster")
    });
    assert_eq!(h.get_by_label("Key").value().as_deref(), Some("preset"));

    // Delete, then Get says not found.
    click(&mut h, "greeting");
    step_until(&mut h, "greeting to load", |h| {
        h.get_by_label("Value").value().as_deref() == Some("hello")
    });
    click(&mut h, "Delete");
    step_until(&mut h, "the delete to succeed", |h| {
        shows(h, "delete greeting: deleted")
    });
    click(&mut h, "Get");
    step_until(&mut h, "get to say not found", |h| {
        shows(h, "get greeting: not found")
    });
    assert_eq!(
        cluster
            .rt()
            .block_on(client.get(b"greeting", false))
            .unwrap(),
        None
    );

    // Every operation is in the activity log with its outcome.
    let log: Vec<String> = h
        .state()
        .activity()
        .iter()
        .map(|a| format!("{} — {}", a.what, a.outcome))
        .collect();
    for expected in [
        "set greeting — ok",
        "delete greeting — deleted",
        "get greeting — not found",
    ] {
        assert!(
            log.iter().any(|l| l.starts_with(expected)),
            "activity log lacks {expected:?}: {log:?}"
        );
    }
}

/// Clicks Get for the key in the editor, `key`, and waits until the editor shows `value` and,
/// under it, the revisions kv.v1 Get answers for the key (which nothing else writes meanwhile).
fn get_shows_revisions(
    h: &mut Harness<'_, KvApp>,
    cluster: &BlockingCluster,
    client: &mut kv_api::Client,
    key: &str,
    value: &str,
) {
    let v = cluster
        .rt()
        .block_on(client.get_versioned(key.as_bytes(), false))
        .unwrap()
        .expect("the key exists");
    let line = format!(
        "{key}: create revision {}, mod revision {}, version {}",
        v.create_revision, v.mod_revision, v.version
    );
    click(h, "Get");
    step_until(h, &format!("get to show {value:?} and {line:?}"), |h| {
        h.get_by_label("Value").value().as_deref() == Some(value) && shows(h, &line)
    });
}

#[test]
fn get_shows_the_revisions_next_to_the_value() {
    let cluster = BlockingCluster::start(ClusterOptions {
        nodes: 1,
        ..ClusterOptions::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut client = cluster.client();
    for value in [&b"first"[..], b"second"] {
        cluster
            .rt()
            .block_on(client.set(b"counted", value))
            .unwrap();
    }

    let mut h = harness(&cluster.endpoints(), tmp.path());
    step_until(&mut h, "the leader in the cluster panel", |h| {
        leader_cells(h) == 1
    });
    type_into(&mut h, "Key", "counted");
    get_shows_revisions(&mut h, &cluster, &mut client, "counted", "second");

    // A write makes them stale: they go, and the next get shows the new ones.
    clear(&mut h, "Value");
    type_into(&mut h, "Value", "third");
    click(&mut h, "Set");
    step_until(&mut h, "the set to succeed", |h| {
        shows(h, "set counted: ok")
    });
    assert!(
        !shows(&h, "create revision"),
        "stale revisions are not shown"
    );
    get_shows_revisions(&mut h, &cluster, &mut client, "counted", "third");

    // A key that does not exist has none.
    clear(&mut h, "Key");
    type_into(&mut h, "Key", "missing");
    click(&mut h, "Get");
    step_until(&mut h, "get to say not found", |h| {
        shows(h, "get missing: not found")
    });
    assert!(!shows(&h, "create revision"));
}

#[test]
fn follows_a_new_leader_after_the_leader_is_killed() {
    let mut cluster = BlockingCluster::start(ClusterOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let old = cluster.wait_leader();
    let mut h = harness(&cluster.endpoints(), tmp.path());
    step_until(&mut h, "the panel to show the leader", |h| {
        h.state()
            .nodes()
            .iter()
            .any(|n| n.is_leader() && n.id == old)
    });

    cluster.kill(old);
    step_until(
        &mut h,
        "the panel to show a new leader and the old one unreachable",
        |h| {
            let nodes = h.state().nodes();
            nodes.iter().any(|n| n.is_leader() && n.id != old)
                && nodes.iter().filter(|n| !n.reachable).count() == 1
                && leader_cells(h) == 1
        },
    );

    type_into(&mut h, "Key", "after-failover");
    type_into(&mut h, "Value", "still works");
    click(&mut h, "Set");
    step_until(&mut h, "set to succeed on the new leader", |h| {
        shows(h, "set after-failover: ok")
    });
}

#[test]
fn without_a_cluster_operations_fail_and_the_ui_keeps_answering() {
    let tmp = tempfile::tempdir().unwrap();
    // Ports nothing listens on.
    let endpoints = vec![free_addr(), free_addr()];
    let mut h = harness(&endpoints, tmp.path());

    // A mistake the user can fix is explained next to the field, and nothing is sent.
    click(&mut h, "Set");
    assert!(
        shows(&h, "enter a key"),
        "an empty key is explained next to the field"
    );
    assert!(h.state().activity().is_empty(), "nothing was sent");

    type_into(&mut h, "Key", "k");
    type_into(&mut h, "Value", "v");
    click(&mut h, "Set");
    assert!(h.state().busy(), "the set is in flight");
    // step_until also checks that every frame stays fast while the request fails.
    step_until(
        &mut h,
        "an error that explains no leader is reachable",
        |h| shows(h, "no leader reachable"),
    );
    assert!(!h.state().busy());
    let panel = h.state().nodes();
    assert!(
        panel.iter().all(|n| !n.reachable),
        "the cluster panel shows the nodes unreachable: {panel:?}"
    );
}

#[test]
fn starts_without_a_cluster_and_connects_when_it_appears() {
    let mut cluster = BlockingCluster::start(ClusterOptions::default());
    let all = cluster.ids();
    cluster.terminate(&all);
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(&cluster.endpoints(), tmp.path());
    step_until(&mut h, "every node shown unreachable", |h| {
        h.state().nodes().len() == 3 && h.state().nodes().iter().all(|n| !n.reachable)
    });
    assert!(shows(&h, "no leader — retrying"));

    for &id in &all {
        cluster.spawn(id);
    }
    step_until(&mut h, "the cluster to appear with one leader", |h| {
        h.state().nodes().iter().filter(|n| n.reachable).count() == 3 && leader_cells(h) == 1
    });
}

#[test]
fn endpoints_are_remembered_between_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let endpoints = [free_addr(), free_addr()];
    let mut h = harness(&[free_addr()], tmp.path());
    clear(&mut h, "Endpoints");
    type_into(&mut h, "Endpoints", &endpoints.join(","));
    click(&mut h, "Connect");
    drop(h);

    // A new run with no endpoints given starts from the remembered ones.
    let app = KvApp::new(None, Some(tmp.path().join("gui-endpoints")), || {});
    let mut h = Harness::builder()
        .with_size(WINDOW)
        .build_ui_state(|ui, app: &mut KvApp| app.show(ui), app);
    h.step();
    assert_eq!(
        h.get_by_label("Endpoints").value(),
        Some(endpoints.join(",")),
        "the endpoints of the last run"
    );
}

#[test]
fn browser_pages_with_load_more_and_filters_by_prefix() {
    let cluster = BlockingCluster::start(ClusterOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let mut client = cluster.client();
    let page = kv_gui::worker::LIST_PAGE_KEYS as usize;
    let total = page + page / 2;
    for n in 0..total {
        let key = format!("many/{n:04}");
        cluster
            .rt()
            .block_on(client.set(key.as_bytes(), b"v"))
            .unwrap();
    }
    cluster.rt().block_on(client.set(b"other", b"v")).unwrap();

    let mut h = harness(&cluster.endpoints(), tmp.path());
    type_into(&mut h, "Prefix", "many/");
    click(&mut h, "Refresh");
    step_until(&mut h, "the first page", |h| {
        h.state().keys().len() == page && h.query_by_label("Load more").is_some()
    });
    // The button sits below a full page of keys, out of view: activate it the way a screen
    // reader does (an AccessKit click), which needs no scrolling.
    h.get_by_label("Load more").click_accesskit();
    h.step();
    h.step();
    step_until(&mut h, "the second page", |h| {
        h.state().keys().len() == total
    });
    assert!(
        h.query_by_label("Load more").is_none(),
        "no more pages after the last"
    );
    assert!(
        h.query_by_label("other").is_none(),
        "the prefix filters keys"
    );
    let keys: Vec<Vec<u8>> = h.state().keys().to_vec();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "keys are in byte order");
}

/// The event lines the watch panel shows, newest first.
fn watched(h: &Harness<'_, KvApp>) -> Vec<String> {
    h.state()
        .watch_panel()
        .events()
        .iter()
        .map(kv_gui::watch_panel::event_line)
        .collect()
}

/// Proves the watch panel shows the changes under its prefix as they are made, and that
/// after a pause it resumes from the last event shown: what was written meanwhile appears
/// once, nothing is lost.
#[test]
fn the_watch_panel_shows_changes_and_resumes_after_a_pause() {
    let cluster = BlockingCluster::start(ClusterOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let mut client = cluster.client();
    let mut h = harness(&cluster.endpoints(), tmp.path());
    type_into(&mut h, "Watch prefix", "w/");
    click(&mut h, "Start watching");
    // The panel says when the watch is made, and from which revision: writes after that
    // are shown.
    step_until(&mut h, "the watch made", |h| {
        shows(h, "watching w/* from revision")
    });
    let set = |client: &mut kv_api::Client, k: &[u8], v: &[u8]| {
        cluster.rt().block_on(client.set(k, v)).unwrap();
    };
    set(&mut client, b"w/first", b"1");
    set(&mut client, b"elsewhere", b"x");
    step_until(&mut h, "the first event", |h| watched(h).len() == 1);
    assert!(
        watched(&h)[0].ends_with("PUT w/first = 1"),
        "{:?}",
        watched(&h)
    );

    click(&mut h, "Pause");
    set(&mut client, b"w/while-paused", b"2");
    cluster.rt().block_on(client.delete(b"w/first")).unwrap();
    for _ in 0..10 {
        h.step();
    }
    assert_eq!(watched(&h).len(), 1, "nothing is shown while paused");
    click(&mut h, "Resume");
    step_until(&mut h, "the events written while paused", |h| {
        watched(h).len() == 3
    });
    let lines = watched(&h);
    assert!(lines[1].ends_with("PUT w/while-paused = 2"), "{lines:?}");
    assert!(lines[0].ends_with("DELETE w/first"), "{lines:?}");
}

/// Proves History shows every revision of the key in the editor, newest first, with its
/// version, and a delete among them.
#[test]
fn history_shows_every_revision_of_a_key() {
    let cluster = BlockingCluster::start(ClusterOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let mut client = cluster.client();
    for v in [&b"one"[..], b"two"] {
        cluster.rt().block_on(client.set(b"h", v)).unwrap();
    }
    cluster.rt().block_on(client.delete(b"h")).unwrap();
    cluster.rt().block_on(client.set(b"h", b"three")).unwrap();
    let mut h = harness(&cluster.endpoints(), tmp.path());
    type_into(&mut h, "Key", "h");
    click(&mut h, "History");
    step_until(&mut h, "the history of h", |h| shows(h, "History of h"));
    step_until(&mut h, "four revisions", |h| {
        shows(h, "PUT h = three (version 1)")
            && shows(h, "DELETE h")
            && shows(h, "PUT h = two (version 2)")
            && shows(h, "PUT h = one (version 1)")
    });
}

/// A lease of `ttl` seconds granted on `addr`, and `key` put with it; the lease id.
fn leased_key(cluster: &BlockingCluster, addr: &str, key: &str, ttl: i64) -> i64 {
    use etcd_api::etcdserverpb::kv_client::KvClient;
    use etcd_api::etcdserverpb::lease_client::LeaseClient;
    use etcd_api::etcdserverpb::{LeaseGrantRequest, PutRequest};
    cluster.rt().block_on(async {
        let url = format!("http://{addr}");
        let mut leases = LeaseClient::connect(url.clone()).await.unwrap();
        let id = leases
            .lease_grant(LeaseGrantRequest { ttl, id: 0 })
            .await
            .unwrap()
            .into_inner()
            .id;
        let mut kv = KvClient::connect(url).await.unwrap();
        kv.put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease: id,
            ..Default::default()
        })
        .await
        .unwrap();
        id
    })
}

/// Proves the editor shows the lease of the key it got and the time the lease has left, and
/// no lease for a key without one.
#[test]
fn get_shows_a_keys_lease_and_its_time_left() {
    let cluster = BlockingCluster::start(ClusterOptions {
        nodes: 1,
        ..ClusterOptions::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let id = leased_key(&cluster, cluster.client_addr(1), "leased", 60);
    let mut client = cluster.client();
    cluster.rt().block_on(client.set(b"plain", b"v")).unwrap();

    let mut h = harness(&cluster.endpoints(), tmp.path());
    step_until(&mut h, "the leader in the cluster panel", |h| {
        leader_cells(h) == 1
    });
    type_into(&mut h, "Key", "leased");
    click(&mut h, "Get");
    let line = format!("leased: lease {id:016x}, ");
    step_until(&mut h, &format!("get to show {line:?}"), |h| {
        shows(h, &line) && h.state().lease().is_some_and(|l| l.granted == 60)
    });
    let left = h.state().lease().map(|l| l.left_now()).unwrap();
    assert!((1..=60).contains(&left), "{left} s left of 60");
    assert!(shows(&h, " s of 60 s left"));

    clear(&mut h, "Key");
    type_into(&mut h, "Key", "plain");
    click(&mut h, "Get");
    step_until(&mut h, "get to show plain's revisions", |h| {
        shows(h, "plain: create revision")
    });
    assert!(
        h.state().lease().is_none() && !shows(&h, "lease "),
        "no lease shown"
    );
}
