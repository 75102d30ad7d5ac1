//! The report of weight quantization: what was quantized and how, what was left and why, and
//! its text for people.

use std::collections::BTreeMap;

use serde::Serialize;

use super::QuantSpec;
use crate::quant::{Granularity, QType};

/// A weight that was quantized.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizedTensor {
    /// Tensor name (still the name of the dequantized value in the output).
    pub name: String,
    /// `initializer`, `constant`, `subgraph-initializer` or `subgraph-constant`.
    pub location: String,
    /// Op types that read it as a weight.
    pub op_types: Vec<String>,
    /// Shape.
    pub dims: Vec<i64>,
    /// The scheme.
    pub spec: QuantSpec,
    /// Every scale has the symmetric zero point (0 for signed types), as chosen or as
    /// [`Symmetry::Auto`] found best.
    pub symmetric: bool,
    /// Element type it is stored as (e.g. `int8`, `int4`).
    pub stored_as: String,
    /// Float bytes before.
    pub bytes_before: u64,
    /// Bytes of values, scales and zero points after.
    pub bytes_after: u64,
    /// A deviation from the recipe, e.g. a per-tensor fallback, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Signal-to-quantization-noise ratio of the weight itself, in dB (`null` in JSON when the
    /// weight is represented exactly).
    pub sqnr_db: f64,
    /// With data-aware rounding: how much lower (dB) the layer's output error on the observed
    /// inputs is than with round-to-nearest on the same scales.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounding_gain_db: Option<f64>,
}

/// A float constant that was left as it is.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedTensor {
    /// Tensor name.
    pub name: String,
    /// Elements.
    pub elements: u64,
    /// Why it was not quantized.
    pub reason: String,
    /// Whether some op reads it as a weight (as opposed to a bias, shape, scale...).
    pub is_weight: bool,
}

/// What a quantization job did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// Weights quantized, in model order.
    pub quantized: Vec<QuantizedTensor>,
    /// Float constants left alone, with reasons.
    pub skipped: Vec<SkippedTensor>,
    /// Nodes that were already quantized, as (op type, node).
    pub already_quantized: Vec<(String, String)>,
    /// Default-domain opset before.
    pub opset_before: i64,
    /// Default-domain opset after.
    pub opset_after: i64,
    /// Nodes rewritten to raise the opset, by op type.
    pub upgraded_ops: BTreeMap<String, usize>,
    /// IR version after.
    pub ir_version: i64,
    /// Float bytes of the quantized weights.
    pub weight_bytes_before: u64,
    /// Their bytes after.
    pub weight_bytes_after: u64,
    /// BatchNormalization / per-channel Mul and Add nodes folded into the convolution before them
    /// or, for static quantization, after them (by the prepare step, `rewrite::prepare`).
    pub folded_nodes: usize,
    /// Spelled-out hard-swish chains (`x * Clip(x + 3, 0, 6) / 6`) rewritten as one op (by the prepare
    /// step, for static quantization).
    pub fused_hard_swish: usize,
    /// Softmax nodes over a non-last axis written as Exp / ReduceSum (by `pipeline::run`, for
    /// static quantization).
    pub decomposed_softmax: usize,
    /// Consecutive convolution pairs equalized before calibration (cross-layer equalization,
    /// `calibration.equalize`).
    #[serde(default)]
    pub equalized_pairs: usize,
    /// What the calibration samples did to the weights, when they were given for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_aware: Option<DataAware>,
    /// `exclude`, `include` and `layer-bits` patterns that matched no constant and no node reading
    /// one (a misspelt name would otherwise change nothing, silently), as `key 'pattern'`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmatched_rules: Vec<String>,
    /// What the accuracy target did to a weight-only model (`target-snr-db` with weight-only
    /// calibration data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<WeightTarget>,
    /// Quantized tables read by Gather that gather their integer rows and dequantize only those.
    pub gathered_tables: usize,
    /// What dynamic quantization rewrote, when the recipe asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<crate::dynamic::DynamicReport>,
    /// The outlier input channels of matrix products split into small float products
    /// (dynamic and static quantization with samples).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outliers: Option<crate::rewrite::OutlierSplit>,
}

/// Below this many effective verification samples the report warns that the target may not
/// hold on other inputs.
pub const FEW_EFFECTIVE_SAMPLES: f64 = 2.0;

/// The warning for a target figure that rests on fewer than [`FEW_EFFECTIVE_SAMPLES`] samples.
pub fn few_samples_warning(effective_samples: f64) -> Option<String> {
    (effective_samples < FEW_EFFECTIVE_SAMPLES).then(|| {
        format!(
            "warning: the verification figure rests on about {effective_samples:.1} of its samples (the float outputs of the others carry almost no signal); the target may not hold on other inputs: give more varied verification data"
        )
    })
}

/// What the weight-only accuracy target did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct WeightTarget {
    /// The SNR asked for (dB, worst float output, on the verification data).
    pub target_db: f64,
    /// The model as the recipe asks, before any step.
    pub recipe_db: f64,
    /// The model written.
    pub reached_db: f64,
    /// 4-bit weights written at 8 bits, worst first.
    pub weights_to_8_bits: Vec<String>,
    /// Weights left float, worst first.
    pub weights_returned_to_float: Vec<String>,
    /// Each eligible weight's own figure, per step (4 → 8 bits, then to float), worst first.
    pub four_bit_alone_db: Vec<(String, f64)>,
    /// See `four_bit_alone_db`.
    pub weight_alone_db: Vec<(String, f64)>,
    /// Every model measured: (weights at 8 bits, weights float, dB).
    pub trials: Vec<(usize, usize, f64)>,
    /// How many verification samples carry the figure (see the static target).
    pub effective_samples: f64,
}

/// What the calibration samples did to the weights (weight-only quantization with data).
#[derive(Debug, Clone, Serialize, Default)]
pub struct DataAware {
    /// Samples run.
    pub samples: usize,
    /// Seconds spent observing the layers' inputs.
    pub observe_seconds: f64,
    /// Weights whose rounding was chosen on their layer's inputs (GPTQ).
    pub rounded: usize,
    /// Output error of those layers on the observed inputs, summed, relative to round-to-nearest
    /// on the same scales (dB, lower is better; 0 when none was rounded).
    pub output_error_db: f64,
    /// Conv/Gemm biases corrected for the mean shift their quantized weights cause.
    pub bias_corrected: usize,
}

impl Report {
    /// Quantized weights by op type: (count, bytes before, bytes after).
    pub fn by_op_type(&self) -> BTreeMap<String, (usize, u64, u64)> {
        let mut m: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
        for q in &self.quantized {
            let e = m.entry(q.op_types.join("+")).or_default();
            e.0 += 1;
            e.1 += q.bytes_before;
            e.2 += q.bytes_after;
        }
        m
    }
}

