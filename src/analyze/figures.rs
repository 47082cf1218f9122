//! Turns what the pass found (per-blob results, the chunk and file tables,
//! the emulated packs) into the [`Report`]'s figures.

use super::estimate::{self, PackTotals};
use super::report::{ImageFigures, Level, Report, SettingFigures, StrataBytes};
use super::tables::{Blob, ImageSet, Shared};
use super::{Input, Settings};
use std::collections::HashMap;
use std::time::Duration;

/// What one blob gave under every setting.
pub struct BlobResult {
    /// Bytes of its plain stream (the tar inside a compressed layer).
    pub plain_size: u64,
    /// The layer's tar (its diff_id, or its own digest when plain): every
    /// blob of one tar shares one plain recipe in the store.
    pub tar: Option<[u8; 32]>,
    /// Decoded by the codec stage (gzip or zstd) rather than taken as is.
    pub compressed: bool,
    /// Time spent decoding and proving the rebuild, not splitting.
    pub codec_secs: f64,
    /// How the store would keep its exact bytes ("go-6", "stored", ...).
    pub kept: Option<String>,
    pub per_setting: Vec<SettingBlob>,
}

pub struct SettingBlob {
    /// Chunk references of the plain recipe.
    pub chunk_refs: u64,
    pub literal_bytes: u64,
    /// Plain recipe pages as stored.
    pub recipe_bytes: u64,
    /// Raw recipe pages and rebuild plan as stored.
    pub rebuild_index_bytes: u64,
    /// The blob's other index records.
    pub index_bytes: u64,
}

