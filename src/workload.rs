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

/// The error without its "at line 1 column N": a position in the object's text alone means nothing to whoever
/// reads it, and the error names the field.
fn without_position(e: serde_json::Error) -> serde_json::Error {
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match e.to_string().strip_suffix(&suffix) {
        Some(message) => serde::de::Error::custom(message),
        None => e,
    }
}

/// An object's top level as pullguard reads it, but for its `spec`.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<Meta>,
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

impl Head {
    /// The workload, given its pod spec as decoded from `spec_path` (`None`: the object has none there).
    fn finish(
        self,
        spec_path: &'static str,
        spec: Option<PodSpec>,
        pods: Option<u32>,
        default_namespace: &str,
    ) -> Workload {
        let name = self.name();
        let kind = self.kind.unwrap_or_default();
        let meta = self.metadata;
        let controller = meta.as_ref().and_then(Meta::controller);
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
        Workload { object, spec: spec.unwrap_or_default(), spec_path, controller, pods }
    }

    /// The object's name, or its `generateName`.
    fn name(&self) -> String {
        let meta = self.metadata.as_ref();
        meta.and_then(|m| m.name.clone().or_else(|| m.generate_name.clone())).unwrap_or_default()
    }

    /// Why the field at `path` of this object could not be read.
    fn error(&self, path: String, source: serde_json::Error) -> WorkloadError {
        WorkloadError::Spec { kind: self.kind.clone().unwrap_or_default(), name: self.name(), path, source }
    }

    /// Why the pod spec at `spec_path` could not be read (`inner`: the path inside it, empty or `.` for itself).
    fn spec_error(&self, spec_path: &str, (inner, source): SpecError) -> WorkloadError {
        let path =
            if inner == "." || inner.is_empty() { spec_path.to_string() } else { format!("{spec_path}.{inner}") };
        self.error(path, source)
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

/// What one pass over an object's JSON text finds.
struct Found<'de> {
    head: Head,
    spec: Spec<'de>,
}

// One lives on the stack per read; boxing the pod spec would be an allocation per review.
#[allow(clippy::large_enum_variant)]
enum Spec<'de> {
    /// No `spec`, a null one, or a kind without pods.
    None,
    /// Read on the way: the pod spec (`None` where the path to it ends early) and the pod count.
    Read(Option<PodSpec>, Option<i64>),
    /// The `spec` came before the `kind`, so it was kept as text to be read once the kind is known.
    Text(&'de RawValue),
}

/// Reads an object's top level, and its `spec` on the way when the `kind` came first (as the API server writes
/// objects): only the top level, `metadata`, the path down to the pod spec and the pod spec are decoded;
/// everything else is skipped unread, and nothing is read twice. A repeated top-level field is an error (as
/// for a derived struct); below it, the first of repeated keys counts and a null reads as absent.
struct ObjectVisitor;

impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
    type Value = Found<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Found<'de>, A::Error> {
        use serde::de::Error as _;
        let mut head = Head::default();
        let mut seen = [false; 4];
        let mut spec = Spec::None;
        const FIELDS: [&str; 4] = ["apiVersion", "kind", "metadata", "spec"];
        while let Some(Key(key)) = map.next_key()? {
            let Some(i) = FIELDS.iter().position(|k| *k == key) else {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            };
            if std::mem::replace(&mut seen[i], true) {
                return Err(A::Error::duplicate_field(FIELDS[i]));
            }
            match i {
                0 => head.api_version = map.next_value()?,
                1 => head.kind = map.next_value()?,
                2 => head.metadata = map.next_value()?,
                _ if !seen[1] => spec = map.next_value::<Option<&'de RawValue>>()?.map_or(Spec::None, Spec::Text),
                _ => match Down::of_kind(head.kind.as_deref().unwrap_or_default()) {
                    Some(down) => {
                        let mut count = None;
                        let pod = map.next_value_seed(down.counting(&mut count))?;
                        spec = Spec::Read(pod, count);
                    }
                    None => _ = map.next_value::<serde::de::IgnoredAny>()?,
                },
            }
        }
        Ok(Found { head, spec })
    }
}

/// Down from an object's `spec` to its pod spec, one level at a time, decoding the pod spec where the path
/// ends; on the way it reads the pod count from the object that holds it.
#[derive(Clone, Copy)]
struct Down {
    /// The rest of the path below this level, e.g. `template.spec`; empty: this value is the pod spec.
    rest: &'static str,
    /// The pod count's field, and how many levels below this one its holder is.
    count: Option<(&'static str, usize)>,
}

impl Down {
    /// From the `spec` of an object of this kind; `None` for kinds without pods.
    fn of_kind(kind: &str) -> Option<Self> {
        let path = pod_spec_path(kind)?;
        let rest = path.strip_prefix("spec").map_or(path, |r| r.trim_start_matches('.'));
        let count = scale_field(kind).map(|(holder, field)| (field, holder.matches('.').count()));
        Some(Self { rest, count })
    }

    fn counting(self, count: &mut Option<i64>) -> Level<'_> {
        Level { down: self, count }
    }
}

/// [`Down`] at one level, with where to put the pod count.
struct Level<'c> {
    down: Down,
    count: &'c mut Option<i64>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Level<'_> {
    type Value = Option<PodSpec>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<PodSpec>, D::Error> {
        if self.down.rest.is_empty() {
            return Option::<PodSpec>::deserialize(d);
        }
        d.deserialize_option(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Level<'_> {
    type Value = Option<PodSpec>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an object")
    }
    fn visit_none<E>(self) -> Result<Option<PodSpec>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<PodSpec>, E> {
        Ok(None)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<PodSpec>, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Option<PodSpec>, A::Error> {
        let Level { down, count } = self;
        let (key, rest) = down.rest.split_once('.').unwrap_or((down.rest, ""));
        let count_here = down.count.and_then(|(field, levels)| (levels == 0).then_some(field));
        let below = Down { rest, count: down.count.and_then(|(f, levels)| levels.checked_sub(1).map(|l| (f, l))) };
        let (mut pod, mut seen_key, mut seen_count) = (None, false, false);
        while let Some(Key(k)) = map.next_key()? {
            if k == key && !seen_key {
                seen_key = true;
                pod = map.next_value_seed(below.counting(count))?;
            } else if count_here.is_some_and(|f| k == f) && !seen_count {
                seen_count = true;
                *count = map.next_value::<Lenient>()?.0;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(pod)
    }
}

/// An object's key, borrowed from the text unless it holds an escape (serde's own `Cow<str>` always copies).
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(v.to_owned().into()))
            }
        }
        d.deserialize_str(V)
    }
}

