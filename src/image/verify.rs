//! A reader that checks a blob's size and sha256 as its bytes go by, so a
//! layer of any size is verified in one pass with bounded memory.

use std::io::{self, Read};

/// Passes `inner`'s bytes through; fails with `InvalidData` (naming the digest)
/// as soon as more than `size` bytes arrive, or at EOF if fewer arrived or they
/// do not hash to `digest`.
pub struct VerifyingReader<R> {
    inner: R,
    digest: String,
    size: u64,
    seen: u64,
    hasher: ring::digest::Context,
    done: bool,
}

impl<R: Read> VerifyingReader<R> {
    /// `digest` is "sha256:<hex>" (already validated by the caller).
    pub fn new(inner: R, digest: &str, size: u64) -> Self {
        VerifyingReader {
            inner,
            digest: digest.to_string(),
            size,
            seen: 0,
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            done: false,
        }
    }

    fn fail(&self, what: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("blob {}: {what}", self.digest),
        )
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.seen != self.size {
            return Err(self.fail(format!(
                "{} bytes, but its descriptor says {}",
                self.seen, self.size
            )));
        }
        let got = format!(
            "sha256:{}",
            hex::encode(self.hasher.clone().finish().as_ref())
        );
        if got != self.digest {
            return Err(self.fail(format!(
                "content does not match its digest (hashes to {got})"
            )));
        }
        self.done = true;
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.finish()?;
            return Ok(0);
        }
        self.seen += n as u64;
        if self.seen > self.size {
            return Err(self.fail(format!(
                "more than the {} bytes its descriptor says",
                self.size
            )));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// sha256 of everything `r` yields, as "sha256:<hex>", with its length.
pub fn hash_reader(mut r: impl Read) -> io::Result<(String, u64)> {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((
        format!("sha256:{}", hex::encode(h.finish().as_ref())),
        total,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        crate::Digest::of(b).to_string()
    }

    #[test]
    fn passes_good_bytes_and_rejects_bad_ones() {
        let data = b"hello layer".to_vec();
        let d = sha(&data);
        let mut out = Vec::new();
        VerifyingReader::new(&data[..], &d, data.len() as u64)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);

        let mut bad = data.clone();
        bad[0] ^= 1;
        let e = VerifyingReader::new(&bad[..], &d, data.len() as u64)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains(&d), "{e}");

        for size in [data.len() as u64 - 1, data.len() as u64 + 1] {
            let e = VerifyingReader::new(&data[..], &d, size)
                .read_to_end(&mut Vec::new())
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{size}");
        }
        assert_eq!(hash_reader(&data[..]).unwrap(), (d, data.len() as u64));
    }
}
