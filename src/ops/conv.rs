//! Convolutions: `Conv` (weight `[M, C/group, k...]`, output channels along axis 0) and
//! `ConvTranspose` (weight `[C, M/group, k...]`, output channels along axis 1).

use crate::error::Result;
use crate::onnx::proto::NodeProto;

use super::{Activation, OpSpec, WeightRole, WeightSpec};

/// `Conv`.
pub const CONV: &str = "Conv";
/// `ConvTranspose`.
pub const CONV_TRANSPOSE: &str = "ConvTranspose";

pub(super) const SPECS: &[OpSpec] = &[
    OpSpec {
        op: CONV,
        weight: Some(WeightSpec { input: 1, role: conv_role }),
        second_weight: None,
        int32_bias: Some(2),
        data_channel_axis: Some(|_| 1),
        activation: Activation::IntegerKernel { needs_weight: true, float_output: false },
        saturating_kernel: Some(conv_saturates),
        output_shift: Some(conv_output_shift),
    },
    OpSpec {
        op: CONV_TRANSPOSE,
        weight: Some(WeightSpec { input: 1, role: conv_transpose_role }),
        second_weight: None,
        // ONNX Runtime has no integer ConvTranspose kernel that would read an int32 bias.
        int32_bias: None,
        data_channel_axis: None,
        activation: Activation::IntegerKernel { needs_weight: true, float_output: false },
        saturating_kernel: None,
        output_shift: None,
    },
];

fn conv_role(_: &NodeProto, rank: usize) -> Result<Option<WeightRole>> {
    // Outputs along 0, reduction over C/group.
    Ok((rank >= 3).then_some(WeightRole { channel_axis: 0, reduction_axis: Some(1) }))
}

fn conv_transpose_role(_: &NodeProto, rank: usize) -> Result<Option<WeightRole>> {
    // Outputs along 1, reduction over C.
    Ok((rank >= 3).then_some(WeightRole { channel_axis: 1, reduction_axis: Some(0) }))
}

/// The `group` attribute (1 when absent or not positive).
pub fn groups(n: &NodeProto) -> usize {
    n.attribute.iter().find(|a| a.name.as_deref() == Some("group")).and_then(|a| a.i).unwrap_or(1).max(1) as usize
}

/// A depthwise convolution: one input channel per group, as many groups as output channels.
pub fn is_depthwise(n: &NodeProto, weight_dims: &[i64]) -> bool {
    let grp = n.attribute.iter().find(|a| a.name.as_deref() == Some("group")).and_then(|a| a.i);
    grp.is_some_and(|grp| grp > 1 && weight_dims.first() == Some(&grp)) && weight_dims.get(1) == Some(&1)
}

/// ONNX Runtime's u8×s8 convolution kernels on x86 without VNNI add pairs of products in
/// saturating 16-bit lanes; depthwise convolutions use a kernel that accumulates in 32 bits.
fn conv_saturates(n: &NodeProto, weight_dims: &[i64]) -> bool {
    !is_depthwise(n, weight_dims)
}

/// Σ over taps of (W_q − W)·E[x] per output channel, grouped convolutions included.
fn conv_output_shift(n: &NodeProto, wf: &[f32], wq: &[f32], dims: &[usize], m: &[f64]) -> Option<Vec<f64>> {
    let groups = groups(n);
    let (cout, cg) = (dims[0], dims.get(1).copied().unwrap_or(0));
    let k: usize = dims[2..].iter().product::<usize>().max(1);
    if cout % groups != 0 || m.len() != cg * groups {
        return None;
    }
    Some(
        (0..cout)
            .map(|o| {
                let base = (o / (cout / groups)) * cg;
                (0..cg)
                    .map(|c| {
                        let start = (o * cg + c) * k;
                        let dw: f64 = (start..start + k).map(|j| wq[j] as f64 - wf[j] as f64).sum();
                        dw * m[base + c]
                    })
                    .sum()
            })
            .collect(),
    )
}
