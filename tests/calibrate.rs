//! Static quantization on synthetic models: calibrated QDQ models run in ONNX Runtime close to
//! the float model, in the layout ORT fuses, and each range method behaves as documented.

mod support;

use quantize_rs::CalibrationReport;
use quantize_rs::onnx::proto::{ModelProto, dtype};
use quantize_rs::{Calibration, CalibrationMethod};
use quantize_rs::{Model, Recipe, SaveOptions};
use quantize_rs::{Outcome, run};
use support::*;

/// X[N,3,16,16] -> Conv(8) -> Relu -> Conv(8) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(10).
fn cnn() -> ModelProto {
    let g = graph(
        "cnn",
        vec![
            node("Conv", &["X", "W1", "B1"], &["c1"]).named("conv1").ints("pads", &[1, 1, 1, 1]),
            node("Relu", &["c1"], &["r1"]).named("relu1"),
            node("Conv", &["r1", "W2", "B2"], &["c2"]).named("conv2").ints("pads", &[1, 1, 1, 1]),
            node("Relu", &["c2"], &["r2"]).named("relu2"),
            node("GlobalAveragePool", &["r2"], &["p"]).named("gap"),
            node("Flatten", &["p"], &["f"]).named("flat"),
            node("Gemm", &["f", "W3", "B3"], &["Y"]).named("fc").int("transB", 1),
        ],
        vec![
            f32_tensor("W1", &[8, 3, 3, 3], &rand_f32(216, 1).iter().map(|x| x * 0.5).collect::<Vec<_>>()),
            f32_tensor("B1", &[8], &rand_f32(8, 2).iter().map(|x| x * 0.1).collect::<Vec<_>>()),
            f32_tensor("W2", &[8, 8, 3, 3], &rand_f32(576, 3).iter().map(|x| x * 0.3).collect::<Vec<_>>()),
            f32_tensor("B2", &[8], &rand_f32(8, 4).iter().map(|x| x * 0.1).collect::<Vec<_>>()),
            f32_tensor("W3", &[10, 8], &rand_f32(80, 5)),
            f32_tensor("B3", &[10], &rand_f32(10, 6)),
        ],
        vec![value_info("X", dtype::FLOAT, &[-1, 3, 16, 16])],
        vec![value_info("Y", dtype::FLOAT, &[-1, 10])],
    );
    model(g, 13)
}

fn samples(dir: &std::path::Path, name: &str, n: usize, seed: u64) -> std::path::PathBuf {
    let p = dir.join(name);
    write_npy(&p, &[n, 3, 16, 16], &rand_f32(n * 768, seed));
    p
}

fn calibrated(dir: &std::path::Path, method: CalibrationMethod) -> (Outcome, std::path::PathBuf) {
    let float = write(dir, "float.onnx", &cnn());
    samples(dir, "calib.npy", 16, 100);
    samples(dir, "held_out.npy", 4, 200);
    let recipe = Recipe {
        min_elements: 0,
        calibration: Some(Calibration { method, percentile: 99.9, ..calibration("calib.npy") }),
        verify_data: Some("held_out.npy".into()),
        ..Recipe::default()
    };
    let outcome = run(Model::load(&float).unwrap(), &recipe, dir).unwrap();
    let out = dir.join(format!("{method:?}.onnx"));
    outcome.model.save(&out, &SaveOptions::default()).unwrap();
    (outcome, out)
}

/// Minmax calibration on `data` with every other setting at its default.
fn calibration(data: &str) -> Calibration {
    let c = Calibration::new(data);
    assert_eq!((c.method, c.percentile), (CalibrationMethod::Minmax, 99.99), "the defaults these tests assume");
    c
}

fn count(m: &Model, op: &str) -> usize {
    m.graph().node.iter().filter(|n| n.op_type.as_deref() == Some(op)).count()
}

#[test]
fn a_calibrated_model_runs_in_ort_close_to_float_in_the_fusable_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, out) = calibrated(dir.path(), CalibrationMethod::Minmax);
    let cal: &CalibrationReport = outcome.calibration.as_ref().unwrap();
    assert_eq!(cal.samples, 16);
    assert_eq!(cal.quantized_nodes, 3, "conv1, conv2, fc");
    assert_eq!(cal.int32_biases, 3);
    assert_eq!(cal.activation_type, "uint8");
    // X, r1 and r2 (each conv's output is quantized past the Relu that alone reads it: its range
    // starts at 0 and ORT fuses the Relu away), f (fc's input); Y is a graph output and stays float.
    let names: Vec<&str> = cal.activations.iter().map(|a| a.tensor.as_str()).collect();
    assert_eq!(names, ["X", "r1", "r2", "f"]);
    let r1 = &cal.activations[1];
    assert_eq!((r1.lo, r1.zero_point), (0.0, 0), "{r1:?}");
    let m = &outcome.model;
    assert_eq!(count(m, "QuantizeLinear"), 4);
    assert_eq!(count(m, "DequantizeLinear"), 4 + 3 + 3, "activations + weights + biases");
    let relu1 = m.graph().node.iter().find(|n| n.name.as_deref() == Some("relu1")).unwrap();
    assert_eq!(relu1.input[0], "c1", "the Relu reads the conv directly");
    // Every reader of a quantized activation reads its DequantizeLinear output.
    let conv2 = m.graph().node.iter().find(|n| n.name.as_deref() == Some("conv2")).unwrap();
    assert_eq!(conv2.input[0], "r1_dequantized");
    assert!(conv2.input[2].starts_with("B2_dequantized"));
    let b2 = m.graph().initializer.iter().find(|t| t.name.as_deref() == Some("B2_quantized")).unwrap();
    assert_eq!(b2.data_type, Some(dtype::INT32));
    assert!(m.graph().initializer.iter().all(|t| t.name.as_deref() != Some("B2")), "the float bias is gone");
    // Verified by tract on held-out data, and checked again in ONNX Runtime.
    let v = outcome.verification.as_ref().unwrap();
    assert_eq!(v.samples, 4);
    assert!(v.snr_db > 25.0, "tract SNR {}", v.snr_db);
    let held_out = dir.path().join("held_out.npy");
    let r = ort_compare(&dir.path().join("float.onnx"), &out, &Compare::samples(4).inputs(&held_out));
    assert!(worst_snr(&r) > 18.0, "{r}");
}

#[test]
fn methods_choose_different_ranges_and_all_run_in_ort() {
    let dir = tempfile::tempdir().unwrap();
    let mut widths = Vec::new();
    for method in
        [CalibrationMethod::Minmax, CalibrationMethod::Percentile, CalibrationMethod::Entropy, CalibrationMethod::Mse]
    {
        let (outcome, out) = calibrated(dir.path(), method);
        let cal = outcome.calibration.unwrap();
        let x = cal.activations.iter().find(|a| a.tensor == "X").unwrap();
        assert!(x.lo <= 0.0 && x.hi > 0.0 && x.lo >= x.min && x.hi <= x.max, "{method:?}: {x:?}");
        widths.push(x.hi - x.lo);
        let held_out = dir.path().join("held_out.npy");
        let r = ort_compare(&dir.path().join("float.onnx"), &out, &Compare::samples(4).inputs(&held_out));
        assert!(worst_snr(&r) > 20.0, "{method:?}: {r}");
    }
    assert_eq!(widths[0], widths.iter().cloned().fold(0.0, f32::max), "minmax keeps the widest range");
    assert!(widths[2] < widths[0], "entropy is not minmax: {widths:?}");
}

#[test]
fn paddle_style_unknown_dims_take_each_sample_size_from_a_folder() {
    // Paddle names every unknown dim "?": a placeholder, not one shared size, so H and W of a
    // sample may differ, and samples of different sizes come one .npy file each.
    let dir = tempfile::tempdir().unwrap();
    let mut x = value_info("X", dtype::FLOAT, &[-1, 3, -1, -1]);
    if let Some(quantize_rs::onnx::proto::type_proto::Value::TensorType(t)) =
        x.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        for d in &mut t.shape.as_mut().unwrap().dim {
            if let Some(quantize_rs::onnx::proto::tensor_shape_proto::dimension::Value::DimParam(p)) = d.value.as_mut()
            {
                *p = "?".into();
            }
        }
    }
    let g = graph(
        "fcn",
        vec![
            node("Conv", &["X", "W", "B"], &["c"]).named("conv").ints("pads", &[1, 1, 1, 1]),
            node("Relu", &["c"], &["r"]).named("relu"),
            node("GlobalAveragePool", &["r"], &["Y"]).named("gap"),
        ],
        vec![f32_tensor("W", &[4, 3, 3, 3], &rand_f32(108, 1)), f32_tensor("B", &[4], &rand_f32(4, 2))],
        vec![x],
        vec![value_info("Y", dtype::FLOAT, &[-1, 4, 1, 1])],
    );
    // Exporters (PyTorch's dynamo) also write symbolic expressions into intermediate value_info,
    // which must not stop the sample's concrete shapes from propagating.
    let mut g = g;
    let mut hint = value_info("c", dtype::FLOAT, &[-1, 4, -1, -1]);
    if let Some(quantize_rs::onnx::proto::type_proto::Value::TensorType(t)) =
        hint.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        for (d, name) in t.shape.as_mut().unwrap().dim.iter_mut().zip(["batch", "", "floor(h/2) + 1", "w"]) {
            if let Some(quantize_rs::onnx::proto::tensor_shape_proto::dimension::Value::DimParam(p)) = d.value.as_mut()
            {
                *p = name.into();
            }
        }
    }
    g.value_info.push(hint);
    let float = write(dir.path(), "float.onnx", &model(g, 13));
    let calib = dir.path().join("calib");
    std::fs::create_dir(&calib).unwrap();
    for (i, (h, w)) in [(8, 16), (12, 6), (5, 9)].into_iter().enumerate() {
        write_npy(&calib.join(format!("{i}.npy")), &[1, 3, h, w], &rand_f32(3 * h * w, 10 + i as u64));
    }
    let recipe = Recipe {
        min_elements: 0,
        calibration: Some(calibration("calib")),
        verify_data: Some("calib/2.npy".into()),
        ..Recipe::default()
    };
    let outcome = run(Model::load(&float).unwrap(), &recipe, dir.path()).unwrap();
    assert_eq!(outcome.calibration.as_ref().unwrap().samples, 3);
    assert!(outcome.verification.as_ref().unwrap().snr_db > 25.0);
}

#[test]
fn verification_runs_blocked_and_native_int4_models_in_tract() {
    let dir = tempfile::tempdir().unwrap();
    let float = write(dir.path(), "float.onnx", &cnn());
    samples(dir.path(), "held_out.npy", 4, 200);
    for native_int4 in [false, true] {
        let recipe = Recipe {
            bits: 4,
            block_size: Some(4),
            native_int4,
            min_elements: 0,
            verify_data: Some("held_out.npy".into()),
            ..Recipe::default()
        };
        let outcome = run(Model::load(&float).unwrap(), &recipe, dir.path()).unwrap();
        let v = outcome.verification.unwrap();
        assert_eq!(v.samples, 4);
        assert!(v.snr_db > 5.0 && v.snr_db.is_finite(), "native {native_int4}: {}", v.snr_db);
    }
}

fn with_target(dir: &std::path::Path, target: Option<f64>, verify: bool) -> quantize_rs::Result<Outcome> {
    let float = dir.join("float.onnx");
    let recipe = Recipe {
        min_elements: 0,
        calibration: Some(Calibration { target_snr_db: target, ..calibration("calib.npy") }),
        verify_data: verify.then(|| "held_out.npy".into()),
        ..Recipe::default()
    };
    run(Model::load(&float).unwrap(), &recipe, dir)
}

#[test]
fn accuracy_target_steps_4_bit_weights_to_8_bits_before_float() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "float.onnx", &cnn());
    samples(dir.path(), "calib.npy", 16, 300);
    samples(dir.path(), "held_out.npy", 4, 400);
    let at = |bits: u8, native_int4: bool, target: Option<f64>| {
        let recipe = Recipe {
            bits,
            native_int4,
            min_elements: 0,
            calibration: Some(Calibration { target_snr_db: target, ..calibration("calib.npy") }),
            verify_data: Some("held_out.npy".into()),
            ..Recipe::default()
        };
        run(Model::load(dir.path().join("float.onnx")).unwrap(), &recipe, dir.path()).unwrap()
    };
    let snr = |o: &Outcome| o.verification.as_ref().unwrap().snr_db;
    let (four, eight) = (snr(&at(4, false, None)), snr(&at(8, false, None)));
    assert!(eight > four + 10.0, "room between the widths: 4-bit {four:.1} dB, 8-bit {eight:.1} dB");
    // A target the 4-bit model misses and the 8-bit one holds: weights widen, none goes float.
    let target = eight - 1.0;
    for native_int4 in [false, true] {
        let outcome = at(4, native_int4, Some(target));
        let t = outcome.calibration.as_ref().unwrap().target.as_ref().unwrap();
        let n = outcome.report.quantized.len();
        assert!(!t.weights_to_8_bits.is_empty() && t.weights_to_8_bits.len() <= n, "native {native_int4}: {t:?}");
        assert!(t.weights_returned_to_float.is_empty(), "native {native_int4}: {t:?}");
        assert!(t.four_bit_alone_db.windows(2).all(|w| w[0].1 <= w[1].1), "worst first: {:?}", t.four_bit_alone_db);
        assert!(t.reached_db >= target && snr(&outcome) >= target, "native {native_int4}: {t:?}");
        // The widened weights are 8-bit in the file and in the report; the others stay 4-bit.
        let g = outcome.model.graph();
        for q in &outcome.report.quantized {
            let widened = t.weights_to_8_bits.contains(&q.name);
            assert_eq!(q.spec.qtype.bits() == 8, widened, "{}: {:?}", q.name, q.spec);
            let dq = g.node.iter().find(|n| n.op_type.as_deref() == Some("DequantizeLinear") && n.output[0] == q.name);
            let stored =
                g.initializer.iter().find(|i| Some(&i.name.clone().unwrap_or_default()) == dq.map(|d| &d.input[0]));
            let stored = stored.unwrap_or_else(|| panic!("{}: its quantized values", q.name));
            let int8 = stored.data_type == Some(quantize_rs::onnx::proto::dtype::INT8);
            let wide = int8 && stored.raw_data.as_deref().unwrap().iter().any(|&b| !(-8..=7).contains(&(b as i8)));
            assert_eq!(wide, widened, "{}: data type {:?}", q.name, stored.data_type);
        }
    }
}

#[test]
fn weight_only_accuracy_target_widens_the_worst_4_bit_weights_then_returns_weights_to_float() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "float.onnx", &cnn());
    samples(dir.path(), "calib.npy", 16, 300);
    samples(dir.path(), "held_out.npy", 4, 400);
    let at = |bits: u8, target: Option<f64>| {
        let recipe = Recipe {
            bits,
            block_size: Some(8),
            min_elements: 0,
            calibration: Some(Calibration { weight_only: true, target_snr_db: target, ..calibration("calib.npy") }),
            verify_data: Some("held_out.npy".into()),
            ..Recipe::default()
        };
        run(Model::load(dir.path().join("float.onnx")).unwrap(), &recipe, dir.path())
    };
    let snr = |o: &Outcome| o.verification.as_ref().unwrap().snr_db;
    let (four, eight) = (snr(&at(4, None).unwrap()), snr(&at(8, None).unwrap()));
    assert!(eight > four + 10.0, "room between the widths: 4-bit {four:.1} dB, 8-bit {eight:.1} dB");
    // Between the widths: some 4-bit weights widen, none goes float, and the figure is the file's.
    let target = (four + eight) / 2.0;
    let outcome = at(4, Some(target)).unwrap();
    assert!(outcome.calibration.is_none(), "the model stays weight-only");
    let t = outcome.report.target.as_ref().unwrap();
    assert!((t.recipe_db - four).abs() < 1e-6, "{t:?}");
    assert!(!t.weights_to_8_bits.is_empty() && t.weights_returned_to_float.is_empty(), "{t:?}");
    assert!(t.reached_db >= target && (snr(&outcome) - t.reached_db).abs() < 1e-6, "{} vs {t:?}", snr(&outcome));
    assert!(t.four_bit_alone_db.windows(2).all(|w| w[0].1 <= w[1].1), "worst first: {:?}", t.four_bit_alone_db);
    for q in &outcome.report.quantized {
        assert_eq!(q.spec.qtype.bits() == 8, t.weights_to_8_bits.contains(&q.name), "{}: {:?}", q.name, q.spec);
    }
    assert!(outcome.report.data_aware.as_ref().is_some_and(|d| d.rounded > 0), "GPTQ still rounds the rest");
    assert!(outcome.report.to_text(false).contains("8-bit weight: "));
    // Above what 8 bits give: every 4-bit weight widens and the worst go float; the target holds.
    let high = eight + 6.0;
    let outcome = at(4, Some(high)).unwrap();
    let t = outcome.report.target.as_ref().unwrap();
    assert!(!t.weights_returned_to_float.is_empty(), "{t:?}");
    assert_eq!(t.weights_to_8_bits.len(), t.four_bit_alone_db.len(), "every 4-bit weight widened first: {t:?}");
    assert!(t.reached_db >= high && (snr(&outcome) - t.reached_db).abs() < 1e-6, "{t:?}");
    for w in &t.weights_returned_to_float {
        assert!(!outcome.report.quantized.iter().any(|q| &q.name == w), "{w} is float");
    }
    // Without verification data there is nothing to measure: an error naming the key.
    let recipe = Recipe {
        calibration: Some(Calibration { weight_only: true, target_snr_db: Some(20.0), ..calibration("calib.npy") }),
        ..Recipe::default()
    };
    let err = run(Model::load(dir.path().join("float.onnx")).unwrap(), &recipe, dir.path()).unwrap_err();
    assert!(err.to_string().contains("target-snr-db") && err.to_string().contains("verify-data"), "{err}");
    // Dynamic quantization would quantize activations the search never measured: refused.
    let recipe = Recipe { dynamic: true, verify_data: Some("held_out.npy".into()), ..recipe };
    let err = run(Model::load(dir.path().join("float.onnx")).unwrap(), &recipe, dir.path()).unwrap_err();
    assert!(err.to_string().contains("calibration.target-snr-db") && err.to_string().contains("dynamic"), "{err}");
}

#[test]
fn accuracy_target_returns_the_worst_activations_to_float_until_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "float.onnx", &cnn());
    // One calibration sample 40x louder than the rest: minmax ranges too wide for the held-out
    // data, so quantized activations cost real accuracy and the target has room.
    let mut calib = rand_f32(16 * 768, 100);
    calib[..768].iter_mut().for_each(|x| *x *= 40.0);
    write_npy(&dir.path().join("calib.npy"), &[16, 3, 16, 16], &calib);
    samples(dir.path(), "held_out.npy", 4, 200);
    let all = with_target(dir.path(), None, true).unwrap().verification.unwrap().snr_db;
    let weight_only = {
        let recipe = Recipe { min_elements: 0, verify_data: Some("held_out.npy".into()), ..Recipe::default() };
        let m = Model::load(dir.path().join("float.onnx")).unwrap();
        run(m, &recipe, dir.path()).unwrap().verification.unwrap().snr_db
    };
    assert!(weight_only > all + 6.0, "room for a target: weight-only {weight_only}, all quantized {all}");
    let target = all + 3.0;
    let outcome = with_target(dir.path(), Some(target), true).unwrap();
    let cal = outcome.calibration.as_ref().unwrap();
    let t = cal.target.as_ref().unwrap();
    assert!((t.all_quantized_db - all).abs() < 1e-6, "{} vs {all}", t.all_quantized_db);
    assert!(t.reached_db >= target, "{t:?}");
    // The count chosen was measured on the model written (weights finished for the activations
    // it keeps), not on a stand-in whose figure the file may miss.
    let k = t.returned_to_float.len();
    let tried = t.trials.iter().find(|(c, _)| *c == k).map(|t| t.1);
    assert_eq!(tried, Some(t.reached_db), "trial for {k} returned vs the model written: {t:?}");
    assert!(!t.returned_to_float.is_empty() && t.returned_to_float.len() < 4, "{t:?}");
    assert_eq!(cal.activations.len() + t.returned_to_float.len(), 4);
    assert_eq!(t.alone_db.len(), 4);
    assert!(t.alone_db.windows(2).all(|w| w[0].1 <= w[1].1), "worst first: {:?}", t.alone_db);
    assert_eq!(t.returned_to_float[0], t.alone_db[0].0);
    // Four random held-out samples carry about equal signal.
    assert!(t.effective_samples > 3.0 && t.effective_samples <= 4.0, "{}", t.effective_samples);
    // The model written is the one measured, and what went back to float has no QuantizeLinear.
    let v = outcome.verification.as_ref().unwrap();
    assert!((v.snr_db - t.reached_db).abs() < 1e-6, "{} vs {}", v.snr_db, t.reached_db);
    for name in &t.returned_to_float {
        assert!(
            !outcome
                .model
                .graph()
                .node
                .iter()
                .any(|n| n.op_type.as_deref() == Some("QuantizeLinear") && n.input[0] == *name),
            "{name} is still quantized"
        );
    }
    // A weight op whose input went back to float runs as a float op, which cannot saturate: its
    // weight has its 8 bits back; the ones still fused keep 7.
    let weight_ops: Vec<&quantize_rs::onnx::proto::NodeProto> =
        outcome.model.graph().node.iter().filter(|n| matches!(n.op_type.as_deref(), Some("Conv" | "Gemm"))).collect();
    assert!(weight_ops.iter().any(|n| !n.input[0].ends_with("_dequantized")), "one runs float here");
    for n in weight_ops {
        let fused = n.input[0].ends_with("_dequantized");
        let entry = outcome.report.quantized.iter().find(|q| q.name == n.input[1]).unwrap();
        assert_eq!(entry.spec.qtype == quantize_rs::QType::Int7, fused, "{}: {:?}", n.input[1], entry.spec);
    }
    // A target the quantized weights alone miss: the worst weights go back to float first (they
    // leave the report's quantized list), and the target holds.
    let high = weight_only + 10.0;
    let outcome = with_target(dir.path(), Some(high), true).unwrap();
    let t = outcome.calibration.as_ref().unwrap().target.as_ref().unwrap();
    assert!(!t.weights_returned_to_float.is_empty(), "{t:?}");
    assert!(t.weight_alone_db.windows(2).all(|w| w[0].1 <= w[1].1), "worst first: {:?}", t.weight_alone_db);
    assert!(t.reached_db >= high, "{t:?}");
    let v = outcome.verification.as_ref().unwrap().snr_db;
    assert!(v == t.reached_db || (v - t.reached_db).abs() < 1e-6, "{v} vs {t:?}");
    for name in &t.weights_returned_to_float {
        assert!(!outcome.report.quantized.iter().any(|q| &q.name == name), "{name} still listed as quantized");
        assert!(outcome.report.skipped.iter().any(|s| &s.name == name && s.reason.contains("accuracy target")));
        assert!(
            !outcome
                .model
                .graph()
                .node
                .iter()
                .any(|n| n.op_type.as_deref() == Some("DequantizeLinear") && n.output[0] == *name),
            "{name} still dequantized"
        );
    }
    // A target without held-out data is an error.
    let err = with_target(dir.path(), Some(30.0), false).unwrap_err().to_string();
    assert!(err.contains("target-snr-db") && err.contains("verify-data"), "{err}");
}

/// [`cnn`] with its second convolution depthwise (group 8, one input channel per group).
fn cnn_with_depthwise() -> ModelProto {
    let mut m = cnn();
    let g = m.graph.as_mut().unwrap();
    let conv2 = g.node.iter_mut().find(|n| n.name.as_deref() == Some("conv2")).unwrap();
    *conv2 = node("Conv", &["r1", "Wd", "B2"], &["c2"]).named("dw").ints("pads", &[1, 1, 1, 1]).int("group", 8);
    g.initializer.retain(|t| t.name.as_deref() != Some("W2"));
    g.initializer.push(f32_tensor("Wd", &[8, 1, 3, 3], &rand_f32(72, 3)));
    m
}

/// The stored int8 values of weight `w` (the input of its DequantizeLinear).
fn stored_weight(m: &Model, w: &str) -> Vec<i8> {
    let g = m.graph();
    let dq = g.node.iter().find(|n| n.op_type.as_deref() == Some("DequantizeLinear") && n.output[0] == w).unwrap();
    let t = g.initializer.iter().find(|t| t.name.as_ref() == Some(&dq.input[0])).unwrap();
    assert_eq!(t.data_type, Some(dtype::INT8), "{w}");
    t.raw_data.as_ref().unwrap().iter().map(|&b| b as i8).collect()
}

#[test]
fn integer_kernel_weights_get_7_bits_that_avx2_pairs_cannot_saturate() {
    let dir = tempfile::tempdir().unwrap();
    let float = write(dir.path(), "float.onnx", &cnn_with_depthwise());
    samples(dir.path(), "calib.npy", 8, 100);
    samples(dir.path(), "held_out.npy", 4, 200);
    let run_with = |full_range_weights: bool| {
        let recipe = Recipe {
            min_elements: 0,
            calibration: Some(Calibration { full_range_weights, ..calibration("calib.npy") }),
            verify_data: Some("held_out.npy".into()),
            ..Recipe::default()
        };
        run(Model::load(&float).unwrap(), &recipe, dir.path()).unwrap()
    };
    let amax = |v: &[i8]| v.iter().map(|&x| (x as i32).abs()).max().unwrap();
    let safe = run_with(false);
    let cal = safe.calibration.as_ref().unwrap();
    let reduced: Vec<&str> = cal.reduced_range_weights.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(reduced, ["W1", "W3"], "the depthwise weight keeps 8 bits");
    for w in ["W1", "W3"] {
        let v = stored_weight(&safe.model, w);
        // Symmetric 7-bit: the largest weights land on ±63 (-64 when the range search clips a
        // negative one), and a u8 × s8 pair sum (what AVX2's vpmaddubsw adds in a saturating
        // int16 lane) stays representable.
        assert!((63..=64).contains(&amax(&v)), "{w}: {}", amax(&v));
        assert!(2 * 255 * amax(&v) <= i16::MAX as i32);
        let entry = safe.report.quantized.iter().find(|q| q.name == w).unwrap();
        assert_eq!(entry.spec.qtype, quantize_rs::QType::Int7);
        assert!(entry.sqnr_db > 30.0 && entry.sqnr_db.is_finite(), "{w}: {}", entry.sqnr_db);
    }
    assert!((127..=128).contains(&amax(&stored_weight(&safe.model, "Wd"))), "the depthwise weight keeps 8 bits");
    // Biases follow the requantized weight scales: the model still runs close to the float one.
    let out = dir.path().join("safe.onnx");
    safe.model.save(&out, &SaveOptions::default()).unwrap();
    let held_out = dir.path().join("held_out.npy");
    let r = ort_compare(&float, &out, &Compare::samples(4).inputs(&held_out));
    assert!(worst_snr(&r) > 20.0, "{r}");

    // 4-bit weights (widened to int8 bytes) cannot saturate and keep what the recipe asked for.
    let recipe = Recipe { bits: 4, min_elements: 0, calibration: Some(calibration("calib.npy")), ..Recipe::default() };
    let four = run(Model::load(&float).unwrap(), &recipe, dir.path()).unwrap();
    assert!(four.calibration.as_ref().unwrap().reduced_range_weights.is_empty());
    assert!((7..=8).contains(&amax(&stored_weight(&four.model, "W1"))));

    let full = run_with(true);
    assert!(full.calibration.as_ref().unwrap().reduced_range_weights.is_empty());
    for w in ["W1", "Wd", "W3"] {
        assert!((127..=128).contains(&amax(&stored_weight(&full.model, w))), "{w}");
    }
}

/// X -> Conv -> SiLU (Sigmoid, Mul) -> MaxPool -> Add(+constant) -> Conv -> Y, plus a shape
/// computation (Shape, Shape -> Concat) feeding a Reshape of the result.
fn silu_cnn() -> ModelProto {
    let g = graph(
        "silu",
        vec![
            node("Conv", &["X", "W1", "B1"], &["c1"]).named("conv1").ints("pads", &[1, 1, 1, 1]),
            node("Sigmoid", &["c1"], &["s1"]).named("sig"),
            node("Mul", &["c1", "s1"], &["m1"]).named("silu"),
            node("MaxPool", &["m1"], &["p1"]).named("pool").ints("kernel_shape", &[2, 2]).ints("strides", &[2, 2]),
            node("Add", &["p1", "K"], &["a1"]).named("add_const"),
            node("Conv", &["a1", "W2", "B2"], &["c2"]).named("conv2").ints("pads", &[1, 1, 1, 1]),
            node("Shape", &["c2"], &["shp"]).named("shape"),
            node("Shape", &["K"], &["one"]).named("shape_one"),
            node("Concat", &["shp", "one"], &["shp2"]).named("shape_concat").int("axis", 0),
            node("Reshape", &["c2", "shp2"], &["Y"]).named("reshape"),
        ],
        vec![
            f32_tensor("W1", &[8, 3, 3, 3], &rand_f32(216, 1).iter().map(|x| x * 0.5).collect::<Vec<_>>()),
            f32_tensor("B1", &[8], &rand_f32(8, 2).iter().map(|x| x * 0.1).collect::<Vec<_>>()),
            f32_tensor("W2", &[8, 8, 3, 3], &rand_f32(576, 3).iter().map(|x| x * 0.3).collect::<Vec<_>>()),
            f32_tensor("B2", &[8], &rand_f32(8, 4).iter().map(|x| x * 0.1).collect::<Vec<_>>()),
            f32_tensor("K", &[1], &[0.25]),
        ],
        vec![value_info("X", dtype::FLOAT, &[-1, 3, 16, 16])],
        vec![value_info("Y", dtype::FLOAT, &[-1, 8, 8, 8, 1])],
    );
    model(g, 13)
}

#[test]
fn elementwise_and_pass_through_ops_between_integer_kernels_are_quantized_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let float = write(dir.path(), "float.onnx", &silu_cnn());
    samples(dir.path(), "calib.npy", 8, 100);
    samples(dir.path(), "held_out.npy", 4, 200);
    let recipe = |op_types: Option<Vec<String>>| Recipe {
        min_elements: 0,
        calibration: Some(Calibration { op_types, ..calibration("calib.npy") }),
        verify_data: Some("held_out.npy".into()),
        ..Recipe::default()
    };
    let outcome = run(Model::load(&float).unwrap(), &recipe(None), dir.path()).unwrap();
    let cal = outcome.calibration.as_ref().unwrap();
    // conv1, sig, silu, pool, conv2: the SiLU and the pool sit between quantized convs. The Add
    // of a constant and the shape Concat stay float.
    assert_eq!(cal.quantized_nodes, 5, "{:?}", cal.activations.iter().map(|a| &a.tensor).collect::<Vec<_>>());
    let names: Vec<&str> = cal.activations.iter().map(|a| a.tensor.as_str()).collect();
    assert_eq!(names, ["X", "c1", "s1", "m1", "p1", "a1", "c2"]);
    // The pool's output shares its input's scale and zero point: ORT runs it on uint8 as is.
    let (m1, p1) = (&cal.activations[3], &cal.activations[4]);
    assert_eq!((m1.scale, m1.zero_point), (p1.scale, p1.zero_point));
    assert!(p1.max <= m1.max);
    assert!(cal.skipped_nodes.is_empty(), "{:?}", cal.skipped_nodes);
    let out = dir.path().join("auto.onnx");
    outcome.model.save(&out, &SaveOptions::default()).unwrap();
    let held_out = dir.path().join("held_out.npy");
    let r = ort_compare(&float, &out, &Compare::samples(4).inputs(&held_out));
    assert!(worst_snr(&r) > 20.0, "{r}");

    // Named explicitly, an elementwise op is quantized wherever it can be, and what cannot is
    // reported: a constant operand, integer (shape) arithmetic.
    let ops = ["Conv", "Add", "Concat"].map(String::from).to_vec();
    let outcome = run(Model::load(&float).unwrap(), &recipe(Some(ops)), dir.path()).unwrap();
    let skipped = &outcome.calibration.as_ref().unwrap().skipped_nodes;
    let why = |n: &str| skipped.iter().find(|(k, _)| k.contains(n)).map(|(_, w)| w.as_str());
    assert_eq!(why("add_const"), Some("it has a constant operand"));
    assert_eq!(why("shape_concat"), Some("it computes on integers (shapes or indices)"));
    // An op type calibration cannot quantize is a recipe error naming the key.
    let bad = run(Model::load(&float).unwrap(), &recipe(Some(vec!["Softmax".into()])), dir.path()).unwrap_err();
    assert!(bad.to_string().contains("calibration.op-types"), "{bad}");
}

