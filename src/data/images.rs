//! Folders of images, preprocessed as [`ImagePreprocess`] says.

use std::path::{Path, PathBuf};

use super::*;
use crate::error::{Error, Result};
use crate::recipe::ImagePreprocess;

/// The `.png` / `.jpg` / `.jpeg` files of `dir`, in name order.
pub(super) fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut images = vec![];
    let mut others = 0;
    for entry in std::fs::read_dir(dir).map_err(|source| read_error(dir, source))? {
        let path = entry.map_err(|source| read_error(dir, source))?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if path.is_file() && matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
            images.push(path);
        } else {
            others += 1;
        }
    }
    if images.is_empty() {
        return Err(Error::Data {
            path: dir.to_path_buf(),
            input: None,
            message: format!("the folder holds no .png or .jpeg images ({others} other entries)"),
        });
    }
    images.sort();
    Ok(images)
}

/// Loads `files` as images for the model's single input.
pub(super) fn load_images(
    path: &Path,
    files: &[PathBuf],
    inputs: &[InputSpec],
    image: Option<&ImagePreprocess>,
    limit: Option<usize>,
) -> Result<Vec<Sample>> {
    let [spec] = inputs else {
        return Err(Error::Data {
            path: path.to_path_buf(),
            input: None,
            message: format!(
                "images feed a model with one input, but this model has {} ({}); save the inputs as .npz or \
                 .safetensors with one array per input name",
                inputs.len(),
                quoted(inputs.iter().map(|i| i.name.as_str()))
            ),
        });
    };
    let fail = |message: String| Error::Data { path: path.to_path_buf(), input: Some(spec.name.clone()), message };
    let Some(pre) = image else {
        return Err(fail(
            "images need preprocessing: give the image settings (size, layout, channels, scale, mean, std)".into(),
        ));
    };
    let channels = match pre.channels.as_str() {
        "rgb" | "bgr" => 3,
        "gray" => 1,
        c => return Err(fail(format!("image channels: expected rgb, bgr or gray, got '{c}'"))),
    };
    if !matches!(pre.layout.as_str(), "nchw" | "nhwc") {
        return Err(fail(format!("image layout: expected nchw or nhwc, got '{}'", pre.layout)));
    }
    for (key, values) in [("mean", &pre.mean), ("std", &pre.std)] {
        if !(values.is_empty() || values.len() == 1 || values.len() == channels) {
            return Err(fail(format!(
                "image {key}: expected 1 or {channels} values for {} images, got {}",
                pre.channels,
                values.len()
            )));
        }
    }
    if let Some(s) = pre.std.iter().find(|s| !(s.is_finite() && **s != 0.0)) {
        return Err(fail(format!("image std: {s} cannot divide pixel values; use finite, non-zero values")));
    }
    if spec.dims.len() != 4 {
        return Err(fail(format!(
            "images give [1, C, H, W] or [1, H, W, C] tensors, but the input has shape {}; save the data as .npy",
            dims_text(&spec.dims)
        )));
    }
    // uint8 inputs take the pixels as they are: a model that wants them normalizes them itself.
    let raw_pixels = spec.elem_type == dtype::UINT8;
    if !(raw_pixels || matches!(spec.elem_type, 0 | dtype::FLOAT | dtype::FLOAT16 | dtype::DOUBLE)) {
        return Err(fail(format!(
            "images feed float or uint8 inputs, but this input is {}; save the data as .npy",
            dtype::name(spec.elem_type)
        )));
    }
    if raw_pixels && (pre.scale != 1.0 || !pre.mean.is_empty() || !pre.std.is_empty()) {
        return Err(fail(
            "the input takes uint8 pixels as they are: set image scale to 1 and give no mean or std".into(),
        ));
    }
    let files = &files[..limit.map_or(files.len(), |l| l.min(files.len()))];
    let mut samples = Vec::with_capacity(files.len());
    for file in files {
        let on_image = |message: String| Error::Data { path: file.clone(), input: Some(spec.name.clone()), message };
        let array = read_image(file, pre, channels, raw_pixels).map_err(on_image)?;
        let (split, sample_shape) = split_of(spec, &array.shape).map_err(on_image)?;
        check_shape(spec, &sample_shape, &mut Symbols::new()).map_err(|m| {
            on_image(format!("{m}; the image settings give size {:?} and {channels} channel(s)", pre.size))
        })?;
        samples.push(vec![convert(spec, &array.shape, array.values, split, &sample_shape).map_err(on_image)?]);
    }
    Ok(samples)
}

/// Largest width or height of an image decoded.
const MAX_SIDE: u32 = 16_384;
/// Largest decoded image, and largest preprocessed image (as f32), in bytes.
const MAX_DECODED: usize = 512 << 20;

/// One image as a batch of 1, preprocessed (or its 8-bit pixels as they are with `raw_pixels`).
pub(super) fn read_image(
    file: &Path,
    pre: &ImagePreprocess,
    channels: usize,
    raw_pixels: bool,
) -> std::result::Result<RawArray, String> {
    let [h, w] = pre.size;
    // The preprocessed image is held as bytes and as floats: its size is checked before any
    // image is decoded or resized.
    let pixels = h.checked_mul(w).filter(|&p| p > 0 && p.checked_mul(channels * 4).is_some_and(|b| b <= MAX_DECODED));
    let (Some(_), Ok(width), Ok(height)) = (pixels, u32::try_from(w), u32::try_from(h)) else {
        return Err(format!(
            "image size [{h}, {w}] is empty or over the limit of {MAX_DECODED} bytes per preprocessed image; give the \
             height and width the model takes"
        ));
    };
    let mut reader = image::ImageReader::open(file)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| format!("cannot read the image: {e}"))?;
    // A few bytes of PNG or JPEG can declare an image of gigapixels: decoding stops at the limits.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED as u64);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| match (&e, image::image_dimensions(file)) {
        (image::ImageError::Limits(_), Ok((iw, ih))) => format!(
            "the image is {iw}x{ih} pixels, over the decoding limits ({MAX_SIDE} pixels a side, {MAX_DECODED} \
             bytes decoded); shrink it first"
        ),
        _ => format!("cannot decode the image: {e}"),
    })?;
    let resized = if decoded.width() == width && decoded.height() == height {
        decoded
    } else {
        decoded.resize_exact(width, height, image::imageops::FilterType::Triangle)
    };
    // Interleaved HWC pixels, channels in the requested order.
    let hwc: Vec<u8> = match pre.channels.as_str() {
        "gray" => resized.to_luma8().into_raw(),
        "bgr" => resized.to_rgb8().pixels().flat_map(|p| [p.0[2], p.0[1], p.0[0]]).collect(),
        _ => resized.to_rgb8().into_raw(),
    };
    let per_channel = |values: &[f32], c: usize, default: f32| match values.len() {
        0 => default,
        1 => values[0],
        _ => values[c],
    };
    let (shape, order): (Vec<usize>, Vec<usize>) = if pre.layout == "nhwc" {
        (vec![1, h, w, channels], (0..hwc.len()).collect())
    } else {
        // Element (c, y, x) of CHW is element (y, x, c) of HWC.
        let idx = (0..channels).flat_map(|c| (0..h * w).map(move |p| p * channels + c)).collect();
        (vec![1, channels, h, w], idx)
    };
    if raw_pixels {
        return Ok(RawArray { shape, values: Values::U8(order.iter().map(|&i| hwc[i]).collect()) });
    }
    let values = order
        .iter()
        .map(|&i| {
            let c = i % channels;
            (f32::from(hwc[i]) * pre.scale - per_channel(&pre.mean, c, 0.0)) / per_channel(&pre.std, c, 1.0)
        })
        .collect();
    Ok(RawArray { shape, values: Values::F32(values) })
}
