//! Replay of zlib-based gzip encoders: Python's `zlib`/`gzip` modules (one
//! deflate stream) and pigz (the input cut into blocks, each ended on a byte
//! boundary). Both link the system zlib, and so do we: driving the same
//! library through the same sequence of calls gives the same bytes.
//!
//! Output is a raw deflate stream; gzip headers and trailers are the caller's.
//!
//! What pigz 2.6 does, as observed (and checked by tests/replay_zlib.rs):
//! - With several threads (the default on any multi-core machine) every block
//!   is deflated by a freshly reset stream, primed with the last 32 KiB of the
//!   input before it as a dictionary. A block that is not the last is ended
//!   with `Z_BLOCK`; then, if the bit count left pending is odd, an empty
//!   stored block (`Z_SYNC_FLUSH`), else as many 10-bit empty static blocks as
//!   bring it to a byte boundary. The last block ends with `Z_FINISH`.
//! - With one thread (`-p 1`, or a one-core machine) it is one stream that is
//!   never reset, with the same block ends. At levels 4..9 that gives the same
//!   bytes as the threaded form; at 0..3 it does not.
//! - `-i` resets without a dictionary and ends every block but the last with
//!   an empty stored block and then a full flush (two markers). Thread count
//!   does not change it (levels 1..9).

use std::ffi::{c_int, c_uint, c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};

use libz_sys as z;

use crate::codec::plan::Restart;
use crate::codec::Reencoder;
use crate::error::{Error, Result};

/// pigz's default `-b 128`.
pub const PIGZ_DEFAULT_BLOCK: u32 = 128 * 1024;
/// Upper bound on a pigz block: a reencoder holds one block of input, so this
/// bounds its memory. pigz's default is 128 KiB; nobody ships 64 MiB blocks.
pub const PIGZ_MAX_BLOCK: u32 = 64 << 20;

pub const STRATEGY_DEFAULT: u8 = 0;
pub const STRATEGY_FILTERED: u8 = 1;
pub const STRATEGY_HUFFMAN_ONLY: u8 = 2;
pub const STRATEGY_RLE: u8 = 3;
pub const STRATEGY_FIXED: u8 = 4;

/// pigz's dictionary: the whole deflate window.
const DICT: usize = 32 * 1024;
/// Version byte of `ZlibParams::encode`.
const FORMAT_V1: u8 = 1;

/// How the encoder cut the input into deflate pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// One stream: `Z_NO_FLUSH` throughout, then `Z_FINISH` (Python's
    /// `zlib.compressobj`, `gzip.compress`, `gzip.GzipFile`, and zlib's own
    /// gzip writer).
    Single,
    /// pigz with two or more threads (its default): `block`-byte pieces, each
    /// from a reset stream primed with the previous 32 KiB.
    Pigz { block: u32 },
    /// pigz with one thread (`-p 1`): one stream, blocks ended the same way.
    /// Differs from `Pigz` only at levels 0..3.
    PigzSerial { block: u32 },
    /// pigz `-i`/`--independent`: reset without a dictionary, two markers.
    PigzIndependent { block: u32 },
}

impl Framing {
    fn block(&self) -> Option<u32> {
        match *self {
            Framing::Single => None,
            Framing::Pigz { block }
            | Framing::PigzSerial { block }
            | Framing::PigzIndependent { block } => Some(block),
        }
    }
}

/// Everything that decides the bytes zlib writes for a given input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ZlibParams {
    /// 0..=9. Level 0 replays only under pigz framings: zlib's stored blocks
    /// follow the caller's output buffer sizes, which pigz fixes and Python
    /// does not.
    pub level: u8,
    /// 9..=15 (zlib refuses 8 for raw deflate).
    pub window_bits: u8,
    /// 1..=9.
    pub mem_level: u8,
    /// 0..=4: default, filtered, huffman-only, RLE, fixed.
    pub strategy: u8,
    pub framing: Framing,
}

impl ZlibParams {
    /// Python's `zlib.compressobj(level, DEFLATED, -15, 8, 0)` and friends.
    pub const fn single(level: u8) -> Self {
        ZlibParams {
            level,
            window_bits: 15,
            mem_level: 8,
            strategy: STRATEGY_DEFAULT,
            framing: Framing::Single,
        }
    }

