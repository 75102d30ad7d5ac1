//! Config files: many quantization jobs in one YAML (`.yaml`, `.yml`) or TOML (`.toml`) file.
//!
//! ```yaml
//! bits: 8                     # every key of quantize_rs::Recipe (snake_case or kebab-case):
//! per_channel: true           # defaults for every job below
//! min_elements: 64
//! models:
//!   - input: models/a.onnx    # paths are relative to the config file's folder
//!     output: out/a.int8.onnx
//!   - input: models/b.onnx
//!     output: out/b.int4.onnx
//!     bits: 4                 # per-model overrides; tables such as `calibration` merge key by key
//!     block_size: 32
//! batch:                      # and/or every model a glob matches
//!   input_dir: more/*.onnx    # a glob, or a folder (its *.onnx)
//!   output_dir: out/more      # each model goes to <output_dir>/<file stem>.onnx
//!   skip_existing: true
//!   bits: 8                   # overrides for the batch
//! ```
//!
//! Recipe keys are parsed by the library's one recipe parser ([`Recipe::from_layers`]), as
//! `[package.metadata.quantize]` is. Unknown keys and bad values are errors naming the key's
//! path, e.g. `models[1].bitz: unknown field `bitz`, expected one of `bits`, ...`.

use std::path::{Path, PathBuf};

use quantize_rs::{KeyPath, KeyStyle, Recipe, RecipeError, RecipeLayer};
use serde_json::{Map, Value};

use crate::jobs::Job;

/// A config file's jobs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file.
    pub path: PathBuf,
    /// The jobs: `models` in order, then the batch's models in file-name order.
    pub jobs: Vec<Job>,
}

/// A config file that cannot be used; the message names the file and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Reads and resolves the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    // Empty for a file in the working folder, so job paths print as written.
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let value = parse_text(&text, path)?;
    resolve(value, &dir)
        .map(|jobs| Config { path: path.to_path_buf(), jobs })
        .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
}

/// Parses YAML or TOML (by `path`'s extension) into a JSON value.
fn parse_text(text: &str, path: &Path) -> Result<Value, ConfigError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let fail = |m: String| ConfigError(format!("{}: {}", path.display(), one_line(&m)));
    match ext.as_str() {
        "toml" => {
            let table: toml::Table = toml::from_str(text).map_err(|e| fail(e.to_string()))?;
            serde_json::to_value(table).map_err(|e| fail(e.to_string()))
        }
        "yaml" | "yml" => {
            // serde-saphyr's first line is `error: line L column C: reason`; a source excerpt follows.
            let v: Value = serde_saphyr::from_str(text).map_err(|e| {
                let m = e.to_string();
                let first = m.lines().next().unwrap_or("").trim();
                fail(first.strip_prefix("error: ").unwrap_or(first).to_string())
            })?;
            Ok(if v.is_null() { Value::Object(Map::new()) } else { v })
        }
        _ => Err(fail("unknown config format: name the file .toml, .yaml or .yml".into())),
    }
}

/// Parser messages span several lines (a source excerpt with a caret): keep the location and
/// the reason.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> =
        message.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('|') && !l.contains(" | ")).collect();
    match lines.as_slice() {
        [] => message.trim().to_string(),
        [one] => one.to_string(),
        [first, .., last] => format!("{first}: {last}"),
    }
}

const MODEL_KEYS: [&str; 2] = ["input", "output"];
const BATCH_KEYS: [&str; 3] = ["input_dir", "output_dir", "skip_existing"];

