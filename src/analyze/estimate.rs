//! What the store would write: new chunks grouped into blocks exactly as an
//! ingest groups them (per blob, in stream order, a block closed once it
//! holds `block_bytes`) and encoded with the store's own `pack::encode_block`;
//! and the index records those chunks and blobs would take.

use crate::error::{Error, Result};
use crate::store::index::{BlobMeta, Content, Wrap};
use crate::store::pack::{self, BlockBuilder};
use parking_lot::Mutex;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A block a blob filled, for one setting.
pub struct BlockJob {
    pub setting: usize,
    pub block: BlockBuilder,
    /// Plain bytes of the block's chunks that came from rebuild data.
    pub raw_plain: u64,
}

/// Pack bytes per setting: all records, and the share of them that holds
/// rebuild data (apportioned by plain bytes within each block).
#[derive(Default, Clone, Copy, Debug)]
pub struct PackTotals {
    pub bytes: u64,
    pub blocks: u64,
    pub raw_share: f64,
}

/// Compressor threads shared by every blob being analyzed: one big layer
/// still keeps both cores busy (its splitting on one, compression on another).
pub struct BlockPool {
    tx: Option<SyncSender<BlockJob>>,
    handles: Vec<JoinHandle<Result<()>>>,
    totals: Arc<Mutex<Vec<PackTotals>>>,
}

impl BlockPool {
    pub fn new(threads: usize, level: i32, settings: usize) -> Result<BlockPool> {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<BlockJob>(threads * 2);
        let rx = Arc::new(Mutex::new(rx));
        let totals = Arc::new(Mutex::new(vec![PackTotals::default(); settings]));
        let mut handles = Vec::new();
        for _ in 0..threads {
            let rx = rx.clone();
            let totals = totals.clone();
            let h = std::thread::Builder::new()
                .name("analyze-compress".into())
                .spawn(move || compress(&rx, level, &totals))
                .map_err(|e| Error::io("starting a compression thread", e))?;
            handles.push(h);
        }
        Ok(BlockPool {
            tx: Some(tx),
            handles,
            totals,
        })
    }

    pub fn sender(&self) -> SyncSender<BlockJob> {
        self.tx.clone().expect("pool open until finish")
    }

    /// Waits for every block sent so far (every sender must be dropped).
    pub fn finish(mut self) -> Result<Vec<PackTotals>> {
        drop(self.tx.take());
        for h in self.handles.drain(..) {
            h.join()
                .map_err(|_| Error::Internal("a compression thread panicked".into()))??;
        }
        Ok(self.totals.lock().clone())
    }
}

fn compress(
    rx: &Mutex<Receiver<BlockJob>>,
    level: i32,
    totals: &Mutex<Vec<PackTotals>>,
) -> Result<()> {
    let mut comp =
        zstd::bulk::Compressor::new(level).map_err(|e| Error::Internal(format!("zstd: {e}")))?;
    loop {
        let Ok(job) = rx.lock().recv() else {
            return Ok(());
        };
        let rec = pack::encode_block(&job.block, &mut comp)?.len() as u64;
        let plain = job.block.plain.len().max(1) as f64;
        let mut t = totals.lock();
        let s = &mut t[job.setting];
        s.bytes += rec;
        s.blocks += 1;
        s.raw_share += rec as f64 * job.raw_plain as f64 / plain;
    }
}

/// RocksDB's cost per record beyond its key and value: the internal key's
/// sequence and type, varint lengths, block restarts and index, bloom bits
/// (SST), or the batch framing (WAL). Calibrated against real stores: the
/// 1.8 MB set of tests/analyze.rs (index predicted within 2%, packs exact)
/// and four corpus images (918 MB plain, 46k chunks: index and recipes
/// 8.52 MB predicted, 8.37 MB on disk, all of it still in the WAL).
pub const PER_RECORD: u64 = 8;
/// Files an index has however small: OPTIONS (two generations, 41 KB each
/// for eight column families), MANIFEST, CURRENT, IDENTITY and an info LOG
/// that keeps only RocksDB's warnings. Calibrated as above (tests/analyze.rs:
/// 94.4 KB of index on disk, 2026-12-07).
pub const INDEX_FIXED: u64 = 84_000;
/// Per pushed blob, the counters record and pack length each commit writes
/// (in the WAL until a flush; small either way).
const PER_COMMIT: u64 = 110;

/// Index bytes of `chunks` distinct chunks: location and refcount records.
pub fn chunk_index_bytes(chunks: u64) -> u64 {
    chunks * (32 + pack::ChunkLoc::ENCODED_LEN as u64 + 32 + 8 + 2 * PER_RECORD)
}

/// Index bytes of one blob's records besides its recipe pages and plan
/// (counted as recipes and rebuild data): the blob record, its content
/// record and the page and plan keys.
pub fn blob_index_bytes(
    namespace: &str,
    media_type: &str,
    content: &Content,
    pages: u64,
    plan: bool,
) -> u64 {
    let meta = BlobMeta {
        media_type: media_type.to_string(),
        labels: Default::default(),
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
    }
    .encode()
    .len() as u64;
    let blob = namespace.len() as u64 + 1 + 32 + meta + PER_RECORD;
    let content = 32 + content.encode().len() as u64 + PER_RECORD;
    let keys = (pages + plan as u64) * (36 + PER_RECORD);
    blob + content + keys + PER_COMMIT
}

/// A content record shaped like the one a commit would write.
pub fn content_record(
    size: u64,
    chunk_refs: u64,
    literal_bytes: u64,
    recipe_bytes: u64,
    page_starts: Vec<u64>,
    wrap: Option<Wrap>,
) -> Content {
    Content {
        size,
        layout: 1,
        holders: 1,
        variants: 0,
        chunk_refs,
        literal_bytes,
        recipe_bytes,
        page_starts,
        wrap,
    }
}
