//! Faults a real registry will not produce on demand, from in-test servers on 127.0.0.0/8.

use std::time::{Duration, Instant};

use base64::Engine as _;
use pullguard::contract::ContainerResult;
use pullguard::policy::{Reason, Verdict};

use crate::support::http::{Action, Request, Response, Server};
use crate::support::seed::sha256;
use crate::support::{self, engine_from, load, pullguard_env};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CAROL: &str = "Basic Y2Fyb2w6Y2Fyb2wtcGFzc3dvcmQ="; // carol:carol-password

/// A tiny single-platform image: (manifest bytes, manifest digest, config bytes, config digest).
fn image() -> (Vec<u8>, String, Vec<u8>, String) {
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let cd = sha256(&config);
    let manifest = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[]}}"#, config.len()).into_bytes();
    let md = sha256(&manifest);
    (manifest, md, config, cd)
}

async fn check_with(server_url: &str, extra: &str) -> ContainerResult {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg.yaml");
    std::fs::write(&cfg, format!("registries:\n  fault.example.com:\n    endpoint: {server_url}\n{extra}")).unwrap();
    let engine = engine_from(&cfg);
    let (snap, workloads) = load(&[support::fixtures().join("manifests/faults.yaml")], "default");
    engine.check_workload(&workloads[0], &snap, None).await.remove(0)
}

fn respond(status: u16) -> Action {
    Action::Respond(Response::new(status))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_reported_and_never_retried() {
    let s = Server::start("127.0.0.1", |_| Action::Respond(Response::new(429).header("Retry-After", "120"))).await;
    let r = check_with(&s.url(), "").await;
    assert_eq!((r.verdict, r.reason), (Verdict::Warn, Reason::RateLimited), "{}", r.message);
    assert!(r.message.contains("retry after 120s"), "{}", r.message);
    assert_eq!(s.recorded().len(), 1, "no retry inside the deadline");
    let r = check_with(&s.url(), "failClosed: true\n").await;
    assert_eq!((r.verdict, r.reason), (Verdict::Deny, Reason::RateLimited));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_is_a_warning() {
    let s = Server::start("127.0.0.1", |_| respond(500)).await;
    let r = check_with(&s.url(), "").await;
    assert_eq!((r.verdict, r.reason), (Verdict::Warn, Reason::RegistryError), "{}", r.message);
    assert!(r.message.contains("500"), "{}", r.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_slow_and_resetting_registries_meet_the_deadline() {
    let (manifest, digest, ..) = image();
    let hang = Server::start("127.0.0.1", |_| Action::Hang).await;
    let reset = Server::start("127.0.0.1", |_| Action::Reset).await;
    let slow = Server::start("127.0.0.1", move |_| {
        Action::Trickle(
            Response::new(200)
                .header("Docker-Content-Digest", &digest)
                .header("Content-Type", OCI_MANIFEST)
                .body(manifest.clone()),
            Duration::from_millis(100),
        )
    })
    .await;
    for (name, url) in [("hang", hang.url()), ("trickle", slow.url()), ("reset", reset.url())] {
        let start = Instant::now();
        let r = check_with(&url, "lookupTimeout: 500ms\n").await;
        let took = start.elapsed();
        assert_eq!((r.verdict, r.reason), (Verdict::Warn, Reason::RegistryUnreachable), "{name}: {}", r.message);
        assert!(took < Duration::from_secs(3), "{name}: answered after {took:?}, deadline 500ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_port_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let r = check_with(&format!("http://127.0.0.1:{port}"), "").await;
    assert_eq!((r.verdict, r.reason), (Verdict::Warn, Reason::RegistryUnreachable), "{}", r.message);
    assert!(r.message.to_lowercase().contains("refused"), "{}", r.message);
}

/// A registry on 127.0.0.1 that wants Basic auth and redirects manifest and blob GETs to `target`.
async fn redirecting_registry(target: String) -> Server {
    let (_, digest, _, config_digest) = image();
    Server::start("127.0.0.1", move |req: &Request| {
        if req.header("authorization") != Some(CAROL) {
            return Action::Respond(Response::new(401).header("WWW-Authenticate", "Basic realm=\"fault\""));
        }
        let path = req.path();
        if req.method == "HEAD" && path == "/v2/team/app/manifests/1.0" {
            return Action::Respond(
                Response::new(200).header("Docker-Content-Digest", &digest).header("Content-Type", OCI_MANIFEST),
            );
        }
        if path == format!("/v2/team/app/manifests/{digest}") {
            return Action::Respond(Response::new(307).header("Location", &format!("{target}/storage/manifest")));
        }
        if path == format!("/v2/team/app/blobs/{config_digest}") {
            return Action::Respond(Response::new(307).header("Location", &format!("{target}/storage/config")));
        }
        respond(404)
    })
    .await
}

async fn storage_server(ip: &str) -> Server {
    let (manifest, _, config, _) = image();
    Server::start(ip, move |req: &Request| match req.path() {
        "/storage/manifest" => {
            Action::Respond(Response::new(200).header("Content-Type", OCI_MANIFEST).body(manifest.clone()))
        }
        "/storage/config" => Action::Respond(Response::new(200).body(config.clone())),
        _ => respond(404),
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_do_not_follow_a_cross_host_redirect() {
    let storage = storage_server("127.0.0.2").await;
    let registry = redirecting_registry(storage.url()).await;
    let r = check_with(&registry.url(), "").await;
    assert_eq!((r.verdict, r.reason), (Verdict::Allow, Reason::Ok), "{}", r.message);
    assert_eq!(r.credential_used, Some(0));
    assert!(
        registry.recorded().iter().any(|q| q.header("authorization") == Some(CAROL)),
        "the registry got the credential"
    );
    let at_storage = storage.recorded();
    assert_eq!(at_storage.len(), 2, "manifest and config were fetched from the redirect target");
    assert!(at_storage.iter().all(|q| q.header("authorization").is_none()), "no credential crossed to another host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_into_a_blocked_network_is_not_followed() {
    let storage = storage_server("127.0.0.2").await;
    let registry = redirecting_registry(storage.url()).await;
    let r = check_with(&registry.url(), "blockedNetworks: [127.0.0.2/32]\n").await;
    assert_eq!((r.verdict, r.reason), (Verdict::Deny, Reason::RegistryBlocked), "{}", r.message);
    assert!(storage.recorded().is_empty(), "the blocked address was never contacted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_hosts_and_realms_are_never_contacted() {
    // A token realm on the cloud metadata address.
    let s = Server::start("127.0.0.1", |_| {
        Action::Respond(
            Response::new(401)
                .header("WWW-Authenticate", "Bearer realm=\"http://169.254.169.254/latest/token\",service=\"x\""),
        )
    })
    .await;
    let r = check_with(&s.url(), "").await;
    assert_eq!((r.verdict, r.reason), (Verdict::Deny, Reason::RegistryBlocked), "{}", r.message);
    assert!(r.message.contains("169.254"), "{}", r.message);

    // A registry name that resolves into a blocked network: checked after DNS, nothing sent.
    let victim = Server::start("127.0.0.1", |_| respond(200)).await;
    let url = format!("http://localhost:{}", victim.addr.port());
    let r = check_with(&url, "blockedNetworks: [127.0.0.0/8, \"::1/128\"]\n").await;
    assert_eq!((r.verdict, r.reason), (Verdict::Deny, Reason::RegistryBlocked), "{}", r.message);
    assert!(victim.recorded().is_empty());

    // A literal link-local registry host in the image string.
    let engine = engine_from(&{
        let dir = tempfile::tempdir().unwrap().keep();
        let p = dir.join("c.yaml");
        std::fs::write(&p, "{}\n").unwrap();
        p
    });
    let pod = serde_json::json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "meta", "image": "169.254.169.254/latest/meta-data:1"},
        {"name": "meta6", "image": "[fe80::1]:80/x:1"}]}});
    let w = pullguard::workload::Workload::from_object(&pod, "default").unwrap().unwrap();
    for r in engine.check_workload(&w, &pullguard::cluster::Snapshot::default(), None).await {
        assert_eq!((r.verdict, r.reason), (Verdict::Deny, Reason::RegistryBlocked), "{}: {}", r.container, r.message);
    }
}

/// A registry that resolves every tag to the digest of `body`, and serves `body` as its manifest.
async fn manifest_server(body: Vec<u8>) -> Server {
    let digest = sha256(&body);
    Server::start("127.0.0.1", move |req: &Request| {
        let resp = Response::new(200).header("Content-Type", OCI_MANIFEST);
        Action::Respond(match req.method.as_str() {
            "HEAD" => resp.header("Docker-Content-Digest", &digest),
            _ => resp.body(body.clone()),
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_manifests_are_registry_errors() {
    let cases =
        [(vec![b' '; 5 * 1024 * 1024], "limit"), (b"{\"schemaVersion\": 2, \"config\": ".to_vec(), "malformed")];
    for (body, says) in cases {
        let s = manifest_server(body).await;
        let r = check_with(&s.url(), "").await;
        assert_eq!((r.verdict, r.reason), (Verdict::Warn, Reason::RegistryError), "{}", r.message);
        assert!(r.message.contains(says), "{}", r.message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_or_output_at_trace_level() {
    let env = support::Env::start(support::Options { private: true, token: true }).await;
    let storage = storage_server("127.0.0.2").await;
    let registry = redirecting_registry(storage.url()).await;
    let cfg = env.config(&format!("  fault.example.com:\n    endpoint: {}\n", registry.url()));
    let files = [support::fixtures().join("manifests/causes.yaml"), support::fixtures().join("manifests/faults.yaml")];
    let mut args = vec!["check", "--config", cfg.to_str().unwrap(), "--output", "json"];
    let file_args: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(file_args.iter().map(String::as_str));
    let run = pullguard_env(&args, None, &[("PULLGUARD_LOG", "trace")]).await;
    assert!(run.stderr.len() > 1000, "trace logging is on: {} bytes", run.stderr.len());
    let all = format!("{}{}", run.stdout, run.stderr);
    let b64 = base64::engine::general_purpose::STANDARD;
    for secret in ["alice-password", "bob-password", "carol-password", "expired-password", "not-bobs-password"] {
        assert!(!all.contains(secret), "{secret} leaked");
        for user in ["alice", "bob", "carol"] {
            let encoded = b64.encode(format!("{user}:{secret}"));
            assert!(!all.contains(&encoded), "base64 of {user}:{secret} leaked");
        }
    }
    assert!(!all.contains("eyJ"), "a JWT leaked");
    assert!(!all.contains("dockerconfigjson\":"), "a secret payload leaked");
}

/// Docker Hub announces each identity's pull budget on its manifest responses (a HEAD does not spend it).
/// pullguard exports the last announcement per registry and identity: the username, never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_pull_budget_is_exported_per_registry_and_identity() {
    let (manifest, digest, config, config_digest) = image();
    let s = Server::start("127.0.0.1", move |req: &Request| {
        if req.header("authorization") != Some(CAROL) {
            return Action::Respond(Response::new(401).header("WWW-Authenticate", "Basic realm=\"fault\""));
        }
        let path = req.path();
        let budget =
            |r: Response| r.header("ratelimit-limit", "200;w=21600").header("ratelimit-remaining", "7;w=21600");
        if req.method == "HEAD" && path == "/v2/team/app/manifests/1.0" {
            let r = Response::new(200).header("Docker-Content-Digest", &digest).header("Content-Type", OCI_MANIFEST);
            return Action::Respond(budget(r));
        }
        if path == format!("/v2/team/app/manifests/{digest}") {
            return Action::Respond(budget(
                Response::new(200).header("Content-Type", OCI_MANIFEST).body(manifest.clone()),
            ));
        }
        if path == format!("/v2/team/app/blobs/{config_digest}") {
            return Action::Respond(Response::new(200).body(config.clone()));
        }
        respond(404)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg.yaml");
    std::fs::write(&cfg, format!("registries:\n  fault.example.com:\n    endpoint: {}\n", s.url())).unwrap();
    let engine = engine_from(&cfg);
    let (snap, workloads) = load(&[support::fixtures().join("manifests/faults.yaml")], "default");
    let r = engine.check_workload(&workloads[0], &snap, None).await.remove(0);
    assert_eq!(r.reason, Reason::Ok, "{}", r.message);
    let (cache, registry) = engine.stats();
    assert_eq!(registry.budgets(), [("fault.example.com".to_string(), "carol".to_string(), 200, 7)]);
    let text = pullguard::metrics::Metrics::new(cache, registry).render();
    assert!(
        text.contains("pullguard_registry_ratelimit_remaining{registry=\"fault.example.com\",identity=\"carol\"} 7"),
        "{text}"
    );
    assert!(text.contains("pullguard_registry_ratelimit_limit{registry=\"fault.example.com\",identity=\"carol\"} 200"));
    assert!(!text.contains("carol-password"));

    // A rollout that pulls on more nodes than the 7 pulls left: a warning; one that fits: nothing to say.
    let deployment = |replicas: u32| {
        let obj = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": replicas, "template": {"spec": {
                "imagePullSecrets": [{"name": "fault-cred"}],
                "containers": [{"name": "app", "image": "fault.example.com/team/app:1.0"}]}}}});
        pullguard::workload::Workload::from_object(&obj, "default").unwrap().unwrap()
    };
    let r = engine.check_workload(&deployment(10), &snap, None).await.remove(0);
    assert_eq!((r.verdict, r.reason), (Verdict::Warn, Reason::PullBudgetLow), "{}", r.message);
    assert!(r.message.contains("7 of 200 pulls left") && r.message.contains("up to 10 nodes"), "{}", r.message);
    assert!(r.message.contains("secret default/fault-cred"), "{}", r.message);
    let r = engine.check_workload(&deployment(7), &snap, None).await.remove(0);
    assert_eq!(r.reason, Reason::Ok, "{}", r.message);
}