    /// `pigz -<level>` with its default block size and threads.
    pub const fn pigz(level: u8) -> Self {
        ZlibParams {
            framing: Framing::Pigz {
                block: PIGZ_DEFAULT_BLOCK,
            },
            ..Self::single(level)
        }
    }

    pub const fn with_framing(self, framing: Framing) -> Self {
        ZlibParams { framing, ..self }
    }

    pub const fn with_strategy(self, strategy: u8) -> Self {
        ZlibParams { strategy, ..self }
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.level > 9 {
            return Err(format!("zlib level {} out of range 0..=9", self.level));
        }
        if !(9..=15).contains(&self.window_bits) {
            return Err(format!(
                "zlib window bits {} out of range 9..=15",
                self.window_bits
            ));
        }
        if !(1..=9).contains(&self.mem_level) {
            return Err(format!(
                "zlib memory level {} out of range 1..=9",
                self.mem_level
            ));
        }
        if self.strategy > STRATEGY_FIXED {
            return Err(format!(
                "zlib strategy {} out of range 0..=4",
                self.strategy
            ));
        }
        if let Some(block) = self.framing.block() {
            if block == 0 || block > PIGZ_MAX_BLOCK {
                return Err(format!(
                    "pigz block size {block} out of range 1..={PIGZ_MAX_BLOCK}"
                ));
            }
        }
        Ok(())
    }

    /// Appends the on-disk form: a version byte, level, window bits, memory
    /// level, strategy, a framing tag and, for pigz framings, the block size
    /// (u32 little-endian). 6 or 10 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let tag = match self.framing {
            Framing::Single => 0,
            Framing::Pigz { .. } => 1,
            Framing::PigzSerial { .. } => 2,
            Framing::PigzIndependent { .. } => 3,
        };
        out.extend_from_slice(&[
            FORMAT_V1,
            self.level,
            self.window_bits,
            self.mem_level,
            self.strategy,
            tag,
        ]);
        if let Some(block) = self.framing.block() {
            out.extend_from_slice(&block.to_le_bytes());
        }
    }

    /// Reads what `encode` wrote; returns the parameters and the bytes used.
    pub fn decode(b: &[u8]) -> Result<(Self, usize)> {
        let short = || Error::DataLoss(format!("zlib params truncated ({} bytes)", b.len()));
        let head = b.get(..6).ok_or_else(short)?;
        if head[0] != FORMAT_V1 {
            return Err(Error::DataLoss(format!(
                "zlib params: unknown format version {}",
                head[0]
            )));
        }
        let (framing, used) = match head[5] {
            0 => (Framing::Single, 6),
            tag @ 1..=3 => {
                let raw = b.get(6..10).ok_or_else(short)?;
                let block = u32::from_le_bytes(raw.try_into().expect("4 bytes"));
                let framing = match tag {
                    1 => Framing::Pigz { block },
                    2 => Framing::PigzSerial { block },
                    _ => Framing::PigzIndependent { block },
                };
                (framing, 10)
            }
            tag => {
                return Err(Error::DataLoss(format!(
                    "zlib params: unknown framing tag {tag}"
                )))
            }
        };
        let params = ZlibParams {
            level: head[1],
            window_bits: head[2],
            mem_level: head[3],
            strategy: head[4],
            framing,
        };
        params
            .check()
            .map_err(|e| Error::DataLoss(format!("zlib params: {e}")))?;
        Ok((params, used))
    }

    /// Short name for users: "zlib-6", "pigz-9-128k", "pigz-3-128k-p1",
    /// "pigz-6-128k-i", with "-w12", "-m9", "-rle" and the like appended when
    /// not zlib's defaults.
    pub fn name(&self) -> String {
        let mut s = match self.framing {
            Framing::Single => format!("zlib-{}", self.level),
            Framing::Pigz { block } => format!("pigz-{}-{}", self.level, block_name(block)),
            Framing::PigzSerial { block } => {
                format!("pigz-{}-{}-p1", self.level, block_name(block))
            }
            Framing::PigzIndependent { block } => {
                format!("pigz-{}-{}-i", self.level, block_name(block))
            }
        };
        if self.window_bits != 15 {
            s.push_str(&format!("-w{}", self.window_bits));
        }
        if self.mem_level != 8 {
            s.push_str(&format!("-m{}", self.mem_level));
        }
        match self.strategy {
            STRATEGY_DEFAULT => {}
            STRATEGY_FILTERED => s.push_str("-filtered"),
            STRATEGY_HUFFMAN_ONLY => s.push_str("-huffman"),
            STRATEGY_RLE => s.push_str("-rle"),
            STRATEGY_FIXED => s.push_str("-fixed"),
            other => s.push_str(&format!("-s{other}")),
        }
        s
    }

    pub fn reencoder(&self) -> Result<Box<dyn Reencoder>> {
        Ok(Box::new(ZlibReencoder::new(*self)?))
    }

    /// Plain bytes a resumed block needs before it (pigz's dictionary);
    /// None for framings that are one stream.
    pub fn resume_history(&self) -> Option<u64> {
        match self.framing {
            Framing::Pigz { .. } => Some(DICT as u64),
            Framing::PigzIndependent { .. } => Some(0),
            Framing::Single | Framing::PigzSerial { .. } => None,
        }
    }

    pub fn resume(&self, history: &[u8]) -> Result<Box<dyn Reencoder>> {
        Ok(Box::new(ZlibReencoder::resume(*self, history)?))
    }
}

pub fn block_name(block: u32) -> String {
    if block.is_multiple_of(1024) {
        format!("{}k", block / 1024)
    } else {
        format!("{block}b")
    }
}

/// Ordered, most likely first, from the gzip header's XFL and OS bytes.
///
/// Who writes what: Python's `gzip` writes XFL 2 at level 9 (its default), 4
/// at level 1, else 0, and OS 255; `gzip.compress(mtime=0)` and other users of
/// zlib's own gzip writer (Node) write XFL 2 at 9, 4 below 2 or for the
/// huffman-only and RLE strategies, else 0, and OS 3; pigz writes XFL 2 at 9,
/// 4 at 1, else 0 (level 0 included), and OS 3.
/// Every level 1..9 comes in both main framings; rarer pigz forms, the level
/// independent strategies and level 0 close the list.
pub fn candidates(xfl: u8, os: u8) -> Vec<ZlibParams> {
    const BY_USE: [u8; 9] = [6, 9, 1, 5, 4, 7, 8, 3, 2];
    let likely: &[u8] = match xfl {
        2 => &[9],
        4 => &[1],
        // zlib's and pigz's default 6 first; Python says 0 for all of 2..8.
        0 => &[6, 5, 4, 7, 8, 3, 2],
        _ => &[],
    };
    let block = PIGZ_DEFAULT_BLOCK;
    // OS 3 (Unix) is written by pigz and zlib's gzip writer, not by Python's gzip.
    let framings = if os == 3 {
        [Framing::Pigz { block }, Framing::Single]
    } else {
        [Framing::Single, Framing::Pigz { block }]
    };
    let mut out = Vec::with_capacity(40);
    let mut push = |p: ZlibParams| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    for &level in likely.iter().chain(BY_USE.iter()) {
        for framing in framings {
            push(ZlibParams::single(level).with_framing(framing));
        }
    }
    // One thread changes pigz's output at levels 0..3 only.
    let serial: &[u8] = if xfl == 4 { &[1, 2, 3] } else { &[3, 2, 1] };
    for &level in serial {
        push(ZlibParams::single(level).with_framing(Framing::PigzSerial { block }));
    }
    for &level in likely.iter().chain(BY_USE.iter()) {
        push(ZlibParams::single(level).with_framing(Framing::PigzIndependent { block }));
    }
    // Huffman-only and RLE ignore the level (any non-zero one gives the same bytes).
    for strategy in [STRATEGY_HUFFMAN_ONLY, STRATEGY_RLE] {
        push(ZlibParams::single(6).with_strategy(strategy));
    }
    for framing in [
        Framing::Pigz { block },
        Framing::PigzSerial { block },
        Framing::PigzIndependent { block },
    ] {
        push(ZlibParams::single(0).with_framing(framing));
    }
    out
}

/// Version string of the zlib linked in. Replay is exact only where this zlib
/// deflates as the producer's did (checked here against Debian 12's 1.2.13,
/// which Python and pigz link); worth keeping beside a stored plan.
pub fn zlib_version() -> String {
    // SAFETY: zlibVersion returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(z::zlibVersion()) }
        .to_string_lossy()
        .into_owned()
}

// Not in libz-sys (commented out there), but in every zlib since 1.2.5.1.
extern "C" {
    fn deflatePending(strm: *mut z::z_stream, pending: *mut c_uint, bits: *mut c_int) -> c_int;
}

unsafe extern "C" fn zalloc(opaque: *mut c_void, items: z::uInt, size: z::uInt) -> *mut c_void {
    let Some(bytes) = (items as usize).checked_mul(size as usize) else {
        return std::ptr::null_mut();
    };
    // SAFETY: opaque is the stream's counter, alive as long as the stream.
    unsafe { &*(opaque as *const AtomicUsize) }.fetch_add(bytes, Ordering::Relaxed);
    // SAFETY: plain malloc; zlib frees with zfree below.
    unsafe { libc::malloc(bytes) }
}

unsafe extern "C" fn zfree(_opaque: *mut c_void, address: *mut c_void) {
    // SAFETY: address came from zalloc's malloc.
    unsafe { libc::free(address) }
}

/// A raw deflate stream of the system zlib.
struct Deflate {
    // Boxed: zlib keeps a pointer back to the z_stream and checks it.
    strm: Box<z::z_stream>,
    // Bytes zlib allocated; zlib allocates everything at init and never again.
    allocated: Box<AtomicUsize>,
}

// SAFETY: the z_stream and zlib's state behind it are owned by this value
// alone and only touched through &mut self; zlib has no thread affinity.
unsafe impl Send for Deflate {}

impl Deflate {
    fn new(p: &ZlibParams) -> Result<Self> {
        let allocated = Box::new(AtomicUsize::new(0));
        let mut strm = Box::new(z::z_stream {
            next_in: std::ptr::null_mut(),
            avail_in: 0,
            total_in: 0,
            next_out: std::ptr::null_mut(),
            avail_out: 0,
            total_out: 0,
            msg: std::ptr::null_mut(),
            state: std::ptr::null_mut(),
            zalloc,
            zfree,
            opaque: &*allocated as *const AtomicUsize as *mut c_void,
            data_type: 0,
            adler: 0,
            reserved: 0,
        });
        // SAFETY: strm is a valid, boxed z_stream with working allocators; the
        // version and size are those of the linked library and of our struct.
        let rc = unsafe {
            z::deflateInit2_(
                &mut *strm,
                c_int::from(p.level),
                z::Z_DEFLATED,
                -c_int::from(p.window_bits),
                c_int::from(p.mem_level),
                c_int::from(p.strategy),
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as c_int,
            )
        };
        if rc != z::Z_OK {
            return Err(Error::Internal(format!(
                "deflateInit2 failed ({rc}) for {}",
                p.name()
            )));
        }
        Ok(Deflate { strm, allocated })
    }

    fn allocated(&self) -> usize {
        self.allocated.load(Ordering::Relaxed)
    }

    fn reset(&mut self) -> Result<()> {
        // SAFETY: initialised stream.
        let rc = unsafe { z::deflateReset(&mut *self.strm) };
        check("deflateReset", rc)
    }

    fn set_dictionary(&mut self, dict: &[u8]) -> Result<()> {
        // SAFETY: initialised stream; zlib copies the dictionary in the call.
        let rc = unsafe {
            z::deflateSetDictionary(&mut *self.strm, dict.as_ptr(), dict.len() as z::uInt)
        };
        check("deflateSetDictionary", rc)
    }

