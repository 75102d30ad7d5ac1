//! Folders of array files, one or more samples each, taken in file name order.

use std::path::{Path, PathBuf};

use super::*;
use crate::error::{Error, Result};
use crate::recipe::ImagePreprocess;

pub(super) const ARRAY_EXTENSIONS: [&str; 3] = ["npy", "npz", "safetensors"];
pub(super) const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

pub(super) fn extension_of(path: &Path) -> String {
    path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase()
}

/// The array files of `dir` in name order, or `None` when it holds none (then it is read as a
/// folder of images). A folder holding both arrays and images is ambiguous: an error.
pub(super) fn list_arrays(dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    let mut arrays = vec![];
    let mut images = 0;
    for entry in std::fs::read_dir(dir).map_err(|source| read_error(dir, source))? {
        let path = entry.map_err(|source| read_error(dir, source))?.path();
        if !path.is_file() {
            continue;
        }
        let ext = extension_of(&path);
        if ARRAY_EXTENSIONS.contains(&ext.as_str()) {
            arrays.push(path);
        } else if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            images += 1;
        }
    }
    if arrays.is_empty() {
        return Ok(None);
    }
    if images > 0 {
        return Err(Error::Data {
            path: dir.to_path_buf(),
            input: None,
            message: format!(
                "the folder holds both array files ({}) and images ({images}); keep one kind per folder",
                arrays.len()
            ),
        });
    }
    arrays.sort();
    Ok(Some(arrays))
}

/// The samples of every file in `files`, in order, up to `limit`.
pub(super) fn load_array_files(
    files: &[PathBuf],
    inputs: &[InputSpec],
    image: Option<&ImagePreprocess>,
    limit: Option<usize>,
) -> Result<Vec<Sample>> {
    let mut samples = vec![];
    for file in files {
        let left = limit.map(|l| l - samples.len());
        if left == Some(0) {
            break;
        }
        samples.extend(load_samples(file, inputs, image, left)?);
    }
    Ok(samples)
}
