//! `pullguard audit` against the API stand-in (workloads listed as the API server lists them: no apiVersion or
//! kind on the items) and the real registry.

use serde_json::{Value, json};

use crate::support::apiserver::ApiServer;
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
