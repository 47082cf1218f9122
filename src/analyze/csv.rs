//! The report as CSV: two tables, separated by an empty line. First one row
//! per image (its figures, then one `shared_with:N:NAME` column per image: its
//! row of the sharing matrix); then one row per chunk-size setting.

use super::report::{Level, Report};

/// A field quoted when it needs to be (RFC 4180).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn line(fields: &[String]) -> String {
    let mut l = fields
        .iter()
        .map(|f| field(f))
        .collect::<Vec<_>>()
        .join(",");
    l.push('\n');
    l
}

fn level(name: &str, l: &Level, head: &mut Vec<String>, row: &mut Vec<String>) {
    head.extend([
        format!("{name}_bytes"),
        format!("{name}_vs_compressed"),
        format!("{name}_vs_plain"),
    ]);
    row.extend([
        l.bytes.to_string(),
        l.vs_compressed.to_string(),
        l.vs_plain.to_string(),
    ]);
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let mut head: Vec<String> = [
        "image",
        "origin",
        "platform",
        "layers",
        "compressed_bytes",
        "plain_bytes",
        "unique_bytes",
        "shared_bytes",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Numbered: names need not be unique.
    head.extend(
        r.images
            .iter()
            .enumerate()
            .map(|(j, i)| format!("shared_with:{}:{}", j + 1, i.name)),
    );
    o.push_str(&line(&head));
    for (i, img) in r.images.iter().enumerate() {
        let mut row = vec![
            img.name.clone(),
            img.origin.clone(),
            img.platform.clone().unwrap_or_default(),
            img.layers.to_string(),
            img.compressed_bytes.to_string(),
            img.plain_bytes.to_string(),
            img.unique_bytes.to_string(),
            img.shared_bytes.to_string(),
        ];
        row.extend(r.matrix[i].iter().map(|v| v.to_string()));
        o.push_str(&line(&row));
    }
    o.push('\n');
    for (k, s) in r.settings.iter().enumerate() {
        let mut head: Vec<String> = ["chunk_sizes", "compressed_total", "plain_total"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut row = vec![
            s.chunk_sizes.clone(),
            s.compressed_total.to_string(),
            s.plain_total.to_string(),
        ];
        level("layer_level", &s.layer_level, &mut head, &mut row);
        level("file_level", &s.file_level, &mut head, &mut row);
        level("chunk_level", &s.chunk_level, &mut head, &mut row);
        level("strata_total", &s.strata.total, &mut head, &mut row);
        head.extend(
            [
                "strata_chunks",
                "strata_recipes",
                "strata_rebuild",
                "strata_index",
                "strata_packs",
                "chunks",
                "distinct_chunks",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        row.extend(
            [
                s.strata.chunks,
                s.strata.recipes,
                s.strata.rebuild,
                s.strata.index,
                s.strata.packs,
                s.chunks,
                s.distinct_chunks,
            ]
            .iter()
            .map(|v| v.to_string()),
        );
        if k == 0 {
            o.push_str(&line(&head));
        }
        o.push_str(&line(&row));
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_are_quoted_when_needed() {
        assert_eq!(super::field("a,b"), "\"a,b\"");
        assert_eq!(super::field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(super::field("plain"), "plain");
    }
}
