//! SARIF 2.1.0: one result per warn or deny, located at the manifest file.

use serde_json::{Value, json};

use super::Report;
use crate::policy::{Reason, Verdict};

pub fn render(report: &Report) -> String {
    let rules: Vec<Value> =
        Reason::ALL.iter().map(|r| json!({"id": r.to_string(), "shortDescription": {"text": r.summary()}})).collect();
    let mut results: Vec<Value> = report
        .results
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Warn | Verdict::Deny))
        .map(|r| {
            json!({
                "ruleId": r.reason.to_string(),
                "level": if r.verdict == Verdict::Deny { "error" } else { "warning" },
                "message": {"text": format!("{}/{} {} ({}): {}", r.object.kind, r.object.name, r.label(), r.image, r.message)},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": r.object.file.clone().unwrap_or_default()}},
                               "logicalLocations": [{"fullyQualifiedName": format!("{}/{}/{}.{}", r.object.namespace, r.object.kind, r.object.name, r.field)}]}],
                "properties": {"image": r.image, "reference": r.reference, "suggestions": r.suggestions,
                               "document": r.object.document}
            })
        })
        .collect();
    results.extend(report.errors.iter().map(|e| {
        json!({
            "ruleId": "InputError",
            "level": "error",
            "message": {"text": e.message},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": e.file}}}],
            "properties": {"document": e.document}
        })
    }));
    let doc = json!({
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [{
            "tool": {"driver": {"name": "pullguard", "version": env!("CARGO_PKG_VERSION"), "rules": rules}},
            "results": results
        }]
    });
    let mut s = serde_json::to_string_pretty(&doc).expect("sarif serializes");
    s.push('\n');
    s
}
