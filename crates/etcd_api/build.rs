//! Generates etcd's v3 wire types, client and server halves, from the workspace's
//! `proto/etcd/*.proto` with a vendored `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("descriptor.bin"))
        .compile_protos(&["../../proto/etcd/rpc.proto"], &["../../proto"])?;
    println!("cargo:rerun-if-changed=../../proto/etcd");
    Ok(())
}
