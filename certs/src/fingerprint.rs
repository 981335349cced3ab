//! SHA-256 certificate fingerprints, formatted for logs.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Returns the SHA-256 digest of `der` as upper-case hex pairs joined by colons,
/// the same format `openssl x509 -noout -fingerprint -sha256` prints.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut out = String::with_capacity(digest.len() * 3);
    for (index, byte) in digest.iter().enumerate() {
        if index > 0 {
            out.push(':');
        }
        out.push_str(&format!("{byte:02X}"));
    }
    out
}

/// Returns the fingerprint of the first certificate in `pem`.
pub fn sha256_fingerprint_pem(pem: &str) -> Result<String> {
    let first = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or(Error::NoCertificate {
            what: "fingerprint input",
        })?
        .map_err(|e| Error::pem("fingerprint input", e))?;
    Ok(sha256_fingerprint(first.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_the_well_known_digest() {
        assert_eq!(
            sha256_fingerprint(b""),
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:\
             27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
    }

    #[test]
    fn format_is_32_colon_separated_pairs() {
        let fp = sha256_fingerprint(b"specreg");
        let parts: Vec<&str> = fp.split(':').collect();
        assert_eq!(parts.len(), 32);
        assert!(parts.iter().all(|p| p.len() == 2
            && p.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())));
    }

    #[test]
    fn pem_without_certificate_is_an_error() {
        let err = sha256_fingerprint_pem("no pem here").unwrap_err();
        assert!(matches!(err, Error::NoCertificate { .. }), "{err}");
    }
}
