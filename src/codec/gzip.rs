//! gzip member framing (RFC 1952): the header before a deflate body and the
//! trailer after it. Both are kept literally; only the body is re-encoded.

/// Size of the trailer: CRC-32 and ISIZE, little-endian.
pub const TRAILER: usize = 8;

/// A name or comment longer than this is not a layer's gzip header: treat the
/// stream as opaque rather than buffer without bound.
const MAX_HEADER: usize = 1 << 20;

const FHCRC: u8 = 2;
const FEXTRA: u8 = 4;
const FNAME: u8 = 8;
const FCOMMENT: u8 = 16;
const RESERVED: u8 = 0xe0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes of the header, fields included.
    pub len: usize,
    pub flags: u8,
    pub mtime: u32,
    /// Extra flags: encoders note their speed setting here (2 best, 4 fastest).
    pub xfl: u8,
    pub os: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// More bytes are needed to tell.
    NeedMore,
    NotGzip,
    Header(Header),
}

/// True when `b` could begin a gzip member (as far as it goes).
pub fn could_start(b: &[u8]) -> bool {
    let magic = [0x1f, 0x8b, 8];
    b.iter().zip(magic.iter()).all(|(x, y)| x == y)
}

/// Parses a member header at the start of `b`.
pub fn parse_header(b: &[u8]) -> Parse {
    if !could_start(b) {
        return Parse::NotGzip;
    }
    if b.len() < 10 {
        return Parse::NeedMore;
    }
    let flags = b[3];
    if flags & RESERVED != 0 {
        return Parse::NotGzip;
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        if b.len() < at + 2 {
            return Parse::NeedMore;
        }
        at += 2 + u16::from_le_bytes([b[at], b[at + 1]]) as usize;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            match b.get(at..).and_then(|r| r.iter().position(|&c| c == 0)) {
                Some(z) => at += z + 1,
                None if b.len() > MAX_HEADER => return Parse::NotGzip,
                None => return Parse::NeedMore,
            }
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    if at > b.len() {
        return if at > MAX_HEADER {
            Parse::NotGzip
        } else {
            Parse::NeedMore
        };
    }
    Parse::Header(Header {
        len: at,
        flags,
        mtime: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        xfl: b[8],
        os: b[9],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_with_every_field_parse_at_any_cut() {
        let mut h = vec![
            0x1f,
            0x8b,
            8,
            FEXTRA | FNAME | FCOMMENT | FHCRC,
            1,
            2,
            3,
            4,
            2,
            3,
        ];
        h.extend_from_slice(&[3, 0, b'a', b'b', b'c']);
        h.extend_from_slice(b"layer.tar\0");
        h.extend_from_slice(b"a comment\0");
        h.extend_from_slice(&[0xaa, 0xbb]);
        let full = h.len();
        h.extend_from_slice(&[0x55; 20]);
        for cut in 0..full {
            assert_eq!(parse_header(&h[..cut]), Parse::NeedMore, "cut {cut}");
        }
        let Parse::Header(p) = parse_header(&h) else {
            panic!("not parsed")
        };
        assert_eq!(p.len, full);
        assert_eq!((p.xfl, p.os, p.mtime), (2, 3, 0x04030201));
        assert_eq!(parse_header(b"\x1f\x8b\x07"), Parse::NotGzip);
        assert_eq!(
            parse_header(b"\x1f\x8b\x08\x80\0\0\0\0\0\0"),
            Parse::NotGzip
        );
        assert_eq!(parse_header(b"ustar"), Parse::NotGzip);
    }
}
