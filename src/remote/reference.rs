//! Image references as users type them: `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`
//! (Docker Hub short names resolved as docker and podman resolve them), and
//! skopeo's transport spellings for files (`oci:DIR[:REF]`,
//! `oci-archive:FILE[:REF]`, `docker-archive:FILE[:REF]`); a bare path stays
//! a path.

use super::names::{valid_name, valid_tag};
use crate::digest::Digest;
use crate::error::{Error, Result};
use std::fmt;
use std::path::PathBuf;

/// Docker Hub, as references name it and as its API is reached.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// One image in a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`, Docker Hub spelled `docker.io`.
    pub registry: String,
    /// The repository path (`library/ubuntu`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses what follows `docker://`. A first component without a `.`, a
    /// `:` or being `localhost` is a Docker Hub path; a one-component Hub
    /// path is in `library/`. No tag and no digest means `latest`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidArgument(format!("image reference {s:?}: {why}"));
        let s = s.trim_start_matches("//");
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Digest::parse(d).map_err(|e| bad(&format!("digest: {e}")))?),
            ),
            None => (s, None),
        };
        // A tag is after the last ':' that has no '/' after it (a port has).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_string())),
            _ => (rest, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(bad(&format!("invalid tag {t:?}")));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        if registry.is_empty() || registry.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(bad("invalid registry host"));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if !valid_name(&repository) {
            return Err(bad(&format!(
                "invalid repository name {repository:?} (lowercase letters, digits and . _ - separators)"
            )));
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What the manifest URL names: the digest if there is one, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The host its API is served from (Docker Hub's differs from its name).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The same repository with another tag (what a push names).
    pub fn with_repository(&self, repository: &str) -> Reference {
        Reference {
            repository: repository.to_string(),
            tag: None,
            digest: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    /// The full name, as containerd names images (`docker.io/library/x:1`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => write!(f, ":{t}@{d}"),
            (Some(t), None) => write!(f, ":{t}"),
            (None, Some(d)) => write!(f, "@{d}"),
            (None, None) => write!(f, ":latest"),
        }
    }
}

/// Where an image is read from or written to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Registry(Reference),
    /// A file or directory of a format `image::open` detects; with a ref
    /// name, only the image of that name in it.
    Path {
        path: PathBuf,
        name: Option<String>,
        transport: Option<Transport>,
    },
}

/// The skopeo transport a path was given with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Oci,
    OciArchive,
    DockerArchive,
}

impl Location {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(r) = s.strip_prefix("docker://") {
            return Ok(Location::Registry(Reference::parse(r)?));
        }
        for (prefix, t) in [
            ("oci:", Transport::Oci),
            ("oci-archive:", Transport::OciArchive),
            ("docker-archive:", Transport::DockerArchive),
        ] {
            if let Some(rest) = s.strip_prefix(prefix) {
                // As skopeo: the path ends at the first ':'.
                let (path, name) = match rest.split_once(':') {
                    Some((p, n)) => (p, Some(n.to_string()).filter(|n| !n.is_empty())),
                    None => (rest, None),
                };
                if path.is_empty() {
                    return Err(Error::InvalidArgument(format!(
                        "{s:?}: no path after {prefix}"
                    )));
                }
                return Ok(Location::Path {
                    path: PathBuf::from(path),
                    name,
                    transport: Some(t),
                });
            }
        }
        if s.starts_with("docker:") || s.starts_with("containers-storage:") || s.starts_with("dir:")
        {
            return Err(Error::InvalidArgument(format!(
                "{s:?}: unsupported transport (use docker://, oci:, oci-archive:, docker-archive: or a path)"
            )));
        }
        Ok(Location::Path {
            path: PathBuf::from(s),
            name: None,
            transport: None,
        })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Registry(r) => write!(f, "docker://{r}"),
            Location::Path { path, name, .. } => {
                write!(f, "{}", path.display())?;
                match name {
                    Some(n) => write!(f, ":{n}"),
                    None => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn short_names_resolve_as_docker_does() {
        assert_eq!(r("ubuntu:24.04"), "docker.io/library/ubuntu:24.04");
        assert_eq!(r("ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(r("bitnami/redis"), "docker.io/bitnami/redis:latest");
        assert_eq!(
            r("index.docker.io/library/ubuntu"),
            "docker.io/library/ubuntu:latest"
        );
        assert_eq!(r("localhost/x:1"), "localhost/x:1");
        assert_eq!(r("127.0.0.1:5000/a/b:v2"), "127.0.0.1:5000/a/b:v2");
        assert_eq!(r("quay.io/x/y"), "quay.io/x/y:latest");
        let d = format!("sha256:{}", "ab".repeat(32));
        let p = Reference::parse(&format!("127.0.0.1:5000/a@{d}")).unwrap();
        assert_eq!(p.reference(), d);
        assert_eq!(p.tag, None);
        assert_eq!(
            Reference::parse("ubuntu").unwrap().api_host(),
            "registry-1.docker.io"
        );
        assert_eq!(p.api_host(), "127.0.0.1:5000");
        for bad in [
            "",
            "Ubuntu",
            "a/../b",
            "x:bad tag",
            "a@sha256:12",
            "h:5000/",
            "a//b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn transports_and_paths() {
        assert_eq!(
            Location::parse("docker://ubuntu").unwrap(),
            Location::Registry(Reference::parse("ubuntu").unwrap())
        );
        assert_eq!(
            Location::parse("oci:/tmp/l:v1").unwrap(),
            Location::Path {
                path: "/tmp/l".into(),
                name: Some("v1".into()),
                transport: Some(Transport::Oci)
            }
        );
        assert_eq!(
            Location::parse("docker-archive:a.tar").unwrap(),
            Location::Path {
                path: "a.tar".into(),
                name: None,
                transport: Some(Transport::DockerArchive)
            }
        );
        assert!(matches!(
            Location::parse("./some/dir").unwrap(),
            Location::Path {
                transport: None,
                ..
            }
        ));
        assert!(Location::parse("dir:/x").is_err());
        assert!(Location::parse("oci:").is_err());
    }
}
