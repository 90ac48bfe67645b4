//! Fuzz entry points, shared by the cargo-fuzz targets (`tests/fuzz`) and the corpus replay test that runs
//! in CI. Each takes arbitrary bytes and must never panic; where a property holds, it is asserted.
#![doc(hidden)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::admission::{AppState, Settings, review_request};
use crate::cache::{CacheSettings, CachedRegistry};
use crate::cluster::Snapshot;
use crate::config::{Config, FileConfig};
use crate::credentials::{Credential, DockerConfig, Keyring, Source};
use crate::engine::{Engine, EngineSettings};
use crate::metrics::Metrics;
use crate::platform::Platform;
use crate::policy::PolicySettings;
use crate::reference::Reference;
use crate::registry::{Failure, Registry, Resolved, manifest};

/// Parsing is total, and a normalized reference parses back to itself.
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(r) = Reference::parse(s) {
        let again = Reference::parse(&r.to_string()).expect("a normalized reference parses again");
        assert_eq!(again, r, "normalization is idempotent for {s:?}");
        let _ = r.repository();
    }
}

/// Both secret formats, then keyring matching against a few images.
pub fn dockerconfig(data: &[u8]) {
    for cfg in [DockerConfig::from_config_json(data), DockerConfig::from_dockercfg(data)].into_iter().flatten() {
        {
            let mut k = Keyring::default();
            k.add(&Source::Node, &cfg);
            for image in ["docker.io/library/nginx", "registry.example.com:5000/a/b", "ghcr.io/x/y", "localhost/z"] {
                let _ = k.lookup(image);
            }
        }
    }
}

/// Keyring matching on a hostile key and image (`key\nimage`): must end in time linear in the input (libFuzzer's
/// `-timeout` makes a slow input a finding), and a key equal to the image's repository matches it — unless its
/// path starts with `v1/` or `v2/`, which the kubelet strips from keys (`BasicDockerKeyring.Add`).
pub fn keyring(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (key, image) = s.split_once('\n').unwrap_or((s, s));
    let credential = Credential::new("u", "p");
    let mut k = Keyring::default();
    k.add(&Source::Node, &DockerConfig(vec![(key.to_string(), credential.clone())]));
    let _ = k.lookup(image);
    if let Ok(r) = Reference::parse(image) {
        let repo = r.repository();
        let mut exact = Keyring::default();
        exact.add(&Source::Node, &DockerConfig(vec![(repo.clone(), credential)]));
        let path = repo.split_once('/').map_or("", |(_, p)| p);
        let stripped = path.starts_with("v1/") || path.starts_with("v2/");
        if !stripped && !repo.contains(['*', '?', '[', '\\']) {
            assert!(!exact.lookup(&repo).is_empty(), "a key equal to {repo} matches it");
        }
    }
}

/// Manifests, indexes and image configs.
pub fn manifest(data: &[u8]) {
    for ct in ["", manifest::OCI_INDEX, manifest::DOCKER_V2, manifest::DOCKER_V1_SIGNED] {
        let _ = manifest::parse(data, ct);
    }
    let _ = manifest::config_platform(data);
}

/// The config file: parse, then validate (relative paths resolve under a directory that does not exist).
pub fn config(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(file) = serde_saphyr::from_str::<FileConfig>(s) {
        let _ = Config::from_file(file, "fuzz.yaml", Path::new("/nonexistent/pullguard-fuzz"));
    }
}

/// Manifest files as `check` reads them: document splitting, YAML and JSON, Lists, pod specs.
pub fn manifests(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (mut docs, mut errors) = (vec![], vec![]);
    crate::input::parse_text("fuzz.yaml", s, None, &mut docs, &mut errors);
    let mut snap = Snapshot::default();
    for d in &docs {
        let _ = snap.add_object(&d.value, "default");
        if let Ok(Some(w)) = crate::workload::Workload::from_object(&d.value, "default") {
            let _ = w.containers();
        }
    }
}

/// Answers lookups from the reference itself, deterministically, covering every outcome class.
pub struct FixtureRegistry;

impl Registry for FixtureRegistry {
    async fn resolve(&self, r: &Reference, credential: Option<&Credential>) -> Result<Resolved, Failure> {
        let h = r.to_string().bytes().fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
        match h % 8 {
            0 => Err(Failure::TagNotFound {
                tag: r.tag.clone().unwrap_or_default(),
                tags: vec!["latest".into(), "v1.2.3".into()],
            }),
            1 => Err(Failure::RepositoryNotFound),
            2 => {
                Err(Failure::Unauthorized { credential_sent: credential.is_some(), status: 401, detail: String::new() })
            }
            3 => Err(Failure::RateLimited { retry_after: None }),
            4 => Err(Failure::Unreachable { detail: "fixture".into(), tls: false }),
            _ => Ok(Resolved { digest: format!("sha256:{:064x}", h) }),
        }
    }

    async fn platforms(&self, _: &Reference, digest: &str, _: Option<&Credential>) -> Result<Vec<Platform>, Failure> {
        let arm = digest.ends_with(['0', '1', '2', '3']);
        Ok(if arm { vec![Platform::new("linux", "arm64", None)] } else { vec![Platform::new("linux", "amd64", None)] })
    }
}

struct Fixture {
    state: AppState<FixtureRegistry>,
    runtime: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let registry = Arc::new(CachedRegistry::new(Arc::new(FixtureRegistry), CacheSettings::default()));
        let settings = EngineSettings {
            policy: PolicySettings::default(),
            platforms: vec![Platform::new("linux", "amd64", None)],
            deadline: std::time::Duration::from_secs(1),
            providers: Default::default(),
            node_authenticated: vec![],
            mirrors: Default::default(),
        };
        let (cache, reg) = (registry.stats(), Arc::default());
        let engine = Arc::new(Engine::new(Some(registry), Keyring::default(), settings));
        let mut snap = Snapshot::default();
        snap.set_namespace_mode("relaxed", "warn");
        let state = AppState {
            engine,
            cluster: Arc::new(snap),
            settings: Settings {
                exempt_namespaces: BTreeSet::from(["kube-system".to_string()]),
                ..Settings::default()
            },
            metrics: Arc::new(Metrics::new(cache, reg)),
            slots: Arc::new(tokio::sync::Semaphore::new(64)),
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        Fixture { state, runtime }
    })
}

/// An AdmissionReview body → a response, with lookups answered by [`FixtureRegistry`]. The response must
/// echo the uid, and a denial must carry 403 and a message.
pub fn admission(data: &[u8]) {
    let Ok(request) = crate::admission::Request::parse(data) else { return };
    let f = fixture();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    let reviewed = f.runtime.block_on(async {
        let deadline = deadline.max(tokio::time::Instant::now());
        review_request(&f.state, &request, deadline).await
    });
    let r = &reviewed.response;
    assert_eq!(r.uid, request.uid);
    if !r.allowed {
        assert_eq!(r.result.code, 403);
        assert!(!r.result.message.is_empty());
    }
    for w in r.warnings.iter().flatten() {
        assert!(w.len() <= crate::admission::MAX_WARNING, "warning longer than the API server keeps");
    }
    let _ = serde_json::to_vec(&reviewed.response.into_review()).expect("responses serialize");
}
