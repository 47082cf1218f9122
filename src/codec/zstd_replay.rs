//! Replay of libzstd: rebuilds a zstd frame bit for bit by compressing its
//! plain bytes again with the system libzstd and the parameters its producer
//! used.
//!
//! What decides the bytes, besides the level and the header flags (all found
//! by experiment against Debian's `zstd` 1.5.4 and the `zstd` crate):
//! - whether the producer knew the size before the first byte (`zstd FILE`,
//!   one-shot APIs) or not (`zstd < FILE`, pipes, streaming writers): a known
//!   size shrinks the parameters for small inputs and goes in the header;
//! - the engine: the CLI compresses with one worker thread by default
//!   (`-T1`; `-T0` and `-T#` give the same bytes), which cuts the input into
//!   jobs of `4 * window` (at least 1 MiB) that are compressed independently;
//!   `--single-thread`, the `zstd` crate's `Encoder` and most libraries use
//!   one streaming context, whose ring buffer wraps after `window + 128 KiB`;
//!   one-shot calls (`zstd::bulk`, `ZSTD_compress2`) see the whole input at
//!   once. All three agree until the first wrap or job boundary.
//! - how the input ends: the CLI hands its last read over with `ZSTD_e_end`
//!   when it knows the size, and an empty `ZSTD_e_end` call after the data
//!   when reading a pipe. That only shows when the size is a multiple of
//!   128 KiB (single thread) or of the job size (workers): an empty last
//!   block instead of a last flag on the final block.
//!
//! Multi-threaded frames would only show their first bytes once a whole job
//! was in (up to 32 MiB at level 19), too late for the caller's probe. So the
//! first job is compressed here on the calling thread, block by block, with
//! the buffer-less API over one contiguous buffer, which is what a worker does
//! with it; from the second job on, libzstd's own multi-threaded engine takes
//! over (nothing outside libzstd can start a job the way it does: it clears
//! the repeat offsets with a function the shared library does not export).
//! It compresses the first job again, and its bytes are checked against the
//! ones already handed out.

use std::ptr::NonNull;

use zstd_safe::{CParameter, InBuffer, OutBuffer};
use zstd_sys::{ZSTD_EndDirective, ZSTD_compressionParameters, ZSTD_parameters};

use crate::codec::Reencoder;
use crate::error::{Error, Result};

const MAGIC: u32 = 0xFD2F_B528;
/// libzstd's largest block, and the size of the CLI's reads.
const BLOCK: usize = 128 << 10;
/// libzstd compresses frames of a known size up to this on the calling
/// thread, even with workers (`ZSTDMT_JOBSIZE_MIN`).
const MT_MIN: u64 = 512 << 10;
/// Largest whole frame kept in memory to replay a one-shot compression.
pub const ONESHOT_MAX: u64 = 256 << 20;
/// Format version of `ZstdParams::encode`.
const VERSION: u8 = 1;

/// What a zstd frame header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub header_len: usize,
    pub single_segment: bool,
    pub checksum: bool,
    pub dict_id: Option<u32>,
    pub content_size: Option<u64>,
    pub window_size: u64,
}

/// Parses a zstd frame header. `None`: more bytes are needed; `Err`: not a
/// zstd frame header (skippable frames included).
pub fn parse_frame_header(b: &[u8]) -> Option<Result<FrameHeader, ()>> {
    if b.len() < 5 {
        // Reject a wrong magic as soon as it shows.
        let n = b.len().min(4);
        return if b[..n] == MAGIC.to_le_bytes()[..n] {
            None
        } else {
            Some(Err(()))
        };
    }
    if u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != MAGIC {
        return Some(Err(()));
    }
    let fhd = b[4];
    if fhd & 0x08 != 0 {
        // Reserved bit: a decoder must refuse the frame.
        return Some(Err(()));
    }
    let single_segment = fhd & 0x20 != 0;
    let checksum = fhd & 0x04 != 0;
    let did_len = [0, 1, 2, 4][(fhd & 3) as usize];
    let fcs_len = match fhd >> 6 {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let wd_len = usize::from(!single_segment);
    let header_len = 5 + wd_len + did_len + fcs_len;
    if b.len() < header_len {
        return None;
    }
    let mut pos = 5;
    let window = if single_segment {
        None
    } else {
        let wd = b[pos];
        pos += 1;
        let log = 10 + u32::from(wd >> 3);
        let base = 1u64 << log;
        Some(base + (base / 8) * u64::from(wd & 7))
    };
    let le = |s: &[u8]| s.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x));
    let dict_id = (did_len > 0).then(|| le(&b[pos..pos + did_len]) as u32);
    pos += did_len;
    let content_size = (fcs_len > 0).then(|| {
        let v = le(&b[pos..pos + fcs_len]);
        // The two-byte field is offset by 256 (smaller sizes take one byte).
        if fcs_len == 2 {
            v + 256
        } else {
            v
        }
    });
    let window_size = match (window, content_size) {
        (Some(w), _) => w,
        (None, Some(n)) => n,
        (None, None) => return Some(Err(())),
    };
    Some(Ok(FrameHeader {
        header_len,
        single_segment,
        checksum,
        dict_id,
        content_size,
        window_size,
    }))
}

/// What the producer told libzstd about the frame's size before its first
/// byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrcSize {
    /// Nothing: streamed from a pipe or a writer.
    Unknown,
    /// The exact size (`zstd FILE`, one-shot calls).
    Pledged(u64),
    /// The size was known but not written (`--no-content-size`): only the
    /// header's window tells its power of two, and that is all the
    /// parameters depend on, given here as libzstd's size hint.
    Hint(u64),
}

/// How the frame was compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// One streaming context (`--single-thread`, `zstd::stream::Encoder`).
    Stream,
    /// libzstd's worker threads (the CLI's default `-T1`, and `-T#`): the
    /// bytes do not depend on the number of workers.
    Workers,
    /// The whole input at once (`zstd::bulk`, `ZSTD_compress2`).
    OneShot,
}

/// Everything that decides the bytes of a frame made by libzstd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ZstdParams {
    pub level: i32,
    pub checksum: bool,
    /// Write the size in the header when it is pledged (libzstd's default;
    /// cleared by `--no-content-size`).
    pub content_size: bool,
    pub size: SrcSize,
    pub engine: Engine,
    /// The last bytes come with the end of the frame (the CLI given a file,
    /// one-shot calls), rather than in an empty last call (pipes, writers).
    pub end_with_data: bool,
    /// Long distance matching (`--long[=wlog]`): its window log, 0 for
    /// libzstd's default (27).
    pub long: Option<u8>,
    /// `ZSTD_versionNumber()` of the library that matched: another version
    /// may compress differently.
    pub libzstd: u32,
}

fn data_loss(what: &str) -> Error {
    Error::DataLoss(format!("zstd replay parameters: {what}"))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let x = *b.get(*pos).ok_or_else(|| data_loss("truncated"))?;
        *pos += 1;
        v |= u64::from(x & 0x7f)
            .checked_shl(shift)
            .filter(|s| s >> shift == u64::from(x & 0x7f))
            .ok_or_else(|| data_loss("varint overflow"))?;
        if x & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(data_loss("varint too long"))
}

impl ZstdParams {
    /// Compact bytes for the on-disk record: a version byte, a flag byte,
    /// the level (zigzag varint), the size if any (varint), the long window
    /// log if any, and the libzstd version (varint).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (size_kind, size) = match self.size {
            SrcSize::Unknown => (0u8, None),
            SrcSize::Pledged(n) => (1, Some(n)),
            SrcSize::Hint(n) => (2, Some(n)),
        };
        let engine = match self.engine {
            Engine::Stream => 0u8,
            Engine::Workers => 1,
            Engine::OneShot => 2,
        };
        out.push(VERSION);
        out.push(
            u8::from(self.checksum)
                | u8::from(self.content_size) << 1
                | u8::from(self.end_with_data) << 2
                | engine << 3
                | size_kind << 5
                | u8::from(self.long.is_some()) << 7,
        );
        put_varint(out, ((self.level << 1) ^ (self.level >> 31)) as u32 as u64);
        if let Some(n) = size {
            put_varint(out, n);
        }
        if let Some(w) = self.long {
            out.push(w);
        }
        put_varint(out, u64::from(self.libzstd));
    }

    /// The parameters `encode` wrote, and how many bytes they took.
    pub fn decode(b: &[u8]) -> Result<(Self, usize)> {
        if b.first() != Some(&VERSION) {
            return Err(data_loss("unknown version"));
        }
        let flags = *b.get(1).ok_or_else(|| data_loss("truncated"))?;
        let mut pos = 2;
        let z = get_varint(b, &mut pos)?;
        let z = u32::try_from(z).map_err(|_| data_loss("level out of range"))?;
        let level = ((z >> 1) as i32) ^ -((z & 1) as i32);
        if !(zstd_safe::min_c_level()..=zstd_safe::max_c_level()).contains(&level) {
            return Err(data_loss("level out of range"));
        }
        let engine = match (flags >> 3) & 3 {
            0 => Engine::Stream,
            1 => Engine::Workers,
            2 => Engine::OneShot,
            _ => return Err(data_loss("unknown engine")),
        };
        let size = match (flags >> 5) & 3 {
            0 => SrcSize::Unknown,
            1 => SrcSize::Pledged(get_varint(b, &mut pos)?),
            2 => SrcSize::Hint(get_varint(b, &mut pos)?),
            _ => return Err(data_loss("unknown size kind")),
        };
        let long = if flags & 0x80 != 0 {
            let w = *b.get(pos).ok_or_else(|| data_loss("truncated"))?;
            pos += 1;
            if w != 0 && !(10..=31).contains(&w) {
                return Err(data_loss("long window log out of range"));
            }
            Some(w)
        } else {
            None
        };
        let libzstd = u32::try_from(get_varint(b, &mut pos)?)
            .map_err(|_| data_loss("library version out of range"))?;
        let p = ZstdParams {
            level,
            checksum: flags & 1 != 0,
            content_size: flags & 2 != 0,
            end_with_data: flags & 4 != 0,
            engine,
            size,
            long,
            libzstd,
        };
        if p.engine == Engine::OneShot && !matches!(p.size, SrcSize::Pledged(_)) {
            return Err(data_loss("one-shot without a size"));
        }
        Ok((p, pos))
    }

    /// What users see: "zstd-3", "zstd-19-nocheck", "zstd-3-st-stream".
    pub fn name(&self) -> String {
        let mut s = if self.level < 0 {
            format!("zstd-fast{}", -self.level)
        } else {
            format!("zstd-{}", self.level)
        };
        if let Some(w) = self.long {
            s += &if w == 0 {
                "-long".to_string()
            } else {
                format!("-long{w}")
            };
        }
        if !self.checksum {
            s += "-nocheck";
        }
        match self.engine {
            Engine::Workers => {}
            Engine::Stream => s += "-st",
            Engine::OneShot => s += "-oneshot",
        }
        match self.size {
            SrcSize::Unknown => s += "-stream",
            SrcSize::Pledged(_) if !self.content_size => s += "-nosize",
            SrcSize::Pledged(_) => {}
            SrcSize::Hint(_) => s += "-nosize",
        }
        if self.end_with_data != matches!(self.size, SrcSize::Pledged(_) | SrcSize::Hint(_)) {
            s += if self.end_with_data {
                "-endwithdata"
            } else {
                "-emptyend"
            };
        }
        s
    }

    /// The compression parameters libzstd derives (`ZSTD_getCParams`, then
    /// the long-mode window as `ZSTD_getCParamsFromCCtxParams` applies it).
    fn cparams(&self) -> ZSTD_compressionParameters {
        let size = match self.size {
            SrcSize::Unknown => 0, // "unknown" to the public calls
            SrcSize::Pledged(n) | SrcSize::Hint(n) => n,
        };
        // Safety: pure functions of their arguments.
        unsafe {
            let mut cp = zstd_sys::ZSTD_getCParams(self.level, size, 0);
            if let Some(w) = self.long {
                cp.windowLog = if w == 0 { 27 } else { u32::from(w) };
                cp = zstd_sys::ZSTD_adjustCParams(cp, size, 0);
            }
            cp
        }
    }

    /// Size of the jobs the worker threads get (`ZSTDMT_computeTargetJobLog`).
    fn job_size(&self) -> usize {
        let cp = self.cparams();
        let log = if self.long.is_some() {
            let bt = cp.strategy as u32 >= zstd_sys::ZSTD_strategy::ZSTD_btlazy2 as u32;
            21.max(cp.chainLog - u32::from(bt) + 3)
        } else {
            20.max(cp.windowLog + 2)
        };
        1usize << log.min(30)
    }

    /// The header these parameters write, as far as it is known before the
    /// data: (single segment, window size when not single segment).
    fn header_shape(&self) -> (bool, u64) {
        let w = 1u64 << self.cparams().windowLog;
        match self.size {
            SrcSize::Pledged(n) if self.content_size && w >= n => (true, n),
            _ => (false, w),
        }
    }

    fn fits(&self, h: &FrameHeader) -> bool {
        let fcs = match self.size {
            SrcSize::Pledged(n) if self.content_size => Some(n),
            _ => None,
        };
        let (single, window) = self.header_shape();
        fcs == h.content_size
            && self.checksum == h.checksum
            && h.dict_id.is_none()
            && single == h.single_segment
            && window == h.window_size
    }

    /// Whether the re-encoder's first bytes only come once a whole job is
    /// in: long mode with workers, which is not emulated.
    pub fn blind(&self) -> bool {
        self.engine == Engine::Workers
            && self.long.is_some()
            && !matches!(self.size, SrcSize::Pledged(n) if n <= MT_MIN)
    }

    /// Upper bound on the plain bytes the re-encoder may take before its
    /// output catches up with them: libzstd's workers hold a whole job.
    pub fn max_lag(&self) -> u64 {
        match self.engine {
            Engine::Workers => 2 * self.job_size() as u64 + 2 * BLOCK as u64,
            _ => 2 * BLOCK as u64,
        }
    }

    pub fn reencoder(&self) -> Result<Box<dyn Reencoder>> {
        let frame_size = match self.size {
            SrcSize::Pledged(n) => Some(n),
            _ => None,
        };
        let inner = match self.engine {
            Engine::OneShot => {
                let n = frame_size.ok_or_else(|| data_loss("one-shot without a size"))?;
                if n > ONESHOT_MAX {
                    return Err(Error::ResourceExhausted(format!(
                        "zstd one-shot replay of {n} bytes: more than {ONESHOT_MAX} in memory"
                    )));
                }
                Inner::Blocks(Blocks::new(self, n as usize)?)
            }
            // libzstd compresses short frames on the calling thread (the
            // empty one included, which a block emulation would get wrong).
            Engine::Workers if frame_size.is_some_and(|n| n <= MT_MIN) => {
                Inner::Stream(Stream::new(self, false)?)
            }
            Engine::Workers if self.long.is_some() => {
                // Long mode finds matches across jobs in a pass of its own,
                // which cannot be run outside libzstd: no early output.
                Inner::Stream(Stream::new(self, true)?)
            }
            Engine::Workers => {
                let job_size = self.job_size();
                let cap = frame_size.map_or(job_size, |n| (n as usize).min(job_size));
                Inner::FirstJob {
                    job: Blocks::new(self, cap)?,
                    job_size,
                    emitted: 0,
                    hash: FNV_OFFSET,
                }
            }
            Engine::Stream => Inner::Stream(Stream::new(self, false)?),
        };
        Ok(Box::new(ZstdReencoder {
            params: *self,
            inner,
        }))
    }
}

/// Levels in the order they are tried: the default, the popular ones, then
/// the rest.
const LEVELS: &[i32] = &[
    3, 19, 1, 9, 6, 12, 2, 4, 5, 7, 8, 10, 11, 13, 14, 15, 16, 17, 18, 20, 21, 22, -1, -2, -3, -4,
    -5, -6, -7, -8, -9, -10, -20, -50, -100, -1000,
];

fn lib_version() -> u32 {
    zstd_safe::version_number()
}

/// Replay candidates for a frame, most likely first. `plain_size` is its
/// decoded size when the caller knows it: it drops the variants that
/// differ only in how a stream of another size would end.
///
/// Each one writes its first bytes within 256 KiB of input, except long
/// mode with workers (see `ZstdParams::blind`), only listed when the header's
/// window shows long mode.
pub fn candidates(h: &FrameHeader, plain_size: Option<u64>) -> Vec<ZstdParams> {
    list(h, plain_size, false)
}

/// The candidates `candidates` leaves out: long mode with workers on a frame
/// whose header does not show it (`zstd --long FILE` above 512 KiB). Their
/// first bytes come when a whole job is in (2 MiB at level 3, 64 MiB at
/// level 19), so a probe can only check them if it reaches that far; a
/// caller that cannot should not try them.
pub fn blind_candidates(h: &FrameHeader, plain_size: Option<u64>) -> Vec<ZstdParams> {
    let shown = candidates(h, plain_size);
    list(h, plain_size, true)
        .into_iter()
        .filter(|p| p.blind() && !shown.contains(p))
        .collect()
}

