//! `gnudeflate LEVEL < in > out`: the raw deflate stream `gzip -LEVEL`
//! writes for stdin (no header or trailer), read in 1 MiB pieces. For
//! timing the port against gzip itself.

use std::io::{Read, Write};

fn main() {
    let level: i32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(6);
    let mut w = gnuflate::Writer::new(level).expect("level 1..=9");
    let (mut stdin, mut stdout) = (std::io::stdin().lock(), std::io::stdout().lock());
    let mut buf = vec![0u8; 1 << 20];
    let mut out = Vec::new();
    loop {
        let n = stdin.read(&mut buf).expect("reading stdin");
        if n == 0 {
            break;
        }
        w.write(&buf[..n], &mut out);
        stdout.write_all(&out).expect("writing stdout");
        out.clear();
    }
    w.finish(&mut out);
    stdout.write_all(&out).expect("writing stdout");
}
