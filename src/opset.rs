//! Raising a model's default-domain (`ai.onnx`) opset so the model still means the same thing.
//!
//! A quantization scheme sometimes needs a newer opset than the model's (DequantizeLinear:
//! per-tensor 10, per-axis 13, blocked/INT4 21). Changing the opset number alone would silently
//! reinterpret every node whose op definition changed in between (Softmax's axis, Squeeze's
//! axes, Resize's coordinates...), so the upgrade goes node by node, in every graph at any depth
//! (If/Loop/Scan bodies) and in model-local functions:
//!
//! 1. `opset/history.rs` (generated from ONNX's schemas by `scripts/gen_op_history.py`) lists,
//!    for each op, the opsets that redefined it;
//! 2. `opset/adapters.rs` (hand-written) says, for every one of those definitions from opset 8
//!    to 21, whether a node of the previous definition is already valid under the new one, or
//!    how to rewrite it (`opset/transforms.rs`), or why it cannot be ([`op_changes`] lists them);
//! 3. each node is walked through the definitions in (model opset, target] in order. A definition
//!    with no adapter is an error naming the node, never a guess.
//!
//! Nodes of other domains are left alone. The IR version is the caller's business.

mod adapters;
mod context;
pub(crate) mod facts;
mod history;
mod transforms;

use std::collections::{BTreeMap, HashSet};

use crate::error::{Error, Result};
use crate::onnx::graph::{Names, node_domain};
use crate::onnx::proto::{FunctionProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
use crate::ops::min_opset;

use adapters::Adapter;
use context::{ConstantStore, NodeCtx};
use facts::Scope;

pub use history::LATEST_OPSET;

/// What an upgrade changed.
#[derive(Debug, Clone, Default)]
pub struct Upgrade {
    /// Opset before.
    pub from: i64,
    /// Opset after.
    pub to: i64,
    /// Nodes rewritten, by op type.
    pub rewritten: BTreeMap<String, usize>,
}

/// The version history of one default-domain op (see [`history::OP_HISTORY`]).
#[derive(Debug)]
pub(crate) struct OpHistory {
    /// Op type.
    pub op: &'static str,
    /// The opsets that (re)defined it, ascending.
    pub since: &'static [i64],
    /// The definitions ONNX marks deprecated.
    pub deprecated: &'static [i64],
}

/// The history of `op`, if it is a default-domain op ONNX knows.
pub(crate) fn op_history(op: &str) -> Option<&'static OpHistory> {
    let table = history::OP_HISTORY;
    table.binary_search_by(|h| h.op.cmp(op)).ok().map(|i| &table[i])
}

/// Which definition of `h` a model at `opset` uses: the newest one not after it.
fn definition_at(h: &OpHistory, opset: i64) -> Option<i64> {
    h.since.iter().rev().copied().find(|&v| v <= opset)
}

fn is_default_domain(domain: Option<&str>) -> bool {
    matches!(domain, None | Some("") | Some("ai.onnx"))
}

fn default_opset(imports: &[OperatorSetIdProto]) -> Option<i64> {
    imports.iter().find(|o| is_default_domain(o.domain.as_deref())).map(|o| o.version.unwrap_or(1))
}

fn set_default_opset(imports: &mut Vec<OperatorSetIdProto>, version: i64) {
    match imports.iter_mut().find(|o| is_default_domain(o.domain.as_deref())) {
        Some(o) => o.version = Some(version),
        None => imports.push(OperatorSetIdProto { domain: Some(String::new()), version: Some(version) }),
    }
}

/// What the user can do when a node cannot be upgraded from `from` to `to`: keep the model's
/// opset with a scheme it can express, or re-export the model at a newer opset.
pub(crate) fn advice(from: i64, to: i64) -> String {
    let reexport = format!("re-export the model at opset >= {to}");
    if from >= min_opset::PER_AXIS {
        format!(
            "quantize per-channel or per-tensor with 8 bits (no --block-size, no 4-bit) to keep opset {from}, or {reexport}"
        )
    } else if from >= min_opset::PER_TENSOR {
        format!("quantize per-tensor with 8 bits (--per-tensor) to keep opset {from}, or {reexport}")
    } else {
        reexport
    }
}

/// Raises the default-domain opset of `model` to `target`, rewriting every node (in the main
/// graph, in subgraphs at any depth and in model-local functions) whose op definition changed
/// in between. A model already at `target` or above is left as it is.
///
/// New constants (an attribute that became an input) are appended as initializers, so existing
/// initializer indices stay valid; nodes may be inserted, so node indices do not. On error the
/// model is left unchanged.
///
/// # Errors
///
/// [`Error::OpsetUpgrade`] naming the node when one cannot be upgraded (or its op's change is not
/// implemented); [`Error::InvalidModel`] when the model has no graph or uses the default domain
/// without importing it.
pub fn upgrade(model: &mut ModelProto, target: i64) -> Result<Upgrade> {
    let graph = model.graph.as_ref().ok_or_else(|| Error::InvalidModel("the model has no graph".into()))?;
    let declared = default_opset(&model.opset_import);
    let from = declared.unwrap_or(1);
    if target <= from {
        return Ok(Upgrade { from, to: from, rewritten: BTreeMap::new() });
    }
    if declared.is_none() && uses_default_domain(graph) {
        return Err(Error::InvalidModel(
            "the model uses ai.onnx ops but imports no ai.onnx opset; add one to its opset_import".into(),
        ));
    }
    if target > LATEST_OPSET {
        return Err(Error::OpsetUpgrade {
            from,
            to: target,
            node: "<model>".into(),
            op: "ai.onnx".into(),
            reason: format!(
                "asks for an opset newer than the newest quantize-rs knows ({LATEST_OPSET}); choose opset <= {LATEST_OPSET}"
            ),
        });
    }

    // Work on a copy so a refusal halfway leaves the caller's model as it was (a caller may fall
    // back to a scheme the old opset can express). Tensor bytes are shared, not copied.
    let mut work = model.clone();
    let mut up = Upgrader { to: target, used: used_names(&work), rewritten: BTreeMap::new() };
    let graph = work.graph.as_mut().expect("checked above");
    let mut names = Names::of_graph(graph);
    up.graph(graph, from, None, &mut names, ConstantStore::initializers())?;
    for f in &mut work.functions {
        up.function(f)?;
    }
    set_default_opset(&mut work.opset_import, target);
    *model = work;
    Ok(Upgrade { from, to: target, rewritten: up.rewritten })
}

fn uses_default_domain(g: &GraphProto) -> bool {
    let mut found = false;
    crate::onnx::graph::walk_graphs(g, &mut |_, g| found |= g.node.iter().any(|n| node_domain(n).is_empty()));
    found
}

/// Every name read anywhere in the model (node inputs, graph and function outputs), to tell
/// whether an output an upgrade would drop or retype is needed. Over-approximates across scopes,
/// which can only turn a rewrite into an error, never into a wrong model.
fn used_names(model: &ModelProto) -> HashSet<String> {
    fn nodes(used: &mut HashSet<String>, nodes: &[NodeProto]) {
        for n in nodes {
            used.extend(n.input.iter().filter(|i| !i.is_empty()).cloned());
            for a in &n.attribute {
                for g in a.g.iter().chain(&a.graphs) {
                    graph(used, g);
                }
            }
        }
    }
    fn graph(used: &mut HashSet<String>, g: &GraphProto) {
        used.extend(g.output.iter().filter_map(|o| o.name.clone()));
        nodes(used, &g.node);
    }
    let mut used = HashSet::new();
    if let Some(g) = &model.graph {
        graph(&mut used, g);
    }
    for f in &model.functions {
        used.extend(f.output.iter().cloned());
        nodes(&mut used, &f.node);
    }
    used
}

/// The state of one upgrade run.
struct Upgrader {
    to: i64,
    used: HashSet<String>,
    rewritten: BTreeMap<String, usize>,
}

impl Upgrader {
    /// Upgrades the nodes of `g` (a graph whose nodes are at opset `from`) and of its subgraphs.
    fn graph(
        &mut self,
        g: &mut GraphProto,
        from: i64,
        parent: Option<&Scope>,
        names: &mut Names,
        mut store: ConstantStore,
    ) -> Result<()> {
        let scope = Scope::of_graph(g, parent);
        let mut dropped = Vec::new();
        g.node = self.nodes(std::mem::take(&mut g.node), from, &scope, names, &mut store, &mut dropped)?;
        g.initializer.extend(store.into_initializers());
        if !dropped.is_empty() {
            g.value_info.retain(|v| !v.name.as_ref().is_some_and(|n| dropped.contains(n)));
        }
        Ok(())
    }

    /// Upgrades a model-local function whose body imports an older default opset. Functions
    /// have no initializers, so new constants become `Constant` nodes.
    fn function(&mut self, f: &mut FunctionProto) -> Result<()> {
        let Some(from) = default_opset(&f.opset_import) else {
            return Ok(());
        };
        if from >= self.to {
            return Ok(());
        }
        // Function bodies have their own namespace; `fresh` on a free name takes it.
        let mut names = Names::default();
        for n in f.input.iter().chain(&f.output) {
            names.fresh(n);
        }
        for n in &f.node {
            for s in n.input.iter().chain(&n.output).chain(&n.name) {
                names.fresh(s);
            }
            for a in &n.attribute {
                for g in a.g.iter().chain(&a.graphs) {
                    crate::onnx::graph::walk_graphs(g, &mut |_, g| {
                        for n in &g.node {
                            for s in n.input.iter().chain(&n.output).chain(&n.name) {
                                names.fresh(s);
                            }
                        }
                    });
                }
            }
        }
        let scope = Scope::of_function(f);
        let mut store = ConstantStore::nodes();
        let mut dropped = Vec::new();
        f.node = self.nodes(std::mem::take(&mut f.node), from, &scope, &mut names, &mut store, &mut dropped)?;
        set_default_opset(&mut f.opset_import, self.to);
        Ok(())
    }

    /// Upgrades a list of nodes in order; returns it with any nodes the rewrites added.
    fn nodes(
        &mut self,
        nodes: Vec<NodeProto>,
        from: i64,
        scope: &Scope,
        names: &mut Names,
        store: &mut ConstantStore,
        dropped: &mut Vec<String>,
    ) -> Result<Vec<NodeProto>> {
        let mut out = Vec::with_capacity(nodes.len());
        for mut node in nodes {
            // Subgraphs first: their own nodes are at the same opset as the node holding them.
            for attr in &mut node.attribute {
                let sub_store = if store.uses_nodes() { ConstantStore::nodes() } else { ConstantStore::initializers() };
                if let Some(sub) = attr.g.as_mut() {
                    self.graph(sub, from, Some(scope), names, sub_store.clone())?;
                }
                for sub in &mut attr.graphs {
                    self.graph(sub, from, Some(scope), names, sub_store.clone())?;
                }
            }
            if !node_domain(&node).is_empty() {
                out.push(node);
                continue;
            }
            let mut ctx = NodeCtx::new(&mut node, from, self.to, scope, names, store, &self.used, dropped);
            let original_op = ctx.node.op_type.clone().unwrap_or_default();
            let transformed = upgrade_node(&mut ctx)?;
            let (before, after) = ctx.finish();
            if transformed {
                *self.rewritten.entry(original_op).or_default() += 1;
            }
            out.extend(before);
            out.push(node);
            out.extend(after);
        }
        Ok(out)
    }
}

/// Walks one node through every definition of its op in (from, to]; returns whether a transform
/// rewrote it.
fn upgrade_node(ctx: &mut NodeCtx) -> Result<bool> {
    let (from, to) = (ctx.from, ctx.to);
    let mut op = ctx.node.op_type.clone().unwrap_or_default();
    let Some(mut history) = op_history(&op) else {
        return Err(ctx.fail(format!(
            "is not an operator of the ONNX standard up to opset {LATEST_OPSET} (it may be an experimental \
             op that ONNX removed), so how it changed is unknown"
        )));
    };
    let mut current = match definition_at(history, from) {
        Some(v) => v,
        // An op newer than the model's opset (e.g. a node added by a tool): it can only mean its
        // first definition.
        None if history.since[0] <= to => history.since[0],
        None => {
            return Err(
                ctx.fail(format!("does not exist at opset {to} (it was introduced at opset {})", history.since[0]))
            );
        }
    };
    // A deprecated definition that is not the op's first is a stub runtimes refuse (ONNX Runtime
    // rejects Upsample at opset >= 10): read the node with the definition before it, so the
    // deprecation's adapter replaces the op.
    if history.deprecated.contains(&current) && current != history.since[0] {
        current = *history.since.iter().rev().find(|&&v| v < current).expect("not the first definition");
    }

    let mut transformed = false;
    'op: loop {
        let pending: Vec<i64> = history.since.iter().copied().filter(|&v| v > current && v <= to).collect();
        for version in pending {
            let Some(adapter) = adapters::find(&op, version) else {
                return Err(ctx.fail(format!(
                    "needs the change {op} had at opset {version}, which quantize-rs does not implement"
                )));
            };
            ctx.version = version;
            match adapter {
                Adapter::Compatible(_) => {}
                Adapter::Transform(f) => {
                    let before = ctx.node.clone();
                    f(ctx)?;
                    // Some transforms only check (e.g. that a changed output is unread).
                    transformed |= *ctx.node != before || ctx.added_nodes();
                }
                Adapter::Unsupported(why) => return Err(ctx.fail(why.to_string())),
            }
            current = version;
            let now = ctx.node.op_type.clone().unwrap_or_default();
            if now != op {
                // The op was replaced (Upsample -> Resize, Scatter -> ScatterElements): continue
                // with the new op's definitions after this version.
                op = now;
                history = op_history(&op).expect("adapters only replace ops with known ops");
                continue 'op;
            }
        }
        break;
    }
    Ok(transformed)
}

/// How [`upgrade`] handles one redefinition of an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpChange {
    /// The op.
    pub op: &'static str,
    /// The opset whose definition changed it.
    pub opset: i64,
    /// What happens to a node of the previous definition.
    pub handling: Handling,
}

/// What happens to a node when its op is redefined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Left as it is; the text says why that is correct.
    Compatible(&'static str),
    /// Rewritten to keep its meaning.
    Rewritten,
    /// Refused with an error; the text says why.
    Refused(&'static str),
}

/// Every op redefinition between opsets 8 and 21 and how [`upgrade`] handles it, sorted by op.
pub fn op_changes() -> impl Iterator<Item = OpChange> {
    adapters::ADAPTERS.iter().map(|&(op, opset, a)| OpChange {
        op,
        opset,
        handling: match a {
            Adapter::Compatible(why) => Handling::Compatible(why),
            Adapter::Transform(_) => Handling::Rewritten,
            Adapter::Unsupported(why) => Handling::Refused(why),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_sorted_for_binary_search() {
        for w in history::OP_HISTORY.windows(2) {
            assert!(w[0].op < w[1].op, "{} before {}", w[0].op, w[1].op);
        }
        for h in history::OP_HISTORY {
            assert!(h.since.windows(2).all(|w| w[0] < w[1]), "{}", h.op);
            assert!(h.deprecated.iter().all(|d| h.since.contains(d)), "{}", h.op);
        }
        assert_eq!(op_history("Softmax").unwrap().since, &[1, 11, 13]);
        assert!(op_history("NoSuchOp").is_none());
    }

    /// The adapter table covers every definition between opset 8 and 21 (the step from 7 to 8
    /// onwards), so an upgrade of a model at opset >= 7 to <= 21 never meets a missing entry.
    #[test]
    fn every_definition_from_8_to_21_has_an_adapter() {
        let mut missing = Vec::new();
        for h in history::OP_HISTORY {
            for &v in &h.since[1..] {
                if (8..=21).contains(&v) && adapters::find(h.op, v).is_none() {
                    missing.push(format!("{}-{v}", h.op));
                }
            }
        }
        assert!(missing.is_empty(), "no adapter for {missing:?}");
    }

    /// Every adapter names a real redefinition (not an op's first version), so a typo in the
    /// table cannot hide a missing entry.
    #[test]
    fn every_adapter_names_a_redefinition() {
        for (op, v, _) in adapters::ADAPTERS {
            let h = op_history(op).unwrap_or_else(|| panic!("{op} is not an ONNX op"));
            assert!(h.since[1..].contains(v), "{op}-{v} is not a redefinition of {op} ({:?})", h.since);
        }
        for w in adapters::ADAPTERS.windows(2) {
            assert!((w[0].0, w[0].1) < (w[1].0, w[1].1), "adapters out of order at {}-{}", w[1].0, w[1].1);
        }
    }

    #[test]
    fn definition_at_picks_the_newest_not_after() {
        let h = op_history("Squeeze").unwrap();
        assert_eq!(definition_at(h, 12), Some(11));
        assert_eq!(definition_at(h, 13), Some(13));
        assert_eq!(definition_at(op_history("Resize").unwrap(), 9), None);
    }

    #[test]
    fn advice_names_what_keeps_the_opset() {
        assert!(advice(9, 13).starts_with("re-export the model at opset >= 13"));
        assert!(advice(11, 13).contains("--per-tensor"));
        assert!(advice(13, 21).contains("per-channel"));
    }

    use crate::onnx::proto::{TypeProto, ValueInfoProto, dtype, type_proto};

    fn model(opset: i64, nodes: Vec<NodeProto>, inputs: Vec<ValueInfoProto>) -> ModelProto {
        ModelProto {
            opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }],
            graph: Some(GraphProto { node: nodes, input: inputs, ..Default::default() }),
            ..Default::default()
        }
    }

    fn op(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn typed(name: &str, elem: i32) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: Some(elem), shape: None })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn refusal(m: &mut ModelProto, target: i64) -> String {
        let before = m.clone();
        let e = upgrade(m, target).expect_err("the upgrade should be refused");
        assert_eq!(*m, before, "a refused upgrade leaves the model unchanged");
        e.to_string()
    }

    #[test]
    fn type_checks_refuse_what_the_new_definition_rejects() {
        let mut erf = model(9, vec![op("Erf", &["x"], &["y"])], vec![typed("x", dtype::INT32)]);
        let e = refusal(&mut erf, 13);
        assert!(e.contains("node '<unnamed, output y>' (Erf)") && e.contains("int32"), "{e}");
        let mut ok = model(9, vec![op("Erf", &["x"], &["y"])], vec![typed("x", dtype::FLOAT)]);
        assert!(upgrade(&mut ok, 13).unwrap().rewritten.is_empty());

        let q = op("QuantizeLinear", &["x", "s"], &["q"]);
        let e = refusal(&mut model(13, vec![q], vec![typed("x", dtype::INT32)]), 19);
        assert!(e.contains("int32"), "{e}");
    }

    #[test]
    fn ops_newer_than_the_model_mean_their_first_definition() {
        // A DequantizeLinear (opset 10) in an opset-9 model, e.g. added by a tool before the upgrade.
        let mut m = model(9, vec![op("DequantizeLinear", &["q", "s"], &["y"])], vec![]);
        upgrade(&mut m, 13).unwrap();
        assert_eq!(default_opset(&m.opset_import), Some(13));
        // One that does not exist at the target either is an error.
        let e = refusal(&mut model(9, vec![op("LayerNormalization", &["x", "s"], &["y"])], vec![]), 13);
        assert!(e.contains("does not exist at opset 13 (it was introduced at opset 17)"), "{e}");
    }

    #[test]
    fn targets_beyond_the_known_opsets_are_refused() {
        let e = refusal(&mut model(13, vec![op("Relu", &["x"], &["y"])], vec![]), LATEST_OPSET + 1);
        assert!(e.contains("newer than the newest"), "{e}");
    }

    #[test]
    fn a_model_without_a_default_import_gets_one() {
        let mut m = model(13, vec![], vec![]);
        m.opset_import.clear();
        let u = upgrade(&mut m, 13).unwrap();
        assert_eq!((u.from, u.to), (1, 13));
        assert_eq!(default_opset(&m.opset_import), Some(13));
        let mut bad = model(13, vec![op("Relu", &["x"], &["y"])], vec![]);
        bad.opset_import.clear();
        assert!(matches!(upgrade(&mut bad, 13), Err(Error::InvalidModel(_))));
    }

    #[test]
    fn every_change_is_listed_with_its_handling() {
        let changes: Vec<OpChange> = op_changes().collect();
        assert!(changes.contains(&OpChange { op: "Squeeze", opset: 13, handling: Handling::Rewritten }));
        assert!(changes.iter().any(|c| c.op == "Scan" && c.opset == 9 && matches!(c.handling, Handling::Refused(_))));
        assert!(
            changes.iter().any(|c| c.op == "Relu" && c.opset == 14 && matches!(c.handling, Handling::Compatible(_)))
        );
    }
}
