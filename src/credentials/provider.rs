//! Kubelet credential provider plugins (`--image-credential-provider-config` and `-bin-dir`), run as the
//! kubelet runs them: the kubelet's own `CredentialProviderConfig` file, `matchImages` matched like keyring
//! keys, the exec protocol (`CredentialProviderRequest` on stdin, `CredentialProviderResponse` on stdout),
//! one exec per image at a time, and the response cached under its `cacheKeyType` for its `cacheDuration`.
//!
//! Reference: kubernetes `pkg/credentialprovider/plugin/plugin.go` (`provide`, `getCachedCredentials`,
//! `ExecPlugin`) and `config.go` (`validateCredentialProviderConfig`).
//!
//! Service-account-token mode (KEP-4412, `tokenAttributes`): the node runs such a plugin with a token of the
//! *pod's* ServiceAccount. pullguard mints no tokens, so it does not run these; it says so instead (and a
//! ServiceAccount without a required annotation, which makes the kubelet skip the plugin, is known without
//! one).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::keyring::urls_match;
use super::{Credential, DockerConfig};

/// The kubelet's catch-all limit for one plugin run (`ExecPlugin`).
const KUBELET_EXEC_TIMEOUT: Duration = Duration::from_secs(60);
/// A response larger than this is not a credential response.
const MAX_RESPONSE_BYTES: u64 = 1 << 20;
/// Cached answers per provider; beyond it expired entries go, then the oldest.
const MAX_CACHE_ENTRIES: usize = 4096;
const GLOBAL_CACHE_KEY: &str = "global";
const PROVIDER_API_VERSIONS: &[&str] = &[
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
];

/// The kubelet's `CredentialProviderConfig`, as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    providers: Option<Vec<ProviderSpec>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderSpec {
    #[serde(default)]
    name: String,
    /// `Option` for these lists: Go's YAML reads `env:` with nothing after it as an empty list.
    #[serde(default)]
    match_images: Option<Vec<String>>,
    default_cache_duration: Option<String>,
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<EnvVar>>,
    token_attributes: Option<TokenAttributes>,
}

#[derive(Clone, Debug, Deserialize)]
struct EnvVar {
    name: String,
    #[serde(default)]
    value: String,
}

/// `tokenAttributes` of a provider in service-account-token mode.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenAttributes {
    #[serde(default)]
    pub service_account_token_audience: String,
    #[serde(default)]
    pub require_service_account: Option<bool>,
    #[serde(default)]
    pub required_service_account_annotation_keys: Vec<String>,
    #[serde(default)]
    pub optional_service_account_annotation_keys: Vec<String>,
}

/// Why the provider configuration is unusable: names the file and the provider.
#[derive(Debug, thiserror::Error)]
pub enum ProviderConfigError {
    #[error("credential provider config {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("credential provider config {path}: {message}")]
    Invalid { path: String, message: String },
}

/// One configured provider and its cache.
#[derive(Debug)]
struct Provider {
    name: String,
    match_images: Vec<String>,
    default_cache: Duration,
    api_version: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    token: Option<TokenAttributes>,
    binary: PathBuf,
    cache: Mutex<HashMap<String, Cached>>,
    inflight: Mutex<HashMap<String, Running>>,
}

type Running = Shared<BoxFuture<'static, Result<Answer, ProviderFailure>>>;

#[derive(Clone, Debug)]
struct Cached {
    config: DockerConfig,
    expires: Instant,
}

/// A decoded response: the credentials and how to cache them.
#[derive(Clone, Debug)]
struct Answer {
    config: DockerConfig,
    key_type: KeyType,
    /// `None`: the provider's `defaultCacheDuration`.
    duration: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyType {
    Image,
    Registry,
    Global,
}

/// Why a plugin gave no credentials. Messages never carry its output (it may hold credentials).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderFailure {
    #[error("could not run {binary}: {detail}")]
    Spawn { binary: String, detail: String },
    #[error("exited with {status}")]
    Exit { status: String },
    #[error("did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("printed a response that is not a CredentialProviderResponse: {0}")]
    Garbage(String),
    #[error("no ServiceAccount token: {0}")]
    Token(String),
}

/// What one provider said for one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderOutcome {
    /// Its credentials (possibly none) for the image.
    Credentials { provider: String, config: DockerConfig },
    /// It failed; on the node the kubelet then pulls without its credentials.
    Failed { provider: String, failure: ProviderFailure },
    /// A service-account-token provider: it needs a token of the pod's ServiceAccount, which pullguard does
    /// not mint.
    NeedsPodIdentity { provider: String, service_account: String },
    /// A service-account-token provider the kubelet skips for this pod: its ServiceAccount lacks a required
    /// annotation.
    AnnotationMissing { provider: String, service_account: String, annotation: String },
}

/// What policy and reports may know of a provider's outcome: never its credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderReport {
    Answered { provider: String },
    Failed { provider: String, failure: ProviderFailure },
    NeedsPodIdentity { provider: String, service_account: String },
    AnnotationMissing { provider: String, service_account: String, annotation: String },
}

impl ProviderOutcome {
    pub fn report(&self) -> ProviderReport {
        match self.clone() {
            ProviderOutcome::Credentials { provider, .. } => ProviderReport::Answered { provider },
            ProviderOutcome::Failed { provider, failure } => ProviderReport::Failed { provider, failure },
            ProviderOutcome::NeedsPodIdentity { provider, service_account } => {
                ProviderReport::NeedsPodIdentity { provider, service_account }
            }
            ProviderOutcome::AnnotationMissing { provider, service_account, annotation } => {
                ProviderReport::AnnotationMissing { provider, service_account, annotation }
            }
        }
    }
}

/// Mints a short-lived token of a ServiceAccount for one audience (a `TokenRequest`). Only with the explicit
/// opt-in `mintServiceAccountTokens`, and only for a provider's own audience.
pub trait TokenMinter: Send + Sync {
    fn mint<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<String, String>>;
}

/// The pod's ServiceAccount, as token-mode providers read it.
#[derive(Clone)]
pub struct PodIdentity<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// `None` when the ServiceAccount is not known to pullguard.
    pub annotations: Option<&'a BTreeMap<String, String>>,
    /// Set when tokens may be minted (opt-in, `serve` only).
    pub minter: Option<&'a dyn TokenMinter>,
}

/// A token minted for a plugin run, with what it was minted for. Never printed.
#[derive(Clone)]
struct PodToken {
    token: String,
    /// Cache and single-flight suffix: the ServiceAccount and the annotations passed, never the token.
    key: String,
    annotations: BTreeMap<String, String>,
}

/// Every configured provider, in configuration order.
#[derive(Debug, Default, Clone)]
pub struct Providers {
    list: Vec<Arc<Provider>>,
    /// `mintServiceAccountTokens`: run service-account-token providers with a token minted for the pod's
    /// ServiceAccount (opt-in; see README for the risk).
    pub mint_tokens: bool,
}

/// Audiences of the API server itself: a token minted for one of these would be a credential to the cluster,
/// handed to a plugin. Refused when minting is on.
const API_SERVER_AUDIENCES: &[&str] = &[
    "https://kubernetes.default.svc",
    "https://kubernetes.default.svc.cluster.local",
    "kubernetes.default.svc",
    "api",
    "kubernetes",
];

impl Providers {
    /// Reads and validates the kubelet's provider config; every provider's binary must be in `bin_dir`, as
    /// the kubelet requires at start.
    pub fn load(config: &Path, bin_dir: &Path) -> Result<Self, ProviderConfigError> {
        let path = config.display().to_string();
        let text = std::fs::read_to_string(config)
            .map_err(|source| ProviderConfigError::Read { path: path.clone(), source })?;
        let invalid = |message: String| ProviderConfigError::Invalid { path: path.clone(), message };
        let file: ConfigFile = serde_saphyr::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if file.kind != "CredentialProviderConfig" || !file.api_version.starts_with("kubelet.config.k8s.io/") {
            return Err(invalid(format!(
                "kind {:?} apiVersion {:?}: expected kind CredentialProviderConfig, apiVersion \
                 kubelet.config.k8s.io/v1",
                file.kind, file.api_version
            )));
        }
        let specs = file.providers.unwrap_or_default();
        if specs.is_empty() {
            return Err(invalid("providers: at least one provider is required".into()));
        }
        let mut list: Vec<Arc<Provider>> = Vec::new();
        for (i, p) in specs.into_iter().enumerate() {
            let match_images = p.match_images.clone().unwrap_or_default();
            let at = |m: String| invalid(format!("providers[{i}] ({:?}): {m}", p.name));
            if p.name.is_empty() || p.name.contains(['/', '\\']) || p.name == "." || p.name == ".." {
                return Err(at("name must be a file name in the plugin directory".into()));
            }
            if list.iter().any(|q| q.name == p.name) {
                return Err(at("duplicate name".into()));
            }
            if match_images.is_empty() {
                return Err(at("matchImages: at least one is required".into()));
            }
            if let Some(m) = match_images.iter().find(|m| !valid_match_image(m)) {
                return Err(at(format!(
                    "matchImages: {m:?} is not a valid image match (no scheme, globs only in the host)"
                )));
            }
            let default_cache = match p.default_cache_duration.as_deref().map(go_duration) {
                Some(Some(d)) => d,
                Some(None) => return Err(at("defaultCacheDuration: not a duration such as 12h or 30m".into())),
                None => return Err(at("defaultCacheDuration is required".into())),
            };
            if !PROVIDER_API_VERSIONS.contains(&p.api_version.as_str()) {
                return Err(at(format!("apiVersion must be one of {}", PROVIDER_API_VERSIONS.join(", "))));
            }
            if let Some(t) = &p.token_attributes
                && t.service_account_token_audience.is_empty()
            {
                return Err(at("tokenAttributes.serviceAccountTokenAudience is required".into()));
            }
            let binary = bin_dir.join(&p.name);
            if !binary.is_file() {
                return Err(at(format!("no plugin binary {}", binary.display())));
            }
            list.push(Arc::new(Provider {
                name: p.name,
                match_images,
                default_cache,
                api_version: p.api_version,
                args: p.args.unwrap_or_default(),
                env: p.env.unwrap_or_default().into_iter().map(|e| (e.name, e.value)).collect(),
                token: p.token_attributes,
                binary,
                cache: Mutex::default(),
                inflight: Mutex::default(),
            }));
        }
        Ok(Providers { list, mint_tokens: false })
    }

    /// Turns on token minting for service-account-token providers, refusing any whose audience is the API
    /// server's.
    pub fn enable_token_minting(&mut self) -> Result<(), String> {
        if let Some(p) = self.list.iter().find(|p| {
            p.token.as_ref().is_some_and(|t| API_SERVER_AUDIENCES.contains(&t.service_account_token_audience.as_str()))
        }) {
            return Err(format!(
                "provider {:?}: serviceAccountTokenAudience is the API server's; pullguard mints tokens only for a \
                 provider's own audience",
                p.name
            ));
        }
        self.mint_tokens = true;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether `repository` matches a `matchImages`-style pattern (`nodeAuthenticated` uses them too).
    pub fn image_matches(pattern: &str, repository: &str) -> bool {
        urls_match(pattern, repository)
    }

    /// Asks every provider whose `matchImages` match `repository` (`domain/path`, as the kubelet passes it), in
    /// configuration order, each bounded by `deadline`. A plugin run that outlives the deadline goes on (to the
    /// kubelet's one-minute limit) and fills the cache for the next review.
    pub async fn provide(
        &self,
        repository: &str,
        identity: Option<&PodIdentity<'_>>,
        deadline: Instant,
    ) -> Vec<ProviderOutcome> {
        let mut out = Vec::new();
        for p in self.list.iter().filter(|p| p.match_images.iter().any(|m| urls_match(m, repository))) {
            out.push(match (&p.token, identity) {
                (None, _) => p.outcome(repository, None, deadline).await,
                (Some(_), None) => continue,
                (Some(t), Some(id)) => p.with_identity(t, id, repository, deadline).await,
            });
        }
        out
    }
}

impl Provider {
    /// The provider's credentials for the image, as an outcome.
    async fn outcome(self: &Arc<Self>, image: &str, pod: Option<PodToken>, deadline: Instant) -> ProviderOutcome {
        let provider = self.name.clone();
        match self.clone().credentials(image, pod, deadline).await {
            Ok(config) => ProviderOutcome::Credentials { provider, config },
            Err(failure) => ProviderOutcome::Failed { provider, failure },
        }
    }

    /// A service-account-token provider for the pod's ServiceAccount: skipped by the kubelet when a required
    /// annotation is missing; run with a minted token only when minting is on and the ServiceAccount known.
    async fn with_identity(
        self: &Arc<Self>,
        t: &TokenAttributes,
        id: &PodIdentity<'_>,
        image: &str,
        deadline: Instant,
    ) -> ProviderOutcome {
        let provider = self.name.clone();
        let service_account = format!("{}/{}", id.namespace, id.name);
        let missing = t
            .required_service_account_annotation_keys
            .iter()
            .find(|k| id.annotations.is_some_and(|a| !a.contains_key(k.as_str())));
        if let Some(k) = missing {
            return ProviderOutcome::AnnotationMissing { provider, service_account, annotation: k.clone() };
        }
        let (Some(minter), Some(annotations)) = (id.minter, id.annotations) else {
            return ProviderOutcome::NeedsPodIdentity { provider, service_account };
        };
        let minted =
            tokio::time::timeout_at(deadline, minter.mint(id.namespace, id.name, &t.service_account_token_audience))
                .await
                .unwrap_or_else(|_| Err("the TokenRequest did not answer in time".into()));
        let token = match minted {
            Ok(token) => token,
            Err(e) => return ProviderOutcome::Failed { provider, failure: ProviderFailure::Token(e) },
        };
        let keys = t.required_service_account_annotation_keys.iter().chain(&t.optional_service_account_annotation_keys);
        let passed: BTreeMap<String, String> =
            keys.filter_map(|k| annotations.get(k).map(|v| (k.clone(), v.clone()))).collect();
        let key = format!("\u{0}sa={service_account}\u{0}{}", serde_json::to_string(&passed).unwrap_or_default());
        self.outcome(image, Some(PodToken { token, key, annotations: passed }), deadline).await
    }

    /// The cache (image, then registry, then global key), else one exec shared by concurrent asks.
    /// In token mode every key carries the ServiceAccount and its annotations, so one pod's answer never
    /// serves another ServiceAccount (the kubelet's `generateCacheKey`).
    async fn credentials(
        self: Arc<Self>,
        image: &str,
        pod: Option<PodToken>,
        deadline: Instant,
    ) -> Result<DockerConfig, ProviderFailure> {
        let registry = image.split('/').next().unwrap_or(image);
        let suffix = pod.as_ref().map(|p| p.key.clone()).unwrap_or_default();
        {
            let cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            for key in [image, registry, GLOBAL_CACHE_KEY] {
                if let Some(c) = cache.get(&format!("{key}{suffix}")).filter(|c| c.expires > now) {
                    return Ok(c.config.clone());
                }
            }
        }
        let run = {
            let mut inflight = self.inflight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            inflight
                .entry(format!("{image}{suffix}"))
                .or_insert_with(|| {
                    let this = self.clone();
                    let image = image.to_string();
                    let flight = format!("{image}{suffix}");
                    let task = tokio::spawn(async move {
                        let result = this.exec(&image, pod.as_ref()).await;
                        if let Ok(answer) = &result {
                            this.remember(&image, &suffix, answer);
                        }
                        this.inflight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&flight);
                        result
                    });
                    async move {
                        task.await.unwrap_or_else(|e| {
                            Err(ProviderFailure::Spawn { binary: String::new(), detail: e.to_string() })
                        })
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        let waited = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout_at(deadline, run).await {
            Ok(result) => result.map(|a| a.config),
            Err(_) => Err(ProviderFailure::TimedOut(waited)),
        }
    }

    fn remember(&self, image: &str, suffix: &str, answer: &Answer) {
        let duration = answer.duration.unwrap_or(self.default_cache);
        if duration.is_zero() {
            return;
        }
        let key = match answer.key_type {
            KeyType::Image => image.to_string(),
            KeyType::Registry => image.split('/').next().unwrap_or(image).to_string(),
            KeyType::Global => GLOBAL_CACHE_KEY.to_string(),
        } + suffix;
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.retain(|_, c| c.expires > now);
            if cache.len() >= MAX_CACHE_ENTRIES
                && let Some(oldest) = cache.iter().min_by_key(|(_, c)| c.expires).map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(key, Cached { config: answer.config.clone(), expires: now + duration });
    }

    /// `$ ENV=… <binDir>/<name> args… <<< CredentialProviderRequest`, with the process environment plus the
    /// configured variables, as the kubelet runs it.
    async fn exec(&self, image: &str, pod: Option<&PodToken>) -> Result<Answer, ProviderFailure> {
        let mut request = serde_json::json!({
            "kind": "CredentialProviderRequest",
            "apiVersion": self.api_version,
            "image": image,
        });
        if let Some(pod) = pod {
            request["serviceAccountToken"] = serde_json::json!(pod.token);
            request["serviceAccountAnnotations"] = serde_json::json!(pod.annotations);
        }
        let request = request.to_string();
        let binary = self.binary.display().to_string();
        let mut child = tokio::process::Command::new(&self.binary)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ProviderFailure::Spawn { binary: binary.clone(), detail: e.to_string() })?;
        let mut stdin = child.stdin.take();
        let mut stdout = child.stdout.take();
        let run = async {
            if let Some(stdin) = &mut stdin {
                // A plugin that does not read its request is its own business; its answer decides.
                let _ = stdin.write_all(request.as_bytes()).await;
            }
            drop(stdin);
            let mut out = Vec::new();
            if let Some(stdout) = &mut stdout {
                let _ = stdout.take(MAX_RESPONSE_BYTES + 1).read_to_end(&mut out).await;
            }
            let status = child.wait().await;
            (status, out)
        };
        let (status, out) = tokio::time::timeout(KUBELET_EXEC_TIMEOUT, run)
            .await
            .map_err(|_| ProviderFailure::TimedOut(KUBELET_EXEC_TIMEOUT))?;
        let status = status.map_err(|e| ProviderFailure::Spawn { binary, detail: e.to_string() })?;
        if !status.success() {
            return Err(ProviderFailure::Exit { status: status.to_string() });
        }
        if out.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(ProviderFailure::Garbage(format!("more than {MAX_RESPONSE_BYTES} bytes")));
        }
        let answer = decode_response(&out, &self.api_version)?;
        // The kubelet refuses a plugin that hands the ServiceAccount token back as the registry password.
        if let Some(pod) = pod
            && answer.config.0.iter().any(|(_, c)| c.password() == pod.token)
        {
            return Err(ProviderFailure::Garbage("it returned the ServiceAccount token as the password".into()));
        }
        Ok(answer)
    }
}

/// `ExecPlugin`'s checks: the apiVersion must be the provider's, the kind a response, the cacheKeyType one
/// of Image, Registry, Global. Errors describe the shape, never the content.
fn decode_response(out: &[u8], api_version: &str) -> Result<Answer, ProviderFailure> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Response {
        #[serde(default)]
        kind: String,
        #[serde(default)]
        api_version: String,
        #[serde(default)]
        cache_key_type: String,
        cache_duration: Option<String>,
        #[serde(default)]
        auth: BTreeMap<String, AuthConfig>,
    }
    #[derive(Deserialize)]
    struct AuthConfig {
        #[serde(default)]
        username: String,
        #[serde(default)]
        password: String,
    }
    let garbage = |m: &str| ProviderFailure::Garbage(m.to_string());
    let r: Response = serde_json::from_slice(out).map_err(|_| garbage("not JSON of that shape"))?;
    if r.api_version != api_version {
        return Err(ProviderFailure::Garbage(format!(
            "apiVersion {:?} is not the configured {api_version:?}",
            r.api_version
        )));
    }
    if r.kind != "CredentialProviderResponse" {
        return Err(ProviderFailure::Garbage(format!("kind {:?}", r.kind)));
    }
    let key_type = match r.cache_key_type.as_str() {
        "Image" => KeyType::Image,
        "Registry" => KeyType::Registry,
        "Global" => KeyType::Global,
        other => {
            return Err(ProviderFailure::Garbage(format!("cacheKeyType {other:?} is not Image, Registry or Global")));
        }
    };
    let duration = match r.cache_duration.as_deref() {
        None => None,
        Some(d) => Some(go_duration(d).ok_or_else(|| garbage("cacheDuration is not a duration"))?),
    };
    let config = DockerConfig(r.auth.into_iter().map(|(k, a)| (k, Credential::new(a.username, a.password))).collect());
    Ok(Answer { config, key_type, duration })
}

/// A `matchImages` entry the kubelet accepts: no scheme, no whitespace, globs only in the host (not the
/// port, not the path).
pub fn valid_match_image(m: &str) -> bool {
    if m.is_empty() || m.contains("://") || m.chars().any(char::is_whitespace) {
        return false;
    }
    let (host, path) = m.find('/').map_or((m, ""), |i| m.split_at(i));
    let port = host.rsplit_once(':').map(|(_, p)| p).filter(|_| !host.starts_with('['));
    !path.contains('*') && port.is_none_or(|p| !p.contains('*'))
}

/// Go's `time.ParseDuration` for the units configs use (`h`, `m`, `s`, `ms`, `us`, `µs`, `ns`), e.g. `12h`,
/// `1h30m`, `0`, `0.5h`. Negative durations are refused, as the kubelet's validation does.
pub fn go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    (total.is_finite() && total <= 1e10).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        let cases = [
            ("12h", Some(43_200.0)),
            ("1h30m", Some(5_400.0)),
            ("0", Some(0.0)),
            ("0s", Some(0.0)),
            ("500ms", Some(0.5)),
            ("1.5h", Some(5_400.0)),
            ("", None),
            ("12", None),
            ("-1h", None),
            ("1d", None),
        ];
        for (s, want) in cases {
            assert_eq!(go_duration(s).map(|d| d.as_secs_f64()), want, "{s:?}");
        }
    }

    /// `matchImages` as the kubelet's config validation and `URLsMatchStr` read them (cases from the kubelet's
    /// plugin_test.go `Test_isImageAllowed` and config_test.go).
    #[test]
    fn match_images_like_the_kubelet() {
        // (matchImage, image, matches)
        let cases = [
            ("123456789.dkr.ecr.us-east-1.amazonaws.com", "123456789.dkr.ecr.us-east-1.amazonaws.com/foo/bar", true),
            ("*.dkr.ecr.*.amazonaws.com", "123456789.dkr.ecr.us-east-1.amazonaws.com/foo/bar", true),
            ("*.dkr.ecr.*.amazonaws.com", "123456789.dkr.ecr.us-east-1.amazonaws.com.evil.example/foo", false),
            ("*.azurecr.io", "myregistry.azurecr.io/app", true),
            ("*.azurecr.io", "azurecr.io/app", false),
            ("*-docker.pkg.dev", "us-central1-docker.pkg.dev/proj/repo/app", true),
            ("app*.k8s.io", "app1.k8s.io/foo", true),
            ("app*.k8s.io", "abc.k8s.io/foo", false),
            ("registry.io:8080/path", "registry.io:8080/path/app", true),
            ("registry.io:8080/path", "registry.io/path/app", false),
            ("registry.io/path", "registry.io/other/app", false),
        ];
        for (m, image, want) in cases {
            assert_eq!(urls_match(m, image), want, "{m} vs {image}");
        }
        for bad in ["https://registry.io", "registry.io:*", "registry.io/*/app", "", "a b"] {
            assert!(!valid_match_image(bad), "{bad:?} is refused");
        }
        assert!(valid_match_image("*.dkr.ecr.*.amazonaws.com"));
    }

    /// The managed-cloud examples under manifests/credential-providers load as the kubelet's config.
    #[test]
    fn the_shipped_examples_load() {
        let bin = tempfile::tempdir().unwrap();
        for name in ["ecr-credential-provider", "auth-provider-gcp", "acr-credential-provider"] {
            std::fs::write(bin.path().join(name), "").unwrap();
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/credential-providers");
        for (file, image) in [
            ("eks.yaml", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app"),
            ("gke.yaml", "europe-docker.pkg.dev/project/repo/app"),
            ("aks.yaml", "myregistry.azurecr.io/app"),
        ] {
            let p = Providers::load(&dir.join(file), bin.path()).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(p.list[0].match_images.iter().any(|m| urls_match(m, image)), "{file} matches {image}");
        }
        let e = Providers::load(&dir.join("eks.yaml"), Path::new("/nonexistent")).unwrap_err().to_string();
        assert!(e.contains("ecr-credential-provider") && e.contains("no plugin binary"), "{e}");
    }

    /// Minting is refused for a provider whose audience is the API server's: that token would be a
    /// credential to the cluster itself, handed to a plugin.
    #[test]
    fn tokens_are_never_minted_for_the_api_servers_audience() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p"), "").unwrap();
        let config = dir.path().join("c.yaml");
        let write = |audience: &str| {
            std::fs::write(
                &config,
                format!(
                    "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n- name: p\n  \
                     matchImages: [r.io]\n  defaultCacheDuration: 1m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  \
                     tokenAttributes: {{serviceAccountTokenAudience: \"{audience}\"}}\n"
                ),
            )
            .unwrap();
        };
        write("https://kubernetes.default.svc");
        let mut p = Providers::load(&config, dir.path()).unwrap();
        assert!(p.enable_token_minting().unwrap_err().contains("API server"));
        assert!(!p.mint_tokens);
        write("sts.amazonaws.com");
        let mut p = Providers::load(&config, dir.path()).unwrap();
        assert!(p.enable_token_minting().is_ok() && p.mint_tokens);
    }

    #[test]
    fn responses_decode_with_the_kubelets_checks() {
        let v1 = "credentialprovider.kubelet.k8s.io/v1";
        let ok = br#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1",
            "cacheKeyType":"Registry","cacheDuration":"6h","auth":{"*.dkr.ecr.*.amazonaws.com":{"username":"AWS","password":"p"}}}"#;
        let a = decode_response(ok, v1).unwrap();
        assert_eq!((a.key_type, a.duration), (KeyType::Registry, Some(Duration::from_secs(6 * 3600))));
        assert_eq!(a.config.0.len(), 1);
        let no_duration = br#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Image"}"#;
        assert_eq!(decode_response(no_duration, v1).unwrap().duration, None);
        let wrong_version = br#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","cacheKeyType":"Image"}"#;
        assert!(matches!(decode_response(wrong_version, v1), Err(ProviderFailure::Garbage(_))));
        let no_key_type =
            br#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1"}"#;
        assert!(matches!(decode_response(no_key_type, v1), Err(ProviderFailure::Garbage(_))));
        let secret_in_garbage = b"password=hunter2 not json";
        let e = decode_response(secret_in_garbage, v1).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
