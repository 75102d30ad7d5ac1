//! Shared by the integration tests: small ONNX models built in Rust with the protobuf types, and
//! ONNX Runtime as the reference, run through the project's Python (scripts/ort_compare.py in
//! the venv that scripts/setup-python.sh creates).
//!
//! Two ways to build a model, on the same pieces: [`graph`] + [`model`] when the whole graph
//! is written at once, [`ModelBuilder`] when it is grown step by step. Nodes come from [`node`]
//! with chained attributes ([`Attrs`]).
//!
//! ```ignore
//! let m = ModelBuilder::new(11)
//!     .input("x", dtype::FLOAT, &[2, 3])
//!     .init_i64("axes", &[1], &[0])
//!     .node(node("Unsqueeze", &["x"], &["y"]).ints("axes", &[0]))
//!     .output("y", dtype::FLOAT)
//!     .build();
//! let dir = tempfile::tempdir().unwrap();
//! let a = write(dir.path(), "a.onnx", &m);
//! assert_same_outputs(&a, &a, &Compare::samples(2), 1e-6);
//! let r = ort_compare(&a, &a, &Compare::samples(4).dim("d0", 3));
//! assert!(worst_snr(&r) > 100.0);
//! ```
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use quantize_rs::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, dtype, tensor_shape_proto, type_proto,
};

// ---------------------------------------------------------------------------------------------
// Tensors and value infos
// ---------------------------------------------------------------------------------------------

/// A float32 tensor named `name`.
pub fn f32_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "tensor {name}: dims {dims:?}");
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dtype::FLOAT),
        raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into()),
        ..Default::default()
    }
}

/// An int64 tensor named `name`.
pub fn i64_tensor(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "tensor {name}: dims {dims:?}");
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dtype::INT64),
        raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into()),
        ..Default::default()
    }
}

/// Deterministic pseudo-random floats in [-1, 1) (an LCG: tests need repeatability, not quality).
pub fn rand_f32(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A tensor value info with a shape; negative `dims` become the symbolic dims `d0`, `d1`, ...
/// (by position).
pub fn value_info(name: &str, elem: i32, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| tensor_shape_proto::Dimension {
            value: Some(if d >= 0 {
                tensor_shape_proto::dimension::Value::DimValue(d)
            } else {
                tensor_shape_proto::dimension::Value::DimParam(format!("d{i}"))
            }),
            ..Default::default()
        })
        .collect();
    typed_value_info(name, elem, Some(TensorShapeProto { dim }))
}

/// A tensor value info of unknown shape.
pub fn value_info_unshaped(name: &str, elem: i32) -> ValueInfoProto {
    typed_value_info(name, elem, None)
}

fn typed_value_info(name: &str, elem: i32, shape: Option<TensorShapeProto>) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: Some(elem), shape })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

/// A default-domain node named after its first output; add attributes with [`Attrs`].
pub fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(format!("{}_{}", op.to_lowercase(), outputs.first().copied().unwrap_or("out"))),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Chainable attribute setters for [`NodeProto`].
pub trait Attrs: Sized {
    /// Adds an attribute.
    fn attr(self, a: AttributeProto) -> Self;
    /// Sets the node's name.
    fn named(self, name: &str) -> Self;
    /// Sets the node's domain.
    fn domain(self, domain: &str) -> Self;

    fn int(self, name: &str, v: i64) -> Self {
        self.attr(AttributeProto { i: Some(v), ..attr(name, AttributeType::Int) })
    }
    fn ints(self, name: &str, v: &[i64]) -> Self {
        self.attr(AttributeProto { ints: v.to_vec(), ..attr(name, AttributeType::Ints) })
    }
    fn float(self, name: &str, v: f32) -> Self {
        self.attr(AttributeProto { f: Some(v), ..attr(name, AttributeType::Float) })
    }
    fn floats(self, name: &str, v: &[f32]) -> Self {
        self.attr(AttributeProto { floats: v.to_vec(), ..attr(name, AttributeType::Floats) })
    }
    fn string(self, name: &str, v: &str) -> Self {
        self.attr(AttributeProto { s: Some(v.as_bytes().to_vec()), ..attr(name, AttributeType::String) })
    }
    fn tensor(self, name: &str, t: TensorProto) -> Self {
        self.attr(AttributeProto { t: Some(t), ..attr(name, AttributeType::Tensor) })
    }
    fn graph(self, name: &str, g: GraphProto) -> Self {
        self.attr(AttributeProto { g: Some(g), ..attr(name, AttributeType::Graph) })
    }
}

fn attr(name: &str, t: AttributeType) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(t as i32), ..Default::default() }
}

impl Attrs for NodeProto {
    fn attr(mut self, a: AttributeProto) -> Self {
        self.attribute.push(a);
        self
    }
    fn named(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }
    fn domain(mut self, domain: &str) -> Self {
        self.domain = Some(domain.into());
        self
    }
}

