//! `info`: what a model is made of — opsets, IR version, producer, inputs and outputs, an op
//! histogram, weight bytes by element type and by where they are stored, and the parts that are
//! already quantized.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::analyse::{Storage, analyse};
use crate::error::Result;
use crate::onnx::graph::{node_domain, walk_graphs};
use crate::onnx::model::Model;
use crate::onnx::proto::{ValueInfoProto, dtype};
use crate::onnx::shape::{Dim, declared_shape, elem_type};

/// One graph input or output.
#[derive(Debug, Clone, Serialize)]
pub struct Port {
    /// Name.
    pub name: String,
    /// Element type, e.g. `float32`.
    pub elem_type: String,
    /// Dimensions: numbers, symbolic names, or `?` when unknown.
    pub shape: Option<Vec<String>>,
}

/// A summary of a model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// IR version.
    pub ir_version: i64,
    /// Opset imports as (domain, version); `ai.onnx` for the default domain.
    pub opsets: Vec<(String, i64)>,
    /// Producer name and version.
    pub producer: String,
    /// Graph inputs (initializers excluded).
    pub inputs: Vec<Port>,
    /// Graph outputs.
    pub outputs: Vec<Port>,
    /// Node count in all graphs.
    pub nodes: usize,
    /// Number of subgraphs (If/Loop/Scan bodies).
    pub subgraphs: usize,
    /// Nodes per op type (domain-qualified outside the default domain), in all graphs.
    pub ops: BTreeMap<String, usize>,
    /// Bytes of stored constants by element type.
    pub weight_bytes_by_type: BTreeMap<String, u64>,
    /// Bytes of stored constants by place: `initializer`, `constant`, `subgraph`.
    pub weight_bytes_by_location: BTreeMap<String, u64>,
    /// Already-quantized nodes by op type.
    pub quantized_ops: BTreeMap<String, usize>,
    /// Constants read by DequantizeLinear, i.e. weights already stored quantized.
    pub quantized_weights: usize,
}

fn port(v: &ValueInfoProto) -> Port {
    let elem_type = elem_type(v).map(dtype::name).unwrap_or("?").to_string();
    let shape = declared_shape(v).map(|dims| dims.iter().map(Dim::to_string).collect());
    Port { name: v.name.clone().unwrap_or_default(), elem_type, shape }
}

impl ModelInfo {
    /// Summarises `model`.
    pub fn of(model: &Model) -> Result<ModelInfo> {
        let g = model.graph();
        let initializers: std::collections::HashSet<&str> =
            g.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
        let mut ops = BTreeMap::new();
        let mut nodes = 0;
        let mut graphs = 0;
        walk_graphs(g, &mut |_, sub| {
            graphs += 1;
            nodes += sub.node.len();
            for n in &sub.node {
                let op = n.op_type.clone().unwrap_or_default();
                let key = match node_domain(n) {
                    "" => op,
                    d => format!("{d}.{op}"),
                };
                *ops.entry(key).or_insert(0) += 1;
            }
        });
        let analysis = analyse(&model.proto)?;
        let mut by_type = BTreeMap::new();
        let mut by_location = BTreeMap::new();
        let mut quantized_weights = 0;
        for c in &analysis.constants {
            // Sizes a (hostile) model declares can overflow: they saturate, as `elements` does.
            let bytes = dtype::bits(c.dtype).map(|b| c.elements().saturating_mul(b).div_ceil(8)).unwrap_or(0);
            let total = by_type.entry(dtype::name(c.dtype).to_string()).or_insert(0u64);
            *total = total.saturating_add(bytes);
            let place = match (c.graph.is_empty(), c.storage) {
                (false, _) => "subgraph",
                (true, Storage::Initializer) => "initializer",
                (true, Storage::Constant) => "constant",
            };
            let total = by_location.entry(place.to_string()).or_insert(0u64);
            *total = total.saturating_add(bytes);
            if c.uses.iter().any(|u| u.op_type == crate::ops::DEQUANTIZE_LINEAR && u.input == 0) {
                quantized_weights += 1;
            }
        }
        let mut quantized_ops = BTreeMap::new();
        for (op, _) in &analysis.quantized_nodes {
            *quantized_ops.entry(op.clone()).or_insert(0) += 1;
        }
        let p = &model.proto;
        Ok(ModelInfo {
            ir_version: p.ir_version.unwrap_or(0),
            opsets: p
                .opset_import
                .iter()
                .map(|o| {
                    let d = o.domain.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| "ai.onnx".into());
                    (d, o.version.unwrap_or(0))
                })
                .collect(),
            producer: format!(
                "{} {}",
                p.producer_name.as_deref().unwrap_or(""),
                p.producer_version.as_deref().unwrap_or("")
            )
            .trim()
            .to_string(),
            inputs: g
                .input
                .iter()
                .filter(|v| !initializers.contains(v.name.as_deref().unwrap_or("")))
                .map(port)
                .collect(),
            outputs: g.output.iter().map(port).collect(),
            nodes,
            subgraphs: graphs - 1,
            ops,
            weight_bytes_by_type: by_type,
            weight_bytes_by_location: by_location,
            quantized_ops,
            quantized_weights,
        })
    }

    /// The summary as text for people.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let opsets: Vec<String> = self.opsets.iter().map(|(d, v)| format!("{d} {v}")).collect();
        let _ = writeln!(s, "IR version   {}", self.ir_version);
        let _ = writeln!(s, "opsets       {}", opsets.join(", "));
        if !self.producer.is_empty() {
            let _ = writeln!(s, "producer     {}", self.producer);
        }
        let ports = |s: &mut String, title: &str, ps: &[Port]| {
            let _ = writeln!(s, "{title}");
            for p in ps {
                let shape =
                    p.shape.as_ref().map(|d| format!("[{}]", d.join(", "))).unwrap_or_else(|| "(no shape)".into());
                let _ = writeln!(s, "  {:<24} {:<8} {shape}", p.name, p.elem_type);
            }
        };
        ports(&mut s, "inputs", &self.inputs);
        ports(&mut s, "outputs", &self.outputs);
        let _ = writeln!(s, "nodes        {} in {} graph(s)", self.nodes, self.subgraphs + 1);
        let mut ops: Vec<(&String, &usize)> = self.ops.iter().collect();
        ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let _ =
            writeln!(s, "ops          {}", ops.iter().map(|(o, n)| format!("{o} {n}")).collect::<Vec<_>>().join(", "));
        let list = |m: &BTreeMap<String, u64>| {
            m.iter().map(|(k, v)| format!("{k} {}", human_bytes(*v))).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(s, "weights      by type: {}", list(&self.weight_bytes_by_type));
        let _ = writeln!(s, "             by place: {}", list(&self.weight_bytes_by_location));
        if self.quantized_ops.is_empty() {
            let _ = writeln!(s, "quantized    none");
        } else {
            let q: Vec<String> = self.quantized_ops.iter().map(|(o, n)| format!("{o} {n}")).collect();
            let _ = writeln!(s, "quantized    {} ({} stored weights)", q.join(", "), self.quantized_weights);
        }
        s
    }
}

/// `1.23 MB`-style sizes (decimal units).
pub fn human_bytes(b: u64) -> String {
    match b {
        0..1_000 => format!("{b} B"),
        1_000..1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} MB", b as f64 / 1e6),
        _ => format!("{:.2} GB", b as f64 / 1e9),
    }
}
