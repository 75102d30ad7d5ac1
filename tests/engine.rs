//! The weight quantizer on synthetic models built in Rust, one per case the engine must handle,
//! each checked in ONNX Runtime against the float model.

mod support;

use std::path::Path;

use quantize_rs::onnx::proto::{ModelProto, dtype};
use quantize_rs::{Error, Model, Recipe, SaveOptions, quantize_model};
use quantize_rs::{Granularity, QType};
use support::*;

/// X[1,4,8,8] -> Conv(W1[8,4,3,3], B1) -> Relu -> Flatten -> Gemm(W2[10,288], transB) -> Y.
/// `as_constants` stores the weights in Constant nodes, as Paddle exports do.
fn conv_gemm(as_constants: bool, opset: i64) -> ModelProto {
    let w1 = f32_tensor("W1", &[8, 4, 3, 3], &rand_f32(288, 1));
    let b1 = f32_tensor("B1", &[8], &rand_f32(8, 2));
    let w2 = f32_tensor("W2", &[10, 288], &rand_f32(2880, 3).iter().map(|x| x * 0.1).collect::<Vec<_>>());
    let mut nodes = vec![
        node("Conv", &["X", "W1", "B1"], &["c"]).named("conv"),
        node("Relu", &["c"], &["r"]).named("relu"),
        node("Flatten", &["r"], &["f"]).named("flatten").int("axis", 1),
        node("Gemm", &["f", "W2"], &["Y"]).named("fc").int("transB", 1),
    ];
    let mut inits = vec![w1, b1, w2];
    if as_constants {
        let consts: Vec<_> = inits.drain(..).map(constant).collect();
        nodes.splice(0..0, consts);
    }
    let g = graph(
        "conv_gemm",
        nodes,
        inits,
        vec![value_info("X", dtype::FLOAT, &[1, 4, 8, 8])],
        vec![value_info("Y", dtype::FLOAT, &[1, 10])],
    );
    model(g, opset)
}

fn quantize_file(dir: &Path, m: &ModelProto, recipe: &Recipe) -> (std::path::PathBuf, quantize_rs::Report, Model) {
    let float_path = write(dir, "float.onnx", m);
    let mut model = Model::load(&float_path).unwrap();
    let report = quantize_model(&mut model, recipe).unwrap();
    let out = dir.join("quant.onnx");
    model.save(&out, &SaveOptions::default()).unwrap();
    (out, report, model)
}

fn ops(m: &ModelProto) -> Vec<String> {
    m.graph.as_ref().unwrap().node.iter().map(|n| n.op_type.clone().unwrap()).collect()
}

/// The scheme [`fake_quant_int8`] models: symmetric, full-range scales (the default picks each
/// scale's symmetry and range by search; the tests of that are in `quant.rs` and the SNR table).
fn minmax(r: Recipe) -> Recipe {
    Recipe { symmetric: Some(true), weight_range: quantize_rs::RangeSearch::Minmax, ..r }
}

/// The reference the quantized models are checked against, written from the ONNX definitions and
/// not from the library: symmetric int8 fake quantization with one scale per slice along `axis`
/// (`None`: one for the tensor): scale = max|w| / 127, q = round-half-to-even(w / scale), w' = q *
/// scale (what DequantizeLinear computes). A float model holding these weights must give the
/// quantized model's outputs in ONNX Runtime run as the spec defines each node (no fusions), up to
/// float summation order.
fn fake_quant_int8(w: &[f32], dims: &[usize], axis: Option<usize>) -> Vec<f32> {
    let (outer, n, inner) = match axis {
        Some(a) => (dims[..a].iter().product::<usize>(), dims[a], dims[a + 1..].iter().product::<usize>()),
        None => (1, 1, w.len()),
    };
    let mut out = vec![0.0f32; w.len()];
    for c in 0..n {
        let idx = |o: usize, i: usize| (o * n + c) * inner + i;
        let mut amax = 0.0f32;
        for o in 0..outer {
            for i in 0..inner {
                amax = amax.max(w[idx(o, i)].abs());
            }
        }
        let scale = amax / 127.0;
        for o in 0..outer {
            for i in 0..inner {
                let q = (w[idx(o, i)] / scale).round_ties_even().clamp(-127.0, 127.0);
                out[idx(o, i)] = q * scale;
            }
        }
    }
    out
}

/// `m` with the float initializer `name` replaced by `values`.
fn with_weight(mut m: ModelProto, name: &str, values: &[f32]) -> ModelProto {
    let g = m.graph.as_mut().unwrap();
    let t = g.initializer.iter_mut().find(|t| t.name.as_deref() == Some(name)).unwrap();
    let dims = t.dims.clone();
    *t = f32_tensor(name, &dims, values);
    m
}

