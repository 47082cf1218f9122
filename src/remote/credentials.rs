//! Registry credentials where users keep them: `--creds USER:PASS`, then the
//! containers auth files (`$REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`),
//! then docker's `~/.docker/config.json`. Only plain `auth` entries are read;
//! a credential helper configured for a registry is named in the error
//! instead of being silently skipped.

use crate::error::{Error, Result};
use base64::Engine as _;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    /// `USER:PASS` as `--creds` takes it.
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credentials {
                username: u.into(),
                password: p.into(),
            }),
            _ => Err(Error::InvalidArgument("--creds: expected USER:PASS".into())),
        }
    }

    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// The auth files searched, in order (those that exist are read).
pub fn auth_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        out.push(PathBuf::from(f));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        out.push(PathBuf::from(d).join("containers/auth.json"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        let h = PathBuf::from(h);
        out.push(h.join(".config/containers/auth.json"));
        out.push(h.join(".docker/config.json"));
    }
    out
}

/// The keys an entry for `registry` (and `repository` in it) may have, most
/// specific first: containers' `host/repo` keys, the host, docker's URL forms.
fn keys(registry: &str, repository: &str) -> Vec<String> {
    let mut k = Vec::new();
    let mut path = format!("{registry}/{repository}");
    loop {
        k.push(path.clone());
        match path.rfind('/') {
            Some(i) if i > registry.len() => path.truncate(i),
            _ => break,
        }
    }
    k.push(registry.to_string());
    k.push(format!("https://{registry}"));
    k.push(format!("http://{registry}"));
    if registry == super::reference::DOCKER_HUB {
        k.push("https://index.docker.io/v1/".into());
        k.push("index.docker.io".into());
    }
    k
}

/// Credentials for `registry`/`repository` from the auth files, or None
/// (anonymous). A configured credential helper with no plain entry is an
/// error naming it.
pub fn lookup(registry: &str, repository: &str) -> Result<Option<Credentials>> {
    lookup_in(&auth_files(), registry, repository)
}

pub fn lookup_in(
    files: &[PathBuf],
    registry: &str,
    repository: &str,
) -> Result<Option<Credentials>> {
    let keys = keys(registry, repository);
    // A helper named for this registry matters only if no file has a plain
    // entry; a `credsStore` for every registry (Docker Desktop's default)
    // does not stop anonymous pulls.
    let mut helper: Option<(String, &PathBuf)> = None;
    for f in files {
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("reading {}", f.display()), e)),
        };
        let file: AuthFile = serde_json::from_slice(&bytes).map_err(|e| {
            Error::InvalidArgument(format!("{}: malformed auth file: {e}", f.display()))
        })?;
        for k in &keys {
            if let Some(e) = file.auths.get(k) {
                if let Some(a) = e.auth.as_deref().filter(|a| !a.is_empty()) {
                    return decode(a, f, k).map(Some);
                }
            }
        }
        if helper.is_none() {
            if let Some(h) = keys.iter().find_map(|k| file.cred_helpers.get(k)) {
                helper = Some((h.clone(), f));
            } else if let Some(h) = &file.creds_store {
                tracing::warn!(file = %f.display(), helper = %h, %registry, "credsStore is not run: asking anonymously");
            }
        }
    }
    if let Some((h, f)) = helper {
        return Err(Error::InvalidArgument(format!(
            "{}: credentials for {registry} are kept by the credential helper \
             \"docker-credential-{h}\", which strata does not run; pass --creds USER:PASS \
             or add a plain \"auth\" entry",
            f.display()
        )));
    }
    Ok(None)
}

fn decode(a: &str, f: &std::path::Path, k: &str) -> Result<Credentials> {
    let bad = || {
        Error::InvalidArgument(format!(
            "{}: the \"auth\" of {k:?} is not base64 of USER:PASS",
            f.display()
        ))
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(a.trim())
        .map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    Credentials::parse(&s).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_entries_by_repository_host_and_docker_url() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("auth.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &a,
            format!(
                r#"{{"auths":{{"reg:5000/team/app":{{"auth":"{}"}},"reg:5000":{{"auth":"{}"}},
                "https://index.docker.io/v1/":{{"auth":"{}"}}}},
                "credHelpers":{{"gcr.io":"gcloud"}}}}"#,
                b64("team:t"),
                b64("all:a"),
                b64("hub:h:with:colons")
            ),
        )
        .unwrap();
        let files = vec![dir.path().join("missing.json"), a.clone()];
        let get = |r: &str, p: &str| lookup_in(&files, r, p).unwrap();
        assert_eq!(get("reg:5000", "team/app/sub").unwrap().username, "team");
        assert_eq!(get("reg:5000", "other").unwrap().username, "all");
        let hub = get("docker.io", "library/ubuntu").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "h:with:colons")
        );
        assert_eq!(get("elsewhere", "x"), None);
        let e = lookup_in(&files, "gcr.io", "p/x").unwrap_err().to_string();
        assert!(e.contains("docker-credential-gcloud"), "{e}");
        // A plain entry in a later file wins over an earlier file's helper.
        let later = dir.path().join("later.json");
        std::fs::write(
            &later,
            format!(r#"{{"auths":{{"gcr.io":{{"auth":"{}"}}}}}}"#, b64("g:p")),
        )
        .unwrap();
        let both = vec![a.clone(), later];
        assert_eq!(
            lookup_in(&both, "gcr.io", "p/x").unwrap().unwrap().username,
            "g"
        );
        // A credsStore for everything does not stop anonymous access.
        let store = dir.path().join("store.json");
        std::fs::write(&store, r#"{"credsStore":"desktop"}"#).unwrap();
        assert_eq!(lookup_in(&[store], "docker.io", "library/x").unwrap(), None);
        std::fs::write(&a, r#"{"auths":{"r":{"auth":"!!"}}}"#).unwrap();
        assert!(lookup_in(&files, "r", "x").is_err());
        assert!(Credentials::parse("nopass").is_err());
        assert_eq!(
            Credentials::parse("u:p").unwrap().basic_header(),
            format!("Basic {}", b64("u:p"))
        );
    }
}
