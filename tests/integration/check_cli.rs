//! The real binary: exit codes, output formats, bad input.

use serde_json::Value;

use crate::support::{self, Env, Options, pullguard};

fn fixture(p: &str) -> String {
    support::fixtures().join(p).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_contract_and_exit_codes() {
    let env = Env::start(Options { private: true, token: true }).await;
    let cfg = env.config("");
    let cfg = cfg.to_str().unwrap();
    let run = pullguard(&["check", "--config", cfg, "--output", "json", &fixture("manifests/causes.yaml")], None).await;
    assert_eq!(run.code, 1, "a deny gives exit 1: {}", run.stderr);
    let j = run.json();
    let results = j["results"].as_array().unwrap();
    let s = &j["summary"];
    assert_eq!(s["containers"].as_u64().unwrap() as usize, results.len());
    let sum: u64 = ["allow", "warn", "deny", "skip"].iter().map(|k| s[k].as_u64().unwrap()).sum();
    assert_eq!(sum as usize, results.len());
    assert_eq!(s["objects"], 16);
    let r = results.iter().find(|r| r["container"] == "unpushed-version").unwrap();
    for key in [
        "object",
        "container",
        "containerType",
        "image",
        "reference",
        "verdict",
        "reason",
        "message",
        "problem",
        "fix",
        "notes",
        "suggestions",
        "digest",
        "platforms",
        "credentials",
        "credentialUsed",
    ] {
        assert!(r.get(key).is_some(), "result has {key}: {r}");
    }
    assert_eq!(r["object"]["kind"], "Deployment");
    assert_eq!(r["object"]["namespace"], "production");
    assert_eq!(r["object"]["apiVersion"], "apps/v1");
    assert!(r["object"]["file"].as_str().unwrap().ends_with("causes.yaml"));
    assert_eq!(r["object"]["document"], 11);
    assert_eq!(r["reference"], "registry.example.com/team/myapp:v2.3.1");
    assert_eq!(r["verdict"], "deny");
    assert_eq!(r["reason"], "TagNotFound");
    // The parts the message is made of, for tools that show the fix on its own.
    assert_eq!(r["problem"], "tag \"v2.3.1\" does not exist in registry.example.com/team/myapp.");
    assert!(r["fix"].as_str().unwrap().starts_with("use a tag that exists, or push v2.3.1"), "{r}");
    assert_eq!(r["message"], format!("{} Fix: {}", r["problem"].as_str().unwrap(), r["fix"].as_str().unwrap()));
    assert_eq!(r["suggestions"], serde_json::json!(["v2.3.0", "v2.3.2"]));
    assert_eq!(r["credentials"], serde_json::json!([{"secret": "production/regcred", "key": "registry.example.com"}]));
    assert_eq!(r["containerType"], "container");
    assert_eq!(j["errors"], serde_json::json!([]));

    // Warn mode: nothing denied, exit 0.
    let run = pullguard(
        &["check", "--config", cfg, "--mode", "warn", "--output", "json", &fixture("manifests/causes.yaml")],
        None,
    )
    .await;
    assert_eq!(run.code, 0);
    assert_eq!(run.json()["summary"]["deny"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_documents_are_reported_and_the_rest_checked() {
    let env = Env::start(Options::default()).await;
    let cfg = env.config("");
    let run = pullguard(
        &["check", "--config", cfg.to_str().unwrap(), "--output", "json", &fixture("manifests/broken.yaml")],
        None,
    )
    .await;
    assert_eq!(run.code, 2, "input errors give exit 2");
    let j = run.json();
    let errors = j["errors"].as_array().unwrap();
    let docs: Vec<u64> = errors.iter().map(|e| e["document"].as_u64().unwrap()).collect();
    assert_eq!(docs, [1], "{errors:?}");
    assert_eq!(j["skipped"][0]["document"], 2, "a list is not an object: skipped, not an error");
    assert!(errors.iter().all(|e| e["file"].as_str().unwrap().ends_with("broken.yaml")));
    let names: Vec<&str> =
        j["results"].as_array().unwrap().iter().map(|r| r["object"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["before-the-break", "after-the-break"]);
    assert_eq!(j["results"][1]["reason"], "TagNotFound", "documents after the broken one are still checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_directories_and_formats() {
    let env = Env::start(Options::default()).await;
    let cfg = env.config("");
    let cfg = cfg.to_str().unwrap();
    let pod =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: 'nginx:lates'}\n";
    let run = pullguard(&["check", "--config", cfg, "--output", "json", "-"], Some(pod)).await;
    assert_eq!(run.code, 1);
    assert_eq!(run.json()["results"][0]["object"]["namespace"], "default");

    let run = pullguard(&["check", "--config", cfg, "--namespace", "team-a", "--output", "json", "-"], Some(pod)).await;
    assert_eq!(run.json()["results"][0]["object"]["namespace"], "team-a");

    // A JSON List, as `kubectl get -o json` prints it.
    let list = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},"spec":{"containers":[{"name":"c","image":"nginx:1.25.3"}]}}]}"#;
    let run = pullguard(&["check", "--config", cfg, "--output", "json", "-"], Some(list)).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.json()["results"][0]["verdict"], "allow");

    // A directory, recursively.
    let dir = env.dir.path().join("manifests/nested");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pod.yml"), pod).unwrap();
    std::fs::write(dir.join("ignored.txt"), "not yaml").unwrap();
    let run = pullguard(
        &["check", "--config", cfg, "--output", "json", env.dir.path().join("manifests").to_str().unwrap()],
        None,
    )
    .await;
    assert_eq!(run.json()["summary"]["containers"], 1);

    let run = pullguard(&["check", "--config", cfg, "--output", "sarif", "-"], Some(pod)).await;
    let sarif: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert_eq!(sarif["runs"][0]["results"][0]["ruleId"], "TagNotFound");
    assert_eq!(sarif["runs"][0]["results"][0]["level"], "error");

    let run = pullguard(&["check", "--config", cfg, "--output", "junit", "-"], Some(pod)).await;
    assert!(run.stdout.starts_with("<?xml"));
    assert!(run.stdout.contains("<failure type=\"TagNotFound\""), "{}", run.stdout);

    let run = pullguard(&["check", "--config", cfg, "-"], Some(pod)).await;
    let fix = run.stdout.find("fix: use a tag that exists").expect("the fix is printed");
    let why = run.stdout.find("why: tag \"lates\" does not exist").expect("the cause is printed");
    assert!(run.stdout.contains("DENY") && fix < why, "the fix comes first: {}", run.stdout);
    assert!(!run.stdout.contains('\x1b'), "no colour when stdout is not a terminal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_and_usage_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "registries:\n  docker.io:\n    endpiont: http://127.0.0.1:1\n").unwrap();
    let run = pullguard(&["check", "--config", bad.to_str().unwrap(), "--offline", "-"], Some("")).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("bad.yaml") && run.stderr.contains("endpiont"), "{}", run.stderr);

    let run = pullguard(&["check", "--platform", "linux", "-"], Some("")).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("OS/ARCH"), "{}", run.stderr);

    let run = pullguard(&["check"], None).await;
    assert_eq!(run.code, 2);

    let run = pullguard(&["check", "--offline", "--output", "json", "/nonexistent/file.yaml"], None).await;
    assert_eq!(run.code, 2);
    assert_eq!(run.json()["errors"][0]["file"], "/nonexistent/file.yaml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_touches_no_network() {
    // No registry at all: an offline run must still report references and secrets.
    let run = pullguard(&["check", "--offline", "--output", "json", &fixture("manifests/causes.yaml")], None).await;
    // The invalid reference denies; secret problems warn, since without a lookup nobody knows whether the image
    // needs the secret.
    assert_eq!(run.code, 1, "the invalid reference still denies: {}", run.stdout);
    let j = run.json();
    let results = j["results"].as_array().unwrap();
    let by =
        |c: &str, o: &str| results.iter().find(|r| r["container"] == c && r["object"]["name"] == o).unwrap().clone();
    assert_eq!(by("web", "api")["reason"], "NotChecked");
    assert_eq!(by("web", "api")["verdict"], "skip");
    assert_eq!(by("invalid", "api")["reason"], "InvalidReference");
    assert_eq!(by("private", "wrong-namespace")["reason"], "SecretInOtherNamespace");
    assert_eq!(by("private", "wrong-namespace")["verdict"], "warn");
}

/// `check` pointed at a real repository: kustomization.yaml, Chart.yaml, values.yaml and tool configs are not
/// Kubernetes objects and were input errors (exit 2). They are skipped and counted; a document that claims to
/// be an object (it has a kind or an apiVersion) and cannot be read stays an error; `--strict` skips nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_of_yaml_checks_its_objects_and_skips_the_rest() {
    let env = Env::start(Options::default()).await;
    let cfg = env.config("");
    let cfg = cfg.to_str().unwrap();
    let repo = env.dir.path().join("repo");
    let app = repo.join("deploy/app");
    std::fs::create_dir_all(&app).unwrap();
    let pod =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: 'nginx:1.25.3'}\n";
    std::fs::write(app.join("pod.yaml"), pod).unwrap();
    std::fs::write(app.join("kustomization.yaml"), "resources:\n- pod.yaml\nimages:\n- name: nginx\n").unwrap();
    std::fs::write(repo.join("Chart.yaml"), "name: app\nversion: 1.0.0\n").unwrap();
    std::fs::write(repo.join("values.yaml"), "replicaCount: 2\nimage: {repository: nginx}\n").unwrap();
    std::fs::write(repo.join("list.yaml"), "- one\n- two\n---\njust a string\n").unwrap();
    std::fs::write(repo.join(".golangci.json"), r#"{"linters": {"enable": ["gofmt"]}}"#).unwrap();
    let repo_s = repo.to_str().unwrap();

    let run = pullguard(&["check", "--config", cfg, "--output", "json", repo_s], None).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let j = run.json();
    assert_eq!(j["summary"]["objects"], 1);
    assert_eq!(j["summary"]["allow"], 1);
    assert_eq!(j["errors"].as_array().unwrap().len(), 0, "{j}");
    let skipped: Vec<String> = j["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let file = s["file"].as_str().unwrap().strip_prefix(repo_s).unwrap().to_string();
            format!("{file}#{}", s["document"])
        })
        .collect();
    assert_eq!(
        skipped,
        [
            "/.golangci.json#0",
            "/Chart.yaml#0",
            "/deploy/app/kustomization.yaml#0",
            "/list.yaml#0",
            "/list.yaml#1",
            "/values.yaml#0"
        ]
    );
    assert_eq!(j["summary"]["skippedDocuments"], 6);

    // Human: counted on the summary line, listed under --verbose.
    let run = pullguard(&["check", "--config", cfg, repo_s], None).await;
    assert!(run.stdout.contains("6 documents skipped (not Kubernetes objects"), "{}", run.stdout);
    assert!(!run.stdout.contains("Chart.yaml"), "{}", run.stdout);
    let run = pullguard(&["check", "--config", cfg, "--verbose", repo_s], None).await;
    assert!(run.stdout.contains("skipped") && run.stdout.contains("Chart.yaml"), "{}", run.stdout);

    // A document that claims to be an object stays an error.
    std::fs::write(app.join("broken.yaml"), "apiVersion: apps/v1\nmetadata: {name: x}\n").unwrap();
    let run = pullguard(&["check", "--config", cfg, "--output", "json", repo_s], None).await;
    assert_eq!(run.code, 2, "{}", run.stdout);
    let errors = run.json()["errors"].clone();
    assert_eq!(errors.as_array().unwrap().len(), 1, "{errors}");
    assert!(errors[0]["message"].as_str().unwrap().contains("has an apiVersion but no kind"), "{errors}");
    std::fs::remove_file(app.join("broken.yaml")).unwrap();

    // --strict: today's gate, every document must be an object.
    let run = pullguard(&["check", "--config", cfg, "--strict", "--output", "json", repo_s], None).await;
    assert_eq!(run.code, 2);
    assert_eq!(run.json()["errors"].as_array().unwrap().len(), 6);
}

/// A pull secret holding an ECR authorization token works today and fails when the token runs out (12 hours
/// after it was made): said before, with the time, and never with the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_secret_that_expires_soon_is_a_warning() {
    let env = Env::start(Options { private: false, token: true }).await;
    let manifests = |token: &str| {
        let auth = support::dockerconfigjson_b64("ghcr.io", "AWS", token);
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: ecr, namespace: shop}}\ntype: kubernetes.io/dockerconfigjson\n\
             data: {{.dockerconfigjson: {auth}}}\n---\napiVersion: apps/v1\nkind: Deployment\n\
             metadata: {{name: api, namespace: shop}}\nspec:\n  template:\n    spec:\n      imagePullSecrets: [{{name: ecr}}]\n\
             \x20     containers:\n      - {{name: api, image: 'ghcr.io/private/app:1.0'}}\n"
        )
    };
    let cfg = env.config("");
    let cfg = cfg.to_str().unwrap();
    let soon = support::token::ecr_token(3600);
    let run = pullguard(&["check", "--config", cfg, "--output", "json", "-"], Some(&manifests(&soon))).await;
    assert_eq!(run.code, 0, "a warning, not a deny: {}{}", run.stdout, run.stderr);
    let r = &run.json()["results"][0];
    assert_eq!(r["verdict"], "warn", "{r}");
    assert_eq!(r["reason"], "CredentialsExpiring", "{r}");
    assert_eq!(r["credentialUsed"], 0, "the token did pull the image: {r}");
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("secret shop/ecr") && message.contains("ECR authorization token expires at"), "{message}");
    assert!(message.contains("(in 59m)") || message.contains("(in 1h 0m)"), "{message}");
    assert!(!run.stdout.contains(&soon) && !run.stderr.contains(&soon), "the token is never shown");

    // Outside the window: nothing to say.
    let quiet = env.config("credentialExpiryWarning: 30m\n");
    let run =
        pullguard(&["check", "--config", quiet.to_str().unwrap(), "--output", "json", "-"], Some(&manifests(&soon)))
            .await;
    assert_eq!(run.json()["results"][0]["reason"], "Ok", "{}", run.stdout);

    // Expired: the registry refuses it, as ECR does.
    let run = pullguard(
        &["check", "--config", cfg, "--output", "json", "-"],
        Some(&manifests(&support::token::ecr_token(-60))),
    )
    .await;
    assert_eq!(run.json()["results"][0]["reason"], "CredentialsRejected", "{}", run.stdout);
}
