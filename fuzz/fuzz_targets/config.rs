#![no_main]
//! See `quantize_rs_fuzz::harness::config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| quantize_rs_fuzz::harness::config(data));
