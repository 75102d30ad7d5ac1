//! Graph checks: structure, connectivity (every input produced once, in scope) and opsets.

use crate::onnx::graph::{NodeExt, node_domain, node_label, walk_graphs};
use crate::onnx::model::Model;
use crate::onnx::model::ir_version_for_opset;
use crate::onnx::proto::{GraphProto, NodeProto, dtype};
use crate::ops::{self, min_opset};
use std::collections::HashSet;

pub(super) fn structure(m: &Model) -> Vec<String> {
    let mut p = vec![];
    let g = m.graph();
    if g.node.is_empty() {
        p.push("the main graph has no nodes".into());
    }
    if g.output.is_empty() {
        p.push("the main graph has no outputs".into());
    }
    if m.proto.ir_version.is_none_or(|v| v < 1) {
        p.push("the model declares no IR version".into());
    }
    walk_graphs(g, &mut |_, sub| {
        for n in &sub.node {
            if n.op_type.as_deref().is_none_or(str::is_empty) {
                p.push(format!("node '{}' has no op type", node_label(n)));
            }
        }
        for t in &sub.initializer {
            if t.name.as_deref().is_none_or(str::is_empty) {
                p.push("an initializer has no name".into());
            }
        }
    });
    p
}

/// Every node input must be defined before it is read: by a graph input, an initializer, an
/// earlier node, or (in a subgraph) a name visible in an enclosing graph. No name is produced twice.
pub(super) fn connectivity(g: &GraphProto) -> Vec<String> {
    crate::onnx::graph::broken_connections(g, true)
}

pub(super) fn opsets(m: &Model, original: &Model) -> Vec<String> {
    let mut p = vec![];
    let Some(opset) = m.opset() else {
        return vec!["the model imports no default-domain (ai.onnx) opset".into()];
    };
    if let Some(before) = original.opset()
        && opset < before
    {
        p.push(format!("the opset went down from {before} to {opset}; quantizing never lowers it"));
    }
    let ir = m.proto.ir_version.unwrap_or(0);
    let ir_needed = ir_version_for_opset(opset);
    if ir < ir_needed {
        p.push(format!("IR version {ir} is too old for opset {opset} (needs {ir_needed})"));
    }
    let imported: HashSet<String> = m
        .proto
        .opset_import
        .iter()
        .map(|o| match o.domain.as_deref() {
            None | Some("") | Some("ai.onnx") => String::new(),
            Some(d) => d.to_string(),
        })
        .collect();
    let mut missing_domains = HashSet::new();
    let mut int4 = false;
    walk_graphs(m.graph(), &mut |_, g| {
        int4 |= g.initializer.iter().any(|t| matches!(t.data_type, Some(dtype::INT4 | dtype::UINT4)));
        for n in &g.node {
            let d = node_domain(n);
            if !imported.contains(d) && missing_domains.insert(d.to_string()) {
                p.push(format!("node '{}' uses domain '{d}', which the model does not import", node_label(n)));
            }
            if !is_qdq(n) {
                continue;
            }
            let op = n.op_type.as_deref().unwrap_or("");
            let mut need = |what: &str, min: i64| {
                if opset < min {
                    p.push(format!("node '{}' ({op}) {what} needs opset {min}, the model has {opset}", node_label(n)));
                }
            };
            need("", min_opset::PER_TENSOR);
            if n.attr("axis").is_some() {
                need("with `axis`", min_opset::PER_AXIS);
            }
            if n.attr("block_size").is_some() {
                need("with `block_size`", min_opset::BLOCKED_OR_INT4);
            }
        }
    });
    if int4 && opset < min_opset::BLOCKED_OR_INT4 {
        p.push(format!("INT4/UINT4 tensors need opset {}, the model has {opset}", min_opset::BLOCKED_OR_INT4));
    }
    p
}

pub(super) fn is_qdq(n: &NodeProto) -> bool {
    node_domain(n).is_empty() && matches!(n.op_type.as_deref(), Some(ops::QUANTIZE_LINEAR | ops::DEQUANTIZE_LINEAR))
}
