//! Generates the gRPC code from `proto/` with protox, a pure-Rust protobuf
//! compiler, so no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/strata/v1/strata.proto",
        "proto/containerd/services/content/v1/content.proto",
        "proto/containerd/services/diff/v1/diff.proto",
        "proto/containerd/types/descriptor.proto",
        "proto/containerd/types/mount.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
