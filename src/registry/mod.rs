//! Registry lookups: the engine's only I/O. A lookup answers "what does this reference resolve to, for this
//! credential" with facts (digest, platforms) or a classified [`Failure`].

pub mod auth;
mod client;
pub mod guard;
pub mod manifest;
pub mod mirrors;

use std::future::Future;
use std::time::Duration;

pub use client::{ClientError, Endpoint, EndpointSettings, RegistryClient, RegistryStats};

use crate::credentials::Credential;
use crate::platform::Platform;
use crate::reference::Reference;

/// A manifest the registry has, by digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub digest: String,
}

/// Why a lookup did not produce facts. Messages never contain credentials or tokens.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("repository not found")]
    RepositoryNotFound,
    #[error("tag {tag:?} not found")]
    TagNotFound { tag: String, tags: Vec<String> },
    #[error("digest {digest} not found")]
    DigestNotFound { digest: String },
    /// The registry (or its token service) refused access. `credential_sent` tells whether a credential was
    /// presented.
    #[error("registry answered {status}: {detail}")]
    Unauthorized { credential_sent: bool, status: u16, detail: String },
    #[error("the registry refused the credentials: {detail}")]
    CredentialsRejected { detail: String },
    #[error("rate limited{}", retry_after.map(|d| format!(" (Retry-After {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("registry error {status}: {detail}")]
    ServerError { status: u16, detail: String },
    #[error("{detail}")]
    /// `tls`: the TLS handshake failed (an untrusted or invalid certificate), so the fix is a CA, not egress.
    Unreachable { detail: String, tls: bool },
    #[error("{detail}")]
    Blocked { detail: String },
    #[error("invalid manifest: {detail}")]
    InvalidManifest { detail: String },
    /// The registry serves content that does not hash to the digest asked for, or answers a pinned digest with
    /// another: the kubelet verifies every digest and would refuse the pull.
    #[error("digest mismatch for {digest}: {detail}")]
    DigestMismatch { digest: String, detail: String },
    /// An index that names no image a node can run (only attestations or `unknown/unknown` entries).
    #[error("the index lists no runnable image")]
    NoRunnablePlatform,
    /// The lookup's time ran out before the registry answered.
    #[error("no answer within {}", fmt_duration(*waited))]
    TimedOut { waited: Duration, limit: TimeLimit },
    /// Not looked up: `limit` lookups were already waiting on registries, in all or in this `share` of them.
    #[error("not looked up: {limit} lookups were already waiting under {}", share.setting())]
    Busy { limit: usize, share: Share },
}

/// Which of the limits on lookups in flight refused one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// All lookups (`cache.maxLookupsInFlight`).
    All = 0,
    /// The lookups started for one namespace's reviews (`cache.maxLookupsInFlightPerNamespace`).
    Namespace,
    /// The lookups of one registry host (`cache.maxLookupsInFlightPerRegistry`).
    Registry,
}

impl Share {
    /// Every share, in the order of their counters.
    pub const ALL: [Share; 3] = [Share::All, Share::Namespace, Share::Registry];

    /// The setting that sets this limit.
    pub fn setting(self) -> &'static str {
        match self {
            Share::All => "cache.maxLookupsInFlight",
            Share::Namespace => "cache.maxLookupsInFlightPerNamespace",
            Share::Registry => "cache.maxLookupsInFlightPerRegistry",
        }
    }

    /// The label of `pullguard_lookups_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Share::All => "all",
            Share::Namespace => "namespace",
            Share::Registry => "registry",
        }
    }
}

/// Which limit ended a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeLimit {
    /// The configured `lookupTimeout`.
    LookupTimeout,
    /// What was left of the admission review's deadline (the API server's timeout less a margin).
    ReviewDeadline,
}

/// `1.5s`, `200ms`: never `0.0s` for a short wait.
pub fn fmt_duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) { format!("{:.1}s", d.as_secs_f64()) } else { format!("{}ms", d.as_millis()) }
}

impl Failure {
    /// Failures that another credential might fix, so the kubelet-order walk goes on to the next candidate.
    pub fn is_auth(&self) -> bool {
        matches!(self, Failure::Unauthorized { .. } | Failure::CredentialsRejected { .. })
    }

    /// How long a negative answer may be cached.
    pub fn negative_ttl(&self, base: Duration) -> Duration {
        match self {
            Failure::RateLimited { retry_after: Some(d) } => {
                (*d).clamp(Duration::from_secs(1), Duration::from_secs(600))
            }
            Failure::Unreachable { .. } | Failure::ServerError { .. } | Failure::TimedOut { .. } => {
                base.min(Duration::from_secs(10))
            }
            _ => base,
        }
    }
}

/// The registry operations the engine needs. Implemented over HTTP by [`RegistryClient`]; caches wrap it.
pub trait Registry: Send + Sync + 'static {
    /// Request counters (none for registries that are not HTTP).
    fn stats(&self) -> std::sync::Arc<RegistryStats> {
        std::sync::Arc::default()
    }

    /// The pull budget the registry last announced for this identity (limit, remaining), if it announces one.
    fn budget(&self, _registry: &str, _credential: Option<&Credential>) -> Option<(u64, u64)> {
        None
    }

    /// HEAD the manifest for the reference's tag or digest.
    fn resolve(
        &self,
        reference: &Reference,
        credential: Option<&Credential>,
    ) -> impl Future<Output = Result<Resolved, Failure>> + Send;

    /// The platforms the manifest with this digest serves (GET of the manifest, and of its config blob for a
    /// single-image manifest).
    fn platforms(
        &self,
        reference: &Reference,
        digest: &str,
        credential: Option<&Credential>,
    ) -> impl Future<Output = Result<Vec<Platform>, Failure>> + Send;
}
