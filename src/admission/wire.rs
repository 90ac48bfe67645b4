//! The AdmissionReview v1 request as pullguard reads it: the fields a review uses, and the object and the old
//! object read as workloads in the same pass. Decoding the whole review into kube's
//! `AdmissionRequest<DynamicObject>` (a typed `ObjectMeta` with its managedFields, then a copy into a
//! `serde_json::Value`) was a tenth of a warm review's CPU; borrowing the objects as text to read them after
//! was another scan of each.

use kube::core::GroupVersionKind;
use kube::core::admission::{AdmissionResponse, Operation};
use kube::core::{Status, TypeMeta};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::workload::{ReadObject, Workload, WorkloadError};

/// `{"apiVersion", "kind", "request"}`, the objects in it read as `O`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct Review<O> {
    api_version: String,
    kind: String,
    #[serde(default)]
    request: Option<Wire<O>>,
}

/// The request as it is on the wire, as far as pullguard reads it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct Wire<O> {
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(default)]
    user_info: UserInfo,
    #[serde(default)]
    object: Option<O>,
    #[serde(default)]
    old_object: Option<O>,
    #[serde(default)]
    dry_run: bool,
}

/// An object of the review as a workload: `Ok(None)` for a kind without pods, `Err` when it cannot be read.
pub type ObjectWorkload = Result<Option<Workload>, WorkloadError>;

/// The request of an AdmissionReview, as far as pullguard reads it.
#[derive(Debug)]
pub struct Request {
    /// The review's own apiVersion and kind, echoed in the response.
    pub types: TypeMeta,
    pub uid: String,
    /// The kind of the object under review.
    pub kind: GroupVersionKind,
    pub name: String,
    pub namespace: Option<String>,
    pub operation: Operation,
    pub user_info: UserInfo,
    /// The object under review (`None`: the review carries none), its namespace defaulted to the review's.
    pub object: Option<ObjectWorkload>,
    pub old_object: Option<ObjectWorkload>,
    pub dry_run: bool,
}

/// Who asks.
#[derive(Debug, Default, Deserialize)]
pub struct UserInfo {
    #[serde(default)]
    pub username: Option<String>,
}

/// Why a body is not an AdmissionReview pullguard can answer.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// `body` read as JSON: from `text`, the same body already checked to be UTF-8, when there is one.
fn read<'a, T: Deserialize<'a>>(body: &'a [u8], text: Option<&'a str>) -> serde_json::Result<T> {
    match text {
        Some(text) => serde_json::from_str(text),
        None => serde_json::from_slice(body),
    }
}

impl Request {
    /// Reads a review body: in one pass, objects included; where an object cannot be read that way, the review
    /// again with its objects kept as text, for the reading of each to say what is wrong with it.
    pub fn parse(body: &[u8]) -> Result<Self, ReviewError> {
        // Read as text when the body is UTF-8 (one check for the whole body, not one per string read); else
        // as bytes, which reads what it can and says where it cannot.
        let text = std::str::from_utf8(body).ok();
        if let Ok(review) = read::<Review<ReadObject>>(body, text) {
            return Self::from_wire(review, |o, namespace| Ok(o.into_workload(namespace)));
        }
        let review: Review<&RawValue> = read(body, text)?;
        Self::from_wire(review, |o, namespace| Workload::from_json(o.get(), namespace))
    }

    fn from_wire<O>(review: Review<O>, read: impl Fn(O, &str) -> ObjectWorkload) -> Result<Self, ReviewError> {
        let Wire { uid, kind, name, namespace, operation, user_info, object, old_object, dry_run } =
            review.request.ok_or(ReviewError::NoRequest)?;
        let ns = namespace.as_deref().unwrap_or_default();
        let (object, old_object) = (object.map(|o| read(o, ns)), old_object.map(|o| read(o, ns)));
        Ok(Self {
            types: TypeMeta { api_version: review.api_version, kind: review.kind },
            uid,
            kind,
            name,
            namespace,
            operation,
            user_info,
            object,
            old_object,
            dry_run,
        })
    }

    /// An allowing response to this request, to be changed into what the review decides.
    pub fn response(&self) -> AdmissionResponse {
        // kube builds responses only from its own request type; `invalid` is its one other constructor.
        let mut response = AdmissionResponse::invalid("");
        response.types = self.types.clone();
        response.uid = self.uid.clone();
        response.allowed = true;
        response.result = Status::default();
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::DynamicObject;
    use kube::core::admission::{AdmissionRequest, AdmissionReview};

    /// The response is the one kube's own request type gives, field for field on the wire.
    #[test]
    fn responses_match_kubes() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "uid":"705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind":{"group":"apps","version":"v1","kind":"Deployment"},
            "resource":{"group":"apps","version":"v1","resource":"deployments"},
            "name":"web","namespace":"prod","operation":"UPDATE",
            "userInfo":{"username":"alice","groups":["system:authenticated"]},
            "object":{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"}},
            "oldObject":null,"dryRun":true,"options":{"kind":"UpdateOptions"}}}"#;
        let ours = Request::parse(body).unwrap();
        assert_eq!(ours.kind.kind, "Deployment");
        assert_eq!(ours.namespace.as_deref(), Some("prod"));
        assert_eq!(ours.user_info.username.as_deref(), Some("alice"));
        assert!(ours.dry_run && ours.old_object.is_none());
        let object = ours.object.as_ref().unwrap().as_ref().unwrap().as_ref().unwrap();
        assert_eq!((object.object.name.as_str(), object.object.namespace.as_str()), ("web", "prod"));
        let theirs: AdmissionRequest<DynamicObject> =
            serde_json::from_slice::<AdmissionReview<DynamicObject>>(body).unwrap().try_into().unwrap();
        let wire = |r: AdmissionResponse| serde_json::to_value(r.deny("no").into_review()).unwrap();
        assert_eq!(wire(ours.response()), wire(AdmissionResponse::from(&theirs)));

        assert!(matches!(
            Request::parse(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#),
            Err(ReviewError::NoRequest)
        ));
        assert!(matches!(Request::parse(b"{"), Err(ReviewError::Json(_))));
    }

    /// An object that cannot be read with the review does not cost the review: the review is read again with
    /// the object as text, and the object's reading says what is wrong with it; the other object stands.
    #[test]
    fn an_unreadable_object_keeps_the_review_and_says_why() {
        let review = |object: &str, old: &str| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u",
                "kind":{{"group":"","version":"v1","kind":"Pod"}},"namespace":"prod","operation":"UPDATE",
                "object":{object},"oldObject":{old}}}}}"#
            )
        };
        let good = r#"{"spec":{"containers":[{"name":"a","image":"nginx"}]},"kind":"Pod","metadata":{"name":"p"}}"#;
        let bad = r#"{"kind":"Pod","metadata":{"name":"p"},"spec":{"containers":"nope"}}"#;
        let r = Request::parse(review(bad, good).as_bytes()).unwrap();
        let err = r.object.unwrap().unwrap_err().to_string();
        assert!(err.contains(r#"Pod "p": field spec.containers: invalid type"#), "{err}");
        let old = r.old_object.unwrap().unwrap().unwrap();
        assert_eq!((old.containers()[0].image, old.object.namespace.as_str()), (Some("nginx"), "prod"));
        let r = Request::parse(review(good, "null").as_bytes()).unwrap();
        assert!(r.object.unwrap().unwrap().is_some() && r.old_object.is_none());
    }

    /// A body that is not all UTF-8 reads as it always did: a stray byte in a field pullguard skips costs
    /// nothing, one in a field it reads is an error.
    #[test]
    fn bytes_that_are_not_utf8_read_as_before() {
        let review = |label: &[u8], image: &[u8]| {
            [
                &br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u",
                "kind":{"group":"","version":"v1","kind":"Pod"},"namespace":"prod","operation":"CREATE",
                "object":{"kind":"Pod","metadata":{"name":"p","labels":{"a":""#[..],
                label,
                br#""}},"spec":{"containers":[{"name":"a","image":""#,
                image,
                br#""}]}}}}"#,
            ]
            .concat()
        };
        let r = Request::parse(&review(b"x\xffy", b"nginx")).unwrap();
        let object = r.object.unwrap().unwrap().unwrap();
        assert_eq!(object.containers()[0].image, Some("nginx"));
        assert!(Request::parse(&review(b"x", b"ngi\xffnx")).is_err());
    }
}
