//! The distribution-spec error codes and the error type every handler returns.

use http::StatusCode;

use crate::reference::ParseError;

/// The error codes of the distribution-spec (plus the Docker-era ones clients know).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
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
    /// Not a spec code: for failures of the registry itself (disk full, I/O errors).
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Internal => "INTERNAL_ERROR",
        }
    }

    /// The status a code is answered with unless a handler picks another (416, 413).
    pub fn default_status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answered to a client: a status, a spec code and a readable message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RegistryError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
}

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError {
            status: code.default_status(),
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The JSON body `{"errors": [{"code", "message", "detail"}]}`.
    pub fn body(&self) -> Vec<u8> {
        let entry = serde_json::json!({
            "code": self.code.as_str(),
            "message": self.message,
            "detail": self.detail.clone().unwrap_or(serde_json::Value::Null),
        });
        serde_json::to_vec(&serde_json::json!({ "errors": [entry] }))
            .expect("serialising a JSON value cannot fail")
    }
}

impl From<ParseError> for RegistryError {
    fn from(e: ParseError) -> Self {
        let code = match e {
            ParseError::Name(_) => ErrorCode::NameInvalid,
            ParseError::Tag(_) => ErrorCode::ManifestInvalid,
            ParseError::Digest(_) | ParseError::Algorithm(_) => ErrorCode::DigestInvalid,
        };
        RegistryError::new(code, e.to_string())
    }
}

impl From<crate::storage::StorageError> for RegistryError {
    fn from(e: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError as S;
        match e {
            S::BlobNotFound(d) => {
                RegistryError::new(ErrorCode::BlobUnknown, format!("blob {d} is unknown"))
            }
            S::UploadNotFound => {
                RegistryError::new(ErrorCode::BlobUploadUnknown, "upload session is unknown")
            }
            S::DigestMismatch { expected, actual } => RegistryError::new(
                ErrorCode::DigestInvalid,
                format!("content digest {actual} does not match {expected}"),
            ),
            S::Io { .. } | S::Corrupt(_) => {
                tracing::error!(error = %e, "storage failure");
                RegistryError::new(ErrorCode::Internal, e.to_string())
            }
        }
    }
}
