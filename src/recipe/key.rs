//! Where a recipe error is ([`KeyPath`]) and what it is ([`RecipeProblem`]), kept apart so each
//! front door names keys its own way: Cargo.toml in kebab-case
//! (`package.metadata.quantize.models.digits.bits`), config files in snake_case
//! (`models[0].block_size`), the CLI as a flag (`--block-size`).

use std::fmt;

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySegment {
    /// A field of the recipe by its canonical kebab-case name (`block-size`); rendered in the
    /// front door's [`KeyStyle`].
    Field(&'static str),
    /// A key as it was written (an unknown key, a `layer-bits` pattern, a front door's own table
    /// such as `package` or a model name); rendered as is.
    Key(String),
    /// An element of a list.
    Index(usize),
}

/// Spelling of recipe field names in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle {
    /// `block-size`: Cargo.toml, the CLI.
    Kebab,
    /// `block_size`: config files.
    Snake,
}

impl KeyStyle {
    /// `name` (a canonical kebab-case field name) in this style.
    pub fn spell(self, name: &str) -> String {
        match self {
            KeyStyle::Kebab => name.to_string(),
            KeyStyle::Snake => name.replace('-', "_"),
        }
    }

    /// Whether a key name listed by serde (which lists both spellings) is written in this style.
    fn accepts(self, name: &str) -> bool {
        match self {
            KeyStyle::Kebab => !name.contains('_'),
            KeyStyle::Snake => !name.contains('-'),
        }
    }
}

/// The path of a key in a recipe, or in the document that holds one
/// (`package.metadata.quantize.models.digits.bits`, `models[0].bitz`). Empty: the recipe itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath {
    segments: Vec<KeySegment>,
}

impl KeyPath {
    /// The empty path.
    pub fn new() -> KeyPath {
        KeyPath::default()
    }

    /// A path of keys written as they are, e.g. `["package", "metadata", "quantize"]`.
    pub fn keys<S: Into<String>>(keys: impl IntoIterator<Item = S>) -> KeyPath {
        KeyPath { segments: keys.into_iter().map(|k| KeySegment::Key(k.into())).collect() }
    }

    /// This path followed by the recipe field `name` (kebab-case).
    pub fn field(mut self, name: &'static str) -> KeyPath {
        self.segments.push(KeySegment::Field(name));
        self
    }

    /// This path followed by `key`, written as is.
    pub fn key(mut self, key: impl Into<String>) -> KeyPath {
        self.segments.push(KeySegment::Key(key.into()));
        self
    }

    /// This path followed by list element `index`.
    pub fn index(mut self, index: usize) -> KeyPath {
        self.segments.push(KeySegment::Index(index));
        self
    }

    /// This path followed by `rest`.
    pub fn join(mut self, rest: &KeyPath) -> KeyPath {
        self.segments.extend(rest.segments.iter().cloned());
        self
    }

    /// The steps, outermost first.
    pub fn segments(&self) -> &[KeySegment] {
        &self.segments
    }

    /// Whether this is the empty path.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Keys separated by dots, list indices in brackets (`models[0].block_size`), recipe fields
    /// spelled in `style`.
    pub fn render(&self, style: KeyStyle) -> String {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                KeySegment::Index(i) => out.push_str(&format!("[{i}]")),
                KeySegment::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&style.spell(name));
                }
                KeySegment::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
            }
        }
        out
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(KeyStyle::Kebab))
    }
}

/// What is wrong with a recipe key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipeProblem {
    /// The recipe has no such key.
    UnknownKey {
        /// The key as written.
        key: String,
        /// The keys accepted there, each in both spellings where they differ.
        expected: Vec<&'static str>,
    },
    /// A bad value, a wrong type, a missing key: what is wrong and what is accepted.
    Invalid(String),
}

/// A recipe key with a bad value, or an unknown key: where ([`KeyPath`]) and what
/// ([`RecipeProblem`]). Its `Display` is `key: message` in kebab-case; front doors render
/// [`RecipeError::key`] and [`RecipeError::message`] in their own style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeError {
    /// Where: relative to the recipe, or, from [`crate::Recipe::from_layers`], to the document.
    pub path: KeyPath,
    /// What.
    pub problem: RecipeProblem,
}

impl RecipeError {
    /// A bad value at `path`.
    pub fn invalid(path: KeyPath, message: impl Into<String>) -> RecipeError {
        RecipeError { path, problem: RecipeProblem::Invalid(message.into()) }
    }

    /// The same error, its path placed under `prefix`.
    pub fn within(self, prefix: &KeyPath) -> RecipeError {
        RecipeError { path: prefix.clone().join(&self.path), ..self }
    }

    /// The key, recipe fields spelled in `style`.
    pub fn key(&self, style: KeyStyle) -> String {
        self.path.render(style)
    }

    /// What is wrong; an unknown key lists the accepted keys spelled in `style`.
    pub fn message(&self, style: KeyStyle) -> String {
        match &self.problem {
            RecipeProblem::Invalid(m) => m.clone(),
            RecipeProblem::UnknownKey { key, expected } => {
                let names: Vec<&str> = expected.iter().copied().filter(|n| style.accepts(n)).collect();
                unknown_key(key, &names)
            }
        }
    }
}

/// serde's wording, so messages read the same whichever parser found the key.
pub(crate) fn unknown_key(key: &str, expected: &[&str]) -> String {
    let quoted: Vec<String> = expected.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => format!("unknown field `{key}`, there are no fields"),
        [one] => format!("unknown field `{key}`, expected {one}"),
        [a, b] => format!("unknown field `{key}`, expected {a} or {b}"),
        all => format!("unknown field `{key}`, expected one of {}", all.join(", ")),
    }
}

impl fmt::Display for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.message(KeyStyle::Kebab);
        if self.path.is_empty() { f.write_str(&message) } else { write!(f, "{}: {message}", self.path) }
    }
}

impl std::error::Error for RecipeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_per_style() {
        let p = KeyPath::keys(["models"]).index(0).field("calibration").field("op-types");
        assert_eq!(p.render(KeyStyle::Kebab), "models[0].calibration.op-types");
        assert_eq!(p.render(KeyStyle::Snake), "models[0].calibration.op_types");
        // Keys as written (a layer-bits pattern) keep their spelling.
        let p = KeyPath::new().field("layer-bits").key("head-1.*");
        assert_eq!(p.render(KeyStyle::Snake), "layer_bits.head-1.*");
        assert_eq!(KeyPath::new().index(2).render(KeyStyle::Kebab), "[2]");
    }

    #[test]
    fn unknown_keys_list_one_spelling() {
        let e = RecipeError {
            path: KeyPath::keys(["bitz"]),
            problem: RecipeProblem::UnknownKey {
                key: "bitz".into(),
                expected: vec!["bits", "per-channel", "per_channel", "op-types", "op_types"],
            },
        };
        assert_eq!(
            e.message(KeyStyle::Kebab),
            "unknown field `bitz`, expected one of `bits`, `per-channel`, `op-types`"
        );
        assert_eq!(
            e.message(KeyStyle::Snake),
            "unknown field `bitz`, expected one of `bits`, `per_channel`, `op_types`"
        );
        assert_eq!(e.to_string(), "bitz: unknown field `bitz`, expected one of `bits`, `per-channel`, `op-types`");
    }
}
