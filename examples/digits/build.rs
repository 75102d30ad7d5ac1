fn main() {
    quantize_build::run()
}
