//! Mirrors as the nodes' containerd resolves them (a hosts.toml tree), against real registries: a mirror
//! with its own storage (so it has images upstream lacks, and lacks images upstream has), the seeded
//! docker.io upstream, and a TLS mirror behind the private CA.

use std::path::Path;

use pullguard::policy::{Reason, Verdict};
use pullguard::workload::Workload;
use serde_json::json;

use crate::support::registry::{Auth, Registry};
use crate::support::seed::Pusher;
use crate::support::{self, Env, Options, result, run_engine};

/// Writes `<dir>/certs.d/<host>/hosts.toml` files and returns the config line that points pullguard there.
fn hosts_tree(dir: &Path, files: &[(&str, String)]) -> String {
    let root = dir.join(format!("certs.d-{}", files.len() + files.iter().map(|f| f.1.len()).sum::<usize>()));
    for (host, text) in files {
        std::fs::create_dir_all(root.join(host)).unwrap();
        std::fs::write(root.join(host).join("hosts.toml"), text).unwrap();
    }
    format!("mirrors:\n  containerd: {}\n", root.display())
}

fn pod(images: &[(&str, &str)]) -> Workload {
    let containers: Vec<_> = images.iter().map(|(n, i)| json!({"name": n, "image": i})).collect();
    let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                     "spec": {"containers": containers}});
    Workload::from_object(&obj, "default").unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_mirrors_are_tried_in_order_and_report_who_served() {
    let env = Env::start(Options::default()).await;
    let storage = env.dir.path().join("mirror-storage");
    std::fs::create_dir_all(&storage).unwrap();
    let mirror = Registry::start("mirror", env.dir.path(), &storage, Auth::Anonymous, false).await;
    let push = Pusher::new(&mirror.url());
    let own = push.image("library/nginx", "linux", "amd64", None, true).await;
    push.tag("library/nginx", "1.25.4", &own).await;
    push.tag("library/nginx", "mirror-only", &own).await;

    let cfg = hosts_tree(
        env.dir.path(),
        &[("docker.io", format!("[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n", mirror.url()))],
    );
    let engine = env.engine(&cfg);
    let snap = pullguard::cluster::Snapshot::default();
    let w = pod(&[
        ("both", "nginx:1.25.4"),
        ("upstream-only", "nginx:1.25.3"),
        ("mirror-only", "nginx:mirror-only"),
        ("neither", "nginx:1.25.5"),
    ]);
    let results = run_engine(&engine, &snap, std::slice::from_ref(&w)).await;
    let mirror_host = format!("mirror {}/", mirror.url());

    let both = result(&results, "p", "both");
    assert_eq!(
        (both.verdict, both.served_by.as_deref()),
        (Verdict::Allow, Some(mirror_host.as_str())),
        "{}",
        both.message
    );
    assert_eq!(both.digest.as_deref(), Some(own.digest.as_str()), "the mirror's content, as the node would pull it");

    let upstream = result(&results, "p", "upstream-only");
    assert_eq!((upstream.verdict, upstream.served_by.as_deref()), (Verdict::Allow, Some("upstream docker.io")));
    assert!(
        upstream.message.contains("after: mirror") && upstream.message.contains("not found"),
        "{}",
        upstream.message
    );

    let mirror_only = result(&results, "p", "mirror-only");
    assert_eq!((mirror_only.verdict, mirror_only.served_by.as_deref()), (Verdict::Allow, Some(mirror_host.as_str())));

    let neither = result(&results, "p", "neither");
    assert_eq!((neither.verdict, neither.reason), (Verdict::Deny, Reason::TagNotFound), "{}", neither.message);
    assert!(neither.message.contains("Also tried") && neither.message.contains(&mirror_host), "{}", neither.message);
    assert!(neither.message.contains("1.25.4"), "upstream's tags suggested: {}", neither.message);

    // A pull-only mirror cannot resolve a tag, but serves a digest.
    let cfg = hosts_tree(
        env.dir.path(),
        &[("docker.io", format!("[host.\"{}\"]\n  capabilities = [\"pull\"]\n", mirror.url()))],
    );
    let engine = env.engine(&cfg);
    let by_digest = format!("nginx@{}", own.digest);
    let w = pod(&[("tag", "nginx:mirror-only"), ("digest", by_digest.as_str())]);
    let results = run_engine(&engine, &snap, &[w]).await;
    let tag = result(&results, "p", "tag");
    assert_eq!((tag.verdict, tag.reason), (Verdict::Deny, Reason::TagNotFound), "{}", tag.message);
    let digest = result(&results, "p", "digest");
    assert_eq!(
        (digest.verdict, digest.served_by.as_deref()),
        (Verdict::Allow, Some(mirror_host.as_str())),
        "{}",
        digest.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_mirror_behind_a_private_ca_needs_its_ca() {
    let env = Env::start(Options::default()).await;
    // Serves the seeded storage over TLS with a certificate of the test CA.
    let storage = env.dir.path().join("storage");
    let tls_mirror = Registry::start("tls-mirror", env.dir.path(), &storage, Auth::Anonymous, true).await;
    let upstream_down = format!("registries:\n  quay.io:\n    endpoint: https://127.0.0.1:{}\n", support::CLOSED_PORT);
    let ca = support::fixtures().join("pki/ca.pem");
    let snap = pullguard::cluster::Snapshot::default();
    let w = pod(&[("app", "quay.io/library/nginx:1.25.4")]);

    let with_ca = format!("[host.\"{}\"]\n  ca = \"{}\"\n", tls_mirror.url(), ca.display());
    let engine = crate::support::engine_from(&write_config(
        &env,
        &upstream_down,
        &hosts_tree(env.dir.path(), &[("_default", with_ca)]),
    ));
    let results = run_engine(&engine, &snap, std::slice::from_ref(&w)).await;
    let app = result(&results, "p", "app");
    assert_eq!((app.verdict, app.reason), (Verdict::Allow, Reason::Ok), "{}", app.message);
    assert_eq!(app.served_by, Some(format!("mirror {}/", tls_mirror.url())));

    // Without the CA the mirror's certificate is not trusted: the walk goes on to quay.io, which is down.
    let without = format!("[host.\"{}\"]\n", tls_mirror.url());
    let engine = crate::support::engine_from(&write_config(
        &env,
        &upstream_down,
        &hosts_tree(env.dir.path(), &[("_default", without)]),
    ));
    let results = run_engine(&engine, &snap, &[w]).await;
    let app = result(&results, "p", "app");
    assert_eq!((app.verdict, app.reason), (Verdict::Warn, Reason::RegistryUnreachable), "{}", app.message);
    assert!(
        app.message.contains("Also tried") && app.message.contains("tls-mirror")
            || app.message.contains(&tls_mirror.url()),
        "{}",
        app.message
    );
}

/// A config file with `registries` written by the caller (the standard routes would add docker.io only).
fn write_config(env: &Env, registries: &str, rest: &str) -> std::path::PathBuf {
    let path = env.dir.path().join(format!("mirrors-{}.yaml", registries.len() + rest.len()));
    std::fs::write(&path, format!("{registries}{rest}")).unwrap();
    path
}

/// CRI-O's registries.conf: a prefix rewritten to a mirror path, the upstream after it, digest-only
/// mirrors, and a blocked repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_conf_rewrites_prefixes_and_blocks() {
    let env = Env::start(Options::default()).await;
    let storage = env.dir.path().join("conf-mirror-storage");
    std::fs::create_dir_all(&storage).unwrap();
    // TLS with the test CA's certificate, reached with `insecure = true` (no verification), as CRI-O allows.
    let mirror = Registry::start("conf-mirror", env.dir.path(), &storage, Auth::Anonymous, true).await;
    let push = Pusher::new(&mirror.url());
    let own = push.image("hub/library/nginx", "linux", "amd64", None, true).await;
    push.tag("hub/library/nginx", "mirror-only", &own).await;
    let location = mirror.url().trim_start_matches("https://").to_string();
    let conf = env.dir.path().join("registries.conf");
    let write = |digest_only: bool| {
        std::fs::write(
            &conf,
            format!(
                "[[registry]]\nprefix = \"docker.io/library\"\nmirror-by-digest-only = {digest_only}\n\
                 [[registry.mirror]]\nlocation = \"{location}/hub/library\"\ninsecure = true\n\
                 [[registry]]\nprefix = \"docker.io/team\"\nblocked = true\n"
            ),
        )
        .unwrap();
    };
    write(false);
    let cfg = format!("mirrors:\n  registriesConf: {}\n", conf.display());
    let engine = env.engine(&cfg);
    let snap = pullguard::cluster::Snapshot::default();
    let by_digest = format!("nginx@{}", own.digest);
    let w = pod(&[
        ("mirror", "nginx:mirror-only"),
        ("upstream", "nginx:1.25.3"),
        ("blocked", "team/myapp:v2.3.0"),
        ("digest", by_digest.as_str()),
    ]);
    let results = run_engine(&engine, &snap, std::slice::from_ref(&w)).await;
    let shown = format!("mirror https://{location}/");
    let m = result(&results, "p", "mirror");
    assert_eq!((m.verdict, m.served_by.as_deref()), (Verdict::Allow, Some(shown.as_str())), "{}", m.message);
    let u = result(&results, "p", "upstream");
    assert_eq!((u.verdict, u.served_by.as_deref()), (Verdict::Allow, Some("upstream docker.io")), "{}", u.message);
    let b = result(&results, "p", "blocked");
    assert_eq!((b.verdict, b.reason), (Verdict::Deny, Reason::RegistryBlockedOnNodes), "{}", b.message);
    assert!(b.message.contains("docker.io/team"), "{}", b.message);
    assert_eq!(result(&results, "p", "digest").served_by.as_deref(), Some(shown.as_str()));

    // mirror-by-digest-only: the tag goes upstream, which lacks it; the digest still comes from the mirror.
    write(true);
    let engine = env.engine(&cfg);
    let results = run_engine(&engine, &snap, &[w]).await;
    let m = result(&results, "p", "mirror");
    assert_eq!((m.verdict, m.reason), (Verdict::Deny, Reason::TagNotFound), "{}", m.message);
    let d = result(&results, "p", "digest");
    assert_eq!((d.verdict, d.served_by.as_deref()), (Verdict::Allow, Some(shown.as_str())), "{}", d.message);
}

/// A mirror gets only the credentials keyed to the mirror's host, as on a node: a pull secret for docker.io
/// is never sent to the mirror, even one that would accept it. The same verdicts come from `serve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_gets_only_credentials_keyed_to_it_and_serve_agrees() {
    use crate::support::webhook::{Webhook, create_review, reasons};
    let env = Env::start(Options { private: true, token: false }).await;
    // The htpasswd registry over TLS (it serves the seeded storage) is docker.io's mirror.
    let mirror = env.private.as_ref().unwrap();
    let ca = support::fixtures().join("pki/ca.pem");
    let hosts =
        format!("[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{}\"\n", mirror.url(), ca.display());
    let cfg_text = hosts_tree(env.dir.path(), &[("docker.io", hosts)]);
    let mirror_host = mirror.url().trim_start_matches("https://").to_string();
    let secret = |name: &str, key: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
               "metadata": {"name": name, "namespace": "default"},
               "data": {".dockerconfigjson": support::dockerconfigjson_b64(key, "alice", "alice-password")}})
    };
    let pod = |name: &str, secret: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
               "spec": {"imagePullSecrets": [{"name": secret}], "containers": [{"name": "app", "image": "nginx:1.25.4"}]}})
    };
    let mut snap = pullguard::cluster::Snapshot::default();
    snap.add_object(&secret("for-hub", "https://index.docker.io/v1/"), "default").unwrap();
    snap.add_object(&secret("for-mirror", &mirror_host), "default").unwrap();
    let engine = env.engine(&cfg_text);
    let hub = Workload::from_object(&pod("hub", "for-hub"), "default").unwrap().unwrap();
    let keyed = Workload::from_object(&pod("keyed", "for-mirror"), "default").unwrap().unwrap();
    let results = run_engine(&engine, &snap, &[hub, keyed]).await;
    let hub = result(&results, "hub", "app");
    assert_eq!(
        hub.served_by.as_deref(),
        Some("upstream docker.io"),
        "docker.io's secret never goes to the mirror: {}",
        hub.message
    );
    assert!(hub.message.contains(&format!("mirror {}/", mirror.url())), "{}", hub.message);
    let keyed = result(&results, "keyed", "app");
    let shown = format!("mirror {}/", mirror.url());
    assert_eq!(keyed.served_by.as_deref(), Some(shown.as_str()), "{}", keyed.message);
    let used = &keyed.credentials[keyed.credential_used.unwrap()];
    assert_eq!(used.secret.as_deref(), Some("default/for-mirror"));
    // The mirror requires a login (htpasswd): serving the image proves the keyed secret was sent to it, and the
    // docker.io pod falling through proves the docker.io secret was not.

    // serve, with the same config and the Secrets in the cluster: the same verdicts.
    let api = crate::webhook_cluster().await;
    api.apply(secret("for-hub", "https://index.docker.io/v1/"));
    api.apply(secret("for-mirror", &mirror_host));
    let cfg = env.config(&cfg_text);
    let wh = Webhook::start(&cfg, &api, &[]).await;
    for name in ["hub", "keyed"] {
        let secret = if name == "hub" { "for-hub" } else { "for-mirror" };
        let r = wh.review(&create_review(name, &pod(name, secret))).await;
        assert_eq!((reasons(&r)["app"].as_str(), &r["allowed"]), ("Ok", &json!(true)), "{name}: {r}");
    }
}

