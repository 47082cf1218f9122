//! `strata analyze`: what a set of images would cost in a shared strata store,
//! found without a daemon. Every distinct blob is read once, decoded and split
//! exactly as an ingest would (the same [`Unwrapper`](crate::codec::unwrap::Unwrapper),
//! [`Splitter`](crate::split::Splitter) and recipe encoder), its chunks named by
//! BLAKE3 and kept in memory tables (hash, length, which images hold it: never
//! the bytes), and new chunks grouped into blocks and zstd-compressed as the
//! store's packs would hold them. The [`Report`] is rendered as a table, JSON,
//! CSV or HTML.

pub mod csv;
mod engine;
mod estimate;
mod figures;
pub mod html;
mod progress;
pub mod report;
pub mod table;
mod tables;

pub use engine::analyze_blobs;
pub use report::Report;

use crate::codec::unwrap::UnwrapConfig;
use crate::error::Result;
use crate::image::{BlobSource, Image};
use crate::split::ChunkSizes;
use std::sync::Arc;

/// One image to analyze: what it is, where its blobs come from, and where it
/// was found (a path, or the daemon's namespace).
pub struct Input {
    pub image: Image,
    pub source: Arc<dyn BlobSource>,
    pub origin: String,
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// One pass of figures per entry; the first also gives the per-image
    /// figures and the matrix. Never empty.
    pub chunk_sizes: Vec<ChunkSizes>,
    /// The store's block size and zstd level (what packs would hold).
    pub block_bytes: usize,
    pub zstd_level: i32,
    /// How compressed layers are decoded and proven, as the daemon would.
    pub unwrap: UnwrapConfig,
    /// Blobs decoded and split at once (each on its own thread).
    pub threads: usize,
    /// Progress bars on stderr (only drawn when it is a terminal).
    pub progress: bool,
    /// "files" or "daemon": where the blobs came from.
    pub source: String,
}

impl Default for Settings {
    fn default() -> Self {
        let store = crate::store::StoreConfig::default();
        Settings {
            chunk_sizes: vec![store.chunk_sizes],
            block_bytes: store.block_bytes,
            zstd_level: store.zstd_level,
            unwrap: store.unwrap,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            progress: false,
            source: "files".into(),
        }
    }
}

/// Analyzes `inputs` (images in the order they are reported) with `settings`.
pub fn run(inputs: Vec<Input>, settings: &Settings) -> Result<Report> {
    analyze_blobs(&inputs, settings)
}
