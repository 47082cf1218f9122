//! One error type for the store, carrying the gRPC status it maps to.

use std::path::Path;
use tonic::Code;

/// How every disk-full message starts (see `Error::disk_full`).
const DISK_FULL: &str = "the disk holding ";
const UNNAMED_DIR: &str = "the data directory";
const NOTHING_STORED: &str = "nothing was stored";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The content is not what the client said it would be (digest or size).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    Unavailable(String),
    /// The disk (or a configured limit) is full.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Stored bytes failed their checksum or hash: never served.
    #[error("{0}")]
    DataLoss(String),
    #[error("{0}")]
    Cancelled(String),
    #[error("i/o error: {context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("index error: {0}")]
    Index(#[source] rocksdb::Error),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        // ENOSPC and EDQUOT are the user's to fix by freeing space, not ours.
        if matches!(
            source.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT)
        ) {
            return Error::disk_full(None, format!("{context}: {source}"));
        }
        Error::Io { context, source }
    }

    /// The disk is full: ENOSPC, EDQUOT, or the free-space reserve reached.
    /// `dir` names the data directory when the caller knows it.
    pub fn disk_full(dir: Option<&Path>, detail: impl std::fmt::Display) -> Self {
        let place = dir.map_or_else(|| UNNAMED_DIR.to_string(), |d| d.display().to_string());
        Error::ResourceExhausted(format!("{DISK_FULL}{place} is full: {detail}"))
    }

    /// An error of the same kind (and so the same status code) with another
    /// message; I/O and index errors become Internal.
    pub fn same_kind(&self, msg: String) -> Error {
        match self {
            Error::InvalidArgument(_) => Error::InvalidArgument(msg),
            Error::NotFound(_) => Error::NotFound(msg),
            Error::AlreadyExists(_) => Error::AlreadyExists(msg),
            Error::FailedPrecondition(_) => Error::FailedPrecondition(msg),
            Error::OutOfRange(_) => Error::OutOfRange(msg),
            Error::Unavailable(_) => Error::Unavailable(msg),
            Error::ResourceExhausted(_) => Error::ResourceExhausted(msg),
            Error::DataLoss(_) => Error::DataLoss(msg),
            Error::Cancelled(_) => Error::Cancelled(msg),
            Error::Io { .. } | Error::Index(_) | Error::Internal(_) => Error::Internal(msg),
        }
    }

    /// True for an error that says the disk is full (not a configured limit).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::ResourceExhausted(m) => m.starts_with(DISK_FULL),
            Error::Index(e) => index_no_space(e),
            _ => false,
        }
    }

    /// For a push (or upload) that failed and stored nothing: a disk-full
    /// error names the data directory and says that nothing was stored.
    /// Other errors pass unchanged.
    pub fn nothing_stored(self, dir: &Path) -> Self {
        if !self.is_disk_full() {
            return self;
        }
        let msg = match self {
            Error::ResourceExhausted(m) => m,
            e => format!("{DISK_FULL}{UNNAMED_DIR} is full: {e}"),
        };
        let unnamed = format!("{DISK_FULL}{UNNAMED_DIR} is full: ");
        let mut msg = match msg.strip_prefix(&unnamed) {
            Some(rest) => format!("{DISK_FULL}{} is full: {rest}", dir.display()),
            None => msg,
        };
        if !msg.ends_with(NOTHING_STORED) {
            msg.push_str("; ");
            msg.push_str(NOTHING_STORED);
        }
        Error::ResourceExhausted(msg)
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::Unavailable(_) => Code::Unavailable,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::DataLoss(_) => Code::DataLoss,
            Error::Cancelled(_) => Code::Cancelled,
            Error::Index(e) if index_no_space(e) => Code::ResourceExhausted,
            Error::Io { .. } | Error::Index(_) | Error::Internal(_) => Code::Internal,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

/// RocksDB reports ENOSPC and EDQUOT only in its status text.
fn index_no_space(e: &rocksdb::Error) -> bool {
    let s = e.to_string();
    s.contains("No space left") || s.contains("Disk quota exceeded") || s.contains("NoSpace")
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        if index_no_space(&e) {
            // A write the index could not make because the disk is full. RocksDB
            // then refuses every write until it recovers, and Debian's build may
            // abort instead: the free-space reserve exists to keep it from here.
            return Error::disk_full(None, format!("the index could not write: {e}"));
        }
        Error::Index(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_is_resource_exhausted_and_names_the_directory() {
        let e = Error::io(
            "writing /d/packs/00000001.pack",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(e.is_disk_full());
        let e = e.nothing_stored(Path::new("/d"));
        let m = e.to_string();
        assert!(
            m.starts_with("the disk holding /d is full: writing /d/packs/00000001.pack: "),
            "{m}"
        );
        assert!(m.ends_with("; nothing was stored"), "{m}");
        // Said once, however often it is applied.
        assert_eq!(e.nothing_stored(Path::new("/d")).to_string(), m);

        let q = Error::io("x", std::io::Error::from_raw_os_error(libc::EDQUOT));
        assert_eq!(q.code(), Code::ResourceExhausted);
        let other = Error::io("x", std::io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(other.code(), Code::Internal);
        assert!(!other.is_disk_full());
        // A configured limit is not a full disk and keeps its message.
        let limit = Error::ResourceExhausted("too big".into());
        assert!(!limit.is_disk_full());
        assert_eq!(limit.nothing_stored(Path::new("/d")).to_string(), "too big");
    }
}
