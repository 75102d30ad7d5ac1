//! Finding the weights: every float tensor stored in the model (graph initializers and
//! `Constant` nodes, in the main graph and in If/Loop/Scan bodies at any depth) together with
//! every node that reads it, resolved through the scopes of nested graphs.

use std::collections::HashMap;

use crate::error::Result;
use crate::onnx::graph::{GraphPath, node_label, node_subgraphs};
use crate::onnx::proto::{GraphProto, ModelProto};
use crate::onnx::tensor::constant_value;
use crate::ops::{WeightRole, is_quantized_op, weight_role};

/// Where a constant tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Storage {
    /// `graph.initializer[index]`.
    Initializer,
    /// The `value` attribute of the `Constant` node `graph.node[index]`.
    Constant,
}

/// One reading of a constant by a node.
#[derive(Debug, Clone)]
pub struct Use {
    /// Name (or label) of the node.
    pub node: String,
    /// Its op type.
    pub op_type: String,
    /// Which input reads the constant.
    pub input: usize,
    /// The weight role of that input, if it is a weight.
    pub role: Option<WeightRole>,
    /// Whether the node is an already-quantized op.
    pub quantized_op: bool,
}

/// A constant tensor of the model and its readers.
#[derive(Debug, Clone)]
pub struct Constant {
    /// Tensor name (the `Constant` node's output for [`Storage::Constant`]).
    pub name: String,
    /// Graph that stores it.
    pub graph: GraphPath,
    /// How it is stored.
    pub storage: Storage,
    /// Index of the initializer or of the `Constant` node.
    pub index: usize,
    /// Element type (`TensorProto.DataType`).
    pub dtype: i32,
    /// Shape.
    pub dims: Vec<i64>,
    /// Every node that reads it.
    pub uses: Vec<Use>,
    /// Whether it is also listed as an input of its graph.
    pub is_graph_input: bool,
}

impl Constant {
    /// Number of elements (0 when a dimension is negative, `u64::MAX` when the product
    /// overflows: the tensor decoder then rejects it with an error naming it, instead of a size
    /// filter skipping it as small).
    pub fn elements(&self) -> u64 {
        self.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d.max(0) as u64)).unwrap_or(u64::MAX)
    }
}

/// What the model holds: its constants and its already-quantized nodes.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// Every stored constant, in graph order (main graph first, initializers before Constants).
    pub constants: Vec<Constant>,
    /// Already-quantized nodes as (op type, node label).
    pub quantized_nodes: Vec<(String, String)>,
}

/// Analyses `model`.
pub fn analyse(model: &ModelProto) -> Result<Analysis> {
    let mut out = Analysis::default();
    let Some(graph) = model.graph.as_ref() else { return Ok(out) };
    let mut scopes: Vec<HashMap<String, Option<usize>>> = Vec::new();
    visit(graph, &mut Vec::new(), &mut scopes, &mut out)?;
    Ok(out)
}

fn visit(
    g: &GraphProto,
    path: &mut GraphPath,
    scopes: &mut Vec<HashMap<String, Option<usize>>>,
    out: &mut Analysis,
) -> Result<()> {
    // Everything this graph defines; constants map to their index in `out.constants`.
    let mut scope: HashMap<String, Option<usize>> = HashMap::new();
    for v in &g.input {
        scope.insert(v.name.clone().unwrap_or_default(), None);
    }
    for (i, t) in g.initializer.iter().enumerate() {
        let name = t.name.clone().unwrap_or_default();
        let is_graph_input = scope.contains_key(&name);
        scope.insert(name.clone(), Some(out.constants.len()));
        out.constants.push(Constant {
            name,
            graph: path.clone(),
            storage: Storage::Initializer,
            index: i,
            dtype: t.data_type.unwrap_or(0),
            dims: t.dims.clone(),
            uses: vec![],
            is_graph_input,
        });
    }
    for (i, n) in g.node.iter().enumerate() {
        let value = constant_value(n).filter(|_| n.output.len() == 1);
        for o in &n.output {
            scope.insert(o.clone(), None);
        }
        if let Some(t) = value {
            scope.insert(n.output[0].clone(), Some(out.constants.len()));
            out.constants.push(Constant {
                name: n.output[0].clone(),
                graph: path.clone(),
                storage: Storage::Constant,
                index: i,
                dtype: t.data_type.unwrap_or(0),
                dims: t.dims.clone(),
                uses: vec![],
                is_graph_input: false,
            });
        }
    }
    scopes.push(scope);
    for (i, n) in g.node.iter().enumerate() {
        let quantized_op = is_quantized_op(n);
        if quantized_op {
            out.quantized_nodes.push((n.op_type.clone().unwrap_or_default(), node_label(n)));
        }
        for (j, input) in n.input.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            let Some(idx) = scopes.iter().rev().find_map(|s| s.get(input)).copied().flatten() else { continue };
            let rank = out.constants[idx].dims.len();
            let role = weight_role(n, j, rank)?;
            out.constants[idx].uses.push(Use {
                node: node_label(n),
                op_type: n.op_type.clone().unwrap_or_default(),
                input: j,
                role,
                quantized_op,
            });
        }
        for (step, sub) in node_subgraphs(i, n) {
            path.push(step);
            visit(sub, path, scopes, out)?;
            path.pop();
        }
    }
    scopes.pop();
    Ok(())
}
