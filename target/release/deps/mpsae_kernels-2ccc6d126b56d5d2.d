/work/main/target/release/deps/mpsae_kernels-2ccc6d126b56d5d2.d: crates/mpsae-kernels/src/lib.rs crates/mpsae-kernels/src/adam.rs crates/mpsae-kernels/src/backward.rs crates/mpsae-kernels/src/matmul.rs crates/mpsae-kernels/src/pursuit.rs

/work/main/target/release/deps/libmpsae_kernels-2ccc6d126b56d5d2.rlib: crates/mpsae-kernels/src/lib.rs crates/mpsae-kernels/src/adam.rs crates/mpsae-kernels/src/backward.rs crates/mpsae-kernels/src/matmul.rs crates/mpsae-kernels/src/pursuit.rs

/work/main/target/release/deps/libmpsae_kernels-2ccc6d126b56d5d2.rmeta: crates/mpsae-kernels/src/lib.rs crates/mpsae-kernels/src/adam.rs crates/mpsae-kernels/src/backward.rs crates/mpsae-kernels/src/matmul.rs crates/mpsae-kernels/src/pursuit.rs

crates/mpsae-kernels/src/lib.rs:
crates/mpsae-kernels/src/adam.rs:
crates/mpsae-kernels/src/backward.rs:
crates/mpsae-kernels/src/matmul.rs:
crates/mpsae-kernels/src/pursuit.rs:
