//! Recurrent ops (`LSTM`, `GRU`, `RNN`): their input weights `W` and recurrence weights `R`,
//! `[num_directions, gates × hidden_size, input or hidden size]`, get one scale per gate row
//! (axis 1) and block along the last axis. Biases, sequence lengths and initial states stay
//! float. The ops themselves run in float (ONNX Runtime and tract dequantize the weights once).

use crate::error::Result;
use crate::onnx::proto::NodeProto;

use super::{Activation, OpSpec, WeightRole, WeightSpec};

/// `LSTM`.
pub const LSTM: &str = "LSTM";
/// `GRU`.
pub const GRU: &str = "GRU";
/// `RNN`.
pub const RNN: &str = "RNN";

const fn recurrent(op: &'static str) -> OpSpec {
    OpSpec {
        op,
        weight: Some(WeightSpec { input: 1, role: gate_rows }),
        second_weight: Some(WeightSpec { input: 2, role: gate_rows }),
        int32_bias: None,
        data_channel_axis: None,
        activation: Activation::None,
        saturating_kernel: None,
        output_shift: None,
    }
}

pub(super) const SPECS: &[OpSpec] = &[recurrent(GRU), recurrent(LSTM), recurrent(RNN)];

fn gate_rows(_: &NodeProto, rank: usize) -> Result<Option<WeightRole>> {
    Ok((rank == 3).then_some(WeightRole { channel_axis: 1, reduction_axis: Some(2) }))
}
