//! Integration tests: the engine and the real `pullguard` binary against real registries (Debian's
//! docker-registry on 127.0.0.1), a token issuer, and fault servers for what a real registry will not do.

mod support;

mod audit;
mod causes;
mod check_cli;
mod drills;
mod economy;
mod faults;
mod fuzz_corpus;
mod hardening;
mod image;
mod layering;
mod mirrors;
mod providers;
mod webhook;

/// The webhook tests' cluster, shared with the drills.
pub(crate) async fn webhook_cluster() -> support::apiserver::ApiServer {
    webhook::cluster().await
}
