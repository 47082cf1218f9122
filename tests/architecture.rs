//! ARCHITECTURE.md is a map of the code: every path it cites in backticks
//! must exist, and every `PATH::NAME` must name an item that PATH defines.
//! A rename or a move that forgets the map fails here, naming the citation.
//!
//! What counts as a citation (outside fenced code blocks, which hold the
//! diagrams): a backticked token without spaces that starts with one of
//! `PREFIXES` and holds a '/', or is one of the `TOP_LEVEL` files, optionally
//! followed by `::NAME`. A trailing '/' cites a directory; anything else a
//! file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const PREFIXES: [&str; 7] = [
    "src/", "crates/", "tests/", "benches/", "proto/", ".ci/", ".cargo/",
];
const TOP_LEVEL: [&str; 6] = [
    "Cargo.toml",
    "Cargo.lock",
    "build.rs",
    "README.md",
    "BENCHMARKS.md",
    "ARCHITECTURE.md",
];
/// Fewer distinct paths than this and the map has lost its citations (or
/// the parser its way): the check must not pass for want of anything to check.
const MIN_PATHS: usize = 30;

/// Words that introduce a definition of the name after them.
const RUST_ITEMS: [&str; 10] = [
    "fn",
    "struct",
    "enum",
    "const",
    "static",
    "trait",
    "type",
    "mod",
    "union",
    "macro_rules!",
];
const PROTO_ITEMS: [&str; 4] = ["message", "service", "rpc", "enum"];

/// What the checker found in one document.
#[derive(Debug, Default)]
struct Report {
    /// Distinct paths cited (with or without a `::NAME`).
    paths: BTreeSet<String>,
    /// One line per bad citation: where, what, and why.
    problems: Vec<String>,
}

fn root() -> PathBuf {
    // Set by cargo; a standalone `rustc --test` build runs from the checkout.
    PathBuf::from(option_env!("CARGO_MANIFEST_DIR").unwrap_or("."))
}

/// Inline code spans outside fenced blocks, with their 1-based line numbers.
fn code_spans(doc: &str) -> Vec<(usize, &str)> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for (i, line) in doc.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Between the 1st and 2nd backtick, the 3rd and 4th, and so on.
        for (k, piece) in line.split('`').enumerate() {
            if k % 2 == 1 {
                spans.push((i + 1, piece));
            }
        }
    }
    spans
}

/// The path and the item name a code span cites, if it is a citation.
fn citation(span: &str) -> Option<(&str, Option<&str>)> {
    if span.is_empty() || span.chars().any(char::is_whitespace) {
        return None;
    }
    let (path, name) = match span.split_once("::") {
        Some((p, n)) => (p, Some(n)),
        None => (span, None),
    };
    let repo_path = TOP_LEVEL.contains(&path)
        || (path.contains('/') && PREFIXES.iter().any(|p| path.starts_with(p)));
    repo_path.then_some((path, name))
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_ident_char) && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Whether `text` holds `word NAME` (whole words, any whitespace between).
fn follows_word(text: &str, word: &str, name: &str) -> bool {
    let mut from = 0;
    while let Some(at) = text[from..].find(name) {
        let start = from + at;
        let end = start + name.len();
        from = end;
        let before = &text[..start];
        let bounded_after = !text[end..].starts_with(is_ident_char);
        let head = before.trim_end();
        let spaced = head.len() < before.len();
        if bounded_after && spaced {
            if let Some(rest) = head.strip_suffix(word) {
                if !rest.ends_with(is_ident_char) {
                    return true;
                }
            }
        }
    }
    false
}

/// A field (`NAME: Type`) or an enum variant (`NAME(..)`, `NAME { .. }`,
/// `NAME,`) at the start of a line, after an optional visibility.
fn leads_a_line(text: &str, name: &str) -> bool {
    text.lines().any(|line| {
        let mut l = line.trim_start();
        for vis in ["pub(crate) ", "pub(super) ", "pub "] {
            if let Some(rest) = l.strip_prefix(vis) {
                l = rest;
                break;
            }
        }
        let Some(rest) = l.strip_prefix(name) else {
            return false;
        };
        (rest.starts_with(':') && !rest.starts_with("::"))
            || rest.starts_with('(')
            || rest.starts_with(" {")
            || rest.starts_with(',')
    })
}

