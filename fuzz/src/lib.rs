//! The fuzz targets' harness (see `harness.rs`), as a library the targets and the seed
//! generator share.

pub mod harness;
