//! Weight quantization end to end: analyse the model, plan each weight's scheme from the recipe,
//! quantize the values (in parallel, deterministically), raise the opset as far as the schemes
//! need, and rewrite each weight as an integer initializer read by a DequantizeLinear whose
//! output keeps the weight's name.

use std::collections::{BTreeMap, BTreeSet};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;

use crate::analyse::{Analysis, Constant, Storage, analyse};
use crate::control::RunOptions;
use crate::error::{Error, Result};
use crate::onnx::graph::{GraphPath, Names, NodeExt, graph_at_mut};
use crate::onnx::model::Model;
use crate::onnx::model::ir_version_for_opset;
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto, dtype};
use crate::onnx::tensor::constant_value;
use crate::ops::{WeightRole, min_opset};
use crate::quant::{Granularity, QType, RangeSearch, Symmetry};
use crate::recipe::Recipe;

mod gather;
mod report;
pub use report::{
    DataAware, FEW_EFFECTIVE_SAMPLES, QuantizedTensor, Report, SkippedTensor, WeightTarget, few_samples_warning,
};
mod stream;

/// The scheme chosen for one weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantSpec {
    /// Value type.
    pub qtype: QType,
    /// Scale layout.
    pub granularity: Granularity,
    /// Which zero points the scales may use.
    pub symmetry: Symmetry,
    /// How each scale's range was chosen.
    pub range: RangeSearch,
    /// 4-bit values stored as ONNX INT4/UINT4.
    pub native_int4: bool,
}

impl QuantSpec {
    /// The lowest default-domain opset whose DequantizeLinear can express this scheme.
    pub fn min_opset(&self) -> i64 {
        let four = matches!(self.qtype, QType::Int4 | QType::Uint4) && self.native_int4;
        match self.granularity {
            Granularity::Blocked { .. } => min_opset::BLOCKED_OR_INT4,
            _ if four => min_opset::BLOCKED_OR_INT4,
            Granularity::PerAxis { .. } => min_opset::PER_AXIS,
            Granularity::PerTensor => min_opset::PER_TENSOR,
        }
    }
}

struct Planned {
    constant: usize,
    spec: QuantSpec,
    op_types: Vec<String>,
    note: Option<String>,
    /// The output-channel axis its readers agree on, if they do.
    channel_axis: Option<usize>,
    /// Write the zero point even when it is all zeros: ONNX Runtime fuses a static Gemm into
    /// QGemm only when its weight's DequantizeLinear has one (all-MiniLM-L6-v2 as Gemm: 0.72x
    /// float without, 1.44x with).
    explicit_zero_point: bool,
}

fn globset(patterns: &[String]) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        // Patterns were validated by Recipe::validate; a bad one here matches nothing.
        if let Ok(g) = Glob::new(p) {
            b.add(g);
        }
    }
    b.build().unwrap_or_else(|_| GlobSet::empty())
}

fn matches_any(set: &GlobSet, c: &Constant) -> bool {
    set.is_match(&c.name) || c.uses.iter().any(|u| set.is_match(&u.node))
}

/// Bits for a constant from `layer_bits`: an exact name beats a pattern; the longest pattern wins.
fn layer_bits(recipe: &Recipe, c: &Constant) -> Option<u8> {
    let names: Vec<&str> = std::iter::once(c.name.as_str()).chain(c.uses.iter().map(|u| u.node.as_str())).collect();
    if let Some(b) = names.iter().find_map(|n| recipe.layer_bits.get(*n)) {
        return Some(*b);
    }
    recipe
        .layer_bits
        .iter()
        .filter(|(p, _)| Glob::new(p).is_ok_and(|g| names.iter().any(|n| g.compile_matcher().is_match(n))))
        .max_by_key(|(p, _)| p.len())
        .map(|(_, b)| *b)
}

/// The recipe's name patterns that match no constant of the model and no node reading one.
fn unmatched_rules(analysis: &Analysis, recipe: &Recipe) -> Vec<String> {
    let rules = recipe
        .exclude
        .iter()
        .map(|p| ("exclude", p))
        .chain(recipe.include.iter().map(|p| ("include", p)))
        .chain(recipe.layer_bits.keys().map(|p| ("layer-bits", p)));
    rules
        .filter(|(_, p)| {
            let set = globset(std::slice::from_ref(*p));
            let exact = |c: &Constant| c.name == **p || c.uses.iter().any(|u| u.node == **p);
            !analysis.constants.iter().any(|c| exact(c) || matches_any(&set, c))
        })
        .map(|(key, p)| format!("{key} '{p}'"))
        .collect()
}

