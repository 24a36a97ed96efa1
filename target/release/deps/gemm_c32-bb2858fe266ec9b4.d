/work/main/target/release/deps/gemm_c32-bb2858fe266ec9b4.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c32-0.19.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c32-0.19.0/src/gemm.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c32-0.19.0/src/microkernel.rs

/work/main/target/release/deps/libgemm_c32-bb2858fe266ec9b4.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c32-0.19.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c32-0.19.0/src/gemm.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c32-0.19.0/src/microkernel.rs

/work/main/target/release/deps/libgemm_c32-bb2858fe266ec9b4.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c32-0.19.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c32-0.19.0/src/gemm.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c32-0.19.0/src/microkernel.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c32-0.19.0/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c32-0.19.0/src/gemm.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c32-0.19.0/src/microkernel.rs:
