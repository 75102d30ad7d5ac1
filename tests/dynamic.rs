//! Dynamic quantization (`dynamic = true`): matrix products with constant weights run as
//! DynamicQuantizeLinear + MatMulInteger in ONNX Runtime and tract, close to the float model;
//! products of two activations stay float; the recipe refuses what cannot be dynamic.

mod support;

use quantize_rs::onnx::proto::{ModelProto, dtype};
use quantize_rs::{Calibration, Model, Recipe, run};
use support::*;

/// x[1,8,64] -> MatMul(W1 [64,128]) + b1 -> Relu -> Reshape [8,128] -> Gemm(W2 [32,128], transB,
/// alpha 0.5, beta 2) -> y; and an attention-like product: q = x·Wq, q·qᵀ -> scores.
fn model() -> ModelProto {
    let w1: Vec<f32> = rand_f32(64 * 128, 1).iter().map(|v| v * 0.1).collect();
    let w2: Vec<f32> = rand_f32(32 * 128, 2).iter().map(|v| v * 0.1).collect();
    let wq: Vec<f32> = rand_f32(64 * 16, 3).iter().map(|v| v * 0.2).collect();
    let gemm = node("Gemm", &["r2", "W2", "b2"], &["y"]).int("transB", 1).float("alpha", 0.5).float("beta", 2.0);
    let tr = node("Transpose", &["q"], &["qt"]).ints("perm", &[0, 2, 1]);
    ModelBuilder::new(17)
        .input("x", dtype::FLOAT, &[1, 8, 64])
        .output_shaped("y", dtype::FLOAT, &[8, 32])
        .output_shaped("scores", dtype::FLOAT, &[1, 8, 8])
        .init_f32("W1", &[64, 128], &w1)
        .init_f32("b1", &[128], &rand_f32(128, 4))
        .init_f32("W2", &[32, 128], &w2)
        .init_f32("b2", &[32], &rand_f32(32, 5))
        .init_f32("Wq", &[64, 16], &wq)
        .init_i64("shape", &[2], &[8, 128])
        .node(node("MatMul", &["x", "W1"], &["m1"]))
        .node(node("Add", &["m1", "b1"], &["a1"]))
        .node(node("Relu", &["a1"], &["r1"]))
        .node(node("Reshape", &["r1", "shape"], &["r2"]))
        .node(gemm)
        .node(node("MatMul", &["x", "Wq"], &["q"]))
        .node(tr)
        .node(node("MatMul", &["q", "qt"], &["scores"]))
        .build()
}

fn from_proto(m: ModelProto) -> Model {
    Model::from_bytes(prost::Message::encode_to_vec(&m), None).unwrap()
}

fn count(m: &ModelProto, op: &str) -> usize {
    all_nodes(m).iter().filter(|n| n.op_type.as_deref() == Some(op)).count()
}

