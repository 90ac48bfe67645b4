//! `bash .ci/bench` (= `cargo run --release --example bench -- [webhook] [economy] [gate] [memory] [profile]`;
//! `ab` compares two builds, see [`bench_ab`]):
//! pullguard's performance evidence, measured on loopback against the real registry (Debian's
//! docker-registry). Writes `tests/bench/results/*.json`; `.ci/bench` then draws `tests/bench/latency.png`.

#[path = "../integration/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::apiserver::ApiServer;
use support::webhook::{Webhook, create_review};
use support::{Env, Options};

fn results_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bench/results");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn save(name: &str, v: &Value) {
    let p = results_dir().join(format!("{name}.json"));
    std::fs::write(&p, serde_json::to_string_pretty(v).unwrap() + "\n").unwrap();
    println!("wrote {}", p.display());
}

async fn cluster() -> ApiServer {
    let api = ApiServer::start().await;
    for ns in ["default", "production", "pullguard", "kube-system"] {
        api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    api.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1",
        "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}}}));
    api
}

fn deployment(images: &[&str]) -> Value {
    let containers: Vec<Value> =
        images.iter().enumerate().map(|(i, img)| json!({"name": format!("c{i}"), "image": img})).collect();
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": "production"},
           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}},
                    "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": containers}}}})
}

/// CPUs for the server and for the load generator, disjoint so the tail measured is the server's and not the
/// two competing for one core: `PULLGUARD_BENCH_SERVER_CPUS` (default `0`) and `PULLGUARD_BENCH_LOAD_CPUS`
/// (default: every other CPU; on a 2-core machine, CPU 1).
fn cpus() -> (String, String) {
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    let server = std::env::var("PULLGUARD_BENCH_SERVER_CPUS").unwrap_or_else(|_| "0".into());
    let load = std::env::var("PULLGUARD_BENCH_LOAD_CPUS").unwrap_or_else(|_| format!("1-{}", n.max(2) - 1));
    (server, load)
}

/// Microseconds of user and system CPU per request between two readings of [`support::cpu_times`].
fn cpu_per(before: (f64, f64), after: (f64, f64), requests: f64) -> (f64, f64) {
    ((after.0 - before.0) / requests * 1e6, (after.1 - before.1) / requests * 1e6)
}

/// The oha command, pinned to `load_cpus`, for `url` (a POST of `body` when there is one).
fn oha_command_on(load_cpus: &str, url: &str, body: Option<&Path>, args: &[&str]) -> std::process::Command {
    let ca = support::fixtures().join("pki/ca.pem");
    let mut cmd = std::process::Command::new("taskset");
    cmd.args(["-c", load_cpus, "oha", "--no-tui"]);
    if let Some(body) = body {
        cmd.args(["-m", "POST", "-T", "application/json"]).arg("-D").arg(body);
    }
    cmd.arg("--cacert").arg(&ca).args(args).arg(url);
    cmd
}

/// Runs an oha command to its end; a failed run stops the bench with oha's own words.
fn run_oha(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().expect("oha is installed (cargo install oha)");
    assert!(out.status.success(), "oha failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs oha and returns its JSON report.
fn oha(url: &str, body: Option<&Path>, args: &[&str]) -> Value {
    oha_on(&cpus().1, url, body, args)
}

/// [`oha`] pinned to `load_cpus`.
fn oha_on(load_cpus: &str, url: &str, body: Option<&Path>, args: &[&str]) -> Value {
    let out = run_oha(oha_command_on(load_cpus, url, body, args).args(["--output-format", "json"]));
    serde_json::from_slice(&out.stdout).expect("oha prints JSON")
}

/// One request of an oha run: when it was sent (seconds after the run's first request), its latency in
/// seconds (from when it was due, under `--latency-correction`) and its HTTP status.
struct Sample {
    start: f64,
    latency: f64,
    status: u16,
}

/// Runs oha and returns every request it completed, from its CSV output (oha leaves out requests that got no
/// response at all, which the caller counts against the offered total).
fn oha_samples(url: &str, body: Option<&Path>, args: &[&str], csv: &Path) -> Vec<Sample> {
    run_oha(oha_command_on(&cpus().1, url, body, args).args(["--output-format", "csv", "-o"]).arg(csv));
    let text = std::fs::read_to_string(csv).expect("oha wrote its CSV");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("oha's CSV has a header").split(',').collect();
    let column =
        |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no {name} in {header:?}"));
    let (start, latency, status) = (column("request-start"), column("request-duration"), column("status"));
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            Sample {
                start: f[start].parse().unwrap(),
                latency: f[latency].parse().unwrap(),
                status: f[status].parse().unwrap(),
            }
        })
        .collect()
}

/// Seconds at the start of a fixed-rate run left out of its steady state: the load generator's connections
/// open then (a TLS handshake each, on the server's one core) and, with latency correction, every request
/// due meanwhile is charged the wait. That transient lasts under 100 ms here but holds about 0.7 % of a 10 s
/// run's requests, enough to decide its p99 by itself; the API server keeps its connections to a webhook open,
/// so the steady state is what it sees.
const WARM_UP_S: f64 = 0.5;