fn plan(analysis: &Analysis, recipe: &Recipe, ir_version: i64) -> (Vec<Planned>, Vec<SkippedTensor>) {
    let exclude = globset(&recipe.exclude);
    let include = globset(&recipe.include);
    let mut planned = Vec::new();
    let mut skipped = Vec::new();
    for (ci, c) in analysis.constants.iter().enumerate() {
        if c.dtype != dtype::FLOAT {
            continue; // integer, bool and half tensors are never weights we quantize
        }
        let weight_uses: Vec<_> =
            c.uses.iter().filter(|u| u.role.is_some() && recipe.op_types.contains(&u.op_type)).collect();
        let mut skip = |reason: String| {
            skipped.push(SkippedTensor {
                name: c.name.clone(),
                elements: c.elements(),
                reason,
                is_weight: !weight_uses.is_empty(),
            })
        };
        if let Some(u) = c.uses.iter().find(|u| u.quantized_op) {
            skip(format!("read by the already-quantized node '{}' ({})", u.node, u.op_type));
            continue;
        }
        if weight_uses.is_empty() {
            let readers: BTreeSet<String> = c.uses.iter().map(|u| format!("{} input {}", u.op_type, u.input)).collect();
            let readers = if readers.is_empty() {
                "no node".to_string()
            } else {
                readers.into_iter().collect::<Vec<_>>().join(", ")
            };
            skip(format!("not the weight of a {} (read by {readers})", recipe.op_types.join("/")));
            continue;
        }
        if c.is_graph_input && ir_version >= 4 {
            skip("also a graph input, so callers may replace it at run time".into());
            continue;
        }
        if matches_any(&exclude, c) {
            skip("matches an exclude pattern".into());
            continue;
        }
        if !recipe.include.is_empty() && !matches_any(&include, c) {
            skip("matches no include pattern".into());
            continue;
        }
        if c.elements() < recipe.min_elements {
            skip(format!("{} elements, below min-elements {}", c.elements(), recipe.min_elements));
            continue;
        }
        let bits = layer_bits(recipe, c).unwrap_or(recipe.bits);
        if bits == 32 {
            skip("kept float by layer-bits".into());
            continue;
        }
        let roles: BTreeSet<(usize, Option<usize>)> = weight_uses
            .iter()
            .filter_map(|u| u.role)
            .map(|WeightRole { channel_axis, reduction_axis }| (channel_axis, reduction_axis))
            .collect();
        let op_types: Vec<String> =
            weight_uses.iter().map(|u| u.op_type.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let disagree = || {
            let list: Vec<String> = weight_uses
                .iter()
                .filter_map(|u| u.role.map(|r| format!("{} '{}' axis {}", u.op_type, u.node, r.channel_axis)))
                .collect();
            list.join(", ")
        };
        let dims: Vec<usize> = c.dims.iter().map(|&d| d.max(0) as usize).collect();
        let (granularity, note) = if let Some(block) = recipe.block_size {
            let reductions: BTreeSet<Option<usize>> = roles.iter().map(|r| r.1).collect();
            let channels: BTreeSet<usize> = roles.iter().map(|r| r.0).collect();
            match (reductions.len(), reductions.first().copied().flatten()) {
                (1, Some(axis)) if dims[axis] >= block => (Granularity::Blocked { axis, block }, None),
                (1, Some(axis)) if channels.len() == 1 => (
                    Granularity::PerAxis { axis: *channels.first().expect("one") },
                    Some(format!(
                        "per-channel: its reduction axis has {} elements, fewer than the block size {block}",
                        dims[axis]
                    )),
                ),
                _ => (
                    Granularity::PerTensor,
                    Some(format!("per-tensor: its readers reduce along different axes ({})", disagree())),
                ),
            }
        } else if recipe.per_channel {
            if roles.len() == 1 || roles.iter().map(|r| r.0).collect::<BTreeSet<_>>().len() == 1 {
                (Granularity::PerAxis { axis: roles.first().expect("one").0 }, None)
            } else {
                (
                    Granularity::PerTensor,
                    Some(format!("per-tensor: its readers need different channel axes ({})", disagree())),
                )
            }
        } else {
            (Granularity::PerTensor, None)
        };
        // Weights that will feed integer kernels take symmetric values (ONNX Runtime's fused
        // kernels want zero weight zero points; the dynamic form folds the weight scales into one
        // Mul), unless asymmetric ones were asked for: under static quantization every integer-kernel
        // op's, under dynamic quantization MatMul's and Gemm's only. Weights that stay behind a
        // DequantizeLinear (weight-only, with or without data; Conv under dynamic) keep the
        // searched per-scale symmetry.
        let static_kernels = recipe.calibration.as_ref().is_some_and(|c| !c.weight_only);
        let integer_kernel = |op: &str| {
            if recipe.dynamic {
                op == crate::ops::MATMUL || op == crate::ops::GEMM
            } else {
                static_kernels
                    && crate::ops::spec_of(op)
                        .is_some_and(|s| matches!(s.activation, crate::ops::Activation::IntegerKernel { .. }))
            }
        };
        let symmetry = match recipe.symmetry() {
            Symmetry::Auto if op_types.iter().any(|op| integer_kernel(op)) => Symmetry::Symmetric,
            s => s,
        };
        // Dynamic quantization's integer products keep 8-bit values, as ONNX Runtime's own
        // quantize_dynamic does: 7 bits (which x86 kernels without VNNI cannot saturate, see
        // calibrate/weights.rs) cost 0.5 dB on a real transformer's tokens and wrecked its padded
        // positions (BENCHMARKS.md, "Transformers").
        let qtype = recipe.qtype(bits);
        let spec = QuantSpec {
            qtype,
            granularity,
            symmetry,
            range: recipe.weight_range,
            native_int4: recipe.native_int4 && bits == 4,
        };
        let channels: BTreeSet<usize> = roles.iter().map(|r| r.0).collect();
        let channel_axis = if channels.len() == 1 { channels.first().copied() } else { None };
        let explicit_zero_point = static_kernels && op_types.iter().any(|op| op == crate::ops::GEMM);
        planned.push(Planned { constant: ci, spec, op_types, note, channel_axis, explicit_zero_point });
    }
    (planned, skipped)
}

fn tensor_of<'a>(model: &'a Model, c: &Constant) -> &'a TensorProto {
    let mut g: &GraphProto = model.graph();
    for s in &c.graph {
        let attr = &g.node[s.node].attribute[s.attr];
        g = attr.g.as_ref().unwrap_or_else(|| &attr.graphs[s.index]);
    }
    match c.storage {
        Storage::Initializer => &g.initializer[c.index],
        Storage::Constant => constant_value(&g.node[c.index]).expect("analysis found a Constant value here"),
    }
}

#[cfg(feature = "tract")]
use crate::rounding::{Refined, WeightStats};
/// Without tract no layer statistics exist, so no weight is ever refined.
#[cfg(not(feature = "tract"))]
type WeightStats = std::collections::HashMap<String, std::convert::Infallible>;
#[cfg(not(feature = "tract"))]
struct Refined {
    nearest: f64,
    chosen: f64,
}

/// Quantizes the weights of `model` in place as `recipe` says, and reports what it did.
pub fn quantize_model(model: &mut Model, recipe: &Recipe) -> Result<Report> {
    quantize_model_with(model, recipe, None, &RunOptions { spill_above: u64::MAX, ..RunOptions::default() })
}

/// [`quantize_model`], rounding the weights that have input statistics in `stats` (by weight
/// name) to minimise their layer's output error instead of to nearest (see `rounding`).
/// Large models' weights are streamed as `opts` says (see `stream`).
pub(crate) fn quantize_model_with(
    model: &mut Model,
    recipe: &Recipe,
    stats: Option<&WeightStats>,
    opts: &RunOptions,
) -> Result<Report> {
    recipe.validate("--")?;
    let ir_version = model.proto.ir_version.unwrap_or(0);
    let opset_before = model.opset().unwrap_or(1);
    let analysis = analyse(&model.proto)?;
    let (planned, skipped) = plan(&analysis, recipe, ir_version);
    let mut report = Report {
        skipped,
        unmatched_rules: unmatched_rules(&analysis, recipe),
        already_quantized: analysis.quantized_nodes.clone(),
        opset_before,
        opset_after: opset_before,
        ir_version,
        ..Default::default()
    };
    if planned.is_empty() && !recipe.allow_empty {
        let origin = model.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the model".into());
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &report.skipped {
            *reasons.entry(s.reason.split(" (").next().unwrap_or(&s.reason)).or_default() += 1;
        }
        let why = if reasons.is_empty() {
            "it holds no float32 constants".to_string()
        } else {
            reasons.iter().map(|(r, n)| format!("{n} × {r}")).collect::<Vec<_>>().join("; ")
        };
        return Err(Error::NothingQuantized { origin, why });
    }

    let needed = planned.iter().map(|p| p.spec.min_opset()).max().unwrap_or(opset_before);
    let (analysis, planned) = if needed > opset_before {
        let upgrade = crate::opset::upgrade(&mut model.proto, needed)?;
        report.upgraded_ops = upgrade.rewritten;
        report.opset_after = needed;
        // Upgrading may insert nodes, which moves the node indices the first analysis recorded.
        let analysis = analyse(&model.proto)?;
        let (planned, _) = plan(&analysis, recipe, ir_version);
        (analysis, planned)
    } else {
        (analysis, planned)
    };
    let ir_needed = ir_version_for_opset(report.opset_after);
    if ir_version < ir_needed {
        model.proto.ir_version = Some(ir_needed);
    }
    report.ir_version = model.proto.ir_version.unwrap_or(ir_needed);

    let mut data = stream::quantize_weights(model, &analysis, &planned, stats, opts)?;
    let figures: Vec<(f64, Option<Refined>)> = data.iter_mut().map(|e| (e.sqnr_db, e.refined.take())).collect();
    rewrite(model, &analysis, &planned, data, ir_version, &mut report);
    let mut names = Names::of_graph(model.graph());
    report.gathered_tables = gather::gather_quantized_rows(model.graph_mut(), &mut names);
    let (mut nearest, mut chosen) = (0.0, 0.0);
    for (entry, (sqnr, refined)) in report.quantized.iter_mut().zip(figures) {
        entry.sqnr_db = sqnr;
        if let Some(r) = refined {
            entry.rounding_gain_db = Some(gain_db(r.nearest, r.chosen));
            (nearest, chosen) = (nearest + r.nearest, chosen + r.chosen);
        }
    }
    if stats.is_some() {
        let rounded = report.quantized.iter().filter(|q| q.rounding_gain_db.is_some()).count();
        report.data_aware =
            Some(DataAware { rounded, output_error_db: -gain_db(nearest, chosen), ..DataAware::default() });
    }
    report.weight_bytes_before = report.quantized.iter().map(|q| q.bytes_before).sum();
    report.weight_bytes_after = report.quantized.iter().map(|q| q.bytes_after).sum();
    Ok(report)
}

