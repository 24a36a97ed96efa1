/work/main/target/release/deps/gemm-3b1d9c5b963b5f85.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-0.19.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-0.19.0/src/gemm.rs

/work/main/target/release/deps/libgemm-3b1d9c5b963b5f85.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-0.19.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-0.19.0/src/gemm.rs

/work/main/target/release/deps/libgemm-3b1d9c5b963b5f85.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-0.19.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-0.19.0/src/gemm.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-0.19.0/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-0.19.0/src/gemm.rs:
