/work/main/target/release/deps/reborrow-8ab663f1ac392cad.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/reborrow-0.5.5/src/lib.rs

/work/main/target/release/deps/libreborrow-8ab663f1ac392cad.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/reborrow-0.5.5/src/lib.rs

/work/main/target/release/deps/libreborrow-8ab663f1ac392cad.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/reborrow-0.5.5/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/reborrow-0.5.5/src/lib.rs:
