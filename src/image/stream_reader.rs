//! A synchronous reader over the pieces an async task sends: how blobs that
//! arrive over the network (a daemon's Read stream, a registry's body) are
//! handed to the image readers and writers, which are synchronous.

use bytes::Bytes;
use std::io::{self, Read};

/// Reads from the pieces a task sends (a Read stream, a registry's body).
pub struct StreamReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl StreamReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>) -> Self {
        StreamReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}
