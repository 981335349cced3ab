//! Reading facts back out of an issued certificate (SANs, validity, CA flag, signer).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use rcgen::KeyPair;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::error::{Error, Result};
use crate::san::SubjectAltName;
use crate::validity::from_unix_seconds;

/// What this crate needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject's common name, if it has one.
    pub common_name: Option<String>,
    /// DNS and IP subject alternative names, in certificate order. Other kinds are skipped.
    pub subject_alt_names: Vec<SubjectAltName>,
    /// Start of the validity period.
    pub not_before: SystemTime,
    /// End of the validity period.
    pub not_after: SystemTime,
    /// Whether the basic constraints mark it as a CA.
    pub is_ca: bool,
}

impl CertificateInfo {
    /// Whether `now` lies inside the validity period.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// Parses a DER certificate and extracts its [`CertificateInfo`].
pub fn inspect_certificate(der: &[u8]) -> Result<CertificateInfo> {
    let cert = parse(der, "certificate")?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let mut subject_alt_names = Vec::new();
    let san_extension = cert.subject_alternative_name().map_err(|e| Error::X509 {
        what: "subject alternative names",
        reason: e.to_string(),
    })?;
    if let Some(extension) = san_extension {
        for name in &extension.value.general_names {
            match name {
                GeneralName::DNSName(dns) => {
                    subject_alt_names.push(SubjectAltName::Dns(dns.to_ascii_lowercase()))
                }
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        subject_alt_names.push(SubjectAltName::Ip(ip));
                    }
                }
                _ => {}
            }
        }
    }
    let validity = cert.validity();
    Ok(CertificateInfo {
        common_name,
        subject_alt_names,
        not_before: from_unix_seconds(validity.not_before.timestamp()),
        not_after: from_unix_seconds(validity.not_after.timestamp()),
        is_ca: cert.is_ca(),
    })
}

/// Whether `der` names `issuer_der`'s subject as its issuer and carries a valid signature
/// by `issuer_der`'s key.
pub(crate) fn is_signed_by(der: &[u8], issuer_der: &[u8]) -> Result<bool> {
    let cert = parse(der, "certificate")?;
    let issuer = parse(issuer_der, "issuer certificate")?;
    if cert.issuer().as_raw() != issuer.subject().as_raw() {
        return Ok(false);
    }
    Ok(cert.verify_signature(Some(issuer.public_key())).is_ok())
}

/// Whether `key` is the private half of the public key in `der`.
pub(crate) fn key_matches(der: &[u8], key: &KeyPair) -> Result<bool> {
    let cert = parse(der, "certificate")?;
    Ok(cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw())
}

fn parse<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| Error::X509 {
        what,
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(Error::X509 {
            what,
            reason: format!("{} trailing bytes after the certificate", rest.len()),
        });
    }
    Ok(cert)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Some(IpAddr::V6(Ipv6Addr::from(v6)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_x509_error() {
        let err = inspect_certificate(b"\x30\x03\x02\x01\x01").unwrap_err();
        assert!(matches!(err, Error::X509 { .. }), "{err}");
    }

    #[test]
    fn ip_bytes_of_both_families_convert() {
        assert_eq!(
            ip_from_bytes(&[10, 0, 0, 1]),
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(ip_from_bytes(&v6), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(ip_from_bytes(&[1, 2, 3]), None);
    }
}