pub fn report(
    inputs: &[Input],
    settings: &Settings,
    blobs: &[Blob],
    results: &[BlobResult],
    shared: &Shared,
    packs: &[PackTotals],
    elapsed: Duration,
) -> Report {
    let by_digest: HashMap<&str, &BlobResult> = blobs
        .iter()
        .zip(results)
        .map(|(b, r)| (b.blob.digest.as_str(), r))
        .collect();
    let n = inputs.len();

    // Chunks grouped by the set of images holding them: pairs are then
    // counted per group, not per chunk.
    let mut groups: HashMap<ImageSet, u64> = HashMap::new();
    shared.tables[0].for_each(|e| {
        if let (true, Some(s)) = (e.plain, &e.images) {
            *groups.entry(s.clone()).or_default() += e.len as u64;
        }
    });
    let mut matrix = vec![vec![0u64; n]; n];
    let mut unique = vec![0u64; n];
    let mut shared_bytes = vec![0u64; n];
    for (set, bytes) in &groups {
        let members: Vec<usize> = set.iter().collect();
        for &i in &members {
            for &j in &members {
                matrix[i][j] += bytes;
            }
            if set.count() == 1 {
                unique[i] += bytes;
            } else {
                shared_bytes[i] += bytes;
            }
        }
    }

    let images = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let img = &input.image;
            let all = img.layers.iter().chain(&img.config).chain(&img.manifest);
            ImageFigures {
                name: img.name.clone(),
                origin: input.origin.clone(),
                platform: img.platform.clone(),
                layers: img.layers.len(),
                compressed_bytes: all.map(|b| b.size).sum(),
                plain_bytes: img
                    .layers
                    .iter()
                    .map(|l| by_digest[l.digest.as_str()].plain_size)
                    .sum(),
                unique_bytes: unique[i],
                shared_bytes: shared_bytes[i],
            }
        })
        .collect();

    // The totals are what the images cost kept apart (a blob counted once
    // per image holding it): layer-level dedup is then the first saving.
    let images: Vec<ImageFigures> = images;
    let compressed_total: u64 = images.iter().map(|i| i.compressed_bytes).sum();
    let plain_total: u64 = inputs
        .iter()
        .zip(&images)
        .map(|(input, f)| {
            let img = &input.image;
            f.plain_bytes
                + img
                    .config
                    .iter()
                    .chain(&img.manifest)
                    .map(|b| b.size)
                    .sum::<u64>()
        })
        .sum();
    let distinct_plain: u64 = results.iter().map(|r| r.plain_size).sum();
    let level = |bytes| Level::new(bytes, compressed_total, plain_total);
    let literal: u64 = results.iter().map(|r| r.per_setting[0].literal_bytes).sum();
    let file_bytes = shared.files.distinct_bytes() + literal;
    let settings_figs = settings
        .chunk_sizes
        .iter()
        .enumerate()
        .map(|(k, cs)| {
            let (mut distinct, mut distinct_bytes, mut all) = (0u64, 0u64, 0u64);
            shared.tables[k].for_each(|e| {
                all += e.stored as u64;
                if e.plain {
                    distinct += 1;
                    distinct_bytes += e.len as u64;
                }
            });
            let sum = |f: fn(&SettingBlob) -> u64| -> u64 {
                results.iter().map(|r| f(&r.per_setting[k])).sum()
            };
            let p = packs[k];
            let raw_share = p.raw_share.round() as u64;
            let chunks = p.bytes - raw_share.min(p.bytes);
            // One plain recipe per tar, whatever wraps it.
            let recipes = {
                let mut by_tar: HashMap<[u8; 32], u64> = HashMap::new();
                let mut other = 0;
                for r in results {
                    let b = r.per_setting[k].recipe_bytes;
                    match r.tar {
                        Some(t) => {
                            let e = by_tar.entry(t).or_default();
                            *e = (*e).max(b);
                        }
                        None => other += b,
                    }
                }
                other + by_tar.values().sum::<u64>()
            };
            let rebuild = sum(|s| s.rebuild_index_bytes) + raw_share;
            let index =
                estimate::chunk_index_bytes(all) + sum(|s| s.index_bytes) + estimate::INDEX_FIXED;
            SettingFigures {
                chunk_sizes: sizes_label(cs),
                compressed_total,
                plain_total,
                layer_level: level(distinct_plain),
                file_level: level(file_bytes),
                chunk_level: level(distinct_bytes + literal),
                strata: StrataBytes {
                    chunks,
                    recipes,
                    rebuild,
                    index,
                    packs: p.bytes,
                    total: level(chunks + recipes + rebuild + index),
                },
                chunks: sum(|s| s.chunk_refs),
                distinct_chunks: distinct,
            }
        })
        .collect();

    let (dec_plain, dec_secs) = results
        .iter()
        .filter(|r| r.compressed)
        .fold((0u64, 0f64), |(b, s), r| {
            (b + r.plain_size, s + r.codec_secs)
        });
    let mut kept: Vec<String> = results.iter().filter_map(|r| r.kept.clone()).collect();
    kept.sort();
    kept.dedup();
    Report {
        images,
        settings: settings_figs,
        matrix,
        inflate_backend: inflate_backend(&kept),
        inflate_mb_per_s: (dec_plain > 0 && dec_secs > 0.0)
            .then(|| dec_plain as f64 / 1e6 / dec_secs),
        source: settings.source.clone(),
        elapsed_secs: elapsed.as_secs_f64(),
        blobs: blobs.len(),
        distinct_layers: blobs.iter().filter(|b| b.is_layer).count(),
    }
}

/// "16K/64K/256K" (K and M when the size divides evenly).
pub fn sizes_label(cs: &crate::split::ChunkSizes) -> String {
    let f = |v: u32| {
        if v >= 1 << 20 && v.is_multiple_of(1 << 20) {
            format!("{}M", v >> 20)
        } else if v >= 1024 && v.is_multiple_of(1024) {
            format!("{}K", v >> 10)
        } else {
            v.to_string()
        }
    };
    format!("{}/{}/{}", f(cs.min), f(cs.avg), f(cs.max))
}

/// The decoders the codec stage uses, and how the layers' exact bytes were
/// proven (the same replays and preflate an ingest runs).
fn inflate_backend(kept: &[String]) -> String {
    let mut s = crate::codec::decoders();
    if !kept.is_empty() {
        s.push_str(&format!("; rebuilt by {}", kept.join(", ")));
    }
    s
}
