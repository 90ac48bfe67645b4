//! Command-line interface.

pub mod check;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// pullguard: catch ImagePullBackOff before the pod exists.
#[derive(Debug, Parser)]
#[command(name = "pullguard", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifest files (a pre-deploy gate for CI): every container image is resolved against its registry.
    Check(check::CheckArgs),
}

/// Options shared by `check` and `serve`.
#[derive(Debug, clap::Args)]
pub struct EngineArgs {
    /// Configuration file (YAML).
    #[arg(long, env = "PULLGUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// enforce: deny what would fail; warn: report it as a warning. Overrides the config file.
    #[arg(long, value_enum)]
    pub mode: Option<crate::policy::Mode>,
    /// Node platform(s) of the cluster, OS/ARCH[/VARIANT]; repeatable. Overrides the config file.
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]")]
    pub platforms: Vec<crate::platform::Platform>,
}

/// Runs the command, returning the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Check(args) => runtime.block_on(check::run(args)),
    }
}

/// Logs go to stderr; `PULLGUARD_LOG` takes tracing targets (e.g. `debug`, `pullguard=trace`).
pub fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = std::env::var("PULLGUARD_LOG")
        .ok()
        .and_then(|s| s.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::WARN)
        });
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(filter)
        .try_init();
}
