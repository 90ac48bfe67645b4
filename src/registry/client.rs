//! The registry HTTP client (distribution API v2) with its own auth, redirect and SSRF handling.
//!
//! Why not a registry client library: credentials must be isolated per pull secret (token cache keyed by
//! credential), statuses and OCI error codes must survive for classification, realms and redirect targets
//! must be vetted before anything is sent, and a HEAD must never silently become a GET.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use super::auth::{Challenge, Token, TokenResponse, parse_challenge};
use super::guard::{Guard, find_blocked};
use super::manifest::{self, ACCEPT as MANIFEST_ACCEPT, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, Parsed};
use super::{Failure, Registry, Resolved};
use crate::credentials::Credential;
use crate::platform::Platform;
use crate::reference::validate_digest;
use crate::reference::{DOCKER_HUB, Reference};

const MAX_REDIRECTS: usize = 5;
const MAX_SMALL_BODY: usize = 1024 * 1024;

/// Where lookups for one registry name go, and with which TLS settings.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub base: Url,
    /// For the endpoint's own origin: its configured CA and `insecureSkipVerify`.
    client: reqwest::Client,
    /// For any other origin (a token realm or redirect target on another host): the configured CA is still
    /// trusted, but verification is never off, so `insecureSkipVerify` cannot expose credentials elsewhere.
    foreign: reqwest::Client,
    /// A configured or well-known registry: its connection errors are reported in full. For any other host,
    /// which the image string chose, they are reported in one form, so messages cannot scan the network.
    known: bool,
    /// Metrics label: the configured or well-known registry name, else `other` (the host in an image is
    /// attacker-chosen and must not blow up label cardinality).
    label: Arc<str>,
    /// The API root under `base`: `v2/`, or nothing for a containerd mirror with `override_path`.
    api: &'static str,
    /// Extra headers for this endpoint's own origin (containerd `[host.header]`).
    headers: Arc<[(HeaderName, HeaderValue)]>,
    /// containerd's `?ns=<upstream>` on requests to a mirror (`addNamespace`).
    ns: Option<Arc<str>>,
}

impl Endpoint {
    /// `<base><api><path>`, with the mirror's `ns` parameter.
    fn api_url(&self, path: &str) -> Option<Url> {
        let mut url = self.base.join(&format!("{}{path}", self.api)).ok()?;
        if let Some(ns) = &self.ns {
            url.query_pairs_mut().append_pair("ns", ns);
        }
        Some(url)
    }
}

const WELL_KNOWN: &[&str] = &[
    "docker.io",
    "ghcr.io",
    "quay.io",
    "gcr.io",
    "registry.k8s.io",
    "mcr.microsoft.com",
    "public.ecr.aws",
    "registry.gitlab.com",
];

/// Why the client could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("registry {registry}: CA file {path} holds no PEM certificate")]
    CaParse { registry: String, path: String },
    #[error("registries.{registry}: not a usable registry host name; give it an endpoint")]
    Name { registry: String },
    #[error("registry {registry}: header {header:?} is not a valid HTTP header name and value")]
    Header { registry: String, header: String },
    #[error("registry {registry}: cannot build HTTP client: {source}")]
    Build {
        registry: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Per-registry endpoint settings, as configured.
#[derive(Clone, Debug, Default)]
pub struct EndpointSettings {
    pub endpoint: Option<Url>,
    pub ca_pem: Option<(String, Vec<u8>)>,
    pub insecure_skip_verify: bool,
    /// The endpoint's path is the API root itself (containerd `override_path`), not the place `/v2` goes.
    pub override_path: bool,
    /// Headers sent with every request to the endpoint's own origin (containerd `[host.header]`).
    pub headers: Vec<(String, String)>,
}

/// Counters of requests sent, for tests, benchmarks and metrics.
#[derive(Debug, Default)]
pub struct RegistryStats {
    outcomes: Mutex<std::collections::BTreeMap<(Arc<str>, &'static str), u64>>,
    /// The pull budget a registry announces (Docker Hub: `ratelimit-limit: 100;w=21600` and
    /// `ratelimit-remaining: 76;w=21600`), by registry and identity, as last seen.
    budgets: Mutex<std::collections::BTreeMap<(Arc<str>, String), Budget>>,
}

/// (limit, remaining) pulls.
type Budget = (u64, u64);

/// Who a pull budget belongs to: `anonymous`, or the credential's username (at most 64 characters).
fn identity(credential: Option<&Credential>) -> String {
    credential.map_or_else(|| "anonymous".to_string(), |c| c.username().chars().take(64).collect())
}

/// Identities kept per process: a tenant's pull secrets choose usernames, and must not grow the metrics
/// without bound.
const MAX_BUDGETS: usize = 256;

impl RegistryStats {
    fn record(&self, registry: &Arc<str>, outcome: &'static str) {
        let mut m = self.outcomes.lock().expect("stats lock poisoned");
        *m.entry((registry.clone(), outcome)).or_insert(0) += 1;
    }

    /// Notes the budget a response announces, for a known registry and the identity that asked (`anonymous`,
    /// or the credential's username — never anything derived from its password).
    fn record_budget(&self, registry: &Arc<str>, identity: String, headers: &reqwest::header::HeaderMap) {
        let number = |name: &str| -> Option<u64> {
            let v = headers.get(name)?.to_str().ok()?;
            v.split(';').next()?.trim().parse().ok()
        };
        let (Some(limit), Some(remaining)) = (number("ratelimit-limit"), number("ratelimit-remaining")) else {
            return;
        };
        let mut m = self.budgets.lock().expect("stats lock poisoned");
        let key = (registry.clone(), identity);
        if m.len() < MAX_BUDGETS || m.contains_key(&key) {
            m.insert(key, (limit, remaining));
        }
    }

    /// (limit, remaining) as last announced for a registry label and identity.
    fn budget(&self, registry: &str, identity: &str) -> Option<Budget> {
        let m = self.budgets.lock().expect("stats lock poisoned");
        m.get(&(Arc::from(registry), identity.to_string())).copied()
    }

    /// (registry, identity, limit, remaining) as last announced.
    pub fn budgets(&self) -> Vec<(String, String, u64, u64)> {
        let m = self.budgets.lock().expect("stats lock poisoned");
        m.iter().map(|((r, i), (l, rem))| (r.to_string(), i.clone(), *l, *rem)).collect()
    }

    /// (registry, outcome, count) for every pair seen.
    pub fn outcomes(&self) -> Vec<(String, &'static str, u64)> {
        let m = self.outcomes.lock().expect("stats lock poisoned");
        m.iter().map(|((r, o), n)| (r.to_string(), *o, *n)).collect()
    }
}

fn outcome_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "success",
        300..=399 => "redirect",
        401 | 403 => "unauthorized",
        404 => "not_found",
        429 => "rate_limited",
        500..=599 => "server_error",
        _ => "client_error",
    }
}

#[derive(Clone, Hash, PartialEq, Eq)]
struct TokenKey {
    realm: String,
    service: String,
    scope: String,
    credential: String,
}

struct TokenExpiry;

impl moka::Expiry<TokenKey, Arc<Token>> for TokenExpiry {
    fn expire_after_create(&self, _: &TokenKey, value: &Arc<Token>, _: Instant) -> Option<Duration> {
        Some(value.lifetime)
    }
    fn expire_after_update(
        &self,
        _: &TokenKey,
        value: &Arc<Token>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.lifetime)
    }
}

/// The HTTP registry client. Cheap to share behind an `Arc`.
pub struct RegistryClient {
    endpoints: HashMap<String, Endpoint>,
    default_client: reqwest::Client,
    guard: Guard,
    tokens: moka::future::Cache<TokenKey, Arc<Token>>,
    /// The auth challenge each endpoint answered with, from its own origin only. Bounded: image hosts are
    /// attacker-chosen.
    challenges: moka::future::Cache<String, Challenge>,
    request_timeout: Duration,
    stats: Arc<RegistryStats>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").field("endpoints", &self.endpoints.keys()).finish_non_exhaustive()
    }
}

fn builder(guard: &Guard, timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(guard.clone())
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("pullguard/", env!("CARGO_PKG_VERSION")))
}

impl RegistryClient {
    /// Builds the client. `request_timeout` bounds every single HTTP exchange; the engine's deadline bounds
    /// the whole lookup.
    pub fn new(
        settings: &HashMap<String, EndpointSettings>,
        guard: Guard,
        request_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let default_client = builder(&guard, request_timeout)
            .build()
            .map_err(|source| ClientError::Build { registry: "(default)".into(), source })?;
        let mut endpoints = HashMap::new();
        for (registry, s) in settings {
            let EndpointSettings { endpoint, ca_pem, insecure_skip_verify, override_path, headers } = s;
            let api = if *override_path { "" } else { "v2/" };
            let headers: Arc<[(HeaderName, HeaderValue)]> = headers
                .iter()
                .map(|(k, v)| {
                    let name = HeaderName::from_bytes(k.as_bytes()).ok();
                    let value = HeaderValue::from_str(v).ok();
                    name.zip(value).ok_or_else(|| ClientError::Header { registry: registry.clone(), header: k.clone() })
                })
                .collect::<Result<Vec<_>, _>>()?
                .into();
            let base = match endpoint {
                Some(u) => with_trailing_slash(u.clone()),
                None => default_base(registry).ok_or_else(|| ClientError::Name { registry: registry.clone() })?,
            };
            let (client, foreign) = if ca_pem.is_some() || *insecure_skip_verify {
                let certs = match ca_pem {
                    Some((path, pem)) => Some(
                        reqwest::Certificate::from_pem_bundle(pem)
                            .ok()
                            .filter(|c| !c.is_empty())
                            .ok_or_else(|| ClientError::CaParse { registry: registry.clone(), path: path.clone() })?,
                    ),
                    None => None,
                };
                let build = |insecure: bool| {
                    let mut b = builder(&guard, request_timeout);
                    if let Some(certs) = &certs {
                        b = b.tls_certs_merge(certs.clone());
                    }
                    b.tls_danger_accept_invalid_certs(insecure)
                        .build()
                        .map_err(|source| ClientError::Build { registry: registry.clone(), source })
                };
                let verified = build(false)?;
                if *insecure_skip_verify { (build(true)?, verified) } else { (verified.clone(), verified) }
            } else {
                (default_client.clone(), default_client.clone())
            };
            let label = Arc::from(registry.as_str());
            endpoints.insert(
                registry.clone(),
                Endpoint { base, client, foreign, known: true, label, api, headers, ns: None },
            );
        }
        let tokens = moka::future::Cache::builder().max_capacity(10_000).expire_after(TokenExpiry).build();
        Ok(Self {
            endpoints,
            default_client,
            guard,
            tokens,
            challenges: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            request_timeout,
            stats: Arc::default(),
        })
    }

    /// The endpoint lookups for `registry` (a normalized reference's domain) go to.
    pub fn endpoint(&self, registry: &str) -> Result<Endpoint, Failure> {
        // A mirror lookup names its upstream after the endpoint key: `<key>?ns=docker.io`.
        if let Some((key, ns)) = registry.split_once("?ns=")
            && let Some(ep) = self.endpoints.get(key)
        {
            return Ok(Endpoint { ns: Some(Arc::from(ns)), ..ep.clone() });
        }
        if let Some(ep) = self.endpoints.get(registry) {
            return Ok(ep.clone());
        }
        let base = default_base(registry).ok_or_else(|| Failure::Unreachable {
            detail: format!("{registry:?} is not a usable host name"),
            tls: false,
        })?;
        let known = WELL_KNOWN.contains(&registry);
        let label = if known { registry } else { "other" };
        let client = self.default_client.clone();
        Ok(Endpoint {
            base,
            foreign: client.clone(),
            client,
            known,
            label: Arc::from(label),
            api: "v2/",
            headers: Arc::from([]),
            ns: None,
        })
    }

    /// Sends one request, following redirects by hand: `Authorization` goes only to `auth_origin`, the
    /// endpoint's relaxed TLS settings only to its own origin, userinfo in a URL is never used, and an HTTPS
    /// request is never redirected to plain HTTP.
    async fn send(
        &self,
        ep: &Endpoint,
        method: Method,
        mut url: Url,
        accept: Option<&str>,
        authorization: Option<&HeaderValue>,
        auth_origin: &url::Origin,
    ) -> Result<Response, Failure> {
        let own = ep.base.origin();
        for _ in 0..=MAX_REDIRECTS {
            // reqwest would turn userinfo into a second Authorization header.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            self.guard.check_url(&url).map_err(|b| Failure::Blocked { detail: b.to_string() })?;
            let client = if url.origin() == own { &ep.client } else { &ep.foreign };
            let mut req = client.request(method.clone(), url.clone()).timeout(self.request_timeout);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if url.origin() == own {
                for (k, v) in ep.headers.iter() {
                    req = req.header(k, v);
                }
            }
            if let Some(auth) = authorization.filter(|_| &url.origin() == auth_origin) {
                req = req.header(AUTHORIZATION, auth.clone());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let failure = transport(&e, &url, ep.known);
                    let outcome = if matches!(failure, Failure::Blocked { .. }) { "blocked" } else { "error" };
                    self.stats.record(&ep.label, outcome);
                    return Err(failure);
                }
            };
            self.stats.record(&ep.label, outcome_of(resp.status()));
            if resp.status().is_redirection() {
                if let Some(loc) = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()) {
                    let status = resp.status().as_u16();
                    let next = url.join(loc).map_err(|_| Failure::ServerError {
                        status,
                        detail: "redirect with an invalid Location".into(),
                    })?;
                    if !matches!(next.scheme(), "http" | "https") {
                        return Err(Failure::Blocked { detail: format!("redirect to a {} URL", next.scheme()) });
                    }
                    if url.scheme() == "https" && next.scheme() == "http" {
                        return Err(Failure::ServerError {
                            status,
                            detail: "an HTTPS request was redirected to plain HTTP, which pullguard does not follow"
                                .into(),
                        });
                    }
                    url = next;
                    continue;
                }
            }
            return Ok(resp);
        }
        Err(Failure::ServerError { status: 310, detail: format!("more than {MAX_REDIRECTS} redirects") })
    }

    /// Sends a request to the registry, answering its auth challenge with the credential (if any).
    async fn authorized(
        &self,
        ep: &Endpoint,
        method: Method,
        url: Url,
        accept: Option<&str>,
        repository: &str,
        credential: Option<&Credential>,
    ) -> Result<Response, Failure> {
        let resp = self.authorized_once(ep, method, url, accept, repository, credential).await?;
        if ep.known {
            self.stats.record_budget(&ep.label, identity(credential), resp.headers());
        }
        Ok(resp)
    }

    /// [`authorized`](Self::authorized) without the bookkeeping.
    async fn authorized_once(
        &self,
        ep: &Endpoint,
        method: Method,
        url: Url,
        accept: Option<&str>,
        repository: &str,
        credential: Option<&Credential>,
    ) -> Result<Response, Failure> {
        let origin = ep.base.origin();
        let origin_key = ep.base.as_str().to_string();
        let known = self.challenges.get(&origin_key).await;
        let scope = format!("repository:{repository}:pull");
        // With a known challenge, answer it up front and save the unauthenticated round trip.
        let mut sent_token: Option<TokenKey> = None;
        let pre = match &known {
            Some(Challenge::Basic) => credential.map(basic_header),
            Some(Challenge::Bearer { realm, service }) => {
                // The registry is known to want a token for this scope: get it (cached, coalesced) first.
                let token = self.token(ep, realm, service.as_deref(), &scope, credential).await?;
                sent_token = Some(token_key(realm, service.as_deref(), &scope, credential));
                Some(bearer_header(&token.value))
            }
            None => None,
        };
        let resp =
            own_origin(self.send(ep, method.clone(), url.clone(), accept, pre.as_ref(), &origin).await?, &origin)?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        if let Some(key) = sent_token {
            self.tokens.invalidate(&key).await;
        }
        let Some(challenge) =
            resp.headers().get(WWW_AUTHENTICATE).and_then(|h| h.to_str().ok()).and_then(parse_challenge)
        else {
            return Ok(resp);
        };
        self.challenges.insert(origin_key, challenge.clone()).await;
        let header = match &challenge {
            Challenge::Basic => match credential {
                Some(c) => basic_header(c),
                None => return Ok(resp),
            },
            Challenge::Bearer { realm, service } => {
                let token = self.token(ep, realm, service.as_deref(), &scope, credential).await?;
                bearer_header(&token.value)
            }
        };
        let retry = own_origin(self.send(ep, method, url, accept, Some(&header), &origin).await?, &origin)?;
        if retry.status() == StatusCode::UNAUTHORIZED && matches!(challenge, Challenge::Basic) {
            return Err(Failure::CredentialsRejected { detail: "the registry refused the username/password".into() });
        }
        Ok(retry)
    }

    /// A bearer token for (realm, service, scope, credential), fetched once for concurrent callers.
    async fn token(
        &self,
        ep: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credential: Option<&Credential>,
    ) -> Result<Arc<Token>, Failure> {
        let realm_url = Url::parse(realm).map_err(|_| Failure::ServerError {
            status: 401,
            detail: "the registry's token realm is not a valid URL".into(),
        })?;
        let scheme_ok = realm_url.scheme() == "https" || (realm_url.scheme() == "http" && ep.base.scheme() == "http");
        if !scheme_ok {
            return Err(Failure::Blocked {
                detail: format!(
                    "token realm {} is not HTTPS; credentials are never sent over plain HTTP",
                    realm_host(&realm_url)
                ),
            });
        }
        self.guard.check_url(&realm_url).map_err(|b| Failure::Blocked { detail: format!("token realm: {b}") })?;
        let key = token_key(realm, service, scope, credential);
        let fetch = async {
            let auth = credential.map(basic_header);
            let mut token_url = realm_url.clone();
            {
                let mut q = token_url.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                q.append_pair("scope", scope);
            }
            let origin = realm_url.origin();
            let resp = self.send(ep, Method::GET, token_url, Some("application/json"), auth.as_ref(), &origin).await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(match credential {
                    Some(_) => Failure::CredentialsRejected {
                        detail: format!(
                            "the token service at {} refused the username/password",
                            realm_host(&realm_url)
                        ),
                    },
                    None => Failure::Unauthorized {
                        credential_sent: false,
                        status: status.as_u16(),
                        detail: "the token service requires credentials".into(),
                    },
                });
            }
            if !status.is_success() {
                return Err(status_failure(&resp, credential.is_some(), "token service"));
            }
            let body = read_capped(resp, MAX_SMALL_BODY).await?;
            let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| Failure::ServerError {
                status: status.as_u16(),
                detail: "the token service answered with something that is not a token".into(),
            })?;
            parsed.into_token().map(Arc::new).ok_or_else(|| Failure::ServerError {
                status: status.as_u16(),
                detail: "the token service answered without a token".into(),
            })
        };
        self.tokens.try_get_with(key, fetch).await.map_err(|e| (*e).clone())
    }

    async fn tags(&self, ep: &Endpoint, reference: &Reference, credential: Option<&Credential>) -> Failure {
        let tag = reference.tag.clone().unwrap_or_default();
        let Some(mut url) = ep.api_url(&format!("{}/tags/list", reference.path)) else {
            return Failure::TagNotFound { tag, tags: vec![] };
        };
        url.query_pairs_mut().append_pair("n", "10000");
        let resp =
            match self.authorized(ep, Method::GET, url, Some("application/json"), &reference.path, credential).await {
                Ok(r) => r,
                Err(_) => return Failure::TagNotFound { tag, tags: vec![] },
            };
        if resp.status() == StatusCode::NOT_FOUND {
            return Failure::RepositoryNotFound;
        }
        if !resp.status().is_success() {
            return Failure::TagNotFound { tag, tags: vec![] };
        }
        let body = read_capped(resp, 4 * MAX_SMALL_BODY).await.unwrap_or_default();
        // Parsing a list of up to 4 MiB and ranking its tags is CPU work: off the runtime threads, so that no
        // registry can stall other reviews or the deadline that bounds this one.
        let wanted = tag.clone();
        let tags = tokio::task::spawn_blocking(move || keep_for_suggestions(&wanted, parse_tags(&body)))
            .await
            .unwrap_or_default();
        // distribution answers an existing repository with no tags left with an empty list.
        Failure::TagNotFound { tag, tags }
    }

    /// GETs a manifest: its Content-Type and its (size-capped) body.
    async fn get_manifest(
        &self,
        ep: &Endpoint,
        reference: &Reference,
        url: Url,
        credential: Option<&Credential>,
    ) -> Result<(String, Vec<u8>), Failure> {
        let resp = self.authorized(ep, Method::GET, url, Some(MANIFEST_ACCEPT), &reference.path, credential).await?;
        if !resp.status().is_success() {
            return Err(status_failure(&resp, credential.is_some(), "registry"));
        }
        let content_type = header_str(&resp, CONTENT_TYPE).unwrap_or_default();
        Ok((content_type, read_capped(resp, MAX_MANIFEST_BYTES).await?))
    }

    fn manifest_url(ep: &Endpoint, reference: &Reference, what: &str) -> Result<Url, Failure> {
        ep.api_url(&format!("{}/manifests/{what}", reference.path))
            .ok_or_else(|| Failure::Unreachable { detail: format!("cannot build a URL for {reference}"), tls: false })
    }
}

impl Registry for RegistryClient {
    fn stats(&self) -> Arc<RegistryStats> {
        self.stats.clone()
    }

    fn budget(&self, registry: &str, credential: Option<&Credential>) -> Option<(u64, u64)> {
        // Most registries announce none: no endpoint to build per container for them.
        if self.stats.budgets.lock().expect("stats lock poisoned").is_empty() {
            return None;
        }
        let ep = self.endpoint(registry).ok().filter(|ep| ep.known)?;
        self.stats.budget(&ep.label, &identity(credential))
    }

    async fn resolve(&self, reference: &Reference, credential: Option<&Credential>) -> Result<Resolved, Failure> {
        let ep = self.endpoint(&reference.domain)?;
        let url = Self::manifest_url(&ep, reference, reference.manifest_reference())?;
        let resp =
            self.authorized(&ep, Method::HEAD, url.clone(), Some(MANIFEST_ACCEPT), &reference.path, credential).await?;
        match resp.status() {
            s if s.is_success() => {
                let header = header_str(&resp, "docker-content-digest".parse().expect("static header name"));
                match (header.filter(|h| !h.is_empty()), &reference.digest) {
                    // containerd refuses a digest header it cannot parse, so the pull would fail too.
                    (Some(h), _) if validate_digest(&h).is_err() => Err(Failure::InvalidManifest {
                        detail: format!(
                            "its Docker-Content-Digest header {:?} is not a digest the kubelet accepts",
                            h.chars().take(100).collect::<String>()
                        ),
                    }),
                    (Some(h), Some(pinned)) if &h != pinned => Err(Failure::DigestMismatch {
                        digest: pinned.clone(),
                        detail: format!("the registry answers it with another manifest, {h}"),
                    }),
                    (Some(digest), _) => Ok(Resolved { digest }),
                    // Verified when its content is fetched.
                    (None, Some(pinned)) => Ok(Resolved { digest: pinned.clone() }),
                    (None, None) => {
                        // No digest header on a successful HEAD: only now is a GET justified.
                        let (_, body) = self.get_manifest(&ep, reference, url, credential).await?;
                        Ok(Resolved { digest: manifest::sha256_digest(&body) })
                    }
                }
            }
            StatusCode::NOT_FOUND => Err(match &reference.digest {
                Some(d) => Failure::DigestNotFound { digest: d.clone() },
                None => self.tags(&ep, reference, credential).await,
            }),
            _ => Err(status_failure(&resp, credential.is_some(), "registry")),
        }
    }

    async fn platforms(
        &self,
        reference: &Reference,
        digest: &str,
        credential: Option<&Credential>,
    ) -> Result<Vec<Platform>, Failure> {
        let ep = self.endpoint(&reference.domain)?;
        let url = Self::manifest_url(&ep, reference, digest)?;
        let (content_type, body) = self.get_manifest(&ep, reference, url, credential).await?;
        if !manifest::matches_digest(digest, &body) {
            return Err(Failure::DigestMismatch {
                digest: digest.to_string(),
                detail: "the manifest the registry serves under that digest does not hash to it".into(),
            });
        }
        let parsed =
            manifest::parse(&body, &content_type).map_err(|e| Failure::InvalidManifest { detail: e.to_string() })?;
        match parsed {
            Parsed::Index { platforms, unlabelled: false } if platforms.is_empty() => Err(Failure::NoRunnablePlatform),
            Parsed::Index { platforms, .. } => Ok(platforms),
            Parsed::Schema1(p) => Ok(vec![p]),
            Parsed::Image { config_digest } => {
                let url = ep.api_url(&format!("{}/blobs/{config_digest}", reference.path)).ok_or_else(|| {
                    Failure::InvalidManifest { detail: "config digest is not usable in a URL".into() }
                })?;
                let resp = self.authorized(&ep, Method::GET, url, None, &reference.path, credential).await?;
                if !resp.status().is_success() {
                    return Err(status_failure(&resp, credential.is_some(), "registry"));
                }
                let body = read_capped(resp, MAX_CONFIG_BYTES).await?;
                let p =
                    manifest::config_platform(&body).map_err(|e| Failure::InvalidManifest { detail: e.to_string() })?;
                Ok(vec![p])
            }
        }
    }
}

/// The tags of a tags-list body; nothing for a body that is not one.
fn parse_tags(body: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct TagList {
        #[serde(default)]
        tags: Option<Vec<String>>,
    }
    serde_json::from_slice::<TagList>(body).ok().and_then(|t| t.tags).unwrap_or_default()
}

fn keep_for_suggestions(wanted: &str, mut all: Vec<String>) -> Vec<String> {
    const SAMPLE: usize = 8;
    if all.len() <= 32 {
        return all;
    }
    let mut kept = crate::suggest::suggest_tags(wanted, &all);
    let limit = kept.len() + SAMPLE;
    all.sort();
    for t in all {
        if kept.len() >= limit {
            break;
        }
        if !kept.contains(&t) {
            kept.push(t);
        }
    }
    kept
}

fn default_base(registry: &str) -> Option<Url> {
    let host = if registry == DOCKER_HUB { "registry-1.docker.io" } else { registry };
    Url::parse(&format!("https://{host}/")).ok()
}

fn with_trailing_slash(mut u: Url) -> Url {
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    u
}

fn realm_host(u: &Url) -> String {
    u.host_str().unwrap_or("?").to_string()
}

fn token_key(realm: &str, service: Option<&str>, scope: &str, credential: Option<&Credential>) -> TokenKey {
    TokenKey {
        realm: realm.to_string(),
        service: service.unwrap_or_default().to_string(),
        scope: scope.to_string(),
        credential: credential.map_or_else(|| "anonymous".to_string(), Credential::fingerprint),
    }
}

fn basic_header(c: &Credential) -> HeaderValue {
    let mut v = HeaderValue::from_str(&format!("Basic {}", B64.encode(format!("{}:{}", c.username(), c.password()))))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    v.set_sensitive(true);
    v
}

fn bearer_header(token: &str) -> HeaderValue {
    let mut v =
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    v.set_sensitive(true);
    v
}