/// The float values of a tensor stored as raw little-endian bytes (how these tests write them).
fn f32_values(t: &quantize_rs::onnx::proto::TensorProto) -> Vec<f32> {
    assert_eq!(t.data_type, Some(dtype::FLOAT));
    t.raw_data.as_ref().unwrap().chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// The float values of initializer `name` in `m`.
fn weight(m: &ModelProto, name: &str) -> Vec<f32> {
    f32_values(m.graph.as_ref().unwrap().initializer.iter().find(|t| t.name.as_deref() == Some(name)).unwrap())
}

#[test]
fn hand_computed_int8_values_scales_and_outputs() {
    // MatMul's weight is quantized per column (its last axis). Column 0 holds 0.5 and 0.2: scale
    // 0.5/127, values 127 and round(50.8) = 51. Column 1 holds -1.2 and 2.0: scale 2/127, values
    // round(-76.2) = -76 and 127.
    let g = graph(
        "hand",
        vec![node("MatMul", &["X", "W"], &["Y"]).named("mm")],
        vec![f32_tensor("W", &[2, 2], &[0.5, -1.2, 0.2, 2.0])],
        vec![value_info("X", dtype::FLOAT, &[3, 2])],
        vec![value_info("Y", dtype::FLOAT, &[3, 2])],
    );
    let dir = tempfile::tempdir().unwrap();
    let m = model(g, 13);
    let (out, _, q) = quantize_file(dir.path(), &m, &minmax(Recipe { min_elements: 0, ..Recipe::default() }));
    let init = |n: &str| q.graph().initializer.iter().find(|t| t.name.as_deref() == Some(n)).unwrap().clone();
    let values: Vec<i8> = init("W_quantized").raw_data.unwrap().iter().map(|&b| b as i8).collect();
    assert_eq!(values, [127, -76, 51, 127]);
    let scale = init("W_scale");
    assert_eq!(scale.dims, [2]);
    let scales: Vec<f32> =
        scale.raw_data.unwrap().chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(scales, [0.5f32 / 127.0, 2.0f32 / 127.0]);
    // The dequantized weight, by hand: [[127 * 0.5/127, -76 * 2/127], [51 * 0.5/127, 127 * 2/127]].
    let hand = [0.5, -76.0 * (2.0f32 / 127.0), 51.0 * (0.5f32 / 127.0), 2.0];
    let reference = write(dir.path(), "hand.onnx", &with_weight(m, "W", &hand));
    assert_same_outputs(&reference, &out, &Compare::samples(4).unoptimized(), 1e-6);
    // With its optimizations ORT runs DequantizeLinear + MatMul as MatMulNBits, which quantizes
    // the activations too: close to the reference, not equal.
    let r = ort_compare(&reference, &out, &Compare::samples(4));
    assert!(worst_snr(&r) > 40.0, "{r}");
}

#[test]
fn initializer_weights_become_int8_per_channel_and_run_in_ort() {
    let dir = tempfile::tempdir().unwrap();
    let m = conv_gemm(false, 13);
    let (out, report, q) = quantize_file(dir.path(), &m, &Recipe::default());
    assert_eq!(report.quantized.len(), 2);
    assert_eq!(report.quantized[0].spec.granularity, Granularity::PerAxis { axis: 0 });
    assert_eq!(report.quantized[1].spec.granularity, Granularity::PerAxis { axis: 0 }, "Gemm transB=1: axis 0");
    assert_eq!(report.opset_after, 13);
    assert!(report.skipped.iter().any(|s| s.name == "B1" && !s.is_weight), "the bias stays float");
    let g = q.graph();
    assert!(g.initializer.iter().all(|t| t.name.as_deref() != Some("W1")), "float W1 is gone");
    let w1q = g.initializer.iter().find(|t| t.name.as_deref() == Some("W1_quantized")).unwrap();
    assert_eq!(w1q.data_type, Some(dtype::INT8));
    assert_eq!(w1q.raw_data.as_ref().unwrap().len(), 288);
    assert_eq!(ops(&q.proto).iter().filter(|o| *o == "DequantizeLinear").count(), 2);
    let r = ort_compare(&dir.path().join("float.onnx"), &out, &Compare::samples(4));
    assert!(worst_snr(&r) > 35.0, "{r}");
}

#[test]
fn constant_node_weights_are_found_and_replaced_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let m = conv_gemm(true, 13);
    let (out, report, q) = quantize_file(dir.path(), &m, &Recipe::default());
    assert_eq!(report.quantized.len(), 2);
    assert!(report.quantized.iter().all(|t| t.location == "constant"));
    let o = ops(&q.proto);
    // B1 stays a Constant; W1 and W2 are now DequantizeLinear nodes where their Constants were.
    assert_eq!(o.iter().filter(|o| *o == "Constant").count(), 1);
    assert_eq!(&o[..3], ["DequantizeLinear", "Constant", "DequantizeLinear"]);
    let r = ort_compare(&dir.path().join("float.onnx"), &out, &Compare::samples(4));
    assert!(worst_snr(&r) > 35.0, "{r}");
}

/// An If whose branches hold their own weights (initializer in one, Constant in the other), plus
/// an outer-scope weight read only inside a branch.
fn if_model() -> ModelProto {
    let then_g = graph(
        "then",
        vec![node("MatMul", &["X", "Wt"], &["t_out"]).named("then_mm")],
        vec![f32_tensor("Wt", &[16, 16], &rand_f32(256, 11))],
        vec![],
        vec![value_info("t_out", dtype::FLOAT, &[2, 16])],
    );
    let else_g = graph(
        "else",
        vec![
            constant(f32_tensor("We", &[16, 16], &rand_f32(256, 12))),
            node("MatMul", &["X", "We"], &["e1"]).named("else_mm"),
            node("MatMul", &["e1", "Wouter"], &["e_out"]).named("else_mm2"),
        ],
        vec![],
        vec![],
        vec![value_info("e_out", dtype::FLOAT, &[2, 16])],
    );
    let g = graph(
        "if_model",
        vec![node("If", &["C"], &["Y"]).named("branch").graph("then_branch", then_g).graph("else_branch", else_g)],
        vec![f32_tensor("Wouter", &[16, 16], &rand_f32(256, 13))],
        vec![value_info("X", dtype::FLOAT, &[2, 16]), value_info("C", dtype::BOOL, &[])],
        vec![value_info("Y", dtype::FLOAT, &[2, 16])],
    );
    model(g, 13)
}

#[test]
fn weights_inside_if_branches_and_outer_scope_weights_are_quantized() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report, _) = quantize_file(dir.path(), &if_model(), &Recipe::default());
    let mut names: Vec<(&str, &str)> =
        report.quantized.iter().map(|q| (q.name.as_str(), q.location.as_str())).collect();
    names.sort();
    assert_eq!(names, vec![("We", "subgraph-constant"), ("Wouter", "initializer"), ("Wt", "subgraph-initializer")]);
    // Both branches run across the samples (C is random), and both must match.
    let r = ort_compare(&dir.path().join("float.onnx"), &out, &Compare::samples(8));
    assert!(worst_snr(&r) > 35.0, "{r}");
}

