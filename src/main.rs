//! The node binary: parse flags, load the config, start logging, start the node, wait for
//! SIGINT/SIGTERM, shut down.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use distributed_kv::config::{ConfigOverrides, NodeConfig, FLAGS_SOURCE};
use distributed_kv::node::Node;
use distributed_kv::Error;

/// mimalloc instead of glibc's malloc: a put allocates and frees dozens of small buffers on
/// several threads (gRPC frames, protobuf messages, sled nodes), and glibc's per-arena
/// locking and chunk consolidation took about a fifth of the node's CPU in a put profile
/// (BENCHMARKS.md). Only the node binary chooses; the library leaves it to its users.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A Raft-replicated, strongly consistent key-value store node.
///
/// Every setting can come from the config file, an environment variable (KV_*) or a flag;
/// a flag beats the environment, which beats the file, which beats the default. With no
/// flags at all this starts a single-node store on 127.0.0.1:50051 with data under ./data.
#[derive(Parser, Debug)]
#[command(name = "distributed_kv", version)]
struct Cli {
    /// TOML config file (see config/node1.toml).
    #[arg(long, short = 'c', env = "KV_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: ConfigOverrides,
}

/// Exit status for a bad config or flags.
const EXIT_BAD_CONFIG: u8 = 2;
/// Exit status when the node could not start or failed.
const EXIT_FAILED: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = cli
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| FLAGS_SOURCE.into());
    let config = match NodeConfig::load(cli.config.as_deref(), &cli.overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log_level))
        .with_writer(std::io::stderr)
        .init();

    let system = actix::System::new();
    let result = system.block_on(async move {
        let node = Node::start(config).await?;
        wait_for_signal().await;
        tracing::info!("signal received: shutting down");
        node.shutdown().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", name_source(e, &source));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Start-up errors about a setting name where the setting came from (file or flags).
fn name_source(e: Error, source: &str) -> Error {
    match e {
        Error::DataDir { path, message } => {
            Error::config(source, "data_dir", format!("{}: {message}", path.display()))
        }
        Error::Config { field, message, .. } => Error::config(source, field, message),
        other => other,
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
