//! `pullguard serve`, the real binary over real TLS, against real registries and the API stand-in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::apiserver::ApiServer;
use crate::support::http::{Action, Server};
use crate::support::webhook::{Webhook, create_review, reasons, tls_client_builder};
use crate::support::{self, Env, Options, pullguard};

fn admission(name: &str) -> Value {
    let p = support::fixtures().join("admission").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// The cluster the tests run against: the Secrets and ServiceAccounts of causes.yaml, namespaces, one amd64 node.
pub(crate) async fn cluster() -> ApiServer {
    let api = ApiServer::start().await;
    let (docs, errors) = pullguard::input::load(&[support::fixtures().join("manifests/causes.yaml")]);
    assert!(errors.is_empty());
    for d in docs {
        let kind = d.value["kind"].as_str().unwrap();
        if kind == "Secret" || kind == "ServiceAccount" {
            let mut obj = d.value.clone();
            // The API server stores stringData as data.
            if let Some(sd) = obj.get("stringData").cloned() {
                let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "x");
                let data: serde_json::Map<String, Value> =
                    sd.as_object().unwrap().keys().map(|k| (k.clone(), json!(b64))).collect();
                obj["data"] = Value::Object(data);
                obj.as_object_mut().unwrap().remove("stringData");
            }
            api.apply(obj);
        }
    }
    for ns in ["default", "production", "pullguard", "kube-system", "relaxed", "legacy"] {
        let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match ns {
            "relaxed" => obj["metadata"]["labels"] = json!({"pullguard.io/mode": "warn"}),
            "legacy" => obj["metadata"]["labels"] = json!({"pullguard.io/mode": "off"}),
            _ => {}
        }
        api.apply(obj);
    }
    api.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1",
        "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}}}));
    api
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_fixtures_over_real_tls() {
    let env = Env::start(Options::default()).await;
    let api = cluster().await;
    let wh = Webhook::start(&env.config(""), &api, &[]).await;

    // (fixture, allowed, reasons annotation, what the message or warnings must mention)
    let cases: &[(&str, bool, &str, &str)] = &[
        ("pod-create-typo.json", false, "web=TagNotFound,sidecar=Ok", "Did you mean latest?"),
        ("pod-create-ok.json", true, "web=Ok", ""),
        ("pod-create-dry-run.json", false, "web=TagNotFound", "lates"),
        ("deployment-update-replicas.json", true, "", ""),
        ("deployment-update-image.json", false, "web=TagNotFound", "v2.3.0 or v2.3.2"),
        ("pod-ephemeral-containers.json", false, "debugger-x7k2p=TagNotFound", "3.20"),
        ("pod-delete.json", true, "", ""),
        ("pod-create-controlled.json", true, "", ""),
        // The same pod, with the same hand-written ownerReference, created by a user: checked.
        ("pod-create-forged-owner.json", false, "web=TagNotFound", "lates"),
        // A rollout's ReplicaSet: its template was checked with the Deployment.
        ("replicaset-create-by-deployment-controller.json", true, "", ""),
        ("pod-create-kube-system.json", true, "", ""),
    ];
    for (file, allowed, want_reasons, mention) in cases {
        let body = admission(file);
        let r = wh.review(&body).await;
        assert_eq!(r["uid"], body["request"]["uid"], "{file}: the uid is echoed");
        assert_eq!(r["allowed"], *allowed, "{file}: {r}");
        let got: Vec<String> = reasons(&r).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut want: Vec<String> = want_reasons.split(',').filter(|s| !s.is_empty()).map(String::from).collect();
        want.sort();
        assert_eq!(got, want, "{file}: {r}");
        if !allowed {
            assert_eq!(r["status"]["code"], 403, "{file}");
            let msg = r["status"]["message"].as_str().unwrap();
            assert!(msg.contains(mention), "{file}: {msg}");
            assert!(msg.contains("Fix:"), "{file}: {msg}");
        }
        for w in r["warnings"].as_array().into_iter().flatten() {
            assert!(w.as_str().unwrap().len() <= 256, "{file}: warning too long");
        }
    }
    // The unrelated edit was never looked up: its image does not exist, yet it was admitted untouched.
    let r = wh.review(&admission("deployment-update-replicas.json")).await;
    assert_eq!(r["auditAnnotations"]["skipped"], "no image, pull policy, pull secret or scheduling constraint changed");

    let metrics = wh.metrics().await;
    for m in [
        "pullguard_reviews_total{kind=\"Pod\",operation=\"CREATE\",verdict=\"deny\"}",
        "pullguard_container_verdicts_total{verdict=\"deny\",reason=\"TagNotFound\"}",
        "pullguard_review_duration_seconds_bucket",
        "pullguard_cache_hits_total",
        "pullguard_cache_misses_total",
        "pullguard_lookups_in_flight",
        "pullguard_registry_requests_total{registry=\"docker.io\",outcome=\"success\"}",
    ] {
        assert!(metrics.contains(m), "metrics lack {m}:\n{metrics}");
    }
    // One JSON log line per decision, with the fields an operator greps for.
    let logs = wh.logs();
    let decision = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "decision" && l["uid"] == "6a1f1f5e-7d0e-4c1b-9a51-000000000001")
        .unwrap_or_else(|| panic!("no decision line:\n{logs}"));
    assert_eq!(decision["verdict"], "deny");
    assert_eq!(decision["namespace"], "production");
    assert_eq!(decision["kind"], "Pod");
    assert!(decision["reasons"].as_str().unwrap().contains("web=TagNotFound"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_serve_agree_on_the_shared_fixtures() {
    let env = Env::start(Options { private: true, token: true }).await;
    let cfg = env.config("");
    let api = cluster().await;
    let wh = Webhook::start(&cfg, &api, &[]).await;
    let file = support::fixtures().join("manifests/causes.yaml");
    let run =
        pullguard(&["check", "--config", cfg.to_str().unwrap(), "--output", "json", file.to_str().unwrap()], None)
            .await;
    let check = run.json();
    let mut by_object: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in check["results"].as_array().unwrap() {
        by_object
            .entry(r["object"]["name"].as_str().unwrap().to_string())
            .or_default()
            .insert(r["container"].as_str().unwrap().to_string(), r["reason"].as_str().unwrap().to_string());
    }
    let (docs, _) = pullguard::input::load(&[file]);
    let mut compared = 0;
    for (i, d) in docs.iter().enumerate() {
        if pullguard::workload::pod_spec_path(d.value["kind"].as_str().unwrap()).is_none() {
            continue;
        }
        let name = d.value["metadata"]["name"].as_str().unwrap();
        let r = wh.review(&create_review(&format!("uid-{i}"), &d.value)).await;
        let want = &by_object[name];
        assert_eq!(&reasons(&r), want, "{name}: serve and check disagree: {r}");
        let check_denies =
            check["results"].as_array().unwrap().iter().any(|x| x["object"]["name"] == name && x["verdict"] == "deny");
        assert_eq!(r["allowed"], !check_denies, "{name}");
        if name == "image-volumes" {
            let message = r["status"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("image volume \"models\" (nginx:lates): TagNotFound"), "{r}");
        }
        compared += 1;
    }
    assert_eq!(compared, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_created_changed_and_deleted_after_start_change_the_verdict() {
    let env = Env::start(Options { private: true, token: false }).await;
    let api = cluster().await;
    let wh = Webhook::start(&env.config(""), &api, &[]).await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "late", "namespace": "production"},
        "spec": {"imagePullSecrets": [{"name": "late-cred"}], "containers": [{"name": "app", "image": "registry.example.com/private/app:1.0"}]}});
    let secret = |password: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
               "metadata": {"name": "late-cred", "namespace": "production"},
               "data": {".dockerconfigjson": support::dockerconfigjson_b64("registry.example.com", "alice", password)}})
    };
    let reason_after = |want: &'static str| {
        let wh = &wh;
        let pod = &pod;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let r = wh.review(&create_review("late", pod)).await;
                let got = reasons(&r).get("app").cloned().unwrap_or_default();
                if got == want || Instant::now() > deadline {
                    return (got, r);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (got, r) = reason_after("SecretNotFound").await;
    assert_eq!(got, "SecretNotFound", "{r}");
    assert_eq!(r["allowed"], false);

    api.apply(secret("alice-password"));
    let (got, r) = reason_after("Ok").await;
    assert_eq!(got, "Ok", "a secret created after start is used: {r}");
    assert_eq!(r["allowed"], true);

    api.apply(secret("rotated-away"));
    let (got, r) = reason_after("CredentialsRejected").await;
    assert_eq!(got, "CredentialsRejected", "a changed secret is used, not the cached answer of the old one: {r}");

    api.delete("Secret", "production", "late-cred");
    let (got, _) = reason_after("SecretNotFound").await;
    assert_eq!(got, "SecretNotFound", "a deleted secret is gone");
}

