//! sha256 of a blob on its own thread, so hashing overlaps with splitting and
//! chunk hashing on the ingest thread (two cores, two streams of work).

use crate::digest::Digest;
use bytes::Bytes;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

pub struct BackgroundSha256 {
    tx: Option<SyncSender<Bytes>>,
    handle: Option<JoinHandle<[u8; 32]>>,
}

impl BackgroundSha256 {
    pub fn new() -> std::io::Result<Self> {
        // A few pieces of slack keep both threads busy; memory stays bounded.
        let (tx, rx) = sync_channel::<Bytes>(8);
        let handle = std::thread::Builder::new()
            .name("strata-sha256".into())
            .spawn(move || {
                let mut h = ring::digest::Context::new(&ring::digest::SHA256);
                for b in rx.iter() {
                    h.update(&b);
                }
                h.finish().as_ref().try_into().expect("sha256 is 32 bytes")
            })?;
        Ok(BackgroundSha256 {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    pub fn update(&mut self, data: Bytes) {
        // The thread only stops when the sender is dropped, so this cannot fail.
        let _ = self.tx.as_ref().expect("open until finish").send(data);
    }

    pub fn finish(mut self) -> Digest {
        drop(self.tx.take());
        Digest(
            self.handle
                .take()
                .expect("joined once")
                .join()
                .expect("the sha256 thread does not panic"),
        )
    }
}

impl Drop for BackgroundSha256 {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