/// p50, p99, p99.9 and max (milliseconds, nearest rank) of these latencies.
fn tail(mut latencies: Vec<f64>) -> Value {
    latencies.sort_by(f64::total_cmp);
    let n = latencies.len();
    let at =
        |q: f64| latencies.get(((q * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1).map_or(f64::NAN, |s| s * 1e3);
    json!({"requests": n, "p50_ms": at(0.5), "p99_ms": at(0.99), "p99_9_ms": at(0.999), "max_ms": at(1.0)})
}

/// Requests sent less than this after the one before belong to the same burst. oha sends a fixed rate by
/// sleeping until each request is due, and tokio's timer wakes on whole milliseconds: at 5,000/s the requests
/// due within one millisecond leave together, ~10–60 µs apart, and the next burst a millisecond later.
const BURST_GAP_S: f64 = 250e-6;

/// The tail of these requests by their place in the load generator's burst: the first of a burst waits for no
/// other request of it; the k-th finds up to k − 1 ahead of it on the server. Positions after the fifth (two
/// ticks' requests leaving together) are pooled.
fn by_burst_position(mut samples: Vec<&Sample>) -> Value {
    samples.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut positions: Vec<Vec<f64>> = vec![vec![]; 6];
    let (mut position, mut previous) = (0, f64::NEG_INFINITY);
    for s in samples {
        position = if s.start - previous < BURST_GAP_S { position + 1 } else { 0 };
        previous = s.start;
        positions[position.min(5)].push(s.latency);
    }
    let names = ["1st", "2nd", "3rd", "4th", "5th", "6th or later"];
    let rows = names.iter().zip(positions).map(|(name, latencies)| {
        let mut row = tail(latencies);
        row["position"] = json!(name);
        row
    });
    Value::Array(rows.collect())
}

/// A fixed-rate run of [`RUN_S`] at `rate`: its steady-state tail (requests sent after [`WARM_UP_S`]) at the top
/// level, the whole run's under `whole_run`, the share answered 200 and the server's CPU per request.
fn fixed_rate_run(wh: &Webhook, url: &str, body: Option<&Path>, rate: u32, extra: &[&str], dir: &Path) -> Value {
    let rate_s = rate.to_string();
    let cpu = support::cpu_times(wh.pid());
    let samples = oha_samples(url, body, &fixed_rate(&rate_s, extra), &dir.join("oha.csv"));
    let ok = samples.iter().filter(|s| s.status == 200).count() as f64;
    let (user_us, system_us) = cpu_per(cpu, support::cpu_times(wh.pid()), ok.max(1.0));
    let first = samples.iter().map(|s| s.start).fold(f64::INFINITY, f64::min);
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.start >= first + WARM_UP_S).collect();
    let mut row = tail(steady.iter().map(|s| s.latency).collect());
    row["by_burst_position"] = by_burst_position(steady);
    let offered = f64::from(rate) * RUN_S;
    row["offered_rps"] = json!(rate);
    row["achieved_rps"] = json!(samples.len() as f64 / RUN_S);
    row["success_rate"] = json!(ok / offered.max(samples.len() as f64));
    row["server_cpu_us_per_request"] = json!(user_us + system_us);
    row["server_user_us"] = json!(user_us);
    row["server_system_us"] = json!(system_us);
    row["whole_run"] = tail(samples.iter().map(|s| s.latency).collect());
    row
}

/// Flags that give a measured server the production certificate poll: the tests' 100 ms poll is two file reads
/// on the blocking pool ten times a second, on the server's own core.
const AS_DEPLOYED: [&str; 2] = ["--cert-reload-interval", "2s"];

/// The protocols measured (`PULLGUARD_BENCH_PROTOCOLS=http1` or `http2` for one only) and their oha flags.
fn protocols() -> Vec<(&'static str, Vec<&'static str>)> {
    let h1 = ("http1", vec![]);
    let h2 = ("http2", vec!["--http2", "-p", "8"]);
    match std::env::var("PULLGUARD_BENCH_PROTOCOLS").as_deref() {
        Ok("http1") => vec![h1],
        Ok("http2") => vec![h2],
        _ => vec![h1, h2],
    }
}

/// Seconds of each run.
const RUN_S: f64 = 10.0;
/// oha's `-z` for [`RUN_S`].
static RUN_FLAG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!("{RUN_S}s"));

/// The fixed rates measured (`PULLGUARD_BENCH_RATES=2000,5000`, say).
fn rates() -> Vec<u32> {
    std::env::var("PULLGUARD_BENCH_RATES")
        .map(|s| s.split(',').filter_map(|r| r.parse().ok()).collect())
        .unwrap_or_else(|_| vec![1000, 2000, 5000])
}

/// How many pairs per rate (`PULLGUARD_BENCH_REPEATS`). A 10 s window's tail on a shared VM moves between
/// identical runs by more than the targets' margins, so each rate is measured as several pairs and summarised
/// by the median (every run is kept).
fn repeats() -> usize {
    std::env::var("PULLGUARD_BENCH_REPEATS").ok().and_then(|r| r.parse().ok()).unwrap_or(3)
}

/// oha flags for [`RUN_S`] at a fixed rate over 16 connections, with latency correction.
fn fixed_rate<'a>(rate: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["-z", RUN_FLAG.as_str(), "-q", rate, "--latency-correction", "-c", "16"];
    args.extend(extra.iter().copied());
    args
}

fn ms(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN) * 1000.0
}

/// The median of these values (the mean of the middle two for an even count), and their least and greatest.
fn spread(values: impl Iterator<Item = f64>) -> Value {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return json!({"median": null, "min": null, "max": null});
    }
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    json!({"median": median, "min": v[0], "max": v[n - 1]})
}

/// The server, started on `server_cpus` (taskset execs it there, so that its runtime sizes
/// itself to them as it does to a pod's CPU limit: pinned after starting, it kept a worker thread per CPU of
/// the machine, contending for its one core and waking each other), warmed with the bench's review.
async fn webhook_on(env: &Env, api: &ApiServer, server_cpus: &str, review: &Value) -> Webhook {
    program_on(&support::binary(), env, api, server_cpus, review).await
}

/// [`webhook_on`] with this `pullguard` binary.
async fn program_on(program: &Path, env: &Env, api: &ApiServer, server_cpus: &str, review: &Value) -> Webhook {
    // Production logging (one JSON line per denial or warning) unless PULLGUARD_BENCH_LOG says otherwise.
    let level = std::env::var("PULLGUARD_BENCH_LOG").unwrap_or_else(|_| "info".into());
    let taskset = ["taskset", "-c", server_cpus];
    let wh = Webhook::spawn_program(program, &taskset, &env.config(""), api, &AS_DEPLOYED, &level);
    wh.wait_ready().await;
    let warm = wh.review(review).await;
    assert_eq!(warm["allowed"], true, "{warm}");
    wh
}

/// Closed loop over 32 connections for [`RUN_S`], the load generator on `load_cpus`: as many reviews per
/// second as the server answers, and the server's CPU seconds meanwhile.
fn max_run(wh: &Webhook, body: &Path, extra: &[&str], load_cpus: &str) -> Value {
    let mut args = vec!["-z", RUN_FLAG.as_str(), "-c", "32"];
    args.extend(extra.iter().copied());
    let cpu = support::cpu_times(wh.pid());
    let r = oha_on(load_cpus, &wh.url("10s"), Some(body), &args);
    let after = support::cpu_times(wh.pid());
    let p = &r["latencyPercentiles"];
    let rps = r["summary"]["requestsPerSec"].as_f64().unwrap_or(f64::NAN);
    let server_cpu_s = (after.0 - cpu.0) + (after.1 - cpu.1);
    json!({"offered_rps": "max", "achieved_rps": rps, "success_rate": r["summary"]["successRate"],
        "p50_ms": ms(&p["p50"]), "p99_ms": ms(&p["p99"]), "p99_9_ms": ms(&p["p99.9"]),
        "max_ms": ms(&r["summary"]["slowest"]), "status": r["statusCodeDistribution"],
        "server_cpu_s": server_cpu_s, "server_cores_busy": server_cpu_s / RUN_S})
}

/// The webhook bench's review, a Deployment with three containers, and the file oha sends it from.
fn bench_review(env: &Env) -> (Value, PathBuf) {
    let review = create_review("bench", &deployment(&["nginx:1.25.3", "alpine:3.19", "team/myapp:v2.3.0"]));
    let body = env.dir.path().join("review.json");
    std::fs::write(&body, serde_json::to_vec(&review).unwrap()).unwrap();
    (review, body)
}

