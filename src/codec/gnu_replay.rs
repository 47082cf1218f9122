//! Replay of GNU gzip (`gzip -N`, and `tar -z`, which runs it), whose
//! deflate is its own, not zlib's. The encoder is the Rust port in
//! `gnuflate`; this module names its parameters and candidates. gzip never
//! flushes mid-member, so a member is one deflate stream, closed at the end.

use super::Reencoder;
use crate::error::{Error, Result};
use gnuflate::Writer;

const FORMAT_V1: u8 = 1;
/// The output family: GNU gzip 1.12 (Debian 12's, checked byte for byte).
const FAMILY_GZIP_1_12: u8 = 1;

/// Header flags GNU gzip never sets (FHCRC, FEXTRA, FCOMMENT): a member
/// with any of them was made by something else.
const NOT_GNU_FLAGS: u8 = 2 | 4 | 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GnuParams {
    /// 1..=9 (gzip has no level 0).
    pub level: u8,
}

fn data_loss(what: &str) -> Error {
    Error::DataLoss(format!("GNU gzip replay parameters: {what}"))
}

impl GnuParams {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[FORMAT_V1, FAMILY_GZIP_1_12, self.level]);
    }

    pub fn decode(b: &[u8]) -> Result<(Self, usize)> {
        let [FORMAT_V1, FAMILY_GZIP_1_12, level, ..] = *b else {
            return Err(data_loss("unknown format or family"));
        };
        if !(1..=9).contains(&level) {
            return Err(data_loss("level out of range"));
        }
        Ok((GnuParams { level }, 3))
    }

    /// "gnu-6".
    pub fn name(&self) -> String {
        format!("gnu-{}", self.level)
    }

    pub fn reencoder(&self) -> Result<Box<dyn Reencoder>> {
        let w = Writer::new(i32::from(self.level))
            .map_err(|e| Error::Internal(format!("GNU gzip deflate: {e}")))?;
        Ok(Box::new(GnuReencoder { w, finished: false }))
    }
}

/// Candidates from the gzip header, most likely first. GNU gzip writes OS 3
/// (Unix), XFL 4 at level 1, 2 at level 9, else 0, and no FHCRC, FEXTRA or
/// FCOMMENT (FNAME only for a named file; read from a pipe, as `tar -z`
/// does, the name is absent and MTIME 0). Anything else: no candidates.
pub fn candidates(flags: u8, xfl: u8, os: u8) -> Vec<GnuParams> {
    if os != 3 || flags & NOT_GNU_FLAGS != 0 {
        return Vec::new();
    }
    let levels: &[u8] = match xfl {
        4 => &[1],
        2 => &[9],
        0 => &[6, 5, 4, 3, 2, 7, 8],
        _ => &[],
    };
    levels.iter().map(|&level| GnuParams { level }).collect()
}

struct GnuReencoder {
    w: Writer,
    finished: bool,
}

impl Reencoder for GnuReencoder {
    fn feed(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.finished {
            return Err(Error::Internal(
                "GNU gzip reencoder fed after finish".into(),
            ));
        }
        self.w.write(plain, out);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.finished {
            return Err(Error::Internal("GNU gzip reencoder finished twice".into()));
        }
        self.finished = true;
        self.w.finish(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_and_reject_nonsense() {
        for xfl in [0, 2, 4] {
            for p in candidates(0, xfl, 3) {
                let mut b = Vec::new();
                p.encode(&mut b);
                assert_eq!(b, [1, 1, p.level]);
                assert_eq!(GnuParams::decode(&b).unwrap(), (p, 3));
            }
        }
        assert_eq!(GnuParams { level: 6 }.name(), "gnu-6");
        assert!(GnuParams::decode(&[1, 1, 0]).is_err());
        assert!(GnuParams::decode(&[1, 1, 10]).is_err());
        assert!(GnuParams::decode(&[2, 1, 6]).is_err());
        assert!(GnuParams::decode(&[1, 2, 6]).is_err());
        assert!(GnuParams::decode(&[1, 1]).is_err());
    }

    #[test]
    fn candidates_follow_the_header() {
        let levels = |flags, xfl, os| -> Vec<u8> {
            candidates(flags, xfl, os)
                .into_iter()
                .map(|p| p.level)
                .collect()
        };
        assert_eq!(levels(0, 0, 3), [6, 5, 4, 3, 2, 7, 8]);
        assert_eq!(levels(8, 4, 3), [1]);
        assert_eq!(levels(0, 2, 3), [9]);
        // Not GNU gzip's header: another OS, flags or XFL.
        assert!(levels(0, 0, 255).is_empty());
        assert!(levels(4, 0, 3).is_empty());
        assert!(levels(16, 0, 3).is_empty());
        assert!(levels(2, 0, 3).is_empty());
        assert!(levels(0, 1, 3).is_empty());
    }

    #[test]
    fn replays_a_stream_in_any_pieces() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("line {} of {}\n", i % 977, i % 13).into_bytes())
            .collect();
        let whole = {
            let mut r = GnuParams { level: 6 }.reencoder().unwrap();
            let mut out = Vec::new();
            r.feed(&data, &mut out).unwrap();
            r.finish(&mut out).unwrap();
            out
        };
        let mut r = GnuParams { level: 6 }.reencoder().unwrap();
        let mut out = Vec::new();
        for piece in data.chunks(12_345) {
            r.feed(piece, &mut out).unwrap();
        }
        r.finish(&mut out).unwrap();
        assert!(out == whole);
        assert!(r.feed(b"x", &mut out).is_err());
        assert!(r.finish(&mut out).is_err());
    }
}
