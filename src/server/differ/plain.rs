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

/// What the reading thread sends: bytes, then the end or an error. A
/// channel closed without either means the thread died.
enum Msg {
    Data(Vec<u8>),
    End,
    Fail(Error),
}

/// The bytes of a blob, pushed by a worker thread through a bounded channel.
struct Pieces {
    rx: Receiver<Msg>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Pieces {
    fn start(store: Store, digest: Digest, content: Content, plain: bool) -> Pieces {
        let (tx, rx) = sync_channel::<Msg>(PIECES);
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
                    Ok(tx.send(Msg::Data(p.to_vec())).is_ok())
                });
                let _ = tx.send(match r {
                    Ok(()) => Msg::End,
                    Err(e) => Msg::Fail(e),
                });
            })
            .expect("spawning a thread");
        Pieces {
            rx,
            cur: Vec::new(),
            pos: 0,
            ended: false,
        }
    }

    /// Takes the next piece onto what is left of the current one; false at
    /// the end.
    fn more(&mut self) -> std::io::Result<bool> {
        if self.ended {
            return Ok(false);
        }
        match self.rx.recv() {
            Ok(Msg::Data(p)) => {
                self.cur.drain(..self.pos);
                self.pos = 0;
                if self.cur.is_empty() {
                    self.cur = p;
                } else {
                    self.cur.extend_from_slice(&p);
                }
                Ok(true)
            }
            Ok(Msg::End) => {
                self.ended = true;
                Ok(false)
            }
            Ok(Msg::Fail(e)) => Err(std::io::Error::other(e)),
            Err(_) => Err(std::io::Error::other(Error::Internal(
                "the thread reading the layer from the store stopped".into(),
            ))),
        }
    }

    /// At least `n` next bytes (fewer only at the end), not consumed.
    fn peek(&mut self, n: usize) -> std::io::Result<&[u8]> {
        while self.cur.len() - self.pos < n.max(1) && self.more()? {}
        Ok(&self.cur[self.pos..])
    }
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let avail = self.peek(1)?;
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
                .peek(ZSTD_MAGIC.len())
                .map_err(|e| Error::io(format!("reading {digest}"), e))?;
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
