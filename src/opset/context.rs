//! What a transform may do to the node it upgrades: read facts about tensors in scope, add
//! constants (deduplicated per graph, with fresh names), add nodes before or after it, and fail
//! with an error that names the node and says what the user can do.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::onnx::graph::{Names, NodeExt, node_label};
use crate::onnx::proto::{AttributeProto, NodeProto, TensorProto, attribute_proto::AttributeType, dtype};

use super::facts::Scope;

/// Where new constants go: initializers of the graph being upgraded, or `Constant` nodes (in
/// function bodies, which have no initializers).
#[derive(Debug, Clone)]
pub(crate) struct ConstantStore {
    as_nodes: bool,
    initializers: Vec<TensorProto>,
    /// (type, dims, bytes) of each constant added so far -> its name, so ten Unsqueeze nodes on
    /// the same axis share one `axes` tensor.
    seen: HashMap<(i32, Vec<i64>, Vec<u8>), String>,
}

impl ConstantStore {
    /// New constants become initializers.
    pub fn initializers() -> ConstantStore {
        ConstantStore { as_nodes: false, initializers: Vec::new(), seen: HashMap::new() }
    }

    /// New constants become `Constant` nodes.
    pub fn nodes() -> ConstantStore {
        ConstantStore { as_nodes: true, ..ConstantStore::initializers() }
    }

    /// Whether constants become nodes.
    pub fn uses_nodes(&self) -> bool {
        self.as_nodes
    }

    /// The initializers to append to the graph.
    pub fn into_initializers(self) -> Vec<TensorProto> {
        self.initializers
    }
}

/// Per-node memory shared by the adapters applied to one node in sequence.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NodeState {
    /// The node was an Upsample, whose scales are >= 1 by definition.
    pub was_upsample: bool,
}

/// A node being upgraded and what its adapters may use.
pub(crate) struct NodeCtx<'a> {
    /// The node.
    pub node: &'a mut NodeProto,
    /// The model's (or function's) opset.
    pub from: i64,
    /// The target opset.
    pub to: i64,
    /// The definition being adapted to.
    pub version: i64,
    /// Memory across this node's adapters.
    pub state: NodeState,
    scope: &'a Scope<'a>,
    names: &'a mut Names,
    store: &'a mut ConstantStore,
    used: &'a HashSet<String>,
    dropped: &'a mut Vec<String>,
    before: Vec<NodeProto>,
    after: Vec<NodeProto>,
    /// The op type before any adapter ran, for messages.
    original_op: String,
}

