//! The rebuild plan of a compressed blob: its bytes, in order, as parts. Each
//! part says where its bytes come from: kept literally (headers, trailers),
//! re-encoded from the plain stream (a replayed encoder), rebuilt by preflate
//! from the plain stream plus corrections, or stored as they are.
//!
//! Two byte streams feed the parts, each kept as a recipe: the *plain* stream
//! (the tar inside, as decoded from replayed and preflated members) and the
//! *raw* stream (compressed bytes kept as they are, and preflate corrections).
//! A part consumes the next bytes of each stream it names.

use crate::encoding::{put_varint, Reader};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    Zstd,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }
    /// The codec's number in index records.
    pub fn tag(self) -> u8 {
        match self {
            Codec::Gzip => 1,
            Codec::Zstd => 2,
        }
    }
    fn from_tag(t: u8) -> Result<Codec> {
        match t {
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Zstd),
            _ => Err(bad("unknown codec")),
        }
    }
}

/// Which encoder a replay part runs, with its parameters as that encoder's
/// module encodes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoder {
    pub kind: EncoderKind,
    pub params: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderKind {
    /// zlib's deflate (one stream, or pigz's blocks), raw deflate out.
    Zlib,
    /// libzstd, one whole frame out.
    Zstd,
    /// klauspost/compress's deflate (one stream, or pgzip's blocks), raw deflate out.
    Klauspost,
    /// Go's standard compress/flate, raw deflate out.
    GoStd,
    /// GNU gzip's own deflate, raw deflate out.
    GnuGzip,
}

/// What a stored part holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredKind {
    /// Bytes around members: padding, garbage, the rest of a broken stream.
    Opaque,
    /// (The rest of) a gzip member's body or a zstd frame no strategy rebuilt.
    Member,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreflatePiece {
    pub plain_len: u64,
    pub corr_len: u64,
    pub out_len: u64,
}

/// A point inside a replayed part where the encoder can start afresh (a
/// pgzip block start): `plain` bytes of the part's input and `out` bytes of
/// its output lie before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    pub plain: u64,
    pub out: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(Vec<u8>),
    Replay {
        enc: Encoder,
        plain_len: u64,
        out_len: u64,
        /// Increasing; empty for encoders that cannot start mid-stream.
        restarts: Vec<Restart>,
    },
    Preflate {
        pieces: Vec<PreflatePiece>,
    },
    /// `len` bytes of the raw stream, as received. `skip_plain` bytes of the
    /// plain stream belong to this part too (decoded before the member was
    /// given up on): rebuilding skips them.
    Stored {
        len: u64,
        skip_plain: u64,
        kind: StoredKind,
    },
}

impl Part {
    /// Bytes of the blob this part rebuilds.
    pub fn out_len(&self) -> u64 {
        match self {
            Part::Literal(b) => b.len() as u64,
            Part::Replay { out_len, .. } => *out_len,
            Part::Preflate { pieces } => pieces.iter().map(|p| p.out_len).sum(),
            Part::Stored { len, .. } => *len,
        }
    }

    /// Bytes of the plain stream this part consumes.
    pub fn plain_consumed(&self) -> u64 {
        match self {
            Part::Literal(_) => 0,
            Part::Replay { plain_len, .. } => *plain_len,
            Part::Preflate { pieces } => pieces.iter().map(|p| p.plain_len).sum(),
            Part::Stored { skip_plain, .. } => *skip_plain,
        }
    }

    /// Bytes of the raw stream this part consumes.
    pub fn raw_consumed(&self) -> u64 {
        match self {
            Part::Literal(_) | Part::Replay { .. } => 0,
            Part::Preflate { pieces } => pieces.iter().map(|p| p.corr_len).sum(),
            Part::Stored { len, .. } => *len,
        }
    }

    pub fn strategy(&self) -> Strategy {
        match self {
            Part::Literal(_) => Strategy::None,
            Part::Replay { .. } => Strategy::Replay,
            Part::Preflate { .. } => Strategy::Preflate,
            Part::Stored { .. } => Strategy::Stored,
        }
    }
}

/// How a blob is kept, summarised for stats: the strategy of its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Strategy {
    /// Not compressed: the blob is its own plain stream.
    None = 0,
    Replay = 1,
    Preflate = 2,
    Stored = 3,
    /// Members kept by different strategies.
    Mixed = 4,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::None,
        Strategy::Replay,
        Strategy::Preflate,
        Strategy::Stored,
        Strategy::Mixed,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::Replay => "replay",
            Strategy::Preflate => "preflate",
            Strategy::Stored => "stored",
            Strategy::Mixed => "mixed",
        }
    }
    pub fn from_index(i: u8) -> Strategy {
        Strategy::ALL
            .get(i as usize)
            .copied()
            .unwrap_or(Strategy::None)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub codec: Codec,
    /// sha256 of the whole plain stream, when every member decoded.
    pub diff_id: Option<[u8; 32]>,
    /// Size of the plain stream, when every member decoded.
    pub plain_size: Option<u64>,
    pub parts: Vec<Part>,
}

const PLAN_VERSION: u8 = 1;

fn bad(what: &str) -> Error {
    Error::DataLoss(format!("rebuild plan: {what}"))
}

impl Plan {
    /// The blob's strategy: that of its members (headers and trailers aside).
    pub fn strategy(&self) -> Strategy {
        let mut s = None;
        for p in &self.parts {
            let ps = p.strategy();
            if ps == Strategy::None {
                continue;
            }
            // Bytes around members (padding, skippable frames, junk after the
            // last member) do not make a blob stored or mixed.
            if matches!(
                p,
                Part::Stored {
                    kind: StoredKind::Opaque,
                    ..
                }
            ) {
                continue;
            }
            s = match s {
                None => Some(ps),
                Some(x) if x == ps => Some(x),
                Some(_) => Some(Strategy::Mixed),
            };
        }
        s.unwrap_or(Strategy::Stored)
    }

    /// A short description for users: the encoders replayed, or the strategy.
    pub fn describe(&self) -> String {
        let mut names: Vec<String> = Vec::new();
        for p in &self.parts {
            let n = match p {
                Part::Literal(_) => continue,
                Part::Replay { enc, .. } => super::encoder_name(enc),
                Part::Preflate { .. } => "preflate".to_string(),
                Part::Stored {
                    kind: StoredKind::Opaque,
                    ..
                } => continue,
                Part::Stored { .. } => "stored".to_string(),
            };
            if !names.contains(&n) {
                names.push(n);
            }
        }
        if names.is_empty() {
            "stored".into()
        } else {
            names.join("+")
        }
    }

    pub fn out_len(&self) -> u64 {
        self.parts.iter().map(Part::out_len).sum()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![PLAN_VERSION, self.codec.tag()];
        match self.diff_id {
            Some(d) => {
                b.push(1);
                b.extend_from_slice(&d);
            }
            None => b.push(0),
        }
        put_varint(&mut b, self.plain_size.map_or(0, |s| s + 1));
        put_varint(&mut b, self.parts.len() as u64);
        for p in &self.parts {
            match p {
                Part::Literal(l) => {
                    b.push(0);
                    put_varint(&mut b, l.len() as u64);
                    b.extend_from_slice(l);
                }
                Part::Replay {
                    enc,
                    plain_len,
                    out_len,
                    restarts,
                } => {
                    // Tag 4 adds restart points; plans without keep tag 1.
                    b.push(if restarts.is_empty() { 1 } else { 4 });
                    b.push(match enc.kind {
                        EncoderKind::Zlib => 1,
                        EncoderKind::Zstd => 2,
                        EncoderKind::Klauspost => 3,
                        EncoderKind::GoStd => 4,
                        EncoderKind::GnuGzip => 5,
                    });
                    put_varint(&mut b, enc.params.len() as u64);
                    b.extend_from_slice(&enc.params);
                    put_varint(&mut b, *plain_len);
                    put_varint(&mut b, *out_len);
                    if !restarts.is_empty() {
                        put_varint(&mut b, restarts.len() as u64);
                        let mut last = Restart { plain: 0, out: 0 };
                        for r in restarts {
                            put_varint(&mut b, r.plain - last.plain);
                            put_varint(&mut b, r.out - last.out);
                            last = *r;
                        }
                    }
                }
                Part::Preflate { pieces } => {
                    b.push(2);
                    put_varint(&mut b, pieces.len() as u64);
                    for pc in pieces {
                        put_varint(&mut b, pc.plain_len);
                        put_varint(&mut b, pc.corr_len);
                        put_varint(&mut b, pc.out_len);
                    }
                }
                Part::Stored {
                    len,
                    skip_plain,
                    kind,
                } => {
                    b.push(3);
                    b.push(match kind {
                        StoredKind::Opaque => 0,
                        StoredKind::Member => 1,
                    });
                    put_varint(&mut b, *len);
                    put_varint(&mut b, *skip_plain);
                }
            }
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Plan> {
        let mut r = Reader::new(b, "rebuild plan");
        if r.u8()? != PLAN_VERSION {
            return Err(bad("unknown version"));
        }
        let codec = Codec::from_tag(r.u8()?)?;
        let diff_id = match r.u8()? {
            0 => None,
            1 => Some(r.array::<32>()?),
            _ => return Err(bad("bad diff_id flag")),
        };
        let plain_size = r.varint()?.checked_sub(1);
        let n = r.varint()? as usize;
        let mut parts = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let part = match r.u8()? {
                0 => {
                    let len = r.varint()? as usize;
                    Part::Literal(r.bytes(len)?.to_vec())
                }
                tag @ (1 | 4) => {
                    let kind = match r.u8()? {
                        1 => EncoderKind::Zlib,
                        2 => EncoderKind::Zstd,
                        3 => EncoderKind::Klauspost,
                        4 => EncoderKind::GoStd,
                        5 => EncoderKind::GnuGzip,
                        _ => return Err(bad("unknown encoder")),
                    };
                    let len = r.varint()? as usize;
                    let params = r.bytes(len)?.to_vec();
                    let (plain_len, out_len) = (r.varint()?, r.varint()?);
                    let mut restarts = Vec::new();
                    if tag == 4 {
                        let k = r.varint()? as usize;
                        let mut at = Restart { plain: 0, out: 0 };
                        for _ in 0..k {
                            at.plain = at
                                .plain
                                .checked_add(r.varint()?)
                                .ok_or_else(|| bad("restart past the end"))?;
                            at.out = at
                                .out
                                .checked_add(r.varint()?)
                                .ok_or_else(|| bad("restart past the end"))?;
                            // Strictly inside the part, strictly increasing.
                            if at.plain >= plain_len
                                || at.out >= out_len
                                || restarts.last().is_some_and(|l: &Restart| {
                                    l.out >= at.out || l.plain >= at.plain
                                })
                                || at.out == 0
                            {
                                return Err(bad("restart points out of order"));
                            }
                            restarts.push(at);
                        }
                    }
                    Part::Replay {
                        enc: Encoder { kind, params },
                        plain_len,
                        out_len,
                        restarts,
                    }
                }
                2 => {
                    let k = r.varint()? as usize;
                    let mut pieces = Vec::with_capacity(k.min(1 << 16));
                    for _ in 0..k {
                        pieces.push(PreflatePiece {
                            plain_len: r.varint()?,
                            corr_len: r.varint()?,
                            out_len: r.varint()?,
                        });
                    }
                    Part::Preflate { pieces }
                }
                3 => {
                    let kind = match r.u8()? {
                        0 => StoredKind::Opaque,
                        1 => StoredKind::Member,
                        _ => return Err(bad("unknown stored kind")),
                    };
                    Part::Stored {
                        kind,
                        len: r.varint()?,
                        skip_plain: r.varint()?,
                    }
                }
                _ => return Err(bad("unknown part")),
            };
            parts.push(part);
        }
        if !r.is_empty() {
            return Err(bad("trailing bytes"));
        }
        // Lengths are summed by readers: a damaged record must not overflow them.
        let (mut out, mut plain, mut raw) = (0u64, 0u64, 0u64);
        for p in &parts {
            let (o, pl, rw) = match p {
                Part::Preflate { pieces } => pieces.iter().try_fold((0u64, 0u64, 0u64), |a, pc| {
                    Some((
                        a.0.checked_add(pc.out_len)?,
                        a.1.checked_add(pc.plain_len)?,
                        a.2.checked_add(pc.corr_len)?,
                    ))
                }),
                p => Some((p.out_len(), p.plain_consumed(), p.raw_consumed())),
            }
            .ok_or_else(|| bad("lengths overflow"))?;
            out = out.checked_add(o).ok_or_else(|| bad("lengths overflow"))?;
            plain = plain
                .checked_add(pl)
                .ok_or_else(|| bad("lengths overflow"))?;
            raw = raw.checked_add(rw).ok_or_else(|| bad("lengths overflow"))?;
        }
        Ok(Plan {
            codec,
            diff_id,
            plain_size,
            parts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plans are on disk: each encoder kind's tag (and a replay part's
    /// layout) must never change. New kinds take new tags.
    #[test]
    fn golden_replay_part_per_encoder_kind() {
        let golden = [
            (EncoderKind::Zlib, "0101000101010100650a"),
            (EncoderKind::Zstd, "0101000101010200650a"),
            (EncoderKind::Klauspost, "0101000101010300650a"),
            (EncoderKind::GoStd, "0101000101010400650a"),
            (EncoderKind::GnuGzip, "0101000101010500650a"),
        ];
        for (kind, hex) in golden {
            let p = Plan {
                codec: Codec::Gzip,
                diff_id: None,
                plain_size: Some(0),
                parts: vec![Part::Replay {
                    enc: Encoder {
                        kind,
                        params: vec![],
                    },
                    plain_len: 101,
                    out_len: 10,
                    restarts: vec![],
                }],
            };
            let b = p.encode();
            assert_eq!(hex::encode(&b), hex, "{kind:?}");
            assert_eq!(Plan::decode(&b).unwrap(), p);
        }
        // A GNU gzip replay as ingest writes it: params format 1, family 1, level 6.
        let gnu = Plan {
            codec: Codec::Gzip,
            diff_id: None,
            plain_size: Some(4),
            parts: vec![Part::Replay {
                enc: Encoder {
                    kind: EncoderKind::GnuGzip,
                    params: vec![1, 1, 6],
                },
                plain_len: 4,
                out_len: 6,
                restarts: vec![],
            }],
        };
        assert_eq!(hex::encode(gnu.encode()), "01010005010105030101060406");
        // The next tag is unknown.
        let mut b = gnu.encode();
        b[6] = 6;
        assert!(Plan::decode(&b).is_err());
    }

    #[test]
    fn plans_round_trip_and_damage_is_an_error() {
        let p = Plan {
            codec: Codec::Gzip,
            diff_id: Some([7; 32]),
            plain_size: Some(0),
            parts: vec![
                Part::Literal(vec![0x1f, 0x8b, 8, 0]),
                Part::Replay {
                    enc: Encoder {
                        kind: EncoderKind::Zlib,
                        params: vec![1, 6, 15],
                    },
                    plain_len: 1 << 40,
                    out_len: 12345,
                    restarts: vec![],
                },
                Part::Replay {
                    enc: Encoder {
                        kind: EncoderKind::Klauspost,
                        params: vec![1, 1, 5, 1, 0, 0, 4, 0],
                    },
                    plain_len: 3 << 18,
                    out_len: 300_000,
                    restarts: vec![
                        Restart {
                            plain: 1 << 18,
                            out: 90_000,
                        },
                        Restart {
                            plain: 2 << 18,
                            out: 190_000,
                        },
                    ],
                },
                Part::Preflate {
                    pieces: vec![PreflatePiece {
                        plain_len: 9,
                        corr_len: 2,
                        out_len: 5,
                    }],
                },
                Part::Stored {
                    len: 99,
                    skip_plain: 3,
                    kind: StoredKind::Member,
                },
            ],
        };
        let enc = p.encode();
        assert_eq!(Plan::decode(&enc).unwrap(), p);
        for cut in 0..enc.len() {
            assert!(Plan::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(p.strategy(), Strategy::Mixed);
        // Lengths that overflow when summed (found by fuzzing) are refused.
        for parts in [
            vec![
                Part::Stored {
                    len: u64::MAX,
                    skip_plain: 0,
                    kind: StoredKind::Opaque,
                },
                Part::Literal(vec![1]),
            ],
            vec![Part::Preflate {
                pieces: vec![
                    PreflatePiece {
                        plain_len: 1,
                        corr_len: 1,
                        out_len: u64::MAX,
                    };
                    2
                ],
            }],
        ] {
            let bad = Plan { parts, ..p.clone() };
            assert!(Plan::decode(&bad.encode()).is_err());
        }
        assert_eq!(p.out_len(), 4 + 12345 + 300_000 + 5 + 99);
        // Restart points must lie inside their part, in order.
        for restarts in [
            vec![Restart { plain: 1, out: 0 }],
            vec![Restart {
                plain: 3 << 18,
                out: 5,
            }],
            vec![Restart {
                plain: 5,
                out: 300_000,
            }],
            vec![Restart { plain: 9, out: 9 }, Restart { plain: 9, out: 10 }],
        ] {
            let mut bad = p.clone();
            if let Part::Replay { restarts: r, .. } = &mut bad.parts[2] {
                *r = restarts;
            }
            assert!(Plan::decode(&bad.encode()).is_err());
        }
    }
}
