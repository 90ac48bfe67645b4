//! The report contract: one container's verdict, as `check` prints it in JSON (and renders it as text, SARIF and
//! JUnit) and as the webhook turns it into a review response. Field names and reason codes are the contract;
//! `tests/integration/check_cli.rs` pins them.

use std::sync::Arc;

use serde::Serialize;

use crate::platform::Platform;
use crate::policy::{Reason, Verdict};
use crate::workload::{ContainerType, ObjectRef};

/// One credential candidate as reported: where it came from and the key that matched.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CredentialRef {
    pub secret: Option<String>,
    /// The kubelet credential provider plugin that gave it (`secret` is then null).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub key: String,
}

/// The verdict for one container, in the JSON contract's shape.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResult {
    /// The object the container is in, shared by its containers' results.
    pub object: Arc<ObjectRef>,
    pub container: String,
    pub container_type: ContainerType,
    /// JSON path of the image field inside the object.
    pub field: String,
    pub image: String,
    pub reference: Option<String>,
    pub verdict: Verdict,
    pub reason: Reason,
    /// The whole text: `problem`, `Fix: fix`, then `notes`.
    pub message: String,
    /// What is wrong, or what was found.
    pub problem: String,
    /// What to do about it; absent when there is nothing to do.
    pub fix: Option<String>,
    /// Further facts that matter to whoever fixes it.
    pub notes: Vec<String>,
    pub suggestions: Vec<String>,
    pub digest: Option<String>,
    /// The image's platforms, shared with the cache entry they came from.
    pub platforms: Arc<Vec<Platform>>,
    pub credentials: Vec<CredentialRef>,
    pub credential_used: Option<usize>,
    /// The host that served the image when mirrors are configured for its registry (`mirror https://…/`,
    /// `upstream docker.io`), so "the mirror lacks it" is told from "it does not exist".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
}

impl ContainerResult {
    /// How messages name the pull: `container "web"`, or `image volume "models"`.
    pub fn label(&self) -> String {
        match self.container_type {
            ContainerType::ImageVolume => format!("image volume {:?}", self.container),
            _ => format!("container {:?}", self.container),
        }
    }
}
