//! Manifest and index parsing: which platforms does a digest serve?

use serde::Deserialize;

use crate::platform::Platform;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Everything a kubelet's runtime accepts, indexes first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Registries cap manifests at 4 MiB (distribution's default); anything bigger is not a manifest.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Image configs carry history and can be larger, but not without bound.
pub const MAX_CONFIG_BYTES: usize = 8 * 1024 * 1024;

/// What a manifest body says.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// An index or manifest list: its runnable platforms (attestations and `unknown/unknown` dropped), and
    /// whether it also lists images without a platform (containerd then reads their configs), so that an empty
    /// list means "platforms unknown" rather than "nothing runnable".
    Index { platforms: Vec<Platform>, unlabelled: bool },
    /// A single image: its config blob holds the platform.
    Image { config_digest: String },
    /// A schema 1 manifest names its architecture itself.
    Schema1(Platform),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    architecture: Option<String>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(default)]
    digest: String,
    #[serde(default)]
    platform: Option<RawPlatform>,
    #[serde(default)]
    annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("malformed manifest: {0}")]
    Malformed(String),
    #[error("manifest has no config descriptor and no manifest list")]
    Shape,
}

/// Parses a manifest body; `content_type` is the registry's Content-Type, used when the body has no
/// `mediaType`.
pub fn parse(body: &[u8], content_type: &str) -> Result<Parsed, ManifestError> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| ManifestError::Malformed(e.to_string()))?;
    let media_type = raw.media_type.as_deref().unwrap_or(content_type);
    if raw.schema_version == Some(1) || media_type.starts_with(DOCKER_V1_SIGNED) {
        let arch = raw.architecture.unwrap_or_else(|| "amd64".into());
        return Ok(Parsed::Schema1(Platform::new("linux", &arch, None)));
    }
    if let Some(list) = raw.manifests {
        let runnable: Vec<Descriptor> = list
            .into_iter()
            .filter(|d| {
                let attestation = d
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("vnd.docker.reference.type"))
                    .is_some_and(|t| t == "attestation-manifest");
                !attestation
            })
            .collect();
        let unlabelled = runnable.iter().any(|d| d.platform.is_none());
        let mut platforms: Vec<Platform> = runnable
            .into_iter()
            .filter_map(|d| d.platform)
            .map(|p| Platform::new(&p.os, &p.architecture, p.variant.as_deref()))
            .filter(|p| !p.is_unknown() && !p.os.is_empty() && !p.architecture.is_empty())
            .collect();
        platforms.sort();
        platforms.dedup();
        return Ok(Parsed::Index { platforms, unlabelled });
    }
    match raw.config {
        Some(c) if !c.digest.is_empty() => Ok(Parsed::Image { config_digest: c.digest }),
        _ => Err(ManifestError::Shape),
    }
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// The platform an image config blob declares.
pub fn config_platform(body: &[u8]) -> Result<Platform, ManifestError> {
    let c: RawConfig = serde_json::from_slice(body).map_err(|e| ManifestError::Malformed(e.to_string()))?;
    if c.os.is_empty() || c.architecture.is_empty() {
        return Err(ManifestError::Malformed("image config names no os/architecture".into()));
    }
    Ok(Platform::new(&c.os, &c.architecture, c.variant.as_deref()))
}

/// `sha256:<hex>` of a body.
pub fn sha256_digest(body: &[u8]) -> String {
    digest_with(&aws_lc_rs::digest::SHA256, "sha256", body)
}

fn digest_with(alg: &'static aws_lc_rs::digest::Algorithm, name: &str, body: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(alg, body);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{name}:{hex}")
}

/// Whether `body` hashes to `digest`, for every algorithm the kubelet accepts (sha256, sha384, sha512). Any
/// other algorithm is never verified, so never a match.
pub fn matches_digest(digest: &str, body: &[u8]) -> bool {
    use aws_lc_rs::digest::{SHA256, SHA384, SHA512};
    let (name, alg) = match digest.split_once(':').map(|(a, _)| a) {
        Some("sha256") => ("sha256", &SHA256),
        Some("sha384") => ("sha384", &SHA384),
        Some("sha512") => ("sha512", &SHA512),
        _ => return false,
    };
    digest_with(alg, name, body) == digest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_drops_attestations_and_unknown() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
          {"digest":"sha256:a","platform":{"os":"linux","architecture":"amd64"}},
          {"digest":"sha256:b","platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
          {"digest":"sha256:c","platform":{"os":"unknown","architecture":"unknown"},
           "annotations":{"vnd.docker.reference.type":"attestation-manifest"}},
          {"digest":"sha256:d","platform":{"os":"linux","architecture":"arm"},
           "annotations":{"vnd.docker.reference.type":"attestation-manifest"}}]}"#;
        let Parsed::Index { platforms, unlabelled } = parse(body, "").unwrap() else { panic!() };
        let names: Vec<String> = platforms.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["linux/amd64", "linux/arm64"]);
        assert!(!unlabelled);
    }

    #[test]
    fn an_index_of_attestations_only_is_empty_and_one_without_platforms_is_unlabelled() {
        let only_attestations =
            br#"{"manifests":[{"digest":"sha256:c","platform":{"os":"unknown","architecture":"unknown"}}]}"#;
        assert_eq!(
            parse(only_attestations, OCI_INDEX).unwrap(),
            Parsed::Index { platforms: vec![], unlabelled: false }
        );
        let unlabelled = br#"{"manifests":[{"digest":"sha256:c"}]}"#;
        assert_eq!(parse(unlabelled, OCI_INDEX).unwrap(), Parsed::Index { platforms: vec![], unlabelled: true });
    }

    #[test]
    fn digests_verify_with_their_own_algorithm() {
        let body = b"{}";
        let d256 = sha256_digest(body);
        let d384 = digest_with(&aws_lc_rs::digest::SHA384, "sha384", body);
        let d512 = digest_with(&aws_lc_rs::digest::SHA512, "sha512", body);
        for d in [&d256, &d384, &d512] {
            assert!(matches_digest(d, body), "{d}");
            assert!(!matches_digest(d, b"{ }"), "{d}");
        }
        assert!(!matches_digest(&format!("md5:{}", "0".repeat(32)), body));
        assert!(!matches_digest(&d512.replace("sha512", "sha384"), body));
    }

    #[test]
    fn image_manifest_points_at_config() {
        let body = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:cfg","size":1},"layers":[]}"#;
        assert_eq!(parse(body, DOCKER_V2).unwrap(), Parsed::Image { config_digest: "sha256:cfg".into() });
        let p = config_platform(br#"{"os":"linux","architecture":"arm","variant":"v6"}"#).unwrap();
        assert_eq!(p.to_string(), "linux/arm/v6");
    }

    #[test]
    fn malformed_is_an_error_not_a_panic() {
        for body in [&b"{"[..], b"[]", b"{\"config\":{}}", b"null"] {
            assert!(parse(body, OCI_MANIFEST).is_err());
        }
        assert!(config_platform(b"{}").is_err());
    }
}
