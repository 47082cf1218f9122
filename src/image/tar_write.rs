//! A minimal tar writer for docker-archive export: ustar headers, our own
//! short names, sizes past 8 GiB in GNU base-256.

use std::io::{self, Write};

const BLOCK: usize = 512;

pub(crate) struct TarWriter<W: Write> {
    w: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(w: W) -> Self {
        TarWriter { w }
    }

    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.header(name, 0, b'5', 0o755)
    }

    /// A regular file's header; its `size` bytes follow, then [`Self::pad`].
    pub fn file_header(&mut self, name: &str, size: u64) -> io::Result<()> {
        self.header(name, size, b'0', 0o644)
    }

    pub fn writer(&mut self) -> &mut W {
        &mut self.w
    }

    /// Zero fill after a member of `size` bytes, to the next block.
    pub fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.w.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.file_header(name, data.len() as u64)?;
        self.w.write_all(data)?;
        self.pad(data.len() as u64)
    }

    /// Writes the end-of-archive marker and hands back the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.w.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.w)
    }

    fn header(&mut self, name: &str, size: u64, typeflag: u8, mode: u32) -> io::Result<()> {
        if name.len() > 100 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tar member name {name:?} is longer than 100 bytes"),
            ));
        }
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], mode as u64);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        if size < 1 << 33 {
            octal(&mut h[124..136], size);
        } else {
            h[124] = 0x80;
            h[128..136].copy_from_slice(&size.to_be_bytes());
        }
        octal(&mut h[136..148], 0);
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u64 = h.iter().map(|&b| b as u64).sum();
        octal(&mut h[148..155], sum);
        h[155] = b' ';
        self.w.write_all(&h)
    }
}

/// Zero-padded octal filling the field but for a trailing NUL.
fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0width$o}", width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_tar_crate_reads_what_we_write() {
        let mut t = TarWriter::new(Vec::new());
        t.dir("blobs/").unwrap();
        t.file("blobs/a", b"hello").unwrap();
        t.file("manifest.json", &[7u8; 1000]).unwrap();
        let data = t.finish().unwrap();
        let mut ar = tar::Archive::new(&data[..]);
        let mut got = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut buf = Vec::new();
            e.read_to_end(&mut buf).unwrap();
            got.push((e.path().unwrap().display().to_string(), buf.len()));
        }
        assert_eq!(
            got,
            [
                ("blobs/".to_string(), 0),
                ("blobs/a".to_string(), 5),
                ("manifest.json".to_string(), 1000)
            ]
        );
    }
}
