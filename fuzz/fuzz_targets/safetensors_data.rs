//! Arbitrary bytes as a `.safetensors` data file, with and without a tensor name.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mpsae::data::{DataOptions, Dataset, Source};

fuzz_target!(|data: &[u8]| {
    for tensor in [None, Some("x")] {
        if let Ok(src) = Source::from_bytes("fuzz.safetensors", data.to_vec(), tensor) {
            if let Ok(ds) = Dataset::from_sources(vec![src], &DataOptions::default()) {
                let mut out = Vec::new();
                ds.read_range(0, ds.rows().min(4), &mut out);
            }
        }
    }
});
