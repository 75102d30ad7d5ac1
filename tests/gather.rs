//! Quantized tables read by Gather gather their integer rows and dequantize only those: the
//! same values as dequantizing the whole table first, in ONNX Runtime and tract.

mod support;

use quantize_rs::onnx::proto::{ModelProto, dtype};
use quantize_rs::{Model, Recipe, run};
use support::*;

/// ids[2,5] (int64) -> Gather(table [200, 24]) -> y[2,5,24]
fn model() -> ModelProto {
    ModelBuilder::new(17)
        .input("ids", dtype::INT64, &[2, 5])
        .output_shaped("y", dtype::FLOAT, &[2, 5, 24])
        .init_f32("table", &[200, 24], &rand_f32(200 * 24, 40))
        .node(node("Gather", &["table", "ids"], &["y"]))
        .build()
}

fn ops(m: &ModelProto) -> Vec<String> {
    all_nodes(m).iter().map(|n| n.op_type.clone().unwrap_or_default()).collect()
}

#[test]
fn gathered_rows_match_the_dequantized_table_per_row_and_per_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "float.onnx", &model());
    for (label, recipe) in [
        ("per-row asymmetric", Recipe { symmetric: Some(false), ..Recipe::default() }),
        ("per-row symmetric", Recipe { symmetric: Some(true), ..Recipe::default() }),
        ("per-tensor", Recipe { per_channel: false, ..Recipe::default() }),
    ] {
        let out = run(Model::load(&src).unwrap(), &recipe, dir.path()).unwrap();
        assert_eq!(out.report.gathered_tables, 1, "{label}");
        let ops = ops(&out.model.proto);
        // The Gather reads the integer table; no DequantizeLinear of the whole table is left.
        assert!(!ops.contains(&"DequantizeLinear".to_string()) || !recipe.per_channel, "{label}: {ops:?}");
        let gathers = ops.iter().filter(|o| *o == "Gather").count();
        // Rows, then scales (and zero points) per row; one Gather and a DequantizeLinear per tensor.
        let expected = match (recipe.per_channel, recipe.symmetric) {
            (false, _) => 1,
            (true, Some(true)) => 2,
            (true, _) => 3,
        };
        assert_eq!(gathers, expected, "{label}: {ops:?}");
        let dst = dir.path().join(format!("{}.onnx", label.replace(' ', "-")));
        out.model.save(&dst, &Default::default()).unwrap();
        // The weight's own quantization error only: ids from the whole table.
        let r = ort_compare(&src, &dst, &Compare { int_high: 200, ..Compare::samples(4) });
        assert!(worst_snr(&r) > 35.0, "{label}: {r}");
        // tract runs it too, with the same values as ONNX Runtime.
        let v = quantize_rs::validate(&Model::load(&src).unwrap(), &out.model, &Default::default()).unwrap();
        assert!(v.passed, "{label}: {v:?}");
    }
}

#[test]
fn a_table_also_gathered_inside_an_if_branch_keeps_its_dequantize_and_still_runs() {
    // silero-vad (op18, "ifless") reads one table from the main graph and from If branches: the
    // rewrite must leave such a table alone (it panicked on the subgraph reader before).
    let branch = |name: &str, out: &str| {
        graph(
            name,
            vec![node("Gather", &["table", "ids"], &[out])],
            vec![],
            vec![],
            vec![value_info(out, dtype::FLOAT, &[2, 5, 24])],
        )
    };
    let g = graph(
        "if_table",
        vec![
            node("Gather", &["table", "ids"], &["direct"]),
            node("If", &["c"], &["branched"])
                .graph("then_branch", branch("then", "t"))
                .graph("else_branch", branch("else", "e")),
            node("Add", &["direct", "branched"], &["y"]),
        ],
        vec![f32_tensor("table", &[200, 24], &rand_f32(200 * 24, 41))],
        vec![value_info("ids", dtype::INT64, &[2, 5]), value_info("c", dtype::BOOL, &[])],
        vec![value_info("y", dtype::FLOAT, &[2, 5, 24])],
    );
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "float.onnx", &support::model(g, 17));
    let out = run(Model::load(&src).unwrap(), &Recipe::default(), dir.path()).unwrap();
    assert_eq!(out.report.gathered_tables, 0);
    assert_eq!(out.report.quantized.len(), 1, "{:?}", out.report.quantized);
    assert!(ops(&out.model.proto).contains(&"DequantizeLinear".to_string()));
    let dst = dir.path().join("q.onnx");
    out.model.save(&dst, &Default::default()).unwrap();
    let r = ort_compare(&src, &dst, &Compare { int_high: 200, ..Compare::samples(2) });
    assert!(worst_snr(&r) > 35.0, "{r}");
}
