//! The engine shared by `check` and `serve`: workload → containers → references → credential candidates →
//! cached lookups → policy decisions.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::CachedRegistry;
use crate::cluster::{ClusterView, SecretProblem, pod_credentials};
use crate::contract::{ContainerResult, CredentialRef};
use crate::credentials::provider::{PodIdentity, ProviderOutcome, Providers};
use crate::credentials::{Candidate, Keyring, Source};
use crate::platform::Platform;
use crate::policy::{self, Decision, Evaluation, LookupOutcome, Mode, PolicySettings};
use crate::reference::Reference;
use crate::registry::mirrors::Mirrors;
use crate::registry::{Failure, Registry, TimeLimit};
use crate::scheduling::{Inventory, Landing};
use crate::workload::{ContainerType, ObjectRef, Workload};

/// The engine's fixed settings.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub policy: PolicySettings,
    /// Node platforms of the cluster (default `linux/amd64`).
    pub platforms: Vec<Platform>,
    /// Budget for all lookups of one container.
    pub deadline: Duration,
    /// The kubelet's credential provider plugins.
    pub providers: Providers,
    /// `nodeAuthenticated` patterns.
    pub node_authenticated: Vec<String>,
    /// Mirrors as the nodes' containerd resolves them.
    pub mirrors: Mirrors,
}

/// The engine. `registry` is `None` offline.
pub struct Engine<R> {
    registry: Option<Arc<CachedRegistry<R>>>,
    node_keyring: Keyring,
    settings: EngineSettings,
    /// The configured platforms as an inventory, for when no live one is given.
    configured: Inventory,
}

impl<R: Registry> Engine<R> {
    pub fn new(registry: Option<Arc<CachedRegistry<R>>>, node_keyring: Keyring, settings: EngineSettings) -> Self {
        let configured = Inventory::configured(&settings.platforms);
        Self { registry, node_keyring, settings, configured }
    }

    /// Cache and registry counters, for metrics (empty offline).
    pub fn stats(&self) -> (Arc<crate::cache::CacheStats>, Arc<crate::registry::RegistryStats>) {
        match &self.registry {
            Some(r) => (r.stats(), r.inner().stats()),
            None => (Arc::default(), Arc::default()),
        }
    }

    /// Checks every container of a workload. `nodes` overrides the configured platforms (the webhook passes
    /// its live node inventory).
    pub async fn check_workload(
        &self,
        w: &Workload,
        view: &dyn ClusterView,
        nodes: Option<&Inventory>,
    ) -> Vec<ContainerResult> {
        self.check_containers(w, view, nodes, None, &|_, _| true, self.settings.policy.mode).await
    }

    /// Checks the containers and image volumes of a workload that `select` picks (by type and name), each lookup bounded by
    /// `deadline` as well as the configured lookup timeout, and judged in `mode` (the webhook's is per
    /// namespace). The mode is applied here, once, by the policy.
    pub async fn check_containers(
        &self,
        w: &Workload,
        view: &dyn ClusterView,
        nodes: Option<&Inventory>,
        deadline: Option<tokio::time::Instant>,
        select: &(dyn Fn(ContainerType, &str) -> bool + Sync),
        mode: Mode,
    ) -> Vec<ContainerResult> {
        let policy = PolicySettings { mode, ..self.settings.policy };
        let unix_now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let ns = &w.object.namespace;
        let creds = pod_credentials(&w.spec, ns, view);
        let landing = Landing::of_workload(w, nodes.unwrap_or(&self.configured));
        let sa_name = w.spec.service_account();
        let sa_annotations = view.service_account_annotations(ns, sa_name);
        let minter = if self.settings.providers.mint_tokens { view.token_minter() } else { None };
        let identity = PodIdentity { namespace: ns, name: sa_name, annotations: sa_annotations.as_ref(), minter };
        // Collected first so that `join_all` gets an exact length: its futures are large, and collecting them
        // from a filter grew the buffer and then shrank it, copying them each time.
        let selected: Vec<_> = w.containers().into_iter().filter(|c| select(c.kind, c.name)).collect();
        let object = Arc::new(w.object.clone());
        let futures = selected.into_iter().map(|c| {
            let image = c.image.unwrap_or_default().to_string();
            let reference = Reference::parse(&image);
            let repo = reference.as_ref().map(Reference::repository).ok();
            let never = c.pull_policy == Some("Never");
            let mut eval = Evaluation {
                image,
                reference,
                pull_policy_never: never,
                namespace: ns,
                service_account: creds.service_account.as_deref(),
                secret_problems: &creds.problems,
                candidates: vec![],
                lookup: LookupOutcome::NotDone,
                landing: &landing,
                providers: vec![],
                served_by: None,
                host_notes: vec![],
                node_blocked: None,
                now: unix_now,
                pods: w.pods,
                pull_budget: None,
                node_authenticated: repo
                    .as_deref()
                    .is_some_and(|r| self.settings.node_authenticated.iter().any(|p| Providers::image_matches(p, r))),
            };
            let object = Arc::clone(&object);
            // The kubelet fails such a pod before any pull: nothing to look up.
            let pod_fails = eval.secret_problems.iter().any(SecretProblem::fails_every_pull);
            let looked_up = self.registry.is_some() && !never && !pod_fails;
            let (creds, identity) = (&creds, &identity);
            async move {
                // The kubelet's order: the pod's keyring, then one node keyring of the node's config.json and
                // every provider's answer for this image (`providersDockerKeyring`), sorted together.
                // Borrowed unless a provider answers: no copy of the node keyring per container otherwise.
                let mut node = Cow::Borrowed(&self.node_keyring);
                if let (Some(repo), true) = (&repo, looked_up && !self.settings.providers.is_empty()) {
                    let end = tokio::time::Instant::now() + self.settings.deadline;
                    let end = deadline.map_or(end, |d| d.min(end));
                    for outcome in self.settings.providers.provide(repo, Some(identity), end).await {
                        if let ProviderOutcome::Credentials { provider, config } = &outcome {
                            node.to_mut().add(&Source::Provider { name: provider.clone() }, config);
                        }
                        eval.providers.push(outcome.report());
                    }
                }
                let candidates =
                    repo.as_deref().map_or_else(Vec::new, |r| kubelet_candidates(&creds.keyring, &node, r));
                // What is said about each candidate (its expiry too) is worked out once, from the candidates the
                // verdict rests on: those of the host walk when there is one.
                if let (Ok(r), true) = (&eval.reference, looked_up) {
                    let walk = self.lookup_hosts(r, ns, candidates, &creds.keyring, &node, deadline).await;
                    eval.candidates = walk.candidates.iter().map(Candidate::info).collect();
                    // The budget of the registry itself, for the identity that pulled (not known through mirrors).
                    if let (LookupOutcome::Found { used, .. }, None, Some(registry)) =
                        (&walk.outcome, &walk.served_by, &self.registry)
                    {
                        let credential = used.map(|i| &walk.candidates[i].credential);
                        eval.pull_budget = registry.inner().budget(&r.domain, credential);
                    }
                    eval.lookup = walk.outcome;
                    eval.served_by = walk.served_by;
                    eval.host_notes = walk.notes;
                    eval.node_blocked = walk.blocked;
                } else {
                    eval.candidates = candidates.iter().map(Candidate::info).collect();
                }
                let d = policy::decide(&eval, &policy);
                to_result(object, c.name.to_string(), c.kind, c.field, eval, d)
            }
        });
        futures_util::future::join_all(futures).await
    }

    /// Fetches as containerd does when a hosts.toml covers the registry: each host that may serve the
    /// reference in order (mirrors, then the server), any failure moving on to the next; a mirror gets the
    /// credentials keyed to the mirror's host. The last host's failure is the verdict's when none serves it.
    async fn lookup_hosts(
        &self,
        r: &Reference,
        namespace: &str,
        candidates: Vec<Candidate>,
        pod: &Keyring,
        node: &Keyring,
        deadline: Option<tokio::time::Instant>,
    ) -> HostWalk {
        let Some(hosts) = self.settings.mirrors.hosts(r) else {
            let outcome = self.lookup(r, namespace, &candidates, deadline).await;
            return HostWalk { outcome, candidates, served_by: None, notes: vec![], blocked: None };
        };
        if let Some(prefix) = &hosts.blocked {
            let outcome = LookupOutcome::NotDone;
            return HostWalk { outcome, candidates, served_by: None, notes: vec![], blocked: Some(prefix.clone()) };
        }
        // `None`: the registry itself, as configured, when the file names no server.
        let order: Vec<Option<&crate::registry::mirrors::Host>> =
            hosts.for_reference(r.digest.is_some()).map(Some).chain((!hosts.has_server).then_some(None)).collect();
        let mut notes = Vec::new();
        let mut last = None;
        for host in order {
            let (target, cands, shown) = match host {
                Some(h) => {
                    let target = h.target(r);
                    let c = kubelet_candidates(pod, node, &format!("{}/{}", h.credential_host, target.path));
                    let label = if h.server { "server" } else { "mirror" };
                    (target, c, format!("{label} {}", h.url))
                }
                None => (r.clone(), candidates.clone(), format!("upstream {}", r.domain)),
            };
            let outcome = self.lookup(&target, namespace, &cands, deadline).await;
            match &outcome {
                LookupOutcome::Failed { failure, .. } => {
                    notes.push(format!("{shown}: {failure}"));
                    last = Some((outcome, cands));
                }
                _ => return HostWalk { outcome, candidates: cands, served_by: Some(shown), notes, blocked: None },
            }
        }
        match last {
            Some((outcome, candidates)) => {
                // The last host's failure is the verdict; the notes say what the others answered.
                notes.pop();
                HostWalk { outcome, candidates, served_by: None, notes, blocked: None }
            }
            None => {
                let outcome = self.lookup(r, namespace, &candidates, deadline).await;
                HostWalk { outcome, candidates, served_by: None, notes, blocked: None }
            }
        }
    }

