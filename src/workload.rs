//! Pod specs and containers out of Pods and workload objects, and the platforms a pod may be scheduled on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// Identifies an object in the input (a file and document) or in an admission request.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
}

/// The part of a PodSpec that decides whether its images can be pulled.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub init_containers: Vec<Container>,
    #[serde(default)]
    pub ephemeral_containers: Vec<Container>,
    #[serde(default)]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// Deprecated alias of `serviceAccountName`, still honoured by the API server.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Only image volumes matter here; other volume sources pull nothing.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub affinity: Option<Affinity>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Set: the pod bypasses the scheduler (and its NoSchedule taints).
    #[serde(default)]
    pub node_name: Option<String>,
    /// A DaemonSet's host-network pods also tolerate `network-unavailable`.
    #[serde(default)]
    pub host_network: bool,
}

/// A pod toleration, as the scheduler matches it against node taints.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub operator: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub effect: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
}

/// A pod volume; only its `image` source is read.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Volume {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: Option<ImageVolumeSource>,
}

/// `spec.volumes[].image` (KEP-4639): an image or OCI artifact the kubelet pulls with the pod's credentials.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageVolumeSource {
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub pull_policy: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct LocalObjectReference {
    #[serde(default)]
    pub name: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    #[serde(default)]
    pub node_affinity: Option<NodeAffinity>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct NodeAffinity {
    #[serde(default, rename = "requiredDuringSchedulingIgnoredDuringExecution")]
    pub required: Option<NodeSelector>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    #[serde(default)]
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorTerm {
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
    /// Only `metadata.name`; kept to tell an empty term (matches nothing) from a name-only one.
    #[serde(default)]
    pub match_fields: Vec<Requirement>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// Where a pulled image sits in the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ContainerType {
    Container,
    InitContainer,
    EphemeralContainer,
    /// An image volume; its name is the volume's.
    ImageVolume,
}

/// One image the kubelet pulls for the pod — a container's or an image volume's — with its position, in the
/// order the pod lists them.
#[derive(Clone, Debug)]
pub struct ContainerRef<'a> {
    /// The container's name, or the volume's.
    pub name: &'a str,
    pub image: Option<&'a str>,
    pub pull_policy: Option<&'a str>,
    pub kind: ContainerType,
    /// JSON path of the image field, e.g. `spec.template.spec.containers[0].image`.
    pub field: String,
}

/// A pod template found in an object.
#[derive(Clone, Debug)]
pub struct Workload {
    pub object: ObjectRef,
    pub spec: PodSpec,
    /// JSON path of the pod spec inside the object, e.g. `spec.template.spec`.
    pub spec_path: &'static str,
    /// The kind of the object's controlling owner (the ownerReference with `controller: true`), if any.
    pub controller: Option<String>,
    /// Pods a rollout of it creates at once, each a pull on a node without the image: `replicas` (default 1),
    /// a Job's `parallelism`; 1 for a Pod; `None` for a DaemonSet (one per node).
    pub pods: Option<u32>,
}

/// Why an object that should hold a pod spec could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{kind} {name:?}: field {path}: {source}")]
    Spec {
        kind: String,
        name: String,
        /// The JSON path of the offending field, e.g. `spec.template.spec.containers[1].image`.
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The path of the pod spec inside an object of this kind, or `None` for kinds without pods.
pub fn pod_spec_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some("spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" => {
            Some("spec.template.spec")
        }
        "CronJob" => Some("spec.jobTemplate.spec.template.spec"),
        _ => None,
    }
}

/// A pod spec that cannot be read: the path inside it (empty or `.` for the spec itself) and why.
type SpecError = (String, serde_json::Error);

fn split(e: serde_path_to_error::Error<serde_json::Error>) -> SpecError {
    (e.path().to_string(), e.into_inner())
}

/// Decodes JSON text, and on failure decodes it again tracking the path, for the error to name the field:
/// tracking it on every review cost a third of the decode, and a review that fails is rare.
fn with_path<'de, T: Deserialize<'de>>(raw: &'de str) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    serde_json::from_str(raw)
        .or_else(|_| serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(raw)))
}

/// The error without its "at line 1 column N": a position in the pod spec's text alone means nothing to
/// whoever reads it.
fn without_position(e: serde_json::Error) -> serde_json::Error {
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match e.to_string().strip_suffix(&suffix) {
        Some(message) => serde::de::Error::custom(message),
        None => e,
    }
}

/// An object's top level as pullguard reads it; `S` holds `spec` undecoded.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head<S> {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<Meta>,
    spec: Option<S>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    owner_references: Option<Vec<OwnerReference>>,
}

#[derive(Deserialize)]
struct OwnerReference {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    controller: Option<bool>,
}

impl Meta {
    fn controller(&self) -> Option<String> {
        let refs = self.owner_references.as_deref()?;
        refs.iter().find(|r| r.controller == Some(true)).map(|r| r.kind.clone())
    }
}

impl<S> Head<S> {
    /// The workload, given its pod spec as decoded from `spec_path` (`None`: the object has none there).
    fn finish(
        self,
        spec_path: &'static str,
        spec: Result<Option<PodSpec>, SpecError>,
        pods: Option<u32>,
        default_namespace: &str,
    ) -> Result<Workload, WorkloadError> {
        let kind = self.kind.unwrap_or_default();
        let meta = self.metadata;
        let controller = meta.as_ref().and_then(Meta::controller);
        let name = meta.as_ref().and_then(|m| m.name.clone().or_else(|| m.generate_name.clone())).unwrap_or_default();
        let spec = spec.map_err(|(inner, source)| {
            let path =
                if inner == "." || inner.is_empty() { spec_path.to_string() } else { format!("{spec_path}.{inner}") };
            WorkloadError::Spec { kind: kind.clone(), name: name.clone(), path, source }
        })?;
        let namespace =
            meta.and_then(|m| m.namespace).filter(|n| !n.is_empty()).unwrap_or_else(|| default_namespace.to_string());
        let object = ObjectRef {
            api_version: self.api_version.unwrap_or_default(),
            kind,
            namespace,
            name,
            file: None,
            document: None,
        };
        Ok(Workload { object, spec: spec.unwrap_or_default(), spec_path, controller, pods })
    }
}

/// Where a kind's count of the pods a rollout makes lives: the object on the pod spec's path that holds it,
/// and its field.
fn scale_field(kind: &str) -> Option<(&'static str, &'static str)> {
    match kind {
        "Deployment" | "StatefulSet" | "ReplicaSet" | "ReplicationController" => Some(("spec", "replicas")),
        "Job" => Some(("spec", "parallelism")),
        "CronJob" => Some(("spec.jobTemplate.spec", "parallelism")),
        _ => None,
    }
}

/// See [`Workload::pods`]: `count` is the kind's [`scale_field`], where it is an integer.
fn pods(kind: &str, count: Option<i64>) -> Option<u32> {
    let n = |v: Option<i64>| Some(v.unwrap_or(1).clamp(0, i64::from(u32::MAX)) as u32);
    match kind {
        "Pod" => Some(1),
        _ if scale_field(kind).is_some() => n(count),
        _ => None,
    }
}

/// The values of some fields of a JSON object, left undecoded, in one pass; every other field is skipped
/// unread. The first of repeated keys counts, and a null reads as absent.
fn fields<'a, const N: usize>(
    object: &'a RawValue,
    keys: [&str; N],
) -> Result<[Option<&'a RawValue>; N], serde_json::Error> {
    struct Fields<'k, const N: usize>([&'k str; N]);
    impl<'de, const N: usize> serde::de::Visitor<'de> for Fields<'_, N> {
        type Value = [Option<&'de RawValue>; N];
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = [None; N];
            while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                match self.0.iter().position(|key| *key == k) {
                    Some(i) if found[i].is_none() => found[i] = Some(map.next_value::<&'de RawValue>()?),
                    _ => _ = map.next_value::<serde::de::IgnoredAny>()?,
                }
            }
            Ok(found.map(|v| v.filter(|v| v.get() != "null")))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok([None; N])
        }
    }
    serde::Deserializer::deserialize_any(&mut serde_json::Deserializer::from_str(object.get()), Fields(keys))
}

