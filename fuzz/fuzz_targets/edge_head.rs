#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xsigate_fuzz::edge_head(data));
