/work/main/target/release/deps/mpsae_kernels-97d766955ba86a5f.d: crates/mpsae-kernels/src/lib.rs crates/mpsae-kernels/src/adam.rs crates/mpsae-kernels/src/backward.rs crates/mpsae-kernels/src/matmul.rs crates/mpsae-kernels/src/pursuit.rs

/work/main/target/release/deps/mpsae_kernels-97d766955ba86a5f: crates/mpsae-kernels/src/lib.rs crates/mpsae-kernels/src/adam.rs crates/mpsae-kernels/src/backward.rs crates/mpsae-kernels/src/matmul.rs crates/mpsae-kernels/src/pursuit.rs

crates/mpsae-kernels/src/lib.rs:
crates/mpsae-kernels/src/adam.rs:
crates/mpsae-kernels/src/backward.rs:
crates/mpsae-kernels/src/matmul.rs:
crates/mpsae-kernels/src/pursuit.rs:
