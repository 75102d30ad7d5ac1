//! [`Recipe::check`]: the one validation routine every front door runs, whatever built the
//! recipe. Errors name the key by its [`KeyPath`], which the front door renders.

use super::{KeyPath, Recipe, RecipeError};

impl Recipe {
    /// Checks every value. The error names the first bad key, relative to the recipe
    /// (`calibration.percentile`); see [`Recipe::validate`] for a message with a prefix.
    pub fn check(&self) -> Result<(), RecipeError> {
        let at = |field: &'static str| KeyPath::new().field(field);
        let calibration = |field: &'static str| KeyPath::new().field("calibration").field(field);
        let bad = |path: KeyPath, message: String| Err(RecipeError::invalid(path, message));
        if !matches!(self.bits, 4 | 8) {
            return bad(at("bits"), format!("expected 4 or 8, got {}", self.bits));
        }
        if self.block_size == Some(0) {
            return bad(at("block-size"), "must be at least 1".into());
        }
        if self.native_int4 && self.bits != 4 {
            return bad(at("native-int4"), format!("only applies to 4-bit weights, but bits is {}", self.bits));
        }
        for (pattern, bits) in &self.layer_bits {
            let key = at("layer-bits").key(pattern.clone());
            if !matches!(bits, 4 | 8 | 32) {
                return bad(key, format!("expected 4, 8 or 32 (keep float), got {bits}"));
            }
            if *bits == 4 && self.native_int4 && self.bits != 4 {
                return bad(key, "4-bit layers with native-int4 need bits = 4".into());
            }
        }
        for (field, patterns) in [("exclude", &self.exclude), ("include", &self.include)] {
            for p in patterns {
                if let Err(e) = globset::Glob::new(p) {
                    return bad(at(field), format!("'{p}' is not a valid glob: {e}"));
                }
            }
        }
        for p in self.layer_bits.keys() {
            if let Err(e) = globset::Glob::new(p) {
                return bad(at("layer-bits"), format!("'{p}' is not a valid glob: {e}"));
            }
        }
        if self.dynamic {
            if self.unsigned {
                return bad(at("dynamic"), "takes signed weights (int8); drop unsigned".into());
            }
            if self.bits != 8 {
                return bad(
                    at("dynamic"),
                    format!("runs 8-bit integer products, but bits is {}; use bits = 8", self.bits),
                );
            }
            if self.block_size.is_some() {
                return bad(at("dynamic"), "takes per-channel or per-tensor weights; drop block-size".into());
            }
            if self.calibration.as_ref().is_some_and(|c| !c.weight_only) {
                return bad(
                    at("dynamic"),
                    "quantizes activations at run time, static calibration ahead of time: choose one (calibration data for the weights only needs weight-only = true)".into(),
                );
            }
        }
        if let Some(c) = &self.calibration {
            if !(0.0 < c.percentile && c.percentile <= 100.0) {
                return bad(calibration("percentile"), format!("expected a value in (0, 100], got {}", c.percentile));
            }
            let known = crate::ops::activation_op_types();
            for op in c.op_types.iter().flatten() {
                if !known.contains(&op.as_str()) {
                    return bad(
                        calibration("op-types"),
                        format!(
                            "quantize-rs does not quantize the activations of '{op}'; expected some of {}",
                            known.join(", ")
                        ),
                    );
                }
            }
            if c.target_snr_db.is_some() && self.verify_data.is_none() {
                return bad(
                    calibration("target-snr-db"),
                    "needs verify-data: held-out samples to measure the output SNR on".into(),
                );
            }
            if c.weight_only && c.target_snr_db.is_some() && self.dynamic {
                return bad(
                    calibration("target-snr-db"),
                    "measures weight-only models, but dynamic quantization also quantizes activations at run time; drop one of them".into(),
                );
            }
            if c.weight_only && c.equalize {
                return bad(
                    calibration("equalize"),
                    "rescales channels for static quantization's activation ranges, but weight-only quantizes none; drop one of them".into(),
                );
            }
            if c.samples == Some(0) {
                return bad(calibration("samples"), "must be at least 1".into());
            }
            if let Some(img) = &c.image {
                let image = |field: &'static str| calibration("image").field(field);
                if !matches!(img.layout.as_str(), "nchw" | "nhwc") {
                    return bad(image("layout"), format!("expected nchw or nhwc, got '{}'", img.layout));
                }
                if !matches!(img.channels.as_str(), "rgb" | "bgr" | "gray") {
                    return bad(image("channels"), format!("expected rgb, bgr or gray, got '{}'", img.channels));
                }
                if img.size.contains(&0) {
                    return bad(image("size"), "height and width must be at least 1".into());
                }
            }
        }
        if let Some(r) = self.max_size_ratio
            && (r.is_nan() || r <= 0.0)
        {
            return bad(at("max-size-ratio"), format!("expected a positive fraction, got {r}"));
        }
        let known = crate::ops::default_op_types();
        for op in &self.op_types {
            if !known.contains(op) {
                return bad(
                    at("op-types"),
                    format!("'{op}' has no weight quantize-rs can quantize; expected some of {}", known.join(", ")),
                );
            }
        }
        Ok(())
    }
}
