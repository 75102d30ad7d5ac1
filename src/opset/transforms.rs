//! The rewrites behind the adapter table's `Transform` entries: each takes a node written for
//! the op's previous definition and leaves it valid, with the same meaning, under definition
//! `ctx.version`. Nodes they add use ops whose meaning for that use does not change up to the
//! newest opset the table covers, so they are valid at any target and are not upgraded again.

use crate::error::Result;
use crate::onnx::graph::NodeExt;
use crate::onnx::proto::dtype;

use super::context::NodeCtx;
use crate::onnx::tensor::float_data;

/// `TensorProto.DataType` of bfloat16 (not among `dtype`'s named constants).
const BFLOAT16: i32 = 16;

fn first_input(ctx: &NodeCtx) -> Result<String> {
    ctx.input(0).map(str::to_string).ok_or_else(|| ctx.fail("has no data input; the model is invalid"))
}

fn only_inputs(ctx: &mut NodeCtx, n: usize) -> Result<()> {
    if ctx.node.input.iter().skip(n).any(|i| !i.is_empty()) {
        let op = ctx.node.op_type.clone().unwrap_or_default();
        return Err(ctx.fail(format!("has more inputs than {op} accepted at opset {}; the model is invalid", ctx.from)));
    }
    ctx.node.input.truncate(n);
    Ok(())
}

fn missing(ctx: &NodeCtx, attr: &str) -> crate::error::Error {
    let op = ctx.node.op_type.clone().unwrap_or_default();
    ctx.fail(format!(
        "has no '{attr}' attribute, which {op} required before opset {}; the model is invalid",
        ctx.version
    ))
}

/// Squeeze/Unsqueeze/ReduceSum 13 and the other Reduce ops 18: the `axes` attribute becomes the
/// second input. Without it (or with an empty list) every axis is meant, before and after
/// (`noop_with_empty_axes` defaults to 0); Unsqueeze always had to list its axes.
pub(crate) fn axes_attr_to_input(ctx: &mut NodeCtx) -> Result<()> {
    only_inputs(ctx, 1)?;
    let required = ctx.node.op_type.as_deref() == Some("Unsqueeze");
    match ctx.take_ints("axes")? {
        Some(axes) if required || !axes.is_empty() => {
            let name = ctx.const_i64("axes", &[axes.len() as i64], &axes);
            ctx.set_input(1, name);
        }
        None if required => return Err(missing(ctx, "axes")),
        _ => {}
    }
    Ok(())
}

/// Split 13: the `split` attribute (output lengths) becomes the second input.
pub(crate) fn split_attr_to_input(ctx: &mut NodeCtx) -> Result<()> {
    if let Some(split) = ctx.take_ints("split")? {
        only_inputs(ctx, 1)?;
        let name = ctx.const_i64("split", &[split.len() as i64], &split);
        ctx.set_input(1, name);
    }
    Ok(())
}

/// Split 18: without a `split` input, `num_outputs` must say into how many equal parts to split.
/// (Uneven splits, which 18 allows, were invalid before, so valid old models mean the same.)
pub(crate) fn split_num_outputs(ctx: &mut NodeCtx) -> Result<()> {
    if ctx.input(1).is_none() {
        ctx.node.input.truncate(1);
        let n = ctx.node.output.len() as i64;
        ctx.node.set_attr_int("num_outputs", n);
    }
    Ok(())
}

