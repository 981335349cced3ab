//! The node-local mirror proxy: an overlay of the buildset registry on the real registries.
//!
//! Every client on a node (dockerd's `registry-mirrors`, registries.conf mirrors,
//! containerd's `hosts.toml`) points at this proxy on loopback. For a read (manifest,
//! blob, tag list, referrers) the proxy asks the buildset registry first, with its own
//! credentials; when the buildset registry has the content its answer is streamed back
//! byte-exact, otherwise the original request goes to the image's upstream registry, with
//! the client's own headers, and that answer is streamed back untouched (401 challenges
//! and redirects included, so the client's token dance with the real registry works).
//! Pushes go to the buildset registry. See [`mapping`] for how a path names a registry
//! and a repository.
//!
//! With [`ProxyConfig::intercept`] the proxy also stands in for whole registry hosts
//! (`quay.io`) on a second, TLS-only listener that `/etc/hosts` points them at: each host's
//! own leaf by SNI ([`intercept`]), the same overlay for pulls, and everything else
//! (pushes, token endpoints) passed to the real host untouched. The real host is resolved
//! past `/etc/hosts` (see `resolve`), so the proxy never calls itself.
//!
//! ```no_run
//! # async fn demo() -> Result<(), specreg_shim::proxy::ProxyError> {
//! use specreg_registry::auth::Secret;
//! use specreg_shim::proxy::{BuildsetTarget, Proxy, ProxyConfig};
//!
//! let buildset = BuildsetTarget {
//!     url: "https://buildset.example:5000".into(),
//!     username: "zuul".into(),
//!     password: Secret::new("pw"),
//!     ca_pem: None,
//! };
//! let proxy = Proxy::bind(ProxyConfig::new("127.0.0.1:0".parse().unwrap(), buildset)).await?;
//! println!("mirror on {}", proxy.local_addr());
//! proxy.run_until(std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

mod client;
mod forward;
pub mod intercept;
mod intercepted;
pub mod mapping;
mod resolve;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::HeaderValue;
use specreg_registry::auth::Secret;
use tokio::net::TcpListener;

pub use client::{Endpoint, Upstreams, DOCKER_HUB_API};
pub use intercept::InterceptedHost;

/// Body of every request and response the proxy sends.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Blobs of at least this many bytes are handed off by redirect (see
/// [`ProxyConfig::blob_redirects`]). Relaying a smaller one on the proxy's open connection
/// costs well under a millisecond; a redirect costs the client a second round trip and often
/// a new TLS connection, several milliseconds on a busy node.
pub const DEFAULT_REDIRECT_MIN_SIZE: u64 = 1 << 20;

/// The buildset registry and the credentials the proxy uses for it.
#[derive(Debug, Clone)]
pub struct BuildsetTarget {
    /// Base URL, `https://host:port` (`http://` for a plain-HTTP registry).
    pub url: String,
    pub username: String,
    pub password: Secret,
    /// The CA to trust for it (PEM), in addition to the system's.
    pub ca_pem: Option<String>,
}

/// Everything the proxy is told.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where to listen; loopback. Port 0 picks one ([`Proxy::local_addr`] tells which).
    pub listen: SocketAddr,
    /// Serve TLS with this (a node-local leaf); plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub buildset: BuildsetTarget,
    /// Per-registry upstream base URLs (`("docker.io", "https://mirror.example:5000")`).
    /// By default docker.io goes to `https://registry-1.docker.io` and any other registry
    /// `H` to `https://H`.
    pub upstreams: Vec<(String, String)>,
    /// An extra CA (PEM) to trust for upstreams, besides the system's.
    pub upstream_ca_pem: Option<String>,
    /// Answer a miss with a fast 404 (`MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`, `NAME_UNKNOWN`)
    /// instead of asking the upstream, so the client falls back by itself.
    pub no_upstream: bool,
    /// Name prefixes (`quay.io/org/`, `docker.io/library/foo`) whose misses are 404 errors
    /// naming the image, never forwarded upstream.
    pub authoritative: Vec<String>,
    /// How long a read waits for the buildset registry's or the upstream's response
    /// headers before answering 502.
    pub read_timeout: Duration,
    /// TLS interception: a second listener (port 443 of a loopback address that
    /// `/etc/hosts` gives these hosts) presenting each host's own leaf by SNI.
    pub intercept: Option<InterceptConfig>,
    /// Fixed addresses for upstream hosts (`quay.io` -> `192.0.2.7`), used before DNS.
    pub resolve: Vec<(String, IpAddr)>,
    /// Blob GETs that the buildset registry holds are answered with its `307` to a
    /// short-lived signed URL of the blob, so the client fetches the bytes straight from the
    /// buildset registry and the proxy stays out of the byte path (the client must trust
    /// the buildset registry's CA: `use` puts it beside the node CA). The value is the
    /// smallest blob redirected: below it, a new connection and a second round trip cost
    /// more than relaying the bytes on the proxy's warm one. `None`: the proxy streams every
    /// blob itself.
    pub blob_redirects: Option<u64>,
}

/// The interception listener.
#[derive(Debug, Clone)]
pub struct InterceptConfig {
    /// `127.x.y.z:443`.
    pub listen: SocketAddr,
    pub hosts: Vec<InterceptedHost>,
}

impl ProxyConfig {
    /// Plain HTTP on `listen`, real upstreams, no authoritative prefixes.
    pub fn new(listen: SocketAddr, buildset: BuildsetTarget) -> Self {
        ProxyConfig {
            listen,
            tls: None,
            buildset,
            upstreams: Vec::new(),
            upstream_ca_pem: None,
            no_upstream: false,
            authoritative: Vec::new(),
            read_timeout: Duration::from_secs(30),
            intercept: None,
            resolve: Vec::new(),
            blob_redirects: Some(DEFAULT_REDIRECT_MIN_SIZE),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("invalid {what} URL {url:?}: {reason}")]
    Url { what: String, url: String, reason: String },
    #[error("invalid CA certificates for {what}: {reason}")]
    Ca { what: String, reason: String },
    #[error("invalid registry host {0:?}")]
    Registry(String),
    #[error("the buildset registry username {0:?} cannot be sent in HTTP Basic (it holds ':' or a control character)")]
    Username(String),
    #[error("TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A bound, not yet running proxy.
pub struct Proxy {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<forward::State>,
    intercept: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
}

impl Proxy {
    /// Checks the configuration, builds the client side and binds the listener.
    pub async fn bind(cfg: ProxyConfig) -> Result<Proxy, ProxyError> {
        let buildset = Endpoint::parse("buildset registry", &cfg.buildset.url)?;
        let upstreams = Upstreams::new(&cfg.upstreams)?;
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if let Some(pem) = &cfg.buildset.ca_pem {
            extra.push(("the buildset registry", pem));
        }
        if let Some(pem) = &cfg.upstream_ca_pem {
            extra.push(("upstreams", pem));
        }
        let roots = client::roots(&extra)?;
        let intercepted: Vec<String> = cfg
            .intercept
            .iter()
            .flat_map(|i| i.hosts.iter().map(|h| h.host.to_ascii_lowercase()))
            .collect();
        let own = cfg.intercept.as_ref().map(|i| i.listen.ip());
        let resolver = resolve::UpstreamResolver::new(&cfg.resolve, &intercepted, own);
        let http = client::http_client(roots, resolver)?;
        let state = forward::State {
            client: http,
            buildset,
            buildset_auth: basic_auth(&cfg.buildset.username, &cfg.buildset.password)?,
            upstreams,
            no_upstream: cfg.no_upstream,
            authoritative: cfg.authoritative.clone(),
            read_timeout: cfg.read_timeout,
            intercepted,
            blob_redirects: cfg.blob_redirects.map(HeaderValue::from),
        };
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ProxyError::Bind { addr: cfg.listen, source })?;
        tracing::info!(
            listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            tls = cfg.tls.is_some(),
            buildset = %state.buildset,
            no_upstream = cfg.no_upstream,
            "mirror proxy bound"
        );
        let intercept = match &cfg.intercept {
            None => None,
            Some(i) => {
                let tls = Arc::new(intercept::server_config(&i.hosts)?);
                let l = TcpListener::bind(i.listen)
                    .await
                    .map_err(|source| ProxyError::Bind { addr: i.listen, source })?;
                tracing::info!(listen = %i.listen, hosts = ?state.intercepted, "interception listener bound");
                Some((l, tokio_rustls::TlsAcceptor::from(tls)))
            }
        };
        Ok(Proxy {
            listener,
            tls: cfg.tls.map(tokio_rustls::TlsAcceptor::from),
            state: Arc::new(state),
            intercept,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The interception listener's address, when there is one.
    pub fn intercept_addr(&self) -> Option<SocketAddr> {
        self.intercept.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then stops accepting (open connections end with
    /// the runtime).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let state = self.state.clone();
        let handler = move |req| {
            let state = state.clone();
            async move { forward::handle(&state, req).await }
        };
        let mirror = specreg_registry::server::listen::accept_loop(&self.listener, self.tls.clone(), handler, stopped(stop_rx.clone()));
        let intercepting = async {
            if let Some((listener, tls)) = &self.intercept {
                let state = self.state.clone();
                let handler = move |req| {
                    let state = state.clone();
                    async move { intercepted::handle(&state, req).await }
                };
                specreg_registry::server::listen::accept_loop(listener, Some(tls.clone()), handler, stopped(stop_rx.clone())).await
            }
        };
        let signal = async {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        tokio::join!(mirror, intercepting, signal);
    }
}

/// `Basic base64(user:password)`, marked sensitive so it never shows in a debug dump.
fn basic_auth(username: &str, password: &Secret) -> Result<HeaderValue, ProxyError> {
    if username.contains(':') || username.chars().any(char::is_control) {
        return Err(ProxyError::Username(username.to_owned()));
    }
    let encoded = B64.encode(format!("{username}:{}", password.expose()));
    let mut v = HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is a valid header value");
    v.set_sensitive(true);
    Ok(v)
}
