//! Reading manifests: files, directories, stdin; multi-document YAML, JSON, and `kind: List`.
//!
//! A document that cannot be parsed is an [`InputError`] naming the file and document index; every other
//! document is still returned.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

/// One Kubernetes object from the input.
#[derive(Clone, Debug)]
pub struct Document {
    pub file: String,
    /// Index of the YAML document (or JSON value) in the file, from 0.
    pub index: usize,
    pub value: Value,
}

/// A file or document that could not be read.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct InputError {
    pub file: String,
    pub document: Option<usize>,
    pub message: String,
    /// The document does not claim to be a Kubernetes object (not a mapping, or neither `apiVersion` nor
    /// `kind`): a kustomization.yaml, Chart.yaml, values.yaml or tool config. `check` skips it unless `--strict`.
    #[serde(skip)]
    pub not_an_object: bool,
}

/// Reads every path (`-` is stdin). Directories are walked recursively for .yaml, .yml and .json files, in
/// sorted order.
pub fn load(paths: &[PathBuf]) -> (Vec<Document>, Vec<InputError>) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => parse_text("-", &text, None, &mut docs, &mut errors),
                Err(e) => errors.push(file_error("-", e.to_string())),
            }
            continue;
        }
        let mut files = Vec::new();
        if p.is_dir() {
            walk(p, &mut files, &mut errors);
            files.sort();
        } else {
            files.push(p.clone());
        }
        for f in files {
            let name = f.display().to_string();
            match std::fs::read(&f) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => {
                        parse_text(&name, &text, f.extension().and_then(|e| e.to_str()), &mut docs, &mut errors)
                    }
                    Err(_) => errors.push(file_error(&name, "not UTF-8 text".into())),
                },
                Err(e) => errors.push(file_error(&name, e.to_string())),
            }
        }
    }
    (docs, errors)
}

fn file_error(file: &str, message: String) -> InputError {
    InputError { file: file.to_string(), document: None, message, not_an_object: false }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<InputError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return errors.push(file_error(&dir.display().to_string(), e.to_string())),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out, errors);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(path);
        }
    }
}

/// Parses one file's text into objects.
pub fn parse_text(file: &str, text: &str, ext: Option<&str>, docs: &mut Vec<Document>, errors: &mut Vec<InputError>) {
    let looks_json = ext == Some("json") || (ext.is_none() && text.trim_start().starts_with(['{', '[']));
    if looks_json {
        parse_json_stream(file, text, docs, errors);
        return;
    }
    for (index, chunk) in split_yaml_documents(text).into_iter().enumerate() {
        if chunk.lines().all(|l| l.trim().is_empty() || l.trim().starts_with('#')) {
            continue;
        }
        match serde_saphyr::from_str::<Value>(chunk) {
            Ok(v) => push_object(file, index, v, docs, errors),
            Err(e) => {
                // saphyr counts lines within the document; say where the document starts in the file.
                let offset = chunk.as_ptr() as usize - text.as_ptr() as usize;
                let line = text[..offset].matches('\n').count() + 1;
                let message = format!("invalid YAML (document starts at line {line} of the file): {e}");
                errors.push(InputError { file: file.into(), document: Some(index), message, not_an_object: false });
            }
        }
    }
}

/// A stream of JSON values. After a malformed value the parser cannot know where it ends, so it resumes at the
/// next line that opens a value in column 0 (`{` or `[`, as `kubectl get -o json` and `jq` print them); each
/// malformed stretch is one error, and every later document is still read.
fn parse_json_stream(file: &str, text: &str, docs: &mut Vec<Document>, errors: &mut Vec<InputError>) {
    let mut start = 0;
    let mut index = 0;
    while start < text.len() {
        let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        let failed = loop {
            match stream.next() {
                None => break None,
                Some(Ok(v)) => {
                    push_object(file, index, v, docs, errors);
                    index += 1;
                }
                Some(Err(e)) => break Some((e, stream.byte_offset())),
            }
        };
        let Some((e, parsed_to)) = failed else { return };
        let line = text[..start].matches('\n').count() + e.line();
        errors.push(InputError {
            file: file.into(),
            document: Some(index),
            message: format!("invalid JSON (line {line} of the file, column {}): {e}", e.column()),
            not_an_object: false,
        });
        index += 1;
        // Resume after the line the bad value starts on, at the next value opening in column 0.
        let bad_start =
            start + parsed_to + text[start + parsed_to..].len() - text[start + parsed_to..].trim_start().len();
        let after = text[bad_start..].find('\n').map_or(text.len(), |i| bad_start + i + 1);
        match find_value_start(&text[after..]) {
            Some(i) => start = after + i,
            None => return,
        }
    }
}

/// The offset of the first line that begins with `{` or `[`.
fn find_value_start(text: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with(['{', '[']) {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

/// Splits a YAML stream at `---` document markers (column 0) and `...` end markers. Comments before the first
/// marker are not a document of their own.
fn split_yaml_documents(text: &str) -> Vec<&str> {
    let has_content = |chunk: &str| {
        chunk.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
    };
    let mut out = Vec::new();
    let (mut start, mut offset) = (0, 0);
    let mut open = false;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") {
            if open || has_content(&text[start..offset]) {
                out.push(&text[start..offset]);
            }
            open = true;
            // Content after the marker on the same line belongs to the new document.
            start = offset + 3;
        } else if bare == "..." {
            if open || has_content(&text[start..offset]) {
                out.push(&text[start..offset]);
            }
            open = false;
            start = offset + line.len();
        }
        offset += line.len();
    }
    if open || has_content(&text[start..]) {
        out.push(&text[start..]);
    }
    out
}

fn push_object(file: &str, index: usize, v: Value, docs: &mut Vec<Document>, errors: &mut Vec<InputError>) {
    match &v {
        Value::Null => {}
        Value::Object(map) => {
            let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
            if kind.is_empty() {
                let claims = map.get("apiVersion").is_some() || map.get("kind").is_some();
                let message = if claims {
                    "document has an apiVersion but no kind"
                } else {
                    "document has no apiVersion and no kind: not a Kubernetes object"
                };
                errors.push(InputError {
                    file: file.into(),
                    document: Some(index),
                    message: message.into(),
                    not_an_object: !claims,
                });
                return;
            }
            if let Some(item_kind) = kind.strip_suffix("List") {
                let items = map.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
                for mut item in items {
                    if item.get("kind").is_none() && !item_kind.is_empty() {
                        if let Some(obj) = item.as_object_mut() {
                            obj.insert("kind".into(), Value::String(item_kind.into()));
                        }
                    }
                    push_object(file, index, item, docs, errors);
                }
                return;
            }
            docs.push(Document { file: file.into(), index, value: v });
        }
        _ => errors.push(InputError {
            file: file.into(),
            document: Some(index),
            message: "document is not a mapping: not a Kubernetes object".into(),
            not_an_object: true,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<Document>, Vec<InputError>) {
        let (mut d, mut e) = (vec![], vec![]);
        parse_text("f.yaml", text, Some("yaml"), &mut d, &mut e);
        (d, e)
    }

    #[test]
    fn multi_document_with_a_broken_one() {
        let (d, e) = parse(
            "# Source: chart/a.yaml\n---\nkind: Pod\nmetadata: {name: a}\n---\nkind: [\n---\nkind: Pod\nmetadata: {name: c}\n...\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].index, d[1].index), (0, 2));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].document, Some(1));
    }

    #[test]
    fn list_items_are_objects() {
        let (d, e) = parse("apiVersion: v1\nkind: List\nitems:\n- kind: Pod\n  metadata: {name: a}\n- kind: Secret\n");
        assert!(e.is_empty());
        assert_eq!(d.len(), 2);
        let (d, _) = parse("kind: PodList\nitems:\n- metadata: {name: a}\n");
        assert_eq!(d[0].value["kind"], "Pod");
    }

    #[test]
    fn json_stream_and_non_objects() {
        let (mut d, mut e) = (vec![], vec![]);
        parse_text("f.json", "{\"kind\":\"Pod\"} {\"kind\":\"Pod\"}", Some("json"), &mut d, &mut e);
        assert_eq!(d.len(), 2);
        let (_, e) = parse("- a\n- b\n");
        assert_eq!(e[0].message, "document is not a mapping: not a Kubernetes object");
        let (_, e) = parse("metadata: {name: x}\n");
        assert!(e[0].message.contains("no kind"));
    }

    #[test]
    fn document_marker_variants() {
        assert_eq!(split_yaml_documents("a: 1\n---\nb: 2\n").len(), 2);
        assert_eq!(split_yaml_documents("---\na: 1\n").len(), 1);
        assert_eq!(split_yaml_documents("a: |\n  ---\n  x\n").len(), 1, "indented --- is content");
        assert_eq!(split_yaml_documents("--- {kind: Pod}\n").len(), 1);
    }

    /// A malformed JSON document used to end the stream silently: the documents after it were dropped unreported.
    #[test]
    fn json_stream_goes_on_after_a_malformed_document() {
        let (mut d, mut e) = (vec![], vec![]);
        let text = "{\"kind\": \"Pod\", \"metadata\": {\"name\": \"a\"}}\n{\"kind\": \"Pod\", oops\n}\n{\"kind\": \"Pod\", \"metadata\": {\"name\": \"c\"}}\n";
        parse_text("f.json", text, Some("json"), &mut d, &mut e);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].document, Some(1));
        let names: Vec<&str> = d.iter().map(|d| d.value["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(d[1].index, 2);
    }
}
