//! The pass over the blobs: every distinct blob (layers deduplicated by
//! digest, whichever images hold them) is read once, decoded by the codec
//! stage an ingest uses, and its plain stream fed to one splitter per
//! chunk-size setting. Blobs run on `threads` workers; new chunks' blocks are
//! compressed on a shared pool.

use super::estimate::{self, BlockJob, BlockPool};
use super::figures::{self, BlobResult, SettingBlob};
use super::progress;
use super::tables::{Blob, ChunkTable, FileTable, Hash, ImageSet, Shared};
use super::{Input, Report, Settings};
use crate::codec::plan::Plan;
use crate::codec::unwrap::{Streams, Unwrapper};
use crate::error::{Error, Result};
use crate::image::BlobRef;
use crate::split::{ChunkSizes, Cutter, Sink, Splitter, StreamChunker};
use crate::store::index::Wrap;
use crate::store::pack::BlockBuilder;
use crate::store::recipe::RecipeBuilder;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

const READ_PIECE: usize = 1 << 20;

/// Distinct blobs in push order: per image, its layers, config, manifest.
pub fn distinct_blobs(inputs: &[Input]) -> Vec<Blob> {
    let n = inputs.len();
    let mut out: Vec<Blob> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for (i, input) in inputs.iter().enumerate() {
        let img = &input.image;
        let blobs = img
            .layers
            .iter()
            .map(|b| (b, true))
            .chain(img.config.iter().map(|b| (b, false)))
            .chain(img.manifest.iter().map(|b| (b, false)));
        for (b, is_layer) in blobs {
            let k = *at.entry(b.digest.clone()).or_insert_with(|| {
                out.push(Blob {
                    blob: b.clone(),
                    first: i,
                    images: ImageSet::empty(n),
                    is_layer,
                });
                out.len() - 1
            });
            out[k].images.insert(i);
            out[k].is_layer |= is_layer;
        }
    }
    out
}

pub fn analyze_blobs(inputs: &[Input], settings: &Settings) -> Result<Report> {
    if settings.chunk_sizes.is_empty() {
        return Err(Error::InvalidArgument("no chunk sizes to analyze".into()));
    }
    for cs in &settings.chunk_sizes {
        cs.validate().map_err(Error::InvalidArgument)?;
    }
    let started = Instant::now();
    let blobs = distinct_blobs(inputs);
    let shared = Shared {
        tables: settings
            .chunk_sizes
            .iter()
            .map(|_| ChunkTable::default())
            .collect(),
        files: FileTable::default(),
    };
    let total: u64 = blobs.iter().map(|b| b.blob.size).sum();
    let bar = progress::bar(total, settings.progress);
    let threads = settings.threads.max(1);
    let pool = BlockPool::new(threads, settings.zstd_level, settings.chunk_sizes.len())?;
    let results: Vec<Mutex<Option<BlobResult>>> = blobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.min(blobs.len().max(1)) {
            let tx = pool.sender();
            let (blobs, shared, bar, results) = (&blobs, &shared, &bar, &results);
            let (next, failed, first_error) = (&next, &failed, &first_error);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= blobs.len() || failed.load(Ordering::Relaxed) {
                    return;
                }
                let b = &blobs[i];
                let input = &inputs[b.first];
                match process(b, input, settings, shared, &tx, bar) {
                    Ok(r) => *results[i].lock() = Some(r),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        first_error.lock().get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    let packs = pool.finish()?;
    bar.finish_and_clear();
    if let Some(e) = first_error.into_inner() {
        return Err(e);
    }
    let results: Vec<BlobResult> = results
        .into_iter()
        .map(|r| r.into_inner().expect("every blob analyzed"))
        .collect();
    Ok(figures::report(
        inputs,
        settings,
        &blobs,
        &results,
        &shared,
        &packs,
        started.elapsed(),
    ))
}

/// Maps a blob-reading failure to an error naming the image and blob.
fn read_error(image: &str, blob: &BlobRef, e: io::Error) -> Error {
    let what = format!("image {image}: blob {}", blob.digest);
    match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound(format!("{what} is missing: {e}")),
        io::ErrorKind::InvalidData => Error::DataLoss(format!("{what}: {e}")),
        _ => Error::io(format!("reading {what}"), e),
    }
}

fn process(
    b: &Blob,
    input: &Input,
    settings: &Settings,
    shared: &Shared,
    tx: &SyncSender<BlockJob>,
    bar: &indicatif::ProgressBar,
) -> Result<BlobResult> {
    let name = &input.image.name;
    bar.set_message(format!("{name} {}", short(&b.blob.digest)));
    let (mut passes, plain, plan, codec_time) =
        read_blob(b, input, settings, shared, Some(tx), Some(bar))?;
    let mut per_setting = Vec::new();
    for p in &mut passes {
        per_setting.push(p.finish(&b.blob, plan.as_ref())?);
    }
    // A member given up part way (after preflate too) leaves plain bytes in
    // the stream that the plan skips: the store keeps that stream, but the
    // blob's content is read again, decoded only, for the content figures.
    let clean = plan.as_ref().is_none_or(|p| p.plain_size == Some(plain));
    let plain_size = if clean {
        for p in &passes {
            p.sink.apply();
        }
        plain
    } else {
        let mut only = settings.clone();
        only.unwrap = crate::codec::unwrap::UnwrapConfig::decode_only();
        let (mut again, plain, _, _) = read_blob(b, input, &only, shared, None, None)?;
        for (p, fig) in again.iter_mut().zip(&mut per_setting) {
            p.end()?;
            p.sink.apply();
            fig.literal_bytes = p.sink.literal;
            fig.chunk_refs = p.sink.chunk_refs;
        }
        plain
    };
    // The tar it is, when the store keeps one recipe for it however many
    // compressions carry it (store/commit.rs::put_content).
    let tar = match &plan {
        Some(p) if clean => p.diff_id,
        Some(_) => None,
        None if b.is_layer => crate::digest::Digest::parse(&b.blob.digest)
            .ok()
            .map(|d| d.0),
        None => None,
    };
    Ok(BlobResult {
        plain_size,
        tar,
        compressed: plan.is_some(),
        codec_secs: codec_time.as_secs_f64(),
        kept: plan.as_ref().map(|p| p.describe()),
        per_setting,
    })
}

type BlobRead<'a> = (Vec<Pass<'a>>, u64, Option<Plan>, Duration);

/// Reads a blob through the codec stage into one pass per setting: with `tx`,
/// as the store would take it; without, for its content only.
fn read_blob<'a>(
    b: &'a Blob,
    input: &Input,
    settings: &Settings,
    shared: &'a Shared,
    tx: Option<&'a SyncSender<BlockJob>>,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<BlobRead<'a>> {
    let name = &input.image.name;
    let mut passes: Vec<Pass> = settings
        .chunk_sizes
        .iter()
        .enumerate()
        .map(|(i, cs)| Pass::new(i, *cs, b, settings, shared, tx))
        .collect();
    let spool = std::env::temp_dir();
    let mut unwrap = Unwrapper::new(settings.unwrap.clone(), &spool);
    let mut fan = Fanout {
        passes: &mut passes,
        plain: 0,
        in_sinks: Duration::ZERO,
    };
    let reader = input
        .source
        .open(&b.blob)
        .map_err(|e| read_error(name, &b.blob, e))?;
    let mut reader = progress::Counting {
        inner: reader,
        bar: bar.cloned().unwrap_or_else(indicatif::ProgressBar::hidden),
    };
    let mut buf = vec![0u8; READ_PIECE];
    let mut fed = Duration::ZERO;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(name, &b.blob, e)),
        };
        let t = Instant::now();
        unwrap.feed(&buf[..n], &mut fan)?;
        fed += t.elapsed();
    }
    let t = Instant::now();
    let plan = unwrap.finish(&mut fan)?;
    fed += t.elapsed();
    let codec_time = fed.saturating_sub(fan.in_sinks);
    let plain = fan.plain;
    Ok((passes, plain, plan, codec_time))
}

fn short(digest: &str) -> &str {
    let h = digest.strip_prefix("sha256:").unwrap_or(digest);
    &h[..h.len().min(12)]
}

/// The codec stage's two streams, handed to every setting's splitter.
struct Fanout<'p, 'a> {
    passes: &'p mut [Pass<'a>],
    plain: u64,
    /// Time spent downstream (splitting, hashing): not decoding.
    in_sinks: Duration,
}

impl Streams for Fanout<'_, '_> {
    fn plain(&mut self, b: &[u8]) -> Result<()> {
        let t = Instant::now();
        self.plain += b.len() as u64;
        for p in self.passes.iter_mut() {
            p.sink.to_raw = false;
            p.splitter.feed(b, &mut p.sink)?;
        }
        self.in_sinks += t.elapsed();
        Ok(())
    }

    fn raw(&mut self, b: &[u8]) -> Result<()> {
        let t = Instant::now();
        for p in self.passes.iter_mut() {
            let sink = &mut p.sink;
            sink.to_raw = true;
            p.raw_chunker.push(b, &mut |c| sink.chunk(c))?;
            sink.to_raw = false;
        }
        self.in_sinks += t.elapsed();
        Ok(())
    }
}

/// One blob under one chunk-size setting, as an ingest would split it.
struct Pass<'a> {
    splitter: Splitter,
    raw_chunker: StreamChunker,
    sink: PassSink<'a>,
}

struct PassSink<'a> {
    setting: usize,
    table: &'a ChunkTable,
    /// First setting only: the images holding this layer, and file bodies.
    images: Option<&'a ImageSet>,
    files: Option<&'a FileTable>,
    /// The store emulation's block queue; `None` when reading for content only.
    tx: Option<&'a SyncSender<BlockJob>>,
    /// The file body being read: BLAKE3 over its chunks' hashes (equal bodies
    /// are cut at the same points), and its length.
    run: Option<(blake3::Hasher, u64)>,
    /// The blob's content (plain chunks, file bodies), applied to the tables
    /// once its plain stream is known to be the blob's content.
    content: Vec<(Hash, u32)>,
    runs: Vec<(Hash, u64)>,
    literal: u64,
    chunk_refs: u64,
    recipe: RecipeBuilder,
    raw: RecipeBuilder,
    to_raw: bool,
    block: BlockBuilder,
    raw_plain: u64,
    block_bytes: usize,
}

