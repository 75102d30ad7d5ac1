//! What the upgrader knows about the tensors in scope: element type, rank and (for small
//! constants) the value. Transforms need them to build correctly typed inputs (Clip's bounds
//! must have the input's type) and to pick the simplest exact rewrite (Softmax on a known last
//! axis needs no reshaping).
//!
//! Facts come from the model's declarations (graph inputs/outputs, value_info, initializers,
//! Constant nodes) and, where those are silent, from a forward pass over the nodes for the ops
//! whose output type and rank follow simply from their inputs. Unknown stays unknown: a
//! transform that needs a fact it cannot get takes a slower exact path or fails.

use std::collections::HashMap;

use crate::onnx::graph::{NodeExt, node_domain};
use crate::onnx::proto::{
    AttributeProto, FunctionProto, GraphProto, NodeProto, TensorProto, ValueInfoProto, dtype, type_proto,
};
use crate::onnx::shape::Dim;

/// Constants up to this many elements are kept for transforms to read (scales, shapes, axes).
const MAX_KEPT_ELEMENTS: i64 = 4096;

/// Ops whose (first) output has the first input's type and rank: these and the op table's
/// shape-preserving unary ops (`ops::elementwise::UNARY_SAME_SHAPE`).
#[rustfmt::skip]
const SAME_TYPE_AND_RANK: &[&str] = &[
    "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "AveragePool", "Ceil", "Celu", "Concat", "Conv",
    "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "Dropout", "Erf", "Floor", "GlobalAveragePool",
    "GlobalLpPool", "GlobalMaxPool", "GroupNormalization", "Hardmax", "InstanceNormalization", "LRN",
    "LayerNormalization", "Log", "LogSoftmax", "LpNormalization", "LpPool", "MaxRoiPool",
    "MeanVarianceNormalization", "PRelu", "Pad", "Reciprocal", "Resize", "ReverseSequence", "RoiAlign", "Round",
    "Shrink", "Sign", "Sin", "Sinh", "Slice", "Softmax", "Softsign", "SpaceToDepth", "Sqrt", "Tan",
    "ThresholdedRelu", "Tile", "Transpose", "Trilu", "Upsample"
];

fn same_type_and_rank(op: &str) -> bool {
    crate::ops::elementwise::UNARY_SAME_SHAPE.contains(&op) || SAME_TYPE_AND_RANK.contains(&op)
}

/// Broadcasting ops whose inputs and output share one type.
#[rustfmt::skip]
const BROADCAST_SAME_TYPE: &[&str] = &[
    "Add", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "Div", "Max", "Mean", "Min", "Mod", "Mul", "Sub",
    "Sum"
];

/// What is known about one tensor.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Facts {
    /// `TensorProto.DataType`.
    pub elem: Option<i32>,
    /// Dimensions, each known or not; `None` when even the rank is unknown.
    pub dims: Option<Vec<Option<i64>>>,
}

impl Facts {
    fn rank(&self) -> Option<usize> {
        self.dims.as_ref().map(Vec::len)
    }
    fn of_rank(elem: Option<i32>, rank: Option<usize>) -> Facts {
        Facts { elem, dims: rank.map(|r| vec![None; r]) }
    }
}

/// The tensors of one graph (or function body), with the enclosing graphs' as a fallback:
/// subgraphs read names of the outer scopes.
#[derive(Debug)]
pub(crate) struct Scope<'p> {
    parent: Option<&'p Scope<'p>>,
    facts: HashMap<String, Facts>,
    constants: HashMap<String, TensorProto>,
}

