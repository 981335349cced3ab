//! Short-lived signed blob URLs: the registry's answer to "redirect me to the bytes".
//!
//! The node's mirror proxy asks for a blob with [`REDIRECT_HEADER`]; the registry, having
//! checked the proxy's credentials as for any pull, answers `307` with a URL of its own that
//! carries an expiry and an HMAC over (repository, digest, expiry). The container client
//! follows it straight to the registry, so the proxy leaves the byte path, and the URL opens
//! nothing else: one blob of one repository, for a few minutes, and only on this instance
//! (the key is random per process, like the token key).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::reference::{Digest, RepoName};

/// Request header by which a client (the mirror proxy) asks for a redirect instead of bytes.
/// Its value is the smallest blob size, in bytes, worth a redirect: a smaller blob is cheaper
/// to relay on the proxy's open connection than to fetch over a new one.
pub const REDIRECT_HEADER: &str = "specreg-blob-redirect";

/// Whether a blob of `size` bytes is answered by redirect, given the request's
/// [`REDIRECT_HEADER`] value. A value that is not a number asks for every blob.
pub fn wants_redirect(header: Option<&str>, size: u64) -> bool {
    match header {
        None => false,
        Some(v) => size >= v.trim().parse::<u64>().unwrap_or(0),
    }
}
/// Query parameters of a signed URL.
pub const EXPIRES_PARAM: &str = "expires";
pub const SIGNATURE_PARAM: &str = "signature";
/// How long a signed URL opens its blob: long enough for a client to follow the redirect
/// (and retry once), short enough that a leaked URL is soon worthless.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

type HmacSha256 = Hmac<Sha256>;

/// Why a signed URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobUrlError {
    #[error("the signed blob URL lacks its expiry or signature")]
    Incomplete,
    #[error("the signed blob URL has expired")]
    Expired,
    #[error("the signed blob URL's signature does not match")]
    BadSignature,
}

/// Signs and checks blob URLs with one per-instance random key.
pub struct BlobUrlSigner {
    key: [u8; 32],
    lifetime: Duration,
}

impl BlobUrlSigner {
    pub fn random() -> Self {
        BlobUrlSigner {
            key: rand::random(),
            lifetime: DEFAULT_LIFETIME,
        }
    }

    fn mac(&self, repo: &RepoName, digest: &Digest, expires: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        // Newline-separated: neither a repository name nor a digest can hold one.
        mac.update(format!("blob\n{repo}\n{digest}\n{expires}").as_bytes());
        mac
    }

    /// The query string (without `?`) of a URL opening `repo`'s blob `digest` until
    /// `now + lifetime`.
    pub fn sign(&self, repo: &RepoName, digest: &Digest, now: SystemTime) -> String {
        let expires = unix_seconds(now) + self.lifetime.as_secs();
        let sig = B64.encode(self.mac(repo, digest, expires).finalize().into_bytes());
        format!("{EXPIRES_PARAM}={expires}&{SIGNATURE_PARAM}={sig}")
    }

    /// Checks the `expires` and `signature` parameters of a request for `repo`'s `digest`.
    pub fn verify(
        &self,
        repo: &RepoName,
        digest: &Digest,
        expires: Option<&str>,
        signature: Option<&str>,
        now: SystemTime,
    ) -> Result<(), BlobUrlError> {
        let (Some(expires), Some(signature)) = (expires, signature) else {
            return Err(BlobUrlError::Incomplete);
        };
        let expires: u64 = expires.parse().map_err(|_| BlobUrlError::BadSignature)?;
        let sig = B64.decode(signature).map_err(|_| BlobUrlError::BadSignature)?;
        // The MAC first, so a forged expiry cannot be told apart from a forged signature.
        self.mac(repo, digest, expires)
            .verify_slice(&sig)
            .map_err(|_| BlobUrlError::BadSignature)?;
        if unix_seconds(now) > expires {
            return Err(BlobUrlError::Expired);
        }
        Ok(())
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
        query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    #[test]
    fn signed_url_opens_exactly_its_blob_until_it_expires() {
        let signer = BlobUrlSigner::random();
        let repo: RepoName = "org/app".parse().unwrap();
        let other_repo: RepoName = "org/other".parse().unwrap();
        let digest: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let other_digest: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
        let now = SystemTime::now();
        let q = signer.sign(&repo, &digest, now);
        let (e, s) = (param(&q, EXPIRES_PARAM), param(&q, SIGNATURE_PARAM));

        assert_eq!(signer.verify(&repo, &digest, e, s, now), Ok(()));
        assert_eq!(signer.verify(&other_repo, &digest, e, s, now), Err(BlobUrlError::BadSignature));
        assert_eq!(signer.verify(&repo, &other_digest, e, s, now), Err(BlobUrlError::BadSignature));
        let later = now + DEFAULT_LIFETIME + Duration::from_secs(2);
        assert_eq!(signer.verify(&repo, &digest, e, s, later), Err(BlobUrlError::Expired));
        // A pushed-out expiry breaks the signature.
        let forged = (unix_seconds(now) + 86_400).to_string();
        assert_eq!(signer.verify(&repo, &digest, Some(&forged), s, now), Err(BlobUrlError::BadSignature));
        assert_eq!(signer.verify(&repo, &digest, e, None, now), Err(BlobUrlError::Incomplete));
        // Another instance's key opens nothing here.
        let q2 = BlobUrlSigner::random().sign(&repo, &digest, now);
        assert_eq!(
            signer.verify(&repo, &digest, param(&q2, EXPIRES_PARAM), param(&q2, SIGNATURE_PARAM), now),
            Err(BlobUrlError::BadSignature)
        );
    }

    #[test]
    fn the_header_value_is_the_smallest_size_redirected() {
        assert!(!wants_redirect(None, 1 << 30));
        assert!(wants_redirect(Some("1048576"), 1 << 20));
        assert!(!wants_redirect(Some("1048576"), (1 << 20) - 1));
        // Anything else (an older proxy sent "1") asks for every blob.
        assert!(wants_redirect(Some("yes"), 0));
        assert!(wants_redirect(Some("1"), 90));
    }
}