fn resolve(value: Value, dir: &Path) -> Result<Vec<Job>, ConfigError> {
    let Value::Object(mut top) = value else {
        return Err(ConfigError(format!("expected a table of keys at the top, got {}", kind(&value))));
    };
    let models = top.remove("models");
    let batch = top.remove("batch");
    if models.is_none() && batch.is_none() {
        return Err(ConfigError("declares no jobs: add `models:` (a list of {input, output}) or `batch:`".into()));
    }
    let defaults = top;
    let top = KeyPath::new();
    let defaults = RecipeLayer { at: &top, keys: &defaults };
    Recipe::from_layers(&[defaults]).map_err(config_error)?;
    let mut jobs = vec![];
    if let Some(models) = models {
        let Value::Array(models) = models else {
            return Err(ConfigError(format!(
                "models: expected a list of {{input, output, ...}}, got {}",
                kind(&models)
            )));
        };
        for (i, m) in models.into_iter().enumerate() {
            let key = format!("models[{i}]");
            let Value::Object(mut m) = m else {
                return Err(ConfigError(format!("{key}: expected a table with input and output, got {}", kind(&m))));
            };
            let input = take_path(&mut m, "input", &key)?;
            let output = take_path(&mut m, "output", &key)?;
            let recipe = job_recipe(defaults, &m, &KeyPath::keys(["models"]).index(i))?;
            jobs.push(Job {
                key,
                input: lexical(&dir.join(input)),
                output: lexical(&dir.join(output)),
                recipe,
                base_dir: base_dir(dir),
                skip_existing: false,
                // A single output's folder must exist, like `-o` of `quantize`.
                create_dir: false,
            });
        }
    }
    if let Some(batch) = batch {
        let Value::Object(mut b) = batch else {
            return Err(ConfigError(format!(
                "batch: expected a table with input_dir and output_dir, got {}",
                kind(&batch)
            )));
        };
        let pattern = take_path(&mut b, "input_dir", "batch")?;
        let output_dir = lexical(&dir.join(take_path(&mut b, "output_dir", "batch")?));
        let skip_existing = match take(&mut b, "skip_existing") {
            None => false,
            Some(Value::Bool(s)) => s,
            Some(other) => {
                return Err(ConfigError(format!("batch.skip_existing: expected true or false, got {other}")));
            }
        };
        let recipe = job_recipe(defaults, &b, &KeyPath::keys(["batch"]))?;
        for input in expand(dir, &pattern)?.iter().map(|p| lexical(p)) {
            let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            jobs.push(Job {
                key: format!("batch ({})", input.display()),
                output: output_dir.join(format!("{stem}.onnx")),
                input,
                recipe: recipe.clone(),
                base_dir: base_dir(dir),
                skip_existing,
                create_dir: true,
            });
        }
    }
    crate::jobs::check_distinct_outputs(&jobs).map_err(ConfigError)?;
    Ok(jobs)
}

