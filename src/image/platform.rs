//! Platforms as `--platform` names them ("linux/arm64/v8") and how an index
//! entry's platform is matched against one.

use crate::error::{Error, Result};

/// The platform to pick from an image index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Parses "os/arch" or "os/arch/variant", e.g. "linux/amd64", "linux/arm64/v8".
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            Error::InvalidArgument(format!(
                "platform {s:?}: expected \"os/arch\" or \"os/arch/variant\", e.g. \"linux/amd64\""
            ))
        };
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            arch: normalize_arch(&parts[1].to_ascii_lowercase()).to_string(),
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        })
    }

    /// The platform this process runs on, in the OCI spec's (Go's) names.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "arm" => "arm",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "riscv64" => "riscv64",
            "s390x" => "s390x",
            "loongarch64" => "loong64",
            "mips64" if cfg!(target_endian = "little") => "mips64le",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            arch: arch.to_string(),
            variant: None,
        }
    }

    /// How well an index entry's platform fits: None if it does not, else a
    /// rank (higher is better) so that an exact variant beats an unnamed one.
    pub(crate) fn fit(&self, os: &str, arch: &str, variant: Option<&str>) -> Option<u8> {
        if !os.eq_ignore_ascii_case(&self.os) || normalize_arch(arch) != self.arch {
            return None;
        }
        let theirs = normalize_variant(&self.arch, variant);
        match (self.variant.as_deref(), theirs) {
            // No variant asked for: any will do, the default one best.
            (None, t) => Some(if t == normalize_variant(&self.arch, None) {
                2
            } else {
                1
            }),
            (Some(want), t) => {
                let want = normalize_variant(&self.arch, Some(want));
                if want == t {
                    Some(2)
                } else if t.is_none() {
                    Some(1)
                } else {
                    None
                }
            }
        }
    }
}

impl Default for Platform {
    fn default() -> Self {
        Platform::host()
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Platform::parse(s)
    }
}

/// Docker and Go spell some architectures two ways.
fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" => "386",
        other => other,
    }
}

/// arm64 without a variant is v8 (containerd's rule); others have no default.
fn normalize_variant(arch: &str, variant: Option<&str>) -> Option<String> {
    match (arch, variant.filter(|v| !v.is_empty())) {
        ("arm64", None) => Some("v8".to_string()),
        (_, v) => v.map(|v| v.to_ascii_lowercase()),
    }
}

/// The "os/arch[/variant]" string of an index entry or config.
pub(crate) fn display(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant.filter(|v| !v.is_empty()) {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(p.fit("linux", "arm64", None).is_some());
        assert!(p.fit("linux", "arm64", Some("v8")).is_some());
        assert!(p.fit("linux", "arm64", Some("v9")).is_none());
        assert!(p.fit("linux", "amd64", None).is_none());
        let a = Platform::parse("linux/amd64").unwrap();
        assert_eq!(a.fit("linux", "amd64", None), Some(2));
        assert_eq!(a.fit("linux", "amd64", Some("v3")), Some(1));
        assert!(a.fit("windows", "amd64", None).is_none());
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        assert!(!Platform::host().arch.is_empty());
    }
}
