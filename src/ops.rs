//! What quantize-rs knows about ONNX ops, in one place: which input of an op is a weight, along
//! which axis its output channels and its reduction run, and which ops are already quantized.
//! Analysis, planning and the report all ask this table instead of matching op names themselves.

use crate::error::Result;
use crate::graph::{NodeExt, node_domain};
use crate::proto::NodeProto;

/// How an op uses a constant input as a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightRole {
    /// Axis of the output channels (per-channel scales run along it).
    pub channel_axis: usize,
    /// Axis the op reduces over (blocks run along it), if it has one.
    pub reduction_axis: Option<usize>,
}

/// Ops whose weights quantize-rs quantizes, with the input that holds the weight.
pub const WEIGHT_OPS: &[(&str, usize)] =
    &[("Conv", 1), ("ConvTranspose", 1), ("Gemm", 1), ("MatMul", 1), ("Gather", 0)];

/// The default `--op-types`.
pub fn default_op_types() -> Vec<String> {
    WEIGHT_OPS.iter().map(|(op, _)| op.to_string()).collect()
}

/// Ops whose activations static quantization quantizes by default: those ONNX Runtime runs as
/// integer kernels (QLinearConv, QLinearMatMul, QGemm) between DequantizeLinear and QuantizeLinear.
pub const DEFAULT_ACTIVATION_OPS: &[&str] = &["Conv", "MatMul", "Gemm"];

/// Ops without weights that ONNX Runtime also runs as integer kernels (QLinearAdd, QLinearMul,
/// QLinearSigmoid, QLinearConcat) when every input and the output are quantized. Calibration
/// quantizes them only then: a node whose output is a graph output, or with a constant operand,
/// stays float (it would get the rounding without the integer kernel).
pub const ELEMENTWISE_ACTIVATION_OPS: &[&str] = &["Add", "Mul", "Sigmoid", "Concat"];

/// Ops that only move or select values (ONNX Runtime runs them on uint8 directly when their input
/// and outputs share one scale and zero point). Calibration gives their outputs the range of their
/// data input, so the values pass through unchanged.
pub const PASSTHROUGH_ACTIVATION_OPS: &[&str] = &["MaxPool", "Resize", "Split"];

/// Every op type `calibration.op-types` accepts.
pub fn activation_op_types() -> Vec<&'static str> {
    let mut all = DEFAULT_ACTIVATION_OPS.to_vec();
    all.push("ConvTranspose");
    all.extend(ELEMENTWISE_ACTIVATION_OPS);
    all.extend(PASSTHROUGH_ACTIVATION_OPS);
    all
}

/// The weight role of input `input` of `node` for a weight of rank `rank`, or `None` when that
/// input is not a weight (a bias, indices, a shape, a scale...) or its rank does not fit.
pub fn weight_role(node: &NodeProto, input: usize, rank: usize) -> Result<Option<WeightRole>> {
    if !node_domain(node).is_empty() {
        return Ok(None);
    }
    let op = node.op_type.as_deref().unwrap_or("");
    let Some(&(_, weight_input)) = WEIGHT_OPS.iter().find(|(o, _)| *o == op) else {
        return Ok(None);
    };
    if input != weight_input {
        return Ok(None);
    }
    let role = |channel_axis, reduction_axis| Some(WeightRole { channel_axis, reduction_axis });
    Ok(match op {
        // W: [M, C/group, k...]; outputs along 0, reduction over C/group.
        "Conv" if rank >= 3 => role(0, Some(1)),
        // W: [C, M/group, k...]; outputs along 1, reduction over C.
        "ConvTranspose" if rank >= 3 => role(1, Some(0)),
        "Gemm" if rank == 2 => {
            if node.attr_int("transB")?.unwrap_or(0) != 0 {
                role(0, Some(1))
            } else {
                role(1, Some(0))
            }
        }
        // B: [..., K, N]; outputs along the last axis, reduction over K.
        "MatMul" if rank >= 2 => role(rank - 1, Some(rank - 2)),
        // A table read row by row: one scale per row along the gathered axis.
        "Gather" if rank >= 2 => {
            let axis = node.attr_int("axis")?.unwrap_or(0);
            let axis = if axis < 0 { axis + rank as i64 } else { axis };
            if axis < 0 || axis >= rank as i64 {
                return Err(node.attr_error("axis", format!("is out of range for a table of rank {rank}")));
            }
            let axis = axis as usize;
            role(axis, Some(if axis == rank - 1 { 0 } else { rank - 1 }))
        }
        _ => None,
    })
}

/// Whether the node is already quantized (or part of a quantized pattern): its inputs are left
/// exactly as they are.
pub fn is_quantized_op(node: &NodeProto) -> bool {
    let op = node.op_type.as_deref().unwrap_or("");
    match node_domain(node) {
        "" => matches!(
            op,
            "QuantizeLinear"
                | "DequantizeLinear"
                | "DynamicQuantizeLinear"
                | "ConvInteger"
                | "MatMulInteger"
                | "QLinearConv"
                | "QLinearMatMul"
        ),
        "com.microsoft" => {
            op.starts_with("QLinear")
                || op.starts_with("QOrdered")
                || op.contains("Integer")
                || op.contains("NBits")
                || op.contains("Quantize")
                || op.contains("BlockQuantized")
                || matches!(op, "QGemm" | "QAttention" | "QEmbedLayerNormalization" | "QuickGelu_int8")
        }
        _ => false,
    }
}

/// Minimum default-domain opset for DequantizeLinear with each feature.
pub mod min_opset {
    /// Per-tensor DequantizeLinear.
    pub const PER_TENSOR: i64 = 10;
    /// The `axis` attribute (per-channel).
    pub const PER_AXIS: i64 = 13;
    /// The `block_size` attribute and INT4/UINT4 inputs.
    pub const BLOCKED_OR_INT4: i64 = 21;
}

/// The IR version a model needs for a default-domain opset (from ONNX's versioning table).
pub fn ir_version_for_opset(opset: i64) -> i64 {
    match opset {
        ..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        _ => 11,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
