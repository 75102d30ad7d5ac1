//! How a running job is watched, stopped and kept within memory: a progress bar, a cancel flag,
//! where large intermediate results wait. Every long step (quantizing the weights, calibration
//! samples, accuracy-target trials) takes these options.

use crate::error::{Error, Result};

/// How a job ([`crate::run_with`]) reports progress and is stopped.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Show progress bars: over the weights' bytes on large models, over calibration samples.
    pub progress: bool,
    /// Set from another thread to stop the job: calibration checks it before each sample (and
    /// each accuracy-target trial) and the job returns [`Error::Cancelled`], writing nothing.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Once the weights to quantize pass this many float bytes, the job streams them: each
    /// weight's payload is released once quantized and the quantized values wait in an unnamed
    /// scratch file until the model is saved, so memory holds the graph and a few tensors
    /// whatever the model's size (the output bytes are the same). Default 256 MiB.
    pub spill_above: u64,
    /// The folder of that scratch file (it should be on a disk: the output's folder is a good
    /// choice). Default: the input model's folder, else the system's temporary folder.
    pub scratch_dir: Option<std::path::PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { progress: false, cancel: None, spill_above: 256 << 20, scratch_dir: None }
    }
}

impl RunOptions {
    /// A progress bar over `total` bytes labelled `label`: hidden unless `progress` is set and
    /// the work is long (64 MiB or more).
    pub(crate) fn bytes_bar(&self, total: u64, label: &str) -> indicatif::ProgressBar {
        if !self.progress || total < 64 << 20 {
            return indicatif::ProgressBar::hidden();
        }
        let template = format!("{label} {{bar:30}} {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} {{elapsed}}");
        indicatif::ProgressBar::new(total)
            .with_style(indicatif::ProgressStyle::with_template(&template).expect("valid template"))
    }

    /// [`Error::Cancelled`] once `cancel` is set.
    pub fn check_cancelled(&self) -> Result<()> {
        match &self.cancel {
            Some(flag) if flag.load(std::sync::atomic::Ordering::Relaxed) => Err(Error::Cancelled),
            _ => Ok(()),
        }
    }
}

/// The most resident memory this process has used so far (Linux's `VmHWM`), when known.
pub fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().strip_suffix("kB")?.trim();
    kib.parse::<u64>().ok()?.checked_mul(1024)
}
