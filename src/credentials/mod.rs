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
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

impl Credential {
    /// A stable, non-reversible identifier used in cache keys, so one credential's results never answer for
    /// another's.
    pub fn fingerprint(&self) -> String {
        // The username's length first: a NUL may sit in either part, so a separator alone would let two
        // credentials give the same bytes.
        let mut input = Vec::with_capacity(self.username.len() + self.password.len() + 32);
        input.extend_from_slice(b"pullguard-credential\0");
        input.extend_from_slice(&(self.username.len() as u64).to_le_bytes());
        input.extend_from_slice(self.username.as_bytes());
        input.extend_from_slice(self.password.as_bytes());
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
        let mut hex = String::with_capacity(24);
        for b in &digest.as_ref()[..12] {
            hex.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            hex.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
        }
        hex
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
        CandidateInfo { source: self.source.clone(), key: self.key.clone(), expires: expiry::expiry(&self.credential) }
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
        let a = Credential { username: "u".into(), password: "a".into() };
        let b = Credential { username: "u".into(), password: "b".into() };
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_eq!(a.fingerprint().len(), 24);
        assert!(a.fingerprint().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let split = |u: &str, p: &str| Credential { username: u.into(), password: p.into() }.fingerprint();
        assert_ne!(split("a\0b", "c"), split("a", "b\0c"));
    }
}
