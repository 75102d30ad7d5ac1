//! The crate's error type. Every variant names what failed: the key path in Cargo.toml (which
//! names the model, e.g. `package.metadata.quantize.models.digits.bits`) or the file.

use std::path::PathBuf;

/// Everything that can make quantize-build fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A declaration in `[package.metadata.quantize]` has an unknown key or a bad value, or a
    /// job failed because of one (a quality gate, a missing file).
    #[error("{key}: {message}")]
    Key {
        /// The full key path, e.g. `package.metadata.quantize.models.digits.bits`.
        key: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// Quantizing a model failed for a reason that is not one key's fault (a malformed model, a
    /// NaN weight...).
    #[error("{key}: model '{model}': {source}")]
    Job {
        /// The declared model name.
        model: String,
        /// Its table, e.g. `package.metadata.quantize.models.digits`.
        key: String,
        /// The quantizer's error.
        source: Box<quantize_rs::Error>,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Cargo.toml is not valid TOML.
    #[error("{}: {message}", path.display())]
    Toml {
        /// The manifest.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A cache entry whose files differ from what its record says (truncated or edited since).
    #[error("{}: {message}; the next build or `cargo quantize` quantizes the model anew", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What differs.
        message: String,
    },
    /// A cache entry or a manifest in OUT_DIR is not what this version writes.
    #[error("{}: {message}; delete it and build again", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An environment variable cargo sets for build scripts is missing.
    #[error(
        "environment variable {0} is not set: quantize_build::run() must be called from a build script (build.rs); elsewhere use quantize_build::Builder with explicit paths"
    )]
    NotABuildScript(&'static str),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