#[test]
fn bias_correction_removes_the_mean_shift_of_quantized_weights() {
    // Inputs far from zero (mean 3 per feature): a weight's rounding error times that mean shifts
    // every output by the same amount, which the corrected bias absorbs.
    let dir = tempfile::tempdir().unwrap();
    let g = graph(
        "fc",
        vec![node("Gemm", &["X", "W", "B"], &["Y"]).named("fc").int("transB", 1)],
        vec![f32_tensor("W", &[8, 64], &rand_f32(512, 7)), f32_tensor("B", &[8], &rand_f32(8, 8))],
        vec![value_info("X", dtype::FLOAT, &[-1, 64])],
        vec![value_info("Y", dtype::FLOAT, &[-1, 8])],
    );
    let float = write(dir.path(), "float.onnx", &model(g, 13));
    let offset = |seed| rand_f32(32 * 64, seed).iter().map(|x| 3.0 + 0.3 * x).collect::<Vec<_>>();
    write_npy(&dir.path().join("calib.npy"), &[32, 64], &offset(1));
    write_npy(&dir.path().join("held_out.npy"), &[32, 64], &offset(2));
    let mean_error = |bias_correction: bool| {
        // Plain rounding: the default's mean-preserving rounding already removes most of the
        // shift by itself (quant.rs tests that); here the correction has to.
        let recipe = Recipe {
            min_elements: 0,
            weight_range: quantize_rs::RangeSearch::Minmax,
            calibration: Some(Calibration { bias_correction, ..calibration("calib.npy") }),
            ..Recipe::default()
        };
        let outcome = run(Model::load(&float).unwrap(), &recipe, dir.path()).unwrap();
        let corrected = outcome.calibration.as_ref().unwrap().bias_corrected;
        let f = Model::load(&float).unwrap();
        let samples = quantize_rs::load_for_model(&f, &dir.path().join("held_out.npy"), None, None).unwrap();
        let mut a = quantize_rs::Runner::for_model(&f, &[], "float");
        let mut b = quantize_rs::Runner::for_model(&outcome.model, &[], "quantized");
        let mut shift = [0.0f64; 8];
        for s in &samples {
            let (ya, yb) = (a.run_f32(s).unwrap(), b.run_f32(s).unwrap());
            for (k, (p, q)) in ya[0].iter().zip(&yb[0]).enumerate() {
                shift[k % 8] += (*q - *p) as f64 / samples.len() as f64;
            }
        }
        (corrected, shift.iter().map(|d| d.abs()).sum::<f64>() / 8.0)
    };
    let (n_on, with) = mean_error(true);
    let (n_off, without) = mean_error(false);
    assert_eq!((n_on, n_off), (1, 0));
    assert!(without > 0.02, "the uncorrected model has a real shift: {without}");
    assert!(with < 0.3 * without, "mean output shift {with} with correction vs {without} without");
}

/// PP-LCNet-style blocks as paddle2onnx writes them, at `opset` (Clip bounds are attributes
/// before 11, inputs after):
/// X -> Conv(3x3, pads 1) -> x*Clip(x+3,0,6)/6 -> Mul(per channel) -> Add(per channel)
///   -> Conv(3x3, group 2, no padding) -> x*(Clip(3+x,0,6)*(1/6)) -> Mul(per channel)
///   -> Add(per channel) -> Conv(3x3, pads 1) -> Relu -> BatchNormalization -> Conv(1x1) -> Y.
fn hard_swish_cnn(opset: i64) -> ModelProto {
    let clip = |x: &str, y: &str| {
        if opset < 11 {
            node("Clip", &[x], &[y]).float("min", 0.0).float("max", 6.0)
        } else {
            node("Clip", &[x, "zero", "six"], &[y])
        }
    };
    let around_one = |n, seed, k: f32| rand_f32(n, seed).iter().map(|x| 1.0 + k * x).collect::<Vec<_>>();
    let g = graph(
        "hswish",
        vec![
            node("Conv", &["X", "W1", "B1"], &["c1"]).ints("pads", &[1, 1, 1, 1]),
            node("Add", &["c1", "three"], &["a1"]),
            clip("a1", "k1"),
            node("Mul", &["c1", "k1"], &["m1"]),
            node("Div", &["m1", "six"], &["h1"]),
            node("Mul", &["S1", "h1"], &["s1"]),
            node("Add", &["s1", "T1"], &["t1"]),
            node("Conv", &["t1", "W2", "B2"], &["c2"]).int("group", 2),
            node("Add", &["three", "c2"], &["a2"]),
            clip("a2", "k2"),
            node("Mul", &["k2", "sixth"], &["d2"]),
            node("Mul", &["c2", "d2"], &["h2"]),
            node("Mul", &["h2", "S2"], &["s2"]),
            node("Add", &["s2", "T2"], &["t2"]),
            node("Conv", &["t2", "W3"], &["c3"]).ints("pads", &[1, 1, 1, 1]),
            node("Relu", &["c3"], &["r3"]),
            node("BatchNormalization", &["r3", "G", "Beta", "Mean", "Var"], &["b3"]),
            node("Conv", &["b3", "W4"], &["Y"]),
        ],
        vec![
            f32_tensor("W1", &[8, 3, 3, 3], &rand_f32(216, 1).iter().map(|x| x * 2.0).collect::<Vec<_>>()),
            f32_tensor("B1", &[8], &rand_f32(8, 2)),
            f32_tensor("S1", &[1, 8, 1, 1], &around_one(8, 3, 0.5)),
            f32_tensor("T1", &[8, 1, 1], &rand_f32(8, 4)),
            f32_tensor("W2", &[8, 4, 3, 3], &rand_f32(288, 5).iter().map(|x| x * 0.5).collect::<Vec<_>>()),
            f32_tensor("B2", &[8], &rand_f32(8, 6)),
            f32_tensor("S2", &[8, 1, 1], &around_one(8, 9, 0.5)),
            f32_tensor("T2", &[1, 8, 1, 1], &rand_f32(8, 7)),
            f32_tensor("W3", &[4, 8, 3, 3], &rand_f32(288, 8).iter().map(|x| x * 0.3).collect::<Vec<_>>()),
            f32_tensor("G", &[4], &around_one(4, 10, 0.3)),
            f32_tensor("Beta", &[4], &rand_f32(4, 11)),
            f32_tensor("Mean", &[4], &rand_f32(4, 12)),
            f32_tensor("Var", &[4], &around_one(4, 13, 0.5)),
            f32_tensor("W4", &[2, 4, 1, 1], &rand_f32(8, 14)),
            f32_tensor("three", &[], &[3.0]),
            f32_tensor("zero", &[], &[0.0]),
            f32_tensor("six", &[], &[6.0]),
            f32_tensor("sixth", &[], &[1.0 / 6.0]),
        ],
        vec![value_info("X", dtype::FLOAT, &[-1, 3, 12, 12])],
        vec![value_info("Y", dtype::FLOAT, &[-1, 2, 10, 10])],
    );
    model(g, opset)
}

/// The rewrites static quantization runs before calibrating, in the pipeline's order.
fn rewrite(m: &mut Model) -> (usize, usize) {
    let mut names = quantize_rs::onnx::graph::Names::of_graph(m.graph());
    let fused = quantize_rs::testing::fuse_hard_swish(m, &mut names);
    let folded = quantize_rs::testing::fold_affine_into_conv(m, &mut names);
    quantize_rs::testing::drop_unused(m.graph_mut());
    (fused, folded)
}

#[test]
fn hard_swish_chains_fuse_and_affine_ops_fold_into_the_next_conv_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for (opset, fused_op) in [(10, "HardSigmoid"), (13, "HardSigmoid"), (14, "HardSwish")] {
        let float = write(dir.path(), &format!("float{opset}.onnx"), &hard_swish_cnn(opset));
        let mut m = Model::load(&float).unwrap();
        // Folded: the first Mul and Add into the unpadded grouped 3x3 convolution (its bias
        // gains the shift summed over all taps), the batch norm into the 1x1 one, and the
        // second Mul into the padded convolution, which cannot take a shift (its zero padding
        // would become it): Mul(s) -> Add(t) becomes Add(t / s), and only that Add stays.
        assert_eq!(rewrite(&mut m), (2, 4), "opset {opset}");
        assert_eq!((count(&m, "Clip"), count(&m, "Div"), count(&m, fused_op)), (0, 0, 2), "opset {opset}");
        let muls = if fused_op == "HardSwish" { 0 } else { 2 };
        assert_eq!((count(&m, "Mul"), count(&m, "Add"), count(&m, "BatchNormalization")), (muls, 1, 0));
        let out = dir.path().join(format!("fused{opset}.onnx"));
        m.save(&out, &SaveOptions::default()).unwrap();
        assert_same_outputs(&float, &out, &Compare::samples(3), 1e-4);
    }
    let unchanged = |proto: ModelProto| {
        let mut m = Model { proto, path: None };
        rewrite(&mut m)
    };
    // Any other bound leaves a chain alone; so does a second reader of an intermediate tensor.
    let mut other_bound = hard_swish_cnn(13);
    let g = other_bound.graph.as_mut().unwrap();
    g.initializer.iter_mut().find(|t| t.name.as_deref() == Some("six")).unwrap().raw_data =
        Some(5.0f32.to_le_bytes().to_vec().into());
    assert_eq!(unchanged(other_bound).0, 0);
    let mut shared = hard_swish_cnn(13);
    shared.graph.as_mut().unwrap().output.push(value_info("k2", dtype::FLOAT, &[-1, 8, 10, 10]));
    assert_eq!(unchanged(shared).0, 1);
    // A constant the caller may feed (an initializer that is also a graph input) is not folded.
    let mut fed = hard_swish_cnn(13);
    fed.graph.as_mut().unwrap().input.push(value_info("S1", dtype::FLOAT, &[1, 8, 1, 1]));
    assert_eq!(unchanged(fed), (2, 3));
    // A per-channel constant that widens a one-channel input to the convolution's channels
    // cannot move into the weight.
    let widening = ModelBuilder::new(13)
        .input("X", dtype::FLOAT, &[-1, 1, 4, 4])
        .output("Y", dtype::FLOAT)
        .init_f32("S", &[1, 3, 1, 1], &[1.0, 2.0, 3.0])
        .init_f32("W", &[2, 3, 1, 1], &[1.0; 6])
        .node(node("Mul", &["X", "S"], &["s"]))
        .node(node("Conv", &["s", "W"], &["Y"]))
        .build();
    assert_eq!(unchanged(widening), (0, 0));
}

#[test]
fn calibration_runs_the_fused_hard_swish_model_and_ort_runs_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let float = write(dir.path(), "float.onnx", &hard_swish_cnn(13));
    write_npy(&dir.path().join("calib.npy"), &[8, 3, 12, 12], &rand_f32(8 * 432, 100));
    let held_out = dir.path().join("held_out.npy");
    write_npy(&held_out, &[4, 3, 12, 12], &rand_f32(4 * 432, 200));
    let recipe = Recipe {
        min_elements: 0,
        calibration: Some(calibration("calib.npy")),
        verify_data: Some("held_out.npy".into()),
        ..Recipe::default()
    };
    let outcome = run(Model::load(&float).unwrap(), &recipe, dir.path()).unwrap();
    assert_eq!((outcome.report.fused_hard_swish, outcome.report.folded_nodes), (2, 4));
    let m = &outcome.model;
    // Opset 13 is raised to 14 for the one-op HardSwish.
    assert_eq!((outcome.report.opset_before, outcome.report.opset_after), (13, 14));
    assert_eq!((count(m, "Clip"), count(m, "Div"), count(m, "HardSwish")), (0, 0, 2));
    assert_eq!(count(m, "Conv"), 4);
    let out = dir.path().join("q.onnx");
    m.save(&out, &SaveOptions::default()).unwrap();
    let r = ort_compare(&float, &out, &Compare::samples(4).inputs(&held_out));
    assert!(worst_snr(&r) > 25.0, "{r}");
    // `graph-rewrites = false` calibrates the graph as it is.
    let as_is = Recipe {
        calibration: Some(Calibration { graph_rewrites: false, ..calibration("calib.npy") }),
        ..recipe.clone()
    };
    let plain = run(Model::load(&float).unwrap(), &as_is, dir.path()).unwrap();
    assert_eq!((plain.report.fused_hard_swish, plain.report.folded_nodes, plain.report.opset_after), (0, 0, 13));
    assert_eq!((count(&plain.model, "Clip"), count(&plain.model, "HardSwish")), (2, 0));
    let out = dir.path().join("plain.onnx");
    plain.model.save(&out, &SaveOptions::default()).unwrap();
    let r = ort_compare(&float, &out, &Compare::samples(4).inputs(&held_out));
    assert!(worst_snr(&r) > 25.0, "{r}");
    // Weight-only quantization keeps the float graph's ops and opset.
    let weights_only = run(Model::load(&float).unwrap(), &Recipe { min_elements: 0, ..Recipe::default() }, dir.path());
    let w = weights_only.unwrap();
    assert_eq!((w.report.fused_hard_swish, w.report.folded_nodes, w.report.opset_after), (0, 0, 13));
    let kept = ["Clip", "Div", "Mul", "Add", "BatchNormalization"].map(|op| count(&w.model, op));
    assert_eq!(kept, [2, 1, 5, 4, 1]);
}

/// X[N,3,8,8] -> Conv(16, 1x1) -> Softmax(axis 1) -> Transpose(0,2,1,3) -> Softmax(axis -1)
/// -> Y; Z = Softmax(axis -3) of Relu(X). Ranks follow from X's declared shape.
fn softmax_model(opset: i64) -> ModelProto {
    ModelBuilder::new(opset)
        .input("X", dtype::FLOAT, &[-1, 3, 8, 8])
        .output("Y", dtype::FLOAT)
        .output("Z", dtype::FLOAT)
        .init_f32("W", &[16, 3, 1, 1], &rand_f32(48, 1).iter().map(|x| x * 3.0).collect::<Vec<_>>())
        .node(node("Conv", &["X", "W"], &["c"]))
        .node(node("Softmax", &["c"], &["s"]).int("axis", 1))
        .node(node("Transpose", &["s"], &["t"]).ints("perm", &[0, 2, 1, 3]))
        .node(node("Softmax", &["t"], &["Y"]).int("axis", -1))
        .node(node("Relu", &["X"], &["r"]))
        .node(node("Softmax", &["r"], &["Z"]).int("axis", -3))
        .build()
}

#[test]
fn softmax_over_a_middle_axis_becomes_elementwise_ops_with_the_same_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let decompose = |m: &mut Model| {
        let mut names = quantize_rs::onnx::graph::Names::of_graph(m.graph());
        quantize_rs::testing::decompose_softmax(m, &mut names)
    };
    // ReduceMax takes axes as an attribute before opset 18 and as an input from 18.
    for opset in [13, 18] {
        let float = write(dir.path(), &format!("float{opset}.onnx"), &softmax_model(opset));
        let mut m = Model::load(&float).unwrap();
        assert_eq!(decompose(&mut m), 2, "opset {opset}");
        // The last-axis softmax stays.
        assert_eq!((count(&m, "Softmax"), count(&m, "ReduceMax"), count(&m, "Exp")), (1, 2, 2));
        let out = dir.path().join(format!("decomposed{opset}.onnx"));
        m.save(&out, &SaveOptions::default()).unwrap();
        assert_same_outputs(&float, &out, &Compare::samples(3), 1e-6);
    }
    // Before opset 13 Softmax normalizes over all the axes from `axis` on: left alone.
    assert_eq!(decompose(&mut Model { proto: softmax_model(11), path: None }), 0);
    // So is a softmax whose input's rank nothing tells.
    let unknown =
        ModelBuilder::new(13).output("Y", dtype::FLOAT).node(node("Softmax", &["U"], &["Y"]).int("axis", 1)).build();
    let mut unknown = Model { proto: unknown, path: None };
    unknown.graph_mut().input.push(value_info_unshaped("U", dtype::FLOAT));
    assert_eq!(decompose(&mut unknown), 0);

    // Static quantization applies it; tract calibrates the result and ORT runs it.
    let float = dir.path().join("float13.onnx");
    write_npy(&dir.path().join("calib.npy"), &[4, 3, 8, 8], &rand_f32(4 * 192, 100));
    let recipe = Recipe { min_elements: 0, calibration: Some(calibration("calib.npy")), ..Recipe::default() };
    let outcome = run(Model::load(&float).unwrap(), &recipe, dir.path()).unwrap();
    assert_eq!(outcome.report.decomposed_softmax, 2);
    let out = dir.path().join("q.onnx");
    outcome.model.save(&out, &SaveOptions::default()).unwrap();
    let held_out = dir.path().join("held_out.npy");
    write_npy(&held_out, &[3, 3, 8, 8], &rand_f32(3 * 192, 200));
    let r = ort_compare(&float, &out, &Compare::samples(3).inputs(&held_out));
    assert!(worst_snr(&r) > 25.0, "{r}");
}