async fn bench_webhook(env: &Env) {
    let api = cluster().await;
    let (server_cpus, load_cpus) = cpus();
    let (review, body) = bench_review(env);
    let wh = webhook_on(env, &api, &server_cpus, &review).await;
    println!("server on CPUs {server_cpus}, load generator on CPUs {load_cpus}");
    let url = wh.url("10s");
    let health = format!("https://127.0.0.1:{}/healthz", wh.port);
    let (rates, repeats) = (rates(), repeats());
    let (mut rows, mut summary) = (vec![], vec![]);
    for (proto, extra) in protocols() {
        for &rate in &rates {
            let mut pairs = vec![];
            for repeat in 0..repeats {
                // The control first and the review right after it, so the pair shares the machine's state: the
                // same load on /healthz over the same TLS port and protocol, which does no work at all. Its tail
                // is this machine's TLS and scheduling floor; a review's is reported as a ratio to it.
                let mut control = fixed_rate_run(&wh, &health, None, rate, &extra, env.dir.path());
                control["protocol"] = json!(proto);
                control["endpoint"] = json!("/healthz (control)");
                control["repeat"] = json!(repeat);
                let mut row = fixed_rate_run(&wh, &url, Some(&body), rate, &extra, env.dir.path());
                row["protocol"] = json!(proto);
                row["repeat"] = json!(repeat);
                let cpu = row.as_object_mut().unwrap().remove("server_cpu_us_per_request").unwrap();
                row["server_cpu_us_per_review"] = cpu;
                let ratio = |k: &str, of: &Value, to: &Value| {
                    of[k].as_f64().unwrap_or(f64::NAN) / to[k].as_f64().unwrap_or(f64::NAN)
                };
                for k in ["p99", "p99_9"] {
                    let key = format!("{k}_ms");
                    row[format!("{k}_vs_control")] = json!(ratio(&key, &row, &control));
                    row["whole_run"][format!("{k}_vs_control")] =
                        json!(ratio(&key, &row["whole_run"], &control["whole_run"]));
                }
                // The requests that waited for no other of their burst: the review path's own tail.
                let first = ratio("p99_ms", &row["by_burst_position"][0], &control["by_burst_position"][0]);
                row["first_in_burst_p99_vs_control"] = json!(first);
                println!(
                    "webhook {proto} {rate}/s #{repeat}: p99 {:.3} ms ({:.2}x control {:.3} ms), p99.9 {:.2}x; \
                     first in a burst p99 {:.2}x; whole run p99 {:.2}x; {:.0} µs CPU per review (control {:.0})",
                    row["p99_ms"].as_f64().unwrap_or(f64::NAN),
                    row["p99_vs_control"].as_f64().unwrap_or(f64::NAN),
                    control["p99_ms"].as_f64().unwrap_or(f64::NAN),
                    row["p99_9_vs_control"].as_f64().unwrap_or(f64::NAN),
                    first,
                    row["whole_run"]["p99_vs_control"].as_f64().unwrap_or(f64::NAN),
                    row["server_cpu_us_per_review"].as_f64().unwrap_or(f64::NAN),
                    control["server_cpu_us_per_request"].as_f64().unwrap_or(f64::NAN),
                );
                pairs.push((row.clone(), control.clone()));
                rows.push(row);
                rows.push(control);
            }
            let of = |k: &str| spread(pairs.iter().map(|(r, _)| r[k].as_f64().unwrap_or(f64::NAN)));
            let of_control = |k: &str| spread(pairs.iter().map(|(_, c)| c[k].as_f64().unwrap_or(f64::NAN)));
            let whole = |k: &str| spread(pairs.iter().map(|(r, _)| r["whole_run"][k].as_f64().unwrap_or(f64::NAN)));
            summary.push(json!({"protocol": proto, "offered_rps": rate, "pairs": pairs.len(),
                "p50_ms": of("p50_ms"), "p99_ms": of("p99_ms"), "p99_9_ms": of("p99_9_ms"),
                "p99_vs_control": of("p99_vs_control"), "p99_9_vs_control": of("p99_9_vs_control"),
                "server_cpu_us_per_review": of("server_cpu_us_per_review"),
                "server_user_us": of("server_user_us"), "server_system_us": of("server_system_us"),
                "control_p50_ms": of_control("p50_ms"), "control_p99_ms": of_control("p99_ms"),
                "control_p99_9_ms": of_control("p99_9_ms"),
                "control_cpu_us_per_request": of_control("server_cpu_us_per_request"),
                "first_in_burst_p99_vs_control": of("first_in_burst_p99_vs_control"),
                "whole_run_p99_vs_control": whole("p99_vs_control"),
                "whole_run_p99_9_vs_control": whole("p99_9_vs_control")}));
        }
        let mut row = max_run(&wh, &body, &extra, &load_cpus);
        row["protocol"] = json!(proto);
        row["server_cpus"] = json!(server_cpus);
        println!("webhook {proto} max on CPUs {server_cpus}: {row}");
        rows.push(row);
    }
    let metrics = wh.metrics().await;
    let registry_requests: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("pullguard_registry_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum();
    drop(wh);
    // Maximum on two server cores, the sizing. With four CPUs or more the load generator gets the rest;
    // on a 2-core machine it shares the server's two, so the figure is a floor: what two cores give while the
    // load generator takes part of them (its share is in `server_cores_busy`).
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    let two_load = if n >= 4 { format!("2-{}", n - 1) } else { "0-1".into() };
    let two = webhook_on(env, &api, "0-1", &review).await;
    let mut two_core = vec![];
    for (proto, extra) in protocols() {
        let mut row = max_run(&two, &body, &extra, &two_load);
        row["protocol"] = json!(proto);
        row["server_cpus"] = json!("0-1");
        row["load_cpus"] = json!(two_load);
        row["load_shares_server_cpus"] = json!(n < 4);
        println!("webhook {proto} max on CPUs 0-1 (load on {two_load}): {row}");
        two_core.push(row);
    }
    save(
        "webhook",
        &json!({"review": "Deployment with 3 containers, warm cache", "server_cpus": server_cpus,
        "load_cpus": load_cpus, "warm_up_s": WARM_UP_S, "run_s": RUN_S, "repeats": repeats,
        "percentiles": "steady state: requests sent after the first warm_up_s of each run (connections open, \
            backlog drained); whole_run: every request. summary: median, min and max over the repeats",
        "summary": summary, "runs": rows, "two_core_max": two_core,
        "registry_requests_during_run": registry_requests}),
    );
}

/// Runs `callgrind_control` with these arguments on the process.
fn callgrind_control(pid: u32, args: &[&str]) {
    let out = std::process::Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .expect("callgrind_control (valgrind) is installed");
    assert!(out.status.success(), "callgrind_control {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Per function name, the instructions of one callgrind dump: inclusive (the largest entry of that name, as
/// callgrind splits an inlined function by source file) or self (summed over those entries).
fn callgrind_costs(file: &Path, inclusive: bool) -> (u64, std::collections::HashMap<String, u64>) {
    let out = std::process::Command::new("callgrind_annotate")
        .arg(format!("--inclusive={}", if inclusive { "yes" } else { "no" }))
        .args(["--threshold=100", "--auto=no"])
        .arg(file)
        .output()
        .expect("callgrind_annotate (valgrind) is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut total = 0;
    let mut costs = std::collections::HashMap::new();
    for line in text.lines() {
        // "  1,234 ( 0.41%)  path/file.rs:crate::function [object]"
        let Some((count, rest)) = line.trim_start().split_once(' ') else { continue };
        let Ok(n) = count.replace(',', "").parse::<u64>() else { continue };
        let Some((_, what)) = rest.split_once(')') else { continue };
        let what = what.trim();
        if what == "PROGRAM TOTALS" {
            total = n;
            continue;
        }
        let what = what.rsplit_once(" [").map_or(what, |(w, _)| w);
        let Some((_, function)) = what.split_once(':') else { continue };
        let e = costs.entry(function.to_string()).or_insert(0);
        *e = if inclusive { (*e).max(n) } else { *e + n };
    }
    (total, costs)
}

/// The parts of a review named in the profile summary: (label, function, inclusive).
const REVIEW_PARTS: [(&str, &str); 6] = [
    ("the review handler (body to response)", "pullguard::admission::validate::{{closure}}"),
    ("  read the AdmissionReview and its workload", "pullguard::admission::wire::Request::parse"),
    ("  engine: 3 containers", "pullguard::engine::Engine<R>::check_containers::{{closure}}"),
    ("    cached lookups", "pullguard::engine::Engine<R>::lookup::{{closure}}"),
    ("    policy decisions and messages", "pullguard::policy::decide"),
    ("  the response and its annotations", "pullguard::admission::respond"),
];

/// Where a warm review's CPU goes, in instructions rather than time (stable on a noisy machine): the server
/// runs under callgrind, instrumented only around `PROFILED` reviews and then as many `/healthz` requests
/// (the control), each batch dumped on its own, over one keep-alive connection so that one TLS handshake is
/// all the batch carries; then the review with a large pull-secret token, and the review and the control
/// again over HTTP/2 (the API server's protocol), one stream at a time. Callgrind counts user space only: the
/// kernel's TCP work is not in these figures.
async fn bench_profile(env: &Env) {
    const PROFILED: u64 = 2000;
    let api = cluster().await;
    let out = env.dir.path().join("callgrind.out");
    let out_arg = format!("--callgrind-out-file={}", out.display());
    let wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", out_arg.as_str()];
    // A pull secret with a token the size of an ECR one (~2 KB), for every image of the second review: the
    // local registry asks for no credentials, so the lookups succeed and what is measured is the cost of
    // carrying one.
    let token = "t".repeat(2048);
    api.apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token", "namespace": "production"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": support::dockerconfigjson_b64("docker.io", "AWS", &token)}}));
    let wh = Webhook::spawn_under(&wrapper, &env.config(""), &api, &AS_DEPLOYED, "info");
    wh.wait_ready_within(Duration::from_secs(300)).await;
    let images = ["nginx:1.25.3", "alpine:3.19", "team/myapp:v2.3.0"];
    let body = env.dir.path().join("review.json");
    let review = create_review("bench", &deployment(&images));
    std::fs::write(&body, serde_json::to_vec(&review).unwrap()).unwrap();
    let secret_body = env.dir.path().join("review-with-secret.json");
    let mut with_secret = deployment(&images);
    with_secret["spec"]["template"]["spec"]["imagePullSecrets"] = json!([{"name": "token"}]);
    let secret_review = create_review("bench", &with_secret);
    std::fs::write(&secret_body, serde_json::to_vec(&secret_review).unwrap()).unwrap();
    for r in [&review, &secret_review] {
        let warm = wh.review(r).await;
        assert_eq!(warm["allowed"], true, "{warm}");
    }
    let n = PROFILED.to_string();
    let health = format!("https://127.0.0.1:{}/healthz", wh.port);
    let pid = wh.pid();
    callgrind_control(pid, &["--instr=on"]);
    let mut dumps = vec![];
    let (h1, h2): (&[&str], &[&str]) = (&[], &["--http2", "-p", "1"]);
    let runs = [
        ("review", wh.url("10s"), Some(body.as_path()), h1),
        ("healthz", health.clone(), None, h1),
        ("review-with-secret", wh.url("10s"), Some(secret_body.as_path()), h1),
        ("review-http2", wh.url("10s"), Some(body.as_path()), h2),
        ("healthz-http2", health, None, h2),
    ];
    let batches = runs.len();
    for (what, url, body, protocol) in runs {
        // A first pass after instrumenting, so that the measured one meets translated code.
        oha(&url, body, &[&["-n", "200", "-c", "1"], protocol].concat());
        callgrind_control(pid, &["--zero"]);
        let r = oha(&url, body, &[&["-n", n.as_str(), "-c", "1"], protocol].concat());
        assert_eq!(r["statusCodeDistribution"]["200"].as_u64(), Some(PROFILED), "{r}");
        callgrind_control(pid, &["--dump"]);
        dumps.push(what);
    }
    drop(wh);
    let dump = |i: usize| env.dir.path().join(format!("callgrind.out.{}", i + 1));
    assert!(dump(batches - 1).exists(), "callgrind wrote too few dumps in {}", env.dir.path().display());
    // Kept for a closer look (`callgrind_annotate --tree=calling`, kcachegrind).
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-profile");
    std::fs::create_dir_all(&kept).unwrap();
    for (i, what) in dumps.iter().enumerate() {
        std::fs::copy(dump(i), kept.join(format!("callgrind.{what}.out"))).unwrap();
    }
    println!("callgrind data: {}/callgrind.{{{}}}.out", kept.display(), dumps.join(","));
    let (review_total, inclusive) = callgrind_costs(&dump(0), true);
    let (_, own) = callgrind_costs(&dump(0), false);
    let (control_total, control_inclusive) = callgrind_costs(&dump(1), true);
    let (secret_total, _) = callgrind_costs(&dump(2), true);
    let (h2_total, h2_inclusive) = callgrind_costs(&dump(3), true);
    let (h2_control_total, _) = callgrind_costs(&dump(4), true);
    let per = |v: u64| v as f64 / PROFILED as f64;
    // Each batch is one oha run, so one connection and one TLS handshake (an RSA-2048 signature, most of it),
    // spread over the batch's requests; the API server keeps its connections, so it is shown apart.
    let handshake = |costs: &std::collections::HashMap<String, u64>| {
        costs.iter().filter(|(f, _)| f.contains("rustls::server::hs::ExpectClientHello")).map(|(_, &v)| v).max()
    };
    let (review_handshake, control_handshake) = (handshake(&inclusive), handshake(&control_inclusive));
    if let (Some(r), Some(c)) = (review_handshake, control_handshake) {
        println!(
            "  of which the batch's one TLS handshake: {:.0} per review, {:.0} per /healthz ({r} and {c} in all)",
            per(r),
            per(c)
        );
    }
    println!(
        "profile: {:.0} instructions per warm review in user space, {:.0} per /healthz (the control); {:.0} per \
         warm review with a 2 KB pull-secret token for every image",
        per(review_total),
        per(control_total),
        per(secret_total)
    );
    println!(
        "  over HTTP/2 (one stream at a time): {:.0} per warm review, {:.0} per /healthz",
        per(h2_total),
        per(h2_control_total)
    );
    let mut parts = vec![];
    println!("  {:<40} {:>9}  {:>9}", "part (inclusive)", "HTTP/1.1", "HTTP/2");
    for (label, function) in REVIEW_PARTS {
        // A part the optimiser inlined into its caller has no entry of its own: said, not shown as 0.
        let (Some(&v), Some(&v2)) = (inclusive.get(function), h2_inclusive.get(function)) else {
            println!("  {label:<40} (inlined into its caller: not counted apart)");
            parts.push(json!({"part": label.trim(), "function": function, "inlined": true}));
            continue;
        };
        let (v, v2) = (per(v), per(v2));
        println!("  {label:<40} {v:>9.0}  {v2:>9.0}  ({:.0} %)", 100.0 * v / per(review_total));
        parts.push(json!({"part": label.trim(), "function": function, "instructions_per_review": v,
            "instructions_per_review_http2": v2}));
    }
    let mut top: Vec<(&String, &u64)> = own.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!("  top 5 functions by their own instructions:");
    let mut top5 = vec![];
    for (function, &v) in top.into_iter().take(5) {
        println!("  {:>9.0}  ({:.1} %)  {function}", per(v), 100.0 * v as f64 / review_total as f64);
        top5.push(json!({"function": function, "instructions_per_review": per(v)}));
    }
    save(
        "profile",
        &json!({"review": "Deployment with 3 containers, warm cache, HTTP/1.1 keep-alive, one connection (and HTTP/2, one stream at a time)",
        "tool": "valgrind --tool=callgrind (user-space instructions)", "reviews": PROFILED,
        "instructions_per_review": per(review_total), "instructions_per_healthz": per(control_total),
        "instructions_per_review_with_2kb_pull_secret": per(secret_total),
        "instructions_per_review_http2": per(h2_total), "instructions_per_healthz_http2": per(h2_control_total),
        "tls_handshake_per_review": review_handshake.map(per), "tls_handshake_per_healthz": control_handshake.map(per),
        "parts": parts, "top_self": top5}),
    );
}

