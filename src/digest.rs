//! OCI content digests. Only sha256 is stored; the server always computes it.

use crate::error::{Error, Result};
use sha2::{Digest as _, Sha256};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn parse(s: &str) -> Result<Self> {
        let hex_part = s.strip_prefix("sha256:").ok_or_else(|| {
            Error::InvalidArgument(format!(
                "digest {s:?}: only sha256 digests are supported (\"sha256:<64 hex>\")"
            ))
        })?;
        let mut out = [0u8; 32];
        if hex_part.len() != 64 || hex_part.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(Error::InvalidArgument(format!(
                "digest {s:?}: expected 64 lower-case hex digits after \"sha256:\""
            )));
        }
        hex::decode_to_slice(hex_part, &mut out)
            .map_err(|_| Error::InvalidArgument(format!("digest {s:?}: not hexadecimal")))?;
        Ok(Digest(out))
    }

    pub fn of(data: &[u8]) -> Self {
        Digest(Sha256::digest(data).into())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_malformed() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        for bad in [
            "",
            "sha256:",
            "md5:00",
            "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
        ] {
            assert!(
                matches!(Digest::parse(bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }
}