/// Helm, Argo CD and Flux create a Secret, a ServiceAccount or a Namespace and, milliseconds later, the workload
/// that needs it; behind an HA control plane the watch pullguard reads from can lag. A store miss must be
/// confirmed with a live read before it becomes a verdict. The stand-in holds every watch event back, so the
/// stores cannot have seen the new objects: only a live read can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_created_in_the_same_apply_are_confirmed_live() {
    let env = Env::start(Options { private: true, token: false }).await;
    let api = cluster().await;
    let wh = Webhook::start(&env.config(""), &api, &[]).await;
    let private = "registry.example.com/private/app:1.0";
    let secret = |name: &str, ns: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
               "metadata": {"name": name, "namespace": ns},
               "data": {".dockerconfigjson": support::dockerconfigjson_b64("registry.example.com", "alice", "alice-password")}})
    };
    api.hold_watches();

    // A Secret created just before the pod that names it.
    api.apply(secret("fresh-cred", "production"));
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "production"},
        "spec": {"imagePullSecrets": [{"name": "fresh-cred"}], "containers": [{"name": "app", "image": private}]}});
    let r = wh.review(&create_review("a", &pod)).await;
    assert_eq!((reasons(&r)["app"].as_str(), &r["allowed"]), ("Ok", &json!(true)), "{r}");

    // A ServiceAccount created with its pull secret, just before the pod that runs as it.
    api.apply(secret("fresh-sa-cred", "production"));
    api.apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "fresh-sa", "namespace": "production"},
        "imagePullSecrets": [{"name": "fresh-sa-cred"}]}));
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b", "namespace": "production"},
        "spec": {"serviceAccountName": "fresh-sa", "containers": [{"name": "app", "image": private}]}});
    let r = wh.review(&create_review("b", &pod)).await;
    assert_eq!((reasons(&r)["app"].as_str(), &r["allowed"]), ("Ok", &json!(true)), "{r}");

    // A namespace created in warn mode, just before a pod with a typo in it: warned, not denied.
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "fresh-ns", "labels": {"pullguard.io/mode": "warn"}}}));
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c", "namespace": "fresh-ns"},
        "spec": {"containers": [{"name": "web", "image": "nginx:lates"}]}});
    let r = wh.review(&create_review("c", &pod)).await;
    assert_eq!(r["allowed"], true, "the new namespace's warn mode applies: {r}");
    assert!(r["warnings"][0].as_str().unwrap().contains("TagNotFound"), "{r}");

    // What really is missing stays missing: the live read confirms the store.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "d", "namespace": "production"},
        "spec": {"imagePullSecrets": [{"name": "never-created"}], "containers": [{"name": "app", "image": private}]}});
    let r = wh.review(&create_review("d", &pod)).await;
    assert_eq!((reasons(&r)["app"].as_str(), &r["allowed"]), ("SecretNotFound", &json!(false)), "{r}");

    let requests = api.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|t| t.starts_with("/api/v1/namespaces/production/secrets") && t.contains("metadata.name%3Dfresh-cred")),
        "a live, name-selected read: {requests:?}"
    );
    api.release_watches();
}

