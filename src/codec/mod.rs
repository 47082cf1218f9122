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
}

pub mod gzip;
pub mod plan;
pub mod preflate;
pub mod rebuild;
pub mod unwrap;
pub mod zlib;
pub mod zstd_replay;

use plan::{Encoder, EncoderKind};

/// The re-encoder a replay part names.
pub fn reencoder(enc: &Encoder) -> Result<Box<dyn Reencoder>> {
    match enc.kind {
        EncoderKind::Zlib => zlib::ZlibParams::decode(&enc.params)?.0.reencoder(),
        EncoderKind::Zstd => zstd_replay::ZstdParams::decode(&enc.params)?.0.reencoder(),
    }
}

/// What users see of an encoder: "zlib-6", "pigz-9-128k", "zstd-3".
pub fn encoder_name(enc: &Encoder) -> String {
    let name = match enc.kind {
        EncoderKind::Zlib => zlib::ZlibParams::decode(&enc.params).map(|p| p.0.name()),
        EncoderKind::Zstd => zstd_replay::ZstdParams::decode(&enc.params).map(|p| p.0.name()),
    };
    name.unwrap_or_else(|_| "unknown".into())
}

/// How far (in bytes) an encoder's output may trail its input: what it may
/// hold back before emitting (zstd's worker mode holds a whole job).
pub fn max_lag(enc: &Encoder) -> u64 {
    match enc.kind {
        EncoderKind::Zlib => 0,
        EncoderKind::Zstd => {
            zstd_replay::ZstdParams::decode(&enc.params).map_or(0, |p| p.0.max_lag())
        }
    }
}

/// pigz block sizes (`-b`, KiB) tried after the default 128.
const PIGZ_OTHER_BLOCKS_KIB: [u32; 5] = [64, 256, 512, 1024, 32];

/// Replay candidates for a gzip member, most likely first: zlib's, then pigz
/// at block sizes other than its default.
pub fn gzip_candidates(h: &gzip::Header) -> Vec<Encoder> {
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
