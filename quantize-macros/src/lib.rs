//! `include_quantized!("name")`: embeds a model that `quantize-build` wrote into `OUT_DIR`.
//!
//! Filled in by the build-time issue; for now it reports that the build-time half is missing.

use proc_macro::TokenStream;

/// Embeds the quantized model `name` declared in `[package.metadata.quantize.models.<name>]`.
#[proc_macro]
pub fn include_quantized(input: TokenStream) -> TokenStream {
    let name = syn::parse_macro_input!(input as syn::LitStr);
    let msg = format!(
        "include_quantized!(\"{}\"): no quantized models found; add `quantize-build` to [build-dependencies] and `fn main() {{ quantize_build::run() }}` to build.rs",
        name.value()
    );
    quote::quote_spanned!(name.span()=> compile_error!(#msg)).into()
}