/// The name-only Secret watch sees a new pull secret before the typed watch does: the stores then disagree
/// (the name exists, no pull secret of that name), which once read as SecretInvalid for a valid
/// dockerconfigjson Secret. The live read settles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_seen_by_name_before_its_type_is_confirmed_live() {
    let env = Env::start(Options { private: true, token: false }).await;
    let api = cluster().await;
    let wh = Webhook::start(&env.config(""), &api, &[]).await;
    api.hold_typed_watches();
    api.apply(json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "racing-cred", "namespace": "production"},
        "data": {".dockerconfigjson": support::dockerconfigjson_b64("registry.example.com", "alice", "alice-password")}}));
    // Written to the name-only watch; the typed watches hold it back.
    api.delivered(api.resource_version()).await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "r", "namespace": "production"},
        "spec": {"imagePullSecrets": [{"name": "racing-cred"}],
                 "containers": [{"name": "app", "image": "registry.example.com/private/app:1.0"}]}});
    let r = wh.review(&create_review("r", &pod)).await;
    assert_eq!((reasons(&r)["app"].as_str(), &r["allowed"]), ("Ok", &json!(true)), "{r}");
    api.release_watches();
}

/// When the API server cannot answer the live read within the review's time, a verdict that rests only on the
/// stores is not given: the pod is admitted with a warning that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_store_miss_is_a_warning_not_a_denial() {
    let env = Env::start(Options { private: true, token: false }).await;
    let api = cluster().await;
    let wh = Webhook::start(&env.config(""), &api, &["--deadline-margin", "500ms"]).await;
    api.hold_lists.store(true, std::sync::atomic::Ordering::SeqCst);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "e", "namespace": "production"},
        "spec": {"imagePullSecrets": [{"name": "never-created"}],
                 "containers": [{"name": "app", "image": "registry.example.com/private/app:1.0"}]}});
    let started = Instant::now();
    let resp = wh.client.post(wh.url("2s")).json(&create_review("e", &pod)).send().await.unwrap();
    let r: Value = resp.json::<Value>().await.unwrap()["response"].clone();
    assert!(started.elapsed() < Duration::from_secs(2), "answered within the API server's timeout");
    api.hold_lists.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(r["allowed"], true, "{r}");
    let warning = r["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("SecretNotFound: admitted unconfirmed, a live read failed (the review's deadline"),
        "{warning}"
    );
    assert_eq!(reasons(&r)["app"], "SecretNotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_modes_exemptions_and_no_secrets_mode() {
    let env = Env::start(Options { private: true, token: false }).await;
    let api = cluster().await;
    let typo = |ns: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns},
               "spec": {"containers": [{"name": "web", "image": "nginx:lates"}]}})
    };
    let wh = Webhook::start(&env.config(""), &api, &[]).await;
    let r = wh.review(&create_review("a", &typo("production"))).await;
    assert_eq!(r["allowed"], false);
    let r = wh.review(&create_review("b", &typo("relaxed"))).await;
    assert_eq!(r["allowed"], true, "pullguard.io/mode=warn admits: {r}");
    let warning = r["warnings"][0].as_str().unwrap();
    assert!(warning.contains("TagNotFound") && warning.len() <= 256, "{warning}");
    for ns in ["legacy", "kube-system", "pullguard"] {
        let r = wh.review(&create_review("c", &typo(ns))).await;
        assert_eq!(r["allowed"], true, "{ns} is exempt or off");
        assert!(r.get("warnings").is_none_or(Value::is_null), "{ns}: {r}");
    }
    drop(wh);

    // Global warn mode, and a namespace that asks for enforce.
    let wh = Webhook::start(&env.config("mode: warn\n"), &api, &[]).await;
    // No wait for the watch: a namespace the store has not seen is read live.
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "strict", "labels": {"pullguard.io/mode": "enforce"}}}));
    assert_eq!(wh.review(&create_review("d", &typo("production"))).await["allowed"], true);
    assert_eq!(wh.review(&create_review("e", &typo("strict"))).await["allowed"], false);
    drop(wh);

    // No Secrets at all: a named pull secret is unknown rather than missing; node credentials pull.
    let node_cfg = env.dir.path().join("node.json");
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:alice-password");
    std::fs::write(&node_cfg, format!(r#"{{"auths":{{"registry.example.com":{{"auth":"{auth}"}}}}}}"#)).unwrap();
    let cfg = env.config(&format!("nodeCredentials: {}\n", node_cfg.display()));
    let before = api.requests.lock().unwrap().iter().filter(|t| t.starts_with("/api/v1/secrets")).count();
    let wh = Webhook::start(&cfg, &api, &["--no-secrets"]).await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "production"},
        "spec": {"imagePullSecrets": [{"name": "does-not-matter"}], "containers": [{"name": "app", "image": "registry.example.com/private/app:1.0"}]}});
    let r = wh.review(&create_review("f", &pod)).await;
    assert_eq!(reasons(&r)["app"], "Ok", "{r}");
    let secret_requests = api.requests.lock().unwrap().iter().filter(|t| t.starts_with("/api/v1/secrets")).count();
    assert_eq!(secret_requests, before, "--no-secrets reads no Secret");
}

