//! A deflate encoder bit-identical to github.com/klauspost/compress/flate
//! (v1.15.12, Debian 12) and pgzip's (v1.2.5) framing.

pub mod bit_writer;
pub mod deflate;
pub mod fast;
pub mod huffman_code;
pub mod level1;
pub mod level2;
pub mod level3;
pub mod level4;
pub mod level5;
pub mod level6;
pub mod pgzip;
pub mod token;