/// Whether a file of this kind, with this text, defines `name`.
fn defines(path: &str, text: &str, name: &str) -> Result<bool, String> {
    if path.ends_with(".rs") {
        Ok(RUST_ITEMS.iter().any(|w| follows_word(text, w, name)) || leads_a_line(text, name))
    } else if path.ends_with(".proto") {
        Ok(PROTO_ITEMS.iter().any(|w| follows_word(text, w, name)))
    } else {
        Err("only .rs and .proto files can be cited with ::NAME".into())
    }
}

/// Checks every citation of `doc` against the tree at `root`.
fn check(root: &Path, doc: &str) -> Report {
    let mut r = Report::default();
    for (line, span) in code_spans(doc) {
        let Some((path, name)) = citation(span) else {
            continue;
        };
        r.paths.insert(path.to_string());
        let bad = |why: String| format!("ARCHITECTURE.md:{line}: `{span}`: {why}");
        let full = root.join(path);
        if let Some(dir) = path.strip_suffix('/') {
            if name.is_some() {
                r.problems.push(bad("a directory has no items".into()));
            } else if !full.is_dir() {
                r.problems.push(bad(format!("no directory {dir}/")));
            }
            continue;
        }
        if !full.is_file() {
            r.problems.push(bad(format!("no file {path}")));
            continue;
        }
        let Some(name) = name else {
            continue;
        };
        if !is_ident(name) {
            r.problems.push(bad(format!(
                "{name:?} is not one item's name (cite PATH::NAME)"
            )));
            continue;
        }
        let text = match std::fs::read_to_string(&full) {
            Ok(t) => t,
            Err(e) => {
                r.problems.push(bad(format!("cannot read {path}: {e}")));
                continue;
            }
        };
        match defines(path, &text, name) {
            Ok(true) => {}
            Ok(false) => r
                .problems
                .push(bad(format!("{path} does not define {name}"))),
            Err(why) => r.problems.push(bad(why)),
        }
    }
    r
}

#[test]
fn architecture_md_cites_only_what_exists() {
    let root = root();
    let path = root.join("ARCHITECTURE.md");
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let r = check(&root, &doc);
    assert!(
        r.problems.is_empty(),
        "ARCHITECTURE.md has {} bad citation(s); update the map with the code:\n{}",
        r.problems.len(),
        r.problems.join("\n")
    );
    assert!(
        r.paths.len() >= MIN_PATHS,
        "ARCHITECTURE.md cites {} distinct paths, fewer than {MIN_PATHS}: is it still a map?",
        r.paths.len()
    );
}

#[test]
fn the_checker_names_bad_citations_and_passes_good_ones() {
    let doc = "\
A good one, `tests/architecture.rs::check`, and a directory, `tests/`.
Bad: `src/no_such_file.rs`, `tests/architecture.rs::no_such_item`, `tests/no_dir/`.
Not citations: `cargo test`, `Store::open`, `ingest/<hash>.part`.
```
`src/inside_a_fence_is_a_diagram.rs`
```
";
    let r = check(&root(), doc);
    assert_eq!(r.problems.len(), 3, "{:#?}", r.problems);
    assert!(r.problems[0].contains("ARCHITECTURE.md:2: `src/no_such_file.rs`"));
    assert!(r.problems[1].contains("does not define no_such_item"));
    assert!(r.problems[2].contains("no directory tests/no_dir/"));
    let cited: Vec<&str> = r.paths.iter().map(String::as_str).collect();
    assert_eq!(
        cited,
        [
            "src/no_such_file.rs",
            "tests/",
            "tests/architecture.rs",
            "tests/no_dir/"
        ]
    );
}

#[test]
fn definitions_are_told_from_mere_mentions() {
    let text = "pub(super) struct Held {\n    pub epoch: u64,\n}\nfn go() { held.epoch(); hold(x) }\nenum E {\n    Replay {\n        x: u8,\n    },\n}\n";
    for name in ["Held", "epoch", "go", "Replay", "E"] {
        assert!(defines("a.rs", text, name).unwrap(), "{name}");
    }
    // Called, or part of a longer name: not defined here.
    for name in ["hold", "Hel", "ep", "x2"] {
        assert!(!defines("a.rs", text, name).unwrap(), "{name}");
    }
    assert!(defines("a.proto", "service Store {\n  rpc Push(", "Push").unwrap());
    assert!(defines("a.sh", "", "x").is_err());
}
