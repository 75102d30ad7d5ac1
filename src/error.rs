//! The library's error type: every variant names the file, tensor, node or key that failed and,
//! where there is one, what the user can do about it.

use std::path::PathBuf;

/// Everything that can go wrong in quantize-rs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller stopped the job (`RunOptions::cancel`).
    #[error("cancelled: the job was stopped before it finished; nothing was written")]
    Cancelled,
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model.
    #[error("{origin}: not a valid ONNX model ({source}); check that the file is a complete .onnx model")]
    Decode {
        /// The file, or `<bytes>`.
        origin: String,
        /// The protobuf decoder's reason.
        source: prost::DecodeError,
    },
    /// Saving would overwrite the model that was read.
    #[error("refusing to overwrite the input model {}; choose another output path or pass --force", path.display())]
    WouldOverwrite {
        /// The input (and output) path.
        path: PathBuf,
    },
    /// The output folder does not exist.
    #[error("output folder {} does not exist; create it first", path.display())]
    MissingOutputDir {
        /// The folder.
        path: PathBuf,
    },
    /// An external-data reference is unsafe or inconsistent.
    #[error("tensor '{tensor}': external data {reason}")]
    ExternalData {
        /// Name of the tensor whose data lives outside the model.
        tensor: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A weight holds NaN or infinity.
    #[error(
        "tensor '{tensor}' holds {what} at element {index}; fix or retrain the model, or exclude it with --exclude '{tensor}'"
    )]
    NonFinite {
        /// The tensor.
        tensor: String,
        /// `NaN`, `+inf` or `-inf`.
        what: &'static str,
        /// Flat index of the first such element.
        index: usize,
    },
    /// The model is structurally wrong in a way that stops the job.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// Calibration or verification data does not fit the model (shape, type, values, format).
    #[error("{}: {}{message}", path.display(), input.as_ref().map(|i| format!("input '{i}': ")).unwrap_or_default())]
    Data {
        /// The data file, folder or image.
        path: PathBuf,
        /// The model input concerned, when there is one.
        input: Option<String>,
        /// Expected vs found, and what to do.
        message: String,
    },
    /// A node's attribute is missing or of the wrong type.
    #[error("node '{node}' ({op}): attribute '{attr}' {problem}")]
    Attribute {
        /// Node name (or its first output if unnamed).
        node: String,
        /// Op type.
        op: String,
        /// Attribute name.
        attr: String,
        /// What is wrong.
        problem: String,
    },
    /// The model's opset must be raised for the chosen scheme, and an op in it cannot be upgraded.
    #[error("cannot raise the opset from {from} to {to}: node '{node}' ({op}) {reason}")]
    OpsetUpgrade {
        /// The model's opset.
        from: i64,
        /// The opset the scheme needs.
        to: i64,
        /// The node.
        node: String,
        /// Its op type.
        op: String,
        /// Why; ends with what the user can do.
        reason: String,
    },
    /// Nothing was selected for quantization.
    #[error("nothing was quantized in {origin}: {why}; pass --allow-empty to write the model anyway")]
    NothingQuantized {
        /// The model.
        origin: String,
        /// A summary of why each candidate was skipped.
        why: String,
    },
    /// tract could not load or run a model.
    #[error(
        "tract cannot run {what}: {detail}; static calibration, data-aware weights (--data) and verification (--verify-data) run the model in tract, weight-only `quantize` without them does not; where only a quantized op fails, limit the quantized ops with --op-types"
    )]
    Tract {
        /// Which model (file or role).
        what: String,
        /// tract's message, naming the node where it has one.
        detail: String,
    },
    /// A quality gate of the recipe failed.
    #[error("quality gate {gate} failed: {message}")]
    Gate {
        /// The gate's key, e.g. `min-snr-db`.
        gate: String,
        /// Measured vs required.
        message: String,
    },
    /// A step that runs the whole model in memory (calibration, verification) was asked of a
    /// model too large for the memory this process may use.
    #[error("{}: {step} runs the whole model in memory with tract, {message}", path.display())]
    TooLarge {
        /// The model file.
        path: PathBuf,
        /// The step, e.g. `calibration`.
        step: String,
        /// How much it needs and has, and what to do.
        message: String,
    },
    /// A recipe option has a bad value.
    #[error("{key}: {message}")]
    Option {
        /// The option's path, e.g. `--block-size` or `package.metadata.quantize.models.x.bits`.
        key: String,
        /// What is wrong and what is accepted.
        message: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
