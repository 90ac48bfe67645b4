//! Where a pod can land, judged as the scheduler judges it: node selector, required node affinity, taints
//! against tolerations — over a trimmed inventory of the distinct node shapes, kept current as nodes change
//! rather than rebuilt per review.
//!
//! Upstream behaviour reproduced here, with the case tables below citing it:
//! - labels: `k8s.io/component-helpers/scheduling/corev1/nodeaffinity` (`nodeSelectorTerms` ORed, expressions
//!   ANDed, an empty term matches nothing) and apimachinery `labels.Requirement.Matches` (In, NotIn, Exists,
//!   DoesNotExist, Gt, Lt);
//! - taints: `k8s.io/api/core/v1/toleration.go` `ToleratesTaint` and the scheduler's TaintToleration filter,
//!   which considers only `NoSchedule` and `NoExecute` taints; `spec.unschedulable` as the NodeUnschedulable
//!   plugin reads it (the `node.kubernetes.io/unschedulable` taint);
//! - tolerations the pod gets after admission: the DefaultTolerationSeconds admission plugin (every pod) and
//!   the DaemonSet controller's `AddOrUpdateDaemonPodTolerations`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::platform::Platform;
use crate::workload::{PodSpec, Requirement, Toleration, Workload};

/// Labels unique to each node: kept out of the shapes (they would make every node its own shape), so a
/// requirement on them is assumed satisfiable.
const PER_NODE_LABELS: &[&str] = &["kubernetes.io/hostname"];

const OS_LABELS: &[&str] = &["kubernetes.io/os", "beta.kubernetes.io/os"];
const ARCH_LABELS: &[&str] = &["kubernetes.io/arch", "beta.kubernetes.io/arch"];

/// At most this many os or arch values named by one pod are considered (a hostile spec may list thousands).
const MAX_NAMED_VALUES: usize = 16;

/// A node taint that keeps pods off the node (`NoSchedule` or `NoExecute`; `PreferNoSchedule` does not).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

impl Taint {
    /// The taint, when its effect keeps pods off the node.
    pub fn blocking(key: &str, value: Option<&str>, effect: &str) -> Option<Self> {
        matches!(effect, "NoSchedule" | "NoExecute").then(|| Taint {
            key: key.to_string(),
            value: value.unwrap_or_default().to_string(),
            effect: effect.to_string(),
        })
    }

    /// The taint `spec.unschedulable: true` stands for.
    pub fn unschedulable() -> Self {
        Taint { key: "node.kubernetes.io/unschedulable".into(), value: String::new(), effect: "NoSchedule".into() }
    }
}

/// What the scheduler reads of a node, trimmed to that: its platform, its labels (without per-node ones) and
/// the taints that keep pods off. Nodes of one pool share a shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeShape {
    pub platform: Platform,
    /// `None` when only the platform is known (the configured platforms of `check`): requirements on other
    /// labels are then assumed satisfiable.
    pub labels: Option<BTreeMap<String, String>>,
    /// Sorted, deduplicated.
    pub taints: Vec<Taint>,
}

impl NodeShape {
    /// A node's shape from its labels and taints; `None` when the labels name no platform.
    pub fn of_node(labels: &BTreeMap<String, String>, taints: Vec<Taint>, unschedulable: bool) -> Option<Self> {
        let os = labels.get("kubernetes.io/os")?;
        let arch = labels.get("kubernetes.io/arch")?;
        let mut taints = taints;
        if unschedulable {
            taints.push(Taint::unschedulable());
        }
        taints.sort();
        taints.dedup();
        let labels = labels.iter().filter(|(k, _)| !PER_NODE_LABELS.contains(&k.as_str()));
        Some(NodeShape {
            platform: Platform::new(os, arch, None),
            labels: Some(labels.map(|(k, v)| (k.clone(), v.clone())).collect()),
            taints,
        })
    }

    fn label(&self, key: &str) -> Label<'_> {
        if PER_NODE_LABELS.contains(&key) {
            return Label::Unknown;
        }
        match &self.labels {
            Some(labels) => labels.get(key).map_or(Label::Absent, |v| Label::Has(v)),
            None if OS_LABELS.contains(&key) => Label::Has(&self.platform.os),
            None if ARCH_LABELS.contains(&key) => Label::Has(&self.platform.architecture),
            None => Label::Unknown,
        }
    }
}

/// A node label as far as the inventory knows it.
#[derive(Clone, Copy, Debug)]
enum Label<'a> {
    Has(&'a str),
    Absent,
    /// Not kept (per-node) or not known (configured platforms): assumed to satisfy any requirement.
    Unknown,
}

/// The node shapes of a cluster: the live ones (`serve`) or the configured platforms (`check`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub shapes: Vec<NodeShape>,
    /// Whether the shapes are the cluster's nodes as watched, rather than configured platforms.
    pub live: bool,
}

impl Inventory {
    /// The configured platforms as shapes whose other labels and taints are unknown.
    pub fn configured(platforms: &[Platform]) -> Self {
        let shapes = platforms.iter().map(|p| NodeShape { platform: p.clone(), labels: None, taints: vec![] });
        Inventory { shapes: shapes.collect(), live: false }
    }

    /// The distinct platforms of the inventory, sorted.
    pub fn platforms(&self) -> Vec<Platform> {
        let set: BTreeSet<&Platform> = self.shapes.iter().map(|s| &s.platform).collect();
        set.into_iter().cloned().collect()
    }
}

/// Where a pod can land, as far as its image's platform goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Landing {
    /// Nodes exist that the pod can land on; these are their platforms.
    Nodes(Vec<Platform>),
    /// No node the pod can land on exists yet (an autoscaler may add one).
    NoNode {
        /// The platforms its `kubernetes.io/os`/`arch` constraints allow: those it names when it names any,
        /// else the known platforms that pass them. Empty when nothing can be said.
        asked: Vec<Platform>,
        /// Whether the pod names an OS or architecture (nodeSelector or required affinity `In`).
        pinned: bool,
        /// The inventory's platforms, for the message.
        known: Vec<Platform>,
        /// Whether the inventory is the live cluster's.
        live: bool,
    },
}

impl Landing {
    /// The inventory's platforms, as far as this landing says.
    pub fn known(&self) -> Vec<Platform> {
        match self {
            Landing::Nodes(ps) => ps.clone(),
            Landing::NoNode { known, .. } => known.clone(),
        }
    }

    /// Where the workload's pods can land in `inventory`, with the tolerations they get after admission.
    pub fn of_workload(w: &Workload, inventory: &Inventory) -> Self {
        Landing::of(&w.spec, implied_tolerations(&w.object.kind, w.spec.host_network), inventory)
    }

    /// Where a pod with this spec, and these tolerations on top of its own, can land in `inventory`.
    pub fn of(spec: &PodSpec, implied: &[Toleration], inventory: &Inventory) -> Self {
        // A pod with `spec.nodeName` bypasses the scheduler: the kubelet still checks its selector and
        // affinity, but not NoSchedule taints.
        let direct = spec.node_name.as_deref().is_some_and(|n| !n.is_empty());
        let fits = |s: &NodeShape| {
            labels_fit(spec, s) && (direct || s.taints.iter().all(|t| tolerated(&spec.tolerations, implied, t)))
        };
        let nodes: BTreeSet<&Platform> = inventory.shapes.iter().filter(|s| fits(s)).map(|s| &s.platform).collect();
        if !nodes.is_empty() {
            return Landing::Nodes(nodes.into_iter().cloned().collect());
        }
        let known = inventory.platforms();
        let (os, arch) = named_platform_values(spec);
        let pinned = !os.is_empty() || !arch.is_empty();
        let asked: BTreeSet<Platform> = if pinned {
            // Unnamed OS: linux, as an autoscaler's default pool; unnamed arch: those the cluster has.
            let os = if os.is_empty() { BTreeSet::from(["linux".to_string()]) } else { os };
            let arch = if arch.is_empty() {
                known.iter().map(|p| p.architecture.clone()).chain(["amd64".to_string()]).collect()
            } else {
                arch
            };
            os.iter().flat_map(|o| arch.iter().map(move |a| Platform::new(o, a, None))).collect()
        } else {
            known.iter().cloned().collect()
        };
        let probe = |p: &Platform| NodeShape { platform: p.clone(), labels: None, taints: vec![] };
        let asked = asked.into_iter().filter(|p| labels_fit(spec, &probe(p))).collect();
        Landing::NoNode { asked, pinned, known, live: inventory.live }
    }
}

/// The OS and architecture values a pod names in its node selector and in `In` expressions of its required
/// node affinity, normalized as platforms are.
fn named_platform_values(spec: &PodSpec) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut os = BTreeSet::new();
    let mut arch = BTreeSet::new();
    let mut add = |key: &str, value: &str| {
        let p = Platform::new(value, value, None);
        if OS_LABELS.contains(&key) && os.len() < MAX_NAMED_VALUES {
            os.insert(p.os);
        } else if ARCH_LABELS.contains(&key) && arch.len() < MAX_NAMED_VALUES {
            arch.insert(p.architecture);
        }
    };
    for (k, v) in &spec.node_selector {
        add(k, v);
    }
    for term in required_terms(spec) {
        for r in term.match_expressions.iter().filter(|r| r.operator == "In") {
            for v in &r.values {
                add(&r.key, v);
            }
        }
    }
    (os, arch)
}

fn required_terms(spec: &PodSpec) -> &[crate::workload::NodeSelectorTerm] {
    spec.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required.as_ref())
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default()
}

/// The node selector and required node affinity against a shape's labels.
fn labels_fit(spec: &PodSpec, shape: &NodeShape) -> bool {
    let selector_ok = spec.node_selector.iter().all(|(k, v)| match shape.label(k) {
        Label::Has(l) => l == v,
        Label::Absent => false,
        Label::Unknown => true,
    });
    let terms = required_terms(spec);
    // A term with no expressions and no fields matches no node (nodeaffinity.go `newNodeSelectorTerm`).
    let affinity_ok = terms.is_empty()
        || terms.iter().any(|t| {
            (!t.match_expressions.is_empty() || !t.match_fields.is_empty())
                && t.match_expressions.iter().all(|r| requirement_matches(r, shape.label(&r.key)))
        });
    selector_ok && affinity_ok
}

/// apimachinery `labels.Requirement.Matches`. `matchFields` (only `metadata.name`) is not judged: shapes keep
/// no names.
fn requirement_matches(r: &Requirement, label: Label<'_>) -> bool {
    let value = match label {
        Label::Unknown => return true,
        Label::Absent => None,
        Label::Has(v) => Some(v),
    };
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !r.values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // Exactly one value, both integers (validation enforces the value; the label may be anything).
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, r.values.as_slice()) else { return false };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) if r.operator == "Gt" => v > b,
                (Ok(v), Ok(b)) => v < b,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether one of the tolerations tolerates the taint (`ToleratesTaint`, Kubernetes 1.35 with the
/// comparison operators).
fn tolerated(own: &[Toleration], implied: &[Toleration], taint: &Taint) -> bool {
    own.iter().chain(implied).any(|t| tolerates(t, taint))
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or_default();
    let key = t.key.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    if !key.is_empty() && key != taint.key {
        return false;
    }
    let value = t.value.as_deref().unwrap_or_default();
    match t.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => value == taint.value,
        "Exists" => true,
        // The taint's value compared with the toleration's, both decimal integers (`compareNumericValues`).
        op @ ("Lt" | "Gt") => match (decimal(&taint.value), decimal(value)) {
            (Some(taint), Some(bound)) if op == "Lt" => taint < bound,
            (Some(taint), Some(bound)) => taint > bound,
            _ => false,
        },
        _ => false,
    }
}

/// apimachinery `content.IsDecimalInteger`: an optional minus, no leading zeros, no plus sign.
fn decimal(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s != "-0";
    canonical.then(|| s.parse().ok()).flatten()
}

/// Tolerations a pod of this workload kind gets after admission, on top of its own: the DefaultTolerationSeconds
/// admission plugin's two (every pod; a Pod under review already has them) and, for a DaemonSet, the
/// controller's (`daemonset_util.go` `AddOrUpdateDaemonPodTolerations`).
/// Built once: this runs for every review.
pub fn implied_tolerations(kind: &str, host_network: bool) -> &'static [Toleration] {
    static IMPLIED: std::sync::LazyLock<[Vec<Toleration>; 3]> = std::sync::LazyLock::new(|| {
        let exists = |key: &str, effect: &str| Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            value: None,
            effect: Some(effect.into()),
        };
        let every_pod = vec![
            exists("node.kubernetes.io/not-ready", "NoExecute"),
            exists("node.kubernetes.io/unreachable", "NoExecute"),
        ];
        let mut daemon_set = every_pod.clone();
        for key in ["disk-pressure", "memory-pressure", "pid-pressure", "unschedulable"] {
            daemon_set.push(exists(&format!("node.kubernetes.io/{key}"), "NoSchedule"));
        }
        let mut host_network = daemon_set.clone();
        host_network.push(exists("node.kubernetes.io/network-unavailable", "NoSchedule"));
        [every_pod, daemon_set, host_network]
    });
    match (kind, host_network) {
        ("DaemonSet", false) => &IMPLIED[1],
        ("DaemonSet", true) => &IMPLIED[2],
        _ => &IMPLIED[0],
    }
}

/// The live node table: each node's shape by name and how many nodes share each shape, so a node event
/// costs a map update and the published inventory changes only when the set of distinct shapes does.
#[derive(Debug, Default)]
pub struct NodeTable {
    by_name: HashMap<String, NodeShape>,
    counts: BTreeMap<NodeShape, usize>,
    /// Shapes listed since a watch (re)start, swapped in when the list is complete.
    relist: Option<HashMap<String, NodeShape>>,
}

impl NodeTable {
    /// A node was added or changed; `None` shape: it names no platform. Returns whether the distinct shapes
    /// changed.
    pub fn apply(&mut self, name: &str, shape: Option<NodeShape>) -> bool {
        let old = match shape {
            Some(s) if self.by_name.get(name) == Some(&s) => return false,
            Some(s) => self.by_name.insert(name.to_string(), s.clone()).map(|o| (o, Some(s))),
            None => self.by_name.remove(name).map(|o| (o, None)),
        };
        let mut changed = false;
        let added = match old {
            Some((old, new)) => {
                changed |= self.release(&old);
                new
            }
            None => self.by_name.get(name).cloned(),
        };
        if let Some(s) = added {
            let n = self.counts.entry(s).or_default();
            *n += 1;
            changed |= *n == 1;
        }
        changed
    }

    /// A node was deleted.
    pub fn delete(&mut self, name: &str) -> bool {
        match self.by_name.remove(name) {
            Some(old) => self.release(&old),
            None => false,
        }
    }

