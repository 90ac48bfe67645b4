//! `pullguard check`: the engine over manifest files.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use futures_util::StreamExt;

use super::EngineArgs;
use crate::cache::CachedRegistry;
use crate::cluster::Snapshot;
use crate::config::Config;
use crate::credentials::{Keyring, Source};
use crate::engine::{Engine, EngineSettings};
use crate::input::{self, InputError};
use crate::policy::PolicySettings;
use crate::registry::RegistryClient;
use crate::registry::guard::Guard;
use crate::report::{Format, Report};
use crate::workload::Workload;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub output: Format,
    /// Namespace for objects that name none.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// No network at all: check references, secrets and credential candidates only.
    #[arg(long)]
    pub offline: bool,
    /// Manifest files or directories (.yaml, .yml, .json, recursively); `-` reads stdin.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// Loads the configuration and applies command-line overrides.
pub fn load_config(args: &EngineArgs) -> anyhow::Result<Config> {
    let mut cfg = Config::load(args.config.as_deref())?;
    if let Some(m) = args.mode {
        cfg.mode = m;
    }
    if !args.platforms.is_empty() {
        cfg.platforms = args.platforms.clone();
    }
    Ok(cfg)
}

/// Builds the engine a configuration describes; offline engines never touch the network.
pub fn build_engine(cfg: &Config, offline: bool) -> anyhow::Result<Engine<RegistryClient>> {
    let registry = if offline {
        None
    } else {
        let client =
            RegistryClient::new(&cfg.endpoint_settings(), Guard::new(cfg.blocked_networks.clone()), cfg.lookup_timeout)
                .context("building the registry client")?;
        let cache = crate::cache::CacheSettings { fill_timeout: cfg.lookup_timeout, ..cfg.cache };
        Some(Arc::new(CachedRegistry::new(Arc::new(client), cache)))
    };
    let mut node_keyring = Keyring::default();
    if let Some(nc) = &cfg.node_credentials {
        node_keyring.add(&Source::Node, nc);
    }
    let settings = EngineSettings {
        policy: PolicySettings { mode: cfg.mode, fail_closed: cfg.fail_closed },
        platforms: cfg.platforms.clone(),
        deadline: cfg.lookup_timeout,
    };
    Ok(Engine::new(registry, node_keyring, settings))
}

pub async fn run(args: CheckArgs) -> anyhow::Result<u8> {
    let cfg = load_config(&args.engine)?;
    let engine = build_engine(&cfg, args.offline)?;
    let (docs, mut errors) = input::load(&args.paths);
    let doc_error =
        |d: &input::Document, message: String| InputError { file: d.file.clone(), document: Some(d.index), message };

    // Secrets and ServiceAccounts in the input are this run's cluster.
    let mut snapshot = Snapshot::default();
    for d in &docs {
        if let Err(e) = snapshot.add_object(&d.value, &args.namespace) {
            errors.push(doc_error(d, e.to_string()));
        }
    }
    let mut workloads = Vec::new();
    for d in &docs {
        match Workload::from_object(&d.value, &args.namespace) {
            Ok(Some(mut w)) => {
                w.object.file = Some(d.file.clone());
                w.object.document = Some(d.index);
                workloads.push(w);
            }
            Ok(None) => {}
            Err(e) => errors.push(doc_error(d, e.to_string())),
        }
    }
    let results: Vec<_> = futures_util::stream::iter(&workloads)
        .map(|w| engine.check_workload(w, &snapshot, None))
        .buffered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    let report = Report::new(workloads.len(), results, errors);
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = std::io::stdout().lock();
    let written = out.write_all(report.render(args.output, color).as_bytes()).and_then(|()| out.flush());
    match written {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(report.exit_code()),
    }
}