/// A `Constant` node whose output is named after `t`.
pub fn constant(t: TensorProto) -> NodeProto {
    let out = t.name.clone().expect("a named tensor");
    node("Constant", &[], &[&out]).tensor("value", t)
}

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

/// A graph written at once (for a model, pass it to [`model`]; for an If/Loop body, to
/// [`Attrs::graph`]).
pub fn graph(
    name: &str,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> GraphProto {
    GraphProto {
        name: Some(name.into()),
        node: nodes,
        initializer: inits,
        input: inputs,
        output: outputs,
        ..Default::default()
    }
}

/// A model of `g` importing the default domain at `opset`, with the IR version that opset needs.
pub fn model(g: GraphProto, opset: i64) -> ModelProto {
    ModelBuilder { graph: g, ..ModelBuilder::new(opset) }.build()
}

/// Builds a model (or, with [`ModelBuilder::graph`], a subgraph body) step by step.
#[derive(Debug, Clone)]
pub struct ModelBuilder {
    opset: i64,
    graph: GraphProto,
    imports: Vec<OperatorSetIdProto>,
}

impl ModelBuilder {
    /// An empty model importing the default domain at `opset`.
    pub fn new(opset: i64) -> ModelBuilder {
        ModelBuilder {
            opset,
            graph: GraphProto { name: Some("test".into()), ..Default::default() },
            imports: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }],
        }
    }

    /// A graph input with a shape (negative dims are symbolic).
    pub fn input(mut self, name: &str, elem: i32, dims: &[i64]) -> Self {
        self.graph.input.push(value_info(name, elem, dims));
        self
    }

    /// A graph output of unknown shape.
    pub fn output(mut self, name: &str, elem: i32) -> Self {
        self.graph.output.push(value_info_unshaped(name, elem));
        self
    }

    /// A graph output with a shape.
    pub fn output_shaped(mut self, name: &str, elem: i32, dims: &[i64]) -> Self {
        self.graph.output.push(value_info(name, elem, dims));
        self
    }

    /// A value_info entry for an intermediate tensor.
    pub fn value_info(mut self, name: &str, elem: i32, dims: &[i64]) -> Self {
        self.graph.value_info.push(value_info(name, elem, dims));
        self
    }

    /// A float32 initializer.
    pub fn init_f32(mut self, name: &str, dims: &[i64], data: &[f32]) -> Self {
        self.graph.initializer.push(f32_tensor(name, dims, data));
        self
    }

    /// An int64 initializer.
    pub fn init_i64(mut self, name: &str, dims: &[i64], data: &[i64]) -> Self {
        self.graph.initializer.push(i64_tensor(name, dims, data));
        self
    }

    /// Any initializer.
    pub fn init(mut self, t: TensorProto) -> Self {
        self.graph.initializer.push(t);
        self
    }

    /// Appends a node (nodes must come in topological order).
    pub fn node(mut self, n: NodeProto) -> Self {
        self.graph.node.push(n);
        self
    }

    /// Imports another domain.
    pub fn import(mut self, domain: &str, version: i64) -> Self {
        self.imports.push(OperatorSetIdProto { domain: Some(domain.into()), version: Some(version) });
        self
    }

    /// The graph alone, e.g. for an If/Loop body.
    pub fn graph(self) -> GraphProto {
        self.graph
    }

    /// The model, with the IR version its opset needs.
    pub fn build(self) -> ModelProto {
        ModelProto {
            ir_version: Some(quantize_rs::onnx::model::ir_version_for_opset(self.opset)),
            producer_name: Some("quantize-rs tests".into()),
            opset_import: self.imports,
            graph: Some(self.graph),
            ..Default::default()
        }
    }
}

/// The default-domain opset a model imports.
pub fn opset_of(m: &ModelProto) -> Option<i64> {
    m.opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
}

/// Every node of the model's main graph and its subgraphs, depth-first.
pub fn all_nodes(m: &ModelProto) -> Vec<&NodeProto> {
    fn go<'a>(g: &'a GraphProto, out: &mut Vec<&'a NodeProto>) {
        for n in &g.node {
            out.push(n);
            for a in &n.attribute {
                for sub in a.g.iter().chain(&a.graphs) {
                    go(sub, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Some(g) = &m.graph {
        go(g, &mut out);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// Writes `m` into `dir` as it is (the protobuf encoding, nothing checked or changed: tests
/// also write models the library must refuse) and returns the path.
pub fn write(dir: &Path, name: &str, m: &ModelProto) -> PathBuf {
    use prost::Message;
    let p = dir.join(name);
    std::fs::write(&p, m.encode_to_vec()).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// Writes a little-endian float32 `.npy` file (format 1.0).
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) {
    assert_eq!(shape.iter().product::<usize>(), data.len());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(data.iter().flat_map(|x| x.to_le_bytes()));
    std::fs::write(path, bytes).expect("write npy");
}

// ---------------------------------------------------------------------------------------------
// ONNX Runtime
// ---------------------------------------------------------------------------------------------

/// The project's Python with onnxruntime: `QUANTIZE_RS_PYTHON`, else the venv that
/// scripts/setup-python.sh creates (and is run to create). Never skips: a missing reference
/// runtime fails the test with the command to run.
pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Ok(p) = std::env::var("QUANTIZE_RS_PYTHON") {
            return PathBuf::from(p);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("bash")
            .arg(root.join("scripts/setup-python.sh"))
            .output()
            .expect("run scripts/setup-python.sh (needs bash and python3)");
        assert!(
            out.status.success(),
            "scripts/setup-python.sh failed; ONNX Runtime is needed for these tests:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
    })
}

/// How [`ort_compare`] feeds the models: `Compare::samples(4).dim("batch", 2)`.
#[derive(Debug, Clone)]
pub struct Compare {
    /// Samples to run.
    pub samples: usize,
    /// Seed of the random inputs.
    pub seed: u64,
    /// Values of symbolic dims.
    pub dims: Vec<(String, i64)>,
    /// Integer inputs are drawn from [0, int_high).
    pub int_high: i64,
    /// An `.npy`/`.npz` file whose samples are used instead of random inputs.
    pub inputs: Option<PathBuf>,
    /// ORT runs both models without graph optimizations: every node as the ONNX spec defines it
    /// (for exact comparisons with a hand-written reference: ORT's fused kernels, e.g. DQ +
    /// MatMul into MatMulNBits, may quantize activations on their own).
    pub unoptimized: bool,
}

impl Default for Compare {
    fn default() -> Self {
        Compare { samples: 2, seed: 0, dims: Vec::new(), int_high: 10, inputs: None, unoptimized: false }
    }
}

impl Compare {
    /// `n` random samples, the other settings default.
    pub fn samples(n: usize) -> Compare {
        Compare { samples: n, ..Compare::default() }
    }

    /// Sets the value of a symbolic dim.
    pub fn dim(mut self, name: &str, value: i64) -> Compare {
        self.dims.push((name.into(), value));
        self
    }

    /// Uses the samples of an `.npy`/`.npz` file instead of random inputs.
    pub fn inputs(mut self, file: &Path) -> Compare {
        self.inputs = Some(file.into());
        self
    }

    /// Runs both models with ORT's graph optimizations off (see [`Compare::unoptimized`]).
    pub fn unoptimized(mut self) -> Compare {
        self.unoptimized = true;
        self
    }
}

/// Runs both models in ONNX Runtime on the same inputs (scripts/ort_compare.py) and returns its
/// JSON report. Panics with ONNX Runtime's message when either model does not load or run.
pub fn ort_compare(reference: &Path, candidate: &Path, opts: &Compare) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ort_compare.py");
    let mut cmd = Command::new(python());
    cmd.arg(&script)
        .arg("--reference")
        .arg(reference)
        .arg("--candidate")
        .arg(candidate)
        .args(["--samples", &opts.samples.to_string(), "--seed", &opts.seed.to_string()])
        .args(["--int-high", &opts.int_high.to_string()]);
    for (k, v) in &opts.dims {
        cmd.arg("--dim").arg(format!("{k}={v}"));
    }
    if let Some(i) = &opts.inputs {
        cmd.arg("--inputs").arg(i);
    }
    if opts.unoptimized {
        cmd.args(["--opt-level", "disable"]);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!("ort_compare.py printed no JSON: {text}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    assert!(
        out.status.success() && json["ok"] == true,
        "ONNX Runtime failed on {} vs {}: {}",
        reference.display(),
        candidate.display(),
        json["error"]
    );
    json
}

/// The worst float output's SNR in dB from an [`ort_compare`] report (-999 when an integer
/// output differs).
pub fn worst_snr(result: &serde_json::Value) -> f64 {
    result["pooled"]["snr_db"].as_f64().expect("worst-output snr")
}

/// Asserts that ONNX Runtime gives both models the same outputs: every output's largest
/// absolute difference at most `tol` (and no non-finite values).
pub fn assert_same_outputs(reference: &Path, candidate: &Path, opts: &Compare, tol: f64) -> serde_json::Value {
    let r = ort_compare(reference, candidate, opts);
    let outputs = r["outputs"].as_object().expect("outputs in the report");
    assert!(!outputs.is_empty(), "no outputs compared: {r}");
    for (name, o) in outputs {
        let max_abs = o["max_abs"].as_f64();
        assert!(o.get("nonfinite").is_none(), "output {name}: non-finite values: {o}");
        assert!(max_abs.is_some_and(|m| m <= tol), "output {name}: max abs diff {max_abs:?} > {tol}: {o}");
    }
    r
}
