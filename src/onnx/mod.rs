//! The bottom layer: ONNX itself, knowing nothing of quantization. The protobuf types, loading
//! and saving models, walking graphs and subgraphs, typed node attributes, fresh names, and the
//! one decoder and builder of tensor values. Nothing here imports another module of the crate
//! but `error`.

pub mod graph;
pub(crate) mod mapped;
pub mod model;
pub mod proto;
pub mod shape;
pub mod tensor;
