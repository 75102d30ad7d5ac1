//! Build-script helper: quantizes the models a package declares in
//! `[package.metadata.quantize.models.<name>]` into `OUT_DIR`.
//!
//! Filled in by the build-time issue.
