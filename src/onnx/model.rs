//! Loading and saving ONNX models: from a path or from bytes, external-data tensors resolved on
//! load (paths confined to the model's folder; large payloads mapped, not read: see
//! `onnx::mapped`) and written on save when the model would pass protobuf's 2 GiB limit, saves
//! streamed to disk tensor by tensor, and atomic writes that never leave a half-written file.

use std::fs;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use crate::error::{Error, Result};
use crate::onnx::graph::for_each_tensor_mut;
use crate::onnx::mapped::{MAP_MIN_BYTES, SPILL_MIN_BYTES, copy_range, file_range, release};
use crate::onnx::proto::{ModelProto, StringStringEntryProto, TensorProto, tensor_proto::DataLocation};

/// Protobuf cannot encode a message of 2 GiB or more.
pub const PROTOBUF_LIMIT: u64 = (1 << 31) - 1;

/// A decoded ONNX model and where it came from.
#[derive(Debug, Clone)]
pub struct Model {
    /// The protobuf message.
    pub proto: ModelProto,
    /// The file it was read from, if any.
    pub path: Option<PathBuf>,
}

/// How [`Model::save`] writes.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// Allow the output to be the very file the model was loaded from.
    pub force: bool,
    /// Above this encoded size, large tensors go to an external-data file beside the model.
    pub external_data_threshold: u64,
    /// Tensors at least this many bytes are moved out when external data is written.
    pub external_min_tensor_bytes: usize,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions { force: false, external_data_threshold: PROTOBUF_LIMIT, external_min_tensor_bytes: 1024 }
    }
}

fn origin(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_else(|| "<bytes>".into())
}

impl Model {
    /// Reads a model file; tensors stored as external data are found beside it (those of 1 MiB or
    /// more are mapped: the data file must not be truncated while the model lives).
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|source| Error::Read { path: path.into(), source })?;
        let base = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
        let mut m = Model::decode(Bytes::from(bytes), Some(path), base)?;
        m.path = Some(path.to_path_buf());
        Ok(m)
    }

    /// Decodes a model from bytes. External-data tensors are resolved against `base_dir`; without
    /// one they are an error.
    pub fn from_bytes(bytes: impl Into<Bytes>, base_dir: Option<&Path>) -> Result<Model> {
        Model::decode(bytes.into(), None, base_dir)
    }

    fn decode(bytes: Bytes, path: Option<&Path>, base_dir: Option<&Path>) -> Result<Model> {
        let mut proto = ModelProto::decode(bytes).map_err(|source| Error::Decode { origin: origin(path), source })?;
        if proto.graph.is_none() {
            return Err(Error::InvalidModel(format!("{} has no graph", origin(path))));
        }
        let graph = proto.graph.as_mut().expect("checked");
        for_each_tensor_mut(graph, &mut |t| load_external(t, base_dir))?;
        Ok(Model { proto, path: None })
    }

    /// The main graph.
    pub fn graph(&self) -> &crate::onnx::proto::GraphProto {
        self.proto.graph.as_ref().expect("a Model always has a graph")
    }

    /// The main graph, mutably.
    pub fn graph_mut(&mut self) -> &mut crate::onnx::proto::GraphProto {
        self.proto.graph.as_mut().expect("a Model always has a graph")
    }

    /// Version of the default (`ai.onnx`) opset the model imports.
    pub fn opset(&self) -> Option<i64> {
        self.proto
            .opset_import
            .iter()
            .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
            .and_then(|o| o.version)
    }

    /// The model as protobuf bytes (all tensors inline).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.proto.encode_to_vec()
    }

    /// Writes the model to `path` atomically: a temporary file in the same folder, renamed into
    /// place, so readers see the old file or the new one, never a part. Above
    /// `opts.external_data_threshold` bytes, large tensors go to `<file name>.data` beside it.
    pub fn save(&self, path: impl AsRef<Path>, opts: &SaveOptions) -> Result<()> {
        let path = path.as_ref();
        check_output(path, self.path.as_deref(), opts.force)?;
        let dir = parent_dir(path);
        if self.proto.encoded_len() as u64 <= opts.external_data_threshold {
            return write_atomic_with(path, |w| encode_into(&self.proto, w));
        }
        let file_name = path
            .file_name()
            .ok_or_else(|| Error::Write { path: path.into(), source: std::io::Error::other("not a file path") })?;
        let data_name = format!("{}.data", file_name.to_string_lossy());
        let data_path = dir.join(&data_name);
        // The payloads are shared with `self`, not copied: they are written one after the other.
        let mut proto = self.proto.clone();
        let mut payloads: Vec<(u64, Bytes)> = Vec::new();
        let mut end = 0u64;
        let min = opts.external_min_tensor_bytes;
        for_each_tensor_mut(proto.graph.as_mut().expect("a Model always has a graph"), &mut |t| {
            if let Some(raw) = t.raw_data.take_if(|r| r.len() >= min) {
                // Page-aligned offsets let runtimes map tensors straight from the file.
                let offset = end.next_multiple_of(4096);
                end = offset + raw.len() as u64;
                let entry = |k: &str, v: String| StringStringEntryProto { key: Some(k.into()), value: Some(v) };
                t.external_data = vec![
                    entry("location", data_name.clone()),
                    entry("offset", offset.to_string()),
                    entry("length", raw.len().to_string()),
                ];
                t.data_location = Some(DataLocation::External as i32);
                payloads.push((offset, raw));
            }
            Ok(())
        })?;
        if proto.encoded_len() as u64 > PROTOBUF_LIMIT {
            return Err(Error::Write {
                path: path.into(),
                source: std::io::Error::other("the model is over 2 GiB even with its tensors stored outside"),
            });
        }
        write_atomic_with(&data_path, |w| {
            let mut at = 0u64;
            for (offset, raw) in payloads {
                std::io::copy(&mut std::io::repeat(0).take(offset - at), w)?;
                w.write_payload(&raw)?;
                release(&raw);
                at = offset + raw.len() as u64;
            }
            Ok(())
        })?;
        write_atomic(path, &proto.encode_to_vec())
    }
}

