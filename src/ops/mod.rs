//! What quantize-rs knows about ONNX ops, in one table: for each op type, which input is its
//! weight and along which axes its output channels and its reduction run, which input is a bias
//! that integer kernels read as int32, the channel axis of its data input, how static
//! quantization treats its activations (integer kernel, elementwise kernel, pass-through), and the
//! op-specific arithmetic bias correction needs. Analysis, calibration, the rewrites and the
//! report ask [`spec`] instead of matching op names themselves; no quantizable op's name is
//! spelled outside this folder (and the opset upgrader's own tables).
//!
//! A new op: add its [`OpSpec`] to the file of its family (or a new file), list that file's
//! `SPECS` in [`TABLE_PARTS`], and the rest of the engine picks it up.

// Calibration and validation (the `tract` feature) are what read the rest of this; the full
// build lints it.
#![cfg_attr(not(feature = "tract"), allow(dead_code, unused_imports))]

pub mod conv;
pub mod elementwise;
pub mod gather;
pub mod gemm;
pub mod passthrough;
pub mod quantized;
pub mod recurrent;

use std::sync::LazyLock;

use crate::error::Result;
use crate::onnx::graph::node_domain;
use crate::onnx::proto::NodeProto;

pub use conv::{CONV, CONV_TRANSPOSE};
pub use elementwise::{ADD, BATCH_NORMALIZATION, CLIP, CONCAT, DIV, HARD_SIGMOID, HARD_SWISH, MUL, RELU, SIGMOID, SUB};
pub use gather::GATHER;
pub use gemm::{GEMM, MATMUL};
pub use passthrough::{MAX_POOL, RESIZE, SPLIT};
pub use quantized::{
    CAST, DEQUANTIZE_LINEAR, DYNAMIC_QUANTIZE_LINEAR, IDENTITY, MATMUL_INTEGER, QUANTIZE_LINEAR, UNSQUEEZE,
    is_quantized_op, min_opset,
};
pub use recurrent::{GRU, LSTM, RNN};

/// How an op uses a constant input as a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightRole {
    /// Axis of the output channels (per-channel scales run along it).
    pub channel_axis: usize,
    /// Axis the op reduces over (blocks run along it), if it has one.
    pub reduction_axis: Option<usize>,
}

/// Which input of an op is a weight, and its layout for a weight of a given rank (`None` when
/// the rank does not fit the op).
#[derive(Debug, Clone, Copy)]
pub struct WeightSpec {
    /// The input index.
    pub input: usize,
    /// The weight's axes, from the node's attributes and the weight's rank.
    pub role: fn(&NodeProto, usize) -> Result<Option<WeightRole>>,
}

/// How static quantization treats an op's activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Not quantized.
    None,
    /// Runs as an integer kernel between DequantizeLinear and QuantizeLinear (QLinearConv,
    /// QLinearMatMul, QGemm): its activation inputs and its output are quantized.
    IntegerKernel {
        /// Its weight input must be a quantized weight for the kernel to exist.
        needs_weight: bool,
        /// Its integer kernel also writes float (ONNX Runtime: DequantizeLinear→MatMul becomes
        /// MatMulIntegerToFloat, DequantizeLinear→Gemm a QGemm without an output scale), so its
        /// output stays float: nothing clips or rounds what a bias, a residual Add or a
        /// LayerNorm reads next, and no QuantizeLinear runs.
        float_output: bool,
    },
    /// Runs as an integer kernel when every input and the output are quantized.
    Elementwise,
    /// Moves values: its outputs take its data input's range.
    PassThrough,
}

/// The mean shift of an op's output per output channel caused by changing its weight from
/// `wf` to `wq` (shape `dims`) for per-channel input means `m`, or `None` when the node's
/// attributes or shapes rule it out.
pub type OutputShift = fn(&NodeProto, &[f32], &[f32], &[usize], &[f64]) -> Option<Vec<f64>>;

