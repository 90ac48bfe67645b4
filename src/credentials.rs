//! Registry credentials: dockerconfig parsing, kubelet keyring matching, and where pull secrets come from.
//!
//! The order of candidates is the kubelet's: the pod's pull secrets (or, when the pod lists none, its
//! ServiceAccount's) form one keyring, node-wide credentials a second; each keyring yields every matching
//! entry, keys reverse-sorted so more specific ones come first.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use crate::workload::PodSpec;

/// A username and password (or token) for one registry. Never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

impl Credential {
    /// A stable, non-reversible identifier used in cache keys, so one credential's results never answer for
    /// another's.
    pub fn fingerprint(&self) -> String {
        let mut input = Vec::with_capacity(self.username.len() + self.password.len() + 16);
        input.extend_from_slice(b"pullguard-credential\0");
        input.extend_from_slice(self.username.as_bytes());
        input.push(0);
        input.extend_from_slice(self.password.as_bytes());
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
        digest.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Where a credential came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A pull secret `namespace/name`.
    Secret { namespace: String, name: String },
    /// Node-wide credentials (a docker config.json on the node).
    Node,
}

impl Source {
    pub fn secret_name(&self) -> Option<String> {
        match self {
            Source::Secret { namespace, name } => Some(format!("{namespace}/{name}")),
            Source::Node => None,
        }
    }
}

/// One credential the kubelet would try, in order.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub source: Source,
    /// The dockerconfig key that matched, scheme and `/v1/` stripped.
    pub key: String,
    pub credential: Credential,
}

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
#[derive(Clone, Debug, Default)]
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
                let decoded = B64.decode(auth.trim()).ok().and_then(|b| String::from_utf8(b).ok());
                let (u, p) = decoded
                    .as_deref()
                    .and_then(|d| d.split_once(':'))
                    .ok_or_else(|| ConfigError::Auth { key: key.clone() })?;
                username = u.to_string();
                password = p.to_string();
            }
            out.push((key, Credential { username, password }));
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

/// A kubelet `BasicDockerKeyring`: entries grouped by normalized key, keys reverse-sorted.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    entries: BTreeMap<String, Vec<(Source, Credential)>>,
}

const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

