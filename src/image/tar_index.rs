//! Where each member of a tar file lies, found by walking its headers once,
//! so members are read in place by seeking and never extracted.
//!
//! Enough of the format for image archives: ustar (with its name prefix),
//! GNU long names ('L'/'K') and base-256 sizes, PAX `path`/`linkpath`/`size`.
//! Symbolic and hard links between members resolve (legacy `docker save`
//! links a repeated layer.tar to the first copy).

use crate::split::tar as ustar;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

const BLOCK: u64 = ustar::BLOCK as u64;
/// Bounds on the metadata members that are read into memory.
const MAX_META: u64 = 1 << 20;
const MAX_LINK_HOPS: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

/// The regular files (and links to them) of one tar, by normalized name.
#[derive(Debug, Default)]
pub struct TarIndex {
    members: HashMap<String, Member>,
}

impl TarIndex {
    /// Walks the headers of the tar at `path`. An error is `InvalidData` for
    /// something that is not a (well-formed) tar.
    pub fn build(path: &Path) -> io::Result<Self> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        Self::walk(&mut f, len)
    }

    fn walk<R: Read + Seek>(r: &mut R, len: u64) -> io::Result<Self> {
        let mut members = HashMap::new();
        let mut pos = 0u64;
        let mut long_name: Option<String> = None;
        let mut long_link: Option<String> = None;
        let mut pax: HashMap<String, String> = HashMap::new();
        let mut header = [0u8; BLOCK as usize];
        while pos + BLOCK <= len {
            r.seek(SeekFrom::Start(pos))?;
            r.read_exact(&mut header)?;
            if header.iter().all(|&b| b == 0) {
                break; // end-of-archive marker
            }
            check_sum(&header, pos)?;
            let mut size = ustar::parse_numeric(&header[124..136])
                .ok_or_else(|| bad(format!("member at offset {pos}: bad size field")))?;
            if let Some(s) = pax.get("size") {
                size = s
                    .parse()
                    .map_err(|_| bad(format!("member at offset {pos}: bad PAX size {s:?}")))?;
            }
            let data = pos + BLOCK;
            let end = data
                .checked_add(size)
                .filter(|&e| e <= len)
                .ok_or_else(|| {
                    bad(format!(
                        "member at offset {pos} runs past the end of the file"
                    ))
                })?;
            let typeflag = header[156];
            match typeflag {
                b'L' | b'K' | b'x' => {
                    if size > MAX_META {
                        return Err(bad(format!("metadata member at offset {pos} is too large")));
                    }
                    let mut buf = vec![0u8; size as usize];
                    r.read_exact(&mut buf)?;
                    match typeflag {
                        b'L' => long_name = Some(cstr(&buf)),
                        b'K' => long_link = Some(cstr(&buf)),
                        _ => {
                            pax = parse_pax(&buf).map_err(|m| bad(format!("offset {pos}: {m}")))?
                        }
                    }
                }
                b'g' => {} // global PAX defaults: nothing these archives need
                _ => {
                    let name = pax
                        .remove("path")
                        .or_else(|| long_name.take())
                        .unwrap_or_else(|| header_name(&header));
                    let link = pax
                        .remove("linkpath")
                        .or_else(|| long_link.take())
                        .unwrap_or_else(|| cstr(&header[157..257]));
                    let name = normalize(&name);
                    match typeflag {
                        b'0' | 0 | b'7' => {
                            members.insert(name, Member::File { offset: data, size });
                        }
                        b'1' => {
                            members.insert(name, Member::Link(normalize(&link)));
                        }
                        b'2' => {
                            // Relative to the directory holding the link.
                            let target = if link.starts_with('/') {
                                link
                            } else {
                                match name.rsplit_once('/') {
                                    Some((dir, _)) => format!("{dir}/{link}"),
                                    None => link,
                                }
                            };
                            members.insert(name, Member::Link(normalize(&target)));
                        }
                        _ => {}
                    }
                    long_name = None;
                    long_link = None;
                    pax.clear();
                }
            }
            pos = end.div_ceil(BLOCK) * BLOCK;
        }
        Ok(TarIndex { members })
    }

    /// Offset and size of the data of member `name`, links followed.
    pub fn find(&self, name: &str) -> Option<(u64, u64)> {
        let mut name = normalize(name);
        for _ in 0..MAX_LINK_HOPS {
            match self.members.get(&name)? {
                Member::File { offset, size } => return Some((*offset, *size)),
                Member::Link(t) => name = t.clone(),
            }
        }
        None
    }

    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn check_sum(h: &[u8; 512], pos: u64) -> io::Result<()> {
    if ustar::checksum_ok(h) {
        Ok(())
    } else {
        Err(bad(format!(
            "not a tar: bad header checksum at offset {pos}"
        )))
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The ustar name, with its prefix when the POSIX magic says there is one
/// (GNU tar keeps other fields where ustar has the prefix).
fn header_name(h: &[u8; 512]) -> String {
    let name = cstr(&h[0..100]);
    if &h[257..263] == b"ustar\0" {
        let prefix = cstr(&h[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

/// PAX records: "<len> <key>=<value>\n", the length counting the whole record.
fn parse_pax(mut b: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    while !b.is_empty() {
        if b.iter().all(|&c| c == 0) {
            break;
        }
        let sp = b
            .iter()
            .position(|&c| c == b' ')
            .ok_or("PAX record without a length")?;
        let n: usize = std::str::from_utf8(&b[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad PAX record length")?;
        if n <= sp + 1 || n > b.len() || b[n - 1] != b'\n' {
            return Err("bad PAX record length".into());
        }
        let rec = &b[sp + 1..n - 1];
        let eq = rec
            .iter()
            .position(|&c| c == b'=')
            .ok_or("PAX record without '='")?;
        out.insert(
            String::from_utf8_lossy(&rec[..eq]).into_owned(),
            String::from_utf8_lossy(&rec[eq + 1..]).into_owned(),
        );
        b = &b[n..];
    }
    Ok(out)
}

/// "./a//b/../c/" → "a/c": the names manifests use and the names tars hold
/// are compared in this form.
pub fn normalize(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn build(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    }

    fn read(tar: &[u8], idx: &TarIndex, name: &str) -> Option<Vec<u8>> {
        let (o, s) = idx.find(name)?;
        Some(tar[o as usize..(o + s) as usize].to_vec())
    }

    #[test]
    fn finds_members_long_names_and_links() {
        let long = format!("{}/layer.tar", "d".repeat(150));
        let data = build(|b| {
            file(b, "./manifest.json", b"[]");
            file(b, &long, b"long");
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "x/layer.tar", format!("../{}", long))
                .unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, "hard", "manifest.json").unwrap();
        });
        let idx = TarIndex::walk(&mut Cursor::new(&data), data.len() as u64).unwrap();
        assert_eq!(read(&data, &idx, "manifest.json").unwrap(), b"[]");
        assert_eq!(read(&data, &idx, &long).unwrap(), b"long");
        assert_eq!(read(&data, &idx, "x/layer.tar").unwrap(), b"long");
        assert_eq!(read(&data, &idx, "hard").unwrap(), b"[]");
        assert!(idx.find("nope").is_none());
    }

    #[test]
    fn pax_path_and_bad_input() {
        let data = build(|b| {
            let mut h = tar::Header::new_ustar();
            h.set_size(3);
            h.set_mode(0o644);
            b.append_pax_extensions([("path", &b"pax/name"[..])])
                .unwrap();
            b.append_data(&mut h, "short", &b"abc"[..]).unwrap();
        });
        let idx = TarIndex::walk(&mut Cursor::new(&data), data.len() as u64).unwrap();
        assert_eq!(read(&data, &idx, "pax/name").unwrap(), b"abc");

        let mut corrupt = data.clone();
        corrupt[10] ^= 0x55;
        assert!(TarIndex::walk(&mut Cursor::new(&corrupt), corrupt.len() as u64).is_err());
        let truncated = &data[..data.len() - 1024 - 510]; // inside the last member
        assert!(TarIndex::walk(&mut Cursor::new(truncated), truncated.len() as u64).is_err());
        // Arbitrary bytes never panic.
        for seed in 0..200u32 {
            let junk: Vec<u8> = (0..2048u32)
                .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed * 7919) >> 13) as u8)
                .collect();
            let _ = TarIndex::walk(&mut Cursor::new(&junk), junk.len() as u64);
        }
        assert_eq!(normalize("./a//b/../c/"), "a/c");
    }
}
