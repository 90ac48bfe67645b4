//! Test support: real registries (Debian's docker-registry) on 127.0.0.1, a token issuer, fault servers,
//! and a runner for the real `pullguard` binary.

#![allow(dead_code)]

pub mod apiserver;
pub mod http;
pub mod registry;
pub mod seed;
pub mod tls;
pub mod token;
pub mod webhook;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use pullguard::cluster::Snapshot;
use pullguard::contract::ContainerResult;
use pullguard::engine::Engine;
use pullguard::registry::RegistryClient;
use serde_json::Value;

use registry::{Auth, Registry};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[derive(Default, Clone, Copy)]
pub struct Options {
    /// registry.example.com: htpasswd over TLS with the private CA.
    pub private: bool,
    /// ghcr.io: bearer tokens from the test issuer.
    pub token: bool,
}

/// Registries serving one seeded storage: docker.io (anonymous), and optionally registry.example.com and
/// ghcr.io.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub hub: Registry,
    pub private: Option<Registry>,
    pub ghcr: Option<Registry>,
    pub issuer: Option<http::Server>,
    pub seeded: seed::Seeded,
}

impl Env {
    pub async fn start(o: Options) -> Env {
        install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let hub = Registry::start("hub", dir.path(), &storage, Auth::Anonymous, false).await;
        let seeded = seed::standard(&seed::Pusher::new(&hub.url())).await;
        let private = if o.private {
            Some(Registry::start("private", dir.path(), &storage, Auth::Htpasswd, true).await)
        } else {
            None
        };
        let (ghcr, issuer) = if o.token {
            let issuer = token::start_issuer().await;
            let realm = format!("{}/token", issuer.url());
            (Some(Registry::start("ghcr", dir.path(), &storage, Auth::Token { realm }, false).await), Some(issuer))
        } else {
            (None, None)
        };
        Env { dir, hub, private, ghcr, issuer, seeded }
    }

    /// Writes a pullguard config that routes the test registries' names here; `extra` is appended as is.
    pub fn config(&self, extra: &str) -> PathBuf {
        let mut cfg = format!("registries:\n  docker.io:\n    endpoint: {}\n", self.hub.url());
        if let Some(p) = &self.private {
            cfg.push_str(&format!(
                "  registry.example.com:\n    endpoint: {}\n    ca: {}\n",
                p.url(),
                fixtures().join("pki/ca.pem").display()
            ));
        }
        if let Some(g) = &self.ghcr {
            cfg.push_str(&format!("  ghcr.io:\n    endpoint: {}\n", g.url()));
        }
        // The fixtures name these registries whether or not this test started them: a name not started here
        // goes to a loopback port where nothing listens, never to a real DNS lookup (the network rule).
        for (name, started) in [("registry.example.com", self.private.is_some()), ("ghcr.io", self.ghcr.is_some())] {
            if !started {
                cfg.push_str(&format!("  {name}:\n    endpoint: https://127.0.0.1:{CLOSED_PORT}\n"));
            }
        }
        cfg.push_str(extra);
        let path = self.dir.path().join(format!("pullguard-{}.yaml", fastrand_suffix()));
        std::fs::write(&path, cfg).unwrap();
        path
    }

    /// An engine built from a config file, exactly as the CLI builds it.
    pub fn engine(&self, extra: &str) -> Engine<RegistryClient> {
        engine_from(&self.config(extra))
    }
}

/// A loopback port nothing listens on (the discard service is not run here): connections are refused at once.
pub const CLOSED_PORT: u16 = 9;

pub fn engine_from(config: &Path) -> Engine<RegistryClient> {
    install_crypto();
    let args = pullguard::cli::EngineArgs {
        config: Some(config.to_path_buf()),
        mode: None,
        platforms: vec![],
        credential_provider_config: None,
        credential_provider_bin_dir: None,
    };
    let cfg = pullguard::cli::load_config(&args).unwrap();
    pullguard::cli::build_engine(&cfg, false).unwrap()
}

fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Loads manifest fixture files into a snapshot and workloads, as `check` does.
pub fn load(paths: &[PathBuf], namespace: &str) -> (Snapshot, Vec<pullguard::workload::Workload>) {
    let (docs, errors) = pullguard::input::load(paths);
    assert!(errors.is_empty(), "fixture errors: {errors:?}");
    let mut snap = Snapshot::default();
    let mut workloads = vec![];
    for d in &docs {
        snap.add_object(&d.value, namespace).unwrap();
        if let Some(mut w) = pullguard::workload::Workload::from_object(&d.value, namespace).unwrap() {
            w.object.file = Some(d.file.clone());
            w.object.document = Some(d.index);
            workloads.push(w);
        }
    }
    (snap, workloads)
}

/// Runs every workload through the engine.
pub async fn run_engine(
    engine: &Engine<RegistryClient>,
    snap: &Snapshot,
    workloads: &[pullguard::workload::Workload],
) -> Vec<ContainerResult> {
    let mut out = vec![];
    for w in workloads {
        out.extend(engine.check_workload(w, snap, None).await);
    }
    out
}

/// Finds the result for `object/container`.
pub fn result<'a>(results: &'a [ContainerResult], object: &str, container: &str) -> &'a ContainerResult {
    results
        .iter()
        .find(|r| r.object.name == object && r.container == container)
        .unwrap_or_else(|| panic!("no result for {object}/{container}"))
}

/// The result of running the real binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

/// Runs `pullguard` with these arguments (and optional stdin) without blocking the test's runtime.
pub async fn pullguard(args: &[&str], stdin: Option<&str>) -> Run {
    pullguard_env(args, stdin, &[]).await
}

pub async fn pullguard_env(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(binary());
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("PULLGUARD_CONFIG");
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// A dockerconfigjson for (registry, user, password), base64 as a Secret's data field wants it.
pub fn dockerconfigjson_b64(registry: &str, user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let auth = b64.encode(format!("{user}:{password}"));
    b64.encode(format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#))
}

/// The `pullguard` binary: Cargo names it for integration tests; the demo finds it beside its own exe.
pub fn binary() -> PathBuf {
    option_env!("CARGO_BIN_EXE_pullguard").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap_or_default();
        exe.ancestors().nth(2).unwrap_or(Path::new(".")).join("pullguard")
    })
}

/// A process's resident set size (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat (clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = cpu_times(pid);
    user + system
}

/// CPU seconds a process has spent in user space and in the kernel.
pub fn cpu_times(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name: state is field 0, utime field 11, stime field 12.
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) / 100.0, t(12) / 100.0)
}
