//! Arbitrary bytes as an `.npy` data file: must give rows or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mpsae::data::{DataOptions, Dataset, NonFinite, Source};

fuzz_target!(|data: &[u8]| {
    let _ = mpsae::data::parse_npy_header(data);
    if let Ok(src) = Source::from_bytes("fuzz.npy", data.to_vec(), None) {
        let opts = DataOptions { non_finite: NonFinite::Skip, ..Default::default() };
        if let Ok(ds) = Dataset::from_sources(vec![src], &opts) {
            let mut out = Vec::new();
            let n = ds.rows().min(4);
            ds.read_range(0, n, &mut out);
            assert_eq!(out.len(), n * ds.dim());
        }
    }
});
