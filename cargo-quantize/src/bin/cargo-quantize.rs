fn main() {
    std::process::exit(cargo_quantize::main(std::env::args_os().collect(), true))
}