fn count(lines: &[String], pred: impl Fn(&str) -> bool) -> usize {
    lines.iter().filter(|l| pred(l)).count()
}

fn breakdown(lines: &[String]) -> Value {
    json!({"total": lines.len(),
           "head_manifest": count(lines, |l| l.starts_with("HEAD ") && l.contains("/manifests/")),
           "get_manifest": count(lines, |l| l.starts_with("GET ") && l.contains("/manifests/")),
           "get_blob": count(lines, |l| l.starts_with("GET ") && l.contains("/blobs/")),
           "other": count(lines, |l| !l.contains("/manifests/") && !l.contains("/blobs/"))})
}

const TEN: [&str; 10] = [
    "nginx:latest",
    "nginx:1.25.3",
    "nginx:1.25.4",
    "alpine:3.19",
    "alpine:3.20",
    "alpine:latest",
    "team/myapp:v2.3.0",
    "team/myapp:v2.3.2",
    "team/amd64-only:1.0",
    "public/tool:1.0",
];

async fn thousand_reviews(wh: &Webhook, tag: &str) {
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}"), "namespace": "production"},
                             "spec": {"containers": [{"name": "app", "image": TEN[i % 10]}]}});
            let (client, url, body) = (wh.client.clone(), wh.url("10s"), create_review(&format!("{tag}{i}"), &pod));
            tokio::spawn(async move { client.post(url).json(&body).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
}

async fn bench_economy(env: &Env) {
    let api = cluster().await;
    let wh = Webhook::spawn(&env.config("cache: {ttl: 5s}\n"), &api, &[], "warn");
    wh.wait_ready().await;
    let mark = env.hub.requests().len();
    thousand_reviews(&wh, "cold").await;
    let cold = env.hub.requests()[mark..].to_vec();
    let mark = env.hub.requests().len();
    thousand_reviews(&wh, "warm").await;
    let warm = env.hub.requests()[mark..].to_vec();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mark = env.hub.requests().len();
    thousand_reviews(&wh, "expired").await;
    let expired = env.hub.requests()[mark..].to_vec();

    // What a person scripting `skopeo inspect` sends for the same ten images.
    let mark = env.hub.requests().len();
    for image in TEN {
        let (repo, tag) = image.split_once(':').unwrap();
        let repo = if repo.contains('/') { repo.to_string() } else { format!("library/{repo}") };
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", &format!("docker://{}/{repo}:{tag}", env.hub.addr)])
            .output()
            .expect("skopeo is installed");
        assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));
    }
    let skopeo = env.hub.requests()[mark..].to_vec();
    let v = json!({"images": 10, "reviews_per_round": 1000, "concurrency": 1000,
        "cold": breakdown(&cold), "warm_within_ttl": breakdown(&warm), "after_ttl": breakdown(&expired),
        "skopeo_inspect_once_per_image": breakdown(&skopeo)});
    println!("economy: {v}");
    save("economy", &v);
}

