//! `KvApp`: the GUI's state and its egui layout.
//!
//! Panels: the connection bar (top), the key browser (left), the editor with Get/Set/Delete
//! and a key's history, above the watch panel (centre, [`WatchPanel`]), the cluster table and
//! the activity log (bottom). Every network call goes through
//! the [`Worker`]; `show` only draws, submits, and takes finished results, so a frame never
//! waits on the network.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use eframe::egui;

use crate::key_lease::KeyLease;
use crate::watch_panel::WatchPanel;
use crate::worker::{Done, NodeRow, Reply, Request, Worker};
use kv_api::client::{endpoints_from, ClientError};

/// How often the cluster panel refreshes.
pub const STATUS_REFRESH: Duration = Duration::from_secs(1);
/// How often the editor redraws a lease's countdown.
pub const LEASE_REPAINT: Duration = Duration::from_secs(1);
/// How long one operation may take, retries included, before the UI shows its error.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Entries kept in the activity log.
pub const ACTIVITY_LOG_ENTRIES: usize = 200;
/// Width of the activity log panel, in points.
pub const ACTIVITY_PANEL_WIDTH: f32 = 300.0;
/// Width of the endpoints field, in points.
pub const ENDPOINTS_FIELD_WIDTH: f32 = 360.0;
/// Width of the prefix field, in points.
pub const PREFIX_FIELD_WIDTH: f32 = 100.0;
/// Lines the value field shows.
pub const VALUE_FIELD_ROWS: usize = 4;
/// Width of the key browser, in points.
pub const BROWSER_PANEL_WIDTH: f32 = 220.0;
/// Largest value the editor sends; the server's default limit (`max_value_bytes`).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Largest key the editor sends; the server's default limit (`max_key_bytes`).
pub const MAX_KEY_BYTES: usize = 4 * 1024;

/// One line of the activity log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// What was done ("set greeting").
    pub what: String,
    /// How it ended ("ok", "not found", an explained error).
    pub outcome: String,
    /// From when the worker began it to its result; time queued behind other operations is
    /// not counted.
    pub latency: Duration,
    pub ok: bool,
}

/// The GUI's state: editor, key browser, cluster panel and activity log. Every network call
/// goes through the [`Worker`], so drawing a frame never waits on the cluster.
pub struct KvApp {
    worker: Worker,
    /// The endpoints field's text; it takes effect, and is remembered, only on connect.
    endpoints: String,
    /// Where the endpoints are remembered between runs (none: not remembered).
    state_file: Option<PathBuf>,
    key: String,
    /// The value field; a successful get fills it in (as hex when the value is not UTF-8).
    value: String,
    /// The revisions of the key the last get found, shown under the value; cleared when a
    /// write or a get that finds nothing makes them stale.
    revisions: Option<Revisions>,
    /// The lease of the key the last get found, shown (counting down) under its revisions;
    /// cleared with them.
    lease: Option<KeyLease>,
    /// A problem with the endpoints field, shown next to it.
    endpoints_error: Option<String>,
    /// A problem with the key field, shown next to it.
    key_error: Option<String>,
    /// A problem with the value field, shown next to it.
    value_error: Option<String>,
    /// The last operation's result: (succeeded, text).
    result: Option<(bool, String)>,
    /// Operations in flight, by id: what they are.
    pending: HashMap<u64, String>,
    prefix: String,
    /// Keys shown in the browser: a new listing replaces them, "load more" appends.
    keys: Vec<Vec<u8>>,
    /// Where the browser's next page starts.
    next_key: Option<Vec<u8>>,
    /// Whether a browser page is being fetched.
    listing: bool,
    /// The cluster panel's rows, replaced by every status poll's answer and cleared on connect.
    nodes: Vec<NodeRow>,
    /// When the last status poll was sent; `None` (at start, after a connect) polls at once.
    last_status: Option<Instant>,
    /// Whether a status poll is in flight.
    status_in_flight: bool,
    /// Whether the browser has loaded its first page (it does so once a leader is known).
    browsed: bool,
    /// Recent operations, newest first.
    activity: VecDeque<Activity>,
    /// The watch panel, and the history view of a key.
    watch: WatchPanel,
}

/// A key's revisions, as a get answered them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revisions {
    /// The key they are of, as the editor showed it.
    pub key: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
}

impl Revisions {
    /// The line the editor shows under the value.
    pub fn label(&self) -> String {
        format!(
            "{}: create revision {}, mod revision {}, version {}",
            self.key, self.create_revision, self.mod_revision, self.version
        )
    }
}

/// Shows bytes as text when they are UTF-8, else as hex.
pub fn display_bytes(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (bytes.iter().map(|b| format!("{b:02x}")).collect(), true),
    }
}

/// Explains a client error in words a user can act on.
pub fn explain(e: &ClientError) -> String {
    match e {
        ClientError::Unavailable(m) => format!(
            "no leader reachable — retried for {} s; is the cluster running? ({m})",
            OPERATION_TIMEOUT.as_secs()
        ),
        ClientError::Invalid(m) if m.contains("max_value_bytes") => {
            format!("value larger than the server allows: {m}")
        }
        ClientError::Invalid(m) if m.contains("max_key_bytes") => {
            format!("key longer than the server allows: {m}")
        }
        ClientError::Invalid(m) => format!("refused: {m}"),
        ClientError::Unknown(m) => {
            format!("outcome unknown — the write may or may not have been applied ({m})")
        }
        ClientError::Server(m) => format!("server error: {m}"),
    }
}

/// Default file where the GUI remembers its endpoints: `$XDG_CONFIG_HOME` or `~/.config`.
pub fn default_state_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("distributed_kv").join("gui-endpoints"))
}

impl KvApp {
    /// A new app. Endpoints: `endpoints` if given, else `KV_ENDPOINTS`, else the ones remembered
    /// in `state_file`, else the default. `repaint` is called when a result arrives.
    pub fn new(
        endpoints: Option<String>,
        state_file: Option<PathBuf>,
        repaint: impl Fn() + Send + Sync + 'static,
    ) -> KvApp {
        let remembered = state_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|s| s.trim().to_string());
        let given = endpoints
            .or_else(|| std::env::var(kv_api::client::ENDPOINTS_ENV).ok())
            .or(remembered.filter(|s| !s.is_empty()));
        let list = endpoints_from(given.as_deref());
        let worker = Worker::start(list.clone(), OPERATION_TIMEOUT, repaint);
        KvApp {
            worker,
            endpoints: list.join(","),
            state_file,
            key: String::new(),
            value: String::new(),
            revisions: None,
            lease: None,
            endpoints_error: None,
            key_error: None,
            value_error: None,
            result: None,
            pending: HashMap::new(),
            prefix: String::new(),
            keys: Vec::new(),
            next_key: None,
            listing: false,
            nodes: Vec::new(),
            last_status: None,
            status_in_flight: false,
            browsed: false,
            activity: VecDeque::new(),
            watch: WatchPanel::default(),
        }
    }

    /// The watch panel and the history view.
    pub fn watch_panel(&self) -> &WatchPanel {
        &self.watch
    }

    pub fn nodes(&self) -> &[NodeRow] {
        &self.nodes
    }

    /// The lease of the key the last get found, if it has one and it is current.
    pub fn lease(&self) -> Option<&KeyLease> {
        self.lease.as_ref()
    }

    /// The revisions of the key the last get found, while they are current.
    pub fn revisions(&self) -> Option<&Revisions> {
        self.revisions.as_ref()
    }

    /// The last operation's result text.
    pub fn result(&self) -> Option<&(bool, String)> {
        self.result.as_ref()
    }

    /// The activity log, newest first.
    pub fn activity(&self) -> &VecDeque<Activity> {
        &self.activity
    }

    pub fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }

    /// Whether an operation is in flight.
    pub fn busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Puts `key` in the editor and reads it, as clicking it in the browser does.
    pub fn open_key(&mut self, key: &str) {
        self.key = key.to_string();
        self.do_get();
    }

    fn submit(&mut self, what: String, request: Request) {
        match self.worker.submit(request) {
            Some(id) => {
                self.pending.insert(id, what);
            }
            None => self.result = Some((false, "busy: too many requests queued; try again".into())),
        }
    }

    fn check_key(&mut self) -> bool {
        self.key_error = if self.key.is_empty() {
            Some("enter a key".into())
        } else if self.key.len() > MAX_KEY_BYTES {
            Some(format!(
                "key is {} bytes; the limit is {MAX_KEY_BYTES} bytes",
                self.key.len()
            ))
        } else {
            None
        };
        self.key_error.is_none()
    }

    fn do_get(&mut self) {
        if self.check_key() {
            self.submit(
                format!("get {}", self.key),
                Request::Get(self.key.clone().into_bytes()),
            );
        }
    }

    fn do_set(&mut self) {
        let key_ok = self.check_key();
        self.value_error = (self.value.len() > MAX_VALUE_BYTES).then(|| {
            format!(
                "value larger than 1 MiB ({} bytes; the limit is {MAX_VALUE_BYTES})",
                self.value.len()
            )
        });
        if key_ok && self.value_error.is_none() {
            let req = Request::Set(
                self.key.clone().into_bytes(),
                self.value.clone().into_bytes(),
            );
            self.submit(format!("set {}", self.key), req);
        }
    }

    fn do_delete(&mut self) {
        if self.check_key() {
            self.submit(
                format!("delete {}", self.key),
                Request::Delete(self.key.clone().into_bytes()),
            );
        }
    }

    /// Asks for every revision of the key in the editor, for the history view.
    fn do_history(&mut self) {
        if self.check_key()
            && self
                .worker
                .submit(Request::History(self.key.clone().into_bytes()))
                .is_none()
        {
            self.result = Some((false, "busy: too many requests queued; try again".into()));
        }
    }

    /// Sends what the watch panel asked for.
    fn watch_request(&mut self, request: Request) {
        let is_watch = matches!(request, Request::Watch { .. });
        match self.worker.submit(request) {
            Some(id) if is_watch => self.watch.started(id),
            Some(_) => {}
            None if is_watch => self.watch.not_started(),
            None => {}
        }
    }

    fn do_list(&mut self, more: bool) {
        let start = if more {
            self.next_key.clone().unwrap_or_default()
        } else {
            Vec::new()
        };
        self.listing = true;
        self.submit(
            format!("list {}*", self.prefix),
            Request::List {
                prefix: self.prefix.clone().into_bytes(),
                start,
            },
        );
    }

    fn connect(&mut self) {
        let list = endpoints_from(Some(&self.endpoints));
        if list.is_empty() {
            self.endpoints_error = Some("enter at least one host:port".into());
            return;
        }
        self.endpoints_error = None;
        if let Some(file) = &self.state_file {
            if let Some(dir) = file.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::write(file, list.join(","));
        }
        self.nodes.clear();
        self.browsed = false;
        self.watch.disconnected();
        self.submit(
            format!("connect {}", list.join(",")),
            Request::Connect(list),
        );
        self.last_status = None;
    }

    /// Takes finished results from the worker.
    fn absorb(&mut self, done: Done) {
        if matches!(done.request, Request::Status) {
            self.status_in_flight = false;
            if let Ok(Reply::Nodes(rows)) = done.result {
                self.nodes = rows;
                if !self.browsed && self.nodes.iter().any(|n| n.is_leader()) {
                    self.browsed = true;
                    self.do_list(false);
                }
            }
            return;
        }
        if self.watch.absorb(&done) {
            return;
        }
        let what = self.pending.remove(&done.id).unwrap_or_default();
        if matches!(
            (&done.request, &done.result),
            (Request::Set(..) | Request::Delete(_), Ok(_)) | (Request::Connect(_), _)
        ) {
            // A write changes the revisions, and another cluster has other ones.
            self.revisions = None;
            self.lease = None;
        }
        if let (Request::Lease(_, shown), Ok(Reply::Lease(lease))) = (&done.request, &done.result) {
            // Only if it is still the key shown.
            if self.revisions.as_ref().is_some_and(|r| &r.key == shown) {
                self.lease = lease.clone();
            }
            return;
        }
        if let Request::Lease(..) = done.request {
            // A lease the store could not tell is not shown; the value and revisions stand.
            return;
        }
        let (ok, outcome) = match done.result {
            Ok(Reply::Value(Some(v))) => {
                let (text, hex) = display_bytes(&v.value);
                self.value = text;
                if let Request::Get(key) = &done.request {
                    let shown = display_bytes(key).0;
                    self.revisions = Some(Revisions {
                        key: shown.clone(),
                        create_revision: v.create_revision,
                        mod_revision: v.mod_revision,
                        version: v.version,
                    });
                    self.lease = None;
                    let _ = self.worker.submit(Request::Lease(key.clone(), shown));
                }
                (
                    true,
                    if hex {
                        "found (not UTF-8: shown as hex)".to_string()
                    } else {
                        "found".to_string()
                    },
                )
            }
            Ok(Reply::Value(None)) => {
                self.value.clear();
                self.revisions = None;
                self.lease = None;
                (true, "not found".to_string())
            }
            Ok(Reply::Written(index)) => (true, format!("ok (log index {index})")),
            Ok(Reply::Deleted(true)) => (true, "deleted".to_string()),
            Ok(Reply::Deleted(false)) => (true, "not found (nothing deleted)".to_string()),
            Ok(Reply::Keys { keys, next, append }) => {
                self.listing = false;
                if !append {
                    self.keys.clear();
                }
                let n = keys.len();
                self.keys.extend(keys);
                self.next_key = next;
                (true, format!("{n} keys"))
            }
            Ok(Reply::Connected) => (true, "connected".to_string()),
            Ok(
                Reply::Nodes(_)
                | Reply::Watching(_)
                | Reply::Events(_)
                | Reply::WatchStopped
                | Reply::History(_)
                | Reply::Lease(_),
            ) => (true, String::new()),
            Err(e) => {
                if matches!(done.request, Request::List { .. }) {
                    self.listing = false;
                }
                let text = explain(&e);
                if let (ClientError::Invalid(_), Request::Set(..)) = (&e, &done.request) {
                    self.value_error = Some(text.clone());
                }
                (false, text)
            }
        };
        if !matches!(done.request, Request::List { .. } | Request::Connect(_)) {
            self.result = Some((ok, format!("{what}: {outcome}")));
        }
        self.activity.push_front(Activity {
            what,
            outcome,
            latency: done.latency,
            ok,
        });
        self.activity.truncate(ACTIVITY_LOG_ENTRIES);
    }

    /// Draws the whole UI into `ui`.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        for done in self.worker.poll() {
            self.absorb(done);
        }
        let poll_due = self
            .last_status
            .is_none_or(|t| t.elapsed() >= STATUS_REFRESH);
        if !self.status_in_flight && poll_due && self.worker.submit(Request::Status).is_some() {
            self.status_in_flight = true;
            self.last_status = Some(Instant::now());
        }
        ui.ctx().request_repaint_after(STATUS_REFRESH);

        egui::Panel::top("connection").show(ui, |ui| {
            ui.horizontal(|ui| {
                let label = ui.label("Endpoints");
                ui.add(
                    egui::TextEdit::singleline(&mut self.endpoints)
                        .desired_width(ENDPOINTS_FIELD_WIDTH),
                )
                .labelled_by(label.id);
                if ui.button("Connect").clicked() {
                    self.connect();
                }
                if let Some(e) = &self.endpoints_error {
                    ui.colored_label(egui::Color32::RED, e);
                }
                match self.nodes.iter().find(|n| n.is_leader()) {
                    Some(l) => ui.label(format!("leader: node {} at {}", l.id, l.addr)),
                    None if self.nodes.is_empty() => ui.weak("contacting the cluster…"),
                    None => ui.colored_label(
                        egui::Color32::from_rgb(200, 120, 0),
                        "no leader — retrying",
                    ),
                };
            });
        });
        egui::Panel::right("activity")
            .min_size(ACTIVITY_PANEL_WIDTH)
            .show(ui, |ui| self.activity_panel(ui));
        egui::Panel::bottom("cluster").show(ui, |ui| self.cluster_panel(ui));
        egui::Panel::left("browser")
            .min_size(BROWSER_PANEL_WIDTH)
            .show(ui, |ui| self.browser_panel(ui));
        egui::CentralPanel::default().show(ui, |ui| self.editor_panel(ui));
    }

    fn editor_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Key and value");
        let label = ui.label("Key");
        ui.add(egui::TextEdit::singleline(&mut self.key).desired_width(f32::INFINITY))
            .labelled_by(label.id);
        if let Some(e) = &self.key_error {
            ui.colored_label(egui::Color32::RED, e);
        }
        let label = ui.label("Value");
        ui.add(
            egui::TextEdit::multiline(&mut self.value)
                .desired_rows(VALUE_FIELD_ROWS)
                .desired_width(f32::INFINITY),
        )
        .labelled_by(label.id);
        if let Some(e) = &self.value_error {
            ui.colored_label(egui::Color32::RED, e);
        }
        if let Some(r) = &self.revisions {
            ui.weak(r.label());
        }
        if let Some(l) = &self.lease {
            ui.weak(l.label());
            // The countdown moves once a second.
            ui.ctx().request_repaint_after(LEASE_REPAINT);
        }
        ui.horizontal(|ui| {
            if ui.button("Get").clicked() {
                self.do_get();
            }
            if ui.button("Set").clicked() {
                self.do_set();
            }
            if ui.button("Delete").clicked() {
                self.do_delete();
            }
            if ui.button("History").clicked() {
                self.do_history();
            }
            if !self.pending.is_empty() {
                ui.spinner();
            }
        });
        if let Some((ok, text)) = &self.result {
            let color = if *ok {
                ui.visuals().text_color()
            } else {
                egui::Color32::RED
            };
            ui.colored_label(color, text);
        }
        self.watch.show_history(ui);
        ui.separator();
        if let Some(request) = self.watch.show_watch(ui) {
            self.watch_request(request);
        }
    }

    fn browser_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Keys");
        ui.horizontal(|ui| {
            let label = ui.label("Prefix");
            ui.add(egui::TextEdit::singleline(&mut self.prefix).desired_width(PREFIX_FIELD_WIDTH))
                .labelled_by(label.id);
            if ui.button("Refresh").clicked() {
                self.do_list(false);
            }
        });
        let mut clicked = None;
        egui::ScrollArea::vertical()
            .max_height(f32::INFINITY)
            .show(ui, |ui| {
                for key in &self.keys {
                    let (text, _) = display_bytes(key);
                    if ui
                        .selectable_label(self.key.as_bytes() == key.as_slice(), text.clone())
                        .clicked()
                    {
                        clicked = Some(text);
                    }
                }
                if self.next_key.is_some() && ui.button("Load more").clicked() {
                    self.do_list(true);
                }
                if self.listing {
                    ui.spinner();
                }
            });
        if let Some(key) = clicked {
            self.open_key(&key);
        }
    }

    fn cluster_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Cluster");
        egui::Grid::new("nodes")
            .striped(true)
            .num_columns(8)
            .show(ui, |ui| {
                for h in [
                    "Node",
                    "Address",
                    "Role",
                    "Term",
                    "Commit",
                    "Applied",
                    "Lag",
                    "Reachable",
                ] {
                    ui.strong(h);
                }
                ui.end_row();
                for n in &self.nodes {
                    ui.label(if n.id == 0 {
                        "?".to_string()
                    } else {
                        n.id.to_string()
                    });
                    ui.label(&n.addr);
                    if n.is_leader() {
                        ui.colored_label(
                            egui::Color32::from_rgb(0, 160, 0),
                            egui::RichText::new("leader").strong(),
                        );
                    } else {
                        ui.label(n.role_label());
                    }
                    ui.label(n.term.to_string());
                    ui.label(n.commit_index.to_string());
                    ui.label(n.applied_index.to_string());
                    ui.label(n.lag.to_string());
                    ui.label(if n.reachable { "yes" } else { "no" });
                    ui.end_row();
                }
            });
    }

    fn activity_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Activity");
        egui::ScrollArea::vertical().show(ui, |ui| {
            for a in &self.activity {
                let text = format!("{} — {} ({} ms)", a.what, a.outcome, a.latency.as_millis());
                if a.ok {
                    ui.label(text);
                } else {
                    ui.colored_label(egui::Color32::RED, text);
                }
            }
        });
    }
}

impl eframe::App for KvApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_show_as_text_or_hex() {
        assert_eq!(display_bytes(b"hello"), ("hello".to_string(), false));
        assert_eq!(
            display_bytes(&[0xff, 0x00, 0x10]),
            ("ff0010".to_string(), true)
        );
    }

    #[test]
    fn errors_are_explained() {
        let e = ClientError::Invalid(
            "value is 2000000 bytes; the limit is 1048576 bytes (max_value_bytes)".into(),
        );
        assert!(explain(&e).starts_with("value larger than the server allows"));
        assert!(explain(&ClientError::Unavailable("x".into())).starts_with("no leader reachable"));
        assert!(explain(&ClientError::Unknown("x".into())).starts_with("outcome unknown"));
    }
}
