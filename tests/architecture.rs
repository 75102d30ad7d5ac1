//! The layering rules of ARCHITECTURE.md, checked on the sources so that they cannot erode:
//! `src/onnx` imports nothing of the crate but `error`; the top-level modules import each other
//! without cycles; no source file grows past 600 lines of non-test code; and no op name the op
//! table knows is spelled as a string outside `src/ops` and `src/opset` (the rest of the engine
//! asks the table, or uses its constants).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    walk(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.strip_prefix(&src).unwrap().to_path_buf(), text)
        })
        .collect()
}

/// The code before the file's `#[cfg(test)]` module, without comment lines.
fn non_test_code(text: &str) -> Vec<&str> {
    let end = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..end].lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("//")).collect()
}

/// The top-level module a file belongs to (`calibrate/select.rs` -> `calibrate`).
fn top_module(rel: &Path) -> String {
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a file names through `crate::`.
fn crate_imports(code: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code {
        let mut rest = *line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn the_onnx_layer_imports_only_itself_and_error() {
    for (rel, text) in sources() {
        if top_module(&rel) != "onnx" {
            continue;
        }
        let imports = crate_imports(&non_test_code(&text));
        let foreign: Vec<_> = imports.iter().filter(|m| !matches!(m.as_str(), "onnx" | "error")).collect();
        assert!(foreign.is_empty(), "src/{} imports {foreign:?}: src/onnx is the bottom layer", rel.display());
    }
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in sources() {
        let from = top_module(&rel);
        let to = crate_imports(&non_test_code(&text));
        edges.entry(from.clone()).or_default().extend(to.into_iter().filter(|m| *m != from));
    }
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        if let Some(cycle) = visit(m, &edges, &mut vec![], &mut done) {
            panic!("import cycle among top-level modules: {}", cycle.join(" -> "));
        }
    }
    assert!(edges.len() > 10, "the walk found the crate's modules: {:?}", edges.keys());
}

#[test]
fn no_source_file_passes_600_lines_of_non_test_code() {
    let big: Vec<String> = sources()
        .iter()
        .map(|(rel, text)| (rel, non_test_code(text).len()))
        .filter(|(_, n)| *n > MAX_LINES)
        .map(|(rel, n)| format!("src/{}: {n}", rel.display()))
        .collect();
    assert!(big.is_empty(), "split these by responsibility: {big:?}");
}

#[test]
fn op_names_are_spelled_only_in_the_op_table() {
    let files = sources();
    // Every op name the table defines a constant for: `pub const CONV: &str = "Conv";`.
    let mut names = BTreeSet::new();
    for (rel, text) in &files {
        if top_module(rel) != "ops" {
            continue;
        }
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("pub const ")
                && rest.contains(": &str = \"")
            {
                let value = rest.split('"').nth(1).unwrap();
                names.insert(format!("\"{value}\""));
            }
        }
    }
    assert!(names.contains("\"Conv\"") && names.contains("\"DequantizeLinear\"") && names.len() > 20, "{names:?}");
    let mut found = vec![];
    for (rel, text) in &files {
        if matches!(top_module(rel).as_str(), "ops" | "opset") {
            continue;
        }
        for line in non_test_code(text) {
            for name in &names {
                if line.contains(name.as_str()) {
                    found.push(format!("src/{}: {line}", rel.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "use the op table (quantize_rs::ops) instead of these names:\n{}", found.join("\n"));
}
