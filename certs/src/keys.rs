//! Private key generation: ECDSA P-256 through rcgen/ring, RSA through the `rsa` crate
//! (ring can sign with RSA keys but cannot generate them).

use std::fmt;

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::EncodePrivateKey;
use rsa::traits::PublicKeyParts;
use rustls_pki_types::PrivatePkcs8KeyDer;

use crate::error::{Error, Result};

/// The kind of key a certificate is issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyAlgorithm {
    /// ECDSA on the NIST P-256 curve, signing with SHA-256. Fast and small; the default.
    #[default]
    EcdsaP256,
    /// RSA with a 2048-bit modulus, PKCS#1 v1.5 signatures with SHA-256.
    Rsa2048,
    /// RSA with a 3072-bit modulus, PKCS#1 v1.5 signatures with SHA-256.
    Rsa3072,
}

impl KeyAlgorithm {
    /// The RSA modulus size in bits, or `None` for non-RSA algorithms.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyAlgorithm::EcdsaP256 => None,
            KeyAlgorithm::Rsa2048 => Some(2048),
            KeyAlgorithm::Rsa3072 => Some(3072),
        }
    }

    /// The kind of an existing key pair, or `None` if it is none of the supported kinds.
    pub(crate) fn of(key: &KeyPair) -> Option<Self> {
        if key.algorithm() == &PKCS_ECDSA_P256_SHA256 {
            return Some(KeyAlgorithm::EcdsaP256);
        }
        if key.algorithm() == &PKCS_RSA_SHA256 {
            return match rsa_modulus_bits(key) {
                Some(2048) => Some(KeyAlgorithm::Rsa2048),
                Some(3072) => Some(KeyAlgorithm::Rsa3072),
                _ => None,
            };
        }
        None
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            KeyAlgorithm::EcdsaP256 => "ECDSA P-256",
            KeyAlgorithm::Rsa2048 => "RSA 2048",
            KeyAlgorithm::Rsa3072 => "RSA 3072",
        };
        f.write_str(name)
    }
}

/// Generates a fresh key pair of the requested kind.
pub(crate) fn generate_key_pair(algorithm: KeyAlgorithm) -> Result<KeyPair> {
    match algorithm.rsa_bits() {
        None => Ok(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?),
        Some(bits) => generate_rsa_key_pair(bits),
    }
}

fn generate_rsa_key_pair(bits: usize) -> Result<KeyPair> {
    let mut rng = getrandom::SysRng;
    let private_key =
        rsa::PrivateKey::new(&mut rng, bits).map_err(|e| Error::RsaKeyGeneration(e.to_string()))?;
    let pkcs8 = private_key
        .to_pkcs8_der()
        .map_err(|e| Error::RsaKeyGeneration(e.to_string()))?;
    let der = PrivatePkcs8KeyDer::from(pkcs8.as_bytes());
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(
        &der,
        &PKCS_RSA_SHA256,
    )?)
}

/// Parses a PKCS#8 private key from PEM; ECDSA P-256 and RSA are recognised.
pub(crate) fn key_pair_from_pem(pem: &str) -> Result<KeyPair> {
    Ok(KeyPair::from_pem(pem)?)
}

/// The modulus length of an RSA key pair, read from its public key.
fn rsa_modulus_bits(key: &KeyPair) -> Option<usize> {
    // ring exposes an RSA public key as a PKCS#1 RSAPublicKey structure.
    let public = rsa::PublicKey::from_pkcs1_der(key.public_key_raw()).ok()?;
    Some(public.size() * 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_ecdsa_p256() {
        assert_eq!(KeyAlgorithm::default(), KeyAlgorithm::EcdsaP256);
    }

    #[test]
    fn generated_ecdsa_key_matches_its_kind_and_round_trips_through_pem() {
        let key = generate_key_pair(KeyAlgorithm::EcdsaP256).unwrap();
        assert_eq!(KeyAlgorithm::of(&key), Some(KeyAlgorithm::EcdsaP256));
        let reloaded = key_pair_from_pem(&key.serialize_pem()).unwrap();
        assert_eq!(reloaded.public_key_raw(), key.public_key_raw());
        assert_eq!(KeyAlgorithm::of(&reloaded), Some(KeyAlgorithm::EcdsaP256));
    }

    #[test]
    fn generated_rsa_key_has_the_requested_size_and_round_trips_through_pem() {
        let key = generate_key_pair(KeyAlgorithm::Rsa2048).unwrap();
        assert_eq!(KeyAlgorithm::of(&key), Some(KeyAlgorithm::Rsa2048));
        let pem = key.serialize_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let reloaded = key_pair_from_pem(&pem).unwrap();
        assert_eq!(reloaded.public_key_raw(), key.public_key_raw());
        assert_eq!(KeyAlgorithm::of(&reloaded), Some(KeyAlgorithm::Rsa2048));
    }

    #[test]
    fn other_key_kinds_are_not_recognised() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert_eq!(KeyAlgorithm::of(&key), None);
    }

    #[test]
    fn garbage_pem_is_an_error() {
        assert!(key_pair_from_pem("not a key").is_err());
    }
}
