//! The distribution spec's grammar for repository names and tags, shared by
//! the references users type (`remote::reference`) and the registry's
//! routes (`registry::names`).

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
    fn tags() {
        assert!(valid_tag("latest") && valid_tag("_x") && valid_tag("1.0-rc_2"));
        assert!(!valid_tag("-x") && !valid_tag(".x") && !valid_tag(&"a".repeat(129)));
        assert!(!valid_tag("a/b") && !valid_tag("a:b"));
    }
}
