//! Docker config files as pull secrets and nodes hold them: `config.json` / `.dockerconfigjson` and the legacy
//! `.dockercfg`. Errors never quote the payload.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, STANDARD_NO_PAD as B64_RAW};
use serde::Deserialize;

use super::Credential;

/// Why a dockerconfig could not be read. Messages never include the payload.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("entry {key:?}: field auth is not base64 of user:password")]
    Auth { key: String },
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize, Default)]
struct Entry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
}

/// A parsed dockerconfig: key → credential, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DockerConfig(pub Vec<(String, Credential)>);

impl DockerConfig {
    /// `{"auths": {...}}`, the `kubernetes.io/dockerconfigjson` and `~/.docker/config.json` format.
    pub fn from_config_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let parsed: DockerConfigJson = serde_json::from_slice(bytes).map_err(json_error)?;
        Self::from_entries(parsed.auths)
    }

    /// The legacy `kubernetes.io/dockercfg` format: the `auths` map without its wrapper.
    pub fn from_dockercfg(bytes: &[u8]) -> Result<Self, ConfigError> {
        let parsed: BTreeMap<String, Entry> = serde_json::from_slice(bytes).map_err(json_error)?;
        Self::from_entries(parsed)
    }

    fn from_entries(entries: BTreeMap<String, Entry>) -> Result<Self, ConfigError> {
        let mut out = Vec::new();
        for (key, e) in entries {
            let (mut username, mut password) = (e.username.unwrap_or_default(), e.password.unwrap_or_default());
            if let Some(auth) = e.auth.filter(|a| !a.is_empty()) {
                // The kubelet decodes padded base64 when the field ends in '=', unpadded otherwise
                // (credentialprovider/config.go, decodeDockerConfigFieldAuth).
                let auth = auth.trim();
                let decoded = if auth.ends_with('=') { B64.decode(auth) } else { B64_RAW.decode(auth) };
                let decoded = decoded.ok().and_then(|b| String::from_utf8(b).ok());
                let (u, p) = decoded
                    .as_deref()
                    .and_then(|d| d.split_once(':'))
                    .ok_or_else(|| ConfigError::Auth { key: key.clone() })?;
                username = u.to_string();
                password = p.to_string();
            }
            out.push((key, Credential::new(username, password)));
        }
        Ok(Self(out))
    }
}

/// serde_json errors quote the offending input; keep only the position so a payload never leaks.
fn json_error(e: serde_json::Error) -> ConfigError {
    let what = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected structure",
        serde_json::error::Category::Eof => "unexpected end of input",
    };
    ConfigError::Json(format!("{what} at line {} column {}", e.line(), e.column()))
}

/// A pull secret as the engine sees it: type and decoded data, and what its dockerconfig reads as — worked
/// out once per secret, on first use, not once per review (decoding a pull secret's base64 and JSON for every
/// review was a fifth of a review that carries one).
/// Its fields are private so that what was parsed always matches what it holds.
#[derive(Clone, Default)]
pub struct SecretData {
    type_: String,
    data: BTreeMap<String, Vec<u8>>,
    /// Why the object could not be read at all (e.g. a data value that is not base64). Such a secret exists, so
    /// a pod that names it hears that it cannot be used, not that it is missing.
    unreadable: Option<String>,
    parsed: std::sync::OnceLock<Result<DockerConfig, Unusable>>,
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretData")
            .field("type", &self.type_)
            .field("keys", &self.data.keys())
            .field("unreadable", &self.unreadable)
            .finish()
    }
}

pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CFG: &str = "kubernetes.io/dockercfg";

/// Why a pull secret gives no credentials, and what the kubelet then does with the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// The kubelet skips it (wrong type, no dockerconfig key): pulls go on without it.
    Skipped(String),
    /// Its dockerconfig is not JSON or an `auth` field does not decode: the kubelet's
    /// `secret.MakeDockerKeyring` returns that error before any pull, so every image of the pod fails.
    Malformed(String),
}

impl SecretData {
    pub fn new(type_: String, data: BTreeMap<String, Vec<u8>>, unreadable: Option<String>) -> Self {
        Self { type_, data, unreadable, parsed: std::sync::OnceLock::new() }
    }

    /// The Secret's type.
    pub fn type_(&self) -> &str {
        &self.type_
    }

    /// Whether two readings hold the same type and data.
    pub fn same_content(&self, other: &SecretData) -> bool {
        self.type_ == other.type_ && self.data == other.data
    }

    /// The dockerconfig inside a pull secret, or why it cannot be used; read on first ask and kept.
    pub fn docker_config(&self) -> &Result<DockerConfig, Unusable> {
        self.parsed.get_or_init(|| self.read_docker_config())
    }

    /// Reads the dockerconfig inside a pull secret, or says why it cannot be used. The split follows the
    /// kubelet's `secretsToTrackedDockerConfigs`: only a secret of the right type with a non-empty dockerconfig
    /// key is parsed, and only a parse error fails the pod.
    fn read_docker_config(&self) -> Result<DockerConfig, Unusable> {
        if let Some(why) = &self.unreadable {
            // Only a manifest can hold this (the API server rejects such a Secret), so it never reaches a node.
            return Err(Unusable::Skipped(why.clone()));
        }
        type Parse = fn(&[u8]) -> Result<DockerConfig, ConfigError>;
        let (key, parse): (&str, Parse) = match self.type_.as_str() {
            DOCKER_CONFIG_JSON => (".dockerconfigjson", DockerConfig::from_config_json),
            DOCKER_CFG => (".dockercfg", DockerConfig::from_dockercfg),
            other => {
                return Err(Unusable::Skipped(format!(
                    "its type is {other:?}; pull secrets must be {DOCKER_CONFIG_JSON} or {DOCKER_CFG} \
                     (create it with `kubectl create secret docker-registry`)"
                )));
            }
        };
        let bytes = self
            .data
            .get(key)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| Unusable::Skipped(format!("it has no data key {key}")))?;
        parse(bytes).map_err(|e| Unusable::Malformed(format!("data key {key}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_secret_formats_and_auth() {
        let auth = B64.encode("alice:s3cret");
        let json = format!(r#"{{"auths":{{"r.io":{{"auth":"{auth}"}},"s.io":{{"username":"bob","password":"pw"}}}}}}"#);
        let c = DockerConfig::from_config_json(json.as_bytes()).unwrap();
        assert_eq!(c.0[0].1, Credential::new("alice", "s3cret"));
        assert_eq!(c.0[1].1.username(), "bob");
        let legacy = format!(r#"{{"r.io":{{"auth":"{auth}","email":"a@b"}}}}"#);
        assert_eq!(DockerConfig::from_dockercfg(legacy.as_bytes()).unwrap().0[0].1.username(), "alice");
    }

    /// credentialprovider/config.go `decodeDockerConfigFieldAuth`: padded base64 when the field ends in `=`,
    /// unpadded otherwise; the first `:` splits user from password.
    #[test]
    fn auth_decodes_like_the_kubelet() {
        let entry = |auth: &str| format!(r#"{{"auths":{{"r.io":{{"auth":"{auth}"}}}}}}"#);
        let parse = |auth: &str| DockerConfig::from_config_json(entry(auth).as_bytes()).map(|c| c.0[0].1.clone());
        let alice = Credential::new("alice", "alice-password");
        assert_eq!(parse("YWxpY2U6YWxpY2UtcGFzc3dvcmQ=").unwrap(), alice, "padded");
        assert_eq!(parse("YWxpY2U6YWxpY2UtcGFzc3dvcmQ").unwrap(), alice, "unpadded");
        let colon = parse(&B64.encode("u:p:q")).unwrap();
        assert_eq!((colon.username(), colon.password()), ("u", "p:q"));
        assert!(parse("YWxpY2U6YWxpY2UtcGFzc3dvcmQ==").is_err(), "wrong padding");
    }

    #[test]
    fn errors_never_echo_the_payload() {
        let err = DockerConfig::from_config_json(br#"{"auths": {"r.io": {"password": "hunter2", }}"#).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let bad_auth = r#"{"auths":{"r.io":{"auth":"aHVudGVyMg=="}}}"#; // "hunter2", no colon
        let err = DockerConfig::from_config_json(bad_auth.as_bytes()).unwrap_err().to_string();
        assert!(!err.contains("hunter2") && err.contains("r.io"), "{err}");
        let c = Credential::new("u", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
