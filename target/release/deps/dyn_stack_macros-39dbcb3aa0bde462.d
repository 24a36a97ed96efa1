/work/main/target/release/deps/dyn_stack_macros-39dbcb3aa0bde462.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/dyn-stack-macros-0.1.3/src/lib.rs

/work/main/target/release/deps/libdyn_stack_macros-39dbcb3aa0bde462.so: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/dyn-stack-macros-0.1.3/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/dyn-stack-macros-0.1.3/src/lib.rs:
