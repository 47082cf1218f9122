//! The report as text for a person: per-image figures, the set's figures per
//! chunk-size setting, and the sharing matrix.

use super::report::{Level, Report};
use std::fmt::Write;

/// Bytes in decimal units, three significant digits ("12.3 MB").
pub fn human(bytes: u64) -> String {
    decimal_size(bytes, &["kB", "MB", "GB", "TB", "PB", "EB"])
}

/// Bytes in decimal units (`units` from kilo up), three significant digits.
pub(super) fn decimal_size(bytes: u64, units: &[&str; 6]) -> String {
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut u = 0;
    while v >= 999.95 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if v < 9.995 {
        format!("{v:.2} {}", units[u])
    } else if v < 99.95 {
        format!("{v:.1} {}", units[u])
    } else {
        format!("{v:.0} {}", units[u])
    }
}

/// A ratio as a percentage ("42.3%").
pub fn percent(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

fn clip(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let first = &r.settings[0];
    let _ = writeln!(
        o,
        "{} images, {} distinct blobs ({} layers): {} compressed, {} plain; analyzed in {:.1} s",
        r.images.len(),
        r.blobs,
        r.distinct_layers,
        human(first.compressed_total),
        human(first.plain_total),
        r.elapsed_secs
    );
    match r.inflate_mb_per_s {
        Some(s) => {
            let _ = writeln!(o, "decoding: {} at {s:.0} MB/s", r.inflate_backend);
        }
        None => {
            let _ = writeln!(o, "decoding: no compressed layers");
        }
    }
    o.push('\n');

    let w = r
        .images
        .iter()
        .map(|i| i.name.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 32);
    let _ = writeln!(
        o,
        "{:<w$}  {:<14} {:>6} {:>11} {:>11} {:>11} {:>11}",
        "IMAGE", "PLATFORM", "LAYERS", "COMPRESSED", "PLAIN", "UNIQUE", "SHARED"
    );
    for i in &r.images {
        let _ = writeln!(
            o,
            "{:<w$}  {:<14} {:>6} {:>11} {:>11} {:>11} {:>11}",
            clip(&i.name, w),
            clip(i.platform.as_deref().unwrap_or("-"), 14),
            i.layers,
            human(i.compressed_bytes),
            human(i.plain_bytes),
            human(i.unique_bytes),
            human(i.shared_bytes)
        );
    }

    for s in &r.settings {
        let _ = writeln!(
            o,
            "\nchunk sizes {}: {} chunks, {} distinct",
            s.chunk_sizes, s.chunks, s.distinct_chunks
        );
        let _ = writeln!(
            o,
            "  {:<30} {:>11} {:>15} {:>10}",
            "THE SET", "BYTES", "OF COMPRESSED", "OF PLAIN"
        );
        let _ = writeln!(
            o,
            "  {:<30} {:>11}",
            "compressed",
            human(s.compressed_total)
        );
        let _ = writeln!(o, "  {:<30} {:>11}", "plain", human(s.plain_total));
        let row = |o: &mut String, what: &str, l: &Level| {
            let _ = writeln!(
                o,
                "  {:<30} {:>11} {:>15} {:>10}",
                what,
                human(l.bytes),
                percent(l.vs_compressed),
                percent(l.vs_plain)
            );
        };
        row(&mut o, "layer-level dedup", &s.layer_level);
        row(&mut o, "file-level dedup", &s.file_level);
        row(&mut o, "chunk-level dedup", &s.chunk_level);
        row(&mut o, "strata would store", &s.strata.total);
        let _ = writeln!(
            o,
            "    chunks {}, recipes {}, rebuild data {}, index {} (estimate)",
            human(s.strata.chunks),
            human(s.strata.recipes),
            human(s.strata.rebuild),
            human(s.strata.index)
        );
    }

    let n = r.images.len();
    if n > 1 {
        let _ = writeln!(
            o,
            "\nshared plain bytes (chunks of the row's image also in the column's; diagonal: its distinct bytes)"
        );
        let lw = w + 5;
        let _ = write!(o, "{:<lw$}", "");
        for j in 0..n {
            let _ = write!(o, " {:>10}", format!("#{}", j + 1));
        }
        o.push('\n');
        for (i, row) in r.matrix.iter().enumerate() {
            let _ = write!(
                o,
                "{:<lw$}",
                format!("#{} {}", i + 1, clip(&r.images[i].name, w))
            );
            for v in row {
                let _ = write!(o, " {:>10}", human(*v));
            }
            o.push('\n');
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(999), "999 B");
        assert_eq!(human(1000), "1.00 kB");
        assert_eq!(human(12_345_678), "12.3 MB");
        assert_eq!(human(999_999), "1.00 MB");
        assert_eq!(human(123_456_789_000), "123 GB");
    }
}