impl<'p> Scope<'p> {
    /// The facts of `g`'s tensors, as the graph stands before any rewrite.
    pub fn of_graph(g: &GraphProto, parent: Option<&'p Scope<'p>>) -> Scope<'p> {
        let mut s = Scope { parent, facts: HashMap::new(), constants: HashMap::new() };
        for v in g.input.iter().chain(&g.output).chain(&g.value_info) {
            s.declare(v);
        }
        for t in &g.initializer {
            s.add_constant(t.name.clone().unwrap_or_default(), t);
        }
        s.infer(&g.node);
        s
    }

    /// The facts of a function body: only its value_info and constants are declared.
    pub fn of_function(f: &FunctionProto) -> Scope<'static> {
        let mut s = Scope { parent: None, facts: HashMap::new(), constants: HashMap::new() };
        for v in &f.value_info {
            s.declare(v);
        }
        s.infer(&f.node);
        s
    }

    /// What is known about `name`, here or in an enclosing scope.
    pub fn facts(&self, name: &str) -> Option<&Facts> {
        self.facts.get(name).or_else(|| self.parent.and_then(|p| p.facts(name)))
    }

    /// The element type of `name`, if known.
    pub fn elem(&self, name: &str) -> Option<i32> {
        self.facts(name).and_then(|f| f.elem)
    }

    /// The rank of `name`, if known.
    pub fn rank(&self, name: &str) -> Option<usize> {
        self.facts(name).and_then(Facts::rank)
    }

    /// The dimensions of `name`, if its rank is known.
    pub fn dims(&self, name: &str) -> Option<&[Option<i64>]> {
        self.facts(name).and_then(|f| f.dims.as_deref())
    }

    /// The value of `name` when it is a small constant (initializer or Constant node).
    pub fn constant(&self, name: &str) -> Option<&TensorProto> {
        self.constants.get(name).or_else(|| self.parent.and_then(|p| p.constant(name)))
    }

    fn declare(&mut self, v: &ValueInfoProto) {
        let (Some(name), Some(t)) = (v.name.as_ref(), v.r#type.as_ref()) else { return };
        let Some(type_proto::Value::TensorType(tt)) = &t.value else { return };
        let dims = tt.shape.as_ref().map(|s| s.dim.iter().map(|d| Dim::of(d).fixed().map(|n| n as i64)).collect());
        let elem = tt.elem_type.filter(|&e| e != 0);
        let known = self.facts.entry(name.clone()).or_default();
        known.elem = known.elem.or(elem);
        known.dims = known.dims.take().or(dims);
    }

    fn add_constant(&mut self, name: String, t: &TensorProto) {
        if name.is_empty() {
            return;
        }
        let facts = Facts { elem: t.data_type, dims: Some(t.dims.iter().map(|&d| Some(d)).collect()) };
        self.facts.insert(name.clone(), facts);
        if t.dims.iter().product::<i64>() <= MAX_KEPT_ELEMENTS {
            self.constants.insert(name, t.clone());
        }
    }

    fn known(&self, name: &str) -> Facts {
        self.facts(name).cloned().unwrap_or_default()
    }

    fn ints_input(&self, node: &NodeProto, i: usize) -> Option<Vec<i64>> {
        let name = node.input.get(i).filter(|n| !n.is_empty())?;
        crate::onnx::tensor::int_data(self.constant(name)?).ok()
    }

    /// Forward pass: fills in what the declarations left unknown.
    fn infer(&mut self, nodes: &[NodeProto]) {
        for n in nodes {
            if !node_domain(n).is_empty() {
                continue;
            }
            let outputs = self.infer_node(n);
            for (name, f) in n.output.iter().zip(outputs) {
                if name.is_empty() {
                    continue;
                }
                let known = self.facts.entry(name.clone()).or_default();
                known.elem = known.elem.or(f.elem);
                if known.dims.is_none() {
                    known.dims = f.dims;
                }
            }
        }
    }

    /// The facts of `n`'s outputs that follow from its inputs (unknown where they do not).
    fn infer_node(&mut self, n: &NodeProto) -> Vec<Facts> {
        let op = n.op_type.as_deref().unwrap_or("");
        let input = |i: usize| n.input.get(i).filter(|s| !s.is_empty()).map(|s| self.known(s)).unwrap_or_default();
        let x = input(0);
        let max_rank = || -> Option<usize> {
            let ranks: Option<Vec<usize>> =
                n.input.iter().filter(|s| !s.is_empty()).map(|s| self.known(s).rank()).collect();
            ranks.and_then(|r| r.into_iter().max())
        };
        let same = || vec![Facts::of_rank(x.elem, x.rank())];
        let int64 = |rank: Option<usize>| vec![Facts::of_rank(Some(dtype::INT64), rank)];
        let attr_int = |name: &str| n.attr_int(name).ok().flatten();
        match op {
            "Constant" => {
                if let Some(t) = constant_of(n) {
                    self.add_constant(n.output.first().cloned().unwrap_or_default(), &t);
                }
                vec![]
            }
            _ if same_type_and_rank(op) => same(),
            "Split" => vec![Facts::of_rank(x.elem, x.rank()); n.output.len()],
            "MaxPool" => vec![Facts::of_rank(x.elem, x.rank()), Facts::of_rank(Some(dtype::INT64), x.rank())],
            "TopK" => vec![Facts::of_rank(x.elem, x.rank()), Facts::of_rank(Some(dtype::INT64), x.rank())],
            _ if BROADCAST_SAME_TYPE.contains(&op) => vec![Facts::of_rank(x.elem.or(input(1).elem), max_rank())],
            // Pow's exponent may have another type.
            "Pow" => vec![Facts::of_rank(x.elem, max_rank())],
            "Where" => vec![Facts::of_rank(input(1).elem, max_rank())],
            "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Xor" => {
                vec![Facts::of_rank(Some(dtype::BOOL), max_rank())]
            }
            "Not" | "IsNaN" | "IsInf" => vec![Facts::of_rank(Some(dtype::BOOL), x.rank())],
            "Cast" => vec![Facts::of_rank(attr_int("to").map(|t| t as i32), x.rank())],
            "CastLike" => vec![Facts::of_rank(input(1).elem, x.rank())],
            "Gemm" => vec![Facts::of_rank(x.elem.or(input(1).elem), Some(2))],
            "Flatten" => vec![Facts::of_rank(x.elem, Some(2))],
            "MatMul" => {
                let rank = match (x.rank(), input(1).rank()) {
                    (Some(1), Some(1)) => Some(0),
                    (Some(1), Some(b)) => Some(b - 1),
                    (Some(a), Some(1)) => Some(a - 1),
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                vec![Facts::of_rank(x.elem, rank)]
            }
            "Shape" => int64(Some(1)),
            "Size" => int64(Some(0)),
            "NonZero" => int64(Some(2)),
            "ArgMax" | "ArgMin" => {
                let keep = attr_int("keepdims").unwrap_or(1) != 0;
                int64(x.rank().map(|r| if keep { r } else { r.saturating_sub(1) }))
            }
            "Reshape" => vec![Facts::of_rank(x.elem, self.ints_input(n, 1).map(|s| s.len()))],
            "Expand" => vec![Facts::of_rank(x.elem, None)],
            "Gather" => {
                vec![Facts::of_rank(x.elem, x.rank().zip(input(1).rank()).map(|(r, q)| (r + q).saturating_sub(1)))]
            }
            "GatherElements" => same(),
            "Unsqueeze" | "Squeeze" => {
                let axes = n.attr_ints("axes").ok().flatten().or_else(|| self.ints_input(n, 1));
                let rank = match (x.rank(), axes) {
                    (Some(r), Some(a)) if op == "Unsqueeze" => Some(r + a.len()),
                    (Some(r), Some(a)) if !a.is_empty() => r.checked_sub(a.len()),
                    _ => None,
                };
                vec![Facts::of_rank(x.elem, rank)]
            }
            _ if op.starts_with("Reduce") => {
                let keep = attr_int("keepdims").unwrap_or(1) != 0;
                let axes = n.attr_ints("axes").ok().flatten().or_else(|| self.ints_input(n, 1));
                let rank = match (x.rank(), axes) {
                    (Some(r), _) if keep => Some(r),
                    (Some(r), Some(a)) if !a.is_empty() => r.checked_sub(a.len()),
                    (Some(_), None) => Some(0),
                    _ => None,
                };
                vec![Facts::of_rank(x.elem, rank)]
            }
            "QuantizeLinear" => {
                let elem = attr_int("output_dtype").filter(|&t| t != 0).map(|t| t as i32);
                vec![Facts::of_rank(elem.or(input(2).elem).or(Some(dtype::UINT8)), x.rank())]
            }
            "DequantizeLinear" => vec![Facts::of_rank(input(1).elem.or(Some(dtype::FLOAT)), x.rank())],
            "Range" => vec![Facts::of_rank(x.elem, Some(1))],
            "OneHot" => vec![Facts::of_rank(input(2).elem, x.rank().map(|r| r + 1))],
            _ => vec![],
        }
    }
}

/// The tensor a `Constant` node holds, whichever attribute holds it.
pub(crate) fn constant_of(n: &NodeProto) -> Option<TensorProto> {
    let a: &AttributeProto = n.attribute.first()?;
    if n.attribute.len() != 1 || a.ref_attr_name.is_some() {
        return None;
    }
    let scalar = |elem: i32, dims: Vec<i64>| TensorProto { data_type: Some(elem), dims, ..Default::default() };
    Some(match a.name.as_deref()? {
        "value" => a.t.clone()?,
        "value_float" => TensorProto { float_data: vec![a.f?], ..scalar(dtype::FLOAT, vec![]) },
        "value_floats" => {
            TensorProto { float_data: a.floats.clone(), ..scalar(dtype::FLOAT, vec![a.floats.len() as i64]) }
        }
        "value_int" => TensorProto { int64_data: vec![a.i?], ..scalar(dtype::INT64, vec![]) },
        "value_ints" => TensorProto { int64_data: a.ints.clone(), ..scalar(dtype::INT64, vec![a.ints.len() as i64]) },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn forward_pass_fills_types_and_ranks() {
        let w = TensorProto {
            name: Some("w".into()),
            dims: vec![4, 3],
            data_type: Some(dtype::FLOAT),
            ..Default::default()
        };
        let shape = TensorProto {
            name: Some("s".into()),
            dims: vec![3],
            data_type: Some(dtype::INT64),
            int64_data: vec![1, 2, 2],
            ..Default::default()
        };
        let g = GraphProto {
            initializer: vec![w, shape],
            node: vec![
                node("Gemm", &["x", "w"], &["g"]),
                node("Relu", &["g"], &["r"]),
                node("Reshape", &["r", "s"], &["rs"]),
                node("Shape", &["rs"], &["sh"]),
                node("Greater", &["r", "g"], &["b"]),
                node("Unknown", &["r"], &["u"]),
            ],
            ..Default::default()
        };
        let s = Scope::of_graph(&g, None);
        assert_eq!((s.elem("r"), s.rank("r")), (Some(dtype::FLOAT), Some(2)));
        assert_eq!(s.rank("rs"), Some(3));
        assert_eq!((s.elem("sh"), s.rank("sh")), (Some(dtype::INT64), Some(1)));
        assert_eq!((s.elem("b"), s.rank("b")), (Some(dtype::BOOL), Some(2)));
        assert_eq!(s.facts("u"), None);
        let sub = Scope::of_graph(&GraphProto::default(), Some(&s));
        assert_eq!(sub.rank("r"), Some(2), "outer names are visible");
        assert!(sub.constant("s").is_some());
    }
}