/// What a containerd mirror is sent: `?ns=` naming the upstream, the `[host.header]` headers, the path under
/// `override_path` — and no credential of the image's own registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_gets_its_namespace_parameter_headers_and_path() {
    use crate::support::http::{Action, Response, Server};
    let env = Env::start(Options::default()).await;
    let lacking = Server::start("127.0.0.1", |_| Action::Respond(Response::new(404))).await;
    let hosts = format!(
        "[host.\"http://{}/proxy/v2\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n  \
         [host.\"http://{}/proxy/v2\".header]\n    x-mirror-tenant = \"team-a\"\n",
        lacking.addr, lacking.addr
    );
    let engine = env.engine(&hosts_tree(env.dir.path(), &[("docker.io", hosts)]));
    let mut snap = pullguard::cluster::Snapshot::default();
    snap.add_object(
        &json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": "hub", "namespace": "default"},
                "data": {".dockerconfigjson": support::dockerconfigjson_b64("https://index.docker.io/v1/", "alice", "alice-password")}}),
        "default",
    )
    .unwrap();
    let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
        "spec": {"imagePullSecrets": [{"name": "hub"}], "containers": [{"name": "app", "image": "nginx:1.25.4"}]}});
    let w = Workload::from_object(&obj, "default").unwrap().unwrap();
    let results = run_engine(&engine, &snap, &[w]).await;
    let app = result(&results, "p", "app");
    assert_eq!(app.served_by.as_deref(), Some("upstream docker.io"), "{}", app.message);
    let seen = lacking.requests.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for r in &seen {
        // The manifest, then (for suggestions) the tag list, under the mirror's own API root.
        assert!(r.path().starts_with("/proxy/v2/library/nginx/"), "override_path: {}", r.target);
        assert_eq!(r.query("ns").as_deref(), Some("docker.io"), "{}", r.target);
        assert_eq!(r.header("x-mirror-tenant"), Some("team-a"));
        assert_eq!(r.header("authorization"), None, "docker.io's credentials never go to the mirror");
    }
}
