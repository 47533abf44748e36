//! The desktop GUI: `cargo run --bin gui [-- --endpoints A,B,C]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use eframe::egui;
use kv_gui::app::{default_state_file, KvApp};

/// Browse and edit keys, and watch the cluster.
#[derive(Parser, Debug)]
#[command(name = "gui", version)]
struct Cli {
    /// Comma-separated client addresses (default: $KV_ENDPOINTS, the last ones used, or 127.0.0.1:50051).
    #[arg(long)]
    endpoints: Option<String>,
    /// Render the window, save a PNG of it here once the cluster panel is filled, and exit.
    #[arg(long)]
    screenshot: Option<PathBuf>,
}

/// Longest wait for the cluster panel before a screenshot is taken anyway.
const SCREENSHOT_WAIT: Duration = Duration::from_secs(10);
/// Which key of the browser the screenshot opens in the editor.
const SCREENSHOT_KEY_INDEX: usize = 3;
/// Initial window size in points.
const WINDOW_SIZE: [f32; 2] = [1200.0, 720.0];

/// Wraps the app to take one screenshot and exit.
struct Screenshotter {
    app: KvApp,
    path: PathBuf,
    started: Instant,
    /// Whether a key was opened in the editor for the picture.
    opened: bool,
    requested: bool,
}

impl eframe::App for Screenshotter {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        self.app.ui(ui, frame);
        let settled = self.app.nodes().iter().any(|n| n.is_leader()) && !self.app.busy();
        if settled && !self.opened && self.app.keys().len() > SCREENSHOT_KEY_INDEX {
            // Show the editor in use: open one of the keys, as a click in the browser does.
            self.opened = true;
            let key = String::from_utf8_lossy(&self.app.keys()[SCREENSHOT_KEY_INDEX]).into_owned();
            self.app.open_key(&key);
        }
        let ready = settled && self.opened;
        if !self.requested && (ready || self.started.elapsed() > SCREENSHOT_WAIT) {
            self.requested = true;
            let (ctx, path) = (ui.ctx().clone(), self.path.clone());
            ui.ctx().request_screenshot(move |image| {
                if let Err(e) = save_png(&path, &image) {
                    eprintln!("error: cannot write {}: {e}", path.display());
                }
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            });
        }
        ui.ctx().request_repaint_after(Duration::from_millis(100));
    }
}

fn save_png(path: &std::path::Path, image: &egui::ColorImage) -> anyhow::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut enc = png::Encoder::new(file, image.size[0] as u32, image.size[1] as u32);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    let bytes: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
    writer.write_image_data(&bytes)?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .init();
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_inner_size(WINDOW_SIZE)
            .with_title("distributed_kv"),
        ..Default::default()
    };
    let result = eframe::run_native(
        "distributed_kv",
        options,
        Box::new(move |cc| {
            let ctx = cc.egui_ctx.clone();
            let app = KvApp::new(cli.endpoints, default_state_file(), move || {
                ctx.request_repaint()
            });
            Ok(match cli.screenshot {
                Some(path) => Box::new(Screenshotter {
                    app,
                    path,
                    started: Instant::now(),
                    opened: false,
                    requested: false,
                }),
                None => Box::new(app),
            })
        }),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot open the window: {e}");
            ExitCode::FAILURE
        }
    }
}
