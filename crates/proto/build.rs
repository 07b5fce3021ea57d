//! Generates the gRPC code from `proto/` with the protoc that ships inside
//! `protoc-bin-vendored`, so building needs no network and no system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled for one checkout can be
    // reused (shared target directory) by another.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "herald/routing/v1/routing.proto",
        "herald/presence/v1/presence.proto",
        "herald/notify/v1/notify.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    // A protoc named in the environment wins; else the vendored one.
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("herald_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        .compile_with_config(config, &files.map(|f| root.join(f)), &[root])?;
    Ok(())
}
