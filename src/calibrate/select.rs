//! Which activations static quantization quantizes: the integer-kernel ops and, chained to
//! them, the elementwise and pass-through ops whose inputs are all quantized.

use std::collections::{HashMap, HashSet};

use crate::onnx::graph::{NodeExt, node_domain, node_label};
use crate::onnx::proto::{GraphProto, NodeProto};
use crate::ops;

pub(super) struct Selection {
    /// Activation tensors to quantize, in first-use order.
    pub(super) tensors: Vec<String>,
    /// Indices (main graph) of the nodes whose activations are quantized.
    pub(super) nodes: Vec<usize>,
    /// The activation tensors of each node of `nodes`.
    pub(super) uses: Vec<Vec<String>>,
    /// (output, input) of pass-through ops: the output takes the input's range.
    pub(super) tied: Vec<(String, String)>,
    pub(super) skipped: Vec<(String, String)>,
}

impl Selection {
    /// The same nodes with only `tensors` quantized (the accuracy target's candidates).
    pub(super) fn keeping(&self, tensors: Vec<String>) -> Selection {
        Selection {
            tensors,
            nodes: self.nodes.clone(),
            uses: self.uses.clone(),
            tied: self.tied.clone(),
            skipped: self.skipped.clone(),
        }
    }

    /// Leaves float the nodes that touch a tensor of `drop` (with `why`), and every tensor only
    /// they used. `keep_tensor` says, in `tensors`' order, which tensors remain.
    pub(super) fn without(self, drop: &HashSet<String>, g: &GraphProto, why: &str) -> (Selection, Vec<bool>) {
        let mut sel = Selection { tensors: vec![], nodes: vec![], uses: vec![], tied: vec![], skipped: self.skipped };
        for (i, uses) in self.nodes.into_iter().zip(self.uses) {
            if uses.iter().any(|t| drop.contains(t)) {
                sel.skipped.push((node_label(&g.node[i]), why.to_string()));
            } else {
                sel.nodes.push(i);
                sel.uses.push(uses);
            }
        }
        let used: HashSet<&str> = sel.uses.iter().flatten().map(String::as_str).collect();
        let keep: Vec<bool> = self.tensors.iter().map(|t| used.contains(t.as_str())).collect();
        sel.tied =
            self.tied.into_iter().filter(|(o, i)| used.contains(o.as_str()) && used.contains(i.as_str())).collect();
        sel.tensors = self.tensors.into_iter().zip(&keep).filter(|(_, k)| **k).map(|(t, _)| t).collect();
        (sel, keep)
    }
}

/// The DequantizeLinear node of each quantized weight, by the weight's name (its output).
pub(super) fn dequantized_weights(g: &GraphProto) -> HashMap<String, NodeProto> {
    let inits: HashSet<&str> = g.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
    g.node
        .iter()
        .filter(|n| ops::is(n, ops::DEQUANTIZE_LINEAR) && n.input.first().is_some_and(|i| inits.contains(i.as_str())))
        .filter_map(|n| n.output.first().map(|o| (o.clone(), n.clone())))
        .collect()
}

/// The nodes of `op_types` whose activations are quantized, and those tensors. With `chain`
/// (the tensors the weight ops quantize), elementwise and pass-through ops are taken only where
/// every data input is already quantized: they then run as integer kernels without adding a
/// conversion, and a chain of them (Conv → Sigmoid → Mul → Concat → Conv) stays in uint8.
pub(super) fn select(g: &GraphProto, op_types: &[String], chain: Option<HashSet<String>>) -> Selection {
    let chained = chain.is_some();
    let mut quantized = chain.unwrap_or_default();
    let weights = dequantized_weights(g);
    let constants: HashSet<&str> = crate::onnx::graph::constants(g).into_keys().collect();
    let outputs: HashSet<&str> = g.output.iter().filter_map(|v| v.name.as_deref()).collect();
    let readers = crate::onnx::graph::readers(g);
    let mut tensors: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut nodes = Vec::new();
    let mut uses = Vec::new();
    let mut tied = Vec::new();
    let mut skipped = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        let op = n.op_type.as_deref().unwrap_or("");
        if !node_domain(n).is_empty() || !op_types.iter().any(|o| o == op) {
            continue;
        }
        let Some(spec) = ops::spec(n) else { continue };
        // Activation inputs: the data input, and a second operand that is not a constant.
        let weight_input = match spec.activation {
            ops::Activation::IntegerKernel { needs_weight: true, .. } => spec.weight.map(|w| w.input),
            _ => None,
        };
        if let Some(w) = weight_input
            && !n.input.get(w).is_some_and(|w| weights.contains_key(w.as_str()))
        {
            let constant = n.input.get(w).is_some_and(|w| constants.contains(w.as_str()));
            let why = if constant {
                "its weight is not quantized"
            } else {
                "a product of two activations (attention) stays float"
            };
            skipped.push((node_label(n), why.to_string()));
            continue;
        }
        if spec.activation == ops::Activation::PassThrough {
            // The data input only: the others are sizes, scales or split lengths.
            let data = n.input.first().map(String::as_str).unwrap_or("");
            let cubic = n.attr("mode").and_then(|a| a.s.as_deref()) == Some(b"cubic".as_slice());
            let why = if n.output.iter().any(|o| outputs.contains(o.as_str())) {
                Some("its output is a graph output")
            } else if cubic {
                Some("cubic interpolation overshoots its input's range")
            } else if data.is_empty() || constants.contains(data) || weights.contains_key(data) {
                Some("its input is a constant")
            } else {
                None
            };
            if chained && (why.is_some() || !quantized.contains(data)) {
                continue;
            }
            if let Some(why) = why {
                skipped.push((node_label(n), why.to_string()));
                continue;
            }
            let outs: Vec<&str> = n.output.iter().map(String::as_str).filter(|o| !o.is_empty()).collect();
            for a in std::iter::once(data).chain(outs.iter().copied()) {
                if seen.insert(a.to_string()) {
                    tensors.push(a.to_string());
                }
            }
            tied.extend(outs.iter().map(|o| (o.to_string(), data.to_string())));
            quantized.extend(outs.iter().map(|o| o.to_string()));
            nodes.push(i);
            uses.push(std::iter::once(data).chain(outs).map(String::from).collect());
            continue;
        }
        if spec.activation == ops::Activation::Elementwise {
            let output = n.output.first().map(String::as_str).unwrap_or("");
            let why = if outputs.contains(output) {
                Some("its output is a graph output")
            } else if n
                .input
                .iter()
                .any(|i| i.is_empty() || constants.contains(i.as_str()) || weights.contains_key(i.as_str()))
            {
                Some("it has a constant operand")
            } else {
                None
            };
            if chained && (why.is_some() || !n.input.iter().all(|i| quantized.contains(i))) {
                continue;
            }
            if let Some(why) = why {
                skipped.push((node_label(n), why.to_string()));
                continue;
            }
            quantized.insert(output.to_string());
            for a in n.input.iter().map(String::as_str).chain([output]) {
                if seen.insert(a.to_string()) {
                    tensors.push(a.to_string());
                }
            }
            nodes.push(i);
            uses.push(n.input.iter().cloned().chain([output.to_string()]).collect());
            continue;
        }
        let mut acts: Vec<&str> = Vec::new();
        for (j, input) in n.input.iter().enumerate().take(2) {
            if Some(j) == weight_input || input.is_empty() {
                continue;
            }
            if constants.contains(input.as_str()) || weights.contains_key(input.as_str()) {
                continue;
            }
            acts.push(input);
        }
        if acts.is_empty() {
            skipped.push((node_label(n), "it has no activation input".to_string()));
            continue;
        }
        let float_output = matches!(spec.activation, ops::Activation::IntegerKernel { float_output: true, .. });
        if let Some(out) = n.output.first().filter(|o| !float_output && !outputs.contains(o.as_str())) {
            // A Relu that alone reads the output is quantized past: its output's range starts at 0,
            // so the uint8 code spends no level on negatives, and ONNX Runtime drops the Relu and
            // fuses DequantizeLinear→Conv→QuantizeLinear into one integer kernel.
            let past = match readers.get(out).map(Vec::as_slice) {
                Some(&[r]) if r != crate::onnx::graph::SUBGRAPH_READER => {
                    let r = &g.node[r];
                    ops::is(r, ops::RELU).then(|| r.output.first()).flatten().filter(|o| !outputs.contains(o.as_str()))
                }
                _ => None,
            };
            acts.push(past.unwrap_or(out));
        }
        for a in &acts {
            if seen.insert(a.to_string()) {
                tensors.push(a.to_string());
            }
        }
        nodes.push(i);
        uses.push(acts.iter().map(|a| a.to_string()).collect());
    }
    Selection { tensors, nodes, uses, tied, skipped }
}
