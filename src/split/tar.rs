//! Parsing of tar headers: just enough to know where each entry's body starts and
//! ends. Exactness never depends on this: every byte goes into the recipe in
//! order; the parse only decides which bytes are chunked as file content.

pub const BLOCK: usize = 512;

/// Entries whose body is metadata (names, PAX records) and is kept as a literal,
/// when it is no larger than this; larger ones are chunked like data.
pub const MAX_META_BODY: u64 = 1 << 20;

/// What the splitter should do with the bytes after a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// File content: cut into chunks.
    Data,
    /// PAX extended header records: literal, and parsed for a `size` override.
    Pax,
    /// Other metadata (GNU long names, PAX global header): literal.
    Meta,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub typeflag: u8,
    pub size: u64,
    /// Old GNU sparse header followed by extension blocks.
    pub sparse_extended: bool,
}

/// Parses one 512-byte block as a tar header; `None` when it is not one (bad
/// checksum or size field).
pub fn parse_header(b: &[u8; BLOCK]) -> Option<Header> {
    if !checksum_ok(b) {
        return None;
    }
    let size = parse_numeric(&b[124..136])?;
    let typeflag = b[156];
    Some(Header {
        typeflag,
        size,
        sparse_extended: typeflag == b'S' && b[482] != 0,
    })
}

pub fn is_zero_block(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// The body that follows a header, with a PAX `size` override applied.
pub fn body_of(h: &Header, pax_size: Option<u64>) -> (u64, BodyKind) {
    let meta = |kind| {
        if h.size <= MAX_META_BODY {
            (h.size, kind)
        } else {
            (h.size, BodyKind::Data)
        }
    };
    match h.typeflag {
        b'x' => meta(BodyKind::Pax),
        b'g' | b'L' | b'K' => meta(BodyKind::Meta),
        // Hard and symbolic links, devices, directories and FIFOs carry no data
        // (readers such as Go's archive/tar skip none for them).
        b'1'..=b'6' => (0, BodyKind::Data),
        _ => (pax_size.unwrap_or(h.size), BodyKind::Data),
    }
}

/// Bytes of zero padding after a body of `size` bytes.
pub fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Whether a header block's checksum (unsigned, or the signed sum some old
/// writers used) matches.
pub fn checksum_ok(b: &[u8; BLOCK]) -> bool {
    let Some(stored) = parse_octal(&b[148..156]) else {
        return false;
    };
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &x) in b.iter().enumerate() {
        let x = if (148..156).contains(&i) { b' ' } else { x };
        unsigned += x as u64;
        signed += x as i8 as i64;
    }
    // An all-zero block sums to 256 (the spaces) and never matches a stored 0.
    stored == unsigned || stored as i64 == signed
}

/// Numeric header field: octal text, or GNU base-256 when the top bit is set.
pub fn parse_numeric(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        if f[0] == 0xff {
            return None; // negative
        }
        let mut v: u64 = (f[0] & 0x7f) as u64;
        for &x in &f[1..] {
            v = v.checked_mul(256)?.checked_add(x as u64)?;
        }
        return Some(v);
    }
    parse_octal(f)
}

fn parse_octal(f: &[u8]) -> Option<u64> {
    let mut i = 0;
    while i < f.len() && (f[i] == b' ' || f[i] == 0) {
        i += 1;
    }
    let mut v: u64 = 0;
    while i < f.len() && (b'0'..=b'7').contains(&f[i]) {
        v = v.checked_mul(8)?.checked_add((f[i] - b'0') as u64)?;
        i += 1;
    }
    // The rest may only be terminators.
    if f[i..].iter().any(|&x| x != b' ' && x != 0) {
        return None;
    }
    // An empty field counts as 0 (some writers leave it blank for links).
    Some(v)
}

/// The `size` record of a PAX extended header, if present and well formed.
pub fn pax_size(records: &[u8]) -> Option<u64> {
    let mut rest = records;
    let mut found = None;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&c| c == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        if len <= sp + 1 || len > rest.len() {
            return found;
        }
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(v) = rec.strip_prefix(b"size=") {
            found = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
        }
        rest = &rest[len..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(typeflag: u8, size_field: &[u8]) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[..4].copy_from_slice(b"name");
        b[124..124 + size_field.len()].copy_from_slice(size_field);
        b[156] = typeflag;
        b[257..263].copy_from_slice(b"ustar\0");
        b[148..156].fill(b' ');
        let sum: u32 = b.iter().map(|&x| x as u32).sum();
        let s = format!("{sum:06o}\0 ");
        b[148..156].copy_from_slice(s.as_bytes());
        b
    }

    #[test]
    fn parses_octal_and_base256_sizes() {
        let h = parse_header(&header(b'0', b"00000001750 ")).unwrap();
        assert_eq!(h.size, 1000);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[4..12].copy_from_slice(&(5u64 << 33).to_be_bytes());
        assert_eq!(parse_header(&header(b'0', &big)).unwrap().size, 5u64 << 33);
    }

    #[test]
    fn rejects_bad_checksum_and_zero_block() {
        let mut b = header(b'0', b"0000000001\0");
        assert!(parse_header(&b).is_some());
        b[0] ^= 1;
        assert!(parse_header(&b).is_none());
        assert!(parse_header(&[0u8; BLOCK]).is_none());
    }

    #[test]
    fn link_types_have_no_body_and_pax_overrides_size() {
        let h = parse_header(&header(b'2', b"00000000012")).unwrap();
        assert_eq!(body_of(&h, None), (0, BodyKind::Data));
        let h = parse_header(&header(b'0', b"00000000012")).unwrap();
        assert_eq!(body_of(&h, Some(99)), (99, BodyKind::Data));
        assert_eq!(pax_size(b"12 size=345\n20 path=a/b/c/d/e/f\n"), Some(345));
        assert_eq!(pax_size(b"9 path=x\n"), None);
    }
}
