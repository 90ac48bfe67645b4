//! Kubelet credential provider plugins and node-authenticated registries: a real plugin program
//! (`tests/fixtures/providers/fake-ecr`, the kubelet's exec protocol) answering with credentials for the real
//! token-auth registry, which the configuration routes `*.dkr.ecr.*.amazonaws.com` to.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pullguard::policy::{Reason, Verdict};
use serde_json::Value;

use crate::support::{self, Env, Options, load, pullguard, result, run_engine};

const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

fn manifests() -> PathBuf {
    support::fixtures().join("manifests/providers.yaml")
}

/// Writes the kubelet's CredentialProviderConfig for fake-ecr with these `env` settings (and `extra` provider
/// fields), and returns the pullguard config lines that use it.
fn providers(env: &Env, settings: &[(&str, &str)], extra: &str) -> String {
    let env_lines: String = settings.iter().map(|(k, v)| format!("    - {{name: {k}, value: \"{v}\"}}\n")).collect();
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = env.dir.path().join(format!("credential-providers-{n}.yaml"));
    std::fs::write(
        &file,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n\
             - name: fake-ecr\n  matchImages: [\"*.dkr.ecr.*.amazonaws.com\"]\n  defaultCacheDuration: 12h\n  \
             apiVersion: credentialprovider.kubelet.k8s.io/v1\n  env:\n{env_lines}{extra}"
        ),
    )
    .unwrap();
    format!(
        "credentialProviders:\n  config: {}\n  binDir: {}\n",
        file.display(),
        support::fixtures().join("providers").display()
    )
}

/// The config lines that route the ECR name to the token registry.
fn ecr_route(env: &Env) -> String {
    format!("  {ECR}:\n    endpoint: {}\n", env.ghcr.as_ref().unwrap().url())
}

