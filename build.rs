//! Generates the tonic/prost code for `proto/*.proto` with a vendored `protoc`, so a fresh
//! machine needs nothing but the Rust toolchain.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // The node's own services; their descriptors feed gRPC server reflection.
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("descriptor.bin"))
        .compile_protos(&["proto/kv.proto", "proto/raft.proto"], &["proto"])?;
    // etcd's KV calls, client side only, for kvbench; kept out of the reflection descriptors.
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&["proto/etcd_bench.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