async fn bench_gate(env: &Env) {
    // 50 distinct images, 1,000 manifests.
    let pusher = support::seed::Pusher::new(&env.hub.url());
    for i in 0..50 {
        let img = pusher.image(&format!("gate/svc{i}"), "linux", "amd64", None, true).await;
        pusher.tag(&format!("gate/svc{i}"), "1.0", &img).await;
    }
    let dir = env.dir.path().join("gate");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..1000 {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("svc-{i}"), "namespace": "team"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "app", "image": format!("gate/svc{}:1.0", i % 50)}]}}}});
        std::fs::write(dir.join(format!("deploy-{i:04}.json")), serde_json::to_vec(&d).unwrap()).unwrap();
    }
    let cfg = env.config("");
    let (mark, cpu) = (env.hub.requests().len(), env.hub.cpu_seconds());
    let mut pg = vec![];
    for _ in 0..5 {
        let t = Instant::now();
        let out = std::process::Command::new(support::binary())
            .args(["check", "--config", cfg.to_str().unwrap(), "--output", "json", dir.to_str().unwrap()])
            .output()
            .unwrap();
        pg.push(t.elapsed().as_secs_f64());
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["summary"]["allow"], 1000, "{}", String::from_utf8_lossy(&out.stderr));
    }
    let pg_requests = (env.hub.requests().len() - mark) / pg.len();
    let pg_registry_cpu = (env.hub.cpu_seconds() - cpu) / pg.len() as f64;
    // The same files offline: startup and parsing alone, no lookup.
    let mut offline = vec![];
    for _ in 0..5 {
        let t = Instant::now();
        let out = std::process::Command::new(support::binary())
            .args(["check", "--offline", "--output", "json", dir.to_str().unwrap()])
            .output()
            .unwrap();
        offline.push(t.elapsed().as_secs_f64());
        assert!(!out.stdout.is_empty());
    }
    let (mark, cpu) = (env.hub.requests().len(), env.hub.cpu_seconds());
    let mut sk = vec![];
    for _ in 0..3 {
        let t = Instant::now();
        for i in 0..50 {
            let out = std::process::Command::new("skopeo")
                .args(["inspect", "--tls-verify=false", &format!("docker://{}/gate/svc{i}:1.0", env.hub.addr)])
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        sk.push(t.elapsed().as_secs_f64());
    }
    let sk_requests = (env.hub.requests().len() - mark) / sk.len();
    let sk_registry_cpu = (env.hub.cpu_seconds() - cpu) / sk.len() as f64;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (pg_m, sk_m, off_m) = (median(&mut pg), median(&mut sk), median(&mut offline));
    let v = json!({"manifests": 1000, "distinct_images": 50, "pullguard_check_s": pg, "pullguard_check_median_s": pg_m,
        "skopeo_loop_over_distinct_images_s": sk, "pullguard_check_offline_median_s": off_m,
        "registry_requests_per_run": {"pullguard_check": pg_requests, "skopeo_loop": sk_requests},
        "registry_cpu_seconds_per_run": {"pullguard_check": pg_registry_cpu, "skopeo_loop": sk_registry_cpu}, "skopeo_loop_median_s": sk_m, "ratio": sk_m / pg_m});
    println!("gate: {v}");
    save("gate", &v);
}