impl<'a> NodeCtx<'a> {
    /// A context for upgrading `node`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: &'a mut NodeProto,
        from: i64,
        to: i64,
        scope: &'a Scope<'a>,
        names: &'a mut Names,
        store: &'a mut ConstantStore,
        used: &'a HashSet<String>,
        dropped: &'a mut Vec<String>,
    ) -> NodeCtx<'a> {
        let original_op = node.op_type.clone().unwrap_or_default();
        NodeCtx {
            node,
            from,
            to,
            version: from,
            state: NodeState::default(),
            scope,
            names,
            store,
            used,
            dropped,
            before: Vec::new(),
            after: Vec::new(),
            original_op,
        }
    }

    /// Whether nodes were added around the upgraded node.
    pub fn added_nodes(&self) -> bool {
        !self.before.is_empty() || !self.after.is_empty()
    }

    /// The nodes to insert before and after the upgraded node.
    pub fn finish(self) -> (Vec<NodeProto>, Vec<NodeProto>) {
        (self.before, self.after)
    }

    /// An [`Error::OpsetUpgrade`] about this node; `problem` says what is wrong, the advice on
    /// what to do is appended.
    pub fn fail(&self, problem: impl Into<String>) -> Error {
        Error::OpsetUpgrade {
            from: self.from,
            to: self.to,
            node: node_label(self.node),
            op: self.original_op.clone(),
            reason: format!("{}; {}", problem.into(), super::advice(self.from, self.to)),
        }
    }

    /// Facts about tensors in scope.
    pub fn scope(&self) -> &Scope<'a> {
        self.scope
    }

    /// Input `i` of the node, if present and not empty.
    pub fn input(&self, i: usize) -> Option<&str> {
        self.node.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }

    /// Whether anything reads tensor `name` (a node, a subgraph, a graph output).
    pub fn is_used(&self, name: &str) -> bool {
        !name.is_empty() && self.used.contains(name)
    }

    /// Removes the node's outputs from index `keep` on (they must be unused).
    pub fn drop_outputs_from(&mut self, keep: usize) {
        if self.node.output.len() > keep {
            self.dropped.extend(self.node.output.drain(keep..).filter(|o| !o.is_empty()));
        }
    }

    /// A fresh tensor or node name starting with this node's name and `what`.
    pub fn fresh(&mut self, what: &str) -> String {
        let base = match self.node.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => self.node.output.first().cloned().unwrap_or_else(|| self.original_op.to_lowercase()),
        };
        self.names.fresh(&format!("{base}_{what}"))
    }

    /// Sets input `i`, padding skipped optional inputs with "".
    pub fn set_input(&mut self, i: usize, name: String) {
        if self.node.input.len() <= i {
            self.node.input.resize(i + 1, String::new());
        }
        self.node.input[i] = name;
    }

    /// Adds a constant and returns its name (an existing identical one is reused).
    pub fn add_constant(&mut self, what: &str, mut t: TensorProto) -> String {
        let raw = t.raw_data.as_deref().unwrap_or_default().to_vec();
        let key = (t.data_type.unwrap_or(0), t.dims.clone(), raw);
        if let Some(name) = self.store.seen.get(&key) {
            return name.clone();
        }
        let name = self.fresh(what);
        t.name = Some(name.clone());
        if self.store.as_nodes {
            let mut node = self.new_node("Constant", vec![], vec![name.clone()]);
            node.attribute.push(AttributeProto {
                name: Some("value".into()),
                r#type: Some(AttributeType::Tensor as i32),
                t: Some(t),
                ..Default::default()
            });
            self.before.push(node);
        } else {
            self.store.initializers.push(t);
        }
        self.store.seen.insert(key, name.clone());
        name
    }

    /// Adds an int64 constant of shape `dims`.
    pub fn const_i64(&mut self, what: &str, dims: &[i64], values: &[i64]) -> String {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = TensorProto {
            dims: dims.to_vec(),
            data_type: Some(dtype::INT64),
            raw_data: Some(raw.into()),
            ..Default::default()
        };
        self.add_constant(what, t)
    }

    /// Adds a float32 constant of shape `dims`.
    pub fn const_f32(&mut self, what: &str, dims: &[i64], values: &[f32]) -> String {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = TensorProto {
            dims: dims.to_vec(),
            data_type: Some(dtype::FLOAT),
            raw_data: Some(raw.into()),
            ..Default::default()
        };
        self.add_constant(what, t)
    }

    /// A scalar holding `value` with the same element type as tensor `like` (what Clip's bounds
    /// and Pad's value need). float32 is stored directly; float16/float64 go through a
    /// Cast; an unknown type uses CastLike when the target opset has it (15), else fails.
    pub fn scalar_like(&mut self, what: &str, value: f32, like: &str) -> Result<String> {
        let f32_name = self.const_f32(what, &[], &[value]);
        match self.scope.elem(like) {
            Some(dtype::FLOAT) => Ok(f32_name),
            Some(t @ (dtype::FLOAT16 | dtype::DOUBLE)) => {
                let out = self.fresh(what);
                let mut cast = self.new_node("Cast", vec![f32_name], vec![out.clone()]);
                cast.set_attr_int("to", t as i64);
                self.before.push(cast);
                Ok(out)
            }
            Some(t) => Err(self.fail(format!(
                "has an input of type {}, which this op never accepted at opset {}; the model is invalid",
                dtype::name(t),
                self.from
            ))),
            None if self.to >= 15 => {
                let out = self.fresh(what);
                let cast = self.new_node("CastLike", vec![f32_name, like.to_string()], vec![out.clone()]);
                self.before.push(cast);
                Ok(out)
            }
            None => Err(self.fail(format!(
                "needs the element type of '{like}' to turn its attribute '{what}' into an input, and the model \
                 does not declare it; add value_info (e.g. with onnx.shape_inference)"
            ))),
        }
    }

    /// A new node with a fresh name, not yet placed.
    pub fn new_node(&mut self, op: &str, inputs: Vec<String>, outputs: Vec<String>) -> NodeProto {
        let name = self.fresh(&op.to_lowercase());
        NodeProto { name: Some(name), op_type: Some(op.into()), input: inputs, output: outputs, ..Default::default() }
    }

    /// Places `node` before the upgraded node (it computes one of its inputs).
    pub fn insert_before(&mut self, node: NodeProto) {
        self.before.push(node);
    }

    /// Places `node` after the upgraded node (it consumes one of its outputs).
    pub fn insert_after(&mut self, node: NodeProto) {
        self.after.push(node);
    }

    /// Removes attribute `name` and returns its integers. An attribute that refers to a function
    /// attribute has no value here and cannot be moved into an input.
    pub fn take_ints(&mut self, name: &str) -> Result<Option<Vec<i64>>> {
        self.check_literal(name)?;
        let v = self.node.attr_ints(name)?;
        self.node.take_attr(name);
        Ok(v)
    }

    /// Removes attribute `name` and returns its integer.
    pub fn take_int(&mut self, name: &str) -> Result<Option<i64>> {
        self.check_literal(name)?;
        let v = self.node.attr_int(name)?;
        self.node.take_attr(name);
        Ok(v)
    }

    /// Removes attribute `name` and returns its float.
    pub fn take_float(&mut self, name: &str) -> Result<Option<f32>> {
        self.check_literal(name)?;
        let v = self.node.attr_float(name)?;
        self.node.take_attr(name);
        Ok(v)
    }

    /// Removes attribute `name` and returns its floats.
    pub fn take_floats(&mut self, name: &str) -> Result<Option<Vec<f32>>> {
        self.check_literal(name)?;
        let v = match self.node.attr(name) {
            None => None,
            Some(a) if a.r#type.is_none() || a.r#type == Some(AttributeType::Floats as i32) => Some(a.floats.clone()),
            Some(_) => return Err(self.node.attr_error(name, "should be a list of floats")),
        };
        self.node.take_attr(name);
        Ok(v)
    }

    /// The string attribute `name` (kept on the node).
    pub fn string(&self, name: &str) -> Result<Option<String>> {
        self.check_literal(name)?;
        self.node.attr_string(name)
    }

    fn check_literal(&self, name: &str) -> Result<()> {
        match self.node.attr(name) {
            Some(a) if a.ref_attr_name.is_some() => Err(self.fail(format!(
                "takes attribute '{name}' from its function's attributes, so it cannot be rewritten in place"
            ))),
            _ => Ok(()),
        }
    }
}
