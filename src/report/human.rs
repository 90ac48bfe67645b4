//! Human output: grouped by object, worst first within each, the fix in the message.

use std::fmt::Write as _;

use super::{Report, location};
use crate::policy::Verdict;
use crate::workload::ContainerType;

pub fn render(report: &Report, color: bool) -> String {
    let paint = |code: &str, s: &str| {
        if color { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
    };
    let mut out = String::new();
    for e in &report.errors {
        let _ = writeln!(out, "{} {}: {}", paint("1;31", "error"), location(Some(&e.file), e.document), e.message);
    }
    if report.verbose {
        for e in &report.skipped {
            let _ = writeln!(out, "{} {}: {}", paint("2", "skipped"), location(Some(&e.file), e.document), e.message);
        }
    }
    if !report.errors.is_empty() || (report.verbose && !report.skipped.is_empty()) {
        out.push('\n');
    }
    let mut i = 0;
    while i < report.results.len() {
        let obj = &report.results[i].object;
        let mut j = i;
        while j < report.results.len() && report.results[j].object == *obj {
            j += 1;
        }
        let group = &report.results[i..j];
        let worst = group.iter().map(|r| r.verdict).max().unwrap_or(Verdict::Allow);
        let at = location(obj.file.as_deref(), obj.document);
        let at = if at.is_empty() { String::new() } else { format!("  {}", paint("2", &at)) };
        let _ = writeln!(
            out,
            "{} {}/{} {}{at}",
            badge(worst, &paint),
            obj.kind,
            obj.name,
            paint("2", &format!("(namespace {})", obj.namespace))
        );
        for r in group {
            let _ = writeln!(
                out,
                "  {} {} {} {}",
                badge(r.verdict, &paint),
                match r.container_type {
                    ContainerType::ImageVolume => format!("volume {}", r.container),
                    _ => r.container.clone(),
                },
                paint("2", &format!("[{}]", r.image)),
                r.reason
            );
            // The fix first, then why, then anything else worth knowing.
            match &r.fix {
                Some(fix) => {
                    let _ = writeln!(out, "        {} {fix}", paint("1", "fix:"));
                    let _ = writeln!(out, "        {} {}", paint("2", "why:"), r.problem);
                }
                None => {
                    let _ = writeln!(out, "        {}", r.problem);
                }
            }
            for note in &r.notes {
                let _ = writeln!(out, "        {} {note}", paint("2", "note:"));
            }
        }
        out.push('\n');
        i = j;
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "{} objects, {} containers: {} allowed, {} warned, {} denied, {} skipped{}",
        s.objects,
        s.containers,
        s.allow,
        s.warn,
        paint(if s.deny > 0 { "1;31" } else { "0" }, &s.deny.to_string()),
        s.skip,
        if report.errors.is_empty() { String::new() } else { format!("; {} input errors", report.errors.len()) }
    );
    let n = report.skipped.len();
    if n > 0 {
        let _ = writeln!(
            out,
            "{n} document{} skipped (not Kubernetes objects: no apiVersion and no kind, or not a mapping){}",
            if n == 1 { "" } else { "s" },
            if report.verbose { "" } else { "; --verbose lists them, --strict makes them errors" }
        );
    }
    out
}

fn badge(v: Verdict, paint: &dyn Fn(&str, &str) -> String) -> String {
    match v {
        Verdict::Allow => paint("32", "ALLOW"),
        Verdict::Warn => paint("33", "WARN "),
        Verdict::Deny => paint("1;31", "DENY "),
        Verdict::Skip => paint("2", "SKIP "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ContainerResult;
    use crate::policy::Reason;
    use crate::workload::{ContainerType, ObjectRef};

    /// A note (here: a second secret problem) used to be cut out of the message with the fix, so it was printed
    /// as part of the `fix:` line. Each part now has its own line.
    #[test]
    fn fix_why_and_notes_print_on_their_own_lines() {
        let (problem, fix, note) = (
            "registry r.io failed for r.io/a:1: 500 (pullguard could not verify the image, so it is admitted).",
            "retry later, or check the registry's health.",
            "Also: imagePullSecret \"old\" does not exist in namespace team.",
        );
        let result = ContainerResult {
            object: ObjectRef { kind: "Pod".into(), namespace: "team".into(), name: "p".into(), ..Default::default() }
                .into(),
            container: "app".into(),
            container_type: ContainerType::Container,
            field: "spec.containers[0].image".into(),
            image: "r.io/a:1".into(),
            reference: Some("r.io/a:1".into()),
            verdict: Verdict::Warn,
            reason: Reason::RegistryError,
            message: format!("{problem} Fix: {fix} {note}"),
            problem: problem.into(),
            fix: Some(fix.into()),
            notes: vec![note.into()],
            suggestions: vec![],
            digest: None,
            platforms: Default::default(),
            credentials: vec![],
            credential_used: None,
            served_by: None,
        };
        let out = render(&Report::new(1, vec![result], vec![]), false);
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert!(lines.contains(&format!("fix: {fix}").as_str()), "{out}");
        assert!(lines.contains(&format!("why: {problem}").as_str()), "{out}");
        assert!(lines.contains(&format!("note: {note}").as_str()), "{out}");
    }
}
