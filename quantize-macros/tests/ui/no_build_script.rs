static DIGITS: quantize_rs::EmbeddedModel = quantize_rs::include_quantized!("digits");

fn main() {
    println!("{}", DIGITS.name);
}
