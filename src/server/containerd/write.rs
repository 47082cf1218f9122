//! containerd's Write stream: exactly one reply per request, in order.
//!
//! A blocking worker owns the upload (its ref stays locked while the stream
//! lives) and handles each message: an `expected` digest already stored ends the
//! upload with AlreadyExists; STAT reports; WRITE appends at the current offset
//! (offset 0 with data present truncates, any other mismatch is OutOfRange);
//! COMMIT checks size and digest and stores the blob.

use super::{timestamp_nanos, Error};
use crate::digest::Digest;
use crate::proto::containerd::services::content::v1 as pb;
use crate::server::Gate;
use crate::store::uploads::Upload;
use crate::store::Store;
use pb::WriteAction;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tonic::{Status, Streaming};

type Reply = Result<pb::WriteContentResponse, Status>;

/// Starts the worker for one Write stream; returns the stream of replies.
/// The stream holds `permit` (one of --max-streams) until it ends.
pub fn spawn(
    store: Store,
    ns: String,
    mut inbound: Streaming<pb::WriteContentRequest>,
    gate: Gate,
    permit: OwnedSemaphorePermit,
) -> mpsc::Receiver<Reply> {
    let (out_tx, out_rx) = mpsc::channel::<Reply>(2);
    let (req_tx, req_rx) = mpsc::channel::<Result<pb::WriteContentRequest, Status>>(2);
    let worker = {
        let gate = gate.clone();
        tokio::task::spawn_blocking(move || run(store, ns, gate, req_rx, out_tx))
    };
    tokio::spawn(async move {
        let _permit = permit;
        // A broken stream just ends the worker; the upload stays for a resume.
        // Stop reading as soon as the worker is done (after COMMIT or an error),
        // even if the client keeps its side open.
        loop {
            let msg = tokio::select! {
                m = gate.next(inbound.message()) => m,
                _ = req_tx.closed() => break,
            };
            let msg = match msg {
                Ok(Ok(Some(m))) => Ok(m),
                // Silent too long: say so; the upload stays for a resume.
                Err(status) => Err(status),
                Ok(_) => break,
            };
            let last = msg.is_err();
            if req_tx.send(msg).await.is_err() || last {
                break;
            }
        }
        drop(req_tx);
        let _ = worker.await;
    });
    out_rx
}

fn run(
    store: Store,
    ns: String,
    gate: Gate,
    mut rx: mpsc::Receiver<Result<pb::WriteContentRequest, Status>>,
    out: mpsc::Sender<Reply>,
) {
    let mut upload: Option<Upload> = None;
    while let Some(req) = rx.blocking_recv() {
        let req = match req {
            Ok(r) => r,
            Err(status) => {
                let _ = out.blocking_send(Err(status));
                return;
            }
        };
        match handle(&store, &ns, &gate, &mut upload, req) {
            Ok((reply, done)) => {
                if out.blocking_send(Ok(reply)).is_err() || done {
                    return;
                }
            }
            Err(e) => {
                if !matches!(
                    e,
                    Error::AlreadyExists(_) | Error::OutOfRange(_) | Error::FailedPrecondition(_)
                ) {
                    tracing::warn!(error = %e, "write stream failed");
                }
                let _ = out.blocking_send(Err(e.into()));
                return;
            }
        }
    }
}

fn reply(up: &Upload, action: i32) -> pb::WriteContentResponse {
    pb::WriteContentResponse {
        action,
        started_at: Some(timestamp_nanos(up.record.started_at)),
        updated_at: Some(timestamp_nanos(up.record.updated_at)),
        offset: up.offset() as i64,
        total: up.record.total,
        digest: up.digest().to_string(),
    }
}

fn handle(
    store: &Store,
    ns: &str,
    gate: &Gate,
    slot: &mut Option<Upload>,
    req: pb::WriteContentRequest,
) -> Result<(pb::WriteContentResponse, bool), Error> {
    let action = WriteAction::try_from(req.action)
        .map_err(|_| Error::InvalidArgument(format!("unknown write action {}", req.action)))?;
    let max_blob = gate.limits.max_blob_bytes;
    let too_big = |n: u64| {
        (max_blob > 0 && n > max_blob).then(|| {
            Error::ResourceExhausted(format!(
                "the blob is larger than the daemon's limit of {max_blob} bytes (--max-blob-size)"
            ))
        })
    };
    if let Some(e) = too_big(req.total.max(0) as u64) {
        return Err(e);
    }
    if slot.is_none() {
        *slot = Some(store.open_upload(ns, &req.r#ref, req.total)?);
    }
    let up = slot.as_mut().expect("opened above");
    if !req.expected.is_empty() {
        let expected = Digest::parse(&req.expected)?;
        // Content stored already, in this namespace or any other: record it here
        // (no bytes move) and end the upload.
        if store.adopt(ns, &expected)? {
            let reference = up.record.reference.clone();
            *slot = None;
            store.abort_upload(ns, &reference)?;
            return Err(Error::AlreadyExists(format!(
                "content {expected} already exists"
            )));
        }
        up.set_expected(&req.expected)?;
    }
    if req.total > 0 {
        up.set_total(req.total)?;
    }
    match action {
        WriteAction::Stat => Ok((reply(up, req.action), false)),
        WriteAction::Write | WriteAction::Commit => {
            let cur = up.offset();
            if req.offset > 0 && req.offset as u64 != cur {
                return Err(Error::OutOfRange(format!(
                    "write @{} must occur at current offset {cur}",
                    req.offset
                )));
            }
            if req.offset == 0 && cur > 0 {
                up.truncate()?;
            }
            if let Some(e) = too_big(up.offset() + req.data.len() as u64) {
                return Err(e);
            }
            up.append(req.data)?;
            if action == WriteAction::Write {
                return Ok((reply(up, req.action), false));
            }
            let expected = match up.record.expected.as_str() {
                "" => None,
                e => Some(Digest::parse(e)?),
            };
            let total = up.record.total;
            let labels = req.labels.into_iter().collect();
            let outcome = up.commit(total, expected, labels)?;
            gate.metrics.committed(outcome.size, &outcome);
            let mut r = reply(up, req.action);
            r.offset = outcome.size as i64;
            r.digest = outcome.digest.map(|d| d.to_string()).unwrap_or_default();
            *slot = None;
            Ok((r, true))
        }
    }
}
