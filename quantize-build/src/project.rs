//! The models a package declares in its Cargo.toml, parsed into one [`Recipe`] each.
//!
//! ```toml
//! [package.metadata.quantize]            # defaults for every model below
//! bits = 8
//!
//! [package.metadata.quantize.models.digits]
//! path = "models/digits.onnx"            # required, relative to the package
//! per-channel = true                     # any recipe key; tables such as `calibration`
//! calibration = { data = "models/digits-calib.npy", method = "entropy" }   # merge key by key
//! ```
//!
//! Every key of [`Recipe`] is accepted in kebab-case (and snake_case). Unknown keys and bad
//! values are errors that name the full key path, e.g.
//! `package.metadata.quantize.models.digits.bits: expected 4 or 8, got 6`.
//!
//! The recipe keys are parsed by the library's one recipe parser ([`Recipe::from_layers`]), as
//! config files and the CLI's are; this module adds what is Cargo's: where the table is, `path`,
//! model names. It serves the build script (which reads Cargo.toml itself, because cargo does
//! not pass metadata to build scripts) and `cargo quantize` (which gets the table from
//! `cargo metadata`): see [`Project::from_manifest`] and [`Project::from_metadata`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quantize_rs::{KeyPath, KeyStyle, Recipe, RecipeError, RecipeLayer};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Where the declarations live in Cargo.toml.
pub const METADATA_KEY: &str = "package.metadata.quantize";

/// A package's declared models.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// The Cargo.toml they were read from.
    pub manifest_path: PathBuf,
    /// The package folder: relative paths in declarations resolve against it.
    pub root: PathBuf,
    /// The models, by name.
    pub models: BTreeMap<String, DeclaredModel>,
}

/// One `[package.metadata.quantize.models.<name>]` table with the defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredModel {
    /// The name `include_quantized!` looks it up by.
    pub name: String,
    /// The float model, as written in Cargo.toml (relative to [`Project::root`] unless absolute).
    pub path: PathBuf,
    /// The job, validated.
    pub recipe: Recipe,
    /// Its key path, e.g. `package.metadata.quantize.models.digits`, for messages.
    pub key: String,
}

impl DeclaredModel {
    /// A model declared in code rather than in Cargo.toml; `key` is only used in messages.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>, recipe: Recipe) -> DeclaredModel {
        let name = name.into();
        DeclaredModel { key: format!("models.{name}"), name, path: path.into(), recipe }
    }

    /// The full path of `key` inside this model's table, for messages.
    pub fn key_of(&self, key: &str) -> String {
        format!("{}.{key}", self.key)
    }

    /// Every file the job reads, resolved against `root`: the model, then the data files.
    pub fn inputs(&self, root: &Path) -> Vec<PathBuf> {
        let mut files = vec![root.join(&self.path)];
        if let Some(c) = &self.recipe.calibration {
            files.push(root.join(&c.data));
        }
        if let Some(v) = &self.recipe.verify_data {
            files.push(root.join(v));
        }
        files
    }
}

impl Project {
    /// Reads the declarations of the package whose manifest is `manifest_path`. A manifest
    /// without `[package.metadata.quantize]` declares no models.
    pub fn from_manifest(manifest_path: impl AsRef<Path>) -> Result<Project> {
        let manifest_path = manifest_path.as_ref();
        let text = std::fs::read_to_string(manifest_path).map_err(Error::io(manifest_path))?;
        Project::from_toml_str(&text, manifest_path)
    }

    /// Parses Cargo.toml text; `manifest_path` names it in messages and gives the package root.
    pub fn from_toml_str(text: &str, manifest_path: impl AsRef<Path>) -> Result<Project> {
        let manifest_path = manifest_path.as_ref();
        let doc: toml::Table = toml::from_str(text)
            .map_err(|e| Error::Toml { path: manifest_path.into(), message: e.to_string().trim_end().to_string() })?;
        let quantize = doc
            .get("package")
            .and_then(|p| p.get("metadata"))
            .and_then(|m| m.get("quantize"))
            .map(|q| serde_json::to_value(q).expect("TOML values convert to JSON"));
        Project::from_metadata(quantize.as_ref(), manifest_path)
    }

