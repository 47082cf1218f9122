//! A bit-exact Rust port of the encoder in Go's `compress/flate`, as used by
//! `compress/gzip`. Same level, same input, same flush points: same bytes.
//!
//! Matches: the Go 1.19 standard library (Debian 12's golang-1.19), whose
//! encoder output is the same from Go 1.15 through the versions Debian
//! ships since (the family that made most Docker, BuildKit, containerd and
//! go-containerregistry layers). Checked by `tests/oracle.rs` against the
//! program `tests/go/gogzip` at the repository root, built with the system
//! `go`: every level (-2..=9), write sizes, sync flushes, resets.
//!
//! No dependencies, no unsafe code: strata replays Go-made gzip layers with
//! it, and anyone can use it to reproduce Go's deflate bytes.
//!
//! Module map (Go file in brackets): `token` [token.go], `huffman_code`
//! [huffman_code.go], `bit_writer` [huffman_bit_writer.go], `deflate_fast`
//! [deflatefast.go], `deflate` [deflate.go].

mod bit_writer;
mod deflate;
mod deflate_fast;
mod huffman_code;
mod token;

pub use deflate::Writer;
