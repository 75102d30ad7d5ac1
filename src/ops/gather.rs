//! `Gather` of a constant table (embeddings): one scale per gathered row.

use crate::error::Result;
use crate::onnx::graph::NodeExt;
use crate::onnx::proto::NodeProto;

use super::{Activation, OpSpec, WeightRole, WeightSpec};

/// `Gather`.
pub const GATHER: &str = "Gather";

pub(super) const SPECS: &[OpSpec] = &[OpSpec {
    op: GATHER,
    weight: Some(WeightSpec { input: 0, role: gather_role }),
    second_weight: None,
    int32_bias: None,
    data_channel_axis: None,
    activation: Activation::None,
    saturating_kernel: None,
    output_shift: None,
}];

fn gather_role(node: &NodeProto, rank: usize) -> Result<Option<WeightRole>> {
    if rank < 2 {
        return Ok(None);
    }
    let axis = node.attr_int("axis")?.unwrap_or(0);
    let axis = if axis < 0 { axis + rank as i64 } else { axis };
    if axis < 0 || axis >= rank as i64 {
        return Err(node.attr_error("axis", format!("is out of range for a table of rank {rank}")));
    }
    let axis = axis as usize;
    Ok(Some(WeightRole { channel_axis: axis, reduction_axis: Some(if axis == rank - 1 { 0 } else { rank - 1 }) }))
}