    /// Bits (0..=7) that deflate holds back until the next byte is complete.
    fn pending_bits(&mut self) -> Result<c_int> {
        let mut bits: c_int = 0;
        // SAFETY: initialised stream; `pending` may be null per zlib.h.
        let rc = unsafe { deflatePending(&mut *self.strm, std::ptr::null_mut(), &mut bits) };
        check("deflatePending", rc)?;
        Ok(bits)
    }

    fn prime(&mut self, bits: c_int, value: c_int) -> Result<()> {
        // SAFETY: initialised stream.
        let rc = unsafe { z::deflatePrime(&mut *self.strm, bits, value) };
        check("deflatePrime", rc)
    }

    /// Runs `input` through deflate with `flush`, appending to `out`. Each
    /// deflate call gets `room` bytes of output space: that only matters at
    /// level 0, whose stored blocks end where the output space does.
    fn run(&mut self, input: &[u8], flush: c_int, out: &mut Vec<u8>, room: usize) -> Result<()> {
        // avail_in is 32-bit; without a flush, cutting the input changes nothing.
        const PIECE: usize = 1 << 30;
        let mut input = input;
        while input.len() > PIECE {
            self.run_piece(&input[..PIECE], z::Z_NO_FLUSH, out, room)?;
            input = &input[PIECE..];
        }
        self.run_piece(input, flush, out, room)
    }

    fn run_piece(
        &mut self,
        input: &[u8],
        flush: c_int,
        out: &mut Vec<u8>,
        room: usize,
    ) -> Result<()> {
        let room = room.clamp(64, u32::MAX as usize);
        self.strm.next_in = input.as_ptr().cast_mut();
        self.strm.avail_in = input.len() as z::uInt;
        let result = loop {
            out.reserve(room);
            let spare = &mut out.spare_capacity_mut()[..room];
            self.strm.next_out = spare.as_mut_ptr().cast();
            self.strm.avail_out = room as z::uInt;
            // SAFETY: next_in/next_out point at live buffers of the given sizes
            // (zlib only reads through next_in).
            let rc = unsafe { z::deflate(&mut *self.strm, flush) };
            let written = room - self.strm.avail_out as usize;
            // SAFETY: deflate initialised `written` bytes of the spare capacity.
            unsafe { out.set_len(out.len() + written) };
            match rc {
                // Z_BUF_ERROR: nothing left to do, which a repeated flush may say.
                z::Z_OK | z::Z_STREAM_END | z::Z_BUF_ERROR => {}
                rc => break check("deflate", rc),
            }
            // deflate stops early only when the output space runs out.
            if self.strm.avail_out != 0 {
                break if self.strm.avail_in == 0 {
                    Ok(())
                } else {
                    Err(Error::Internal("deflate left input unread".into()))
                };
            }
        };
        // Leave no pointers into buffers that are about to go away.
        self.strm.next_in = std::ptr::null_mut();
        self.strm.avail_in = 0;
        self.strm.next_out = std::ptr::null_mut();
        self.strm.avail_out = 0;
        result
    }
}

impl Drop for Deflate {
    fn drop(&mut self) {
        // SAFETY: initialised stream, ended once. Z_DATA_ERROR (ended mid-stream) is fine.
        unsafe { z::deflateEnd(&mut *self.strm) };
    }
}

fn check(what: &str, rc: c_int) -> Result<()> {
    if rc == z::Z_OK {
        Ok(())
    } else {
        Err(Error::Internal(format!("zlib {what} failed ({rc})")))
    }
}

/// Replays one `ZlibParams`. See the module docs for the framings.
pub struct ZlibReencoder {
    params: ZlibParams,
    deflate: Deflate,
    /// Pigz framings: the current block's input, not yet compressed. A full
    /// block waits for one more byte (or `finish`) to learn if it is the last.
    block: Vec<u8>,
    /// Pigz framing: the last 32 KiB of input before `block`.
    history: Vec<u8>,
    /// Whether a block has gone out already (the first gets no dictionary).
    started: bool,
    finished: bool,
    /// Bytes fed and made so far, and where blocks of the threaded and
    /// independent framings start (each from a reset stream: restartable).
    plain: u64,
    made: u64,
    restarts: Vec<Restart>,
}

