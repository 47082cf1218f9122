//! GNU sparse files in PAX form (versions 0.0, 0.1 and 1.0, as GNU tar
//! writes them with `--sparse --format=pax`), expanded as Go's `archive/tar`
//! presents them to containerd: a regular file of the real size, its holes
//! read as zeros (and written as zeros, as containerd writes them). The tar
//! crate hands such an entry over as raw stored bytes (and, in 1.0, the map
//! before them), so this reading is done here. The old GNU type `S` stays
//! refused, as containerd refuses it.

use std::io::{self, Read};

/// A sparse file's map: data regions (offset, length) and the real size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sparse {
    /// The map is at the start of the stored bytes (1.0), not in the records.
    pub map_in_data: bool,
    pub regions: Vec<(u64, u64)>,
    pub real_size: u64,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("GNU sparse file: {msg}"),
    )
}

fn num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The sparse description in an entry's PAX records (last value wins, as in
/// Go; 0.0's repeated offset/numbytes records form its map), with the name
/// and size to use instead of the header's. None: not a sparse file.
pub(super) fn from_pax(
    pax: &[(Vec<u8>, Vec<u8>)],
) -> io::Result<Option<(Sparse, Option<Vec<u8>>)>> {
    let rec = |k: &[u8]| {
        pax.iter()
            .rev()
            .find(|(key, v)| key == k && !v.is_empty())
            .map(|(_, v)| v.as_slice())
    };
    let (major, minor) = (rec(b"GNU.sparse.major"), rec(b"GNU.sparse.minor"));
    let v1 = match (major, minor) {
        (Some(b"1"), Some(b"0")) => true,
        (Some(b"0"), Some(b"0" | b"1")) => false,
        // An unknown version: Go reads the entry as a plain file.
        (Some(_), _) | (_, Some(_)) => return Ok(None),
        _ if rec(b"GNU.sparse.map").is_some() || rec(b"GNU.sparse.offset").is_some() => false,
        _ => return Ok(None),
    };
    let size = rec(b"GNU.sparse.size").or_else(|| rec(b"GNU.sparse.realsize"));
    let real_size = match size {
        Some(s) => num(s).ok_or_else(|| bad("bad size"))?,
        None => return Err(bad("no real size")),
    };
    let mut regions = Vec::new();
    if !v1 {
        if let Some(map) = rec(b"GNU.sparse.map") {
            let nums: Vec<u64> = map
                .split(|&c| c == b',')
                .map(|n| num(n).ok_or_else(|| bad("bad map")))
                .collect::<io::Result<_>>()?;
            if !nums.len().is_multiple_of(2) {
                return Err(bad("odd map"));
            }
            regions = nums.chunks(2).map(|p| (p[0], p[1])).collect();
        } else {
            // 0.0: one offset then one numbytes record per region.
            let mut off = None;
            for (k, v) in pax {
                match k.as_slice() {
                    b"GNU.sparse.offset" => off = Some(num(v).ok_or_else(|| bad("bad offset"))?),
                    b"GNU.sparse.numbytes" => {
                        let o = off.take().ok_or_else(|| bad("numbytes without offset"))?;
                        regions.push((o, num(v).ok_or_else(|| bad("bad numbytes"))?));
                    }
                    _ => {}
                }
            }
        }
    }
    let name = rec(b"GNU.sparse.name").map(<[u8]>::to_vec);
    Ok(Some((
        Sparse {
            map_in_data: v1,
            regions,
            real_size,
        },
        name,
    )))
}

/// Reads the 1.0 map at the start of the stored bytes: decimal numbers, one
/// per line (the count, then offset and length pairs), in whole blocks.
fn read_map<R: Read>(r: &mut R) -> io::Result<Vec<(u64, u64)>> {
    let mut text = Vec::new();
    let mut block = [0u8; 512];
    let lines = |text: &Vec<u8>| text.iter().filter(|&&c| c == b'\n').count();
    let mut need = 1;
    loop {
        r.read_exact(&mut block)?;
        text.extend_from_slice(&block);
        if text.len() > 1 << 20 {
            return Err(bad("map over 1 MiB"));
        }
        let have = lines(&text);
        if need == 1 && have >= 1 {
            let first = text.split(|&c| c == b'\n').next().unwrap_or_default();
            let n = num(first).ok_or_else(|| bad("bad map count"))?;
            need = 1 + 2 * usize::try_from(n).map_err(|_| bad("map count"))?;
            if need > 1 << 20 {
                return Err(bad("map count"));
            }
        }
        if have >= need {
            break;
        }
    }
    let nums: Vec<u64> = text
        .split(|&c| c == b'\n')
        .skip(1)
        .take(need - 1)
        .map(|n| num(n).ok_or_else(|| bad("bad map entry")))
        .collect::<io::Result<_>>()?;
    Ok(nums.chunks(2).map(|p| (p[0], p[1])).collect())
}

/// The expanded file: zeros in the holes, the stored bytes in the regions.
pub(super) struct Expanded<R> {
    inner: R,
    regions: Vec<(u64, u64)>,
    next: usize,
    pos: u64,
    size: u64,
}

impl<R: Read> Expanded<R> {
    pub(super) fn new(mut inner: R, s: &Sparse) -> io::Result<Self> {
        let regions = if s.map_in_data {
            read_map(&mut inner)?
        } else {
            s.regions.clone()
        };
        // In order, not overlapping, within the file (Go's check).
        let mut end = 0u64;
        for &(off, len) in &regions {
            let stop = off
                .checked_add(len)
                .ok_or_else(|| bad("region overflows"))?;
            if off < end || stop > s.real_size {
                return Err(bad("regions out of order or past the end"));
            }
            end = stop;
        }
        Ok(Expanded {
            inner,
            regions,
            next: 0,
            pos: 0,
            size: s.real_size,
        })
    }
}

impl<R: Read> Read for Expanded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.next < self.regions.len() && self.regions[self.next].1 == 0 {
            self.next += 1;
        }
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        match self.regions.get(self.next).copied() {
            Some((off, len)) if self.pos >= off => {
                let want = (off + len - self.pos).min(buf.len() as u64) as usize;
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(bad("stored data ends early"));
                }
                self.pos += n as u64;
                if self.pos == off + len {
                    self.next += 1;
                }
                Ok(n)
            }
            region => {
                let hole_end = region.map_or(self.size, |(off, _)| off);
                let n = (hole_end - self.pos).min(buf.len() as u64) as usize;
                buf[..n].fill(0);
                self.pos += n as u64;
                Ok(n)
            }
        }
    }
}
