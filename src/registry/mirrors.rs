//! Registry mirrors as the nodes' runtime resolves them: containerd's `config_path` tree of
//! `<host>/hosts.toml` files (`_default/hosts.toml` for hosts without their own), each listing `[host."…"]`
//! entries tried in order, then `server`; or CRI-O's `registries.conf` (v2), whose `[[registry]]` entries
//! rewrite a reference prefix to mirrors and a location.
//!
//! CRI-O reference: containers/image `pkg/sysregistriesv2` (`FindRegistry`: the longest matching `prefix`,
//! `*.` wildcards for subdomains; `PullSourcesFromReference`: mirrors first — skipped for a tag when
//! `mirror-by-digest-only` or `pull-from-mirror = "digest-only"`, for a digest when `"tag-only"` — then
//! `location`; `blocked` refuses the pull).
//!
//! Reference: containerd `core/remotes/docker/config/hosts.go` (`ConfigureHosts`, `parseHostsFile`: default
//! capabilities pull+resolve+push, `ca` paths relative to the file, `override_path`, a scheme-less host is
//! `https`) and `core/remotes/docker/resolver.go` (`Resolve`: a tag reference uses hosts that can `pull` and
//! `resolve`, a digest reference those that can `pull`; any failure tries the next host).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use url::Url;

use super::EndpointSettings;

/// One place containerd may fetch from.
#[derive(Clone, Debug)]
pub struct Host {
    /// The name its endpoint is registered under in the registry client: unique per hosts.toml entry.
    pub key: String,
    pub url: Url,
    /// `host:port` as credentials are keyed to it (a mirror gets the credentials keyed to the mirror).
    pub credential_host: String,
    pub pull: bool,
    pub resolve: bool,
    /// May serve a digest reference (false for a registries.conf `pull-from-mirror = "tag-only"` mirror).
    pub digests: bool,
    /// The `server` of the file (the upstream), not a `[host]` mirror.
    pub server: bool,
    /// registries.conf: the repository prefix this host's entry replaces, and what replaces it.
    pub rewrite: Option<(String, String)>,
    /// containerd: requests carry `?ns=<the image's registry>` when this host is not that registry
    /// (`isProxy`: registry-1.docker.io counts as docker.io).
    pub namespace_param: bool,
}

impl Host {
    /// The reference to ask this host for: same path (containerd), or the prefix rewritten (registries.conf);
    /// its domain is the host's endpoint key.
    pub fn target(&self, r: &crate::reference::Reference) -> crate::reference::Reference {
        let path = match &self.rewrite {
            Some((from, to)) => {
                let rest = r.repository().strip_prefix(from.as_str()).map(str::to_string).unwrap_or_default();
                let full = format!("{to}{rest}");
                full.split_once('/').map(|(_, p)| p.to_string()).unwrap_or_default()
            }
            None => r.path.clone(),
        };
        let proxied = self.url.host_str().is_some_and(|h| {
            let host = match self.url.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            };
            host != r.domain && !(r.domain == "docker.io" && host == "registry-1.docker.io")
        });
        let domain =
            if self.namespace_param && proxied { format!("{}?ns={}", self.key, r.domain) } else { self.key.clone() };
        crate::reference::Reference { domain, path, ..r.clone() }
    }
}

/// The hosts of one registry, in the order containerd tries them.
#[derive(Clone, Debug, Default)]
pub struct Hosts {
    pub hosts: Vec<Host>,
    /// Whether the file names a `server`; without one the registry itself is tried last, as configured.
    pub has_server: bool,
    /// registries.conf `blocked = true`: the prefix that blocks it.
    pub blocked: Option<String>,
}

impl Hosts {
    /// The hosts a reference may be fetched from: `pull` and `resolve` for a tag, `pull` for a digest.
    pub fn for_reference(&self, by_digest: bool) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(move |h| h.pull && if by_digest { h.digests } else { h.resolve })
    }
}

/// Every registry's hosts, from a containerd `config_path`.
#[derive(Clone, Debug, Default)]
pub struct Mirrors {
    by_registry: HashMap<String, Hosts>,
    fallback: Option<Hosts>,
    /// registries.conf entries by prefix (`*.` wildcards kept as written).
    by_prefix: Vec<(String, Hosts)>,
    /// Endpoint settings for every host, to register with the registry client.
    endpoints: Vec<(String, EndpointSettings)>,
}

/// Why a hosts.toml tree is unusable: names the file and the entry.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("mirrors: {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Mirrors {
    /// Reads `<dir>/<host>/hosts.toml` for every host directory.
    pub fn load_containerd(dir: &Path) -> Result<Self, MirrorError> {
        let invalid = |path: &Path, message: String| MirrorError::Invalid { path: path.display().to_string(), message };
        let entries = std::fs::read_dir(dir).map_err(|e| invalid(dir, e.to_string()))?;
        let mut names: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join("hosts.toml").is_file())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path().join("hosts.toml")))
            .collect();
        names.sort();
        let mut m = Mirrors::default();
        for (registry, file) in names {
            let hosts = m.parse(&registry, &file)?;
            if registry == "_default" {
                m.fallback = Some(hosts);
            } else {
                m.by_registry.insert(registry, hosts);
            }
        }
        Ok(m)
    }

    /// The hosts for a reference, if a hosts.toml (by its domain) or a registries.conf entry (the longest
    /// matching prefix) covers it.
    pub fn hosts(&self, r: &crate::reference::Reference) -> Option<&Hosts> {
        if let Some(h) = self.by_registry.get(&r.domain).or(self.fallback.as_ref()) {
            return Some(h);
        }
        if self.by_prefix.is_empty() {
            return None;
        }
        let repo = r.repository();
        self.by_prefix
            .iter()
            .filter(|(prefix, _)| prefix_matches(prefix, &repo))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, h)| h)
    }

    /// Reads a CRI-O / containers `registries.conf` (v2): `[[registry]]` with `prefix`, `location`, `blocked`,
    /// `insecure`, `mirror-by-digest-only` and `[[registry.mirror]]` (`location`, `insecure`,
    /// `pull-from-mirror`).
    pub fn load_registries_conf(&mut self, file: &Path) -> Result<(), MirrorError> {
        #[derive(serde::Deserialize)]
        struct Conf {
            #[serde(default)]
            registry: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "kebab-case")]
        struct Entry {
            prefix: Option<String>,
            #[serde(default)]
            location: String,
            #[serde(default)]
            insecure: bool,
            #[serde(default)]
            blocked: bool,
            #[serde(default)]
            mirror_by_digest_only: bool,
            #[serde(default)]
            mirror: Vec<MirrorEntry>,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "kebab-case")]
        struct MirrorEntry {
            location: String,
            #[serde(default)]
            insecure: bool,
            pull_from_mirror: Option<String>,
        }
        let invalid = |message: String| MirrorError::Invalid { path: file.display().to_string(), message };
        let text = std::fs::read_to_string(file).map_err(|e| invalid(e.to_string()))?;
        let conf: Conf = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        for (i, e) in conf.registry.into_iter().enumerate() {
            let prefix = e.prefix.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| e.location.clone());
            if prefix.is_empty() {
                return Err(invalid(format!("registry[{i}]: neither prefix nor location is set")));
            }
            let wildcard = prefix.starts_with("*.");
            if wildcard && !e.location.is_empty() {
                return Err(invalid(format!("registry[{i}] ({prefix}): a wildcard prefix cannot have a location")));
            }
            let mut hosts = Hosts { blocked: e.blocked.then(|| prefix.clone()), ..Hosts::default() };
            for (j, m) in e.mirror.iter().enumerate() {
                let (pull, resolve) = match m.pull_from_mirror.as_deref() {
                    None | Some("all") => (true, !e.mirror_by_digest_only),
                    Some("digest-only") => (true, false),
                    Some("tag-only") => (false, true),
                    Some(other) => {
                        return Err(invalid(format!("registry[{i}].mirror[{j}]: pull-from-mirror {other:?}")));
                    }
                };
                let host = self
                    .location_host(&prefix, &m.location, m.insecure, wildcard)
                    .map_err(|msg| invalid(format!("registry[{i}].mirror[{j}]: {msg}")))?;
                // "tag-only": a tag may come from the mirror, a digest may not.
                hosts.hosts.push(Host { pull: true, resolve, digests: pull, server: false, ..host });
            }
            if !e.location.is_empty() && e.location != prefix {
                let host = self
                    .location_host(&prefix, &e.location, e.insecure, false)
                    .map_err(|msg| invalid(format!("registry[{i}]: {msg}")))?;
                hosts.hosts.push(Host { server: true, ..host });
                hosts.has_server = true;
            } else if e.insecure {
                let host = self
                    .location_host(&prefix, &prefix, true, false)
                    .map_err(|msg| invalid(format!("registry[{i}]: {msg}")))?;
                hosts.hosts.push(Host { server: true, ..host });
                hosts.has_server = true;
            }
            self.by_prefix.push((prefix, hosts));
        }
        Ok(())
    }

    /// A registries.conf location (`host[:port][/path]`) as a host that rewrites `prefix` to it.
    fn location_host(&mut self, prefix: &str, location: &str, insecure: bool, wildcard: bool) -> Result<Host, String> {
        let host_part = location.split('/').next().unwrap_or_default();
        let url = Url::parse(&format!("https://{host_part}")).map_err(|e| format!("location {location:?}: {e}"))?;
        let key = format!("{}#{prefix}#{}", url.as_str().trim_end_matches('/'), self.endpoints.len());
        self.endpoints.push((
            key.clone(),
            EndpointSettings { endpoint: Some(url.clone()), insecure_skip_verify: insecure, ..Default::default() },
        ));
        // A wildcard prefix keeps the image's path under the mirror's host.
        let rewrite = if wildcard { None } else { Some((prefix.to_string(), location.to_string())) };
        Ok(Host {
            key,
            url,
            credential_host: host_part.to_string(),
            pull: true,
            resolve: true,
            digests: true,
            server: false,
            rewrite,
            namespace_param: false,
        })
    }

    /// Endpoint settings of every host, keyed as [`Host::key`].
    pub fn endpoints(&self) -> &[(String, EndpointSettings)] {
        &self.endpoints
    }

    fn parse(&mut self, registry: &str, file: &Path) -> Result<Hosts, MirrorError> {
        let invalid = |message: String| MirrorError::Invalid { path: file.display().to_string(), message };
        let text = std::fs::read_to_string(file).map_err(|e| invalid(e.to_string()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let mut hosts = Hosts::default();
        if let Some(hs) = table.get("host") {
            let hs = hs.as_table().ok_or_else(|| invalid("host: expected [host.\"…\"] tables".into()))?;
            for (name, entry) in hs {
                let entry = entry.as_table().ok_or_else(|| invalid(format!("host.{name:?}: expected a table")))?;
                let host = self
                    .host(registry, name, entry, base, false)
                    .map_err(|m| invalid(format!("host.{name:?}: {m}")))?;
                hosts.hosts.push(host);
            }
        }
        if let Some(server) = table.get("server") {
            let server = server.as_str().ok_or_else(|| invalid("server: expected a URL string".into()))?;
            let host = self.host(registry, server, &table, base, true).map_err(|m| invalid(format!("server: {m}")))?;
            hosts.hosts.push(host);
            hosts.has_server = true;
        }
        Ok(hosts)
    }

    /// One entry: its URL (https when no scheme), capabilities, CA, `skip_verify`, `override_path`.
    fn host(
        &mut self,
        registry: &str,
        name: &str,
        entry: &toml::Table,
        base: &Path,
        server: bool,
    ) -> Result<Host, String> {
        let with_scheme = if name.contains("://") { name.to_string() } else { format!("https://{name}") };
        let url = Url::parse(&with_scheme).map_err(|e| format!("{name:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("{name:?} must be an http:// or https:// URL with a host"));
        }
        let caps: Vec<String> = match entry.get("capabilities") {
            None => vec!["pull".into(), "resolve".into(), "push".into()],
            Some(v) => v
                .as_array()
                .ok_or("capabilities: expected a list")?
                .iter()
                .map(|c| c.as_str().map(str::to_string).ok_or("capabilities: expected strings"))
                .collect::<Result<_, _>>()?,
        };
        let ca_paths: Vec<String> = match entry.get("ca") {
            None => vec![],
            Some(toml::Value::String(s)) => vec![s.clone()],
            Some(toml::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Some(_) => return Err("ca: expected a path or a list of paths".into()),
        };
        let mut pem = Vec::new();
        for ca in &ca_paths {
            let full = base.join(ca);
            let bytes = std::fs::read(&full).map_err(|e| format!("ca: cannot read {}: {e}", full.display()))?;
            pem.extend_from_slice(&bytes);
            pem.push(b'\n');
        }
        let flag = |k: &str| entry.get(k).and_then(toml::Value::as_bool).unwrap_or(false);
        let mut headers = Vec::new();
        if let Some(h) = entry.get("header") {
            let h = h.as_table().ok_or("header: expected a table of name = value")?;
            for (k, v) in h {
                // containerd takes a string or a list of strings per header.
                let values: Vec<String> = match v {
                    toml::Value::String(s) => vec![s.clone()],
                    toml::Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
                    _ => return Err(format!("header.{k}: expected a string or a list of strings")),
                };
                headers.extend(values.into_iter().map(|v| (k.clone(), v)));
            }
        }
        let key = format!("{}#{registry}#{}", url.as_str().trim_end_matches('/'), self.endpoints.len());
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let credential_host = format!("{}{port}", url.host_str().unwrap_or_default());
        let settings = EndpointSettings {
            endpoint: Some(url.clone()),
            ca_pem: (!ca_paths.is_empty()).then(|| (ca_paths.join(", "), pem)),
            insecure_skip_verify: flag("skip_verify"),
            override_path: flag("override_path"),
            headers,
        };
        self.endpoints.push((key.clone(), settings));
        Ok(Host {
            key,
            url,
            credential_host,
            pull: caps.iter().any(|c| c == "pull"),
            resolve: caps.iter().any(|c| c == "resolve"),
            digests: true,
            server,
            rewrite: None,
            namespace_param: true,
        })
    }
}

/// `sysregistriesv2` prefix matching: the whole repository, or a prefix of it ending at a path separator; a
/// `*.example.com` prefix matches any subdomain's repositories.
fn prefix_matches(prefix: &str, repository: &str) -> bool {
    if let Some(suffix) = prefix.strip_prefix('*') {
        let host = repository.split('/').next().unwrap_or_default();
        return host.ends_with(suffix) && host.len() > suffix.len();
    }
    repository == prefix || repository.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (host, text) in files {
            std::fs::create_dir_all(dir.path().join(host)).unwrap();
            std::fs::write(dir.path().join(host).join("hosts.toml"), text).unwrap();
        }
        dir
    }

    /// containerd's hosts.md examples: order, default capabilities, scheme-less hosts, `_default`.
    #[test]
    fn hosts_files_read_like_containerd() {
        let dir = tree(&[
            (
                "docker.io",
                r#"server = "https://registry-1.docker.io"
[host."https://mirror-b.example.com"]
  capabilities = ["pull", "resolve"]
[host."mirror-a.example.com:5000"]
  capabilities = ["pull"]
  override_path = true
"#,
            ),
            ("_default", "[host.\"http://cache.local:8080\"]\n"),
        ]);
        let m = Mirrors::load_containerd(dir.path()).unwrap();
        let hub = m.hosts(&crate::reference::Reference::parse("nginx:1").unwrap()).unwrap();
        let names: Vec<&str> = hub.hosts.iter().map(|h| h.url.as_str()).collect();
        assert_eq!(
            names,
            ["https://mirror-b.example.com/", "https://mirror-a.example.com:5000/", "https://registry-1.docker.io/"],
            "in file order, the server last"
        );
        assert!(hub.has_server && hub.hosts[2].server);
        assert_eq!(hub.hosts[1].credential_host, "mirror-a.example.com:5000");
        let tag: Vec<&str> = hub.for_reference(false).map(|h| h.credential_host.as_str()).collect();
        assert_eq!(tag, ["mirror-b.example.com", "registry-1.docker.io"], "a pull-only host cannot resolve a tag");
        assert_eq!(hub.for_reference(true).count(), 3);
        let other = m.hosts(&crate::reference::Reference::parse("quay.io/x/y:1").unwrap()).unwrap();
        assert!(!other.has_server, "_default: the registry itself after the mirrors");
        assert_eq!(other.hosts[0].url.as_str(), "http://cache.local:8080/");
        let settings: HashMap<_, _> = m.endpoints().iter().cloned().collect();
        assert!(settings[&hub.hosts[1].key].override_path);
    }

    /// containers/image sysregistriesv2 `refMatchingPrefix` and `FindRegistry` (longest prefix wins).
    #[test]
    fn registries_conf_prefixes_match_like_containers_image() {
        let cases = [
            ("docker.io", "docker.io/library/nginx", true),
            ("docker.io/library", "docker.io/library/nginx", true),
            ("docker.io/library/nginx", "docker.io/library/nginx", true),
            ("docker.io/lib", "docker.io/library/nginx", false),
            ("*.example.com", "a.example.com/app", true),
            ("*.example.com", "a.b.example.com/app", true),
            ("*.example.com", "example.com/app", false),
            ("*.example.com", "notexample.com/app", false),
        ];
        for (prefix, repo, want) in cases {
            assert_eq!(prefix_matches(prefix, repo), want, "{prefix} vs {repo}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registries.conf");
        std::fs::write(
            &file,
            r#"unqualified-search-registries = ["docker.io"]
[[registry]]
prefix = "docker.io"
[[registry.mirror]]
location = "hub-mirror.local"
[[registry]]
prefix = "docker.io/library"
location = "docker.io/library"
mirror-by-digest-only = true
[[registry.mirror]]
location = "library-mirror.local:5000/hub"
[[registry]]
prefix = "docker.io/blocked"
blocked = true
"#,
        )
        .unwrap();
        let mut m = Mirrors::default();
        m.load_registries_conf(&file).unwrap();
        let r = |s: &str| crate::reference::Reference::parse(s).unwrap();
        let lib = m.hosts(&r("nginx:1")).unwrap();
        assert_eq!(lib.hosts[0].credential_host, "library-mirror.local:5000", "the longest prefix wins");
        assert_eq!(lib.hosts[0].target(&r("nginx:1")).path, "hub/nginx", "the prefix is rewritten");
        assert_eq!(lib.for_reference(false).count(), 0, "mirror-by-digest-only: a tag never goes to the mirror");
        assert_eq!(lib.for_reference(true).count(), 1);
        let other = m.hosts(&r("team/app:1")).unwrap();
        assert_eq!(other.hosts[0].target(&r("team/app:1")).path, "team/app");
        assert_eq!(m.hosts(&r("blocked/x:1")).unwrap().blocked.as_deref(), Some("docker.io/blocked"));
        assert!(m.hosts(&r("quay.io/x/y:1")).is_none());
    }

    #[test]
    fn bad_files_name_the_file_and_entry() {
        let dir = tree(&[("r.io", "[host.\"ftp://x\"]\n")]);
        let e = Mirrors::load_containerd(dir.path()).unwrap_err().to_string();
        assert!(e.contains("r.io/hosts.toml") && e.contains("ftp://x"), "{e}");
        let dir = tree(&[("r.io", "[host.\"https://m\"]\n  ca = \"missing.pem\"\n")]);
        let e = Mirrors::load_containerd(dir.path()).unwrap_err().to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
