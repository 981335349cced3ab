//! rustls configurations built from PEM, each with the `ring` provider installed
//! explicitly so no process-wide default provider is needed.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// A server config presenting `chain_pem` (leaf first) with `key_pem`, offering ALPN
/// `h2` then `http/1.1`. Change `alpn_protocols` on the result to offer something else.
pub fn server_config(chain_pem: &str, key_pem: &str) -> Result<ServerConfig> {
    server_config_with_alpn(chain_pem, key_pem, &[ALPN_H2, ALPN_HTTP_1_1])
}

/// A server config like [`server_config`], offering the given ALPN protocols in
/// preference order (empty: no ALPN).
pub fn server_config_with_alpn(
    chain_pem: &str,
    key_pem: &str,
    alpn: &[&[u8]],
) -> Result<ServerConfig> {
    let chain = parse_certificates(chain_pem, "server certificate chain")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| Error::pem("server private key", e))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client config that trusts exactly the CA certificates in `ca_pem` (no system roots).
pub fn client_config_trusting(ca_pem: &str) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certificates(ca_pem, "CA certificates")? {
        roots.add(cert)?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The `ring` crypto provider, freshly built for one config.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// All certificates in a PEM bundle, in order; at least one.
fn parse_certificates(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::pem(what, e))?;
    if certs.is_empty() {
        return Err(Error::NoCertificate { what });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{CaOptions, CertificateAuthority};
    use crate::keys::KeyAlgorithm;
    use crate::leaf::{LeafCertificate, LeafOptions};
    use crate::test_support::handshake;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::CertificateError;

    struct Pki {
        ca: CertificateAuthority,
        leaf: LeafCertificate,
    }

    fn pki(ca_key: KeyAlgorithm, leaf_key: KeyAlgorithm, sans: &[&str]) -> Pki {
        let ca = CertificateAuthority::generate(&CaOptions {
            key_algorithm: ca_key,
            ..CaOptions::default()
        })
        .unwrap();
        let leaf = LeafCertificate::issue(
            &ca,
            &LeafOptions {
                subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
                key_algorithm: leaf_key,
                ..LeafOptions::default()
            },
        )
        .unwrap();
        Pki { ca, leaf }
    }

    fn configs(pki: &Pki) -> (ClientConfig, ServerConfig) {
        (
            client_config_trusting(pki.ca.cert_pem()).unwrap(),
            server_config(pki.leaf.cert_pem(), pki.leaf.key_pem()).unwrap(),
        )
    }

    fn expect_certificate_error(result: Result<impl Sized, rustls::Error>) -> CertificateError {
        match result {
            Err(rustls::Error::InvalidCertificate(error)) => error,
            Err(other) => panic!("expected a certificate error, got {other}"),
            Ok(_) => panic!("expected the handshake to fail"),
        }
    }

    #[test]
    fn handshake_succeeds_for_a_dns_name_san() {
        let pki = pki(
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP256,
            &["registry.example", "127.0.0.1"],
        );
        let (client, server) = configs(&pki);
        let (client, server) = handshake(client, server, "registry.example").unwrap();
        assert_eq!(server.server_name(), Some("registry.example"));
        let presented = client.peer_certificates().unwrap();
        assert_eq!(presented.len(), 1);
        assert_eq!(presented[0], *pki.leaf.cert_der());
    }

    #[test]
    fn handshake_succeeds_for_ipv4_and_ipv6_sans() {
        let pki = pki(
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP256,
            &["localhost", "127.0.0.1", "::1"],
        );
        for address in ["127.0.0.1", "::1"] {
            let (client, server) = configs(&pki);
            handshake(client, server, address).unwrap();
        }
    }

    #[test]
    fn client_trusting_another_ca_rejects_the_server() {
        let pki = pki(
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP256,
            &["registry.example"],
        );

        // Another CA with a different name: the issuer is simply unknown.
        let stranger = CertificateAuthority::generate(&CaOptions {
            common_name: "some other CA".into(),
            ..CaOptions::default()
        })
        .unwrap();
        let client = client_config_trusting(stranger.cert_pem()).unwrap();
        let server = server_config(pki.leaf.cert_pem(), pki.leaf.key_pem()).unwrap();
        assert_eq!(
            expect_certificate_error(handshake(client, server, "registry.example")),
            CertificateError::UnknownIssuer
        );

        // Another CA with the same name (say, a second specreg instance): the name matches
        // but the signature does not.
        let twin = CertificateAuthority::generate(&CaOptions::default()).unwrap();
        let client = client_config_trusting(twin.cert_pem()).unwrap();
        let server = server_config(pki.leaf.cert_pem(), pki.leaf.key_pem()).unwrap();
        assert_eq!(
            expect_certificate_error(handshake(client, server, "registry.example")),
            CertificateError::BadSignature
        );
    }

    #[test]
    fn client_trusting_both_twin_cas_accepts_the_server() {
        let pki = pki(
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP256,
            &["registry.example"],
        );
        let twin = CertificateAuthority::generate(&CaOptions::default()).unwrap();
        let bundle = format!("{}{}", twin.cert_pem(), pki.ca.cert_pem());
        let client = client_config_trusting(&bundle).unwrap();
        let server = server_config(pki.leaf.cert_pem(), pki.leaf.key_pem()).unwrap();
        handshake(client, server, "registry.example").unwrap();
    }

    #[test]
    fn names_outside_the_sans_are_rejected() {
        let pki = pki(
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP256,
            &["registry.example", "127.0.0.1"],
        );
        for wrong in ["other.example", "127.0.0.2", "::1"] {
            let (client, server) = configs(&pki);
            let error = expect_certificate_error(handshake(client, server, wrong));
            assert!(
                matches!(
                    error,
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                ),
                "{wrong}: {error:?}"
            );
        }
    }

    #[test]
    fn rsa_ca_and_rsa_leaf_complete_a_handshake() {
        let pki = pki(
            KeyAlgorithm::Rsa2048,
            KeyAlgorithm::Rsa2048,
            &["rsa.example"],
        );
        let (client, server) = configs(&pki);
        handshake(client, server, "rsa.example").unwrap();
    }

    #[test]
    fn rsa_3072_ca_signing_an_ecdsa_leaf_completes_a_handshake() {
        let pki = pki(
            KeyAlgorithm::Rsa3072,
            KeyAlgorithm::EcdsaP256,
            &["mixed.example"],
        );
        let (client, server) = configs(&pki);
        handshake(client, server, "mixed.example").unwrap();
    }

    #[test]
    fn webpki_verifier_accepts_the_chain_directly() {
        let pki = pki(
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP256,
            &["registry.example"],
        );
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca.cert_der().clone()).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        let name = ServerName::try_from("registry.example").unwrap();
        verifier
            .verify_server_cert(pki.leaf.cert_der(), &[], &name, &[], UnixTime::now())
            .unwrap();
    }

    #[test]
    fn alpn_prefers_h2_and_falls_back_to_http_1_1() {
        let pki = pki(
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP256,
            &["registry.example"],
        );

        let (mut client, server) = configs(&pki);
        client.alpn_protocols = vec![b"http/1.1".to_vec(), b"h2".to_vec()];
        let (client_conn, _) = handshake(client, server, "registry.example").unwrap();
        assert_eq!(client_conn.alpn_protocol(), Some(ALPN_H2));

        let (mut client, server) = configs(&pki);
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let (client_conn, _) = handshake(client, server, "registry.example").unwrap();
        assert_eq!(client_conn.alpn_protocol(), Some(ALPN_HTTP_1_1));

        let (mut client, _) = configs(&pki);
        client.alpn_protocols = vec![b"h2".to_vec()];
        let server =
            server_config_with_alpn(pki.leaf.cert_pem(), pki.leaf.key_pem(), &[ALPN_HTTP_1_1])
                .unwrap();
        // No protocol in common: the server refuses rather than guess.
        match handshake(client, server, "registry.example") {
            Err(rustls::Error::NoApplicationProtocol) => {}
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("expected the handshake to fail"),
        }
    }

    #[test]
    fn server_config_offers_h2_then_http_1_1() {
        let pki = pki(
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP256,
            &["registry.example"],
        );
        let (_, server) = configs(&pki);
        assert_eq!(
            server.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn bad_pem_inputs_are_typed_errors() {
        let pki = pki(
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP256,
            &["registry.example"],
        );
        assert!(matches!(
            server_config("", pki.leaf.key_pem()),
            Err(Error::NoCertificate { .. })
        ));
        assert!(matches!(
            server_config(pki.leaf.cert_pem(), "nothing"),
            Err(Error::Pem { .. })
        ));
        assert!(matches!(
            client_config_trusting("nothing here"),
            Err(Error::NoCertificate { .. })
        ));
        // A key that does not belong to the certificate.
        let other = LeafCertificate::issue(&pki.ca, &LeafOptions::default()).unwrap();
        assert!(matches!(
            server_config(pki.leaf.cert_pem(), other.key_pem()),
            Err(Error::Tls(_))
        ));
    }
}
