//! One push: bytes in, chunks out, one commit.
//!
//! The caller's thread hashes the blob (sha256), splits it and names each chunk
//! (BLAKE3); chunks the index does not know are gathered into blocks and handed
//! to a writer thread that compresses and appends them to a leased pack. On
//! commit the pack is fsynced and one WriteBatch makes the blob visible. An
//! ingest dropped before commit cuts its bytes off the pack again.
//!
//! A full disk fails the push with `ResourceExhausted` and stores nothing. The
//! store keeps `min_free_bytes` free on the data directory's disk: every block
//! append and every commit checks it first (`PackSet::claim`), so RocksDB never
//! meets ENOSPC (it then refuses every write until it recovers, which waits
//! for 64 MiB free, or the process restarts; Debian's build, assertions on,
//! may abort the process instead), and deletes and garbage collection, which
//! free space, can always run.

use super::follow::{Follow, PrefixKey};
use super::hasher::BackgroundSha256;

use super::pack::{self, BlockBuilder, ChunkLoc, Hash, PackWriter};
use super::recipe::{Recipe, RecipeBuilder};
use super::{validate_namespace, Inner, Store};
use crate::codec::plan::Plan;
use crate::codec::unwrap::{Streams, Unwrapper};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::split::{Layout, Sink, Splitter, StreamChunker};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Threads compressing one ingest's new blocks.
const COMPRESSORS: usize = 2;

/// Bytes received between two checks of the free-space reserve in `write`
/// (blocks check it before every append; this covers what a push spools
/// while its chunks are all known already).
const SPACE_CHECK_EVERY: u64 = 4 << 20;

#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    pub namespace: String,
    pub expected_digest: Option<Digest>,
    pub expected_size: Option<u64>,
    pub media_type: String,
    pub labels: BTreeMap<String, String>,
    /// Store a gzip or zstd blob as received and mark it for conversion
    /// (`convert.rs`) instead of decoding and proving it now.
    pub defer_compressed: bool,
    /// A conversion's own ingest: its writes are not client activity.
    pub background: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushOutcome {
    pub digest: Option<Digest>,
    pub size: u64,
    pub plain_bytes: u64,
    pub new_chunks: u64,
    pub reused_chunks: u64,
    pub bytes_added: u64,
    pub already_stored: bool,
    /// How a compressed blob is kept ("zlib-6", "stored", ...); empty when
    /// the blob is not compressed.
    pub kept: String,
    /// Chunks cut from a stored recipe's hints, without a FastCDC scan or an
    /// index lookup (see `follow.rs`).
    pub followed_chunks: u64,
}

/// What a commit writes of a blob's recipes.
pub(super) struct Recipes {
    pub(super) recipe: Recipe,
    pub(super) raw: Recipe,
    pub(super) plan: Option<Plan>,
    /// The plain stream's prefix name (`follow::PrefixKey`), when it has one.
    pub(super) prefix: Option<Hash>,
}

/// A finished ingest's streams, its pack synced, ready to commit.
struct Finished {
    digest: Digest,
    layout: Layout,
    recipes: Recipes,
    done: WriterDone,
    /// The bucket object the new pack bytes went to (`--store s3://`).
    piece: Option<String>,
}

/// What one commit stores.
pub(super) struct Committing<'a> {
    pub digest: Digest,
    pub size: u64,
    pub layout: Layout,
    pub recipes: Recipes,
    pub seen: &'a HashMap<Hash, Seen>,
    pub chunks: NewChunks<'a>,
    /// Its content object, when already in the bucket (`publish.rs`).
    pub uploaded: Option<String>,
}

/// The chunks a commit adds, and where they came from.
pub(super) struct NewChunks<'a> {
    pub locs: &'a [(Hash, ChunkLoc)],
    /// The local pack they were appended to: id, its length before the
    /// ingest and after. None for a content taken from the bucket.
    pub pack: Option<(u32, u64, u64)>,
    /// The bucket object holding the appended bytes (`--store s3://`).
    pub piece: Option<&'a str>,
}

impl NewChunks<'_> {
    /// Pack bytes the ingest appended.
    pub fn appended(&self) -> u64 {
        self.pack.map_or(0, |(_, start, end)| end - start)
    }
}

impl WriterDone {
    pub(super) fn new_chunks<'a>(&'a self, piece: Option<&'a str>) -> NewChunks<'a> {
        NewChunks {
            locs: &self.locs,
            pack: Some((self.writer.id, self.start_len, self.writer.len)),
            piece,
        }
    }
}

pub struct Ingest {
    store: Store,
    /// When it began: in bucket mode a push must commit within half the
    /// collection grace period (`bucket_gc.rs`).
    started: std::time::Instant,
    opts: IngestOptions,
    sha: Option<BackgroundSha256>,
    size: u64,
    unwrap: Option<Unwrapper>,
    splitter: Splitter,
    /// Cuts the raw stream (compressed bytes kept as received, corrections).
    raw_chunker: StreamChunker,
    sink: ChunkSink,
    /// Bytes received since the free-space reserve was last checked.
    unchecked: u64,
}

pub(super) struct Seen {
    pub(super) refs: u64,
    /// Reused from the store: pinned against garbage collection until this
    /// ingest ends (see gc.rs).
    pinned: bool,
}

impl Seen {
    /// References counted from stored recipe pages (no ingest pinned them).
    pub(super) fn counted(refs: u64) -> Self {
        Seen {
            refs,
            pinned: false,
        }
    }
}

struct ChunkSink {
    inner: Arc<Inner>,
    recipe: RecipeBuilder,
    raw: RecipeBuilder,
    /// Segments go to the raw recipe rather than the plain one.
    to_raw: bool,
    seen: HashMap<Hash, Seen>,
    block: BlockBuilder,
    writer: Option<WriterThread>,
    new_chunks: u64,
    reused_chunks: u64,
    /// Names the plain stream by its start, to find a stored recipe to follow.
    prefix: PrefixKey,
    follow: Option<Follow>,
    /// A hint was offered for the chunk being cut.
    offered: bool,
    /// Chunks taken from hints.
    followed_chunks: u64,
}

struct WriterThread {
    tx: Option<SyncSender<BlockBuilder>>,
    handle: JoinHandle<WriterDone>,
}

pub(super) struct WriterDone {
    pub(super) writer: PackWriter,
    pub(super) start_len: u64,
    pub(super) locs: Vec<(Hash, ChunkLoc)>,
    result: Result<()>,
}

impl Inner {
    /// Fails unless `need` more bytes leave the free-space reserve on the
    /// data directory's disk (see `PackSet::claim`).
    fn check_room(&self, need: u64) -> Result<()> {
        self.packs
            .claim(&self.dir, need, self.cfg.min_free_bytes)
            .map(drop)
    }
}

impl Store {
    pub fn begin_ingest(&self, opts: IngestOptions) -> Result<Ingest> {
        self.begin_ingest_inner(opts)
            .map_err(|e| e.nothing_stored(&self.inner.dir))
    }

    fn begin_ingest_inner(&self, opts: IngestOptions) -> Result<Ingest> {
        validate_namespace(&opts.namespace)?;
        let defer = opts.defer_compressed;
        let inner = self.inner.clone();
        let writer = inner.packs.lease()?;
        let level = inner.cfg.zstd_level;
        let store = inner.clone();
        // A block queued per compressor: both cores stay busy, memory stays bounded.
        let (tx, rx) = sync_channel::<BlockBuilder>(COMPRESSORS);
        let handle = std::thread::Builder::new()
            .name("strata-pack-writer".into())
            .spawn(move || write_blocks(writer, level, store, rx))
            .map_err(|e| Error::io("starting a pack writer thread", e))?;
        Ok(Ingest {
            started: std::time::Instant::now(),
            store: self.clone(),
            opts,
            sha: Some(
                BackgroundSha256::new().map_err(|e| Error::io("starting a hashing thread", e))?,
            ),
            size: 0,
            unwrap: Some(Unwrapper::new(
                crate::codec::unwrap::UnwrapConfig {
                    defer,
                    ..inner.cfg.unwrap.clone()
                },
                &inner.dir.join("ingest"),
            )),
            splitter: Splitter::new(inner.cutter.clone()),
            raw_chunker: StreamChunker::new(inner.cutter.clone()),
            sink: ChunkSink {
                inner,
                recipe: RecipeBuilder::default(),
                raw: RecipeBuilder::default(),
                to_raw: false,
                seen: HashMap::new(),
                block: BlockBuilder::default(),
                writer: Some(WriterThread {
                    tx: Some(tx),
                    handle,
                }),
                new_chunks: 0,
                reused_chunks: 0,
                prefix: PrefixKey::default(),
                follow: None,
                offered: false,
                followed_chunks: 0,
            },
            unchecked: 0,
        })
    }
}

/// Compresses and appends blocks on `COMPRESSORS` threads: block order in a
/// pack does not matter (each chunk's location is recorded), so the threads
/// only share the append.
fn write_blocks(
    writer: PackWriter,
    level: i32,
    store: Arc<Inner>,
    rx: Receiver<BlockBuilder>,
) -> WriterDone {
    let start_len = writer.len;
    let shared = Mutex::new((writer, Vec::new()));
    let rx = Mutex::new(rx);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..COMPRESSORS)
            .map(|_| s.spawn(|| compress_blocks(&rx, &shared, level, &store)))
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(Error::Internal("a compression thread panicked".into()))
                })
            })
            .collect()
    });
    let (writer, locs) = shared.into_inner();
    let result = results.into_iter().collect::<Result<Vec<()>>>().map(|_| ());
    WriterDone {
        writer,
        start_len,
        locs,
        result,
    }
}

type Located = Vec<(Hash, ChunkLoc)>;

fn compress_blocks(
    rx: &Mutex<Receiver<BlockBuilder>>,
    shared: &Mutex<(PackWriter, Located)>,
    level: i32,
    store: &Inner,
) -> Result<()> {
    let mut comp =
        zstd::bulk::Compressor::new(level).map_err(|e| Error::Internal(format!("zstd: {e}")))?;
    loop {
        let Ok(block) = rx.lock().recv() else {
            return Ok(());
        };
        let rec = pack::encode_block(&block, &mut comp)?;
        let mut g = shared.lock();
        let (writer, locs) = &mut *g;
        // Under the lock: the two threads do not both take the last room.
        let _claim = store
            .packs
            .claim(&store.dir, rec.len() as u64, store.cfg.min_free_bytes)?;
        let off = writer.append(&rec)?;
        let mut in_block = 0u32;
        for (hash, len) in block.entries {
            let loc = ChunkLoc {
                pack: writer.id,
                block_offset: off,
                block_len: rec.len() as u32,
                offset_in_block: in_block,
                len,
            };
            locs.push((hash, loc));
            in_block += len;
        }
    }
}

impl Sink for ChunkSink {
    type Error = Error;

    fn literal(&mut self, bytes: &[u8]) -> Result<()> {
        if !self.to_raw {
            self.prefix.literal(bytes);
        }
        self.recipe().literal(bytes);
        Ok(())
    }

    fn chunk(&mut self, bytes: &[u8]) -> Result<()> {
        let hash = *blake3::hash(bytes).as_bytes();
        if std::mem::take(&mut self.offered) {
            if let Some(f) = &mut self.follow {
                if f.missed() {
                    self.follow = None;
                }
            }
        }
        self.add_chunk(hash, bytes, false)
    }

    fn expected_chunk(&mut self) -> Option<(Hash, u32)> {
        if self.to_raw {
            return None;
        }
        let offset = self.recipe.size();
        let hint = self.follow.as_mut()?.chunk_at(offset);
        self.offered = hint.is_some();
        hint
    }

    fn known_chunk(&mut self, bytes: &[u8], hash: &Hash) -> Result<()> {
        self.offered = false;
        self.followed_chunks += 1;
        if let Some(f) = &mut self.follow {
            f.hit();
        }
        self.add_chunk(*hash, bytes, true)
    }
}

