//! What each fuzz target does with its input, shared by the fuzz targets (`fuzz/fuzz_targets/`)
//! and the regression tests that replay the cases fuzzing found
//! (`cargo-quantize/tests/fuzz_regressions.rs` includes this file by path).
//!
//! Every function takes untrusted bytes and must return normally: an error for bad input is
//! the expected outcome, a panic, an abort or an allocation past libFuzzer's limit is a bug.
//! Where an input is accepted, the functions check what must then hold (a quantized model
//! encodes and decodes again; external data saved and loaded again gives the same bytes).

use std::path::{Path, PathBuf};

use quantize_rs::onnx::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TypeProto,
    ValueInfoProto, dtype, tensor_proto::DataLocation, tensor_shape_proto, type_proto,
};
use quantize_rs::onnx::shape::Dim;
use quantize_rs::{ImagePreprocess, InputSpec, Model, ModelInfo, Recipe, SaveOptions};

/// A scratch folder, removed when dropped. Under `/dev/shm` when it exists: fuzzing writes a
/// file per input.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("qrs-fuzz-");
        b
    };
    if shm.is_dir()
        && let Ok(d) = builder.tempdir_in(shm)
    {
        return d;
    }
    builder.tempdir().expect("a scratch folder")
}

/// The recipe a selector byte picks: the common weight-only schemes.
fn recipe_for(selector: u8) -> Recipe {
    let mut r = Recipe::default();
    match selector % 5 {
        0 => {}
        1 => r.per_channel = false,
        2 => {
            r.bits = 4;
            r.block_size = Some(32);
        }
        3 => {
            r.symmetric = Some(selector & 0x40 != 0);
            r.unsigned = selector & 0x80 != 0;
            if selector & 0x20 != 0 {
                r.weight_range = quantize_rs::RangeSearch::Minmax;
            }
        }
        _ => {
            r.bits = 4;
            r.min_elements = 1;
        }
    }
    r
}

/// Model bytes → load → analyse → quantize → encode. Byte 0 picks the recipe, the rest is the
/// model.
pub fn model(data: &[u8]) {
    let [selector, bytes @ ..] = data else { return };
    let Ok(model) = Model::from_bytes(bytes.to_vec(), None) else { return };
    let _ = ModelInfo::of(&model).map(|i| i.inputs.len());
    let recipe = recipe_for(*selector);
    if let Ok(outcome) = quantize_rs::run(model, &recipe, Path::new(".")) {
        let out = outcome.model.to_bytes();
        assert_eq!(out.len() as u64, outcome.bytes_out, "the report gives the encoded size");
        let back = Model::from_bytes(out, None).expect("a quantized model decodes again");
        ModelInfo::of(&back).expect("a quantized model can be summarised");
    }
}

/// The inputs a selector byte picks for the data readers.
fn specs(selector: u8) -> Vec<InputSpec> {
    let spec = |name: &str, elem_type: i32, dims: Vec<Dim>| InputSpec { name: name.into(), elem_type, dims };
    let batch = || Dim::Symbolic("batch".into());
    match selector % 4 {
        0 if selector & 0x80 != 0 => vec![spec("x", dtype::FLOAT, vec![batch(), Dim::Fixed(64)])],
        0 => vec![spec("x", dtype::FLOAT, vec![batch(), Dim::Fixed(3), Dim::Fixed(8), Dim::Fixed(8)])],
        1 => vec![
            spec("input_ids", dtype::INT64, vec![batch(), Dim::Symbolic("seq".into())]),
            spec("attention_mask", dtype::INT64, vec![batch(), Dim::Symbolic("seq".into())]),
        ],
        2 => vec![spec("x", dtype::UINT8, vec![Dim::Fixed(1), Dim::Unknown, Dim::Unknown, Dim::Fixed(3)])],
        _ => vec![
            spec("x", 0, vec![Dim::Unknown, Dim::Unknown]),
            spec("sr", dtype::INT64, vec![]),
            spec("state", dtype::FLOAT, vec![Dim::Fixed(2), batch(), Dim::Fixed(4)]),
        ],
    }
}

/// Calibration data readers. Byte 0 picks the format (`.npy`, `.npz`, `.safetensors`, `.png`,
/// `.jpg`) and whether the file is read alone or as the entry of a folder; byte 1 picks the
/// model inputs and image settings; the rest is the file.
pub fn data(data: &[u8]) {
    let [format, selector, file @ ..] = data else { return };
    let ext = ["npy", "npz", "safetensors", "png", "jpg"][usize::from(format % 5)];
    let in_folder = format / 5 % 2 == 1;
    let dir = scratch();
    let file_path = dir.path().join(format!("sample.{ext}"));
    std::fs::write(&file_path, file).expect("scratch write");
    let path = if in_folder { dir.path().to_path_buf() } else { file_path };
    let mut image = ImagePreprocess::new([8, 8]);
    if selector & 0x10 != 0 {
        image.layout = "nhwc".into();
        image.size = [6, 5];
    }
    if selector & 0x20 != 0 {
        image.channels = "gray".into();
    }
    if selector % 4 == 2 {
        // uint8 inputs take raw pixels.
        image.scale = 1.0;
    }
    let limit = if selector & 0x40 != 0 { None } else { Some(3) };
    let _ = quantize_rs::load_samples(&path, &specs(*selector), Some(&image), limit);
}

/// Config files and Cargo metadata (recipe parsing). Byte 0 picks a YAML config, a TOML config
/// or a Cargo.toml; the rest is the text.
pub fn config(data: &[u8]) {
    let [selector, text @ ..] = data else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    // `batch.input_dir` is a glob over the file system: a pattern that walks it (`/**`) is
    // the user's own choice, and makes no case here.
    if text.contains("**") || text.contains("/*") {
        return;
    }
    let dir = scratch();
    match selector % 3 {
        0 | 1 => {
            let path = dir.path().join(if selector % 3 == 0 { "jobs.yaml" } else { "jobs.toml" });
            std::fs::write(&path, text).expect("scratch write");
            if let Err(e) = cargo_quantize::config::load(&path) {
                assert!(!e.0.is_empty(), "a config error says something");
            }
        }
        _ => {
            let _ = quantize_build::Project::from_toml_str(text, dir.path().join("Cargo.toml"));
        }
    }
}

/// Reads bytes off the front of a fuzz input; past its end, zeros.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }

    fn text(&mut self) -> String {
        let n = usize::from(self.byte() % 24).min(self.0.len());
        let (t, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8_lossy(t).into_owned()
    }

    /// A byte count as a model would write it: absent, a number (small or any u64), or text.
    fn count(&mut self) -> Option<String> {
        match self.byte() % 5 {
            0 => None,
            1 => Some(u64::from(self.byte()).to_string()),
            2 => Some((u64::from(self.byte()) * 4).to_string()),
            3 => Some(self.u64().to_string()),
            _ => Some(self.text()),
        }
    }
}

const EXTERNAL_TYPES: [i32; 9] =
    [dtype::FLOAT, dtype::INT8, dtype::INT64, dtype::UINT8, dtype::INT4, dtype::FLOAT16, 8, 0, 99];

/// A model whose weight `w` is stored as external data, with the location, offset, length,
/// type and dims the input gives, beside a data file holding the rest of the input.
pub struct ExternalCase {
    /// The model.
    pub model: ModelProto,
    /// The contents of `w.bin` beside it (also `sub/w.bin`).
    pub data: Vec<u8>,
}

impl ExternalCase {
    /// Decodes a fuzz input.
    pub fn from_bytes(input: &[u8]) -> ExternalCase {
        let mut c = Cursor(input);
        let location = match c.byte() % 9 {
            0 | 1 => "w.bin".to_string(),
            2 => "../w.bin".into(),
            3 => "/etc/hostname".into(),
            4 => "sub/../w.bin".into(),
            5 => "missing.bin".into(),
            6 => String::new(),
            7 => "sub".into(),
            _ => c.text(),
        };
        let (offset, length) = (c.count(), c.count());
        let data_type = EXTERNAL_TYPES[usize::from(c.byte()) % EXTERNAL_TYPES.len()];
        let dims: Vec<i64> = (0..c.byte() % 5)
            .map(|_| match c.byte() {
                b if b & 0x80 != 0 => c.u64() as i64,
                b => i64::from(b),
            })
            .collect();
        let entry = |k: &str, v: String| StringStringEntryProto { key: Some(k.into()), value: Some(v) };
        let mut external = vec![];
        if c.byte() % 8 != 0 {
            external.push(entry("location", location));
        }
        external.extend(offset.map(|o| entry("offset", o)));
        external.extend(length.map(|l| entry("length", l)));
        let w = TensorProto {
            name: Some("w".into()),
            dims: dims.clone(),
            data_type: Some(data_type),
            external_data: external,
            data_location: Some(DataLocation::External as i32),
            ..Default::default()
        };
        let k = dims.first().copied().unwrap_or(1).clamp(1, 1 << 20);
        let info = |name: &str, shape: &[i64]| ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(dtype::FLOAT),
                    shape: Some(quantize_rs::onnx::proto::TensorShapeProto {
                        dim: shape
                            .iter()
                            .map(|&d| tensor_shape_proto::Dimension {
                                value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let node = NodeProto {
            op_type: Some("MatMul".into()),
            input: vec!["x".into(), "w".into()],
            output: vec!["y".into()],
            ..Default::default()
        };
        let model = ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
            graph: Some(GraphProto {
                name: Some("external".into()),
                node: vec![node],
                initializer: vec![w],
                input: vec![info("x", &[1, k])],
                output: vec![info("y", &[])],
                ..Default::default()
            }),
            ..Default::default()
        };
        ExternalCase { model, data: c.0.to_vec() }
    }

    /// Writes the model and its data into `dir`; returns the model's path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        std::fs::write(dir.join("w.bin"), &self.data).expect("scratch write");
        std::fs::create_dir_all(dir.join("sub")).expect("scratch folder");
        std::fs::write(dir.join("sub").join("w.bin"), &self.data).expect("scratch write");
        let path = dir.join("model.onnx");
        std::fs::write(&path, prost::Message::encode_to_vec(&self.model)).expect("scratch write");
        path
    }
}

/// External-data references: load the model the input describes (reading its external data),
/// quantize it, save it with its tensors outside again and load that back: the weights must
/// come back byte for byte.
pub fn external(input: &[u8]) {
    let case = ExternalCase::from_bytes(input);
    let dir = scratch();
    let path = case.write(dir.path());
    let Ok(model) = Model::load(&path) else { return };
    let opts = SaveOptions { external_data_threshold: 0, external_min_tensor_bytes: 1, ..Default::default() };
    let out = dir.path().join("out").join("saved.onnx");
    std::fs::create_dir_all(out.parent().expect("has a folder")).expect("scratch folder");
    model.save(&out, &opts).expect("a loaded model saves");
    let back = Model::load(&out).expect("a saved model loads again");
    assert_eq!(back.proto, model.proto, "external data round-trips");
    let _ = quantize_rs::run(model, &Recipe::default(), dir.path());
}
