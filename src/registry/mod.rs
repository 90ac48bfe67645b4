//! Registry lookups: the engine's only I/O. A lookup answers "what does this reference resolve to, for this
//! credential" with facts (digest, platforms) or a classified [`Failure`].

pub mod auth;
mod client;
pub mod guard;
pub mod manifest;

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
    pub media_type: String,
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
    Unreachable { detail: String },
    #[error("{detail}")]
    Blocked { detail: String },
    #[error("invalid manifest: {detail}")]
    InvalidManifest { detail: String },
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
            Failure::Unreachable { .. } | Failure::ServerError { .. } => base.min(Duration::from_secs(10)),
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
