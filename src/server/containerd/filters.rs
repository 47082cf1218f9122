//! containerd's filter syntax, for List and ListStatuses.
//!
//! A filter is selectors joined by `,` (AND): `fieldpath`, `fieldpath==value`,
//! `fieldpath!=value` or `fieldpath~=regexp`. A fieldpath is components joined
//! by `.`; a component is letters, digits, `-` and `_`, or a quoted string
//! (`"..."`, `/.../`, `|...|`) such as `labels."a.b"`. Several filters in one
//! request are ORed; no filters match everything.

use crate::error::{Error, Result};
use regex::Regex;

#[derive(Debug)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

#[derive(Debug)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// Parsed filters: any one of them (each an AND of selectors) must match.
#[derive(Debug, Default)]
pub struct Filters {
    any: Vec<Vec<Selector>>,
}

impl Filters {
    pub fn parse(filters: &[String]) -> Result<Filters> {
        let mut any = Vec::new();
        for f in filters {
            if f.trim().is_empty() {
                continue;
            }
            any.push(
                parse_one(f)
                    .map_err(|why| Error::InvalidArgument(format!("filter {f:?}: {why}")))?,
            );
        }
        Ok(Filters { any })
    }

    /// `field` looks up a fieldpath in the object being filtered.
    pub fn matches<'a>(&self, field: impl Fn(&[String]) -> Option<&'a str>) -> bool {
        self.any.is_empty()
            || self.any.iter().any(|all| {
                all.iter().all(|s| {
                    let v = field(&s.path);
                    match &s.op {
                        Op::Present => v.is_some(),
                        Op::Equal(want) => v == Some(want.as_str()),
                        Op::NotEqual(want) => v != Some(want.as_str()),
                        Op::Matches(re) => v.is_some_and(|v| re.is_match(v)),
                    }
                })
            })
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> String {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
    /// A quoted string starting at the quote character.
    fn quoted(&mut self) -> Result<String, String> {
        let q = self.s[self.i];
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = self.peek().ok_or("quoted string not terminated")?;
            self.i += 1;
            if c == q {
                return String::from_utf8(out)
                    .map_err(|_| "quoted string is not UTF-8".to_string());
            }
            if c != b'\\' {
                out.push(c);
                continue;
            }
            let e = self.peek().ok_or("quoted string not terminated")?;
            self.i += 1;
            match e {
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'r' => out.push(b'\r'),
                b'\\' if q == b'"' => out.push(b'\\'),
                e if e == q => out.push(e),
                // In /regexp/ and |regexp| quoting, other escapes belong to the regexp.
                e if q != b'"' => out.extend_from_slice(&[b'\\', e]),
                _ => return Err(format!("illegal escape \\{}", e as char)),
            }
        }
    }
}

fn is_field(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

fn is_quote(c: u8) -> bool {
    matches!(c, b'"' | b'/' | b'|')
}

fn parse_one(f: &str) -> Result<Vec<Selector>, String> {
    let mut c = Cursor {
        s: f.as_bytes(),
        i: 0,
    };
    let mut all = Vec::new();
    loop {
        c.skip_spaces();
        let mut path = Vec::new();
        loop {
            let part = match c.peek() {
                Some(q) if is_quote(q) => c.quoted()?,
                Some(x) if is_field(x) => c.take_while(is_field),
                _ => return Err(format!("expected a field name at byte {}", c.i)),
            };
            path.push(part);
            if c.peek() == Some(b'.') {
                c.i += 1;
            } else {
                break;
            }
        }
        c.skip_spaces();
        let op = match c.peek() {
            Some(b'=' | b'!' | b'~') => {
                let op = c.take_while(|x| matches!(x, b'=' | b'!' | b'~'));
                c.skip_spaces();
                let value = match c.peek() {
                    Some(q) if is_quote(q) => c.quoted()?,
                    Some(_) => c.take_while(|x| x != b',' && !x.is_ascii_whitespace()),
                    None => return Err(format!("operator {op} needs a value")),
                };
                match op.as_str() {
                    "==" => Op::Equal(value),
                    "!=" => Op::NotEqual(value),
                    "~=" => {
                        Op::Matches(Regex::new(&value).map_err(|e| format!("bad regexp: {e}"))?)
                    }
                    other => return Err(format!("unknown operator {other:?} (use ==, != or ~=)")),
                }
            }
            _ => Op::Present,
        };
        all.push(Selector { path, op });
        c.skip_spaces();
        match c.peek() {
            None => return Ok(all),
            Some(b',') => c.i += 1,
            Some(x) => return Err(format!("unexpected {:?} at byte {}", x as char, c.i)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn info_field<'a>(
        digest: &'a str,
        labels: &'a HashMap<String, String>,
    ) -> impl Fn(&[String]) -> Option<&'a str> {
        move |p: &[String]| match p {
            [f] if f == "digest" => Some(digest),
            [l, rest @ ..] if l == "labels" && !rest.is_empty() => {
                labels.get(&rest.join(".")).map(|s| s.as_str())
            }
            _ => None,
        }
    }

    fn m(filters: &[&str], digest: &str, labels: &[(&str, &str)]) -> bool {
        let labels: HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let f = Filters::parse(&filters.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        f.matches(info_field(digest, &labels))
    }

    #[test]
    fn operators_presence_and_or() {
        assert!(m(&[], "sha256:a", &[]));
        assert!(m(&["digest==sha256:a"], "sha256:a", &[]));
        assert!(!m(&["digest!=sha256:a"], "sha256:a", &[]));
        assert!(m(&["digest~=^sha256:[a-f]$"], "sha256:a", &[]));
        assert!(m(&[r#"labels."a.b"==x"#], "d", &[("a.b", "x")]));
        assert!(
            m(&["labels.a.b==x"], "d", &[("a.b", "x")]),
            "unquoted dots join the path"
        );
        assert!(m(&["labels.k"], "d", &[("k", "")]));
        assert!(!m(&["labels.k"], "d", &[]));
        assert!(m(&["labels.k==1,digest==d"], "d", &[("k", "1")]));
        assert!(!m(&["labels.k==1,digest==e"], "d", &[("k", "1")]));
        assert!(
            m(&["labels.k==2", "digest==d"], "d", &[("k", "1")]),
            "several filters are ORed"
        );
        assert!(m(
            &[r#"labels."containerd.io/gc.root""#],
            "d",
            &[("containerd.io/gc.root", "x")]
        ));
        assert!(m(&["labels.k~=/^a\\/b$/"], "d", &[("k", "a/b")]));
    }

    #[test]
    fn bad_filters_are_invalid_argument() {
        for bad in ["==x", "labels.k===x", "labels.\"open", "digest~=(", "a b"] {
            assert!(
                matches!(
                    Filters::parse(&[bad.to_string()]),
                    Err(Error::InvalidArgument(_))
                ),
                "{bad}"
            );
        }
    }
}
