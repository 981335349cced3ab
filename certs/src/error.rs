//! The error type shared by every module of this crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while issuing, storing, loading or using certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing, e.g. "reading" or "renaming into place".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// rcgen refused to build, sign or parse a certificate or key.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),

    /// Generating an RSA private key failed.
    #[error("RSA key generation: {0}")]
    RsaKeyGeneration(String),

    /// A requested subject alternative name is not a usable DNS name or IP address.
    #[error("invalid subject alternative name {name:?}: {reason}")]
    InvalidSubjectAltName {
        /// The string as given by the caller.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A leaf certificate was requested without any subject alternative name.
    #[error("a leaf certificate needs at least one subject alternative name")]
    NoSubjectAltNames,

    /// A validity period in days is out of range.
    #[error("invalid validity of {days} days: {reason}")]
    InvalidValidity {
        /// The rejected number of days.
        days: u32,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A leaf certificate name (the file stem) is unusable.
    #[error("invalid certificate name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// PEM text could not be decoded.
    #[error("decoding PEM ({what}): {source}")]
    Pem {
        /// Which input was being decoded.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: rustls_pki_types::pem::Error,
    },

    /// PEM text decoded fine but held no certificate.
    #[error("no certificate found in {what}")]
    NoCertificate {
        /// Which input was searched.
        what: &'static str,
    },

    /// A certificate could not be parsed as X.509.
    #[error("parsing X.509 certificate ({what}): {reason}")]
    X509 {
        /// Which certificate was being parsed.
        what: &'static str,
        /// The parser's message.
        reason: String,
    },

    /// A private key does not belong to the certificate it is paired with.
    #[error("the private key does not match the certificate ({what})")]
    KeyMismatch {
        /// Which pair was checked.
        what: &'static str,
    },

    /// A certificate loaded as a CA is not marked as a CA in its basic constraints.
    #[error("the certificate is not a CA certificate")]
    NotACa,

    /// The stored CA certificate has expired or is not yet valid.
    #[error("the CA certificate in {path} is outside its validity period; remove ca.crt and ca.key to create a new CA")]
    CaNotValidNow {
        /// The offending file.
        path: PathBuf,
    },

    /// Only one of `ca.crt` and `ca.key` exists, so the CA can be neither used nor safely replaced.
    #[error("found {present} but not {missing}; refusing to replace a CA that clients may already trust")]
    IncompleteCa {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },

    /// rustls rejected the configuration (bad key, unsupported protocol set, bad root).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Result alias used throughout this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Pem`] for `what`.
    pub(crate) fn pem(what: &'static str, source: rustls_pki_types::pem::Error) -> Self {
        Error::Pem { what, source }
    }
}
