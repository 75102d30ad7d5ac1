//! The weights of the integer kernels: 7-bit ranges where ONNX Runtime's u8×s8 kernels would
//! saturate, and bias correction for the mean shift quantized weights cause.

use std::collections::{HashMap, HashSet};

use super::*;
use crate::error::Result;
use crate::onnx::graph::{Names, NodeExt};
use crate::onnx::model::Model;
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto, dtype};
use crate::onnx::tensor::{constant_value, constant_value_mut};
use crate::ops;
use crate::quant::QType;

/// Requantizes, from the float model's values, the int8 weights of the selected nodes that ONNX
/// Runtime runs as u8×s8 GEMM kernels (Conv except depthwise, MatMul, Gemm) to 7 bits, keeping
/// their layout. On x86 without VNNI those kernels add pairs of u8×s8 products in saturating
/// 16-bit lanes: with 8-bit weights a pair reaches 2 × 255 × 127 and overflows, which cost up to
/// 13 dB of output SNR on real models (BENCHMARKS.md); with 7 bits it cannot. Depthwise
/// convolutions use a kernel that accumulates in 32 bits and keep 8 bits. Returns each weight
/// requantized with its SQNR.
pub(super) fn reduce_weight_ranges(
    float: &Model,
    quantized: &mut Model,
    sel: &Selection,
    range: crate::quant::RangeSearch,
) -> Result<Vec<(String, f64)>> {
    use crate::quant::{Granularity, Symmetry, quantize_measured};
    let float_consts = crate::onnx::graph::constants(float.graph());
    let float_tensor = |name: &str| float_consts.get(name).copied();
    let g = quantized.graph_mut();
    let weights = dequantized_weights(g);
    let quantized_inputs: HashSet<&str> = sel.tensors.iter().map(String::as_str).collect();
    let mut names: Vec<String> = Vec::new();
    for &i in &sel.nodes {
        let n = &g.node[i];
        // Only ops whose input is quantized run as integer kernels.
        let Some((saturates, w)) = ops::spec(n).and_then(|s| Some((s.saturating_kernel?, s.weight?.input))) else {
            continue;
        };
        if !n.input.first().is_some_and(|x| quantized_inputs.contains(x.as_str())) {
            continue;
        }
        let Some(w) = n.input.get(w).filter(|w| weights.contains_key(w.as_str())) else { continue };
        let dims = float_tensor(w).map(|t| t.dims.clone()).unwrap_or_default();
        if saturates(n, &dims) && !names.contains(w) {
            names.push(w.clone());
        }
    }
    let mut out = Vec::new();
    for w in names {
        let dq = &weights[&w];
        if dq.attr("block_size").is_some() {
            continue;
        }
        let Some(ft) = float_tensor(&w) else { continue };
        let values = crate::onnx::tensor::finite_floats(ft)?;
        let dims: Vec<usize> = ft.dims.iter().map(|&d| d as usize).collect();
        let find =
            |name: Option<&String>| name.and_then(|n| g.initializer.iter().position(|t| t.name.as_ref() == Some(n)));
        let (Some(qi), Some(si)) = (find(dq.input.first()), find(dq.input.get(1))) else { continue };
        // Only 8-bit values can saturate: 4-bit weights (widened to int8 bytes) stay as they are.
        let stored = &g.initializer[qi];
        if stored.data_type != Some(dtype::INT8)
            || stored.raw_data.as_ref().is_none_or(|r| r.iter().all(|&b| (-64..=64).contains(&(b as i8))))
        {
            continue;
        }
        let zi = find(dq.input.get(2));
        let gran = if g.initializer[si].dims.is_empty() {
            Granularity::PerTensor
        } else {
            let axis = dq.attr("axis").and_then(|a| a.i).unwrap_or(1);
            Granularity::PerAxis { axis: if axis < 0 { axis + dims.len() as i64 } else { axis } as usize }
        };
        // The weight pass writes a zero point for asymmetric weights, and an all-zero one where
        // ONNX Runtime's fusion wants it (Gemm): the latter are symmetric.
        let all_zero = |t: &TensorProto| t.raw_data.as_ref().is_some_and(|r| r.iter().all(|&b| b == 0));
        let symmetry =
            if zi.is_none_or(|z| all_zero(&g.initializer[z])) { Symmetry::Symmetric } else { Symmetry::Asymmetric };
        let mean_axis = match (range, gran) {
            (crate::quant::RangeSearch::Mse, Granularity::PerAxis { axis }) => Some(axis),
            _ => None,
        };
        let (q, sqnr) = quantize_measured(&values, &dims, QType::Int7, gran, symmetry, range, mean_axis);
        g.initializer[qi].raw_data = Some(q.values.into());
        g.initializer[si].raw_data = Some(crate::onnx::tensor::le_bytes(&q.scales).into());
        g.initializer[si].float_data.clear();
        if let Some(zi) = zi {
            g.initializer[zi].raw_data = Some(q.zero_points.iter().map(|&z| z as i8 as u8).collect::<Vec<u8>>().into());
            g.initializer[zi].int32_data.clear();
        }
        out.push((w, sqnr));
    }
    Ok(out)
}