impl Workload {
    /// Extracts the pod spec of a workload object; `Ok(None)` for kinds that run no containers.
    pub fn from_object(obj: &Value, default_namespace: &str) -> Result<Option<Self>, WorkloadError> {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let Some(spec_path) = pod_spec_path(kind) else {
            return Ok(None);
        };
        let meta = obj.get("metadata");
        let text = |v: Option<&Value>, k: &str| v.and_then(|m| m.get(k)).and_then(Value::as_str).map(str::to_string);
        let head = Head {
            api_version: text(Some(obj), "apiVersion"),
            kind: Some(kind.to_string()),
            metadata: Some(Meta {
                name: text(meta, "name"),
                generate_name: text(meta, "generateName"),
                namespace: text(meta, "namespace"),
                owner_references: meta
                    .and_then(|m| m.get("ownerReferences"))
                    .and_then(|v| Vec::<OwnerReference>::deserialize(v).ok()),
            }),
            spec: obj.get("spec"),
        };
        // A null on the way reads as absent, as in the JSON text of a review.
        let mut node = Some(obj);
        for key in spec_path.split('.') {
            node = node.and_then(|n| n.get(key)).filter(|n| !n.is_null());
        }
        let spec = node.map(|n| serde_path_to_error::deserialize(n).map_err(split)).transpose();
        let count = scale_field(kind).and_then(|(at, field)| {
            let holder = at.split('.').try_fold(obj, |n, key| n.get(key).filter(|n| !n.is_null()))?;
            holder.get(field).and_then(Value::as_i64)
        });
        let pods = pods(kind, count);
        head.finish(spec_path, spec, pods, default_namespace).map(Some)
    }

    /// [`from_object`](Self::from_object) straight from JSON text, as an admission review carries the object:
    /// only the top level, `metadata` and the pod spec are decoded; everything else is skipped unread.
    pub fn from_json(raw: &str, default_namespace: &str) -> Result<Option<Self>, WorkloadError> {
        let head: Head<&RawValue> = with_path(raw).map_err(|e| WorkloadError::Spec {
            kind: String::new(),
            name: String::new(),
            path: e.path().to_string(),
            source: e.into_inner(),
        })?;
        let kind = head.kind.as_deref().unwrap_or_default();
        let Some(spec_path) = pod_spec_path(kind) else {
            return Ok(None);
        };
        // Down the path to the pod spec, each object read once; the pod count is picked up on the way, from
        // the object that holds it.
        let scale = scale_field(kind);
        let mut count = None;
        let mut node = Ok(head.spec);
        let mut at = "spec";
        for (i, key) in spec_path.match_indices('.').map(|(i, _)| i).zip(spec_path.split('.').skip(1)) {
            node = node.and_then(|n| {
                let Some(n) = n else { return Ok(None) };
                match scale {
                    Some((holder, field)) if holder == at => {
                        let [next, c] = fields(n, [key, field])?;
                        count = c.and_then(|c| serde_json::from_str::<i64>(c.get()).ok());
                        Ok(next)
                    }
                    _ => Ok(fields(n, [key])?[0]),
                }
            });
            at = &spec_path[..i + 1 + key.len()];
        }
        let spec = node.map_err(|e| (String::new(), e)).and_then(|n| {
            n.map(|n| {
                with_path(n.get()).map_err(|e| {
                    let (path, e) = split(e);
                    (path, without_position(e))
                })
            })
            .transpose()
        });
        let pods = pods(kind, count);
        head.finish(spec_path, spec, pods, default_namespace).map(Some)
    }

    /// Every image the kubelet pulls for the pod: containers, init containers, ephemeral containers, then image
    /// volumes, in that order.
    pub fn containers(&self) -> Vec<ContainerRef<'_>> {
        let lists = [
            (&self.spec.containers, ContainerType::Container, "containers"),
            (&self.spec.init_containers, ContainerType::InitContainer, "initContainers"),
            (&self.spec.ephemeral_containers, ContainerType::EphemeralContainer, "ephemeralContainers"),
        ];
        let containers = lists.into_iter().flat_map(|(list, kind, field)| {
            list.iter().enumerate().map(move |(i, c)| ContainerRef {
                name: &c.name,
                image: c.image.as_deref(),
                pull_policy: c.image_pull_policy.as_deref(),
                kind,
                field: field_path(self.spec_path, field, i, ".image"),
            })
        });
        let volumes = self.spec.volumes.iter().enumerate().filter_map(|(i, v)| {
            let source = v.image.as_ref()?;
            Some(ContainerRef {
                name: &v.name,
                image: source.reference.as_deref(),
                pull_policy: source.pull_policy.as_deref(),
                kind: ContainerType::ImageVolume,
                field: field_path(self.spec_path, "volumes", i, ".image.reference"),
            })
        });
        containers.chain(volumes).collect()
    }
}

/// `{spec_path}.{list}[{i}]{rest}`, in one allocation: built for every container of every review.
fn field_path(spec_path: &str, list: &str, i: usize, rest: &str) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(spec_path.len() + list.len() + rest.len() + 8);
    let _ = write!(s, "{spec_path}.{list}[{i}]{rest}");
    s
}

impl PodSpec {
    /// Whether `other` constrains where the pod may land differently (node selector, required node affinity,
    /// tolerations): then every image must be judged again against the platforms it may now land on.
    pub fn scheduling_differs(&self, other: &PodSpec) -> bool {
        self.node_selector != other.node_selector
            || self.affinity != other.affinity
            || self.tolerations != other.tolerations
            || self.node_name != other.node_name
    }

    /// The ServiceAccount whose pull secrets apply when the pod lists none.
    pub fn service_account(&self) -> &str {
        [&self.service_account_name, &self.service_account]
            .into_iter()
            .flatten()
            .find(|s| !s.is_empty())
            .map_or("default", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_pod_spec_in_every_kind() {
        let tpl = json!({"spec": {"containers": [{"name": "a", "image": "nginx"}]}});
        let cases = [
            ("Pod", json!({"spec": {"containers": [{"name": "a", "image": "nginx"}]}}), "spec.containers[0].image"),
            ("Deployment", json!({"spec": {"template": tpl}}), "spec.template.spec.containers[0].image"),
            ("Job", json!({"spec": {"template": tpl}}), "spec.template.spec.containers[0].image"),
            (
                "CronJob",
                json!({"spec": {"jobTemplate": {"spec": {"template": tpl}}}}),
                "spec.jobTemplate.spec.template.spec.containers[0].image",
            ),
        ];
        for (kind, mut obj, field) in cases {
            obj["kind"] = json!(kind);
            obj["metadata"] = json!({"name": "x"});
            let w = Workload::from_object(&obj, "dflt").unwrap().unwrap();
            assert_eq!(w.object.namespace, "dflt");
            let cs = w.containers();
            assert_eq!(cs.len(), 1, "{kind}");
            assert_eq!(cs[0].field, field);
        }
        assert!(Workload::from_object(&json!({"kind": "ConfigMap"}), "d").unwrap().is_none());
    }

    #[test]
    fn image_volumes_are_pulls_with_their_own_field() {
        let obj = json!({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {
            "containers": [{"name": "a", "image": "nginx"}],
            "volumes": [{"name": "cfg", "configMap": {"name": "x"}},
                        {"name": "models", "image": {"reference": "r.io/models:1", "pullPolicy": "Never"}}]}}}});
        let w = Workload::from_object(&obj, "d").unwrap().unwrap();
        let pulls = w.containers();
        assert_eq!(pulls.len(), 2, "a configMap volume pulls nothing");
        let v = &pulls[1];
        assert_eq!(
            (v.kind, v.name, v.image, v.pull_policy),
            (ContainerType::ImageVolume, "models", Some("r.io/models:1"), Some("Never"))
        );
        assert_eq!(v.field, "spec.template.spec.volumes[1].image.reference");
    }

    #[test]
    fn bad_spec_names_the_field() {
        let obj = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": "nope"}});
        let err = Workload::from_object(&obj, "d").unwrap_err().to_string();
        assert!(err.contains("Pod \"p\"") && err.contains("field spec"), "{err}");
    }

