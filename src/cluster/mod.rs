//! Cluster state as the engine sees it. `check` builds a [`Snapshot`] from the Secrets and ServiceAccounts in
//! its input; the webhook keeps one current from watches.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::credentials::SecretData;
use crate::credentials::provider::TokenMinter;
use crate::scheduling::Inventory;

pub mod live;
mod pull_secrets;

pub use pull_secrets::{PodCredentials, SecretProblem, pod_credentials, valid_secret_name};

/// Namespace label that overrides the global mode: `enforce`, `warn` or `off`.
pub const MODE_LABEL: &str = "pullguard.io/mode";

/// What the engine needs to know of the cluster: pull secrets and ServiceAccounts. `check` builds it from the
/// input files; the webhook from its watch caches.
pub trait ClusterView: Send + Sync {
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<SecretData>>;
    /// Namespaces other than `namespace` that hold a secret with this name.
    fn secret_elsewhere(&self, namespace: &str, name: &str) -> Vec<String>;
    /// The pull-secret names of a ServiceAccount, if it is known.
    fn service_account_pull_secrets(&self, namespace: &str, name: &str) -> Option<Vec<String>>;
    /// A ServiceAccount's annotations (credential providers in service-account-token mode read them);
    /// `None` when the ServiceAccount is not known.
    fn service_account_annotations(&self, _namespace: &str, _name: &str) -> Option<BTreeMap<String, String>> {
        None
    }
    /// Mints ServiceAccount tokens for service-account-token credential providers; `None` where that is not
    /// possible (files, no API server).
    fn token_minter(&self) -> Option<&dyn TokenMinter> {
        None
    }
    /// False when secrets are deliberately not read (node credentials only): a named secret is then unknown,
    /// not missing.
    fn secrets_visible(&self) -> bool {
        true
    }
}

/// What the webhook knows of the cluster beyond secrets: the node inventory and namespace labels.
pub trait ClusterState: ClusterView {
    /// The distinct shapes of the cluster's nodes, kept current by the watch; `None` when no node names a
    /// platform (then the configured platforms apply).
    fn node_inventory(&self) -> Option<Arc<Inventory>>;
    /// The value of the namespace's `pullguard.io/mode` label.
    fn namespace_mode(&self, namespace: &str) -> Option<String>;
    /// False when the namespace is not (yet) in the store, so its mode label is unknown, not absent.
    fn namespace_seen(&self, _namespace: &str) -> bool {
        true
    }
    /// True once every watch has synced.
    fn ready(&self) -> bool;
    /// Reads what `ask` names from the API server itself, bypassing the watch stores, which may lag behind an
    /// object created milliseconds before the workload that needs it. A view that is the truth already (a
    /// snapshot of `check`'s input) answers that nothing is new.
    fn confirm<'a>(&'a self, _ask: &'a Confirm) -> BoxFuture<'a, Result<Confirmed, ConfirmError>> {
        Box::pin(async { Ok(Confirmed::default()) })
    }
}

/// What a review needs confirmed: the objects its verdict rests on.
#[derive(Clone, Debug, Default)]
pub struct Confirm {
    pub namespace: String,
    /// Read the namespace (its mode label).
    pub read_namespace: bool,
    /// Read this ServiceAccount; its pull secrets are then read too, unless `secrets` names the pod's own.
    pub service_account: Option<String>,
    /// The pod's own `imagePullSecrets`.
    pub secrets: Vec<String>,
}

/// What a live read found. Absent entries were not read; the store's answer stands for them.
#[derive(Clone, Debug, Default)]
pub struct Confirmed {
    /// The namespace's mode label, when the namespace was read (`Some(None)`: read, no label).
    pub namespace_mode: Option<Option<String>>,
    /// The ServiceAccount read and its pull-secret names (`None`: it does not exist).
    pub service_account: Option<(String, Option<Vec<String>>)>,
    /// Each secret read: `None` when it does not exist.
    pub secrets: BTreeMap<String, Option<Arc<SecretData>>>,
}

impl Confirmed {
    /// True when the live read found something the store did not say.
    pub fn differs_from(&self, store: &dyn ClusterState, ask: &Confirm) -> bool {
        let ns = &ask.namespace;
        self.namespace_mode.as_ref().is_some_and(|m| *m != store.namespace_mode(ns))
            || self
                .service_account
                .as_ref()
                .is_some_and(|(name, live)| *live != store.service_account_pull_secrets(ns, name))
            || self.secrets.iter().any(|(name, live)| {
                let stored = store.secret(ns, name);
                match (live, &stored) {
                    (Some(live), Some(stored)) => !live.same_content(stored),
                    (live, stored) => live.is_some() != stored.is_some(),
                }
            })
    }
}

/// Why a live read could not confirm the stores.
#[derive(Debug, thiserror::Error)]
#[error("the API server did not answer a live read of {what}: {detail}")]
pub struct ConfirmError {
    pub what: String,
    pub detail: String,
}

/// The stores, overridden by what a live read found.
pub struct ConfirmedView<'a> {
    pub store: &'a dyn ClusterView,
    pub confirmed: &'a Confirmed,
    pub namespace: &'a str,
}

impl ClusterView for ConfirmedView<'_> {
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<SecretData>> {
        match self.confirmed.secrets.get(name) {
            Some(live) if namespace == self.namespace => live.clone(),
            _ => self.store.secret(namespace, name),
        }
    }

    fn secret_elsewhere(&self, namespace: &str, name: &str) -> Vec<String> {
        self.store.secret_elsewhere(namespace, name)
    }

    fn service_account_pull_secrets(&self, namespace: &str, name: &str) -> Option<Vec<String>> {
        match &self.confirmed.service_account {
            Some((read, live)) if namespace == self.namespace && read == name => live.clone(),
            _ => self.store.service_account_pull_secrets(namespace, name),
        }
    }

    /// From the store: a ServiceAccount the live read found but the store lacks is taken as unknown here.
    fn service_account_annotations(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.store.service_account_annotations(namespace, name)
    }

    fn token_minter(&self) -> Option<&dyn TokenMinter> {
        self.store.token_minter()
    }

    fn secrets_visible(&self) -> bool {
        self.store.secrets_visible()
    }
}

/// An in-memory view of pull secrets and ServiceAccounts.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    secrets: BTreeMap<(String, String), Arc<SecretData>>,
    service_accounts: BTreeMap<(String, String), Vec<String>>,
    service_account_annotations: BTreeMap<(String, String), BTreeMap<String, String>>,
    namespace_modes: BTreeMap<String, String>,
}

/// Why a Secret or ServiceAccount object could not be taken in.
#[derive(Debug, thiserror::Error)]
#[error("{kind} {namespace}/{name}: {message}")]
pub struct ObjectError {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub message: String,
}

impl Snapshot {
    /// Takes in a Secret or ServiceAccount object; other kinds are ignored. Returns `Ok(true)` when taken.
    pub fn add_object(&mut self, obj: &Value, default_namespace: &str) -> Result<bool, ObjectError> {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind != "Secret" && kind != "ServiceAccount" {
            return Ok(false);
        }
        let meta = obj.get("metadata");
        let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str).unwrap_or_default().to_string();
        let name = field("name");
        let namespace = Some(field("namespace")).filter(|n| !n.is_empty()).unwrap_or_else(|| default_namespace.into());
        let err = |message: String| ObjectError {
            kind: kind.into(),
            namespace: namespace.clone(),
            name: name.clone(),
            message,
        };
        if name.is_empty() {
            return Err(err("metadata.name is missing".into()));
        }
        if kind == "ServiceAccount" {
            let names = obj
                .get("imagePullSecrets")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|s| s.get("name").and_then(Value::as_str)).map(str::to_string).collect())
                .unwrap_or_default();
            let annotations = meta
                .and_then(|m| m.get("annotations"))
                .and_then(Value::as_object)
                .map(|a| a.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
                .unwrap_or_default();
            self.service_account_annotations.insert((namespace.clone(), name.clone()), annotations);
            self.service_accounts.insert((namespace, name), names);
            return Ok(true);
        }
        let type_ = obj.get("type").and_then(Value::as_str).unwrap_or("Opaque").to_string();
        let mut data = BTreeMap::new();
        let mut unreadable = None;
        if let Some(map) = obj.get("data").and_then(Value::as_object) {
            for (k, v) in map {
                let decoded = match v.as_str() {
                    None => Err(format!("data.{k} is not a string")),
                    Some(s) => B64.decode(s.trim()).map_err(|_| format!("data.{k} is not valid base64")),
                };
                match decoded {
                    Ok(bytes) => _ = data.insert(k.clone(), bytes),
                    Err(why) => _ = unreadable.get_or_insert(why),
                }
            }
        }
        if let Some(map) = obj.get("stringData").and_then(Value::as_object) {
            for (k, v) in map {
                match v.as_str() {
                    Some(s) => _ = data.insert(k.clone(), s.as_bytes().to_vec()),
                    None => _ = unreadable.get_or_insert(format!("stringData.{k} is not a string")),
                }
            }
        }
        // Kept even when unreadable: a pod naming it must hear "cannot be used", not "does not exist".
        let result = match &unreadable {
            Some(why) => Err(err(why.clone())),
            None => Ok(true),
        };
        self.secrets.insert((namespace, name), Arc::new(SecretData::new(type_, data, unreadable)));
        result
    }

    pub fn set_namespace_mode(&mut self, namespace: &str, mode: &str) {
        self.namespace_modes.insert(namespace.into(), mode.into());
    }
}

impl ClusterView for Snapshot {
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<SecretData>> {
        self.secrets.get(&(namespace.to_string(), name.to_string())).cloned()
    }

    fn secret_elsewhere(&self, namespace: &str, name: &str) -> Vec<String> {
        self.secrets.keys().filter(|(ns, n)| n == name && ns != namespace).map(|(ns, _)| ns.clone()).collect()
    }

    fn service_account_pull_secrets(&self, namespace: &str, name: &str) -> Option<Vec<String>> {
        self.service_accounts.get(&(namespace.to_string(), name.to_string())).cloned()
    }

    fn service_account_annotations(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.service_account_annotations.get(&(namespace.to_string(), name.to_string())).cloned()
    }
}

impl ClusterState for Snapshot {
    /// A snapshot has no node inventory: the configured platforms apply.
    fn node_inventory(&self) -> Option<Arc<Inventory>> {
        None
    }

    fn namespace_mode(&self, namespace: &str) -> Option<String> {
        self.namespace_modes.get(namespace).cloned()
    }

    fn ready(&self) -> bool {
        true
    }
}