/// Softmax/LogSoftmax/Hardmax 13: before, the input was coerced to 2-D at `axis` (default 1) and
/// normalised over everything from `axis` on; from 13 only over `axis` (default -1). Both agree
/// when `axis` is the last axis, which needs the rank; otherwise the old meaning is rebuilt
/// exactly: Flatten(axis) -> op(axis=-1) -> Reshape to the input's shape.
pub(crate) fn softmax_family_on_one_axis(ctx: &mut NodeCtx) -> Result<()> {
    let axis = ctx.take_int("axis")?.unwrap_or(1);
    let x = first_input(ctx)?;
    let is_last = ctx.scope().rank(&x).is_some_and(|r| {
        let r = r as i64;
        (if axis < 0 { axis + r } else { axis }) == r - 1
    });
    if is_last {
        ctx.node.set_attr_int("axis", axis);
        return Ok(());
    }
    let Some(y) = ctx.node.output.first().cloned() else {
        return Err(ctx.fail("has no output; the model is invalid"));
    };
    let flat = ctx.fresh("flat");
    let mut flatten = ctx.new_node("Flatten", vec![x.clone()], vec![flat.clone()]);
    flatten.set_attr_int("axis", axis);
    ctx.insert_before(flatten);
    let shape = ctx.fresh("shape");
    let shape_node = ctx.new_node("Shape", vec![x], vec![shape.clone()]);
    ctx.insert_before(shape_node);
    let y2d = ctx.fresh("2d");
    ctx.node.input[0] = flat;
    ctx.node.output[0] = y2d.clone();
    ctx.node.set_attr_int("axis", -1);
    let reshape = ctx.new_node("Reshape", vec![y2d, shape], vec![y]);
    ctx.insert_after(reshape);
    Ok(())
}

/// Clip 11: the `min`/`max` attributes become optional scalar inputs of the input's type.
pub(crate) fn clip_bounds_to_inputs(ctx: &mut NodeCtx) -> Result<()> {
    only_inputs(ctx, 1)?;
    let x = first_input(ctx)?;
    let min = ctx.take_float("min")?;
    let max = ctx.take_float("max")?;
    if let Some(v) = min {
        let name = ctx.scalar_like("min", v, &x)?;
        ctx.set_input(1, name);
    }
    if let Some(v) = max {
        let name = ctx.scalar_like("max", v, &x)?;
        ctx.set_input(2, name);
    }
    Ok(())
}

/// Pad 11: `pads` becomes an int64 input and `value` an optional scalar input of the data's type
/// (left out when it is the default 0 or the mode ignores it).
pub(crate) fn pad_attrs_to_inputs(ctx: &mut NodeCtx) -> Result<()> {
    only_inputs(ctx, 1)?;
    let x = first_input(ctx)?;
    let pads = ctx.take_ints("pads")?.ok_or_else(|| missing(ctx, "pads"))?;
    let value = ctx.take_float("value")?.unwrap_or(0.0);
    let mode = ctx.string("mode")?.unwrap_or_else(|| "constant".into());
    let name = ctx.const_i64("pads", &[pads.len() as i64], &pads);
    ctx.set_input(1, name);
    // Compare bits: a -0.0 fill must stay -0.0.
    if mode == "constant" && value.to_bits() != 0 {
        let name = ctx.scalar_like("value", value, &x)?;
        ctx.set_input(2, name);
    }
    Ok(())
}

/// Slice 10: `starts`, `ends` and `axes` become int64 inputs (`steps`, new, defaults to 1).
pub(crate) fn slice_attrs_to_inputs(ctx: &mut NodeCtx) -> Result<()> {
    only_inputs(ctx, 1)?;
    let starts = ctx.take_ints("starts")?.ok_or_else(|| missing(ctx, "starts"))?;
    let ends = ctx.take_ints("ends")?.ok_or_else(|| missing(ctx, "ends"))?;
    let axes = ctx.take_ints("axes")?;
    if starts.len() != ends.len() || axes.as_ref().is_some_and(|a| a.len() != starts.len()) {
        return Err(ctx.fail("has starts, ends and axes of different lengths; the model is invalid"));
    }
    let n = starts.len() as i64;
    let name = ctx.const_i64("starts", &[n], &starts);
    ctx.set_input(1, name);
    let name = ctx.const_i64("ends", &[n], &ends);
    ctx.set_input(2, name);
    if let Some(axes) = axes {
        let name = ctx.const_i64("axes", &[n], &axes);
        ctx.set_input(3, name);
    }
    Ok(())
}

/// TopK 10: the `k` attribute becomes a 1-element int64 input.
pub(crate) fn topk_k_to_input(ctx: &mut NodeCtx) -> Result<()> {
    only_inputs(ctx, 1)?;
    let k = ctx.take_int("k")?.ok_or_else(|| missing(ctx, "k"))?;
    let name = ctx.const_i64("k", &[1], &[k]);
    ctx.set_input(1, name);
    Ok(())
}