fn header_str(resp: &Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Classifies a non-success answer.
fn status_failure(resp: &Response, credential_sent: bool, who: &str) -> Failure {
    let status = resp.status();
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Failure::Unauthorized {
            credential_sent,
            status: status.as_u16(),
            detail: if credential_sent {
                "the credentials were accepted but do not grant pull access to this repository".into()
            } else {
                "the repository requires credentials (or does not exist)".into()
            },
        },
        StatusCode::TOO_MANY_REQUESTS => Failure::RateLimited { retry_after: retry_after(resp) },
        StatusCode::NOT_FOUND => Failure::ServerError { status: 404, detail: format!("{who} answered 404 Not Found") },
        s => Failure::ServerError {
            status: s.as_u16(),
            detail: format!("{who} answered {} {}", s.as_u16(), s.canonical_reason().unwrap_or("")),
        },
    }
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(RETRY_AFTER)?.to_str().ok()?.trim().to_string();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(&v).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

/// Reads a body, refusing more than `cap` bytes.
async fn read_capped(mut resp: Response, cap: usize) -> Result<Vec<u8>, Failure> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(Failure::InvalidManifest { detail: format!("response larger than the {cap}-byte limit") });
    }
    let url = resp.url().clone();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e, &url, true))? {
        if body.len() + chunk.len() > cap {
            return Err(Failure::InvalidManifest { detail: format!("response larger than the {cap}-byte limit") });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A 401 from another origin (a redirect target) is not the registry's challenge: it is never answered with
/// credentials, never remembered for the registry, and says nothing about the pod's credentials.
fn own_origin(resp: Response, origin: &url::Origin) -> Result<Response, Failure> {
    if resp.status() == StatusCode::UNAUTHORIZED && &resp.url().origin() != origin {
        return Err(Failure::ServerError {
            status: 401,
            detail: "the registry redirected to another host, which asked for authentication; credentials are \
                     sent only to the registry itself"
                .into(),
        });
    }
    Ok(resp)
}

/// Classifies a transport error: blocked address, timeout, or unreachable (DNS, connect, TLS). `verbose` for a
/// configured or well-known registry; for any other host, every failure but DNS reads the same, so admission
/// messages cannot tell a closed port from an open one that does not speak TLS (the details go to the log).
fn transport(e: &reqwest::Error, url: &Url, verbose: bool) -> Failure {
    if let Some(b) = find_blocked(e) {
        return Failure::Blocked { detail: b.to_string() };
    }
    let host = url.host_str().unwrap_or("?");
    let port = url.port_or_known_default().map(|p| format!(":{p}")).unwrap_or_default();
    if !verbose {
        let chain = error_chain(e);
        tracing::debug!(%host, error = %chain, "connection to an unconfigured registry host failed");
        let detail = if chain.contains("dns error") {
            format!("the host name {host} does not resolve (DNS)")
        } else {
            format!("could not reach {host}{port} over HTTPS")
        };
        return Failure::Unreachable { detail, tls: false };
    }
    if e.is_timeout() {
        return Failure::Unreachable { detail: format!("{host}{port} did not answer in time"), tls: false };
    }
    // The innermost cause says what went wrong (DNS, refused, certificate); the outer ones repeat the URL.
    let cause = causes(e).last().map_or_else(|| "connection failed".into(), |c| c.to_string());
    Failure::Unreachable { detail: format!("cannot connect to {host}{port}: {cause}"), tls: is_tls_failure(e) }
}

/// Whether a TLS handshake failed somewhere under `e`: a `rustls::Error` in the source chain, or wrapped in an
/// `io::Error` (whose `source()` skips the error it wraps, hence `get_ref`). Typed, so that the CA hint does not
/// hang on the wording of an error message.
fn is_tls_failure(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if c.is::<rustls::Error>() {
            return true;
        }
        // rustls' error arrives wrapped in io::Errors, nested (Other around InvalidData around it).
        cur = match c.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    false
}

/// The errors under `e`, outermost first.
fn causes(e: &reqwest::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(e), |c| c.source())
}

/// Every message in an error's source chain, for logs.
fn error_chain(e: &reqwest::Error) -> String {
    causes(e).fold(e.to_string(), |out, c| format!("{out}: {c}"))
}

#[cfg(test)]
mod tests {
    use super::keep_for_suggestions;

    #[test]
    fn big_tag_lists_keep_what_suggestions_need() {
        let all: Vec<String> = (0..500).map(|i| format!("v1.{i}.0")).chain(["latest".to_string()]).collect();
        let kept = keep_for_suggestions("v1.250.1", all.clone());
        assert!(kept.len() <= 13, "{}", kept.len());
        assert_eq!(crate::suggest::suggest_tags("v1.250.1", &kept), crate::suggest::suggest_tags("v1.250.1", &all));
        let small: Vec<String> = vec!["a".into(), "b".into()];
        assert_eq!(keep_for_suggestions("c", small.clone()), small);
    }
}
