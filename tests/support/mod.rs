//! Shared by the integration tests: small ONNX models built with the protobuf types, and
//! ONNX Runtime as the reference (through scripts/ort_compare.py in the project's venv).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use quantize_rs::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, dtype, tensor_shape_proto, type_proto,
};

/// Deterministic pseudo-random floats in [-1, 1) (a 64-bit LCG; tests need repeatability, not quality).
pub fn rand_f32(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn f32_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "{name}");
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dtype::FLOAT),
        raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into()),
        ..Default::default()
    }
}

pub fn i64_tensor(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dtype::INT64),
        raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into()),
        ..Default::default()
    }
}

/// A tensor value-info; `dims` entries < 0 become the symbolic dims `d0`, `d1`, ...
pub fn value_info(name: &str, elem: i32, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| tensor_shape_proto::Dimension {
            value: Some(if d >= 0 {
                tensor_shape_proto::dimension::Value::DimValue(d)
            } else {
                tensor_shape_proto::dimension::Value::DimParam(format!("d{i}"))
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

pub fn attr_graph(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    }
}

/// A `Constant` node holding `t` (named after its output).
pub fn constant(t: TensorProto) -> NodeProto {
    let out = t.name.clone().expect("named tensor");
    node("Constant", &format!("{out}_const"), &[], &[&out], vec![attr_tensor("value", t)])
}

pub fn graph(
    name: &str,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> GraphProto {
    GraphProto {
        name: Some(name.into()),
        node: nodes,
        initializer: inits,
        input: inputs,
        output: outputs,
        ..Default::default()
    }
}

pub fn model(g: GraphProto, opset: i64) -> ModelProto {
    ModelProto {
        ir_version: Some(quantize_rs::ops::ir_version_for_opset(opset)),
        producer_name: Some("quantize-rs tests".into()),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }],
        graph: Some(g),
        ..Default::default()
    }
}

/// The project's Python with onnxruntime: `QUANTIZE_RS_PYTHON`, else the venv that
/// scripts/setup-python.sh creates (and is run to create). Never skips: a missing reference
/// runtime fails the test with the command to run.
pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Ok(p) = std::env::var("QUANTIZE_RS_PYTHON") {
            return PathBuf::from(p);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("bash")
            .arg(root.join("scripts/setup-python.sh"))
            .output()
            .expect("run scripts/setup-python.sh (needs bash and python3)");
        assert!(
            out.status.success(),
            "scripts/setup-python.sh failed; ONNX Runtime is needed for these tests:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
    })
}

/// Runs both models in ONNX Runtime on the same seeded inputs; returns ort_compare.py's JSON.
/// Panics (with ORT's message) when the candidate does not load or run.
pub fn ort_compare(reference: &Path, candidate: &Path, dims: &[(&str, i64)], samples: usize) -> serde_json::Value {
    ort_compare_with(reference, candidate, dims, samples, None)
}

/// [`ort_compare`] on the samples of an `.npy`/`.npz` file instead of random inputs.
pub fn ort_compare_with(
    reference: &Path,
    candidate: &Path,
    dims: &[(&str, i64)],
    samples: usize,
    inputs: Option<&Path>,
) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(python());
    cmd.arg(root.join("scripts/ort_compare.py"))
        .arg("--reference")
        .arg(reference)
        .arg("--candidate")
        .arg(candidate)
        .arg("--samples")
        .arg(samples.to_string());
    for (k, v) in dims {
        cmd.arg("--dim").arg(format!("{k}={v}"));
    }
    if let Some(i) = inputs {
        cmd.arg("--inputs").arg(i);
    }
    let out = cmd.output().expect("run ort_compare.py");
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|_| panic!("ort_compare.py printed no JSON: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        out.status.success() && json["ok"] == true,
        "ONNX Runtime rejected {}: {}",
        candidate.display(),
        json["error"]
    );
    json
}

/// Pooled output SNR in dB from an ort_compare result.
pub fn pooled_snr(result: &serde_json::Value) -> f64 {
    result["pooled"]["snr_db"].as_f64().expect("pooled snr")
}

/// Writes a model into `dir` and returns its path.
pub fn write(dir: &Path, name: &str, m: &ModelProto) -> PathBuf {
    use prost::Message;
    let p = dir.join(name);
    std::fs::write(&p, m.encode_to_vec()).expect("write model");
    p
}

/// Writes a little-endian float32 `.npy` file (format 1.0).
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) {
    assert_eq!(shape.iter().product::<usize>(), data.len());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(data.iter().flat_map(|x| x.to_le_bytes()));
    std::fs::write(path, bytes).expect("write npy");
}
