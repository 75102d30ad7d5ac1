static DIGIT: quantize_rs::EmbeddedModel = quantize_rs::include_quantized!("digit");

fn main() {
    println!("{}", DIGIT.name);
}
