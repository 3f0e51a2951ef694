#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xsigate_fuzz::upstream_answers(data));
