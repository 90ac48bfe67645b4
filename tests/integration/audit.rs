//! `pullguard audit` against the API stand-in (workloads listed as the API server lists them: no apiVersion or
//! kind on the items) and the real registry.

use serde_json::{Value, json};

use crate::support::apiserver::ApiServer;
use crate::support::webhook::Webhook;
use crate::support::{Env, Options, dockerconfigjson_b64, pullguard};

fn template(containers: &[(&str, &str)], secrets: &[&str]) -> Value {
    let containers: Vec<Value> = containers.iter().map(|(n, i)| json!({"name": n, "image": i})).collect();
    let secrets: Vec<Value> = secrets.iter().map(|s| json!({"name": s})).collect();
    json!({"spec": {"containers": containers, "imagePullSecrets": secrets}})
}

fn meta(ns: &str, name: &str, owner: Option<&str>) -> Value {
    let mut m = json!({"name": name, "namespace": ns});
    if let Some(kind) = owner {
        m["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": "owner", "uid": "u",
            "controller": true}]);
    }
    m
}

/// A mixed cluster: multi-arch and amd64-only images, controller-made objects, a CronJob's Job, an unowned
/// Pod, a pull secret in the right and in the wrong namespace, and a Secret that is not a pull secret.
async fn mixed_cluster() -> ApiServer {
    let api = ApiServer::start().await;
    for (name, arch) in [("amd-1", "amd64"), ("arm-1", "arm64")] {
        api.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {
            "kubernetes.io/os": "linux", "kubernetes.io/arch": arch, "kubernetes.io/hostname": name}}}));
    }
    let t = |c: &[(&str, &str)]| template(c, &[]);
    api.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("shop", "web", None),
        "spec": {"template": t(&[("nginx", "nginx:1.25.3")])}}));
    api.apply(
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta("shop", "web-7d4f", Some("Deployment")),
        "spec": {"template": t(&[("nginx", "nginx:1.25.3")])}}),
    );
    api.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("shop", "web-7d4f-x", Some("ReplicaSet")),
        "spec": t(&[("nginx", "nginx:1.25.3")])["spec"]}));
    api.apply(json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("shop", "db", None),
        "spec": {"template": t(&[("db", "team/amd64-only:1.0")])}}));
    api.apply(json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("infra", "agent", None),
        "spec": {"template": t(&[("agent", "alpine:3.19")])}}));
    api.apply(json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("shop", "report", None),
        "spec": {"jobTemplate": {"spec": {"template": t(&[("report", "team/myapp:v2.3.0")])}}}}));
    api.apply(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("shop", "report-29", Some("CronJob")),
        "spec": {"template": t(&[("report", "team/myapp:v2.3.0")])}}));
    api.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("infra", "debug", None),
        "spec": t(&[("shell", "alpine:3.19"), ("tool", "team/arm-only:1.0")])["spec"]}));
    // Private images: a pull secret in the pod's namespace, one only in another, one not a pull secret at all.
    let regcred = dockerconfigjson_b64("registry.example.com", "alice", "alice-password");
    for ns in ["shop", "default"] {
        api.apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred", "namespace": ns},
            "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": regcred}}));
    }
    api.apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls", "namespace": "shop"},
        "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}));
    api.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("shop", "private", None),
        "spec": {"template": template(&[("app", "registry.example.com/private/app:1.0")], &["regcred"])}}));
    api.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("billing", "private", None),
        "spec": {"template": template(&[("app", "registry.example.com/private/app:1.0")], &["regcred"])}}));
    api.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("shop", "wrong-secret", None),
        "spec": {"template": template(&[("app", "registry.example.com/private/app:1.0")], &["tls"])}}));
    api
}