async fn bench_memory(env: &Env) {
    let api = cluster().await;
    let wh = Webhook::spawn(&env.config("cache: {negativeTtl: 1h, maxEntries: 200000}\n"), &api, &[], "warn");
    wh.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = support::rss_kib(wh.pid());
    // 100,000 distinct references: 10,000 reviews of 10 containers, every tag new (a negative entry each).
    let started = Instant::now();
    review_new_images(&wh, 10_000, |r, c| format!("team/myapp:mem-{r}-{c}"), "30s", 32).await;
    let metrics = wh.metrics().await;
    let misses =
        metrics.lines().find(|l| l.starts_with("pullguard_cache_misses_total")).unwrap_or_default().to_string();
    let full = support::rss_kib(wh.pid());
    let fill_seconds = started.elapsed().as_secs_f64();
    drop(wh);
    // Capped above the 5,000 sent, to measure what each holds; then under the default limits.
    let in_flight = memory_in_flight(env, &api, Some(10_000)).await;
    let capped = memory_in_flight(env, &api, None).await;
    let v = json!({"rss_idle_kib": idle, "rss_after_100k_entries_kib": full, "distinct_references": 100_000,
                   "fill_seconds": fill_seconds, "cache_misses_metric": misses, "lookups_in_flight": in_flight,
                   "lookups_in_flight_default_cap": capped});
    println!("memory: {v}");
    save("memory", &v);
}