fn list(h: &FrameHeader, plain_size: Option<u64>, blind: bool) -> Vec<ZstdParams> {
    let mut out: Vec<ZstdParams> = Vec::new();
    if h.dict_id.is_some() {
        return out;
    }
    let plain_size = h.content_size.or(plain_size);
    let base = ZstdParams {
        level: 3,
        checksum: h.checksum,
        content_size: true,
        size: SrcSize::Unknown,
        engine: Engine::Workers,
        end_with_data: false,
        long: None,
        libzstd: lib_version(),
    };
    // Whether the end matters for a stream this long: an empty last call
    // differs from a last call with data only when the data stopped at a
    // block (one context) or job (workers) boundary.
    let end_matters = |p: &ZstdParams| -> bool {
        let unit = match p.engine {
            Engine::Workers => p.job_size() as u64,
            _ => BLOCK as u64,
        };
        plain_size.is_none_or(|n| n > 0 && n % unit == 0)
    };
    // Long mode with workers shows nothing before a job is done, so a probe
    // would take it blindly: only when the header's window says long mode.
    let long_window = blind || !h.single_segment && h.window_size >= 1 << 27;
    let push = |p: ZstdParams, out: &mut Vec<ZstdParams>| {
        if p.fits(h) && !out.contains(&p) && (long_window || !p.blind()) {
            out.push(p);
        }
    };
    for long in [None, Some(0)] {
        for &level in LEVELS {
            let b = ZstdParams {
                level,
                long,
                ..base
            };
            match h.content_size {
                Some(n) => {
                    let p = ZstdParams {
                        size: SrcSize::Pledged(n),
                        end_with_data: true,
                        ..b
                    };
                    let big = n > MT_MIN;
                    // `zstd FILE` first when it checksums (the CLI's default),
                    // one-shot library calls first when it does not.
                    let mut order = vec![
                        // (libzstd runs frames of up to 512 KiB on the
                        // calling thread: workers or not, the same bytes.)
                        ZstdParams {
                            engine: Engine::Workers,
                            ..p
                        },
                        ZstdParams {
                            engine: Engine::OneShot,
                            ..p
                        },
                    ];
                    if !h.checksum {
                        order.reverse();
                    }
                    for q in order {
                        if q.engine == Engine::OneShot
                            && (!big || n > ONESHOT_MAX || long.is_some())
                        {
                            // Short frames: the same bytes as a stream.
                            continue;
                        }
                        push(q, &mut out);
                    }
                    if big {
                        // `--single-thread FILE`
                        push(
                            ZstdParams {
                                engine: Engine::Stream,
                                ..p
                            },
                            &mut out,
                        );
                    }
                    // Writers that pledge the size but end with an empty call.
                    for engine in [Engine::Stream, Engine::Workers] {
                        let q = ZstdParams {
                            engine,
                            end_with_data: false,
                            ..p
                        };
                        if (engine == Engine::Stream || big) && end_matters(&q) {
                            push(q, &mut out);
                        }
                    }
                }
                None => {
                    // No size in the header: none was written, even for an
                    // empty frame (where libzstd would know it).
                    let pipe = ZstdParams {
                        size: SrcSize::Unknown,
                        content_size: false,
                        ..b
                    };
                    // `zstd < FILE` (workers) and `--single-thread` or the
                    // `zstd` crate's writer (one context, no checksum).
                    let mut order = vec![
                        pipe,
                        ZstdParams {
                            engine: Engine::Stream,
                            ..pipe
                        },
                    ];
                    if !h.checksum {
                        order.reverse();
                    }
                    // `zstd --no-content-size FILE`: sizes above half the
                    // window give the parameters of an unknown size; smaller
                    // ones shrink the window, which the header then shows.
                    let w = h.window_size;
                    let sized = if w == 1 << pipe.cparams().windowLog {
                        SrcSize::Unknown
                    } else {
                        SrcSize::Hint(w)
                    };
                    let file = ZstdParams {
                        size: sized,
                        end_with_data: true,
                        ..pipe
                    };
                    // A frame of at most 512 KiB runs on the calling thread.
                    let small_ok = w / 2 < MT_MIN;
                    let big_ok = sized == SrcSize::Unknown || w > MT_MIN;
                    if big_ok {
                        order.push(file);
                    }
                    if small_ok {
                        order.push(ZstdParams {
                            engine: Engine::Stream,
                            ..file
                        });
                    }
                    for q in order {
                        if q.end_with_data {
                            let twin = ZstdParams {
                                size: SrcSize::Unknown,
                                end_with_data: false,
                                ..q
                            };
                            if !end_matters(&q) && out.contains(&twin) {
                                continue;
                            }
                        }
                        push(q, &mut out);
                    }
                }
            }
        }
    }
    out
}

