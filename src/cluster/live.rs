//! Cluster state from kube-rs watches into in-memory stores, so no API call sits on the request path.
//!
//! Watched: pull secrets (two watches, one per type, by field selector, so no other Secret is ever read),
//! ServiceAccounts, Nodes (their os/arch labels are the live platform inventory) and Namespaces (mode
//! labels). With `read_secrets: false` no Secret is watched at all and pods rely on node credentials.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, ServiceAccount};
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tracing::{info, warn};

use crate::cluster::{ClusterState, ClusterView, Confirm, ConfirmError, Confirmed, MODE_LABEL, valid_secret_name};
use crate::credentials::provider::TokenMinter;
use crate::credentials::{DOCKER_CFG, DOCKER_CONFIG_JSON, SecretData};
use crate::scheduling::{Inventory, NodeShape, NodeTable, Taint};

/// At most this many pull secrets are read live for one review; a pod that lists more is confirmed for these.
const MAX_LIVE_SECRETS: usize = 16;

/// Stores kept current by watches.
pub struct LiveCluster {
    /// For live reads that confirm a store miss.
    client: Client,
    secrets: Vec<Store<Secret>>,
    /// Names (metadata only, never payloads) of every Secret: tells "not a pull secret" from "missing".
    secret_names: Option<Store<PartialObjectMeta<Secret>>>,
    read_secrets: bool,
    readings: SecretReadings,
    service_accounts: Store<ServiceAccount>,
    /// The distinct node shapes, republished by the node watch when they change; reviews only clone the Arc.
    nodes: Arc<RwLock<Arc<Inventory>>>,
    nodes_synced: tokio::sync::watch::Receiver<bool>,
    namespaces: Store<Namespace>,
    ready: Arc<AtomicBool>,
}

fn watch<K>(api: Api<K>, config: watcher::Config, what: &'static str) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tokio::spawn(async move {
        stream
            .for_each(|event| async move {
                if let Err(e) = event {
                    warn!(watch = what, error = %e, "watch error; retrying with backoff");
                }
            })
            .await;
    });
    reader
}

/// A node's shape: its labels, its blocking taints, and `spec.unschedulable`. Everything else of the Node
/// (status, images, managedFields) is dropped as it arrives.
pub(crate) fn node_shape(n: &Node) -> Option<NodeShape> {
    let labels = n.metadata.labels.as_ref()?;
    let spec = n.spec.as_ref();
    let taints = spec
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|t| Taint::blocking(&t.key, t.value.as_deref(), &t.effect))
        .collect();
    NodeShape::of_node(labels, taints, spec.and_then(|s| s.unschedulable).unwrap_or(false))
}

/// Watches Nodes into a [`NodeTable`] and publishes its inventory when the distinct shapes change. The
/// receiver turns true once the first list is complete.
fn watch_nodes(api: Api<Node>, published: Arc<RwLock<Arc<Inventory>>>) -> tokio::sync::watch::Receiver<bool> {
    let (synced, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut table = NodeTable::default();
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
        while let Some(event) = events.next().await {
            let name = |n: &Node| n.metadata.name.clone().unwrap_or_default();
            let changed = match event {
                Ok(watcher::Event::Apply(n)) => table.apply(&name(&n), node_shape(&n)),
                Ok(watcher::Event::Delete(n)) => table.delete(&name(&n)),
                Ok(watcher::Event::Init) => {
                    table.relist_start();
                    false
                }
                Ok(watcher::Event::InitApply(n)) => {
                    table.relist_node(&name(&n), node_shape(&n));
                    false
                }
                Ok(watcher::Event::InitDone) => {
                    let changed = table.relist_done();
                    synced.send_replace(true);
                    changed
                }
                Err(e) => {
                    warn!(watch = "nodes", error = %e, "watch error; retrying with backoff");
                    false
                }
            };
            if changed {
                let inventory = Arc::new(table.inventory());
                info!(shapes = inventory.shapes.len(), "node inventory changed");
                *published.write().unwrap_or_else(std::sync::PoisonError::into_inner) = inventory;
            }
        }
    });
    rx
}

impl LiveCluster {
    /// Starts the watches; `ready()` turns true once every store has its initial list.
    pub fn start(client: Client, read_secrets: bool) -> Arc<Self> {
        let secrets = if read_secrets {
            [DOCKER_CONFIG_JSON, DOCKER_CFG]
                .into_iter()
                .map(|t| {
                    watch(
                        Api::<Secret>::all(client.clone()),
                        watcher::Config::default().fields(&format!("type={t}")),
                        "secrets",
                    )
                })
                .collect()
        } else {
            vec![]
        };
        // `Api<PartialObjectMeta<_>>` makes metadata-only requests: no Secret payload is ever transferred.
        let secret_names = read_secrets.then(|| {
            watch(Api::<PartialObjectMeta<Secret>>::all(client.clone()), watcher::Config::default(), "secret names")
        });
        let nodes = Arc::new(RwLock::new(Arc::new(Inventory::default())));
        let nodes_synced = watch_nodes(Api::all(client.clone()), nodes.clone());
        let this = Arc::new(Self {
            client: client.clone(),
            secrets,
            secret_names,
            read_secrets,
            readings: SecretReadings::default(),
            service_accounts: watch(Api::all(client.clone()), watcher::Config::default(), "serviceaccounts"),
            nodes: nodes.clone(),
            nodes_synced,
            namespaces: watch(Api::all(client), watcher::Config::default(), "namespaces"),
            ready: Arc::new(AtomicBool::new(false)),
        });
        let waiting = this.clone();
        tokio::spawn(async move {
            for s in &waiting.secrets {
                let _ = s.wait_until_ready().await;
            }
            if let Some(names) = &waiting.secret_names {
                let _ = names.wait_until_ready().await;
            }
            let _ = waiting.service_accounts.wait_until_ready().await;
            let _ = waiting.nodes_synced.clone().wait_for(|synced| *synced).await;
            let _ = waiting.namespaces.wait_until_ready().await;
            waiting.ready.store(true, Ordering::SeqCst);
            info!(read_secrets = waiting.read_secrets, "cluster state synced");
        });
        this
    }
}

fn secret_data(s: &Secret) -> Arc<SecretData> {
    let type_ = s.type_.clone().unwrap_or_default();
    Arc::new(SecretData::new(type_, s.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect(), None))
}

/// A Secret that exists but is not a pull secret: its type is all we may say, and we did not read it.
pub(crate) fn not_a_pull_secret() -> Arc<SecretData> {
    let type_ = "neither kubernetes.io/dockerconfigjson nor kubernetes.io/dockercfg".into();
    Arc::new(SecretData::new(type_, Default::default(), None))
}

/// Pull secrets as read for reviews, by namespace and name, each with the stored object it was read from: a
/// review reuses the reading (and its parsed dockerconfig) while the store still holds that very object.
/// A watch event replaces the object, so a changed secret is read again. Bounded: emptied when full.
#[derive(Default)]
struct SecretReadings(std::sync::Mutex<std::collections::HashMap<(String, String), Reading>>);

struct Reading {
    /// The store's object, held weakly: its address stays unique while this lives, and its payload is freed
    /// with the store's copy.
    from: std::sync::Weak<Secret>,
    read: Arc<SecretData>,
}

/// More distinct pull secrets than this in use at once only costs a re-read after the table is emptied.
const MAX_SECRET_READINGS: usize = 4096;

impl SecretReadings {
    fn get(&self, namespace: &str, name: &str, stored: &Arc<Secret>) -> Arc<SecretData> {
        let mut readings = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (namespace.to_string(), name.to_string());
        if let Some(r) = readings.get(&key)
            && std::ptr::eq(r.from.as_ptr(), Arc::as_ptr(stored))
        {
            return r.read.clone();
        }
        if readings.len() >= MAX_SECRET_READINGS {
            readings.clear();
        }
        let read = secret_data(stored);
        readings.insert(key, Reading { from: Arc::downgrade(stored), read: read.clone() });
        read
    }
}