/// Everything quantize-rs knows about one op type (default domain).
#[derive(Debug, Clone, Copy)]
pub struct OpSpec {
    /// The ONNX op type.
    pub op: &'static str,
    /// Its weight input, if it has one quantize-rs quantizes (the one integer kernels read).
    pub weight: Option<WeightSpec>,
    /// A second weight input (recurrent ops: `R` beside `W`).
    pub second_weight: Option<WeightSpec>,
    /// The input holding a per-output-channel bias that integer kernels read as int32.
    pub int32_bias: Option<usize>,
    /// The axis of its data input (input 0) that the weight reduces over, for per-channel
    /// input statistics.
    pub data_channel_axis: Option<fn(&NodeProto) -> usize>,
    /// How static quantization treats its activations.
    pub activation: Activation,
    /// Whether ONNX Runtime's u8×s8 kernel for it adds pairs of products in saturating 16-bit
    /// lanes on x86 without VNNI (given the node and its weight's dims): such weights get 7 bits.
    pub saturating_kernel: Option<fn(&NodeProto, &[i64]) -> bool>,
    /// Its output's mean shift under a weight change, for bias correction.
    pub output_shift: Option<OutputShift>,
}

/// The files of the table, one per op family.
const TABLE_PARTS: &[&[OpSpec]] =
    &[conv::SPECS, gemm::SPECS, gather::SPECS, recurrent::SPECS, elementwise::SPECS, passthrough::SPECS];

static TABLE: LazyLock<Vec<OpSpec>> = LazyLock::new(|| {
    let mut all: Vec<OpSpec> = TABLE_PARTS.iter().flat_map(|p| p.iter().copied()).collect();
    all.sort_by_key(|s| s.op);
    all
});

/// The spec of a default-domain op type.
pub fn spec_of(op: &str) -> Option<&'static OpSpec> {
    TABLE.binary_search_by_key(&op, |s| s.op).ok().map(|i| &TABLE[i])
}

/// The spec of `node`'s op (`None` for other domains and ops the table does not know).
pub fn spec(node: &NodeProto) -> Option<&'static OpSpec> {
    if !node_domain(node).is_empty() {
        return None;
    }
    spec_of(node.op_type.as_deref()?)
}

/// Whether `node` is the default-domain op `op`.
pub fn is(node: &NodeProto, op: &str) -> bool {
    node.op_type.as_deref() == Some(op) && node_domain(node).is_empty()
}

/// Ops whose weights are quantized by default, in the order `--op-types` lists them.
pub const DEFAULT_WEIGHT_OPS: &[&str] = &[CONV, CONV_TRANSPOSE, GEMM, MATMUL, GATHER, LSTM, GRU, RNN];

/// The default `--op-types`.
pub fn default_op_types() -> Vec<String> {
    DEFAULT_WEIGHT_OPS.iter().map(|op| op.to_string()).collect()
}

/// Ops whose activations static quantization quantizes by default: those ONNX Runtime runs as
/// integer kernels (QLinearConv, QLinearMatMul, QGemm) between DequantizeLinear and QuantizeLinear.
pub const DEFAULT_ACTIVATION_OPS: &[&str] = &[CONV, MATMUL, GEMM];

/// Ops without weights that ONNX Runtime also runs as integer kernels (QLinearAdd, QLinearMul,
/// QLinearSigmoid, QLinearConcat) when every input and the output are quantized. Calibration
/// quantizes them only then: a node whose output is a graph output, or with a constant operand,
/// stays float (it would get the rounding without the integer kernel).
pub const ELEMENTWISE_ACTIVATION_OPS: &[&str] = &[ADD, MUL, SIGMOID, CONCAT];

/// Ops that only move or select values (see [`passthrough`]).
pub const PASSTHROUGH_ACTIVATION_OPS: &[&str] = &[MAX_POOL, RESIZE, SPLIT];

/// Ops whose outputs follow from their inputs and attributes alone (no state, no randomness,
/// no subgraph): two such nodes with equal inputs compute equal outputs, and one can stand for
/// both (see `rewrite::merge_duplicate_nodes`). The shape plumbing exporters repeat per
/// product.
pub const PURE_SHAPE_OPS: &[&str] =
    &[CAST, CONCAT, GATHER, UNSQUEEZE, "Flatten", "Reshape", "Shape", "Slice", "Squeeze", "Transpose"];

/// Every op type `calibration.op-types` accepts.
pub fn activation_op_types() -> Vec<&'static str> {
    let mut all = DEFAULT_ACTIVATION_OPS.to_vec();
    all.push(CONV_TRANSPOSE);
    all.extend(ELEMENTWISE_ACTIVATION_OPS);
    all.extend(PASSTHROUGH_ACTIVATION_OPS);
    all
}

