//! The fast (level 1..=6) encoders by level: Go's `newFastEnc`. The
//! machinery they share is in `fast_gen`, below every level.

use super::level1::FastEncL1;
use super::level2::FastEncL2;
use super::level3::FastEncL3;
use super::level4::FastEncL4;
use super::level5::FastEncL5;
use super::level6::FastEncL6;
use super::token::MAX_STORE_BLOCK_SIZE;

pub use super::fast_gen::FastEnc;

/// Go's `newFastEnc(level)`; level in 1..=6. Go panics on other levels;
/// here they are clamped into range instead.
pub fn new_fast_enc(level: u8) -> Box<dyn FastEnc> {
    new_fast_enc_at(level, MAX_STORE_BLOCK_SIZE as i32)
}

/// Like [`new_fast_enc`] but with the initial `cur` chosen by the caller.
/// Test hook only: lets tests reach the `BUFFER_RESET` rebasing without
/// encoding 2 GiB first. Go's constructor uses `MAX_STORE_BLOCK_SIZE`.
#[doc(hidden)]
pub fn new_fast_enc_at(level: u8, cur: i32) -> Box<dyn FastEnc> {
    match level {
        0 | 1 => Box::new(FastEncL1::new(cur)),
        2 => Box::new(FastEncL2::new(cur)),
        3 => Box::new(FastEncL3::new(cur)),
        4 => Box::new(FastEncL4::new(cur)),
        5 => Box::new(FastEncL5::new(cur)),
        _ => Box::new(FastEncL6::new(cur)),
    }
}
