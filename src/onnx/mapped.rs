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
static LIVE: Mutex<BTreeMap<usize, Weak<Mmap>>> = Mutex::new(BTreeMap::new());

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
    let len = usize::try_from(length).map_err(|_| std::io::Error::other("too large to map on this machine"))?;
    // SAFETY: the mapping is read-only; the file must not be truncated while it lives (module docs).
    let map = unsafe { MmapOptions::new().offset(offset).len(len).map(file)? };
    // Only a hint: the kernel reads ahead further when told the payload is read in order.
    let _ = map.advise(memmap2::Advice::Sequential);
    let map = Arc::new(map);
    if let Ok(mut live) = LIVE.lock() {
        live.insert(map.as_ptr() as usize, Arc::downgrade(&map));
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
    let start = data.as_ptr() as usize;
    let Some(map) = LIVE.lock().ok().and_then(|live| {
        live.range(..=start).next_back().and_then(|(_, m)| m.upgrade()).filter(|m| {
            let base = m.as_ptr() as usize;
            start >= base && start + data.len() <= base + m.len()
        })
    }) else {
        return;
    };
    let base = map.as_ptr() as usize;
    // SAFETY: the mapping is read-only and backed by a file, so dropping its pages loses nothing:
    // the next touch reads them from the file again.
    let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, start - base, data.len()) };
}

/// An unnamed file that large payloads are moved to while a job runs, each mapped back as file-backed
/// `Bytes` (see the module docs). The file disappears with its last mapping.
pub struct Scratch {
    file: File,
    len: u64,
    dir: PathBuf,
}

impl Scratch {
    /// A scratch file in `dir` (which should be on a disk, not in memory).
    pub fn new_in(dir: &Path) -> Result<Scratch> {
        let file = tempfile::tempfile_in(dir).map_err(|source| Error::Write { path: dir.into(), source })?;
        Ok(Scratch { file, len: 0, dir: dir.into() })
    }

    /// `payload` as `Bytes`: in memory when small, else written to the scratch file and mapped.
    pub fn keep(&mut self, payload: Vec<u8>) -> Result<Bytes> {
        if (payload.len() as u64) < SPILL_MIN_BYTES {
            return Ok(Bytes::from(payload));
        }
        let err = |source| Error::Write { path: self.dir.join("<scratch file>"), source };
        let offset = self.len;
        self.file.write_all(&payload).map_err(err)?;
        self.len += payload.len() as u64;
        drop(payload);
        map(&self.file, offset, self.len - offset).map_err(err)
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
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the scratch file has no name");
    }
}