/// Dropout 10: the mask output becomes bool (it had the data's type). A model that reads the
/// mask would see a new type; an unread mask is dropped so no stale type declaration remains.
pub(crate) fn dropout_mask_becomes_bool(ctx: &mut NodeCtx) -> Result<()> {
    match ctx.node.output.get(1).cloned() {
        Some(mask) if ctx.is_used(&mask) => Err(ctx.fail(format!(
            "reads its mask output '{mask}', whose type changes from the data's type to bool at opset 10; \
             rewriting that is not implemented"
        ))),
        _ => {
            ctx.drop_outputs_from(1);
            Ok(())
        }
    }
}

/// Dropout 12: the `ratio` attribute becomes an optional scalar input (float32, which its type
/// constraint allows whatever the data's type). Without `training_mode` it is ignored anyway.
pub(crate) fn dropout_ratio_to_input(ctx: &mut NodeCtx) -> Result<()> {
    only_inputs(ctx, 1)?;
    if let Some(ratio) = ctx.take_float("ratio")? {
        let name = ctx.const_f32("ratio", &[], &[ratio]);
        ctx.set_input(1, name);
    }
    Ok(())
}

/// BatchNormalization 9: `spatial` is gone; 1 (the default) is what 9 always does, 0 (statistics
/// per activation) cannot be expressed with per-channel statistics.
pub(crate) fn batchnorm_drop_spatial(ctx: &mut NodeCtx) -> Result<()> {
    match ctx.take_int("spatial")? {
        Some(0) => Err(ctx.fail(
            "uses spatial=0 (statistics per activation), which BatchNormalization lost at opset 9; \
             rewriting it is not implemented",
        )),
        _ => Ok(()),
    }
}

/// BatchNormalization 14: before, declaring the optional outputs (mean, var, saved_mean,
/// saved_var) put the node in training mode (batch statistics, as ONNX Runtime does, checked);
/// from 14 the `training_mode` attribute does, with exactly the outputs Y, running_mean and
/// running_var. An inference node (Y only) is unchanged. A training node keeps its meaning with
/// training_mode=1; its running mean/var outputs keep their formulas, the saved_* ones are gone.
pub(crate) fn batchnorm_training_mode(ctx: &mut NodeCtx) -> Result<()> {
    let outputs = ctx.node.output.clone();
    if outputs.iter().skip(1).all(|o| o.is_empty()) {
        ctx.node.output.truncate(1);
        return Ok(());
    }
    if let Some(read) = outputs.iter().skip(3).find(|o| ctx.is_used(o)) {
        return Err(ctx.fail(format!(
            "reads its training output '{read}' (saved mean/variance), which BatchNormalization lost at opset 14; \
             export the model for inference"
        )));
    }
    ctx.drop_outputs_from(3);
    for (i, what) in [(1, "running_mean"), (2, "running_var")] {
        if ctx.node.output.get(i).is_none_or(|o| o.is_empty()) {
            let name = ctx.fresh(what);
            if ctx.node.output.len() <= i {
                ctx.node.output.resize(i + 1, String::new());
            }
            ctx.node.output[i] = name;
        }
    }
    ctx.node.set_attr_int("training_mode", 1);
    Ok(())
}

/// Erf 13 dropped the integer types (Erf of an integer tensor is not a sensible model).
pub(crate) fn erf_floats_only(ctx: &mut NodeCtx) -> Result<()> {
    let x = first_input(ctx)?;
    match ctx.scope().elem(&x) {
        Some(t) if !matches!(t, dtype::FLOAT | dtype::FLOAT16 | dtype::DOUBLE | BFLOAT16) => Err(ctx.fail(format!(
            "computes Erf of a {} tensor, which opset 13 no longer accepts; cast it to float in the model",
            dtype::name(t)
        ))),
        _ => Ok(()),
    }
}

/// QuantizeLinear 19: the scale must have the input's type, so an int32 input (allowed with a
/// float scale before) cannot be expressed.
pub(crate) fn quantize_float_input(ctx: &mut NodeCtx) -> Result<()> {
    let x = first_input(ctx)?;
    if ctx.scope().elem(&x) == Some(dtype::INT32) {
        return Err(ctx.fail("quantizes an int32 input with a float scale, which opset 19 no longer accepts"));
    }
    Ok(())
}

/// Upsample 9: the `scales` attribute becomes an input.
pub(crate) fn upsample_scales_to_input(ctx: &mut NodeCtx) -> Result<()> {
    only_inputs(ctx, 1)?;
    let scales = ctx.take_floats("scales")?.ok_or_else(|| missing(ctx, "scales"))?;
    let name = ctx.const_f32("scales", &[scales.len() as i64], &scales);
    ctx.set_input(1, name);
    Ok(())
}

/// Upsample 10 (deprecated): Resize-10 takes the same inputs and attributes and means the same.
pub(crate) fn upsample_to_resize(ctx: &mut NodeCtx) -> Result<()> {
    ctx.node.op_type = Some("Resize".into());
    ctx.state.was_upsample = true;
    Ok(())
}

/// Resize 11: Resize-10 took (X, scales) and mapped output to input coordinates as
/// `x / scale` ("asymmetric"); 11 adds a `roi` input before `scales` and defaults to
/// half_pixel. For nearest, ONNX left the rounding open; ONNX Runtime (checked) rounds down on
/// an axis it enlarges and up on one it shrinks. One node can only round one way, so when the
/// scales are not known to go one way, the node becomes two: shrink (ceil), then enlarge (floor).
/// Each axis is resized by only one of them (the other's scale is 1, an identity).
pub(crate) fn resize_roi_and_coordinates(ctx: &mut NodeCtx) -> Result<()> {
    let x = first_input(ctx)?;
    let scales =
        ctx.input(1).map(str::to_string).ok_or_else(|| ctx.fail("has no scales input; the model is invalid"))?;
    only_inputs(ctx, 2)?;
    let roi = ctx.const_f32("roi", &[0], &[]);
    ctx.node.input = vec![x.clone(), roi.clone(), scales.clone()];
    ctx.node.set_attr_string("coordinate_transformation_mode", "asymmetric");
    let mode = ctx.string("mode")?.unwrap_or_else(|| "nearest".into());
    match mode.as_str() {
        "linear" => return Ok(()),
        "nearest" => {}
        other => {
            return Err(ctx.fail(format!("has mode '{other}', which Resize-10 does not define; the model is invalid")));
        }
    }
    let known = ctx.scope().constant(&scales).and_then(|t| float_data(t).ok());
    let rounding = match known {
        _ if ctx.state.was_upsample => Some("floor"),
        Some(s) if s.iter().all(|&v| v >= 1.0) => Some("floor"),
        Some(s) if s.iter().all(|&v| v <= 1.0) => Some("ceil"),
        _ => None,
    };
    if let Some(r) = rounding {
        ctx.node.set_attr_string("nearest_mode", r);
        return Ok(());
    }
    let one = ctx.const_f32("one", &[], &[1.0]);
    let down = ctx.fresh("shrink_scales");
    let node = ctx.new_node("Min", vec![scales.clone(), one.clone()], vec![down.clone()]);
    ctx.insert_before(node);
    let up = ctx.fresh("enlarge_scales");
    let node = ctx.new_node("Max", vec![scales, one], vec![up.clone()]);
    ctx.insert_before(node);
    let shrunk = ctx.fresh("shrunk");
    let mut shrink = ctx.new_node("Resize", vec![x, roi.clone(), down], vec![shrunk.clone()]);
    shrink.set_attr_string("mode", "nearest");
    shrink.set_attr_string("coordinate_transformation_mode", "asymmetric");
    shrink.set_attr_string("nearest_mode", "ceil");
    ctx.insert_before(shrink);
    ctx.node.input = vec![shrunk, roi, up];
    ctx.node.set_attr_string("nearest_mode", "floor");
    Ok(())
}

/// Resize 13 removed the "tf_half_pixel_for_nn" coordinate mode, `(x + 0.5) / scale`. It is
/// "half_pixel" (`(x + 0.5) / scale - 0.5`) with the rounding moved by one half: floor(v) =
/// round_half_up(v - 0.5) and round_half_down(v) = ceil(v - 0.5).
pub(crate) fn resize_drop_tf_half_pixel_for_nn(ctx: &mut NodeCtx) -> Result<()> {
    if ctx.string("coordinate_transformation_mode")?.as_deref() != Some("tf_half_pixel_for_nn") {
        return Ok(());
    }
    let mode = ctx.string("mode")?.unwrap_or_else(|| "nearest".into());
    let nearest = ctx.string("nearest_mode")?.unwrap_or_else(|| "round_prefer_floor".into());
    let rounding = match (mode.as_str(), nearest.as_str()) {
        ("nearest", "floor") => "round_prefer_ceil",
        ("nearest", "round_prefer_floor") => "ceil",
        _ => {
            return Err(ctx.fail(format!(
                "uses coordinate mode tf_half_pixel_for_nn with mode '{mode}' and nearest_mode '{nearest}', \
                 which opset 13 removed and no other mode reproduces"
            )));
        }
    };
    ctx.node.set_attr_string("coordinate_transformation_mode", "half_pixel");
    ctx.node.set_attr_string("nearest_mode", rounding);
    Ok(())
}

/// RoiAlign 16 added `coordinate_transformation_mode`, defaulting to half_pixel (a -0.5 pixel
/// shift); the old behaviour is "output_half_pixel".
pub(crate) fn roialign_keep_output_half_pixel(ctx: &mut NodeCtx) -> Result<()> {
    if ctx.node.attr("coordinate_transformation_mode").is_none() {
        ctx.node.set_attr_string("coordinate_transformation_mode", "output_half_pixel");
    }
    Ok(())
}

/// GridSample 20 renamed its modes (bilinear -> linear, bicubic -> cubic) as it grew to N-D.
pub(crate) fn gridsample_mode_names(ctx: &mut NodeCtx) -> Result<()> {
    let renamed = match ctx.string("mode")?.as_deref() {
        Some("bilinear") => "linear",
        Some("bicubic") => "cubic",
        _ => return Ok(()),
    };
    ctx.node.set_attr_string("mode", renamed);
    Ok(())
}

/// DFT 20: the `axis` attribute (default 1) becomes a scalar int64 third input, with the same
/// meaning (the first signal axis after the batch axis by default).
pub(crate) fn dft_axis_to_input(ctx: &mut NodeCtx) -> Result<()> {
    only_inputs(ctx, 2)?;
    let axis = ctx.take_int("axis")?.unwrap_or(1);
    let name = ctx.const_i64("axis", &[], &[axis]);
    ctx.set_input(2, name);
    Ok(())
}

/// GroupNormalization 21: scale and bias were per group and are per channel from 21. Constant
/// per-group values are repeated over each group's channels, which needs the channel count.
pub(crate) fn groupnorm_per_channel(ctx: &mut NodeCtx) -> Result<()> {
    let x = first_input(ctx)?;
    let groups = ctx.node.attr_int("num_groups")?.ok_or_else(|| missing(ctx, "num_groups"))?;
    let channels = ctx.scope().dims(&x).and_then(|d| d.get(1).copied().flatten());
    let constant = |i: usize| ctx.input(i).and_then(|n| ctx.scope().constant(n)).and_then(|t| float_data(t).ok());
    let (Some(c), Some(scale), Some(bias)) = (channels, constant(1), constant(2)) else {
        return Err(ctx.fail(
            "has per-group scale and bias, which opset 21 replaced by per-channel ones; they can be expanded \
             only when they are float32 constants and the input's channel count is declared",
        ));
    };
    if groups <= 0 || c % groups != 0 || scale.len() as i64 != groups || bias.len() as i64 != groups {
        return Err(ctx.fail(format!(
            "has {} scales and {} biases for {groups} groups of {c} channels; the model is invalid",
            scale.len(),
            bias.len()
        )));
    }
    let per_group = (c / groups) as usize;
    let expand = |v: &[f32]| v.iter().flat_map(|&s| std::iter::repeat_n(s, per_group)).collect::<Vec<f32>>();
    let name = ctx.const_f32("scale", &[c], &expand(&scale));
    ctx.set_input(1, name);
    let name = ctx.const_f32("bias", &[c], &expand(&bias));
    ctx.set_input(2, name);
    Ok(())
}

/// Scatter 11 (deprecated): ScatterElements-11 is the same operation under its new name.
pub(crate) fn scatter_to_scatter_elements(ctx: &mut NodeCtx) -> Result<()> {
    ctx.node.op_type = Some("ScatterElements".into());
    Ok(())
}