/// Encodes `proto` into `out` as `encode_to_vec` would, without holding the encoding in memory:
/// large payloads go straight from where they are (mapped files included) to `out`.
fn encode_into(proto: &ModelProto, out: &mut Output) -> std::io::Result<()> {
    let mut sink = Sink { out, buf: Vec::with_capacity(SINK_BUFFER), error: None };
    proto.encode(&mut sink).map_err(std::io::Error::other)?;
    sink.flush_buffer();
    sink.error.map_or(Ok(()), Err)
}

const SINK_BUFFER: usize = 1 << 20;

/// A `BufMut` that writes through to a file, remembering the first error (`BufMut` has no way to
/// return one).
struct Sink<'a> {
    out: &'a mut Output,
    buf: Vec<u8>,
    error: Option<std::io::Error>,
}

impl Sink<'_> {
    fn write(&mut self, data: &[u8]) {
        if self.error.is_none()
            && let Err(e) = self.out.write_all(data)
        {
            self.error = Some(e);
        }
    }

    /// [`Sink::write`] of a payload, which the kernel copies when it waits in the scratch file.
    fn write_payload(&mut self, data: &[u8]) {
        if self.error.is_none()
            && let Err(e) = self.out.write_payload(data)
        {
            self.error = Some(e);
        }
    }

    fn flush_buffer(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.write(&buf);
        self.buf = buf;
        self.buf.clear();
    }
}

// SAFETY: `chunk_mut` hands out the spare capacity of `buf`, and `advance_mut` only counts bytes
// inside it as written.
unsafe impl bytes::BufMut for Sink<'_> {
    fn remaining_mut(&self) -> usize {
        isize::MAX as usize
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        assert!(cnt <= self.buf.capacity() - self.buf.len(), "advanced past the chunk");
        // SAFETY: the caller initialised `cnt` bytes of the chunk `chunk_mut` returned.
        unsafe { self.buf.set_len(self.buf.len() + cnt) };
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        if self.buf.len() == self.buf.capacity() {
            self.flush_buffer();
        }
        bytes::buf::UninitSlice::uninit(self.buf.spare_capacity_mut())
    }

    fn put_slice(&mut self, src: &[u8]) {
        // Large slices go straight to the output: a payload waiting in the scratch file (at least
        // SPILL_MIN_BYTES) is copied by the kernel, anything else written as it is.
        if src.len() >= SINK_BUFFER || src.len() as u64 >= SPILL_MIN_BYTES {
            self.flush_buffer();
            self.write_payload(src);
        } else {
            if self.buf.capacity() - self.buf.len() < src.len() {
                self.flush_buffer();
            }
            self.buf.extend_from_slice(src);
        }
        if src.len() as u64 >= SPILL_MIN_BYTES {
            release(src);
        }
    }

    fn put<T: bytes::Buf>(&mut self, mut src: T) {
        while src.has_remaining() {
            let n = src.chunk().len();
            self.put_slice(src.chunk());
            src.advance(n);
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Refuses to write over the input model (unless forced) or into a folder that does not exist.
pub fn check_output(path: &Path, input: Option<&Path>, force: bool) -> Result<()> {
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(Error::MissingOutputDir { path: dir.into() });
    }
    if !force
        && let (Some(input), Ok(out)) = (input, path.canonicalize())
        && input.canonicalize().is_ok_and(|i| i == out)
    {
        return Err(Error::WouldOverwrite { path: path.into() });
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// A file being written through a buffer, which payloads waiting in the scratch file bypass.
struct Output {
    w: BufWriter<tempfile::NamedTempFile>,
}

impl Output {
    /// Writes `data`; when it lies in the scratch file (see `onnx::mapped`), the kernel copies
    /// it from there (the same bytes, without reading them through the mapping).
    fn write_payload(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut done = 0;
        if let Some((file, offset)) = file_range(data) {
            self.w.flush()?;
            done = copy_range(&file, offset, self.w.get_ref().as_file(), data.len());
        }
        self.w.write_all(&data[done..])
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.w.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.w.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// [`write_atomic`] of what `write` writes, through a buffer.
fn write_atomic_with(path: &Path, write: impl FnOnce(&mut Output) -> std::io::Result<()>) -> Result<()> {
    let dir = parent_dir(path);
    let werr = |source| Error::Write { path: path.into(), source };
    sweep_stale_temporaries(dir);
    let prefix = format!("{TEMP_PREFIX}{}-", std::process::id());
    let tmp = tempfile::Builder::new().prefix(&prefix).suffix(".tmp").tempfile_in(dir).map_err(werr)?;
    let mut out = Output { w: BufWriter::with_capacity(SINK_BUFFER, tmp) };
    write(&mut out).map_err(werr)?;
    let tmp = out.w.into_inner().map_err(|e| werr(e.into_error()))?;
    tmp.as_file().sync_all().map_err(werr)?;
    tmp.persist(path).map_err(|e| werr(e.error))?;
    Ok(())
}

/// Temporary files of a save in progress: `.quantize-rs-<pid>-<random>.tmp`, beside the output.
const TEMP_PREFIX: &str = ".quantize-rs-";

/// Removes the temporaries that saves killed midway (SIGKILL, power loss) left in `dir`: those
/// whose writing process no longer runs. Where that cannot be known (no `/proc`), nothing is
/// removed; a file that cannot be removed is left as it is.
fn sweep_stale_temporaries(dir: &Path) {
    let proc_root = Path::new("/proc/self");
    if !proc_root.exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)).filter(|n| n.ends_with(".tmp")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn external_entry<'a>(t: &'a TensorProto, key: &str) -> Option<&'a str> {
    t.external_data.iter().find(|e| e.key.as_deref() == Some(key)).and_then(|e| e.value.as_deref())
}

/// Replaces an external-data reference by the bytes it points to, after checking that the
/// location stays inside the model's folder and the range inside the file.
fn load_external(t: &mut TensorProto, base_dir: Option<&Path>) -> Result<()> {
    if t.data_location != Some(DataLocation::External as i32) {
        return Ok(());
    }
    let tensor = crate::onnx::tensor::name_of(t).to_string();
    let bad = |reason: String| Error::ExternalData { tensor: tensor.clone(), reason };
    let location = external_entry(t, "location").ok_or_else(|| bad("has no 'location' key".into()))?;
    let rel = Path::new(location);
    let escapes = rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if rel.is_absolute() || escapes || location.is_empty() {
        return Err(bad(format!(
            "location '{location}' is absolute or leaves the model's folder; external files must sit beside the model"
        )));
    }
    let base = base_dir.ok_or_else(|| {
        bad(format!("refers to file '{location}', but the model was given as bytes; load it from its path instead"))
    })?;
    let file = base.join(rel);
    let canon_base = base.canonicalize().map_err(|source| Error::Read { path: base.into(), source })?;
    let canon = file.canonicalize().map_err(|source| Error::Read { path: file.clone(), source })?;
    if !canon.starts_with(&canon_base) {
        return Err(bad(format!("location '{location}' resolves outside the model's folder (through a link)")));
    }
    let parse = |key: &str| -> Result<Option<u64>> {
        external_entry(t, key)
            .map(|v| v.parse::<u64>().map_err(|_| bad(format!("'{key}' is '{v}', not a byte count"))))
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let length = parse("length")?;
    let mut f = fs::File::open(&canon).map_err(|source| Error::Read { path: file.clone(), source })?;
    let size = f.metadata().map_err(|source| Error::Read { path: file.clone(), source })?.len();
    let length = length.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(bad(format!(
            "range offset {offset} + length {length} passes the end of '{location}' ({size} bytes); the data file is truncated or does not belong to this model"
        )));
    }
    if let Some(needed) = byte_size(t).map_err(&bad)?
        && needed != length
    {
        return Err(bad(format!(
            "range of '{location}' holds {length} bytes, but the tensor's dims {:?} of {} need {needed}; the data file or the model is corrupt",
            t.dims,
            crate::onnx::proto::dtype::name(t.data_type.unwrap_or(0))
        )));
    }
    let payload = if length >= MAP_MIN_BYTES {
        crate::onnx::mapped::map(&f, offset, length).map_err(|source| Error::Read { path: file.clone(), source })?
    } else {
        let mut buf = buffer_for(length).map_err(|m| bad(format!("in '{location}' {m}")))?;
        f.seek(SeekFrom::Start(offset)).map_err(|source| Error::Read { path: file.clone(), source })?;
        (&mut f).take(length).read_to_end(&mut buf).map_err(|source| Error::Read { path: file.clone(), source })?;
        if buf.len() as u64 != length {
            return Err(bad(format!(
                "'{location}' ended after {} of {length} bytes; the file changed while it was read",
                buf.len()
            )));
        }
        Bytes::from(buf)
    };
    t.raw_data = Some(payload);
    t.external_data.clear();
    t.data_location = None;
    Ok(())
}

/// The bytes a tensor of a fixed-size type takes, from its dims (checked: an overflow or a
/// negative dimension is an error); `None` for types whose size the dims do not give (strings,
/// types this crate does not know).
fn byte_size(t: &TensorProto) -> std::result::Result<Option<u64>, String> {
    use crate::onnx::proto::dtype;
    let bits: u64 = match t.data_type.unwrap_or(0) {
        dtype::UINT4 | dtype::INT4 | 23 => 4,
        dtype::UINT8 | dtype::INT8 | dtype::BOOL | 17..=20 => 8,
        dtype::FLOAT16 | 4 | 5 | 16 => 16,
        dtype::FLOAT | dtype::INT32 | 12 => 32,
        dtype::INT64 | dtype::DOUBLE | 13 | 14 => 64,
        15 => 128,
        _ => return Ok(None),
    };
    let count = crate::onnx::tensor::element_count(t)? as u64;
    count
        .checked_mul(bits)
        .map(|b| Some(b.div_ceil(8)))
        .ok_or_else(|| format!("has dims {:?} too large to hold", t.dims))
}

/// Bytes of memory the system can still give without swapping (Linux's `MemAvailable`), and no
/// more than this process's memory cgroup allows, when known.
pub(crate) fn memory_available() -> Option<u64> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    let kib = info.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.trim().strip_suffix("kB")?.trim();
    let system = kib.parse::<u64>().ok()?.checked_mul(1024)?;
    Some(cgroup_limit().map_or(system, |l| l.min(system)))
}

/// The memory limit of this process's cgroup (v2 `memory.max` or v1 `memory.limit_in_bytes`),
/// when there is one.
fn cgroup_limit() -> Option<u64> {
    let groups = fs::read_to_string("/proc/self/cgroup").ok()?;
    groups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        let file = match controllers {
            "" => Path::new("/sys/fs/cgroup").join(path).join("memory.max"),
            c if c.split(',').any(|c| c == "memory") => {
                Path::new("/sys/fs/cgroup/memory").join(path).join("memory.limit_in_bytes")
            }
            _ => return None,
        };
        // "max" (v2) and the huge page-rounded i64::MAX (v1) both mean no limit.
        fs::read_to_string(file).ok()?.trim().parse::<u64>().ok().filter(|&l| l < 1 << 60)
    })
}

/// An empty buffer with room for `len` bytes that a file says it holds, or a message ("needs
/// N bytes, more than ...") when that much memory cannot be had: a size read from a file is
/// never allocated blindly (an allocation failure would abort the process).
pub(crate) fn buffer_for(len: u64) -> std::result::Result<Vec<u8>, String> {
    if let Some(available) = memory_available().filter(|&a| len > a) {
        return Err(format!("needs {len} bytes, more than the {available} bytes of memory available"));
    }
    let mut buf = Vec::new();
    usize::try_from(len)
        .ok()
        .and_then(|n| buf.try_reserve_exact(n).ok())
        .ok_or_else(|| format!("needs {len} bytes, more than this process can allocate"))?;
    Ok(buf)
}

/// The IR version a model needs for a default-domain opset (from ONNX's versioning table).
pub fn ir_version_for_opset(opset: i64) -> i64 {
    match opset {
        ..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        _ => 11,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_save_sweeps_the_temporaries_of_dead_saves_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // pid_max is at most 2^22 on Linux: no process has this pid.
        let dead = d.join(".quantize-rs-999999999-abc.tmp");
        let live = d.join(format!(".quantize-rs-{}-def.tmp", std::process::id()));
        let other = d.join(".quantize-rs-notes.tmp");
        for f in [&dead, &live, &other] {
            std::fs::write(f, b"x").unwrap();
        }
        write_atomic(&d.join("out.onnx"), b"model").unwrap();
        assert!(!dead.exists(), "a dead save's temporary is removed");
        assert!(live.exists() && other.exists(), "a running save's file and files not named by a pid stay");
        assert_eq!(std::fs::read(d.join("out.onnx")).unwrap(), b"model");
    }

    #[test]
    fn payloads_from_the_scratch_file_save_as_the_same_bytes() {
        use crate::onnx::proto::GraphProto;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut scratch = crate::onnx::mapped::Scratch::new_in(d).unwrap();
        // Sizes around the sink's buffer and the scratch file's threshold, odd ones included.
        let sizes = [SINK_BUFFER + 3, 70_000, 10, SINK_BUFFER - 1, 3 * SINK_BUFFER];
        let payloads: Vec<Vec<u8>> =
            sizes.iter().enumerate().map(|(k, &n)| (0..n).map(|i| (i * 31 + k) as u8).collect()).collect();
        let model = |kept: bool, scratch: &mut crate::onnx::mapped::Scratch| {
            let initializer = payloads
                .iter()
                .enumerate()
                .map(|(k, p)| TensorProto {
                    name: Some(format!("t{k}")),
                    dims: vec![p.len() as i64],
                    data_type: Some(crate::onnx::proto::dtype::UINT8),
                    raw_data: Some(if kept { scratch.keep(p.clone()).unwrap() } else { Bytes::from(p.clone()) }),
                    ..TensorProto::default()
                })
                .collect();
            let graph = GraphProto { initializer, ..GraphProto::default() };
            Model { proto: ModelProto { graph: Some(graph), ..ModelProto::default() }, path: None }
        };
        let (plain, kept) = (model(false, &mut scratch), model(true, &mut scratch));
        for threshold in [PROTOBUF_LIMIT, 1000] {
            let opts = SaveOptions { external_data_threshold: threshold, ..SaveOptions::default() };
            for sub in ["a", "b"] {
                std::fs::create_dir_all(d.join(sub)).unwrap();
            }
            plain.save(d.join("a/m.onnx"), &opts).unwrap();
            kept.save(d.join("b/m.onnx"), &opts).unwrap();
            let read = |f: &str| std::fs::read(d.join(f)).unwrap();
            assert_eq!(read("a/m.onnx"), read("b/m.onnx"), "threshold {threshold}");
            if threshold == 1000 {
                assert_eq!(read("a/m.onnx.data"), read("b/m.onnx.data"));
            } else {
                assert_eq!(read("a/m.onnx"), plain.to_bytes());
            }
        }
    }
}
