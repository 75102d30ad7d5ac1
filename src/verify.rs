//! The verify step: run the float and the quantized model on held-out samples and compare their
//! outputs. Used by the pipeline's quality gates, by calibration's accuracy target and by
//! `validate`.
//!
//! Figures are kept per output. A float output gets SNR, cosine and max abs error; an integer or
//! bool output (indices, ids, masks) must be bit-exact, and any difference is a failure, never
//! averaged away. The figure that decides and reports (`snr_db`) is the worst float output's: a
//! pooled SNR would let an exact integer output of large magnitude hide a broken float one.

// Calibration and validation (the `tract` feature) are what read the rest of this; the full
// build lints it.
#![cfg_attr(not(feature = "tract"), allow(dead_code, unused_imports))]

use std::path::Path;

use serde::{Serialize, Serializer};

use crate::error::Result;
use crate::onnx::model::Model;

/// Output quality measured on held-out data.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Samples compared.
    pub samples: usize,
    /// SNR in dB of the worst float output (infinite when every float output is identical, or
    /// there is none).
    #[serde(serialize_with = "non_finite_as_string")]
    pub snr_db: f64,
    /// Cosine similarity of the least similar float output.
    #[serde(serialize_with = "non_finite_as_string")]
    pub cosine: f64,
    /// Largest absolute difference of any float output value.
    #[serde(serialize_with = "non_finite_as_string")]
    pub max_abs: f64,
    /// Every integer and bool output is bit-exact.
    pub exact: bool,
    /// Each output's figures, in the model's output order.
    pub outputs: Vec<OutputFigures>,
}

/// One output's figures.
#[derive(Debug, Clone, Serialize)]
pub struct OutputFigures {
    /// Output name.
    pub name: String,
    /// `float`, or `integer` for integer and bool outputs (which must match exactly).
    pub kind: OutputKind,
    /// SNR in dB (float outputs; infinite when identical, and for exact integer outputs,
    /// minus infinity for differing ones).
    #[serde(serialize_with = "non_finite_as_string")]
    pub snr_db: f64,
    /// Cosine similarity (float outputs; 1 or 0 for integer ones, by exactness).
    #[serde(serialize_with = "non_finite_as_string")]
    pub cosine: f64,
    /// Largest absolute difference.
    #[serde(serialize_with = "non_finite_as_string")]
    pub max_abs: f64,
    /// Values that differ (integer outputs) — any is a failure.
    pub mismatches: u64,
    /// Values compared.
    pub values: u64,
}

/// What an output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Floating point: compared by SNR.
    Float,
    /// Integer or bool: compared for equality.
    Integer,
}

/// Infinite and NaN figures as the strings JSON numbers cannot hold (`"inf"`, `"-inf"`, `"nan"`).
pub(crate) fn non_finite_as_string<S: Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_str("nan")
    } else {
        s.serialize_str(if *v > 0.0 { "inf" } else { "-inf" })
    }
}

impl Verification {
    /// Whether the outputs meet `min_snr_db`: integer outputs exact and the worst float
    /// output at least that.
    pub fn meets(&self, min_snr_db: f64) -> bool {
        self.exact && self.snr_db >= min_snr_db
    }

    /// The figure searches rank by: the worst float output's SNR, minus infinity when an
    /// integer output differs.
    pub fn score(&self) -> f64 {
        if self.exact { self.snr_db } else { f64::NEG_INFINITY }
    }

    /// Why the outputs miss `min_snr_db`, naming the outputs, or `None` when they meet it.
    pub fn shortfall(&self, min_snr_db: f64) -> Option<String> {
        let mut why: Vec<String> = self
            .outputs
            .iter()
            .filter(|o| o.kind == OutputKind::Integer && o.mismatches > 0)
            .map(|o| format!("integer output '{}' differs in {} of {} values", o.name, o.mismatches, o.values))
            .collect();
        if self.snr_db < min_snr_db {
            let worst = self.worst_float().map(|o| format!(" ('{}')", o.name)).unwrap_or_default();
            why.push(format!("the worst float output{worst} is at {:.2} dB, below {min_snr_db} dB", self.snr_db));
        }
        if why.is_empty() { None } else { Some(why.join("; ")) }
    }

