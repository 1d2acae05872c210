//! Generates the agentmesh.v1 tonic/prost code and the descriptor set that gRPC
//! reflection serves. protoc comes from `protoc-bin-vendored` unless `PROTOC` is set,
//! so a fresh machine needs no system protobuf compiler for our own build.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment now.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let files =
        ["types.proto", "worker.proto", "session.proto"].map(|f| root.join("agentmesh/v1").join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("agentmesh_v1_descriptor.bin"))
        .compile_protos(&files, &[root])?;
    Ok(())
}
