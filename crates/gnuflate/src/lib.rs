//! A bit-exact Rust port of the deflate encoder of GNU gzip 1.12
//! (`deflate.c`, `trees.c`, `bits.c`): same level, same input, same bytes as
//! `gzip -N`, whatever pieces the input arrives in.
//!
//! GNU gzip does not use zlib: it keeps the 1992 encoder (a 0x8000-symbol
//! block buffer, a block cut guessed every 0x1000 literals at levels 3 and
//! up, its own window refill and lazy matching), so zlib's output differs.
//! Checked by `tests/oracle.rs` against Debian 12's `/usr/bin/gzip` (1.12,
//! built without the i386 assembler matcher, which would give the same
//! bytes anyway) at every level.
//!
//! Only the raw deflate stream is produced; the gzip header and trailer are
//! the caller's. `--rsyncable` is not replayed.
//!
//! Module map (gzip file in brackets): `bits` [bits.c], `trees` [trees.c],
//! `deflate` [deflate.c].

mod bits;
mod deflate;
mod trees;

pub use deflate::Writer;

/// A level outside 1..=9 (gzip has no level 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLevel(pub i32);

impl std::fmt::Display for BadLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GNU gzip level {} is not in 1..=9", self.0)
    }
}

impl std::error::Error for BadLevel {}
