//! The codec stage: compressed layers (gzip, zstd) are decoded as they stream
//! in, their plain tar goes on to splitting, and a plan is kept that rebuilds
//! the exact compressed bytes: replay of the producing encoder, a general
//! deflate rebuilder, or the compressed bytes themselves.

use crate::error::Result;

/// Re-encodes a plain stream exactly as one encoder, with one set of
/// parameters, did. The output depends only on the plain bytes, never on how
/// they are split across `feed` calls.
pub trait Reencoder: Send {
    /// Takes the next plain bytes; appends whatever compressed bytes are ready.
    fn feed(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<()>;
    /// Ends the stream; appends the rest.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()>;
    /// Points so far where a re-encoder could start afresh (see
    /// `resume_reencoder`); none for encoders whose state runs on.
    fn restarts(&self) -> Vec<plan::Restart> {
        Vec::new()
    }
}

pub mod block_pool;
pub mod gnu_replay;
pub mod go_replay;
pub mod gzip;
pub mod kp_replay;
pub mod plan;
pub mod preflate;
pub mod rebuild;
pub mod unwrap;
pub mod zlib;
pub mod zstd_replay;

use plan::{Encoder, EncoderKind};

/// The decoders this build runs, as `strata analyze` reports them: the
/// libzstd version is the one linked, read at run time, so the line cannot
/// go stale when the system library changes.
pub fn decoders() -> String {
    format!(
        "gzip: flate2; zstd: libzstd {}",
        zstd_safe::version_string()
    )
}

/// The re-encoder a replay part names, as ingest runs it: on the caller's
/// thread, its output trailing the input as little as the encoder allows.
pub fn reencoder(enc: &Encoder) -> Result<Box<dyn Reencoder>> {
    match enc.kind {
        EncoderKind::Zlib => zlib::ZlibParams::decode(&enc.params)?.0.reencoder(),
        EncoderKind::Zstd => zstd_replay::ZstdParams::decode(&enc.params)?.0.reencoder(),
        EncoderKind::Klauspost => kp_replay::KpParams::decode(&enc.params)?.0.reencoder(),
        EncoderKind::GoStd => go_replay::GoParams::decode(&enc.params)?.0.reencoder(),
        EncoderKind::GnuGzip => gnu_replay::GnuParams::decode(&enc.params)?.0.reencoder(),
    }
}

/// The re-encoder for a read: the same bytes, made on several threads where
/// the encoder's blocks are independent (pgzip).
pub fn rebuild_reencoder(enc: &Encoder) -> Result<Box<dyn Reencoder>> {
    match enc.kind {
        EncoderKind::Klauspost => kp_replay::KpParams::decode(&enc.params)?
            .0
            .rebuild_reencoder(),
        _ => reencoder(enc),
    }
}

/// A re-encoder that confirms a member at ingest on the rebuild pool, and
/// how far (in bytes) its output may trail the input; None for encoders
/// without independent blocks.
pub fn parallel_reencoder(enc: &Encoder) -> Option<(Box<dyn Reencoder>, u64)> {
    match enc.kind {
        EncoderKind::Klauspost => kp_replay::KpParams::decode(&enc.params).ok()?.0.parallel(),
        _ => None,
    }
}

/// Plain bytes before a restart point that `resume_reencoder` needs (the
/// encoder's dictionary there); None when the encoder cannot resume.
pub fn resume_history(enc: &Encoder) -> Option<u64> {
    match enc.kind {
        EncoderKind::Klauspost => kp_replay::KpParams::decode(&enc.params)
            .ok()?
            .0
            .resume_history(),
        EncoderKind::Zlib => zlib::ZlibParams::decode(&enc.params)
            .ok()?
            .0
            .resume_history(),
        _ => None,
    }
}

/// A re-encoder for reads that starts at a restart point, given the
/// `resume_history` plain bytes before it.
pub fn resume_reencoder(enc: &Encoder, history: &[u8]) -> Result<Box<dyn Reencoder>> {
    match enc.kind {
        EncoderKind::Klauspost => kp_replay::KpParams::decode(&enc.params)?.0.resume(history),
        EncoderKind::Zlib => zlib::ZlibParams::decode(&enc.params)?.0.resume(history),
        _ => Err(crate::error::Error::Internal(format!(
            "{} cannot resume mid-stream",
            encoder_name(enc)
        ))),
    }
}

/// Keeps the last `window` bytes of `history` followed by `data`: the
/// dictionary a block encoder primes its next block with.
pub(crate) fn keep_tail(history: &mut Vec<u8>, data: &[u8], window: usize) {
    if data.len() >= window {
        history.clear();
        history.extend_from_slice(&data[data.len() - window..]);
    } else {
        let drop = (history.len() + data.len()).saturating_sub(window);
        history.drain(..drop);
        history.extend_from_slice(data);
    }
}

/// Restart points worth keeping in a plan: about one per MiB of plain
/// input (at most 256 per part), so a ranged read re-encodes little and the
/// plan stays small.
pub fn thin_restarts(all: Vec<plan::Restart>, plain_len: u64) -> Vec<plan::Restart> {
    let spacing = (1u64 << 20).max(plain_len / 256);
    let mut out: Vec<plan::Restart> = Vec::new();
    for r in all {
        if r.plain >= plain_len || r.out == 0 {
            continue;
        }
        let last = out.last().map_or(0, |l| l.plain);
        if r.plain >= last + spacing {
            out.push(r);
        }
    }
    out
}

/// What users see of an encoder: "zlib-6", "pigz-9-128k", "zstd-3".
pub fn encoder_name(enc: &Encoder) -> String {
    let name = match enc.kind {
        EncoderKind::Zlib => zlib::ZlibParams::decode(&enc.params).map(|p| p.0.name()),
        EncoderKind::Zstd => zstd_replay::ZstdParams::decode(&enc.params).map(|p| p.0.name()),
        EncoderKind::Klauspost => kp_replay::KpParams::decode(&enc.params).map(|p| p.0.name()),
        EncoderKind::GoStd => go_replay::GoParams::decode(&enc.params).map(|p| p.0.name()),
        EncoderKind::GnuGzip => gnu_replay::GnuParams::decode(&enc.params).map(|p| p.0.name()),
    };
    name.unwrap_or_else(|_| "unknown".into())
}

/// How far (in bytes) an encoder's output may trail its input: what it may
/// hold back before emitting (zstd's worker mode holds a whole job).
pub fn max_lag(enc: &Encoder) -> u64 {
    match enc.kind {
        EncoderKind::Zlib | EncoderKind::Klauspost | EncoderKind::GoStd | EncoderKind::GnuGzip => 0,
        EncoderKind::Zstd => {
            zstd_replay::ZstdParams::decode(&enc.params).map_or(0, |p| p.0.max_lag())
        }
    }
}

/// pigz block sizes (`-b`, KiB) tried after the default 128.
const PIGZ_OTHER_BLOCKS_KIB: [u32; 5] = [64, 256, 512, 1024, 32];

/// Replay candidates for a gzip member, most likely first. OS 255 is what
/// Go's writers (and Python's) put in the header: then the Go families lead,
/// pgzip at its default level first (the registries' most common producer
/// after Go's own gzip), each family's likeliest level ahead of zlib's list,
/// their other levels after it. OS 3 is GNU gzip's (`tar -z`), pigz's and
/// zlib's: GNU gzip's likeliest level leads there (a wrong one fails on the
/// first block it writes), its other levels after zlib's list.
pub fn gzip_candidates(h: &gzip::Header) -> Vec<Encoder> {
    let zlib = gzip_zlib_candidates(h);
    if h.os == 3 {
        let gnu: Vec<Encoder> = gnu_replay::candidates(h.flags, h.xfl, h.os)
            .into_iter()
            .map(|p| encoder(EncoderKind::GnuGzip, |v| p.encode(v)))
            .collect();
        let first = 1.min(gnu.len());
        let mut out = Vec::with_capacity(gnu.len() + zlib.len());
        out.extend_from_slice(&gnu[..first]);
        out.extend(zlib);
        out.extend_from_slice(&gnu[first..]);
        return out;
    }
    if h.os != 255 {
        return zlib;
    }
    let kp: Vec<Encoder> = kp_replay::candidates(h.xfl)
        .into_iter()
        .map(|p| encoder(EncoderKind::Klauspost, |v| p.encode(v)))
        .collect();
    let go: Vec<Encoder> = go_replay::candidates(h.xfl)
        .into_iter()
        .map(|p| encoder(EncoderKind::GoStd, |v| p.encode(v)))
        .collect();
    // kp_replay lists each level's framings together.
    let kp_first = kp_replay::framings_per_level();
    let mut out = Vec::with_capacity(kp.len() + go.len() + zlib.len());
    out.extend_from_slice(&kp[..kp_first.min(kp.len())]);
    out.extend_from_slice(&go[..1.min(go.len())]);
    out.extend(zlib);
    out.extend_from_slice(&kp[kp_first.min(kp.len())..]);
    out.extend_from_slice(&go[1.min(go.len())..]);
    out
}

/// More candidates for a gzip member none of `gzip_candidates` fits, from
/// the probe's compressed bytes: pgzip at block sizes its sync markers show.
pub fn gzip_structure_candidates(comp: &[u8]) -> Vec<Encoder> {
    kp_replay::marker_candidates(comp)
        .into_iter()
        .map(|p| encoder(EncoderKind::Klauspost, |v| p.encode(v)))
        .collect()
}

/// zlib's candidates, then pigz at block sizes other than its default.
fn gzip_zlib_candidates(h: &gzip::Header) -> Vec<Encoder> {
    let base = zlib::candidates(h.xfl, h.os);
    let mut more = Vec::new();
    for kib in PIGZ_OTHER_BLOCKS_KIB {
        for p in &base {
            if p.framing
                == (zlib::Framing::Pigz {
                    block: zlib::PIGZ_DEFAULT_BLOCK,
                })
            {
                more.push(p.with_framing(zlib::Framing::Pigz { block: kib << 10 }));
            }
        }
    }
    base.into_iter()
        .chain(more)
        .map(|p| encoder(EncoderKind::Zlib, |v| p.encode(v)))
        .collect()
}

fn encoder(kind: EncoderKind, encode: impl FnOnce(&mut Vec<u8>)) -> Encoder {
    let mut params = Vec::new();
    encode(&mut params);
    Encoder { kind, params }
}

/// Replay candidates for a zstd frame, most likely first.
pub fn zstd_candidates(h: &zstd_replay::FrameHeader) -> Vec<Encoder> {
    zstd_replay::candidates(h, h.content_size)
        .into_iter()
        .map(|p| encoder(EncoderKind::Zstd, |v| p.encode(v)))
        .collect()
}
