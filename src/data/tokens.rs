//! Probe samples for token models, made up when no data is given.
//!
//! A transformer's activation outliers sit in the same few channels whatever the text (they come
//! from the weights, not the words): all-MiniLM-L6-v2's post-LayerNorm channels 63, 99, 157 and
//! 223 stand out in every layer, for real sentences and for random token ids alike. Dynamic
//! quantization without data can therefore find them on random ids and split them off
//! (`rewrite::outliers`), which is exact: a wrongly chosen channel costs a little speed, never
//! accuracy.

use tract_onnx::prelude::Tensor;

use super::{Dim, InputSpec, Sample};
use crate::onnx::graph::NodeExt;
use crate::onnx::model::Model;
use crate::onnx::proto::dtype;

/// Tokens per made-up sequence where the model leaves the length open.
pub const PROBE_TOKENS: usize = 64;

/// `n` samples of random token ids for a token model: every graph input is an integer tensor,
/// and at least one indexes a constant table by a Gather (ids uniform over its rows); the
/// others (attention masks) are ones. Open dimensions are 1 on the first axis (the batch) and
/// [`PROBE_TOKENS`] elsewhere. Deterministic. `None` for any other model.
pub fn token_probe_samples(model: &Model, n: usize) -> Option<Vec<Sample>> {
    let specs = InputSpec::of_model(model).ok()?;
    let g = model.graph();
    let tables: std::collections::HashMap<&str, i64> =
        g.initializer.iter().filter_map(|t| Some((t.name.as_deref()?, *t.dims.first()?))).collect();
    let rows_indexed = |input: &str| {
        g.node
            .iter()
            .filter(|n| crate::ops::is(n, crate::ops::GATHER) && n.input.get(1).map(String::as_str) == Some(input))
            .filter(|n| n.attr_int("axis").ok().flatten().unwrap_or(0) == 0)
            .filter_map(|n| tables.get(n.input.first()?.as_str()).copied())
            .filter(|&rows| rows > 0)
            .min()
    };
    if specs.is_empty() || !specs.iter().all(|s| s.elem_type == dtype::INT64 || s.elem_type == dtype::INT32) {
        return None;
    }
    let rows: Vec<Option<i64>> = specs.iter().map(|s| rows_indexed(&s.name)).collect();
    if rows.iter().all(Option::is_none) {
        return None;
    }
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let mut sample = Vec::with_capacity(specs.len());
        for (spec, rows) in specs.iter().zip(&rows) {
            let shape: Vec<usize> = spec
                .dims
                .iter()
                .enumerate()
                .map(|(axis, d)| match d {
                    Dim::Fixed(v) => *v,
                    _ if axis == 0 => 1,
                    _ => PROBE_TOKENS,
                })
                .collect();
            let count: usize = shape.iter().product();
            let values: Vec<i64> = (0..count).map(|_| rows.map_or(1, |r| (next() % r as u64) as i64)).collect();
            let t = if spec.elem_type == dtype::INT64 {
                Tensor::from_shape(&shape, &values)
            } else {
                Tensor::from_shape(&shape, &values.iter().map(|&v| v as i32).collect::<Vec<_>>())
            };
            sample.push(t.ok()?);
        }
        samples.push(sample);
    }
    Some(samples)
}
