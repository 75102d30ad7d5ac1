//! Ops that only move or select values. ONNX Runtime runs them on uint8 directly when their
//! input and outputs share one scale and zero point, so static quantization gives their outputs
//! the range of their data input (input 0; the others are sizes, scales or split lengths).

use super::{Activation, OpSpec};

/// `MaxPool`.
pub const MAX_POOL: &str = "MaxPool";
/// `Resize` (cubic interpolation overshoots its input's range and is left float).
pub const RESIZE: &str = "Resize";
/// `Split`.
pub const SPLIT: &str = "Split";

const fn passthrough(op: &'static str) -> OpSpec {
    OpSpec {
        op,
        weight: None,
        second_weight: None,
        int32_bias: None,
        data_channel_axis: None,
        activation: Activation::PassThrough,
        saturating_kernel: None,
        output_shift: None,
    }
}

pub(super) const SPECS: &[OpSpec] = &[passthrough(MAX_POOL), passthrough(RESIZE), passthrough(SPLIT)];