/// One compression context used from one thread at a time, for the
/// buffer-less block API that `zstd-safe` does not wrap.
struct RawCCtx(NonNull<zstd_sys::ZSTD_CCtx>);

// Safety: a libzstd context holds no thread affinity; it is only moved.
unsafe impl Send for RawCCtx {}

impl Drop for RawCCtx {
    fn drop(&mut self) {
        // Safety: created by ZSTD_createCCtx, freed once.
        unsafe {
            zstd_sys::ZSTD_freeCCtx(self.0.as_ptr());
        }
    }
}

fn check(code: usize) -> Result<usize> {
    // Safety: pure functions on an error code.
    unsafe {
        if zstd_sys::ZSTD_isError(code) != 0 {
            let name = std::ffi::CStr::from_ptr(zstd_sys::ZSTD_getErrorName(code));
            return Err(Error::Internal(format!(
                "zstd replay: {}",
                name.to_string_lossy()
            )));
        }
    }
    Ok(code)
}

fn safe_err(what: &str, code: usize) -> Error {
    Error::Internal(format!(
        "zstd replay: {what}: {}",
        zstd_safe::get_error_name(code)
    ))
}

/// The frame compressed block by block from one contiguous buffer, as a
/// worker compresses a job and a one-shot call its input. The buffer never
/// moves: libzstd keeps pointers into what it already compressed.
struct Blocks {
    cctx: RawCCtx,
    buf: Vec<u8>,
    /// Bytes of `buf` compressed so far.
    done: usize,
    scratch: Vec<u8>,
    ended: bool,
}

impl Blocks {
    fn new(p: &ZstdParams, cap: usize) -> Result<Blocks> {
        // Safety: plain FFI; the context is owned by RawCCtx from here on.
        let cctx = NonNull::new(unsafe { zstd_sys::ZSTD_createCCtx() })
            .map(RawCCtx)
            .ok_or_else(|| Error::ResourceExhausted("zstd replay: context".into()))?;
        let params = ZSTD_parameters {
            cParams: p.cparams(),
            fParams: zstd_sys::ZSTD_frameParameters {
                contentSizeFlag: i32::from(p.content_size),
                checksumFlag: i32::from(p.checksum),
                noDictIDFlag: 0,
            },
        };
        let pledged = match p.size {
            SrcSize::Pledged(n) => n,
            _ => zstd_safe::CONTENTSIZE_UNKNOWN,
        };
        // Safety: no dictionary; the parameters are libzstd's own.
        check(unsafe {
            zstd_sys::ZSTD_compressBegin_advanced(
                cctx.0.as_ptr(),
                std::ptr::null(),
                0,
                params,
                pledged,
            )
        })?;
        Ok(Blocks {
            cctx,
            buf: Vec::with_capacity(cap),
            done: 0,
            // Room for one block, however badly it compresses.
            scratch: vec![0; zstd_safe::compress_bound(BLOCK) + 64],
            ended: false,
        })
    }

    fn room(&self) -> usize {
        self.buf.capacity() - self.buf.len()
    }

