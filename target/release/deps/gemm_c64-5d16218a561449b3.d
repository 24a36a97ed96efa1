/work/main/target/release/deps/gemm_c64-5d16218a561449b3.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c64-0.19.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c64-0.19.0/src/gemm.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c64-0.19.0/src/microkernel.rs

/work/main/target/release/deps/libgemm_c64-5d16218a561449b3.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c64-0.19.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c64-0.19.0/src/gemm.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c64-0.19.0/src/microkernel.rs

/work/main/target/release/deps/libgemm_c64-5d16218a561449b3.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c64-0.19.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c64-0.19.0/src/gemm.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c64-0.19.0/src/microkernel.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c64-0.19.0/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c64-0.19.0/src/gemm.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gemm-c64-0.19.0/src/microkernel.rs:
