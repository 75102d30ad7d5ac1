//! Calibration and verification data: reads the samples a model is run on from a `.npy`, `.npz`
//! or `.safetensors` file, or from a folder of images, checks them against the model's inputs and
//! returns them as tract tensors, one complete set of model inputs per sample.
//!
//! # Formats
//!
//! - `.npy`: one array, for a model with a single input.
//! - `.npz` (as `numpy.savez` or `numpy.savez_compressed` write it): one array per input, named
//!   after it (`np.savez(path, input_ids=ids, attention_mask=mask)`).
//! - `.safetensors`: one tensor per input, named after it.
//! - A folder of `.npy` / `.npz` / `.safetensors` files: each file is read as above and the
//!   samples of all files are taken in file name order. This is the way to feed samples of
//!   different sizes (a detector's images at their own aspect ratio), one file each.
//! - A folder of `.png` / `.jpg` / `.jpeg` images (or one such image), for a model with a single
//!   image input, with [`ImagePreprocess`]: each image is converted to 8-bit RGB (or gray),
//!   resized to `size` (bilinear), put in `channels` order, multiplied by `scale`, has `mean`
//!   subtracted and is divided by `std` (one value for all channels, or one per channel), and
//!   laid out as `[1, C, H, W]` (`nchw`) or `[1, H, W, C]` (`nhwc`). Images are taken in file
//!   name order; other files in the folder are ignored.
//!
//! # How arrays become samples
//!
//! For an input of rank `r`:
//! - an array of rank `r + 1` holds `N` samples stacked on axis 0, each a complete input;
//! - an array of rank `r` holds samples along the batch axis (axis 0), one each (`array[i:i+1]`),
//!   unless axis 0 of the input has a fixed size other than 1 (the VAD state `[2, batch, 128]`):
//!   then the array is one complete input;
//! - a rank-0 array feeds a scalar input (a sample rate).
//!
//! Every input must hold the same number of samples, except that an array at the input's own
//! rank holding exactly one sample (a scalar, a batch of 1, or one complete input as above) is
//! shared by every sample: a sample rate or an initial state need not be repeated. An array
//! stacked at rank `r + 1` is never shared, so a stack of 1 next to a stack of 8 is an error.
//!
//! Fixed dimensions must match exactly; symbolic and unknown ones take the sample's sizes, and
//! inputs that name the same symbol (`batch`, `sequence`) must agree on its size within a sample.
//!
//! # Types
//!
//! Data is converted to the input's type only where nothing is lost that matters:
//! - integers to any integer type whose range holds every value (int64 token ids for an int32
//!   input, int32 for int64);
//! - floats to any float type: widening is exact, narrowing (float64 → float32, what NumPy saves
//!   by default) rounds, and values beyond the narrower type's range are an error;
//! - bfloat16 and float16 data widen exactly.
//!
//! Integers never become floats nor floats integers (int16 PCM audio fed as-is to a model that
//! expects floats in [-1, 1] would calibrate garbage): such data is an error. Float data must be
//! finite: a NaN or infinity is an error naming the sample and the index.
//!
//! All samples are held in memory, converted to the inputs' types.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use tract_onnx::prelude::Tensor;

use crate::error::{Error, Result};
use crate::onnx::model::Model;
use crate::onnx::proto::dtype;
pub use crate::onnx::shape::Dim;
use crate::onnx::shape::{declared_shape, elem_type};
use crate::recipe::ImagePreprocess;

mod archives;
mod assemble;
mod folder;
mod images;
mod npy;
#[cfg(feature = "tract")]
mod tokens;

use archives::*;
use assemble::*;
use folder::*;
use images::*;
use npy::*;
#[cfg(feature = "tract")]
pub use tokens::token_probe_samples;

/// What the model expects of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// The graph input's name.
    pub name: String,
    /// Its element type, as an ONNX `TensorProto.DataType` value (0 when the model does not say:
    /// the data is then taken in its own type).
    pub elem_type: i32,
    /// Its shape.
    pub dims: Vec<Dim>,
}

/// One complete set of model inputs, in [`InputSpec`] order.
pub type Sample = Vec<Tensor>;

impl InputSpec {
    /// The inputs of `model`'s main graph that are fed at run time (initializers listed as graph
    /// inputs, as models of IR version < 4 do, are left out), in graph order, which is the order
    /// tract takes them in.
    pub fn of_model(model: &Model) -> Result<Vec<InputSpec>> {
        let graph = model.graph();
        let initializers: std::collections::HashSet<&str> =
            graph.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
        let mut specs = vec![];
        for input in &graph.input {
            let name = input.name.clone().unwrap_or_default();
            if initializers.contains(name.as_str()) {
                continue;
            }
            let Some(dims) = declared_shape(input) else {
                return Err(Error::InvalidModel(format!(
                    "graph input '{name}' declares no tensor shape, so calibration data cannot be matched to it; \
                     export the model with input shapes"
                )));
            };
            specs.push(InputSpec { name, elem_type: elem_type(input).unwrap_or(0), dims });
        }
        Ok(specs)
    }
}

/// Loads the samples in `path` for the inputs of `model`: [`InputSpec::of_model`] then
/// [`load_samples`].
pub fn load_for_model(
    model: &Model,
    path: &Path,
    image: Option<&ImagePreprocess>,
    limit: Option<usize>,
) -> Result<Vec<Sample>> {
    load_samples(path, &InputSpec::of_model(model)?, image, limit)
}

