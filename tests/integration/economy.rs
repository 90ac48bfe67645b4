//! Registry economy, counted at the real registry's access log: one lookup chain per (image, credential),
//! nothing within the TTL, one HEAD per tag after it.

use std::collections::BTreeMap;
use std::time::Duration;

use pullguard::policy::Verdict;
use pullguard::workload::Workload;
use serde_json::json;

use crate::support::{Env, Options, load, run_engine};

fn pods(images: &[&str], n: usize) -> Vec<Workload> {
    (0..n)
        .map(|i| {
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}"), "namespace": "load"},
                             "spec": {"containers": [{"name": "c", "image": images[i % images.len()]}]}});
            Workload::from_object(&pod, "default").unwrap().unwrap()
        })
        .collect()
}

fn counts(lines: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l.clone()).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lookup_chain_per_image_then_none() {
    let env = Env::start(Options::default()).await;
    let engine = env.engine("cache: {ttl: 2s}\n");
    let images = ["nginx:1.25.3", "alpine:3.19", "team/myapp:v2.3.0", "team/amd64-only:1.0"];
    let workloads = pods(&images, 200);
    let snap = pullguard::cluster::Snapshot::default();
    let before = env.hub.requests().len();

    let futures = workloads.iter().map(|w| engine.check_workload(w, &snap, None));
    let results: Vec<_> = futures_util::future::join_all(futures).await.into_iter().flatten().collect();
    assert!(
        results.iter().all(|r| r.verdict == Verdict::Allow),
        "{:?}",
        results.iter().find(|r| r.verdict != Verdict::Allow)
    );
    let cold = env.hub.requests()[before..].to_vec();
    let c = counts(&cold);
    assert!(c.values().all(|&n| n == 1), "every request exactly once: {c:#?}");
    let heads = cold.iter().filter(|l| l.starts_with("HEAD /v2/") && l.contains("/manifests/")).count();
    let manifest_gets = cold.iter().filter(|l| l.starts_with("GET /v2/") && l.contains("/manifests/sha256:")).count();
    let blob_gets = cold.iter().filter(|l| l.starts_with("GET /v2/") && l.contains("/blobs/")).count();
    assert_eq!((heads, manifest_gets, blob_gets), (4, 4, 2), "{cold:#?}");
    assert_eq!(cold.len(), 10, "{cold:#?}");

    // Within the TTL: nothing.
    let mark = env.hub.requests().len();
    let again: Vec<_> =
        futures_util::future::join_all(workloads.iter().map(|w| engine.check_workload(w, &snap, None))).await;
    assert_eq!(again.len(), 200);
    assert_eq!(env.hub.requests().len(), mark, "a warm cache sends nothing");

    // After the TTL: one HEAD per tag, no GET of a manifest whose digest is known.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mark = env.hub.requests().len();
    let _ = run_engine(&engine, &snap, &workloads).await;
    let after = env.hub.requests()[mark..].to_vec();
    assert_eq!(after.len(), 4, "{after:#?}");
    assert!(after.iter().all(|l| l.starts_with("HEAD ")), "{after:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_chain_per_credential_with_tokens() {
    let env = Env::start(Options { private: false, token: true }).await;
    let engine = env.engine("");
    let (snap, all) = load(&[crate::support::fixtures().join("manifests/causes.yaml")], "default");
    // 50 copies each of a pod with alice's and with bob's secret, both pulling the same public image.
    let template = |secret: &str, i: usize| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("{secret}-{i}"), "namespace": "production"},
               "spec": {"imagePullSecrets": [{"name": secret}], "containers": [{"name": "c", "image": "ghcr.io/public/tool:1.0"}]}})
    };
    drop(all);
    let workloads: Vec<Workload> = (0..100)
        .map(|i| {
            Workload::from_object(&template(if i % 2 == 0 { "ghcr-alice" } else { "ghcr-bob" }, i), "default")
                .unwrap()
                .unwrap()
        })
        .collect();
    let ghcr = env.ghcr.as_ref().unwrap();
    let issuer = env.issuer.as_ref().unwrap();
    let results: Vec<_> =
        futures_util::future::join_all(workloads.iter().map(|w| engine.check_workload(w, &snap, None)))
            .await
            .into_iter()
            .flatten()
            .collect();
    assert!(results.iter().all(|r| r.verdict == Verdict::Allow && r.credential_used == Some(0)));
    let reqs = ghcr.requests();
    let ok_heads = reqs.iter().filter(|l| l.starts_with("HEAD ") && l.ends_with(" 200")).count();
    assert_eq!(ok_heads, 2, "one resolve per credential: {reqs:#?}");
    assert_eq!(issuer.recorded().len(), 2, "one token per credential");
    let manifest_gets = reqs.iter().filter(|l| l.starts_with("GET ") && l.contains("/manifests/")).count();
    assert_eq!(manifest_gets, 1, "the digest's content is fetched once: {reqs:#?}");

    let mark = (ghcr.requests().len(), issuer.recorded().len());
    let _ = run_engine(&engine, &snap, &workloads).await;
    assert_eq!((ghcr.requests().len(), issuer.recorded().len()), mark, "a warm cache sends nothing");
}
