//! Raising a model's default-domain opset (placeholder; the table-driven upgrader replaces it).

use std::collections::BTreeMap;

use crate::error::Result;
use crate::proto::{ModelProto, OperatorSetIdProto};

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

/// Raises the default-domain opset of `model` to `target`.
pub fn upgrade(model: &mut ModelProto, target: i64) -> Result<Upgrade> {
    let mut from = 1;
    let mut found = false;
    for o in &mut model.opset_import {
        if matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")) {
            from = o.version.unwrap_or(1);
            o.version = Some(target.max(from));
            found = true;
        }
    }
    if !found {
        model.opset_import.push(OperatorSetIdProto { domain: Some(String::new()), version: Some(target) });
    }
    Ok(Upgrade { from, to: target, rewritten: BTreeMap::new() })
}
