//! The HTML page of `strata analyze`: self-contained, escaped, one heatmap
//! cell per matrix entry and one bar per image, and it renders in a real
//! browser (headless Chromium) with no console errors and a visible heatmap.
//! Chromium is a CI dependency (.ci/deps): a missing browser fails, never skips.

use std::io::{ErrorKind, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata::analyze::html::render;
use strata::analyze::report::{ImageFigures, Level, Report, SettingFigures, StrataBytes};

const EVIL: &str = "<script>alert(1)</script>&\"x\"";

fn setting(sizes: &str, compressed: u64, plain: u64, chunk: u64) -> SettingFigures {
    SettingFigures {
        chunk_sizes: sizes.to_string(),
        compressed_total: compressed,
        plain_total: plain,
        layer_level: Level::new(plain * 9 / 10, compressed, plain),
        file_level: Level::new(plain * 7 / 10, compressed, plain),
        chunk_level: Level::new(chunk, compressed, plain),
        strata: StrataBytes {
            chunks: chunk / 3,
            recipes: chunk / 200,
            rebuild: chunk / 500,
            index: chunk / 1000,
            packs: chunk / 3 + chunk / 1000,
            total: Level::new(
                chunk / 3 + chunk / 200 + chunk / 500 + chunk / 1000,
                compressed,
                plain,
            ),
        },
        chunks: chunk / 40_000,
        distinct_chunks: chunk / 60_000,
    }
}

/// A report over `names` whose images share `share` (0..=1) of their bytes
/// with every other image.
fn report(names: &[String], share: f64, settings: usize) -> Report {
    let n = names.len();
    let own: Vec<u64> = (0..n).map(|i| 40_000_000 + 7_654_321 * i as u64).collect();
    let matrix: Vec<Vec<u64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    if i == j {
                        own[i]
                    } else {
                        (own[i].min(own[j]) as f64 * share) as u64
                    }
                })
                .collect()
        })
        .collect();
    let images = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let shared = if n > 1 {
                (own[i] as f64 * share) as u64
            } else {
                0
            };
            ImageFigures {
                name: name.clone(),
                origin: format!("/images/{name}.tar"),
                platform: Some("linux/amd64".to_string()),
                layers: 3 + i % 5,
                compressed_bytes: own[i] * 2 / 5,
                plain_bytes: own[i] + own[i] / 20,
                unique_bytes: own[i] - shared,
                shared_bytes: shared,
            }
        })
        .collect();
    let plain: u64 = own.iter().sum();
    let sizes = ["16K/64K/256K", "4K/16K/64K", "64K/256K/1M"];
    Report {
        images,
        settings: (0..settings)
            .map(|k| {
                setting(
                    sizes[k % 3],
                    plain * 2 / 5,
                    plain,
                    plain * (6 - k as u64) / 10,
                )
            })
            .collect(),
        matrix,
        blobs: 3 * n,
        distinct_layers: 2 * n,
        inflate_backend: "zlib-rs".to_string(),
        inflate_mb_per_s: Some(812.4),
        source: "files".to_string(),
        elapsed_secs: 3.25,
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 4 {
            0 => format!("registry.example/team/service-{i}:v1.{i}.0"),
            1 => format!("app-{i}"),
            2 => format!("a-rather-long-image-name-that-goes-on-and-on-{i}:latest"),
            _ => format!("db{i}"),
        })
        .collect()
}

fn three_evil() -> Vec<String> {
    vec![
        EVIL.to_string(),
        "debian:12 & friends".to_string(),
        "it's <b>bold</b>".to_string(),
    ]
}

/// A NaN or infinity printed anywhere: a ratio divided by zero.
fn non_finite(html: &str) -> bool {
    html.contains("NaN") || html.contains("inf%") || html.contains("inf ")
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[test]
fn page_is_self_contained_and_escapes_names() {
    let html = render(&report(&three_evil(), 0.3, 1));
    for bad in [
        "http://", "https://", "src=", "href=", "<script", "<link", "@import", "url(", "<img",
        "<iframe",
    ] {
        assert!(
            !html.to_ascii_lowercase().contains(bad),
            "page refers outside itself or runs code: {bad:?}"
        );
    }
    assert!(!html.contains("alert(1)</"), "raw name leaked");
    assert!(!html.contains("<b>"), "raw name leaked");
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;x&quot;";
    // The full name shows in the table, the tooltips and the bar labels.
    assert!(count(&html, escaped) >= 3, "escaped name missing");
    assert!(html.contains("debian:12 &amp; friends"));
    assert!(html.contains("it&#39;s &lt;b&gt;bold&lt;/b&gt;"));
    // No '<' that does not open a known tag: the escaping left no loose markup.
    for (k, _) in html.match_indices('<') {
        let rest = &html[k + 1..];
        let tag: String = rest
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '!')
            .collect();
        assert!(
            [
                "!DOCTYPE", "html", "head", "meta", "title", "style", "body", "main", "header",
                "h1", "h2", "p", "section", "div", "table", "tr", "th", "td", "svg", "g", "rect",
                "text", "span", "footer",
            ]
            .contains(&tag.as_str()),
            "unexpected tag <{tag} at {k}"
        );
    }
}

#[test]
fn one_cell_per_matrix_entry_and_one_bar_per_image() {
    for n in [1, 3, 40] {
        let ns = if n == 3 { three_evil() } else { names(n) };
        let html = render(&report(&ns, 0.5, 1));
        assert_eq!(count(&html, "<g class=\"cell\">"), n * n, "{n} images");
        assert_eq!(count(&html, "<g class=\"bar\">"), n, "{n} images");
        assert!(
            !html.contains("id=\"settings\""),
            "one setting: no settings table"
        );
        assert!(!non_finite(&html), "{n} images");
    }
}

#[test]
fn several_settings_get_their_table() {
    let html = render(&report(&names(3), 0.5, 3));
    assert!(html.contains("id=\"settings\""));
    for s in ["16K/64K/256K", "4K/16K/64K", "64K/256K/1M"] {
        assert!(html.contains(s), "{s}");
    }
}

#[test]
fn empty_and_zero_reports_render() {
    let mut empty = report(&[], 0.0, 0);
    empty.inflate_mb_per_s = None;
    let html = render(&empty);
    assert_eq!(count(&html, "class=\"cell\""), 0);
    assert_eq!(count(&html, "class=\"bar\""), 0);
    assert!(html.contains("</html>"));

    // Images with no bytes at all: every ratio has a zero denominator.
    let mut zero = report(&names(3), 0.0, 1);
    for row in &mut zero.matrix {
        row.iter_mut().for_each(|v| *v = 0);
    }
    for im in &mut zero.images {
        (im.unique_bytes, im.shared_bytes, im.plain_bytes) = (0, 0, 0);
    }
    zero.settings = vec![setting("16K/64K/256K", 0, 0, 0)];
    let html = render(&zero);
    assert_eq!(count(&html, "<g class=\"cell\">"), 9);
    assert!(!non_finite(&html));
}

// ---- headless Chromium ----

struct Shot {
    stderr: String,
    dom: String,
    png: Vec<u8>,
}

/// Runs Chromium on `html` twice (a screenshot, then --dump-dom) with a fresh
/// profile, asserting each run exits 0 within a deadline.
fn chromium(html: &str, height: u32) -> Shot {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.html");
    std::fs::write(&page, html).unwrap();
    let shot = dir.path().join("shot.png");
    let url = format!("file://{}", page.display());
    let base = |profile: &str| -> Vec<String> {
        vec![
            "--headless=new".into(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--no-first-run".into(),
            "--hide-scrollbars".into(),
            "--enable-logging=stderr".into(),
            "--v=0".into(),
            format!("--user-data-dir={}", dir.path().join(profile).display()),
            format!("--window-size=1200,{height}"),
        ]
    };
    let mut a = base("p1");
    a.push(format!("--screenshot={}", shot.display()));
    a.push(url.clone());
    let (_, err1) = run(&a);
    let mut b = base("p2");
    b.push("--dump-dom".into());
    b.push(url);
    let (dom, err2) = run(&b);
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot: {e}\n{err1}"));
    if let Ok(keep) = std::env::var("STRATA_HTML_KEEP") {
        // For a person to look at: the page and its screenshot.
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).unwrap();
        let tag = format!("{}-{}", height, html.len());
        std::fs::write(keep.join(format!("{tag}.html")), html).unwrap();
        std::fs::write(keep.join(format!("{tag}.png")), &png).unwrap();
    }
    Shot {
        stderr: err1 + &err2,
        dom,
        png,
    }
}

fn run(args: &[String]) -> (String, String) {
    let mut child = match Command::new("chromium")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "chromium is not installed: the HTML report test needs Debian's `chromium` \
             package, which .ci/deps installs (apt-get install -y chromium)"
        ),
        Err(e) => panic!("cannot start chromium: {e}"),
    };
    // Read both pipes on threads so a chatty browser never blocks on a full pipe.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(45);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 45 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = t_out.join().unwrap();
    let err = t_err.join().unwrap();
    assert!(status.success(), "chromium failed: {status}\n{err}");
    (out, err)
}

/// Chromium logs every console message of the page, errors and uncaught
/// exceptions included, as ":CONSOLE" lines at INFO level (no level of
/// their own), so any such line is a failure: the page runs no script.
fn console_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect()
}

struct Png {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
}