impl Keyring {
    /// Adds every entry of a dockerconfig, keyed as the kubelet keys them.
    pub fn add(&mut self, source: &Source, config: &DockerConfig) {
        for (loc, cred) in &config.0 {
            if let Some(key) = normalize_key(loc) {
                self.entries.entry(key).or_default().push((source.clone(), cred.clone()));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every credential matching `repository` (`domain/path`), most specific key first.
    pub fn lookup(&self, repository: &str) -> Vec<Candidate> {
        let mut out = Vec::new();
        for (key, creds) in self.entries.iter().rev() {
            if urls_match(key, repository) {
                out.extend(creds.iter().map(|(source, credential)| Candidate {
                    source: source.clone(),
                    key: key.clone(),
                    credential: credential.clone(),
                }));
            }
        }
        if out.is_empty() && is_default_registry_match(repository) {
            if let Some(creds) = self.entries.get(DEFAULT_REGISTRY_HOST) {
                out.extend(creds.iter().map(|(source, credential)| Candidate {
                    source: source.clone(),
                    key: DEFAULT_REGISTRY_HOST.to_string(),
                    credential: credential.clone(),
                }));
            }
        }
        out
    }
}

/// Strips the scheme and a `/v1/` or `/v2/` path, as the kubelet's `BasicDockerKeyring.Add` does.
fn normalize_key(loc: &str) -> Option<String> {
    let rest = loc.strip_prefix("https://").or_else(|| loc.strip_prefix("http://")).unwrap_or(loc);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    let path = if path.starts_with("/v2/") || path.starts_with("/v1/") { &path[3..] } else { path };
    let host = host.to_ascii_lowercase();
    Some(if path.is_empty() || path == "/" { host } else { format!("{host}{path}") })
}

fn is_default_registry_match(image: &str) -> bool {
    let mut parts = image.splitn(2, '/');
    let first = parts.next().unwrap_or_default();
    if first.is_empty() {
        return false;
    }
    match parts.next() {
        None => true,
        Some(_) => first == "docker.io" || first == DEFAULT_REGISTRY_HOST || !first.contains(['.', ':']),
    }
}

/// The kubelet's `URLsMatch`: same port, same number of host labels, each label a glob match, and the
/// key's path a prefix of the image's path.
fn urls_match(glob: &str, target: &str) -> bool {
    let split = |s: &str| -> (String, String) {
        match s.find('/') {
            Some(i) => (s[..i].to_ascii_lowercase(), s[i..].to_string()),
            None => (s.to_ascii_lowercase(), String::new()),
        }
    };
    let (glob_host, glob_path) = split(glob);
    let (target_host, target_path) = split(target);
    let host_port = |h: &str| -> (String, String) {
        match h.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || h.starts_with('[') => (host.to_string(), port.to_string()),
            _ => (h.to_string(), String::new()),
        }
    };
    let (gh, gp) = host_port(&glob_host);
    let (th, tp) = host_port(&target_host);
    if gp != tp || !target_path.starts_with(&glob_path) {
        return false;
    }
    let (gl, tl): (Vec<&str>, Vec<&str>) = (gh.split('.').collect(), th.split('.').collect());
    gl.len() == tl.len() && gl.iter().zip(&tl).all(|(g, t)| glob_match(g.as_bytes(), t.as_bytes()))
}

/// Go's `filepath.Match` for one host label, ported from path/filepath/match.go (Go 1.16+): `*`, `?`, `[...]`
/// classes with ranges and `^` negation, `\\` escapes; a malformed pattern (Go's `ErrBadPattern`) matches
/// nothing, as the kubelet treats that error.
///
/// Like Go, each `*` is followed by a fixed-length chunk that is matched at the leftmost position that fits, and
/// the matcher never backtracks into an earlier star: time is O(pattern × label), whatever the stars. (A
/// backtracking matcher took exponential time on `*a*a*a*a*a*a*a*a*a*a*a*a*b` against 60 `a`s.)
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (Ok(pattern), Ok(name)) = (std::str::from_utf8(pattern), std::str::from_utf8(name)) else {
        return false;
    };
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    go_match(&pattern, &name).unwrap_or(false)
}

/// `filepath.Match`; `Err` is `ErrBadPattern`.
fn go_match(mut pattern: &[char], mut name: &[char]) -> Result<bool, ()> {
    'chunks: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing star matches the rest (labels hold no path separator).
            return Ok(true);
        }
        // At the current position; the last chunk must also exhaust the name.
        if let Some(t) = match_chunk(chunk, name)? {
            if t.is_empty() || !pattern.is_empty() {
                name = t;
                continue;
            }
        }
        if star {
            // Skip one more character of the name each time: never back into an earlier chunk.
            for i in 0..name.len() {
                if let Some(t) = match_chunk(chunk, &name[i + 1..])? {
                    if pattern.is_empty() && !t.is_empty() {
                        continue;
                    }
                    name = t;
                    continue 'chunks;
                }
            }
        }
        // No match; Go still reports a malformed remainder of the pattern.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, &[])?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Leading stars, then the chunk up to the next star outside a class.
fn scan_chunk(mut pattern: &[char]) -> (bool, &[char], &[char]) {
    let mut star = false;
    while pattern.first() == Some(&'*') {
        pattern = &pattern[1..];
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            '\\' if i + 1 < pattern.len() => i += 1,
            '[' => in_range = true,
            ']' => in_range = false,
            '*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Matches a star-free chunk at the start of `s`: the rest of `s` on a match. Like Go, the whole chunk is
/// parsed even after a mismatch, so a malformed chunk is an error wherever it is.
fn match_chunk<'a>(mut chunk: &[char], mut s: &'a [char]) -> Result<Option<&'a [char]>, ()> {
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            '[' => {
                let r = if failed {
                    None
                } else {
                    let r = s[0];
                    s = &s[1..];
                    Some(r)
                };
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_escaped(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&'-') {
                        let (h, rest) = get_escaped(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if r.is_some_and(|r| lo <= r && r <= hi) {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            '?' => {
                if !failed {
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                let literal = if c == '\\' {
                    chunk = &chunk[1..];
                    *chunk.first().ok_or(())?
                } else {
                    c
                };
                if !failed {
                    if s[0] != literal {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// One possibly escaped character of a class; a class must not end inside it.
fn get_escaped(chunk: &[char]) -> Result<(char, &[char]), ()> {
    let mut chunk = chunk;
    match chunk.first() {
        None | Some('-') | Some(']') => return Err(()),
        Some('\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return Err(());
            }
        }
        _ => {}
    }
    let rest = &chunk[1..];
    if rest.is_empty() {
        return Err(());
    }
    Ok((chunk[0], rest))
}

/// A pull secret as the engine sees it: type and decoded data.
#[derive(Clone, Default)]
pub struct SecretData {
    pub type_: String,
    pub data: BTreeMap<String, Vec<u8>>,
    /// Why the object could not be read at all (e.g. a data value that is not base64). Such a secret exists, so
    /// a pod that names it hears that it cannot be used, not that it is missing.
    pub unreadable: Option<String>,
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

impl SecretData {
    /// Reads the dockerconfig inside a pull secret, or says why it cannot be used.
    pub fn docker_config(&self) -> Result<DockerConfig, String> {
        if let Some(why) = &self.unreadable {
            return Err(why.clone());
        }
        type Parse = fn(&[u8]) -> Result<DockerConfig, ConfigError>;
        let (key, parse): (&str, Parse) = match self.type_.as_str() {
            DOCKER_CONFIG_JSON => (".dockerconfigjson", DockerConfig::from_config_json),
            DOCKER_CFG => (".dockercfg", DockerConfig::from_dockercfg),
            other => {
                return Err(format!(
                    "its type is {other:?}; pull secrets must be {DOCKER_CONFIG_JSON} or {DOCKER_CFG} \
                     (create it with `kubectl create secret docker-registry`)"
                ));
            }
        };
        let bytes = self.data.get(key).ok_or_else(|| format!("it has no data key {key}"))?;
        parse(bytes).map_err(|e| format!("data key {key}: {e}"))
    }
}

/// What the engine needs to know of the cluster: pull secrets and ServiceAccounts. `check` builds it from the
/// input files; the webhook from its watch caches.
pub trait ClusterView: Send + Sync {
    fn secret(&self, namespace: &str, name: &str) -> Option<SecretData>;
    /// Namespaces other than `namespace` that hold a secret with this name.
    fn secret_elsewhere(&self, namespace: &str, name: &str) -> Vec<String>;
    /// The pull-secret names of a ServiceAccount, if it is known.
    fn service_account_pull_secrets(&self, namespace: &str, name: &str) -> Option<Vec<String>>;
    /// False when secrets are deliberately not read (node credentials only): a named secret is then unknown,
    /// not missing.
    fn secrets_visible(&self) -> bool {
        true
    }
}

/// A problem with one referenced pull secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretProblem {
    NotFound { name: String },
    InOtherNamespace { name: String, namespaces: Vec<String> },
    Invalid { name: String, detail: String },
}

/// The pod's own keyring and what was wrong with the secrets it names.
#[derive(Clone, Debug, Default)]
pub struct PodCredentials {
    pub keyring: Keyring,
    pub problems: Vec<SecretProblem>,
    /// `None` when the secrets come from the pod itself, else the ServiceAccount's name.
    pub from_service_account: Option<String>,
}

/// A valid Secret name: a DNS subdomain. Anything else (a `/` above all) can never name a secret of this
/// namespace, and must never be read as `other-namespace/name`.
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Gathers the pull secrets the kubelet would use for this pod, as the ServiceAccount admission plugin and
/// the kubelet do: the pod's `imagePullSecrets`, or its ServiceAccount's when it lists none.
pub fn pod_credentials(spec: &PodSpec, namespace: &str, view: &dyn ClusterView) -> PodCredentials {
    let mut out = PodCredentials::default();
    let mut names: Vec<String> = spec.image_pull_secrets.iter().map(|s| s.name.clone()).collect();
    if names.is_empty() {
        let sa = spec.service_account();
        if let Some(sa_names) = view.service_account_pull_secrets(namespace, sa) {
            if !sa_names.is_empty() {
                out.from_service_account = Some(sa.to_string());
                names = sa_names;
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    let visible = view.secrets_visible();
    for name in names {
        if !seen.insert(name.clone()) {
            continue;
        }
        if !valid_secret_name(&name) {
            out.problems.push(SecretProblem::Invalid {
                name: name.clone(),
                detail: "it is not a valid Secret name (lowercase DNS subdomain; a pull secret is always \
                         read from the pod's own namespace, so it cannot contain '/')"
                    .into(),
            });
            continue;
        }
        if !visible {
            continue;
        }
        match view.secret(namespace, &name) {
            Some(secret) => match secret.docker_config() {
                Ok(cfg) => out.keyring.add(&Source::Secret { namespace: namespace.into(), name }, &cfg),
                Err(detail) => out.problems.push(SecretProblem::Invalid { name, detail }),
            },
            None => {
                let elsewhere = view.secret_elsewhere(namespace, &name);
                out.problems.push(if elsewhere.is_empty() {
                    SecretProblem::NotFound { name }
                } else {
                    SecretProblem::InOtherNamespace { name, namespaces: elsewhere }
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entries: &[(&str, &str)]) -> DockerConfig {
        DockerConfig(
            entries
                .iter()
                .map(|(k, u)| (k.to_string(), Credential { username: u.to_string(), password: "pw".into() }))
                .collect(),
        )
    }

    fn users(k: &Keyring, image: &str) -> Vec<String> {
        k.lookup(image).into_iter().map(|c| c.credential.username).collect()
    }

    /// Cases from the kubelet's credentialprovider keyring tests.
    #[test]
    fn keyring_matches_like_the_kubelet() {
        let mut k = Keyring::default();
        k.add(
            &Source::Node,
            &cfg(&[
                ("https://registry.example.com/v1/", "plain"),
                ("registry.example.com/team", "team"),
                ("*.example.com", "glob"),
                ("*.*.example.com", "glob2"),
                ("http://ports.example.com:5000", "port"),
                ("index.docker.io/v1/", "hub"),
                ("quay.io/coreos", "coreos"),
                ("q[a-z]ay.io", "class"),
            ]),
        );
        let cases: &[(&str, &[&str])] = &[
            ("registry.example.com/team/app", &["team", "plain", "glob"]),
            ("registry.example.com/teamster/app", &["team", "plain", "glob"]),
            ("registry.example.com/other/app", &["plain", "glob"]),
            ("foo.example.com/app", &["glob"]),
            ("a.b.example.com/app", &["glob2"]),
            ("example.com/app", &[]),
            ("ports.example.com:5000/app", &["port"]),
            ("ports.example.com/app", &["glob"]),
            ("ports.example.com:5001/app", &[]),
            ("docker.io/library/nginx", &["hub"]),
            ("docker.io/someone/app", &["hub"]),
            ("quay.io/coreos/etcd", &["coreos", "class"]),
            ("quay.io/other/etcd", &["class"]),
            ("gcr.io/x/y", &[]),
        ];
        for (image, want) in cases {
            assert_eq!(users(&k, image), *want, "image {image}");
        }
    }

    #[test]
    fn docker_io_key_matches_directly() {
        let mut k = Keyring::default();
        k.add(&Source::Node, &cfg(&[("docker.io", "d"), ("https://index.docker.io/v1/", "i")]));
        assert_eq!(users(&k, "docker.io/library/nginx"), ["d"], "a direct match wins over the default fallback");
    }

    #[test]
    fn parses_both_secret_formats_and_auth() {
        let auth = B64.encode("alice:s3cret");
        let json = format!(r#"{{"auths":{{"r.io":{{"auth":"{auth}"}},"s.io":{{"username":"bob","password":"pw"}}}}}}"#);
        let c = DockerConfig::from_config_json(json.as_bytes()).unwrap();
        assert_eq!(c.0[0].1, Credential { username: "alice".into(), password: "s3cret".into() });
        assert_eq!(c.0[1].1.username, "bob");
        let legacy = format!(r#"{{"r.io":{{"auth":"{auth}","email":"a@b"}}}}"#);
        assert_eq!(DockerConfig::from_dockercfg(legacy.as_bytes()).unwrap().0[0].1.username, "alice");
    }

    #[test]
    fn errors_never_echo_the_payload() {
        let err = DockerConfig::from_config_json(br#"{"auths": {"r.io": {"password": "hunter2", }}"#).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let bad_auth = r#"{"auths":{"r.io":{"auth":"aHVudGVyMg=="}}}"#; // "hunter2", no colon
        let err = DockerConfig::from_config_json(bad_auth.as_bytes()).unwrap_err().to_string();
        assert!(!err.contains("hunter2") && err.contains("r.io"), "{err}");
        let c = Credential { username: "u".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn secret_names_with_slash_are_invalid() {
        for bad in ["other/regcred", "", "UPPER", "a..b", "-a"] {
            assert!(!valid_secret_name(bad), "{bad}");
        }
        assert!(valid_secret_name("regcred.v2-x"));
    }

    #[test]
    fn fingerprints_differ_per_credential() {
        let a = Credential { username: "u".into(), password: "a".into() };
        let b = Credential { username: "u".into(), password: "b".into() };
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }

    /// Go's `filepath.Match`, which the kubelet's `URLsMatch` applies per host label (credentialprovider/keyring.go:
    /// `matched, _ := filepath.Match(globComponent, targetComponent)`; path/filepath/match.go for the syntax).
    #[test]
    fn host_labels_match_like_go_filepath_match() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("*", "", true),
            ("a*", "abc", true),
            ("a*c", "abc", true),
            ("a*c", "abd", false),
            ("*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[^a-c]x", "dx", true),
            ("[^a-c]x", "ax", false),
            ("[abc]", "b", true),
            ("app*", "app1", true),
            ("app*", "ap", false),
            // A malformed class is ErrBadPattern in Go: never a match.
            ("[a-", "a", false),
            ("[]", "a", false),
        ];
        for (pat, s, want) in cases {
            assert_eq!(glob_match(pat.as_bytes(), s.as_bytes()), *want, "{pat} vs {s}");
        }
    }

    /// A key like `*a*a*a*a*a*a*a*a*a*a*a*a*b.test` against a 60-character label froze the webhook: backtracking
    /// matching is exponential in the number of stars. The match must end, whatever the input.
    #[test]
    fn many_star_glob_against_a_long_label_finishes() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let key = format!("{}*b.test", "*a".repeat(12));
            let mut k = Keyring::default();
            k.add(&Source::Node, &cfg(&[(key.as_str(), "mallory")]));
            let host = format!("{}.test/team/app", "a".repeat(60));
            let _ = tx.send((users(&k, &host), users(&k, &format!("{}b.test/x", "a".repeat(60)))));
        });
        let (miss, hit) = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("keyring matching finished");
        assert!(miss.is_empty());
        assert_eq!(hit, ["mallory"]);
    }
}
