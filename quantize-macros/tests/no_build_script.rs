//! A crate without quantize-build's build script gets a compile error saying what to add.

#[test]
fn include_quantized_without_a_build_script() {
    // SAFETY: set before trybuild starts any thread; this test binary has this one test.
    unsafe { std::env::remove_var("OUT_DIR") };
    trybuild::TestCases::new().compile_fail("tests/ui/no_build_script.rs");
}
