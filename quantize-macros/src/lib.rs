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
//! The JSON is read with the `quantize-manifest` types `quantize-build` writes it with (a
//! proc-macro cannot depend on the quantizer, which depends on it); a file of another
//! `quantize_manifest::FORMAT` is an error that says to align the versions.

use std::path::{Path, PathBuf};

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quantize_manifest::{Dim, FORMAT, INDEX_FILE, Index, OUT_SUBDIR, Tensor};
use quote::quote;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The manifest without the full recipe, which the expansion does not use.
type Manifest = quantize_manifest::Manifest<IgnoredAny>;

/// A float literal; `inf`, `-inf` and `nan` as the `f64` constants.
fn float_tokens(v: f64) -> TokenStream2 {
    match v {
        v if v.is_finite() => quote!(#v),
        v if v.is_nan() => quote!(::core::f64::NAN),
        v if v > 0.0 => quote!(::core::f64::INFINITY),
        _ => quote!(::core::f64::NEG_INFINITY),
    }
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
    let dir = out_dir.join(OUT_SUBDIR);
    let index_path = dir.join(INDEX_FILE);
    if !index_path.is_file() {
        return Err(format!(
            "include_quantized!(\"{name}\"): this crate's build script does not run quantize-build ({} is missing); {setup}",
            index_path.display()
        ));
    }
    let index: Index = read_versioned(&index_path)?;
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
    let manifest_path = dir.join(quantize_manifest::manifest_file(name));
    let model_path = dir.join(quantize_manifest::model_file(name));
    let manifest: Manifest = read_versioned(&manifest_path)?;
    if manifest.name != name || !model_path.is_file() {
        return Err(format!(
            "include_quantized!(\"{name}\"): {} does not describe {}; rebuild the crate",
            manifest_path.display(),
            model_path.display()
        ));
    }
    // quantize-build verified the cache entry (size and SHA-256) when it installed it; a file
    // damaged since then (the cache entry truncated in place: it is a hard link) is not embedded.
    let size = std::fs::metadata(&model_path).map(|m| m.len()).unwrap_or(0);
    if size != manifest.record.bytes_after {
        return Err(format!(
            "include_quantized!(\"{name}\"): {} is {size} bytes, but quantize-build wrote {} bytes: the file was \
             damaged after the build script ran; build again (the build script quantizes a damaged cache entry anew)",
            model_path.display(),
            manifest.record.bytes_after
        ));
    }
    let path_lit = |p: &Path| -> Result<syn::LitStr, String> {
        p.to_str()
            .map(|s| syn::LitStr::new(s, span))
            .ok_or_else(|| format!("include_quantized!(\"{name}\"): OUT_DIR path {} is not UTF-8", p.display()))
    };
    let model_lit = path_lit(&model_path)?;
    let manifest_lit = path_lit(&manifest_path)?;
    let record = &manifest.record;
    let inputs = record.inputs.iter().map(tensor_tokens);
    let outputs = record.outputs.iter().map(tensor_tokens);
    let s = &record.summary;
    let (bits, unsigned, per_channel, symmetric, native_int4) =
        (s.bits, s.unsigned, s.per_channel, s.symmetric, s.native_int4);
    let block_size = option_tokens(s.block_size.map(|b| quote!(#b)));
    let calibration = option_tokens(s.calibration.as_ref().map(|c| quote!(#c)));
    let (scheme, quantized, skipped, opset) = (&s.scheme, s.quantized_tensors, s.skipped_tensors, s.opset);
    let quality = option_tokens(record.quality.as_ref().map(|q| {
        let (samples, snr_db, cosine, max_abs) =
            (q.samples, float_tokens(q.snr_db), float_tokens(q.cosine), float_tokens(q.max_abs));
        quote!(::quantize_rs::Quality { samples: #samples, snr_db: #snr_db, cosine: #cosine, max_abs: #max_abs })
    }));
    let (before, after, hash) = (record.bytes_before, record.bytes_after, &record.content_hash);
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

/// Reads a file of quantize-build's, checking its format before its layout, so a file from
/// another version is reported as such rather than as a missing field.
fn read_versioned<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, String> {
    #[derive(Deserialize)]
    struct Versioned {
        format: u32,
    }
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let parse_error = |e: serde_json::Error| format!("{} is not a quantize-build manifest: {e}", path.display());
    let Versioned { format } = serde_json::from_slice(&text).map_err(parse_error)?;
    if format != FORMAT {
        return Err(format!(
            "{} has format {format}, but this include_quantized! reads format {FORMAT}: use the same version of quantize-build and quantize-rs",
            path.display()
        ));
    }
    serde_json::from_slice(&text).map_err(parse_error)
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
