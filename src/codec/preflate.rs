//! The general deflate rebuilder: a deflate stream no replay fits is turned
//! into its plain bytes plus preflate-rs "corrections", in pieces, and the
//! exact compressed bytes are rebuilt from the same pieces in order.
//!
//! Memory stays bounded however long the stream: preflate carries only the
//! last 32 KiB of plain text and its fixed-size hash tables from one piece to
//! the next. A piece covers whole deflate blocks (preflate cannot cut inside
//! one), at most `ATTEMPT` compressed bytes' worth unless a single block is
//! bigger, and at most `MAX_PIECE_PLAIN` plain bytes. Where pieces are cut
//! depends only on the stream's bytes, never on how they were fed.
//!
//! preflate-rs's processors are not `Send` (a boxed trait object inside), so
//! each side runs them on a thread of its own; that also lets the splitter
//! work on one core while the caller decodes on the other.
//!
//! preflate-rs 0.7.6 counts plain positions in 32 bits: release builds wrap
//! harmlessly past 2 GiB but mispredict at 4 GiB, so the splitter refuses a
//! stream before its plain bytes reach 4 GiB (pieces so far still stand).
//! Where overflow checks are on (debug builds) preflate panics at 2 GiB
//! instead; that is caught and refused too.

use crate::error::{Error, Result};
use preflate_rs::{
    ExitCode, PreflateConfig, PreflateError, PreflateStreamProcessor, RecreateStreamProcessor,
};
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

/// Compressed bytes handed to preflate per call. Big enough that the partial
/// block re-parsed on the next call costs little; small enough to keep a
/// piece's plain bytes (and preflate's tokens for them) a few MiB.
const ATTEMPT: usize = 1 << 20;

/// The first call is bigger (still capped at `MAX_PIECE_PLAIN`): preflate
/// estimates the encoder's parameters from it once, for the whole stream, and
/// a sample that never reached the encoder's deepest hash chain makes a later
/// piece fail (seen with `gzip -9` on a 1 MiB sample, not on an 8 MiB one).
const FIRST_ATTEMPT: usize = 4 << 20;

/// Most plain bytes in one piece (preflate's `plain_text_limit`). One deflate
/// block must fit: zlib and GNU gzip blocks hold at most 32767 symbols, so
/// under 8.5 MB even when every symbol is a 258-byte match.
pub const MAX_PIECE_PLAIN: usize = 12 << 20;

/// A block needing more compressed bytes than this cannot decode to at most
/// `MAX_PIECE_PLAIN` (no deflate code spends more than 15 bits on a byte).
const MAX_ATTEMPT: usize = 2 * MAX_PIECE_PLAIN + ATTEMPT;

/// Plain bytes after which no piece may start: the next one could cross 4 GiB.
const MAX_STREAM_PLAIN: u64 = (1 << 32) - MAX_PIECE_PLAIN as u64 - (64 << 10);

/// Hash-chain depth preflate may replay (zlib and gzip -9 use 4096).
const MAX_CHAIN: u32 = 4096;

/// Largest message to the splitter's worker.
const MSG: usize = 256 << 10;

/// Compressed bytes the caller may have queued that the worker has not taken
/// yet: lets the caller run about one call ahead, and no further.
const IN_FLIGHT: usize = 2 << 20;

/// Finished pieces the worker may have waiting for the caller: one is enough
/// to keep both threads busy, and each may hold `MAX_PIECE_PLAIN` bytes.
const OUT_CAP: usize = 1;

/// One piece of a deflate stream, turned into plain bytes plus corrections.
#[derive(Clone, PartialEq, Eq)]
pub struct Piece {
    /// Compressed bytes the piece rebuilds to.
    pub comp_len: u64,
    /// What those bytes decode to (the pieces' plain bytes, in order, are the
    /// decoded stream).
    pub plain: Vec<u8>,
    /// What preflate needs besides `plain` to rebuild them; the first piece's
    /// also carry the encoder parameters for the whole stream.
    pub corrections: Vec<u8>,
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Piece")
            .field("comp_len", &self.comp_len)
            .field("plain_len", &self.plain.len())
            .field("corr_len", &self.corrections.len())
            .finish()
    }
}