/// A webhook whose `fault.example.com` is a server that accepts connections and never answers (`lookupTimeout:
/// 30s`, a 1 s `--deadline-margin`); the other fields keep what it uses alive as long as it (dropped after it).
/// Bind it whole: a pattern with `..` would drop the hung server and the registries at once.
struct OnAHungRegistry {
    wh: Webhook,
    _hang: Server,
    _api: ApiServer,
    _env: Env,
}

/// [`OnAHungRegistry`], with `config` added to its configuration.
async fn webhook_on_a_hung_registry(config: &str) -> OnAHungRegistry {
    let env = Env::start(Options::default()).await;
    let api = cluster().await;
    let hang = Server::start("127.0.0.1", |_| Action::Hang).await;
    let cfg = env.config(&format!("  fault.example.com:\n    endpoint: {}\nlookupTimeout: 30s\n{config}", hang.url()));
    let wh = Webhook::start(&cfg, &api, &["--deadline-margin", "1s"]).await;
    OnAHungRegistry { wh, _hang: hang, _api: api, _env: env }
}

/// Containers `app0`, `app1`, … of images nobody looked up before, on the hung registry.
fn hung_images(n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"name": format!("app{i}"), "image": format!("fault.example.com/team/app:{i}")})).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_registry_never_makes_a_review_miss_its_deadline() {
    let on = webhook_on_a_hung_registry("").await;
    let wh = &on.wh;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "production"},
        "spec": {"containers": [{"name": "app", "image": "fault.example.com/team/app:1.0"}, {"name": "web", "image": "nginx:1.25.3"}]}});
    let start = Instant::now();
    let resp = wh.client.post(wh.url("3s")).json(&create_review("h", &pod)).send().await.unwrap();
    let took = start.elapsed();
    let r: Value = resp.json().await.unwrap();
    let r = &r["response"];
    assert!(took < Duration::from_secs(3), "answered after {took:?}; the API server gives up at 3s");
    assert!(took >= Duration::from_millis(1500), "the lookup had its budget ({took:?})");
    assert_eq!(r["allowed"], true, "fail-open: {r}");
    assert_eq!(reasons(r)["app"], "RegistryUnreachable");
    assert_eq!(reasons(r)["web"], "Ok", "the healthy registry's answer is kept");
}

