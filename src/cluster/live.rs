//! Cluster state from kube-rs watches into in-memory stores, so no API call sits on the request path.
//!
//! Watched: pull secrets (two watches, one per type, by field selector, so no other Secret is ever read),
//! ServiceAccounts, Nodes (their os/arch labels are the live platform inventory) and Namespaces (mode
//! labels). With `read_secrets: false` no Secret is watched at all and pods rely on node credentials.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, ServiceAccount};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tracing::{info, warn};

use crate::cluster::{ClusterState, ClusterView, MODE_LABEL};
use crate::credentials::{DOCKER_CFG, DOCKER_CONFIG_JSON, SecretData};
use crate::platform::Platform;

/// Stores kept current by watches.
pub struct LiveCluster {
    secrets: Vec<Store<Secret>>,
    /// Names (metadata only, never payloads) of every Secret: tells "not a pull secret" from "missing".
    secret_names: Option<Store<PartialObjectMeta<Secret>>>,
    read_secrets: bool,
    service_accounts: Store<ServiceAccount>,
    nodes: Store<Node>,
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
        let this = Arc::new(Self {
            secrets,
            secret_names,
            read_secrets,
            service_accounts: watch(Api::all(client.clone()), watcher::Config::default(), "serviceaccounts"),
            nodes: watch(Api::all(client.clone()), watcher::Config::default(), "nodes"),
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
            let _ = waiting.nodes.wait_until_ready().await;
            let _ = waiting.namespaces.wait_until_ready().await;
            waiting.ready.store(true, Ordering::SeqCst);
            info!(read_secrets = waiting.read_secrets, "cluster state synced");
        });
        this
    }
}

impl ClusterView for LiveCluster {
    fn secret(&self, namespace: &str, name: &str) -> Option<SecretData> {
        let key = ObjectRef::new(name).within(namespace);
        if let Some(s) = self.secrets.iter().find_map(|s| s.get(&key)) {
            return Some(SecretData {
                type_: s.type_.clone().unwrap_or_default(),
                data: s.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect(),
                unreadable: None,
            });
        }
        // It exists but is not a pull secret: its type is all we may say, and we did not read it.
        let names = self.secret_names.as_ref()?;
        names.get(&ObjectRef::new(name).within(namespace)).map(|_| SecretData {
            type_: "neither kubernetes.io/dockerconfigjson nor kubernetes.io/dockercfg".into(),
            data: Default::default(),
            unreadable: None,
        })
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

    fn secrets_visible(&self) -> bool {
        self.read_secrets
    }
}

impl ClusterState for LiveCluster {
    fn node_platforms(&self) -> Option<Vec<Platform>> {
        let mut set = BTreeSet::new();
        for n in self.nodes.state() {
            let labels = n.metadata.labels.as_ref();
            let get = |k: &str| labels.and_then(|l| l.get(k)).cloned();
            if let (Some(os), Some(arch)) = (get("kubernetes.io/os"), get("kubernetes.io/arch")) {
                set.insert(Platform::new(&os, &arch, None));
            }
        }
        (!set.is_empty()).then(|| set.into_iter().collect())
    }

    fn namespace_mode(&self, namespace: &str) -> Option<String> {
        let ns = self.namespaces.get(&ObjectRef::new(namespace))?;
        ns.metadata.labels.as_ref()?.get(MODE_LABEL).cloned()
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}
