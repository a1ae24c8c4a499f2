//! Compiles the gRPC contract in `proto/` with a vendored `protoc`, so a fresh machine needs
//! no system package, and writes the descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/mailchimp_sync/v1/accounts.proto",
        "proto/mailchimp_sync/v1/audiences.proto",
        "proto/mailchimp_sync/v1/contacts.proto",
        "proto/mailchimp_sync/v1/blacklist.proto",
        "proto/mailchimp_sync/v1/webhook_events.proto",
        "proto/mailchimp_sync/v1/fetch.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("mailchimp_sync_descriptor.bin"))
        .compile_with_config(config, &protos, &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
