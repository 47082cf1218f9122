//! The path components a client sends, checked against the spec's grammar
//! before anything touches the store: repository names, tags, digests.

use super::errors::{ApiError, ApiResult, Code};
use crate::digest::Digest;

pub use crate::remote::names::{valid_name, valid_tag};

pub fn check_name(name: &str) -> ApiResult<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::NameInvalid,
            format!("invalid repository name {:?}", truncate(name)),
        ))
    }
}

/// A `sha256:<64 lowercase hex>` digest. Other algorithms are refused:
/// strata names every blob by its sha256.
pub fn parse_digest(s: &str) -> ApiResult<Digest> {
    let bad = || {
        ApiError::new(
            Code::DigestInvalid,
            format!("invalid digest {:?}", truncate(s)),
        )
    };
    let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return Err(bad());
    }
    Digest::parse(s).map_err(|_| bad())
}

/// A manifest reference: a tag or a digest.
#[derive(Clone)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

pub fn parse_reference(r: &str) -> ApiResult<Reference> {
    if r.contains(':') {
        return parse_digest(r).map(Reference::Digest);
    }
    if valid_tag(r) {
        Ok(Reference::Tag(r.to_string()))
    } else {
        Err(ApiError::new(
            Code::TagInvalid,
            format!("invalid tag {:?}", truncate(r)),
        ))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        assert!(parse_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(parse_digest(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(parse_digest("sha256:totallywrong").is_err());
        assert!(parse_digest(&format!("sha512:{}", "a".repeat(128))).is_err());
    }
}