impl LiveCluster {
    /// A `list` selected by name: within the existing list-only RBAC, and a consistent read (no
    /// resourceVersion), so it sees what was created an instant ago.
    fn by_name(name: &str, extra: &str) -> ListParams {
        ListParams::default().fields(&format!("metadata.name={name}{extra}"))
    }

    fn error(what: String) -> impl FnOnce(kube::Error) -> ConfirmError {
        move |e| ConfirmError { what, detail: e.to_string() }
    }

    async fn read_secret(&self, namespace: &str, name: &str) -> Result<Option<Arc<SecretData>>, ConfirmError> {
        let api = Api::<Secret>::namespaced(self.client.clone(), namespace);
        let what = || format!("Secret {namespace}/{name}");
        // Typed reads first, so no other Secret's payload is ever transferred; then its name only.
        let typed = [DOCKER_CONFIG_JSON, DOCKER_CFG].map(|t| {
            let params = Self::by_name(name, &format!(",type={t}"));
            let api = api.clone();
            async move { api.list(&params).await }
        });
        for list in futures_util::future::join_all(typed).await {
            if let Some(s) = list.map_err(Self::error(what()))?.items.first() {
                return Ok(Some(secret_data(s)));
            }
        }
        let names = api.list_metadata(&Self::by_name(name, "")).await.map_err(Self::error(what()))?;
        Ok((!names.items.is_empty()).then(not_a_pull_secret))
    }

    async fn read_service_account(&self, namespace: &str, name: &str) -> Result<Option<Vec<String>>, ConfirmError> {
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace);
        let list = api
            .list(&Self::by_name(name, ""))
            .await
            .map_err(Self::error(format!("ServiceAccount {namespace}/{name}")))?;
        Ok(list.items.first().map(|sa| sa.image_pull_secrets.iter().flatten().map(|r| r.name.clone()).collect()))
    }

    async fn read_namespace_mode(&self, namespace: &str) -> Result<Option<String>, ConfirmError> {
        let api = Api::<Namespace>::all(self.client.clone());
        let list =
            api.list(&Self::by_name(namespace, "")).await.map_err(Self::error(format!("Namespace {namespace}")))?;
        Ok(list.items.first().and_then(|ns| ns.metadata.labels.as_ref()?.get(MODE_LABEL).cloned()))
    }

    async fn confirm_all(&self, ask: &Confirm) -> Result<Confirmed, ConfirmError> {
        let ns = ask.namespace.as_str();
        let mode = async { if ask.read_namespace { self.read_namespace_mode(ns).await.map(Some) } else { Ok(None) } };
        let credentials = async {
            let mut service_account = None;
            let mut names = ask.secrets.clone();
            if let Some(sa) = &ask.service_account {
                let listed = self.read_service_account(ns, sa).await?;
                if names.is_empty() {
                    names = listed.clone().unwrap_or_default();
                }
                service_account = Some((sa.clone(), listed));
            }
            let mut secrets = BTreeMap::new();
            if self.read_secrets {
                names.retain(|n| valid_secret_name(n));
                names.sort();
                names.dedup();
                let reads = names.iter().take(MAX_LIVE_SECRETS).map(|n| self.read_secret(ns, n));
                for (name, read) in names.iter().zip(futures_util::future::join_all(reads).await) {
                    secrets.insert(name.clone(), read?);
                }
            }
            Ok::<_, ConfirmError>((service_account, secrets))
        };
        let (mode, credentials) = futures_util::future::join(mode, credentials).await;
        let (service_account, secrets) = credentials?;
        Ok(Confirmed { namespace_mode: mode?, service_account, secrets })
    }
}

impl ClusterView for LiveCluster {
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<SecretData>> {
        let key = ObjectRef::new(name).within(namespace);
        if let Some(s) = self.secrets.iter().find_map(|s| s.get(&key)) {
            return Some(self.readings.get(namespace, name, &s));
        }
        let names = self.secret_names.as_ref()?;
        names.get(&ObjectRef::new(name).within(namespace)).map(|_| not_a_pull_secret())
    }