    /// The float output with the lowest SNR.
    pub fn worst_float(&self) -> Option<&OutputFigures> {
        self.outputs.iter().filter(|o| o.kind == OutputKind::Float).min_by(|a, b| a.snr_db.total_cmp(&b.snr_db))
    }
}

/// One line per output for people: SNR, cosine and max abs error of float outputs, `exact` or
/// the mismatch count of integer ones, the worst float output marked.
pub fn outputs_text(v: &Verification) -> String {
    use std::fmt::Write as _;
    let worst = v.worst_float().map(|o| o.name.clone());
    let mut s = String::new();
    for o in &v.outputs {
        let mark = if Some(&o.name) == worst.as_ref() && v.outputs.len() > 1 { "  <- worst" } else { "" };
        let _ = match o.kind {
            OutputKind::Float => writeln!(
                s,
                "  {:<32} SNR {:>7} dB  cosine {:.6}  max abs {:.4}{mark}",
                o.name,
                db(o.snr_db),
                o.cosine,
                o.max_abs
            ),
            OutputKind::Integer if o.mismatches == 0 => writeln!(s, "  {:<32} integer, exact", o.name),
            OutputKind::Integer => {
                writeln!(s, "  {:<32} integer, {} of {} values DIFFER", o.name, o.mismatches, o.values)
            }
        };
    }
    s
}

fn db(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else if x > 0.0 {
        "inf".into()
    } else {
        "-inf".into()
    }
}

/// Output values of one run, as compared: floats as f32, integers and bools as i64.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// A floating-point output.
    Float(Vec<f32>),
    /// An integer or bool output.
    Integer(Vec<i64>),
}

/// An output of a tract run as [`Values`].
#[cfg(feature = "tract")]
pub fn values_of(v: &tract_onnx::prelude::TValue) -> Result<Values> {
    use tract_onnx::prelude::*;
    let err = |e| crate::run::tract_error("an output", e);
    let dt = v.datum_type();
    if dt.is_float() {
        return crate::run::as_f32(v).map(Values::Float);
    }
    let t = if dt == DatumType::Bool {
        v.cast_to::<u8>().map_err(err)?.cast_to::<i64>().map_err(err)?.into_owned()
    } else {
        v.cast_to::<i64>().map_err(err)?.into_owned()
    };
    let view = t.to_plain_array_view::<i64>().map_err(err)?;
    Ok(Values::Integer(view.iter().copied().collect()))
}

/// Runs `model` on one sample and returns its outputs as [`Values`].
#[cfg(feature = "tract")]
pub fn run_values(runner: &mut crate::run::Runner, sample: &[tract_onnx::prelude::Tensor]) -> Result<Vec<Values>> {
    runner.run(sample)?.iter().map(values_of).collect()
}

/// Runs `reference` and `candidate` with tract on the samples in `data` and compares their
/// outputs.
#[cfg(feature = "tract")]
pub fn verify(
    reference: &Model,
    candidate: &Model,
    data: &Path,
    image: Option<&crate::recipe::ImagePreprocess>,
) -> Result<Verification> {
    let samples = crate::data::load_for_model(reference, data, image, None)?;
    let mut a = crate::run::Runner::for_model(reference, &[], "the float model");
    let mut b = crate::run::Runner::for_model(candidate, &[], "the quantized model");
    let mut m = OutputsComparison::new(crate::run::output_names(reference));
    for s in &samples {
        m.add(&run_values(&mut a, s)?, &run_values(&mut b, s)?);
    }
    Ok(m.finish(samples.len()))
}

/// Verification runs models with tract: without the `tract` feature it is an error.
#[cfg(not(feature = "tract"))]
pub fn verify(_: &Model, _: &Model, _: &Path, _: Option<&crate::recipe::ImagePreprocess>) -> Result<Verification> {
    Err(crate::error::Error::Option {
        key: "verify-data".into(),
        message: "verification runs models with tract: enable the `tract` feature of quantize-rs".into(),
    })
}

/// Per-output comparison of two models' runs, accumulated sample by sample.
#[derive(Debug, Clone)]
pub struct OutputsComparison {
    names: Vec<String>,
    float: Vec<Comparison>,
    kind: Vec<Option<OutputKind>>,
    mismatches: Vec<u64>,
    values: Vec<u64>,
}

impl OutputsComparison {
    /// A comparison of outputs named `names` (in run order).
    pub fn new(names: Vec<String>) -> OutputsComparison {
        let n = names.len();
        OutputsComparison {
            names,
            float: vec![Comparison::default(); n],
            kind: vec![None; n],
            mismatches: vec![0; n],
            values: vec![0; n],
        }
    }

    /// Adds one sample's outputs of the reference (`a`) and the candidate (`b`). An output
    /// whose kind or length differs between the two counts every value as a mismatch.
    pub fn add(&mut self, a: &[Values], b: &[Values]) {
        for (i, (x, y)) in a.iter().zip(b).enumerate().take(self.names.len()) {
            match (x, y) {
                (Values::Float(x), Values::Float(y)) if x.len() == y.len() => {
                    self.kind[i].get_or_insert(OutputKind::Float);
                    self.float[i].add(x, y);
                    self.values[i] += x.len() as u64;
                }
                (Values::Integer(x), Values::Integer(y)) if x.len() == y.len() => {
                    self.kind[i].get_or_insert(OutputKind::Integer);
                    self.mismatches[i] += x.iter().zip(y).filter(|(p, q)| p != q).count() as u64;
                    self.float[i].add_ints(x, y);
                    self.values[i] += x.len() as u64;
                }
                _ => {
                    let n = match x {
                        Values::Float(v) => v.len(),
                        Values::Integer(v) => v.len(),
                    };
                    let kind = match x {
                        Values::Float(_) => OutputKind::Float,
                        Values::Integer(_) => OutputKind::Integer,
                    };
                    self.kind[i].get_or_insert(kind);
                    // Nothing comparable: the candidate's output is wrong as a whole.
                    self.mismatches[i] += n.max(1) as u64;
                    self.float[i].noise = f64::INFINITY;
                    self.values[i] += n as u64;
                }
            }
        }
    }

    /// The figures over `samples` samples.
    pub fn finish(&self, samples: usize) -> Verification {
        let mut outputs = Vec::with_capacity(self.names.len());
        for (i, name) in self.names.iter().enumerate() {
            let kind = self.kind[i].unwrap_or(OutputKind::Float);
            let v = self.float[i].finish(samples);
            // Mismatches of a float output: it changed type or length, wrong as a whole.
            let (snr_db, cosine) = match (kind, self.mismatches[i]) {
                (_, 1..) => (f64::NEG_INFINITY, 0.0),
                (OutputKind::Float, 0) => (v.snr_db, v.cosine),
                (OutputKind::Integer, 0) => (f64::INFINITY, 1.0),
            };
            outputs.push(OutputFigures {
                name: name.clone(),
                kind,
                snr_db,
                cosine,
                max_abs: v.max_abs,
                mismatches: self.mismatches[i],
                values: self.values[i],
            });
        }
        let floats = || outputs.iter().filter(|o| o.kind == OutputKind::Float);
        let snr_db = floats().map(|o| o.snr_db).fold(f64::INFINITY, f64::min);
        let cosine = floats().map(|o| o.cosine).fold(1.0, f64::min);
        let max_abs = floats().map(|o| o.max_abs).fold(0.0, f64::max);
        let exact = outputs.iter().all(|o| o.kind == OutputKind::Float || o.mismatches == 0);
        Verification { samples, snr_db, cosine, max_abs, exact, outputs }
    }
}

/// SNR, cosine and max abs error of value pairs, accumulated.
#[derive(Debug, Default, Clone)]
pub struct Comparison {
    signal: f64,
    noise: f64,
    dot: f64,
    norm_a: f64,
    norm_b: f64,
    max_abs: f64,
}

/// [`Comparison`]'s figures.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// SNR in dB (infinite when identical).
    pub snr_db: f64,
    /// Cosine similarity.
    pub cosine: f64,
    /// Largest absolute difference.
    pub max_abs: f64,
}

impl Comparison {
    /// Adds the reference values `a` and the candidate's `b`.
    pub fn add(&mut self, a: &[f32], b: &[f32]) {
        for (&x, &y) in a.iter().zip(b) {
            self.add_pair(x as f64, y as f64);
        }
    }

    fn add_ints(&mut self, a: &[i64], b: &[i64]) {
        for (&x, &y) in a.iter().zip(b) {
            self.add_pair(x as f64, y as f64);
        }
    }

    fn add_pair(&mut self, x: f64, y: f64) {
        self.signal += x * x;
        self.noise += (x - y) * (x - y);
        self.dot += x * y;
        self.norm_a += x * x;
        self.norm_b += y * y;
        // A NaN difference is the largest there is.
        let d = (x - y).abs();
        self.max_abs = if d.is_nan() { f64::INFINITY } else { self.max_abs.max(d) };
    }

    /// The figures.
    pub fn finish(&self, _samples: usize) -> Figures {
        let snr_db = if self.noise == 0.0 {
            f64::INFINITY
        } else if self.noise.is_nan() {
            f64::NEG_INFINITY
        } else {
            10.0 * (self.signal / self.noise).log10()
        };
        let denom = (self.norm_a * self.norm_b).sqrt();
        let cosine = if denom == 0.0 { 1.0 } else { self.dot / denom };
        Figures { snr_db, cosine, max_abs: self.max_abs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exact_large_integer_output_cannot_hide_a_bad_float_output() {
        // The case that fooled the pooled figure: a transformer echoing its int64 ids.
        let ids: Vec<i64> = (0..64).map(|i| 1000 + i * 37).collect();
        let want: Vec<f32> = (0..64).map(|i| (i as f32 * 0.1).sin()).collect();
        let got: Vec<f32> = want.iter().map(|v| v * 0.7).collect();
        let mut c = OutputsComparison::new(vec!["ids".into(), "embedding".into()]);
        c.add(
            &[Values::Integer(ids.clone()), Values::Float(want.clone())],
            &[Values::Integer(ids), Values::Float(got)],
        );
        let v = c.finish(1);
        assert!(v.exact);
        // 30% amplitude error: 10·log10(1/0.09) = 10.46 dB.
        assert!((v.snr_db - 10.457).abs() < 0.01, "{}", v.snr_db);
        assert_eq!(v.worst_float().unwrap().name, "embedding");
        assert!(!v.meets(20.0));
        assert!(v.shortfall(20.0).unwrap().contains("worst float output ('embedding') is at 10.46 dB"));
        assert_eq!(v.outputs[0].snr_db, f64::INFINITY);
    }

    #[test]
    fn one_differing_integer_value_fails_whatever_the_float_snr() {
        let mut c = OutputsComparison::new(vec!["y".into(), "argmax".into()]);
        let y = Values::Float(vec![1.0, 2.0]);
        c.add(&[y.clone(), Values::Integer(vec![3, 4, 5])], &[y, Values::Integer(vec![3, 4, 6])]);
        let v = c.finish(1);
        assert!(!v.exact);
        assert_eq!(v.snr_db, f64::INFINITY, "the float output is identical");
        assert!(!v.meets(0.0));
        assert_eq!(v.score(), f64::NEG_INFINITY);
        assert_eq!((v.outputs[1].mismatches, v.outputs[1].values), (1, 3));
        assert_eq!(v.shortfall(0.0).unwrap(), "integer output 'argmax' differs in 1 of 3 values");
    }

    #[test]
    fn worst_float_output_decides_and_nan_is_the_worst() {
        let mut c = OutputsComparison::new(vec!["a".into(), "b".into()]);
        c.add(
            &[Values::Float(vec![1.0, -1.0]), Values::Float(vec![1.0, 1.0])],
            &[Values::Float(vec![1.0, -1.0]), Values::Float(vec![f32::NAN, 1.0])],
        );
        let v = c.finish(1);
        assert_eq!(v.snr_db, f64::NEG_INFINITY);
        assert_eq!(v.max_abs, f64::INFINITY);
        assert_eq!(v.worst_float().unwrap().name, "b");
        // A candidate whose output changed type or length is wrong as a whole.
        let mut c = OutputsComparison::new(vec!["a".into()]);
        c.add(&[Values::Float(vec![1.0, 2.0])], &[Values::Float(vec![1.0])]);
        assert!(!c.finish(1).meets(-1e9));
    }
}
