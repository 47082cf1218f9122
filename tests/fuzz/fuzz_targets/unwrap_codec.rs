//! The codec stage (gzip and zstd decoders, replay probe, stored fallback):
//! whatever the bytes, the plan it proves rebuilds the blob exactly from the
//! plain and raw streams it emitted; the plan survives encode/decode; a plan
//! that claims a plain form gives the plain bytes its diff_id names; and a
//! valid stream decodes to what was compressed.
//!
//! Input: 5 bytes wrap/damage (see strata_fuzz::read_wrap), 4 bytes piece
//! seed, 1 byte config, 4 bytes read range, then the payload. Wrap "raw"
//! feeds the payload itself; the others compress it first (strata's own zlib
//! replay, flate2, zstd) and then damage the result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use strata::codec::plan::{Part, Plan, StoredKind};
use strata::codec::rebuild::{self, Cursor, Out, Source};
use strata::codec::unwrap::{Streams, UnwrapConfig, Unwrapper};
use strata::error::Result;
use strata_fuzz::{damage, expected_plain, pieces, read_wrap, sha256, wrap, Control, Wrap};

const MAX_INPUT: usize = 64 << 10;

fn spool_dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| strata_fuzz::run_dir("strata-fuzz-spool-"))
}

#[derive(Default)]
struct Collect {
    plain: Vec<u8>,
    raw: Vec<u8>,
}

impl Streams for Collect {
    fn plain(&mut self, b: &[u8]) -> Result<()> {
        self.plain.extend_from_slice(b);
        Ok(())
    }
    fn raw(&mut self, b: &[u8]) -> Result<()> {
        self.raw.extend_from_slice(b);
        Ok(())
    }
}

/// The two recipes, in memory.
struct Mem<'a> {
    plain: &'a [u8],
    raw: &'a [u8],
}

fn window(s: &[u8], offset: u64, len: u64, out: &mut Out) -> Result<bool> {
    let a = (offset as usize).min(s.len());
    let z = (offset.saturating_add(len) as usize).min(s.len());
    if a == z {
        return Ok(true);
    }
    // Handed on in two calls, as a recipe spanning segments would.
    let m = a + (z - a) / 2;
    if !out(&s[a..m])? {
        return Ok(false);
    }
    out(&s[m..z])
}

impl Source for Mem<'_> {
    fn plain(&mut self, offset: u64, len: u64, out: &mut Out) -> Result<bool> {
        window(self.plain, offset, len, out)
    }
    fn raw(&mut self, offset: u64, len: u64, out: &mut Out) -> Result<bool> {
        window(self.raw, offset, len, out)
    }
}

fn read(cur: &mut Cursor, src: &mut Mem, from: u64, to: u64) -> Vec<u8> {
    let mut got = Vec::new();
    rebuild::rebuild(cur, src, from, to, &mut |b| {
        got.extend_from_slice(b);
        Ok(true)
    })
    .unwrap_or_else(|e| panic!("rebuilding [{from}, {to}) failed: {e}"));
    got
}

fuzz_target!(|input: &[u8]| {
    if input.len() > MAX_INPUT {
        return;
    }
    let mut c = Control::new(input);
    let (w, d) = read_wrap(&mut c);
    let seed = c.u32();
    let cfg_byte = c.u8();
    let r1 = c.u16() as u64;
    let r2 = c.u16() as u64;
    let payload = c.rest();
    let blob = damage(d, wrap(w, payload));

    let cfg = UnwrapConfig {
        // Mostly the default; sometimes a ratio low enough to call small
        // inputs bombs.
        max_ratio: if cfg_byte & 1 != 0 { 2 } else { UnwrapConfig::default().max_ratio },
        preflate: cfg_byte & 2 == 0,
        decode_only: false,
        trust_probe: cfg_byte & 4 != 0,
        defer: false,
    };
    let bomb_ratio = cfg.max_ratio;
    let mut un = Unwrapper::new(cfg, spool_dir());
    let mut out = Collect::default();
    for p in pieces(&blob, seed) {
        un.feed(p, &mut out).expect("feeding the unwrapper");
    }
    let plan = un.finish(&mut out).expect("finishing the unwrapper");

    if strata_fuzz::debug() {
        eprintln!(
            "unwrap_codec: {w:?} {d:?}, {} bytes -> {}",
            blob.len(),
            plan.as_ref().map_or("no plan (plain)".to_string(), |p| format!(
                "{} plain_size={:?}: {}",
                p.describe(),
                p.plain_size,
                p.parts.iter().map(|x| format!("{:?}", x.strategy())).collect::<Vec<_>>().join(",")
            ))
        );
    }
    let Some(plan) = plan else {
        // Not compressed: the blob is its own plain stream.
        assert!(out.raw.is_empty(), "a blob without a plan emitted raw bytes");
        assert!(out.plain == blob, "a blob without a plan: plain stream differs from the blob");
        assert!(
            !matches!(w, Wrap::GzipZlib(_) | Wrap::GzipFlate2(_) | Wrap::Zstd { .. }) || !d.keeps_valid(),
            "a valid {w:?} stream was taken for plain data"
        );
        return;
    };

    // Every stream byte belongs to some part.
    let plain_used: u64 = plan.parts.iter().map(Part::plain_consumed).sum();
    let raw_used: u64 = plan.parts.iter().map(Part::raw_consumed).sum();
    assert_eq!(plain_used, out.plain.len() as u64, "plain stream bytes no part consumes: {plan:?}");
    assert_eq!(raw_used, out.raw.len() as u64, "raw stream bytes no part consumes: {plan:?}");
    assert_eq!(plan.out_len(), blob.len() as u64, "plan length differs from the blob: {plan:?}");
    assert_eq!(plan.diff_id.is_some(), plan.plain_size.is_some());

    // The plan's record round-trips.
    let rec = plan.encode();
    let back = Plan::decode(&rec).expect("decoding an encoded plan");
    assert_eq!(back, plan, "plan changed through encode/decode");

    // The plan rebuilds the blob exactly.
    let plan = Arc::new(plan);
    let mut src = Mem {
        plain: &out.plain,
        raw: &out.raw,
    };
    let total = blob.len() as u64;
    let mut cur = Cursor::new(plan.clone());
    let got = read(&mut cur, &mut src, 0, total);
    assert!(got == blob, "the plan does not rebuild the blob ({} bytes vs {}): {plan:?}", got.len(), blob.len());

    // Ranges: from a fresh cursor, then onward (or back) from where it stopped.
    if total > 0 {
        let a = r1 % total;
        let b = a + (r2 % (total - a + 1));
        let mut cur = Cursor::new(plan.clone());
        let got = read(&mut cur, &mut src, a, b);
        assert!(got == blob[a as usize..b as usize], "range [{a}, {b}) differs");
        let c2 = (r2.wrapping_mul(31)) % total;
        let d2 = (c2 + 1 + r1 % 4096).min(total);
        let got = read(&mut cur, &mut src, c2, d2);
        assert!(got == blob[c2 as usize..d2 as usize], "range [{c2}, {d2}) after [{a}, {b}) differs");
    }

    // A plain form: exactly plain_size bytes, hashing to diff_id.
    if let (Some(size), Some(diff_id)) = (plan.plain_size, plan.diff_id) {
        let mut plain = Vec::new();
        rebuild::plain(&plan, &mut src, 0, u64::MAX, &mut |b| {
            plain.extend_from_slice(b);
            Ok(true)
        })
        .unwrap_or_else(|e| panic!("reading the plain form failed: {e}"));
        assert_eq!(plain.len() as u64, size, "plain form length differs from plain_size");
        assert!(sha256(&plain) == diff_id, "plain form does not hash to diff_id");
        // As rebuild::plain decides: every member's plain bytes are in the
        // plain stream, once each.
        let all_decoded = !plan.parts.iter().any(|p| {
            matches!(
                p,
                Part::Stored { kind: StoredKind::Member, .. } | Part::Stored { skip_plain: 1.., .. }
            )
        });
        if all_decoded {
            assert!(plain == out.plain, "plain stream differs from the plain form");
        }
        if let Some(want) = expected_plain(d, payload) {
            if w != Wrap::Raw {
                assert!(plain == want, "a valid {w:?} stream decoded to other bytes");
            }
        }
    } else if w != Wrap::Raw && d.keeps_valid() {
        // A valid stream decodes to its end unless it was taken for a bomb.
        let limit = bomb_ratio.saturating_mul(blob.len() as u64) + (1 << 20);
        assert!(
            (payload.len() as u64) * 2 > limit,
            "a valid {w:?} ({d:?}) stream of {} plain bytes has no plain form: {plan:?}",
            payload.len()
        );
    }
});
