//! What `strata analyze` finds, as data: every output format (table, JSON,
//! CSV, HTML) renders this and nothing else.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The images, in the order given on the command line.
    pub images: Vec<ImageFigures>,
    /// One entry per `--chunk-sizes` setting; the first is the store's
    /// (or the default) and is the one `images` and `matrix` use.
    pub settings: Vec<SettingFigures>,
    /// `matrix[i][j]`: plain bytes of the chunks image i shares with image j
    /// (each distinct chunk counted once); `matrix[i][i]` is image i's
    /// distinct plain bytes.
    pub matrix: Vec<Vec<u64>>,
    /// How gzip layers were decoded, and how fast (MB/s of plain output).
    pub inflate_backend: String,
    pub inflate_mb_per_s: Option<f64>,
    /// Where the blobs came from: "files" or "daemon".
    pub source: String,
    pub elapsed_secs: f64,
    /// Distinct blobs analyzed (manifests, configs, layers), and of them layers.
    pub blobs: usize,
    pub distinct_layers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageFigures {
    pub name: String,
    /// The file or directory it was read from (or the daemon's namespace).
    pub origin: String,
    pub platform: Option<String>,
    pub layers: usize,
    /// Sum of the image's blobs as they are (manifest, config, layers).
    pub compressed_bytes: u64,
    /// Sum of its layers' plain (tar) bytes.
    pub plain_bytes: u64,
    /// Plain bytes of the chunks no other image in the set has.
    pub unique_bytes: u64,
    /// Plain bytes of the chunks at least one other image also has.
    pub shared_bytes: u64,
}

/// Bytes left after deduplicating at one level, against both totals.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub bytes: u64,
    /// `bytes / compressed total` and `bytes / plain total`.
    pub vs_compressed: f64,
    pub vs_plain: f64,
}

impl Level {
    pub fn new(bytes: u64, compressed_total: u64, plain_total: u64) -> Level {
        let ratio = |t: u64| if t == 0 { 0.0 } else { bytes as f64 / t as f64 };
        Level {
            bytes,
            vs_compressed: ratio(compressed_total),
            vs_plain: ratio(plain_total),
        }
    }
}

/// What strata would keep on disk for the whole set.
#[derive(Debug, Clone, Serialize)]
pub struct StrataBytes {
    /// Distinct chunks, compressed as the store compresses them.
    pub chunks: u64,
    /// Blob recipes (chunk lists and literal tar headers).
    pub recipes: u64,
    /// Data kept only to rebuild compressed blobs exactly.
    pub rebuild: u64,
    /// Index records (estimate).
    pub index: u64,
    /// Pack files alone: every block record, chunks and the rebuild data
    /// kept as chunks (what `chunks` plus part of `rebuild` add up to).
    pub packs: u64,
    pub total: Level,
}

#[derive(Debug, Clone, Serialize)]
pub struct SettingFigures {
    /// "16K/64K/256K".
    pub chunk_sizes: String,
    /// What the images cost kept apart: every image's blobs as they are
    /// (a blob counted once per image holding it), and their plain bytes
    /// (layers' tars; configs and manifests as they are).
    pub compressed_total: u64,
    pub plain_total: u64,
    /// Plain bytes of the distinct blobs (same digest stored once, as
    /// containerd and registries do).
    pub layer_level: Level,
    /// Plain bytes of distinct file bodies, plus every tar header and padding.
    pub file_level: Level,
    /// Plain bytes of distinct chunks, plus literal (header) bytes.
    pub chunk_level: Level,
    pub strata: StrataBytes,
    pub chunks: u64,
    pub distinct_chunks: u64,
}
