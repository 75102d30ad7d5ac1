//! Tensor payloads that stay on disk: external data mapped instead of read, and a scratch file
//! that large payloads made while a job runs (quantized weights) are moved to. The engine sees
//! ordinary `Bytes`; the pages behind them are the file's, which the kernel reads on first touch
//! and may drop again under memory pressure (they are not anonymous memory), so a model larger
//! than memory can be quantized. [`release`] hands a payload's pages back once it has been used.
//!
//! A mapped file must not be truncated while it is mapped (the process would be killed by
//! SIGBUS on the next touch): input data files are the user's, and ONNX Runtime maps them the
//! same way; the scratch file has no name, so nothing else can reach it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions, UncheckedAdvice};

use crate::error::{Error, Result};

/// Payloads at least this large are mapped (or moved to the scratch file); smaller ones are
/// read (or kept) in memory, where a page-granular mapping would waste more than it saves.
pub const MAP_MIN_BYTES: u64 = 1 << 20;

/// Results at least this large go to the scratch file: smaller ones stay in memory. Small enough
/// that what stays (per-channel scales, the zero points of small tensors) is a sliver of the model;
/// large enough that a model's many tensors never approach the kernel's limit on mappings.
pub const SPILL_MIN_BYTES: u64 = 64 << 10;

/// Live mappings by start address, so that [`release`] can tell a mapped payload from memory it
/// must not touch.
static LIVE: Mutex<BTreeMap<usize, Live>> = Mutex::new(BTreeMap::new());

/// A registered mapping, and for the scratch file's, the file and the offset it starts at (so a
/// save can have the kernel copy the payload instead of reading it through the mapping).
struct Live {
    map: Weak<Mmap>,
    source: Option<Source>,
}

/// A mapped file and the offset its mapping starts at.
type Source = (Arc<File>, u64);

/// The owner of a mapping behind a `Bytes`; unregisters the mapping when the last `Bytes` goes.
struct Owner(Arc<Mmap>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Ok(mut live) = LIVE.lock() {
            live.remove(&(self.0.as_ptr() as usize));
        }
    }
}

/// `length` bytes of `file` from `offset`, mapped read-only (see the module docs).
pub fn map(file: &File, offset: u64, length: u64) -> std::io::Result<Bytes> {
    map_from(file, offset, length, None)
}

/// [`map`], registering `source` (the mapped file, shared) as where the bytes can be copied from.
fn map_from(file: &File, offset: u64, length: u64, source: Option<Arc<File>>) -> std::io::Result<Bytes> {
    let len = usize::try_from(length).map_err(|_| std::io::Error::other("too large to map on this machine"))?;
    // SAFETY: the mapping is read-only; the file must not be truncated while it lives (module docs).
    let map = unsafe { MmapOptions::new().offset(offset).len(len).map(file)? };
    // Only a hint: the kernel reads ahead further when told the payload is read in order.
    let _ = map.advise(memmap2::Advice::Sequential);
    let map = Arc::new(map);
    if let Ok(mut live) = LIVE.lock() {
        let source = source.map(|f| (f, offset));
        live.insert(map.as_ptr() as usize, Live { map: Arc::downgrade(&map), source });
    }
    Ok(Bytes::from_owner(Owner(map)))
}

/// Tells the kernel the pages behind `data` are not needed for now, when `data` lies in a mapping
/// made by [`map`]: they leave this process's resident memory and are read from the file again
/// if touched. Memory that is not such a mapping is left alone.
pub fn release(data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let Some((map, _)) = mapping_of(data) else {
        return;
    };
    let start = data.as_ptr() as usize;
    let base = map.as_ptr() as usize;
    // SAFETY: the mapping is read-only and backed by a file, so dropping its pages loses nothing:
    // the next touch reads them from the file again.
    let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, start - base, data.len()) };
}

/// The live mapping `data` lies in, with its source when registered.
fn mapping_of(data: &[u8]) -> Option<(Arc<Mmap>, Option<Source>)> {
    let start = data.as_ptr() as usize;
    let live = LIVE.lock().ok()?;
    let (_, entry) = live.range(..=start).next_back()?;
    let map = entry.map.upgrade()?;
    let base = map.as_ptr() as usize;
    (start >= base && start + data.len() <= base + map.len()).then(|| (map, entry.source.clone()))
}

