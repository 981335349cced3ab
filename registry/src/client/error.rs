//! What can go wrong talking to a registry. Every variant names the URL it concerns and
//! never a credential (URLs carry none: credentials only travel in headers).

use std::fmt;

/// One entry of a registry's `{"errors": [...]}` body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RemoteError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// The registry's error entries, shown as `CODE: message; CODE: message`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteErrors(pub Vec<RemoteError>);

impl RemoteErrors {
    /// Parses an error body; anything that is not the spec's shape gives no entries.
    pub fn parse(body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Body {
            #[serde(default)]
            errors: Vec<RemoteError>,
        }
        RemoteErrors(serde_json::from_slice::<Body>(body).map(|b| b.errors).unwrap_or_default())
    }

    pub fn has_code(&self, code: &str) -> bool {
        self.0.iter().any(|e| e.code == code)
    }
}

impl fmt::Display for RemoteErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no error details");
        }
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.code, e.message)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry answered with an unexpected status.
    #[error("{method} {url}: HTTP {status} ({errors})")]
    Status {
        method: String,
        url: String,
        status: u16,
        errors: RemoteErrors,
    },
    /// The connection failed or dropped. The message carries the whole cause chain, so
    /// the cause is not repeated as a `source()`.
    #[error("{method} {url}: {}", chain(cause))]
    Transport { method: String, url: String, cause: reqwest::Error },
    /// Authentication was refused (by the registry or its token service).
    #[error("{url}: authentication failed: {message}")]
    Auth { url: String, message: String },
    /// Content did not hash to the digest it was asked for by.
    #[error("{url}: content digest {actual} does not match the expected {expected}")]
    DigestMismatch { url: String, expected: String, actual: String },
    /// Content length did not match the descriptor.
    #[error("{url}: received {actual} bytes, expected {expected}")]
    SizeMismatch { url: String, expected: u64, actual: u64 },
    /// A response the protocol does not allow (missing header, bad JSON).
    #[error("{url}: invalid response: {message}")]
    Protocol { url: String, message: String },
    /// Bad client configuration (CA PEM, host, credentials file).
    #[error("{0}")]
    Config(String),
    /// Looking up credentials failed (config.json, credential helper).
    #[error("credentials: {0}")]
    Credentials(String),
    /// A local source or sink of blob bytes failed (an OCI layout file).
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

/// `outer: inner: innermost`, with a cause that merely repeats its parent left out.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ")
}

impl ClientError {
    /// The HTTP status, for errors that have one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether trying again may help: throttling, server errors, dropped connections.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Status { status, .. } => super::retry::retryable_status(*status),
            ClientError::Transport { .. } => true,
            _ => false,
        }
    }
}
