//! Generates the client API's tonic/prost code (client and server halves) from the workspace's
//! `proto/kv.proto` with a vendored `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("descriptor.bin"))
        .compile_protos(&["../../proto/kv.proto"], &["../../proto"])?;
    println!("cargo:rerun-if-changed=../../proto/kv.proto");
    Ok(())
}
