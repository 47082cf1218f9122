//! The tar framing as Go's `archive/tar` (and so containerd) reads it, checked
//! on the bytes before the tar crate parses them. Where the two readers would
//! cut the stream differently, one layer (one diff_id) could unpack to two
//! trees; those archives are refused here instead:
//! - a header-only entry (link, device, dir, fifo) that claims a body: Go
//!   reads none, the tar crate skips it;
//! - PAX `path`, `linkpath` or `size` given twice, empty, or (names) holding a
//!   NUL: Go keeps the last non-empty value or fails, the tar crate the first;
//! - one zero block followed by a header: Go fails, the tar crate stops.
//!
//! Metadata bodies (PAX, GNU long names) are held whole by the tar crate; Go
//! refuses them past 1 MiB, and so does this guard, so a crafted header cannot
//! make the daemon allocate without bound.

use crate::split::tar::{body_of, padding, parse_header, BLOCK, MAX_META_BODY};
use std::io::{self, Read};

enum State {
    /// Collecting a header block.
    Header,
    /// Inside a body (and its padding); PAX bodies are kept to check.
    Body { left: u64, pax: bool },
    /// After the first zero block: the next must be zero too (or the end).
    AfterZero,
    /// The archive ended (or the framing is the tar crate's to reject).
    Done,
}

pub struct Guard<R> {
    inner: R,
    state: State,
    block: Vec<u8>,
    pax: Vec<u8>,
    pax_size: Option<u64>,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl<R: Read> Guard<R> {
    pub fn new(inner: R) -> Self {
        Guard {
            inner,
            state: State::Header,
            block: Vec::with_capacity(BLOCK),
            pax: Vec::new(),
            pax_size: None,
        }
    }

    /// Reads the block after the first end-of-archive block, if the tar
    /// reader stopped before it, so a header hidden there is refused.
    pub fn check_end(&mut self) -> io::Result<()> {
        let mut buf = [0u8; BLOCK];
        while matches!(self.state, State::AfterZero | State::Header) {
            if self.read(&mut buf)? == 0 {
                break;
            }
        }
        Ok(())
    }

    fn feed(&mut self, mut b: &[u8]) -> io::Result<()> {
        while !b.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Body { left, pax } => {
                    let n = (*left).min(b.len() as u64) as usize;
                    if *pax {
                        self.pax.extend_from_slice(&b[..n]);
                    }
                    *left -= n as u64;
                    b = &b[n..];
                    if *left == 0 {
                        if *pax {
                            self.pax_size = check_pax(&self.pax)?;
                            self.pax.clear();
                        }
                        self.state = State::Header;
                    }
                }
                State::Header | State::AfterZero => {
                    let n = (BLOCK - self.block.len()).min(b.len());
                    self.block.extend_from_slice(&b[..n]);
                    b = &b[n..];
                    if self.block.len() == BLOCK {
                        let blk: [u8; BLOCK] = self.block[..].try_into().expect("one block");
                        self.block.clear();
                        self.header(&blk)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn header(&mut self, blk: &[u8; BLOCK]) -> io::Result<()> {
        let zero = blk.iter().all(|&x| x == 0);
        if let State::AfterZero = self.state {
            if !zero {
                return Err(bad("a tar header after an end-of-archive block"));
            }
            self.state = State::Done;
            return Ok(());
        }
        if zero {
            self.state = State::AfterZero;
            return Ok(());
        }
        let Some(h) = parse_header(blk) else {
            // Not a header at all: the tar crate reports it.
            self.state = State::Done;
            return Ok(());
        };
        if h.sparse_extended {
            // Sparse files are refused by the applier (as containerd does).
            self.state = State::Done;
            return Ok(());
        }
        let meta = matches!(h.typeflag, b'x' | b'g' | b'L' | b'K');
        if meta && h.size > MAX_META_BODY {
            return Err(bad(format!(
                "a tar metadata entry of {} bytes (more than 1 MiB)",
                h.size
            )));
        }
        if matches!(h.typeflag, b'1'..=b'6') && h.size != 0 {
            return Err(bad(format!(
                "a tar entry of type {:?} that carries no data claims {} bytes",
                h.typeflag as char, h.size
            )));
        }
        // A PAX size applies to the next entry that is not metadata.
        let (size, _) = body_of(&h, if meta { None } else { self.pax_size.take() });
        let left = size + padding(size);
        self.state = if left == 0 {
            State::Header
        } else {
            State::Body {
                left,
                pax: h.typeflag == b'x',
            }
        };
        Ok(())
    }
}

/// Checks a PAX header's records; gives its `size`.
fn check_pax(records: &[u8]) -> io::Result<Option<u64>> {
    let mut rest = records;
    let (mut path, mut link, mut size) = (false, false, None);
    while !rest.is_empty() && rest[0] != 0 {
        let sp = rest
            .iter()
            .position(|&c| c == b' ')
            .ok_or_else(|| bad("a malformed PAX record"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&l| l > sp + 1 && l <= rest.len())
            .ok_or_else(|| bad("a malformed PAX record length"))?;
        let rec = &rest[sp + 1..len];
        let rec = rec
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("a PAX record without its newline"))?;
        let eq = rec
            .iter()
            .position(|&c| c == b'=')
            .ok_or_else(|| bad("a PAX record without '='"))?;
        let (k, v) = (&rec[..eq], &rec[eq + 1..]);
        let seen = match k {
            b"path" => Some(&mut path),
            b"linkpath" => Some(&mut link),
            _ => None,
        };
        if let Some(seen) = seen {
            if *seen || v.is_empty() || v.contains(&0) {
                return Err(bad(format!(
                    "PAX {} given twice, empty or holding a NUL",
                    String::from_utf8_lossy(k)
                )));
            }
            *seen = true;
        }
        if k == b"size" {
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|_| size.is_none())
                .ok_or_else(|| bad("PAX size given twice or not a number"))?;
            size = Some(n);
        }
        rest = &rest[len..];
    }
    Ok(size)
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.feed(&buf[..n])?;
        Ok(n)
    }
}
