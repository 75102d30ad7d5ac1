//! Checking a quantized model against the float model it came from, before anyone ships it:
//! structure, connectivity, opsets and Q/DQ types (a zeroed or negative scale, a zero point of
//! the wrong type, a dangling input are all found here), the same interface as the original,
//! and that the model actually runs in tract — on held-out samples, or on inputs synthesized from
//! the declared shapes — with its outputs compared to the original's.
//!
//! [`validate`] never stops at the first problem: every check reports all it found, and
//! [`Validation::passed`] is true only when every check passed *and* the model ran. A model that
//! could not be run is never reported as valid.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};
use tract_onnx::prelude::{DatumType, Tensor};

use crate::data::{Dim, InputSpec, Sample};
use crate::error::{Error, Result};
use crate::onnx::graph::{NodeExt, node_domain, node_label, node_subgraphs, walk_graphs};
use crate::onnx::model::Model;
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto, dtype};
use crate::onnx::tensor::{float_data, int_data};
use crate::ops::quantized::{Layout, dequantized, layout_of};
use crate::ops::{self, ir_version_for_opset, min_opset};
use crate::verify::Comparison;
use crate::recipe::ImagePreprocess;
use crate::run::{Runner, as_f32};

/// What [`validate`] does beyond the structural checks.
#[derive(Debug, Clone, Default)]
pub struct ValidateOptions {
    /// Samples to run both models on (`.npy`, `.npz`, `.safetensors`, images). Without them,
    /// one input set is synthesized from the declared input shapes (symbolic sizes become 1).
    pub data: Option<PathBuf>,
    /// Preprocessing when `data` is a folder of images.
    pub image: Option<ImagePreprocess>,
    /// Use at most this many samples of `data`.
    pub samples: Option<usize>,
    /// Compare every dequantized weight with the original float weight of the same name.
    pub detailed: bool,
    /// Fail when the pooled output SNR on `data` is below this many dB (needs `data`).
    pub min_snr_db: Option<f64>,
    /// Shapes for synthesized inputs, by input name, instead of the declared ones.
    pub input_shapes: BTreeMap<String, Vec<usize>>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing wrong was found.
    Passed,
    /// At least one problem.
    Failed,
    /// Not run, because an earlier check failed (see the note).
    Skipped,
}

/// One check and every problem it found.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `structure`, `connectivity`, `opset`, `types`, `interface`, `runs` or `min-snr-db`.
    pub name: String,
    /// Its outcome.
    pub status: Status,
    /// What is wrong, one line each, naming the node, tensor or graph.
    pub problems: Vec<String>,
    /// Extra facts worth knowing (what was run on, conversions made to run it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Check {
    fn new(name: &str, problems: Vec<String>) -> Check {
        let status = if problems.is_empty() { Status::Passed } else { Status::Failed };
        Check { name: name.into(), status, problems, note: None }
    }
}

/// Output figures of the quantized model against the original.
#[derive(Debug, Clone, Serialize)]
pub struct OutputComparison {
    /// Output name, or `all` for the pooled figures.
    pub name: String,
    /// Signal-to-noise ratio in dB (the string `"inf"` when the outputs are identical).
    #[serde(serialize_with = "float")]
    pub snr_db: f64,
    /// Cosine similarity.
    #[serde(serialize_with = "float")]
    pub cosine: f64,
    /// Largest absolute difference.
    #[serde(serialize_with = "float")]
    pub max_abs: f64,
}

/// One dequantized weight against the original float weight.
#[derive(Debug, Clone, Serialize)]
pub struct WeightComparison {
    /// The weight's name (the DequantizeLinear output, the original initializer).
    pub name: String,
    /// Element type it is stored as.
    pub stored_as: String,
    /// `per-tensor`, `per-axis` or `blocked`.
    pub granularity: String,
    /// Elements.
    pub elements: usize,
    /// SNR of the dequantized values in dB.
    #[serde(serialize_with = "float")]
    pub snr_db: f64,
    /// Largest absolute error.
    #[serde(serialize_with = "float")]
    pub max_abs: f64,
}

/// Everything [`validate`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    /// True when every check passed and the quantized model ran.
    pub passed: bool,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
    /// What the models ran on: the data file, or `synthetic` (shapes: symbolic sizes as 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// Input sets run.
    pub samples: usize,
    /// Per-output figures, then `all` (pooled), when both models ran.
    pub outputs: Vec<OutputComparison>,
    /// Per-weight figures (with [`ValidateOptions::detailed`]).
    pub weights: Vec<WeightComparison>,
}

impl Validation {
    /// The pooled output comparison, when both models ran.
    pub fn pooled(&self) -> Option<&OutputComparison> {
        self.outputs.iter().find(|o| o.name == "all")
    }
}

/// `message` without the backtrace that tract's errors carry when `RUST_BACKTRACE` is set
/// (`... / Stack backtrace: / 0: ...`, up to the `; ` that starts the advice, if any).
pub fn without_backtrace(message: &str) -> String {
    let Some(start) = message.find("Stack backtrace:") else {
        return message.to_string();
    };
    let head = message[..start].trim_end().trim_end_matches('/').trim_end();
    let tail = message[start..].find("; ").map(|j| &message[start + j..]).unwrap_or("");
    format!("{head}{tail}")
}

/// JSON has no infinities: non-finite figures are written as `"inf"`, `"-inf"` or `"nan"`.
pub fn float<S: Serializer>(x: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if x.is_finite() {
        s.serialize_f64(*x)
    } else if x.is_nan() {
        s.serialize_str("nan")
    } else if *x > 0.0 {
        s.serialize_str("inf")
    } else {
        s.serialize_str("-inf")
    }
}

/// Checks `quantized` against `original` (see the [module docs](self)). `Err` only for a
/// problem with the request (unreadable data, a gate without data); problems with the models
/// are in the returned checks.
pub fn validate(original: &Model, quantized: &Model, opts: &ValidateOptions) -> Result<Validation> {
    if opts.min_snr_db.is_some() && opts.data.is_none() {
        return Err(Error::Option {
            key: "min-snr-db".into(),
            message: "needs data (--data): held-out samples to measure the outputs on".into(),
        });
    }
    let mut checks = vec![
        Check::new("structure", structure(quantized)),
        Check::new("connectivity", connectivity(quantized.graph())),
        Check::new("opset", opsets(quantized, original)),
        Check::new("types", types(quantized)),
        Check::new("interface", interface(original, quantized)),
    ];
    let mut v =
        Validation { passed: false, checks: vec![], inputs: None, samples: 0, outputs: vec![], weights: vec![] };
    if checks.iter().any(|c| c.status == Status::Failed) {
        checks.push(Check {
            name: "runs".into(),
            status: Status::Skipped,
            problems: vec![],
            note: Some("not run: an earlier check failed".into()),
        });
    } else {
        let samples = match &opts.data {
            Some(path) => {
                v.inputs = Some(path.display().to_string());
                crate::data::load_for_model(original, path, opts.image.as_ref(), opts.samples)?
            }
            None => {
                v.inputs = Some("synthetic".into());
                match synthetic_inputs(original, &opts.input_shapes) {
                    Ok(s) => vec![s],
                    Err(e @ Error::Option { .. }) => return Err(e),
                    Err(e) => {
                        checks.push(Check::new(
                            "runs",
                            vec![format!("cannot synthesize inputs ({e}); pass samples with --data")],
                        ));
                        vec![]
                    }
                }
            }
        };
        if !samples.is_empty() {
            v.samples = samples.len();
            let (check, outputs) = run_both(original, quantized, &samples);
            checks.push(check);
            v.outputs = outputs;
        }
    }
    if let Some(min) = opts.min_snr_db {
        let problems = match v.pooled() {
            Some(p) if p.snr_db >= min => vec![],
            Some(p) => vec![format!("output SNR is {:.2} dB, below {min} dB", p.snr_db)],
            None => vec!["no output SNR: the models did not both run".into()],
        };
        checks.push(Check::new("min-snr-db", problems));
    }
    if opts.detailed {
        v.weights = weight_errors(original, quantized);
    }
    v.passed = checks.iter().all(|c| c.status == Status::Passed);
    v.checks = checks;
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// Structure, connectivity, opsets

fn structure(m: &Model) -> Vec<String> {
    let mut p = vec![];
    let g = m.graph();
    if g.node.is_empty() {
        p.push("the main graph has no nodes".into());
    }
    if g.output.is_empty() {
        p.push("the main graph has no outputs".into());
    }
    if m.proto.ir_version.is_none_or(|v| v < 1) {
        p.push("the model declares no IR version".into());
    }
    walk_graphs(g, &mut |_, sub| {
        for n in &sub.node {
            if n.op_type.as_deref().is_none_or(str::is_empty) {
                p.push(format!("node '{}' has no op type", node_label(n)));
            }
        }
        for t in &sub.initializer {
            if t.name.as_deref().is_none_or(str::is_empty) {
                p.push("an initializer has no name".into());
            }
        }
    });
    p
}

/// Every node input must be defined before it is read: by a graph input, an initializer, an
/// earlier node, or (in a subgraph) a name visible in an enclosing graph. No name is produced twice.
fn connectivity(g: &GraphProto) -> Vec<String> {
    let mut problems = vec![];
    check_scope(g, &HashSet::new(), "the main graph", &mut problems);
    problems
}

fn check_scope(g: &GraphProto, outer: &HashSet<String>, where_: &str, problems: &mut Vec<String>) {
    let mut defined: HashSet<String> = HashSet::new();
    defined.extend(g.input.iter().filter_map(|v| v.name.clone()));
    defined.extend(g.initializer.iter().filter_map(|t| t.name.clone()));
    defined.extend(g.sparse_initializer.iter().filter_map(|t| t.values.as_ref().and_then(|v| v.name.clone())));
    for (i, n) in g.node.iter().enumerate() {
        for input in n.input.iter().filter(|s| !s.is_empty()) {
            if !defined.contains(input) && !outer.contains(input) {
                problems.push(format!(
                    "{where_}: node '{}' ({}) reads '{input}', which no graph input, initializer or earlier node produces",
                    node_label(n),
                    n.op_type.as_deref().unwrap_or("?")
                ));
            }
        }
        let subs = node_subgraphs(i, n);
        if !subs.is_empty() {
            let visible: HashSet<String> = outer.union(&defined).cloned().collect();
            for (_, sub) in subs {
                let inner = format!("the body of node '{}' in {where_}", node_label(n));
                check_scope(sub, &visible, &inner, problems);
            }
        }
        for o in n.output.iter().filter(|s| !s.is_empty()) {
            if !defined.insert(o.clone()) {
                problems.push(format!("{where_}: '{o}' is produced twice (again by node '{}')", node_label(n)));
            }
        }
    }
    for o in &g.output {
        let name = o.name.clone().unwrap_or_default();
        if !defined.contains(&name) && !outer.contains(&name) {
            problems.push(format!("{where_}: output '{name}' is produced by nothing"));
        }
    }
}

fn opsets(m: &Model, original: &Model) -> Vec<String> {
    let mut p = vec![];
    let Some(opset) = m.opset() else {
        return vec!["the model imports no default-domain (ai.onnx) opset".into()];
    };
    if let Some(before) = original.opset()
        && opset < before
    {
        p.push(format!("the opset went down from {before} to {opset}; quantizing never lowers it"));
    }
    let ir = m.proto.ir_version.unwrap_or(0);
    let ir_needed = ir_version_for_opset(opset);
    if ir < ir_needed {
        p.push(format!("IR version {ir} is too old for opset {opset} (needs {ir_needed})"));
    }
    let imported: HashSet<String> = m
        .proto
        .opset_import
        .iter()
        .map(|o| match o.domain.as_deref() {
            None | Some("") | Some("ai.onnx") => String::new(),
            Some(d) => d.to_string(),
        })
        .collect();
    let mut missing_domains = HashSet::new();
    let mut int4 = false;
    walk_graphs(m.graph(), &mut |_, g| {
        int4 |= g.initializer.iter().any(|t| matches!(t.data_type, Some(dtype::INT4 | dtype::UINT4)));
        for n in &g.node {
            let d = node_domain(n);
            if !imported.contains(d) && missing_domains.insert(d.to_string()) {
                p.push(format!("node '{}' uses domain '{d}', which the model does not import", node_label(n)));
            }
            if !is_qdq(n) {
                continue;
            }
            let op = n.op_type.as_deref().unwrap_or("");
            let mut need = |what: &str, min: i64| {
                if opset < min {
                    p.push(format!("node '{}' ({op}) {what} needs opset {min}, the model has {opset}", node_label(n)));
                }
            };
            need("", min_opset::PER_TENSOR);
            if n.attr("axis").is_some() {
                need("with `axis`", min_opset::PER_AXIS);
            }
            if n.attr("block_size").is_some() {
                need("with `block_size`", min_opset::BLOCKED_OR_INT4);
            }
        }
    });
    if int4 && opset < min_opset::BLOCKED_OR_INT4 {
        p.push(format!("INT4/UINT4 tensors need opset {}, the model has {opset}", min_opset::BLOCKED_OR_INT4));
    }
    p
}

fn is_qdq(n: &NodeProto) -> bool {
    node_domain(n).is_empty() && matches!(n.op_type.as_deref(), Some(ops::QUANTIZE_LINEAR | ops::DEQUANTIZE_LINEAR))
}

// ---------------------------------------------------------------------------------------------
// Q/DQ types and values

/// Every constant tensor of the model by name: initializers and `Constant` values, all graphs.
fn constants(m: &Model) -> HashMap<String, &TensorProto> {
    let mut map = HashMap::new();
    walk_graphs(m.graph(), &mut |_, g| {
        for t in &g.initializer {
            if let Some(n) = &t.name {
                map.insert(n.clone(), t);
            }
        }
        for n in &g.node {
            if let (Some(t), Some(out)) = (crate::onnx::tensor::constant_value(n), n.output.first()) {
                map.insert(out.clone(), t);
            }
        }
    });
    map
}

const QUANTIZED_TYPES: [i32; 5] = [dtype::INT8, dtype::UINT8, dtype::INT4, dtype::UINT4, dtype::INT32];

fn types(m: &Model) -> Vec<String> {
    let consts = constants(m);
    let mut p = vec![];
    walk_graphs(m.graph(), &mut |_, g| {
        for n in g.node.iter().filter(|n| is_qdq(n)) {
            let op = n.op_type.as_deref().unwrap_or("");
            let label = format!("{op} '{}'", node_label(n));
            if !(2..=3).contains(&n.input.len()) || n.output.len() != 1 {
                p.push(format!("{label} has {} inputs and {} outputs", n.input.len(), n.output.len()));
                continue;
            }
            let (x_name, s_name) = (&n.input[0], &n.input[1]);
            let zp_name = n.input.get(2).filter(|z| !z.is_empty());
            let Some(scale) = consts.get(s_name) else {
                p.push(format!("{label}: scale '{s_name}' is not a constant; quantize-rs, tract and ORT's fast paths need constant scales"));
                continue;
            };
            match scale.data_type.unwrap_or(0) {
                dtype::FLOAT => match float_data(scale).ok() {
                    None => p.push(format!(
                        "{label}: scale '{s_name}' has shape {:?} but its data does not match",
                        scale.dims
                    )),
                    Some(values) => {
                        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
                            p.push(format!(
                                "{label}: scale '{s_name}' element {i} is {v}; every scale must be finite and > 0 (a zero scale erases the weight)"
                            ));
                        }
                    }
                },
                dtype::FLOAT16 | dtype::DOUBLE | 16 => {}
                other => p.push(format!("{label}: scale '{s_name}' is {}, not a float type", dtype::name(other))),
            }
            let x = consts.get(x_name);
            let zp = zp_name.and_then(|z| consts.get(z));
            if let (Some(z), Some(name)) = (zp, zp_name) {
                if z.dims != scale.dims {
                    p.push(format!(
                        "{label}: zero point '{name}' has shape {:?} but the scale has {:?}",
                        z.dims, scale.dims
                    ));
                }
                if let Err(e) = int_data(z) {
                    p.push(format!("{label}: zero point '{name}' {e}"));
                }
            }
            if op == ops::DEQUANTIZE_LINEAR {
                let Some(x) = x else { continue };
                let xt = x.data_type.unwrap_or(0);
                if !QUANTIZED_TYPES.contains(&xt) {
                    p.push(format!("{label}: input '{x_name}' is {}, not an integer type", dtype::name(xt)));
                    continue;
                }
                if let Err(e) = int_data(x) {
                    p.push(format!("{label}: input '{x_name}' {e}"));
                }
                if let (Some(z), Some(name)) = (zp, zp_name)
                    && z.data_type != Some(xt)
                {
                    p.push(format!(
                        "{label}: zero point '{name}' is {} but input '{x_name}' is {}; they must be the same type",
                        dtype::name(z.data_type.unwrap_or(0)),
                        dtype::name(xt)
                    ));
                }
                if let Err(e) = layout_of(n, x, scale) {
                    p.push(format!("{label}: {e}"));
                }
            } else if let Some(z) = zp
                && !matches!(z.data_type, Some(dtype::INT8 | dtype::UINT8 | dtype::INT4 | dtype::UINT4 | 4 | 5))
            {
                p.push(format!(
                    "{label}: zero point '{}' is {}, not an integer type",
                    zp_name.map(String::as_str).unwrap_or(""),
                    dtype::name(z.data_type.unwrap_or(0))
                ));
            }
        }
    });
    p
}

// ---------------------------------------------------------------------------------------------
// Interface and running

fn interface(original: &Model, quantized: &Model) -> Vec<String> {
    let mut p = vec![];
    let ports = |m: &Model| -> Vec<crate::info::Port> {
        crate::info::ModelInfo::of(m).map(|i| [i.inputs, i.outputs].concat()).unwrap_or_default()
    };
    let split = |m: &Model| {
        let all = ports(m);
        let n_out = m.graph().output.len();
        let (i, o) = all.split_at(all.len().saturating_sub(n_out));
        (i.to_vec(), o.to_vec())
    };
    let (oi, oo) = split(original);
    let (qi, qo) = split(quantized);
    for (what, a, b) in [("input", &oi, &qi), ("output", &oo, &qo)] {
        let names = |v: &[crate::info::Port]| v.iter().map(|x| x.name.clone()).collect::<Vec<_>>();
        if names(a) != names(b) {
            p.push(format!("graph {what}s are {:?}, the original's are {:?}", names(b), names(a)));
            continue;
        }
        for (x, y) in a.iter().zip(b.iter()) {
            if x.elem_type != y.elem_type {
                p.push(format!("{what} '{}' is {}, the original's is {}", y.name, y.elem_type, x.elem_type));
            }
            if x.shape != y.shape {
                p.push(format!("{what} '{}' has shape {:?}, the original's is {:?}", y.name, y.shape, x.shape));
            }
        }
    }
    p
}

fn datum_type(elem_type: i32) -> Option<DatumType> {
    Some(match elem_type {
        dtype::FLOAT => DatumType::F32,
        dtype::UINT8 => DatumType::U8,
        dtype::INT8 => DatumType::I8,
        4 => DatumType::U16,
        5 => DatumType::I16,
        dtype::INT32 => DatumType::I32,
        dtype::INT64 => DatumType::I64,
        dtype::BOOL => DatumType::Bool,
        dtype::FLOAT16 => DatumType::F16,
        dtype::DOUBLE => DatumType::F64,
        12 => DatumType::U32,
        13 => DatumType::U64,
        _ => return None,
    })
}

/// One set of inputs for `model`, made from its declared input shapes (or the shape `shapes`
/// gives for an input name): symbolic or unknown sizes become 1, floats are deterministic
/// pseudo-random values in [-1, 1), integers and booleans are zero (a valid index or mask for
/// any table).
pub fn synthetic_inputs(model: &Model, shapes: &BTreeMap<String, Vec<usize>>) -> Result<Sample> {
    let specs = InputSpec::of_model(model)?;
    if let Some(unknown) = shapes.keys().find(|k| !specs.iter().any(|s| &s.name == *k)) {
        return Err(Error::Option {
            key: "--input-shape".into(),
            message: format!(
                "the model has no input '{unknown}'; its inputs are {}",
                specs.iter().map(|s| format!("'{}'", s.name)).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    specs
        .iter()
        .map(|s| {
            let declared = || {
                s.dims.iter().map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Symbolic(_) => 1,
                })
            };
            let shape: Vec<usize> = match shapes.get(&s.name) {
                Some(given) => {
                    let fits = given.len() == s.dims.len()
                        && given.iter().zip(&s.dims).all(|(g, d)| !matches!(d, Dim::Fixed(n) if n != g));
                    if !fits {
                        return Err(Error::Option {
                            key: "--input-shape".into(),
                            message: format!(
                                "input '{}' declares shape [{}], which {given:?} does not fit",
                                s.name,
                                s.dims
                                    .iter()
                                    .map(|d| match d {
                                        Dim::Fixed(n) => n.to_string(),
                                        Dim::Symbolic(_) => "?".into(),
                                    })
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        });
                    }
                    given.clone()
                }
                None => declared().collect(),
            };
            let dt = datum_type(s.elem_type).ok_or_else(|| {
                Error::InvalidModel(format!(
                    "input '{}' is {}, which cannot be synthesized",
                    s.name,
                    dtype::name(s.elem_type)
                ))
            })?;
            let what = format!("synthetic input '{}'", s.name);
            let tract_err = |e: tract_onnx::prelude::TractError| crate::run::tract_error(&what, e);
            if dt.is_float() {
                let n: usize = shape.iter().product();
                let values: Vec<f32> = (0..n)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                    })
                    .collect();
                let t = Tensor::from_shape(&shape, &values).map_err(tract_err)?;
                t.cast_to_dt(dt).map(|c| c.into_owned()).map_err(tract_err)
            } else {
                Tensor::zero_dt(dt, &shape).map_err(tract_err)
            }
        })
        .collect()
}

/// The bytes tract runs for `m`: 4-bit tensors widened and blocked constants folded when needed
/// (what `EmbeddedModel::tract_runnable` does), with a note saying so.
pub fn tract_bytes(m: &Model) -> Result<(Vec<u8>, Option<String>)> {
    let bytes = m.to_bytes();
    Ok(match crate::embed::tract_compatible(&bytes)? {
        None => (bytes, None),
        Some((converted, c)) => (
            converted,
            Some(format!(
                "tract has no 4-bit type and no blocked DequantizeLinear: ran it with {} INT4 tensor(s) widened to 8 bits and {} blocked weight(s) folded to float, as include_quantized! does",
                c.widened_int4, c.folded_blocked
            )),
        ),
    })
}

fn run_both(original: &Model, quantized: &Model, samples: &[Sample]) -> (Check, Vec<OutputComparison>) {
    let names = crate::run::output_names(quantized);
    let (bytes, note) = match tract_bytes(quantized) {
        Ok(b) => b,
        Err(e) => {
            return (Check::new("runs", vec![format!("cannot prepare the quantized model for tract: {e}")]), vec![]);
        }
    };
    let mut q = Runner::new(bytes, names.clone(), &[], "the quantized model");
    let mut f = Runner::for_model(original, &[], "the original model");
    let mut problems = vec![];
    let mut per_output = vec![Comparison::default(); names.len()];
    let mut pooled = Comparison::default();
    let mut compared = true;
    for (k, s) in samples.iter().enumerate() {
        let qv = match q.run(s) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("sample {k}: {}", without_backtrace(&e.to_string())));
                compared = false;
                break;
            }
        };
        let qv: Vec<Vec<f32>> = match qv.iter().map(as_f32).collect() {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("sample {k}: {e}"));
                compared = false;
                break;
            }
        };
        for (name, values) in names.iter().zip(&qv) {
            if let Some(i) = values.iter().position(|x| !x.is_finite()) {
                problems.push(format!("sample {k}: output '{name}' holds {} at element {i}", values[i]));
            }
        }
        if !compared {
            continue;
        }
        match f.run(s).and_then(|v| v.iter().map(as_f32).collect::<Result<Vec<_>>>()) {
            Ok(fv) => {
                for (i, (a, b)) in fv.iter().zip(&qv).enumerate() {
                    if a.len() != b.len() {
                        problems.push(format!(
                            "sample {k}: output '{}' has {} values, the original's has {}",
                            names[i],
                            b.len(),
                            a.len()
                        ));
                    }
                    per_output[i].add(a, b);
                    pooled.add(a, b);
                }
            }
            // The original not running is not the quantized model's fault: no comparison, noted.
            Err(_) => compared = false,
        }
    }
    let mut check = Check::new("runs", problems);
    let ran = format!("ran {} input set(s) in tract", samples.len());
    check.note = Some(match (&note, compared) {
        (Some(n), true) => format!("{ran}; {n}"),
        (None, true) => ran,
        (n, false) => format!(
            "{ran}; the original model does not run in tract, so outputs were not compared{}",
            n.as_ref().map(|n| format!("; {n}")).unwrap_or_default()
        ),
    });
    if !compared || check.status == Status::Failed {
        return (check, vec![]);
    }
    let fig = |name: &str, c: &Comparison| {
        let v = c.finish(samples.len());
        OutputComparison { name: name.into(), snr_db: v.snr_db, cosine: v.cosine, max_abs: v.max_abs }
    };
    let mut outputs: Vec<OutputComparison> = names.iter().zip(&per_output).map(|(n, c)| fig(n, c)).collect();
    outputs.push(fig("all", &pooled));
    (check, outputs)
}

// ---------------------------------------------------------------------------------------------
// Weights

/// Dequantizes every DequantizeLinear of constants and compares it with the original float
/// constant of the same name. Weights whose data is broken are left out (the type check names them).
fn weight_errors(original: &Model, quantized: &Model) -> Vec<WeightComparison> {
    let float = constants(original);
    let consts = constants(quantized);
    let mut out = vec![];
    walk_graphs(quantized.graph(), &mut |_, g| {
        for n in g.node.iter().filter(|n| is_qdq(n) && n.op_type.as_deref() == Some(ops::DEQUANTIZE_LINEAR)) {
            let (Some(name), Some(x), Some(scale)) = (
                n.output.first(),
                n.input.first().and_then(|i| consts.get(i)),
                n.input.get(1).and_then(|i| consts.get(i)),
            ) else {
                continue;
            };
            let Some(reference) = float.get(name).and_then(|t| float_data(t).ok()) else { continue };
            let zp = n.input.get(2).filter(|z| !z.is_empty()).and_then(|z| consts.get(z)).copied();
            let (Some(deq), Ok(layout)) = (dequantized(n, x, scale, zp), layout_of(n, x, scale)) else { continue };
            if deq.len() != reference.len() {
                continue;
            }
            let mut c = Comparison::default();
            c.add(&reference, &deq);
            let v = c.finish(1);
            out.push(WeightComparison {
                name: name.clone(),
                stored_as: dtype::name(x.data_type.unwrap_or(0)).into(),
                granularity: match layout {
                    Layout::PerTensor => "per-tensor",
                    Layout::PerAxis(_) => "per-axis",
                    Layout::Blocked(..) => "blocked",
                }
                .into(),
                elements: deq.len(),
                snr_db: v.snr_db,
                max_abs: v.max_abs,
            });
        }
    });
    out
}

/// Loads both models and validates; a model that cannot be read is an `Err`.
pub fn validate_files(original: &Path, quantized: &Path, opts: &ValidateOptions) -> Result<Validation> {
    let a = Model::load(original)?;
    let b = Model::load(quantized)?;
    validate(&a, &b, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtraces_are_cut_from_messages() {
        let m = "tract cannot run m: node x / Stack backtrace: /    0: anyhow::msg; if an op is unsupported, do y";
        assert_eq!(without_backtrace(m), "tract cannot run m: node x; if an op is unsupported, do y");
        assert_eq!(without_backtrace("a / Stack backtrace: / 0: f"), "a");
        assert_eq!(without_backtrace("plain"), "plain");
    }
}
