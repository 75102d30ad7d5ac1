//! Walking an ONNX model: graphs nested in node attributes (If/Loop/Scan bodies), typed
//! attribute access, and fresh names that never collide with the model's own.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::onnx::proto::{AttributeProto, GraphProto, NodeProto, TensorProto, attribute_proto::AttributeType};

/// One step from a graph into a subgraph: node `node`, attribute `attr`, graph `index` in it
/// (0 for a `GRAPH` attribute, the position for a `GRAPHS` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct GraphStep {
    /// Index of the node holding the subgraph.
    pub node: usize,
    /// Index of the attribute in that node.
    pub attr: usize,
    /// Index of the graph within the attribute.
    pub index: usize,
}

/// Where a graph sits in the model: empty for the main graph.
pub type GraphPath = Vec<GraphStep>;

/// The subgraphs directly held by a node's attributes, with their steps.
pub fn node_subgraphs(node_index: usize, node: &NodeProto) -> Vec<(GraphStep, &GraphProto)> {
    let mut out = Vec::new();
    for (a, attr) in node.attribute.iter().enumerate() {
        if let Some(g) = &attr.g {
            out.push((GraphStep { node: node_index, attr: a, index: 0 }, g));
        }
        for (i, g) in attr.graphs.iter().enumerate().filter(|_| attr.g.is_none()) {
            out.push((GraphStep { node: node_index, attr: a, index: i }, g));
        }
    }
    out
}

/// Calls `f` on every graph, the main one first, then each subgraph depth-first in node order.
pub fn walk_graphs<'a>(root: &'a GraphProto, f: &mut dyn FnMut(&GraphPath, &'a GraphProto)) {
    fn go<'a>(path: &mut GraphPath, g: &'a GraphProto, f: &mut dyn FnMut(&GraphPath, &'a GraphProto)) {
        f(path, g);
        for (n, node) in g.node.iter().enumerate() {
            for (step, sub) in node_subgraphs(n, node) {
                path.push(step);
                go(path, sub, f);
                path.pop();
            }
        }
    }
    go(&mut Vec::new(), root, f)
}

/// A reader in [`readers`] that sits inside a subgraph: it cannot be rewired from the outer graph.
pub const SUBGRAPH_READER: usize = usize::MAX;

/// Every constant tensor of `g` by name: its initializers and the values of its `Constant` nodes.
pub fn constants(g: &GraphProto) -> HashMap<&str, &TensorProto> {
    let mut out: HashMap<&str, &TensorProto> =
        g.initializer.iter().filter_map(|t| t.name.as_deref().map(|n| (n, t))).collect();
    for n in &g.node {
        if let (Some(t), Some(o)) = (crate::onnx::tensor::constant_value(n), n.output.first()) {
            out.insert(o.as_str(), t);
        }
    }
    out
}

/// Who reads each tensor in `g`: the indices of `g`'s own nodes that take it as an input, and
/// [`SUBGRAPH_READER`] once for each read from inside one of their subgraphs (at any depth),
/// where a subgraph returning an outer tensor as its output reads it too.
pub fn readers(g: &GraphProto) -> HashMap<String, Vec<usize>> {
    let mut readers: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for input in n.input.iter().filter(|s| !s.is_empty()) {
            readers.entry(input.clone()).or_default().push(i);
        }
        for a in &n.attribute {
            for sub in a.g.iter().chain(&a.graphs) {
                walk_graphs(sub, &mut |_, sg| {
                    let outputs = sg.output.iter().filter_map(|o| o.name.as_ref());
                    for input in sg.node.iter().flat_map(|sn| &sn.input).chain(outputs).filter(|s| !s.is_empty()) {
                        readers.entry(input.clone()).or_default().push(SUBGRAPH_READER);
                    }
                });
            }
        }
    }
    readers
}

/// Calls `f` on every graph mutably (parents before children).
pub fn walk_graphs_mut(
    root: &mut GraphProto,
    f: &mut dyn FnMut(&GraphPath, &mut GraphProto) -> Result<()>,
) -> Result<()> {
    fn go(
        path: &mut GraphPath,
        g: &mut GraphProto,
        f: &mut dyn FnMut(&GraphPath, &mut GraphProto) -> Result<()>,
    ) -> Result<()> {
        f(path, g)?;
        for (n, node) in g.node.iter_mut().enumerate() {
            for (a, attr) in node.attribute.iter_mut().enumerate() {
                if let Some(sub) = attr.g.as_mut() {
                    path.push(GraphStep { node: n, attr: a, index: 0 });
                    go(path, sub, f)?;
                    path.pop();
                    continue;
                }
                for (i, sub) in attr.graphs.iter_mut().enumerate() {
                    path.push(GraphStep { node: n, attr: a, index: i });
                    go(path, sub, f)?;
                    path.pop();
                }
            }
        }
        Ok(())
    }
    go(&mut Vec::new(), root, f)
}

/// The graph at `path` below `root`.
pub fn graph_at_mut<'a>(root: &'a mut GraphProto, path: &[GraphStep]) -> &'a mut GraphProto {
    let mut g = root;
    for s in path {
        let attr = &mut g.node[s.node].attribute[s.attr];
        // An attribute holds either one graph (`g`) or a list (`graphs`), never both.
        g = match attr.g.as_mut() {
            Some(sub) => sub,
            None => &mut attr.graphs[s.index],
        };
    }
    g
}

/// Calls `f` on every tensor stored in the model's graphs: initializers, `Constant` values and
/// tensor attributes, at any depth. Sparse initializers are visited through their `values`.
pub fn for_each_tensor_mut(root: &mut GraphProto, f: &mut dyn FnMut(&mut TensorProto) -> Result<()>) -> Result<()> {
    walk_graphs_mut(root, &mut |_, g| {
        for t in &mut g.initializer {
            f(t)?;
        }
        for s in &mut g.sparse_initializer {
            if let Some(v) = s.values.as_mut() {
                f(v)?;
            }
            if let Some(i) = s.indices.as_mut() {
                f(i)?;
            }
        }
        for node in &mut g.node {
            for attr in &mut node.attribute {
                if let Some(t) = attr.t.as_mut() {
                    f(t)?;
                }
                for t in &mut attr.tensors {
                    f(t)?;
                }
            }
        }
        Ok(())
    })
}

/// A readable label for a node in messages: its name, or its first output when unnamed.
pub fn node_label(node: &NodeProto) -> String {
    match node.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => match node.output.first() {
            Some(o) => format!("<unnamed, output {o}>"),
            None => "<unnamed>".to_string(),
        },
    }
}

/// The op's domain with the ONNX default ("" and "ai.onnx") normalised to "".
pub fn node_domain(node: &NodeProto) -> &str {
    match node.domain.as_deref() {
        None | Some("") | Some("ai.onnx") => "",
        Some(d) => d,
    }
}

/// Typed, erroring access to node attributes.
pub trait NodeExt {
    /// The attribute called `name`.
    fn attr(&self, name: &str) -> Option<&AttributeProto>;
    /// An integer attribute, if present.
    fn attr_int(&self, name: &str) -> Result<Option<i64>>;
    /// A list of integers, if present.
    fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>>;
    /// A float attribute, if present.
    fn attr_float(&self, name: &str) -> Result<Option<f32>>;
    /// A string attribute, if present.
    fn attr_string(&self, name: &str) -> Result<Option<String>>;
    /// Removes the attribute called `name` and returns it.
    fn take_attr(&mut self, name: &str) -> Option<AttributeProto>;
    /// Sets (or replaces) an integer attribute.
    fn set_attr_int(&mut self, name: &str, v: i64);
    /// Sets (or replaces) a list-of-integers attribute.
    fn set_attr_ints(&mut self, name: &str, v: Vec<i64>);
    /// Sets (or replaces) a float attribute.
    fn set_attr_float(&mut self, name: &str, v: f32);
    /// Sets (or replaces) a string attribute.
    fn set_attr_string(&mut self, name: &str, v: &str);
    /// An error about attribute `attr` of this node.
    fn attr_error(&self, attr: &str, problem: impl Into<String>) -> Error;
}

fn attr_type(a: &AttributeProto) -> Option<AttributeType> {
    a.r#type.and_then(|t| AttributeType::try_from(t).ok())
}

impl NodeExt for NodeProto {
    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.attribute.iter().find(|a| a.name.as_deref() == Some(name))
    }
    fn attr_int(&self, name: &str) -> Result<Option<i64>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if matches!(attr_type(a), Some(AttributeType::Int) | None) && a.i.is_some() => Ok(a.i),
            Some(_) => Err(self.attr_error(name, "should be an integer")),
        }
    }
    fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if matches!(attr_type(a), Some(AttributeType::Ints) | None) => Ok(Some(a.ints.clone())),
            Some(_) => Err(self.attr_error(name, "should be a list of integers")),
        }
    }
    fn attr_float(&self, name: &str) -> Result<Option<f32>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if matches!(attr_type(a), Some(AttributeType::Float) | None) && a.f.is_some() => Ok(a.f),
            Some(_) => Err(self.attr_error(name, "should be a float")),
        }
    }
    fn attr_string(&self, name: &str) -> Result<Option<String>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if matches!(attr_type(a), Some(AttributeType::String) | None) && a.s.is_some() => {
                let bytes = a.s.as_deref().unwrap_or_default();
                String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| self.attr_error(name, "is not valid UTF-8"))
            }
            Some(_) => Err(self.attr_error(name, "should be a string")),
        }
    }
    fn take_attr(&mut self, name: &str) -> Option<AttributeProto> {
        let i = self.attribute.iter().position(|a| a.name.as_deref() == Some(name))?;
        Some(self.attribute.remove(i))
    }
    fn set_attr_int(&mut self, name: &str, v: i64) {
        self.take_attr(name);
        self.attribute.push(AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Int as i32),
            i: Some(v),
            ..Default::default()
        });
    }
    fn set_attr_ints(&mut self, name: &str, v: Vec<i64>) {
        self.take_attr(name);
        self.attribute.push(AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Ints as i32),
            ints: v,
            ..Default::default()
        });
    }
    fn set_attr_float(&mut self, name: &str, v: f32) {
        self.take_attr(name);
        self.attribute.push(AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Float as i32),
            f: Some(v),
            ..Default::default()
        });
    }
    fn set_attr_string(&mut self, name: &str, v: &str) {
        self.take_attr(name);
        self.attribute.push(AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::String as i32),
            s: Some(v.as_bytes().to_vec()),
            ..Default::default()
        });
    }
    fn attr_error(&self, attr: &str, problem: impl Into<String>) -> Error {
        Error::Attribute {
            node: node_label(self),
            op: self.op_type.clone().unwrap_or_default(),
            attr: attr.to_string(),
            problem: problem.into(),
        }
    }
}

/// What is broken in how `root`'s tensors connect: a node (at any depth) reading a name that
/// nothing in its scope defines (graph inputs, initializers, node outputs of its graph or an
/// enclosing one), a name produced twice in one graph, a graph output nothing produces. With
/// `in_order`, a node may only read what comes before it (ONNX requires topologically sorted
/// graphs; `validate` checks that), else any node of the scope counts. Empty when it connects.
pub fn broken_connections(root: &GraphProto, in_order: bool) -> Vec<String> {
    fn scope(g: &GraphProto, outer: &HashSet<String>, in_order: bool, where_: &str, problems: &mut Vec<String>) {
        let mut defined: HashSet<String> = outer.clone();
        defined.extend(g.input.iter().filter_map(|v| v.name.clone()));
        defined.extend(g.initializer.iter().filter_map(|t| t.name.clone()));
        defined.extend(g.sparse_initializer.iter().filter_map(|t| t.values.as_ref().and_then(|v| v.name.clone())));
        let mut produced: HashSet<String> = HashSet::new();
        let mut produce = |n: &NodeProto, defined: &mut HashSet<String>, problems: &mut Vec<String>| {
            for o in n.output.iter().filter(|s| !s.is_empty()) {
                if !produced.insert(o.clone()) {
                    problems.push(format!("{where_}: '{o}' is produced twice (again by node '{}')", node_label(n)));
                }
                defined.insert(o.clone());
            }
        };
        if !in_order {
            g.node.iter().for_each(|n| produce(n, &mut defined, problems));
        }
        for (i, n) in g.node.iter().enumerate() {
            for input in n.input.iter().filter(|s| !s.is_empty() && !defined.contains(s.as_str())) {
                let source = if in_order { "earlier node" } else { "node" };
                problems.push(format!(
                    "{where_}: node '{}' ({}) reads '{input}', which no graph input, initializer or {source} produces",
                    node_label(n),
                    n.op_type.as_deref().unwrap_or("?")
                ));
            }
            for (_, sub) in node_subgraphs(i, n) {
                let inner = format!("the body of node '{}' in {where_}", node_label(n));
                scope(sub, &defined, in_order, &inner, problems);
            }
            if in_order {
                produce(n, &mut defined, problems);
            }
        }
        for o in g.output.iter().filter_map(|o| o.name.as_deref()) {
            if !defined.contains(o) {
                problems.push(format!("{where_}: output '{o}' is produced by nothing"));
            }
        }
    }
    let mut problems = vec![];
    scope(root, &HashSet::new(), in_order, "the main graph", &mut problems);
    problems
}

/// Every name the model uses, in every graph, and a source of new ones that collide with none.
#[derive(Debug, Default, Clone)]
pub struct Names {
    used: HashSet<String>,
}

impl Names {
    /// Collects the names of tensors, nodes and value infos of every graph below `root`.
    pub fn of_graph(root: &GraphProto) -> Names {
        let mut used = HashSet::new();
        walk_graphs(root, &mut |_, g| {
            let vi = g.input.iter().chain(&g.output).chain(&g.value_info);
            used.extend(vi.filter_map(|v| v.name.clone()));
            used.extend(g.initializer.iter().filter_map(|t| t.name.clone()));
            for s in &g.sparse_initializer {
                used.extend(s.values.as_ref().and_then(|v| v.name.clone()));
            }
            for n in &g.node {
                used.extend(n.input.iter().chain(&n.output).cloned());
                used.extend(n.name.clone());
            }
        });
        Names { used }
    }

    /// Whether `name` is taken.
    pub fn contains(&self, name: &str) -> bool {
        self.used.contains(name)
    }

    /// A default-domain `op` node named `<base>_<op>` (made unique), reading `input` and
    /// writing `output`.
    pub fn node(&mut self, base: &str, op: &str, input: Vec<String>, output: Vec<String>) -> NodeProto {
        NodeProto {
            name: Some(self.fresh(&format!("{base}_{op}"))),
            op_type: Some(op.into()),
            input,
            output,
            ..Default::default()
        }
    }

    /// `base` if free, else `base_1`, `base_2`, ...; the result is then taken.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut candidate = base.to_string();
        let mut k = 1;
        while self.used.contains(&candidate) {
            candidate = format!("{base}_{k}");
            k += 1;
        }
        self.used.insert(candidate.clone());
        candidate
    }
}
