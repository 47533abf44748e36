//! `WatchPanel`: the GUI's watch panel (live events under a prefix, pause and resume) and
//! the history view of the key in the editor (every revision back to the compaction point).
//!
//! It draws and asks; the worker watches ([`crate::watch_feed`]). Pause stops the watch and
//! remembers the revision of the last event shown; Resume starts a new watch from the one
//! after it, so the events written meanwhile appear when it resumes — none lost, none twice.

use std::collections::VecDeque;

use eframe::egui;

use crate::app::display_bytes;
use crate::watch_feed::{EventRow, History};
use crate::worker::{Done, Reply, Request};

/// Events the watch panel keeps; older ones scroll away.
pub const WATCH_PANEL_EVENTS: usize = 500;
/// Height of the event list, in points.
pub const WATCH_LIST_HEIGHT: f32 = 160.0;
/// Width of the watch prefix field, in points.
pub const WATCH_PREFIX_WIDTH: f32 = 160.0;

/// Where the live watch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchState {
    /// Never started, or failed.
    Off,
    /// Events are coming.
    Running,
    /// Stopped by the user; Resume goes on after the last event shown.
    Paused,
}

/// The watch panel and the history view.
pub struct WatchPanel {
    /// The prefix field's text.
    prefix: String,
    /// The prefix of the watch that is (or was) running.
    watching: Vec<u8>,
    state: WatchState,
    /// Newest first, at most [`WATCH_PANEL_EVENTS`].
    events: VecDeque<EventRow>,
    /// The revision of the last event shown (0: none yet).
    last_revision: i64,
    /// Why the watch stopped, when it was not the user.
    error: Option<String>,
    /// The history view: the key it is of, and what came back.
    history: Option<(String, Result<History, String>)>,
    /// The revision the running watch started from, once it is made.
    from: Option<i64>,
    /// The worker's id of the running watch: results of a watch stopped before (still on
    /// their way when it was paused) are not shown, so a resume shows nothing twice.
    current: Option<u64>,
}

impl Default for WatchPanel {
    fn default() -> WatchPanel {
        WatchPanel {
            prefix: String::new(),
            watching: Vec::new(),
            state: WatchState::Off,
            events: VecDeque::new(),
            last_revision: 0,
            error: None,
            history: None,
            from: None,
            current: None,
        }
    }
}

/// One event as a line: `rev 7  PUT key = value` or `rev 8  DELETE key`.
pub fn event_line(e: &EventRow) -> String {
    let key = display_bytes(&e.key).0;
    if e.deleted {
        format!("rev {}  DELETE {key}", e.revision)
    } else {
        format!(
            "rev {}  PUT {key} = {}",
            e.revision,
            display_bytes(&e.value).0
        )
    }
}

impl WatchPanel {
    pub fn state(&self) -> WatchState {
        self.state
    }

    /// The events shown, newest first.
    pub fn events(&self) -> &VecDeque<EventRow> {
        &self.events
    }

    /// The worker took the watch asked for, as request `id`.
    pub fn started(&mut self, id: u64) {
        self.current = Some(id);
        self.from = None;
    }

    /// The worker refused the watch asked for (its queue was full).
    pub fn not_started(&mut self) {
        self.state = WatchState::Off;
        self.error = Some("busy: too many requests queued; try again".into());
    }

    /// The app connected elsewhere: the worker stopped the watch.
    pub fn disconnected(&mut self) {
        self.state = WatchState::Off;
        self.current = None;
        self.history = None;
    }

    /// Whether `done` is the answer to one of the panel's requests; if so it takes it.
    pub fn absorb(&mut self, done: &Done) -> bool {
        let current = self.current == Some(done.id);
        match (&done.request, &done.result) {
            (Request::Watch { .. }, Ok(Reply::Watching(from))) => {
                if current {
                    self.from = Some(*from);
                }
            }
            (Request::Watch { .. }, Ok(Reply::Events(rows))) => {
                if self.state == WatchState::Running && current {
                    for row in rows {
                        self.last_revision = self.last_revision.max(row.revision);
                        self.events.push_front(row.clone());
                    }
                    self.events.truncate(WATCH_PANEL_EVENTS);
                }
            }
            (Request::Watch { .. }, Err(e)) => {
                if self.state == WatchState::Running && current {
                    self.state = WatchState::Off;
                    self.error = Some(crate::app::explain(e));
                }
            }
            (Request::Watch { .. } | Request::StopWatch, _) => {}
            (Request::History(key), result) => {
                let shown = display_bytes(key).0;
                let result = match result {
                    Ok(Reply::History(h)) => Ok(h.clone()),
                    Ok(_) => Err("an unexpected answer".to_string()),
                    Err(e) => Err(crate::app::explain(e)),
                };
                self.history = Some((shown, result));
            }
            _ => return false,
        }
        true
    }

    /// Draws the watch section; the request to send, if a button asked for one.
    pub fn show_watch(&mut self, ui: &mut egui::Ui) -> Option<Request> {
        let mut ask = None;
        ui.heading("Watch");
        ui.horizontal(|ui| {
            let label = ui.label("Watch prefix");
            ui.add(egui::TextEdit::singleline(&mut self.prefix).desired_width(WATCH_PREFIX_WIDTH))
                .labelled_by(label.id);
            match self.state {
                WatchState::Off => {
                    if ui.button("Start watching").clicked() {
                        self.watching = self.prefix.clone().into_bytes();
                        self.events.clear();
                        self.last_revision = 0;
                        self.error = None;
                        self.state = WatchState::Running;
                        ask = Some(Request::Watch {
                            prefix: self.watching.clone(),
                            from: 0,
                        });
                    }
                }
                WatchState::Running => {
                    if ui.button("Pause").clicked() {
                        self.state = WatchState::Paused;
                        ask = Some(Request::StopWatch);
                    }
                    let prefix = display_bytes(&self.watching).0;
                    match self.from {
                        Some(from) => ui.weak(format!("watching {prefix}* from revision {from}")),
                        None => ui.weak(format!("starting a watch of {prefix}*")),
                    };
                }
                WatchState::Paused => {
                    if ui.button("Resume").clicked() {
                        self.state = WatchState::Running;
                        // From the revision after the last event shown; none shown: from now.
                        let from = if self.last_revision > 0 {
                            self.last_revision + 1
                        } else {
                            0
                        };
                        ask = Some(Request::Watch {
                            prefix: self.watching.clone(),
                            from,
                        });
                    }
                    if ui.button("Stop").clicked() {
                        self.state = WatchState::Off;
                    }
                    ui.weak(format!("paused after revision {}", self.last_revision));
                }
            }
        });
        if let Some(e) = &self.error {
            ui.colored_label(egui::Color32::RED, format!("watch stopped: {e}"));
        }
        egui::ScrollArea::vertical()
            .id_salt("watch events")
            .max_height(WATCH_LIST_HEIGHT)
            .show(ui, |ui| {
                for e in &self.events {
                    ui.label(event_line(e));
                }
            });
        ask
    }

    /// Draws the history view of the last History asked for.
    pub fn show_history(&self, ui: &mut egui::Ui) {
        let Some((key, result)) = &self.history else {
            return;
        };
        ui.separator();
        ui.strong(format!("History of {key}"));
        match result {
            Err(e) => {
                ui.colored_label(egui::Color32::RED, e);
            }
            Ok(h) => {
                if let Some(c) = h.compacted_before {
                    ui.weak(format!("revisions before {c} were compacted away"));
                }
                if h.events.is_empty() {
                    ui.weak("no revisions");
                }
                egui::ScrollArea::vertical()
                    .id_salt("history")
                    .max_height(WATCH_LIST_HEIGHT)
                    .show(ui, |ui| {
                        for e in h.events.iter().rev() {
                            let line = if e.deleted {
                                event_line(e)
                            } else {
                                format!("{} (version {})", event_line(e), e.version)
                            };
                            ui.label(line);
                        }
                    });
            }
        }
    }
}
