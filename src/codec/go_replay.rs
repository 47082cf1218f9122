//! Replay of Go's standard `compress/gzip` (over `compress/flate`), the
//! gzip writer of Docker, BuildKit, containerd and go-containerregistry.
//! The encoder is the Rust port in `goflate`; this module names its
//! parameters and candidates. `compress/gzip` never flushes on its own, so a
//! member is one flate stream, closed at the end.

use super::Reencoder;
use crate::error::{Error, Result};
use goflate::Writer;

const FORMAT_V1: u8 = 1;
/// The output family: Go 1.15 and later (Debian 12's 1.19 checked).
const FAMILY_GO_1_15: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoParams {
    /// -2 (Huffman only), 0 (stored), 1..=9. Go's -1 is level 6.
    pub level: i8,
}

fn data_loss(what: &str) -> Error {
    Error::DataLoss(format!("Go gzip replay parameters: {what}"))
}

impl GoParams {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[FORMAT_V1, FAMILY_GO_1_15, self.level as u8]);
    }

    pub fn decode(b: &[u8]) -> Result<(Self, usize)> {
        let [FORMAT_V1, FAMILY_GO_1_15, level, ..] = *b else {
            return Err(data_loss("unknown format or family"));
        };
        let level = level as i8;
        if !matches!(level, -2 | 0..=9) {
            return Err(data_loss("level out of range"));
        }
        Ok((GoParams { level }, 3))
    }

    /// "go-6".
    pub fn name(&self) -> String {
        format!("go-{}", self.level)
    }

    pub fn reencoder(&self) -> Result<Box<dyn Reencoder>> {
        let w = Writer::new(self.level as i32)
            .map_err(|e| Error::Internal(format!("Go flate: {e}")))?;
        Ok(Box::new(GoReencoder { w, finished: false }))
    }
}

/// Candidates from the gzip header: `compress/gzip` writes XFL 2 at level 9,
/// 4 at level 1, else 0, and OS 255. Most likely first.
pub fn candidates(xfl: u8) -> Vec<GoParams> {
    let levels: &[i8] = match xfl {
        4 => &[1],
        2 => &[9],
        _ => &[6, 5, 4, 3, 2, 7, 8, -2, 0],
    };
    levels.iter().map(|&level| GoParams { level }).collect()
}

struct GoReencoder {
    w: Writer,
    finished: bool,
}

impl Reencoder for GoReencoder {
    fn feed(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.finished {
            return Err(Error::Internal("Go reencoder fed after finish".into()));
        }
        self.w.write(plain, out);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.finished {
            return Err(Error::Internal("Go reencoder finished twice".into()));
        }
        self.finished = true;
        self.w.close(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_and_reject_nonsense() {
        for p in candidates(0)
            .into_iter()
            .chain(candidates(2))
            .chain(candidates(4))
        {
            let mut b = Vec::new();
            p.encode(&mut b);
            assert_eq!(GoParams::decode(&b).unwrap(), (p, 3));
        }
        assert!(GoParams::decode(&[1, 1, 10]).is_err());
        assert!(GoParams::decode(&[1, 1, (-1i8) as u8]).is_err());
        assert!(GoParams::decode(&[2, 1, 6]).is_err());
        assert!(GoParams::decode(&[1, 1]).is_err());
    }
}
