//! Helpers shared by strata's fuzz targets: reading control bytes off the
//! front of an input, cutting a stream into pieces, and making (and damaging)
//! gzip and zstd streams from fuzzer data.

use std::io::Write;

use strata::codec::zlib::{Framing, ZlibParams, PIGZ_DEFAULT_BLOCK};

/// Reads control values off the front of a fuzzer input; past its end every
/// value is 0, so any input is usable.
pub struct Control<'a> {
    data: &'a [u8],
}

impl<'a> Control<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Control { data }
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// What is left: the payload.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// A small deterministic generator (xorshift64*), seeded from the input.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u32) -> Self {
        Rng((seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Cuts `data` into consecutive pieces whose sizes come from `seed`: single
/// bytes, odd small sizes around tar blocks, or large runs, chosen per input.
pub fn pieces(data: &[u8], seed: u32) -> Vec<&[u8]> {
    let mut rng = Rng::new(seed);
    let style = seed & 3;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = match style {
            0 => rest.len(), // all at once
            1 => 1 + rng.below(16) as usize,
            2 => 1 + rng.below(1100) as usize,
            _ => 1 + rng.below(70_000) as usize,
        }
        .min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out
}

/// How a fuzz input's payload is turned into the blob under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrap {
    /// The payload itself: arbitrary bytes.
    Raw,
    /// gzip whose body is strata's own zlib replay of the payload (so the
    /// unwrapper's probe finds a replay candidate).
    GzipZlib(ZlibParams),
    /// gzip made by flate2's default (Rust) backend: usually no replay fits.
    GzipFlate2(u32),
    /// A zstd frame with content size and optionally a checksum.
    Zstd { level: i32, checksum: bool, streamed: bool },
}

/// Damage done to a wrapped stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    None,
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Insert { at: usize, byte: u8 },
    Overwrite { at: usize, word: u32 },
    /// The stream twice: a second member or frame (still valid).
    Twice,
    /// Zero padding after the stream (still decodes; the tail is opaque).
    Pad { len: usize },
    /// Junk after the stream.
    Junk { len: usize, byte: u8 },
}

impl Damage {
    /// Whether the damaged stream still decodes to the payload (or twice it).
    pub fn keeps_valid(&self) -> bool {
        matches!(self, Damage::None | Damage::Twice | Damage::Pad { .. } | Damage::Junk { .. })
    }
}

/// Reads a wrap and a damage from 5 control bytes.
pub fn read_wrap(c: &mut Control) -> (Wrap, Damage) {
    let mode = c.u8();
    let level = c.u8();
    let at = c.u16() as usize;
    let val = c.u8();
    let wrap = match mode & 7 {
        0 | 1 => Wrap::Raw,
        2 => Wrap::GzipZlib(ZlibParams::single(1 + level % 9)),
        3 => {
            let framing = match (level >> 4) % 3 {
                0 => Framing::Pigz { block: PIGZ_DEFAULT_BLOCK },
                1 => Framing::PigzSerial { block: PIGZ_DEFAULT_BLOCK },
                _ => Framing::PigzIndependent { block: PIGZ_DEFAULT_BLOCK },
            };
            // pigz -b 32 too (a size strata tries), so that short payloads
            // have several blocks.
            let framing = if level & 0x80 != 0 {
                match framing {
                    Framing::Pigz { .. } => Framing::Pigz { block: 32 << 10 },
                    Framing::PigzSerial { .. } => Framing::PigzSerial { block: 32 << 10 },
                    _ => Framing::PigzIndependent { block: 32 << 10 },
                }
            } else {
                framing
            };
            Wrap::GzipZlib(ZlibParams::single(1 + level % 9).with_framing(framing))
        }
        4 => Wrap::GzipFlate2((level % 10) as u32),
        5 => Wrap::GzipZlib(ZlibParams::single(6).with_strategy(2 + level % 2)),
        _ => Wrap::Zstd {
            level: 1 + (level % 19) as i32,
            checksum: mode & 1 != 0,
            streamed: level & 0x80 != 0,
        },
    };
    let damage = match (mode >> 3) & 7 {
        0 | 1 => Damage::None,
        2 => Damage::Flip { at, mask: val | 1 },
        3 => Damage::Truncate { at },
        4 => Damage::Insert { at, byte: val },
        5 => Damage::Overwrite { at, word: u32::from(val) * 0x0101_0101 ^ 0x00ff_00ff },
        6 => {
            if val & 1 == 0 {
                Damage::Twice
            } else {
                Damage::Pad { len: (at % 2048) + 1 }
            }
        }
        _ => Damage::Junk { len: (at % 64) + 1, byte: val },
    };
    (wrap, damage)
}

/// gzip header as Python (OS 255) or zlib's writer and pigz (OS 3) write it.
fn gzip_header(xfl: u8, os: u8) -> Vec<u8> {
    vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, os]
}

fn gzip_of(body: &[u8], plain: &[u8], xfl: u8, os: u8) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(plain);
    let mut out = gzip_header(xfl, os);
    out.extend_from_slice(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
    out
}

/// The blob a wrap makes of `plain` (before damage).
pub fn wrap(w: Wrap, plain: &[u8]) -> Vec<u8> {
    match w {
        Wrap::Raw => plain.to_vec(),
        Wrap::GzipZlib(p) => {
            let mut re = p.reencoder().expect("valid zlib params");
            let mut body = Vec::new();
            re.feed(plain, &mut body).expect("zlib deflate");
            re.finish(&mut body).expect("zlib deflate");
            let xfl = match p.level {
                9 => 2,
                1 => 4,
                _ => 0,
            };
            let os = if p.framing == Framing::Single { 255 } else { 3 };
            gzip_of(&body, plain, xfl, os)
        }
        Wrap::GzipFlate2(level) => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            e.write_all(plain).expect("in memory");
            e.finish().expect("in memory")
        }
        Wrap::Zstd {
            level,
            checksum,
            streamed,
        } => {
            if streamed {
                // A streamed frame: no content size in its header.
                let mut e = zstd::stream::Encoder::new(Vec::new(), level).expect("zstd encoder");
                e.include_checksum(checksum).expect("zstd parameter");
                e.write_all(plain).expect("in memory");
                e.finish().expect("in memory")
            } else {
                let mut c = zstd::bulk::Compressor::new(level).expect("zstd encoder");
                c.include_checksum(checksum).expect("zstd parameter");
                c.compress(plain).expect("in memory")
            }
        }
    }
}

/// Applies damage to a stream.
pub fn damage(d: Damage, mut b: Vec<u8>) -> Vec<u8> {
    let len = b.len();
    match d {
        Damage::None => {}
        Damage::Flip { at, mask } => {
            if len > 0 {
                b[at % len] ^= mask;
            }
        }
        Damage::Truncate { at } => b.truncate(at % (len + 1)),
        Damage::Insert { at, byte } => b.insert(at % (len + 1), byte),
        Damage::Overwrite { at, word } => {
            for (i, x) in word.to_le_bytes().into_iter().enumerate() {
                if let Some(y) = b.get_mut((at + i) % len.max(1)) {
                    *y = x;
                }
            }
        }
        Damage::Twice => {
            let copy = b.clone();
            b.extend_from_slice(&copy);
        }
        Damage::Pad { len } => b.resize(b.len() + len, 0),
        Damage::Junk { len, byte } => b.extend(std::iter::repeat(byte).take(len)),
    }
    b
}

/// The plain stream a valid wrapped-and-damaged stream decodes to.
pub fn expected_plain(d: Damage, plain: &[u8]) -> Option<Vec<u8>> {
    match d {
        Damage::None => Some(plain.to_vec()),
        Damage::Twice => Some([plain, plain].concat()),
        // The tail is kept opaque; what decodes is one payload.
        Damage::Pad { .. } | Damage::Junk { .. } => Some(plain.to_vec()),
        _ => None,
    }
}

pub fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(b).into()
}

/// A fresh directory for the whole run under STRATA_FUZZ_TMP (else the temp
/// dir), removed when the process exits (libFuzzer ends with `exit`, which
/// drops no statics, but runs `atexit` handlers).
pub fn run_dir(prefix: &str) -> std::path::PathBuf {
    use std::sync::Mutex;
    static DIRS: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());
    extern "C" fn remove_all() {
        if let Ok(dirs) = DIRS.lock() {
            for d in dirs.iter() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
    let base = std::env::var_os("STRATA_FUZZ_TMP")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).expect("creating the scratch base dir");
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .expect("a scratch dir")
        .keep();
    let mut dirs = DIRS.lock().expect("scratch dirs");
    if dirs.is_empty() {
        // SAFETY: registers a plain extern "C" function with no preconditions.
        unsafe { libc::atexit(remove_all) };
    }
    dirs.push(dir.clone());
    dir
}

/// STRATA_FUZZ_DEBUG=1: targets print what they did with each input (to see
/// which paths the seeds take; too slow for fuzzing).
pub fn debug() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("STRATA_FUZZ_DEBUG").is_some_and(|v| v != "0"))
}