/// Decodes the 8-bit RGB/RGBA, non-interlaced PNG that Chromium writes.
fn decode_png(data: &[u8]) -> Png {
    assert_eq!(&data[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (mut pos, mut idat) = (8, Vec::new());
    let (mut w, mut h, mut channels) = (0usize, 0usize, 0usize);
    while pos + 8 <= data.len() {
        let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &data[pos + 4..pos + 8];
        let body = &data[pos + 8..pos + 8 + len];
        match kind {
            b"IHDR" => {
                w = u32::from_be_bytes(body[0..4].try_into().unwrap()) as usize;
                h = u32::from_be_bytes(body[4..8].try_into().unwrap()) as usize;
                assert_eq!(body[8], 8, "bit depth");
                assert_eq!(body[12], 0, "interlaced");
                channels = match body[9] {
                    2 => 3,
                    6 => 4,
                    t => panic!("PNG colour type {t}"),
                };
            }
            b"IDAT" => idat.extend_from_slice(body),
            b"IEND" => break,
            _ => {}
        }
        pos += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = w * channels;
    assert_eq!(raw.len(), h * (stride + 1), "PNG data size");
    let mut prev = vec![0u8; stride];
    let mut rgb = Vec::with_capacity(w * h);
    for y in 0..h {
        let filter = raw[y * (stride + 1)];
        let mut line = raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)].to_vec();
        for x in 0..stride {
            let a = if x >= channels {
                line[x - channels] as i16
            } else {
                0
            };
            let b = prev[x] as i16;
            let c = if x >= channels {
                prev[x - channels] as i16
            } else {
                0
            };
            let add = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("PNG filter {f}"),
            };
            line[x] = line[x].wrapping_add(add as u8);
        }
        for px in line.chunks(channels) {
            rgb.push([px[0], px[1], px[2]]);
        }
        prev = line;
    }
    Png {
        width: w,
        height: h,
        rgb,
    }
}

fn near(p: [u8; 3], c: [u8; 3]) -> bool {
    p.iter()
        .zip(c)
        .all(|(a, b)| (*a as i16 - b as i16).abs() <= 3)
}

/// The fill of the report's first heatmap cell (the first image's diagonal,
/// always the top of the colour ramp unless the image has no bytes).
fn diagonal_fill(html: &str) -> [u8; 3] {
    let at = html.find("<g class=\"cell\">").expect("a heatmap cell");
    let f = at + html[at..].find("fill=\"#").unwrap() + 7;
    let hex = &html[f..f + 6];
    let byte = |k: usize| u8::from_str_radix(&hex[k..k + 2], 16).unwrap();
    [byte(0), byte(2), byte(4)]
}

#[test]
fn chromium_renders_pages_without_console_errors() {
    for (n, ns) in [(1, names(1)), (3, three_evil()), (40, names(40))] {
        let html = render(&report(&ns, 0.4, if n == 3 { 2 } else { 1 }));
        let shot = chromium(&html, 1600);
        let console = console_lines(&shot.stderr);
        assert!(
            console.is_empty(),
            "{n} images: console output: {console:?}"
        );
        // The browser parsed the page as written: every cell and bar is in its DOM.
        assert_eq!(count(&shot.dom, "<g class=\"cell\">"), n * n, "{n} images");
        assert_eq!(count(&shot.dom, "<g class=\"bar\">"), n, "{n} images");
        assert!(!shot.dom.contains("<script"), "an image name became markup");
        let png = decode_png(&shot.png);
        assert_eq!((png.width, png.height), (1200, 1600));
        let mut colours: Vec<[u8; 3]> = png.rgb.clone();
        colours.sort_unstable();
        colours.dedup();
        assert!(colours.len() > 20, "{n} images: screenshot nearly blank");
    }
}

#[test]
fn console_error_detection_works() {
    // A control page: shows the stderr check above is not vacuous.
    let shot = chromium(
        "<!DOCTYPE html><p>x</p><script>console.error('control'); nope();</script>",
        400,
    );
    let console = console_lines(&shot.stderr);
    assert!(
        console.iter().any(|l| l.contains("control"))
            && console.iter().any(|l| l.contains("Uncaught")),
        "chromium's console logging changed; stderr was:\n{}",
        shot.stderr
    );
}

#[test]
fn heatmap_colour_shows_in_screenshot() {
    // Six images sharing everything fill the grid with the ramp's darkest
    // colour; sharing nothing leaves only the diagonal that dark.
    let ns = names(6);
    let mut all = report(&ns, 1.0, 1);
    for row in &mut all.matrix {
        let own = *row.iter().max().unwrap();
        row.iter_mut().for_each(|v| *v = own);
    }
    let full = render(&all);
    let none = render(&report(&ns, 0.0, 1));
    let dark = diagonal_fill(&full);
    assert_eq!(dark, diagonal_fill(&none));
    let pixels = |html: &str| {
        let png = decode_png(&chromium(html, 1600).png);
        png.rgb.iter().filter(|p| near(**p, dark)).count()
    };
    let (pf, pn) = (pixels(&full), pixels(&none));
    assert!(pn > 6 * 400, "diagonal cells not visible: {pn} dark pixels");
    assert!(
        pf > 4 * pn,
        "full sharing should darken the grid: {pf} vs {pn} dark pixels"
    );
}
