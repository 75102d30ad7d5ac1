//! The content-addressed build cache, and running one declared model into it.
//!
//! An entry is named by the SHA-256 of everything that decides the result: the model's bytes
//! (and its external-data files), the calibration and verification data, the recipe, the tool
//! version and the engine's source fingerprint (`quantize_rs::ENGINE_ID`). It lives under the target directory (`<target>/quantize-cache/<hash>/`, holding
//! `model.onnx` and `record.json`), so `cargo build`, `cargo build --release` and
//! `cargo quantize` share it: switching profiles never quantizes twice.
//!
//! Entries are written into a temporary folder beside them and renamed into place whole, so a
//! build running at the same time sees a complete entry or none. When two builds race to create
//! the same entry, the first rename wins and the other build uses it.
//!
//! The record holds the model file's size and SHA-256, checked on every lookup: an entry whose
//! model was damaged (truncated in place, edited) is reported, moved aside and quantized anew by
//! [`quantize_into_cache`]; `cargo quantize --check` reports it as an error. It is never embedded.
//!
//! Nothing is ever deleted: remove `<target>/quantize-cache` (or run `cargo clean`) to reclaim
//! the space.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use prost::Message;
use quantize_rs::onnx::proto::{ModelProto, tensor_proto::DataLocation};
use quantize_rs::{Model, ModelInfo};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::{FORMAT, INDEX_FILE, Index, Manifest, OUT_SUBDIR, Record, read_json, write_json};
use crate::project::DeclaredModel;

/// The tool version that is part of every cache key.
pub const TOOL_VERSION: &str = concat!("quantize-build ", env!("CARGO_PKG_VERSION"));

/// Name of the cache folder inside the target directory.
pub const CACHE_SUBDIR: &str = "quantize-cache";

const MODEL_FILE: &str = "model.onnx";
const RECORD_FILE: &str = "record.json";

/// The cache folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    dir: PathBuf,
}

/// A model in the cache.
#[derive(Debug, Clone)]
pub struct CachedModel {
    /// The quantized model file inside the cache entry.
    pub model_path: PathBuf,
    /// What the job produced.
    pub record: Record,
    /// Whether the entry already existed (no quantization ran).
    pub hit: bool,
    /// What was wrong with a damaged entry this one replaced, if any.
    pub replaced: Option<String>,
}

impl Cache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    /// The cache of a target directory: `<target_dir>/quantize-cache`. `cargo quantize` uses
    /// this with `cargo metadata`'s `target_directory`.
    pub fn in_target_dir(target_dir: impl AsRef<Path>) -> Cache {
        Cache::new(target_dir.as_ref().join(CACHE_SUBDIR))
    }

    /// The cache of the target directory a build script's `OUT_DIR` lies in. Cargo puts
    /// `OUT_DIR` at `<target>/[<triple>/]<profile>/build/<package>-<hash>/out` and marks
    /// `<target>` with a `CACHEDIR.TAG` file; without one, the folder above `<profile>` is used.
    pub fn for_out_dir(out_dir: &Path) -> Cache {
        if let Some(tagged) = out_dir.ancestors().find(|a| a.join("CACHEDIR.TAG").is_file()) {
            return Cache::in_target_dir(tagged);
        }
        let build = out_dir.ancestors().find(|a| a.file_name().is_some_and(|n| n == "build"));
        match build.and_then(Path::parent).and_then(Path::parent) {
            Some(target) => Cache::in_target_dir(target),
            None => Cache::new(out_dir.join(CACHE_SUBDIR)),
        }
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry folder for `key`.
    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The entry for `key`, if complete, its model checked against the size and SHA-256 its
    /// record holds. A damaged entry is an [`Error::Damaged`] naming the file and what differs.
    pub fn lookup(&self, key: &str) -> Result<Option<CachedModel>> {
        let dir = self.entry_dir(key);
        let record_path = dir.join(RECORD_FILE);
        if !dir.exists() {
            return Ok(None);
        }
        if !record_path.is_file() {
            return Err(Error::Damaged { path: record_path, message: "is missing from the cache entry".into() });
        }
        let record: Record = read_json(&record_path)?;
        if record.format != FORMAT || record.content_hash != key {
            return Err(Error::Corrupt {
                path: record_path,
                message: format!("holds format {} for key {}", record.format, record.content_hash),
            });
        }
        let model_path = dir.join(MODEL_FILE);
        let (size, sha256) = file_sha256(&model_path).map_err(Error::io(&model_path))?;
        if size != record.bytes_after || sha256 != record.model_sha256 {
            return Err(Error::Damaged {
                path: model_path,
                message: format!(
                    "is {size} bytes with SHA-256 {sha256}, but the entry recorded {} bytes with SHA-256 {}: the \
                     cached model was damaged",
                    record.bytes_after, record.model_sha256
                ),
            });
        }
        Ok(Some(CachedModel { model_path, record, hit: true, replaced: None }))
    }

    /// Moves a damaged entry aside and removes it (if it is still damaged: another build may
    /// have replaced it already).
    fn evict(&self, key: &str) {
        if !matches!(self.lookup(key), Err(Error::Corrupt { .. } | Error::Damaged { .. })) {
            return;
        }
        let aside = self.dir.join(format!(".damaged-{}-{key}", std::process::id()));
        if fs::rename(self.entry_dir(key), &aside).is_ok() {
            let _ = fs::remove_dir_all(&aside);
        }
    }

    /// Stores a finished job atomically and returns the entry (another build's, if it won).
    pub fn store(&self, model_bytes: &[u8], record: Record) -> Result<CachedModel> {
        fs::create_dir_all(&self.dir).map_err(Error::io(&self.dir))?;
        let key = record.content_hash.clone();
        let tmp = tempfile::Builder::new().prefix(".tmp-").tempdir_in(&self.dir).map_err(Error::io(&self.dir))?;
        fs::write(tmp.path().join(MODEL_FILE), model_bytes).map_err(Error::io(tmp.path().join(MODEL_FILE)))?;
        write_json(&tmp.path().join(RECORD_FILE), &record)?;
        let tmp_path = tmp.keep();
        let dest = self.entry_dir(&key);
        match fs::rename(&tmp_path, &dest) {
            Ok(()) => Ok(CachedModel { model_path: dest.join(MODEL_FILE), record, hit: false, replaced: None }),
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp_path);
                // Lost a race: the winner's entry has the same content.
                match self.lookup(&key)? {
                    Some(mut entry) => {
                        entry.hit = false;
                        Ok(entry)
                    }
                    None => Err(Error::Io { path: dest, source: e }),
                }
            }
        }
    }
}