    fn secret_elsewhere(&self, namespace: &str, name: &str) -> Vec<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        for s in self.secret_names.iter().flat_map(Store::state) {
            let ns = s.metadata.namespace.as_deref().unwrap_or_default();
            if s.metadata.name.as_deref() == Some(name) && ns != namespace {
                out.insert(ns.to_string());
            }
        }
        out.into_iter().collect()
    }

    fn service_account_pull_secrets(&self, namespace: &str, name: &str) -> Option<Vec<String>> {
        let sa = self.service_accounts.get(&ObjectRef::new(name).within(namespace))?;
        Some(sa.image_pull_secrets.iter().flatten().map(|r| r.name.clone()).collect())
    }

    fn service_account_annotations(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let sa = self.service_accounts.get(&ObjectRef::new(name).within(namespace))?;
        Some(sa.metadata.annotations.clone().unwrap_or_default())
    }

    fn token_minter(&self) -> Option<&dyn TokenMinter> {
        Some(self)
    }

    fn secrets_visible(&self) -> bool {
        self.read_secrets
    }
}

/// Tokens are asked for the provider's audience only, with the shortest lifetime the API server grants
/// (10 minutes), and bound to nothing: there is no pod yet at admission.
const MINTED_TOKEN_SECONDS: i64 = 600;

impl TokenMinter for LiveCluster {
    fn mint<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
            let request = TokenRequest {
                spec: Some(TokenRequestSpec {
                    audiences: Some(vec![audience.to_string()]),
                    expiration_seconds: Some(MINTED_TOKEN_SECONDS),
                    attestations: None,
                    bound_object_ref: None,
                }),
                ..Default::default()
            };
            let answer = api
                .create_token_request(name, &kube::api::PostParams::default(), &request)
                .await
                .map_err(|e| format!("TokenRequest for {namespace}/{name}: {e}"))?;
            answer
                .status
                .and_then(|s| s.token)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| "the TokenRequest returned no token".into())
        })
    }
}

impl ClusterState for LiveCluster {
    fn node_inventory(&self) -> Option<Arc<Inventory>> {
        // A poisoned lock only means a writer panicked mid-swap of an Arc: the value is still whole.
        let current = self.nodes.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        (!current.shapes.is_empty()).then_some(current)
    }

    fn namespace_mode(&self, namespace: &str) -> Option<String> {
        let ns = self.namespaces.get(&ObjectRef::new(namespace))?;
        ns.metadata.labels.as_ref()?.get(MODE_LABEL).cloned()
    }

    fn namespace_seen(&self, namespace: &str) -> bool {
        self.namespaces.get(&ObjectRef::new(namespace)).is_some()
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn confirm<'a>(&'a self, ask: &'a Confirm) -> BoxFuture<'a, Result<Confirmed, ConfirmError>> {
        Box::pin(self.confirm_all(ask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(password: &str) -> Arc<Secret> {
        let config = format!(r#"{{"auths":{{"r.io":{{"username":"u","password":"{password}"}}}}}}"#);
        Arc::new(Secret {
            type_: Some(DOCKER_CONFIG_JSON.into()),
            data: Some([(".dockerconfigjson".into(), k8s_openapi::ByteString(config.into_bytes()))].into()),
            ..Default::default()
        })
    }

    /// A review reuses the reading of the object the store holds, and reads a replaced object anew.
    #[test]
    fn secret_readings_follow_the_stored_object() {
        let readings = SecretReadings::default();
        let password = |r: &SecretData| r.docker_config().as_ref().unwrap().0[0].1.password().to_string();
        let first = stored("one");
        let a = readings.get("ns", "cred", &first);
        assert!(Arc::ptr_eq(&a, &readings.get("ns", "cred", &first)), "the same object is read once");
        assert_eq!(password(&a), "one");
        // A watch event replaces the object, even with the same content: read again.
        let second = stored("two");
        let b = readings.get("ns", "cred", &second);
        assert_eq!(password(&b), "two");
        assert!(Arc::ptr_eq(&b, &readings.get("ns", "cred", &second)));
        assert_eq!(password(&readings.get("ns", "cred", &first)), "one", "each object gets its own reading");
    }
}
