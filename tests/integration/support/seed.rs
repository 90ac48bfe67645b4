//! Pushes small synthetic images into a registry through its real push API: blobs, then manifests.

use serde_json::{Value, json};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub fn sha256(b: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    format!("sha256:{}", d.as_ref().iter().map(|x| format!("{x:02x}")).collect::<String>())
}

pub struct Pusher {
    pub base: String,
    client: reqwest::Client,
}

/// One platform's image: its manifest bytes and digest.
pub struct Pushed {
    pub digest: String,
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
    pub platform: Option<(String, String, Option<String>)>,
}

impl Pusher {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            // Seeding only: a TLS test registry's certificate is the test CA's, which this client need not trust.
            client: reqwest::Client::builder().no_proxy().tls_danger_accept_invalid_certs(true).build().unwrap(),
        }
    }

    pub async fn blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let resp = self.client.post(format!("{}/v2/{repo}/blobs/uploads/", self.base)).send().await.unwrap();
        assert_eq!(resp.status(), 202, "start upload to {repo}");
        let loc = resp.headers()["location"].to_str().unwrap().to_string();
        let loc = if loc.starts_with("http") { loc } else { format!("{}{loc}", self.base) };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let resp = self
            .client
            .put(format!("{loc}{sep}digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "finish upload to {repo}: {}", resp.text().await.unwrap_or_default());
        digest
    }

    pub async fn manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let resp = self
            .client
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("Content-Type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "push manifest {repo}:{reference}: {}", resp.text().await.unwrap_or_default());
    }

    /// A single-platform image (config + one layer), pushed by digest.
    pub async fn image(&self, repo: &str, os: &str, arch: &str, variant: Option<&str>, oci: bool) -> Pushed {
        let mut config = json!({"architecture": arch, "os": os, "rootfs": {"type": "layers", "diff_ids": []},
                                "config": {}, "created": "2026-01-01T00:00:00Z"});
        if let Some(v) = variant {
            config["variant"] = json!(v);
        }
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let layer = format!("layer of {repo} for {os}/{arch}/{variant:?}").into_bytes();
        let config_digest = self.blob(repo, &config_bytes).await;
        let layer_digest = self.blob(repo, &layer).await;
        let (media_type, config_type, layer_type) = if oci {
            (OCI_MANIFEST, "application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (
                DOCKER_V2,
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        };
        let manifest = json!({
            "schemaVersion": 2, "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": config_bytes.len()},
            "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": layer.len()}]
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let digest = sha256(&bytes);
        self.manifest(repo, &digest, media_type, &bytes).await;
        Pushed { digest, media_type, bytes, platform: Some((os.into(), arch.into(), variant.map(Into::into))) }
    }

    /// An index (OCI) or manifest list (Docker) over `images`, optionally with an attestation entry.
    pub async fn index(&self, repo: &str, images: &[Pushed], oci: bool, attestation: bool) -> Pushed {
        let mut manifests: Vec<Value> = images
            .iter()
            .map(|p| {
                let (os, arch, variant) = p.platform.clone().unwrap();
                let mut plat = json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    plat["variant"] = json!(v);
                }
                json!({"mediaType": p.media_type, "digest": p.digest, "size": p.bytes.len(), "platform": plat})
            })
            .collect();
        if attestation {
            let att = self.image(repo, "unknown", "unknown", None, true).await;
            manifests.push(json!({"mediaType": OCI_MANIFEST, "digest": att.digest, "size": att.bytes.len(),
                "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                "vnd.docker.reference.digest": images[0].digest}}));
        }
        let media_type = if oci { OCI_INDEX } else { DOCKER_LIST };
        let bytes =
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests})).unwrap();
        let digest = sha256(&bytes);
        self.manifest(repo, &digest, media_type, &bytes).await;
        Pushed { digest, media_type, bytes, platform: None }
    }

    pub async fn tag(&self, repo: &str, tag: &str, p: &Pushed) {
        self.manifest(repo, tag, p.media_type, &p.bytes).await;
    }
}

/// What the standard seed pushed, for tests that assert on digests.
pub struct Seeded {
    pub nginx_index: String,
    pub myapp_v230: String,
}

/// The standard image set every registry in the tests serves.
pub async fn standard(p: &Pusher) -> Seeded {
    // library/nginx: OCI index, amd64 + arm64 + an attestation entry.
    let amd = p.image("library/nginx", "linux", "amd64", None, true).await;
    let arm = p.image("library/nginx", "linux", "arm64", Some("v8"), true).await;
    let nginx = p.index("library/nginx", &[amd, arm], true, true).await;
    for t in ["latest", "1.25.3", "1.25.4"] {
        p.tag("library/nginx", t, &nginx).await;
    }
    // library/alpine: Docker manifest list, amd64 + arm/v7 + arm64/v8.
    let a = p.image("library/alpine", "linux", "amd64", None, false).await;
    let b = p.image("library/alpine", "linux", "arm", Some("v7"), false).await;
    let c = p.image("library/alpine", "linux", "arm64", Some("v8"), false).await;
    let alpine = p.index("library/alpine", &[a, b, c], false, false).await;
    for t in ["3.19", "3.20", "latest"] {
        p.tag("library/alpine", t, &alpine).await;
    }
    // team/myapp: single-arch Docker v2, amd64, tags v2.3.0 and v2.3.2 (v2.3.1 was never pushed).
    let v230 = p.image("team/myapp", "linux", "amd64", None, false).await;
    p.tag("team/myapp", "v2.3.0", &v230).await;
    let v232 = p.image("team/myapp", "linux", "amd64", Some("v1"), false).await;
    p.tag("team/myapp", "v2.3.2", &v232).await;
    // team/amd64-only: single-arch OCI manifest.
    let only = p.image("team/amd64-only", "linux", "amd64", None, true).await;
    p.tag("team/amd64-only", "1.0", &only).await;
    // team/arm-only: single-arch arm64.
    let arm_only = p.image("team/arm-only", "linux", "arm64", None, false).await;
    p.tag("team/arm-only", "1.0", &arm_only).await;
    // private/app: what only alice may pull from the token registry.
    let private = p.image("private/app", "linux", "amd64", None, false).await;
    p.tag("private/app", "1.0", &private).await;
    // public/tool: anonymous pulls allowed on the token registry.
    let tool = p.image("public/tool", "linux", "amd64", None, true).await;
    p.tag("public/tool", "1.0", &tool).await;
    Seeded { nginx_index: nginx.digest, myapp_v230: v230.digest }
}