fn requests(log: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_signs_in_as_the_kubelets_plugin_would() {
    let env = Env::start(Options { private: false, token: true }).await;
    let log = env.dir.path().join("requests.log");
    let (snap, workloads) = load(&[manifests()], "default");
    let ecr_app: Vec<_> = workloads.iter().filter(|w| w.object.name == "ecr-app").cloned().collect();

    // Reviews of one container each, as the kubelet pulls one image at a time.
    let only = |name: &str| {
        let mut w = ecr_app[0].clone();
        w.spec.containers.retain(|c| c.name == name);
        vec![w]
    };

    // cacheKeyType Registry: one exec answers every repository of the registry.
    let cfg = ecr_route(&env) + &providers(&env, &[("FAKE_LOG", log.to_str().unwrap())], "");
    let engine = env.engine(&cfg);
    let results = run_engine(&engine, &snap, &only("private")).await;
    let private = result(&results, "ecr-app", "private");
    assert_eq!((private.verdict, private.reason), (Verdict::Allow, Reason::Ok), "{}", private.message);
    let used = &private.credentials[private.credential_used.unwrap()];
    assert_eq!((used.secret.as_deref(), used.provider.as_deref()), (None, Some("fake-ecr")));
    assert_eq!(used.key, "*.dkr.ecr.*.amazonaws.com");
    assert!(private.message.contains("credential provider fake-ecr"), "{}", private.message);
    let results = run_engine(&engine, &snap, &only("team")).await;
    assert_eq!(result(&results, "ecr-app", "team").reason, Reason::Ok);
    let sent = requests(&log);
    assert_eq!(sent.len(), 1, "one exec for the registry: {sent:?}");
    assert_eq!(sent[0]["kind"], "CredentialProviderRequest");
    assert_eq!(sent[0]["apiVersion"], "credentialprovider.kubelet.k8s.io/v1");
    assert_eq!(sent[0]["image"], format!("{ECR}/private/app"), "the repository, as the kubelet passes it");

    // cacheKeyType Image: each repository is its own exec; the next review is answered from the cache.
    let log = env.dir.path().join("image.log");
    let cfg =
        ecr_route(&env) + &providers(&env, &[("FAKE_LOG", log.to_str().unwrap()), ("FAKE_KEY_TYPE", "Image")], "");
    let engine = env.engine(&cfg);
    for name in ["private", "team", "private"] {
        run_engine(&engine, &snap, &only(name)).await;
    }
    assert_eq!(requests(&log).len(), 2, "one exec per image, then the cache");

    // cacheDuration 0: never cached; each review runs the plugin again.
    let log = env.dir.path().join("zero.log");
    let cfg = ecr_route(&env)
        + &providers(
            &env,
            &[("FAKE_LOG", log.to_str().unwrap()), ("FAKE_KEY_TYPE", "Global"), ("FAKE_DURATION", "0s")],
            "",
        );
    let engine = env.engine(&cfg);
    run_engine(&engine, &snap, &only("private")).await;
    run_engine(&engine, &snap, &only("private")).await;
    assert_eq!(requests(&log).len(), 2, "nothing cached, even under the Global key");

    // The plugin's credentials are refused: the node's credentials are known and wrong, a deny.
    let cfg = ecr_route(&env) + &providers(&env, &[("FAKE_PASSWORD", "stale")], "");
    let results = run_engine(&env.engine(&cfg), &snap, &ecr_app).await;
    let private = result(&results, "ecr-app", "private");
    assert_eq!((private.verdict, private.reason), (Verdict::Deny, Reason::CredentialsRejected), "{}", private.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plugin_is_a_warning_never_a_deny_or_a_hang() {
    let env = Env::start(Options { private: false, token: true }).await;
    let (snap, workloads) = load(&[manifests()], "default");
    let ecr_app: Vec<_> = workloads.iter().filter(|w| w.object.name == "ecr-app").cloned().collect();
    // (mode, the message mentions)
    for (mode, mention) in [
        ("fail", "exited with exit status: 1"),
        ("garbage", "not a CredentialProviderResponse"),
        ("hang", "did not answer within"),
    ] {
        let cfg = ecr_route(&env) + "lookupTimeout: 1s\n" + &providers(&env, &[("FAKE_MODE", mode)], "");
        let started = Instant::now();
        let results = run_engine(&env.engine(&cfg), &snap, &ecr_app).await;
        assert!(started.elapsed() < Duration::from_secs(20), "{mode}: bounded by the lookup timeout");
        let private = result(&results, "ecr-app", "private");
        assert_eq!(
            (private.verdict, private.reason),
            (Verdict::Warn, Reason::CredentialProviderFailed),
            "{mode}: {}",
            private.message
        );
        assert!(private.message.contains(mention), "{mode}: {}", private.message);
        assert!(!private.message.contains("alice-password"), "{mode}: the plugin's output never reaches a message");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_authenticated_registries_warn_and_token_mode_reads_the_service_account() {
    let env = Env::start(Options { private: false, token: true }).await;
    let (snap, workloads) = load(&[manifests()], "default");

    // No provider configured; the nodes sign in to ECR with their instance role.
    let cfg = ecr_route(&env) + "nodeAuthenticated: [\"*.dkr.ecr.*.amazonaws.com\"]\n";
    let results = run_engine(&env.engine(&cfg), &snap, &workloads).await;
    let ecr = result(&results, "ecr-app", "private");
    assert_eq!((ecr.verdict, ecr.reason), (Verdict::Warn, Reason::NodeCredentialsUnverified), "{}", ecr.message);
    // A public repository still resolves anonymously, and ghcr.io is not node-authenticated.
    let ghcr = result(&results, "ghcr-private", "private");
    assert_eq!((ghcr.verdict, ghcr.reason), (Verdict::Deny, Reason::CredentialsMissing), "{}", ghcr.message);

    // Service-account-token mode: a ServiceAccount without the required annotation makes the kubelet skip
    // the plugin; one with it would get a token pullguard does not mint. The plugin is never run.
    let log = env.dir.path().join("token.log");
    let token = "  tokenAttributes:\n    serviceAccountTokenAudience: sts.amazonaws.com\n    requireServiceAccount: true\n    \
                 requiredServiceAccountAnnotationKeys: [eks.amazonaws.com/role-arn]\n";
    let cfg = ecr_route(&env) + &providers(&env, &[("FAKE_LOG", log.to_str().unwrap())], token);
    let results = run_engine(&env.engine(&cfg), &snap, &workloads).await;
    let plain = result(&results, "token-plain", "private");
    assert_eq!(
        (plain.verdict, plain.reason),
        (Verdict::Deny, Reason::ServiceAccountAnnotationMissing),
        "{}",
        plain.message
    );
    assert!(
        plain.message.contains("eks.amazonaws.com/role-arn") && plain.message.contains("production/plain"),
        "{}",
        plain.message
    );
    let annotated = result(&results, "token-annotated", "private");
    assert_eq!(
        (annotated.verdict, annotated.reason),
        (Verdict::Warn, Reason::NodeCredentialsUnverified),
        "{}",
        annotated.message
    );
    assert!(annotated.message.contains("without the pod's own identity"), "{}", annotated.message);
    assert!(requests(&log).is_empty(), "no token, no exec");
}

/// `check` takes the kubelet's two flags as they are written on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_takes_the_kubelets_provider_flags() {
    let env = Env::start(Options { private: false, token: true }).await;
    let provider_cfg = providers(&env, &[], "");
    let file = provider_cfg.lines().nth(1).unwrap().trim().trim_start_matches("config: ").to_string();
    let cfg = env.config(&ecr_route(&env));
    let bin = support::fixtures().join("providers");
    let run = pullguard(
        &[
            "check",
            "--config",
            cfg.to_str().unwrap(),
            "--output",
            "json",
            "--credential-provider-config",
            &file,
            "--credential-provider-bin-dir",
            bin.to_str().unwrap(),
            manifests().to_str().unwrap(),
        ],
        None,
    )
    .await;
    let json = run.json();
    let ecr = json["results"].as_array().unwrap().iter().find(|r| r["object"]["name"] == "ecr-app").unwrap();
    assert_eq!(ecr["reason"], "Ok", "{ecr}");
    assert_eq!(ecr["credentials"][0]["provider"], "fake-ecr", "{ecr}");
    assert_eq!(ecr["credentials"][0]["secret"], Value::Null, "{ecr}");
    // A provider config naming a plugin that is not there is a usage error naming it.
    let empty = env.dir.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let run = pullguard(
        &[
            "check",
            "--config",
            cfg.to_str().unwrap(),
            "--credential-provider-config",
            &file,
            "--credential-provider-bin-dir",
            empty.to_str().unwrap(),
            manifests().to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("fake-ecr") && run.stderr.contains("no plugin binary"), "{}", run.stderr);
}

/// `serve` runs the same plugins for the same verdicts as `check`, and at trace level logs neither what a
/// plugin answered nor what it printed when it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_agrees_and_never_logs_a_plugins_answer() {
    use crate::support::webhook::{Webhook, create_review, reasons};
    let env = Env::start(Options { private: false, token: true }).await;
    let api = crate::webhook_cluster().await;
    let (docs, _) = pullguard::input::load(&[manifests()]);
    for d in docs.iter().filter(|d| d.value["kind"] == "ServiceAccount") {
        api.apply(d.value.clone());
    }
    let ecr_app = docs.iter().find(|d| d.value["metadata"]["name"] == "ecr-app").unwrap().value.clone();
    for (mode, want) in [("ok", "Ok"), ("fail", "CredentialProviderFailed"), ("garbage", "CredentialProviderFailed")] {
        let cfg = env.config(&(ecr_route(&env) + &providers(&env, &[("FAKE_MODE", mode)], "")));
        let wh = Webhook::spawn(&cfg, &api, &[], "trace");
        wh.wait_ready().await;
        let r = wh.review(&create_review(mode, &ecr_app)).await;
        assert_eq!(reasons(&r)["private"], want, "{mode}: {r}");
        assert_eq!(r["allowed"], true, "{mode}: never a deny: {r}");
        // The same verdict from check, over the same files.
        let (snap, workloads) = load(&[manifests()], "default");
        let engine = crate::support::engine_from(&cfg);
        let ecr: Vec<_> = workloads.into_iter().filter(|w| w.object.name == "ecr-app").collect();
        let results = run_engine(&engine, &snap, &ecr).await;
        assert_eq!(result(&results, "ecr-app", "private").reason.as_str(), want, "{mode}: check agrees");
        let logs = wh.logs();
        assert!(logs.len() > 1_000, "trace logging is on");
        assert!(!logs.contains("alice-password"), "{mode}: a plugin's answer or output leaked");
    }
}

/// Service-account-token mode with the opt-in: a TokenRequest for the pod's ServiceAccount, for the
/// provider's audience only and the shortest lifetime, handed to the plugin with the annotations it names;
/// the token never reaches a log. Without the opt-in nothing is minted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_mints_tokens_only_when_opted_in_and_only_for_the_providers_audience() {
    use crate::support::webhook::{Webhook, create_review, reasons};
    let env = Env::start(Options { private: false, token: true }).await;
    let api = crate::webhook_cluster().await;
    let (docs, _) = pullguard::input::load(&[manifests()]);
    for d in docs.iter().filter(|d| d.value["kind"] == "ServiceAccount") {
        api.apply(d.value.clone());
    }
    let pod = |name: &str| docs.iter().find(|d| d.value["metadata"]["name"] == name).unwrap().value.clone();
    let log = env.dir.path().join("minted.log");
    let token_mode = "  tokenAttributes:\n    serviceAccountTokenAudience: sts.amazonaws.com\n    requireServiceAccount: true\n    \
                      requiredServiceAccountAnnotationKeys: [eks.amazonaws.com/role-arn]\n";
    let providers = providers(&env, &[("FAKE_LOG", log.to_str().unwrap())], token_mode);

    // Not opted in: no TokenRequest, no exec, a warning.
    let wh = Webhook::start(&env.config(&(ecr_route(&env) + &providers)), &api, &[]).await;
    let r = wh.review(&create_review("a", &pod("token-annotated"))).await;
    assert_eq!(reasons(&r)["private"], "NodeCredentialsUnverified", "{r}");
    assert!(api.token_requests.lock().unwrap().is_empty());
    drop(wh);

    let opted_in = providers + "  mintServiceAccountTokens: true\n";
    let wh = Webhook::spawn(&env.config(&(ecr_route(&env) + &opted_in)), &api, &[], "trace");
    wh.wait_ready().await;
    let r = wh.review(&create_review("b", &pod("token-annotated"))).await;
    assert_eq!((reasons(&r)["private"].as_str(), &r["allowed"]), ("Ok", &serde_json::json!(true)), "{r}");
    let minted = api.token_requests.lock().unwrap().clone();
    assert_eq!(minted.len(), 1, "{minted:?}");
    assert_eq!((minted[0]["namespace"].as_str(), minted[0]["name"].as_str()), (Some("production"), Some("annotated")));
    assert_eq!(
        minted[0]["spec"]["audiences"],
        serde_json::json!(["sts.amazonaws.com"]),
        "the provider's audience only"
    );
    assert_eq!(minted[0]["spec"]["expirationSeconds"], 600, "the shortest lifetime the API server grants");
    let sent = requests(&log);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["serviceAccountToken"], "minted-for-production-annotated");
    assert_eq!(
        sent[0]["serviceAccountAnnotations"],
        serde_json::json!({"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/app"})
    );
    // A ServiceAccount without the required annotation: the kubelet would not run the plugin; nothing is minted.
    let r = wh.review(&create_review("c", &pod("token-plain"))).await;
    assert_eq!(reasons(&r)["private"], "ServiceAccountAnnotationMissing", "{r}");
    assert_eq!(api.token_requests.lock().unwrap().len(), 1);
    assert!(!wh.logs().contains("minted-for-"), "a minted token reached the logs");
}