/// The channel axis of each tensor of `sel` that is the data input of a selected Conv or Gemm:
/// bias correction needs its per-channel means.
pub(super) fn channel_axes(g: &GraphProto, sel: &Selection) -> Vec<Option<usize>> {
    let mut axis_of: HashMap<&str, usize> = HashMap::new();
    for &i in &sel.nodes {
        let n = &g.node[i];
        let Some(axis) = ops::spec(n).and_then(|s| s.data_channel_axis).map(|axis| axis(n)) else { continue };
        if let Some(x) = n.input.first() {
            axis_of.insert(x, axis);
        }
    }
    sel.tensors.iter().map(|t| axis_of.get(t.as_str()).copied()).collect()
}

/// Σ (W_q − W)·E[x] per output channel of Conv/Gemm `n`: the mean shift of its output that
/// quantizing its weight (float `wf`, dequantized `wq`, shape `dims`) causes for input means `m`.
pub(super) fn weight_shift(n: &NodeProto, wf: &[f32], wq: &[f32], dims: &[usize], m: &[f64]) -> Option<Vec<f64>> {
    (ops::spec(n)?.output_shift?)(n, wf, wq, dims, m)
}

/// Bias correction: quantizing a weight moves each output channel's mean by
/// Σ (W_q − W)·E[x]; with the per-channel input means measured during calibration, the float bias
/// of each selected Conv/Gemm absorbs that shift (a bias is added where there was none), before it
/// is quantized to int32. Returns the count of nodes corrected.
pub(super) fn correct_biases(
    float: &Model,
    quantized: &mut Model,
    sel: &Selection,
    means: &HashMap<String, Vec<f64>>,
) -> Result<usize> {
    let float_consts = crate::onnx::graph::constants(float.graph());
    // First every node's shift, from the graph as it is; then the biases change.
    let shifts: Vec<(usize, Vec<f64>)> = {
        let g = quantized.graph();
        let weights = dequantized_weights(g);
        let consts = crate::onnx::graph::constants(g);
        sel.nodes
            .iter()
            .filter_map(|&i| {
                let n = &g.node[i];
                let (x, w) = (n.input.first()?, n.input.get(1)?);
                let (m, dq, ft) = (means.get(x)?, weights.get(w)?, float_consts.get(w.as_str())?);
                let wf = crate::onnx::tensor::finite_floats(ft).ok()?;
                let input =
                    |k: usize| dq.input.get(k).filter(|i| !i.is_empty()).and_then(|i| consts.get(i.as_str()).copied());
                let wq = crate::ops::quantized::dequantized(dq, input(0)?, input(1)?, input(2))?;
                let dims: Vec<usize> = ft.dims.iter().map(|&d| d as usize).collect();
                (wq.len() == wf.len()).then(|| weight_shift(n, &wf, &wq, &dims, m)).flatten().map(|c| (i, c))
            })
            .collect()
    };
    let mut names = Names::of_graph(quantized.graph());
    let g = quantized.graph_mut();
    let readers = crate::onnx::graph::readers(g);
    let mut corrected = 0;
    for (i, corr) in shifts {
        let w = g.node[i].input[1].clone();
        // The bias: an initializer or Constant read by this node alone, or a new one.
        let b = g.node[i].input.get(2).filter(|b| !b.is_empty()).cloned();
        let slot = match &b {
            Some(b) if readers.get(b).map(Vec::len) == Some(1) => {
                if let Some(t) = g.initializer.iter_mut().find(|t| t.name.as_ref() == Some(b)) {
                    Some(t)
                } else {
                    g.node
                        .iter_mut()
                        .find(|c| c.output.first() == Some(b) && constant_value(c).is_some())
                        .and_then(constant_value_mut)
                }
            }
            Some(_) => None,
            None => {
                let name = names.fresh(&format!("{}_bias", w));
                g.initializer.push(TensorProto {
                    name: Some(name.clone()),
                    data_type: Some(dtype::FLOAT),
                    dims: vec![corr.len() as i64],
                    raw_data: Some(vec![0u8; corr.len() * 4].into()),
                    ..Default::default()
                });
                g.node[i].input.resize(2, String::new());
                g.node[i].input.push(name);
                g.initializer.last_mut()
            }
        };
        let Some(t) = slot else { continue };
        let Ok(bias) = crate::onnx::tensor::finite_floats(t) else { continue };
        if t.dims.len() != 1 || bias.len() != corr.len() {
            continue;
        }
        let fixed: Vec<u8> =
            bias.iter().zip(&corr).flat_map(|(&b, &c)| ((b as f64 - c) as f32).to_le_bytes()).collect();
        t.raw_data = Some(fixed.into());
        t.float_data.clear();
        corrected += 1;
    }
    Ok(corrected)
}