    /// Appends plain bytes; never reallocates.
    fn push(&mut self, data: &[u8]) -> Result<()> {
        if data.len() > self.room() {
            return Err(Error::Internal(
                "zstd replay: more input than pledged".into(),
            ));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Compresses the pending bytes that are not the frame's last block for
    /// sure; `all`: the pending bytes are not the last, whatever follows.
    fn compress(&mut self, all: bool, out: &mut Vec<u8>) -> Result<()> {
        loop {
            let pending = self.buf.len() - self.done;
            let n = if pending > BLOCK {
                BLOCK
            } else if all && pending > 0 {
                pending
            } else {
                return Ok(());
            };
            self.step(n, false, out)?;
        }
    }

    fn step(&mut self, n: usize, last: bool, out: &mut Vec<u8>) -> Result<()> {
        let src = self.buf[self.done..self.done + n].as_ptr();
        let (dst, cap) = (self.scratch.as_mut_ptr(), self.scratch.len());
        // Safety: `src` stays put in `buf` (never reallocated) for as long
        // as the context lives; `dst` is `cap` bytes.
        let written = check(unsafe {
            if last {
                zstd_sys::ZSTD_compressEnd(self.cctx.0.as_ptr(), dst.cast(), cap, src.cast(), n)
            } else {
                zstd_sys::ZSTD_compressContinue(
                    self.cctx.0.as_ptr(),
                    dst.cast(),
                    cap,
                    src.cast(),
                    n,
                )
            }
        })?;
        out.extend_from_slice(&self.scratch[..written]);
        self.done += n;
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if !self.ended {
            self.ended = true;
            self.step(self.buf.len() - self.done, true, out)?;
        }
        Ok(())
    }
}

/// libzstd's streaming engine, on one context or with worker threads.
struct Stream {
    cctx: zstd_safe::CCtx<'static>,
    end_with_data: bool,
    /// The CLI's current read: it reads 128 KiB at a time and hands the last
    /// read over with the end of the frame. Only kept for `end_with_data`.
    stage: Vec<u8>,
    scratch: Vec<u8>,
    ended: bool,
}

impl Stream {
    fn new(p: &ZstdParams, workers: bool) -> Result<Stream> {
        let mut cctx = zstd_safe::CCtx::try_create()
            .ok_or_else(|| Error::ResourceExhausted("zstd replay: context".into()))?;
        let mut set = |c: CParameter| {
            cctx.set_parameter(c)
                .map(drop)
                .map_err(|e| safe_err("parameter", e))
        };
        set(CParameter::CompressionLevel(p.level))?;
        set(CParameter::ChecksumFlag(p.checksum))?;
        set(CParameter::ContentSizeFlag(p.content_size))?;
        if let Some(w) = p.long {
            set(CParameter::EnableLongDistanceMatching(true))?;
            if w != 0 {
                set(CParameter::WindowLog(u32::from(w)))?;
            }
        }
        if let SrcSize::Hint(n) = p.size {
            let n = u32::try_from(n).map_err(|_| data_loss("size hint out of range"))?;
            set(CParameter::SrcSizeHint(n))?;
        }
        let workers = workers || p.engine == Engine::Workers;
        if workers {
            set(CParameter::NbWorkers(1))?;
        }
        if let SrcSize::Pledged(n) = p.size {
            cctx.set_pledged_src_size(Some(n))
                .map_err(|e| safe_err("pledged size", e))?;
        }
        Ok(Stream {
            cctx,
            end_with_data: p.end_with_data,
            stage: Vec::new(),
            // The CLI's output buffer: with at least this much room, libzstd
            // may compress a last read in place, which changes its window.
            scratch: Vec::with_capacity(zstd_safe::CCtx::out_size()),
            ended: false,
        })
    }

    fn call(&mut self, data: &[u8], end: bool, out: &mut Vec<u8>) -> Result<()> {
        let op = if end {
            ZSTD_EndDirective::ZSTD_e_end
        } else {
            ZSTD_EndDirective::ZSTD_e_continue
        };
        let mut input = InBuffer::around(data);
        loop {
            let mut output = OutBuffer::around(&mut self.scratch);
            let left = self
                .cctx
                .compress_stream2(&mut output, &mut input, op)
                .map_err(|e| safe_err("compress", e))?;
            let full = output.pos() == output.capacity();
            out.extend_from_slice(&self.scratch);
            let consumed = input.pos() == data.len();
            if consumed && if end { left == 0 } else { !full } {
                return Ok(());
            }
        }
    }

    fn feed(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if !self.end_with_data {
            return self.call(data, false, out);
        }
        while !data.is_empty() {
            if self.stage.len() == BLOCK {
                let stage = std::mem::take(&mut self.stage);
                self.call(&stage, false, out)?;
                self.stage = stage;
                self.stage.clear();
            }
            let n = (BLOCK - self.stage.len()).min(data.len());
            self.stage.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if !self.ended {
            self.ended = true;
            let stage = std::mem::take(&mut self.stage);
            self.call(&stage, true, out)?;
        }
        Ok(())
    }
}

enum Inner {
    Stream(Stream),
    /// One-shot: the whole frame in one buffer.
    Blocks(Blocks),
    /// Workers, within the first job: its emulation.
    FirstJob {
        job: Blocks,
        job_size: usize,
        /// Length and hash of what it handed out.
        emitted: u64,
        hash: u64,
    },
    /// Workers, from the second job on: libzstd's engine, whose bytes for
    /// the first job are checked against the emulation's and dropped.
    Workers {
        stream: Stream,
        skip: u64,
        want: u64,
        seen: u64,
    },
    Done,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(mut h: u64, b: &[u8]) -> u64 {
    for &x in b {
        h = (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

struct ZstdReencoder {
    params: ZstdParams,
    inner: Inner,
}

impl ZstdReencoder {
    /// The first job is full and more input follows: libzstd's workers take
    /// over, given the first job again.
    fn hand_over(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let Inner::FirstJob {
            mut job,
            mut emitted,
            mut hash,
            ..
        } = std::mem::replace(&mut self.inner, Inner::Done)
        else {
            return Err(Error::Internal("zstd replay: no first job".into()));
        };
        // A full job followed by more is compressed whole, its last block
        // not the frame's.
        let start = out.len();
        job.compress(true, out)?;
        emitted += (out.len() - start) as u64;
        hash = fnv(hash, &out[start..]);
        let mut stream = Stream::new(&self.params, true)?;
        let mut produced = Vec::new();
        stream.feed(&job.buf, &mut produced)?;
        drop(job);
        self.inner = Inner::Workers {
            stream,
            skip: emitted,
            want: hash,
            seen: FNV_OFFSET,
        };
        self.pass(&produced, out)
    }

    /// Passes on what the workers produced, past the first job's bytes.
    fn pass(&mut self, mut produced: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let Inner::Workers {
            skip, want, seen, ..
        } = &mut self.inner
        else {
            out.extend_from_slice(produced);
            return Ok(());
        };
        if *skip > 0 {
            let n = (*skip).min(produced.len() as u64) as usize;
            *seen = fnv(*seen, &produced[..n]);
            *skip -= n as u64;
            produced = &produced[n..];
            if *skip == 0 && *seen != *want {
                return Err(Error::Internal(
                    "zstd replay: the first job's emulation differs from libzstd's workers".into(),
                ));
            }
        }
        out.extend_from_slice(produced);
        Ok(())
    }
}

impl Reencoder for ZstdReencoder {
    fn feed(&mut self, mut plain: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let end_with_data = self.params.end_with_data;
        loop {
            match &mut self.inner {
                Inner::Stream(s) => return s.feed(plain, out),
                Inner::Blocks(b) => {
                    b.push(plain)?;
                    return b.compress(false, out);
                }
                Inner::FirstJob {
                    job,
                    job_size,
                    emitted,
                    hash,
                } => {
                    if job.buf.len() == *job_size && !plain.is_empty() {
                        self.hand_over(out)?;
                        continue;
                    }
                    let n = job.room().min(plain.len());
                    if n < plain.len() && job.buf.capacity() < *job_size {
                        return Err(Error::Internal(
                            "zstd replay: more input than pledged".into(),
                        ));
                    }
                    job.push(&plain[..n])?;
                    plain = &plain[n..];
                    // Fed from a pipe, libzstd makes a full job a job at
                    // once, not the last one.
                    let whole = job.buf.len() == *job_size && !end_with_data;
                    let start = out.len();
                    job.compress(whole, out)?;
                    *emitted += (out.len() - start) as u64;
                    *hash = fnv(*hash, &out[start..]);
                    if plain.is_empty() {
                        return Ok(());
                    }
                }
                Inner::Workers { stream, .. } => {
                    let mut produced = Vec::new();
                    stream.feed(plain, &mut produced)?;
                    return self.pass(&produced, out);
                }
                Inner::Done => {
                    return Err(Error::Internal("zstd replay: input after the end".into()))
                }
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        match std::mem::replace(&mut self.inner, Inner::Done) {
            Inner::Stream(mut s) => s.finish(out),
            Inner::Blocks(mut b) | Inner::FirstJob { job: mut b, .. } => b.finish(out),
            Inner::Workers {
                mut stream,
                skip,
                want,
                seen,
            } => {
                let mut produced = Vec::new();
                stream.finish(&mut produced)?;
                self.inner = Inner::Workers {
                    stream,
                    skip,
                    want,
                    seen,
                };
                let r = self.pass(&produced, out);
                let left = matches!(self.inner, Inner::Workers { skip, .. } if skip > 0);
                self.inner = Inner::Done;
                r?;
                if left {
                    return Err(Error::Internal(
                        "zstd replay: workers wrote less than the first job".into(),
                    ));
                }
                Ok(())
            }
            Inner::Done => Ok(()),
        }
    }
}