    /// Builds the project from the `quantize` value of a package's metadata (as
    /// `cargo_metadata`'s `package.metadata["quantize"]` gives it), `None` when absent.
    pub fn from_metadata(quantize: Option<&Value>, manifest_path: impl AsRef<Path>) -> Result<Project> {
        let manifest_path = manifest_path.as_ref().to_path_buf();
        let root = match manifest_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut project = Project { manifest_path, root, models: BTreeMap::new() };
        let Some(quantize) = quantize else {
            return Ok(project);
        };
        let table = as_table(quantize, METADATA_KEY)?;
        let mut defaults = table.clone();
        let models = defaults.remove("models");
        let top = KeyPath::keys(METADATA_KEY.split('.'));
        let defaults_layer = RecipeLayer { at: &top, keys: &defaults };
        // Defaults are checked on their own, so their errors name the defaults' keys.
        Recipe::from_layers(&[defaults_layer]).map_err(key_error)?;
        let Some(models) = models else {
            return Ok(project);
        };
        for (name, decl) in as_table(&models, &format!("{METADATA_KEY}.models"))? {
            let at = top.clone().key("models").key(name.clone());
            let key = at.render(KeyStyle::Kebab);
            check_name(name, &key)?;
            let mut decl = as_table(decl, &key)?.clone();
            let path = match decl.remove("path") {
                Some(Value::String(p)) if !p.is_empty() => PathBuf::from(p),
                Some(other) => {
                    return Err(Error::Key {
                        key: format!("{key}.path"),
                        message: format!("expected a path to an .onnx file, got {other}"),
                    });
                }
                None => {
                    return Err(Error::Key {
                        key: format!("{key}.path"),
                        message: format!(
                            "missing: every model needs `path = \"models/{name}.onnx\"` (the float model, relative to Cargo.toml)"
                        ),
                    });
                }
            };
            let recipe =
                Recipe::from_layers(&[defaults_layer, RecipeLayer { at: &at, keys: &decl }]).map_err(key_error)?;
            project.models.insert(name.clone(), DeclaredModel { name: name.clone(), path, recipe, key });
        }
        Ok(project)
    }

    /// The declared names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.models.keys().map(String::as_str).collect()
    }
}

fn as_table<'a>(v: &'a Value, key: &str) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| Error::Key { key: key.into(), message: format!("expected a table, got {v}") })
}

/// Names become file names in OUT_DIR and string literals in code: keep them plain.
fn check_name(name: &str, key: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Key {
            key: key.into(),
            message: format!("'{name}' is not a valid model name: use letters, digits, '-' and '_'"),
        })
    }
}