fn verdicts(j: &Value) -> Vec<String> {
    let mut v: Vec<String> = j["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let o = &r["object"];
            format!(
                "{}/{}/{} {} {} {}",
                o["namespace"].as_str().unwrap(),
                o["kind"].as_str().unwrap(),
                o["name"].as_str().unwrap(),
                r["container"].as_str().unwrap(),
                r["verdict"].as_str().unwrap(),
                r["reason"].as_str().unwrap()
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_reports_each_workload_once_with_the_clusters_credentials_and_nodes() {
    let env = Env::start(Options { private: true, token: false }).await;
    let api = mixed_cluster().await;
    let kubeconfig = api.kubeconfig(env.dir.path());
    let cfg = env.config("");
    let base = ["audit", "--config", cfg.to_str().unwrap(), "--kubeconfig", kubeconfig.to_str().unwrap()];

    let run = pullguard(&[&base[..], &["--output", "json"]].concat(), None).await;
    assert_eq!(run.code, 1, "a deny gives exit 1: {}{}", run.stdout, run.stderr);
    let j = run.json();
    assert_eq!(j["errors"], json!([]), "{j}");
    assert_eq!(
        verdicts(&j),
        [
            "billing/Deployment/private app deny SecretInOtherNamespace",
            "infra/DaemonSet/agent agent allow Ok",
            "infra/Pod/debug shell allow Ok",
            "infra/Pod/debug tool warn PlatformMismatch",
            "shop/CronJob/report report warn PlatformMismatch",
            "shop/Deployment/private app warn PlatformMismatch",
            "shop/Deployment/web nginx allow Ok",
            "shop/Deployment/wrong-secret app deny SecretInvalid",
            "shop/StatefulSet/db db warn PlatformMismatch",
        ],
        "the ReplicaSet and Pod of web and the CronJob's Job are reported at their owners"
    );
    assert_eq!(j["summary"]["objects"], 8);
    let result = |ns: &str, name: &str| {
        j["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["object"]["namespace"] == ns && r["object"]["name"] == name)
            .unwrap()
            .clone()
    };
    // The private image pulled with the namespace's own pull secret (amd64-only, so a warning on a mixed cluster).
    let private = result("shop", "private");
    assert_eq!(private["credentials"][0]["secret"], "shop/regcred", "{private}");
    assert_eq!(private["credentialUsed"], 0, "{private}");
    // A Secret that is not a pull secret is named as such, not as missing.
    let wrong = result("shop", "wrong-secret");
    assert!(wrong["message"].as_str().unwrap().contains("kubernetes.io/dockerconfigjson"), "{wrong}");

    // What if every node were linux/arm64? Exactly the amd64-only workloads would fail to pull (billing's is
    // already denied for its secret, and that stays its reason).
    let run = pullguard(&[&base[..], &["--output", "json", "--platform", "linux/arm64"]].concat(), None).await;
    let j = run.json();
    let failing: Vec<String> = verdicts(&j).into_iter().filter(|v| v.contains("PlatformMismatch")).collect();
    assert_eq!(
        failing,
        [
            "shop/CronJob/report report deny PlatformMismatch",
            "shop/Deployment/private app deny PlatformMismatch",
            "shop/StatefulSet/db db deny PlatformMismatch",
        ],
        "{j}"
    );

    // One namespace, human output: named by namespace/kind/name, no progress on a pipe.
    let run = pullguard(&[&base[..], &["--namespace", "infra"]].concat(), None).await;
    assert!(run.stdout.contains("DaemonSet/agent") && run.stdout.contains("Pod/debug"), "{}", run.stdout);
    assert!(!run.stdout.contains("Deployment/"), "{}", run.stdout);
    assert!(!run.stderr.contains("objects\r") && !run.stderr.contains('\r'), "{}", run.stderr);
}

/// The `pullguard_audit_rounds` counter of a running webhook.
async fn rounds(wh: &Webhook) -> u64 {
    let m = wh.metrics().await;
    m.lines()
        .find_map(|l| l.strip_prefix("pullguard_audit_rounds_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits until `n` more re-verification rounds have completed.
async fn rounds_pass(wh: &Webhook, n: u64) {
    let target = rounds(wh).await + n;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while rounds(wh).await < target {
        assert!(std::time::Instant::now() < deadline, "no audit round completed: {}", wh.logs());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The API stand-in with one linux/amd64 node and nothing else.
async fn one_amd64_node() -> ApiServer {
    let api = ApiServer::start().await;
    api.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {
        "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}}}));
    api
}

fn verdict_line(namespace: &str, name: &str, container: &str, verdict: &str, reason: &str) -> String {
    format!(
        "pullguard_workload_image_verdict{{namespace=\"{namespace}\",kind=\"Deployment\",name=\"{name}\",\
         container=\"{container}\",verdict=\"{verdict}\",reason=\"{reason}\"}} 1"
    )
}

/// `serve --audit-interval`: a tag deleted upstream after admission, and a pull secret replaced with one the
/// registry refuses, each turn the workload's metric and raise one Event; later rounds raise no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_audit_turns_the_metric_and_raises_one_event_per_change() {
    let env = Env::start(Options { private: true, token: false }).await;
    let api = one_amd64_node().await;
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    let secret = |password: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred", "namespace": "shop"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": dockerconfigjson_b64("registry.example.com", "alice", password)}})
    };
    api.apply(secret("alice-password"));
    api.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("shop", "web", None),
        "spec": {"template": template(&[("app", "team/myapp:v2.3.0")], &[])}}));
    api.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("shop", "private", None),
        "spec": {"template": template(&[("app", "registry.example.com/private/app:1.0")], &["regcred"])}}));
    let cfg = env.config("cache:\n  ttl: 1s\n  negativeTtl: 1s\n");
    let wh = Webhook::start(&cfg, &api, &["--audit-interval", "1s"]).await;

    rounds_pass(&wh, 1).await;
    let m = wh.metrics().await;
    assert!(m.contains(&verdict_line("shop", "web", "app", "allow", "Ok")), "{m}");
    assert!(m.contains(&verdict_line("shop", "private", "app", "allow", "Ok")), "{m}");

    // The tag goes away upstream (as Bitnami's did from Docker Hub), straight from the registry's storage.
    let tag = env.dir.path().join("storage/docker/registry/v2/repositories/team/myapp/_manifests/tags/v2.3.0");
    std::fs::remove_dir_all(&tag).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), api.events_created_at_least(1))
        .await
        .unwrap_or_else(|_| panic!("no Event: {}", wh.logs()));
    let m = wh.metrics().await;
    assert!(m.contains(&verdict_line("shop", "web", "app", "deny", "TagNotFound")), "{m}");
    assert!(!m.contains(&verdict_line("shop", "web", "app", "allow", "Ok")), "the old verdict's series is gone: {m}");
    let event = api.events_created.lock().unwrap()[0].clone();
    assert_eq!(event["regarding"]["name"], "web", "{event}");
    assert_eq!(event["regarding"]["kind"], "Deployment", "{event}");
    assert_eq!(event["metadata"]["namespace"], "shop", "{event}");
    assert_eq!(event["reason"], "ImagePullTagNotFound", "{event}");
    assert_eq!(event["type"], "Warning", "{event}");
    let note = event["note"].as_str().unwrap();
    assert!(note.contains("team/myapp:v2.3.0") && note.contains("fail to pull"), "{note}");

    // The pull secret is replaced with one the registry refuses.
    api.apply(secret("not-alice-password"));
    tokio::time::timeout(std::time::Duration::from_secs(30), api.events_created_at_least(2))
        .await
        .unwrap_or_else(|_| panic!("no second Event: {}", wh.logs()));
    let event = api.events_created.lock().unwrap()[1].clone();
    assert_eq!(event["regarding"]["name"], "private", "{event}");
    assert_eq!(event["reason"], "ImagePullCredentialsRejected", "{event}");
    assert!(!event.to_string().contains("not-alice-password"), "no credential in an Event");
    assert!(wh.metrics().await.contains(&verdict_line("shop", "private", "app", "deny", "CredentialsRejected")));

    // Still failing two rounds later: no new Event.
    rounds_pass(&wh, 2).await;
    assert_eq!(api.events_created.lock().unwrap().len(), 2);
    let m = wh.metrics().await;
    assert!(m.contains("pullguard_audit_containers{verdict=\"deny\",reason=\"TagNotFound\"} 1"), "{m}");
}

/// Many workloads sharing an image cost the registry one lookup per TTL, however many rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_audit_goes_through_the_cache() {
    let env = Env::start(Options { private: false, token: false }).await;
    let api = one_amd64_node().await;
    for i in 0..30 {
        api.apply(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("shop", &format!("web-{i}"), None),
            "spec": {"template": template(&[("nginx", "nginx:1.25.3")], &[])}}),
        );
    }
    let before = env.hub.requests().len();
    let wh = Webhook::start(&env.config(""), &api, &["--audit-interval", "1s"]).await;
    rounds_pass(&wh, 3).await;
    let requests: Vec<String> = env.hub.requests().split_off(before);
    let heads = requests.iter().filter(|r| r.starts_with("HEAD /v2/library/nginx/manifests/1.25.3 ")).count();
    assert_eq!(heads, 1, "30 workloads x 3 rounds, one lookup within the TTL: {requests:?}");
    let m = wh.metrics().await;
    assert!(m.contains("pullguard_audit_containers{verdict=\"allow\",reason=\"Ok\"} 30"), "{m}");
}
