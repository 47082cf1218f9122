//! The distribution spec's error body (`{"errors":[{"code","message","detail"}]}`)
//! and the HTTP status each code goes with.

use crate::error::Error;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The spec's error codes (distribution-spec v1.1, "Error Codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    TagInvalid,
    /// A failure of the server's own (500).
    Unknown,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOO_MANY_REQUESTS",
            Code::TagInvalid => "TAG_INVALID",
            Code::Unknown => "UNKNOWN",
        }
    }

    /// The status a code is sent with unless a handler picks another.
    pub fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An error answer: a status, one spec error, and extra headers.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            status: code.status(),
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// A store error that is not the client's fault: 500 (or 503, 507), with
    /// the store's message; a NotFound becomes `not_found`.
    pub fn store(e: Error, not_found: Code) -> Self {
        let msg = e.to_string();
        match e {
            Error::NotFound(_) => ApiError::new(not_found, msg),
            Error::InvalidArgument(_) => ApiError::new(Code::BlobUploadInvalid, msg),
            Error::FailedPrecondition(_) => ApiError::new(Code::DigestInvalid, msg),
            Error::Unavailable(_) => ApiError::new(Code::TooManyRequests, msg)
                .with_status(StatusCode::SERVICE_UNAVAILABLE),
            Error::ResourceExhausted(_) => {
                ApiError::new(Code::SizeInvalid, msg).with_status(StatusCode::INSUFFICIENT_STORAGE)
            }
            _ => {
                tracing::error!(error = %msg, "registry request failed in the store");
                ApiError::new(Code::Unknown, msg)
            }
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::store(e, Code::BlobUnknown)
    }
}

pub fn body(code: Code, message: &str) -> String {
    serde_json::json!({
        "errors": [{ "code": code.as_str(), "message": message, "detail": null }]
    })
    .to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body(self.code, &self.message),
        )
            .into_response();
        for (k, v) in self.headers {
            r.headers_mut().append(k, v);
        }
        r
    }
}
