//! `pullguard serve`: the validating admission webhook.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::audit::Continuous;
use super::{EngineArgs, build_engine, load_config};
use crate::admission::{
    API_SERVER_DEFAULT_TIMEOUT, AppState, DEFAULT_DEADLINE_MARGIN, DEFAULT_EXEMPT_NAMESPACE, Settings,
};
use crate::cluster::live::LiveCluster;
use crate::config::DurationStr;
use crate::metrics::Metrics;
use crate::server::{self, ServerOptions};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// HTTPS address for admission reviews.
    #[arg(long, env = "PULLGUARD_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP address for /metrics, /healthz and /readyz.
    #[arg(long, env = "PULLGUARD_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Serving certificate (PEM); reloaded when it changes.
    #[arg(long, env = "PULLGUARD_TLS_CERT", default_value = "/etc/pullguard/tls/tls.crt")]
    pub tls_cert: PathBuf,
    /// Serving key (PEM); reloaded when it changes.
    #[arg(long, env = "PULLGUARD_TLS_KEY", default_value = "/etc/pullguard/tls/tls.key")]
    pub tls_key: PathBuf,
    /// kubeconfig to use instead of the in-cluster configuration.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Read no Secrets at all: only node-wide credentials (`nodeCredentials`) are used.
    #[arg(long)]
    pub no_secrets: bool,
    /// Namespaces never checked (repeatable). Default: kube-system and the webhook's own namespace.
    #[arg(long = "exempt-namespace", value_name = "NS")]
    pub exempt_namespaces: Vec<String>,
    /// The webhook's own namespace (exempt).
    #[arg(long, env = "POD_NAMESPACE")]
    pub own_namespace: Option<String>,
    /// Also look up Pods, ReplicaSets and Jobs a controller made from its owner's template (checked when the
    /// owner was admitted).
    #[arg(long)]
    pub check_controlled_pods: bool,
    /// Answer this long before the API server's timeout.
    #[arg(long, default_value_t = DurationStr(DEFAULT_DEADLINE_MARGIN))]
    pub deadline_margin: DurationStr,
    /// On SIGTERM, wait at most this long for in-flight reviews.
    #[arg(long, default_value = "20s")]
    pub drain_timeout: DurationStr,
    /// After SIGTERM, keep serving this long (reporting not ready) before closing the listener.
    #[arg(long, default_value = "5s")]
    pub shutdown_delay: DurationStr,
    /// Reviews handled at once; more wait.
    #[arg(long, default_value_t = 512)]
    pub max_concurrency: usize,
    /// How often the certificate files are checked for changes.
    #[arg(long, default_value = "2s")]
    pub cert_reload_interval: DurationStr,
    /// Re-check every running workload's images this often (e.g. `10m`), spread over the interval; exports
    /// `pullguard_workload_image_verdict` and raises an Event when a workload's verdict turns from allow to
    /// warn or deny. Off by default; needs the `audit` RBAC overlay (list workloads, create events).
    #[arg(long, value_name = "DURATION")]
    pub audit_interval: Option<DurationStr>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<u8> {
    let ServeArgs {
        engine,
        listen,
        metrics_listen,
        tls_cert,
        tls_key,
        kubeconfig,
        no_secrets,
        exempt_namespaces,
        own_namespace,
        check_controlled_pods,
        deadline_margin,
        drain_timeout,
        shutdown_delay,
        max_concurrency,
        cert_reload_interval,
        audit_interval,
    } = args;
    let cfg = load_config(&engine)?;
    let engine = Arc::new(build_engine(&cfg, false)?);
    let client = super::kube_client(kubeconfig.as_deref()).await?;
    let live = LiveCluster::start(client.clone(), !no_secrets);
    let cluster = live.clone();

    let mut exempt: BTreeSet<String> = if exempt_namespaces.is_empty() {
        [DEFAULT_EXEMPT_NAMESPACE.to_string()].into()
    } else {
        exempt_namespaces.into_iter().collect()
    };
    exempt.extend(own_namespace);
    let settings = Settings {
        mode: cfg.mode,
        exempt_namespaces: exempt,
        check_controlled_pods,
        deadline_margin: deadline_margin.0,
        default_timeout: API_SERVER_DEFAULT_TIMEOUT,
    };
    let (cache_stats, registry_stats) = engine.stats();
    let metrics = Arc::new(Metrics::new(cache_stats, registry_stats));
    let slots = Arc::new(tokio::sync::Semaphore::new(max_concurrency.max(1)));
    if let Some(interval) = audit_interval.filter(|i| !i.0.is_zero()) {
        let continuous = Continuous {
            engine: engine.clone(),
            cluster: live,
            client,
            metrics: metrics.clone(),
            interval: interval.0,
            exempt: settings.exempt_namespaces.clone(),
        };
        tokio::spawn(continuous.run());
    }
    let state = Arc::new(AppState { engine, cluster, settings, metrics, slots });
    let opts = ServerOptions {
        listen,
        metrics_listen,
        tls_cert,
        tls_key,
        cert_reload_interval: cert_reload_interval.0,
        drain_timeout: drain_timeout.0,
        shutdown_delay: shutdown_delay.0,
    };
    server::run(state, opts).await?;
    Ok(0)
}