/// A stream preflate cannot take (or a broken one): the caller keeps the
/// compressed bytes instead.
fn refused(what: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("preflate: {what}"))
}

fn preflate_error(e: &PreflateError) -> String {
    // Its message carries source locations on lines of their own.
    format!("{:?}: {}", e.exit_code(), e.message().replace('\n', " "))
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

enum SplitIn {
    Bytes(Vec<u8>),
    End,
}

enum SplitOut {
    /// The worker took a `Bytes` message of this many bytes off the queue.
    Took(usize),
    Piece(Piece),
    /// The stream ended; the bytes fed past its end.
    End(Vec<u8>),
    Failed(Error),
}

struct SplitWorker {
    handle: JoinHandle<()>,
    tx: Sender<SplitIn>,
    rx: Receiver<SplitOut>,
    /// Bytes sent and not yet taken.
    in_flight: usize,
}

/// Ingest side: takes a raw deflate stream (no gzip header) as it arrives and
/// gives back pieces.
///
/// Contract on the stream's end: deflate marks its own last block, so the
/// splitter finds the end itself and the caller never has to say where it
/// is. The caller feeds from the first byte of the deflate body on, may feed
/// past the end (the gzip trailer), and calls `finish` once it has fed
/// through the end (its own inflater tells it when) or its input is over.
/// `finish` fails if the stream did not end within the bytes fed; bytes past
/// the end are in no piece, so the pieces' `comp_len` add up to the stream's
/// exact length, and `finish_with` hands those bytes back. Bytes fed past the
/// end are held until then: feed only the trailer past it.
///
/// Any error means preflate cannot represent this stream (or it is broken):
/// keep the compressed bytes. Pieces already given still rebuild their own
/// bytes. After an error every call fails.
pub struct PreflateSplitter {
    worker: Option<SplitWorker>,
    failed: Option<String>,
}

impl Default for PreflateSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl PreflateSplitter {
    /// Cheap: the worker thread starts with the first bytes.
    pub fn new() -> Self {
        PreflateSplitter {
            worker: None,
            failed: None,
        }
    }

    /// Takes more compressed bytes; returns the pieces finished so far, in
    /// order (more may come from later calls: the work is on another thread).
    /// All the returned pieces are in memory at once; `feed_with` hands them
    /// over one by one, which bounds memory even where a little compressed
    /// input expands to gigabytes (runs of zeros).
    pub fn feed(&mut self, comp: &[u8]) -> Result<Vec<Piece>> {
        let mut pieces = Vec::new();
        self.feed_with(comp, &mut |p| {
            pieces.push(p);
            Ok(())
        })?;
        Ok(pieces)
    }

    /// As `feed`, handing each finished piece to `on_piece` as it comes. Blocks
    /// while the worker is `IN_FLIGHT` bytes behind (back-pressure).
    pub fn feed_with(
        &mut self,
        comp: &[u8],
        on_piece: &mut dyn FnMut(Piece) -> Result<()>,
    ) -> Result<()> {
        self.check()?;
        for part in comp.chunks(MSG) {
            self.wait(on_piece, |w| w.in_flight + part.len() <= IN_FLIGHT)?;
            let w = self.worker()?;
            if w.tx.send(SplitIn::Bytes(part.to_vec())).is_err() {
                return Err(self.ended());
            }
            w.in_flight += part.len();
        }
        // Whatever is ready without waiting.
        while let Some(w) = &self.worker {
            match w.rx.try_recv() {
                // The worker only says End after `SplitIn::End`.
                Ok(m) => {
                    if self.handle(m, on_piece)?.is_some() {
                        return Err(self.fail(Error::Internal("preflate ended unasked".into())));
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(self.fail(Error::Internal("preflate worker ended".into())))
                }
            }
        }
        Ok(())
    }

    /// No more input: returns the last pieces. Fails if the deflate stream
    /// did not end within the bytes fed. Bytes fed past its end are dropped
    /// (`finish_with` returns them).
    pub fn finish(self) -> Result<Vec<Piece>> {
        let mut pieces = Vec::new();
        self.finish_with(&mut |p| {
            pieces.push(p);
            Ok(())
        })?;
        Ok(pieces)
    }

    /// As `finish`, handing each piece to `on_piece`; returns the bytes fed
    /// past the stream's end.
    pub fn finish_with(mut self, on_piece: &mut dyn FnMut(Piece) -> Result<()>) -> Result<Vec<u8>> {
        self.check()?;
        let w = self.worker()?;
        if w.tx.send(SplitIn::End).is_err() {
            return Err(self.ended());
        }
        loop {
            let Some(w) = &self.worker else {
                return Err(Error::Internal("preflate worker gone".into()));
            };
            let m = match w.rx.recv() {
                Ok(m) => m,
                Err(_) => return Err(self.fail(Error::Internal("preflate worker ended".into()))),
            };
            if let Some(rest) = self.handle(m, on_piece)? {
                if let Some(w) = self.worker.take() {
                    // It has nothing left to do; a panic there was caught.
                    let _ = w.handle.join();
                }
                return Ok(rest);
            }
        }
    }

    fn check(&self) -> Result<()> {
        match &self.failed {
            Some(m) => Err(refused(format!("failed earlier: {m}"))),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        self.failed = Some(e.to_string());
        // Dropping the channels ends the worker.
        self.worker = None;
        e
    }

    /// The worker stopped taking input: it failed, and said why last.
    fn ended(&mut self) -> Error {
        let mut why = Error::Internal("preflate worker ended".into());
        if let Some(w) = &self.worker {
            while let Ok(m) = w.rx.try_recv() {
                if let SplitOut::Failed(e) = m {
                    why = e;
                }
            }
        }
        self.fail(why)
    }

    fn worker(&mut self) -> Result<&mut SplitWorker> {
        if self.worker.is_none() {
            let (tx, in_rx) = mpsc::channel();
            // Bounded: a worker ahead of its caller waits instead of piling up
            // plain bytes.
            let (out_tx, rx) = mpsc::sync_channel(OUT_CAP);
            let handle = std::thread::Builder::new()
                .name("strata-preflate".into())
                .spawn(move || split_worker(in_rx, out_tx))
                .map_err(|e| Error::io("starting a preflate thread", e))?;
            self.worker = Some(SplitWorker {
                handle,
                tx,
                rx,
                in_flight: 0,
            });
        }
        match self.worker.as_mut() {
            Some(w) => Ok(w),
            None => Err(Error::Internal("preflate worker gone".into())),
        }
    }

    /// Receives until `ready` holds, handing pieces on meanwhile. The wait
    /// cannot deadlock: the caller only waits here for `Took`, which the
    /// worker sends as soon as it reads the queue, and the worker only waits
    /// on its output, which this drains.
    fn wait(
        &mut self,
        on_piece: &mut dyn FnMut(Piece) -> Result<()>,
        ready: impl Fn(&SplitWorker) -> bool,
    ) -> Result<()> {
        loop {
            let Some(w) = &self.worker else {
                return Ok(());
            };
            if ready(w) {
                return Ok(());
            }
            let m = match w.rx.recv() {
                Ok(m) => m,
                Err(_) => return Err(self.fail(Error::Internal("preflate worker ended".into()))),
            };
            if self.handle(m, on_piece)?.is_some() {
                return Err(self.fail(Error::Internal("preflate ended unasked".into())));
            }
        }
    }

    /// One message from the worker; `Some(rest)` at the stream's end.
    fn handle(
        &mut self,
        m: SplitOut,
        on_piece: &mut dyn FnMut(Piece) -> Result<()>,
    ) -> Result<Option<Vec<u8>>> {
        match m {
            SplitOut::Took(n) => {
                if let Some(w) = &mut self.worker {
                    w.in_flight -= n;
                }
                Ok(None)
            }
            SplitOut::Piece(p) => match on_piece(p) {
                Ok(()) => Ok(None),
                Err(e) => Err(self.fail(e)),
            },
            SplitOut::End(rest) => Ok(Some(rest)),
            SplitOut::Failed(e) => Err(self.fail(e)),
        }
    }
}

/// Splitter state on the worker thread.
struct Splitting {
    proc: PreflateStreamProcessor,
    /// Compressed bytes not yet in a piece (after the end: bytes past it).
    buf: Vec<u8>,
    /// How many of `buf` the next call gets: grows past `ATTEMPT` only while a
    /// single block does not fit.
    attempt: usize,
    done: bool,
    /// Plain bytes in the pieces so far.
    plain_total: u64,
}

impl Splitting {
    fn new() -> Self {
        Splitting {
            proc: PreflateStreamProcessor::new(&PreflateConfig {
                max_chain_length: MAX_CHAIN,
                plain_text_limit: MAX_PIECE_PLAIN,
                // Every piece is rebuilt and compared before it is given out:
                // a stream that would not rebuild exactly must never be stored.
                verify_compression: true,
            }),
            buf: Vec::new(),
            attempt: FIRST_ATTEMPT,
            done: false,
            plain_total: 0,
        }
    }

    /// Turns buffered bytes into pieces. Before the last input, only when
    /// `attempt` bytes are buffered, so cuts do not depend on how the input
    /// was fed.
    fn run(&mut self, last: bool, emit: &mut dyn FnMut(Piece) -> bool) -> Result<()> {
        while !self.done && !self.buf.is_empty() && (last || self.buf.len() >= self.attempt) {
            if self.plain_total > MAX_STREAM_PLAIN {
                return Err(refused(
                    "plain bytes past 4 GiB (preflate-rs counts positions in 32 bits)",
                ));
            }
            let n = self.buf.len().min(self.attempt);
            let proc = &mut self.proc;
            let input = &self.buf[..n];
            let r = match catch_unwind(AssertUnwindSafe(|| proc.decompress(input))) {
                Ok(r) => r,
                Err(p) => return Err(refused(format!("panicked: {}", panic_text(p.as_ref())))),
            };
            match r {
                Ok(chunk) => {
                    let used = chunk.compressed_size;
                    if used == 0 || used > n {
                        return Err(refused(format!("{used} of {n} bytes taken")));
                    }
                    let piece = Piece {
                        comp_len: used as u64,
                        plain: self.proc.plain_text().text().to_vec(),
                        corrections: chunk.corrections,
                    };
                    // Keep only the 32 KiB window the next piece may refer to.
                    self.proc.shrink_to_dictionary();
                    self.plain_total += piece.plain.len() as u64;
                    self.buf.drain(..used);
                    self.attempt = ATTEMPT;
                    self.done = self.proc.is_done();
                    if !emit(piece) {
                        return Err(Error::Cancelled("preflate splitter dropped".into()));
                    }
                }
                // No whole block within the bytes given: wait for more.
                Err(e) if e.exit_code() == ExitCode::ShortRead => {
                    if last && n == self.buf.len() {
                        return Err(refused("the deflate stream is cut short"));
                    }
                    self.attempt = n + ATTEMPT;
                    if self.attempt > MAX_ATTEMPT {
                        return Err(refused(format!(
                            "a deflate block is over {} compressed bytes",
                            MAX_ATTEMPT - ATTEMPT
                        )));
                    }
                }
                Err(e) => return Err(refused(preflate_error(&e))),
            }
        }
        if last && !self.done {
            return Err(refused("the deflate stream is cut short"));
        }
        Ok(())
    }
}

fn split_worker(rx: Receiver<SplitIn>, tx: SyncSender<SplitOut>) {
    let mut s = Splitting::new();
    let mut emit = |p| tx.send(SplitOut::Piece(p)).is_ok();
    // The caller dropping its end stops the work (it gave up on preflate).
    while let Ok(m) = rx.recv() {
        let last = match m {
            SplitIn::Bytes(b) => {
                if tx.send(SplitOut::Took(b.len())).is_err() {
                    return;
                }
                s.buf.extend_from_slice(&b);
                false
            }
            SplitIn::End => true,
        };
        match s.run(last, &mut emit) {
            Err(e) => {
                let _ = tx.send(SplitOut::Failed(e));
                return;
            }
            Ok(()) if last => {
                let _ = tx.send(SplitOut::End(std::mem::take(&mut s.buf)));
                return;
            }
            Ok(()) => {}
        }
    }
}

struct RebuildWorker {
    tx: SyncSender<(Vec<u8>, Vec<u8>)>,
    rx: Receiver<Result<Vec<u8>>>,
}

/// Read side: rebuilds the exact deflate bytes from a splitter's pieces,
/// given in order, each exactly once, from the stream's first piece on (a
/// piece depends on the state the ones before it left).
///
/// Corrections carry no checksum: corrupted ones are mostly refused, but can
/// also rebuild to other bytes. Check each piece's output length against its
/// `comp_len`, and keep stored corrections under the store's checksums.
pub struct PreflateRebuilder {
    worker: Option<RebuildWorker>,
    failed: bool,
}

impl Default for PreflateRebuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PreflateRebuilder {
    /// Cheap: the worker thread starts with the first piece.
    pub fn new() -> Self {
        PreflateRebuilder {
            worker: None,
            failed: false,
        }
    }

    /// Appends the compressed bytes of the next piece (its `comp_len` bytes)
    /// to `out`. After an error every call fails.
    pub fn piece(&mut self, plain: &[u8], corrections: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.failed {
            return Err(Error::DataLoss("preflate rebuild failed earlier".into()));
        }
        let r = self.rebuild(plain, corrections);
        match r {
            Ok(mut bytes) => {
                out.append(&mut bytes);
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                self.worker = None;
                Err(e)
            }
        }
    }

    fn rebuild(&mut self, plain: &[u8], corrections: &[u8]) -> Result<Vec<u8>> {
        if self.worker.is_none() {
            let (tx, in_rx) = mpsc::sync_channel(1);
            let (out_tx, rx) = mpsc::sync_channel(1);
            std::thread::Builder::new()
                .name("strata-preflate-rebuild".into())
                .spawn(move || rebuild_worker(in_rx, out_tx))
                .map_err(|e| Error::io("starting a preflate thread", e))?;
            self.worker = Some(RebuildWorker { tx, rx });
        }
        let Some(w) = &self.worker else {
            return Err(Error::Internal("preflate worker gone".into()));
        };
        let gone = || Error::Internal("preflate rebuild worker ended".into());
        w.tx.send((plain.to_vec(), corrections.to_vec()))
            .map_err(|_| gone())?;
        w.rx.recv().map_err(|_| gone())?
    }
}

fn rebuild_worker(rx: Receiver<(Vec<u8>, Vec<u8>)>, tx: SyncSender<Result<Vec<u8>>>) {
    let mut proc = RecreateStreamProcessor::new();
    while let Ok((plain, corrections)) = rx.recv() {
        let r = catch_unwind(AssertUnwindSafe(|| {
            proc.recompress(&mut Cursor::new(&plain), &corrections)
        }));
        let (r, stop) = match r {
            Ok(Ok((bytes, _blocks))) => (Ok(bytes), false),
            Ok(Err(e)) => (
                Err(Error::DataLoss(format!(
                    "preflate rebuild: {}",
                    preflate_error(&e)
                ))),
                true,
            ),
            Err(p) => (
                Err(Error::DataLoss(format!(
                    "preflate rebuild panicked: {}",
                    panic_text(p.as_ref())
                ))),
                true,
            ),
        };
        if tx.send(r).is_err() || stop {
            return;
        }
    }
}
