//! Short-lived bearer tokens: a JWT (HS256) signed with a key made at start-up, carrying
//! the user, the audience (service), an expiry and the granted scopes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::scope::ResourceAccess;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user name; empty for anonymous tokens.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    pub access: Vec<ResourceAccess>,
}

/// Why a token was refused. Deliberately without the token text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is for another service")]
    WrongAudience,
}

/// Signs and verifies tokens with one per-instance random key.
pub struct TokenSigner {
    key: [u8; 32],
    issuer: String,
}

impl TokenSigner {
    pub fn random(issuer: impl Into<String>) -> Self {
        TokenSigner {
            key: rand::random(),
            issuer: issuer.into(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    pub fn issue(&self, subject: &str, audience: &str, lifetime: Duration, access: Vec<ResourceAccess>) -> (String, Claims) {
        let now = unix_now();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: audience.to_owned(),
            exp: now + lifetime.as_secs(),
            nbf: now.saturating_sub(5),
            iat: now,
            jti: format!("{:032x}", rand::random::<u128>()),
            access,
        };
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = B64.encode(serde_json::to_vec(&claims).expect("claims serialise"));
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        (format!("{signing_input}.{sig}"), claims)
    }

    pub fn verify(&self, token: &str, audience: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, audience, unix_now())
    }

    fn verify_at(&self, token: &str, audience: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        // Constant-time comparison of the signature.
        mac.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = B64
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.exp <= now || claims.nbf > now + 5 {
            return Err(TokenError::Expired);
        }
        if claims.aud != audience {
            return Err(TokenError::WrongAudience);
        }
        Ok(claims)
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scope::parse_scope;

    #[test]
    fn tokens_verify_only_when_untouched_and_fresh() {
        let signer = TokenSigner::random("specreg");
        let access = vec![parse_scope("repository:a:pull").unwrap()];
        let (token, claims) = signer.issue("zuul", "svc", Duration::from_secs(60), access);
        assert_eq!(signer.verify(&token, "svc").unwrap(), claims);
        assert_eq!(signer.verify(&token, "other"), Err(TokenError::WrongAudience));
        assert_eq!(signer.verify_at(&token, "svc", claims.exp), Err(TokenError::Expired));

        // Another instance's key: forged.
        let other = TokenSigner::random("specreg");
        assert_eq!(other.verify(&token, "svc"), Err(TokenError::BadSignature));

        // A payload swapped for one granting push keeps the old signature: refused.
        let mut forged_claims = claims.clone();
        forged_claims.access = vec![parse_scope("repository:a:push").unwrap()];
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], B64.encode(serde_json::to_vec(&forged_claims).unwrap()), parts[2]);
        assert_eq!(signer.verify(&forged, "svc"), Err(TokenError::BadSignature));

        for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.AAAA"] {
            assert!(signer.verify(junk, "svc").is_err(), "{junk}");
        }
    }
}
