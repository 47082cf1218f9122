//! One error type for the store, carrying the gRPC status it maps to.

use tonic::Code;

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
    Index(#[from] rocksdb::Error),
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
            return Error::ResourceExhausted(format!(
                "{context}: no space left on the data directory's disk ({source})"
            ));
        }
        Error::Io { context, source }
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
            Error::Index(e) if e.to_string().contains("No space left") => Code::ResourceExhausted,
            Error::Io { .. } | Error::Index(_) | Error::Internal(_) => Code::Internal,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}
