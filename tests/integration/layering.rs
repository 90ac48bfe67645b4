//! The module layering the README's Layout section promises: every `crate::` path in `src/` points at a module
//! listed below its own, so there is no cycle and no lower layer (registry, cache, credentials…) reaching up
//! into a higher one (policy, engine, admission, cli). Unit-test modules (`#[cfg(test)] mod tests`) are exempt.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top to bottom, as in README.md. A module may use only modules after it.
const LAYERS: &[&str] = &[
    "fuzzing",
    "cli",
    "server",
    "admission",
    "report",
    "config",
    "metrics",
    "engine",
    "contract",
    "policy",
    "cluster",
    "cache",
    "registry",
    "suggest",
    "credentials",
    "scheduling",
    "workload",
    "platform",
    "reference",
    "input",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level modules named by `crate::x` paths and `use crate::{x, …}` groups in `code`.
fn uses(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(|item| ident(item.trim())).filter(|m| !m.is_empty()));
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

#[test]
fn modules_depend_only_downwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    let mut wrong = vec![];
    for file in files {
        let rel = file.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        let module = rel.split(['/', '.']).next().unwrap().to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let rank = LAYERS.iter().position(|m| *m == module).unwrap_or_else(|| panic!("{rel}: add {module} to LAYERS"));
        let code = std::fs::read_to_string(&file).unwrap();
        let code = code.split("#[cfg(test)]\nmod tests").next().unwrap();
        for used in uses(code) {
            if used == module {
                continue;
            }
            match LAYERS.iter().position(|m| *m == used) {
                Some(r) if r > rank => {}
                Some(_) => wrong.push(format!("{rel} uses crate::{used}, which is not below {module}")),
                None => wrong.push(format!("{rel} uses crate::{used}, which is not in LAYERS")),
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_scanner_sees_paths_and_groups() {
    let found = uses(
        "use crate::policy::{Mode, Verdict};\nuse crate::{cache, registry::Failure};\nlet x = crate::engine::go();",
    );
    assert_eq!(found, ["cache", "engine", "policy", "registry"].into_iter().map(String::from).collect());
}