/// Sends `reviews` reviews of a Deployment with [`IMAGES_PER_REVIEW`] containers, `image(review, container)`
/// each, `concurrency` at a time under the review timeout `timeout`; every one must be answered 200.
async fn review_new_images(
    wh: &Webhook,
    reviews: usize,
    image: impl Fn(usize, usize) -> String,
    timeout: &str,
    concurrency: usize,
) {
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = vec![];
    for r in 0..reviews {
        let images: Vec<String> = (0..IMAGES_PER_REVIEW).map(|c| image(r, c)).collect();
        let refs: Vec<&str> = images.iter().map(String::as_str).collect();
        let body = create_review(&format!("m{r}"), &deployment(&refs));
        let (client, url, permit) = (wh.client.clone(), wh.url(timeout), sem.clone().acquire_owned().await.unwrap());
        tasks.push(tokio::spawn(async move {
            let s = client.post(url).json(&body).send().await.map(|r| r.status().as_u16());
            drop(permit);
            s
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
}

const IMAGES_PER_REVIEW: usize = 10;

/// What lookups waiting on a registry hold: one that accepts connections and never answers, and 500 reviews of
/// 10 images nobody looked up before, each answered at its 1 s deadline. Every miss is a task that lives on
/// until `lookupTimeout` (here 120 s) to fill the cache — what a hanging registry leaves behind under a stream
/// of new images. `cap`: the pool and both its shares set to it (else the defaults, under which this one
/// namespace and one registry hold at most half the pool).
async fn memory_in_flight(env: &Env, api: &ApiServer, cap: Option<usize>) -> Value {
    use support::http::{Action, Server};
    const REVIEWS: usize = 500;
    let hang = Server::start("127.0.0.1", |_| Action::Hang).await;
    let cap = cap
        .map(|n| {
            format!(
                "cache: {{maxLookupsInFlight: {n}, maxLookupsInFlightPerNamespace: {n}, \
                 maxLookupsInFlightPerRegistry: {n}}}\n"
            )
        })
        .unwrap_or_default();
    let config = env.config(&format!("  hang.example.com:\n    endpoint: {}\nlookupTimeout: 120s\n{cap}", hang.url()));
    let wh = Webhook::spawn(&config, api, &[], "warn");
    wh.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = support::rss_kib(wh.pid());
    review_new_images(&wh, REVIEWS, |r, c| format!("hang.example.com/team/app:wait-{r}-{c}"), "1s", 64).await;
    let metrics = wh.metrics().await;
    let gauge = |name: &str| {
        metrics.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    let waiting = gauge("pullguard_lookups_in_flight ");
    let refused: serde_json::Map<String, Value> = ["all", "namespace", "registry"]
        .into_iter()
        .map(|limit| {
            (limit.to_string(), json!(gauge(&format!("pullguard_lookups_refused_total{{limit=\"{limit}\"}} "))))
        })
        .collect();
    let held = support::rss_kib(wh.pid());
    let v = json!({"reviews": REVIEWS, "images_per_review": IMAGES_PER_REVIEW, "cap": cap.trim(),
        "lookups_in_flight_metric": waiting, "lookups_refused_metric": refused,
        "rss_before_kib": idle, "rss_with_lookups_in_flight_kib": held,
        "kib_per_lookup_in_flight": (held as f64 - idle as f64) / waiting.max(1.0)});
    println!("memory, lookups in flight: {v}");
    v
}

/// `bench ab`: this build's server against another build's (`PULLGUARD_BENCH_B=path/to/pullguard`), both started
/// on the server's CPUs and loaded one at a time with the webhook bench's review at each fixed rate, in pairs
/// whose order alternates (A then B, then B then A). Like a review and its control in `webhook`, the two runs of
/// a pair share the machine's state, which two bench runs minutes apart on this VM do not. Writes each pair's
/// CPU per review and tail, and the medians of B's ratios to A.
async fn bench_ab(env: &Env) {
    let Some(other) = std::env::var_os("PULLGUARD_BENCH_B").map(PathBuf::from) else {
        eprintln!("bench ab: set PULLGUARD_BENCH_B to the other build's pullguard binary");
        std::process::exit(2);
    };
    let api = cluster().await;
    let (server_cpus, load_cpus) = cpus();
    let (review, body) = bench_review(env);
    let a = webhook_on(env, &api, &server_cpus, &review).await;
    let b = program_on(&other, env, &api, &server_cpus, &review).await;
    println!(
        "A = {}, B = {}; servers on CPUs {server_cpus}, load generator on {load_cpus}",
        support::binary().display(),
        other.display()
    );
    let (mut pairs, mut summary) = (vec![], vec![]);
    for (proto, extra) in protocols() {
        for rate in rates() {
            let mut ratios = vec![];
            for repeat in 0..repeats() {
                let order = if repeat % 2 == 0 { [("a", &a), ("b", &b)] } else { [("b", &b), ("a", &a)] };
                let mut pair = json!({"protocol": proto, "offered_rps": rate, "repeat": repeat, "first": order[0].0});
                for (name, wh) in order {
                    pair[name] = fixed_rate_run(wh, &wh.url("10s"), Some(&body), rate, &extra, env.dir.path());
                }
                let at = |run: &str, k: &str| pair[run][k].as_f64().unwrap_or(f64::NAN);
                let of = |k: &str| at("b", k) / at("a", k);
                let (cpu, p99) = ("server_cpu_us_per_request", "p99_ms");
                let ratio = (of(cpu), of(p99), of("p99_9_ms"));
                println!(
                    "ab {proto} {rate}/s #{repeat}: CPU per review A {:.0} µs, B {:.0} µs (B/A {:.2}); \
                     p99 A {:.3} ms, B {:.3} ms (B/A {:.2})",
                    at("a", cpu),
                    at("b", cpu),
                    ratio.0,
                    at("a", p99),
                    at("b", p99),
                    ratio.1,
                );
                ratios.push(ratio);
                pairs.push(pair);
            }
            summary.push(json!({"protocol": proto, "offered_rps": rate, "pairs": ratios.len(),
                "b_over_a_cpu_per_review": spread(ratios.iter().map(|r| r.0)),
                "b_over_a_p99": spread(ratios.iter().map(|r| r.1)),
                "b_over_a_p99_9": spread(ratios.iter().map(|r| r.2))}));
        }
    }
    save(
        "ab",
        &json!({"a": support::binary(), "b": other, "server_cpus": server_cpus, "load_cpus": load_cpus,
        "run_s": RUN_S, "warm_up_s": WARM_UP_S, "summary": summary, "pairs": pairs}),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let which: Vec<String> = std::env::args().skip(1).collect();
    let run = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let env = Env::start(Options::default()).await;
    if run("webhook") {
        bench_webhook(&env).await;
    }
    if run("economy") {
        bench_economy(&env).await;
    }
    if run("gate") {
        bench_gate(&env).await;
    }
    if run("memory") {
        bench_memory(&env).await;
    }
    if run("profile") {
        bench_profile(&env).await;
    }
    // Not part of a full run: it needs another build to compare with.
    if which.iter().any(|w| w == "ab") {
        bench_ab(&env).await;
    }
}
