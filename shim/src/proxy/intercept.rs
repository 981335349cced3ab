//! The interception listener's TLS side: one leaf per intercepted host, chosen by SNI.
//!
//! `/etc/hosts` sends `quay.io`, `gcr.io`, ... to one loopback address where the proxy
//! listens on 443. Each host gets a leaf for exactly its name, signed by the node CA that
//! `/etc/docker/certs.d/<host>/ca.crt` trusts; a client asking for any other name (or none)
//! gets no certificate and the handshake fails, so the listener never passes for a host it
//! does not stand in for.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::ProxyError;

/// One intercepted host and the certificate presented for it.
#[derive(Clone)]
pub struct InterceptedHost {
    /// Lower-case host name, no port (`quay.io`).
    pub host: String,
    /// Leaf first, then the node CA.
    pub chain_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for InterceptedHost {
    // The key never shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterceptedHost").field("host", &self.host).finish_non_exhaustive()
    }
}

/// Picks the leaf by the SNI name.
#[derive(Debug)]
struct BySni {
    keys: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.trim_end_matches('.').to_ascii_lowercase();
        let found = self.keys.get(&name).cloned();
        if found.is_none() {
            tracing::info!(sni = %name, "TLS client asked the interception listener for a host it does not serve");
        }
        found
    }
}

fn certified_key(h: &InterceptedHost, provider: &CryptoProvider) -> Result<CertifiedKey, ProxyError> {
    let bad = |reason: String| ProxyError::Ca { what: format!("the interception leaf for {}", h.host), reason };
    let chain = CertificateDer::pem_slice_iter(h.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if chain.is_empty() {
        return Err(bad("no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(h.key_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let signer = provider.key_provider.load_private_key(key)?;
    Ok(CertifiedKey::new(chain, signer))
}

/// A server config presenting each host's leaf by SNI (ALPN h2 and http/1.1, as docker's
/// Go client offers both).
pub fn server_config(hosts: &[InterceptedHost]) -> Result<rustls::ServerConfig, ProxyError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut keys = HashMap::new();
    for h in hosts {
        keys.insert(h.host.to_ascii_lowercase(), Arc::new(certified_key(h, &provider)?));
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { keys }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The host a request on the interception listener is for: its `Host` header (HTTP/1.1) or
/// `:authority` (HTTP/2), lower case, port dropped.
pub fn request_host<B>(req: &http::Request<B>) -> Option<String> {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.host().to_owned())
        .or_else(|| {
            let h = req.headers().get(http::header::HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = h.parse().ok()?;
            Some(authority.host().to_owned())
        })?;
    Some(raw.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_host_comes_from_host_or_authority() {
        let r = http::Request::get("/v2/").header("host", "Quay.IO:443").body(()).unwrap();
        assert_eq!(request_host(&r).as_deref(), Some("quay.io"));
        let r = http::Request::get("https://gcr.io/v2/").body(()).unwrap();
        assert_eq!(request_host(&r).as_deref(), Some("gcr.io"));
        let r = http::Request::get("/v2/").body(()).unwrap();
        assert_eq!(request_host(&r), None);
    }
}
