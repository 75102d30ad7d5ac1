//! Embedding tables read by Gather: gather the integer rows, then dequantize only those.
//!
//! The weight pass writes every weight as `DequantizeLinear(table) → Gather`, which makes ONNX
//! Runtime dequantize the whole table on every run: all-MiniLM-L6-v2's 30522×384 word table
//! cost 2.4 ms a sentence, more than the rest of the model saves. Gathering first touches only
//! the rows the ids pick:
//!
//! ```text
//! per tensor:   Gather(q, ids) → DequantizeLinear(·, scale, zero point)
//! per row:      Gather(q, ids) → Cast → [Sub Gather(zero point, ids)] → Mul Unsqueeze(Gather(scale, ids))
//! ```
//!
//! the same values as before, bit for bit in exact arithmetic.

use std::collections::HashMap;

use crate::onnx::graph::{Names, NodeExt};
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto, dtype};
use crate::ops;

/// Rewrites the main graph's quantized tables read only by Gathers along their scale axis (or
/// with one scale); returns how many tables.
pub(super) fn gather_quantized_rows(g: &mut GraphProto, names: &mut Names) -> usize {
    let readers = crate::onnx::graph::readers(g);
    let inits: HashMap<&str, &TensorProto> =
        g.initializer.iter().filter_map(|t| Some((t.name.as_deref()?, t))).collect();
    let outputs: Vec<&str> = g.output.iter().filter_map(|v| v.name.as_deref()).collect();
    // (DequantizeLinear index, its Gather readers, per-row)
    let mut plans: Vec<(usize, Vec<usize>, bool)> = Vec::new();
    for (i, d) in g.node.iter().enumerate() {
        if !ops::is(d, ops::DEQUANTIZE_LINEAR) || d.attr("block_size").is_some() || d.output.len() != 1 {
            continue;
        }
        let table = &d.output[0];
        let (Some(q), Some(s)) = (inits.get(d.input[0].as_str()), d.input.get(1).and_then(|s| inits.get(s.as_str())))
        else {
            continue;
        };
        let zp_ok = d.input.get(2).is_none_or(|z| z.is_empty() || inits.contains_key(z.as_str()));
        let rank = q.dims.len() as i64;
        let per_tensor = s.dims.iter().product::<i64>() == 1;
        let axis = d.attr("axis").and_then(|a| a.i).map(|a| if a < 0 { a + rank } else { a }).unwrap_or(1);
        let Some(rs) = readers.get(table) else { continue };
        if !zp_ok || outputs.contains(&table.as_str()) || rank < 1 || (!per_tensor && (axis != 0 || rank < 2)) {
            continue;
        }
        let gathers_along = |r: &usize| {
            // A read from inside an If/Loop/Scan body is not a Gather of this graph.
            if *r == crate::onnx::graph::SUBGRAPH_READER {
                return false;
            }
            let n = &g.node[*r];
            let gather_axis = n.attr("axis").and_then(|a| a.i).map(|a| if a < 0 { a + rank } else { a }).unwrap_or(0);
            ops::is(n, ops::GATHER) && n.input.first() == Some(table) && gather_axis == 0 && n.input.len() == 2
        };
        if rs.iter().all(gathers_along) {
            plans.push((i, rs.clone(), !per_tensor));
        }
    }
    if plans.is_empty() {
        return 0;
    }
    let mut replace: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut new_inits = Vec::new();
    let mut dead = Vec::new();
    for (di, gathers, per_row) in &plans {
        let d = g.node[*di].clone();
        let rank = inits[d.input[0].as_str()].dims.len();
        let zp = d.input.get(2).filter(|z| !z.is_empty()).cloned();
        dead.push(*di);
        for &gi in gathers {
            let n = &g.node[gi];
            let (ids, out) = (n.input[1].clone(), n.output[0].clone());
            let base = out.clone();
            let rows = names.fresh(&format!("{base}_quantized_rows"));
            let mut nodes =
                vec![names.node(&base, ops::GATHER, vec![d.input[0].clone(), ids.clone()], vec![rows.clone()])];
            if !per_row {
                let mut dq =
                    names.node(&base, ops::DEQUANTIZE_LINEAR, vec![rows, d.input[1].clone()], vec![out.clone()]);
                if let Some(z) = &zp {
                    dq.input.push(z.clone());
                }
                nodes.push(dq);
            } else {
                // Each gathered row's scale (and zero point), broadcast over the row.
                let axes = names.fresh(&format!("{base}_row_axes"));
                let trailing: Vec<i64> = (1..rank as i64).map(|k| -k).collect();
                new_inits.push(crate::onnx::tensor::int64_tensor(axes.clone(), vec![trailing.len() as i64], &trailing));
                let per_row_of = |names: &mut Names, nodes: &mut Vec<NodeProto>, t: &str, what: &str| {
                    let picked = names.fresh(&format!("{base}_row_{what}s"));
                    let shaped = names.fresh(&format!("{base}_row_{what}s_broadcast"));
                    nodes.push(names.node(&base, ops::GATHER, vec![t.to_string(), ids.clone()], vec![picked.clone()]));
                    nodes.push(names.node(&base, ops::UNSQUEEZE, vec![picked, axes.clone()], vec![shaped.clone()]));
                    shaped
                };
                let values = names.fresh(&format!("{base}_rows_float"));
                let mut cast = names.node(&base, ops::CAST, vec![rows], vec![values.clone()]);
                cast.set_attr_int("to", dtype::FLOAT as i64);
                nodes.push(cast);
                let centred = match &zp {
                    None => values,
                    Some(z) => {
                        let zs = per_row_of(names, &mut nodes, z, "zero_point");
                        let (zf, c) = (
                            names.fresh(&format!("{base}_row_zero_points_float")),
                            names.fresh(&format!("{base}_rows_centred")),
                        );
                        let mut cast = names.node(&base, ops::CAST, vec![zs], vec![zf.clone()]);
                        cast.set_attr_int("to", dtype::FLOAT as i64);
                        nodes.push(cast);
                        nodes.push(names.node(&base, ops::SUB, vec![values, zf], vec![c.clone()]));
                        c
                    }
                };
                let scales = per_row_of(names, &mut nodes, &d.input[1], "scale");
                nodes.push(names.node(&base, ops::MUL, vec![centred, scales], vec![out.clone()]));
            }
            replace.insert(gi, nodes);
        }
    }
    let old = std::mem::take(&mut g.node);
    for (i, n) in old.into_iter().enumerate() {
        if dead.contains(&i) {
            continue;
        }
        match replace.remove(&i) {
            Some(nodes) => g.node.extend(nodes),
            None => g.node.push(n),
        }
    }
    g.initializer.extend(new_inits);
    plans.len()
}
