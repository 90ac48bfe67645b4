//! The AdmissionReview v1 request as pullguard reads it: the fields a review uses, with the object and the old
//! object kept as JSON text borrowed from the body until a review needs them. Decoding the whole review into
//! kube's `AdmissionRequest<DynamicObject>` (a typed `ObjectMeta` with its managedFields, then a copy into a
//! `serde_json::Value`) was a tenth of a warm review's CPU.

use kube::core::GroupVersionKind;
use kube::core::admission::{AdmissionResponse, Operation};
use kube::core::{Status, TypeMeta};
use serde::Deserialize;
use serde_json::value::RawValue;

/// `{"apiVersion", "kind", "request"}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Review<'a> {
    pub api_version: String,
    pub kind: String,
    #[serde(borrow, default)]
    pub request: Option<Request<'a>>,
}

/// The request of an AdmissionReview, as far as pullguard reads it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    /// The review's own apiVersion and kind, echoed in the response.
    #[serde(skip)]
    pub types: TypeMeta,
    pub uid: String,
    /// The kind of the object under review.
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(borrow, default)]
    pub object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub old_object: Option<&'a RawValue>,
    #[serde(default)]
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

impl<'a> Request<'a> {
    /// Reads a review body.
    pub fn parse(body: &'a [u8]) -> Result<Self, ReviewError> {
        let review: Review<'a> = serde_json::from_slice(body)?;
        let mut request = review.request.ok_or(ReviewError::NoRequest)?;
        request.types = TypeMeta { api_version: review.api_version, kind: review.kind };
        Ok(request)
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
        assert!(ours.object.unwrap().get().contains(r#""name":"web""#));
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
}
