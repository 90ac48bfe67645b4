//! Command-line interface.

pub mod audit;
pub mod certs;
pub mod check;
mod log;
pub mod serve;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::cache::{CacheSettings, CachedRegistry};
use crate::config::Config;
use crate::credentials::{Keyring, Source};
use crate::engine::{Engine, EngineSettings};
use crate::policy::PolicySettings;
use crate::registry::RegistryClient;
use crate::registry::guard::Guard;

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
    /// Check what a live cluster runs: every workload and unowned Pod, with the cluster's pull secrets,
    /// ServiceAccounts and Nodes; reported as `check` reports files.
    Audit(audit::AuditArgs),
    /// Run the validating admission webhook (HTTPS) over the same engine.
    Serve(Box<serve::ServeArgs>),
    /// Make a CA and a serving certificate for the webhook's Service, and the matching caBundle.
    Certs(certs::CertsArgs),
}

/// Options shared by `check`, `audit` and `serve`.
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
    /// The kubelet's CredentialProviderConfig file (`--image-credential-provider-config`). Overrides the
    /// config file; needs --credential-provider-bin-dir.
    #[arg(long, value_name = "FILE", requires = "credential_provider_bin_dir")]
    pub credential_provider_config: Option<PathBuf>,
    /// The kubelet's plugin directory (`--image-credential-provider-bin-dir`).
    #[arg(long, value_name = "DIR", requires = "credential_provider_config")]
    pub credential_provider_bin_dir: Option<PathBuf>,
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
    if let (Some(config), Some(bin_dir)) = (&args.credential_provider_config, &args.credential_provider_bin_dir) {
        cfg.providers = crate::credentials::provider::Providers::load(config, bin_dir)?;
    }
    Ok(cfg)
}

/// Builds the engine a configuration describes, for every face (`check`, `serve`); offline engines never touch
/// the network.
pub fn build_engine(cfg: &Config, offline: bool) -> anyhow::Result<Engine<RegistryClient>> {
    let registry = if offline {
        None
    } else {
        let client = RegistryClient::new(&cfg.registries, Guard::new(cfg.blocked_networks.clone()), cfg.lookup_timeout)
            .context("building the registry client")?;
        let cache = CacheSettings { fill_timeout: cfg.lookup_timeout, ..cfg.cache };
        Some(Arc::new(CachedRegistry::new(Arc::new(client), cache)))
    };
    let mut node_keyring = Keyring::default();
    if let Some(nc) = &cfg.node_credentials {
        node_keyring.add(&Source::Node, nc);
    }
    let settings = EngineSettings {
        policy: PolicySettings {
            mode: cfg.mode,
            fail_closed: cfg.fail_closed,
            expiry_warning: cfg.credential_expiry_warning,
        },
        platforms: cfg.platforms.clone(),
        deadline: cfg.lookup_timeout,
        providers: cfg.providers.clone(),
        node_authenticated: cfg.node_authenticated.clone(),
        mirrors: cfg.mirrors.clone(),
    };
    Ok(Engine::new(registry, node_keyring, settings))
}

/// A client for the cluster a kubeconfig names, or the in-cluster configuration (or `KUBECONFIG`).
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await.context("finding the cluster (in-cluster config or KUBECONFIG)")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// Runs the command, returning the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let runtime = runtime(std::env::var("TOKIO_WORKER_THREADS").ok().as_deref())?;
    match cli.command {
        Command::Check(args) => runtime.block_on(check::run(args)),
        Command::Audit(args) => runtime.block_on(audit::run(args)),
        Command::Serve(args) => {
            let code = runtime.block_on(serve::run(*args));
            log::flush();
            code
        }
        Command::Certs(args) => certs::run(args),
    }
}

/// The tokio runtime, given `TOKIO_WORKER_THREADS` where it is set. Where it would run one worker (the process
/// may use one CPU: a pod whose CPU limit is one or less, a `taskset`, or that variable says 1), the
/// current-thread scheduler: one thread for the reviews either way, but over HTTP/2, the API server's
/// protocol, the multi-thread scheduler's single worker spent 10 % more CPU per review at 2,000 reviews/s and
/// 25 % more at 5,000/s, with about twice the p99 there, in paired runs (`bench ab`; README: Performance);
/// over HTTP/1.1 the two were even. Any other value of the variable is tokio's to read.
fn runtime(worker_threads: Option<&str>) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = match worker_threads {
        Some(n) => n.parse::<usize>().ok(),
        None => std::thread::available_parallelism().ok().map(std::num::NonZero::get),
    };
    if workers == Some(1) {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    }
}

impl Cli {
    /// Logs go to stderr; `PULLGUARD_LOG` takes tracing targets (e.g. `debug`, `pullguard=trace`). `serve`
    /// logs one JSON object per line at info; `check` logs plain text at warn.
    pub fn init_logging(&self) {
        use tracing_subscriber::prelude::*;
        let serve = matches!(self.command, Command::Serve(_));
        let default = if serve { tracing::Level::INFO } else { tracing::Level::WARN };
        let filter = std::env::var("PULLGUARD_LOG")
            .ok()
            .and_then(|s| s.parse::<tracing_subscriber::filter::Targets>().ok())
            .unwrap_or_else(|| tracing_subscriber::filter::Targets::new().with_default(default));
        let registry = tracing_subscriber::registry().with(filter);
        let _ = if serve {
            // serve: off the runtime threads (see cli/log.rs).
            let fmt = tracing_subscriber::fmt::layer().with_writer(log::NonBlocking::stderr()).with_ansi(false);
            registry.with(fmt.json().flatten_event(true)).try_init()
        } else {
            let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false);
            registry.with(fmt).try_init()
        };
    }
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_worker_runs_the_current_thread_scheduler() {
        let one = super::runtime(Some("1")).unwrap();
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let two = super::runtime(Some("2")).unwrap();
        assert_eq!(two.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(two.metrics().num_workers(), 2);
    }
}
