//! Registry credentials: what a credential is, where it came from, and the two jobs on it: reading docker
//! config files (`dockerconfig`) and matching them to images as the kubelet's keyring does (`keyring`).
//! Where a pod's pull secrets come from is the cluster's business (`cluster::pull_secrets`).
//!
//! The order of candidates is the kubelet's: the pod's pull secrets (or, when the pod lists none, its
//! ServiceAccount's) form one keyring, node-wide credentials a second; each keyring yields every matching
//! entry, keys reverse-sorted so more specific ones come first.

mod dockerconfig;
pub mod expiry;
mod keyring;
pub mod provider;

use std::fmt;

pub use dockerconfig::{ConfigError, DOCKER_CFG, DOCKER_CONFIG_JSON, DockerConfig, SecretData, Unusable};
pub use keyring::Keyring;

/// A username and password (or token) for one registry. Never printed.
///
/// A shared handle: the engine copies candidates for every container of every review, and a cloud registry's
/// token runs to kilobytes. What is derived from the secret — its identity in cache keys, its expiry — is
/// worked out once per credential, not per lookup (hashing a 2 KB ECR token per lookup was most of a review).
#[derive(Clone)]
pub struct Credential(std::sync::Arc<Secret>);

struct Secret {
    username: String,
    password: String,
    /// SHA-256 of the credential, see [`Credential::id`].
    id: [u8; 32],
    expiry: std::sync::OnceLock<Option<expiry::Expiry>>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

impl PartialEq for Credential {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
            || (self.0.username == other.0.username && self.0.password == other.0.password)
    }
}

impl Eq for Credential {}

impl std::hash::Hash for Credential {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

impl Credential {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        let (username, password) = (username.into(), password.into());
        // The username's length first: a NUL may sit in either part, so a separator alone would let two
        // credentials give the same bytes.
        let mut input = Vec::with_capacity(username.len() + password.len() + 32);
        input.extend_from_slice(b"pullguard-credential\0");
        input.extend_from_slice(&(username.len() as u64).to_le_bytes());
        input.extend_from_slice(username.as_bytes());
        input.extend_from_slice(password.as_bytes());
        let mut id = [0u8; 32];
        id.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input).as_ref());
        Self(std::sync::Arc::new(Secret { username, password, id, expiry: std::sync::OnceLock::new() }))
    }

    pub fn username(&self) -> &str {
        &self.0.username
    }

    pub fn password(&self) -> &str {
        &self.0.password
    }

    /// A stable, non-reversible identifier of the username and password (SHA-256), for cache keys, so one
    /// credential's results never answer for another's.
    pub fn id(&self) -> &[u8; 32] {
        &self.0.id
    }

    /// The first 12 bytes of [`id`](Self::id) in hex.
    pub fn fingerprint(&self) -> String {
        let mut hex = String::with_capacity(24);
        for b in &self.0.id[..12] {
            hex.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            hex.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
        }
        hex
    }

    /// When the credential stops working, if it says: read from the token once, on first ask.
    pub fn expiry(&self) -> Option<expiry::Expiry> {
        *self.0.expiry.get_or_init(|| expiry::of_token(&self.0.password))
    }
}

/// Where a credential came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A pull secret `namespace/name`.
    Secret { namespace: String, name: String },
    /// Node-wide credentials (a docker config.json on the node).
    Node,
    /// A kubelet credential provider plugin, by its configured name.
    Provider { name: String },
}

impl Source {
    pub fn secret_name(&self) -> Option<String> {
        match self {
            Source::Secret { namespace, name } => Some(format!("{namespace}/{name}")),
            Source::Node | Source::Provider { .. } => None,
        }
    }

    /// The credential provider plugin it came from.
    pub fn provider_name(&self) -> Option<&str> {
        match self {
            Source::Provider { name } => Some(name),
            _ => None,
        }
    }
}

/// One credential the kubelet would try, in order.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub source: Source,
    /// The dockerconfig key that matched, as the secret writes it (matching used its normalized form).
    pub key: String,
    pub credential: Credential,
}

impl Candidate {
    /// What may be said about this candidate: where it came from and the key that matched, never the secret.
    pub fn info(&self) -> CandidateInfo {
        CandidateInfo { source: self.source.clone(), key: self.key.clone(), expires: self.credential.expiry() }
    }
}

/// A candidate without its credential. Policy, messages and reports only ever get this, so no verdict text can
/// carry a password, whatever its code does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandidateInfo {
    pub source: Source,
    pub key: String,
    /// When the credential stops working, if it says (an ECR token, a JWT).
    pub expires: Option<expiry::Expiry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_differ_per_credential() {
        let a = Credential::new("u", "a");
        let b = Credential::new("u", "b");
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_eq!(a.fingerprint().len(), 24);
        assert!(a.fingerprint().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let split = |u: &str, p: &str| Credential::new(u, p).fingerprint();
        assert_ne!(split("a\0b", "c"), split("a", "b\0c"));
    }
}
