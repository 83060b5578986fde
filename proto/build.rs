//! Compiles `proto/**/*.proto` with protox (pure Rust, no system `protoc`) and
//! generates the tonic code, plus a descriptor set for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "e2ebackup/storage/v2/storage.proto",
    "e2ebackup/backup/v2/manifest.proto",
    "e2ebackup/storage/v3/storage.proto",
    "e2ebackup/backup/v3/pack.proto",
    "e2ebackup/vault/v2/vault.proto",
];

fn main() {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."]).expect("the .proto files compile");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out_dir.join("descriptors.bin"), descriptors.encode_to_vec())
        .expect("write the descriptor set");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::StrictProstCodec")
        .compile_fds(descriptors)
        .expect("generate the tonic code");
}
