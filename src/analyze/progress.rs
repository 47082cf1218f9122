//! A progress bar over the bytes read, drawn only when stderr is a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Read};

pub fn bar(total: u64, wanted: bool) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    b.set_style(
        ProgressStyle::with_template(
            "{spinner} analyzing [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {wide_msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    b
}

/// Counts the bytes read through it on the bar.
pub struct Counting<R> {
    pub inner: R,
    pub bar: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}