impl ZlibReencoder {
    pub fn new(params: ZlibParams) -> Result<Self> {
        params.check().map_err(Error::InvalidArgument)?;
        if params.level == 0 && params.framing == Framing::Single {
            return Err(Error::InvalidArgument(
                "zlib-0 cannot be replayed: its stored blocks follow the encoder's buffer sizes"
                    .into(),
            ));
        }
        let block = match params.framing.block() {
            Some(b) => Vec::with_capacity(b as usize),
            None => Vec::new(),
        };
        let history = match params.framing {
            Framing::Pigz { .. } => Vec::with_capacity(DICT),
            _ => Vec::new(),
        };
        Ok(ZlibReencoder {
            params,
            deflate: Deflate::new(&params)?,
            block,
            history,
            started: false,
            finished: false,
            plain: 0,
            made: 0,
            restarts: Vec::new(),
        })
    }

    /// Resumes at a block start of the threaded or independent framings,
    /// given the input before it (pigz primes a block with its last 32 KiB).
    pub fn resume(params: ZlibParams, history: &[u8]) -> Result<Self> {
        if !matches!(
            params.framing,
            Framing::Pigz { .. } | Framing::PigzIndependent { .. }
        ) {
            return Err(Error::Internal(format!(
                "{} cannot resume mid-stream",
                params.name()
            )));
        }
        let mut r = ZlibReencoder::new(params)?;
        super::keep_tail(&mut r.history, history, DICT);
        r.started = true;
        Ok(r)
    }

    pub fn params(&self) -> &ZlibParams {
        &self.params
    }

    /// Bytes held: zlib's state plus the input buffers.
    pub fn memory(&self) -> usize {
        self.deflate.allocated() + self.block.capacity() + self.history.capacity()
    }

    /// Compresses `self.block` as pigz compresses one block.
    fn flush_block(&mut self, last: bool, out: &mut Vec<u8>) -> Result<()> {
        let d = &mut self.deflate;
        let data = &self.block;
        match self.params.framing {
            Framing::Single => unreachable!("single framing has no blocks"),
            Framing::Pigz { .. } | Framing::PigzIndependent { .. } => {
                let independent = matches!(self.params.framing, Framing::PigzIndependent { .. });
                if self.started {
                    d.reset()?;
                    if !independent {
                        d.set_dictionary(&self.history)?;
                    }
                }
                // pigz hands each thread an output buffer larger than the
                // block can grow to, which decides level 0's stored blocks.
                let room = data.len() + (data.len() >> 4) + DICT;
                if last {
                    d.run(data, z::Z_FINISH, out, room)?;
                } else {
                    d.run(data, z::Z_BLOCK, out, room)?;
                    let bits = d.pending_bits()?;
                    if bits & 1 != 0 || independent {
                        d.run(&[], z::Z_SYNC_FLUSH, out, room)?;
                    } else if bits & 7 != 0 {
                        align_with_static_blocks(d)?;
                        d.run(&[], z::Z_BLOCK, out, room)?;
                    }
                    if independent {
                        d.run(&[], z::Z_FULL_FLUSH, out, room)?;
                    }
                }
                if !independent && !last {
                    super::keep_tail(&mut self.history, data, DICT);
                }
            }
            Framing::PigzSerial { block } => {
                // One thread reuses one output buffer of the block size.
                let room = block as usize;
                if last {
                    d.run(data, z::Z_FINISH, out, room)?;
                } else {
                    d.run(data, z::Z_BLOCK, out, room)?;
                    let bits = d.pending_bits()?;
                    if bits & 1 != 0 {
                        d.run(&[], z::Z_SYNC_FLUSH, out, room)?;
                    } else if bits & 7 != 0 {
                        align_with_static_blocks(d)?;
                        d.run(&[], z::Z_NO_FLUSH, out, room)?;
                    }
                }
            }
        }
        self.block.clear();
        self.started = true;
        Ok(())
    }
}

/// Adds empty static blocks (10 bits each) until the stream is on a byte
/// boundary; only called with an even, non-zero bit count, which 10-bit steps reach.
fn align_with_static_blocks(d: &mut Deflate) -> Result<()> {
    loop {
        // BFINAL 0, BTYPE 01 (static), end-of-block code 0000000: value 2 in 10 bits.
        d.prime(10, 2)?;
        if d.pending_bits()? & 7 == 0 {
            return Ok(());
        }
    }
}

impl Reencoder for ZlibReencoder {
    fn feed(&mut self, mut plain: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.finished {
            return Err(Error::Internal("zlib reencoder fed after finish".into()));
        }
        let Some(block) = self.params.framing.block() else {
            return self.deflate.run(plain, z::Z_NO_FLUSH, out, 64 * 1024);
        };
        let block = block as usize;
        let start = out.len();
        while !plain.is_empty() {
            if self.block.len() == block {
                // More input follows, so this block is not the last.
                self.flush_block(false, out)?;
                if !matches!(self.params.framing, Framing::PigzSerial { .. }) {
                    self.restarts.push(Restart {
                        plain: self.plain,
                        out: self.made + (out.len() - start) as u64,
                    });
                }
            }
            let take = (block - self.block.len()).min(plain.len());
            self.block.extend_from_slice(&plain[..take]);
            self.plain += take as u64;
            plain = &plain[take..];
        }
        self.made += (out.len() - start) as u64;
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.finished {
            return Err(Error::Internal("zlib reencoder finished twice".into()));
        }
        self.finished = true;
        match self.params.framing {
            Framing::Single => self.deflate.run(&[], z::Z_FINISH, out, 64 * 1024),
            // Empty input still makes one (empty, final) block, as pigz does.
            _ => self.flush_block(true, out),
        }
    }

    fn restarts(&self) -> Vec<Restart> {
        self.restarts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threaded pigz restarts at every block start, and a block re-encoded
    /// from there (given the input before it) is the same bytes; one-stream
    /// framings have none.
    #[test]
    fn pigz_blocks_restart_where_they_start() {
        let data: Vec<u8> = (0..700_000u32)
            .map(|i| (i * 7 % 251) as u8 ^ (i >> 9) as u8)
            .collect();
        for framing in [
            Framing::Pigz { block: 128 << 10 },
            Framing::PigzIndependent { block: 128 << 10 },
        ] {
            let p = ZlibParams::single(6).with_framing(framing);
            let mut re = p.reencoder().unwrap();
            let mut whole = Vec::new();
            for piece in data.chunks(50_000) {
                re.feed(piece, &mut whole).unwrap();
            }
            re.finish(&mut whole).unwrap();
            let restarts = re.restarts();
            assert_eq!(restarts.len(), 5, "{framing:?}");
            for r in restarts {
                let (plain, out) = (r.plain as usize, r.out as usize);
                let hist = &data[plain.saturating_sub(DICT)..plain];
                let mut re = p.resume(hist).unwrap();
                let mut tail = Vec::new();
                re.feed(&data[plain..], &mut tail).unwrap();
                re.finish(&mut tail).unwrap();
                assert!(tail == whole[out..], "{framing:?} from {plain}");
            }
        }
        let serial = ZlibParams::single(6).with_framing(Framing::PigzSerial { block: 128 << 10 });
        assert!(serial.resume_history().is_none());
        let mut re = serial.reencoder().unwrap();
        re.feed(&data, &mut Vec::new()).unwrap();
        assert!(re.restarts().is_empty());
    }

    #[test]
    fn keep_tail_keeps_last_window() {
        let mut h = Vec::new();
        crate::codec::keep_tail(&mut h, &[1; 10], DICT);
        assert_eq!(h, vec![1; 10]);
        crate::codec::keep_tail(&mut h, &vec![2; DICT - 4], DICT);
        assert_eq!(h.len(), DICT);
        assert_eq!(&h[..4], &[1; 4]);
        crate::codec::keep_tail(&mut h, &vec![3; DICT + 7], DICT);
        assert_eq!(h, vec![3; DICT]);
    }

    #[test]
    fn linked_zlib_is_zlib() {
        assert!(zlib_version().starts_with('1'), "{}", zlib_version());
    }
}
