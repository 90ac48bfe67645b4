use std::process::ExitCode;

use clap::Parser;

/// jemalloc: a warm review is many small allocations (JSON trees, strings, futures); glibc's malloc and free
/// were 15–20 % of a review's CPU in the profile (README: Performance).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // One crypto provider for every TLS user in the process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = match pullguard::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    cli.init_logging();
    match pullguard::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pullguard: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
