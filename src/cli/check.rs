//! `pullguard check`: the engine over manifest files.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use futures_util::StreamExt;

use super::{EngineArgs, build_engine, load_config};
use crate::cluster::Snapshot;
use crate::input::{self, InputError};
use crate::report::{Format, Report};
use crate::workload::Workload;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub output: Format,
    /// Namespace for objects that name none.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// No network at all: check references, secrets and credential candidates only.
    #[arg(long)]
    pub offline: bool,
    /// Every document must be a Kubernetes object: documents with neither apiVersion nor kind, or that are not
    /// mappings (kustomization.yaml, Chart.yaml, values.yaml…), are input errors instead of being skipped.
    #[arg(long)]
    pub strict: bool,
    /// List the documents that were skipped as not Kubernetes objects.
    #[arg(long, short)]
    pub verbose: bool,
    /// Manifest files or directories (.yaml, .yml, .json, recursively); `-` reads stdin.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

pub async fn run(args: CheckArgs) -> anyhow::Result<u8> {
    let CheckArgs { engine, output, namespace, offline, strict, verbose, paths } = args;
    let cfg = load_config(&engine)?;
    let engine = build_engine(&cfg, offline)?;
    let (docs, errors) = input::load(&paths);
    let (skipped, mut errors): (Vec<_>, Vec<_>) = errors.into_iter().partition(|e| e.not_an_object && !strict);
    let doc_error = |d: &input::Document, message: String| InputError {
        file: d.file.clone(),
        document: Some(d.index),
        message,
        not_an_object: false,
    };

    // Secrets and ServiceAccounts in the input are this run's cluster.
    let mut snapshot = Snapshot::default();
    for d in &docs {
        if let Err(e) = snapshot.add_object(&d.value, &namespace) {
            errors.push(doc_error(d, e.to_string()));
        }
    }
    let mut workloads = Vec::new();
    for d in &docs {
        match Workload::from_object(&d.value, &namespace) {
            Ok(Some(mut w)) => {
                w.object.file = Some(d.file.clone());
                w.object.document = Some(d.index);
                workloads.push(w);
            }
            Ok(None) => {}
            Err(e) => errors.push(doc_error(d, e.to_string())),
        }
    }
    let results: Vec<_> = futures_util::stream::iter(&workloads)
        .map(|w| engine.check_workload(w, &snapshot, None))
        .buffered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    let report = Report::new(workloads.len(), results, errors).with_skipped(skipped, verbose);
    print_report(&report, output)
}

/// Writes the report to stdout (colour only on a terminal, never with `NO_COLOR`) and gives its exit code.
pub(crate) fn print_report(report: &Report, output: Format) -> anyhow::Result<u8> {
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = std::io::stdout().lock();
    let written = out.write_all(report.render(output, color).as_bytes()).and_then(|()| out.flush());
    match written {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(report.exit_code()),
    }
}
