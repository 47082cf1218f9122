//! strata: a content store for container image layers that keeps every file's
//! content once and gives every blob back byte for byte.
//!
//! The data path, stage by stage: [`split`] (tar-aware content-defined chunking),
//! [`codec`] (decoding gzip/zstd and the plans that rebuild them; the bit-exact
//! Go encoders live in the workspace crates `goflate` and `kpflate`), [`store`]
//! (packs, recipes and the RocksDB index), [`server`] (the gRPC daemon),
//! [`client`] (the CLI's side of the socket), [`remote`] (the CLI as a
//! registry client). Each module uses only what sits
//! below it; ARCHITECTURE.md at the repository root is the map.

pub mod analyze;
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
pub mod digest;
pub mod encoding;
pub mod error;
pub mod image;
pub mod registry;
pub mod remote;
pub mod server;
pub mod split;
pub mod store;
pub mod unpack;

/// Code generated from `proto/` by `build.rs`.
pub mod proto {
    pub mod containerd {
        pub mod services {
            pub mod content {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.content.v1");
                }
            }
            pub mod diff {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.diff.v1");
                }
            }
        }
        pub mod types {
            tonic::include_proto!("containerd.types");
        }
    }
    pub mod strata {
        pub mod v1 {
            tonic::include_proto!("strata.v1");
        }
    }
}

pub use digest::Digest;
pub use error::{Error, Result};
