//! Regressions of the hardening issue: what a tenant's Secret, a registry, its redirects and its challenges
//! could do to pullguard. Each test is named after what broke.

use std::time::{Duration, Instant};

use pullguard::cluster::Snapshot;
use pullguard::contract::ContainerResult;
use pullguard::policy::{Mode, Reason, Verdict};
use pullguard::workload::Workload;
use serde_json::{Value, json};

use crate::support::http::{Action, Request, Response, Server};
use crate::support::seed::sha256;
use crate::support::tls::TlsServer;
use crate::support::webhook::{Webhook, create_review};
use crate::support::{self, Env, Options, dockerconfigjson_b64, engine_from, pullguard};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ALICE: &str = "Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQ="; // alice:alice-password
const BOB: &str = "Basic Ym9iOmJvYi1wYXNzd29yZA=="; // bob:bob-password

/// A single-platform image: (manifest, its digest, config).
fn image() -> (Vec<u8>, String, Vec<u8>) {
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
        sha256(&config),
        config.len()
    )
    .into_bytes();
    let digest = sha256(&manifest);
    (manifest, digest, config)
}

fn sha512(b: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, b);
    format!("sha512:{}", d.as_ref().iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// A pull secret for fault.example.com in `namespace`.
fn secret(namespace: &str, name: &str, user: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": dockerconfigjson_b64("fault.example.com", user, &format!("{user}-password"))}})
}

fn pod(namespace: &str, image: &str, secrets: &[&str]) -> Value {
    let secrets: Vec<Value> = secrets.iter().map(|s| json!({"name": s})).collect();
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": namespace},
        "spec": {"imagePullSecrets": secrets, "containers": [{"name": "app", "image": image}]}})
}

/// An engine built from a config file's text, and a cluster of these Secrets.
struct Setup {
    _dir: tempfile::TempDir,
    engine: pullguard::engine::Engine<pullguard::registry::RegistryClient>,
    snap: Snapshot,
}

impl Setup {
    fn new(config: &str, objects: &[Value]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cfg.yaml");
        std::fs::write(&cfg, config).unwrap();
        let mut snap = Snapshot::default();
        for o in objects {
            snap.add_object(o, "default").unwrap();
        }
        Self { engine: engine_from(&cfg), snap, _dir: dir }
    }

    async fn check(&self, pod: &Value) -> ContainerResult {
        let w = Workload::from_object(pod, "default").unwrap().unwrap();
        self.engine.check_workload(&w, &self.snap, None).await.remove(0)
    }

    async fn check_by(&self, pod: &Value, deadline: Instant) -> ContainerResult {
        let w = Workload::from_object(pod, "default").unwrap().unwrap();
        let deadline = tokio::time::Instant::from_std(deadline);
        self.engine.check_containers(&w, &self.snap, None, Some(deadline), &|_, _| true, Mode::Enforce).await.remove(0)
    }
}

/// A config that routes fault.example.com to `url`.
fn route(url: &str) -> String {
    format!("registries:\n  fault.example.com:\n    endpoint: {url}\n")
}

/// The same, with TLS verification off for that registry.
fn route_insecure(url: &str) -> String {
    format!("{}    insecureSkipVerify: true\n", route(url))
}

/// `reason` as its stable code, so a test can name a code that does not exist yet.
fn code(r: &ContainerResult) -> (Verdict, String) {
    (r.verdict, r.reason.to_string())
}

fn authorization_count(r: &Request) -> usize {
    r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("authorization")).count()
}

// --- 1. A pull secret's glob key froze the process ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_glob_pull_secret_key_does_not_freeze_check() {
    let file = support::fixtures().join("manifests/hostile-keyring.yaml");
    let args = ["check", "--offline", "--output", "json", file.to_str().unwrap()];
    let run = tokio::time::timeout(Duration::from_secs(30), pullguard(&args, None))
        .await
        .expect("check --offline answered: keyring matching must not backtrack exponentially");
    let j = run.json();
    let r = &j["results"][0];
    assert_eq!(r["reason"], "NotChecked", "{r}");
    assert_eq!(r["credentials"], json!([]), "the key wants a 'b' before .test, so it matches nothing: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_glob_pull_secret_key_does_not_freeze_serve() {
    let env = Env::start(Options::default()).await;
    let api = crate::webhook_cluster().await;
    let (docs, errors) = pullguard::input::load(&[support::fixtures().join("manifests/hostile-keyring.yaml")]);
    assert!(errors.is_empty());
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant-a"}}));
    api.apply(docs[0].value.clone());
    let host = docs[1].value["spec"]["containers"][0]["image"].as_str().unwrap().split('/').next().unwrap().to_string();
    // The hostile host is routed to the local registry: nothing is resolved for real.
    let wh = Webhook::start(&env.config(&format!("  {host}:\n    endpoint: {}\n", env.hub.url())), &api, &[]).await;

    let hostile = create_review("hostile-0001", &docs[1].value);
    let other = create_review("other-0001", &pod("production", "docker.io/library/nginx:latest", &[]));
    let healthz = async {
        wh.client.get(format!("https://127.0.0.1:{}/healthz", wh.port)).send().await.map(|r| r.status().as_u16())
    };
    let (h, o, z) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(wh.review(&hostile), wh.review(&other), healthz)
    })
    .await
    .unwrap_or_else(|_| panic!("the webhook stopped answering:\n{}", wh.logs()));
    assert_eq!(z.unwrap(), 200);
    assert_eq!(o["uid"], "other-0001", "{o}");
    assert_eq!(h["uid"], "hostile-0001", "{h}");
}

