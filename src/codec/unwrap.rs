//! Ingest side of the codec stage: decodes a gzip or zstd blob as it streams
//! in, hands its plain stream on, and proves a way to rebuild each member's
//! exact compressed bytes before it lets them go.
//!
//! Per member (gzip member body or zstd frame):
//! 1. *Probe*: the first compressed bytes and what they decode to are held in
//!    memory; candidate encoders re-encode the plain prefix one after another
//!    and the first whose output is a prefix of the bytes received wins.
//! 2. *Confirm*: the winner re-encodes the rest in step with the decode; the
//!    member's compressed bytes are spooled to an unlinked file meanwhile, so
//!    that if the output ever differs the member can still be kept as it came.
//! 3. When no replay fits a deflate body, preflate splits it into plain bytes
//!    plus corrections; when that fails too, the bytes are stored as received.
//!
//! Nothing here refuses a push: bad streams, bombs and truncations end in
//! stored bytes, which rebuild exactly by construction.

use super::gzip::{self, Parse};
use super::plan::{Codec, Encoder, Part, Plan, PreflatePiece, StoredKind};
use super::preflate::PreflateSplitter;
use super::zstd_replay;
use super::Reencoder;
use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Where the decoded and kept bytes go.
pub trait Streams {
    /// The next bytes of the plain stream (stored as the plain recipe).
    fn plain(&mut self, b: &[u8]) -> Result<()>;
    /// The next bytes of the raw stream (compressed bytes kept as they are,
    /// and preflate corrections).
    fn raw(&mut self, b: &[u8]) -> Result<()>;
}

#[derive(Debug, Clone)]
pub struct UnwrapConfig {
    /// A member whose plain size passes this multiple of its compressed size
    /// (plus a MiB) is a decompression bomb: it is stored as received.
    pub max_ratio: u64,
    /// Try preflate on deflate bodies no replay fits.
    pub preflate: bool,
    /// Only decode: every member's plain bytes go to the plain stream and no
    /// plan is proven (plain reads of blobs kept compressed).
    pub decode_only: bool,
    /// Trust a replay candidate that passes the probe for the rest of its
    /// member instead of re-encoding in step: what `strata analyze` does to
    /// run at decoding speed. The daemon never does this.
    pub trust_probe: bool,
    /// Keep a gzip or zstd blob as received, undecoded, and say so
    /// (`Unwrapper::deferred`): a later conversion decodes and proves it
    /// (`store/convert.rs`), so a writer waiting on each reply does not.
    pub defer: bool,
}

impl Default for UnwrapConfig {
    fn default() -> Self {
        UnwrapConfig {
            max_ratio: 250,
            preflate: true,
            decode_only: false,
            trust_probe: false,
            defer: false,
        }
    }
}

impl UnwrapConfig {
    pub fn decode_only() -> Self {
        UnwrapConfig {
            max_ratio: u64::MAX,
            preflate: false,
            decode_only: true,
            trust_probe: false,
            defer: false,
        }
    }
}

/// Compressed bytes held while candidates are probed.
const PROBE_COMP: usize = 256 << 10;
/// Plain bytes held while candidates are probed (highly compressible input).
const PROBE_PLAIN: usize = 8 << 20;
/// Candidates re-encode the probe in steps this big, stopping at the first difference.
const PROBE_STEP: usize = 64 << 10;
/// How far an encoder's output may trail the bytes received: what it may
/// hold back in its own buffers.
const MAX_LAG: usize = 1 << 20;
const BOMB_SLACK: u64 = 1 << 20;
const DECODE_BUF: usize = 256 << 10;
/// Longest zstd frame header.
const ZSTD_HEADER_MAX: usize = 18;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

enum State {
    /// The first bytes, until they say which codec (if any) made the blob.
    Sniff(Vec<u8>),
    /// Not compressed: the blob is its own plain stream.
    Plain,
    GzHeader(Vec<u8>),
    Member(Box<Member>),
    GzTrailer(Vec<u8>),
    /// After a gzip member: another member, or something else.
    GzNext(Vec<u8>),
    /// Before a zstd frame or a skippable frame.
    ZstdNext(Vec<u8>),
    Skippable(u64),
    /// The rest of the blob is kept as it is.
    Tail,
}

pub struct Unwrapper {
    cfg: UnwrapConfig,
    spool_dir: PathBuf,
    state: State,
    codec: Option<Codec>,
    parts: Vec<Part>,
    diff: ring::digest::Context,
    plain_size: u64,
    /// Every member so far decoded to its end (and matched its checksum).
    decoded: bool,
    /// CRC-32 and size of the gzip member just decoded, for its trailer.
    member_check: Option<(u32, u32)>,
    /// A compressed blob passed through as it came (`UnwrapConfig::defer`).
    deferred: bool,
}

impl Unwrapper {
    pub fn new(cfg: UnwrapConfig, spool_dir: &Path) -> Self {
        Unwrapper {
            cfg,
            spool_dir: spool_dir.to_path_buf(),
            state: State::Sniff(Vec::new()),
            codec: None,
            parts: Vec::new(),
            diff: ring::digest::Context::new(&ring::digest::SHA256),
            plain_size: 0,
            decoded: true,
            member_check: None,
            deferred: false,
        }
    }

    /// The blob looked compressed and was passed on undecoded, as its own
    /// plain stream (`UnwrapConfig::defer`).
    pub fn deferred(&self) -> bool {
        self.deferred
    }

    /// Passes the whole blob on as its own plain stream.
    fn defer(&mut self, buf: Vec<u8>, out: &mut dyn Streams) -> Result<()> {
        self.deferred = true;
        self.state = State::Plain;
        out.plain(&buf)
    }

    pub fn feed(&mut self, mut data: &[u8], out: &mut dyn Streams) -> Result<()> {
        while !data.is_empty() {
            data = self.step(data, out)?;
        }
        Ok(())
    }

    /// Handles some of `data`; returns the rest.
    fn step<'a>(&mut self, data: &'a [u8], out: &mut dyn Streams) -> Result<&'a [u8]> {
        match &mut self.state {
            State::Plain => {
                out.plain(data)?;
                Ok(&[])
            }
            State::Tail => {
                out.raw(data)?;
                self.stored(data.len() as u64, 0, StoredKind::Opaque);
                Ok(&[])
            }
            State::Sniff(buf) => {
                let take = data
                    .len()
                    .min(ZSTD_HEADER_MAX.saturating_sub(buf.len()).max(1));
                buf.extend_from_slice(&data[..take]);
                let buf = std::mem::take(buf);
                self.sniff(buf, false, out)?;
                Ok(&data[take..])
            }
            State::GzHeader(buf) => {
                buf.extend_from_slice(data);
                let buf = std::mem::take(buf);
                match gzip::parse_header(&buf) {
                    Parse::NeedMore => {
                        self.state = State::GzHeader(buf);
                        Ok(&[])
                    }
                    Parse::NotGzip => {
                        // Not a gzip after all (first member), or junk after the last.
                        self.state = match self.codec {
                            None => State::Plain,
                            Some(_) => State::Tail,
                        };
                        self.step_owned(buf, out)
                    }
                    Parse::Header(h) => {
                        self.codec = Some(Codec::Gzip);
                        self.literal(&buf[..h.len]);
                        let member = Member::new(
                            Kind::Deflate,
                            super::gzip_candidates(&h),
                            &self.cfg,
                            &self.spool_dir,
                        );
                        self.state = State::Member(Box::new(member));
                        self.step_owned(buf[h.len..].to_vec(), out)
                    }
                }
            }
            State::GzTrailer(buf) => {
                let take = (gzip::TRAILER - buf.len()).min(data.len());
                buf.extend_from_slice(&data[..take]);
                if buf.len() == gzip::TRAILER {
                    let t = std::mem::take(buf);
                    let crc = u32::from_le_bytes(t[..4].try_into().expect("4 bytes"));
                    let isize = u32::from_le_bytes(t[4..].try_into().expect("4 bytes"));
                    if self.member_check.take() != Some((crc, isize)) {
                        // Replays may still be exact, but the tar inside is suspect.
                        self.decoded = false;
                    }
                    self.literal(&t);
                    self.state = State::GzNext(Vec::new());
                }
                Ok(&data[take..])
            }
            State::GzNext(buf) => {
                buf.push(data[0]);
                if !gzip::could_start(buf) {
                    let buf = std::mem::take(buf);
                    self.state = State::Tail;
                    self.step_owned(buf, out)?;
                } else if buf.len() == 3 {
                    self.state = State::GzHeader(std::mem::take(buf));
                }
                Ok(&data[1..])
            }
            State::ZstdNext(buf) => {
                let take = (ZSTD_HEADER_MAX - buf.len()).min(data.len());
                buf.extend_from_slice(&data[..take]);
                let buf = std::mem::take(buf);
                self.zstd_next(buf, false, out)?;
                Ok(&data[take..])
            }
            State::Skippable(left) => {
                let take = (*left).min(data.len() as u64) as usize;
                *left -= take as u64;
                if *left == 0 {
                    self.state = State::ZstdNext(Vec::new());
                }
                out.raw(&data[..take])?;
                self.stored(take as u64, 0, StoredKind::Opaque);
                Ok(&data[take..])
            }
            State::Member(m) => {
                let (used, ended) = m.feed(data, out, &mut self.diff)?;
                let abandoned = m.abandoned;
                if let Some(end) = ended {
                    self.end_member(end);
                } else if abandoned {
                    // A bomb or a broken stream: the rest is kept as it is.
                    let State::Member(m) = std::mem::replace(&mut self.state, State::Tail) else {
                        unreachable!("in a member")
                    };
                    self.decoded = false;
                    let parts = m.abandon(out)?;
                    self.parts.extend(parts);
                }
                Ok(&data[used..])
            }
        }
    }

    /// Re-runs bytes that were buffered under a state just left.
    fn step_owned(&mut self, buf: Vec<u8>, out: &mut dyn Streams) -> Result<&'static [u8]> {
        self.feed(&buf, out)?;
        Ok(&[])
    }

    fn sniff(&mut self, buf: Vec<u8>, at_end: bool, out: &mut dyn Streams) -> Result<()> {
        if gzip::could_start(&buf) && (buf.len() >= 3 || !at_end) {
            if buf.len() < 3 {
                self.state = State::Sniff(buf);
                return Ok(());
            }
            if self.cfg.defer {
                return self.defer(buf, out);
            }
            // The header parser decides whether this really is gzip.
            self.state = State::GzHeader(Vec::new());
            return self.feed(&buf, out);
        }
        let magic = &buf[..buf.len().min(4)];
        if ZSTD_MAGIC.starts_with(magic) || skippable_prefix(magic) {
            if buf.len() >= 4 && self.cfg.defer {
                return self.defer(buf, out);
            }
            if buf.len() >= 4 {
                self.codec = Some(Codec::Zstd);
                self.state = State::ZstdNext(Vec::new());
                return self.feed(&buf, out);
            }
            if !at_end {
                self.state = State::Sniff(buf);
                return Ok(());
            }
        }
        self.state = State::Plain;
        out.plain(&buf)
    }

    fn zstd_next(&mut self, buf: Vec<u8>, at_end: bool, out: &mut dyn Streams) -> Result<()> {
        if buf.len() >= 8 && is_skippable(&buf) {
            let len = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes")) as u64;
            self.state = State::Skippable(len + 8);
            return self.feed(&buf, out);
        }
        if buf.len() >= 4 && buf[..4] == ZSTD_MAGIC {
            match zstd_replay::parse_frame_header(&buf) {
                None if !at_end => {
                    self.state = State::ZstdNext(buf);
                    return Ok(());
                }
                Some(Ok(h)) => {
                    let member = Member::new(
                        Kind::Zstd,
                        super::zstd_candidates(&h),
                        &self.cfg,
                        &self.spool_dir,
                    );
                    self.state = State::Member(Box::new(member));
                    return self.feed(&buf, out);
                }
                _ => {}
            }
        } else if !at_end
            && buf.len() < 8
            && (ZSTD_MAGIC.starts_with(&buf[..buf.len().min(4)])
                || skippable_prefix(&buf[..buf.len().min(4)]))
        {
            self.state = State::ZstdNext(buf);
            return Ok(());
        }
        self.state = State::Tail;
        self.feed(&buf, out)
    }

    fn end_member(&mut self, end: MemberEnd) {
        let State::Member(m) = std::mem::replace(&mut self.state, State::Tail) else {
            unreachable!("a member ended outside a member")
        };
        self.plain_size += m.plain_len;
        self.member_check = Some((m.crc.clone().finalize(), m.plain_len as u32));
        self.state = match m.kind {
            Kind::Deflate => State::GzTrailer(Vec::new()),
            Kind::Zstd => State::ZstdNext(Vec::new()),
        };
        self.parts.extend(end.parts);
    }

    /// Ends the blob. `None`: it was not compressed, and the plain stream is
    /// the blob itself.
    pub fn finish(mut self, out: &mut dyn Streams) -> Result<Option<Plan>> {
        loop {
            match std::mem::replace(&mut self.state, State::Tail) {
                State::Sniff(buf) => {
                    self.sniff(buf, true, out)?;
                    if matches!(self.state, State::Plain) {
                        return Ok(None);
                    }
                    continue;
                }
                State::Plain => return Ok(None),
                State::GzHeader(buf) if self.codec.is_none() => {
                    // Too short to be gzip.
                    out.plain(&buf)?;
                    return Ok(None);
                }
                State::GzHeader(buf) | State::GzTrailer(buf) => {
                    // A member cut short.
                    self.decoded &= buf.is_empty();
                    self.feed(&buf, out)?;
                }
                State::GzNext(buf) => self.feed(&buf, out)?,
                State::ZstdNext(buf) => {
                    if buf.is_empty() {
                        break;
                    }
                    self.zstd_next(buf, true, out)?;
                    continue;
                }
                State::Member(m) => {
                    // Truncated inside a member.
                    self.decoded = false;
                    let parts = m.abandon(out)?;
                    self.parts.extend(parts);
                }
                State::Skippable(_) | State::Tail => {}
            }
            break;
        }
        let mut parts: Vec<Part> = Vec::with_capacity(self.parts.len());
        for p in self.parts {
            match (parts.last_mut(), p) {
                (Some(Part::Literal(a)), Part::Literal(b)) => a.extend_from_slice(&b),
                (
                    Some(Part::Stored {
                        len,
                        kind: StoredKind::Opaque,
                        ..
                    }),
                    Part::Stored {
                        len: l2,
                        skip_plain: 0,
                        kind: StoredKind::Opaque,
                    },
                ) => *len += l2,
                (_, p) => parts.push(p),
            }
        }
        let decoded = self.decoded;
        let digest = self.diff.finish();
        Ok(Some(Plan {
            codec: self.codec.unwrap_or(Codec::Gzip),
            diff_id: decoded.then(|| digest.as_ref().try_into().expect("32 bytes")),
            plain_size: decoded.then_some(self.plain_size),
            parts,
        }))
    }

    fn literal(&mut self, b: &[u8]) {
        if !b.is_empty() {
            self.parts.push(Part::Literal(b.to_vec()));
        }
    }

    fn stored(&mut self, len: u64, skip_plain: u64, kind: StoredKind) {
        if len > 0 {
            self.parts.push(Part::Stored {
                len,
                skip_plain,
                kind,
            });
        }
    }
}

fn is_skippable(b: &[u8]) -> bool {
    b.len() >= 4 && b[0] & 0xf0 == 0x50 && b[1..4] == [0x2a, 0x4d, 0x18]
}

fn skippable_prefix(b: &[u8]) -> bool {
    let m = [0x50u8, 0x2a, 0x4d, 0x18];
    b.iter()
        .zip(m.iter())
        .enumerate()
        .all(|(i, (x, y))| if i == 0 { x & 0xf0 == *y } else { x == y })
}

#[derive(Clone, Copy)]
enum Kind {
    Deflate,
    Zstd,
}

enum Decoder {
    Deflate(flate2::Decompress),
    Zstd(zstd::stream::raw::Decoder<'static>),
}

impl Decoder {
    fn new(kind: Kind) -> Result<Decoder> {
        Ok(match kind {
            Kind::Deflate => Decoder::Deflate(flate2::Decompress::new(false)),
            Kind::Zstd => Decoder::Zstd(
                zstd::stream::raw::Decoder::new()
                    .map_err(|e| Error::Internal(format!("zstd decoder: {e}")))?,
            ),
        })
    }

    /// Decodes some of `input` into `out` (emptied first): bytes consumed,
    /// and whether the member ended. Err: the stream is broken.
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> std::result::Result<(usize, bool), ()> {
        out.clear();
        match self {
            Decoder::Deflate(d) => {
                let before = d.total_in();
                let status = d
                    .decompress_vec(input, out, flate2::FlushDecompress::None)
                    .map_err(|_| ())?;
                let used = (d.total_in() - before) as usize;
                if used == 0
                    && out.is_empty()
                    && status != flate2::Status::StreamEnd
                    && !input.is_empty()
                {
                    return Err(());
                }
                Ok((used, status == flate2::Status::StreamEnd))
            }
            Decoder::Zstd(d) => {
                use zstd::stream::raw::Operation;
                let cap = out.capacity();
                out.resize(cap, 0);
                let st = d.run_on_buffers(input, out).map_err(|_| ())?;
                out.truncate(st.bytes_written);
                if st.bytes_read == 0
                    && st.bytes_written == 0
                    && st.remaining != 0
                    && !input.is_empty()
                {
                    return Err(());
                }
                Ok((st.bytes_read, st.remaining == 0))
            }
        }
    }
}

struct MemberEnd {
    parts: Vec<Part>,
}

enum Phase {
    Probe {
        comp: Vec<u8>,
        plain: Vec<u8>,
    },
    /// The likeliest candidate that passed the probe re-encodes in step;
    /// should it differ later, the others that passed are tried in turn
    /// against the spool (some producers agree for a window or a job).
    Replay {
        live: Vec<Live>,
        backups: Vec<Encoder>,
        /// Bytes received that not every live candidate has produced yet;
        /// `recv_base` is the member offset of its first byte.
        recv: VecDeque<u8>,
        recv_base: u64,
        spool: Spool,
        scratch: Vec<u8>,
    },
    Preflate {
        splitter: Box<PreflateSplitter>,
        pieces: Vec<PreflatePiece>,
        /// Compressed bytes the pieces so far cover.
        covered: u64,
        spool: Spool,
    },
    /// Proven on the whole member while probing (a small member).
    Confirmed(Part),
    /// Kept as received from `stored_from` on.
    Stored,
    /// Decode only: plain bytes out, nothing kept.
    Decode,
    /// `trust_probe`: the candidate that passed the probe is taken as the
    /// member's encoder; the compressed bytes are spooled only in case the
    /// stream breaks.
    Trusted {
        enc: Encoder,
        spool: Spool,
    },
}

/// A candidate encoder re-encoding a member in step with its decode.
struct Live {
    enc: Encoder,
    re: Box<dyn Reencoder>,
    /// Member bytes it produced (all matching what was received).
    made: u64,
    /// How far its output may trail the bytes received.
    max_lag: u64,
}

struct Member {
    kind: Kind,
    dec: Option<Decoder>,
    candidates: Vec<Encoder>,
    max_ratio: u64,
    preflate: bool,
    trust_probe: bool,
    spool_dir: PathBuf,
    phase: Phase,
    comp_len: u64,
    plain_len: u64,
    /// Plain bytes handed to the plain stream.
    plain_out: u64,
    abandoned: bool,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    /// Parts that still hold after a strategy failed part way (preflate's
    /// pieces so far).
    kept: Vec<Part>,
    /// Where in the member its stored bytes begin.
    stored_from: u64,
    /// Plain bytes handed on before the member was given up.
    skip_plain: u64,
    /// Plain bytes a replay that failed part way handed on, which preflate,
    /// restarting at the member's start, decodes again and must not hand on
    /// twice: the plain stream stays the member's plain bytes, once, so the
    /// tar inside keeps its shape (and its chunks, and the content it shares).
    dup_plain: u64,
}

impl Member {
    fn new(kind: Kind, candidates: Vec<Encoder>, cfg: &UnwrapConfig, spool_dir: &Path) -> Member {
        Member {
            kind,
            dec: Decoder::new(kind).ok(),
            candidates,
            max_ratio: cfg.max_ratio,
            preflate: cfg.preflate && matches!(kind, Kind::Deflate),
            trust_probe: cfg.trust_probe,
            spool_dir: spool_dir.to_path_buf(),
            phase: if cfg.decode_only {
                Phase::Decode
            } else {
                Phase::Probe {
                    comp: Vec::new(),
                    plain: Vec::new(),
                }
            },
            comp_len: 0,
            plain_len: 0,
            plain_out: 0,
            abandoned: false,
            buf: Vec::with_capacity(DECODE_BUF),
            crc: crc32fast::Hasher::new(),
            kept: Vec::new(),
            stored_from: 0,
            skip_plain: 0,
            dup_plain: 0,
        }
    }

    /// Decodes what it can of `data`: bytes used, and the member's parts
    /// when it ended.
    fn feed(
        &mut self,
        data: &[u8],
        out: &mut dyn Streams,
        diff: &mut ring::digest::Context,
    ) -> Result<(usize, Option<MemberEnd>)> {
        let mut used = 0;
        let mut buf = std::mem::take(&mut self.buf);
        while used < data.len() && !self.abandoned {
            let Some(dec) = self.dec.as_mut() else {
                self.abandoned = true;
                break;
            };
            let Ok((n, ended)) = dec.step(&data[used..], &mut buf) else {
                self.abandoned = true;
                break;
            };
            let comp = &data[used..used + n];
            used += n;
            self.comp_len += n as u64;
            self.plain_len += buf.len() as u64;
            diff.update(&buf);
            if matches!(self.kind, Kind::Deflate) {
                self.crc.update(&buf);
            }
            self.take(comp, &buf, out)?;
            if self.plain_len
                > self
                    .max_ratio
                    .saturating_mul(self.comp_len)
                    .saturating_add(BOMB_SLACK)
            {
                self.abandoned = true;
                break;
            }
            if ended {
                self.buf = buf;
                let parts = self.end(out)?;
                return Ok((used, Some(MemberEnd { parts })));
            }
        }
        self.buf = buf;
        Ok((used, None))
    }

    /// Takes the next compressed bytes and what they decoded to.
    fn take(&mut self, comp: &[u8], plain: &[u8], out: &mut dyn Streams) -> Result<()> {
        match &mut self.phase {
            Phase::Probe { comp: c, plain: p } => {
                c.extend_from_slice(comp);
                p.extend_from_slice(plain);
                if c.len() >= PROBE_COMP || p.len() >= PROBE_PLAIN {
                    self.choose(false, out)?;
                }
                Ok(())
            }
            Phase::Replay {
                live,
                backups,
                recv,
                recv_base,
                spool,
                scratch,
            } => {
                spool.write(comp)?;
                recv.extend(comp);
                out.plain(plain)?;
                self.plain_out += plain.len() as u64;
                let received = *recv_base + recv.len() as u64;
                live.retain_mut(|l| {
                    scratch.clear();
                    l.re.feed(plain, scratch).is_ok()
                        && matches_at(recv, *recv_base, l.made, scratch)
                        && {
                            l.made += scratch.len() as u64;
                            received - l.made <= l.max_lag
                        }
                });
                if live.is_empty() {
                    match next_backup(self.kind, backups, spool)? {
                        Some((l, r, base)) => {
                            live.push(l);
                            *recv = r;
                            *recv_base = base;
                            return Ok(());
                        }
                        None => return self.give_up(out),
                    }
                }
                let low = live.iter().map(|l| l.made).min().expect("not empty");
                recv.drain(..(low - *recv_base) as usize);
                *recv_base = low;
                Ok(())
            }
            Phase::Preflate {
                splitter,
                spool,
                pieces,
                covered,
            } => {
                spool.write(comp)?;
                let (plain_out, dup) = (&mut self.plain_out, &mut self.dup_plain);
                let mut sink_err = None;
                let r = splitter.feed_with(comp, &mut |p| {
                    emit_piece(p, out, pieces, covered, plain_out, dup).inspect_err(|e| {
                        sink_err = Some(e.to_string());
                    })
                });
                match (r, sink_err) {
                    (Ok(()), _) => Ok(()),
                    // The store failed, not preflate: that fails the push.
                    (Err(e), Some(_)) => Err(e),
                    (Err(_), None) => self.give_up(out),
                }
            }
            Phase::Trusted { spool, .. } => {
                spool.write(comp)?;
                self.plain_out += plain.len() as u64;
                out.plain(plain)
            }
            Phase::Confirmed(_) => Err(Error::Internal("bytes after a member's end".into())),
            Phase::Stored => out.raw(comp),
            Phase::Decode => out.plain(plain),
        }
    }

    /// Picks the strategy for the member from the probe.
    fn choose(&mut self, ended: bool, out: &mut dyn Streams) -> Result<()> {
        let Phase::Probe { comp, plain } = std::mem::replace(&mut self.phase, Phase::Stored) else {
            return Ok(());
        };
        // The first candidate (in order) whose output matches the probe is
        // the active one; those after it wait, unprobed, as backups. When
        // none does, the stream's own structure may suggest more.
        let mut i = 0;
        let mut looked = false;
        loop {
            if i == self.candidates.len() {
                if looked || !matches!(self.kind, Kind::Deflate) {
                    break;
                }
                looked = true;
                self.candidates
                    .extend(super::gzip_structure_candidates(&comp));
                continue;
            }
            let enc = self.candidates[i].clone();
            let enc = &enc;
            i += 1;
            let Ok(mut re) = super::reencoder(enc) else {
                continue;
            };
            let max_lag = super::max_lag(enc).max(MAX_LAG as u64);
            let Some(mut produced) = probe(re.as_mut(), &plain, &comp, ended, max_lag) else {
                continue;
            };
            let mut max_lag = max_lag;
            // The probe needs output early, so it runs on this thread; the
            // rest of a member whose blocks are independent is confirmed on
            // the pool, several blocks at once, by an encoder started over.
            if !ended {
                if let Some((mut par, lag)) = super::parallel_reencoder(enc) {
                    let mut early = Vec::new();
                    if par.feed(&plain, &mut early).is_ok() && comp.starts_with(&early) {
                        re = par;
                        produced = early.len();
                        max_lag = max_lag.max(lag);
                    }
                }
            }
            out.plain(&plain)?;
            self.plain_out += plain.len() as u64;
            if ended {
                self.phase = Phase::Confirmed(Part::Replay {
                    enc: enc.clone(),
                    plain_len: plain.len() as u64,
                    out_len: comp.len() as u64,
                    restarts: super::thin_restarts(re.restarts(), plain.len() as u64),
                });
                return Ok(());
            }
            let mut spool = Spool::new(&self.spool_dir)?;
            spool.write(&comp)?;
            if self.trust_probe {
                self.phase = Phase::Trusted {
                    enc: enc.clone(),
                    spool,
                };
                return Ok(());
            }
            self.phase = Phase::Replay {
                live: vec![Live {
                    enc: enc.clone(),
                    re,
                    made: produced as u64,
                    max_lag,
                }],
                backups: self.candidates[i..].to_vec(),
                recv: comp[produced..].iter().copied().collect(),
                recv_base: produced as u64,
                spool,
                scratch: Vec::new(),
            };
            return Ok(());
        }
        if self.preflate {
            self.phase = Phase::Preflate {
                splitter: Box::new(PreflateSplitter::new()),
                pieces: Vec::new(),
                covered: 0,
                spool: Spool::new(&self.spool_dir)?,
            };
            return self.take(&comp, &[], out);
        }
        out.raw(&comp)
    }

    /// The member's last compressed byte was decoded: confirm the strategy.
    fn end(&mut self, out: &mut dyn Streams) -> Result<Vec<Part>> {
        if matches!(self.phase, Phase::Probe { .. }) {
            self.choose(true, out)?;
        }
        // A failed replay may hand over to preflate, which then ends too.
        loop {
            match std::mem::replace(&mut self.phase, Phase::Stored) {
                Phase::Confirmed(p) => return Ok(vec![p]),
                Phase::Replay {
                    live,
                    mut backups,
                    mut recv,
                    mut recv_base,
                    mut spool,
                    mut scratch,
                } => {
                    // The active candidate, or else the next that passed the
                    // probe and reproduces the member so far, must end exactly
                    // on the member.
                    let total = recv_base + recv.len() as u64;
                    let mut next = live.into_iter().next();
                    while let Some(mut l) = next {
                        scratch.clear();
                        if l.re.finish(&mut scratch).is_ok()
                            && matches_at(&recv, recv_base, l.made, &scratch)
                            && l.made + scratch.len() as u64 == total
                        {
                            return Ok(vec![Part::Replay {
                                restarts: super::thin_restarts(l.re.restarts(), self.plain_out),
                                enc: l.enc,
                                plain_len: self.plain_out,
                                out_len: total,
                            }]);
                        }
                        next = match next_backup(self.kind, &mut backups, &mut spool)? {
                            Some((l, r, base)) => {
                                recv = r;
                                recv_base = base;
                                Some(l)
                            }
                            None => None,
                        };
                    }
                    self.phase = Phase::Replay {
                        live: Vec::new(),
                        backups,
                        recv,
                        recv_base,
                        spool,
                        scratch,
                    };
                    self.give_up(out)?;
                    continue;
                }
                Phase::Preflate {
                    splitter,
                    pieces,
                    covered,
                    spool,
                } => {
                    self.phase = Phase::Preflate {
                        splitter: Box::new(PreflateSplitter::new()),
                        pieces,
                        covered,
                        spool,
                    };
                    let Phase::Preflate {
                        pieces, covered, ..
                    } = &mut self.phase
                    else {
                        unreachable!("set above")
                    };
                    let (plain_out, dup) = (&mut self.plain_out, &mut self.dup_plain);
                    let mut sink_err = None;
                    let r = splitter.finish_with(&mut |p| {
                        emit_piece(p, out, pieces, covered, plain_out, dup).inspect_err(|e| {
                            sink_err = Some(e.to_string());
                        })
                    });
                    match (r, sink_err) {
                        (Ok(_), _) if *covered == self.comp_len => {
                            // After a replay that failed part way, `kept` says
                            // which plain bytes to skip.
                            let mut parts = std::mem::take(&mut self.kept);
                            parts.push(Part::Preflate {
                                pieces: std::mem::take(pieces),
                            });
                            return Ok(parts);
                        }
                        (Err(e), Some(_)) => return Err(e),
                        _ => self.fall_back(out, false)?,
                    }
                }
                Phase::Decode => return Ok(Vec::new()),
                Phase::Trusted { enc, .. } => {
                    return Ok(vec![Part::Replay {
                        enc,
                        plain_len: self.plain_out,
                        out_len: self.comp_len,
                        restarts: Vec::new(),
                    }])
                }
                Phase::Probe { .. } | Phase::Stored => {}
            }
            break;
        }
        Ok(self.stored_parts())
    }

    /// What is left of a member that (from some point on) is kept as received.
    fn stored_parts(&mut self) -> Vec<Part> {
        let mut parts = std::mem::take(&mut self.kept);
        if self.comp_len > self.stored_from {
            parts.push(Part::Stored {
                len: self.comp_len - self.stored_from,
                skip_plain: self.skip_plain,
                kind: StoredKind::Member,
            });
        }
        parts
    }

    /// The chosen strategy failed part way: keep the member's compressed
    /// bytes (from the spool) instead, and store the rest as it comes.
    fn give_up(&mut self, out: &mut dyn Streams) -> Result<()> {
        self.fall_back(out, self.preflate)
    }

    /// Leaves the current strategy: for a replay that failed, preflate over
    /// the member from its start (when allowed), else the bytes as received.
    fn fall_back(&mut self, out: &mut dyn Streams, preflate: bool) -> Result<()> {
        match std::mem::replace(&mut self.phase, Phase::Stored) {
            Phase::Replay { mut spool, .. } if preflate => {
                // The replay's plain bytes stay in the plain stream, as the
                // start of preflate's, which hands on only what follows them.
                self.dup_plain = self.plain_out;
                self.plain_out = 0;
                let mut splitter = Box::new(PreflateSplitter::new());
                let (mut pieces, mut covered) = (Vec::new(), 0u64);
                let (plain_out, dup) = (&mut self.plain_out, &mut self.dup_plain);
                let mut sink_err = None;
                let r = spool.for_each(0, &mut |b| {
                    splitter.feed_with(b, &mut |p| {
                        emit_piece(p, out, &mut pieces, &mut covered, plain_out, dup).inspect_err(
                            |e| {
                                sink_err = Some(e.to_string());
                            },
                        )
                    })
                });
                self.phase = Phase::Preflate {
                    splitter,
                    pieces,
                    covered,
                    spool,
                };
                match (r, sink_err) {
                    (Ok(()), _) => Ok(()),
                    (Err(e), Some(_)) => Err(e),
                    (Err(_), None) => self.fall_back(out, false),
                }
            }
            Phase::Replay { mut spool, .. } | Phase::Trusted { mut spool, .. } => {
                spool.copy_to(0, out)?;
                self.skip_plain = self.plain_out;
                Ok(())
            }
            Phase::Preflate {
                pieces,
                covered,
                mut spool,
                ..
            } => {
                // Each piece rebuilds its own compressed bytes: those stand.
                // Replayed plain bytes no piece took yet are skipped.
                spool.copy_to(covered, out)?;
                if !pieces.is_empty() {
                    self.kept.push(Part::Preflate { pieces });
                }
                self.stored_from = covered;
                self.skip_plain += std::mem::take(&mut self.dup_plain);
                Ok(())
            }
            Phase::Probe { comp, .. } => out.raw(&comp),
            Phase::Confirmed(p) => {
                self.kept.push(p);
                Ok(())
            }
            Phase::Stored | Phase::Decode => Ok(()),
        }
    }

    /// Stops decoding (a bomb, a broken stream, or the blob ended inside
    /// the member): the member so far is kept as received.
    fn abandon(mut self: Box<Self>, out: &mut dyn Streams) -> Result<Vec<Part>> {
        self.fall_back(out, false)?;
        Ok(self.stored_parts())
    }
}

/// The next backup candidate that reproduces the member's bytes so far (all
/// of the spool, decoded again and re-encoded): the candidate, the bytes it has
/// yet to produce, and their offset. None when no backup does.
fn next_backup(
    kind: Kind,
    backups: &mut Vec<Encoder>,
    spool: &mut Spool,
) -> Result<Option<(Live, VecDeque<u8>, u64)>> {
    while !backups.is_empty() {
        let enc = backups.remove(0);
        let Ok(re) = super::reencoder(&enc) else {
            continue;
        };
        let mut l = Live {
            max_lag: super::max_lag(&enc).max(MAX_LAG as u64),
            enc,
            re,
            made: 0,
        };
        let Ok(mut dec) = Decoder::new(kind) else {
            continue;
        };
        let (mut recv, mut base) = (VecDeque::new(), 0u64);
        let (mut plain, mut scratch) = (Vec::with_capacity(DECODE_BUF), Vec::new());
        let mut ok = true;
        spool.for_each(0, &mut |mut comp| {
            while ok && !comp.is_empty() {
                let Ok((n, _)) = dec.step(comp, &mut plain) else {
                    ok = false;
                    break;
                };
                recv.extend(&comp[..n]);
                comp = &comp[n..];
                scratch.clear();
                ok = l.re.feed(&plain, &mut scratch).is_ok()
                    && matches_at(&recv, base, l.made, &scratch);
                if !ok {
                    break;
                }
                l.made += scratch.len() as u64;
                recv.drain(..(l.made - base) as usize);
                base = l.made;
            }
            Ok(())
        })?;
        if ok && (base + recv.len() as u64) - l.made <= l.max_lag {
            return Ok(Some((l, recv, base)));
        }
    }
    Ok(None)
}

/// Hands a preflate piece on: plain bytes to the plain stream (less the
/// first `dup` of the member, handed on already), corrections to the raw one.
fn emit_piece(
    p: super::preflate::Piece,
    out: &mut dyn Streams,
    pieces: &mut Vec<PreflatePiece>,
    covered: &mut u64,
    plain_out: &mut u64,
    dup: &mut u64,
) -> Result<()> {
    let skip = (*dup).min(p.plain.len() as u64);
    *dup -= skip;
    out.plain(&p.plain[skip as usize..])?;
    out.raw(&p.corrections)?;
    *plain_out += p.plain.len() as u64;
    *covered += p.comp_len;
    pieces.push(PreflatePiece {
        plain_len: p.plain.len() as u64,
        corr_len: p.corrections.len() as u64,
        out_len: p.comp_len,
    });
    Ok(())
}

/// Re-encodes the probe's plain bytes: the compressed bytes the candidate
/// produced (all of `comp` when the member ended), or None if it differs.
fn probe(
    re: &mut dyn Reencoder,
    plain: &[u8],
    comp: &[u8],
    ended: bool,
    max_lag: u64,
) -> Option<usize> {
    let mut out = Vec::new();
    let mut produced = 0usize;
    for piece in plain.chunks(PROBE_STEP) {
        out.clear();
        re.feed(piece, &mut out).ok()?;
        if comp.get(produced..produced + out.len())? != out.as_slice() {
            return None;
        }
        produced += out.len();
    }
    if ended {
        out.clear();
        re.finish(&mut out).ok()?;
        return (comp.get(produced..)? == out.as_slice()).then_some(comp.len());
    }
    ((comp.len() - produced) as u64 <= max_lag).then_some(produced)
}

/// True when `produced`, made from member offset `at`, equals the bytes
/// received there (`recv` holds the received bytes from offset `base` on).
fn matches_at(recv: &VecDeque<u8>, base: u64, at: u64, produced: &[u8]) -> bool {
    let Some(start) = at.checked_sub(base).map(|s| s as usize) else {
        return false;
    };
    if start + produced.len() > recv.len() {
        return false;
    }
    let (a, b) = recv.as_slices();
    let mut i = start;
    let mut rest = produced;
    if i < a.len() {
        let n = (a.len() - i).min(rest.len());
        if a[i..i + n] != rest[..n] {
            return false;
        }
        rest = &rest[n..];
        i = a.len();
    }
    let j = i - a.len();
    rest.is_empty() || b[j..j + rest.len()] == *rest
}

/// A member's compressed bytes, kept in an unlinked file until its strategy
/// is confirmed.
struct Spool {
    file: std::fs::File,
}

impl Spool {
    fn new(dir: &Path) -> Result<Spool> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let path = dir.join(format!(
            "spool-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let _ = std::fs::remove_file(&path);
        Ok(Spool { file })
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.file
            .write_all(b)
            .map_err(|e| Error::io("spooling a compressed member", e))
    }

    /// Sends the spooled bytes from `from` on to the raw stream.
    fn copy_to(&mut self, from: u64, out: &mut dyn Streams) -> Result<()> {
        self.for_each(from, &mut |b| out.raw(b))
    }

    /// Reads the spooled bytes from `from` back, a MiB at a time. The file
    /// position is left at the end, where the next write goes.
    fn for_each(&mut self, from: u64, f: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let err = |e| Error::io("reading back a spooled member", e);
        self.file.seek(SeekFrom::Start(from)).map_err(err)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = self.file.read(&mut buf).map_err(err)?;
            if n == 0 {
                return Ok(());
            }
            f(&buf[..n])?;
        }
    }
}
