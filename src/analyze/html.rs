//! The HTML form of a `strata analyze` report: one self-contained page
//! (inline CSS and SVG, no scripts, nothing fetched) that can be mailed or
//! archived and still open anywhere.

use std::fmt::Write as _;

use super::report::{Level, Report, SettingFigures};
use crate::store::ratio;

/// One self-contained HTML page (no network) for the report.
pub fn render(report: &Report) -> String {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
    );
    let n = report.images.len();
    let _ = writeln!(
        out,
        "<title>strata analyze: {} image{}</title>",
        n,
        plural(n)
    );
    out.push_str("<style>\n");
    out.push_str(CSS);
    out.push_str("</style>\n</head>\n<body>\n<main>\n");
    header(&mut out, report);
    summary(&mut out, report);
    if report.settings.len() > 1 {
        settings_table(&mut out, &report.settings);
    }
    heatmap(&mut out, report);
    bars(&mut out, report);
    image_table(&mut out, report);
    footer(&mut out, report);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

const CSS: &str = r#"
:root { --fg: #1d2430; --muted: #5b6574; --line: #dde2ea; --bg: #ffffff;
  --panel: #f6f8fb; --accent: #1f4e99; --unique: #e07b39; --shared: #3a78c2; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
    "Noto Sans", "Liberation Sans", Arial, sans-serif; }
main { max-width: 1160px; margin: 0 auto; padding: 24px 20px 40px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
p.sub, p.note { color: var(--muted); margin: 4px 0 12px; }
.facts { display: flex; flex-wrap: wrap; gap: 10px; margin: 16px 0 4px; }
.fact { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
  padding: 8px 14px; min-width: 150px; }
.fact .k { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; }
.fact .v { font-size: 20px; font-weight: 600; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
th { background: var(--panel); font-weight: 600; font-size: 13px; }
td.n, th.n { text-align: right; white-space: nowrap; }
tr.total td { font-weight: 600; border-top: 2px solid var(--fg); }
tr.part td { color: var(--muted); font-size: 13px; }
tr.part td:first-child { padding-left: 26px; }
td.name { max-width: 320px; overflow-wrap: anywhere; }
td.origin { max-width: 260px; overflow-wrap: anywhere; color: var(--muted);
  font-size: 13px; }
[title] { cursor: help; }
svg { display: block; font-family: inherit; }
svg text { fill: var(--fg); font-size: 12px; }
svg text.in { font-size: 11px; pointer-events: none; }
svg text.in.dark { fill: #ffffff; }
svg .cell:hover rect, svg .bar:hover rect { stroke: var(--fg); stroke-width: 1.5; }
.legend { display: flex; gap: 18px; align-items: center; margin: 6px 0 10px;
  color: var(--muted); font-size: 13px; }
.sw { display: inline-block; width: 14px; height: 14px; border-radius: 3px;
  vertical-align: -2px; margin-right: 6px; }
.ramp { display: inline-block; width: 180px; height: 12px; border-radius: 3px;
  border: 1px solid var(--line); vertical-align: -2px; margin: 0 6px; }
.empty { color: var(--muted); font-style: italic; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"#;

fn header(out: &mut String, report: &Report) {
    out.push_str("<header>\n<h1>strata analyze</h1>\n");
    let n = report.images.len();
    let _ = write!(
        out,
        "<p class=\"sub\">{} image{}, {} distinct blob{} ({} layer{}), read from {}",
        n,
        plural(n),
        report.blobs,
        plural(report.blobs),
        report.distinct_layers,
        plural(report.distinct_layers),
        esc(&report.source)
    );
    if let Some(s) = report.settings.first() {
        let _ = write!(out, "; chunk sizes {}", esc(&s.chunk_sizes));
    }
    out.push_str(".</p>\n</header>\n");
}

fn summary(out: &mut String, report: &Report) {
    out.push_str("<section id=\"summary\">\n");
    let Some(s) = report.settings.first() else {
        out.push_str("<h2>Summary</h2>\n<p class=\"empty\">No figures: the set is empty.</p>\n");
        out.push_str("</section>\n");
        return;
    };
    // The headline cards: what a reader wants before any table.
    out.push_str("<div class=\"facts\">\n");
    fact(out, "Images", &report.images.len().to_string(), None);
    fact(
        out,
        "Compressed",
        &human(s.compressed_total),
        Some(&exact(s.compressed_total)),
    );
    fact(
        out,
        "Plain",
        &human(s.plain_total),
        Some(&exact(s.plain_total)),
    );
    fact(
        out,
        "strata would store",
        &human(s.strata.total.bytes),
        Some(&exact(s.strata.total.bytes)),
    );
    fact(
        out,
        "Stored / compressed",
        &pct(s.strata.total.vs_compressed),
        Some("what strata would store, as a share of the compressed total"),
    );
    fact(
        out,
        "Stored / plain",
        &pct(s.strata.total.vs_plain),
        Some("what strata would store, as a share of the plain total"),
    );
    out.push_str("</div>\n");

    out.push_str("<h2>Summary</h2>\n<div class=\"scroll\"><table>\n");
    out.push_str(
        "<tr><th>What is kept</th><th class=\"n\">Bytes</th>\
         <th class=\"n\">of compressed</th><th class=\"n\">of plain</th></tr>\n",
    );
    let ct = s.compressed_total;
    let pt = s.plain_total;
    level_row(
        out,
        "",
        "Compressed total (distinct blobs as they are)",
        &Level::new(ct, ct, pt),
    );
    level_row(
        out,
        "",
        "Plain total (their layers uncompressed)",
        &Level::new(pt, ct, pt),
    );
    level_row(
        out,
        "",
        "Layer level (same layer stored once)",
        &s.layer_level,
    );
    level_row(
        out,
        "",
        "File level (same file body stored once)",
        &s.file_level,
    );
    level_row(
        out,
        "",
        "Chunk level (same chunk stored once)",
        &s.chunk_level,
    );
    level_row(out, "total", "strata would store", &s.strata.total);
    let parts = [
        ("chunks, compressed", s.strata.chunks),
        ("recipes", s.strata.recipes),
        ("rebuild data", s.strata.rebuild),
        ("index (estimate)", s.strata.index),
    ];
    for (label, bytes) in parts {
        level_row(out, "part", label, &Level::new(bytes, ct, pt));
    }
    out.push_str("</table></div>\n");
    let _ = writeln!(
        out,
        "<p class=\"note\">{} chunks, {} of them distinct. The pack files alone \
         (chunks and the rebuild data kept as chunks) take <span title=\"{}\">{}</span>.</p>",
        group(s.chunks),
        group(s.distinct_chunks),
        exact(s.strata.packs),
        human(s.strata.packs),
    );
    out.push_str("</section>\n");
}

fn fact(out: &mut String, key: &str, value: &str, tip: Option<&str>) {
    let title = tip
        .map(|t| format!(" title=\"{}\"", esc(t)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "<div class=\"fact\"{title}><div class=\"k\">{}</div><div class=\"v\">{}</div></div>",
        esc(key),
        esc(value)
    );
}

fn level_row(out: &mut String, class: &str, label: &str, level: &Level) {
    let cls = if class.is_empty() {
        String::new()
    } else {
        format!(" class=\"{class}\"")
    };
    let _ = writeln!(
        out,
        "<tr{cls}><td>{}</td>{}<td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
        esc(label),
        size_td(level.bytes),
        pct(level.vs_compressed),
        pct(level.vs_plain)
    );
}

fn settings_table(out: &mut String, settings: &[SettingFigures]) {
    out.push_str(
        "<section id=\"settings\">\n<h2>Chunk size settings</h2>\n\
         <p class=\"note\">The first row is the setting the rest of the page uses.</p>\n\
         <div class=\"scroll\"><table>\n<tr><th>min/avg/max</th>\
         <th class=\"n\">Chunks</th><th class=\"n\">Distinct</th>\
         <th class=\"n\">Chunk level</th><th class=\"n\">of compressed</th>\
         <th class=\"n\">of plain</th><th class=\"n\">strata would store</th>\
         <th class=\"n\">of compressed</th><th class=\"n\">of plain</th></tr>\n",
    );
    for s in settings {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>{}\
             <td class=\"n\">{}</td><td class=\"n\">{}</td>{}\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&s.chunk_sizes),
            group(s.chunks),
            group(s.distinct_chunks),
            size_td(s.chunk_level.bytes),
            pct(s.chunk_level.vs_compressed),
            pct(s.chunk_level.vs_plain),
            size_td(s.strata.total.bytes),
            pct(s.strata.total.vs_compressed),
            pct(s.strata.total.vs_plain),
        );
    }
    out.push_str("</table></div>\n</section>\n");
}

/// Colour ramp of the heatmap, light to dark: a share of 0 is near white so
/// that unrelated images fade out and the sharing stands out.
const RAMP: [(u8, u8, u8); 5] = [
    (0xf3, 0xf6, 0xfa),
    (0xc6, 0xdb, 0xef),
    (0x6b, 0xae, 0xd6),
    (0x21, 0x71, 0xb5),
    (0x08, 0x30, 0x6b),
];

fn ramp(frac: f64) -> String {
    let f = if frac.is_finite() {
        frac.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = f * (RAMP.len() - 1) as f64;
    let i = (pos.floor() as usize).min(RAMP.len() - 2);
    let t = pos - i as f64;
    let (a, b) = (RAMP[i], RAMP[i + 1]);
    let mix = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

/// Width the SVGs may use: the page's content box at 1200px.
const PAGE_W: f64 = 1120.0;
/// Rough advance of one character of 12px text, to size label gutters.
const CHAR_W: f64 = 6.8;

fn image_name(report: &Report, i: usize) -> String {
    report
        .images
        .get(i)
        .map(|im| im.name.clone())
        .unwrap_or_else(|| format!("image {}", i + 1))
}

fn heatmap(out: &mut String, report: &Report) {
    out.push_str(
        "<section id=\"heatmap\">\n<h2>Shared bytes between images</h2>\n\
         <p class=\"note\">Row image's plain bytes also found in the column image, as a share \
         of the row image's distinct bytes (the diagonal). Hover a cell for exact bytes.</p>\n",
    );
    let n = report.matrix.len();
    if n == 0 || report.matrix.iter().all(|r| r.is_empty()) {
        out.push_str("<p class=\"empty\">No images, no sharing to show.</p>\n</section>\n");
        return;
    }
    let cols = report.matrix.iter().map(|r| r.len()).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "<div class=\"legend\">0%<span class=\"ramp\" style=\"background:linear-gradient(to right,{})\"></span>100% of the row image's distinct bytes</div>",
        (0..=10)
            .map(|k| ramp(k as f64 / 10.0))
            .collect::<Vec<_>>()
            .join(",")
    );

    // Label lengths shrink as the matrix grows so the grid keeps its room.
    let max_chars = if n.max(cols) > 20 { 18 } else { 28 };
    let longest = (0..n.max(cols))
        .map(|i| image_name(report, i).chars().count().min(max_chars))
        .max()
        .unwrap_or(1) as f64;
    let left = (longest * CHAR_W + 14.0).max(60.0);
    // Column labels run up-right at 45°: they need height and a right margin.
    let diag = (longest * CHAR_W) * std::f64::consts::FRAC_1_SQRT_2 + 12.0;
    let top = diag.max(40.0);
    let right = diag;
    let cell = ((PAGE_W - left - right) / cols.max(1) as f64)
        .clamp(14.0, 84.0)
        .floor();
    let width = left + cell * cols as f64 + right;
    let height = top + cell * n as f64 + 4.0;
    let _ = writeln!(
        out,
        "<div class=\"scroll\"><svg class=\"heatmap\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"sharing matrix\">",
        w = width.ceil(),
        h = height.ceil()
    );
    for j in 0..cols {
        let name = image_name(report, j);
        let x = left + cell * (j as f64 + 0.5);
        let _ = writeln!(
            out,
            "<text class=\"col\" transform=\"translate({x:.1},{y:.1}) rotate(-45)\"><title>{}</title>{}</text>",
            esc(&name),
            esc(&truncate(&name, max_chars)),
            y = top - 6.0
        );
    }
    let fits = cell >= 48.0;
    for (i, row) in report.matrix.iter().enumerate() {
        let name = image_name(report, i);
        let y = top + cell * i as f64;
        let _ = writeln!(
            out,
            "<text class=\"row\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" dominant-baseline=\"central\"><title>{}</title>{}</text>",
            left - 8.0,
            y + cell / 2.0,
            esc(&name),
            esc(&truncate(&name, max_chars))
        );
        let own = row.get(i).copied().unwrap_or(0);
        for (j, &bytes) in row.iter().enumerate() {
            let frac = if own == 0 {
                0.0
            } else {
                bytes as f64 / own as f64
            };
            let x = left + cell * j as f64;
            let tip = if i == j {
                format!("{}: {} distinct", name, exact(bytes))
            } else {
                format!(
                    "{} shares {} with {} ({} of its distinct bytes)",
                    name,
                    exact(bytes),
                    image_name(report, j),
                    pct(frac)
                )
            };
            let _ = write!(
                out,
                "<g class=\"cell\"><title>{}</title><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" stroke=\"#ffffff\" stroke-width=\"1\"/>",
                esc(&tip),
                x,
                y,
                cell,
                cell,
                ramp(frac)
            );
            if fits {
                let dark = if frac > 0.45 { " dark" } else { "" };
                let _ = write!(
                    out,
                    "<text class=\"in{dark}\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" dominant-baseline=\"central\">{}</text>",
                    x + cell / 2.0,
                    y + cell / 2.0,
                    esc(&human(bytes))
                );
            }
            out.push_str("</g>\n");
        }
    }
    out.push_str("</svg></div>\n</section>\n");
}

fn bars(out: &mut String, report: &Report) {
    out.push_str(
        "<section id=\"bars\">\n<h2>Unique and shared bytes per image</h2>\n\
         <div class=\"legend\"><span><span class=\"sw\" style=\"background:var(--unique)\"></span>unique: no other image has them</span>\
         <span><span class=\"sw\" style=\"background:var(--shared)\"></span>shared: at least one other image has them</span></div>\n",
    );
    if report.images.is_empty() {
        out.push_str("<p class=\"empty\">No images.</p>\n</section>\n");
        return;
    }
    let max = report
        .images
        .iter()
        .map(|im| im.unique_bytes.saturating_add(im.shared_bytes))
        .max()
        .unwrap_or(0);
    let max_chars = 28;
    let longest = report
        .images
        .iter()
        .map(|im| im.name.chars().count().min(max_chars))
        .max()
        .unwrap_or(1) as f64;
    let left = (longest * CHAR_W + 14.0).max(60.0);
    let value_w = 200.0;
    let track = (PAGE_W - left - value_w).max(100.0);
    let row_h = 22.0;
    let bar_h = 15.0;
    let height = row_h * report.images.len() as f64 + 6.0;
    let _ = writeln!(
        out,
        "<div class=\"scroll\"><svg class=\"bars\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"unique and shared bytes per image\">",
        w = PAGE_W,
        h = height.ceil()
    );
    for (i, im) in report.images.iter().enumerate() {
        let y = 3.0 + row_h * i as f64;
        let scale = |b: u64| {
            if max == 0 {
                0.0
            } else {
                track * b as f64 / max as f64
            }
        };
        let wu = scale(im.unique_bytes);
        let ws = scale(im.shared_bytes);
        let total = im.unique_bytes.saturating_add(im.shared_bytes);
        let _ = writeln!(
            out,
            "<g class=\"bar\"><title>{}: unique {}, shared {}</title>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" dominant-baseline=\"central\">{}</text>\
             <rect class=\"unique\" x=\"{left:.1}\" y=\"{y:.1}\" width=\"{wu:.1}\" height=\"{bar_h}\" fill=\"var(--unique)\"/>\
             <rect class=\"shared\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{ws:.1}\" height=\"{bar_h}\" fill=\"var(--shared)\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" dominant-baseline=\"central\">{} ({} shared)</text></g>",
            esc(&im.name),
            exact(im.unique_bytes),
            exact(im.shared_bytes),
            left - 8.0,
            y + bar_h / 2.0,
            esc(&truncate(&im.name, max_chars)),
            left + wu,
            left + wu + ws + 6.0,
            y + bar_h / 2.0,
            esc(&human(total)),
            pct(ratio(im.shared_bytes, total)),
        );
    }
    out.push_str("</svg></div>\n</section>\n");
}

fn image_table(out: &mut String, report: &Report) {
    out.push_str("<section id=\"images\">\n<h2>Images</h2>\n");
    if report.images.is_empty() {
        out.push_str("<p class=\"empty\">No images.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table>\n<tr><th class=\"n\">#</th><th>Image</th>\
         <th>Platform</th><th class=\"n\">Layers</th><th class=\"n\">Compressed</th>\
         <th class=\"n\">Plain</th><th class=\"n\">Unique</th><th class=\"n\">Shared</th>\
         <th class=\"n\">Shared %</th><th>Read from</th></tr>\n",
    );
    for (i, im) in report.images.iter().enumerate() {
        let _ = writeln!(
            out,
            "<tr><td class=\"n\">{}</td><td class=\"name\">{}</td><td>{}</td>\
             <td class=\"n\">{}</td>{}{}{}{}<td class=\"n\">{}</td><td class=\"origin\">{}</td></tr>",
            i + 1,
            esc(&im.name),
            esc(im.platform.as_deref().unwrap_or("")),
            im.layers,
            size_td(im.compressed_bytes),
            size_td(im.plain_bytes),
            size_td(im.unique_bytes),
            size_td(im.shared_bytes),
            pct(ratio(
                im.shared_bytes,
                im.unique_bytes.saturating_add(im.shared_bytes)
            )),
            esc(&im.origin),
        );
    }
    out.push_str("</table></div>\n</section>\n");
}

fn footer(out: &mut String, report: &Report) {
    let speed = match report.inflate_mb_per_s {
        Some(v) if v.is_finite() => format!(" at {v:.0} MB/s"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "<footer>gzip layers decoded by {}{}; analysis took {:.1} s. Sizes are decimal \
         (1 MB = 1,000,000 bytes); hover a size for exact bytes.</footer>",
        esc(&report.inflate_backend),
        speed,
        if report.elapsed_secs.is_finite() {
            report.elapsed_secs
        } else {
            0.0
        }
    );
}

/// A right-aligned table cell with the human size and the exact bytes as a tooltip.
fn size_td(bytes: u64) -> String {
    format!(
        "<td class=\"n\" title=\"{}\">{}</td>",
        exact(bytes),
        human(bytes)
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Escapes text for HTML content and double- or single-quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Shortens by characters, not bytes, so a multi-byte name is never split.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Decimal units, as disk and registry sizes are usually quoted.
fn human(bytes: u64) -> String {
    super::table::decimal_size(bytes, &["KB", "MB", "GB", "TB", "PB", "EB"])
}

fn exact(bytes: u64) -> String {
    format!("{} bytes", group(bytes))
}

/// 1234567 as "1,234,567".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pct(r: f64) -> String {
    if !r.is_finite() {
        return "–".to_string();
    }
    let p = r * 100.0;
    if p != 0.0 && p.abs() < 0.1 {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_decimal() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(999), "999 B");
        assert_eq!(human(1000), "1.00 KB");
        assert_eq!(human(1_234_567), "1.23 MB");
        assert_eq!(human(999_960), "1.00 MB");
        assert_eq!(human(u64::MAX), "18.4 EB");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(100), "100");
    }

    #[test]
    fn escaping_and_truncation() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(truncate("abc", 3), "abc");
    }

    #[test]
    fn ramp_ends() {
        assert_eq!(ramp(0.0), "#f3f6fa");
        assert_eq!(ramp(1.0), "#08306b");
        assert_eq!(ramp(f64::NAN), "#f3f6fa");
        assert_eq!(ramp(7.0), "#08306b");
    }
}