impl<'a> Pass<'a> {
    fn new(
        setting: usize,
        cs: ChunkSizes,
        b: &'a Blob,
        settings: &Settings,
        shared: &'a Shared,
        tx: Option<&'a SyncSender<BlockJob>>,
    ) -> Pass<'a> {
        let cutter = Cutter::new(cs);
        let first = setting == 0;
        Pass {
            splitter: Splitter::new(cutter.clone()),
            raw_chunker: StreamChunker::new(cutter),
            sink: PassSink {
                setting,
                table: &shared.tables[setting],
                images: (first && b.is_layer).then_some(&b.images),
                files: first.then_some(&shared.files),
                tx,
                run: None,
                content: Vec::new(),
                runs: Vec::new(),
                literal: 0,
                chunk_refs: 0,
                recipe: RecipeBuilder::default(),
                raw: RecipeBuilder::default(),
                to_raw: false,
                block: BlockBuilder::default(),
                raw_plain: 0,
                block_bytes: settings.block_bytes,
            },
        }
    }

    /// Ends the streams as a commit would: the splitter, then the raw chunker.
    fn end(&mut self) -> Result<()> {
        let sink = &mut self.sink;
        sink.to_raw = false;
        self.splitter.finish(sink)?;
        sink.end_run();
        sink.to_raw = true;
        self.raw_chunker.finish(&mut |c| sink.chunk(c))?;
        sink.to_raw = false;
        Ok(())
    }

    /// Ends the blob as the store would: its last block, recipes and records.
    fn finish(&mut self, blob: &BlobRef, plan: Option<&Plan>) -> Result<SettingBlob> {
        self.end()?;
        let sink = &mut self.sink;
        sink.send_block()?;
        let recipe = std::mem::take(&mut sink.recipe).finish();
        let raw = std::mem::take(&mut sink.raw).finish();
        let plan_bytes = plan.map(|p| p.encode());
        let wrap = plan.map(|p| Wrap {
            codec: p.codec.tag(),
            strategy: p.strategy() as u8,
            recipe_size: recipe.size,
            plain_size: p.plain_size,
            diff_id: p.diff_id,
            raw_size: raw.size,
            raw_page_starts: raw.page_starts.clone(),
            extra_bytes: raw.size + plan_bytes.as_ref().map_or(0, |b| b.len() as u64),
            based: false,
        });
        let rebuild_index = plan_bytes
            .as_ref()
            .map_or(0, |b| raw.stored_bytes() + b.len() as u64);
        let recipe_bytes = recipe.stored_bytes();
        let pages = (recipe.pages.len() + raw.pages.len()) as u64;
        let content = estimate::content_record(
            blob.size,
            recipe.chunk_refs + raw.chunk_refs,
            recipe.literal_bytes + raw.literal_bytes,
            recipe_bytes + rebuild_index,
            recipe.page_starts.clone(),
            wrap,
        );
        let index_bytes = estimate::blob_index_bytes(
            crate::config::DEFAULT_NAMESPACE,
            &blob.media_type,
            &content,
            pages,
            plan.is_some(),
        );
        Ok(SettingBlob {
            chunk_refs: sink.chunk_refs,
            literal_bytes: sink.literal,
            recipe_bytes,
            rebuild_index_bytes: rebuild_index,
            index_bytes,
        })
    }
}

impl PassSink<'_> {
    fn end_run(&mut self) {
        if let Some((h, len)) = self.run.take() {
            self.runs.push((*h.finalize().as_bytes(), len));
        }
    }

    /// Adds the blob's content to the tables.
    fn apply(&self) {
        for (h, len) in &self.content {
            self.table.add_content(h, *len, self.images);
        }
        if let Some(files) = self.files {
            for (h, len) in &self.runs {
                files.record(h, *len);
            }
        }
    }

    fn send_block(&mut self) -> Result<()> {
        let Some(tx) = self.tx else {
            return Ok(());
        };
        if self.block.is_empty() {
            return Ok(());
        }
        let job = BlockJob {
            setting: self.setting,
            block: std::mem::take(&mut self.block),
            raw_plain: std::mem::take(&mut self.raw_plain),
        };
        tx.send(job)
            .map_err(|_| Error::Internal("the compression threads stopped".into()))
    }
}

impl Sink for PassSink<'_> {
    type Error = Error;

    fn literal(&mut self, bytes: &[u8]) -> Result<()> {
        // Headers and padding end a file body (the splitter emits one
        // between any two bodies).
        self.end_run();
        self.literal += bytes.len() as u64;
        if self.tx.is_some() {
            self.recipe.literal(bytes);
        }
        Ok(())
    }

    fn chunk(&mut self, bytes: &[u8]) -> Result<()> {
        let hash: Hash = *blake3::hash(bytes).as_bytes();
        let len = bytes.len() as u32;
        let plain = !self.to_raw;
        if plain {
            self.content.push((hash, len));
            self.chunk_refs += 1;
            if self.files.is_some() {
                let run = self.run.get_or_insert_with(|| (blake3::Hasher::new(), 0));
                run.0.update(&hash);
                run.1 += len as u64;
            }
        }
        if self.tx.is_none() {
            return Ok(());
        }
        if plain {
            self.recipe.chunk(hash, len);
        } else {
            self.raw.chunk(hash, len);
        }
        if self.table.claim(&hash, len) {
            self.block.push(hash, bytes);
            if !plain {
                self.raw_plain += len as u64;
            }
            if self.block.plain.len() >= self.block_bytes {
                self.send_block()?;
            }
        }
        Ok(())
    }
}
