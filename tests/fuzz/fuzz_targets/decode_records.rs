//! Index record decoders (recipe pages, rebuild plans, content records):
//! damaged records are errors, never panics, and what decodes re-encodes to
//! the same value. regressions/decode_records/ holds the inputs that found
//! overflow panics in `Content::decode` and in the length sums of decoded plans.
//!
//! Input: 1 selector byte, then the record.
//!   0: a recipe page: the record zstd-compressed first (so the fuzzer works
//!      on the page encoding itself), then `decode_page`;
//!   1: `decode_page` of the bytes as they are (zstd framing damage);
//!   2: `Plan::decode`;
//!   3: `Content::decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::codec::plan::Plan;
use strata::store::recipe::{decode_page, RecipeBuilder, Segment};
use strata::store::Content;

const MAX_INPUT: usize = 256 << 10;

/// Adjacent literals merged and empty ones dropped: what a builder makes of
/// a segment list.
fn normalise(segs: impl IntoIterator<Item = Segment>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for s in segs {
        match (out.last_mut(), s) {
            (_, Segment::Literal(b)) if b.is_empty() => {}
            (Some(Segment::Literal(a)), Segment::Literal(b)) => a.extend_from_slice(&b),
            (_, s) => out.push(s),
        }
    }
    out
}

fn check_page(stored: &[u8]) {
    let Ok(segs) = decode_page(stored) else {
        return;
    };
    let size: u64 = segs.iter().map(Segment::len).sum();
    // Re-encode through the builder (which may cut several pages) and decode.
    let mut b = RecipeBuilder::default();
    for s in &segs {
        match s {
            Segment::Literal(l) => b.literal(l),
            Segment::Chunk { hash, len } => b.chunk(*hash, *len),
        }
    }
    assert_eq!(b.size(), size);
    let recipe = b.finish();
    assert_eq!(recipe.size, size);
    assert_eq!(recipe.pages.len(), recipe.page_starts.len());
    let mut again = Vec::new();
    let mut off = 0u64;
    for (i, page) in recipe.pages.iter().enumerate() {
        assert_eq!(recipe.page_starts[i], off, "page {i} starts elsewhere");
        let p = decode_page(page).expect("decoding a page the builder made");
        off += p.iter().map(Segment::len).sum::<u64>();
        again.extend(p);
    }
    assert_eq!(off, size);
    assert!(normalise(again) == normalise(segs), "recipe segments changed through encode/decode");
}

fn check_plan(b: &[u8]) {
    let Ok(plan) = Plan::decode(b) else {
        return;
    };
    let again = Plan::decode(&plan.encode()).expect("decoding an encoded plan");
    assert_eq!(again, plan, "plan changed through encode/decode");
    // What readers and stats ask of a plan.
    let _ = plan.strategy();
    let _ = plan.describe();
    // Totals as the reader and `strata verify` sum them.
    let _ = plan.out_len();
    let _: u64 = plan.parts.iter().map(|p| p.plain_consumed()).sum();
    let _: u64 = plan.parts.iter().map(|p| p.raw_consumed()).sum();
}

fn check_content(b: &[u8]) {
    let Ok(c) = Content::decode(b) else {
        return;
    };
    let again = Content::decode(&c.encode()).expect("decoding an encoded content record");
    assert_eq!(again, c, "content record changed through encode/decode");
    let _ = (c.page_count(), c.strategy(), c.recipe_size(), c.layout_name());
}

fuzz_target!(|input: &[u8]| {
    if input.len() > MAX_INPUT {
        return;
    }
    let Some((&sel, rec)) = input.split_first() else {
        return;
    };
    match sel % 4 {
        0 => check_page(&zstd::bulk::compress(rec, 1).expect("zstd")),
        1 => check_page(rec),
        2 => check_plan(rec),
        _ => check_content(rec),
    }
});
