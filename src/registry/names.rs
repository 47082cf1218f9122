//! The path components a client sends, checked against the spec's grammar
//! before anything touches the store: repository names, tags, digests.

use super::errors::{ApiError, ApiResult, Code};
use crate::digest::Digest;

/// The longest repository name accepted (the spec's suggested bound).
pub const MAX_NAME: usize = 255;

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`,
/// at most 255 bytes. No `..`, no empty components, no uppercase.
pub fn valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME && !name.is_empty() && name.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: ".", "_", "__" or one or more "-", between alphanumerics.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i >= b.len() || !alnum(b[i]) || start == 0 {
            return false;
        }
    }
    true
}

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

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
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
    fn names_follow_the_grammar() {
        for ok in [
            "a",
            "library/debian",
            "a.b_c__d--e/f0",
            "x/y/z",
            "conformance/test",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "x/../y",
            "A",
            "Library/x",
            "a//b",
            "/a",
            "a/",
            "a_",
            "-a",
            "a___b",
            "a.-b",
            "a b",
            "a%2fb",
            "a\0b",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(!valid_name(&"a".repeat(300)));
        assert!(valid_name(&"a".repeat(255)));
    }

    #[test]
    fn tags_and_digests() {
        assert!(valid_tag("latest") && valid_tag("_x") && valid_tag("1.0-rc_2"));
        assert!(!valid_tag("-x") && !valid_tag(".x") && !valid_tag(&"a".repeat(129)));
        assert!(!valid_tag("a/b") && !valid_tag("a:b"));
        assert!(parse_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(parse_digest(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(parse_digest("sha256:totallywrong").is_err());
        assert!(parse_digest(&format!("sha512:{}", "a".repeat(128))).is_err());
    }
}
