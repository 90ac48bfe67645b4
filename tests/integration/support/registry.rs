//! Debian's docker-registry (distribution 2.8), started per test on 127.0.0.1 and killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub enum Auth {
    Anonymous,
    Htpasswd,
    Token { realm: String },
}

pub struct Registry {
    pub addr: SocketAddr,
    pub tls: bool,
    child: Child,
    log: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Registry {
    /// Starts a registry serving `storage`. `dir` holds its config and log.
    pub async fn start(name: &str, dir: &Path, storage: &Path, auth: Auth, tls: bool) -> Self {
        let fixtures = super::fixtures();
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut cfg = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n  secret: pullguard-test-secret\n",
                storage.display()
            );
            if tls {
                cfg.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    fixtures.join("pki/registry.pem").display(),
                    fixtures.join("pki/registry-key.pem").display()
                ));
            }
            match &auth {
                Auth::Anonymous => {}
                Auth::Htpasswd => cfg.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: pullguard-test\n    path: {}\n",
                    fixtures.join("htpasswd").display()
                )),
                Auth::Token { realm } => cfg.push_str(&format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    super::token::SERVICE,
                    super::token::ISSUER,
                    fixtures.join("pki/token-signer.pem").display()
                )),
            }
            let config_path = dir.join(format!("{name}-config.yml"));
            std::fs::write(&config_path, cfg).unwrap();
            let log = dir.join(format!("{name}.log"));
            let out = std::fs::File::create(&log).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdout(Stdio::from(out.try_clone().unwrap()))
                .stderr(Stdio::from(out))
                .spawn()
                .expect("docker-registry is installed (apt-get install docker-registry)");
            let mut reg = Registry { addr, tls, child, log };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return reg;
                }
                if let Ok(Some(status)) = reg.child.try_wait() {
                    last_err =
                        format!("exited with {status}: {}", std::fs::read_to_string(&reg.log).unwrap_or_default());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("docker-registry {name} did not start: {last_err}");
    }

    /// CPU time (user + system) the registry process has used, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        super::cpu_seconds(self.child.id())
    }

    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// Requests seen so far, from the access log: `"METHOD /path"` with status, e.g. `HEAD /v2/x/manifests/1 200`.
    pub fn requests(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let start = l.find("] \"")? + 3;
                let rest = &l[start..];
                let end = rest.find('"')?;
                let mut req = rest[..end].split(' ');
                let (method, path) = (req.next()?, req.next()?);
                let status = rest[end + 1..].trim_start().split(' ').next()?;
                Some(format!("{method} {path} {status}"))
            })
            .filter(|r| !r.starts_with("GET /v2/ ")) // readiness probes
            .collect()
    }
}
