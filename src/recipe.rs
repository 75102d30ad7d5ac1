//! The recipe: the one description of a quantization job that every front door (CLI flags,
//! Cargo metadata, config files, the Rust API) builds, with one set of defaults and one
//! validation routine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::quant::QType;

/// What to quantize and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Recipe {
    /// Bits per weight: 8 or 4.
    pub bits: u8,
    /// Unsigned values (uint8/uint4) instead of signed ones.
    pub unsigned: bool,
    /// One scale per output channel (per tensor when false). Ignored when `block_size` is set.
    pub per_channel: bool,
    /// Blocks of this many elements along each weight's reduction axis (opset 21).
    pub block_size: Option<usize>,
    /// Symmetric weights (zero point 0, or the middle for unsigned types).
    pub symmetric: bool,
    /// Store 4-bit values as ONNX INT4/UINT4 (two per byte, opset 21) instead of widened bytes.
    pub native_int4: bool,
    /// Tensors or nodes (glob patterns) never quantized.
    pub exclude: Vec<String>,
    /// When not empty, only tensors or nodes matching one of these globs are quantized.
    pub include: Vec<String>,
    /// Op types whose weights are quantized.
    pub op_types: Vec<String>,
    /// Weights with fewer elements stay float.
    pub min_elements: u64,
    /// Bits per weight for tensors or nodes matching a glob: 4, 8, or 32 to keep them float.
    /// An exact name beats a pattern; among patterns, the longest wins.
    pub layer_bits: BTreeMap<String, u8>,
    /// Write the model even when nothing was quantized.
    pub allow_empty: bool,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            bits: 8,
            unsigned: false,
            per_channel: true,
            block_size: None,
            symmetric: true,
            native_int4: false,
            exclude: vec![],
            include: vec![],
            op_types: crate::ops::default_op_types(),
            min_elements: 128,
            layer_bits: BTreeMap::new(),
            allow_empty: false,
        }
    }
}

impl Recipe {
    /// Checks every value; `prefix` is the path of the recipe in messages (e.g. `--` for flags
    /// or `package.metadata.quantize.models.digits.`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let key = |k: &str| format!("{prefix}{k}");
        let bad = |k: &str, message: String| Err(Error::Option { key: key(k), message });
        if !matches!(self.bits, 4 | 8) {
            return bad("bits", format!("expected 4 or 8, got {}", self.bits));
        }
        if self.block_size == Some(0) {
            return bad("block-size", "must be at least 1".into());
        }
        if self.native_int4 && self.bits != 4 {
            return bad("native-int4", format!("only applies to 4-bit weights, but bits is {}", self.bits));
        }
        for (pattern, bits) in &self.layer_bits {
            if !matches!(bits, 4 | 8 | 32) {
                return bad(&format!("layer-bits.{pattern}"), format!("expected 4, 8 or 32 (keep float), got {bits}"));
            }
            if *bits == 4 && self.native_int4 && self.bits != 4 {
                return bad(&format!("layer-bits.{pattern}"), "4-bit layers with native-int4 need bits = 4".into());
            }
        }
        for (k, patterns) in [("exclude", &self.exclude), ("include", &self.include)] {
            for p in patterns {
                if let Err(e) = globset::Glob::new(p) {
                    return bad(k, format!("'{p}' is not a valid glob: {e}"));
                }
            }
        }
        for p in self.layer_bits.keys() {
            if let Err(e) = globset::Glob::new(p) {
                return bad("layer-bits", format!("'{p}' is not a valid glob: {e}"));
            }
        }
        let known = crate::ops::default_op_types();
        for op in &self.op_types {
            if !known.contains(op) {
                return bad(
                    "op-types",
                    format!("'{op}' has no weight quantize-rs can quantize; expected some of {}", known.join(", ")),
                );
            }
        }
        Ok(())
    }

    /// The value type for a weight quantized with `bits`.
    pub fn qtype(&self, bits: u8) -> QType {
        QType::from_bits(bits, !self.unsigned).expect("validated: bits is 4 or 8")
    }
}