    /// Walks the candidates as the kubelet does (`kuberuntime_image.go` PullImage): with no matching credential,
    /// one anonymous pull; otherwise every matching credential in order, on any failure, and never anonymous
    /// after them. Under the deadline: when time runs out, the credentials refused so far are still reported,
    /// and the lookup under way goes on filling the cache. A new lookup takes a place of `namespace`'s share.
    pub async fn lookup(
        &self,
        r: &Reference,
        namespace: &str,
        candidates: &[Candidate],
        deadline: Option<tokio::time::Instant>,
    ) -> LookupOutcome {
        let Some(registry) = &self.registry else {
            return LookupOutcome::NotDone;
        };
        let now = tokio::time::Instant::now();
        let (budget, limit) = match deadline {
            Some(d) if d.saturating_duration_since(now) < self.settings.deadline => {
                (d.saturating_duration_since(now), TimeLimit::ReviewDeadline)
            }
            _ => (self.settings.deadline, TimeLimit::LookupTimeout),
        };
        let end = now + budget;
        let attempt = |credential| async move {
            let timed_out = Failure::TimedOut { waited: budget, limit };
            tokio::time::timeout_at(end, registry.lookup(r, credential, namespace)).await.unwrap_or(Err(timed_out))
        };
        if candidates.is_empty() {
            return match attempt(None).await {
                Ok(facts) => LookupOutcome::Found { facts, used: None, rejected: vec![] },
                Err(failure) => LookupOutcome::Failed { failure, rejected: vec![] },
            };
        }
        let mut rejected = Vec::new();
        // What ends the walk when no credential works: the first answer about the image itself (a 404 seen
        // with one identity), else the last refusal.
        let mut other: Option<Failure> = None;
        for (i, c) in candidates.iter().enumerate() {
            match attempt(Some(&c.credential)).await {
                Ok(facts) => return LookupOutcome::Found { facts, used: Some(i), rejected },
                Err(f) if f.is_auth() => rejected.push((i, f)),
                // No time is left for the next credential.
                Err(f @ Failure::TimedOut { .. }) => return LookupOutcome::Failed { failure: f, rejected },
                Err(f) => _ = other.get_or_insert(f),
            }
        }
        let failure = match other {
            Some(f) => f,
            None => rejected.last().map(|(_, f)| f.clone()).expect("candidates is not empty and none succeeded"),
        };
        LookupOutcome::Failed { failure, rejected }
    }
}

/// The kubelet's order of credentials for a repository: the pod's keyring, then the node's.
fn kubelet_candidates(pod: &Keyring, node: &Keyring, repository: &str) -> Vec<Candidate> {
    let mut v = pod.lookup(repository);
    v.extend(node.lookup(repository));
    v
}

/// What the walk over a registry's hosts found: the outcome, the candidates its indices refer to, the host
/// that served the image, and what the hosts before it answered.
struct HostWalk {
    outcome: LookupOutcome,
    candidates: Vec<Candidate>,
    served_by: Option<String>,
    notes: Vec<String>,
    /// registries.conf blocks the reference under this prefix: nothing was fetched.
    blocked: Option<String>,
}

fn to_result(
    object: Arc<ObjectRef>,
    container: String,
    container_type: ContainerType,
    field: String,
    e: Evaluation,
    d: Decision,
) -> ContainerResult {
    let (digest, platforms, used) = match e.lookup {
        LookupOutcome::Found { facts, used, .. } => (Some(facts.digest), facts.platforms, used),
        _ => (None, Arc::default(), None),
    };
    ContainerResult {
        object,
        container,
        container_type,
        field,
        image: e.image,
        reference: e.reference.as_ref().ok().map(Reference::canonical),
        verdict: d.verdict,
        reason: d.reason,
        message: d.message(),
        problem: d.problem,
        fix: d.fix,
        notes: d.notes,
        suggestions: d.suggestions,
        digest,
        platforms,
        credentials: e
            .candidates
            .iter()
            .map(|c| CredentialRef {
                secret: c.source.secret_name(),
                provider: c.source.provider_name().map(str::to_string),
                key: c.key.clone(),
            })
            .collect(),
        credential_used: used,
        served_by: e.served_by,
    }
}
