/work/main/target/release/deps/gemm_f32-6185a26b4c86c75f.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f32-0.19.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f32-0.19.0/src/gemm.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f32-0.19.0/src/microkernel.rs

/work/main/target/release/deps/libgemm_f32-6185a26b4c86c75f.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f32-0.19.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f32-0.19.0/src/gemm.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f32-0.19.0/src/microkernel.rs

/work/main/target/release/deps/libgemm_f32-6185a26b4c86c75f.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f32-0.19.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f32-0.19.0/src/gemm.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f32-0.19.0/src/microkernel.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f32-0.19.0/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f32-0.19.0/src/gemm.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f32-0.19.0/src/microkernel.rs:
