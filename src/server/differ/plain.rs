//! A stored layer's plain tar as a `Read`, hashed as it is read (the applied
//! diff_id is computed, never taken from the record). A converted gzip or zstd
//! layer streams its tar straight from the chunks, with no rebuild of the
//! compressed bytes and no decompression. A blob kept as received (one the
//! store could not convert) is decompressed here, by its magic bytes, as
//! containerd's own differ does.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::store::{Content, Store};
use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver};

/// Pieces in flight between the store's reader and the applier.
const PIECES: usize = 16;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The bytes of a blob, pushed by a worker thread through a bounded channel.
struct Pieces {
    rx: Receiver<Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Pieces {
    fn start(store: Store, digest: Digest, content: Content, plain: bool) -> Pieces {
        let (tx, rx) = sync_channel::<Result<Vec<u8>>>(PIECES);
        std::thread::Builder::new()
            .name("differ-read".into())
            .spawn(move || {
                let read = if plain {
                    Store::read_plain
                } else {
                    Store::read_range
                };
                let r = read(&store, &digest, &content, 0, 0, &mut |p| {
                    // A closed channel: the applier stopped (failed); so do we.
                    Ok(tx.send(Ok(p.to_vec())).is_ok())
                });
                if let Err(e) = r {
                    let _ = tx.send(Err(e));
                }
            })
            .expect("spawning a thread");
        Pieces {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }

    /// The next bytes, without consuming them (None at the end).
    fn peek(&mut self) -> std::io::Result<Option<&[u8]>> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(p)) => (self.cur, self.pos) = (p, 0),
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Ok(None),
            }
        }
        Ok(Some(&self.cur[self.pos..]))
    }
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(avail) = self.peek()? else {
            return Ok(0);
        };
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// The plain tar of one layer, with its sha256 and length so far.
pub struct PlainTar {
    inner: Box<dyn Read + Send>,
    /// The blob's own bytes are the tar (so the diff_id is its digest).
    pub verbatim: bool,
    hash: ring::digest::Context,
    len: u64,
}

impl PlainTar {
    pub fn open(store: &Store, digest: &Digest, content: &Content) -> Result<PlainTar> {
        let mut verbatim = false;
        let inner: Box<dyn Read + Send> = if content.wrap.is_some() {
            Box::new(Pieces::start(store.clone(), *digest, content.clone(), true))
        } else {
            let mut raw = Pieces::start(store.clone(), *digest, content.clone(), false);
            let head = raw
                .peek()
                .map_err(|e| Error::io(format!("reading {digest}"), e))?
                .unwrap_or_default();
            if head.starts_with(&GZIP_MAGIC) {
                Box::new(flate2::read::MultiGzDecoder::new(raw))
            } else if head.starts_with(&ZSTD_MAGIC) {
                Box::new(
                    zstd::stream::read::Decoder::new(raw)
                        .map_err(|e| Error::io("starting a zstd decoder", e))?,
                )
            } else {
                verbatim = true;
                Box::new(raw)
            }
        };
        Ok(PlainTar {
            inner,
            verbatim,
            hash: ring::digest::Context::new(&ring::digest::SHA256),
            len: 0,
        })
    }

    /// Reads what the applier left (the tar's end blocks and padding) and
    /// gives the diff_id and size of the whole plain stream.
    pub fn finish(mut self) -> std::io::Result<(Digest, u64)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        let d = self.hash.finish();
        let mut id = [0u8; 32];
        id.copy_from_slice(d.as_ref());
        Ok((Digest(id), self.len))
    }
}

impl Read for PlainTar {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}