/// X -> MatMul(W0) -> Loop 5 times { h = Tanh(MatMul(MatMul(h, Wouter), Wbody)) } -> Y.
fn loop_model() -> ModelProto {
    let body = graph(
        "body",
        vec![
            node("MatMul", &["h_in", "Wouter"], &["p"]),
            node("MatMul", &["p", "Wbody"], &["p2"]),
            node("Tanh", &["p2"], &["h_out"]),
            node("Identity", &["cond_in"], &["cond_out"]),
        ],
        vec![f32_tensor("Wbody", &[32, 32], &rand_f32(1024, 21).iter().map(|v| v * 0.3).collect::<Vec<_>>())],
        vec![
            value_info("i", dtype::INT64, &[]),
            value_info("cond_in", dtype::BOOL, &[]),
            value_info("h_in", dtype::FLOAT, &[1, 32]),
        ],
        vec![value_info("cond_out", dtype::BOOL, &[]), value_info("h_out", dtype::FLOAT, &[1, 32])],
    );
    let cond = quantize_rs::onnx::proto::TensorProto {
        name: Some("c".into()),
        data_type: Some(dtype::BOOL),
        raw_data: Some(vec![1u8].into()),
        ..Default::default()
    };
    let g = graph(
        "loop_model",
        vec![node("MatMul", &["X", "W0"], &["h0"]), node("Loop", &["n", "c", "h0"], &["Y"]).graph("body", body)],
        vec![
            f32_tensor("W0", &[32, 32], &rand_f32(1024, 22).iter().map(|v| v * 0.3).collect::<Vec<_>>()),
            f32_tensor("Wouter", &[32, 32], &rand_f32(1024, 23).iter().map(|v| v * 0.3).collect::<Vec<_>>()),
            i64_tensor("n", &[], &[5]),
            cond,
        ],
        vec![value_info("X", dtype::FLOAT, &[1, 32])],
        vec![value_info("Y", dtype::FLOAT, &[1, 32])],
    );
    model(g, 13)
}

#[test]
fn loop_bodies_are_quantized_and_samples_on_a_model_tract_cannot_run_say_what_works() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report, _) = quantize_file(dir.path(), &loop_model(), &Recipe::default());
    let mut names: Vec<&str> = report.quantized.iter().map(|q| q.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["W0", "Wbody", "Wouter"], "the body's own weight and the outer one it reads");
    let r = ort_compare(&dir.path().join("float.onnx"), &out, &Compare::samples(4));
    assert!(worst_snr(&r) > 25.0, "{r}");
    // tract does not run Loop: samples are refused, naming the way that needs none.
    write_npy(&dir.path().join("calib.npy"), &[4, 1, 32], &rand_f32(128, 24));
    let float = Model::load(dir.path().join("float.onnx")).unwrap();
    let with_data = Recipe {
        calibration: Some(quantize_rs::Calibration { weight_only: true, ..quantize_rs::Calibration::new("calib.npy") }),
        ..Recipe::default()
    };
    let err = quantize_rs::run(float, &with_data, dir.path()).unwrap_err().to_string();
    assert!(err.contains("Loop") && err.contains("weight-only `quantize` without them"), "{err}");
}

#[test]
fn a_weight_read_along_different_axes_falls_back_to_per_tensor_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(
        "shared",
        vec![
            node("MatMul", &["X", "W"], &["a"]).named("mm"),
            node("Gemm", &["X", "W"], &["b"]).named("gemm").int("transB", 1),
            node("Add", &["a", "b"], &["Y"]).named("add"),
        ],
        vec![f32_tensor("W", &[16, 16], &rand_f32(256, 5))],
        vec![value_info("X", dtype::FLOAT, &[2, 16])],
        vec![value_info("Y", dtype::FLOAT, &[2, 16])],
    );
    let (out, report, _) = quantize_file(dir.path(), &model(g, 13), &Recipe::default());
    assert_eq!(report.quantized.len(), 1);
    let w = &report.quantized[0];
    assert_eq!(w.spec.granularity, Granularity::PerTensor);
    assert_eq!(w.op_types, vec!["Gemm", "MatMul"]);
    assert!(w.note.as_deref().unwrap().contains("different channel axes"), "{:?}", w.note);
    let r = ort_compare(&dir.path().join("float.onnx"), &out, &Compare::samples(2));
    assert!(worst_snr(&r) > 35.0, "{r}");
}

#[test]
fn already_quantized_parts_stay_and_the_rest_is_quantized() {
    let dir = tempfile::tempdir().unwrap();
    let wq = quantize_rs::onnx::proto::TensorProto {
        name: Some("Wq".into()),
        dims: vec![16, 16],
        data_type: Some(dtype::INT8),
        raw_data: Some((0..256).map(|i| (i % 13) as u8).collect::<Vec<u8>>().into()),
        ..Default::default()
    };
    let g = graph(
        "partly_quantized",
        vec![
            node("DequantizeLinear", &["Wq", "Wq_scale"], &["Wd"]).named("dq"),
            node("MatMul", &["X", "Wd"], &["a"]).named("mm1"),
            node("MatMul", &["a", "W2"], &["Y"]).named("mm2"),
        ],
        vec![wq, f32_tensor("Wq_scale", &[], &[0.01]), f32_tensor("W2", &[16, 16], &rand_f32(256, 6))],
        vec![value_info("X", dtype::FLOAT, &[2, 16])],
        vec![value_info("Y", dtype::FLOAT, &[2, 16])],
    );
    let m = model(g, 13);
    let (out, report, q) = quantize_file(dir.path(), &m, &minmax(Recipe::default()));
    assert_eq!(report.quantized.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(), ["W2"]);
    assert_eq!(report.already_quantized, vec![("DequantizeLinear".to_string(), "dq".to_string())]);
    assert!(report.skipped.iter().any(|s| s.name == "Wq_scale" && s.reason.contains("already-quantized node 'dq'")));
    let kept = q.graph().initializer.iter().find(|t| t.name.as_deref() == Some("Wq")).unwrap();
    assert_eq!(kept.data_type, Some(dtype::INT8), "the existing int8 weight is untouched");
    // The kept DequantizeLinear and the new W2 (per column) give what the hand reference gives.
    let w2 = fake_quant_int8(&weight(&m, "W2"), &[16, 16], Some(1));
    let reference = write(dir.path(), "reference.onnx", &with_weight(m, "W2", &w2));
    assert_same_outputs(&reference, &out, &Compare::samples(4).unoptimized(), 1e-5);
}

#[test]
fn new_names_never_collide_with_existing_ones() {
    let dir = tempfile::tempdir().unwrap();
    // The model already uses the names the quantizer would pick first.
    let g = graph(
        "clash",
        vec![
            node("MatMul", &["X", "W"], &["W_scale"]).named("mm"),
            node("Add", &["W_scale", "W_quantized"], &["Y"]).named("W_DequantizeLinear"),
        ],
        vec![f32_tensor("W", &[16, 16], &rand_f32(256, 7)), f32_tensor("W_quantized", &[16], &rand_f32(16, 8))],
        vec![value_info("X", dtype::FLOAT, &[2, 16])],
        vec![value_info("Y", dtype::FLOAT, &[2, 16])],
    );
    let (out, _, q) = quantize_file(dir.path(), &model(g, 13), &minmax(Recipe::default()));
    let dq = q.graph().node.iter().find(|n| n.op_type.as_deref() == Some("DequantizeLinear")).unwrap();
    assert_eq!(dq.input, ["W_quantized_1", "W_scale_1"], "symmetric int8 needs no zero point");
    assert_eq!(dq.name.as_deref(), Some("W_DequantizeLinear_1"));
    let r = ort_compare(&dir.path().join("float.onnx"), &out, &Compare::samples(2));
    assert!(worst_snr(&r) > 35.0, "{r}");
}

#[test]
fn resize_scales_and_other_non_weights_are_left_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let scales: Vec<f32> = vec![1.0, 1.0, 2.0, 2.0];
    let g = graph(
        "detector_head",
        vec![node("Conv", &["X", "W"], &["c"]).named("conv"), node("Resize", &["c", "", "scales"], &["Y"]).named("up")],
        vec![f32_tensor("W", &[8, 4, 3, 3], &rand_f32(288, 9)), f32_tensor("scales", &[4], &scales)],
        vec![value_info("X", dtype::FLOAT, &[1, 4, 8, 8])],
        vec![value_info("Y", dtype::FLOAT, &[1, 8, 12, 12])],
    );
    let m = model(g, 13);
    let (out, report, q) = quantize_file(dir.path(), &m, &minmax(Recipe { min_elements: 0, ..Recipe::default() }));
    assert_eq!(report.quantized.len(), 1);
    let s = q.graph().initializer.iter().find(|t| t.name.as_deref() == Some("scales")).unwrap();
    assert_eq!(quantize_rs::onnx::tensor::floats(s).unwrap(), scales);
    assert!(report.skipped.iter().any(|k| k.name == "scales" && k.reason.contains("Resize input 2")));
    // Only W changed (per output channel); the 2x upsampling is the float model's.
    let w = fake_quant_int8(&weight(&m, "W"), &[8, 4, 3, 3], Some(0));
    let reference = write(dir.path(), "reference.onnx", &with_weight(m, "W", &w));
    assert_same_outputs(&reference, &out, &Compare::samples(4).unoptimized(), 1e-5);
}

#[test]
fn every_value_type_and_granularity_runs_in_ort() {
    let cases: Vec<(&str, Recipe, f64)> = vec![
        ("int8 per-tensor", Recipe { per_channel: false, ..Recipe::default() }, 30.0),
        ("uint8 asymmetric", Recipe { unsigned: true, symmetric: Some(false), ..Recipe::default() }, 35.0),
        ("int4 widened", Recipe { bits: 4, ..Recipe::default() }, 12.0),
        (
            "uint4 native asymmetric",
            Recipe { bits: 4, unsigned: true, symmetric: Some(false), native_int4: true, ..Recipe::default() },
            12.0,
        ),
        ("int4 native blocked", Recipe { bits: 4, native_int4: true, block_size: Some(16), ..Recipe::default() }, 14.0),
        ("int8 blocked", Recipe { block_size: Some(32), ..Recipe::default() }, 35.0),
    ];
    for (label, recipe, min_snr) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (out, report, q) = quantize_file(dir.path(), &conv_gemm(false, 13), &recipe);
        let r = ort_compare(&dir.path().join("float.onnx"), &out, &Compare::samples(4));
        let snr = worst_snr(&r);
        assert!(snr > min_snr, "{label}: SNR {snr:.1} dB below {min_snr}");
        let expect_opset = if recipe.native_int4 || recipe.block_size.is_some() { 21 } else { 13 };
        assert_eq!(report.opset_after, expect_opset, "{label}");
        let w1q = q.graph().initializer.iter().find(|t| t.name.as_deref() == Some("W1_quantized")).unwrap();
        let bytes = w1q.raw_data.as_ref().unwrap().len();
        assert_eq!(bytes, if recipe.native_int4 { 144 } else { 288 }, "{label}: W1 value bytes");
    }
}

#[test]
fn blocked_scales_run_along_the_reduction_axis() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = Recipe { bits: 4, native_int4: true, block_size: Some(32), ..Recipe::default() };
    let (_, report, q) = quantize_file(dir.path(), &conv_gemm(false, 13), &recipe);
    // Gemm W2 [10, 288] with transB: reduction along axis 1 -> 9 blocks per row.
    let w2 = report.quantized.iter().find(|t| t.name == "W2").unwrap();
    assert_eq!(w2.spec.granularity, Granularity::Blocked { axis: 1, block: 32 });
    let s = q.graph().initializer.iter().find(|t| t.name.as_deref() == Some("W2_scale")).unwrap();
    assert_eq!(s.dims, vec![10, 9]);
    // Conv W1 [8, 4, 3, 3]: only 4 input channels, fewer than a block: per-channel, reported.
    let w1 = report.quantized.iter().find(|t| t.name == "W1").unwrap();
    assert_eq!(w1.spec.granularity, Granularity::PerAxis { axis: 0 });
    assert!(w1.note.as_deref().unwrap().contains("fewer than the block size"));
    assert_eq!(w1.spec.qtype, QType::Int4);
}

#[test]
fn gather_tables_and_conv_transpose_use_their_own_axes() {
    let dir = tempfile::tempdir().unwrap();
    let g = graph(
        "emb_deconv",
        vec![
            node("Gather", &["table", "ids"], &["e"]).named("embed"),
            node("Reshape", &["e", "shape"], &["img"]).named("to_image"),
            node("ConvTranspose", &["img", "Wt"], &["Y"]).named("deconv").ints("strides", &[2, 2]),
        ],
        vec![
            f32_tensor("table", &[50, 64], &rand_f32(3200, 21)),
            i64_tensor("shape", &[4], &[1, 4, 4, 4]),
            f32_tensor("Wt", &[4, 6, 3, 3], &rand_f32(216, 22)),
        ],
        vec![value_info("ids", dtype::INT64, &[1])],
        vec![value_info("Y", dtype::FLOAT, &[1, 6, 9, 9])],
    );
    let recipe = Recipe { min_elements: 0, ..Recipe::default() };
    let (out, report, _) = quantize_file(dir.path(), &model(g, 13), &recipe);
    let axis = |n: &str| report.quantized.iter().find(|t| t.name == n).unwrap().spec.granularity;
    assert_eq!(axis("table"), Granularity::PerAxis { axis: 0 }, "one scale per embedding row");
    assert_eq!(axis("Wt"), Granularity::PerAxis { axis: 1 }, "ConvTranspose output channels are axis 1");
    assert!(report.skipped.iter().all(|s| s.name != "shape"), "int64 tensors are never candidates");
    let r = ort_compare(&dir.path().join("float.onnx"), &out, &Compare::samples(4));
    assert!(worst_snr(&r) > 35.0, "{r}");
}

#[test]
fn selection_flags_pick_the_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let m = conv_gemm(false, 13);
    let run = |recipe: Recipe| {
        let (_, report, _) = quantize_file(dir.path(), &m, &recipe);
        report
    };
    let r = run(Recipe { exclude: vec!["fc".into()], ..Recipe::default() });
    assert_eq!(r.quantized.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(), ["W1"], "node names match too");
    let r = run(Recipe { include: vec!["W2".into()], ..Recipe::default() });
    assert_eq!(r.quantized.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(), ["W2"]);
    let r = run(Recipe { op_types: vec!["Conv".into()], ..Recipe::default() });
    assert_eq!(r.quantized.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(), ["W1"]);
    let r = run(Recipe { min_elements: 1000, ..Recipe::default() });
    assert_eq!(r.quantized.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(), ["W2"]);
    assert!(r.skipped.iter().any(|s| s.name == "W1" && s.reason.contains("below min-elements 1000")));
    let layer_bits = [("W*".to_string(), 4u8), ("W2".to_string(), 32u8)].into_iter().collect();
    let r = run(Recipe { layer_bits, ..Recipe::default() });
    assert_eq!(r.quantized.len(), 1);
    assert_eq!(r.quantized[0].spec.qtype, QType::Int4, "W1 matches the pattern W*");
    assert!(r.skipped.iter().any(|s| s.name == "W2" && s.reason.contains("kept float")), "exact name wins");
}

#[test]
fn bad_models_and_options_fail_with_messages_that_name_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    // NaN in a weight.
    let mut m = conv_gemm(false, 13);
    let mut w = rand_f32(288, 1);
    w[17] = f32::NAN;
    m.graph.as_mut().unwrap().initializer[0] = f32_tensor("W1", &[8, 4, 3, 3], &w);
    let p = write(dir.path(), "nan.onnx", &m);
    let err = quantize_model(&mut Model::load(&p).unwrap(), &Recipe::default()).unwrap_err();
    assert!(matches!(&err, Error::NonFinite { tensor, index: 17, .. } if tensor == "W1"), "{err}");
    // Nothing to quantize.
    let err =
        quantize_model(&mut Model::load(&p).unwrap(), &Recipe { op_types: vec!["MatMul".into()], ..Recipe::default() })
            .unwrap_err();
    assert!(err.to_string().contains("nothing was quantized") && err.to_string().contains("--allow-empty"), "{err}");
    let report = quantize_model(
        &mut Model::load(&p).unwrap(),
        &Recipe { op_types: vec!["MatMul".into()], allow_empty: true, ..Recipe::default() },
    )
    .unwrap();
    assert!(report.quantized.is_empty());
    // Bad options.
    let err = Recipe { bits: 6, ..Recipe::default() }.validate("--").unwrap_err();
    assert_eq!(err.to_string(), "--bits: expected 4 or 8, got 6");
    let err = Recipe { native_int4: true, ..Recipe::default() }.validate("--").unwrap_err();
    assert!(err.to_string().starts_with("--native-int4"), "{err}");
    // Truncated file.
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(dir.path().join("cut.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    let err = Model::load(dir.path().join("cut.onnx")).unwrap_err();
    assert!(err.to_string().contains("cut.onnx") && err.to_string().contains("not a valid ONNX model"), "{err}");
    // Overwriting the input.
    let model = Model::load(&p).unwrap();
    let err = model.save(&p, &SaveOptions::default()).unwrap_err();
    assert!(matches!(err, Error::WouldOverwrite { .. }), "{err}");
    let err = model.save(dir.path().join("missing/out.onnx"), &SaveOptions::default()).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn output_is_byte_identical_on_any_thread_count() {
    let m = conv_gemm(true, 11);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut model = Model::from_bytes(prost::Message::encode_to_vec(&m), None).unwrap();
            quantize_model(&mut model, &Recipe::default()).unwrap();
            model.to_bytes()
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(4));
}

#[test]
fn old_ir_models_drop_quantized_weights_from_the_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = conv_gemm(false, 9);
    m.ir_version = Some(3);
    let g = m.graph.as_mut().unwrap();
    // Gemm-9 needs its C input.
    g.node[3].input.push("B2".into());
    g.initializer.push(f32_tensor("B2", &[10], &[0.5; 10]));
    // IR 3 lists every initializer as a graph input.
    let extra: Vec<_> =
        g.initializer.iter().map(|t| value_info(t.name.as_deref().unwrap(), dtype::FLOAT, &t.dims)).collect();
    g.input.extend(extra);
    let (out, report, q) = quantize_file(dir.path(), &m, &minmax(Recipe { per_channel: false, ..Recipe::default() }));
    assert_eq!(report.quantized.len(), 2);
    assert_eq!(report.opset_after, 10);
    let inputs: Vec<&str> = q.graph().input.iter().map(|v| v.name.as_deref().unwrap()).collect();
    assert_eq!(inputs, ["X", "B1", "B2"]);
    assert_eq!(q.proto.ir_version, Some(5));
    // Per-tensor weights: one scale each, the rest of the opset-9 model as it was.
    let w1 = fake_quant_int8(&weight(&m, "W1"), &[8, 4, 3, 3], None);
    let w2 = fake_quant_int8(&weight(&m, "W2"), &[10, 288], None);
    let reference = write(dir.path(), "reference.onnx", &with_weight(with_weight(m, "W1", &w1), "W2", &w2));
    assert_same_outputs(&reference, &out, &Compare::samples(4).unoptimized(), 1e-5);
}

/// IR 3 (every initializer also a graph input): X -> Conv -> BatchNormalization -> Relu -> Y.
fn old_ir_conv_bn() -> ModelProto {
    let mut m = model(
        graph(
            "conv_bn",
            vec![
                node("Conv", &["X", "W", "B"], &["c"]).ints("pads", &[1, 1, 1, 1]),
                node("BatchNormalization", &["c", "s", "b", "mean", "var"], &["n"]),
                node("Relu", &["n"], &["Y"]),
            ],
            vec![
                f32_tensor("W", &[8, 4, 3, 3], &rand_f32(288, 11)),
                f32_tensor("B", &[8], &rand_f32(8, 12)),
                f32_tensor("s", &[8], &rand_f32(8, 13).iter().map(|v| 1.0 + 0.5 * v).collect::<Vec<_>>()),
                f32_tensor("b", &[8], &rand_f32(8, 14)),
                f32_tensor("mean", &[8], &rand_f32(8, 15)),
                f32_tensor("var", &[8], &rand_f32(8, 16).iter().map(|v| 1.0 + 0.5 * v.abs()).collect::<Vec<_>>()),
            ],
            vec![value_info("X", dtype::FLOAT, &[-1, 4, 8, 8])],
            vec![value_info("Y", dtype::FLOAT, &[-1, 8, 8, 8])],
        ),
        9,
    );
    m.ir_version = Some(3);
    let g = m.graph.as_mut().unwrap();
    let listed: Vec<_> =
        g.initializer.iter().map(|t| value_info(t.name.as_deref().unwrap(), dtype::FLOAT, &t.dims)).collect();
    g.input.extend(listed);
    m
}

