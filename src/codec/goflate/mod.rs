//! A bit-exact Rust port of the encoder in Go's `compress/flate` (Go 1.19
//! source; the output family of Go 1.15 onward), as used by
//! `compress/gzip`. Same level, same input, same flush points: same bytes.
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
