//! `include_quantized!("name")`: embeds a model that `quantize-build` wrote into `OUT_DIR`.
//!
//! Use it through `quantize_rs::include_quantized!`, which re-exports it; it expands to a
//! `quantize_rs::EmbeddedModel`. At expansion it reads `OUT_DIR/quantize/index.json` and
//! `OUT_DIR/quantize/<name>.json` (written by the build script), and emits:
//!
//! - `include_bytes!` of `OUT_DIR/quantize/<name>.onnx`: rustc maps the file instead of parsing
//!   a byte-array literal (a 5 MB literal costs 16-22 s and 2.4 GB of rustc memory), and cargo
//!   rebuilds the crate when the file changes;
//! - `include_str!` of the manifest, for the same tracking and for `EmbeddedModel::manifest`;
//! - the typed metadata (inputs, outputs, recipe summary, sizes, hash, quality) as literals.
//!
//! Errors are compile errors on the macro's argument: a crate without the build script is told
//! what to add, an unknown name gets the list of declared names.
//!
//! This crate reads the JSON that `quantize_build::manifest` writes with its own types (a
//! proc-macro must not depend on the quantizer); `FORMAT` must match.

use std::path::{Path, PathBuf};

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use serde::Deserialize;

/// `quantize_build::manifest::FORMAT`.
const FORMAT: u32 = 1;

#[derive(Deserialize)]
struct Index {
    format: u32,
    manifest_path: PathBuf,
    models: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Dim {
    Fixed(u64),
    Symbolic(String),
    Unknown,
}

#[derive(Deserialize)]
struct Tensor {
    name: String,
    elem_type: String,
    shape: Option<Vec<Dim>>,
}

#[derive(Deserialize)]
struct Summary {
    bits: u8,
    unsigned: bool,
    per_channel: bool,
    block_size: Option<u64>,
    symmetric: bool,
    native_int4: bool,
    calibration: Option<String>,
    scheme: String,
    quantized_tensors: u64,
    skipped_tensors: u64,
    opset: i64,
}

#[derive(Deserialize)]
struct Quality {
    samples: u64,
    snr_db: Float,
    cosine: Float,
    max_abs: Float,
}

/// A number, or `"inf"`, `"-inf"`, `"nan"` for what JSON numbers cannot hold.
#[derive(Deserialize)]
#[serde(untagged)]
enum Float {
    Number(f64),
    Text(String),
}

impl Float {
    fn tokens(&self) -> TokenStream2 {
        match self {
            Float::Number(v) if v.is_finite() => quote!(#v),
            Float::Text(t) if t == "inf" => quote!(::core::f64::INFINITY),
            Float::Text(t) if t == "-inf" => quote!(::core::f64::NEG_INFINITY),
            _ => quote!(::core::f64::NAN),
        }
    }
}

#[derive(Deserialize)]
struct Manifest {
    name: String,
    format: u32,
    content_hash: String,
    bytes_before: u64,
    bytes_after: u64,
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
    summary: Summary,
    quality: Option<Quality>,
}

/// Embeds the quantized model `name` declared in `[package.metadata.quantize.models.<name>]`:
///
/// ```ignore
/// static DIGITS: quantize_rs::EmbeddedModel = quantize_rs::include_quantized!("digits");
/// ```
///
/// The crate needs `quantize-build` in `[build-dependencies]` and a build script calling
/// `quantize_build::run()`; the expansion refers to the crate as `::quantize_rs`.
#[proc_macro]
pub fn include_quantized(input: TokenStream) -> TokenStream {
    let name = syn::parse_macro_input!(input as syn::LitStr);
    match expand(&name.value(), name.span()) {
        Ok(tokens) => tokens.into(),
        Err(message) => syn::Error::new(name.span(), message).to_compile_error().into(),
    }
}

fn expand(name: &str, span: Span) -> Result<TokenStream2, String> {
    let setup = format!(
        "add `quantize-build` to [build-dependencies], a build.rs containing `fn main() {{ quantize_build::run() }}`, \
         and declare the model in Cargo.toml:\n\n[package.metadata.quantize.models.{name}]\npath = \"models/{name}.onnx\""
    );
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return Err(format!(
            "include_quantized!(\"{name}\"): this crate has no build script, so nothing was quantized; {setup}"
        ));
    };
    let dir = out_dir.join("quantize");
    let index_path = dir.join("index.json");
    if !index_path.is_file() {
        return Err(format!(
            "include_quantized!(\"{name}\"): this crate's build script does not run quantize-build ({} is missing); {setup}",
            index_path.display()
        ));
    }
    let index: Index = read_json(&index_path)?;
    check_format(index.format, &index_path)?;
    if !index.models.iter().any(|m| m == name) {
        let where_ = format!("[package.metadata.quantize.models] of {}", index.manifest_path.display());
        return Err(if index.models.is_empty() {
            format!(
                "include_quantized!(\"{name}\"): no models are declared in {where_}; add\n\n[package.metadata.quantize.models.{name}]\npath = \"models/{name}.onnx\""
            )
        } else {
            format!(
                "include_quantized!(\"{name}\"): no model named '{name}' is declared; declared models: {} (in {where_})",
                index.models.join(", ")
            )
        });
    }
    let manifest_path = dir.join(format!("{name}.json"));
    let model_path = dir.join(format!("{name}.onnx"));
    let manifest: Manifest = read_json(&manifest_path)?;
    check_format(manifest.format, &manifest_path)?;
    if manifest.name != name || !model_path.is_file() {
        return Err(format!(
            "include_quantized!(\"{name}\"): {} does not describe {}; rebuild the crate",
            manifest_path.display(),
            model_path.display()
        ));
    }
    let path_lit = |p: &Path| -> Result<syn::LitStr, String> {
        p.to_str()
            .map(|s| syn::LitStr::new(s, span))
            .ok_or_else(|| format!("include_quantized!(\"{name}\"): OUT_DIR path {} is not UTF-8", p.display()))
    };
    let model_lit = path_lit(&model_path)?;
    let manifest_lit = path_lit(&manifest_path)?;
    let inputs = manifest.inputs.iter().map(tensor_tokens);
    let outputs = manifest.outputs.iter().map(tensor_tokens);
    let s = &manifest.summary;
    let (bits, unsigned, per_channel, symmetric, native_int4) =
        (s.bits, s.unsigned, s.per_channel, s.symmetric, s.native_int4);
    let block_size = option_tokens(s.block_size.map(|b| quote!(#b)));
    let calibration = option_tokens(s.calibration.as_ref().map(|c| quote!(#c)));
    let (scheme, quantized, skipped, opset) = (&s.scheme, s.quantized_tensors, s.skipped_tensors, s.opset);
    let quality = option_tokens(manifest.quality.as_ref().map(|q| {
        let (samples, snr_db, cosine, max_abs) = (q.samples, q.snr_db.tokens(), q.cosine.tokens(), q.max_abs.tokens());
        quote!(::quantize_rs::Quality { samples: #samples, snr_db: #snr_db, cosine: #cosine, max_abs: #max_abs })
    }));
    let (before, after, hash) = (manifest.bytes_before, manifest.bytes_after, &manifest.content_hash);
    Ok(quote! {
        ::quantize_rs::EmbeddedModel {
            name: #name,
            bytes: ::core::include_bytes!(#model_lit),
            manifest: ::core::include_str!(#manifest_lit),
            inputs: &[#(#inputs),*],
            outputs: &[#(#outputs),*],
            recipe: ::quantize_rs::RecipeSummary {
                bits: #bits,
                unsigned: #unsigned,
                per_channel: #per_channel,
                block_size: #block_size,
                symmetric: #symmetric,
                native_int4: #native_int4,
                calibration: #calibration,
                scheme: #scheme,
                quantized_tensors: #quantized,
                skipped_tensors: #skipped,
                opset: #opset,
            },
            bytes_before: #before,
            bytes_after: #after,
            content_hash: #hash,
            quality: #quality,
        }
    })
}

fn check_format(format: u32, path: &Path) -> Result<(), String> {
    if format == FORMAT {
        Ok(())
    } else {
        Err(format!(
            "{} has format {format}, but this include_quantized! reads format {FORMAT}: use the same version of quantize-build and quantize-rs",
            path.display()
        ))
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{} is not a quantize-build manifest: {e}", path.display()))
}

fn option_tokens(value: Option<TokenStream2>) -> TokenStream2 {
    match value {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

fn tensor_tokens(t: &Tensor) -> TokenStream2 {
    let name = &t.name;
    let elem = elem_type_tokens(&t.elem_type);
    let shape = option_tokens(t.shape.as_ref().map(|dims| {
        let dims = dims.iter().map(|d| match d {
            Dim::Fixed(n) => quote!(::quantize_rs::Dim::Fixed(#n)),
            Dim::Symbolic(s) => quote!(::quantize_rs::Dim::Symbolic(#s)),
            Dim::Unknown => quote!(::quantize_rs::Dim::Unknown),
        });
        quote!(&[#(#dims),*])
    }));
    quote!(::quantize_rs::TensorInfo { name: #name, elem_type: #elem, shape: #shape })
}

fn elem_type_tokens(name: &str) -> TokenStream2 {
    let variant = match name {
        "float32" => "Float32",
        "float16" => "Float16",
        "bfloat16" => "BFloat16",
        "float64" => "Float64",
        "int8" => "Int8",
        "uint8" => "Uint8",
        "int16" => "Int16",
        "uint16" => "Uint16",
        "int32" => "Int32",
        "uint32" => "Uint32",
        "int64" => "Int64",
        "uint64" => "Uint64",
        "bool" => "Bool",
        "string" => "String",
        other => return quote!(::quantize_rs::ElemType::Other(#other)),
    };
    let ident = syn::Ident::new(variant, Span::call_site());
    quote!(::quantize_rs::ElemType::#ident)
}
