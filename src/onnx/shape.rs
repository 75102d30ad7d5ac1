//! Tensor shapes as a model declares them, read one way everywhere: a positive `dim_value` is a
//! fixed size; a `dim_param` is a symbolic size shared by every tensor that names it (`batch`);
//! anything else is unknown (exporters write 0 or -1 for sizes they do not know, and Paddle
//! writes the placeholder `?` for every one of them, which names nothing).

use std::fmt;

use crate::onnx::proto::tensor_shape_proto::{Dimension, dimension::Value};
use crate::onnx::proto::{TypeProto, ValueInfoProto, type_proto};

/// One declared dimension.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A size named by a symbol, equal wherever the symbol appears.
    Symbolic(String),
    /// Not declared.
    Unknown,
}

impl Dim {
    /// The dimension `d` declares.
    pub fn of(d: &Dimension) -> Dim {
        match &d.value {
            Some(Value::DimValue(n)) if *n > 0 => usize::try_from(*n).map_or(Dim::Unknown, Dim::Fixed),
            Some(Value::DimParam(p)) if !p.is_empty() && p != "?" => Dim::Symbolic(p.clone()),
            _ => Dim::Unknown,
        }
    }

    /// The fixed size, if it is one.
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// `[1, batch, ?]`.
pub fn shape_text(dims: &[Dim]) -> String {
    format!("[{}]", dims.iter().map(Dim::to_string).collect::<Vec<_>>().join(", "))
}

fn tensor_type(t: Option<&TypeProto>) -> Option<&type_proto::Tensor> {
    match &t?.value {
        Some(type_proto::Value::TensorType(tt)) => Some(tt),
        _ => None,
    }
}

/// The element type `v` declares (`TensorProto.DataType`), if it is a tensor with one.
pub fn elem_type(v: &ValueInfoProto) -> Option<i32> {
    tensor_type(v.r#type.as_ref())?.elem_type.filter(|&t| t != 0)
}

/// The shape `v` declares, if it is a tensor with a shape (a scalar has an empty one).
pub fn declared_shape(v: &ValueInfoProto) -> Option<Vec<Dim>> {
    Some(tensor_type(v.r#type.as_ref())?.shape.as_ref()?.dim.iter().map(Dim::of).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dim(value: Option<Value>) -> Dimension {
        Dimension { value, ..Default::default() }
    }

    #[test]
    fn sizes_names_and_placeholders() {
        assert_eq!(Dim::of(&dim(Some(Value::DimValue(3)))), Dim::Fixed(3));
        assert_eq!(Dim::of(&dim(Some(Value::DimValue(0)))), Dim::Unknown);
        assert_eq!(Dim::of(&dim(Some(Value::DimValue(-1)))), Dim::Unknown);
        assert_eq!(Dim::of(&dim(Some(Value::DimParam("batch".into())))), Dim::Symbolic("batch".into()));
        assert_eq!(Dim::of(&dim(Some(Value::DimParam("?".into())))), Dim::Unknown);
        assert_eq!(Dim::of(&dim(Some(Value::DimParam(String::new())))), Dim::Unknown);
        assert_eq!(Dim::of(&dim(None)), Dim::Unknown);
        assert_eq!(shape_text(&[Dim::Fixed(1), Dim::Symbolic("batch".into()), Dim::Unknown]), "[1, batch, ?]");
    }
}