/// Loads the samples for `inputs` from `path` (see the [module docs](self) for the formats and
/// rules). `image` is the preprocessing for images and is needed only for them; `limit` keeps
/// the first samples only.
pub fn load_samples(
    path: &Path,
    inputs: &[InputSpec],
    image: Option<&ImagePreprocess>,
    limit: Option<usize>,
) -> Result<Vec<Sample>> {
    let fail = |message: String| Error::Data { path: path.to_path_buf(), input: None, message };
    if inputs.is_empty() {
        return Err(fail("the model has no inputs to feed".into()));
    }
    if limit == Some(0) {
        return Err(fail("asked for 0 samples; use at least 1".into()));
    }
    let meta = std::fs::metadata(path).map_err(|source| read_error(path, source))?;
    if meta.is_dir() {
        if let Some(files) = list_arrays(path)? {
            return load_array_files(&files, inputs, image, limit);
        }
        return load_images(path, &list_images(path)?, inputs, image, limit);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let arrays = match ext.as_str() {
        "npy" => {
            if inputs.len() != 1 {
                return Err(fail(format!(
                    "a .npy file holds one array, but the model has {} inputs ({}); save one array per \
                     input name in a .npz or .safetensors file",
                    inputs.len(),
                    quoted(inputs.iter().map(|i| i.name.as_str()))
                )));
            }
            let file = File::open(path).map_err(|source| read_error(path, source))?;
            let holds = file.metadata().map_err(|source| read_error(path, source))?.len();
            vec![read_npy(&mut BufReader::new(file), holds).map_err(|m| fail(format!("not a valid .npy array: {m}")))?]
        }
        "npz" => read_npz(path, inputs)?,
        "safetensors" => read_safetensors(path, inputs)?,
        "png" | "jpg" | "jpeg" => return load_images(path, &[path.to_path_buf()], inputs, image, limit),
        _ => {
            return Err(fail(
                "unknown data format: expected a .npy, .npz or .safetensors file, a .png/.jpeg image or a \
                 folder of images"
                    .into(),
            ));
        }
    };
    assemble(path, inputs, arrays, limit)
}

pub(super) fn read_error(path: &Path, source: std::io::Error) -> Error {
    Error::Read { path: path.to_path_buf(), source }
}

/// `'a', 'b', 'c'`.
pub(super) fn quoted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use ndarray_npy::WriteNpyExt;
    use tract_onnx::prelude::tract_ndarray::{Array, ArrayD};

    use super::*;
    use tract_onnx::prelude::tract_ndarray::IxDyn;
    use tract_onnx::prelude::{DatumType, f16};

    fn spec(name: &str, elem_type: i32, dims: &[&str]) -> InputSpec {
        let dims = dims
            .iter()
            .map(|d| match d.parse() {
                Ok(n) => Dim::Fixed(n),
                Err(_) if *d == "?" => Dim::Unknown,
                Err(_) => Dim::Symbolic(d.to_string()),
            })
            .collect();
        InputSpec { name: name.into(), elem_type, dims }
    }

    fn array<T: Clone>(shape: &[usize], values: Vec<T>) -> ArrayD<T> {
        Array::from_shape_vec(IxDyn(shape), values).unwrap()
    }

    fn npy<T: ndarray_npy::WritableElement>(a: &ArrayD<T>) -> Vec<u8> {
        let mut buf = vec![];
        a.write_npy(&mut buf).unwrap();
        buf
    }

    /// An .npy file written by hand, for what ndarray-npy does not write (float16, big-endian).
    fn npy_raw(descr: &str, shape: &[usize], fortran: bool, data: &[u8]) -> Vec<u8> {
        let shape_text = match shape {
            [n] => format!("({n},)"),
            _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
        };
        let py_bool = if fortran { "True" } else { "False" };
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': {py_bool}, 'shape': {shape_text}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn write_npz(path: &Path, arrays: &[(&str, Vec<u8>)], compressed: bool) {
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        let method = if compressed { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, bytes) in arrays {
            zip.start_file(format!("{name}.npy"), options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
    }

    fn write_safetensors(path: &Path, tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) {
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(n, dt, shape, data)| {
                (n.to_string(), safetensors::tensor::TensorView::new(*dt, shape.clone(), data).unwrap())
            })
            .collect();
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.cast_to::<f32>().unwrap().to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    }

    fn i64s(t: &Tensor) -> Vec<i64> {
        t.to_plain_array_view::<i64>().unwrap().iter().copied().collect()
    }

    fn load(path: &Path, inputs: &[InputSpec]) -> Result<Vec<Sample>> {
        load_samples(path, inputs, None, None)
    }

    fn load_err(path: &Path, inputs: &[InputSpec]) -> String {
        match load(path, inputs) {
            Ok(s) => panic!("expected an error, got {} samples", s.len()),
            Err(e) => e.to_string(),
        }
    }

    fn iota(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32).collect()
    }

    #[test]
    fn npy_stacked_samples_are_complete_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, npy(&array(&[4, 1, 3], iota(12)))).unwrap();
        let samples = load(&path, &[spec("x", 1, &["1", "3"])]).unwrap();
        assert_eq!(samples.len(), 4);
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(s.len(), 1);
            assert_eq!(s[0].shape(), &[1, 3]);
            assert_eq!(s[0].datum_type(), DatumType::F32);
            let base = (i * 3) as f32;
            assert_eq!(f32s(&s[0]), vec![base, base + 1.0, base + 2.0]);
        }
    }

    #[test]
    fn npy_at_the_input_rank_splits_the_batch_axis() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, npy(&array(&[5, 3], iota(15)))).unwrap();
        // Symbolic and fixed-1 batch axes alike.
        for batch in ["batch", "1"] {
            let samples = load(&path, &[spec("x", 1, &[batch, "3"])]).unwrap();
            assert_eq!(samples.len(), 5);
            assert_eq!(samples[2][0].shape(), &[1, 3]);
            assert_eq!(f32s(&samples[2][0]), vec![6.0, 7.0, 8.0]);
        }
    }

    #[test]
    fn folder_of_arrays_feeds_samples_of_different_sizes_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        // Two images of their own sizes, one file each, plus a stack of two in a third file.
        std::fs::write(dir.path().join("b.npy"), npy(&array(&[1, 1, 2, 3], iota(6)))).unwrap();
        std::fs::write(dir.path().join("a.npy"), npy(&array(&[1, 1, 4, 2], iota(8)))).unwrap();
        std::fs::write(dir.path().join("c.npy"), npy(&array(&[2, 1, 1, 2, 2], iota(8)))).unwrap();
        std::fs::write(dir.path().join("manifest.json"), "{}").unwrap();
        let inputs = [spec("x", 1, &["N", "1", "H", "W"])];
        let samples = load(dir.path(), &inputs).unwrap();
        let shapes: Vec<_> = samples.iter().map(|s| s[0].shape().to_vec()).collect();
        assert_eq!(shapes, vec![vec![1, 1, 4, 2], vec![1, 1, 2, 3], vec![1, 1, 2, 2], vec![1, 1, 2, 2]]);
        assert_eq!(f32s(&samples[3][0]), vec![4.0, 5.0, 6.0, 7.0]);
        // The limit spans files.
        let three = load_samples(dir.path(), &inputs, None, Some(3)).unwrap();
        assert_eq!(three.len(), 3);
        // An error names the file it is in.
        std::fs::write(dir.path().join("d.npy"), npy(&array(&[1, 2, 2, 2], iota(8)))).unwrap();
        let err = load_err(dir.path(), &inputs);
        assert!(err.contains("d.npy"), "{err}");
    }

    #[test]
    fn folder_mixing_arrays_and_images_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_pngs(dir.path());
        std::fs::write(dir.path().join("x.npy"), npy(&array(&[1, 3], iota(3)))).unwrap();
        let err = load_err(dir.path(), &[spec("x", 1, &["N", "3"])]);
        assert!(err.contains("both array files (1) and images (2)"), "{err}");
    }

    #[test]
    fn dynamic_dims_take_the_sample_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, npy(&array(&[2, 1, 3, 5, 7], iota(210)))).unwrap();
        let samples = load(&path, &[spec("x", 1, &["batch", "3", "height", "?"])]).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1][0].shape(), &[1, 3, 5, 7]);
        assert_eq!(f32s(&samples[1][0])[0], 105.0);
        // Several images per sample: the batch is dynamic too.
        let samples = load(&path, &[spec("x", 1, &["batch", "3", "height", "width"])]).unwrap();
        assert_eq!(samples[0][0].shape(), &[1, 3, 5, 7]);
    }

    #[test]
    fn limit_keeps_the_first_samples() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let mut values = iota(15);
        values[14] = f32::NAN; // in a sample that is not kept
        std::fs::write(&path, npy(&array(&[5, 3], values))).unwrap();
        let samples = load_samples(&path, &[spec("x", 1, &["batch", "3"])], None, Some(2)).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(f32s(&samples[1][0]), vec![3.0, 4.0, 5.0]);
        let samples = load_samples(&path, &[spec("x", 1, &["batch", "3"])], None, Some(100));
        assert!(samples.unwrap_err().to_string().contains("sample 4, index [0, 2]"));
    }

    #[test]
    fn npz_feeds_a_transformer_and_widens_int32_to_int64() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<i64> = (0..12).map(|i| 100 + i).collect();
        let mask: Vec<i32> = vec![1; 12];
        for compressed in [false, true] {
            let path = dir.path().join(format!("tokens-{compressed}.npz"));
            write_npz(
                &path,
                &[
                    ("input_ids", npy(&array(&[3, 4], ids.clone()))),
                    ("attention_mask", npy(&array(&[3, 4], mask.clone()))),
                ],
                compressed,
            );
            let inputs =
                [spec("input_ids", 7, &["batch", "sequence"]), spec("attention_mask", 7, &["batch", "sequence"])];
            let samples = load(&path, &inputs).unwrap();
            assert_eq!(samples.len(), 3);
            assert_eq!(samples[1][0].shape(), &[1, 4]);
            assert_eq!(i64s(&samples[1][0]), vec![104, 105, 106, 107]);
            assert_eq!(samples[1][1].datum_type(), DatumType::I64);
            assert_eq!(i64s(&samples[1][1]), vec![1, 1, 1, 1]);
        }
    }

    #[test]
    fn npz_feeds_a_vad_with_shared_state_and_sample_rate() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = [spec("input", 1, &["batch", "4"]), spec("state", 1, &["2", "batch", "8"]), spec("sr", 7, &[])];
        let audio = npy(&array(&[3, 4], iota(12)));
        let state = npy(&array(&[2, 1, 8], vec![0.5f32; 16]));
        // The sample rate once (rank 0, shared) or per sample (rank 1: stacked scalars).
        let shared = dir.path().join("shared.npz");
        write_npz(
            &shared,
            &[("input", audio.clone()), ("state", state.clone()), ("sr", npy(&array(&[], vec![16000i64])))],
            false,
        );
        let samples = load(&shared, &inputs).unwrap();
        assert_eq!(samples.len(), 3);
        for s in &samples {
            assert_eq!(s[1].shape(), &[2, 1, 8]);
            assert_eq!(s[2].shape(), &[] as &[usize]);
            assert_eq!(i64s(&s[2]), vec![16000]);
        }
        assert_eq!(f32s(&samples[2][0]), vec![8.0, 9.0, 10.0, 11.0]);
        let stacked = dir.path().join("stacked.npz");
        write_npz(
            &stacked,
            &[("input", audio), ("state", state), ("sr", npy(&array(&[3], vec![8000i64, 16000, 8000])))],
            false,
        );
        let samples = load(&stacked, &inputs).unwrap();
        assert_eq!(i64s(&samples[1][2]), vec![16000]);
        assert_eq!(i64s(&samples[2][2]), vec![8000]);
    }

    #[test]
    fn safetensors_by_name_with_half_floats_widened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.safetensors");
        let halves: Vec<u8> = [0.5f32, -2.0, 1.5, 3.0].iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect();
        let bf16: Vec<u8> = [1.0f32, -0.25].iter().flat_map(|&x| ((x.to_bits() >> 16) as u16).to_le_bytes()).collect();
        let ints: Vec<u8> = [7i64, 9].iter().flat_map(|x| x.to_le_bytes()).collect();
        write_safetensors(
            &path,
            &[
                ("image", safetensors::Dtype::F16, vec![2, 1, 2], halves),
                ("scale", safetensors::Dtype::BF16, vec![2], bf16),
                ("ids", safetensors::Dtype::I64, vec![2, 1], ints),
            ],
        );
        let inputs = [spec("ids", 6, &["batch"]), spec("image", 1, &["1", "2"]), spec("scale", 11, &[])];
        let samples = load(&path, &inputs).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1][0].datum_type(), DatumType::I32);
        assert_eq!(f32s(&samples[1][0]), vec![9.0]);
        assert_eq!(samples[0][1].datum_type(), DatumType::F32);
        assert_eq!(f32s(&samples[0][1]), vec![0.5, -2.0]);
        assert_eq!(f32s(&samples[1][1]), vec![1.5, 3.0]);
        assert_eq!(samples[1][2].datum_type(), DatumType::F64);
        assert_eq!(f32s(&samples[1][2]), vec![-0.25]);
    }

    #[test]
    fn npy_float16_big_endian_and_fortran_order() {
        let dir = tempfile::tempdir().unwrap();
        let input = [spec("x", 1, &["2", "3"])];
        let path = dir.path().join("half.npy");
        let halves: Vec<u8> = iota(6).iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect();
        std::fs::write(&path, npy_raw("<f2", &[2, 3], false, &halves)).unwrap();
        assert_eq!(f32s(&load(&path, &input).unwrap()[0][0]), iota(6));
        let path = dir.path().join("big.npy");
        let big: Vec<u8> = iota(6).iter().flat_map(|x| x.to_be_bytes()).collect();
        std::fs::write(&path, npy_raw(">f4", &[2, 3], false, &big)).unwrap();
        assert_eq!(f32s(&load(&path, &input).unwrap()[0][0]), iota(6));
        // Column-major: [[0, 1, 2], [3, 4, 5]] is stored 0 3 1 4 2 5.
        let path = dir.path().join("fortran.npy");
        let cols: Vec<u8> = [0.0f32, 3.0, 1.0, 4.0, 2.0, 5.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(&path, npy_raw("<f4", &[2, 3], true, &cols)).unwrap();
        assert_eq!(f32s(&load(&path, &input).unwrap()[0][0]), iota(6));
    }

    #[test]
    fn float64_narrows_to_float32_and_scalar_inputs_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.npy");
        std::fs::write(&path, npy(&array(&[3], vec![0.1f64, 0.2, 0.3]))).unwrap();
        let samples = load(&path, &[spec("t", 1, &[])]).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[2][0].shape(), &[] as &[usize]);
        assert_eq!(f32s(&samples[2][0]), vec![0.3f32]);
        std::fs::write(&path, npy(&array(&[], vec![2.5f64]))).unwrap();
        let samples = load(&path, &[spec("t", 11, &[])]).unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(f32s(&samples[0][0]), vec![2.5]);
    }

    fn write_pngs(dir: &Path) {
        // Two 2x2 images; pixel (x, y) of image k is (10k + x + 2y, 100, 200).
        for k in 0..2u8 {
            let img = image::RgbImage::from_fn(2, 2, |x, y| image::Rgb([10 * k + x as u8 + 2 * y as u8, 100, 200]));
            img.save(dir.join(format!("img{k}.png"))).unwrap();
        }
        std::fs::write(dir.join("README.txt"), "not an image").unwrap();
    }

    fn preprocess(layout: &str, channels: &str) -> ImagePreprocess {
        ImagePreprocess {
            size: [2, 2],
            layout: layout.into(),
            channels: channels.into(),
            scale: 1.0,
            mean: vec![],
            std: vec![],
        }
    }

    #[test]
    fn image_folder_nchw_rgb_with_mean_and_std() {
        let dir = tempfile::tempdir().unwrap();
        write_pngs(dir.path());
        let mut pre = preprocess("nchw", "rgb");
        pre.scale = 0.5;
        pre.mean = vec![1.0, 2.0, 3.0];
        pre.std = vec![2.0];
        let samples = load_samples(dir.path(), &[spec("images", 1, &["N", "3", "2", "2"])], Some(&pre), None).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1][0].shape(), &[1, 3, 2, 2]);
        let v = f32s(&samples[1][0]);
        // Red of image 1 is 10, 11, 12, 13: (p * 0.5 - 1) / 2.
        assert_eq!(&v[..4], &[2.0, 2.25, 2.5, 2.75]);
        assert_eq!(&v[4..8], &[24.0; 4]); // (100 * 0.5 - 2) / 2
        assert_eq!(&v[8..], &[48.5; 4]); // (200 * 0.5 - 3) / 2
    }

    #[test]
    fn image_folder_nhwc_bgr_gray_resize_and_uint8() {
        let dir = tempfile::tempdir().unwrap();
        write_pngs(dir.path());
        let pre = preprocess("nhwc", "bgr");
        let samples = load_samples(dir.path(), &[spec("x", 1, &["1", "2", "2", "3"])], Some(&pre), None).unwrap();
        assert_eq!(&f32s(&samples[0][0])[..6], &[200.0, 100.0, 0.0, 200.0, 100.0, 1.0]);
        let mut pre = preprocess("nchw", "gray");
        pre.size = [4, 6];
        let samples = load_samples(dir.path(), &[spec("x", 10, &["1", "1", "h", "w"])], Some(&pre), Some(1)).unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0][0].shape(), &[1, 1, 4, 6]);
        assert_eq!(samples[0][0].datum_type(), DatumType::F16);
        let pre = preprocess("nchw", "rgb");
        let samples = load_samples(dir.path(), &[spec("x", 2, &["1", "3", "2", "2"])], Some(&pre), None).unwrap();
        assert_eq!(samples[1][0].datum_type(), DatumType::U8);
        assert_eq!(&f32s(&samples[1][0])[..4], &[10.0, 11.0, 12.0, 13.0]);
        // One image file works as a one-sample set.
        let one = dir.path().join("img1.png");
        let samples = load_samples(&one, &[spec("x", 1, &["1", "3", "2", "2"])], Some(&pre), None).unwrap();
        assert_eq!(samples.len(), 1);
    }

    #[test]
    fn image_errors_name_the_input_or_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let input = [spec("pixels", 1, &["1", "3", "224", "224"])];
        let pre = preprocess("nchw", "rgb");
        let err = load_samples(dir.path(), &input, Some(&pre), None).unwrap_err().to_string();
        assert!(err.contains("no .png or .jpeg images"), "{err}");
        write_pngs(dir.path());
        let err = load_samples(dir.path(), &input, Some(&pre), None).unwrap_err().to_string();
        assert!(err.contains("img0.png: input 'pixels': dim 2: expected 224, found 2"), "{err}");
        let err = load_samples(dir.path(), &input, None, None).unwrap_err().to_string();
        assert!(err.contains("input 'pixels': images need preprocessing"), "{err}");
        let mut bad = preprocess("nchw", "rgb");
        bad.mean = vec![0.0, 0.0];
        let err = load_samples(dir.path(), &input, Some(&bad), None).unwrap_err().to_string();
        assert!(err.contains("image mean: expected 1 or 3 values"), "{err}");
        let ids = [spec("ids", 7, &["1", "3", "2", "2"])];
        let err = load_samples(dir.path(), &ids, Some(&pre), None).unwrap_err().to_string();
        assert!(err.contains("input 'ids': images feed float or uint8 inputs, but this input is int64"), "{err}");
        let two = [spec("a", 1, &["1", "3", "2", "2"]), spec("b", 1, &[])];
        let err = load_samples(dir.path(), &two, Some(&pre), None).unwrap_err().to_string();
        assert!(err.contains("this model has 2 ('a', 'b')"), "{err}");
        std::fs::write(dir.path().join("broken.jpg"), b"not a jpeg").unwrap();
        let input = [spec("pixels", 1, &["1", "3", "2", "2"])];
        let err = load_samples(dir.path(), &input, Some(&pre), None).unwrap_err().to_string();
        assert!(err.contains("broken.jpg: input 'pixels': cannot decode the image"), "{err}");
    }

    /// Writes `arrays` to an .npz and returns the error loading it for `inputs`.
    fn npz_err(arrays: &[(&str, Vec<u8>)], inputs: &[InputSpec]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.npz");
        write_npz(&path, arrays, false);
        load_err(&path, inputs)
    }

    #[test]
    fn names_must_match_the_inputs() {
        let inputs = [spec("input_ids", 7, &["batch", "seq"]), spec("attention_mask", 7, &["batch", "seq"])];
        let ids = npy(&array(&[2, 3], vec![1i64; 6]));
        let err = npz_err(&[("input_ids", ids.clone()), ("token_type_ids", ids.clone())], &inputs);
        assert!(err.contains("array 'token_type_ids' matches no model input"), "{err}");
        assert!(err.contains("'input_ids', 'attention_mask'"), "{err}");
        let err = npz_err(&[("input_ids", ids.clone())], &inputs);
        assert!(err.contains("input 'attention_mask': missing"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, &ids).unwrap();
        let err = load_err(&path, &inputs);
        assert!(err.contains("a .npy file holds one array, but the model has 2 inputs"), "{err}");
        let path = dir.path().join("x.safetensors");
        write_safetensors(&path, &[("ids", safetensors::Dtype::I64, vec![1], vec![0; 8])]);
        let err = load_err(&path, &inputs);
        assert!(err.contains("tensor 'ids' matches no model input"), "{err}");
        let path = dir.path().join("x.csv");
        std::fs::write(&path, "1,2").unwrap();
        assert!(load_err(&path, &inputs).contains("unknown data format"));
    }

    #[test]
    fn shapes_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, npy(&array(&[2, 4], iota(8)))).unwrap();
        let err = load_err(&path, &[spec("x", 1, &["1", "3", "4"])]);
        assert!(err.contains("input 'x': expected an array of rank 3"), "{err}");
        assert!(err.contains("found rank 2 (shape [2, 4])"), "{err}");
        let err = load_err(&path, &[spec("x", 1, &["batch", "3"])]);
        assert!(err.contains("input 'x': dim 1: expected 3, found 4"), "{err}");
        // At the input's rank with a fixed leading size, the array is one complete input.
        let err = load_err(&path, &[spec("x", 1, &["3", "4"])]);
        assert!(err.contains("dim 0: expected 3, found 2"), "{err}");
        std::fs::write(&path, npy(&array(&[0, 4], Vec::<f32>::new()))).unwrap();
        let err = load_err(&path, &[spec("x", 1, &["batch", "4"])]);
        assert!(err.contains("input 'x': the array of shape [0, 4] holds no samples"), "{err}");
        // Inputs sharing a dimension name must agree.
        let inputs = [spec("ids", 7, &["batch", "seq"]), spec("mask", 7, &["batch", "seq"])];
        let err = npz_err(
            &[("ids", npy(&array(&[2, 3], vec![1i64; 6]))), ("mask", npy(&array(&[2, 5], vec![1i64; 10])))],
            &inputs,
        );
        assert!(err.contains("input 'mask': dim 1 ('seq') is 5, but input 'ids' has 'seq' = 3"), "{err}");
        // And on the sample count.
        let err = npz_err(
            &[("ids", npy(&array(&[2, 3], vec![1i64; 6]))), ("mask", npy(&array(&[4, 3], vec![1i64; 12])))],
            &inputs,
        );
        assert!(err.contains("input 'mask': holds 4 samples, but input 'ids' holds 2"), "{err}");
    }

    #[test]
    fn types_convert_only_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, npy(&array(&[2, 2], vec![1.0f32; 4]))).unwrap();
        let err = load_err(&path, &[spec("ids", 7, &["batch", "2"])]);
        assert!(err.contains("input 'ids': expected int64 data, found float32"), "{err}");
        std::fs::write(&path, npy(&array(&[2, 2], vec![1i16; 4]))).unwrap();
        let err = load_err(&path, &[spec("audio", 1, &["batch", "2"])]);
        assert!(err.contains("input 'audio': expected float32 data, found int16"), "{err}");
        std::fs::write(&path, npy(&array(&[2, 2], vec![1i64, 2, 3, 1 << 40]))).unwrap();
        let err = load_err(&path, &[spec("ids", 6, &["batch", "2"])]);
        assert!(err.contains("int64 value 1099511627776 at sample 1, index [0, 1] does not fit"), "{err}");
        assert!(err.contains("int32"), "{err}");
        std::fs::write(&path, npy(&array(&[2, 2], vec![1.0f64, 2.0, 7e4, 1.0]))).unwrap();
        let err = load_err(&path, &[spec("x", 10, &["batch", "2"])]);
        assert!(err.contains("value 70000 at sample 1, index [0, 0] is beyond the range"), "{err}");
        assert!(err.contains("float16"), "{err}");
        std::fs::write(&path, npy_raw("<U3", &[1], false, &[0; 12])).unwrap();
        let err = load_err(&path, &[spec("x", 1, &["?"])]);
        assert!(err.contains("dtype '<U3' is not supported"), "{err}");
        let err = load_err(&path, &[spec("x", 8, &["?"])]);
        assert!(err.contains("dtype '<U3'") || err.contains("string"), "{err}");
    }

    #[test]
    fn non_finite_values_name_the_sample_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let mut values = iota(12);
        values[9] = f32::NAN;
        std::fs::write(&path, npy(&array(&[2, 2, 3], values))).unwrap();
        let err = load_err(&path, &[spec("x", 1, &["2", "3"])]);
        assert!(err.contains("input 'x': float32 data holds NaN at sample 1, index [1, 0]"), "{err}");
        let mut values = iota(6);
        values[4] = f32::NEG_INFINITY;
        std::fs::write(&path, npy(&array(&[2, 3], values))).unwrap();
        let err = load_err(&path, &[spec("x", 1, &["2", "3"])]);
        assert!(err.contains("-inf at sample 0, index [1, 1]"), "{err}");
    }

    #[test]
    fn truncated_and_corrupt_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let mut bytes = npy(&array(&[2, 3], iota(6)));
        bytes.truncate(bytes.len() - 4);
        std::fs::write(&path, &bytes).unwrap();
        let err = load_err(&path, &[spec("x", 1, &["batch", "3"])]);
        assert!(err.contains("needs 24 bytes of data, the file holds 20"), "{err}");
        std::fs::write(&path, b"hello").unwrap();
        assert!(load_err(&path, &[spec("x", 1, &["batch", "3"])]).contains("not a valid .npy array"));
        let path = dir.path().join("x.npz");
        std::fs::write(&path, b"hello").unwrap();
        assert!(load_err(&path, &[spec("x", 1, &["batch", "3"])]).contains("not a valid .npz archive"));
        let path = dir.path().join("x.safetensors");
        std::fs::write(&path, b"hello world").unwrap();
        assert!(load_err(&path, &[spec("x", 1, &["batch", "3"])]).contains("not a valid .safetensors file"));
        let missing = dir.path().join("missing.npy");
        assert!(load_err(&missing, &[spec("x", 1, &["batch", "3"])]).contains("cannot read"));
        assert!(load_err(&dir.path().join("nowhere"), &[spec("x", 1, &["batch", "3"])]).contains("cannot read"));
    }
}
