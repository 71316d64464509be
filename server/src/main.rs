//! The `weir` binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Weir: a streaming SQL database that speaks PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Data directory (tables, catalog).
    #[arg(long, env = "WEIR_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// PostgreSQL protocol address.
    #[arg(long, env = "WEIR_LISTEN", global = true)]
    listen: Option<String>,
    /// Prometheus metrics address.
    #[arg(long, env = "WEIR_METRICS_LISTEN", global = true)]
    metrics_listen: Option<String>,
    /// TOML configuration file.
    #[arg(long, env = "WEIR_CONFIG", global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (the default).
    Serve,
}

/// mimalloc: operators allocate many small rows and keys; glibc's malloc
/// took a quarter of the CPU time of Nexmark q5 (perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = weir_server::Config::resolve(
        cli.config.as_deref(),
        cli.data_dir,
        cli.listen,
        cli.metrics_listen,
    )?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            // Planning and evaluating an expression recurse once per level
            // of nesting (up to `parse_guard::EXPRESSION_DEPTH_MAX`).
            const THREAD_STACK_BYTES: usize = 16 << 20;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_stack_size(THREAD_STACK_BYTES)
                .thread_name("weir")
                .build()?;
            rt.block_on(weir_server::run(config))
        }
    }
}
