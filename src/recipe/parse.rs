//! The one parser of recipes written as data: Cargo metadata (`quantize-build`, `cargo
//! quantize`), TOML/YAML/JSON config files, anything that deserializes into a
//! `serde_json::Value`. Every key is accepted in kebab-case and snake_case; keys left out take
//! their defaults; layers (file-level defaults, then a model's own keys) merge key by key, tables
//! such as `calibration` included; an error names the key where it was written.

use serde_json::{Map, Value};

use super::de::{DeError, ValueDeserializer};
use super::{KeyPath, KeySegment, Recipe, RecipeError, RecipeProblem};

/// Recipe keys written at one place of a document: `at` names that place in errors.
#[derive(Debug, Clone, Copy)]
pub struct RecipeLayer<'a> {
    /// Where the keys are, e.g. `package.metadata.quantize.models.digits` or `models[0]`.
    pub at: &'a KeyPath,
    /// The recipe keys (any other keys of the table removed).
    pub keys: &'a Map<String, Value>,
}

impl Recipe {
    /// Parses and checks a recipe written as data (all of it or some keys, the rest default):
    ///
    /// ```
    /// # use quantize_rs::{Recipe, KeyStyle};
    /// let r = Recipe::from_value(&serde_json::json!({ "bits": 4, "block_size": 32 })).unwrap();
    /// assert_eq!((r.bits, r.block_size, r.per_channel), (4, Some(32), true));
    /// let e = Recipe::from_value(&serde_json::json!({ "calibration": { "data": "c.npy", "percentile": 0 } }));
    /// let e = e.unwrap_err();
    /// assert_eq!(e.key(KeyStyle::Snake), "calibration.percentile");
    /// assert_eq!(e.message(KeyStyle::Snake), "expected a value in (0, 100], got 0");
    /// ```
    ///
    /// The error's path is relative to `value`.
    pub fn from_value(value: &Value) -> Result<Recipe, RecipeError> {
        let recipe: Recipe = serde_path_to_error::deserialize(ValueDeserializer(value.clone())).map_err(|e| {
            let path = key_path(e.path());
            let problem = match e.into_inner() {
                DeError::UnknownField { field, expected } => {
                    RecipeProblem::UnknownKey { key: field, expected: expected.to_vec() }
                }
                DeError::Message(m) => RecipeProblem::Invalid(m),
            };
            RecipeError { path, problem }
        })?;
        recipe.check()?;
        Ok(recipe)
    }

    /// Parses and checks the recipe that `layers` write together, later layers overriding
    /// earlier ones key by key (`{calibration = {data = ...}}` over `{calibration = {method =
    /// ...}}` keeps both; `bits` and `bits` are one key, as are `block-size` and `block_size`).
    /// The error's path is the full path of the key in the layer that wrote it (the last one to
    /// write it, or the first layer when none did).
    pub fn from_layers(layers: &[RecipeLayer<'_>]) -> Result<Recipe, RecipeError> {
        let mut merged = Map::new();
        for layer in layers {
            merge(&mut merged, layer.keys);
        }
        Recipe::from_value(&Value::Object(merged)).map_err(|e| {
            let depth = |layer: &RecipeLayer<'_>| written_depth(layer.keys, e.path.segments());
            let mut origin = layers.first();
            let mut deepest = 0;
            for layer in layers {
                let d = depth(layer);
                if d > 0 && d >= deepest {
                    (origin, deepest) = (Some(layer), d);
                }
            }
            match origin {
                Some(layer) => e.within(layer.at),
                None => e,
            }
        })
    }
}

fn key_path(path: &serde_path_to_error::Path) -> KeyPath {
    use serde_path_to_error::Segment;
    path.iter().fold(KeyPath::new(), |p, s| match s {
        Segment::Seq { index } => p.index(*index),
        Segment::Map { key } => p.key(key.clone()),
        Segment::Enum { variant } => p.key(variant.clone()),
        Segment::Unknown => p.key("?"),
    })
}

/// `key` in the other spelling (`block-size` for `block_size` and back).
fn other_spelling(key: &str) -> String {
    if key.contains('_') { key.replace('_', "-") } else { key.replace('-', "_") }
}

/// Overlays `over` on `base`, table by table; both spellings of a key are one key, and the
/// later spelling is kept.
fn merge(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (k, v) in over {
        let alt = other_spelling(k);
        if alt != *k
            && let Some(old) = base.remove(&alt)
        {
            base.insert(k.clone(), old);
        }
        match (base.get_mut(k), v) {
            (Some(Value::Object(b)), Value::Object(o)) => merge(b, o),
            (_, v) => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// How many leading steps of `path` lead to a value in `keys` (either spelling of each key).
fn written_depth(keys: &Map<String, Value>, path: &[KeySegment]) -> usize {
    let mut here = None::<&Value>;
    for (depth, segment) in path.iter().enumerate() {
        let next = match (segment, here) {
            (KeySegment::Field(name), None) => find(keys, name),
            (KeySegment::Key(name), None) => find(keys, name),
            (KeySegment::Field(name), Some(Value::Object(m))) => find(m, name),
            (KeySegment::Key(name), Some(Value::Object(m))) => find(m, name),
            (KeySegment::Index(i), Some(Value::Array(items))) => items.get(*i),
            _ => None,
        };
        match next {
            Some(v) => here = Some(v),
            None => return depth,
        }
    }
    path.len()
}

fn find<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| map.get(&other_spelling(key)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::{CalibrationMethod, KeyStyle};

    fn layers(defaults: Value, own: Value) -> Result<Recipe, RecipeError> {
        let (top, model) = (KeyPath::keys(["top"]), KeyPath::keys(["models", "m"]));
        let (Value::Object(d), Value::Object(o)) = (defaults, own) else { panic!("tables") };
        Recipe::from_layers(&[RecipeLayer { at: &top, keys: &d }, RecipeLayer { at: &model, keys: &o }])
    }

    fn both(e: &RecipeError) -> (String, String) {
        (format!("{}: {}", e.key(KeyStyle::Kebab), e.message(KeyStyle::Kebab)), e.to_string())
    }

    #[test]
    fn either_spelling_and_defaults_fill_the_rest() {
        let r = Recipe::from_value(&json!({ "per_channel": false, "min-elements": 16, "calibration": { "data": "c.npy", "graph_rewrites": false } }))
            .unwrap();
        assert!(!r.per_channel);
        assert_eq!((r.bits, r.min_elements), (8, 16));
        let c = r.calibration.unwrap();
        assert_eq!((c.data.as_path(), c.method, c.percentile), (Path::new("c.npy"), CalibrationMethod::Minmax, 99.99));
        assert!(!c.graph_rewrites && c.bias_correction);
        assert_eq!(Recipe::from_value(&json!({})).unwrap(), Recipe::default());
    }

    #[test]
    fn calibration_data_for_the_weights_only() {
        let r =
            Recipe::from_value(&json!({ "bits": 4, "calibration": { "data": "c.npy", "weight-only": true } })).unwrap();
        let c = r.calibration.unwrap();
        assert!(c.weight_only && c.bias_correction);
        assert_eq!(c.weight_rounding, crate::recipe::WeightRounding::Gptq, "GPTQ by default");
        let r = Recipe::from_value(
            &json!({ "calibration": { "data": "c.npy", "weight_only": true, "weight_rounding": "nearest" } }),
        )
        .unwrap();
        assert_eq!(r.calibration.unwrap().weight_rounding, crate::recipe::WeightRounding::Nearest);
        let r =
            Recipe::from_value(&json!({ "calibration": { "data": "c.npy", "weight-rounding": "adaround" } })).unwrap();
        assert_eq!(r.calibration.unwrap().weight_rounding, crate::recipe::WeightRounding::Adaround);
        let e =
            Recipe::from_value(&json!({ "calibration": { "data": "c.npy", "weight-rounding": "brecq" } })).unwrap_err();
        assert!(e.to_string().starts_with("calibration.weight-rounding: unknown variant `brecq`"), "{e}");
        // Weight-only models take the target too (weights step 4 -> 8 bits -> float).
        let r = Recipe::from_value(
            &json!({ "calibration": { "data": "c.npy", "weight-only": true, "target-snr-db": 30 }, "verify-data": "v.npy" }),
        )
        .unwrap();
        assert_eq!(r.calibration.unwrap().target_snr_db, Some(30.0));
        let e = Recipe::from_value(
            &json!({ "calibration": { "data": "c.npy", "weight-only": true, "target-snr-db": 30 } }),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("calibration.target-snr-db: needs verify-data"), "{e}");
        let e =
            Recipe::from_value(&json!({ "calibration": { "data": "c.npy", "weight-only": true, "equalize": true } }))
                .unwrap_err();
        assert!(e.to_string().starts_with("calibration.equalize: rescales channels"), "{e}");
        let r = Recipe::from_value(&json!({ "calibration": { "data": "c.npy", "equalize": true } })).unwrap();
        assert!(r.calibration.unwrap().equalize);
    }

    #[test]
    fn layers_merge_key_by_key_and_tables_too() {
        let r = layers(
            json!({ "bits": 4, "block_size": 32, "calibration": { "data": "c.npy", "method": "entropy" } }),
            json!({ "bits": 8, "block-size": 16, "calibration": { "data": "a.npy" } }),
        )
        .unwrap();
        assert_eq!((r.bits, r.block_size), (8, Some(16)));
        let c = r.calibration.unwrap();
        assert_eq!((c.data.as_path(), c.method), (Path::new("a.npy"), CalibrationMethod::Entropy));
    }

    #[test]
    fn errors_name_the_layer_that_wrote_the_key() {
        let e = layers(json!({}), json!({ "bits": 6 })).unwrap_err();
        assert_eq!(e.to_string(), "models.m.bits: expected 4 or 8, got 6");
        let e = layers(json!({ "native_int4": true }), json!({ "bits": 8 })).unwrap_err();
        assert_eq!(e.key(KeyStyle::Snake), "top.native_int4");
        // Inside a table both layers set, the layer that wrote the bad value is named.
        let e = layers(
            json!({ "calibration": { "data": "c.npy", "method": "best" } }),
            json!({ "calibration": { "data": "a.npy" } }),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("top.calibration.method: unknown variant `best`"), "{e}");
        // A missing key is named at the table the last layer wrote.
        let e = layers(json!({}), json!({ "calibration": { "method": "mse" } })).unwrap_err();
        assert_eq!(e.to_string(), "models.m.calibration: missing field `data`");
        let (kebab, display) = both(&layers(json!({}), json!({ "layer-bits": { "a.*": 5 } })).unwrap_err());
        assert_eq!(kebab, "models.m.layer-bits.a.*: expected 4, 8 or 32 (keep float), got 5");
        assert_eq!(display, kebab);
    }

    #[test]
    fn serde_json_wording_is_kept() {
        let message = |v: Value| Recipe::from_value(&v).unwrap_err().to_string();
        assert_eq!(message(json!({ "min-snr-db": "high" })), "min-snr-db: invalid type: string \"high\", expected f64");
        assert_eq!(message(json!({ "bits": 8.0 })), "bits: invalid type: floating point `8.0`, expected u8");
        assert_eq!(message(json!({ "bits": null })), "bits: invalid type: null, expected u8");
        assert_eq!(message(json!({ "bits": -1 })), "bits: invalid value: integer `-1`, expected u8");
        assert_eq!(message(json!({ "exclude": [1] })), "exclude[0]: invalid type: integer `1`, expected a string");
        assert_eq!(
            message(json!({ "calibration": { "data": "d", "image": { "size": [1, 2, 3] } } })),
            "calibration.image.size: invalid length 3, expected fewer elements in array"
        );
        assert_eq!(message(json!(3)), "invalid type: integer `3`, expected struct Recipe");
        for v in
            [json!({ "bits": 8.0 }), json!({ "bits": null }), json!({ "exclude": [1] }), json!({ "min-snr-db": "x" })]
        {
            let ours = message(v.clone());
            let theirs = serde_path_to_error::deserialize::<_, Recipe>(v).unwrap_err();
            assert_eq!(ours, format!("{}: {}", theirs.path(), theirs.inner()));
        }
    }

    #[test]
    fn unknown_keys_list_the_keys_in_the_front_doors_spelling() {
        let e = Recipe::from_value(&json!({ "calibration": { "data": "d", "metod": "mse" } })).unwrap_err();
        assert_eq!(e.key(KeyStyle::Kebab), "calibration.metod");
        let kebab = e.message(KeyStyle::Kebab);
        assert!(kebab.starts_with("unknown field `metod`, expected one of `data`, `method`, `percentile`, `samples`, `symmetric-activations`,"), "{kebab}");
        assert!(!kebab.contains('_'), "{kebab}");
        let snake = e.message(KeyStyle::Snake);
        assert!(snake.contains("`symmetric_activations`") && !snake.contains('-'), "{snake}");
    }
}
