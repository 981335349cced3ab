//! The certificate authority: creating a new one, or loading one from PEM.

use std::fmt;
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::error::{Error, Result};
use crate::fingerprint::sha256_fingerprint;
use crate::inspect::{inspect_certificate, key_matches, CertificateInfo};
use crate::keys::{generate_key_pair, key_pair_from_pem, KeyAlgorithm};
use crate::validity;

/// How to create a new CA. Ignored when an existing CA is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaOptions {
    /// Subject common name of the CA certificate.
    pub common_name: String,
    /// Validity in days, counted from creation.
    pub validity_days: u32,
    /// Key type of the CA.
    pub key_algorithm: KeyAlgorithm,
}

impl Default for CaOptions {
    /// "specreg CA", ten years, ECDSA P-256.
    fn default() -> Self {
        CaOptions {
            common_name: "specreg CA".to_string(),
            validity_days: 3650,
            key_algorithm: KeyAlgorithm::EcdsaP256,
        }
    }
}

/// A CA certificate with its private key, ready to sign leaf certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    info: CertificateInfo,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// Creates a new self-signed CA (path length 0: it may sign leaves only).
    pub fn generate(options: &CaOptions) -> Result<Self> {
        Self::generate_at(options, SystemTime::now())
    }

    /// Like [`CertificateAuthority::generate`], with an explicit issuing time.
    pub(crate) fn generate_at(options: &CaOptions, now: SystemTime) -> Result<Self> {
        let (not_before, not_after) = validity::window(now, options.validity_days)?;
        let key = generate_key_pair(options.key_algorithm)?;

        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, options.common_name.as_str());
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = not_before;
        params.not_after = not_after;

        let cert = params.self_signed(&key)?;
        let cert_der = cert.der().clone();
        let info = inspect_certificate(cert_der.as_ref())?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der,
            info,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and PKCS#8 private key in PEM form.
    ///
    /// The PEM text is kept exactly as given, so writing it back reproduces the same bytes.
    /// Fails if the certificate is not a CA or the key does not belong to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let cert_der = first_certificate(cert_pem, "CA certificate")?;
        let key = key_pair_from_pem(key_pem)?;
        let info = inspect_certificate(cert_der.as_ref())?;
        if !info.is_ca {
            return Err(Error::NotACa);
        }
        if !key_matches(cert_der.as_ref(), &key)? {
            return Err(Error::KeyMismatch {
                what: "CA certificate and key",
            });
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(CertificateAuthority {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            cert_der,
            info,
            issuer,
        })
    }

    /// The CA certificate as PEM; this is what clients must trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key as PKCS#8 PEM. Secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA certificate as DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Facts read back from the CA certificate.
    pub fn info(&self) -> &CertificateInfo {
        &self.info
    }

    /// SHA-256 fingerprint of the CA certificate, colon-separated hex.
    pub fn fingerprint(&self) -> String {
        sha256_fingerprint(self.cert_der.as_ref())
    }

    /// The signing side of the CA, for issuing leaves.
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

impl fmt::Debug for CertificateAuthority {
    // Written by hand so the private key never ends up in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("common_name", &self.info.common_name)
            .field("not_after", &self.info.not_after)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// Decodes the first certificate of a PEM bundle.
pub(crate) fn first_certificate(pem: &str, what: &'static str) -> Result<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or(Error::NoCertificate { what })?
        .map_err(|e| Error::pem(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use x509_parser::prelude::{FromDer, X509Certificate};

    #[test]
    fn default_options_are_ecdsa_for_ten_years() {
        let options = CaOptions::default();
        assert_eq!(options.key_algorithm, KeyAlgorithm::EcdsaP256);
        assert_eq!(options.validity_days, 3650);
        assert_eq!(options.common_name, "specreg CA");
    }

    #[test]
    fn generated_ca_is_a_self_signed_ca_with_requested_name_and_validity() {
        let now = SystemTime::now();
        let options = CaOptions {
            common_name: "unit test CA".into(),
            validity_days: 42,
            key_algorithm: KeyAlgorithm::EcdsaP256,
        };
        let ca = CertificateAuthority::generate_at(&options, now).unwrap();
        let info = ca.info();
        assert!(info.is_ca);
        assert_eq!(info.common_name.as_deref(), Some("unit test CA"));
        assert!(info.subject_alt_names.is_empty());
        let expected_end = now + Duration::from_secs(42 * 86_400);
        let slack = Duration::from_secs(2);
        assert!(info.not_after <= expected_end && info.not_after + slack >= expected_end);
        assert!(info.not_before < now);
        assert!(info.is_valid_at(now));

        let (_, x509) = X509Certificate::from_der(ca.cert_der().as_ref()).unwrap();
        assert_eq!(x509.issuer().as_raw(), x509.subject().as_raw());
        x509.verify_signature(None).unwrap();
        let constraints = x509.basic_constraints().unwrap().unwrap().value;
        assert!(constraints.ca);
        assert_eq!(constraints.path_len_constraint, Some(0));
        let usage = x509.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign());
        assert!(usage.crl_sign());
    }

    #[test]
    fn from_pem_keeps_the_exact_text_and_identity() {
        let ca = CertificateAuthority::generate(&CaOptions::default()).unwrap();
        let reloaded = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(reloaded.cert_pem(), ca.cert_pem());
        assert_eq!(reloaded.key_pem(), ca.key_pem());
        assert_eq!(reloaded.cert_der(), ca.cert_der());
        assert_eq!(reloaded.fingerprint(), ca.fingerprint());
    }

    #[test]
    fn from_pem_rejects_a_key_of_another_ca() {
        let one = CertificateAuthority::generate(&CaOptions::default()).unwrap();
        let two = CertificateAuthority::generate(&CaOptions::default()).unwrap();
        let err = CertificateAuthority::from_pem(one.cert_pem(), two.key_pem()).unwrap_err();
        assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn from_pem_rejects_empty_certificate_text() {
        let ca = CertificateAuthority::generate(&CaOptions::default()).unwrap();
        let err = CertificateAuthority::from_pem("", ca.key_pem()).unwrap_err();
        assert!(matches!(err, Error::NoCertificate { .. }), "{err}");
    }

    #[test]
    fn invalid_validity_is_rejected() {
        let options = CaOptions {
            validity_days: 0,
            ..CaOptions::default()
        };
        let err = CertificateAuthority::generate(&options).unwrap_err();
        assert!(matches!(err, Error::InvalidValidity { .. }), "{err}");
    }

    #[test]
    fn debug_output_does_not_contain_the_key() {
        let ca = CertificateAuthority::generate(&CaOptions::default()).unwrap();
        let debug = format!("{ca:?}");
        assert!(!debug.contains("PRIVATE KEY"));
        assert!(debug.contains(&ca.fingerprint()));
    }
}