/// An integer that fits an `i64`, or `None` for any other value (read and dropped).
struct Lenient(Option<i64>);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Lenient;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "any value")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Lenient, E> {
                Ok(Lenient(Some(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Lenient, E> {
                Ok(Lenient(i64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E>(self) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Lenient, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Lenient, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// An object read in one pass (`ObjectVisitor`): its top level and, for a kind with pods, its pod spec and
/// pod count. Read as part of a larger document (an admission review), it spares a scan of the object's text
/// to borrow it first. Reading fails where the object cannot be read; [`Workload::from_json`] then says why.
pub struct ReadObject {
    head: Head,
    /// The pod spec (`None` where the path to it ends early) and the pod count; `None` for kinds without pods.
    pod: Option<(Option<PodSpec>, Option<i64>)>,
}

impl<'de> Deserialize<'de> for ReadObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Found { head, spec } = d.deserialize_map(ObjectVisitor)?;
        let pod = match (spec, Down::of_kind(head.kind.as_deref().unwrap_or_default())) {
            (_, None) => None,
            (Spec::Text(text), Some(down)) => Some(
                read_spec_text(&mut serde_json::Deserializer::from_str(text.get()), down)
                    .map_err(serde::de::Error::custom)?,
            ),
            (Spec::Read(pod, count), Some(_)) => Some((pod, count)),
            (Spec::None, Some(_)) => Some((None, None)),
        };
        Ok(Self { head, pod })
    }
}

impl ReadObject {
    /// The workload; `None` for kinds that run no containers.
    pub fn into_workload(self, default_namespace: &str) -> Option<Workload> {
        let (pod, count) = self.pod?;
        let kind = self.head.kind.as_deref().unwrap_or_default();
        let (spec_path, pods) = (pod_spec_path(kind).unwrap_or_default(), pods(kind, count));
        Some(self.head.finish(spec_path, pod, pods, default_namespace))
    }
}

/// The pod spec of a `spec` kept as text (it came before the `kind`), read as [`ObjectVisitor`] reads it.
fn read_spec_text<'de, D: serde::Deserializer<'de>>(
    d: D,
    down: Down,
) -> Result<(Option<PodSpec>, Option<i64>), D::Error> {
    use serde::de::DeserializeSeed as _;
    let mut count = None;
    let pod = down.counting(&mut count).deserialize(d)?;
    Ok((pod, count))
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
        let spec = spec.map_err(|e| head.spec_error(spec_path, e))?;
        Ok(Some(head.finish(spec_path, spec, pods, default_namespace)))
    }

    /// [`from_object`](Self::from_object) straight from JSON text, as an admission review carries the object, in
    /// one pass (see [`ReadObject`]). Reading the top level, then each level down to the pod spec, each from
    /// the text of the one above, scanned the object four times: a sixth of a warm review's instructions.
    pub fn from_json(raw: &str, default_namespace: &str) -> Result<Option<Self>, WorkloadError> {
        match serde_json::from_str::<ReadObject>(raw) {
            Ok(read) => Ok(read.into_workload(default_namespace)),
            Err(e) => Err(explain(raw, e)),
        }
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

/// Why [`Workload::from_json`] could not read an object: the object read again, tracking the path to the
/// field that failed (tracking it on every review cost a third of the read, and a review that fails is rare),
/// and named by its kind and name where those could be read.
fn explain(raw: &str, first: serde_json::Error) -> WorkloadError {
    let mut track = serde_path_to_error::Track::new();
    let mut de = serde_json::Deserializer::from_str(raw);
    let tracked = serde::Deserializer::deserialize_map(
        serde_path_to_error::Deserializer::new(&mut de, &mut track),
        ObjectVisitor,
    );
    let (path, source) = match tracked {
        Err(e) => (track.path().to_string(), e),
        Ok(Found { head, spec: Spec::Text(text) }) => {
            let down = Down::of_kind(head.kind.as_deref().unwrap_or_default());
            let mut de = serde_json::Deserializer::from_str(text.get());
            let mut inner = serde_path_to_error::Track::new();
            match down.map(|d| read_spec_text(serde_path_to_error::Deserializer::new(&mut de, &mut inner), d)) {
                Some(Err(e)) => match inner.path().to_string().as_str() {
                    "." => ("spec".to_string(), e),
                    p => (format!("spec.{p}"), e),
                },
                _ => (".".to_string(), first),
            }
        }
        Ok(_) => (".".to_string(), first),
    };
    // The object's kind and name, unless the error is in what names it.
    serde_json::from_str::<Head>(raw).unwrap_or_default().error(path, without_position(source))
}

/// `{spec_path}.{list}[{i}]{rest}`, in one allocation: built for every container of every review.
fn field_path(spec_path: &str, list: &str, i: usize, rest: &str) -> String {
    let mut s = String::with_capacity(spec_path.len() + list.len() + rest.len() + 8);
    s.push_str(spec_path);
    s.push('.');
    s.push_str(list);
    s.push('[');
    push_decimal(&mut s, i);
    s.push(']');
    s.push_str(rest);
    s
}

/// Appends `n` in decimal, without the formatter.
fn push_decimal(s: &mut String, n: usize) {
    if n >= 10 {
        push_decimal(s, n / 10);
    }
    s.push(char::from(b'0' + (n % 10) as u8));
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
    fn field_paths_write_any_index() {
        for i in [0, 7, 10, 99, 1234, usize::MAX] {
            assert_eq!(field_path("spec", "containers", i, ".image"), format!("spec.containers[{i}].image"));
        }
    }

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

    /// The API server writes `kind` before `spec`, but JSON objects have no order: a `spec` that comes first is
    /// read once the kind is known, to the same workload, or the same error naming the same field.
    #[test]
    fn text_reads_alike_in_any_key_order() {
        let tpl = json!({"spec": {"containers": [{"name": "a", "image": "nginx"}], "volumes": [{"name": "v"}]}});
        let cases = [
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "prod"},
                "spec": {"replicas": 4, "template": tpl}}),
            json!({"kind": "CronJob", "metadata": {"name": "c"},
                "spec": {"jobTemplate": {"spec": {"parallelism": 2, "template": tpl}}}}),
            json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": tpl["spec"]}),
            json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": 42}]}}),
            json!({"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": {"volumes": 1}}}}),
            json!({"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": 7}}),
            json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": 7}),
            json!({"kind": "Deployment", "metadata": {"name": "d"}, "spec": null}),
            json!({"kind": "ConfigMap", "spec": {"template": 1}}),
        ];
        let seen = |r: Result<Option<Workload>, WorkloadError>| match r {
            Ok(Some(w)) => format!("{:?} {:?} {:?}", w.object, w.containers(), w.pods),
            Ok(None) => "none".into(),
            Err(e) => e.to_string(),
        };
        for obj in cases {
            let map = obj.as_object().unwrap();
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| (*k != "spec", *k == "kind"));
            let fields: Vec<String> = keys.iter().map(|k| format!("{}:{}", json!(k), map[*k])).collect();
            let spec_first = format!("{{{}}}", fields.join(","));
            assert!(spec_first.starts_with(r#"{"spec""#) && spec_first.contains(r#""kind""#), "{spec_first}");
            let kind_first = obj.to_string();
            assert_eq!(seen(Workload::from_json(&spec_first, "d")), seen(Workload::from_json(&kind_first, "d")));
        }
        // A key written with an escape is the same key.
        let escaped = r#"{"kind":"Pod","\u0073pec":{"containers":[{"name":"a","image":"x"}]}}"#;
        assert_eq!(Workload::from_json(escaped, "d").unwrap().unwrap().containers()[0].image, Some("x"));
        // Errors name the field inside the object, wherever it was found.
        let bad = r#"{"spec":{"template":{"spec":{"containers":[{"name":"a","image":1}]}}},"kind":"Job"}"#;
        let err = Workload::from_json(bad, "d").unwrap_err().to_string();
        assert!(err.contains("field spec.template.spec.containers[0].image: invalid type"), "{err}");
        assert!(!err.contains("line 1"), "a position in the review's text helps no one: {err}");
    }

    /// Below the top level the first of repeated keys counts, and a null reads as absent; at the top level a
    /// repeated field is an error, as for any decoded struct.
    #[test]
    fn repeated_keys_read_as_before() {
        let w = |text: &str| Workload::from_json(text, "d");
        let first = w(r#"{"kind":"Deployment","spec":{"replicas":2,"replicas":5,
            "template":{"spec":{"containers":[{"name":"a","image":"one"}]}},
            "template":{"spec":{"containers":[{"name":"b","image":"two"}]}}}}"#)
        .unwrap()
        .unwrap();
        assert_eq!((first.pods, first.containers()[0].image), (Some(2), Some("one")));
        let null_first = w(r#"{"kind":"Deployment","spec":{"template":null,"template":{"spec":{}}}}"#);
        assert!(null_first.unwrap().unwrap().containers().is_empty());
        let err = w(r#"{"kind":"Pod","kind":"Deployment","spec":{}}"#).unwrap_err().to_string();
        assert!(err.contains("duplicate field `kind`"), "{err}");
        assert!(w(r#"{"kind":"Pod","spec":{},"spec":{}}"#).unwrap_err().to_string().contains("duplicate field"));
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
