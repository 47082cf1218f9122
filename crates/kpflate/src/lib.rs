//! A deflate encoder bit-identical to github.com/klauspost/compress/flate
//! and to github.com/klauspost/pgzip's block framing: the gzip writers of
//! podman, buildah, skopeo and umoci.
//!
//! Matches: klauspost/compress v1.15.12 and klauspost/pgzip v1.2.5, the
//! versions Debian 12 packages (golang-github-klauspost-compress-dev,
//! golang-github-klauspost-pgzip-dev). Checked by `tests/oracle.rs` against
//! the program `tests/go/kpgzip` at the repository root, built from those
//! sources: every level (-2..=9), preset dictionaries, write sizes, sync
//! flushes, writer reuse, pgzip block sizes and last-block edge cases.
//!
//! Module map (Go file in brackets): `token` [token.go], `huffman_code`
//! [huffman_code.go], `bit_writer` [huffman_bit_writer.go], `fast_gen`
//! [fast_encoder.go], `fast` [its newFastEnc], `level1`..`level6`
//! [level1.go..level6.go], `deflate` [deflate.go], `pgzip` [pgzip's
//! gzip.go]. No dependencies.

pub mod bit_writer;
pub mod deflate;
pub mod fast;
pub mod fast_gen;
pub mod huffman_code;
pub mod level1;
pub mod level2;
pub mod level3;
pub mod level4;
pub mod level5;
pub mod level6;
pub mod pgzip;
pub mod token;
