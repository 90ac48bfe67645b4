//! The deployable image, as `bash .ci/image` builds it (`PULLGUARD_IMAGE`), run the way the Deployment runs it:
//! `--read-only --user 65532`, on the host network so that it reaches the registries and the API stand-in on
//! 127.0.0.1. These tests are ignored by the plain test command (they need podman and the image);
//! `bash .ci/image`, which `.ci/run` calls, builds the image and runs exactly them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::support::webhook::{create_review, tls_client};
use super::support::{Env, Options, binary, fixtures};

fn image() -> String {
    std::env::var("PULLGUARD_IMAGE").expect("PULLGUARD_IMAGE names the image to test (bash .ci/image sets it)")
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman").args(args).output().expect("podman is installed (bash .ci/image installs it)")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `podman run` as the Deployment runs the container; each directory is mounted read-only at its own path,
/// so that paths in configuration files mean the same inside.
fn run_args<'a>(mounts: &'a [PathBuf], image: &'a str) -> Vec<String> {
    let mut args: Vec<String> =
        ["run", "--rm", "--network=host", "--read-only", "--user=65532:65532", "--cap-drop=all"]
            .map(String::from)
            .into();
    for m in mounts {
        args.push(format!("--volume={0}:{0}:ro", m.display()));
    }
    args.push(image.to_string());
    args
}

#[test]
#[ignore = "needs podman and the image: bash .ci/image"]
fn image_is_small_nonroot_and_has_no_shell() {
    let image = image();
    let inspect = podman(&["image", "inspect", "--format", "{{.Size}} {{.Config.User}}", &image]);
    assert!(inspect.status.success(), "{}", text(&inspect));
    let out = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    let (size, user) = out.split_once(' ').unwrap();
    let size: u64 = size.parse().unwrap();
    assert!(size < 40_000_000, "the image is {size} bytes, over 40 MB");
    assert_eq!(user, "65532:65532");

    let mut args = run_args(&[], &image);
    args.push("--version".into());
    let version = podman(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(version.status.success(), "{}", text(&version));
    assert!(text(&version).contains(env!("CARGO_PKG_VERSION")), "{}", text(&version));

    let shell = podman(&["run", "--rm", "--network=none", "--entrypoint=/bin/sh", &image, "-c", "true"]);
    assert!(!shell.status.success(), "the image has a shell: {}", text(&shell));
}

/// The image checks the demo as the binary does: same report, same exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs podman and the image: bash .ci/image"]
async fn image_checks_the_demo_like_the_binary() {
    let env = Env::start(Options { private: true, token: false }).await;
    let config = env.config("");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/demo");
    let manifests = demo.join("manifests.yaml");
    let check = ["check", "--output", "json", "--config", config.to_str().unwrap(), manifests.to_str().unwrap()];
    let host = tokio::task::spawn_blocking({
        let check = check.map(String::from);
        move || Command::new(binary()).args(&check).output().unwrap()
    });
    let image = image();
    let mut args = run_args(&[env.dir.path().to_path_buf(), fixtures(), demo.clone()], &image);
    args.extend(check.map(String::from));
    let contained = tokio::task::spawn_blocking(move || Command::new("podman").args(&args).output().unwrap());
    let (host, contained) = (host.await.unwrap(), contained.await.unwrap());
    assert_eq!(contained.status.code(), Some(1), "the demo denies: {}", text(&contained));
    assert_eq!(contained.status.code(), host.status.code());
    let verdicts = |o: &Output| -> Vec<(String, String)> {
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)));
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (format!("{}/{}", r["object"]["name"], r["container"]), format!("{} {}", r["verdict"], r["reason"]))
            })
            .collect()
    };
    let seen = verdicts(&contained);
    assert!(seen.iter().any(|(_, v)| v == "\"deny\" \"TagNotFound\""), "{seen:?}");
    assert_eq!(seen, verdicts(&host));
}

/// A container started by podman, removed when dropped.
struct Running(String);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time=0", &self.0]);
    }
}

/// The image serves: /readyz and an AdmissionReview over TLS, with the certificate and key mounted read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs podman and the image: bash .ci/image"]
async fn image_serves_reviews_over_tls() {
    let env = Env::start(Options { private: false, token: false }).await;
    let api = crate::webhook_cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = fixtures().join("pki");
    std::fs::copy(pki.join("registry.pem"), dir.path().join("tls.crt")).unwrap();
    std::fs::copy(pki.join("registry-key.pem"), dir.path().join("tls.key")).unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let config = env.config("");
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port, metrics_port) = (free(), free());
    let name = format!("pullguard-test-{port}");
    let image = image();
    let mut args = run_args(&[dir.path().to_path_buf(), env.dir.path().to_path_buf()], &image);
    args.splice(1..2, ["--detach".to_string(), format!("--name={name}")]);
    let path = |p: &Path| p.display().to_string();
    args.extend([
        "serve".into(),
        format!("--config={}", path(&config)),
        format!("--listen=127.0.0.1:{port}"),
        format!("--metrics-listen=127.0.0.1:{metrics_port}"),
        format!("--tls-cert={}", path(&dir.path().join("tls.crt"))),
        format!("--tls-key={}", path(&dir.path().join("tls.key"))),
        format!("--kubeconfig={}", path(&kubeconfig)),
        "--own-namespace=pullguard".into(),
    ]);
    let started = podman(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(started.status.success(), "{}", text(&started));
    let running = Running(name);

    let client = tls_client(&[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get(format!("https://127.0.0.1:{port}/readyz")).send().await {
            Ok(r) if r.status() == 200 => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("not ready over TLS: {other:?}\n{}", text(&podman(&["logs", &running.0]))),
        }
    }
    let deployment = |image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    };
    for (image, allowed) in [("nginx:1.25.3", true), ("nginx:1.25.99", false)] {
        let resp = client
            .post(format!("https://127.0.0.1:{port}/validate?timeout=10s"))
            .json(&create_review("uid-1", &deployment(image)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let review: Value = resp.json().await.unwrap();
        assert_eq!(review["response"]["allowed"], allowed, "{image}: {review}");
    }
}

/// pullguard checks its own deployment: the rendered manifests name the image that was pushed (ghcr.io routed
/// to the local registry) and come out allowed; a typo in its tag is denied before anything is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs podman and the image: bash .ci/image"]
async fn dogfood_check_of_the_rendered_manifests() {
    let env = Env::start(Options { private: false, token: false }).await;
    let registry = env.hub.url();
    let host = registry.trim_start_matches("http://");
    let image = image();
    let pushed = podman(&[
        "push",
        "--quiet",
        "--tls-verify=false",
        &image,
        &format!("docker://{host}/pullguard/pullguard:{}", env!("CARGO_PKG_VERSION")),
    ]);
    assert!(pushed.status.success(), "{}", text(&pushed));
    let config = env.dir.path().join("dogfood.yaml");
    std::fs::write(&config, format!("registries:\n  ghcr.io:\n    endpoint: {registry}\n")).unwrap();
    let rendered = Command::new("kubectl")
        .args(["kustomize", concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/overlays/cert-manager")])
        .output()
        .expect("kubectl renders manifests/");
    assert!(rendered.status.success(), "{}", text(&rendered));
    let rendered = String::from_utf8(rendered.stdout).unwrap();
    let named = format!("image: ghcr.io/pullguard/pullguard:{}", env!("CARGO_PKG_VERSION"));
    assert!(rendered.contains(&named), "the base names the image pushed here: {rendered}");

    for (manifests, code, verdict) in
        [(rendered.clone(), 0, "allow"), (rendered.replace(&named, &format!("{named}-rc1")), 1, "deny")]
    {
        let file = env.dir.path().join(format!("rendered-{verdict}.yaml"));
        std::fs::write(&file, manifests).unwrap();
        let out = Command::new(binary())
            .args(["check", "--output", "json", "--config"])
            .arg(&config)
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let own: Vec<&Value> =
            v["results"].as_array().unwrap().iter().filter(|r| r["object"]["name"] == "pullguard").collect();
        assert_eq!(own.len(), 1, "{v}");
        assert_eq!(own[0]["verdict"], verdict, "{v}");
        if verdict == "deny" {
            assert_eq!(own[0]["reason"], "TagNotFound", "{v}");
        }
    }
}
