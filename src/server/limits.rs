//! Limits every client is held to: how many streams run at once, how large a
//! message and a blob may be, how long a stream may stay silent.

use crate::error::Error;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Push, read and write streams running at once, over every socket.
    pub max_streams: usize,
    /// Largest gRPC message accepted (containerd sends up to 16 MiB).
    pub max_message_bytes: usize,
    /// Largest blob a push or write may store; 0: no limit.
    pub max_blob_bytes: u64,
    /// A push or write stream silent this long is ended.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_streams: 256,
            max_message_bytes: crate::config::MAX_MESSAGE_BYTES,
            max_blob_bytes: 0,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// The limits, the streams running now, and the metrics; shared by every
/// service.
#[derive(Clone)]
pub struct Gate {
    pub limits: Limits,
    streams: Arc<Semaphore>,
    pub metrics: Arc<super::metrics::Metrics>,
}

impl Gate {
    pub fn new(limits: Limits) -> Gate {
        Gate {
            streams: Arc::new(Semaphore::new(limits.max_streams.max(1))),
            limits,
            metrics: Default::default(),
        }
    }

    /// A place for one more stream, held until the stream ends.
    pub fn stream(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} streams are running, the daemon's limit (--max-streams); try again later",
                self.limits.max_streams
            ))
        })
    }

    /// Refuses a blob that would grow past the size limit.
    pub fn check_size(&self, bytes: u64) -> Result<(), Error> {
        let max = self.limits.max_blob_bytes;
        if max > 0 && bytes > max {
            return Err(Error::ResourceExhausted(format!(
                "the blob is larger than the daemon's limit of {max} bytes (--max-blob-size); nothing was stored"
            )));
        }
        Ok(())
    }

    /// The next message of a client stream, or DeadlineExceeded after the
    /// idle timeout.
    pub async fn next<T>(&self, f: impl Future<Output = T>) -> Result<T, Status> {
        tokio::time::timeout(self.limits.idle_timeout, f)
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no message for {:?} (--idle-timeout); the stream was ended",
                    self.limits.idle_timeout
                ))
            })
    }
}
