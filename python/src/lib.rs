//! `quantize_rs._quantize_rs`: the native half of the Python package `quantization-rs`.
//!
//! Deliberately thin: each function takes one JSON request (paths, a recipe with the keys of
//! `quantize_rs::Recipe`, options), runs the library's crate-root API, and returns one JSON reply:
//! `{"ok": ...}` or `{"error": {"kind", "message", "details"}}`. The pure-Python package
//! (`python/quantize_rs/`) builds the requests, turns replies into objects and errors into its
//! exception classes. Calibration data from numpy is written to `.npy`/`.npz` files by the Python
//! side, so it goes through exactly the checks files do.
//!
//! No pyo3 macros: they would turn on features of `syn` that the CLI's build does not use, and
//! with them every crate that depends on a derive (serde, hence tract) would compile a second
//! time in the shared target directory. Functions are pyo3 closures; the module is made by hand.
//!
//! The work runs on its own thread with the GIL released; the calling thread waits in short
//! slices and checks for signals in between, so Ctrl-C raises `KeyboardInterrupt` within a
//! fraction of a second (see [`wait_interruptibly`] for what that does and does not stop).

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyTuple};
use quantize_rs::{
    BenchmarkOptions, Error, ImagePreprocess, KeyStyle, Model, ModelInfo, Recipe, RunOptions, SaveOptions,
    ValidateOptions,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// What failed, for the Python side: a kind, the library's message, and the fields that name the
/// file, input, tensor or key.
struct Failure {
    kind: &'static str,
    message: String,
    details: serde_json::Map<String, Value>,
}

impl Failure {
    fn new(kind: &'static str, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into(), details: serde_json::Map::new() }
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Failure {
        self.details.insert(key.into(), value.into());
        self
    }

    fn internal(e: impl std::fmt::Display) -> Failure {
        Failure::new("internal", e.to_string())
    }

    fn reply(self) -> String {
        json!({"error": {"kind": self.kind, "message": self.message, "details": self.details}}).to_string()
    }
}

fn path_value(p: &Path) -> Value {
    Value::String(p.display().to_string())
}

fn io_errno(e: &std::io::Error) -> Value {
    e.raw_os_error().map(Value::from).unwrap_or(Value::Null)
}

/// Maps every library error to a kind the Python side knows (see `quantize_rs/exceptions.py`).
fn failure(e: Error) -> Failure {
    let message = e.to_string();
    match &e {
        // Only after Ctrl-C, whose KeyboardInterrupt Python has already raised: never seen.
        Error::Cancelled => Failure::internal(message),
        Error::Read { path, source } => {
            Failure::new("read", message).with("filename", path_value(path)).with("errno", io_errno(source))
        }
        Error::Write { path, source } => {
            Failure::new("write", message).with("filename", path_value(path)).with("errno", io_errno(source))
        }
        Error::WouldOverwrite { path } => Failure::new("overwrite", message).with("filename", path_value(path)),
        Error::MissingOutputDir { path } => Failure::new("missing_dir", message).with("filename", path_value(path)),
        Error::Decode { origin, .. } => Failure::new("model", message).with("filename", origin.clone()),
        Error::ExternalData { tensor, .. } | Error::NonFinite { tensor, .. } => {
            Failure::new("model", message).with("tensor", tensor.clone())
        }
        Error::InvalidModel(_) => Failure::new("model", message),
        Error::TooLarge { path, .. } => Failure::new("model", message).with("filename", path_value(path)),
        Error::Attribute { node, .. } | Error::OpsetUpgrade { node, .. } => {
            Failure::new("model", message).with("node", node.clone())
        }
        Error::Data { path, input, .. } => Failure::new("data", message)
            .with("filename", path_value(path))
            .with("input", input.clone().map(Value::String).unwrap_or(Value::Null)),
        Error::NothingQuantized { .. } => Failure::new("nothing", message),
        Error::Tract { what, .. } => Failure::new("inference", message).with("model", what.clone()),
        Error::Gate { gate, .. } => Failure::new("gate", message).with("gate", gate.clone()),
        Error::Option { key, .. } => Failure::new("option", message).with("key", key.clone()),
    }
}

/// Parses a request or a recipe; a bad key or value names its path (`calibration.method`).
fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Failure> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        Failure::new("option", format!("{key}: {}", e.inner())).with("key", key)
    })
}

/// A recipe given as JSON (kebab-case or snake_case keys), parsed and checked by the library's
/// one recipe parser; a bad key is named as Python spells it (`calibration.method`).
fn parse_recipe(value: Value) -> Result<Recipe, Failure> {
    Recipe::from_value(&value).map_err(|e| {
        let (key, message) = (e.key(KeyStyle::Snake), e.message(KeyStyle::Snake));
        let text = if key.is_empty() { message } else { format!("{key}: {message}") };
        Failure::new("option", text).with("key", key)
    })
}

/// Image settings, parsed and checked as the recipe's `calibration.image`.
fn parse_image(value: Value) -> Result<ImagePreprocess, Failure> {
    let recipe = parse_recipe(json!({"calibration": {"data": "", "image": value}}))?;
    recipe.calibration.and_then(|c| c.image).ok_or_else(|| Failure::internal("image settings were lost"))
}

/// The library's output checks, before any work: the folder must exist and the input is never
/// overwritten unless `force` (the rule `Model::save` applies, checked first so a long
/// calibration is not wasted on a typo).
fn check_output(input: &Path, output: &Path, force: bool) -> Result<(), Error> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::MissingOutputDir { path: dir.into() });
    }
    if !force
        && let (Ok(i), Ok(o)) = (input.canonicalize(), output.canonicalize())
        && i == o
    {
        return Err(Error::WouldOverwrite { path: output.into() });
    }
    Ok(())
}

/// Runs `job` on its own thread with the GIL released and waits for it in 50 ms slices, checking
/// for signals (Ctrl-C) in between. On `KeyboardInterrupt` (or any exception a signal handler
/// raises) the exception is returned at once and `cancelled` is set: the job writes nothing, and
/// the engine, which checks the flag before each calibration sample (`RunOptions::cancel`),
/// stops within a sample.
fn wait_interruptibly(
    py: Python<'_>,
    job: impl FnOnce(Arc<AtomicBool>) -> Result<Value, Failure> + Send + 'static,
) -> PyResult<String> {
    let cancelled = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let flag = cancelled.clone();
    let spawned = std::thread::Builder::new().name("quantize-rs".into()).spawn(move || {
        let _ = tx.send(job(flag));
    });
    if let Err(e) = spawned {
        return Ok(Failure::internal(format!("cannot start a worker thread: {e}")).reply());
    }
    let mut rx = rx;
    loop {
        // The receiver moves in and out of the closure: it is Send, but not Sync.
        let (received, back) = py.detach(move || (rx.recv_timeout(Duration::from_millis(50)), rx));
        rx = back;
        match received {
            Ok(Ok(value)) => return Ok(json!({ "ok": value }).to_string()),
            Ok(Err(f)) => return Ok(f.reply()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = py.check_signals() {
                    cancelled.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Ok(Failure::internal("the quantize-rs worker thread panicked; please report this bug").reply());
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    input: PathBuf,
    output: PathBuf,
    recipe: Value,
    base_dir: PathBuf,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    progress: bool,
}

/// Quantizes `input` into `output` with `recipe`; replies with `input`, `output`, `bytes_in`,
/// `bytes_out`, `seconds`, `recipe` (resolved), `report`, `calibration`, `verification`.
fn run(py: Python<'_>, request: Value) -> PyResult<String> {
    let prepared = parse::<RunRequest>(request).and_then(|r| Ok((parse_recipe(r.recipe.clone())?, r)));
    let (recipe, r) = match prepared {
        Ok(x) => x,
        Err(f) => return Ok(f.reply()),
    };
    wait_interruptibly(py, move |cancelled| {
        let start = Instant::now();
        check_output(&r.input, &r.output, r.force).map_err(failure)?;
        let model = Model::load(&r.input).map_err(failure)?;
        let opts = RunOptions {
            progress: r.progress,
            cancel: Some(cancelled.clone()),
            scratch_dir: r.output.parent().map(|p| p.to_path_buf()),
            ..RunOptions::default()
        };
        let outcome = quantize_rs::run_with(model, &recipe, &r.base_dir, &opts).map_err(failure)?;
        if cancelled.load(Ordering::SeqCst) {
            return Err(Failure::internal("cancelled"));
        }
        outcome.model.save(&r.output, &SaveOptions { force: r.force, ..SaveOptions::default() }).map_err(failure)?;
        let verification = outcome.verification.as_ref().map(|v| serde_json::to_value(v).unwrap_or(Value::Null));
        Ok(json!({
            "input": r.input.display().to_string(),
            "output": r.output.display().to_string(),
            "bytes_in": outcome.bytes_in,
            "bytes_out": outcome.bytes_out,
            "seconds": start.elapsed().as_secs_f64(),
            "recipe": &recipe,
            "report": &outcome.report,
            "calibration": &outcome.calibration,
            "verification": verification,
        }))
    })
}

/// The recipe given, validated, with every default filled in.
fn resolve_recipe(_py: Python<'_>, request: Value) -> PyResult<String> {
    Ok(match parse_recipe(request).and_then(|r| serde_json::to_value(&r).map_err(Failure::internal)) {
        Ok(v) => json!({ "ok": v }).to_string(),
        Err(f) => f.reply(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InfoRequest {
    path: PathBuf,
}

/// `quantize_rs::ModelInfo` of a model, plus `text` (what `info` prints), `opset`, `graph_name`
/// and `model_version`.
fn model_info(py: Python<'_>, request: Value) -> PyResult<String> {
    let r: InfoRequest = match parse(request) {
        Ok(r) => r,
        Err(f) => return Ok(f.reply()),
    };
    wait_interruptibly(py, move |_| {
        let model = Model::load(&r.path).map_err(failure)?;
        let info = ModelInfo::of(&model).map_err(failure)?;
        let mut value = serde_json::to_value(&info).map_err(Failure::internal)?;
        value["text"] = Value::String(info.to_text());
        value["opset"] = json!(model.opset());
        // Not in ModelInfo: the graph's name and the model's version, for the original package's
        // `name` (read from the public `Model::proto`).
        value["graph_name"] = json!(model.proto.graph.as_ref().and_then(|g| g.name.clone()));
        value["model_version"] = json!(model.proto.model_version);
        Ok(value)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateRequest {
    original: PathBuf,
    quantized: PathBuf,
    data: Option<PathBuf>,
    samples: Option<usize>,
    #[serde(default)]
    detailed: bool,
    min_snr_db: Option<f64>,
    #[serde(default)]
    input_shapes: BTreeMap<String, Vec<usize>>,
    image: Option<Value>,
}

/// `quantize_rs::validate_files`.
fn validate(py: Python<'_>, request: Value) -> PyResult<String> {
    let prepared = parse::<ValidateRequest>(request).and_then(|r| {
        let image = r.image.clone().map(parse_image).transpose()?;
        let opts = ValidateOptions {
            data: r.data.clone(),
            image,
            samples: r.samples,
            detailed: r.detailed,
            min_snr_db: r.min_snr_db,
            input_shapes: r.input_shapes.clone(),
        };
        Ok((opts, r))
    });
    let (opts, r) = match prepared {
        Ok(x) => x,
        Err(f) => return Ok(f.reply()),
    };
    wait_interruptibly(py, move |_| {
        let v = quantize_rs::validate_files(&r.original, &r.quantized, &opts).map_err(failure)?;
        serde_json::to_value(&v).map_err(Failure::internal)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BenchmarkRequest {
    original: PathBuf,
    quantized: PathBuf,
    data: Option<PathBuf>,
    runs: usize,
    warmup: usize,
    #[serde(default)]
    input_shapes: BTreeMap<String, Vec<usize>>,
}

/// `quantize_rs::benchmark`.
fn benchmark(py: Python<'_>, request: Value) -> PyResult<String> {
    let r: BenchmarkRequest = match parse(request) {
        Ok(r) => r,
        Err(f) => return Ok(f.reply()),
    };
    wait_interruptibly(py, move |_| {
        let opts = BenchmarkOptions {
            data: r.data,
            runs: r.runs,
            warmup: r.warmup,
            input_shapes: r.input_shapes,
            runtime: quantize_rs::Runtime::Tract,
        };
        let b = quantize_rs::benchmark(&r.original, &r.quantized, &opts).map_err(failure)?;
        serde_json::to_value(&b).map_err(Failure::internal)
    })
}

type Handler = fn(Python<'_>, Value) -> PyResult<String>;

/// Every function of the module: name, docstring, handler. Each takes one JSON string.
const FUNCTIONS: &[(&CStr, &CStr, Handler)] = &[
    (c"run", c"run(request_json) -> reply_json: quantize a model (quantize_rs.run).", run),
    (
        c"resolve_recipe",
        c"resolve_recipe(recipe_json) -> reply_json: the recipe checked, defaults filled in.",
        resolve_recipe,
    ),
    (c"model_info", c"model_info(request_json) -> reply_json: quantize_rs.ModelInfo of a model.", model_info),
    (c"validate", c"validate(request_json) -> reply_json: quantize_rs.validate_files.", validate),
    (c"benchmark", c"benchmark(request_json) -> reply_json: quantize_rs.benchmark.", benchmark),
];

/// A Python function that takes one JSON string and passes it, parsed, to `handler`.
fn function<'py>(
    py: Python<'py>,
    name: &'static CStr,
    doc: &'static CStr,
    handler: Handler,
) -> PyResult<Bound<'py, PyCFunction>> {
    PyCFunction::new_closure(
        py,
        Some(name),
        Some(doc),
        move |args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>| -> PyResult<String> {
            let text: String = args.get_item(0)?.extract()?;
            match serde_json::from_str::<Value>(&text) {
                Ok(request) => handler(args.py(), request),
                Err(e) => Ok(Failure::internal(format!("bad request: {e}")).reply()),
            }
        },
    )
}

/// The module's definition: CPython requires single-phase init to return a module made from one.
static mut MODULE_DEF: pyo3::ffi::PyModuleDef = pyo3::ffi::PyModuleDef {
    m_base: pyo3::ffi::PyModuleDef_HEAD_INIT,
    m_name: c"_quantize_rs".as_ptr(),
    m_doc: c"The native half of quantize_rs: JSON in, JSON out. Use the quantize_rs package.".as_ptr(),
    m_size: -1,
    m_methods: std::ptr::null_mut(),
    m_slots: std::ptr::null_mut(),
    m_traverse: None,
    m_clear: None,
    m_free: None,
};

fn make_module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    // SAFETY: the definition is a static that lives as long as the process, handed to CPython
    // once per import as the C API expects; the result is a new reference or NULL with an error.
    let m = unsafe {
        Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyModule_Create(&raw mut MODULE_DEF))?
            .cast_into_unchecked::<PyModule>()
    };
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("ENGINE_ID", quantize_rs::ENGINE_ID)?;
    for &(name, doc, handler) in FUNCTIONS {
        m.add(name.to_str().unwrap_or("?"), function(py, name, doc, handler)?)?;
    }
    Ok(m)
}

/// The module's entry point, called by CPython on `import quantize_rs._quantize_rs`.
///
/// # Safety
///
/// Called by the interpreter, attached to it, as for every extension module.
#[allow(non_snake_case)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyInit__quantize_rs() -> *mut pyo3::ffi::PyObject {
    // SAFETY: CPython calls module init functions with the thread attached to the interpreter.
    let py = unsafe { Python::assume_attached() };
    match make_module(py) {
        Ok(m) => m.into_ptr(),
        Err(e) => {
            e.restore(py);
            std::ptr::null_mut()
        }
    }
}