/// `a/b/../c` as `a/c`, without touching the file system, so jobs print as people would write them.
fn lexical(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

fn base_dir(dir: &Path) -> PathBuf {
    if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir.to_path_buf() }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

/// Removes `key` (in snake_case or kebab-case) from `m`.
fn take(m: &mut Map<String, Value>, key: &str) -> Option<Value> {
    m.remove(key).or_else(|| m.remove(&key.replace('_', "-")))
}

fn take_path(m: &mut Map<String, Value>, key: &str, at: &str) -> Result<PathBuf, ConfigError> {
    match take(m, key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(PathBuf::from(s)),
        Some(other) => Err(ConfigError(format!("{at}.{key}: expected a path, got {}", kind(&other)))),
        None => Err(ConfigError(format!("{at}.{key}: missing; {at} needs {}", needed(at)))),
    }
}

fn needed(at: &str) -> String {
    let keys: &[&str] = if at == "batch" { &BATCH_KEYS[..2] } else { &MODEL_KEYS };
    keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ")
}

/// The defaults with a job's own keys laid over them, as a validated recipe. An error in a key
/// the job did not set is named at the top level, where it was written.
fn job_recipe(defaults: RecipeLayer<'_>, own: &Map<String, Value>, at: &KeyPath) -> Result<Recipe, ConfigError> {
    Recipe::from_layers(&[defaults, RecipeLayer { at, keys: own }]).map_err(config_error)
}

/// Config files are written in snake_case: keys and the key lists of messages are spelled so.
fn config_error(e: RecipeError) -> ConfigError {
    let message = e.message(KeyStyle::Snake);
    match e.key(KeyStyle::Snake) {
        key if key.is_empty() => ConfigError(message),
        key => ConfigError(format!("{key}: {message}")),
    }
}

/// The `.onnx` files a glob (or a folder) matches, sorted.
fn expand(dir: &Path, pattern: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let full = dir.join(pattern);
    let text = full.to_string_lossy().into_owned();
    let is_glob = text.contains(['*', '?', '[']);
    let glob_text = if !is_glob && full.is_dir() { format!("{}/*.onnx", text.trim_end_matches('/')) } else { text };
    let paths = glob::glob(&glob_text)
        .map_err(|e| ConfigError(format!("batch.input_dir: '{}' is not a valid glob: {e}", pattern.display())))?;
    let mut files: Vec<PathBuf> = paths.filter_map(|p| p.ok()).filter(|p| p.is_file()).collect();
    files.sort();
    if files.is_empty() {
        return Err(ConfigError(format!("batch.input_dir: '{}' matches no file", pattern.display())));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(ext: &str, text: &str) -> Result<Vec<Job>, ConfigError> {
        let v = parse_text(text, Path::new(&format!("c.{ext}")))?;
        resolve(v, Path::new("/cfg"))
    }

    #[test]
    fn yaml_and_toml_resolve_the_same() {
        let y = jobs(
            "yaml",
            "bits: 8\nper_channel: false\nmodels:\n  - input: a.onnx\n    output: out/a.onnx\n  - input: b.onnx\n    output: out/b.onnx\n    bits: 4\n    block_size: 32\n",
        )
        .unwrap();
        let t = jobs(
            "toml",
            "bits = 8\nper_channel = false\n[[models]]\ninput = \"a.onnx\"\noutput = \"out/a.onnx\"\n[[models]]\ninput = \"b.onnx\"\noutput = \"out/b.onnx\"\nbits = 4\nblock-size = 32\n",
        )
        .unwrap();
        for js in [&y, &t] {
            assert_eq!(js.len(), 2);
            assert_eq!(js[0].input, Path::new("/cfg/a.onnx"));
            assert_eq!(js[0].output, Path::new("/cfg/out/a.onnx"));
            assert_eq!((js[0].recipe.bits, js[0].recipe.per_channel), (8, false));
            assert_eq!((js[1].recipe.bits, js[1].recipe.block_size), (4, Some(32)));
            assert!(!js[1].recipe.per_channel);
        }
    }

    #[test]
    fn unknown_keys_are_named_by_path() {
        let e = jobs(
            "yaml",
            "models:\n  - input: a.onnx\n    output: a.q.onnx\n  - input: b.onnx\n    output: b.q.onnx\n    bitz: 4\n",
        )
        .unwrap_err();
        assert!(e.0.starts_with("models[1].bitz: unknown field `bitz`, expected one of `bits`"), "{e}");
        assert!(e.0.contains("`per_channel`") && !e.0.contains("`per-channel`"), "{e}");
        let e = jobs("toml", "bitz = 4\n[[models]]\ninput = \"a.onnx\"\noutput = \"b.onnx\"\n").unwrap_err();
        assert!(e.0.starts_with("bitz: unknown field"), "{e}");
        let e = jobs(
            "yaml",
            "models:\n  - input: a.onnx\n    output: b.onnx\n    calibration: {data: c.npy, metod: mse}\n",
        )
        .unwrap_err();
        assert!(e.0.starts_with("models[0].calibration.metod: unknown field `metod`"), "{e}");
    }

    #[test]
    fn bad_values_name_where_they_were_written() {
        let e = jobs("yaml", "bits: 6\nmodels:\n  - {input: a.onnx, output: b.onnx}\n").unwrap_err();
        assert_eq!(e.0, "bits: expected 4 or 8, got 6");
        let e = jobs("yaml", "models:\n  - {input: a.onnx, output: b.onnx, bits: 6}\n").unwrap_err();
        assert_eq!(e.0, "models[0].bits: expected 4 or 8, got 6");
        // Recipe keys are spelled snake_case, a layer_bits pattern as written.
        let e = jobs("yaml", "models:\n  - {input: a.onnx, output: b.onnx, layer-bits: {head-1.*: 5}}\n").unwrap_err();
        assert_eq!(e.0, "models[0].layer_bits.head-1.*: expected 4, 8 or 32 (keep float), got 5");
        let e = jobs("yaml", "models:\n  - {input: a.onnx}\n").unwrap_err();
        assert_eq!(e.0, "models[0].output: missing; models[0] needs `input` and `output`");
        let e = jobs("yaml", "models: 3\n").unwrap_err();
        assert!(e.0.starts_with("models: expected a list"), "{e}");
        assert!(jobs("yaml", "bits: [\n").unwrap_err().0.starts_with("c.yaml: "));
        assert!(jobs("json", "{}").unwrap_err().0.contains("unknown config format"));
        let e = jobs("yaml", "models:\n  - {input: a.onnx, output: o.onnx}\n  - {input: b.onnx, output: ./o.onnx}\n")
            .unwrap_err();
        assert!(e.0.contains("would both be written to"), "{e}");
    }
}
