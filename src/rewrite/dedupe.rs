//! Merging nodes that compute the same thing.
//!
//! Exporters repeat shape plumbing per product: all-MiniLM-L6-v2 in the Gemm style reshapes the
//! same LayerNorm output three times (query, key, value), each Reshape with its own, equal,
//! shape constant. Rewrites that key on a product's input tensor (the outlier split) then see
//! three inputs where there is one, and write three masks, three gathers and three
//! quantizers. [`merge_duplicate_nodes`] keeps the first of such nodes and points the readers of
//! the others at it, as ONNX Runtime's own common-subexpression pass would, but before
//! quantize-rs rewrites the graph.

use std::collections::{HashMap, HashSet};

use prost::Message;

use crate::onnx::graph::{SUBGRAPH_READER, node_domain};
use crate::onnx::proto::GraphProto;
use crate::ops::PURE_SHAPE_OPS;

/// Constants of at most this many bytes are compared by value (shapes, axes, indices).
const SMALL_CONSTANT_BYTES: usize = 256;

/// Merges the [`PURE_SHAPE_OPS`] nodes of the main graph whose op, attributes and inputs are the
/// same (small initializers compared by value), keeping the first; returns how many it removed.
/// A node whose output is a graph output or is read inside a subgraph is kept. Exact: the merged
/// nodes computed equal values.
pub fn merge_duplicate_nodes(g: &mut GraphProto) -> usize {
    let fed: HashSet<&str> = g.input.iter().filter_map(|v| v.name.as_deref()).collect();
    // Small initializers by value; one a caller may feed (also a graph input) by name only.
    let by_value: HashMap<String, Vec<u8>> = g
        .initializer
        .iter()
        .filter(|t| t.name.as_deref().is_some_and(|n| !fed.contains(n)))
        .filter_map(|t| {
            let mut unnamed = t.clone();
            unnamed.name = None;
            let bytes = unnamed.encode_to_vec();
            (bytes.len() <= SMALL_CONSTANT_BYTES).then(|| (t.name.clone().unwrap_or_default(), bytes))
        })
        .collect();
    let outputs: HashSet<String> = g.output.iter().filter_map(|v| v.name.clone()).collect();
    let readers = crate::onnx::graph::readers(g);
    let in_subgraph = |t: &str| readers.get(t).is_some_and(|r| r.contains(&SUBGRAPH_READER));
    let mut rename: HashMap<String, String> = HashMap::new();
    let mut first: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut removed: HashSet<usize> = HashSet::new();
    for i in 0..g.node.len() {
        for input in g.node[i].input.iter_mut() {
            if let Some(to) = rename.get(input.as_str()) {
                input.clone_from(to);
            }
        }
        let n = &g.node[i];
        let op = n.op_type.as_deref().unwrap_or("");
        if !node_domain(n).is_empty()
            || !PURE_SHAPE_OPS.contains(&op)
            || n.attribute.iter().any(|a| a.g.is_some() || !a.graphs.is_empty())
        {
            continue;
        }
        // The key: op, output count, each input (by value when a small constant), attributes.
        let mut key = Vec::new();
        let mut push = |tag: u8, bytes: &[u8]| {
            key.push(tag);
            key.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            key.extend_from_slice(bytes);
        };
        push(0, op.as_bytes());
        push(1, &(n.output.len() as u64).to_le_bytes());
        for input in &n.input {
            match by_value.get(input) {
                Some(v) => push(2, v),
                None => push(3, input.as_bytes()),
            }
        }
        let mut attrs: Vec<Vec<u8>> = n.attribute.iter().map(|a| a.encode_to_vec()).collect();
        attrs.sort();
        for a in &attrs {
            push(4, a);
        }
        let keepable = n.output.iter().all(|o| !outputs.contains(o) && !in_subgraph(o));
        match first.get(&key) {
            Some(&j) if keepable => {
                for (o, kept) in n.output.clone().into_iter().zip(g.node[j].output.clone()) {
                    rename.insert(o, kept);
                }
                removed.insert(i);
            }
            Some(_) => {}
            None => {
                first.insert(key, i);
            }
        }
    }
    // Readers listed before their producer (node order is not required) get their names too.
    for n in g.node.iter_mut() {
        for input in n.input.iter_mut() {
            if let Some(to) = rename.get(input.as_str()) {
                input.clone_from(to);
            }
        }
    }
    let old = std::mem::take(&mut g.node);
    g.node = old.into_iter().enumerate().filter(|(i, _)| !removed.contains(i)).map(|(_, n)| n).collect();
    removed.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{NodeProto, TensorProto, ValueInfoProto};

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn shape(name: &str, dims: &[i64]) -> TensorProto {
        crate::onnx::tensor::int64_tensor(name.to_string(), vec![dims.len() as i64], dims)
    }

    fn value(name: &str) -> ValueInfoProto {
        ValueInfoProto { name: Some(name.into()), ..Default::default() }
    }

    #[test]
    fn equal_reshapes_with_equal_shape_constants_merge_and_readers_follow() {
        let mut g = GraphProto {
            node: vec![
                node("Reshape", &["x", "s1"], "a"),
                node("Reshape", &["x", "s2"], "b"),
                node("Reshape", &["x", "s3"], "c"),
                node("Gemm", &["a", "w1"], "ya"),
                node("Gemm", &["b", "w2"], "yb"),
                node("Gemm", &["c", "w3"], "yc"),
            ],
            initializer: vec![shape("s1", &[-1, 4]), shape("s2", &[-1, 4]), shape("s3", &[-1, 2])],
            input: vec![value("x")],
            output: vec![value("ya"), value("yb"), value("yc")],
            ..Default::default()
        };
        assert_eq!(merge_duplicate_nodes(&mut g), 1);
        let inputs: Vec<&str> =
            g.node.iter().filter(|n| n.op_type.as_deref() == Some("Gemm")).map(|n| n.input[0].as_str()).collect();
        assert_eq!(inputs, ["a", "a", "c"], "b merged into a; c has another shape");
        assert_eq!(g.node.len(), 5);
    }

    #[test]
    fn graph_outputs_fed_constants_and_other_ops_are_kept() {
        let mut g = GraphProto {
            node: vec![
                node("Transpose", &["x"], "t1"),
                node("Transpose", &["x"], "t2"),
                node("Reshape", &["x", "fed"], "r1"),
                node("Reshape", &["x", "fed2"], "r2"),
                node("Relu", &["x"], "u1"),
                node("Relu", &["x"], "u2"),
            ],
            initializer: vec![shape("fed", &[4]), shape("fed2", &[4])],
            input: vec![value("x"), value("fed"), value("fed2")],
            output: ["t2", "r1", "r2", "u1", "u2"].iter().map(|n| value(n)).chain([value("t1")]).collect(),
            ..Default::default()
        };
        // t2 is a graph output; fed/fed2 may be fed by the caller; Relu is not a shape op.
        assert_eq!(merge_duplicate_nodes(&mut g), 0);
        assert_eq!(g.node.len(), 6);
        let mut dtypes = g.clone();
        dtypes.node[1].attribute.push(crate::onnx::proto::AttributeProto {
            name: Some("perm".into()),
            ints: vec![1, 0],
            ..Default::default()
        });
        assert_eq!(merge_duplicate_nodes(&mut dtypes), 0, "different attributes");
    }
}
