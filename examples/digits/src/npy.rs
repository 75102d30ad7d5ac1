//! Just enough of the `.npy` format for the committed test split: little-endian float32 and
//! int64 arrays in C order, format versions 1 to 3.

use std::path::Path;

/// An array read from a `.npy` file.
pub struct Array<T> {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values in C order.
    pub data: Vec<T>,
}

fn header(bytes: &[u8], path: &Path) -> Result<(String, usize), String> {
    let bad = |why: &str| format!("{}: not a .npy file ({why})", path.display());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("no magic"));
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(bad(&format!("version {v}"))),
    };
    let text = bytes.get(start..start + len).ok_or_else(|| bad("truncated header"))?;
    Ok((String::from_utf8_lossy(text).into_owned(), start + len))
}

fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}':"))? + key.len() + 3;
    Some(header[at..].trim_start())
}

/// Reads an array whose dtype descriptor is `descr` (e.g. `<f4`), decoding each `N`-byte value.
pub fn read<T, const N: usize>(path: &Path, descr: &str, decode: fn([u8; N]) -> T) -> Result<Array<T>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (header, offset) = header(&bytes, path)?;
    let found = field(&header, "descr").and_then(|d| d.split('\'').nth(1)).unwrap_or("?");
    if found != descr {
        return Err(format!("{}: expected dtype {descr}, found {found}", path.display()));
    }
    if field(&header, "fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err(format!("{}: Fortran-order arrays are not supported", path.display()));
    }
    let shape_text = field(&header, "shape").and_then(|s| s.strip_prefix('(')).and_then(|s| s.split(')').next());
    let shape: Vec<usize> = shape_text
        .ok_or_else(|| format!("{}: no shape in header", path.display()))?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("{}: bad dimension '{s}'", path.display())))
        .collect::<Result<_, _>>()?;
    let count: usize = shape.iter().product();
    let body = &bytes[offset..];
    if body.len() != count * N {
        return Err(format!("{}: {} data bytes for {count} values of {N} bytes", path.display(), body.len()));
    }
    let data = body.chunks_exact(N).map(|c| decode(c.try_into().expect("chunks of N"))).collect();
    Ok(Array { shape, data })
}