// --- 2. Credentials followed a redirect's challenge --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_targets_challenge_never_receives_credentials() {
    let realm = Server::start("127.0.0.3", |_| {
        Action::Respond(Response::new(200).json(&json!({"token": "stolen", "expires_in": 300})))
    })
    .await;
    let realm_url = format!("{}/token", realm.url());
    let elsewhere = Server::start("127.0.0.2", move |_| {
        Action::Respond(
            Response::new(401).header("WWW-Authenticate", &format!("Bearer realm=\"{realm_url}\",service=\"evil\"")),
        )
    })
    .await;
    let target = elsewhere.url();
    let registry = Server::start("127.0.0.1", move |_| {
        Action::Respond(Response::new(307).header("Location", &format!("{target}/x")))
    })
    .await;
    let s =
        Setup::new(&route(&registry.url()), &[secret("tenant-a", "cred", "alice"), secret("tenant-b", "cred", "bob")]);
    let first = s.check(&pod("tenant-a", "fault.example.com/team/app:1.0", &["cred"])).await;
    let second = s.check(&pod("tenant-b", "fault.example.com/team/app:2.0", &["cred"])).await;
    for r in [&first, &second] {
        assert_ne!(r.reason, Reason::CredentialsRejected, "{}", r.message);
        assert_ne!(r.verdict, Verdict::Allow, "{}", r.message);
    }
    for q in realm.recorded() {
        assert_eq!(authorization_count(&q), 0, "the realm named by a redirect target got credentials: {q:?}");
    }
    for q in elsewhere.recorded() {
        assert_eq!(authorization_count(&q), 0, "the redirect target got credentials: {q:?}");
    }
    // The second tenant's request to the registry itself carried no token obtained with the first's secret.
    for q in registry.recorded() {
        assert!(q.header("authorization").is_none_or(|a| a == BOB || a == ALICE), "{q:?}");
        assert_ne!(q.header("authorization"), Some("Bearer stolen"), "{q:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realm_url_with_userinfo_gets_one_authorization_header() {
    let realm = Server::start("127.0.0.2", |_| {
        Action::Respond(Response::new(200).json(&json!({"token": "t0k3n", "expires_in": 300})))
    })
    .await;
    let realm_url = format!("http://intruder:pw@{}/token", realm.addr);
    let registry = Server::start("127.0.0.1", move |req: &Request| {
        if req.header("authorization") == Some("Bearer t0k3n") {
            return Action::Respond(Response::new(404));
        }
        Action::Respond(
            Response::new(401).header("WWW-Authenticate", &format!("Bearer realm=\"{realm_url}\",service=\"r\"")),
        )
    })
    .await;
    let s = Setup::new(&route(&registry.url()), &[secret("default", "cred", "alice")]);
    let r = s.check(&pod("default", "fault.example.com/team/app:1.0", &["cred"])).await;
    assert!(!realm.recorded().is_empty(), "the realm is the registry's own choice: {}", r.message);
    for q in realm.recorded() {
        assert!(authorization_count(&q) <= 1, "two Authorization headers went out: {q:?}");
        assert_ne!(q.header("authorization"), Some("Basic aW50cnVkZXI6cHc="), "the URL's userinfo was used: {q:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_verify_does_not_extend_to_a_realm_on_another_host() {
    let realm =
        TlsServer::start("127.0.0.2", |_| Response::new(200).json(&json!({"token": "t", "expires_in": 60}))).await;
    let realm_url = format!("{}/token", realm.url());
    let registry = TlsServer::start("127.0.0.1", move |_| {
        Response::new(401).header("WWW-Authenticate", &format!("Bearer realm=\"{realm_url}\",service=\"r\""))
    })
    .await;
    let s = Setup::new(&route_insecure(&registry.url()), &[secret("default", "cred", "alice")]);
    let r = s.check(&pod("default", "fault.example.com/team/app:1.0", &["cred"])).await;
    assert!(!registry.recorded().is_empty(), "the registry itself is reached with verification off: {}", r.message);
    assert!(
        realm.recorded().is_empty(),
        "a realm on another host was sent credentials over unverified TLS: {:?}",
        realm.recorded()
    );
    assert_ne!(r.verdict, Verdict::Allow, "{}", r.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_registry_redirect_to_plain_http_is_not_followed() {
    let plain = Server::start("127.0.0.2", |_| Action::Respond(Response::new(200))).await;
    let target = format!("{}/downgraded", plain.url());
    let registry = TlsServer::start("127.0.0.1", move |_| Response::new(307).header("Location", &target)).await;
    let s = Setup::new(&route_insecure(&registry.url()), &[]);
    let r = s.check(&pod("default", "fault.example.com/team/app:1.0", &[])).await;
    assert!(!registry.recorded().is_empty());
    assert!(plain.recorded().is_empty(), "an HTTPS → HTTP redirect was followed");
    assert_eq!(r.verdict, Verdict::Warn, "pullguard refused, the image may still pull: {}", r.message);
    assert!(r.message.contains("plain HTTP"), "{}", r.message);
}

// --- 3. A huge tag list blew the deadline -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_tag_list_stays_inside_the_deadline() {
    // ~31,000 tags of 128 characters: just under the 4 MiB cap.
    let tags: Vec<String> = (0..31_000).map(|i| format!("{i:0>128}")).collect();
    let body = serde_json::to_vec(&json!({"name": "team/app", "tags": tags})).unwrap();
    assert!(body.len() < 4 * 1024 * 1024);
    let registry = Server::start("127.0.0.1", move |req: &Request| {
        if req.path().ends_with("/tags/list") {
            return Action::Respond(Response::new(200).header("Content-Type", "application/json").body(body.clone()));
        }
        Action::Respond(Response::new(404))
    })
    .await;
    let s = Setup::new(&format!("{}lookupTimeout: 1s\n", route(&registry.url())), &[]);
    let wanted = format!("{:0>127}x", 7);
    let start = Instant::now();
    let r = s.check(&pod("default", &format!("fault.example.com/team/app:{wanted}"), &[])).await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(4), "answered after {took:?} with a 1 s lookup budget: {}", r.message);
    assert!(matches!(r.reason, Reason::TagNotFound | Reason::RegistryUnreachable), "{:?}: {}", r.reason, r.message);
}

// --- 4. A pinned digest was not verified ---------------------------------------------------------------------

/// A registry that answers every HEAD with `claimed` (or the requested digest when `None`) and serves `body` for
/// every manifest GET, `config` for every blob.
async fn lying_registry(claimed: Option<String>, body: Vec<u8>, content_type: &'static str) -> Server {
    let (_, _, config) = image();
    Server::start("127.0.0.1", move |req: &Request| {
        let path = req.path();
        if path.contains("/blobs/") {
            return Action::Respond(Response::new(200).body(config.clone()));
        }
        let requested = path.rsplit('/').next().unwrap_or_default().to_string();
        let digest = claimed.clone().unwrap_or(requested);
        let resp = Response::new(200).header("Content-Type", content_type).header("Docker-Content-Digest", &digest);
        Action::Respond(if req.method == "HEAD" { resp } else { resp.body(body.clone()) })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_digest_is_verified_against_what_the_registry_serves() {
    let (manifest, digest, _) = image();
    let pinned = format!("sha256:{}", "1".repeat(64));
    // The registry answers the pinned digest with another manifest's digest, and serves that manifest.
    let registry = lying_registry(Some(digest.clone()), manifest.clone(), OCI_MANIFEST).await;
    let s = Setup::new(&route(&registry.url()), &[]);
    let r = s.check(&pod("default", &format!("fault.example.com/team/app@{pinned}"), &[])).await;
    assert_eq!(code(&r), (Verdict::Deny, "DigestMismatch".into()), "{}", r.message);
    assert!(r.message.contains(&pinned), "{}", r.message);

    // sha512: the right content is Ok, other content under that name is a mismatch.
    let good = lying_registry(None, manifest.clone(), OCI_MANIFEST).await;
    let s = Setup::new(&route(&good.url()), &[]);
    let r = s.check(&pod("default", &format!("fault.example.com/team/app@{}", sha512(&manifest)), &[])).await;
    assert_eq!((r.verdict, r.reason), (Verdict::Allow, Reason::Ok), "{}", r.message);
    let mut other = manifest.clone();
    other.push(b'\n');
    let bad = lying_registry(None, other, OCI_MANIFEST).await;
    let s = Setup::new(&route(&bad.url()), &[]);
    let r = s.check(&pod("default", &format!("fault.example.com/team/app@{}", sha512(&manifest)), &[])).await;
    assert_eq!(code(&r), (Verdict::Deny, "DigestMismatch".into()), "{}", r.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_header_the_kubelet_would_reject_is_not_trusted() {
    let (manifest, ..) = image();
    let registry = lying_registry(Some(format!("md5:{}", "0".repeat(32))), manifest, OCI_MANIFEST).await;
    let s = Setup::new(&route(&registry.url()), &[]);
    let r = s.check(&pod("default", "fault.example.com/team/app:1.0", &[])).await;
    assert_eq!((r.verdict, r.reason), (Verdict::Warn, Reason::RegistryError), "{}", r.message);
    assert!(r.message.contains("md5"), "{}", r.message);
}

// --- 5. A slow registry never filled the cache ---------------------------------------------------------------

/// A registry that answers everything correctly after `pause`.
async fn slow_registry(pause: Duration) -> Server {
    let (manifest, digest, config) = image();
    Server::start("127.0.0.1", move |req: &Request| {
        let resp = if req.path().contains("/blobs/") {
            Response::new(200).body(config.clone())
        } else {
            let r = Response::new(200).header("Content-Type", OCI_MANIFEST).header("Docker-Content-Digest", &digest);
            if req.method == "HEAD" { r } else { r.body(manifest.clone()) }
        };
        Action::Delay(resp, pause)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_registry_fills_the_cache_after_the_review_gave_up() {
    let registry = slow_registry(Duration::from_millis(700)).await;
    let s = Setup::new(&format!("{}lookupTimeout: 5s\n", route(&registry.url())), &[]);
    let p = pod("default", "fault.example.com/team/app:1.0", &[]);
    let first = s.check_by(&p, Instant::now() + Duration::from_millis(200)).await;
    assert_eq!((first.verdict, first.reason), (Verdict::Warn, Reason::RegistryUnreachable), "{}", first.message);
    assert!(!first.message.contains("0.0s"), "{}", first.message);
    assert!(first.message.contains("time"), "the message says the review's time ran out: {}", first.message);
    // The next review joins the lookup the first one started, instead of starting over.
    let second = s.check_by(&p, Instant::now() + Duration::from_secs(10)).await;
    assert_eq!((second.verdict, second.reason), (Verdict::Allow, Reason::Ok), "{}", second.message);
    let heads = registry.recorded().iter().filter(|q| q.method == "HEAD").count();
    assert_eq!(heads, 1, "one HEAD for both reviews: {:?}", registry.recorded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_ran_out_keeps_the_refused_credentials_and_says_so() {
    let (manifest, digest, _) = image();
    let registry = Server::start("127.0.0.1", move |req: &Request| match req.header("authorization") {
        Some(ALICE) => Action::Respond(Response::new(401).header("WWW-Authenticate", "Basic realm=\"r\"")),
        Some(BOB) => Action::Delay(
            Response::new(200)
                .header("Content-Type", OCI_MANIFEST)
                .header("Docker-Content-Digest", &digest)
                .body(manifest.clone()),
            Duration::from_secs(3),
        ),
        _ => Action::Respond(Response::new(401).header("WWW-Authenticate", "Basic realm=\"r\"")),
    })
    .await;
    let s = Setup::new(
        &format!("{}lookupTimeout: 5s\n", route(&registry.url())),
        &[secret("default", "stale", "alice"), secret("default", "fresh", "bob")],
    );
    let p = pod("default", "fault.example.com/team/app:1.0", &["stale", "fresh"]);
    let r = s.check_by(&p, Instant::now() + Duration::from_millis(800)).await;
    assert_eq!((r.verdict, r.reason), (Verdict::Warn, Reason::RegistryUnreachable), "{}", r.message);
    assert!(r.message.contains("default/stale"), "the refused secret is still reported: {}", r.message);

    // A review whose time is already gone says so, instead of "within 0.0s".
    let r = s.check_by(&pod("default", "fault.example.com/team/app:2.0", &[]), Instant::now()).await;
    assert!(!r.message.contains("0.0s"), "{}", r.message);
}

// --- 6. Messages were a port-scan oracle ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failures_to_unconfigured_hosts_all_read_the_same() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // An open port with a plain-text service, and one that closes every connection at once.
    let plain_text = raw_tcp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    let closes = raw_tcp(b"").await;
    let s = Setup::new("{}\n", &[]);
    let mut messages = vec![];
    for port in [closed, plain_text, closes] {
        let r = s.check(&pod("default", &format!("127.0.0.1:{port}/team/app:1.0"), &[])).await;
        assert_eq!((r.verdict, r.reason), (Verdict::Warn, Reason::RegistryUnreachable), "{}", r.message);
        for leak in ["refused", "reset", "InvalidContentType", "corrupt", "peer"] {
            assert!(!r.message.contains(leak), "{leak}: {}", r.message);
        }
        messages.push(r.message.replace(&port.to_string(), "PORT"));
    }
    assert_eq!(messages[0], messages[1], "an open non-TLS port reads like a closed one");
    assert_eq!(messages[0], messages[2]);
}

/// A TCP service on 127.0.0.1 that writes `greeting` to every connection and closes it; returns its port.
async fn raw_tcp(greeting: &'static [u8]) -> u16 {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let _ = sock.write_all(greeting).await;
            let _ = sock.shutdown().await;
        }
    });
    port
}

// --- 8. Smaller defects ----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_without_runnable_platforms_is_a_platform_mismatch() {
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#,
        "a".repeat(64)
    )
    .into_bytes();
    let registry = lying_registry(Some(sha256(&index)), index, OCI_INDEX).await;
    let s = Setup::new(&route(&registry.url()), &[]);
    let r = s.check(&pod("default", "fault.example.com/team/app:1.0", &[])).await;
    assert_eq!((r.verdict, r.reason), (Verdict::Deny, Reason::PlatformMismatch), "{}", r.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_that_is_not_base64_is_invalid_not_missing() {
    let file = support::fixtures().join("manifests/bad-secret.yaml");
    let run = pullguard(&["check", "--offline", "--output", "json", file.to_str().unwrap()], None).await;
    let j = run.json();
    assert_eq!(j["results"][0]["reason"], "SecretInvalid", "{}", j["results"][0]);
    assert!(j["results"][0]["message"].as_str().unwrap().contains("base64"), "{}", j["results"][0]);
    assert!(j["errors"][0]["message"].as_str().unwrap().contains("base64"), "the input error is still reported: {j}");
}
