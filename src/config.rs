//! The validated configuration: the YAML file (`--config`) with command-line flags on top.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cache::CacheSettings;
use crate::credentials::DockerConfig;
use crate::credentials::provider::Providers;
use crate::platform::Platform;
use crate::policy::Mode;
use crate::registry::EndpointSettings;
use crate::registry::guard::{DEFAULT_BLOCKED, IpNet};
use crate::registry::mirrors::Mirrors;

/// The config file, as written. Unknown fields are errors, so a typo never silently does nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileConfig {
    pub mode: Option<Mode>,
    pub platforms: Option<Vec<Platform>>,
    pub fail_closed: Option<bool>,
    pub node_credentials: Option<PathBuf>,
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryConfig>,
    pub blocked_networks: Option<Vec<IpNet>>,
    /// Budget for all lookups of one container, e.g. `4s`, `500ms`.
    pub lookup_timeout: Option<DurationStr>,
    pub cache: Option<CacheConfig>,
    /// The kubelet's credential provider plugins: its `CredentialProviderConfig` file and plugin directory.
    pub credential_providers: Option<CredentialProvidersConfig>,
    /// Registries the nodes sign in to by means pullguard cannot reproduce (instance roles): `matchImages`
    /// globs. A credentials failure there is a warning, not a deny.
    #[serde(default)]
    pub node_authenticated: Vec<String>,
    /// Mirrors as the nodes' container runtime resolves them.
    pub mirrors: Option<MirrorsConfig>,
    /// Warn when the credential that pulls an image (an ECR token, a JWT) expires within this long; `0s`: only
    /// once expired. Default 24h.
    pub credential_expiry_warning: Option<DurationStr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MirrorsConfig {
    /// containerd's `config_path`: a tree of `<host>/hosts.toml` files, `_default` included.
    pub containerd: Option<PathBuf>,
    /// CRI-O's (containers') `registries.conf`, v2.
    pub registries_conf: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialProvidersConfig {
    /// The file the kubelet reads with `--image-credential-provider-config`, unchanged.
    pub config: PathBuf,
    /// The kubelet's `--image-credential-provider-bin-dir`.
    pub bin_dir: PathBuf,
    /// Mint ServiceAccount tokens for service-account-token providers (`serve` only). Needs the
    /// `mint-tokens` RBAC overlay: `create serviceaccounts/token` lets pullguard act as any ServiceAccount.
    #[serde(default)]
    pub mint_service_account_tokens: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryConfig {
    pub endpoint: Option<String>,
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CacheConfig {
    pub ttl: Option<DurationStr>,
    pub negative_ttl: Option<DurationStr>,
    pub max_entries: Option<u64>,
    /// Registry lookups running at once; a new image beyond them is not looked up (warned, or denied under
    /// failClosed) until one ends.
    pub max_lookups_in_flight: Option<usize>,
    /// Of them, those one namespace's reviews may hold once half are taken.
    pub max_lookups_in_flight_per_namespace: Option<usize>,
    /// Of them, those one registry host may hold once half are taken.
    pub max_lookups_in_flight_per_registry: Option<usize>,
}

/// A duration written as `500ms`, `4s`, `5m`, `1h` or a plain number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationStr(pub Duration);

/// Written so that it parses back (`1500ms`, `4s`): clap prints defaults with it.
impl std::fmt::Display for DurationStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 { write!(f, "{}s", ms / 1000) } else { write!(f, "{ms}ms") }
    }
}

impl std::str::FromStr for DurationStr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?} (use e.g. 500ms, 4s, 5m)"))?;
        let secs = match unit {
            "ms" => n / 1000.0,
            "" | "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => {
                return Err(format!("invalid duration unit in {s:?} (use ms, s, m or h)"));
            }
        };
        if !secs.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&secs) {
            return Err(format!("duration {s:?} out of range"));
        }
        Ok(Self(Duration::from_secs_f64(secs)))
    }
}

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => n.to_string().parse(),
            Raw::S(s) => s.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// Why the configuration is unusable. Each names the file and field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config file {path}: registries.{registry}.endpoint: {message}")]
    Endpoint { path: String, registry: String, message: String },
    #[error("config file {path}: registries.{registry}.ca: cannot read {ca}: {source}")]
    Ca {
        path: String,
        registry: String,
        ca: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nodeCredentials {path}: {message}")]
    NodeCredentials { path: String, message: String },
    #[error("platforms: the list is empty; name at least one, e.g. linux/amd64")]
    NoPlatforms,
    #[error(transparent)]
    Mirrors(#[from] crate::registry::mirrors::MirrorError),
    #[error(transparent)]
    Providers(#[from] crate::credentials::provider::ProviderConfigError),
    #[error(
        "config file {path}: nodeAuthenticated: {pattern:?} is not a valid image match (no scheme, globs only in the host)"
    )]
    NodeAuthenticated { path: String, pattern: String },
}

/// The configuration the engine runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    pub platforms: Vec<Platform>,
    pub fail_closed: bool,
    pub node_credentials: Option<DockerConfig>,
    pub registries: HashMap<String, EndpointSettings>,
    pub blocked_networks: Vec<IpNet>,
    pub lookup_timeout: Duration,
    pub cache: CacheSettings,
    pub providers: Providers,
    pub node_authenticated: Vec<String>,
    pub mirrors: Mirrors,
    pub credential_expiry_warning: Duration,
}

/// ECR tokens live 12 hours: a day's warning catches one that is already in use and not refreshed.
pub const DEFAULT_CREDENTIAL_EXPIRY_WARNING: Duration = Duration::from_secs(24 * 3600);

pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(4);

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            platforms: vec![Platform::new("linux", "amd64", None)],
            fail_closed: false,
            node_credentials: None,
            registries: HashMap::new(),
            blocked_networks: DEFAULT_BLOCKED.iter().map(|s| s.parse().expect("default networks parse")).collect(),
            lookup_timeout: DEFAULT_LOOKUP_TIMEOUT,
            cache: CacheSettings::default(),
            providers: Providers::default(),
            node_authenticated: vec![],
            mirrors: Mirrors::default(),
            credential_expiry_warning: DEFAULT_CREDENTIAL_EXPIRY_WARNING,
        }
    }
}

impl Config {
    /// Reads and validates a config file; `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        let file: FileConfig = if text.trim().is_empty() {
            FileConfig::default()
        } else {
            serde_saphyr::from_str(&text)
                .map_err(|e| ConfigError::Parse { path: shown.clone(), message: e.to_string() })?
        };
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_file(file, &shown, base)
    }

    /// Validates a parsed file. Relative paths in it are relative to the file's directory.
    pub fn from_file(file: FileConfig, path: &str, base: &Path) -> Result<Self, ConfigError> {
        let FileConfig {
            mode,
            platforms,
            fail_closed,
            node_credentials,
            registries,
            blocked_networks,
            lookup_timeout,
            cache,
            credential_providers,
            node_authenticated,
            mirrors,
            credential_expiry_warning,
        } = file;
        let mut cfg = Self::default();
        if let Some(m) = mode {
            cfg.mode = m;
        }
        if let Some(p) = platforms {
            if p.is_empty() {
                return Err(ConfigError::NoPlatforms);
            }
            cfg.platforms = p;
        }
        cfg.fail_closed = fail_closed.unwrap_or(false);
        if let Some(w) = credential_expiry_warning {
            cfg.credential_expiry_warning = w.0;
        }
        if let Some(nc) = node_credentials {
            cfg.node_credentials = Some(load_node_credentials(&base.join(nc))?);
        }
        for (registry, rc) in registries {
            let RegistryConfig { endpoint, ca, insecure_skip_verify } = rc;
            let url = match endpoint {
                Some(e) => {
                    let u = url::Url::parse(&e).map_err(|err| ConfigError::Endpoint {
                        path: path.into(),
                        registry: registry.clone(),
                        message: format!("{e:?} is not a URL: {err}"),
                    })?;
                    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                        return Err(ConfigError::Endpoint {
                            path: path.into(),
                            registry: registry.clone(),
                            message: format!("{e:?} must be an http:// or https:// URL with a host"),
                        });
                    }
                    Some(u)
                }
                None => None,
            };
            let ca_pem = match ca {
                Some(ca) => {
                    let full = base.join(&ca);
                    let pem = std::fs::read(&full).map_err(|source| ConfigError::Ca {
                        path: path.into(),
                        registry: registry.clone(),
                        ca: full.display().to_string(),
                        source,
                    })?;
                    Some((full.display().to_string(), pem))
                }
                None => None,
            };
            cfg.registries.insert(
                registry,
                EndpointSettings { endpoint: url, ca_pem, insecure_skip_verify, override_path: false, headers: vec![] },
            );
        }
        if let Some(b) = blocked_networks {
            cfg.blocked_networks = b;
        }
        if let Some(CredentialProvidersConfig { config, bin_dir, mint_service_account_tokens }) = credential_providers {
            cfg.providers = Providers::load(&base.join(config), &base.join(bin_dir))?;
            if mint_service_account_tokens {
                cfg.providers.enable_token_minting().map_err(|message| ConfigError::Parse {
                    path: path.into(),
                    message: format!("credentialProviders.mintServiceAccountTokens: {message}"),
                })?;
            }
        }
        if let Some(p) = node_authenticated.iter().find(|p| !crate::credentials::provider::valid_match_image(p)) {
            return Err(ConfigError::NodeAuthenticated { path: path.into(), pattern: p.clone() });
        }
        cfg.node_authenticated = node_authenticated;
        if let Some(MirrorsConfig { containerd, registries_conf }) = mirrors {
            if let Some(dir) = containerd {
                cfg.mirrors = Mirrors::load_containerd(&base.join(dir))?;
            }
            if let Some(file) = registries_conf {
                cfg.mirrors.load_registries_conf(&base.join(file))?;
            }
            for (key, settings) in cfg.mirrors.endpoints() {
                cfg.registries.insert(key.clone(), settings.clone());
            }
        }
        if let Some(t) = lookup_timeout {
            cfg.lookup_timeout = t.0.max(Duration::from_millis(10));
        }
        if let Some(c) = cache {
            let CacheConfig {
                ttl,
                negative_ttl,
                max_entries,
                max_lookups_in_flight,
                max_lookups_in_flight_per_namespace,
                max_lookups_in_flight_per_registry,
            } = c;
            if let Some(t) = ttl {
                cfg.cache.ttl = t.0;
            }
            if let Some(t) = negative_ttl {
                cfg.cache.negative_ttl = t.0;
            }
            if let Some(n) = max_entries {
                cfg.cache.max_entries = n;
            }
            if let Some(n) = max_lookups_in_flight {
                cfg.cache.max_in_flight = n.max(1);
            }
            if let Some(n) = max_lookups_in_flight_per_namespace {
                cfg.cache.max_in_flight_per_namespace = n.max(1);
            }
            if let Some(n) = max_lookups_in_flight_per_registry {
                cfg.cache.max_in_flight_per_registry = n.max(1);
            }
        }
        Ok(cfg)
    }
}

/// Reads a docker `config.json` used as node-wide credentials.
pub fn load_node_credentials(path: &Path) -> Result<DockerConfig, ConfigError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::NodeCredentials { path: shown.clone(), message: e.to_string() })?;
    DockerConfig::from_config_json(&bytes)
        .map_err(|e| ConfigError::NodeCredentials { path: shown, message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap prints defaults with Display, and a printed default must parse back to itself.
    #[test]
    fn durations_print_as_they_parse() {
        for s in ["1500ms", "4s", "0s", "250ms", "90s"] {
            assert_eq!(s.parse::<DurationStr>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn durations() {
        for (s, ms) in [("500ms", 500), ("4s", 4000), ("4", 4000), ("1.5s", 1500), ("2m", 120_000)] {
            assert_eq!(s.parse::<DurationStr>().unwrap().0, Duration::from_millis(ms), "{s}");
        }
        for bad in ["", "s", "4x", "-1s", "1e400"] {
            assert!(bad.parse::<DurationStr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_field_is_named() {
        let err = serde_saphyr::from_str::<FileConfig>("failclosed: true\n").unwrap_err().to_string();
        assert!(err.contains("failclosed"), "{err}");
        let err =
            serde_saphyr::from_str::<FileConfig>("registries:\n  r.io:\n    endpiont: x\n").unwrap_err().to_string();
        assert!(err.contains("endpiont"), "{err}");
    }

    #[test]
    fn full_file_parses() {
        let text = "mode: warn\nplatforms: [linux/amd64, linux/arm64]\nfailClosed: true\n\
                    registries:\n  docker.io:\n    endpoint: http://127.0.0.1:5000\n\
                    blockedNetworks: [10.0.0.0/8]\nlookupTimeout: 2s\ncache: {ttl: 1m, negativeTtl: 5s, \
                    maxLookupsInFlight: 100, maxLookupsInFlightPerNamespace: 10, maxLookupsInFlightPerRegistry: 20}\n";
        let file: FileConfig = serde_saphyr::from_str(text).unwrap();
        let cfg = Config::from_file(file, "x.yaml", Path::new(".")).unwrap();
        assert_eq!(cfg.mode, Mode::Warn);
        assert_eq!(cfg.platforms.len(), 2);
        assert!(cfg.fail_closed);
        assert_eq!(cfg.registries["docker.io"].endpoint.as_ref().unwrap().as_str(), "http://127.0.0.1:5000/");
        assert_eq!(cfg.lookup_timeout, Duration::from_secs(2));
        assert_eq!(cfg.cache.ttl, Duration::from_secs(60));
        assert_eq!(cfg.cache.max_in_flight, 100);
        assert_eq!((cfg.cache.max_in_flight_per_namespace, cfg.cache.max_in_flight_per_registry), (10, 20));
        let bad: FileConfig = serde_saphyr::from_str("registries:\n  r.io:\n    endpoint: ftp://x\n").unwrap();
        let err = Config::from_file(bad, "x.yaml", Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("registries.r.io.endpoint"), "{err}");
    }
}
