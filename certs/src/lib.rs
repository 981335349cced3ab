//! TLS material for specreg.
//!
//! This crate holds everything the registry needs to serve HTTPS with its own CA:
//!
//! * [`ca`]: a certificate authority (ECDSA P-256 by default, RSA 2048/3072 on request);
//! * [`leaf`]: leaf certificates signed by that CA, for any mix of DNS names and IP
//!   addresses, usable for server and client authentication;
//! * [`store`]: the certificate directory (`ca.crt`, `ca.key`, `<name>.crt`, `<name>.key`),
//!   loaded on restart and completed or renewed when needed;
//! * [`pem_files`]: atomic, durable PEM writes (keys 0600, certificates 0644);
//! * [`tls`]: rustls server and client configs using the `ring` provider;
//! * [`fingerprint`]: SHA-256 fingerprints for logs;
//! * [`san`], [`inspect`], [`keys`], [`validity`]: the small pieces the above share.
//!
//! It depends on no other specreg crate.
//!
//! ```no_run
//! use specreg_certs::{CaOptions, CertStore, LeafOptions};
//!
//! # fn main() -> Result<(), specreg_certs::Error> {
//! let leaf = LeafOptions {
//!     subject_alt_names: vec!["registry.example".into(), "10.0.0.5".into()],
//!     ..LeafOptions::default()
//! };
//! let issued = CertStore::open_or_create("/var/lib/specreg/tls", &CaOptions::default(), &leaf)?;
//! let server = issued.server_config()?;
//! # let _ = server;
//! # Ok(())
//! # }
//! ```

pub mod ca;
pub mod error;
pub mod fingerprint;
pub mod inspect;
pub mod keys;
pub mod leaf;
pub mod pem_files;
pub mod san;
pub mod store;
pub mod tls;
pub mod validity;

#[cfg(test)]
mod test_support;

pub use ca::{CaOptions, CertificateAuthority};
pub use error::{Error, Result};
pub use fingerprint::{sha256_fingerprint, sha256_fingerprint_pem};
pub use inspect::{inspect_certificate, CertificateInfo};
pub use keys::KeyAlgorithm;
pub use leaf::{LeafCertificate, LeafOptions, ReissueReason};
pub use san::SubjectAltName;
pub use store::{CaStatus, CertStore, Issued, LeafStatus, StorePaths};
pub use tls::{client_config_trusting, server_config, server_config_with_alpn};
