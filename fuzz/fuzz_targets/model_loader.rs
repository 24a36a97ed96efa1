//! Arbitrary bytes as a model or checkpoint file: an error or a usable model, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    if let Ok((mut model, _)) = mpsae::io::state_dict::model_from_bytes(path, data, None) {
        let d = model.input_dim();
        // Keep the work small: the fuzzer can describe huge dictionaries cheaply.
        if model.nb_concepts() * d <= 1 << 16 && d <= 4096 {
            model.eval();
            let x = vec![0.5f32; d];
            let _ = model.encode(&x);
        }
    }
    let _ = mpsae::train::checkpoint::from_bytes(path, data);
});
