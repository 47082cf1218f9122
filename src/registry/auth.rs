//! `--registry-htpasswd FILE`: HTTP Basic auth against bcrypt hashes
//! (`htpasswd -B`). A verified user and password are remembered (by a
//! BLAKE3 of both), so bcrypt's deliberate cost is paid once per client,
//! not per request; bcrypt itself runs on the blocking pool.

use super::errors::{ApiError, ApiResult, Code};
use crate::error::{Error, Result};
use axum::http::{header, HeaderMap};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

pub(crate) struct Htpasswd {
    users: Arc<HashMap<String, String>>,
    verified: parking_lot::Mutex<HashSet<[u8; 32]>>,
}

/// The realm clients are told about in WWW-Authenticate.
pub const REALM: &str = "strata-registry";

impl Htpasswd {
    pub fn load(path: &Path) -> Result<Htpasswd> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot read --registry-htpasswd {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text).map_err(|m| {
            Error::InvalidArgument(format!("--registry-htpasswd {}: {m}", path.display()))
        })
    }

    pub fn parse(text: &str) -> std::result::Result<Htpasswd, String> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected user:hash", i + 1))?;
            if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
                return Err(format!(
                    "line {}: user {user:?} has no bcrypt hash (create it with `htpasswd -B`)",
                    i + 1
                ));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        if users.is_empty() {
            return Err("no users in it".into());
        }
        Ok(Htpasswd {
            users: Arc::new(users),
            verified: Default::default(),
        })
    }

    fn challenge(msg: &str) -> ApiError {
        ApiError::new(Code::Unauthorized, msg).with_header(
            header::WWW_AUTHENTICATE,
            &format!("Basic realm=\"{REALM}\", charset=\"UTF-8\""),
        )
    }

    /// Passes a request carrying a known user and the right password.
    pub async fn check(&self, headers: &HeaderMap) -> ApiResult<()> {
        let Some(v) = headers.get(header::AUTHORIZATION) else {
            return Err(Self::challenge("authentication required"));
        };
        let bad = || Self::challenge("invalid credentials");
        let v = v.to_str().map_err(|_| bad())?;
        let b64 = v
            .strip_prefix("Basic ")
            .or_else(|| v.strip_prefix("basic "))
            .ok_or_else(bad)?;
        let raw = base64_decode(b64.trim()).ok_or_else(bad)?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (user, pass) = raw.split_once(':').ok_or_else(bad)?;
        let key: [u8; 32] = *blake3::hash(raw.as_bytes()).as_bytes();
        if self.verified.lock().contains(&key) {
            return Ok(());
        }
        let Some(hash) = self.users.get(user).cloned() else {
            return Err(bad());
        };
        let pass = pass.to_string();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(pass, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if !ok {
            return Err(bad());
        }
        let mut v = self.verified.lock();
        if v.len() > 10_000 {
            v.clear();
        }
        v.insert(key);
        Ok(())
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert!(base64_decode("!!!!").is_none());
    }

    #[test]
    fn htpasswd_needs_bcrypt() {
        assert!(Htpasswd::parse("alice:$apr1$x$y").is_err());
        assert!(Htpasswd::parse("# nothing").is_err());
        assert!(Htpasswd::parse(
            "alice:$2y$05$abcdefghijklmnopqrstuu5Zl2zq0vOQ5h3eS0F8t1XbE1k8v1y."
        )
        .is_ok());
    }
}
