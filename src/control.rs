//! How a running job is watched and stopped from outside: a progress bar, a cancel flag. Every
//! long step (calibration samples, accuracy-target trials) takes these options.

use crate::error::{Error, Result};

/// How a job ([`crate::run_with`]) reports progress and is stopped.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Show a progress bar over calibration samples (when stderr is a terminal).
    pub progress: bool,
    /// Set from another thread to stop the job: calibration checks it before each sample (and
    /// each accuracy-target trial) and the job returns [`Error::Cancelled`], writing nothing.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl RunOptions {
    /// [`Error::Cancelled`] once `cancel` is set.
    pub fn check_cancelled(&self) -> Result<()> {
        match &self.cancel {
            Some(flag) if flag.load(std::sync::atomic::Ordering::Relaxed) => Err(Error::Cancelled),
            _ => Ok(()),
        }
    }
}
