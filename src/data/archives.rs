//! `.npz` archives and `.safetensors` files: one named array per model input.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::Path;

use super::*;
use crate::error::{Error, Result};

/// Checks that the names in a file are exactly the inputs' names.
pub(super) fn match_names(path: &Path, inputs: &[InputSpec], found: &[String], what: &str) -> Result<()> {
    for name in found {
        if !inputs.iter().any(|i| &i.name == name) {
            return Err(Error::Data {
                path: path.to_path_buf(),
                input: None,
                message: format!(
                    "{what} '{name}' matches no model input; the model's inputs are {} (name each {what} after \
                     the input it feeds)",
                    quoted(inputs.iter().map(|i| i.name.as_str()))
                ),
            });
        }
    }
    for input in inputs {
        if !found.contains(&input.name) {
            return Err(Error::Data {
                path: path.to_path_buf(),
                input: Some(input.name.clone()),
                message: format!(
                    "missing: the file has no {what} of that name (it holds {})",
                    if found.is_empty() { "nothing".into() } else { quoted(found.iter().map(String::as_str)) }
                ),
            });
        }
    }
    Ok(())
}

/// Reads one array per input from a `.npz` archive, in input order.
pub(super) fn read_npz(path: &Path, inputs: &[InputSpec]) -> Result<Vec<RawArray>> {
    let fail = |input: Option<&str>, message: String| Error::Data {
        path: path.to_path_buf(),
        input: input.map(str::to_string),
        message,
    };
    let file = File::open(path).map_err(|source| read_error(path, source))?;
    let mut archive =
        zip::ZipArchive::new(BufReader::new(file)).map_err(|e| fail(None, format!("not a valid .npz archive: {e}")))?;
    // numpy stores array `x` as the entry `x.npy`.
    let mut entries = HashMap::new();
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(|e| fail(None, format!("not a valid .npz archive: {e}")))?;
        if entry.is_dir() {
            continue;
        }
        let entry_name = entry.name().map_err(|e| fail(None, format!("not a valid .npz archive: {e}")))?.to_string();
        let name = entry_name.strip_suffix(".npy").unwrap_or(&entry_name).to_string();
        entries.insert(name, i);
    }
    let mut names: Vec<String> = entries.keys().cloned().collect();
    names.sort();
    match_names(path, inputs, &names, "array")?;
    inputs
        .iter()
        .map(|input| {
            let mut entry = archive
                .by_index(entries[&input.name])
                .map_err(|e| fail(Some(&input.name), format!("cannot read the array: {e}")))?;
            let holds = entry.size();
            read_npy(&mut entry, holds).map_err(|m| fail(Some(&input.name), format!("not a valid .npy array: {m}")))
        })
        .collect()
}

/// Reads one tensor per input from a `.safetensors` file, in input order.
pub(super) fn read_safetensors(path: &Path, inputs: &[InputSpec]) -> Result<Vec<RawArray>> {
    use safetensors::Dtype;
    let bytes = std::fs::read(path).map_err(|source| read_error(path, source))?;
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        input: None,
        message: format!("not a valid .safetensors file: {e}"),
    })?;
    let mut names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
    names.sort();
    match_names(path, inputs, &names, "tensor")?;
    inputs
        .iter()
        .map(|input| {
            let view = file.tensor(&input.name).map_err(|e| Error::Data {
                path: path.to_path_buf(),
                input: Some(input.name.clone()),
                message: format!("cannot read the tensor: {e}"),
            })?;
            let ty = match view.dtype() {
                Dtype::BOOL => FileType::Bool,
                Dtype::U8 => FileType::U8,
                Dtype::I8 => FileType::I8,
                Dtype::U16 => FileType::U16,
                Dtype::I16 => FileType::I16,
                Dtype::U32 => FileType::U32,
                Dtype::I32 => FileType::I32,
                Dtype::U64 => FileType::U64,
                Dtype::I64 => FileType::I64,
                Dtype::F16 => FileType::F16,
                Dtype::BF16 => FileType::Bf16,
                Dtype::F32 => FileType::F32,
                Dtype::F64 => FileType::F64,
                other => {
                    return Err(Error::Data {
                        path: path.to_path_buf(),
                        input: Some(input.name.clone()),
                        message: format!("dtype {other:?} is not supported; use bool, integer or float tensors"),
                    });
                }
            };
            // safetensors checked that the data length matches the shape and dtype.
            Ok(RawArray { shape: view.shape().to_vec(), values: Values::decode(ty, true, view.data()) })
        })
        .collect()
}
