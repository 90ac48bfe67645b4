//! Registry mirrors as containerd resolves them: a `config_path` tree of `<host>/hosts.toml` files
//! (`_default/hosts.toml` for hosts without their own), each listing `[host."…"]` entries tried in order,
//! then `server`.
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
    /// The `server` of the file (the upstream), not a `[host]` mirror.
    pub server: bool,
}

/// The hosts of one registry, in the order containerd tries them.
#[derive(Clone, Debug, Default)]
pub struct Hosts {
    pub hosts: Vec<Host>,
    /// Whether the file names a `server`; without one the registry itself is tried last, as configured.
    pub has_server: bool,
}

impl Hosts {
    /// The hosts a reference may be fetched from: `pull` and `resolve` for a tag, `pull` for a digest.
    pub fn for_reference(&self, by_digest: bool) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(move |h| h.pull && (by_digest || h.resolve))
    }
}

/// Every registry's hosts, from a containerd `config_path`.
#[derive(Clone, Debug, Default)]
pub struct Mirrors {
    by_registry: HashMap<String, Hosts>,
    fallback: Option<Hosts>,
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

    /// The hosts for a registry (a normalized reference's domain), if a hosts.toml covers it.
    pub fn hosts(&self, registry: &str) -> Option<&Hosts> {
        self.by_registry.get(registry).or(self.fallback.as_ref())
    }

    /// Endpoint settings of every host, keyed as [`Host::key`].
    pub fn endpoints(&self) -> &[(String, EndpointSettings)] {
        &self.endpoints
    }

    pub fn is_empty(&self) -> bool {
        self.by_registry.is_empty() && self.fallback.is_none()
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
        let key = format!("{}#{registry}#{}", url.as_str().trim_end_matches('/'), self.endpoints.len());
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let credential_host = format!("{}{port}", url.host_str().unwrap_or_default());
        let settings = EndpointSettings {
            endpoint: Some(url.clone()),
            ca_pem: (!ca_paths.is_empty()).then(|| (ca_paths.join(", "), pem)),
            insecure_skip_verify: flag("skip_verify"),
            override_path: flag("override_path"),
        };
        self.endpoints.push((key.clone(), settings));
        Ok(Host {
            key,
            url,
            credential_host,
            pull: caps.iter().any(|c| c == "pull"),
            resolve: caps.iter().any(|c| c == "resolve"),
            server,
        })
    }
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
        let hub = m.hosts("docker.io").unwrap();
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
        let other = m.hosts("quay.io").unwrap();
        assert!(!other.has_server, "_default: the registry itself after the mirrors");
        assert_eq!(other.hosts[0].url.as_str(), "http://cache.local:8080/");
        let settings: HashMap<_, _> = m.endpoints().iter().cloned().collect();
        assert!(settings[&hub.hosts[1].key].override_path);
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
