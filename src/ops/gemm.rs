//! Matrix products: `Gemm` (weight B `[K, N]`, or `[N, K]` with `transB`) and `MatMul` (a
//! constant B `[..., K, N]`, outputs along the last axis).

use crate::error::Result;
use crate::onnx::graph::NodeExt;
use crate::onnx::proto::NodeProto;

use super::{Activation, OpSpec, WeightRole, WeightSpec};

/// `Gemm`.
pub const GEMM: &str = "Gemm";
/// `MatMul`.
pub const MATMUL: &str = "MatMul";

pub(super) const SPECS: &[OpSpec] = &[
    OpSpec {
        op: GEMM,
        weight: Some(WeightSpec { input: 1, role: gemm_role }),
        second_weight: None,
        int32_bias: Some(2),
        // A: [M, K] reduces over axis 1, or axis 0 with transA.
        data_channel_axis: Some(|n| if n.attr("transA").and_then(|a| a.i).unwrap_or(0) == 0 { 1 } else { 0 }),
        activation: Activation::IntegerKernel { needs_weight: true, float_output: true },
        saturating_kernel: Some(|_, _| true),
        output_shift: Some(gemm_output_shift),
    },
    OpSpec {
        op: MATMUL,
        weight: Some(WeightSpec { input: 1, role: matmul_role }),
        second_weight: None,
        int32_bias: None,
        data_channel_axis: None,
        // A product of two activations (attention's scores and context) stays float, as
        // dynamic quantization leaves it: measured on all-MiniLM-L6-v2 (BENCHMARKS).
        activation: Activation::IntegerKernel { needs_weight: true, float_output: true },
        saturating_kernel: Some(|_, _| true),
        output_shift: None,
    },
];

fn gemm_role(node: &NodeProto, rank: usize) -> Result<Option<WeightRole>> {
    if rank != 2 {
        return Ok(None);
    }
    Ok(Some(if node.attr_int("transB")?.unwrap_or(0) != 0 {
        WeightRole { channel_axis: 0, reduction_axis: Some(1) }
    } else {
        WeightRole { channel_axis: 1, reduction_axis: Some(0) }
    }))
}

fn matmul_role(_: &NodeProto, rank: usize) -> Result<Option<WeightRole>> {
    // B: [..., K, N]; outputs along the last axis, reduction over K.
    Ok((rank >= 2).then(|| WeightRole { channel_axis: rank - 1, reduction_axis: Some(rank - 2) }))
}

/// Σ_k (W_q − W)[k, o]·E[x_k] per output `o` (only for `alpha = beta = 1`).
fn gemm_output_shift(n: &NodeProto, wf: &[f32], wq: &[f32], dims: &[usize], m: &[f64]) -> Option<Vec<f64>> {
    let alpha = n.attr("alpha").and_then(|a| a.f).unwrap_or(1.0);
    let beta = n.attr("beta").and_then(|a| a.f).unwrap_or(1.0);
    let trans_b = n.attr("transB").and_then(|a| a.i).unwrap_or(0) == 1;
    if dims.len() != 2 || alpha != 1.0 || beta != 1.0 {
        return None;
    }
    let (kk, nn) = if trans_b { (dims[1], dims[0]) } else { (dims[0], dims[1]) };
    if m.len() != kk {
        return None;
    }
    Some(
        (0..nn)
            .map(|o| {
                (0..kk)
                    .map(|k| {
                        let j = if trans_b { o * kk + k } else { k * nn + o };
                        (wq[j] as f64 - wf[j] as f64) * m[k]
                    })
                    .sum()
            })
            .collect(),
    )
}
