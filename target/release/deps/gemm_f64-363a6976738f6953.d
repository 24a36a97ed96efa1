/work/main/target/release/deps/gemm_f64-363a6976738f6953.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f64-0.19.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f64-0.19.0/src/gemm.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f64-0.19.0/src/microkernel.rs

/work/main/target/release/deps/libgemm_f64-363a6976738f6953.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f64-0.19.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f64-0.19.0/src/gemm.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f64-0.19.0/src/microkernel.rs

/work/main/target/release/deps/libgemm_f64-363a6976738f6953.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f64-0.19.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f64-0.19.0/src/gemm.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f64-0.19.0/src/microkernel.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f64-0.19.0/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f64-0.19.0/src/gemm.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-f64-0.19.0/src/microkernel.rs:
