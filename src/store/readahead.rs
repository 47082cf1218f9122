//! Paused rebuilds of compressed blobs, and rebuilding ahead of the reader.
//!
//! containerd reads a blob in 32 KiB windows, one request after another, and
//! each window of a replayed blob needs its encoder to run. Rather than sit
//! idle while containerd handles a window, the daemon goes on rebuilding up
//! to `AHEAD` bytes past it on another thread (the encoder's own work runs on
//! the rebuild pool for pgzip), and the next windows are copied from what it
//! made, on the request's own thread.
//!
//! A paused rebuild (`Held`) is its cursor, locked by whoever runs the
//! encoder (the filler, or a reader that needs more than was made), and the
//! output taken from the cursor ahead of readers, locked only to copy. A
//! reader that needs the cursor takes the whole `Held` out of the list; the
//! filler works only while it is listed.

use super::index::Content;
use super::read::StoreSource;
use super::Store;
use crate::codec::plan::Plan;
use crate::codec::rebuild::{self, Cursor, Out};
use crate::digest::Digest;
use crate::error::Result;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Paused rebuilds kept for readers that come back for the next range.
const CURSORS: usize = 4;

/// Output made ahead of a reader, at most.
const AHEAD: usize = 4 << 20;

/// What the filler takes from the cursor per step.
const STEP: usize = 256 << 10;

/// A paused rebuild.
pub struct Held {
    plan: Arc<Plan>,
    cur: Mutex<Cursor>,
    made: Mutex<Made>,
    filling: AtomicBool,
}

/// Bytes `[pos, pos + ready)` of the blob, taken from the cursor (which is
/// therefore at their end) but not yet read.
struct Made {
    pos: u64,
    buf: Vec<u8>,
    head: usize,
}

impl Made {
    fn ready(&self) -> usize {
        self.buf.len() - self.head
    }

    fn end(&self) -> u64 {
        self.pos + self.ready() as u64
    }

    /// Writes `[from, to)` (within what is made) and drops what lies before `to`.
    fn serve(&mut self, from: u64, to: u64, out: &mut Out) -> Result<bool> {
        let a = self.head + (from - self.pos) as usize;
        let b = self.head + (to - self.pos) as usize;
        let more = out(&self.buf[a..b])?;
        self.head = b;
        self.pos = to;
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        }
        Ok(more)
    }

    fn push(&mut self, b: &[u8]) {
        if self.head > 0 && self.head * 2 >= self.buf.len() {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.extend_from_slice(b);
    }
}

pub type Slot = (Digest, Arc<Held>);

impl Held {
    fn new(cur: Cursor) -> Held {
        let pos = cur.pos();
        Held {
            plan: cur.plan().clone(),
            cur: Mutex::new(cur),
            made: Mutex::new(Made {
                pos,
                buf: Vec::new(),
                head: 0,
            }),
            filling: AtomicBool::new(false),
        }
    }

    /// Where the next unread byte is.
    fn pos(&self) -> u64 {
        self.made.lock().pos
    }

    /// Streams `[from, to)`: what was made ahead, then from the cursor.
    /// `from` is at or after `pos()`.
    pub fn read(&self, src: &mut StoreSource, from: u64, to: u64, out: &mut Out) -> Result<()> {
        // The cursor first: a filler step in progress finishes before we look.
        let mut cur = self.cur.lock();
        let mut made = self.made.lock();
        let mut at = from;
        if at < made.end() {
            let upto = to.min(made.end());
            if !made.serve(at, upto, out)? {
                return Ok(());
            }
            at = upto;
        } else {
            made.buf.clear();
            made.head = 0;
        }
        if at < to {
            // All that was made is read: the cursor is where `made` ends.
            rebuild::rebuild(&mut cur, src, at, to, out)?;
            made.pos = cur.pos();
        }
        Ok(())
    }
}

impl Store {
    /// Forgets every paused rebuild: fillers stop after their current step
    /// (at shutdown, so they do not hold the store open).
    pub fn drop_cursors(&self) {
        self.inner.cursors.lock().clear();
    }

    /// Forgets every paused rebuild and waits, up to `within`, until no
    /// filler holds the store any more; true when none does. For a process
    /// about to exit with this as its only handle: RocksDB must not be in use
    /// while the process's static objects are destroyed.
    pub fn settle(&self, within: std::time::Duration) -> bool {
        self.drop_cursors();
        let deadline = std::time::Instant::now() + within;
        while self.handles() > 1 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        true
    }

    /// The paused rebuild of this blob nearest before `offset`, taken out of
    /// the list, or a new one.
    pub(super) fn take_cursor(&self, digest: &Digest, plan: &Arc<Plan>, offset: u64) -> Arc<Held> {
        let mut cs = self.inner.cursors.lock();
        let best = cs
            .iter()
            .enumerate()
            .filter(|(_, (d, h))| d == digest && Arc::ptr_eq(&h.plan, plan))
            .map(|(i, (_, h))| (i, h.pos()))
            .filter(|&(_, pos)| pos <= offset)
            .max_by_key(|&(_, pos)| pos)
            .map(|(i, _)| i);
        match best {
            Some(i) => cs.remove(i).1,
            None => Arc::new(Held::new(Cursor::new(plan.clone()))),
        }
    }

    /// Puts a paused rebuild back for the next reader and starts filling it.
    pub(super) fn put_cursor(&self, digest: Digest, held: Arc<Held>, content: &Content) {
        {
            let mut cs = self.inner.cursors.lock();
            if cs.len() >= CURSORS {
                cs.remove(0);
            }
            cs.push((digest, held.clone()));
        }
        self.fill_ahead(digest, held, content);
    }

    /// Starts a filler unless one runs, enough is made, or the cursor is in
    /// a part that costs nothing to read (stored bytes, literals).
    fn fill_ahead(&self, digest: Digest, held: Arc<Held>, content: &Content) {
        if held.filling.load(Ordering::Acquire)
            || held.made.lock().ready() >= AHEAD / 2
            || !held.cur.lock().encodes_ahead()
        {
            return;
        }
        if held.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        let content = content.clone();
        let spawned = std::thread::Builder::new()
            .name("strata-readahead".into())
            .spawn({
                let held = held.clone();
                move || {
                    store.fill(&digest, &content, &held);
                    held.filling.store(false, Ordering::Release);
                }
            });
        if spawned.is_err() {
            held.filling.store(false, Ordering::Release);
        }
    }

    fn fill(&self, digest: &Digest, content: &Content, held: &Arc<Held>) {
        let mut src = StoreSource::new(self, digest, content);
        loop {
            // Taken by a reader (who starts a filler again when done),
            // dropped from the list, or far enough ahead.
            let listed = self
                .inner
                .cursors
                .lock()
                .iter()
                .any(|(_, h)| Arc::ptr_eq(h, held));
            if !listed || held.made.lock().ready() >= AHEAD {
                return;
            }
            let mut cur = held.cur.lock();
            if !cur.encodes_ahead() {
                return;
            }
            // An error shows again, to the reader, when it gets there.
            let Ok(Some(b)) = cur.next(&mut src, STEP) else {
                return;
            };
            let mut made = held.made.lock();
            made.push(&b);
            debug_assert_eq!(made.end(), cur.pos());
        }
    }

    /// Serves `[offset, end)` of a compressed blob from output made ahead,
    /// when a paused rebuild holds all of it; false (nothing written) if not.
    pub(super) fn read_made(
        &self,
        digest: &Digest,
        content: &Content,
        offset: u64,
        end: u64,
        out: &mut Out,
    ) -> Result<bool> {
        let found = {
            let cs = self.inner.cursors.lock();
            cs.iter()
                .filter(|(d, _)| d == digest)
                .map(|(_, h)| h.clone())
                .find(|h| {
                    let m = h.made.lock();
                    m.pos <= offset && end <= m.end()
                })
        };
        let Some(held) = found else {
            return Ok(false);
        };
        {
            let mut made = held.made.lock();
            if !(made.pos <= offset && end <= made.end()) {
                return Ok(false);
            }
            made.serve(offset, end, out)?;
        }
        self.fill_ahead(*digest, held, content);
        Ok(true)
    }
}