#[test]
fn a_model_tract_cannot_run_is_an_error_naming_the_op_and_what_to_do() {
    // X -> Conv -> an op of a custom domain tract does not know -> Y.
    let dir = tempfile::tempdir().unwrap();
    let m = ModelBuilder::new(13)
        .import("com.example", 1)
        .input("X", dtype::FLOAT, &[-1, 3, 16, 16])
        .output("Y", dtype::FLOAT)
        .init_f32("W", &[4, 3, 1, 1], &rand_f32(12, 1))
        .node(node("Conv", &["X", "W"], &["c"]))
        .node(node("Frobnicate", &["c"], &["Y"]).named("frob").domain("com.example"))
        .build();
    let float = write(dir.path(), "custom.onnx", &m);
    samples(dir.path(), "calib.npy", 2, 1);
    let recipe = Recipe { min_elements: 0, calibration: Some(calibration("calib.npy")), ..Recipe::default() };
    let e = run(Model::load(&float).unwrap(), &recipe, dir.path()).unwrap_err().to_string();
    assert!(e.contains("tract cannot run"), "{e}");
    assert!(e.contains("Frobnicate"), "the message names the op: {e}");
    assert!(e.contains("--op-types") && e.contains("weight-only"), "and says what to do: {e}");
}

#[test]
fn a_cancelled_job_stops_with_an_error_and_returns_no_model() {
    let dir = tempfile::tempdir().unwrap();
    let float = write(dir.path(), "float.onnx", &cnn());
    samples(dir.path(), "calib.npy", 16, 100);
    let recipe = Recipe { min_elements: 0, calibration: Some(calibration("calib.npy")), ..Recipe::default() };
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let opts = quantize_rs::RunOptions { cancel: Some(flag.clone()), ..Default::default() };
    let err = quantize_rs::run_with(Model::load(&float).unwrap(), &recipe, dir.path(), &opts).unwrap_err();
    assert!(matches!(err, quantize_rs::Error::Cancelled), "{err}");
    assert!(err.to_string().contains("nothing was written"), "{err}");
    // The same options with the flag down run the job to its end.
    flag.store(false, std::sync::atomic::Ordering::SeqCst);
    let outcome = quantize_rs::run_with(Model::load(&float).unwrap(), &recipe, dir.path(), &opts).unwrap();
    assert!(outcome.calibration.is_some_and(|c| !c.activations.is_empty()));
}

/// A matmul's float output `Y`, the input's shape (`shape`, int64, exact whatever the weights),
/// and with `scaled`, `Y` × 1000 cast to int64: an integer output the quantized weights change.
fn with_integer_outputs(scaled: bool) -> ModelProto {
    let mut nodes =
        vec![node("MatMul", &["X", "W"], &["Y"]).named("mm"), node("Shape", &["X"], &["shape"]).named("sh")];
    let mut outputs = vec![value_info("Y", dtype::FLOAT, &[4, 8]), value_info("shape", dtype::INT64, &[2])];
    if scaled {
        nodes.push(node("Mul", &["Y", "k"], &["Yk"]).named("mul"));
        nodes.push(node("Cast", &["Yk"], &["scaled"]).named("cast").int("to", dtype::INT64 as i64));
        outputs.push(value_info("scaled", dtype::INT64, &[4, 8]));
    }
    let g = graph(
        "ints",
        nodes,
        vec![f32_tensor("W", &[16, 8], &rand_f32(128, 3)), f32_tensor("k", &[], &[1000.0])],
        vec![value_info("X", dtype::FLOAT, &[4, 16])],
        outputs,
    );
    model(g, 13)
}

#[test]
fn the_figure_that_counts_is_the_worst_float_output_and_integer_outputs_must_be_exact() {
    let dir = tempfile::tempdir().unwrap();
    write_npy(&dir.path().join("held_out.npy"), &[3, 4, 16], &rand_f32(3 * 64, 11));
    let recipe = |min_snr_db| Recipe {
        min_elements: 0,
        verify_data: Some("held_out.npy".into()),
        min_snr_db,
        ..Recipe::default()
    };
    // An exact integer output is reported as such and does not lift the figure: the summary
    // SNR is exactly the float output's.
    let m = Model::load(write(dir.path(), "ints.onnx", &with_integer_outputs(false))).unwrap();
    let out = run(m, &recipe(Some(20.0)), dir.path()).unwrap();
    let v = out.verification.unwrap();
    assert!(v.exact);
    let kinds: Vec<_> = v.outputs.iter().map(|o| (o.name.as_str(), o.kind, o.mismatches)).collect();
    assert_eq!(kinds, [("Y", quantize_rs::OutputKind::Float, 0), ("shape", quantize_rs::OutputKind::Integer, 0)]);
    assert_eq!(v.snr_db, v.outputs[0].snr_db);
    assert!((25.0..60.0).contains(&v.snr_db), "{}", v.snr_db);

    // An integer output that changes fails the gate however good the float output is, and the
    // error names it.
    let m = Model::load(write(dir.path(), "scaled.onnx", &with_integer_outputs(true))).unwrap();
    let err = run(m, &recipe(Some(0.0)), dir.path()).unwrap_err().to_string();
    assert!(err.contains("integer output 'scaled' differs in"), "{err}");
    let m = Model::load(write(dir.path(), "scaled.onnx", &with_integer_outputs(true))).unwrap();
    let v = run(m, &recipe(None), dir.path()).unwrap().verification.unwrap();
    assert!(!v.exact && v.outputs[2].mismatches > 0);
    assert!(v.snr_db > 25.0, "the float figure stays the float output's: {}", v.snr_db);
}

/// x[1,16,64] → MatMul(W [64,32]) + b → y, and an attention-like product of two activations
/// (q = x·Wq, q·qᵀ → scores).
fn matmul_model() -> ModelProto {
    let w: Vec<f32> = rand_f32(64 * 32, 40).iter().map(|v| v * 0.2).collect();
    let wq: Vec<f32> = rand_f32(64 * 16, 41).iter().map(|v| v * 0.2).collect();
    ModelBuilder::new(17)
        .input("x", dtype::FLOAT, &[1, 16, 64])
        .output_shaped("y", dtype::FLOAT, &[1, 16, 32])
        .output_shaped("scores", dtype::FLOAT, &[1, 16, 16])
        .init_f32("W", &[64, 32], &w)
        .init_f32("b", &[32], &rand_f32(32, 42))
        .init_f32("Wq", &[64, 16], &wq)
        .node(node("MatMul", &["x", "W"], &["m"]))
        .node(node("Add", &["m", "b"], &["y"]))
        .node(node("MatMul", &["x", "Wq"], &["q"]))
        .node(node("Transpose", &["q"], &["qt"]).ints("perm", &[0, 2, 1]))
        .node(node("MatMul", &["q", "qt"], &["scores"]))
        .build()
}

#[test]
fn static_matrix_products_quantize_their_inputs_split_outlier_channels_and_keep_float_outputs() {
    // Channel 5 of x reaches 40x the others (as a transformer's activations do): one static
    // range for all of x would crush the other 63 channels unless channel 5 is split off.
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "float.onnx", &matmul_model());
    let samples = |n: usize, seed: u64| -> Vec<f32> {
        let mut v = rand_f32(n * 16 * 64, seed);
        v.iter_mut().enumerate().filter(|(i, _)| i % 64 == 5).for_each(|(_, x)| *x *= 40.0);
        v
    };
    write_npy(&dir.path().join("cal.npy"), &[8, 1, 16, 64], &samples(8, 43));
    write_npy(&dir.path().join("verify.npy"), &[1, 16, 64], &samples(1, 44));
    let recipe = |rewrites: bool| Recipe {
        calibration: Some(Calibration { graph_rewrites: rewrites, ..calibration("cal.npy") }),
        verify_data: Some("verify.npy".into()),
        ..Recipe::default()
    };
    let plain = run(Model::load(&src).unwrap(), &recipe(false), dir.path()).unwrap();
    let split = run(Model::load(&src).unwrap(), &recipe(true), dir.path()).unwrap();
    assert!(plain.report.outliers.is_none());
    let s = split.report.outliers.clone().expect("outlier split");
    // x feeds two products (W and Wq), each split on the same channel.
    assert_eq!((s.products, s.inputs, s.channels), (2, 1, 1));
    for o in [&plain, &split] {
        let g = o.model.graph();
        let quantized: Vec<&str> = g
            .node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("QuantizeLinear"))
            .filter_map(|n| n.input.first().map(String::as_str))
            .collect();
        // The products' outputs stay float (MatMulIntegerToFloat in ONNX Runtime), and the
        // product of two activations is not quantized at all.
        for t in ["m", "q", "qt", "scores"] {
            assert!(!quantized.contains(&t), "{t} quantized: {quantized:?}");
        }
        assert!(!quantized.is_empty());
    }
    assert_eq!(count(&split.model, "Gather"), 1, "the outlier channels gathered once for both side products");
    assert_eq!(count(&split.model, "MatMul"), 5, "three products and two float side products");
    let (snr_plain, snr_split) = (plain.verification.unwrap().snr_db, split.verification.unwrap().snr_db);
    assert!(snr_split > snr_plain + 10.0, "split {snr_split:.2} dB vs plain {snr_plain:.2} dB");
    let dst = dir.path().join("split.onnx");
    split.model.save(&dst, &SaveOptions::default()).unwrap();
    let r = ort_compare(&src, &dst, &Compare::samples(1).inputs(&dir.path().join("verify.npy")));
    assert!((worst_snr(&r) - snr_split).abs() < 1.5, "ORT {} vs tract {snr_split}", worst_snr(&r));
}

/// X[N,8,10,10] -> Conv A (1x1, 16) -> Relu -> depthwise Conv B (3x3, padded) -> PRelu (per
/// channel) -> Conv C (1x1, group 2) -> LeakyRelu -> Conv D (1x1) -> Clip(0, 6) -> Conv E (1x1)
/// -> Y. Channel c of A is scaled by 10^((c - 8) / 4) and B's weights for it by the inverse: the
/// same function as the unscaled net (Relu commutes with a positive scale), with channel ranges
/// apart by eight orders of magnitude, as a folded batch norm can leave them.
fn scaled_pair_net() -> ModelProto {
    let k = |c: usize| 10f32.powf((c as f32 - 8.0) / 4.0);
    let wa: Vec<f32> = rand_f32(16 * 8, 61).iter().enumerate().map(|(i, x)| x * k(i / 8)).collect();
    let ba: Vec<f32> = rand_f32(16, 62).iter().enumerate().map(|(c, x)| (x * 0.1 + 0.05) * k(c)).collect();
    let wb: Vec<f32> = rand_f32(16 * 9, 63).iter().enumerate().map(|(i, x)| x / k(i / 9)).collect();
    let g = graph(
        "scaled_pairs",
        vec![
            node("Conv", &["X", "WA", "BA"], &["a"]).named("A"),
            node("Relu", &["a"], &["ra"]).named("relu"),
            node("Conv", &["ra", "WB"], &["b"]).named("B").int("group", 16).ints("pads", &[1, 1, 1, 1]),
            node("PRelu", &["b", "slope"], &["pb"]).named("prelu"),
            node("Conv", &["pb", "WC", "BC"], &["c"]).named("C").int("group", 2),
            node("LeakyRelu", &["c"], &["lc"]).named("leaky").float("alpha", 0.1),
            node("Conv", &["lc", "WD"], &["d"]).named("D"),
            node("Clip", &["d", "zero", "six"], &["cd"]).named("clip"),
            node("Conv", &["cd", "WE"], &["Y"]).named("E"),
        ],
        vec![
            f32_tensor("WA", &[16, 8, 1, 1], &wa),
            f32_tensor("BA", &[16], &ba),
            f32_tensor("WB", &[16, 1, 3, 3], &wb),
            f32_tensor("slope", &[16, 1, 1], &rand_f32(16, 64).iter().map(|x| x.abs() * 0.3).collect::<Vec<_>>()),
            f32_tensor("WC", &[16, 8, 1, 1], &rand_f32(128, 65)),
            f32_tensor("BC", &[16], &rand_f32(16, 66)),
            f32_tensor("WD", &[16, 16, 1, 1], &rand_f32(256, 67)),
            f32_tensor("WE", &[8, 16, 1, 1], &rand_f32(128, 68)),
            f32_tensor("zero", &[], &[0.0]),
            f32_tensor("six", &[], &[6.0]),
        ],
        vec![value_info("X", dtype::FLOAT, &[-1, 8, 10, 10])],
        vec![value_info("Y", dtype::FLOAT, &[-1, 8, 10, 10])],
    );
    model(g, 13)
}

/// Largest magnitude of each output channel of a weight `[cout, ...]`.
fn channel_ranges(t: &quantize_rs::onnx::proto::TensorProto) -> Vec<f32> {
    let v = quantize_rs::onnx::tensor::finite_floats(t).unwrap();
    let per = v.len() / t.dims[0] as usize;
    v.chunks(per).map(|c| c.iter().fold(0.0f32, |m, x| m.max(x.abs()))).collect()
}

#[test]
fn equalization_balances_consecutive_convolutions_exactly_and_only_through_scale_free_links() {
    let dir = tempfile::tempdir().unwrap();
    let float = write(dir.path(), "float.onnx", &scaled_pair_net());
    let equalize = |proto: ModelProto| {
        let mut m = Model { proto, path: None };
        let mut names = quantize_rs::onnx::graph::Names::of_graph(m.graph());
        let pairs = quantize_rs::testing::equalize_conv_pairs(&mut m, &mut names);
        (m, pairs)
    };
    // A-B through Relu, B-C through PRelu, C-D through LeakyRelu; not D-E through Clip (a bound
    // does not commute with a scale).
    let (m, pairs) = equalize(scaled_pair_net());
    assert_eq!(pairs, 3);
    let out = dir.path().join("equalized.onnx");
    m.save(&out, &SaveOptions::default()).unwrap();
    assert_same_outputs(&float, &out, &Compare::samples(3), 1e-3);
    let consts = quantize_rs::onnx::graph::constants(m.graph());
    let weight_of = |conv: &str| {
        let n = m.graph().node.iter().find(|n| n.name.as_deref() == Some(conv)).unwrap();
        channel_ranges(consts[n.input[1].as_str()])
    };
    let spread = |r: &[f32]| r.iter().fold(0.0f32, |m, &x| m.max(x)) / r.iter().fold(f32::MAX, |m, &x| m.min(x));
    let before = channel_ranges(&scaled_pair_net().graph.unwrap().initializer[0]);
    assert!(spread(&before) > 1e3, "{before:?}");
    let (a, e) = (weight_of("A"), weight_of("E"));
    assert!(spread(&a) < 10.0, "A's channel ranges after equalization: {a:?}");
    assert_eq!(m.graph().node.iter().find(|n| n.name.as_deref() == Some("E")).unwrap().input[1], "WE", "E untouched");
    assert_eq!(e.len(), 8);
    // A second reader of the tensor between two convolutions (here: a graph output) keeps the pair apart.
    let mut shared = scaled_pair_net();
    shared.graph.as_mut().unwrap().output.push(value_info("ra", dtype::FLOAT, &[-1, 16, 10, 10]));
    assert_eq!(equalize(shared).1, 2);
}

#[test]
fn equalization_recovers_the_static_accuracy_that_scaled_channels_lose() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "float.onnx", &scaled_pair_net());
    write_npy(&dir.path().join("cal.npy"), &[16, 1, 8, 10, 10], &rand_f32(16 * 800, 71));
    write_npy(&dir.path().join("verify.npy"), &[4, 1, 8, 10, 10], &rand_f32(4 * 800, 72));
    // The same four samples as one batch, for ONNX Runtime.
    write_npy(&dir.path().join("batch.npy"), &[4, 8, 10, 10], &rand_f32(4 * 800, 72));
    let recipe = |equalize: bool| Recipe {
        calibration: Some(Calibration { equalize, ..calibration("cal.npy") }),
        verify_data: Some("verify.npy".into()),
        ..Recipe::default()
    };
    let plain = run(Model::load(&src).unwrap(), &recipe(false), dir.path()).unwrap();
    let equalized = run(Model::load(&src).unwrap(), &recipe(true), dir.path()).unwrap();
    assert_eq!((plain.report.equalized_pairs, equalized.report.equalized_pairs), (0, 3));
    let (p, e) = (plain.verification.unwrap().snr_db, equalized.verification.unwrap().snr_db);
    eprintln!("static SNR: plain {p:.2} dB, equalized {e:.2} dB");
    assert!(e > p + 10.0, "equalized {e:.2} dB vs plain {p:.2} dB");
    let dst = dir.path().join("equalized.onnx");
    equalized.model.save(&dst, &SaveOptions::default()).unwrap();
    let r = ort_compare(&src, &dst, &Compare::samples(1).inputs(&dir.path().join("batch.npy")));
    assert!(worst_snr(&r) > p + 10.0, "ORT {} dB vs plain {p:.2} dB", worst_snr(&r));
}
