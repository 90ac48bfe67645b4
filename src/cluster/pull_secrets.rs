//! Where a pod's pull secrets come from, as the ServiceAccount admission plugin and the kubelet decide it: the
//! pod's `imagePullSecrets`, or its ServiceAccount's when it lists none. One place for that rule.

use std::collections::HashSet;

use super::ClusterView;
use crate::credentials::{Keyring, Source, Unusable};
use crate::workload::PodSpec;

/// A problem with one referenced pull secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretProblem {
    NotFound {
        name: String,
    },
    InOtherNamespace {
        name: String,
        namespaces: Vec<String>,
    },
    /// The kubelet skips it; pulls go on without it.
    Invalid {
        name: String,
        detail: String,
    },
    /// The kubelet fails every pull of the pod while the pod lists it.
    Malformed {
        name: String,
        detail: String,
    },
}

impl SecretProblem {
    /// True when the kubelet would fail every image of the pod because of it.
    pub fn fails_every_pull(&self) -> bool {
        matches!(self, SecretProblem::Malformed { .. })
    }
}

/// The pod's own keyring and what was wrong with the secrets it names.
#[derive(Clone, Debug, Default)]
pub struct PodCredentials {
    pub keyring: Keyring,
    pub problems: Vec<SecretProblem>,
    /// The ServiceAccount whose pull secrets apply: `Some` exactly when the pod lists no `imagePullSecrets`
    /// (whether or not that ServiceAccount is known or names any).
    pub service_account: Option<String>,
}

/// A valid Secret name: a DNS subdomain. Anything else (a `/` above all) can never name a secret of this
/// namespace, and must never be read as `other-namespace/name`.
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Gathers the pull secrets the kubelet would use for this pod, as the ServiceAccount admission plugin and
/// the kubelet do: the pod's `imagePullSecrets`, or its ServiceAccount's when it lists none.
pub fn pod_credentials(spec: &PodSpec, namespace: &str, view: &dyn ClusterView) -> PodCredentials {
    let mut out = PodCredentials::default();
    let mut names: Vec<String> = spec.image_pull_secrets.iter().map(|s| s.name.clone()).collect();
    if names.is_empty() {
        let sa = spec.service_account();
        out.service_account = Some(sa.to_string());
        names = view.service_account_pull_secrets(namespace, sa).unwrap_or_default();
    }
    let mut seen = HashSet::new();
    let visible = view.secrets_visible();
    for name in names {
        if !seen.insert(name.clone()) {
            continue;
        }
        if !valid_secret_name(&name) {
            out.problems.push(SecretProblem::Invalid {
                name: name.clone(),
                detail: "it is not a valid Secret name (lowercase DNS subdomain; a pull secret is always \
                         read from the pod's own namespace, so it cannot contain '/')"
                    .into(),
            });
            continue;
        }
        if !visible {
            continue;
        }
        match view.secret(namespace, &name) {
            Some(secret) => match secret.docker_config() {
                Ok(cfg) => out.keyring.add(&Source::Secret { namespace: namespace.into(), name }, cfg),
                Err(Unusable::Skipped(detail)) => {
                    out.problems.push(SecretProblem::Invalid { name, detail: detail.clone() })
                }
                Err(Unusable::Malformed(detail)) => {
                    out.problems.push(SecretProblem::Malformed { name, detail: detail.clone() })
                }
            },
            None => {
                let elsewhere = view.secret_elsewhere(namespace, &name);
                out.problems.push(if elsewhere.is_empty() {
                    SecretProblem::NotFound { name }
                } else {
                    SecretProblem::InOtherNamespace { name, namespaces: elsewhere }
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_with_slash_are_invalid() {
        for bad in ["other/regcred", "", "UPPER", "a..b", "-a"] {
            assert!(!valid_secret_name(bad), "{bad}");
        }
        assert!(valid_secret_name("regcred.v2-x"));
    }
}