    fn release(&mut self, shape: &NodeShape) -> bool {
        match self.counts.get_mut(shape) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                self.counts.remove(shape);
                true
            }
        }
    }

    /// The watch restarted: a full list follows.
    pub fn relist_start(&mut self) {
        self.relist = Some(HashMap::new());
    }

    /// One node of that list.
    pub fn relist_node(&mut self, name: &str, shape: Option<NodeShape>) {
        if let (Some(relist), Some(shape)) = (&mut self.relist, shape) {
            relist.insert(name.to_string(), shape);
        }
    }

    /// The list is complete: it replaces the table. Returns whether the distinct shapes changed.
    pub fn relist_done(&mut self) -> bool {
        let Some(nodes) = self.relist.take() else { return false };
        let mut counts = BTreeMap::new();
        for s in nodes.values() {
            *counts.entry(s.clone()).or_default() += 1;
        }
        let changed = !counts.keys().eq(self.counts.keys());
        self.by_name = nodes;
        self.counts = counts;
        changed
    }

    /// The distinct shapes, as published to reviews.
    pub fn inventory(&self) -> Inventory {
        Inventory { shapes: self.counts.keys().cloned().collect(), live: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::{Value, json};

    fn spec(v: Value) -> PodSpec {
        PodSpec::deserialize(v).unwrap()
    }

    fn node(os: &str, arch: &str, extra: &[(&str, &str)], taints: &[(&str, &str, &str)]) -> NodeShape {
        let mut labels: BTreeMap<String, String> =
            [("kubernetes.io/os", os), ("kubernetes.io/arch", arch), ("kubernetes.io/hostname", "n1")]
                .iter()
                .chain(extra)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        labels.insert("kubernetes.io/hostname".into(), format!("{os}-{arch}"));
        let taints = taints.iter().filter_map(|(k, v, e)| Taint::blocking(k, Some(v), e)).collect();
        NodeShape::of_node(&labels, taints, false).unwrap()
    }

    fn live(shapes: Vec<NodeShape>) -> Inventory {
        Inventory { shapes, live: true }
    }

    fn names(l: &Landing) -> Vec<String> {
        match l {
            Landing::Nodes(ps) => ps.iter().map(ToString::to_string).collect(),
            Landing::NoNode { asked, .. } => asked.iter().map(|p| format!("asked {p}")).collect(),
        }
    }

    /// `ToleratesTaint` cases from k8s.io/api core/v1 toleration_test.go (`TestTolerationToleratesTaint`) and
    /// the comparison operators of KEP-5471.
    #[test]
    fn tolerations_match_like_the_api() {
        let tol = |k: Option<&str>, op: Option<&str>, v: Option<&str>, e: Option<&str>| Toleration {
            key: k.map(Into::into),
            operator: op.map(Into::into),
            value: v.map(Into::into),
            effect: e.map(Into::into),
        };
        let taint = |k: &str, v: &str, e: &str| Taint { key: k.into(), value: v.into(), effect: e.into() };
        // (toleration, taint, tolerated)
        let cases = [
            (tol(Some("foo"), Some("Equal"), Some("bar"), Some("NoSchedule")), taint("foo", "bar", "NoSchedule"), true),
            (tol(Some("foo"), None, Some("bar"), Some("NoSchedule")), taint("foo", "bar", "NoSchedule"), true),
            (
                tol(Some("foo"), Some("Equal"), Some("bar"), Some("NoSchedule")),
                taint("foo", "baz", "NoSchedule"),
                false,
            ),
            (tol(Some("foo"), Some("Equal"), Some("bar"), Some("NoExecute")), taint("foo", "bar", "NoSchedule"), false),
            (tol(Some("foo"), Some("Exists"), None, None), taint("foo", "anything", "NoExecute"), true),
            (tol(None, Some("Exists"), None, None), taint("any", "thing", "NoSchedule"), true),
            (tol(None, Some("Exists"), None, Some("NoExecute")), taint("any", "thing", "NoSchedule"), false),
            (tol(Some("other"), Some("Exists"), None, None), taint("foo", "bar", "NoSchedule"), false),
            (tol(Some("foo"), Some("Equal"), None, None), taint("foo", "", "NoSchedule"), true),
            (tol(Some("foo"), Some("Bogus"), Some("bar"), None), taint("foo", "bar", "NoSchedule"), false),
            // Lt/Gt: the taint's value against the toleration's.
            (tol(Some("sla"), Some("Lt"), Some("950"), None), taint("sla", "900", "NoSchedule"), true),
            (tol(Some("sla"), Some("Lt"), Some("950"), None), taint("sla", "950", "NoSchedule"), false),
            (tol(Some("sla"), Some("Gt"), Some("950"), None), taint("sla", "999", "NoSchedule"), true),
            (tol(Some("sla"), Some("Gt"), Some("950"), None), taint("sla", "0999", "NoSchedule"), false),
            (tol(Some("sla"), Some("Gt"), Some("x"), None), taint("sla", "999", "NoSchedule"), false),
        ];
        for (i, (t, taint, want)) in cases.iter().enumerate() {
            assert_eq!(tolerates(t, taint), *want, "case {i}: {t:?} vs {taint:?}");
        }
        assert_eq!(
            (decimal("-5"), decimal("0"), decimal("-0"), decimal("+5"), decimal("05")),
            (Some(-5), Some(0), None, None, None)
        );
    }

    /// nodeaffinity.go and labels.Requirement.Matches, over a labelled node.
    #[test]
    fn selector_and_affinity_match_like_the_scheduler() {
        let n = node("linux", "arm64", &[("pool", "gpu"), ("cores", "64")], &[]);
        let fits = |s: Value| labels_fit(&spec(s), &n);
        let req = |key: &str, op: &str, values: &[&str]| {
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]}}}})
        };
        let cases = [
            ("no constraint", json!({}), true),
            ("selector match", json!({"nodeSelector": {"pool": "gpu"}}), true),
            ("selector other value", json!({"nodeSelector": {"pool": "cpu"}}), false),
            ("selector absent label", json!({"nodeSelector": {"zone": "a"}}), false),
            ("selector on hostname: not kept, assumed", json!({"nodeSelector": {"kubernetes.io/hostname": "x"}}), true),
            ("In", req("pool", "In", &["cpu", "gpu"]), true),
            ("In absent", req("zone", "In", &["a"]), false),
            ("NotIn", req("pool", "NotIn", &["gpu"]), false),
            ("NotIn absent label", req("zone", "NotIn", &["a"]), true),
            ("Exists", req("pool", "Exists", &[]), true),
            ("DoesNotExist", req("pool", "DoesNotExist", &[]), false),
            ("Gt", req("cores", "Gt", &["32"]), true),
            ("Lt", req("cores", "Lt", &["32"]), false),
            ("Gt non-integer label", req("pool", "Gt", &["1"]), false),
            ("Gt two values", req("cores", "Gt", &["1", "2"]), false),
            ("unknown operator", req("pool", "Near", &["gpu"]), false),
            (
                "terms are ORed",
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["cpu"]}]},
                    {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}]}}}}),
                true,
            ),
            (
                "an empty term matches nothing",
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{}]}}}}),
                false,
            ),
            (
                "matchFields alone: names are not kept, assumed",
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}}),
                true,
            ),
        ];
        for (name, s, want) in cases {
            assert_eq!(fits(s), want, "{name}");
        }
    }

    #[test]
    fn a_tainted_pool_is_not_a_place_to_land() {
        let inv = live(vec![
            node("linux", "amd64", &[], &[]),
            node("windows", "amd64", &[], &[("os", "windows", "NoSchedule")]),
            node("linux", "arm64", &[], &[("dedicated", "arm", "NoExecute"), ("soft", "", "PreferNoSchedule")]),
        ]);
        let land = |s: Value, kind: &str| names(&Landing::of(&spec(s), implied_tolerations(kind, false), &inv));
        assert_eq!(land(json!({}), "Pod"), ["linux/amd64"]);
        let windows = json!({"tolerations": [{"key": "os", "value": "windows", "effect": "NoSchedule"}]});
        assert_eq!(land(windows, "Pod"), ["linux/amd64", "windows/amd64"]);
        let everything = json!({"tolerations": [{"operator": "Exists"}]});
        assert_eq!(land(everything, "Pod"), ["linux/amd64", "linux/arm64", "windows/amd64"]);
        // `spec.nodeName` bypasses the scheduler and its taints.
        assert_eq!(land(json!({"nodeName": "w1"}), "Pod").len(), 3);
    }

    #[test]
    fn daemonsets_tolerate_what_their_controller_adds() {
        let mut cordoned = node("linux", "arm64", &[], &[("node.kubernetes.io/memory-pressure", "", "NoSchedule")]);
        cordoned.taints.push(Taint::unschedulable());
        let inv = live(vec![node("linux", "amd64", &[], &[]), cordoned]);
        let of = |kind: &str| names(&Landing::of(&spec(json!({})), implied_tolerations(kind, false), &inv));
        assert_eq!(of("Deployment"), ["linux/amd64"]);
        assert_eq!(of("DaemonSet"), ["linux/amd64", "linux/arm64"]);
        let unready = live(vec![node("linux", "amd64", &[], &[("node.kubernetes.io/unreachable", "", "NoExecute")])]);
        let pod = Landing::of(&spec(json!({})), implied_tolerations("Pod", false), &unready);
        assert_eq!(names(&pod), ["linux/amd64"], "DefaultTolerationSeconds tolerates NoExecute unreachable");
        // The network-unavailable toleration goes to host-network DaemonSets only.
        let no_network =
            live(vec![node("linux", "arm64", &[], &[("node.kubernetes.io/network-unavailable", "", "NoSchedule")])]);
        let lands = |kind: &str, host_network: bool| {
            !names(&Landing::of(&spec(json!({})), implied_tolerations(kind, host_network), &no_network))[0]
                .starts_with("asked")
        };
        assert_eq!(
            [lands("DaemonSet", true), lands("DaemonSet", false), lands("Deployment", true)],
            [true, false, false]
        );
    }

    #[test]
    fn a_pod_pinned_where_no_node_is_yet_asks_for_its_platform() {
        let inv = live(vec![node("linux", "amd64", &[], &[])]);
        let of = |s: Value| Landing::of(&spec(s), &[], &inv);
        let arm = of(json!({"nodeSelector": {"kubernetes.io/arch": "arm64"}}));
        assert_eq!(names(&arm), ["asked linux/arm64"]);
        assert!(matches!(arm, Landing::NoNode { pinned: true, live: true, .. }));
        let affinity = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64", "aarch64"]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}}});
        assert_eq!(names(&of(affinity)), ["asked linux/arm64"]);
        // A pool selector alone pins no platform: the known ones are judged.
        let pool = of(json!({"nodeSelector": {"karpenter.sh/nodepool": "batch"}}));
        assert_eq!(names(&pool), ["asked linux/amd64"]);
        assert!(matches!(pool, Landing::NoNode { pinned: false, .. }));
        // NotIn excludes every platform: nothing can be said.
        let not_in = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/arch", "operator": "NotIn", "values": ["amd64"]}]}]}}}});
        assert_eq!(names(&of(not_in)), Vec::<String>::new());
        // Configured platforms (check): other labels are unknown, so a pool selector still lands.
        let configured = Inventory::configured(&["linux/amd64".parse().unwrap(), "linux/arm64".parse().unwrap()]);
        let pool =
            Landing::of(&spec(json!({"nodeSelector": {"pool": "x", "kubernetes.io/arch": "arm64"}})), &[], &configured);
        assert_eq!(names(&pool), ["linux/arm64"]);
    }

    #[test]
    fn the_table_republishes_only_when_the_shapes_change() {
        let mut t = NodeTable::default();
        let amd = node("linux", "amd64", &[], &[]);
        let arm = node("linux", "arm64", &[], &[]);
        assert!(t.apply("a", Some(amd.clone())), "first amd64 node: a new shape");
        assert!(!t.apply("b", Some(amd.clone())), "second node of the same pool");
        assert!(!t.apply("a", Some(amd.clone())), "a heartbeat: nothing changed");
        assert!(t.apply("c", Some(arm.clone())));
        assert!(!t.delete("a"), "b still has that shape");
        assert!(t.delete("b"));
        assert_eq!(t.inventory().platforms(), ["linux/arm64".parse().unwrap()]);
        // A node's taint changes its shape.
        let tainted = node("linux", "arm64", &[], &[("dedicated", "x", "NoSchedule")]);
        assert!(t.apply("c", Some(tainted)));
        assert_eq!(t.inventory().shapes.len(), 1);
        assert!(t.apply("c", None), "labels lost their platform");
        assert!(t.inventory().shapes.is_empty());
        // A relist replaces the table at once.
        t.apply("x", Some(amd.clone()));
        t.relist_start();
        t.relist_node("y", Some(arm.clone()));
        assert_eq!(t.inventory().shapes.len(), 1, "the old table serves until the list is complete");
        assert!(t.relist_done());
        assert_eq!(t.inventory().platforms(), ["linux/arm64".parse().unwrap()]);
    }
}