    /// What the admission path reads from the review's JSON text is what `check` reads from a document.
    #[test]
    fn json_text_and_value_read_alike() {
        let tpl = json!({"spec": {"containers": [{"name": "a", "image": "nginx", "imagePullPolicy": "Always"}],
            "imagePullSecrets": [{"name": "s"}], "nodeSelector": {"kubernetes.io/arch": "arm64"}}});
        let managed = json!([{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:template": {}}}}]);
        let cases = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "prod"}, "spec": tpl["spec"]}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"generateName": "web-",
                "managedFields": managed, "labels": {"a": "b"}}, "status": {"replicas": 3}, "spec": {"replicas": 2,
                "selector": {}, "template": tpl}}),
            json!({"kind": "ReplicaSet", "metadata": {"name": "r", "namespace": "",
                "ownerReferences": [{"kind": "Other"}, {"kind": "Deployment", "controller": true}]},
                "spec": {"template": tpl}}),
            json!({"kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": tpl}}}}),
            json!({"kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": null}}),
            json!({"kind": "Deployment", "metadata": {"name": "d"}, "spec": null}),
            json!({"kind": "Deployment", "metadata": null}),
            json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": null}),
            json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": 42}]}}),
            json!({"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": {"volumes": 1}}}}),
            json!({"kind": "ConfigMap", "data": {"spec": 1}}),
            json!({"data": 1}),
        ];
        let seen = |r: Result<Option<Workload>, WorkloadError>| match r {
            Ok(Some(w)) => {
                let pulls: Vec<String> = w.containers().iter().map(|c| format!("{c:?}")).collect();
                format!("{:?} {} {:?} {pulls:?} {:?}", w.object, w.spec_path, w.controller, w.spec.image_pull_secrets)
            }
            Ok(None) => "none".into(),
            Err(e) => e.to_string(),
        };
        for obj in cases {
            let text = obj.to_string();
            assert_eq!(seen(Workload::from_json(&text, "dflt")), seen(Workload::from_object(&obj, "dflt")), "{text}");
        }
        let w = Workload::from_json(r#"{"kind":"Pod","metadata":{"name":"p\u0031"},"spec":{}}"#, "d").unwrap().unwrap();
        assert_eq!(w.object.name, "p1", "escaped names are read as the API server reads them");
    }

    #[test]
    fn pods_a_rollout_makes() {
        let cases = [
            (json!({"kind": "Deployment", "spec": {"replicas": 4, "template": {"spec": {}}}}), Some(4)),
            (json!({"kind": "StatefulSet", "spec": {"template": {}}}), Some(1)),
            (json!({"kind": "Job", "spec": {"parallelism": 3, "template": {}}}), Some(3)),
            (json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"parallelism": 2}}}}), Some(2)),
            (json!({"kind": "DaemonSet", "spec": {"template": {}}}), None),
            (json!({"kind": "Pod", "spec": {}}), Some(1)),
            (json!({"kind": "Deployment", "spec": {"replicas": "many"}}), Some(1)),
            // Only the kind's own count field is read: a bad field beside it does not hide it.
            (json!({"kind": "Deployment", "spec": {"replicas": 5, "parallelism": "x", "template": {}}}), Some(5)),
            (json!({"kind": "Deployment", "spec": {"replicas": null, "template": {"spec": {}}}}), Some(1)),
            (json!({"kind": "CronJob", "spec": {"jobTemplate": null}}), Some(1)),
            (
                json!({"kind": "CronJob", "spec": {"parallelism": 9, "jobTemplate": {"spec": {"template": {}}}}}),
                Some(1),
            ),
        ];
        for (obj, want) in cases {
            assert_eq!(Workload::from_object(&obj, "d").unwrap().unwrap().pods, want, "{obj}");
            assert_eq!(Workload::from_json(&obj.to_string(), "d").unwrap().unwrap().pods, want, "{obj}");
        }
    }

    /// A wrong type deep inside the spec named only `field spec`.
    #[test]
    fn bad_nested_field_names_its_path() {
        let obj = json!({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec":
            {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": 42}]}}}});
        let err = Workload::from_object(&obj, "d").unwrap_err().to_string();
        assert!(err.contains("spec.template.spec.containers[1].image"), "{err}");
    }
}