/// `10·log10(before / after)`: 0 when both are 0.
fn gain_db(before: f64, after: f64) -> f64 {
    if before <= 0.0 || after <= 0.0 {
        if before > after { f64::INFINITY } else { 0.0 }
    } else {
        10.0 * (before / after).log10()
    }
}

fn rewrite(
    model: &mut Model,
    analysis: &Analysis,
    planned: &[Planned],
    data: Vec<stream::Encoded>,
    ir_before: i64,
    report: &mut Report,
) {
    let mut names = Names::of_graph(model.graph());
    // Deepest graphs first: editing a graph's node list never moves the path of a graph above it.
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by(|&a, &b| {
        let (ca, cb) = (&analysis.constants[planned[a].constant], &analysis.constants[planned[b].constant]);
        cb.graph.len().cmp(&ca.graph.len()).then_with(|| ca.graph.cmp(&cb.graph)).then(a.cmp(&b))
    });
    let mut per_graph: BTreeMap<GraphPath, Vec<usize>> = BTreeMap::new();
    for &i in &order {
        per_graph.entry(analysis.constants[planned[i].constant].graph.clone()).or_default().push(i);
    }
    let mut graphs: Vec<(GraphPath, Vec<usize>)> = per_graph.into_iter().collect();
    graphs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));

    let mut data: Vec<Option<stream::Encoded>> = data.into_iter().map(Some).collect();
    let mut entries: Vec<(usize, QuantizedTensor)> = Vec::new();
    for (path, mut items) in graphs {
        items.sort();
        let g = graph_at_mut(model.graph_mut(), &path);
        let mut front: Vec<NodeProto> = Vec::new();
        let mut removed: BTreeSet<String> = BTreeSet::new();
        for i in items {
            let p = &planned[i];
            let c = &analysis.constants[p.constant];
            let q = data[i].take().expect("each weight is rewritten once");
            let (symmetric, bytes_after) = (q.symmetric, q.bytes());
            let (node, tensors) = dequantize_node(&mut names, c, &p.spec, q);
            g.initializer.extend(tensors);
            match c.storage {
                Storage::Initializer => {
                    removed.insert(c.name.clone());
                    front.push(node);
                }
                Storage::Constant => g.node[c.index] = node,
            }
            let location = match (c.graph.is_empty(), c.storage) {
                (true, Storage::Initializer) => "initializer",
                (true, Storage::Constant) => "constant",
                (false, Storage::Initializer) => "subgraph-initializer",
                (false, Storage::Constant) => "subgraph-constant",
            };
            entries.push((
                i,
                QuantizedTensor {
                    name: c.name.clone(),
                    location: location.into(),
                    op_types: p.op_types.clone(),
                    dims: c.dims.clone(),
                    spec: p.spec.clone(),
                    symmetric,
                    stored_as: dtype::name(p.spec.qtype.onnx_dtype(p.spec.native_int4)).into(),
                    bytes_before: c.elements() * 4,
                    bytes_after,
                    note: p.note.clone(),
                    sqnr_db: f64::INFINITY,
                    rounding_gain_db: None,
                },
            ));
        }
        g.initializer.retain(|t| !t.name.as_ref().is_some_and(|n| removed.contains(n)));
        if ir_before < 4 {
            // Old IR lists every initializer as an input; the weight is now computed, not fed.
            g.input.retain(|v| !v.name.as_ref().is_some_and(|n| removed.contains(n)));
        }
        front.append(&mut g.node);
        g.node = front;
    }
    entries.sort_by_key(|(i, _)| *i);
    report.quantized = entries.into_iter().map(|(_, e)| e).collect();
}

/// The DequantizeLinear node producing `c`'s name and its initializers.
fn dequantize_node(
    names: &mut Names,
    c: &Constant,
    spec: &QuantSpec,
    q: stream::Encoded,
) -> (NodeProto, Vec<TensorProto>) {
    let stored = spec.qtype.onnx_dtype(spec.native_int4);
    let param_dims = q.param_dims;
    let q_name = names.fresh(&format!("{}_quantized", c.name));
    let s_name = names.fresh(&format!("{}_scale", c.name));
    let node_name = names.fresh(&format!("{}_DequantizeLinear", c.name));
    let tensor = |name: String, data_type: i32, dims: Vec<i64>, raw: bytes::Bytes| TensorProto {
        name: Some(name),
        data_type: Some(data_type),
        dims,
        raw_data: Some(raw),
        ..Default::default()
    };
    let mut tensors = vec![
        tensor(q_name.clone(), stored, c.dims.clone(), q.values),
        tensor(s_name.clone(), dtype::FLOAT, param_dims.clone(), q.scales),
    ];
    let mut inputs = vec![q_name, s_name];
    // A missing zero point means 0 of the values' type: signed symmetric weights need none.
    if let Some(zero_points) = q.zero_points {
        let z_name = names.fresh(&format!("{}_zero_point", c.name));
        tensors.push(tensor(z_name.clone(), stored, param_dims, zero_points));
        inputs.push(z_name);
    }
    let mut node = NodeProto {
        name: Some(node_name),
        op_type: Some(crate::ops::DEQUANTIZE_LINEAR.into()),
        input: inputs,
        output: vec![c.name.clone()],
        ..Default::default()
    };
    match spec.granularity {
        Granularity::PerTensor => {}
        Granularity::PerAxis { axis } => node.set_attr_int("axis", axis as i64),
        Granularity::Blocked { axis, block } => {
            node.set_attr_int("axis", axis as i64);
            node.set_attr_int("block_size", block as i64);
        }
    }
    (node, tensors)
}