impl ChunkSink {
    /// Records a chunk of the stream; `in_recipe`: the recipe being followed
    /// holds it, so it is stored unless garbage collection dropped chunks
    /// since that recipe was found (see `Follow::epoch`).
    fn add_chunk(&mut self, hash: Hash, bytes: &[u8], in_recipe: bool) -> Result<()> {
        self.recipe().chunk(hash, bytes.len() as u32);
        if !self.to_raw {
            if let Some(key) = self.prefix.chunk(&hash, bytes.len() as u32) {
                // Following only saves time: a failed lookup chunks as usual.
                let store = Store {
                    inner: self.inner.clone(),
                };
                self.follow = store.follow(&key).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "looking for a stored blob to follow failed");
                    None
                });
            }
        }
        if let Some(s) = self.seen.get_mut(&hash) {
            s.refs += 1;
            self.reused_chunks += 1;
            return Ok(());
        }
        // Pin first, then look: a chunk found here cannot be collected before
        // this ingest commits or ends.
        self.inner.pin(&hash);
        // In bucket mode, while a collection has marked (or deleted) pieces,
        // a followed recipe's chunk is looked up too: its place may be one.
        let follow_vouches = in_recipe
            && self
                .follow
                .as_ref()
                .is_some_and(|f| f.epoch == self.inner.chunk_drops())
            && (self.inner.remote.is_none()
                || !Store {
                    inner: self.inner.clone(),
                }
                .any_condemned());
        let known = follow_vouches || {
            let db = &self.inner.db;
            match super::chunk_entry::location(db, &hash)? {
                None => false,
                // In a piece the bucket's collection marked, or gone: stored again.
                Some(loc) => {
                    !(self.inner.remote.is_some()
                        && Store {
                            inner: self.inner.clone(),
                        }
                        .condemned(&loc))
                }
            }
        };
        if !known {
            self.inner.unpin(&hash);
        }
        self.seen.insert(
            hash,
            Seen {
                refs: 1,
                pinned: known,
            },
        );
        if known {
            self.reused_chunks += 1;
            return Ok(());
        }
        self.new_chunks += 1;
        self.block.push(hash, bytes);
        if self.block.plain.len() >= self.inner.cfg.block_bytes {
            self.send_block()?;
        }
        Ok(())
    }
}

/// The codec stage's two output streams: the plain one goes through the
/// tar-aware splitter, the raw one is cut as plain data.
struct Bridge<'a> {
    splitter: &'a mut Splitter,
    raw_chunker: &'a mut StreamChunker,
    sink: &'a mut ChunkSink,
}

impl Streams for Bridge<'_> {
    fn plain(&mut self, b: &[u8]) -> Result<()> {
        self.sink.to_raw = false;
        self.splitter.feed(b, self.sink)
    }

    fn raw(&mut self, b: &[u8]) -> Result<()> {
        let sink = &mut *self.sink;
        sink.to_raw = true;
        let r = self.raw_chunker.push(b, &mut |c| sink.chunk(c));
        sink.to_raw = false;
        r
    }
}

impl ChunkSink {
    fn recipe(&mut self) -> &mut RecipeBuilder {
        if self.to_raw {
            &mut self.raw
        } else {
            &mut self.recipe
        }
    }

    fn send_block(&mut self) -> Result<()> {
        let block = std::mem::take(&mut self.block);
        let w = self.writer.as_ref().expect("writer running until finish");
        if w.tx
            .as_ref()
            .expect("sender open until finish")
            .send(block)
            .is_ok()
        {
            return Ok(());
        }
        // The writer stopped on an error: report it and give its pack back clean.
        let mut done = self.finish_writer()?;
        let result = std::mem::replace(&mut done.result, Ok(()));
        self.discard(done);
        Err(result
            .err()
            .unwrap_or_else(|| Error::Internal("the pack writer stopped".into())))
    }

    /// Stops the writer thread and takes back its pack.
    fn finish_writer(&mut self) -> Result<WriterDone> {
        let mut w = self
            .writer
            .take()
            .ok_or_else(|| Error::Internal("pack writer already finished".into()))?;
        drop(w.tx.take());
        w.handle
            .join()
            .map_err(|_| Error::Internal("the pack writer thread panicked".into()))
    }

    /// Cuts this ingest's bytes off the pack and returns it to the pool.
    fn discard(&self, mut done: WriterDone) {
        if let Err(e) = done.writer.truncate(done.start_len) {
            tracing::error!(error = %e, pack = done.writer.id, "could not cut an abandoned ingest off its pack; it is trimmed at the next start");
            return; // keep the pack out of the pool: its tail is not ours to append after
        }
        self.inner.packs.release(done.writer);
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if self.sink.writer.is_some() {
            if let Ok(done) = self.sink.finish_writer() {
                self.sink.discard(done);
            }
        }
        for (hash, s) in &self.sink.seen {
            if s.pinned {
                self.sink.inner.unpin(hash);
            }
        }
    }
}

impl Ingest {
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.write_bytes(Bytes::copy_from_slice(data))
    }

    /// Takes a piece of the blob without copying it.
    pub fn write_bytes(&mut self, data: Bytes) -> Result<()> {
        self.write_bytes_inner(data)
            .map_err(|e| e.nothing_stored(&self.sink.inner.dir))
    }

    fn write_bytes_inner(&mut self, data: Bytes) -> Result<()> {
        if !self.opts.background {
            self.sink.inner.convert.touch();
        }
        self.unchecked += data.len() as u64;
        if self.unchecked >= SPACE_CHECK_EVERY {
            self.unchecked = 0;
            self.sink.inner.check_room(0)?;
        }
        self.size += data.len() as u64;
        self.sha
            .as_mut()
            .expect("hasher runs until commit")
            .update(data.clone());
        let unwrap = self.unwrap.as_mut().expect("codec stage runs until commit");
        unwrap.feed(
            &data,
            &mut Bridge {
                splitter: &mut self.splitter,
                raw_chunker: &mut self.raw_chunker,
                sink: &mut self.sink,
            },
        )
    }

    pub fn bytes_received(&self) -> u64 {
        self.size
    }

    /// Sets what the commit checks and records, when known only at the end.
    pub fn set_expected(
        &mut self,
        digest: Option<Digest>,
        size: Option<u64>,
        labels: BTreeMap<String, String>,
    ) {
        self.opts.expected_digest = digest;
        self.opts.expected_size = size;
        self.opts.labels = labels;
    }

    /// Ends the push: checks what the client expected, then makes the blob
    /// durable and visible, or leaves nothing behind.
    pub fn commit(self) -> Result<PushOutcome> {
        let dir = self.sink.inner.dir.clone();
        self.commit_inner().map_err(|e| e.nothing_stored(&dir))
    }

    fn commit_inner(mut self) -> Result<PushOutcome> {
        let deferred = self.unwrap.as_ref().is_some_and(Unwrapper::deferred);
        let Finished {
            digest,
            layout,
            recipes,
            done,
            piece,
        } = self.finish()?;
        let sink = &self.sink;
        let mut new = Committing {
            digest,
            size: self.size,
            layout,
            recipes,
            seen: &sink.seen,
            chunks: done.new_chunks(piece.as_deref()),
            uploaded: None,
        };
        // The content object goes up before the commit lock too, when the
        // content looks new (if it is not, the object is garbage).
        let uploaded = match self
            .store
            .check_push_window(self.started)
            .and_then(|_| self.store.content(&digest))
        {
            Ok(None) => self.store.upload_content(&new),
            Ok(Some(_)) => Ok(None),
            Err(e) => Err(e),
        };
        let result = match uploaded {
            Ok(u) => {
                new.uploaded = u;
                self.store.commit_content(&self.opts, new, deferred)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok((mut outcome, stored_new)) => {
                if stored_new {
                    sink.inner.packs.release(done.writer);
                    self.store.evict_full_packs();
                } else {
                    sink.discard(done);
                }
                outcome.new_chunks = if stored_new { sink.new_chunks } else { 0 };
                outcome.followed_chunks = sink.followed_chunks;
                outcome.reused_chunks =
                    sink.reused_chunks + if stored_new { 0 } else { sink.new_chunks };
                tracing::info!(
                    %digest, size = self.size, layout = layout.as_str(), entries = self.splitter.entries(), kept = %outcome.kept, deferred,
                    new_chunks = outcome.new_chunks, reused = outcome.reused_chunks, followed = outcome.followed_chunks, added = outcome.bytes_added,
                    "blob committed"
                );
                Ok(outcome)
            }
            Err(e) => {
                sink.discard(done);
                Err(e)
            }
        }
    }

    /// Ends a conversion's ingest of a stored blob: swaps the blob's recipe
    /// for this one (`Store::swap_content`). False when there was nothing to
    /// swap (the blob was deleted or converted meanwhile).
    pub(super) fn commit_conversion(mut self, digest: Digest, size: u64) -> Result<bool> {
        let f = self.finish()?;
        if f.digest != digest || self.size != size {
            self.sink.discard(f.done);
            return Err(Error::DataLoss(format!(
                "{digest} reads back as {} bytes hashing to {}",
                self.size, f.digest
            )));
        }
        let mut new = Committing {
            digest,
            size: self.size,
            layout: f.layout,
            recipes: f.recipes,
            seen: &self.sink.seen,
            chunks: f.done.new_chunks(f.piece.as_deref()),
            uploaded: None,
        };
        match self
            .store
            .check_push_window(self.started)
            .and_then(|_| self.store.upload_content(&new))
        {
            Ok(u) => new.uploaded = u,
            Err(e) => {
                self.sink.discard(f.done);
                return Err(e);
            }
        }
        match self.store.swap_content(new) {
            Ok(true) => {
                self.sink.inner.packs.release(f.done.writer);
                Ok(true)
            }
            other => {
                self.sink.discard(f.done);
                other
            }
        }
    }

    /// Ends the streams, waits for the pack writer, checks what the client
    /// expected and syncs the pack; the caller commits `done` or discards it.
    fn finish(&mut self) -> Result<Finished> {
        let unwrap = self.unwrap.take().expect("codec stage runs until commit");
        let plan = unwrap.finish(&mut Bridge {
            splitter: &mut self.splitter,
            raw_chunker: &mut self.raw_chunker,
            sink: &mut self.sink,
        })?;
        self.sink.to_raw = false;
        let layout = self.splitter.finish(&mut self.sink)?;
        self.sink.to_raw = true;
        {
            let sink = &mut self.sink;
            self.raw_chunker.finish(&mut |c| sink.chunk(c))?;
        }
        self.sink.to_raw = false;
        if !self.sink.block.is_empty() {
            self.sink.send_block()?;
        }
        let mut done = self.sink.finish_writer()?;
        if let Err(e) = std::mem::replace(&mut done.result, Ok(())) {
            self.sink.discard(done);
            return Err(e);
        }
        let digest = self.sha.take().expect("hasher runs until commit").finish();
        let recipe = std::mem::take(&mut self.sink.recipe).finish();
        let raw = std::mem::take(&mut self.sink.raw).finish();
        // The commit's batch holds the recipes; below the reserve nothing is
        // written to the index (see the module doc).
        let index_bytes = recipe.stored_bytes() + raw.stored_bytes();
        let check = self
            .check_expected(&digest)
            .and_then(|_| self.sink.inner.check_room(index_bytes))
            .and_then(|_| done.writer.sync());
        if let Err(e) = check {
            self.sink.discard(done);
            return Err(e);
        }
        // Before the commit lock: the upload is the slow part, and a piece
        // no commit names is only garbage for collection.
        let piece = match self.store.upload_piece(&done) {
            Ok(p) => p,
            Err(e) => {
                self.sink.discard(done);
                return Err(e);
            }
        };
        Ok(Finished {
            digest,
            layout,
            recipes: Recipes {
                recipe,
                raw,
                plan,
                prefix: self.sink.prefix.key(),
            },
            done,
            piece,
        })
    }

    fn check_expected(&self, digest: &Digest) -> Result<()> {
        if let Some(n) = self.opts.expected_size {
            if n != self.size {
                return Err(Error::FailedPrecondition(format!(
                    "size mismatch: expected {n} bytes, received {}; nothing was stored",
                    self.size
                )));
            }
        }
        if let Some(want) = &self.opts.expected_digest {
            if want != digest {
                return Err(Error::FailedPrecondition(format!(
                    "digest mismatch: expected {want}, the bytes received hash to {digest}; nothing was stored"
                )));
            }
        }
        Ok(())
    }
}
