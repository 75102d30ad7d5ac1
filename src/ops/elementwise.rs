//! Elementwise ops. `Add`, `Mul`, `Sigmoid` and `Concat` run in ONNX Runtime as integer kernels
//! (QLinearAdd, QLinearMul, QLinearSigmoid, QLinearConcat) when every input and the output are
//! quantized; static quantization takes them only then. The rest are named for the rewrites and
//! the shape walks: activations, per-channel affine ops, shape-preserving unary ops.

use super::{Activation, OpSpec};

/// `Add`.
pub const ADD: &str = "Add";
/// `Mul`.
pub const MUL: &str = "Mul";
/// `Sub`.
pub const SUB: &str = "Sub";
/// `Div`.
pub const DIV: &str = "Div";
/// `Sigmoid`.
pub const SIGMOID: &str = "Sigmoid";
/// `Concat`.
pub const CONCAT: &str = "Concat";
/// `Relu`: quantized past when it alone reads an integer kernel's output (ONNX Runtime drops it).
pub const RELU: &str = "Relu";
/// `Clip`.
pub const CLIP: &str = "Clip";
/// `BatchNormalization`: a per-channel affine op, folded into the convolution next to it.
pub const BATCH_NORMALIZATION: &str = "BatchNormalization";
/// `HardSigmoid`.
pub const HARD_SIGMOID: &str = "HardSigmoid";
/// `HardSwish` (opset 14).
pub const HARD_SWISH: &str = "HardSwish";

const fn elementwise(op: &'static str) -> OpSpec {
    OpSpec {
        op,
        weight: None,
        second_weight: None,
        int32_bias: None,
        data_channel_axis: None,
        activation: Activation::Elementwise,
        saturating_kernel: None,
        output_shift: None,
    }
}

pub(super) const SPECS: &[OpSpec] = &[elementwise(ADD), elementwise(MUL), elementwise(SIGMOID), elementwise(CONCAT)];

/// Unary ops whose output has their input's shape (and so its channels).
pub const UNARY_SAME_SHAPE: &[&str] = &[
    RELU,
    SIGMOID,
    HARD_SIGMOID,
    HARD_SWISH,
    CLIP,
    "Tanh",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Softplus",
    "Mish",
    "Gelu",
    "Identity",
    "Exp",
    "Neg",
    "Abs",
    BATCH_NORMALIZATION,
];

/// Binary ops that broadcast their operands.
pub const BROADCAST_ARITHMETIC: &[&str] = &[MUL, ADD, SUB, DIV];
