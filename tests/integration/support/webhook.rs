//! Runs the real `pullguard serve` against the API stand-in and real registries, and talks to it over TLS
//! exactly as the API server does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::apiserver::ApiServer;

pub struct Webhook {
    child: tokio::process::Child,
    pub port: u16,
    pub metrics_port: u16,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A keep-alive TLS client trusting the test CA (and any extra CA files), as the API server connects.
pub fn tls_client(extra_cas: &[&Path]) -> reqwest::Client {
    tls_client_builder(extra_cas).build().unwrap()
}

/// The same, for tests that adjust it (e.g. a new connection, so a new handshake, per request).
pub fn tls_client_builder(extra_cas: &[&Path]) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder().no_proxy().tls_info(true);
    let mut cas = vec![super::fixtures().join("pki/ca.pem")];
    cas.extend(extra_cas.iter().map(|p| p.to_path_buf()));
    for ca in cas {
        let pem = std::fs::read(ca).unwrap();
        b = b.tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).unwrap());
    }
    b
}

impl Webhook {
    /// Starts `pullguard serve` with `config` (a pullguard config file) and extra arguments; waits for /readyz.
    pub async fn start(config: &Path, api: &ApiServer, extra: &[&str]) -> Self {
        let wh = Self::spawn(config, api, extra, "debug");
        wh.wait_ready().await;
        wh
    }

    /// Starts `pullguard serve` with this log level, without waiting for it to be ready.
    pub fn spawn(config: &Path, api: &ApiServer, extra: &[&str], log_level: &str) -> Self {
        Self::spawn_under(&[], config, api, extra, log_level)
    }

    /// The same, run by a wrapper program (`valgrind --tool=callgrind`, say) given the binary and its
    /// arguments; `pid()` is then the wrapper's, which valgrind's is (it runs the program in its process).
    pub fn spawn_under(wrapper: &[&str], config: &Path, api: &ApiServer, extra: &[&str], log_level: &str) -> Self {
        Self::spawn_program(&super::binary(), wrapper, config, api, extra, log_level)
    }

    /// The same with this `pullguard` binary (another build's, for `bench ab`).
    pub fn spawn_program(
        program: &Path,
        wrapper: &[&str],
        config: &Path,
        api: &ApiServer,
        extra: &[&str],
        log_level: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = super::fixtures().join("pki");
        std::fs::copy(pki.join("registry.pem"), dir.path().join("tls.crt")).unwrap();
        std::fs::copy(pki.join("registry-key.pem"), dir.path().join("tls.key")).unwrap();
        let kubeconfig = api.kubeconfig(dir.path());
        let (port, metrics_port) = (free_port(), free_port());
        let log = dir.path().join("serve.log");
        let out = std::fs::File::create(&log).unwrap();
        let listen = format!("127.0.0.1:{port}");
        let metrics = format!("127.0.0.1:{metrics_port}");
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
            "--listen".into(),
            listen,
            "--metrics-listen".into(),
            metrics,
            "--tls-cert".into(),
            dir.path().join("tls.crt").display().to_string(),
            "--tls-key".into(),
            dir.path().join("tls.key").display().to_string(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--own-namespace".into(),
            "pullguard".into(),
        ];
        // Tests that rotate the certificate want it seen quickly; a caller that names its own interval (the
        // bench runs the production default) keeps it.
        if !extra.contains(&"--cert-reload-interval") {
            args.extend(["--cert-reload-interval".into(), "100ms".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut command = match wrapper {
            [runner, wrapper_args @ ..] => {
                let mut c = tokio::process::Command::new(runner);
                c.args(wrapper_args).arg(program);
                c
            }
            [] => tokio::process::Command::new(program),
        };
        let child = command
            .args(&args)
            .env("PULLGUARD_LOG", log_level)
            .env_remove("PULLGUARD_CONFIG")
            .stdout(std::process::Stdio::from(out.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(out))
            .spawn()
            .unwrap();
        Self { child, port, metrics_port, client: tls_client(&[]), dir, log }
    }

    pub async fn readyz(&self) -> Option<u16> {
        let plain = reqwest::Client::builder().no_proxy().build().unwrap();
        plain
            .get(format!("http://127.0.0.1:{}/readyz", self.metrics_port))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    pub async fn wait_ready(&self) {
        self.wait_ready_within(Duration::from_secs(20)).await
    }

    /// Waits this long at most for /readyz (a server under valgrind starts slowly).
    pub async fn wait_ready_within(&self, limit: Duration) {
        let plain = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(r) = plain.get(format!("http://127.0.0.1:{}/readyz", self.metrics_port)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("webhook not ready: {}", self.logs());
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, timeout: &str) -> String {
        format!("https://127.0.0.1:{}/validate?timeout={timeout}", self.port)
    }

    /// POSTs a review; returns its `response`.
    pub async fn review(&self, body: &Value) -> Value {
        let resp = self
            .client
            .post(self.url("10s"))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{}", self.logs()));
        assert_eq!(resp.status(), 200);
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok());
        assert_eq!(content_type, Some("application/json"), "the API server decodes the response by its type");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        v["response"].clone()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port)).await.unwrap().text().await.unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait()).await.ok().and_then(Result::ok)
    }
}

/// Wraps an object in an AdmissionReview CREATE as the API server sends it.
pub fn create_review(uid: &str, object: &Value) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap();
    let resource = format!("{}s", kind.to_lowercase());
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {
        "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"], "operation": "CREATE",
        "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
        "object": object, "oldObject": null, "dryRun": false,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}}})
}

/// `container=Reason` pairs from a response's audit annotations.
pub fn reasons(response: &Value) -> std::collections::BTreeMap<String, String> {
    response["auditAnnotations"]["reasons"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}
