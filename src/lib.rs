//! strata: a content store for container image layers that keeps every file's
//! content once and gives every blob back byte for byte.
//!
//! The data path, stage by stage: [`split`] (tar-aware content-defined chunking),
//! [`store`] (packs, recipes and the RocksDB index), [`server`] (the gRPC
//! daemon), [`client`] (the CLI's side of the socket).

pub mod analyze;
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
pub mod digest;
pub mod error;
pub mod image;
pub mod server;
pub mod split;
pub mod store;

/// Code generated from `proto/` by `build.rs`.
pub mod proto {
    pub mod containerd {
        pub mod services {
            pub mod content {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.content.v1");
                }
            }
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
