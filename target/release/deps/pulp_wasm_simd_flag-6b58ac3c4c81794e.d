/work/main/target/release/deps/pulp_wasm_simd_flag-6b58ac3c4c81794e.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pulp-wasm-simd-flag-0.1.1/src/lib.rs

/work/main/target/release/deps/libpulp_wasm_simd_flag-6b58ac3c4c81794e.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pulp-wasm-simd-flag-0.1.1/src/lib.rs

/work/main/target/release/deps/libpulp_wasm_simd_flag-6b58ac3c4c81794e.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pulp-wasm-simd-flag-0.1.1/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pulp-wasm-simd-flag-0.1.1/src/lib.rs:
