//! Compiles the contracts with protox (no protoc needed) and writes the file descriptor set
//! every server serves for reflection.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "tandem/common/v1/common.proto",
    "tandem/commissions/v1/commissions.proto",
    "tandem/events/v1/events.proto",
    "tandem/identity/v1/identity.proto",
    "tandem/tiers/v1/tiers.proto",
    "tandem/deals/v1/deals.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    println!("cargo:rerun-if-changed={}", root.join("tandem").display());
    println!("cargo:rerun-if-changed={}", root.join("google").display());

    let files = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("tandem_descriptor.bin"), prost::Message::encode_to_vec(&files))?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(files)?;
    Ok(())
}
