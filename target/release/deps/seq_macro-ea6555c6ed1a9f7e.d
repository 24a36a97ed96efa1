/work/main/target/release/deps/seq_macro-ea6555c6ed1a9f7e.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/seq-macro-0.3.6/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/seq-macro-0.3.6/src/parse.rs

/work/main/target/release/deps/libseq_macro-ea6555c6ed1a9f7e.so: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/seq-macro-0.3.6/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/seq-macro-0.3.6/src/parse.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/seq-macro-0.3.6/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/seq-macro-0.3.6/src/parse.rs:
