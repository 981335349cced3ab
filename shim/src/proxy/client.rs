//! The proxy's client side: where the buildset registry and each upstream live, and one
//! pooled HTTP/1.1 + HTTP/2 client over rustls for all of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::mapping::{canonical_registry, DOCKER_IO};
use super::resolve::UpstreamResolver;
use super::{Body, ProxyError};

/// Docker Hub's registry API host.
pub const DOCKER_HUB_API: &str = "https://registry-1.docker.io";

/// How long to wait for a TCP connection to the buildset registry or an upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle pooled connections are closed after this.
const POOL_IDLE: Duration = Duration::from_secs(90);

pub type HttpClient = Client<HttpsConnector<HttpConnector<UpstreamResolver>>, Body>;

/// A registry's base URL: scheme, authority and an optional path prefix (no trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    scheme: Scheme,
    authority: Authority,
    base_path: String,
}

impl Endpoint {
    /// Parses `https://host[:port][/prefix]`; a bare `host[:port]` means https.
    pub fn parse(what: &str, url: &str) -> Result<Endpoint, ProxyError> {
        let bad = |reason: &str| ProxyError::Url {
            what: what.to_owned(),
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = url.trim();
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_owned()
        } else {
            format!("https://{trimmed}")
        };
        let uri: Uri = with_scheme.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(bad("the scheme must be http or https"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials do not belong in the URL"));
        }
        if uri.query().is_some() {
            return Err(bad("a query is not allowed"));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Endpoint {
            scheme,
            authority,
            base_path,
        })
    }

    /// The URI of `path_and_query` (which starts with `/v2`) on this endpoint.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.base_path, path_and_query))
            .build()
    }

    /// `scheme://authority`, the origin other URLs are compared with.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// A relative `Location`/`Link` target made absolute on this endpoint (a path starting
    /// with `/` is relative to the host, as in HTTP).
    pub fn absolutize(&self, target: &str) -> Option<String> {
        target.starts_with('/').then(|| format!("{}{}", self.origin(), target))
    }

    /// An absolute URL on this endpoint turned into its path (and query), so a client
    /// follows it back through the proxy. `None` for anything else.
    pub fn relativize(&self, target: &str) -> Option<String> {
        let rest = target.strip_prefix(&self.origin())?;
        let rest = rest.strip_prefix(&self.base_path)?;
        rest.starts_with('/').then(|| rest.to_owned())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.origin(), self.base_path)
    }
}

/// Which endpoint serves each registry's misses.
#[derive(Debug, Clone)]
pub struct Upstreams {
    overrides: HashMap<String, Endpoint>,
}

impl Upstreams {
    pub fn new(overrides: &[(String, String)]) -> Result<Upstreams, ProxyError> {
        let mut map = HashMap::new();
        for (registry, url) in overrides {
            let registry = canonical_registry(registry);
            if registry.is_empty() || registry.contains('/') {
                return Err(ProxyError::Registry(registry));
            }
            let endpoint = Endpoint::parse(&format!("upstream for {registry}"), url)?;
            map.insert(registry, endpoint);
        }
        Ok(Upstreams { overrides: map })
    }

    /// The configured upstream, else the registry itself (Docker Hub's API host for docker.io).
    pub fn for_registry(&self, registry: &str) -> Result<Endpoint, ProxyError> {
        if let Some(e) = self.overrides.get(registry) {
            return Ok(e.clone());
        }
        if registry == DOCKER_IO {
            return Endpoint::parse("upstream for docker.io", DOCKER_HUB_API);
        }
        Endpoint::parse(&format!("upstream for {registry}"), &format!("https://{registry}"))
    }
}

/// Adds every certificate of a PEM bundle to `roots`.
fn add_pem(roots: &mut RootCertStore, pem: &str, what: &str) -> Result<usize, ProxyError> {
    let bad = |reason: String| ProxyError::Ca {
        what: what.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in the PEM text".to_owned()));
    }
    let n = certs.len();
    for cert in certs {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    Ok(n)
}

/// The trust roots: the given CAs, plus the system's store (webpki's roots when the system
/// has none, as in a minimal container).
pub fn roots(extra: &[(&str, &str)]) -> Result<RootCertStore, ProxyError> {
    let mut roots = RootCertStore::empty();
    for (what, pem) in extra {
        add_pem(&mut roots, pem, what)?;
    }
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "reading the system's CA certificates");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::debug!("no system CA certificates; trusting the webpki roots");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    Ok(roots)
}

/// One client for the buildset registry and every upstream: keep-alive pools per host,
/// HTTP/2 where the server offers it by ALPN, plain HTTP for `http://` endpoints.
pub fn http_client(roots: RootCertStore, resolver: UpstreamResolver) -> Result<HttpClient, ProxyError> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        // HTTP/1.1 only: bulk blob bodies relay with less framing and flow-control work
        // than over HTTP/2, and every registry speaks it.
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .build(https))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_join() {
        let e = Endpoint::parse("x", "https://mirror.example:5000/").unwrap();
        assert_eq!(e.uri("/v2/a/manifests/1").unwrap().to_string(), "https://mirror.example:5000/v2/a/manifests/1");
        let e = Endpoint::parse("x", "mirror.example/prefix").unwrap();
        assert_eq!(e.uri("/v2/").unwrap().to_string(), "https://mirror.example/prefix/v2/");
        assert_eq!(e.relativize("https://mirror.example/prefix/v2/a"), Some("/v2/a".to_owned()));
        assert_eq!(e.relativize("https://other.example/prefix/v2/a"), None);
        assert_eq!(e.absolutize("/v2/b?x=1"), Some("https://mirror.example/v2/b?x=1".to_owned()));
        assert_eq!(e.absolutize("https://cdn.example/x"), None);
        assert!(Endpoint::parse("x", "ftp://a").is_err());
        assert!(Endpoint::parse("x", "https://u:p@a").is_err());
        assert!(Endpoint::parse("x", "https://a/?q").is_err());
    }

    #[test]
    fn upstreams_default_to_the_registry() {
        let u = Upstreams::new(&[("Docker.io".into(), "https://mirror.example:5000".into())]).unwrap();
        assert_eq!(u.for_registry("docker.io").unwrap().to_string(), "https://mirror.example:5000");
        assert_eq!(u.for_registry("quay.io").unwrap().to_string(), "https://quay.io");
        let u = Upstreams::new(&[]).unwrap();
        assert_eq!(u.for_registry("docker.io").unwrap().to_string(), DOCKER_HUB_API);
        assert_eq!(u.for_registry("localhost:5000").unwrap().to_string(), "https://localhost:5000");
        assert!(Upstreams::new(&[("a/b".into(), "https://x".into())]).is_err());
    }
}
