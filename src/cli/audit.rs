//! `pullguard audit`: the engine over what a live cluster runs. Admission sees a pod once; a tag deleted
//! upstream, a pull secret replaced or a node pool moved to arm64 fails the *next* pull. This lists every
//! workload (and every Pod no controller owns), with the cluster's pull secrets, ServiceAccounts and Nodes, and
//! reports them exactly as `check` reports files.

use std::collections::{BTreeSet, HashMap};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Secret, ServiceAccount};
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::{EngineArgs, build_engine, kube_client, load_config};
use crate::cluster::live::{LiveCluster, node_shape, not_a_pull_secret};
use crate::cluster::{ClusterState, Snapshot};
use crate::contract::ContainerResult;
use crate::credentials::{DOCKER_CFG, DOCKER_CONFIG_JSON};
use crate::engine::Engine;
use crate::input::InputError;
use crate::metrics::{Metrics, ReasonLabels, WorkloadLabels};
use crate::policy::{Reason, Verdict};
use crate::registry::Registry;
use crate::report::{Format, Report};
use crate::scheduling::{Inventory, NodeTable};
use crate::workload::Workload;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub output: Format,
    /// kubeconfig to use instead of the in-cluster configuration or KUBECONFIG.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Audit only these namespaces (repeatable); all namespaces by default.
    #[arg(long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
}

