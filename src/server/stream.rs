//! Streaming a byte range of a stored blob out of the daemon, shared by both
//! APIs: a blocking thread rebuilds the range and sends it in messages of at
//! most `READ_MESSAGE_BYTES`, with backpressure from a small channel.

use crate::config::READ_MESSAGE_BYTES;
use crate::digest::Digest;
use crate::store::{Content, Store};
use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::Status;

/// `wrap(offset, data)` builds each message; `offset` is where `data` starts in the blob
/// (in its plain stream, when `plain`).
#[allow(clippy::too_many_arguments)]
pub fn stream_range<M: Send + 'static>(
    store: Store,
    digest: Digest,
    content: Content,
    offset: u64,
    length: u64,
    plain: bool,
    permit: tokio::sync::OwnedSemaphorePermit,
    wrap: impl Fn(u64, Bytes) -> M + Send + 'static,
) -> mpsc::Receiver<Result<M, Status>> {
    let (tx, rx) = mpsc::channel::<Result<M, Status>>(4);
    tokio::task::spawn_blocking(move || {
        // The stream counts against --max-streams until it is sent.
        let _permit = permit;
        let mut pos = offset;
        let mut buf: Vec<u8> = Vec::with_capacity(READ_MESSAGE_BYTES);
        let send = |buf: &mut Vec<u8>, pos: &mut u64| {
            let data = Bytes::from(std::mem::replace(
                buf,
                Vec::with_capacity(READ_MESSAGE_BYTES),
            ));
            let n = data.len() as u64;
            let ok = tx.blocking_send(Ok(wrap(*pos, data))).is_ok();
            *pos += n;
            ok
        };
        let read = if plain {
            Store::read_plain
        } else {
            Store::read_range
        };
        let result = read(
            &store,
            &digest,
            &content,
            offset,
            length,
            &mut |mut piece| {
                while !piece.is_empty() {
                    let take = (READ_MESSAGE_BYTES - buf.len()).min(piece.len());
                    buf.extend_from_slice(&piece[..take]);
                    piece = &piece[take..];
                    if buf.len() == READ_MESSAGE_BYTES && !send(&mut buf, &mut pos) {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        );
        match result {
            Ok(()) if !buf.is_empty() => {
                send(&mut buf, &mut pos);
            }
            Ok(()) => {}
            Err(e) => {
                tracing::error!(%digest, error = %e, "read failed");
                let _ = tx.blocking_send(Err(e.into()));
            }
        }
    });
    rx
}