/// The weight role of input `input` of `node` for a weight of rank `rank`, or `None` when that
/// input is not a weight (a bias, indices, a shape, a scale...) or its rank does not fit.
pub fn weight_role(node: &NodeProto, input: usize, rank: usize) -> Result<Option<WeightRole>> {
    let Some(s) = spec(node) else { return Ok(None) };
    match [s.weight, s.second_weight].into_iter().flatten().find(|w| w.input == input) {
        Some(w) => (w.role)(node, rank),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::graph::NodeExt;

    fn node(op: &str) -> NodeProto {
        NodeProto { op_type: Some(op.into()), ..Default::default() }
    }

    #[test]
    fn roles_follow_each_ops_layout() {
        let r = |n: &NodeProto, i, rank| weight_role(n, i, rank).unwrap();
        assert_eq!(r(&node("Conv"), 1, 4), Some(WeightRole { channel_axis: 0, reduction_axis: Some(1) }));
        assert_eq!(r(&node("Conv"), 2, 1), None, "bias is not a weight");
        assert_eq!(r(&node("ConvTranspose"), 1, 4), Some(WeightRole { channel_axis: 1, reduction_axis: Some(0) }));
        assert_eq!(r(&node("MatMul"), 1, 3), Some(WeightRole { channel_axis: 2, reduction_axis: Some(1) }));
        assert_eq!(r(&node("MatMul"), 0, 2), None);
        assert_eq!(r(&node("Gemm"), 1, 2), Some(WeightRole { channel_axis: 1, reduction_axis: Some(0) }));
        let mut g = node("Gemm");
        g.set_attr_int("transB", 1);
        assert_eq!(r(&g, 1, 2), Some(WeightRole { channel_axis: 0, reduction_axis: Some(1) }));
        assert_eq!(r(&node("Resize"), 2, 1), None, "Resize scales are never weights");
        assert_eq!(r(&node("Gather"), 1, 1), None, "indices are not a weight");
        let mut gather = node("Gather");
        gather.set_attr_int("axis", -1);
        assert_eq!(r(&gather, 0, 2), Some(WeightRole { channel_axis: 1, reduction_axis: Some(0) }));
        // Recurrent W and R: one scale per gate row; B (3), sequence_lens (4), initial states stay.
        let gates = Some(WeightRole { channel_axis: 1, reduction_axis: Some(2) });
        for op in ["LSTM", "GRU", "RNN"] {
            assert_eq!((r(&node(op), 1, 3), r(&node(op), 2, 3)), (gates, gates), "{op}");
            for i in 3..7 {
                assert_eq!(r(&node(op), i, 2), None, "{op} input {i}");
            }
        }
    }

    #[test]
    fn the_table_is_sorted_without_duplicates_and_agrees_with_the_lists() {
        for w in TABLE.windows(2) {
            assert!(w[0].op < w[1].op, "{} listed twice or out of order", w[0].op);
        }
        for op in DEFAULT_WEIGHT_OPS {
            assert!(spec_of(op).and_then(|s| s.weight).is_some(), "{op} has no weight input");
        }
        for op in DEFAULT_ACTIVATION_OPS {
            assert!(matches!(spec_of(op).unwrap().activation, Activation::IntegerKernel { .. }), "{op}");
        }
        for op in ELEMENTWISE_ACTIVATION_OPS {
            assert_eq!(spec_of(op).unwrap().activation, Activation::Elementwise, "{op}");
        }
        for op in PASSTHROUGH_ACTIVATION_OPS {
            assert_eq!(spec_of(op).unwrap().activation, Activation::PassThrough, "{op}");
        }
        let kernels: Vec<&str> =
            TABLE.iter().filter(|s| matches!(s.activation, Activation::IntegerKernel { .. })).map(|s| s.op).collect();
        assert_eq!(kernels, ["Conv", "ConvTranspose", "Gemm", "MatMul"]);
        let mut foreign = NodeProto { op_type: Some("Conv".into()), ..Default::default() };
        foreign.domain = Some("com.example".into());
        assert!(spec(&foreign).is_none(), "other domains are not ONNX's Conv");
    }

    #[test]
    fn quantized_ops_are_recognised() {
        assert!(is_quantized_op(&node("QLinearConv")));
        assert!(is_quantized_op(&node("DequantizeLinear")));
        let mut ms = node("MatMulNBits");
        ms.domain = Some("com.microsoft".into());
        assert!(is_quantized_op(&ms));
        assert!(!is_quantized_op(&node("Conv")));
    }
}