/// The size and SHA-256 (hex) of a file, read in pieces.
pub fn file_sha256(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes files (and folders, file by file in name order) into the key.
struct KeyHasher(Sha256);

impl KeyHasher {
    fn field(&mut self, label: &str, bytes: &[u8]) {
        self.0.update((label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn path(&mut self, label: &str, path: &Path) -> std::io::Result<()> {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> =
                fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
            entries.sort();
            self.field(label, b"dir");
            for e in entries {
                let name = e.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                self.path(&format!("{label}/{name}"), &e)?;
            }
            return Ok(());
        }
        let mut f = fs::File::open(path)?;
        let len = f.metadata()?.len();
        self.0.update((label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update(len.to_le_bytes());
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            self.0.update(&buf[..n]);
        }
        Ok(())
    }

    fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

/// A declared model read and hashed, ready to look up or run.
#[derive(Debug)]
pub struct PreparedJob {
    /// The cache key.
    pub key: String,
    /// The model file's bytes.
    pub model_bytes: Vec<u8>,
    /// Every file the job reads (for `cargo::rerun-if-changed`): the model, its external-data
    /// files, the data files.
    pub inputs: Vec<PathBuf>,
}

/// Reads `model`'s files (paths relative to `root`) and computes its cache key.
pub fn prepare(model: &DeclaredModel, root: &Path) -> Result<PreparedJob> {
    let path = root.join(&model.path);
    let bad_path = |message: String| Error::Key { key: model.key_of("path"), message };
    let model_bytes = fs::read(&path).map_err(|e| bad_path(format!("cannot read {}: {e}", path.display())))?;
    let mut hasher = KeyHasher(Sha256::new());
    hasher.field("tool", TOOL_VERSION.as_bytes());
    hasher.field("engine", quantize_rs::ENGINE_ID.as_bytes());
    hasher.field("format", &FORMAT.to_le_bytes());
    // Data paths are keyed by content, not by how they are spelled.
    let mut keyed = model.recipe.clone();
    if let Some(c) = keyed.calibration.as_mut() {
        c.data = PathBuf::new();
    }
    keyed.verify_data = keyed.verify_data.as_ref().map(|_| PathBuf::new());
    hasher.field("recipe", &serde_json::to_vec(&keyed).expect("recipes serialize"));
    hasher.field("model", &model_bytes);
    let mut inputs = vec![path.clone()];
    let folder = path.parent().unwrap_or(Path::new("."));
    for location in external_files(&model_bytes) {
        let file = folder.join(&location);
        hasher
            .path(&format!("external:{location}"), &file)
            .map_err(|e| bad_path(format!("external data '{location}' of {}: {e}", path.display())))?;
        inputs.push(file);
    }
    let data = [
        ("calibration.data", model.recipe.calibration.as_ref().map(|c| &c.data)),
        ("verify-data", model.recipe.verify_data.as_ref()),
    ];
    for (key, file) in data {
        if let Some(file) = file {
            let full = root.join(file);
            hasher.path(key, &full).map_err(|e| Error::Key {
                key: model.key_of(key),
                message: format!("cannot read {}: {e}", full.display()),
            })?;
            inputs.push(full);
        } else {
            hasher.field(key, b"");
        }
    }
    Ok(PreparedJob { key: hasher.finish(), model_bytes, inputs })
}

/// External-data locations a model refers to (empty when the bytes do not decode: the job
/// itself reports that).
fn external_files(bytes: &[u8]) -> Vec<String> {
    let Ok(mut proto) = ModelProto::decode(bytes) else {
        return vec![];
    };
    let mut found = std::collections::BTreeSet::new();
    if let Some(g) = proto.graph.as_mut() {
        let _ = quantize_rs::onnx::graph::for_each_tensor_mut(g, &mut |t| {
            let location = t.external_data.iter().find(|e| e.key.as_deref() == Some("location"));
            if let (Some(DataLocation::External), Some(loc)) =
                (t.data_location.and_then(|d| DataLocation::try_from(d).ok()), location)
            {
                found.insert(loc.value.clone().unwrap_or_default());
            }
            Ok(())
        });
    }
    found.into_iter().collect()
}

/// Runs one declared model into the cache, or finds it there: the one step `build.rs` and
/// `cargo quantize` share. Relative paths resolve against `root` (the package folder).
pub fn quantize_into_cache(model: &DeclaredModel, root: &Path, cache: &Cache) -> Result<(CachedModel, PreparedJob)> {
    let job = prepare(model, root)?;
    if !cfg!(feature = "tract") {
        let needs_tract =
            [("calibration", model.recipe.calibration.is_some()), ("verify-data", model.recipe.verify_data.is_some())];
        if let Some((key, _)) = needs_tract.iter().find(|(_, set)| *set) {
            return Err(Error::Key {
                key: model.key_of(key),
                message: "runs the model, which needs quantize-build's `tract` feature: \
                          quantize-build = { version = \"0.1\", features = [\"tract\"] } in [build-dependencies]"
                    .into(),
            });
        }
    }
    let replaced = match cache.lookup(&job.key) {
        Ok(Some(hit)) => return Ok((hit, job)),
        Ok(None) => None,
        Err(damaged @ (Error::Corrupt { .. } | Error::Damaged { .. })) => {
            cache.evict(&job.key);
            Some(damaged.to_string())
        }
        Err(e) => return Err(e),
    };
    let start = Instant::now();
    let folder = root.join(&model.path);
    let folder = folder.parent().unwrap_or(Path::new("."));
    let job_error = |e: quantize_rs::Error| match e {
        quantize_rs::Error::Option { key, message } => Error::Key { key: model.key_of(&key), message },
        quantize_rs::Error::Gate { gate, message } => {
            Error::Key { key: model.key_of(&gate), message: format!("quality gate failed: {message}") }
        }
        source => Error::Job { model: model.name.clone(), key: model.key.clone(), source: Box::new(source) },
    };
    let loaded = Model::from_bytes(job.model_bytes.clone(), Some(folder)).map_err(job_error)?;
    let outcome = quantize_rs::run(loaded, &model.recipe, root).map_err(job_error)?;
    let bytes = outcome.model.to_bytes();
    let info = ModelInfo::of(&outcome.model).map_err(job_error)?;
    let seconds = start.elapsed().as_secs_f64();
    let sha256 = hex(&Sha256::digest(&bytes));
    let record =
        crate::manifest::record(job.key.clone(), &model.recipe, &outcome, &info, bytes.len() as u64, sha256, seconds);
    let mut stored = cache.store(&bytes, record)?;
    stored.replaced = replaced;
    Ok((stored, job))
}

/// Puts a cached model into `out_dir/quantize/` as `<name>.onnx` and `<name>.json`, atomically
/// (a hard link where the file system allows, else a copy). Returns the manifest written.
pub fn install(model: &DeclaredModel, cached: &CachedModel, out_dir: &Path) -> Result<Manifest> {
    let dir = out_dir.join(OUT_SUBDIR);
    fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let dest = dir.join(quantize_manifest::model_file(&model.name));
    let tmp = dir.join(format!(".{}.onnx.tmp-{}", model.name, std::process::id()));
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(&cached.model_path, &tmp).is_err() {
        fs::copy(&cached.model_path, &tmp).map_err(Error::io(&cached.model_path))?;
    }
    fs::rename(&tmp, &dest).map_err(Error::io(&dest))?;
    // Renaming a link onto another link of the same file succeeds without removing the source.
    let _ = fs::remove_file(&tmp);
    let manifest =
        Manifest { name: model.name.clone(), model: dest, source: model.path.clone(), record: cached.record.clone() };
    write_json(&dir.join(quantize_manifest::manifest_file(&model.name)), &manifest)?;
    Ok(manifest)
}

/// Writes `out_dir/quantize/index.json` listing `names`.
pub fn write_index(out_dir: &Path, manifest_path: &Path, names: Vec<String>) -> Result<()> {
    let dir = out_dir.join(OUT_SUBDIR);
    fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    write_json(&dir.join(INDEX_FILE), &Index { format: FORMAT, manifest_path: manifest_path.into(), models: names })
}
