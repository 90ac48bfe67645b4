//! JUnit XML: one testcase per container; deny is a failure, skip is skipped, warn passes with output.

use std::fmt::Write as _;

use super::Report;
use crate::policy::Verdict;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => o.push(c),
        }
    }
    o
}

pub fn render(report: &Report) -> String {
    let s = &report.summary;
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"pullguard\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">",
        s.containers,
        s.deny,
        report.errors.len(),
        s.skip
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"pullguard check\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">",
        s.containers + report.errors.len(),
        s.deny,
        report.errors.len(),
        s.skip
    );
    for r in &report.results {
        let class = format!("{}.{}.{}", r.object.namespace, r.object.kind, r.object.name);
        let name = format!("{} ({})", r.container, r.image);
        let file = r.object.file.clone().unwrap_or_default();
        let _ =
            write!(out, "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\">", esc(&class), esc(&name), esc(&file));
        match r.verdict {
            Verdict::Deny => {
                let _ = write!(
                    out,
                    "<failure type=\"{}\" message=\"{}\">{}</failure>",
                    r.reason,
                    esc(&r.message),
                    esc(&r.message)
                );
            }
            Verdict::Skip => {
                let _ = write!(out, "<skipped message=\"{}\"/>", esc(&r.message));
            }
            Verdict::Warn => {
                let _ = write!(out, "<system-out>WARN {}: {}</system-out>", r.reason, esc(&r.message));
            }
            Verdict::Allow => {}
        }
        out.push_str("</testcase>\n");
    }
    for e in &report.errors {
        let name = match e.document {
            Some(d) => format!("document {d}"),
            None => "file".into(),
        };
        let _ = writeln!(
            out,
            "    <testcase classname=\"input\" name=\"{}\" file=\"{}\"><error message=\"{}\"/></testcase>",
            esc(&name),
            esc(&e.file),
            esc(&e.message)
        );
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}