/// Cargo.toml is written in kebab-case: keys and the key lists of messages are spelled so.
fn key_error(e: RecipeError) -> Error {
    Error::Key { key: e.key(KeyStyle::Kebab), message: e.message(KeyStyle::Kebab) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Project> {
        Project::from_toml_str(toml, "/pkg/Cargo.toml")
    }

    fn error(toml: &str) -> String {
        parse(toml).expect_err("should fail").to_string()
    }

    const HEAD: &str = "[package]\nname = \"x\"\nversion = \"0.1.0\"\n";

    #[test]
    fn no_metadata_declares_nothing() {
        let p = parse(HEAD).unwrap();
        assert!(p.models.is_empty());
        assert_eq!(p.root, Path::new("/pkg"));
    }

    #[test]
    fn model_keys_override_defaults_and_tables_merge() {
        let p = parse(&format!(
            "{HEAD}[package.metadata.quantize]\nbits = 4\nmin-elements = 16\ncalibration = {{ data = \"c.npy\", method = \"entropy\" }}\n\
             [package.metadata.quantize.models.a]\npath = \"a.onnx\"\nbits = 8\ncalibration = {{ data = \"a.npy\" }}\n\
             [package.metadata.quantize.models.b]\npath = \"b.onnx\"\nper_channel = false\n\
             calibration = {{ data = \"b.npy\", graph_rewrites = false }}\n"
        ))
        .unwrap();
        assert_eq!(p.names(), ["a", "b"]);
        let a = &p.models["a"];
        assert_eq!(a.path, Path::new("a.onnx"));
        assert_eq!(a.recipe.bits, 8);
        assert_eq!(a.recipe.min_elements, 16);
        let cal = a.recipe.calibration.as_ref().unwrap();
        assert_eq!(cal.data, Path::new("a.npy"));
        assert_eq!(cal.method, quantize_rs::CalibrationMethod::Entropy);
        // Keys left out take their defaults; snake_case spellings are accepted.
        assert!(cal.graph_rewrites && cal.bias_correction);
        let b = &p.models["b"];
        assert!(!b.recipe.calibration.as_ref().unwrap().graph_rewrites);
        assert_eq!(b.recipe.bits, 4);
        assert!(!b.recipe.per_channel);
        assert_eq!(b.key, "package.metadata.quantize.models.b");
        assert_eq!(b.inputs(Path::new("/pkg")), [Path::new("/pkg/b.onnx"), Path::new("/pkg/b.npy")].map(PathBuf::from));
    }

    #[test]
    fn a_bad_value_names_the_model_key() {
        let e = error(&format!("{HEAD}[package.metadata.quantize.models.digits]\npath = \"d.onnx\"\nbits = 6\n"));
        assert_eq!(e, "package.metadata.quantize.models.digits.bits: expected 4 or 8, got 6");
    }

    #[test]
    fn a_bad_default_names_the_default_key() {
        let e = error(&format!(
            "{HEAD}[package.metadata.quantize]\nbits = 6\n[package.metadata.quantize.models.digits]\npath = \"d.onnx\"\n"
        ));
        assert_eq!(e, "package.metadata.quantize.bits: expected 4 or 8, got 6");
        let e = error(&format!(
            "{HEAD}[package.metadata.quantize]\ncalibration = {{ data = \"c.npy\", method = \"best\" }}\n\
             [package.metadata.quantize.models.digits]\npath = \"d.onnx\"\n"
        ));
        assert!(e.starts_with("package.metadata.quantize.calibration.method: unknown variant `best`"), "{e}");
    }

    #[test]
    fn a_bad_default_inside_a_table_the_model_also_sets_names_the_default() {
        let e = error(&format!(
            "{HEAD}[package.metadata.quantize]\ncalibration = {{ data = \"c.npy\", method = \"best\" }}\n\
             [package.metadata.quantize.models.digits]\npath = \"d.onnx\"\ncalibration = {{ data = \"d.npy\" }}\n"
        ));
        assert!(e.starts_with("package.metadata.quantize.calibration.method: unknown variant `best`"), "{e}");
        let e = error(&format!(
            "{HEAD}[package.metadata.quantize]\ncalibration = {{ data = \"c.npy\" }}\n\
             [package.metadata.quantize.models.digits]\npath = \"d.onnx\"\ncalibration = {{ percentile = 0 }}\n"
        ));
        assert_eq!(
            e,
            "package.metadata.quantize.models.digits.calibration.percentile: expected a value in (0, 100], got 0"
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_path() {
        let e = error(&format!("{HEAD}[package.metadata.quantize.models.digits]\npath = \"d.onnx\"\nbitz = 8\n"));
        assert!(e.starts_with("package.metadata.quantize.models.digits.bitz: unknown field `bitz`, expected one of `bits`, `unsigned`, `per-channel`, `block-size`,"), "{e}");
        assert!(!e.contains("per_channel"), "{e}");
        let e = error(&format!(
            "{HEAD}[package.metadata.quantize.models.digits]\npath = \"d.onnx\"\ncalibration = {{ data = \"c.npy\", metod = \"entropy\" }}\n"
        ));
        assert!(
            e.starts_with("package.metadata.quantize.models.digits.calibration.metod: unknown field `metod`"),
            "{e}"
        );
    }

    #[test]
    fn a_wrong_type_is_named_with_its_path() {
        let e =
            error(&format!("{HEAD}[package.metadata.quantize.models.m]\npath = \"m.onnx\"\nmin-snr-db = \"high\"\n"));
        assert!(e.starts_with("package.metadata.quantize.models.m.min-snr-db: invalid type: string \"high\""), "{e}");
    }

    #[test]
    fn path_is_required_and_names_are_plain() {
        let e = error(&format!("{HEAD}[package.metadata.quantize.models.m]\nbits = 8\n"));
        assert!(e.starts_with("package.metadata.quantize.models.m.path: missing"), "{e}");
        let e = error(&format!("{HEAD}[package.metadata.quantize.models.\"a/b\"]\npath = \"m.onnx\"\n"));
        assert!(e.contains("'a/b' is not a valid model name"), "{e}");
        let e = error(&format!("{HEAD}[package.metadata.quantize]\nmodels = 3\n"));
        assert_eq!(e, "package.metadata.quantize.models: expected a table, got 3");
    }

    #[test]
    fn bad_toml_names_the_manifest() {
        let e = error("[package\n");
        assert!(e.starts_with("/pkg/Cargo.toml: "), "{e}");
    }

    #[test]
    fn cargo_metadata_json_parses_the_same() {
        let v = serde_json::json!({ "models": { "d": { "path": "d.onnx", "block-size": 32, "bits": 4 } } });
        let p = Project::from_metadata(Some(&v), "/pkg/Cargo.toml").unwrap();
        assert_eq!(p.models["d"].recipe.block_size, Some(32));
    }
}