impl Report {
    /// The report as text for people: what was quantized (per op type), what was skipped and
    /// why, and the opset written. `verbose` lists every tensor.
    pub fn to_text(&self, verbose: bool) -> String {
        use crate::info::human_bytes;
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "quantized {} weight(s): {} -> {}",
            self.quantized.len(),
            human_bytes(self.weight_bytes_before),
            human_bytes(self.weight_bytes_after)
        );
        for (op, (n, before, after)) in self.by_op_type() {
            let _ = writeln!(s, "  {op:<16} {n:>5}  {:>10} -> {:>10}", human_bytes(before), human_bytes(after));
        }
        let mut schemes: BTreeMap<String, usize> = BTreeMap::new();
        for q in &self.quantized {
            let g = match q.spec.granularity {
                Granularity::PerTensor => "per-tensor".to_string(),
                Granularity::PerAxis { .. } => "per-channel".to_string(),
                Granularity::Blocked { block, .. } => format!("blocked({block})"),
            };
            let sym = if q.symmetric { "symmetric" } else { "asymmetric" };
            // The stored type names the bytes; say so when the values use fewer bits than them.
            let bits = match q.spec.qtype {
                QType::Int7 => " (7-bit values)",
                QType::Int4 | QType::Uint4 if !q.stored_as.ends_with('4') => " (4-bit values)",
                _ => "",
            };
            *schemes.entry(format!("{}{bits} {g} {sym}", q.stored_as)).or_default() += 1;
        }
        for (scheme, n) in schemes {
            let _ = writeln!(s, "  as {scheme}: {n}");
        }
        for q in self.quantized.iter().filter(|q| q.note.is_some()) {
            let _ = writeln!(s, "  note: '{}' {}", q.name, q.note.as_deref().unwrap_or(""));
        }
        if verbose {
            for q in &self.quantized {
                let _ = writeln!(s, "    {} {:?} [{}] {}", q.name, q.dims, q.op_types.join(","), q.location);
            }
        }
        let weights: Vec<&SkippedTensor> = self.skipped.iter().filter(|k| k.is_weight).collect();
        let others = self.skipped.len() - weights.len();
        if !weights.is_empty() {
            let _ = writeln!(s, "skipped {} weight(s):", weights.len());
            for k in &weights {
                let _ = writeln!(s, "  {}: {}", k.name, k.reason);
            }
        }
        if others > 0 {
            let mut reasons: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for k in self.skipped.iter().filter(|k| !k.is_weight) {
                reasons.entry(&k.reason).or_default().push(&k.name);
            }
            let _ = writeln!(s, "left {others} other float constant(s) as they are:");
            for (reason, names) in reasons {
                let shown: Vec<&str> = names.iter().take(if verbose { usize::MAX } else { 3 }).copied().collect();
                let more = if names.len() > shown.len() {
                    format!(", ... {} more", names.len() - shown.len())
                } else {
                    String::new()
                };
                let _ = writeln!(s, "  {} × {reason}: {}{more}", names.len(), shown.join(", "));
            }
        }
        if let Some(t) = &self.target {
            let _ = writeln!(
                s,
                "target {} dB: the recipe's model gave {:.2} dB; {} weight(s) to 8 bits, {} to float ({} model(s) built) -> {:.2} dB",
                t.target_db,
                t.recipe_db,
                t.weights_to_8_bits.len(),
                t.weights_returned_to_float.len(),
                t.trials.len(),
                t.reached_db
            );
            for name in &t.weights_to_8_bits {
                let _ = writeln!(s, "  8-bit weight: {name}");
            }
            for name in &t.weights_returned_to_float {
                let _ = writeln!(s, "  float weight: {name}");
            }
            if t.reached_db < t.target_db {
                let _ = writeln!(s, "  missed: even every weight stepped up gives {:.2} dB", t.reached_db);
            }
            if let Some(w) = few_samples_warning(t.effective_samples) {
                let _ = writeln!(s, "  {w}");
            }
        }
        for rule in &self.unmatched_rules {
            let _ = writeln!(
                s,
                "warning: {rule} matches no weight and no node reading one, so it changed nothing (`quantize-rs info` lists the names)"
            );
        }
        if !self.already_quantized.is_empty() {
            let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
            for (op, _) in &self.already_quantized {
                *ops.entry(op).or_default() += 1;
            }
            let list: Vec<String> = ops.iter().map(|(o, n)| format!("{o} ×{n}")).collect();
            let _ = writeln!(s, "already quantized, kept: {}", list.join(", "));
        }
        if self.opset_after != self.opset_before {
            let ups: Vec<String> = self.upgraded_ops.iter().map(|(o, n)| format!("{o} ×{n}")).collect();
            let ups = if ups.is_empty() {
                "no node needed changes".to_string()
            } else {
                format!("rewrote {}", ups.join(", "))
            };
            let _ = writeln!(
                s,
                "opset {} -> {} ({ups}); IR version {}",
                self.opset_before, self.opset_after, self.ir_version
            );
        } else {
            let _ = writeln!(s, "opset {} (unchanged); IR version {}", self.opset_after, self.ir_version);
        }
        if let Some(d) = &self.data_aware {
            let _ = writeln!(
                s,
                "observed the layers' inputs on {} sample(s) in {:.2} s; {} weight(s) rounded on them (output error {:+.2} dB vs nearest); {} bias(es) corrected for the mean shift",
                d.samples, d.observe_seconds, d.rounded, d.output_error_db, d.bias_corrected
            );
        }
        if self.gathered_tables > 0 {
            let _ = writeln!(
                s,
                "{} table(s) read by Gather gather their integer rows and dequantize only those",
                self.gathered_tables
            );
        }
        if let Some(d) = &self.dynamic {
            let _ = writeln!(
                s,
                "dynamic: {} MatMul/Gemm node(s) run on int8 with inputs quantized at run time ({} DynamicQuantizeLinear)",
                d.integer_nodes, d.input_quantizers
            );
            for (node, why) in &d.left {
                let _ = writeln!(s, "  left on DequantizeLinear: '{node}': {why}");
            }
        }
        if let Some(o) = self.outliers.as_ref().filter(|o| o.products > 0) {
            let _ = writeln!(
                s,
                "{} outlier input channel(s) of {} matrix product input(s) split into {} small float product(s) ({})",
                o.channels,
                o.inputs,
                o.products,
                if o.probed { "found on random token ids: no samples given" } else { "observed on the samples" }
            );
        }
        if self.folded_nodes > 0 {
            let _ = writeln!(
                s,
                "folded {} BatchNormalization / per-channel Mul / Add node(s) into adjacent convolutions",
                self.folded_nodes
            );
        }
        if self.equalized_pairs > 0 {
            let _ = writeln!(
                s,
                "equalized the channels of {} consecutive convolution pair(s) (cross-layer equalization)",
                self.equalized_pairs
            );
        }
        if self.fused_hard_swish > 0 {
            let _ = writeln!(s, "rewrote {} hard-swish chain(s) x*Clip(x+3,0,6)/6 as one op", self.fused_hard_swish);
        }
        if self.decomposed_softmax > 0 {
            let _ = writeln!(
                s,
                "rewrote {} Softmax over a non-last axis as Exp / ReduceSum (ONNX Runtime transposes it twice)",
                self.decomposed_softmax
            );
        }
        s
    }
}
