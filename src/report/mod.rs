//! Report formats for `pullguard check`: human, json (the stable contract), sarif, junit.

mod human;
mod junit;
mod sarif;

use serde::Serialize;

use crate::contract::ContainerResult;
use crate::input::InputError;
use crate::policy::Verdict;

/// Counts over all containers.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub objects: usize,
    pub containers: usize,
    pub allow: usize,
    pub warn: usize,
    pub deny: usize,
    pub skip: usize,
    /// Documents that are not Kubernetes objects (see `skipped`).
    #[serde(rename = "skippedDocuments")]
    pub skipped_documents: usize,
}

/// Everything `check` found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub summary: Summary,
    pub results: Vec<ContainerResult>,
    pub errors: Vec<InputError>,
    /// Documents that do not claim to be Kubernetes objects, skipped (listed, not errors).
    pub skipped: Vec<InputError>,
    /// List `skipped` in human output too.
    #[serde(skip)]
    pub verbose: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Human,
    Json,
    Sarif,
    Junit,
}

impl Report {
    pub fn new(objects: usize, results: Vec<ContainerResult>, errors: Vec<InputError>) -> Self {
        let mut summary = Summary { objects, containers: results.len(), ..Summary::default() };
        for r in &results {
            match r.verdict {
                Verdict::Allow => summary.allow += 1,
                Verdict::Warn => summary.warn += 1,
                Verdict::Deny => summary.deny += 1,
                Verdict::Skip => summary.skip += 1,
            }
        }
        Self { summary, results, errors, skipped: Vec::new(), verbose: false }
    }

    /// Renders in `format`; `color` only applies to human output.
    pub fn render(&self, format: Format, color: bool) -> String {
        match format {
            Format::Human => human::render(self, color),
            Format::Json => {
                let mut s = serde_json::to_string_pretty(self).expect("report serializes");
                s.push('\n');
                s
            }
            Format::Sarif => sarif::render(self),
            Format::Junit => junit::render(self),
        }
    }

    /// With the documents that were skipped as not Kubernetes objects, listed in human output when `verbose`.
    pub fn with_skipped(mut self, skipped: Vec<InputError>, verbose: bool) -> Self {
        self.summary.skipped_documents = skipped.len();
        self.skipped = skipped;
        self.verbose = verbose;
        self
    }

    /// ripgrep-style exit code: 2 input errors, 1 a deny, 0 clean.
    pub fn exit_code(&self) -> u8 {
        if !self.errors.is_empty() {
            2
        } else if self.summary.deny > 0 {
            1
        } else {
            0
        }
    }
}

/// `file#document` or `file`, for locating results.
pub(crate) fn location(file: Option<&str>, document: Option<usize>) -> String {
    match (file, document) {
        (Some(f), Some(d)) => format!("{f} (document {d})"),
        (Some(f), None) => f.to_string(),
        _ => String::new(),
    }
}