/// A registry that never answers keeps each new image's lookup waiting until `lookupTimeout`; past
/// `cache.maxLookupsInFlight` new images are answered at once, saying why, while cached ones are still checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_waiting_on_a_hung_registry_stop_at_their_cap() {
    let on = webhook_on_a_hung_registry("cache: {maxLookupsInFlight: 2}\n").await;
    let wh = &on.wh;
    let pod = |containers: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "production"},
            "spec": {"containers": containers}})
    };
    let web = json!({"name": "web", "image": "nginx:1.25.3"});
    assert_eq!(reasons(&wh.review(&create_review("warm", &pod(json!([web])))).await)["web"], "Ok");
    let apps = hung_images(3);
    let containers = json!([apps[0], apps[1], apps[2], web]);
    let resp = wh.client.post(wh.url("3s")).json(&create_review("busy", &pod(containers))).send().await.unwrap();
    let r: Value = resp.json().await.unwrap();
    let r = &r["response"];
    assert_eq!(r["allowed"], true, "fail-open: {r}");
    for app in ["app0", "app1", "app2"] {
        assert_eq!(reasons(r)[app], "RegistryUnreachable", "{r}");
    }
    assert_eq!(reasons(r)["web"], "Ok", "a cached image is still checked: {r}");
    let warnings = r["warnings"].to_string();
    let busy = "fault.example.com/team/app:2 was not looked up: 2 lookups (cache.maxLookupsInFlight) were already";
    assert!(warnings.contains(busy), "{warnings}");
    let metrics = wh.metrics().await;
    assert!(metrics.lines().any(|l| l == "pullguard_lookups_in_flight 2"), "{metrics}");
}

