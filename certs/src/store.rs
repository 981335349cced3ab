//! The certificate directory: `ca.crt`, `ca.key`, `<name>.crt` and `<name>.key`.
//!
//! [`CertStore::open_or_create`] loads what is there and creates what is missing, so a
//! restarted registry keeps serving the certificates its clients already trust.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::ca::{CaOptions, CertificateAuthority};
use crate::error::{Error, Result};
use crate::leaf::{LeafCertificate, LeafOptions, ReissueReason};
use crate::pem_files::{ensure_dir, read_if_exists, write_certificate, write_private_key};
use crate::tls;

/// Where each file of a store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePaths {
    /// The directory holding everything.
    pub dir: PathBuf,
    /// `ca.crt`
    pub ca_cert: PathBuf,
    /// `ca.key`
    pub ca_key: PathBuf,
    /// `<name>.crt`
    pub leaf_cert: PathBuf,
    /// `<name>.key`
    pub leaf_key: PathBuf,
}

impl StorePaths {
    /// The file layout for leaf `leaf_name` in `dir`.
    pub fn new(dir: &Path, leaf_name: &str) -> Self {
        StorePaths {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            leaf_cert: dir.join(format!("{leaf_name}.crt")),
            leaf_key: dir.join(format!("{leaf_name}.key")),
        }
    }
}

/// What happened to the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaStatus {
    /// No CA was stored; a new one was created and written.
    Created,
    /// The stored CA was loaded unchanged.
    Loaded,
}

/// What happened to the leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafStatus {
    /// No leaf was stored; a new one was issued and written.
    Created,
    /// The stored leaf was loaded unchanged.
    Loaded,
    /// The stored leaf did not fit; a new one was issued by the same CA and written.
    Reissued(ReissueReason),
}

/// The CA and leaf in use, and how they came about.
#[derive(Debug)]
pub struct Issued {
    /// The CA; give `ca.cert_pem()` to clients.
    pub ca: CertificateAuthority,
    /// The server (and client) certificate.
    pub leaf: LeafCertificate,
    /// Whether the CA was created or loaded.
    pub ca_status: CaStatus,
    /// Whether the leaf was created, loaded or re-issued.
    pub leaf_status: LeafStatus,
    /// The files backing them.
    pub paths: StorePaths,
}

impl Issued {
    /// Whether a stored leaf was replaced.
    pub fn leaf_reissued(&self) -> bool {
        matches!(self.leaf_status, LeafStatus::Reissued(_))
    }

    /// A rustls server config presenting the leaf, with ALPN `h2` and `http/1.1`.
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        tls::server_config(self.leaf.cert_pem(), self.leaf.key_pem())
    }

    /// A rustls client config trusting only this store's CA.
    pub fn client_config(&self) -> Result<rustls::ClientConfig> {
        tls::client_config_trusting(self.ca.cert_pem())
    }
}

/// Entry point for the on-disk certificate directory.
#[derive(Debug, Clone, Copy)]
pub struct CertStore;

impl CertStore {
    /// Loads the CA and the leaf named `leaf.name` from `dir`, creating whatever is missing.
    ///
    /// * The directory is created (mode 0700) if needed.
    /// * A stored CA is always kept: `ca_options` only apply when creating one. If just one
    ///   of `ca.crt` and `ca.key` exists, or the stored CA is corrupt or outside its validity
    ///   period, this fails rather than replace a CA that clients may trust.
    /// * A stored leaf is kept unless it lacks a requested SAN, has another key kind, was not
    ///   issued by the CA, is unreadable, or expires within `leaf.renew_before_days`; then a
    ///   new leaf is issued by the same CA and [`LeafStatus::Reissued`] says why.
    /// * Keys are written with mode 0600, certificates 0644, each atomically.
    ///
    /// Two processes must not open the same empty directory at the same time: each would
    /// create its own CA and the last writer wins.
    pub fn open_or_create(
        dir: impl AsRef<Path>,
        ca_options: &CaOptions,
        leaf_options: &LeafOptions,
    ) -> Result<Issued> {
        Self::open_or_create_at(dir.as_ref(), ca_options, leaf_options, SystemTime::now())
    }

    pub(crate) fn open_or_create_at(
        dir: &Path,
        ca_options: &CaOptions,
        leaf_options: &LeafOptions,
        now: SystemTime,
    ) -> Result<Issued> {
        leaf_options.validate()?;
        let paths = StorePaths::new(dir, &leaf_options.name);
        ensure_dir(&paths.dir)?;

        let (ca, ca_status) = open_or_create_ca(&paths, ca_options, now)?;
        let (leaf, leaf_status) = open_or_create_leaf(&paths, &ca, leaf_options, now)?;
        Ok(Issued {
            ca,
            leaf,
            ca_status,
            leaf_status,
            paths,
        })
    }
}

fn open_or_create_ca(
    paths: &StorePaths,
    options: &CaOptions,
    now: SystemTime,
) -> Result<(CertificateAuthority, CaStatus)> {
    let cert_pem = read_if_exists(&paths.ca_cert)?;
    let key_pem = read_if_exists(&paths.ca_key)?;
    match (cert_pem, key_pem) {
        (Some(cert_pem), Some(key_pem)) => {
            warn_if_key_readable_by_others(&paths.ca_key);
            let ca = CertificateAuthority::from_pem(&cert_pem, &key_pem)?;
            if !ca.info().is_valid_at(now) {
                return Err(Error::CaNotValidNow {
                    path: paths.ca_cert.clone(),
                });
            }
            tracing::info!(
                path = %paths.ca_cert.display(),
                fingerprint = %ca.fingerprint(),
                "loaded CA certificate"
            );
            Ok((ca, CaStatus::Loaded))
        }
        (None, None) => {
            let ca = CertificateAuthority::generate_at(options, now)?;
            write_private_key(&paths.ca_key, ca.key_pem())?;
            write_certificate(&paths.ca_cert, ca.cert_pem())?;
            tracing::info!(
                path = %paths.ca_cert.display(),
                fingerprint = %ca.fingerprint(),
                key = %options.key_algorithm,
                "created CA certificate"
            );
            Ok((ca, CaStatus::Created))
        }
        (Some(_), None) => Err(Error::IncompleteCa {
            present: paths.ca_cert.clone(),
            missing: paths.ca_key.clone(),
        }),
        (None, Some(_)) => Err(Error::IncompleteCa {
            present: paths.ca_key.clone(),
            missing: paths.ca_cert.clone(),
        }),
    }
}

fn open_or_create_leaf(
    paths: &StorePaths,
    ca: &CertificateAuthority,
    options: &LeafOptions,
    now: SystemTime,
) -> Result<(LeafCertificate, LeafStatus)> {
    let cert_pem = read_if_exists(&paths.leaf_cert)?;
    let key_pem = read_if_exists(&paths.leaf_key)?;
    let reason = match (cert_pem, key_pem) {
        (None, None) => None,
        (Some(cert_pem), Some(key_pem)) => match LeafCertificate::from_pem(&cert_pem, &key_pem) {
            Ok(stored) => match stored.reissue_reason(ca, options, now)? {
                None => {
                    warn_if_key_readable_by_others(&paths.leaf_key);
                    tracing::info!(
                        path = %paths.leaf_cert.display(),
                        fingerprint = %stored.fingerprint(),
                        "loaded leaf certificate"
                    );
                    return Ok((stored, LeafStatus::Loaded));
                }
                Some(reason) => Some(reason),
            },
            Err(error) => Some(ReissueReason::Unreadable(error.to_string())),
        },
        _ => Some(ReissueReason::Incomplete),
    };

    let leaf = LeafCertificate::issue_at(ca, options, now)?;
    write_private_key(&paths.leaf_key, leaf.key_pem())?;
    write_certificate(&paths.leaf_cert, leaf.cert_pem())?;
    let status = match reason {
        None => {
            tracing::info!(
                path = %paths.leaf_cert.display(),
                fingerprint = %leaf.fingerprint(),
                "issued leaf certificate"
            );
            LeafStatus::Created
        }
        Some(reason) => {
            tracing::warn!(
                path = %paths.leaf_cert.display(),
                fingerprint = %leaf.fingerprint(),
                %reason,
                "re-issued leaf certificate"
            );
            LeafStatus::Reissued(reason)
        }
    };
    Ok((leaf, status))
}

#[cfg(unix)]
fn warn_if_key_readable_by_others(path: &Path) {
    if let Ok(mode) = crate::pem_files::file_mode(path) {
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "private key file is accessible to other users"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_key_readable_by_others(_path: &Path) {}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::keys::KeyAlgorithm;
    use crate::pem_files::file_mode;
    use crate::san::SubjectAltName;
    use crate::test_support::handshake;
    use std::fs;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);

    fn leaf_options(sans: &[&str]) -> LeafOptions {
        LeafOptions {
            name: "registry".into(),
            subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
            ..LeafOptions::default()
        }
    }

    /// The raw bytes of the four files, in the order ca.crt, ca.key, leaf.crt, leaf.key.
    fn file_bytes(paths: &StorePaths) -> [Vec<u8>; 4] {
        [
            fs::read(&paths.ca_cert).unwrap(),
            fs::read(&paths.ca_key).unwrap(),
            fs::read(&paths.leaf_cert).unwrap(),
            fs::read(&paths.leaf_key).unwrap(),
        ]
    }

    #[test]
    fn first_open_creates_all_four_files_with_the_right_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        let issued =
            CertStore::open_or_create(&dir, &CaOptions::default(), &leaf_options(&["a.example"]))
                .unwrap();

        assert_eq!(issued.ca_status, CaStatus::Created);
        assert_eq!(issued.leaf_status, LeafStatus::Created);
        assert!(!issued.leaf_reissued());
        assert_eq!(issued.paths, StorePaths::new(&dir, "registry"));
        assert_eq!(issued.paths.leaf_cert, dir.join("registry.crt"));
        assert_eq!(issued.paths.leaf_key, dir.join("registry.key"));

        assert_eq!(file_mode(&dir).unwrap(), 0o700);
        assert_eq!(file_mode(&issued.paths.ca_key).unwrap(), 0o600);
        assert_eq!(file_mode(&issued.paths.leaf_key).unwrap(), 0o600);
        assert_eq!(file_mode(&issued.paths.ca_cert).unwrap(), 0o644);
        assert_eq!(file_mode(&issued.paths.leaf_cert).unwrap(), 0o644);

        let [ca_cert, ca_key, leaf_cert, leaf_key] = file_bytes(&issued.paths);
        assert_eq!(ca_cert, issued.ca.cert_pem().as_bytes());
        assert_eq!(ca_key, issued.ca.key_pem().as_bytes());
        assert_eq!(leaf_cert, issued.leaf.cert_pem().as_bytes());
        assert_eq!(leaf_key, issued.leaf.key_pem().as_bytes());

        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["ca.crt", "ca.key", "registry.crt", "registry.key"]);
    }

    #[test]
    fn reopening_keeps_the_same_ca_and_leaf_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = leaf_options(&["a.example", "127.0.0.1"]);
        let first = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap();
        let before = file_bytes(&first.paths);

        let second = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap();
        assert_eq!(second.ca_status, CaStatus::Loaded);
        assert_eq!(second.leaf_status, LeafStatus::Loaded);
        assert_eq!(second.ca.cert_pem(), first.ca.cert_pem());
        assert_eq!(second.ca.key_pem(), first.ca.key_pem());
        assert_eq!(second.leaf.cert_pem(), first.leaf.cert_pem());
        assert_eq!(second.leaf.key_pem(), first.leaf.key_pem());
        assert_eq!(second.leaf.fingerprint(), first.leaf.fingerprint());
        assert_eq!(file_bytes(&second.paths), before);

        // Asking for fewer SANs, or different CA options, changes nothing either.
        let other_ca = CaOptions {
            common_name: "ignored".into(),
            key_algorithm: KeyAlgorithm::Rsa2048,
            validity_days: 7,
        };
        let third = CertStore::open_or_create(tmp.path(), &other_ca, &leaf_options(&["a.example"]))
            .unwrap();
        assert_eq!(third.ca_status, CaStatus::Loaded);
        assert_eq!(third.leaf_status, LeafStatus::Loaded);
        assert_eq!(file_bytes(&third.paths), before);
    }

    #[test]
    fn a_missing_san_reissues_the_leaf_with_the_same_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let first = CertStore::open_or_create(
            tmp.path(),
            &CaOptions::default(),
            &leaf_options(&["a.example"]),
        )
        .unwrap();
        let [ca_cert, ca_key, old_leaf, _] = file_bytes(&first.paths);

        let wider = leaf_options(&["a.example", "buildset.example", "10.9.8.7"]);
        let second = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &wider).unwrap();
        assert_eq!(second.ca_status, CaStatus::Loaded);
        assert_eq!(
            second.leaf_status,
            LeafStatus::Reissued(ReissueReason::MissingSubjectAltName(SubjectAltName::Dns(
                "buildset.example".into()
            )))
        );
        assert!(second.leaf_reissued());

        let [ca_cert_after, ca_key_after, new_leaf, _] = file_bytes(&second.paths);
        assert_eq!(ca_cert_after, ca_cert);
        assert_eq!(ca_key_after, ca_key);
        assert_ne!(new_leaf, old_leaf);
        let sans = &second.leaf.info().subject_alt_names;
        for wanted in SubjectAltName::parse_all(&wider.subject_alt_names).unwrap() {
            assert!(sans.contains(&wanted), "{wanted} missing from {sans:?}");
        }
        assert_eq!(
            second
                .leaf
                .reissue_reason(&second.ca, &wider, SystemTime::now())
                .unwrap(),
            None
        );

        let third = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &wider).unwrap();
        assert_eq!(third.leaf_status, LeafStatus::Loaded);
        assert_eq!(third.leaf.cert_pem(), second.leaf.cert_pem());
    }

    #[test]
    fn a_leaf_near_expiry_is_reissued_but_the_ca_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let opts = LeafOptions {
            validity_days: 40,
            renew_before_days: 30,
            ..leaf_options(&["a.example"])
        };
        let first =
            CertStore::open_or_create_at(tmp.path(), &CaOptions::default(), &opts, now).unwrap();

        let nine_days_on = now + 9 * DAY;
        let second =
            CertStore::open_or_create_at(tmp.path(), &CaOptions::default(), &opts, nine_days_on)
                .unwrap();
        assert_eq!(second.leaf_status, LeafStatus::Loaded);

        let eleven_days_on = now + 11 * DAY;
        let third =
            CertStore::open_or_create_at(tmp.path(), &CaOptions::default(), &opts, eleven_days_on)
                .unwrap();
        assert_eq!(
            third.leaf_status,
            LeafStatus::Reissued(ReissueReason::ExpiresSoon {
                not_after: first.leaf.info().not_after
            })
        );
        assert_eq!(third.ca.cert_pem(), first.ca.cert_pem());
        assert!(third.leaf.info().not_after > first.leaf.info().not_after);
    }

    #[test]
    fn an_expired_leaf_is_reissued() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let opts = LeafOptions {
            validity_days: 2,
            renew_before_days: 1,
            ..leaf_options(&["a.example"])
        };
        CertStore::open_or_create_at(tmp.path(), &CaOptions::default(), &opts, now).unwrap();
        let later = now + 3 * DAY;
        let issued =
            CertStore::open_or_create_at(tmp.path(), &CaOptions::default(), &opts, later).unwrap();
        assert!(matches!(
            issued.leaf_status,
            LeafStatus::Reissued(ReissueReason::ExpiresSoon { .. })
        ));
        assert!(issued.leaf.info().is_valid_at(later));
    }

    #[test]
    fn a_missing_or_corrupt_leaf_file_is_repaired() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = leaf_options(&["a.example"]);
        let first = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap();

        fs::remove_file(&first.paths.leaf_key).unwrap();
        let second = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap();
        assert_eq!(
            second.leaf_status,
            LeafStatus::Reissued(ReissueReason::Incomplete)
        );
        assert_eq!(file_mode(&second.paths.leaf_key).unwrap(), 0o600);

        fs::write(&second.paths.leaf_cert, "garbage").unwrap();
        let third = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap();
        assert!(matches!(
            third.leaf_status,
            LeafStatus::Reissued(ReissueReason::Unreadable(_))
        ));

        // A key that belongs to another certificate (e.g. a crash between the two writes).
        let other = crate::leaf::LeafCertificate::issue(&third.ca, &opts).unwrap();
        fs::write(&third.paths.leaf_key, other.key_pem()).unwrap();
        let fourth = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap();
        assert!(matches!(
            fourth.leaf_status,
            LeafStatus::Reissued(ReissueReason::Unreadable(_))
        ));
        assert_eq!(fourth.ca.cert_pem(), first.ca.cert_pem());
        let fifth = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap();
        assert_eq!(fifth.leaf_status, LeafStatus::Loaded);
    }

    #[test]
    fn a_new_ca_means_a_new_leaf() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = leaf_options(&["a.example"]);
        let first = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap();
        fs::remove_file(&first.paths.ca_cert).unwrap();
        fs::remove_file(&first.paths.ca_key).unwrap();

        let second = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap();
        assert_eq!(second.ca_status, CaStatus::Created);
        assert_eq!(
            second.leaf_status,
            LeafStatus::Reissued(ReissueReason::NotIssuedByCa)
        );
        assert_ne!(second.ca.cert_pem(), first.ca.cert_pem());
    }

    #[test]
    fn a_changed_leaf_key_kind_reissues_the_leaf() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = leaf_options(&["a.example"]);
        CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap();
        let rsa = LeafOptions {
            key_algorithm: KeyAlgorithm::Rsa2048,
            ..opts
        };
        let issued = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &rsa).unwrap();
        assert_eq!(
            issued.leaf_status,
            LeafStatus::Reissued(ReissueReason::KeyAlgorithmChanged {
                wanted: KeyAlgorithm::Rsa2048
            })
        );
        assert_eq!(issued.leaf.key_algorithm(), Some(KeyAlgorithm::Rsa2048));
    }

    #[test]
    fn half_a_ca_is_an_error_and_nothing_is_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = leaf_options(&["a.example"]);
        let first = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap();

        fs::remove_file(&first.paths.ca_key).unwrap();
        let err = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap_err();
        assert!(matches!(err, Error::IncompleteCa { .. }), "{err}");
        assert_eq!(
            fs::read_to_string(&first.paths.ca_cert).unwrap(),
            first.ca.cert_pem()
        );
        assert!(!first.paths.ca_key.exists());

        fs::remove_file(&first.paths.ca_cert).unwrap();
        fs::write(&first.paths.ca_key, first.ca.key_pem()).unwrap();
        let err = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap_err();
        assert!(matches!(err, Error::IncompleteCa { .. }), "{err}");
        assert!(!first.paths.ca_cert.exists());
    }

    #[test]
    fn a_corrupt_ca_is_an_error_and_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = leaf_options(&["a.example"]);
        let first = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap();
        fs::write(&first.paths.ca_cert, "not a certificate").unwrap();
        let err = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap_err();
        assert!(matches!(err, Error::NoCertificate { .. }), "{err}");
        assert_eq!(
            fs::read_to_string(&first.paths.ca_cert).unwrap(),
            "not a certificate"
        );
    }

    #[test]
    fn an_expired_ca_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let short = CaOptions {
            validity_days: 2,
            ..CaOptions::default()
        };
        let opts = LeafOptions {
            validity_days: 2,
            renew_before_days: 1,
            ..leaf_options(&["a.example"])
        };
        CertStore::open_or_create_at(tmp.path(), &short, &opts, now).unwrap();
        let err =
            CertStore::open_or_create_at(tmp.path(), &short, &opts, now + 3 * DAY).unwrap_err();
        assert!(matches!(err, Error::CaNotValidNow { .. }), "{err}");
    }

    #[test]
    fn invalid_leaf_options_fail_before_touching_the_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("never");
        let err =
            CertStore::open_or_create(&dir, &CaOptions::default(), &leaf_options(&[])).unwrap_err();
        assert!(matches!(err, Error::NoSubjectAltNames), "{err}");
        assert!(!dir.exists());
    }

    #[test]
    fn rsa_ca_store_round_trips_and_serves_tls() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = CaOptions {
            key_algorithm: KeyAlgorithm::Rsa2048,
            ..CaOptions::default()
        };
        let opts = leaf_options(&["rsa.example", "127.0.0.1"]);
        let first = CertStore::open_or_create(tmp.path(), &ca, &opts).unwrap();
        assert!(first
            .ca
            .key_pem()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        let second = CertStore::open_or_create(tmp.path(), &ca, &opts).unwrap();
        assert_eq!(second.ca_status, CaStatus::Loaded);
        assert_eq!(second.leaf_status, LeafStatus::Loaded);

        for name in ["rsa.example", "127.0.0.1"] {
            let client = second.client_config().unwrap();
            let server = second.server_config().unwrap();
            handshake(client, server, name).unwrap();
        }
    }

    #[test]
    fn the_store_leaf_serves_tls_to_a_client_trusting_ca_crt() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = leaf_options(&["registry.example", "::1"]);
        let issued = CertStore::open_or_create(tmp.path(), &CaOptions::default(), &opts).unwrap();
        let ca_pem = fs::read_to_string(&issued.paths.ca_cert).unwrap();
        let chain_pem = fs::read_to_string(&issued.paths.leaf_cert).unwrap();
        let key_pem = fs::read_to_string(&issued.paths.leaf_key).unwrap();
        for name in ["registry.example", "::1"] {
            let client = crate::tls::client_config_trusting(&ca_pem).unwrap();
            let server = crate::tls::server_config(&chain_pem, &key_pem).unwrap();
            handshake(client, server, name).unwrap();
        }
    }
}