#[test]
fn old_ir_models_lose_no_input_to_folding_and_calibrate_on_their_data_input() {
    // Folding the batch norm into the convolution removes its four parameters: inputs left
    // naming them would have no value, so every caller would have to feed them.
    let dir = tempfile::tempdir().unwrap();
    let float_path = write(dir.path(), "float.onnx", &old_ir_conv_bn());
    write_npy(&dir.path().join("calib.npy"), &[8, 4, 8, 8], &rand_f32(8 * 256, 21));
    write_npy(&dir.path().join("held_out.npy"), &[4, 4, 8, 8], &rand_f32(4 * 256, 22));
    let float = Model::load(&float_path).unwrap();
    let static_recipe = Recipe { calibration: Some(quantize_rs::Calibration::new("calib.npy")), ..Recipe::default() };
    for (what, recipe) in [("weight-only", Recipe::default()), ("static", static_recipe)] {
        let out = quantize_rs::run(float.clone(), &recipe, dir.path()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let g = out.model.graph();
        let initializers: Vec<&str> = g.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
        let data: Vec<&str> =
            g.input.iter().filter_map(|i| i.name.as_deref()).filter(|n| !initializers.contains(n)).collect();
        assert_eq!(data, ["X"], "{what}: every other input has its value");
        let path = dir.path().join(format!("{what}.onnx"));
        out.model.save(&path, &SaveOptions::default()).unwrap();
        let held_out = Compare { inputs: Some(dir.path().join("held_out.npy")), ..Compare::samples(4) };
        let snr = worst_snr(&ort_compare(&float_path, &path, &held_out));
        assert!(snr > 25.0, "{what}: {snr:.1} dB in ONNX Runtime");
    }
}

#[test]
fn folded_weights_keep_the_names_rules_and_reports_use() {
    // Folding the batch norm writes new weight values; they keep the float model's names, so a
    // rule naming the weight still applies and the report names what the user sees in `info`.
    let dir = tempfile::tempdir().unwrap();
    let mut m = old_ir_conv_bn();
    m.ir_version = Some(8);
    m.graph.as_mut().unwrap().input.truncate(1);
    let float = Model::from_bytes(prost::Message::encode_to_vec(&m), None).unwrap();
    let run = |recipe: Recipe| quantize_rs::run(float.clone(), &recipe, dir.path()).unwrap();
    let plain = run(Recipe { min_elements: 0, ..Recipe::default() });
    assert_eq!(plain.report.folded_nodes, 1, "the batch norm is folded");
    let names: Vec<&str> = plain.report.quantized.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["W"]);
    assert!(plain.report.unmatched_rules.is_empty());
    // A misspelt name changes nothing: the report says so instead of staying quiet.
    let typo = run(Recipe {
        min_elements: 0,
        exclude: vec!["w".into()],
        layer_bits: [("conv_c*".to_string(), 4u8), ("W_*".to_string(), 4u8)].into(),
        ..Recipe::default()
    });
    assert_eq!(typo.report.unmatched_rules, ["exclude 'w'", "layer-bits 'W_*'"]);
    assert_eq!(typo.report.quantized[0].spec.qtype.bits(), 4, "the node-name pattern applies");
    assert!(typo.report.to_text(false).contains("warning: exclude 'w' matches no weight"));
    // `validate --detailed` compares the folded weight with the folded float weight, not with
    // the unfolded one that had its name: an int8 weight's figure, not the batch norm's scale.
    let opts = quantize_rs::ValidateOptions { detailed: true, ..Default::default() };
    let v = quantize_rs::validate(&float, &plain.model, &opts).unwrap();
    let w = v.weights.iter().find(|w| w.name == "W").expect("W compared");
    assert!(w.snr_db > 35.0, "{w:?}");
    // An exact name with glob characters counts as matched when it names the weight.
    let mut odd = m.clone();
    let g = odd.graph.as_mut().unwrap();
    g.initializer.iter_mut().find(|t| t.name.as_deref() == Some("W")).unwrap().name = Some("W[0]".into());
    g.node[0].input[1] = "W[0]".into();
    let odd = Model::from_bytes(prost::Message::encode_to_vec(&odd), None).unwrap();
    let recipe = Recipe { min_elements: 0, layer_bits: [("W[0]".to_string(), 4u8)].into(), ..Recipe::default() };
    let r = quantize_rs::run(odd, &recipe, dir.path()).unwrap();
    assert!(r.report.unmatched_rules.is_empty(), "{:?}", r.report.unmatched_rules);
    let kept = run(Recipe {
        min_elements: 0,
        allow_empty: true,
        layer_bits: [("W".to_string(), 32u8)].into(),
        ..Recipe::default()
    });
    assert!(kept.report.quantized.is_empty(), "{:?}", kept.report.quantized);
    assert!(
        kept.report.skipped.iter().any(|k| k.name == "W" && k.reason.contains("layer-bits")),
        "{:?}",
        kept.report.skipped
    );
    let excluded = run(Recipe { min_elements: 0, allow_empty: true, exclude: vec!["W".into()], ..Recipe::default() });
    assert!(excluded.report.quantized.is_empty(), "{:?}", excluded.report.quantized);
    let four = run(Recipe { min_elements: 0, layer_bits: [("W".to_string(), 4u8)].into(), ..Recipe::default() });
    assert_eq!(four.report.quantized[0].spec.qtype.bits(), 4, "{:?}", four.report.quantized);
    // The folded values, not the unfolded ones, sit under the name: the float-kept model is the
    // float model's function.
    let path = dir.path().join("kept.onnx");
    kept.model.save(&path, &SaveOptions::default()).unwrap();
    let float_path = write(dir.path(), "float.onnx", &m);
    assert_same_outputs(&float_path, &path, &Compare::samples(4).unoptimized(), 1e-4);
}

#[test]
fn dims_whose_product_overflows_are_an_error_naming_the_tensor() {
    // [2^40, 2^40, 3, 3] holds 2^80 * 9 elements: 1 kB of data can never match it, and the
    // product must not wrap to a small count that a size filter would skip.
    let mut w = f32_tensor("W", &[1, 1, 16, 16], &rand_f32(256, 7));
    w.dims = vec![1 << 40, 1 << 40, 3, 3];
    let m = ModelBuilder::new(13)
        .input("X", dtype::FLOAT, &[1, 1, 8, 8])
        .output("Y", dtype::FLOAT)
        .init(w)
        .node(node("Conv", &["X", "W"], &["Y"]))
        .build();
    let mut model = Model::from_bytes(prost::Message::encode_to_vec(&m), None).unwrap();
    let err = quantize_model(&mut model, &Recipe::default()).unwrap_err().to_string();
    assert!(err.contains("'W'") && err.contains("overflows"), "{err}");
}

#[test]
fn a_broken_input_graph_is_an_error_naming_the_node_and_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let w = f32_tensor("W", &[8, 8], &rand_f32(64, 3));
    let dangling = ModelBuilder::new(13)
        .input("X", dtype::FLOAT, &[1, 8])
        .output("Y", dtype::FLOAT)
        .init(w.clone())
        .node(node("MatMul", &["X", "W"], &["H"]))
        .node(node("Add", &["H", "nowhere"], &["Y"]))
        .build();
    let model = Model::from_bytes(prost::Message::encode_to_vec(&dangling), None).unwrap();
    let err = quantize_rs::run(model, &Recipe { min_elements: 0, ..Recipe::default() }, dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("reads 'nowhere'") && text.contains("broken before quantization"), "{text}");
    let twice = ModelBuilder::new(13)
        .input("X", dtype::FLOAT, &[1, 8])
        .output("Y", dtype::FLOAT)
        .init(w)
        .node(node("MatMul", &["X", "W"], &["Y"]))
        .node(node("Relu", &["X"], &["Y"]))
        .build();
    let model = Model::from_bytes(prost::Message::encode_to_vec(&twice), None).unwrap();
    let err = quantize_rs::run(model, &Recipe { min_elements: 0, ..Recipe::default() }, dir.path()).unwrap_err();
    assert!(err.to_string().contains("'Y' is produced twice"), "{err}");
    // Nodes out of order still connect: not an error.
    let unsorted = ModelBuilder::new(13)
        .input("X", dtype::FLOAT, &[1, 8])
        .output("Y", dtype::FLOAT)
        .init(f32_tensor("W", &[8, 8], &rand_f32(64, 3)))
        .node(node("Relu", &["H"], &["Y"]))
        .node(node("MatMul", &["X", "W"], &["H"]))
        .build();
    let model = Model::from_bytes(prost::Message::encode_to_vec(&unsorted), None).unwrap();
    assert!(quantize_rs::run(model, &Recipe { min_elements: 0, ..Recipe::default() }, dir.path()).is_ok());
}

/// A bidirectional LSTM then a GRU, as CRNN text recognisers have them.
fn recurrent_model() -> ModelProto {
    let (seq, input, hidden) = (6, 16, 24);
    let g = graph(
        "crnn_tail",
        vec![
            node("LSTM", &["X", "W", "R", "B"], &["Y", "", ""])
                .named("lstm")
                .int("hidden_size", hidden)
                .string("direction", "bidirectional"),
            // [seq, 2, batch, hidden] -> [seq, batch, 2 * hidden]
            node("Transpose", &["Y"], &["Yt"]).named("t").ints("perm", &[0, 2, 1, 3]),
            node("Reshape", &["Yt", "shape"], &["Yr"]).named("r"),
            node("GRU", &["Yr", "Wg", "Rg"], &["Z", ""]).named("gru").int("hidden_size", hidden),
        ],
        vec![
            f32_tensor("W", &[2, 4 * hidden, input], &rand_f32((8 * hidden * input) as usize, 1)),
            f32_tensor("R", &[2, 4 * hidden, hidden], &rand_f32((8 * hidden * hidden) as usize, 2)),
            f32_tensor("B", &[2, 8 * hidden], &rand_f32((16 * hidden) as usize, 3)),
            i64_tensor("shape", &[3], &[seq, 1, 2 * hidden]),
            f32_tensor("Wg", &[1, 3 * hidden, 2 * hidden], &rand_f32((6 * hidden * hidden) as usize, 4)),
            f32_tensor("Rg", &[1, 3 * hidden, hidden], &rand_f32((3 * hidden * hidden) as usize, 5)),
        ],
        vec![value_info("X", dtype::FLOAT, &[seq, 1, input])],
        vec![value_info("Z", dtype::FLOAT, &[seq, 1, 1, hidden])],
    );
    model(g, 14)
}

#[test]
fn recurrent_weights_are_quantized_per_gate_row_and_run_in_ort_and_tract() {
    let dir = tempfile::tempdir().unwrap();
    let m = recurrent_model();
    let (out, report, q) = quantize_file(dir.path(), &m, &Recipe::default());
    let mut names: Vec<(&str, Granularity)> =
        report.quantized.iter().map(|t| (t.name.as_str(), t.spec.granularity)).collect();
    names.sort_by_key(|n| n.0);
    let rows = Granularity::PerAxis { axis: 1 };
    assert_eq!(names, [("R", rows), ("Rg", rows), ("W", rows), ("Wg", rows)]);
    // The bias stays float and bit-exact.
    let b = q.graph().initializer.iter().find(|t| t.name.as_deref() == Some("B")).unwrap();
    assert_eq!(quantize_rs::onnx::tensor::floats(b).unwrap(), rand_f32(16 * 24, 3));
    assert!(report.skipped.iter().any(|s| s.name == "B"));
    // About a third of the float size (the float bias and the scales weigh in a model this small).
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64;
    assert!(
        size(&out) < 0.35 * size(&dir.path().join("float.onnx")),
        "{} vs {}",
        size(&out),
        size(&dir.path().join("float.onnx"))
    );
    // ONNX Runtime runs it close to the float model.
    let r = ort_compare(&dir.path().join("float.onnx"), &out, &Compare::samples(3));
    assert!(worst_snr(&r) > 30.0, "{r}");
    // So does tract.
    let f = Model::load(dir.path().join("float.onnx")).unwrap();
    write_npy(&dir.path().join("x.npy"), &[1, 6, 1, 16], &rand_f32(96, 9));
    let x = &quantize_rs::load_for_model(&f, &dir.path().join("x.npy"), None, None).unwrap()[0];
    let mut a = quantize_rs::Runner::for_model(&f, &[], "float");
    let mut b = quantize_rs::Runner::for_model(&q, &[], "quantized");
    let (ya, yb) = (a.run_f32(x).unwrap(), b.run_f32(x).unwrap());
    let (sig, noise) = ya[0]
        .iter()
        .zip(&yb[0])
        .fold((0.0f64, 0.0f64), |(s, n), (p, q)| (s + (*p as f64).powi(2), n + ((*p - *q) as f64).powi(2)));
    assert!(10.0 * (sig / noise).log10() > 30.0, "tract SNR {}", 10.0 * (sig / noise).log10());
}
