//! Weight-only quantization with calibration data: the model stays weight-only, loads and runs
//! in tract, and is closer to the float model on held-out samples than without data; bias
//! correction removes the mean shift quantized weights cause.

mod support;

use quantize_rs::onnx::proto::{ModelProto, dtype};
use quantize_rs::{Calibration, Model, RangeSearch, Recipe, Runner, WeightRounding, run};
use support::*;

/// Smooth, correlated "images": a few low-frequency waves per channel plus an offset, so that
/// neighbouring pixels and channels move together as in real inputs.
fn images(n: usize, seed: u64, offset: f32) -> Vec<f32> {
    let r = rand_f32(n * 8, seed);
    let mut out = Vec::with_capacity(n * 3 * 16 * 16);
    for s in 0..n {
        let p = &r[s * 8..s * 8 + 8];
        for c in 0..3 {
            for y in 0..16 {
                for x in 0..16 {
                    let (fy, fx) = (y as f32 / 16.0, x as f32 / 16.0);
                    let v = p[0] * (6.0 * fy + p[1] * 3.0).sin()
                        + p[2] * (5.0 * fx + p[3] * 3.0).cos()
                        + p[4] * (4.0 * (fx + fy) + c as f32).sin()
                        + 0.3 * p[5 + c]
                        + offset;
                    out.push(v);
                }
            }
        }
    }
    out
}

fn scaled(n: usize, seed: u64, k: f32) -> Vec<f32> {
    rand_f32(n, seed).iter().map(|x| x * k).collect()
}

/// X[N,3,16,16] -> Conv(16, 3x3, pad 1) -> Relu -> depthwise Conv(16, 3x3, stride 2)
/// -> ConvTranspose(8, 2x2, stride 2) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(24)
/// -> MatMul(12): every op data-aware rounding handles.
fn net() -> ModelProto {
    let g = graph(
        "net",
        vec![
            node("Conv", &["X", "W1", "B1"], &["c1"]).ints("pads", &[1, 1, 1, 1]),
            node("Relu", &["c1"], &["r1"]),
            node("Conv", &["r1", "W2", "B2"], &["c2"])
                .int("group", 16)
                .ints("strides", &[2, 2])
                .ints("pads", &[1, 1, 1, 1]),
            node("ConvTranspose", &["c2", "W3", "B3"], &["c3"]).ints("strides", &[2, 2]),
            node("Relu", &["c3"], &["r3"]),
            node("GlobalAveragePool", &["r3"], &["p"]),
            node("Flatten", &["p"], &["f"]),
            node("Gemm", &["f", "W4", "B4"], &["g"]).int("transB", 1),
            node("MatMul", &["g", "W5"], &["Y"]),
        ],
        vec![
            f32_tensor("W1", &[16, 3, 3, 3], &scaled(432, 1, 0.4)),
            f32_tensor("B1", &[16], &scaled(16, 2, 0.1)),
            f32_tensor("W2", &[16, 1, 3, 3], &scaled(144, 3, 0.6)),
            f32_tensor("B2", &[16], &scaled(16, 4, 0.1)),
            f32_tensor("W3", &[16, 8, 2, 2], &scaled(512, 5, 0.4)),
            f32_tensor("B3", &[8], &scaled(8, 6, 0.1)),
            f32_tensor("W4", &[24, 8], &scaled(192, 7, 1.0)),
            f32_tensor("B4", &[24], &scaled(24, 8, 0.1)),
            f32_tensor("W5", &[24, 12], &scaled(288, 9, 0.5)),
        ],
        vec![value_info("X", dtype::FLOAT, &[-1, 3, 16, 16])],
        vec![value_info("Y", dtype::FLOAT, &[-1, 12])],
    );
    model(g, 13)
}

/// Output SNR (dB) of `candidate` against `reference` on the samples of `data`, with tract.
fn snr_db(reference: &Model, candidate: &Model, samples: &[quantize_rs::Sample]) -> f64 {
    let mut a = Runner::for_model(reference, &[], "float");
    let mut b = Runner::for_model(candidate, &[], "quantized");
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for s in samples {
        for (x, y) in a.run_f32(s).unwrap().iter().zip(b.run_f32(s).unwrap()) {
            for (p, q) in x.iter().zip(&y) {
                signal += (*p as f64).powi(2);
                noise += (*p as f64 - *q as f64).powi(2);
            }
        }
    }
    10.0 * (signal / noise).log10()
}

fn recipe(bits: u8, data: Option<Calibration>) -> Recipe {
    Recipe { bits, min_elements: 0, calibration: data, ..Recipe::default() }
}

fn weight_data(rounding: WeightRounding, bias_correction: bool) -> Calibration {
    Calibration { weight_only: true, weight_rounding: rounding, bias_correction, ..Calibration::new("calib.npy") }
}

#[test]
fn data_aware_weights_beat_round_to_nearest_on_held_out_samples() {
    let dir = tempfile::tempdir().unwrap();
    let float_path = write(dir.path(), "float.onnx", &net());
    write_npy(&dir.path().join("calib.npy"), &[32, 3, 16, 16], &images(32, 100, 0.0));
    write_npy(&dir.path().join("held_out.npy"), &[8, 3, 16, 16], &images(8, 200, 0.0));
    let float = Model::load(&float_path).unwrap();
    let held_out = quantize_rs::load_for_model(&float, &dir.path().join("held_out.npy"), None, None).unwrap();
    for (bits, block) in [(4u8, None), (4, Some(8)), (8, None)] {
        let with = |data: Option<Calibration>| {
            let r = Recipe { block_size: block, ..recipe(bits, data) };
            run(float.clone(), &r, dir.path()).unwrap()
        };
        let plain = with(None);
        let aware = with(Some(weight_data(WeightRounding::Gptq, true)));
        let report = aware.report.data_aware.as_ref().expect("a data-aware report");
        assert_eq!(report.samples, 32);
        assert_eq!(report.rounded, 5, "every weight layer was rounded on its inputs: {report:?}");
        assert!(report.output_error_db < -1.0, "{report:?}");
        assert!(report.bias_corrected >= 3, "the Conv and Gemm biases: {report:?}");
        // Still weight-only: no QuantizeLinear, every weight behind a DequantizeLinear.
        let ops: Vec<&str> = aware.model.graph().node.iter().filter_map(|n| n.op_type.as_deref()).collect();
        assert!(!ops.contains(&"QuantizeLinear"));
        assert_eq!(ops.iter().filter(|o| **o == "DequantizeLinear").count(), 5);
        let (before, after) = (snr_db(&float, &plain.model, &held_out), snr_db(&float, &aware.model, &held_out));
        assert!(after > before + 1.0, "{bits} bits, block {block:?}: {after:.2} dB with data vs {before:.2} without");
    }
}

#[test]
fn bias_correction_removes_the_mean_shift_of_quantized_weights() {
    // Inputs far from zero: any error in a weight row's sum shifts its output by the input mean.
    let dir = tempfile::tempdir().unwrap();
    let float_path = write(dir.path(), "float.onnx", &net());
    write_npy(&dir.path().join("calib.npy"), &[16, 3, 16, 16], &images(16, 300, 4.0));
    let float = Model::load(&float_path).unwrap();
    let samples = quantize_rs::load_for_model(&float, &dir.path().join("calib.npy"), None, None).unwrap();
    // The first Conv's output: its bias absorbs exactly Σ (W_q − W)·E[x] per channel.
    let first_conv = |m: &Model| {
        let mut r = Runner::for_model(m, &["c1".to_string()], "model");
        let mut sums = [0.0f64; 16];
        for s in &samples {
            let out = r.run_f32(s).unwrap();
            for (i, v) in out[1].iter().enumerate() {
                sums[i / 256] += *v as f64;
            }
        }
        sums.iter().map(|s| s / (256 * samples.len()) as f64).collect::<Vec<f64>>()
    };
    let reference = first_conv(&float);
    let shift = |bias_correction: bool| {
        // Min-max ranges: the default range search also rounds to keep each channel's mean,
        // which leaves less of a shift to correct.
        let r = Recipe {
            per_channel: false,
            weight_range: RangeSearch::Minmax,
            ..recipe(4, Some(weight_data(WeightRounding::Nearest, bias_correction)))
        };
        let m = run(float.clone(), &r, dir.path()).unwrap().model;
        first_conv(&m).iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
    };
    let (uncorrected, corrected) = (shift(false), shift(true));
    assert!(uncorrected > 0.05, "per-tensor int4 weights shift the mean: {uncorrected}");
    // Not to zero: the correction uses each input channel's mean, while the padded border taps
    // read zeros (a tenth of the taps of a 3x3 kernel over 16x16 with pads 1).
    assert!(corrected < uncorrected / 8.0, "{corrected} vs {uncorrected}");
}

#[test]
fn data_aware_weights_are_the_same_bytes_on_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let float = Model::load(write(dir.path(), "float.onnx", &net())).unwrap();
    write_npy(&dir.path().join("calib.npy"), &[12, 3, 16, 16], &images(12, 400, 0.5));
    let r = Recipe { block_size: Some(8), ..recipe(4, Some(weight_data(WeightRounding::Gptq, true))) };
    let bytes = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| run(float.clone(), &r, dir.path()).unwrap().model.to_bytes())
    };
    assert_eq!(bytes(1), bytes(3));
}

#[test]
fn data_aware_weights_take_asymmetric_scales_unless_symmetric_ones_are_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let float = Model::load(write(dir.path(), "float.onnx", &net())).unwrap();
    write_npy(&dir.path().join("calib.npy"), &[12, 3, 16, 16], &images(12, 500, 0.5));
    let quantized = |symmetric: Option<bool>| {
        let r = Recipe { symmetric, ..recipe(8, Some(weight_data(WeightRounding::Gptq, false))) };
        run(float.clone(), &r, dir.path()).unwrap().model
    };
    // DequantizeLinear nodes with a zero point input, and all of them.
    let zero_points = |m: &Model| {
        let dq: Vec<usize> = m
            .graph()
            .node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("DequantizeLinear"))
            .map(|n| n.input.iter().filter(|i| !i.is_empty()).count())
            .collect();
        (dq.iter().filter(|&&k| k == 3).count(), dq.len())
    };
    // Unset: exactly what asking for asymmetric scales gives (without data, each scale would
    // choose, and some of these zero-centred channels would be symmetric).
    assert!(quantized(None).to_bytes() == quantized(Some(false)).to_bytes(), "GPTQ rounds on asymmetric scales");
    let plain = run(float.clone(), &recipe(8, None), dir.path()).unwrap().model;
    let asymmetric =
        run(float.clone(), &Recipe { symmetric: Some(false), ..recipe(8, None) }, dir.path()).unwrap().model;
    assert!(plain.to_bytes() != asymmetric.to_bytes(), "without data the scales choose");
    assert_eq!(zero_points(&quantized(Some(true))), (0, 5), "symmetric when asked");
}