/// The kinds audited, in report order: (group, version, kind, plural).
const KINDS: &[(&str, &str, &str, &str)] = &[
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("batch", "v1", "CronJob", "cronjobs"),
    ("batch", "v1", "Job", "jobs"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("", "v1", "ReplicationController", "replicationcontrollers"),
    ("", "v1", "Pod", "pods"),
];

/// Objects made by a controller from a template that is audited with the controller's own object: a
/// Deployment's ReplicaSets and their Pods are reported once, at the Deployment.
fn audited_elsewhere(w: &Workload) -> bool {
    w.controller.as_deref().is_some_and(|owner| KINDS.iter().any(|(_, _, kind, _)| *kind == owner))
}

pub async fn run(args: AuditArgs) -> anyhow::Result<u8> {
    let AuditArgs { engine, output, kubeconfig, namespaces } = args;
    // --platform is a what-if: judge against those platforms instead of the cluster's Nodes.
    let what_if = !engine.platforms.is_empty();
    let cfg = load_config(&engine)?;
    let engine = build_engine(&cfg, false)?;
    let client = kube_client(kubeconfig.as_deref()).await?;
    let scopes: Vec<Option<&str>> =
        if namespaces.is_empty() { vec![None] } else { namespaces.iter().map(|n| Some(n.as_str())).collect() };

    let mut errors = Vec::new();
    let mut snapshot = Snapshot::default();
    for scope in &scopes {
        for (what, list) in [
            ("pull Secrets", list_secrets(&client, *scope).await),
            ("ServiceAccounts", list_service_accounts(&client, *scope).await),
        ] {
            match list {
                Ok(objects) => {
                    for o in objects {
                        if let Err(e) = snapshot.add_object(&o, "") {
                            errors.push(cluster_error(&format!("{}/{}", e.namespace, e.name), e.to_string()));
                        }
                    }
                }
                Err(e) => errors.push(cluster_error(what, format!("cannot list: {e}"))),
            }
        }
    }
    let inventory = if what_if {
        None
    } else {
        match Api::<Node>::all(client.clone()).list(&ListParams::default()).await {
            Ok(nodes) => nodes_inventory(&nodes.items),
            Err(e) => {
                errors.push(cluster_error("Nodes", format!("cannot list: {e}")));
                None
            }
        }
    };

    let (workloads, listed) = list_workloads(&client, &scopes).await;
    errors.extend(listed);

    let progress = std::io::stderr().is_terminal();
    let total = workloads.len();
    let mut done = 0;
    let mut checked = futures_util::stream::iter(&workloads)
        .map(|w| engine.check_workload(w, &snapshot, inventory.as_ref()))
        .buffered(64);
    let mut results = Vec::new();
    while let Some(r) = checked.next().await {
        results.extend(r);
        done += 1;
        if progress {
            eprint!("\r{done}/{total} objects");
        }
    }
    if progress && total > 0 {
        eprintln!();
    }
    super::check::print_report(&Report::new(total, results, errors), output)
}

/// Every audited object in scope, minus those reported at their owner; what could not be listed or read is
/// an error naming it.
pub async fn list_workloads(client: &Client, scopes: &[Option<&str>]) -> (Vec<Workload>, Vec<InputError>) {
    let mut errors = Vec::new();
    let mut workloads = Vec::new();
    for &(group, version, kind, plural) in KINDS {
        let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        for scope in scopes {
            let api: Api<DynamicObject> = match scope {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            let objects = match list_all(&api).await {
                Ok(o) => o,
                Err(e) => {
                    errors.push(cluster_error(&resource.plural, format!("cannot list: {e}")));
                    continue;
                }
            };
            for o in objects {
                let Ok(mut value) = serde_json::to_value(&o) else { continue };
                // List items carry no apiVersion or kind.
                value["apiVersion"] = json!(resource.api_version);
                value["kind"] = json!(kind);
                match Workload::from_object(&value, "default") {
                    Ok(Some(w)) if !audited_elsewhere(&w) => workloads.push(w),
                    Ok(_) => {}
                    Err(e) => {
                        let name = o.metadata.name.clone().unwrap_or_default();
                        let ns = o.metadata.namespace.clone().unwrap_or_default();
                        errors.push(cluster_error(&format!("{ns}/{kind}/{name}"), e.to_string()));
                    }
                }
            }
        }
    }
    (workloads, errors)
}

/// What could not be read from the cluster, named by what it is (`deployments`, `ns/Deployment/name`).
fn cluster_error(what: &str, message: String) -> InputError {
    InputError { file: format!("cluster: {what}"), document: None, message, not_an_object: false }
}

/// Every page of a list.
async fn list_all(api: &Api<DynamicObject>) -> kube::Result<Vec<DynamicObject>> {
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
}

async fn list_service_accounts(client: &Client, scope: Option<&str>) -> kube::Result<Vec<Value>> {
    let api: Api<ServiceAccount> = match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = api.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .map(|mut v| {
            v["kind"] = json!("ServiceAccount");
            v
        })
        .collect())
}

/// The pull secrets (the two types the kubelet reads), selected by type as `serve` watches them: the API
/// server sends no other Secret's data.
async fn list_secrets(client: &Client, scope: Option<&str>) -> kube::Result<Vec<Value>> {
    let api: Api<Secret> = match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for type_ in [DOCKER_CONFIG_JSON, DOCKER_CFG] {
        let list = api.list(&ListParams::default().fields(&format!("type={type_}"))).await?;
        for s in &list.items {
            seen.insert((s.metadata.namespace.clone(), s.metadata.name.clone()));
            let mut v = serde_json::to_value(s).unwrap_or_default();
            v["kind"] = json!("Secret");
            out.push(v);
        }
    }
    // The others by name only: a pod naming one must hear "not a pull secret", not "does not exist".
    for m in api.list_metadata(&ListParams::default()).await?.items {
        if !seen.contains(&(m.metadata.namespace.clone(), m.metadata.name.clone())) {
            out.push(
                json!({"kind": "Secret", "metadata": {"name": m.metadata.name, "namespace": m.metadata.namespace},
                "type": not_a_pull_secret().type_()}),
            );
        }
    }
    Ok(out)
}

/// The shapes of the cluster's Nodes; `None` when it has none (then the configured platforms).
fn nodes_inventory(nodes: &[Node]) -> Option<Inventory> {
    let mut table = NodeTable::default();
    for n in nodes {
        table.apply(n.metadata.name.as_deref().unwrap_or_default(), node_shape(n));
    }
    (!nodes.is_empty()).then(|| table.inventory())
}

/// `serve --audit-interval`: re-checks every running workload once per interval, spread evenly over it (one
/// workload at a time, so at most one background check competes with admission), through the engine's cache
/// (one registry request per image and credential per TTL, however many workloads share it). Each container's
/// current verdict is a metric; a container that turns from allow to warn or deny raises one Event on its
/// workload, saying that its next pod will fail to pull.
pub struct Continuous<R> {
    pub engine: Arc<Engine<R>>,
    pub cluster: Arc<LiveCluster>,
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
    pub exempt: BTreeSet<String>,
}

/// A container of a workload: namespace, kind, name, container.
type Key = (String, String, String, String);

impl<R: Registry> Continuous<R> {
    pub async fn run(self) {
        let recorder = Recorder::new(self.client.clone(), Reporter { controller: "pullguard".into(), instance: None });
        let mut last: HashMap<Key, (Verdict, Reason)> = HashMap::new();
        loop {
            let round = tokio::time::Instant::now();
            if self.cluster.ready() {
                last = self.round(round, &recorder, &last).await;
                self.metrics.audit_rounds.inc();
            }
            tokio::time::sleep_until(round + self.interval).await;
        }
    }

    async fn round(
        &self,
        start: tokio::time::Instant,
        recorder: &Recorder,
        last: &HashMap<Key, (Verdict, Reason)>,
    ) -> HashMap<Key, (Verdict, Reason)> {
        let (mut workloads, errors) = list_workloads(&self.client, &[None]).await;
        for e in errors {
            warn!(what = %e.file, error = %e.message, "audit: cannot read");
        }
        let ns = |w: &Workload| w.object.namespace.clone();
        workloads
            .retain(|w| !self.exempt.contains(&ns(w)) && self.cluster.namespace_mode(&ns(w)).as_deref() != Some("off"));
        // Evenly over at most 90% of the interval, so that a round ends before the next begins.
        let gap = self.interval.mul_f64(0.9) / workloads.len().max(1) as u32;
        let mut now: HashMap<Key, (Verdict, Reason)> = HashMap::new();
        for (i, w) in workloads.iter().enumerate() {
            tokio::time::sleep_until(start + gap * i as u32).await;
            let nodes = self.cluster.node_inventory();
            for r in self.engine.check_workload(w, self.cluster.as_ref(), nodes.as_deref()).await {
                let o = &w.object;
                let key = (o.namespace.clone(), o.kind.clone(), o.name.clone(), r.container.clone());
                let was = last.get(&key).copied();
                if was.is_some_and(|(v, reason)| (v, reason) != (r.verdict, r.reason)) {
                    self.metrics.workload_verdicts.remove(&labels(&key, was.unwrap()));
                }
                self.metrics.workload_verdicts.get_or_create(&labels(&key, (r.verdict, r.reason))).set(1);
                if was.is_some_and(|(v, _)| v == Verdict::Allow) && r.verdict >= Verdict::Warn {
                    self.event(recorder, w, &r).await;
                }
                now.insert(key, (r.verdict, r.reason));
            }
        }
        // Gone since the last round: their series go too.
        for (key, was) in last.iter().filter(|(k, _)| !now.contains_key(*k)) {
            self.metrics.workload_verdicts.remove(&labels(key, *was));
        }
        self.metrics.audit_containers.clear();
        for (verdict, reason) in now.values() {
            let l = ReasonLabels { verdict: verdict.as_str(), reason: reason.as_str() };
            self.metrics.audit_containers.get_or_create(&l).inc();
        }
        now
    }

    /// "tag v2.3.1 no longer exists in docker.io/team/app: the next pod will fail to pull".
    async fn event(&self, recorder: &Recorder, w: &Workload, r: &ContainerResult) {
        let o = &w.object;
        let note = format!(
            "{} ({}): {}: {}; pods created from now on would {}",
            r.label(),
            r.image,
            r.reason,
            r.message,
            if r.verdict == Verdict::Deny { "fail to pull" } else { "pull only with this warning" }
        );
        let event = Event {
            type_: EventType::Warning,
            reason: format!("ImagePull{}", r.reason),
            note: Some(note.chars().take(1024).collect()),
            action: "Reverify".into(),
            secondary: None,
        };
        let regarding = ObjectReference {
            api_version: Some(o.api_version.clone()),
            kind: Some(o.kind.clone()),
            name: Some(o.name.clone()),
            namespace: Some(o.namespace.clone()),
            ..ObjectReference::default()
        };
        info!(namespace = %o.namespace, kind = %o.kind, name = %o.name, container = %r.container,
            verdict = %r.verdict, reason = %r.reason, "audit: a running workload's image would no longer pull");
        if let Err(e) = recorder.publish(&event, &regarding).await {
            warn!(error = %e, namespace = %o.namespace, name = %o.name, "audit: cannot create the Event");
        }
    }
}

fn labels(key: &Key, (verdict, reason): (Verdict, Reason)) -> WorkloadLabels {
    let (namespace, kind, name, container) = key.clone();
    WorkloadLabels { namespace, kind, name, container, verdict: verdict.to_string(), reason: reason.to_string() }
}