/// A tenant chooses the registry host in its images: one that never answers, and enough new images, held every
/// place for lookups, and then no other namespace's new image was looked up. Once half the places are taken a
/// namespace gets only its share, so another namespace's new image is still looked up and checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_hung_registry_leaves_other_namespaces_new_images_checked() {
    let shares = "cache: {maxLookupsInFlight: 6, maxLookupsInFlightPerNamespace: 2}\n";
    let on = webhook_on_a_hung_registry(shares).await;
    let wh = &on.wh;
    let pod = |namespace: &str, containers: Vec<Value>| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": namespace},
            "spec": {"containers": containers}})
    };
    let tenant = pod("tenant-a", hung_images(6));
    let resp = wh.client.post(wh.url("3s")).json(&create_review("tenant", &tenant)).send().await;
    let r: Value = resp.unwrap().json().await.unwrap();
    let r = &r["response"];
    assert_eq!(r["allowed"], true, "fail-open: {r}");
    let warnings = r["warnings"].to_string();
    let share = "was not looked up: this namespace's reviews already had 2 lookups \
                 (cache.maxLookupsInFlightPerNamespace) waiting";
    // Three lookups started (half the places) and wait; the other three were refused at once.
    assert_eq!(warnings.matches(share).count(), 3, "{warnings}");
    let other = pod("production", vec![json!({"name": "web", "image": "alpine:3.19"})]);
    let r = wh.review(&create_review("other", &other)).await;
    assert_eq!(reasons(&r)["web"], "Ok", "another namespace's new image was looked up: {r}");
    let metrics = wh.metrics().await;
    for line in ["pullguard_lookups_in_flight 3", "pullguard_lookups_refused_total{limit=\"namespace\"} 3"] {
        assert!(metrics.lines().any(|l| l == line), "no {line}: {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let env = Env::start(Options::default()).await;
    let api = cluster().await;
    let wh = Webhook::start(&env.config(""), &api, &[]).await;
    let bad: &[(&str, &str)] = &[
        ("{not json", "cannot read the AdmissionReview"),
        ("{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\"}", "no request"),
    ];
    for (body, says) in bad {
        let resp = wh
            .client
            .post(wh.url("10s"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let text = resp.text().await.unwrap();
        assert!(text.contains(says), "{text}");
    }
    // A review without Content-Type is still read.
    let body = serde_json::to_vec(&admission("pod-create-ok.json")).unwrap();
    let resp = wh.client.post(wh.url("10s")).body(body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // A body larger than any object the API server admits is refused, and the server stays up.
    let huge = vec![b' '; 9 * 1024 * 1024];
    let resp = wh.client.post(wh.url("10s")).body(huge).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    // The server answers before reading that body and then drops the connection; without `Connection: close`
    // a keep-alive client (the API server's too) pools it and its next review dies with the connection.
    assert_eq!(resp.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
    assert_eq!(wh.review(&admission("pod-create-ok.json")).await["allowed"], true);
}

fn pem_der(path: &std::path::Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(path).unwrap();
    let b64: String =
        pem.lines().take_while(|l| !l.starts_with("-----END")).filter(|l| !l.starts_with("-----")).collect();
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_fails_no_handshake() {
    let env = Env::start(Options::default()).await;
    let api = cluster().await;
    let wh = Webhook::start(&env.config(""), &api, &[]).await;
    // A second CA and serving certificate, made by `pullguard certs`.
    let next = wh.dir.path().join("next");
    let run = pullguard(
        &[
            "certs",
            "--service",
            "pullguard",
            "--namespace",
            "pullguard",
            "--extra-name",
            "127.0.0.1",
            "--out",
            next.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let bundle = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, run.stdout.trim()).unwrap();
    assert_eq!(bundle, std::fs::read(next.join("ca.crt")).unwrap(), "the printed caBundle is the CA");
    // No idle pool: every request opens a new connection, so every request is a handshake.
    let client = tls_client_builder(&[&next.join("ca.crt")]).pool_max_idle_per_host(0).build().unwrap();
    let (old_der, new_der) = (pem_der(&support::fixtures().join("pki/registry.pem")), pem_der(&next.join("tls.crt")));

    let body = admission("pod-create-ok.json");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, body, stop, url) = (client.clone(), body.clone(), stop.clone(), wh.url("10s"));
            tokio::spawn(async move {
                let (mut seen, mut failed) = (vec![], vec![]);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Every request opens a new connection (no idle pool): every one is a handshake.
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == 200 => {
                            let der = r
                                .extensions()
                                .get::<reqwest::tls::TlsInfo>()
                                .and_then(|t| t.peer_certificate())
                                .map(<[u8]>::to_vec);
                            seen.push(der.unwrap_or_default());
                        }
                        Ok(r) => failed.push(format!("status {}", r.status())),
                        Err(e) => failed.push(format!("{e:?}")),
                    }
                }
                (seen, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A mounted Secret changes by an atomic swap: write aside, then rename over.
    for f in ["tls.key", "tls.crt"] {
        let tmp = wh.dir.path().join(format!("{f}.new"));
        std::fs::copy(next.join(f), &tmp).unwrap();
        std::fs::rename(&tmp, wh.dir.path().join(f)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut seen, mut failed) = (vec![], vec![]);
    for h in load {
        let (s, f) = h.await.unwrap();
        seen.extend(s);
        failed.extend(f);
    }
    assert!(failed.is_empty(), "{} failed requests, e.g. {:?}", failed.len(), failed.first());
    assert!(seen.contains(&old_der), "the old certificate served before the swap");
    assert!(seen.last() == Some(&new_der), "the new certificate serves after the swap");
    assert!(seen.len() > 20, "under load: {} requests", seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_loses_no_review() {
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    sigterm_during_load(&[], if one_cpu { "current-thread" } else { "multi-thread" }).await;
}

/// On one CPU the server runs tokio's current-thread scheduler; under it too, the reviews in flight when SIGTERM
/// arrives are all answered and the server exits after the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_loses_no_review_on_one_cpu() {
    sigterm_during_load(&["taskset", "-c", "0"], "current-thread").await;
}

/// Thirty reviews in flight against a registry that answers in 800 ms, the server run by `wrapper`, then
/// SIGTERM: not ready at once, every review answered, a clean exit after the drain.
async fn sigterm_during_load(wrapper: &[&str], scheduler: &str) {
    let env = Env::start(Options::default()).await;
    let api = cluster().await;
    // A registry that answers slowly, so reviews are in flight when SIGTERM arrives.
    let (body, digest) = {
        let b = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.to_vec();
        let d = crate::support::seed::sha256(&b);
        (b, d)
    };
    let slow = Server::start("127.0.0.1", move |_| {
        Action::Delay(
            crate::support::http::Response::new(200)
                .header("Docker-Content-Digest", &digest)
                .header("Content-Type", "application/vnd.oci.image.index.v1+json")
                .body(body.clone()),
            Duration::from_millis(800),
        )
    })
    .await;
    let cfg = env.config(&format!("  slow.example.com:\n    endpoint: {}\n", slow.url()));
    let mut wh =
        Webhook::spawn_under(wrapper, &cfg, &api, &["--drain-timeout", "10s", "--shutdown-delay", "1s"], "debug");
    wh.wait_ready().await;
    let reviews: Vec<_> = (0..30)
        .map(|i| {
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}"), "namespace": "production"},
                "spec": {"containers": [{"name": "app", "image": format!("slow.example.com/team/app{i}:1.0")}]}});
            let (client, url, body) = (wh.client.clone(), wh.url("10s"), create_review(&format!("u{i}"), &pod));
            tokio::spawn(async move { client.post(url).json(&body).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kill = std::process::Command::new("kill").args(["-TERM", &wh.pid().to_string()]).status().unwrap();
    assert!(kill.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", wh.metrics_port)).await.unwrap();
    assert_eq!(ready.status(), 503, "not ready once SIGTERM arrived");
    let mut statuses = vec![];
    for r in reviews {
        statuses.push(r.await.unwrap());
    }
    let lost: Vec<_> = statuses.iter().filter(|s| !matches!(s, Ok(200))).collect();
    assert!(lost.is_empty(), "{} of 30 reviews lost: {:?}\n{}", lost.len(), lost.first(), wh.logs());
    let status = wh.wait_exit(Duration::from_secs(15)).await.expect("the server exits after draining");
    assert!(status.success(), "{status:?}");
    // Read once the server has exited: its log lines are written by a thread of their own, so one logged before
    // /readyz first answered may not be in the file yet then; `serve` flushes them before it exits.
    let serving = wh
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "pullguard serving");
    assert_eq!(serving.as_ref().map(|l| l["scheduler"].clone()), Some(json!(scheduler)), "{}", wh.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_node_inventory_decides_platform_verdicts() {
    let env = Env::start(Options::default()).await;
    let api = cluster().await;
    let wh = Webhook::start(&env.config(""), &api, &[]).await;
    let pod = |image: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "production"},
               "spec": {"containers": [{"name": "app", "image": image}]}})
    };
    let verdict = |r: &Value| (r["allowed"].as_bool().unwrap(), reasons(r)["app"].clone(), r["warnings"].is_array());
    // amd64 nodes only: an arm64-only image fails everywhere.
    let r = wh.review(&create_review("a", &pod("team/arm-only:1.0"))).await;
    assert_eq!(verdict(&r), (false, "PlatformMismatch".into(), false), "{r}");

    // An arm64 node joins: now it fails only on some nodes, a warning.
    api.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-arm",
        "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64"}}}));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut r = wh.review(&create_review("b", &pod("team/arm-only:1.0"))).await;
    while r["allowed"] == false && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = wh.review(&create_review("b", &pod("team/arm-only:1.0"))).await;
    }
    assert_eq!(verdict(&r), (true, "PlatformMismatch".into(), true), "{r}");
    assert!(r["warnings"][0].as_str().unwrap().contains("linux/amd64"), "{r}");

    // The amd64 node leaves: the arm64-only image now fits every node.
    api.delete("Node", "", "node-1");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut r = wh.review(&create_review("c", &pod("team/arm-only:1.0"))).await;
    while reasons(&r)["app"] != "Ok" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = wh.review(&create_review("c", &pod("team/arm-only:1.0"))).await;
    }
    assert_eq!(verdict(&r), (true, "Ok".into(), false), "{r}");
}

/// A tainted Windows pool and a dedicated arm64 pool beside the amd64 node: a pod that tolerates neither can
/// land only on amd64, so single-arch images are judged there and nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tainted_pools_and_pinned_pods_are_judged_per_pod() {
    let env = Env::start(Options::default()).await;
    let api = cluster().await;
    api.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "win-1",
        "labels": {"kubernetes.io/os": "windows", "kubernetes.io/arch": "amd64"}},
        "spec": {"taints": [{"key": "os", "value": "windows", "effect": "NoSchedule"}]}}));
    api.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "arm-1",
        "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64", "pool": "arm"}},
        "spec": {"taints": [{"key": "dedicated", "value": "arm", "effect": "NoSchedule"},
                            {"key": "soft", "effect": "PreferNoSchedule"}]}}));
    let wh = Webhook::start(&env.config(""), &api, &[]).await;
    let pod = |image: &str, extra: Value| {
        let mut spec = json!({"containers": [{"name": "app", "image": image}]});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "production"}, "spec": spec})
    };
    let arm_pool = json!({"nodeSelector": {"kubernetes.io/arch": "arm64"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "arm", "effect": "NoSchedule"}]});
    let windows = json!({"tolerations": [{"key": "os", "operator": "Exists"}]});
    let pinned_untolerated = json!({"nodeSelector": {"kubernetes.io/arch": "arm64"}});
    // (case, image, spec fields, allowed, reason, warned, the message or warning mentions)
    let cases = [
        ("plain pod, multi-arch image", "nginx:1.25.4", json!({}), true, "Ok", false, ""),
        (
            "plain pod, amd64-only image: the arm64 pool is tainted",
            "team/amd64-only:1.0",
            json!({}),
            true,
            "Ok",
            false,
            "",
        ),
        (
            "tolerates Windows: nginx has no windows entry",
            "nginx:1.25.4",
            windows,
            true,
            "PlatformMismatch",
            true,
            "windows/amd64",
        ),
        ("on the arm64 pool, arm64 image", "team/arm-only:1.0", arm_pool.clone(), true, "Ok", false, ""),
        (
            "on the arm64 pool, amd64-only image",
            "team/amd64-only:1.0",
            arm_pool,
            false,
            "PlatformMismatch",
            false,
            "linux/arm64",
        ),
        (
            "pinned to arm64 without the toleration: no node yet",
            "nginx:1.25.4",
            pinned_untolerated.clone(),
            true,
            "NoNodeForPlatform",
            true,
            "no node the pod can land on exists yet",
        ),
        (
            "pinned to arm64 without the toleration, amd64-only",
            "team/amd64-only:1.0",
            pinned_untolerated,
            false,
            "PlatformMismatch",
            false,
            "the pod asks for linux/arm64",
        ),
    ];
    for (i, (name, image, extra, allowed, reason, warned, mention)) in cases.into_iter().enumerate() {
        let r = wh.review(&create_review(&format!("t{i}"), &pod(image, extra))).await;
        assert_eq!(r["allowed"], allowed, "{name}: {r}");
        assert_eq!(reasons(&r)["app"], reason, "{name}: {r}");
        assert_eq!(r["warnings"].is_array(), warned, "{name}: {r}");
        assert!(r.to_string().contains(mention), "{name}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_after_the_cluster_state_synced() {
    let env = Env::start(Options::default()).await;
    let api = cluster().await;
    api.hold_lists.store(true, std::sync::atomic::Ordering::SeqCst);
    let wh = Webhook::spawn(&env.config(""), &api, &[], "info");
    let deadline = Instant::now() + Duration::from_secs(10);
    while wh.readyz().await.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wh.readyz().await, Some(503), "not ready while the lists are pending");
    api.hold_lists.store(false, std::sync::atomic::Ordering::SeqCst);
    wh.wait_ready().await;
    assert_eq!(wh.readyz().await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_webhook_logs_at_trace_level() {
    let env = Env::start(Options { private: true, token: true }).await;
    let api = cluster().await;
    let wh = Webhook::spawn(&env.config(""), &api, &[], "trace");
    wh.wait_ready().await;
    let file = support::fixtures().join("manifests/causes.yaml");
    let (docs, _) = pullguard::input::load(&[file]);
    for (i, d) in docs.iter().enumerate() {
        if pullguard::workload::pod_spec_path(d.value["kind"].as_str().unwrap()).is_some() {
            wh.review(&create_review(&format!("t{i}"), &d.value)).await;
        }
    }
    let logs = wh.logs();
    assert!(logs.len() > 10_000, "trace logging is on ({} bytes)", logs.len());
    let b64 = base64::engine::general_purpose::STANDARD;
    for secret in ["alice-password", "bob-password", "expired-password", "not-bobs-password"] {
        assert!(!logs.contains(secret), "{secret} leaked");
        for user in ["alice", "bob"] {
            let encoded = base64::Engine::encode(&b64, format!("{user}:{secret}"));
            assert!(!logs.contains(&encoded), "base64 of {user}:{secret} leaked");
        }
    }
    // The Secrets' payloads as the API stand-in served them.
    for d in docs.iter().filter(|d| d.value["kind"] == "Secret") {
        if let Some(payload) = d.value["data"][".dockerconfigjson"].as_str() {
            assert!(!logs.contains(payload), "a .dockerconfigjson payload leaked");
        }
    }
    assert!(!logs.contains("eyJ"), "a JWT leaked");
}