#[test]
fn matrix_products_with_weights_run_on_integers_in_onnx_runtime_and_tract() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "float.onnx", &model());
    // One held-out sample, which both runtimes read.
    write_npy(&dir.path().join("verify.npy"), &[1, 8, 64], &rand_f32(8 * 64, 9));
    let recipe = Recipe { dynamic: true, verify_data: Some(dir.path().join("verify.npy")), ..Recipe::default() };
    let out = run(Model::load(&src).unwrap(), &recipe, dir.path()).unwrap();
    let m = &out.model.proto;
    // Three products have constant weights; the score product of two activations stays float.
    assert_eq!(count(m, "MatMulInteger"), 3);
    assert_eq!(count(m, "DynamicQuantizeLinear"), 3);
    assert_eq!(count(m, "MatMul"), 1);
    assert_eq!(count(m, "Gemm"), 0);
    assert_eq!(count(m, "DequantizeLinear"), 0, "every quantized weight is read by an integer product");
    let d = out.report.dynamic.as_ref().expect("dynamic report");
    assert_eq!((d.integer_nodes, d.left.len()), (3, 0));
    // Weights are symmetric int8 (MatMulInteger takes no weight zero point here).
    for q in &out.report.quantized {
        assert!(q.symmetric, "{}", q.name);
        assert_eq!(q.spec.qtype, quantize_rs::QType::Int8, "{}", q.name);
    }
    // tract ran both models on the held-out samples.
    let v = out.verification.as_ref().expect("verification");
    assert!(v.snr_db > 35.0, "tract: worst output {:.2} dB", v.snr_db);
    let dst = dir.path().join("dynamic.onnx");
    out.model.save(&dst, &Default::default()).unwrap();
    let r = ort_compare(&src, &dst, &Compare::samples(1).inputs(&dir.path().join("verify.npy")));
    assert!(worst_snr(&r) > 35.0, "ONNX Runtime: {r}");
    // Within 1.5 dB of each other: the two runtimes quantize the inputs the same way.
    assert!((worst_snr(&r) - v.snr_db).abs() < 1.5, "ORT {} vs tract {}", worst_snr(&r), v.snr_db);
}

#[test]
fn products_reading_one_input_each_quantize_it_so_onnx_runtime_fuses_them() {
    // Two products of the same input: each gets its own DynamicQuantizeLinear, the pattern ONNX
    // Runtime fuses into one DynamicQuantizeMatMul kernel per product.
    let mut b = ModelBuilder::new(17).input("x", dtype::FLOAT, &[4, 64]);
    for (i, name) in ["a", "b"].iter().enumerate() {
        let w = format!("W{name}");
        b = b.init_f32(&w, &[64, 32], &rand_f32(64 * 32, 20 + i as u64)).node(node("MatMul", &["x", &w], &[name]));
        b = b.output_shaped(name, dtype::FLOAT, &[4, 32]);
    }
    let out =
        run(from_proto(b.build()), &Recipe { dynamic: true, ..Recipe::default() }, std::path::Path::new(".")).unwrap();
    assert_eq!(count(&out.model.proto, "DynamicQuantizeLinear"), 2);
    assert_eq!(count(&out.model.proto, "MatMulInteger"), 2);
}

#[test]
fn the_recipe_refuses_what_cannot_run_dynamically() {
    let m = || from_proto(model());
    let here = std::path::Path::new(".");
    for (recipe, words) in [
        (Recipe { dynamic: true, bits: 4, ..Recipe::default() }, "bits"),
        (Recipe { dynamic: true, block_size: Some(32), ..Recipe::default() }, "block-size"),
        (Recipe { dynamic: true, unsigned: true, ..Recipe::default() }, "unsigned"),
        (
            Recipe { dynamic: true, calibration: Some(Calibration::new("cal.npy")), ..Recipe::default() },
            "static calibration",
        ),
    ] {
        let e = run(m(), &recipe, here).unwrap_err().to_string();
        assert!(e.contains("dynamic") && e.contains(words), "{e}");
    }
}

#[test]
fn with_samples_outlier_input_channels_go_to_a_small_float_product() {
    // x[1,16,64] whose channel 5 reaches 40x the others (as a transformer's activations do):
    // one scale for all of x crushes the other 63 channels unless channel 5 is split off.
    let dir = tempfile::tempdir().unwrap();
    let m = ModelBuilder::new(17)
        .input("x", dtype::FLOAT, &[1, 16, 64])
        .output_shaped("y", dtype::FLOAT, &[1, 16, 32])
        .init_f32("W", &[64, 32], &rand_f32(64 * 32, 30))
        .node(node("MatMul", &["x", "W"], &["y"]))
        .build();
    let src = write(dir.path(), "float.onnx", &m);
    let samples = |n: usize, seed: u64| -> Vec<f32> {
        let mut v = rand_f32(n * 16 * 64, seed);
        for (i, x) in v.iter_mut().enumerate() {
            if i % 64 == 5 {
                *x *= 40.0;
            }
        }
        v
    };
    write_npy(&dir.path().join("cal.npy"), &[8, 1, 16, 64], &samples(8, 31));
    write_npy(&dir.path().join("verify.npy"), &[1, 16, 64], &samples(1, 32));
    let plain = Recipe { dynamic: true, verify_data: Some(dir.path().join("verify.npy")), ..Recipe::default() };
    let mut cal = Calibration::new(dir.path().join("cal.npy"));
    cal.weight_only = true;
    let with_data = Recipe { calibration: Some(cal), ..plain.clone() };
    let a = run(Model::load(&src).unwrap(), &plain, dir.path()).unwrap();
    let b = run(Model::load(&src).unwrap(), &with_data, dir.path()).unwrap();
    let split = b.report.outliers.clone().expect("outlier split");
    assert_eq!((split.products, split.inputs, split.channels), (1, 1, 1));
    // The side product's weight stays float; the main product still runs on integers.
    assert_eq!(count(&b.model.proto, "MatMulInteger"), 1);
    assert_eq!(count(&b.model.proto, "MatMul"), 1);
    let (snr_a, snr_b) = (a.verification.unwrap().snr_db, b.verification.unwrap().snr_db);
    assert!(snr_b > snr_a + 10.0, "split {snr_b:.2} dB vs plain {snr_a:.2} dB");
    let dst = dir.path().join("split.onnx");
    b.model.save(&dst, &Default::default()).unwrap();
    let r = ort_compare(&src, &dst, &Compare::samples(1).inputs(&dir.path().join("verify.npy")));
    assert!((worst_snr(&r) - snr_b).abs() < 1.5, "ORT {} vs tract {snr_b}", worst_snr(&r));
}

#[test]
fn without_samples_a_token_model_is_probed_on_random_ids_and_its_outlier_channels_split() {
    // ids[1,?] -> Gather(table [500, 64], channel 7 at 40x) -> MatMul(W [64, 32]) -> y: the
    // outlier channel comes from the table, whatever the ids, as a transformer's do.
    let dir = tempfile::tempdir().unwrap();
    let mut table = rand_f32(500 * 64, 50);
    table.iter_mut().enumerate().filter(|(i, _)| i % 64 == 7).for_each(|(_, v)| *v *= 40.0);
    let m = ModelBuilder::new(17)
        .input("ids", dtype::INT64, &[1, 16])
        .output_shaped("y", dtype::FLOAT, &[1, 16, 32])
        .init_f32("table", &[500, 64], &table)
        .init_f32("W", &[64, 32], &rand_f32(64 * 32, 51))
        .node(node("Gather", &["table", "ids"], &["e"]))
        .node(node("MatMul", &["e", "W"], &["y"]))
        .build();
    let src = write(dir.path(), "tokens.onnx", &m);
    let out = run(Model::load(&src).unwrap(), &Recipe { dynamic: true, ..Recipe::default() }, dir.path()).unwrap();
    let split = out.report.outliers.clone().expect("probed split");
    assert!(split.probed);
    assert_eq!((split.products, split.inputs, split.channels), (1, 1, 1));
    let dst = dir.path().join("dyn.onnx");
    out.model.save(&dst, &Default::default()).unwrap();
    // ids over the whole table: the split keeps channel 7 exact and the rest on a fine scale.
    let r = ort_compare(&src, &dst, &Compare { int_high: 500, ..Compare::samples(4) });
    assert!(worst_snr(&r) > 30.0, "{r}");
    // A model with a float input is not a token model: no probe, as before.
    let float_in = run(
        Model::load(write(dir.path(), "f.onnx", &model())).unwrap(),
        &Recipe { dynamic: true, ..Recipe::default() },
        dir.path(),
    )
    .unwrap();
    assert!(float_in.report.outliers.is_none());
}
