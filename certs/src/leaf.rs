//! Leaf certificates: issuing them from a CA, loading them, and deciding when a stored
//! one must be replaced.

use std::fmt;
use std::time::SystemTime;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;

use crate::ca::{first_certificate, CertificateAuthority};
use crate::error::{Error, Result};
use crate::fingerprint::sha256_fingerprint;
use crate::inspect::{inspect_certificate, is_signed_by, key_matches, CertificateInfo};
use crate::keys::{generate_key_pair, key_pair_from_pem, KeyAlgorithm};
use crate::san::SubjectAltName;
use crate::validity;

/// How to issue (or when to re-issue) a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafOptions {
    /// File stem: the files are `<name>.crt` and `<name>.key`.
    /// ASCII letters, digits, `.`, `_` and `-`; must not start with `.` and must not be `ca`.
    pub name: String,
    /// Subject common name. When empty, the first SAN is used.
    pub common_name: String,
    /// DNS names and IP addresses; strings that parse as an IP address become IP SANs.
    pub subject_alt_names: Vec<String>,
    /// Validity in days, counted from issuing (capped at the CA's own expiry).
    pub validity_days: u32,
    /// A stored leaf expiring within this many days is re-issued. Must be below `validity_days`.
    pub renew_before_days: u32,
    /// Key type of the leaf.
    pub key_algorithm: KeyAlgorithm,
}

impl Default for LeafOptions {
    /// `server`, covering `localhost`, `127.0.0.1` and `::1`, one year, renewed 30 days
    /// before expiry, ECDSA P-256.
    fn default() -> Self {
        LeafOptions {
            name: "server".to_string(),
            common_name: "specreg".to_string(),
            subject_alt_names: vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ],
            validity_days: 365,
            renew_before_days: 30,
            key_algorithm: KeyAlgorithm::EcdsaP256,
        }
    }
}

impl LeafOptions {
    /// Checks the options and returns the parsed SANs.
    pub fn validate(&self) -> Result<Vec<SubjectAltName>> {
        check_name(&self.name)?;
        validity::check_days(self.validity_days)?;
        if self.renew_before_days >= self.validity_days {
            return Err(Error::InvalidValidity {
                days: self.renew_before_days,
                reason: "the renewal window must be shorter than the validity",
            });
        }
        let sans = SubjectAltName::parse_all(&self.subject_alt_names)?;
        if sans.is_empty() {
            return Err(Error::NoSubjectAltNames);
        }
        Ok(sans)
    }
}

/// Why a stored leaf certificate was replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReissueReason {
    /// Only one of the certificate and key files existed.
    Incomplete,
    /// The stored files could not be parsed, or the key did not match the certificate.
    Unreadable(String),
    /// The stored certificate was not signed by the current CA.
    NotIssuedByCa,
    /// The stored certificate lacks a requested SAN (the first one missing is named).
    MissingSubjectAltName(SubjectAltName),
    /// The stored certificate is not valid yet.
    NotYetValid,
    /// The stored certificate expires within the renewal window (or already has).
    ExpiresSoon {
        /// Its expiry.
        not_after: SystemTime,
    },
    /// The stored key is not of the requested kind.
    KeyAlgorithmChanged {
        /// The requested kind.
        wanted: KeyAlgorithm,
    },
}

impl fmt::Display for ReissueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReissueReason::Incomplete => f.write_str("certificate or key file missing"),
            ReissueReason::Unreadable(why) => write!(f, "stored files unusable: {why}"),
            ReissueReason::NotIssuedByCa => f.write_str("not issued by the current CA"),
            ReissueReason::MissingSubjectAltName(san) => write!(f, "lacks {san}"),
            ReissueReason::NotYetValid => f.write_str("not valid yet"),
            ReissueReason::ExpiresSoon { .. } => f.write_str("expired or expiring soon"),
            ReissueReason::KeyAlgorithmChanged { wanted } => write!(f, "key is not {wanted}"),
        }
    }
}

/// A leaf certificate with its private key.
pub struct LeafCertificate {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    info: CertificateInfo,
    key_algorithm: Option<KeyAlgorithm>,
}

impl LeafCertificate {
    /// Issues a new leaf signed by `ca`, for server and client authentication.
    pub fn issue(ca: &CertificateAuthority, options: &LeafOptions) -> Result<Self> {
        Self::issue_at(ca, options, SystemTime::now())
    }

    /// Like [`LeafCertificate::issue`], with an explicit issuing time.
    pub(crate) fn issue_at(
        ca: &CertificateAuthority,
        options: &LeafOptions,
        now: SystemTime,
    ) -> Result<Self> {
        let sans = options.validate()?;
        let (not_before, mut not_after) = validity::window(now, options.validity_days)?;
        let ca_not_after = validity::truncate(ca.info().not_after);
        if not_after > ca_not_after {
            tracing::warn!(
                leaf = %options.name,
                "leaf validity capped at the CA's expiry"
            );
            not_after = ca_not_after;
        }
        let key = generate_key_pair(options.key_algorithm)?;

        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        let common_name = if options.common_name.is_empty() {
            sans[0].value()
        } else {
            options.common_name.clone()
        };
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.subject_alt_names = sans
            .iter()
            .map(SubjectAltName::to_rcgen)
            .collect::<Result<Vec<_>>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = leaf_key_usages(options.key_algorithm);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;

        let cert = params.signed_by(&key, ca.issuer())?;
        let cert_der = cert.der().clone();
        let info = inspect_certificate(cert_der.as_ref())?;
        Ok(LeafCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der,
            info,
            key_algorithm: Some(options.key_algorithm),
        })
    }

    /// Loads a leaf from its certificate and PKCS#8 private key in PEM form, keeping the
    /// text exactly as given. Fails if the key does not belong to the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let cert_der = first_certificate(cert_pem, "leaf certificate")?;
        let key: KeyPair = key_pair_from_pem(key_pem)?;
        if !key_matches(cert_der.as_ref(), &key)? {
            return Err(Error::KeyMismatch {
                what: "leaf certificate and key",
            });
        }
        let info = inspect_certificate(cert_der.as_ref())?;
        Ok(LeafCertificate {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            cert_der,
            info,
            key_algorithm: KeyAlgorithm::of(&key),
        })
    }

    /// Why this certificate should be replaced to satisfy `options` under `ca` at `now`,
    /// or `None` if it is fine. SANs beyond the requested ones do not matter.
    pub fn reissue_reason(
        &self,
        ca: &CertificateAuthority,
        options: &LeafOptions,
        now: SystemTime,
    ) -> Result<Option<ReissueReason>> {
        let wanted_sans = options.validate()?;
        if !is_signed_by(self.cert_der.as_ref(), ca.cert_der().as_ref())? {
            return Ok(Some(ReissueReason::NotIssuedByCa));
        }
        if self.key_algorithm != Some(options.key_algorithm) {
            return Ok(Some(ReissueReason::KeyAlgorithmChanged {
                wanted: options.key_algorithm,
            }));
        }
        if let Some(missing) = wanted_sans
            .into_iter()
            .find(|san| !self.info.subject_alt_names.contains(san))
        {
            return Ok(Some(ReissueReason::MissingSubjectAltName(missing)));
        }
        if now < self.info.not_before {
            return Ok(Some(ReissueReason::NotYetValid));
        }
        let renew_from = self
            .info
            .not_after
            .checked_sub(validity::days_to_duration(options.renew_before_days))
            .unwrap_or(std::time::UNIX_EPOCH);
        if now >= renew_from {
            return Ok(Some(ReissueReason::ExpiresSoon {
                not_after: self.info.not_after,
            }));
        }
        Ok(None)
    }

    /// The leaf certificate as PEM (the leaf alone; clients already trust the CA).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The leaf private key as PKCS#8 PEM. Secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The leaf certificate as DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Facts read back from the certificate.
    pub fn info(&self) -> &CertificateInfo {
        &self.info
    }

    /// The kind of the private key, or `None` for a kind this crate does not issue.
    pub fn key_algorithm(&self) -> Option<KeyAlgorithm> {
        self.key_algorithm
    }

    /// SHA-256 fingerprint of the certificate, colon-separated hex.
    pub fn fingerprint(&self) -> String {
        sha256_fingerprint(self.cert_der.as_ref())
    }
}

impl fmt::Debug for LeafCertificate {
    // Written by hand so the private key never ends up in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCertificate")
            .field("subject_alt_names", &self.info.subject_alt_names)
            .field("not_after", &self.info.not_after)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

fn leaf_key_usages(algorithm: KeyAlgorithm) -> Vec<KeyUsagePurpose> {
    match algorithm {
        KeyAlgorithm::EcdsaP256 => vec![KeyUsagePurpose::DigitalSignature],
        // TLS 1.2 RSA key exchange needs keyEncipherment; harmless otherwise.
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ],
    }
}

