//! Every common ImagePullBackOff cause, produced by a real registry, through the engine.

use pullguard::policy::{Reason, Verdict};
use pullguard::workload::ContainerType;

use crate::support::{self, Env, Options, load, result, run_engine};

fn causes() -> std::path::PathBuf {
    support::fixtures().join("manifests/causes.yaml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cause_gets_its_reason() {
    let env = Env::start(Options { private: true, token: true }).await;
    let engine = env.engine("");
    let (snap, workloads) = load(&[causes()], "default");
    let results = run_engine(&engine, &snap, &workloads).await;

    use Reason::*;
    use Verdict::*;
    let table: &[(&str, &str, Verdict, Reason)] = &[
        ("api", "migrate", Allow, Ok),
        ("api", "web", Allow, Ok),
        ("api", "typo-tag", Deny, TagNotFound),
        ("api", "unpushed-version", Deny, TagNotFound),
        ("api", "typo-repo", Deny, RepositoryNotFound),
        ("api", "missing-digest", Deny, DigestNotFound),
        ("api", "invalid", Deny, InvalidReference),
        ("api", "never-pulled", Skip, PullPolicyNever),
        ("api", "arm-only", Deny, PlatformMismatch),
        ("api", "alpine-list", Allow, Ok),
        ("no-secret", "private", Deny, CredentialsMissing),
        ("expired-creds", "private", Deny, CredentialsRejected),
        ("wrong-namespace", "private", Deny, SecretInOtherNamespace),
        ("via-service-account", "private", Allow, Ok),
        ("secret-problems", "public-anyway", Warn, SecretNotFound),
        ("opaque-secret", "private", Deny, SecretInvalid),
        ("legacy-dockercfg", "private", Allow, Ok),
        ("legacy-dockercfg", "debugger", Allow, Ok),
        ("tokens", "private", Allow, Ok),
        ("tokens", "public", Allow, Ok),
        ("tokens-no-access", "private", Deny, CredentialsRejected),
        ("tokens-wrong-password", "private", Deny, CredentialsRejected),
        ("tokens-anonymous", "private", Deny, CredentialsMissing),
        ("tokens-wrong-password", "public", Deny, CredentialsRejected),
        ("unpadded-auth", "private", Allow, Ok),
        ("malformed-secret", "public", Deny, SecretInvalid),
        ("image-volumes", "web", Allow, Ok),
        ("image-volumes", "models", Deny, TagNotFound),
        ("image-volumes", "tools", Allow, Ok),
        ("image-volumes", "cached", Skip, PullPolicyNever),
    ];
    let mut failures = vec![];
    for (obj, container, verdict, reason) in table {
        let r = result(&results, obj, container);
        if (r.verdict, r.reason) != (*verdict, *reason) {
            failures.push(format!(
                "{obj}/{container}: got {} {} ({}), want {verdict} {reason}",
                r.verdict, r.reason, r.message
            ));
        }
        assert!(!r.message.is_empty());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let typo = result(&results, "api", "typo-tag");
    assert_eq!(typo.suggestions.first().map(String::as_str), Some("latest"), "{}", typo.message);
    let unpushed = result(&results, "api", "unpushed-version");
    assert_eq!(unpushed.suggestions, ["v2.3.0", "v2.3.2"]);
    assert!(unpushed.message.contains("Did you mean v2.3.0 or v2.3.2?"), "{}", unpushed.message);

    let web = result(&results, "api", "web");
    assert_eq!(web.digest.as_deref(), Some(env.seeded.nginx_index.as_str()));
    let platforms: Vec<String> = web.platforms.iter().map(ToString::to_string).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "the attestation entry is not a platform");
    assert_eq!(web.credentials.len(), 0);
    assert_eq!(web.credential_used, None);

    // The key as the secret writes it, so the user can find it there.
    let wrong = result(&results, "tokens-wrong-password", "public");
    assert_eq!(wrong.credentials[0].key, "https://ghcr.io");
    assert!(wrong.message.contains("key https://ghcr.io"), "{}", wrong.message);

    let models = result(&results, "image-volumes", "models");
    assert_eq!(models.container_type, ContainerType::ImageVolume);
    assert_eq!(models.field, "spec.volumes[1].image.reference");
    assert_eq!(result(&results, "image-volumes", "tools").credential_used, Some(0));
    assert!(!results.iter().any(|r| r.container == "scratch"), "an emptyDir pulls nothing");

    let migrate = result(&results, "api", "migrate");
    assert_eq!(migrate.container_type, ContainerType::InitContainer);
    assert_eq!(migrate.digest.as_deref(), Some(env.seeded.myapp_v230.as_str()));
    assert_eq!(migrate.credential_used, Some(0));
    assert_eq!(migrate.credentials[0].secret.as_deref(), Some("production/regcred"));
    assert_eq!(migrate.credentials[0].key, "registry.example.com");

    let arm = result(&results, "api", "arm-only");
    assert!(arm.message.contains("linux/arm64") && arm.message.contains("linux/amd64"), "{}", arm.message);

    let wrong_ns = result(&results, "wrong-namespace", "private");
    assert!(wrong_ns.message.contains("exists in default"), "{}", wrong_ns.message);

    let sa = result(&results, "via-service-account", "private");
    assert_eq!(sa.credentials[0].secret.as_deref(), Some("production/regcred"));

    let opaque = result(&results, "opaque-secret", "private");
    assert!(opaque.credentials.is_empty(), "a name with '/' is never read as another namespace's secret");
    assert!(opaque.message.contains("cannot contain '/'"), "{}", opaque.message);

    let debugger = result(&results, "legacy-dockercfg", "debugger");
    assert_eq!(debugger.container_type, ContainerType::EphemeralContainer);

    let no_access = result(&results, "tokens-no-access", "private");
    assert!(no_access.message.contains("do not grant pull access"), "{}", no_access.message);
    let wrong_pw = result(&results, "tokens-wrong-password", "private");
    assert!(wrong_pw.message.contains("refused"), "{}", wrong_pw.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selector_limits_the_platforms_checked() {
    let env = Env::start(Options::default()).await;
    let (snap, workloads) = load(&[causes()], "default");
    let on_arm: Vec<_> = workloads.into_iter().filter(|w| w.object.name == "on-arm").collect();

    let engine = env.engine("platforms: [linux/amd64, linux/arm64]\n");
    let results = run_engine(&engine, &snap, &on_arm).await;
    assert_eq!(result(&results, "on-arm", "nginx").verdict, Verdict::Allow);
    let amd = result(&results, "on-arm", "amd64-only");
    assert_eq!((amd.verdict, amd.reason), (Verdict::Deny, Reason::PlatformMismatch), "{}", amd.message);

    // Only amd64 nodes: the pod asks for arm64, which no node offers yet. The amd64-only image fails on any
    // arm64 node an autoscaler may add: a deny either way. nginx serves arm64: a warning that no node fits.
    let engine = env.engine("");
    let results = run_engine(&engine, &snap, &on_arm).await;
    let amd = result(&results, "on-arm", "amd64-only");
    assert_eq!((amd.verdict, amd.reason), (Verdict::Deny, Reason::PlatformMismatch), "{}", amd.message);
    assert!(amd.message.contains("the pod asks for linux/arm64"), "{}", amd.message);
    let nginx = result(&results, "on-arm", "nginx");
    assert_eq!((nginx.verdict, nginx.reason), (Verdict::Warn, Reason::NoNodeForPlatform), "{}", nginx.message);
    assert!(nginx.message.contains("none of the configured platforms (linux/amd64"), "{}", nginx.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_cluster_warns_for_single_arch_images() {
    let env = Env::start(Options::default()).await;
    let (snap, workloads) = load(&[causes()], "default");
    let engine = env.engine("platforms: [linux/amd64, linux/arm64]\n");
    let results = run_engine(&engine, &snap, &workloads).await;
    let arm = result(&results, "api", "arm-only");
    assert_eq!((arm.verdict, arm.reason), (Verdict::Warn, Reason::PlatformMismatch), "{}", arm.message);
    assert_eq!(result(&results, "api", "web").verdict, Verdict::Allow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_credentials_come_after_the_pods() {
    let env = Env::start(Options { private: true, token: false }).await;
    let node_cfg = env.dir.path().join("node-config.json");
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:alice-password");
    std::fs::write(&node_cfg, format!(r#"{{"auths":{{"registry.example.com":{{"auth":"{b64}"}}}}}}"#)).unwrap();
    let engine = env.engine(&format!("nodeCredentials: {}\n", node_cfg.display()));
    let (snap, workloads) = load(&[causes()], "default");
    let results = run_engine(&engine, &snap, &workloads).await;

    // No pull secret: the node's credentials pull it, as on a node with a config.json.
    let r = result(&results, "no-secret", "private");
    assert_eq!((r.verdict, r.reason), (Verdict::Allow, Reason::Ok), "{}", r.message);
    assert_eq!(r.credentials.len(), 1);
    assert_eq!(r.credentials[0].secret, None);
    assert_eq!(r.credential_used, Some(0));

    // The pod's expired secret is tried first and refused, then the node's works.
    let r = result(&results, "expired-creds", "private");
    assert_eq!(r.verdict, Verdict::Allow, "{}", r.message);
    assert_eq!(r.credentials.len(), 2);
    assert_eq!(r.credentials[0].secret.as_deref(), Some("production/expired"));
    assert_eq!(r.credential_used, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_bleed_between_namespaces() {
    // A namespace with credentials fetches a private image; right after, one without must still be refused.
    let env = Env::start(Options { private: false, token: true }).await;
    let engine = env.engine("");
    let (snap, workloads) = load(&[causes()], "default");
    let with: Vec<_> = workloads.iter().filter(|w| w.object.name == "tokens").cloned().collect();
    let without: Vec<_> = workloads.iter().filter(|w| w.object.name == "tokens-anonymous").cloned().collect();
    let r1 = run_engine(&engine, &snap, &with).await;
    assert_eq!(result(&r1, "tokens", "private").verdict, Verdict::Allow);
    let r2 = run_engine(&engine, &snap, &without).await;
    let r = result(&r2, "tokens-anonymous", "private");
    assert_eq!((r.verdict, r.reason), (Verdict::Deny, Reason::CredentialsMissing), "{}", r.message);
    // Nor may another credential without access ride on the first one's cached answer or token.
    let other: Vec<_> = workloads.iter().filter(|w| w.object.name == "tokens-no-access").cloned().collect();
    let r3 = run_engine(&engine, &snap, &other).await;
    let r = result(&r3, "tokens-no-access", "private");
    assert_eq!((r.verdict, r.reason), (Verdict::Deny, Reason::CredentialsRejected), "{}", r.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_mode_and_offline() {
    let env = Env::start(Options { private: true, token: false }).await;
    let (snap, workloads) = load(&[causes()], "default");
    let engine = env.engine("mode: warn\n");
    let results = run_engine(&engine, &snap, &workloads).await;
    assert!(results.iter().all(|r| r.verdict != Verdict::Deny), "warn mode never denies");
    assert_eq!(result(&results, "api", "typo-tag").reason, Reason::TagNotFound);

    let offline = pullguard::cli::build_engine(&pullguard::config::Config::default(), true).unwrap();
    let before = env.hub.requests().len();
    let results = run_engine(&offline, &snap, &workloads).await;
    assert_eq!(env.hub.requests().len(), before, "offline sends nothing");
    assert_eq!(result(&results, "api", "web").reason, Reason::NotChecked);
    assert_eq!(result(&results, "api", "invalid").reason, Reason::InvalidReference);
    assert_eq!(result(&results, "wrong-namespace", "private").reason, Reason::SecretInOtherNamespace);
    assert_eq!(result(&results, "api", "migrate").credentials[0].secret.as_deref(), Some("production/regcred"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_ca_must_be_configured_or_skipped() {
    let env = Env::start(Options { private: true, token: false }).await;
    let private = env.private.as_ref().unwrap();
    let (snap, workloads) = load(&[causes()], "default");
    let via_sa: Vec<_> = workloads.into_iter().filter(|w| w.object.name == "via-service-account").collect();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };

    // Without the CA, the TLS handshake fails: unreachable, with a hint about `ca:`.
    let cfg = write("no-ca.yaml", format!("registries:\n  registry.example.com:\n    endpoint: {}\n", private.url()));
    let results = run_engine(&support::engine_from(&cfg), &snap, &via_sa).await;
    let r = result(&results, "via-service-account", "private");
    assert_eq!((r.verdict, r.reason), (Verdict::Warn, Reason::RegistryUnreachable), "{}", r.message);
    assert!(r.message.contains("ca:"), "{}", r.message);

    // insecureSkipVerify accepts the unknown issuer.
    let cfg = write(
        "skip.yaml",
        format!(
            "registries:\n  registry.example.com:\n    endpoint: {}\n    insecureSkipVerify: true\n",
            private.url()
        ),
    );
    let results = run_engine(&support::engine_from(&cfg), &snap, &via_sa).await;
    assert_eq!(result(&results, "via-service-account", "private").verdict, Verdict::Allow);

    // A CA file that holds no certificate is a configuration error naming the registry.
    let bad_ca = write("bad-ca.pem", "not a certificate\n".into());
    let cfg = write(
        "bad-ca.yaml",
        format!(
            "registries:\n  registry.example.com:\n    endpoint: {}\n    ca: {}\n",
            private.url(),
            bad_ca.display()
        ),
    );
    let args = pullguard::cli::EngineArgs {
        config: Some(cfg),
        mode: None,
        platforms: vec![],
        credential_provider_config: None,
        credential_provider_bin_dir: None,
    };
    let loaded = pullguard::cli::load_config(&args).unwrap();
    let err = pullguard::cli::build_engine(&loaded, false).err().expect("a bad CA is refused");
    assert!(format!("{err:#}").contains("registry.example.com"), "{err:#}");
}
