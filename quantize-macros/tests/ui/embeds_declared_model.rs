use quantize_rs::{Dim, ElemType, EmbeddedModel, include_quantized};

static DIGITS: EmbeddedModel = include_quantized!("digits");

fn main() {
    assert_eq!(DIGITS.name, "digits");
    assert_eq!(DIGITS.bytes, b"\x08\x07not really onnx");
    assert_eq!(DIGITS.bytes_before, 69384);
    assert_eq!(DIGITS.bytes_after, 17);
    assert_eq!(DIGITS.content_hash, "be16217a88e84124");
    assert!(DIGITS.manifest.contains("\"content_hash\": \"be16217a88e84124\""));

    let input = DIGITS.input("pixels").expect("declared input");
    assert_eq!(input.elem_type, ElemType::Float32);
    assert_eq!(input.shape, Some(&[Dim::Symbolic("batch"), Dim::Fixed(64)][..]));
    assert_eq!(input.to_string(), "pixels: float32 [batch, 64]");
    assert_eq!(DIGITS.outputs.len(), 3);
    assert_eq!(DIGITS.outputs[1].elem_type, ElemType::Other("float8"));
    assert_eq!(DIGITS.outputs[1].shape, Some(&[Dim::Unknown][..]));
    assert_eq!(DIGITS.outputs[2].shape, None);

    assert_eq!(DIGITS.recipe.bits, 8);
    assert!(DIGITS.recipe.per_channel && DIGITS.recipe.symmetric && !DIGITS.recipe.unsigned);
    assert_eq!(DIGITS.recipe.block_size, None);
    assert_eq!(DIGITS.recipe.calibration, Some("entropy"));
    assert_eq!(DIGITS.recipe.scheme, "int8 per-channel symmetric, activations calibrated (entropy)");
    assert_eq!((DIGITS.recipe.quantized_tensors, DIGITS.recipe.skipped_tensors, DIGITS.recipe.opset), (3, 3, 13));

    let quality = DIGITS.quality.expect("verified");
    assert_eq!(quality.samples, 400);
    assert_eq!(quality.snr_db, f64::INFINITY);
    assert_eq!((quality.cosine, quality.max_abs), (1.0, 0.0));
}
