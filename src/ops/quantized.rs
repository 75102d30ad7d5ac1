//! The quantization ops themselves: what quantize-rs writes (QuantizeLinear, DequantizeLinear),
//! what marks a model part as already quantized (left exactly as it is), and the opset and IR
//! versions each DequantizeLinear feature needs.

// Calibration and validation (the `tract` feature) are what read the rest of this; the full
// build lints it.
#![cfg_attr(not(feature = "tract"), allow(dead_code, unused_imports))]

use crate::onnx::graph::{NodeExt, node_domain};
use crate::onnx::proto::{NodeProto, TensorProto};
use crate::onnx::tensor::{element_count, float_data, int_data};

/// `QuantizeLinear`.
pub const QUANTIZE_LINEAR: &str = "QuantizeLinear";
/// `DequantizeLinear`.
pub const DEQUANTIZE_LINEAR: &str = "DequantizeLinear";
/// `DynamicQuantizeLinear`: uint8 values, scale and zero point computed from its input at run time.
pub const DYNAMIC_QUANTIZE_LINEAR: &str = "DynamicQuantizeLinear";
/// `MatMulInteger`: an int32 matrix product of 8-bit operands.
pub const MATMUL_INTEGER: &str = "MatMulInteger";
/// `Cast`.
pub const CAST: &str = "Cast";
/// `Identity`.
pub const IDENTITY: &str = "Identity";
/// `Unsqueeze`.
pub const UNSQUEEZE: &str = "Unsqueeze";

/// Whether the node is already quantized (or part of a quantized pattern): its inputs are left
/// exactly as they are.
pub fn is_quantized_op(node: &NodeProto) -> bool {
    let op = node.op_type.as_deref().unwrap_or("");
    match node_domain(node) {
        "" => matches!(
            op,
            QUANTIZE_LINEAR
                | DEQUANTIZE_LINEAR
                | DYNAMIC_QUANTIZE_LINEAR
                | "ConvInteger"
                | MATMUL_INTEGER
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

/// How a DequantizeLinear's scale maps onto its input, checked against the shapes.
#[derive(Debug, Clone, Copy)]
pub enum Layout {
    /// One scale.
    PerTensor,
    /// One scale per index of the axis.
    PerAxis(usize),
    /// One scale per block of the given size along the axis.
    Blocked(usize, usize),
}

/// The layout of DequantizeLinear `n` of `x` with `scale`, or why the shapes do not fit.
pub fn layout_of(n: &NodeProto, x: &TensorProto, scale: &TensorProto) -> std::result::Result<Layout, String> {
    let rank = x.dims.len() as i64;
    let axis = n.attr_int("axis").map_err(|e| e.to_string())?;
    let block = n.attr_int("block_size").map_err(|e| e.to_string())?.filter(|&b| b > 0);
    let scale_elems = element_count(scale).unwrap_or(0);
    if block.is_none() && (scale.dims.is_empty() || (scale.dims.len() == 1 && scale_elems == 1 && axis.is_none())) {
        return Ok(Layout::PerTensor);
    }
    let a = axis.unwrap_or(1);
    let a = if a < 0 { a + rank } else { a };
    if !(0..rank).contains(&a) {
        return Err(format!("axis {} is out of range for input of rank {rank}", axis.unwrap_or(1)));
    }
    let a = a as usize;
    let dims: Vec<usize> = x.dims.iter().map(|&d| d.max(0) as usize).collect();
    match block {
        None => {
            if scale.dims.len() != 1 || scale_elems != dims[a] {
                return Err(format!(
                    "scale shape {:?} does not match axis {a} of input shape {:?} (expected [{}])",
                    scale.dims, x.dims, dims[a]
                ));
            }
            Ok(Layout::PerAxis(a))
        }
        Some(b) => {
            let b = b as usize;
            let want: Vec<i64> =
                dims.iter().enumerate().map(|(i, &d)| if i == a { d.div_ceil(b) } else { d } as i64).collect();
            if scale.dims != want {
                return Err(format!(
                    "scale shape {:?} does not match input shape {:?} blocked by {b} on axis {a} (expected {want:?})",
                    scale.dims, x.dims
                ));
            }
            Ok(Layout::Blocked(a, b))
        }
    }
}

/// The scale (and zero-point) index of each element of a tensor of shape `dims`.
pub fn group_index(dims: &[usize], layout: Layout) -> impl Fn(usize) -> usize + '_ {
    move |i| match layout {
        Layout::PerTensor => 0,
        Layout::PerAxis(a) => {
            let inner: usize = dims[a + 1..].iter().product();
            (i / inner.max(1)) % dims[a].max(1)
        }
        Layout::Blocked(a, b) => {
            // Row-major coordinates of i, with the blocked axis divided by the block size.
            let mut rest = i;
            let mut g = 0;
            let mut stride = 1;
            for k in (0..dims.len()).rev() {
                let c = rest % dims[k].max(1);
                rest /= dims[k].max(1);
                let (c, size) = if k == a { (c / b, dims[k].div_ceil(b)) } else { (c, dims[k]) };
                g += c * stride;
                stride *= size.max(1);
            }
            g
        }
    }
}

/// The float values of the DequantizeLinear `n` of constants `x`, `scale` and `zero_point`
/// (any layout, 4-bit unpacked), or what is wrong with its data or layout.
pub fn dequantize(
    n: &NodeProto,
    x: &TensorProto,
    scale: &TensorProto,
    zero_point: Option<&TensorProto>,
) -> std::result::Result<Vec<f32>, String> {
    let q = int_data(x).map_err(|e| format!("input {e}"))?;
    let scales = float_data(scale).map_err(|e| format!("scale {e}"))?;
    let layout = layout_of(n, x, scale)?;
    let zps = match zero_point.map(int_data) {
        None => vec![0; scales.len()],
        Some(Ok(z)) if z.len() == scales.len() => z,
        Some(Ok(z)) => return Err(format!("{} zero points for {} scales", z.len(), scales.len())),
        Some(Err(e)) => return Err(format!("zero point {e}")),
    };
    if scales.is_empty() {
        return Err("has no scale".into());
    }
    let dims: Vec<usize> = x.dims.iter().map(|&d| d.max(0) as usize).collect();
    let group = group_index(&dims, layout);
    Ok(q.iter()
        .enumerate()
        .map(|(i, &v)| {
            let gi = group(i).min(scales.len() - 1);
            (v - zps[gi]) as f32 * scales[gi]
        })
        .collect())
}

/// [`dequantize`], or `None` when its data or layout is broken (the type check names it).
pub fn dequantized(
    n: &NodeProto,
    x: &TensorProto,
    scale: &TensorProto,
    zero_point: Option<&TensorProto>,
) -> Option<Vec<f32>> {
    dequantize(n, x, scale, zero_point).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_index_per_axis_and_blocked() {
        let dims = [2, 3];
        let g = group_index(&dims, Layout::PerAxis(0));
        assert_eq!((0..6).map(&g).collect::<Vec<_>>(), [0, 0, 0, 1, 1, 1]);
        let g = group_index(&dims, Layout::PerAxis(1));
        assert_eq!((0..6).map(&g).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2]);
        // Blocks of 2 along axis 1: scale shape [2, 2].
        let g = group_index(&dims, Layout::Blocked(1, 2));
        assert_eq!((0..6).map(&g).collect::<Vec<_>>(), [0, 0, 1, 2, 2, 3]);
    }
}