fn check_name(name: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.starts_with('.') {
        return invalid("must not start with '.'");
    }
    if name == "ca" {
        return invalid("'ca' is reserved for the CA files");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-';
    if !name.chars().all(allowed) {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CaOptions;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::time::Duration;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn ca() -> CertificateAuthority {
        CertificateAuthority::generate(&CaOptions::default()).unwrap()
    }

    fn options(sans: &[&str]) -> LeafOptions {
        LeafOptions {
            subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
            ..LeafOptions::default()
        }
    }

    #[test]
    fn issued_leaf_carries_dns_and_ip_sans_as_x509_parser_sees_them() {
        let ca = ca();
        let leaf = LeafCertificate::issue(
            &ca,
            &options(&[
                "registry.example",
                "LOCALHOST",
                "10.1.2.3",
                "::1",
                "*.zuul.test",
            ]),
        )
        .unwrap();

        let (_, x509) = X509Certificate::from_der(leaf.cert_der().as_ref()).unwrap();
        let sans = &x509
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        let dns: Vec<&str> = sans
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(*d),
                _ => None,
            })
            .collect();
        let ips: Vec<&[u8]> = sans
            .iter()
            .filter_map(|n| match n {
                GeneralName::IPAddress(b) => Some(*b),
                _ => None,
            })
            .collect();
        assert_eq!(dns, vec!["registry.example", "localhost", "*.zuul.test"]);
        assert_eq!(ips.len(), 2);
        assert_eq!(ips[0], &[10, 1, 2, 3][..]);
        assert_eq!(ips[1], &Ipv6Addr::LOCALHOST.octets()[..]);

        assert_eq!(
            leaf.info().subject_alt_names,
            vec![
                SubjectAltName::Dns("registry.example".into()),
                SubjectAltName::Dns("localhost".into()),
                SubjectAltName::Ip(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
                SubjectAltName::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                SubjectAltName::Dns("*.zuul.test".into()),
            ]
        );
    }

    #[test]
    fn issued_leaf_is_a_non_ca_signed_by_the_ca_for_server_and_client_auth() {
        let ca = ca();
        let leaf = LeafCertificate::issue(&ca, &LeafOptions::default()).unwrap();
        let (_, x509) = X509Certificate::from_der(leaf.cert_der().as_ref()).unwrap();
        let (_, ca_x509) = X509Certificate::from_der(ca.cert_der().as_ref()).unwrap();

        assert!(!x509.is_ca());
        assert_eq!(x509.issuer().as_raw(), ca_x509.subject().as_raw());
        x509.verify_signature(Some(ca_x509.public_key())).unwrap();
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth);
        assert!(eku.client_auth);
        let usage = x509.key_usage().unwrap().unwrap().value;
        assert!(usage.digital_signature());
        assert!(!usage.key_cert_sign());
        assert!(is_signed_by(leaf.cert_der().as_ref(), ca.cert_der().as_ref()).unwrap());
        assert_eq!(leaf.info().common_name.as_deref(), Some("specreg"));
    }

    #[test]
    fn empty_common_name_falls_back_to_the_first_san() {
        let ca = ca();
        let mut opts = options(&["first.example", "second.example"]);
        opts.common_name = String::new();
        let leaf = LeafCertificate::issue(&ca, &opts).unwrap();
        assert_eq!(leaf.info().common_name.as_deref(), Some("first.example"));
    }

    #[test]
    fn validity_is_as_requested_but_capped_at_the_ca_expiry() {
        let now = SystemTime::now();
        let short_ca = CertificateAuthority::generate_at(
            &CaOptions {
                validity_days: 20,
                ..CaOptions::default()
            },
            now,
        )
        .unwrap();
        let mut opts = LeafOptions {
            validity_days: 10,
            renew_before_days: 1,
            ..LeafOptions::default()
        };
        let leaf = LeafCertificate::issue_at(&short_ca, &opts, now).unwrap();
        let wanted = now + Duration::from_secs(10 * 86_400);
        assert!(leaf.info().not_after <= wanted);
        assert!(leaf.info().not_after + Duration::from_secs(2) >= wanted);

        opts.validity_days = 400;
        let capped = LeafCertificate::issue_at(&short_ca, &opts, now).unwrap();
        assert_eq!(capped.info().not_after, short_ca.info().not_after);
    }

    #[test]
    fn from_pem_round_trips_and_rejects_a_foreign_key() {
        let ca = ca();
        let leaf = LeafCertificate::issue(&ca, &LeafOptions::default()).unwrap();
        let reloaded = LeafCertificate::from_pem(leaf.cert_pem(), leaf.key_pem()).unwrap();
        assert_eq!(reloaded.cert_der(), leaf.cert_der());
        assert_eq!(reloaded.key_pem(), leaf.key_pem());
        assert_eq!(reloaded.key_algorithm(), Some(KeyAlgorithm::EcdsaP256));

        let other = LeafCertificate::issue(&ca, &LeafOptions::default()).unwrap();
        let err = LeafCertificate::from_pem(leaf.cert_pem(), other.key_pem()).unwrap_err();
        assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn reissue_reasons() {
        let now = SystemTime::now();
        let ca = ca();
        let opts = options(&["a.example", "127.0.0.1"]);
        let leaf = LeafCertificate::issue_at(&ca, &opts, now).unwrap();

        assert_eq!(leaf.reissue_reason(&ca, &opts, now).unwrap(), None);

        // A requested SAN the certificate lacks.
        let more = options(&["a.example", "127.0.0.1", "b.example"]);
        assert_eq!(
            leaf.reissue_reason(&ca, &more, now).unwrap(),
            Some(ReissueReason::MissingSubjectAltName(SubjectAltName::Dns(
                "b.example".into()
            )))
        );
        // Fewer SANs than the certificate has are fine.
        let fewer = options(&["127.0.0.1"]);
        assert_eq!(leaf.reissue_reason(&ca, &fewer, now).unwrap(), None);

        // Inside the renewal window, and after expiry.
        let late = leaf.info().not_after - Duration::from_secs(29 * 86_400);
        assert!(matches!(
            leaf.reissue_reason(&ca, &opts, late).unwrap(),
            Some(ReissueReason::ExpiresSoon { .. })
        ));
        let expired = leaf.info().not_after + Duration::from_secs(1);
        assert!(matches!(
            leaf.reissue_reason(&ca, &opts, expired).unwrap(),
            Some(ReissueReason::ExpiresSoon { .. })
        ));

        // Before not_before.
        let early = now - Duration::from_secs(3600);
        assert_eq!(
            leaf.reissue_reason(&ca, &opts, early).unwrap(),
            Some(ReissueReason::NotYetValid)
        );

        // Another CA.
        let other_ca = self::ca();
        assert_eq!(
            leaf.reissue_reason(&other_ca, &opts, now).unwrap(),
            Some(ReissueReason::NotIssuedByCa)
        );

        // Another key kind.
        let rsa = LeafOptions {
            key_algorithm: KeyAlgorithm::Rsa2048,
            ..opts.clone()
        };
        assert_eq!(
            leaf.reissue_reason(&ca, &rsa, now).unwrap(),
            Some(ReissueReason::KeyAlgorithmChanged {
                wanted: KeyAlgorithm::Rsa2048
            })
        );
    }

    #[test]
    fn invalid_options_are_rejected() {
        let ca = ca();
        type Expectation = fn(&Error) -> bool;
        let cases: Vec<(LeafOptions, Expectation)> = vec![
            (options(&[]), |e| matches!(e, Error::NoSubjectAltNames)),
            (options(&["bad name"]), |e| {
                matches!(e, Error::InvalidSubjectAltName { .. })
            }),
            (
                LeafOptions {
                    validity_days: 0,
                    ..LeafOptions::default()
                },
                |e| matches!(e, Error::InvalidValidity { .. }),
            ),
            (
                LeafOptions {
                    validity_days: 30,
                    renew_before_days: 30,
                    ..LeafOptions::default()
                },
                |e| matches!(e, Error::InvalidValidity { .. }),
            ),
            (
                LeafOptions {
                    name: "ca".into(),
                    ..LeafOptions::default()
                },
                |e| matches!(e, Error::InvalidName { .. }),
            ),
            (
                LeafOptions {
                    name: "../escape".into(),
                    ..LeafOptions::default()
                },
                |e| matches!(e, Error::InvalidName { .. }),
            ),
            (
                LeafOptions {
                    name: ".hidden".into(),
                    ..LeafOptions::default()
                },
                |e| matches!(e, Error::InvalidName { .. }),
            ),
            (
                LeafOptions {
                    name: String::new(),
                    ..LeafOptions::default()
                },
                |e| matches!(e, Error::InvalidName { .. }),
            ),
        ];
        for (opts, expected) in cases {
            let err = LeafCertificate::issue(&ca, &opts).unwrap_err();
            assert!(expected(&err), "{opts:?} gave {err}");
        }
    }
}
