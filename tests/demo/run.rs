//! `cargo run --example demo`: starts a real registry (Debian's docker-registry) on 127.0.0.1, seeds it,
//! routes docker.io, registry.example.com and registry.internal to local endpoints, and runs
//! `pullguard check` over `tests/demo/manifests.yaml` — the same code path as the binary.

#[path = "../integration/support/mod.rs"]
mod support;

use clap::Parser;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let env = support::Env::start(support::Options { private: true, token: false }).await;
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = env
        .config(&format!("  registry.internal:5000:\n    endpoint: http://127.0.0.1:{refused}\nlookupTimeout: 2s\n"));
    let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/demo/manifests.yaml");
    let mut args = vec!["pullguard".to_string(), "check".into(), "--config".into(), cfg.display().to_string()];
    args.extend(std::env::args().skip(1));
    args.push(manifests.display().to_string());
    eprintln!("$ pullguard check --config <routes to a local registry> tests/demo/manifests.yaml\n");
    // `check` runs its own runtime; give it a thread of its own while the registries keep serving here.
    let cli = pullguard::cli::Cli::parse_from(args);
    let code = tokio::task::spawn_blocking(move || pullguard::cli::run(cli)).await.unwrap();
    match code {
        Ok(c) => {
            eprintln!("(exit code {c}: 0 nothing denied, 1 at least one deny, 2 input error)");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