/// The file `data` is a part of, and the offset it starts at there, when `data` lies in a
/// payload the scratch file holds (the file's bytes are then the same as `data`'s).
pub fn file_range(data: &[u8]) -> Option<(Arc<File>, u64)> {
    if data.is_empty() {
        return None;
    }
    let (map, source) = mapping_of(data)?;
    let (file, offset) = source?;
    Some((file, offset + (data.as_ptr() as usize - map.as_ptr() as usize) as u64))
}

/// Copies `len` bytes of `from` at `offset` to `to` at its current position (which advances), in
/// the kernel (`copy_file_range`: no pass through this process's memory). Returns how many bytes
/// it copied; the caller writes the rest itself (also when the call is unsupported, returning 0).
#[cfg(target_os = "linux")]
pub fn copy_range(from: &File, offset: u64, to: &File, len: usize) -> usize {
    use std::os::fd::AsRawFd;
    let mut done = 0usize;
    while done < len {
        let Ok(mut off_in) = libc::loff_t::try_from(offset + done as u64) else { break };
        // SAFETY: both descriptors are open files; `off_in` is a valid `loff_t` the call updates,
        // and a null output offset means the output file's own position.
        let n = unsafe {
            libc::copy_file_range(from.as_raw_fd(), &mut off_in, to.as_raw_fd(), std::ptr::null_mut(), len - done, 0)
        };
        match n {
            n if n > 0 => done += n as usize,
            n if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            // Unsupported here, an error (the caller's write reports it), or an early end.
            _ => break,
        }
    }
    done
}

/// Elsewhere nothing is copied by the kernel.
#[cfg(not(target_os = "linux"))]
pub fn copy_range(_from: &File, _offset: u64, _to: &File, _len: usize) -> usize {
    0
}

/// An unnamed file that large payloads are moved to while a job runs, each mapped back as file-backed
/// `Bytes` (see the module docs). The file disappears with its last mapping.
pub struct Scratch {
    file: Arc<File>,
    len: u64,
    dir: PathBuf,
}

impl Scratch {
    /// A scratch file in `dir` (which should be on a disk, not in memory).
    pub fn new_in(dir: &Path) -> Result<Scratch> {
        let file = tempfile::tempfile_in(dir).map_err(|source| Error::Write { path: dir.into(), source })?;
        Ok(Scratch { file: Arc::new(file), len: 0, dir: dir.into() })
    }

    /// `payload` as `Bytes`: in memory when small, else written to the scratch file and mapped.
    pub fn keep(&mut self, payload: Vec<u8>) -> Result<Bytes> {
        if (payload.len() as u64) < SPILL_MIN_BYTES {
            return Ok(Bytes::from(payload));
        }
        let err = |source| Error::Write { path: self.dir.join("<scratch file>"), source };
        let offset = self.len;
        (&*self.file).write_all(&payload).map_err(err)?;
        self.len += payload.len() as u64;
        drop(payload);
        map_from(&self.file, offset, self.len - offset, Some(self.file.clone())).map_err(err)
    }

    /// Bytes written to the scratch file so far.
    #[cfg(test)]
    fn written(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_payloads_read_back_and_survive_release() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Scratch::new_in(dir.path()).unwrap();
        let small = s.keep(vec![7; 10]).unwrap();
        let big: Vec<u8> = (0..3 * SPILL_MIN_BYTES as usize + 5).map(|i| (i % 251) as u8).collect();
        let kept = s.keep(big.clone()).unwrap();
        assert_eq!(s.written(), big.len() as u64, "small payloads stay in memory");
        assert_eq!(&small[..], &[7; 10]);
        release(&kept[100..]);
        release(&small);
        assert_eq!(&kept[..], &big[..], "released pages are read again from the file");
        assert_eq!(&small[..], &[7; 10], "memory that is not a mapping is left alone");
        assert!(file_range(&small).is_none());
        let (file, offset) = file_range(&kept[100..]).expect("a scratch payload has its file");
        assert_eq!(offset, 100);
        let out = tempfile::tempfile_in(dir.path()).unwrap();
        let n = copy_range(&file, offset, &out, kept.len() - 100);
        let mut copied = Vec::new();
        use std::io::{Read, Seek};
        (&out).seek(std::io::SeekFrom::Start(0)).unwrap();
        (&out).read_to_end(&mut copied).unwrap();
        assert_eq!(copied, &big[100..100 + n], "what the kernel copied is the payload's bytes");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the scratch file has no name");
    }
}
