//! The webhook server: HTTPS (rustls) for reviews with certificate reload, plain HTTP for metrics and probes,
//! graceful drain on SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tracing::{error, info, warn};

use crate::admission::{self, AppState};
use crate::cluster::ClusterState;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// How the server listens and drains.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub cert_reload_interval: Duration,
    pub drain_timeout: Duration,
    /// After SIGTERM, keep accepting this long (while /readyz says 503) so that endpoint removal reaches
    /// the API server before the listener closes.
    pub shutdown_delay: Duration,
}

#[derive(Clone)]
struct Probes {
    cluster: Arc<dyn ClusterState>,
    metrics: Arc<Metrics>,
    draining: Arc<AtomicBool>,
}

/// `/metrics`, `/healthz`, `/readyz`: served on the metrics port, and the probes on the TLS port as well.
fn probes_router(p: Probes) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(p): State<Probes>| async move {
                if p.draining.load(Ordering::SeqCst) {
                    (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                } else if p.cluster.ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "cluster state not synced yet\n")
                }
            }),
        )
        .route("/metrics", get(|State(p): State<Probes>| async move { p.metrics.render() }))
        .with_state(p)
}

/// Serves until SIGTERM or SIGINT, then stops accepting and drains in-flight reviews within the bound.
pub async fn run<R: Registry>(state: Arc<AppState<R>>, opts: ServerOptions) -> anyhow::Result<()> {
    let ServerOptions {
        listen,
        metrics_listen,
        tls_cert,
        tls_key,
        cert_reload_interval,
        drain_timeout,
        shutdown_delay,
    } = opts;
    let tls = RustlsConfig::from_pem_file(&tls_cert, &tls_key)
        .await
        .with_context(|| format!("loading TLS certificate {} and key {}", tls_cert.display(), tls_key.display()))?;
    tokio::spawn(reload_certificates(tls.clone(), tls_cert, tls_key, cert_reload_interval));

    let draining = Arc::new(AtomicBool::new(false));
    let probes = Probes { cluster: state.cluster.clone(), metrics: state.metrics.clone(), draining: draining.clone() };
    let app = Router::new().route_service("/validate", admission::service(state)).merge(probes_router(probes.clone()));

    let metrics_listener = tokio::net::TcpListener::bind(metrics_listen)
        .await
        .with_context(|| format!("binding the metrics port {metrics_listen}"))?;
    let (stop_metrics, stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = tokio::spawn(async move {
        let _ = axum::serve(metrics_listener, probes_router(probes))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });

    let handle = axum_server::Handle::new();
    let on_signal = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        draining.store(true, Ordering::SeqCst);
        info!(delay_ms = shutdown_delay.as_millis() as u64, "SIGTERM: not ready; still serving while endpoints update");
        tokio::time::sleep(shutdown_delay).await;
        info!(drain_timeout_ms = drain_timeout.as_millis() as u64, "shutting down: draining in-flight reviews");
        on_signal.graceful_shutdown(Some(drain_timeout));
    });
    let runtime = tokio::runtime::Handle::current();
    let scheduler = match runtime.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current-thread",
        _ => "multi-thread",
    };
    let workers = runtime.metrics().num_workers();
    info!(%listen, %metrics_listen, scheduler, workers, "pullguard serving");
    // TCP_NODELAY on every accepted connection: a review's response is a few small writes, and Nagle's
    // algorithm holding the last one for the client's delayed ACK added ~40 ms to HTTP/2 reviews (the API
    // server's protocol) at every rate.
    let acceptor = RustlsAcceptor::new(tls).acceptor(NoDelayAcceptor::new());
    let served = axum_server::bind(listen).acceptor(acceptor).handle(handle).serve(app.into_make_service()).await;
    let _ = stop_metrics.send(());
    let _ = metrics_server.await;
    served.with_context(|| format!("serving on {listen}"))?;
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// A mounted Secret updates by an atomic symlink swap; poll the files' contents and reload on change. A
/// half-written or invalid pair is logged and the previous certificate keeps serving.
async fn reload_certificates(tls: RustlsConfig, cert: PathBuf, key: PathBuf, every: Duration) {
    let read = || async { (tokio::fs::read(&cert).await.ok(), tokio::fs::read(&key).await.ok()) };
    let mut current = read().await;
    loop {
        tokio::time::sleep(every).await;
        let next = read().await;
        if next == current {
            continue;
        }
        if let (Some(c), Some(k)) = next.clone() {
            match tls.reload_from_pem(c, k).await {
                Ok(()) => {
                    info!(cert = %cert.display(), "TLS certificate reloaded");
                    current = next;
                }
                Err(e) => {
                    warn!(error = %e, "new TLS certificate or key is not usable yet; keeping the old one")
                }
            }
        }
    }
}
