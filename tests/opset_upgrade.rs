//! The opset upgrader against ONNX Runtime: each op change the upgrader rewrites gets a small
//! model at the old opset, upgraded and run next to the original on the same inputs; the outputs
//! must agree. Refusals must name the node and op.

mod support;

use quantize_rs::Error;
use quantize_rs::onnx::proto::{ModelProto, NodeProto, dtype};
use quantize_rs::{Upgrade, upgrade_opset as upgrade};
use support::*;

const F: i32 = dtype::FLOAT;
const TOL: f64 = 1e-6;

/// Upgrades a copy of `m` to `target` (raising the IR version as the caller does).
fn upgraded(m: &ModelProto, target: i64) -> (ModelProto, Upgrade) {
    let mut up = m.clone();
    let report = upgrade(&mut up, target).unwrap_or_else(|e| panic!("upgrade to {target}: {e}"));
    up.ir_version = Some(quantize_rs::onnx::model::ir_version_for_opset(target));
    assert_eq!(opset_of(&up), Some(target));
    assert_eq!(report.to, target);
    (up, report)
}

/// Upgrades `m` and checks in ONNX Runtime that the result computes what `m` computes.
fn check(m: &ModelProto, target: i64, opts: &Compare) -> (ModelProto, Upgrade) {
    let (up, report) = upgraded(m, target);
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "before.onnx", m);
    let b = write(dir.path(), "after.onnx", &up);
    assert_same_outputs(&a, &b, opts, TOL);
    (up, report)
}

fn check_default(m: &ModelProto, target: i64) -> (ModelProto, Upgrade) {
    check(m, target, &Compare::default())
}

/// The upgrade error for `m`, with its node and op.
fn refusal(m: &ModelProto, target: i64) -> (String, String, String) {
    let mut copy = m.clone();
    match upgrade(&mut copy, target) {
        Err(Error::OpsetUpgrade { node, op, reason, from, to }) => {
            assert_eq!(to, target);
            assert_eq!(Some(from), opset_of(m));
            (node, op, reason)
        }
        other => panic!("expected an OpsetUpgrade error, got {other:?}"),
    }
}

fn find<'a>(m: &'a ModelProto, op: &str) -> Vec<&'a NodeProto> {
    all_nodes(m).into_iter().filter(|n| n.op_type.as_deref() == Some(op)).collect()
}

fn has_attr(n: &NodeProto, name: &str) -> bool {
    n.attribute.iter().any(|a| a.name.as_deref() == Some(name))
}

fn int_attr(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name.as_deref() == Some(name)).and_then(|a| a.i)
}

fn str_attr(n: &NodeProto, name: &str) -> Option<String> {
    n.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .and_then(|a| a.s.clone())
        .map(|s| String::from_utf8(s).unwrap())
}

#[test]
fn unsqueeze_and_squeeze_axes_become_inputs_at_13() {
    let m = ModelBuilder::new(11)
        .input("x", F, &[3, 1, 4])
        .node(node("Unsqueeze", &["x"], &["u"]).ints("axes", &[0, -1]))
        .node(node("Squeeze", &["u"], &["s"]).ints("axes", &[0, 2]))
        .node(node("Squeeze", &["u"], &["all"]))
        .output("s", F)
        .output("all", F)
        .build();
    let (up, report) = check_default(&m, 13);
    assert_eq!(report.rewritten.get("Unsqueeze"), Some(&1));
    assert_eq!(report.rewritten.get("Squeeze"), Some(&1), "the Squeeze without axes needs no rewrite");
    for n in find(&up, "Unsqueeze").into_iter().chain(find(&up, "Squeeze")) {
        assert!(!has_attr(n, "axes"), "{n:?}");
    }
    assert_eq!(find(&up, "Squeeze")[1].input.len(), 1);
}

#[test]
fn reduce_axes_become_inputs_at_13_for_sum_and_18_for_the_rest() {
    let mut b = ModelBuilder::new(11).input("x", F, &[2, 3, 4]).node(node("Exp", &["x"], &["e"]));
    let ops = [
        "ReduceSum",
        "ReduceMean",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceSumSquare",
    ];
    for op in ops {
        let (a, k, all) = (format!("{op}_a"), format!("{op}_k"), format!("{op}_all"));
        b = b
            .node(node(op, &["e"], &[&a]).ints("axes", &[1]).int("keepdims", 0))
            .node(node(op, &["e"], &[&k]).ints("axes", &[0, -1]))
            .node(node(op, &["e"], &[&all]).int("keepdims", 0))
            .output(&a, F)
            .output(&k, F)
            .output(&all, F);
    }
    let m = b.build();
    let (up13, r13) = check_default(&m, 13);
    assert_eq!(r13.rewritten.len(), 1, "only ReduceSum changes at 13: {:?}", r13.rewritten);
    assert_eq!(r13.rewritten["ReduceSum"], 2);
    assert!(find(&up13, "ReduceMean")[..2].iter().all(|n| has_attr(n, "axes")));
    let (up18, r18) = check_default(&m, 18);
    for op in ops {
        assert_eq!(r18.rewritten.get(op), Some(&2), "{op}");
        assert!(find(&up18, op).iter().all(|n| !has_attr(n, "axes")), "{op}");
    }
}

#[test]
fn split_lengths_become_an_input_at_13_and_num_outputs_is_set_at_18() {
    let m = ModelBuilder::new(11)
        .input("x", F, &[4, 6])
        .node(node("Split", &["x"], &["a", "b"]).int("axis", 1).ints("split", &[1, 5]))
        .node(node("Split", &["x"], &["c", "d"]))
        .output("a", F)
        .output("b", F)
        .output("c", F)
        .output("d", F)
        .build();
    let (up13, _) = check_default(&m, 13);
    let s13 = find(&up13, "Split");
    assert_eq!((s13[0].input.len(), has_attr(s13[0], "split")), (2, false));
    let (up18, _) = check_default(&m, 18);
    let s18 = find(&up18, "Split");
    assert_eq!(int_attr(s18[0], "num_outputs"), None, "a split input excludes num_outputs");
    assert_eq!(int_attr(s18[1], "num_outputs"), Some(2));
}

#[test]
fn softmax_family_keeps_its_2d_meaning_at_13() {
    let mut b = ModelBuilder::new(11)
        .input("x", F, &[2, 3, 4])
        // Rank unknown to the upgrader: the shape is not a constant.
        .node(node("Shape", &["x"], &["xs"]))
        .node(node("Reshape", &["x", "xs"], &["r"]));
    for op in ["Softmax", "LogSoftmax", "Hardmax"] {
        let (last, mid, unknown, dflt) =
            (format!("{op}_last"), format!("{op}_mid"), format!("{op}_unknown"), format!("{op}_default"));
        b = b
            .node(node(op, &["x"], &[&last]).int("axis", 2))
            .node(node(op, &["x"], &[&mid]).int("axis", 1))
            .node(node(op, &["r"], &[&unknown]).int("axis", -1))
            .node(node(op, &["x"], &[&dflt]))
            .output(&last, F)
            .output(&mid, F)
            .output(&unknown, F)
            .output(&dflt, F);
    }
    let m = b.build();
    let (up, report) = check_default(&m, 13);
    for op in ["Softmax", "LogSoftmax", "Hardmax"] {
        // The node with an explicit last axis is already right (its axis attribute stays).
        assert_eq!(report.rewritten.get(op), Some(&3), "{op}");
        let nodes = find(&up, op);
        // A known last axis stays one node; the others are rebuilt over a flattened view.
        assert_eq!(int_attr(nodes[0], "axis"), Some(2));
        assert!(nodes[1..].iter().all(|n| int_attr(n, "axis") == Some(-1)));
    }
    assert_eq!(find(&up, "Flatten").len(), 9);
    assert_eq!(find(&up, "Reshape").len(), 10);
}

#[test]
fn softmax_on_a_gemm_output_needs_no_reshaping() {
    let m = ModelBuilder::new(9)
        .input("x", F, &[2, 5])
        .init_f32("w", &[5, 3], &rand_f32(15, 1))
        .init_f32("c", &[3], &[0.1, 0.2, 0.3])
        .node(node("Gemm", &["x", "w", "c"], &["g"]))
        .node(node("Softmax", &["g"], &["y"]))
        .output("y", F)
        .build();
    let (up, _) = check_default(&m, 13);
    assert!(find(&up, "Flatten").is_empty());
    assert_eq!(int_attr(find(&up, "Softmax")[0], "axis"), Some(1));
}

#[test]
fn clip_bounds_become_inputs_of_the_inputs_type_at_11() {
    let m = ModelBuilder::new(9)
        .input("x", F, &[2, 8])
        .node(node("Mul", &["x", "x"], &["sq"]))
        .node(node("Clip", &["sq"], &["relu6"]).float("min", 0.0).float("max", 0.5))
        .node(node("Clip", &["x"], &["upper"]).float("max", 0.25))
        .node(node("Clip", &["x"], &["none"]))
        .output("relu6", F)
        .output("upper", F)
        .output("none", F)
        .build();
    let (up, report) = check_default(&m, 11);
    assert_eq!(report.rewritten["Clip"], 2);
    let clips = find(&up, "Clip");
    assert_eq!(clips[1].input[1], "", "an absent min stays absent");
    assert!(clips.iter().all(|n| n.attribute.is_empty()));
    check_default(&m, 13);
}

/// ONNX Runtime has no float64 Clip-6 to compare with, so this one is checked by structure:
/// the bounds must be float64 scalars, made by a Cast.
#[test]
fn clip_bounds_of_a_double_input_are_cast_to_double() {
    let m = ModelBuilder::new(9)
        .input("x", F, &[2, 8])
        .node(node("Cast", &["x"], &["xd"]).int("to", dtype::DOUBLE as i64))
        .node(node("Clip", &["xd"], &["cd"]).float("min", -0.5).float("max", 0.5))
        .output("cd", dtype::DOUBLE)
        .build();
    let (up, _) = upgraded(&m, 11);
    let casts = find(&up, "Cast");
    assert_eq!(casts.len(), 3);
    let clip = find(&up, "Clip")[0];
    for (cast, bound) in casts[1..].iter().zip(&clip.input[1..]) {
        assert_eq!(int_attr(cast, "to"), Some(dtype::DOUBLE as i64));
        assert_eq!(&cast.output[0], bound);
    }
    let nodes = &up.graph.as_ref().unwrap().node;
    assert_eq!(nodes.last().unwrap().op_type.as_deref(), Some("Clip"), "the casts come before the Clip");
    // Without a known type and below opset 15 (no CastLike) the upgrade refuses.
    let unknown = ModelBuilder::new(9)
        .input("x", F, &[2, 8])
        .node(node("Unknown", &["x"], &["u"]).domain("com.example"))
        .node(node("Clip", &["u"], &["y"]).float("max", 0.5))
        .import("com.example", 1)
        .build();
    let (_, op, reason) = refusal(&unknown, 11);
    assert_eq!(op, "Clip");
    assert!(reason.contains("element type of 'u'"), "{reason}");
    let (up, _) = upgraded(&unknown, 15);
    assert_eq!(find(&up, "CastLike").len(), 1);
}

#[test]
fn pad_attributes_become_inputs_at_11() {
    let m = ModelBuilder::new(10)
        .input("x", F, &[1, 2, 3, 4])
        .node(node("Pad", &["x"], &["c"]).ints("pads", &[0, 0, 1, 2, 0, 0, 2, 1]).float("value", 1.5))
        .node(node("Pad", &["x"], &["z"]).ints("pads", &[0, 1, 0, 0, 0, 0, 0, 3]))
        .node(node("Pad", &["x"], &["r"]).string("mode", "reflect").ints("pads", &[0, 0, 1, 1, 0, 0, 2, 2]))
        .node(node("Pad", &["x"], &["e"]).string("mode", "edge").ints("pads", &[0, 0, -1, 2, 0, 0, 0, 1]))
        .output("c", F)
        .output("z", F)
        .output("r", F)
        .output("e", F)
        .build();
    let (up, _) = check_default(&m, 11);
    let pads = find(&up, "Pad");
    assert_eq!(pads[0].input.len(), 3);
    assert_eq!(pads[1].input.len(), 2, "a zero fill is the default");
}

#[test]
fn slice_attributes_become_inputs_at_10() {
    let m = ModelBuilder::new(9)
        .input("x", F, &[4, 5, 6])
        .node(node("Slice", &["x"], &["a"]).ints("starts", &[1, 0]).ints("ends", &[3, -1]).ints("axes", &[0, 2]))
        .node(node("Slice", &["x"], &["b"]).ints("starts", &[0, -3, 2]).ints("ends", &[i64::MAX, 1000, 4]))
        .output("a", F)
        .output("b", F)
        .build();
    let (up, _) = check_default(&m, 10);
    let s = find(&up, "Slice");
    assert_eq!((s[0].input.len(), s[1].input.len()), (4, 3));
    check_default(&m, 13);
}

#[test]
fn topk_k_becomes_an_input_at_10() {
    let m = ModelBuilder::new(9)
        .input("x", F, &[3, 7])
        .node(node("TopK", &["x"], &["v", "i"]).int("k", 3).int("axis", 1))
        .output("v", F)
        .output("i", dtype::INT64)
        .build();
    let (up, _) = check_default(&m, 11);
    assert_eq!(find(&up, "TopK")[0].input.len(), 2);
}

#[test]
fn dropout_ratio_becomes_an_input_at_12_and_an_unread_mask_is_dropped() {
    let m = ModelBuilder::new(9)
        .input("x", F, &[2, 6])
        .node(node("Dropout", &["x"], &["y", "mask"]).float("ratio", 0.3))
        .node(node("Dropout", &["y"], &["z"]))
        .output("z", F)
        .build();
    let (up, _) = check_default(&m, 12);
    let d = find(&up, "Dropout");
    assert_eq!(d[0].output, vec!["y".to_string()]);
    assert_eq!(d[0].input.len(), 2);
    check_default(&m, 13);

    let read_mask = ModelBuilder::new(9)
        .input("x", F, &[2, 6])
        .node(node("Dropout", &["x"], &["y", "mask"]))
        .output("y", F)
        .output("mask", F)
        .build();
    let (node, op, reason) = refusal(&read_mask, 12);
    assert_eq!((node.as_str(), op.as_str()), ("dropout_y", "Dropout"));
    assert!(reason.contains("mask") && reason.ends_with("re-export the model at opset >= 12"), "{reason}");
}

fn batchnorm(opset: i64, outputs: &[&str], spatial: Option<i64>) -> ModelBuilder {
    let mut bn = node("BatchNormalization", &["x", "s", "b", "mean", "var"], outputs);
    if let Some(s) = spatial {
        bn = bn.int("spatial", s);
    }
    ModelBuilder::new(opset)
        .input("x", F, &[2, 3, 4, 4])
        .init_f32("s", &[3], &[0.5, 1.0, 2.0])
        .init_f32("b", &[3], &[0.1, -0.2, 0.3])
        .init_f32("mean", &[3], &[0.0, 0.2, -0.1])
        .init_f32("var", &[3], &[1.0, 0.5, 2.0])
        .node(bn)
        .output("y", F)
}

#[test]
fn batchnorm_spatial_is_dropped_at_9_and_refused_when_zero() {
    let m = batchnorm(8, &["y"], Some(1)).build();
    let (up, report) = check_default(&m, 9);
    assert!(!has_attr(find(&up, "BatchNormalization")[0], "spatial"));
    assert_eq!(report.rewritten["BatchNormalization"], 1);

    let (_, op, reason) = refusal(&batchnorm(8, &["y"], Some(0)).build(), 13);
    assert_eq!(op, "BatchNormalization");
    assert!(reason.contains("spatial=0"), "{reason}");
}

#[test]
fn batchnorm_training_outputs_become_training_mode_at_14() {
    // Inference: Y only.
    let m = batchnorm(9, &["y"], None).build();
    let (up, report) = check_default(&m, 15);
    assert!(report.rewritten.is_empty());
    assert!(!has_attr(find(&up, "BatchNormalization")[0], "training_mode"));

    // Declaring the training outputs meant training mode (batch statistics), read or not.
    let training = batchnorm(9, &["y", "m", "v", "sm", "sv"], None).build();
    let (up, _) = check_default(&training, 15);
    let bn = find(&up, "BatchNormalization")[0];
    assert_eq!((bn.output.len(), int_attr(bn, "training_mode")), (3, Some(1)));
    let read_running_mean = batchnorm(9, &["y", "m", "v", "sm", "sv"], None).output("m", F).output("v", F).build();
    check_default(&read_running_mean, 14);

    let read_saved = batchnorm(9, &["y", "m", "v", "sm", "sv"], None).output("sm", F).build();
    let (_, op, reason) = refusal(&read_saved, 14);
    assert_eq!(op, "BatchNormalization");
    assert!(reason.contains("'sm'"), "{reason}");
}

/// Resize-10 in ONNX Runtime rounds nearest coordinates down when enlarging and up when
/// shrinking; every case must keep that.
#[test]
fn resize_10_keeps_its_coordinates_and_rounding_at_11() {
    let cases: [(&str, &[f32]); 4] = [
        ("up", &[1.0, 1.0, 2.0, 1.5]),
        ("down", &[1.0, 1.0, 0.5, 0.6]),
        ("mixed", &[1.0, 1.0, 0.6, 1.7]),
        ("mixed_linear", &[1.0, 1.0, 0.6, 2.5]),
    ];
    for (name, scales) in cases {
        let mode = if name.ends_with("linear") { "linear" } else { "nearest" };
        let m = ModelBuilder::new(10)
            .input("x", F, &[1, 2, 5, 7])
            .init_f32("scales", &[4], scales)
            .node(node("Resize", &["x", "scales"], &["y"]).string("mode", mode))
            .output("y", F)
            .build();
        let (up, _) = check_default(&m, 11);
        let resizes = find(&up, "Resize");
        assert_eq!(resizes.len(), if name == "mixed" { 2 } else { 1 }, "{name}");
        let last = resizes.last().unwrap();
        assert_eq!(str_attr(last, "coordinate_transformation_mode").as_deref(), Some("asymmetric"));
        if name == "down" {
            assert_eq!(str_attr(last, "nearest_mode").as_deref(), Some("ceil"));
        }
        check_default(&m, 13);
    }

    // Scales computed in the graph: unknown direction, so the two-step form.
    let dynamic = ModelBuilder::new(10)
        .input("x", F, &[1, 2, 5, 7])
        .init_f32("scales", &[4], &[1.0, 1.0, 0.6, 1.7])
        .node(node("Identity", &["scales"], &["s"]))
        .node(node("Resize", &["x", "s"], &["y"]))
        .output("y", F)
        .build();
    let (up, _) = check_default(&dynamic, 11);
    assert_eq!(find(&up, "Resize").len(), 2);
}

#[test]
fn resize_tf_half_pixel_for_nn_becomes_half_pixel_at_13() {
    for nearest in ["floor", "round_prefer_floor"] {
        for scales in [[1.0f32, 1.0, 2.0, 1.5], [1.0, 1.0, 0.5, 0.75], [1.0, 1.0, 1.4, 0.6]] {
            let m = ModelBuilder::new(11)
                .input("x", F, &[1, 2, 6, 8])
                .init_f32("roi", &[0], &[])
                .init_f32("scales", &[4], &scales)
                .node(
                    node("Resize", &["x", "roi", "scales"], &["y"])
                        .string("coordinate_transformation_mode", "tf_half_pixel_for_nn")
                        .string("nearest_mode", nearest),
                )
                .output("y", F)
                .build();
            let (up, _) = check_default(&m, 13);
            let r = find(&up, "Resize")[0];
            assert_eq!(str_attr(r, "coordinate_transformation_mode").as_deref(), Some("half_pixel"));
        }
    }
}

#[test]
fn upsample_becomes_resize_from_10() {
    for mode in ["nearest", "linear"] {
        let v7 = ModelBuilder::new(8)
            .input("x", F, &[1, 2, 3, 4])
            .node(node("Upsample", &["x"], &["y"]).string("mode", mode).floats("scales", &[1.0, 1.0, 2.0, 1.5]))
            .output("y", F)
            .build();
        let (up, report) = check_default(&v7, 9);
        assert_eq!(find(&up, "Upsample")[0].input.len(), 2);
        assert_eq!(report.rewritten["Upsample"], 1);
        let (up, _) = check_default(&v7, 13);
        assert!(find(&up, "Upsample").is_empty());
        assert_eq!(find(&up, "Resize").len(), 1);

        let v9 = ModelBuilder::new(9)
            .input("x", F, &[1, 2, 3, 4])
            .init_f32("scales", &[4], &[1.0, 1.0, 3.0, 2.0])
            .node(node("Identity", &["scales"], &["s"]))
            .node(node("Upsample", &["x", "s"], &["y"]).string("mode", mode))
            .output("y", F)
            .build();
        let (up, _) = check_default(&v9, 11);
        assert_eq!(find(&up, "Resize").len(), 1, "Upsample never shrinks: one node even with unknown scales");
        check_default(&v9, 10);
    }
}

#[test]
fn roialign_keeps_output_half_pixel_at_16() {
    let m = ModelBuilder::new(10)
        .input("x", F, &[1, 2, 8, 8])
        .init_f32("rois", &[2, 4], &[0.0, 0.0, 3.0, 3.0, 1.5, 1.0, 6.0, 5.5])
        .init_i64("idx", &[2], &[0, 0])
        .node(
            node("RoiAlign", &["x", "rois", "idx"], &["y"])
                .int("output_height", 2)
                .int("output_width", 3)
                .int("sampling_ratio", 2),
        )
        .output("y", F)
        .build();
    let (up, _) = check_default(&m, 16);
    assert_eq!(
        str_attr(find(&up, "RoiAlign")[0], "coordinate_transformation_mode").as_deref(),
        Some("output_half_pixel")
    );
}

#[test]
fn gridsample_modes_are_renamed_at_20() {
    for mode in ["bilinear", "bicubic", "nearest"] {
        let m = ModelBuilder::new(16)
            .input("x", F, &[1, 2, 5, 6])
            .input("grid", F, &[1, 3, 4, 2])
            .node(node("GridSample", &["x", "grid"], &["y"]).string("mode", mode).int("align_corners", 1))
            .output("y", F)
            .build();
        let (up, _) = check_default(&m, 20);
        let expected = match mode {
            "bilinear" => "linear",
            "bicubic" => "cubic",
            m => m,
        };
        assert_eq!(str_attr(find(&up, "GridSample")[0], "mode").as_deref(), Some(expected));
    }
}

#[test]
fn groupnorm_scale_and_bias_become_per_channel_at_21() {
    let m = ModelBuilder::new(18)
        .input("x", F, &[2, 6, 3, 3])
        .init_f32("s", &[3], &[0.5, 2.0, -1.0])
        .init_f32("b", &[3], &[0.1, -0.3, 0.7])
        .node(node("GroupNormalization", &["x", "s", "b"], &["y"]).int("num_groups", 3))
        .output("y", F)
        .build();
    let (up, _) = check_default(&m, 21);
    let g = &up.graph.as_ref().unwrap();
    let scale = g.initializer.iter().find(|t| t.name.as_deref() == Some(&find(&up, "GroupNormalization")[0].input[1]));
    assert_eq!(scale.unwrap().dims, vec![6]);

    let dynamic = ModelBuilder::new(18)
        .input("x", F, &[2, 6, 3, 3])
        .input("s", F, &[3])
        .input("b", F, &[3])
        .node(node("GroupNormalization", &["x", "s", "b"], &["y"]).int("num_groups", 3))
        .output("y", F)
        .build();
    let (_, op, reason) = refusal(&dynamic, 21);
    assert_eq!(op, "GroupNormalization");
    assert!(reason.contains("per-group") && reason.contains("keep opset 18"), "{reason}");
}

#[test]
fn scatter_becomes_scatter_elements_at_11() {
    let m = ModelBuilder::new(9)
        .input("x", F, &[3, 4])
        .init_i64("i", &[2, 2], &[1, 0, 2, 3])
        .init_f32("u", &[2, 2], &[5.0, 6.0, 7.0, 8.0])
        .node(node("Scatter", &["x", "i", "u"], &["y"]).int("axis", 1))
        .output("y", F)
        .build();
    let (up, report) = check_default(&m, 13);
    assert_eq!(find(&up, "ScatterElements").len(), 1);
    assert_eq!(report.rewritten["Scatter"], 1);
}

#[test]
fn dft_axis_becomes_an_input_at_20() {
    let m = ModelBuilder::new(17)
        .input("x", F, &[2, 8, 5, 1])
        .node(node("DFT", &["x"], &["a"]))
        .node(node("DFT", &["x"], &["b"]).int("axis", 2).int("onesided", 1))
        .output("a", F)
        .output("b", F)
        .build();
    let (up, _) = check_default(&m, 20);
    assert!(find(&up, "DFT").iter().all(|n| n.input.len() == 3 && n.input[1].is_empty()));
}

/// Changes the table calls compatible although the documentation moved: pinned here so a
/// runtime that starts to differ is noticed.
#[test]
fn documented_changes_that_runtimes_never_made() {
    // OneHot: negative indices count from the back at 9 already.
    // (ONNX Runtime refuses negative constant indices at 9, so they are computed: [0, 10) - 5.)
    let onehot = ModelBuilder::new(9)
        .input("x", dtype::INT64, &[6, 5])
        .init_i64("five", &[], &[5])
        .init_i64("d", &[1], &[4])
        .init_f32("v", &[2], &[0.0, 1.0])
        .node(node("Sub", &["x", "five"], &["i"]))
        .node(node("OneHot", &["i", "d", "v"], &["h"]))
        .output("h", F)
        .build();
    check(&onehot, 11, &Compare { samples: 4, ..Default::default() });
    // ConvTranspose: the SAME_UPPER/SAME_LOWER padding split.
    for pad in ["SAME_UPPER", "SAME_LOWER"] {
        let ct = ModelBuilder::new(10)
            .input("x", F, &[1, 2, 5, 6])
            .init_f32("w", &[2, 3, 3, 3], &rand_f32(54, 7))
            .node(node("ConvTranspose", &["x", "w"], &["y"]).string("auto_pad", pad).ints("strides", &[2, 2]))
            .output("y", F)
            .build();
        check_default(&ct, 11);
    }
}

/// A small CNN in the style of opset-9 exports, raised to each scheme's opset.
#[test]
fn a_classifier_from_opset_9_runs_the_same_at_10_13_and_21() {
    let m = ModelBuilder::new(9)
        .input("x", F, &[1, 3, 8, 8])
        .init_f32("w", &[4, 3, 3, 3], &rand_f32(108, 1))
        .init_f32("s", &[4], &[1.0, 0.5, 2.0, 1.5])
        .init_f32("b", &[4], &[0.0, 0.1, -0.1, 0.2])
        .init_f32("mean", &[4], &[0.0, 0.1, 0.0, -0.1])
        .init_f32("var", &[4], &[1.0, 2.0, 0.5, 1.0])
        .init_f32("fc", &[16, 5], &rand_f32(80, 2))
        .init_f32("fc_b", &[5], &rand_f32(5, 3))
        .node(node("Conv", &["x", "w"], &["c"]).ints("pads", &[1, 1, 1, 1]))
        .node(node("BatchNormalization", &["c", "s", "b", "mean", "var"], &["bn"]))
        .node(node("Clip", &["bn"], &["r6"]).float("min", 0.0).float("max", 6.0))
        .node(node("MaxPool", &["r6"], &["p"]).ints("kernel_shape", &[2, 2]).ints("strides", &[2, 2]))
        .node(node("ReduceMean", &["p"], &["gap"]).ints("axes", &[1]).int("keepdims", 1))
        .node(node("Flatten", &["gap"], &["f"]))
        .node(node("Gemm", &["f", "fc", "fc_b"], &["logits"]))
        .node(node("Unsqueeze", &["logits"], &["l3"]).ints("axes", &[1]))
        .node(node("Squeeze", &["l3"], &["l2"]).ints("axes", &[1]))
        .node(node("Softmax", &["l2"], &["y"]))
        .output("y", F)
        .build();
    for target in [10, 13, 21] {
        check_default(&m, target);
    }
}

#[test]
fn nodes_in_if_branches_are_upgraded() {
    let then_branch = ModelBuilder::new(11)
        .node(node("Unsqueeze", &["x"], &["t"]).ints("axes", &[0]))
        .node(node("ReduceSum", &["t"], &["t_out"]).ints("axes", &[0, 2]).int("keepdims", 0))
        .output("t_out", F)
        .graph();
    // A second level: an If inside the else branch.
    let inner =
        ModelBuilder::new(11).node(node("Softmax", &["x"], &["i_out"]).int("axis", 0)).output("i_out", F).graph();
    let inner_else = ModelBuilder::new(11)
        .node(node("Squeeze", &["x3"], &["e2"]).ints("axes", &[0]))
        .node(node("ReduceSum", &["e2"], &["e_out"]).ints("axes", &[1]).int("keepdims", 0))
        .output("e_out", F)
        .graph();
    let else_branch = ModelBuilder::new(11)
        .node(node("Unsqueeze", &["x"], &["x3"]).ints("axes", &[0]))
        .node(node("If", &["c2"], &["nested"]).graph("then_branch", inner).graph("else_branch", inner_else))
        .node(node("ReduceSum", &["nested"], &["e_out2"]).ints("axes", &[0]).int("keepdims", 0))
        .output("e_out2", F)
        .graph();
    let m = ModelBuilder::new(11)
        .input("x", F, &[3, 4])
        .input("c", dtype::BOOL, &[])
        .input("c2", dtype::BOOL, &[])
        .node(node("If", &["c"], &["y"]).graph("then_branch", then_branch).graph("else_branch", else_branch))
        .output("y", F)
        .build();
    let (up, report) = check(&m, 13, &Compare { samples: 8, ..Default::default() });
    assert_eq!(report.rewritten["ReduceSum"], 3);
    assert_eq!(report.rewritten["Softmax"], 1);
    assert!(find(&up, "Unsqueeze").iter().all(|n| n.input.len() == 2));
    // New constants live in the subgraph that uses them.
    let g = up.graph.as_ref().unwrap();
    assert!(g.initializer.is_empty(), "{:?}", g.initializer);
}

#[test]
fn nodes_in_loop_bodies_are_upgraded() {
    let body = ModelBuilder::new(11)
        .input("i", dtype::INT64, &[])
        .input("cond", dtype::BOOL, &[])
        .input("acc", F, &[2, 3])
        .node(node("Identity", &["cond"], &["cond_out"]))
        .node(node("Unsqueeze", &["acc"], &["u"]).ints("axes", &[0]))
        .node(node("ReduceMean", &["u"], &["m"]).ints("axes", &[0]).int("keepdims", 0))
        .node(node("Softmax", &["m"], &["s"]).int("axis", 0))
        .node(node("Add", &["s", "acc"], &["acc_out"]))
        .node(node("Squeeze", &["u"], &["scan"]).ints("axes", &[0]))
        .output("cond_out", dtype::BOOL)
        .output("acc_out", F)
        .output("scan", F)
        .graph();
    let m = ModelBuilder::new(11)
        .input("x", F, &[2, 3])
        .init_i64("trips", &[], &[3])
        .node(node("Loop", &["trips", "", "x"], &["final", "all"]).graph("body", body))
        .output("final", F)
        .output("all", F)
        .build();
    let (_, report) = check_default(&m, 13);
    assert_eq!((report.rewritten["Unsqueeze"], report.rewritten["Squeeze"]), (1, 1));
    assert_eq!(report.rewritten["Softmax"], 1);
    let (_, report) = check_default(&m, 18);
    assert_eq!(report.rewritten["ReduceMean"], 1);
}

#[test]
fn model_local_functions_are_upgraded_with_constant_nodes() {
    use quantize_rs::onnx::proto::{FunctionProto, OperatorSetIdProto};
    let f = FunctionProto {
        name: Some("AddAxis".into()),
        domain: Some("local".into()),
        input: vec!["a".into()],
        output: vec!["b".into()],
        node: vec![
            node("Unsqueeze", &["a"], &["u"]).ints("axes", &[0]),
            node("Squeeze", &["u"], &["b"]).ints("axes", &[0]),
        ],
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(11) }],
        ..Default::default()
    };
    let mut m = ModelBuilder::new(11)
        .import("local", 1)
        .input("x", F, &[2, 3])
        .node(node("AddAxis", &["x"], &["y"]).domain("local"))
        .output("y", F)
        .build();
    m.functions.push(f);
    m.ir_version = Some(8);
    let (up, report) = upgraded(&m, 13);
    let body = &up.functions[0];
    assert_eq!(body.opset_import[0].version, Some(13));
    assert_eq!(body.node.iter().filter(|n| n.op_type.as_deref() == Some("Constant")).count(), 1, "one shared axes");
    assert_eq!(report.rewritten["Unsqueeze"], 1);
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.onnx", &m);
    let b = write(dir.path(), "b.onnx", &up);
    assert_same_outputs(&a, &b, &Compare::default(), TOL);
}

#[test]
fn other_domains_are_left_alone_and_constants_are_shared() {
    let m = ModelBuilder::new(11)
        .import("com.example", 1)
        .input("x", F, &[2, 3])
        .node(node("Squeeze", &["x"], &["custom"]).ints("axes", &[7]).domain("com.example"))
        .node(node("Unsqueeze", &["x"], &["a"]).ints("axes", &[0]))
        .node(node("Unsqueeze", &["x"], &["b"]).ints("axes", &[0]))
        .build();
    let (up, report) = upgraded(&m, 13);
    let nodes = &up.graph.as_ref().unwrap().node;
    assert!(has_attr(&nodes[0], "axes"), "a custom-domain Squeeze keeps its attribute");
    assert_eq!(nodes[1].input[1], nodes[2].input[1], "one axes initializer for both");
    assert_eq!(up.graph.as_ref().unwrap().initializer.len(), 1);
    assert_eq!(report.rewritten["Unsqueeze"], 2);
    assert_eq!(up.opset_import.iter().find(|o| o.domain.as_deref() == Some("com.example")).unwrap().version, Some(1));
}

#[test]
fn an_upgrade_to_the_same_or_a_lower_opset_changes_nothing() {
    let m = ModelBuilder::new(13).input("x", F, &[2, 3]).node(node("Softmax", &["x"], &["y"])).output("y", F).build();
    for target in [10, 13] {
        let mut copy = m.clone();
        let report = upgrade(&mut copy, target).unwrap();
        assert_eq!(copy, m);
        assert_eq!((report.from, report.to), (13, 13));
        assert!(report.rewritten.is_empty());
    }
}

#[test]
fn unimplemented_and_impossible_changes_are_errors_naming_the_op() {
    // Relu was redefined at opset 6 (consumed_inputs removed); the table starts at 7 -> 8.
    let old = ModelBuilder::new(5).input("x", F, &[2]).node(node("Relu", &["x"], &["y"])).output("y", F).build();
    let (node_name, op, reason) = refusal(&old, 13);
    assert_eq!((node_name.as_str(), op.as_str()), ("relu_y", "Relu"));
    assert!(reason.contains("change Relu had at opset 6") && reason.contains("not implement"), "{reason}");
    let message = upgrade(&mut old.clone(), 13).unwrap_err().to_string();
    assert!(message.starts_with("cannot raise the opset from 5 to 13: node 'relu_y' (Relu)"), "{message}");

    // Scan-8 (batched) cannot become Scan-9.
    let scan_body = ModelBuilder::new(8).node(node("Identity", &["s"], &["s2"])).graph();
    let scan = ModelBuilder::new(8)
        .input("x", F, &[1, 2, 3])
        .node(node("Scan", &["", "x"], &["y"]).int("num_scan_inputs", 1).graph("body", scan_body))
        .output("y", F)
        .build();
    let (_, op, reason) = refusal(&scan, 10);
    assert_eq!(op, "Scan");
    assert!(reason.contains("Scan-8"), "{reason}");

    // An op ONNX does not define (an experimental op removed in 2019).
    let unknown =
        ModelBuilder::new(8).input("x", F, &[2]).node(node("ImageScaler", &["x"], &["y"])).output("y", F).build();
    let (_, op, reason) = refusal(&unknown, 10);
    assert_eq!(op, "ImageScaler");
    assert!(reason.contains("not an operator"), "{reason}");
}

/// src/opset/history.rs must be what scripts/gen_op_history.py makes from the pinned onnx.
#[test]
fn the_op_history_table_matches_the_pinned_onnx() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(python())
        .arg(root.join("scripts/gen_op_history.py"))
        .arg("--check")
        .output()
        .expect("run scripts/gen_op_history.py");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
