//! A typed async client for OCI distribution registries (specreg, distribution, Docker
//! Hub, quay.io ...), used by `specreg copy` and the Zuul transfer commands.
//!
//! # Using it
//!
//! ```no_run
//! # async fn demo() -> Result<(), specreg_registry::client::ClientError> {
//! use specreg_registry::client::{ClientOptions, Credentials, RegistryClient};
//! use specreg_registry::reference::{Reference, RepoName};
//!
//! let mut opts = ClientOptions::default();            // https, system + webpki roots
//! opts.credentials = Credentials::basic("zuul", "pw"); // or DockerConfig::load(..)?.lookup(host)?
//! opts.ca_pem = Some(std::fs::read_to_string("ca.pem").unwrap());
//! let reg = RegistryClient::new("127.0.0.1:5000", opts)?; // one per registry; cheap to clone
//! let repo = RepoName::parse("org/app").unwrap();
//! let m = reg.get_manifest(&repo, &Reference::parse("latest").unwrap()).await?;
//! let digest = reg.put_manifest(&repo, &Reference::parse("v2").unwrap(), &m.bytes, &m.media_type).await?;
//! # let _ = digest; Ok(()) }
//! ```
//!
//! * **One client per registry**: it keeps the connection pool, the auth scheme learnt
//!   from the registry's first challenge, and bearer tokens cached per scope until they
//!   expire. Every operation takes the repository, so one client serves many repos.
//! * **Auth**: anonymous until challenged. A `Basic` challenge is answered with the
//!   credentials; a `Bearer` challenge starts the token flow (GET the realm with Basic
//!   credentials or anonymously, or the OAuth2 POST form for identity tokens) for scope
//!   `repository:<repo>:pull` or `pull,push` (plus `repository:<from>:pull` for mounts).
//! * **Manifests** ([`RegistryClient::get_manifest`], `head_manifest`, `put_manifest`,
//!   `delete_manifest`, `list_tags`): bytes are kept exactly as served, so a copy keeps
//!   the digest. A manifest fetched by digest is verified.
//! * **Blobs** ([`RegistryClient::blob_size`], `get_blob`, `push_blob`): downloads are a
//!   byte stream that checks size and digest as it goes (the error arrives as the stream's
//!   last item; `get_blob_for_upload` checks only the size, for bytes that go straight
//!   into a registry that verifies them); uploads take a [`BlobSource`] that can be
//!   reopened, because a failed upload restarts from the beginning. `push_blob` tries a cross-repo mount first when
//!   told where the blob lives, and uploads monolithically (POST + streamed PUT) or in
//!   PATCH chunks when [`ClientOptions::chunk_size`] is set or the registry refuses a
//!   monolithic body with 413.
//! * **Retries**: 408, 429, 5xx and dropped connections are retried with backoff
//!   ([`RetryPolicy`]); a request whose body is a stream is not, its caller restarts it.
//! * **Errors** are [`ClientError`]s carrying the URL (query stripped) and the registry's
//!   JSON error codes; credentials never appear in them or in logs.

mod auth;
mod blobs;
pub mod challenge;
pub mod credentials;
mod error;
pub mod link;
mod manifests;
pub mod retry;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Method, Url};

pub use auth::Scope;
pub use blobs::{verified as verified_stream, BlobPush, BlobSource, ByteStream};
pub use credentials::{read_secret_file, Credentials, DockerConfig};
pub use error::{ClientError, RemoteError, RemoteErrors};
pub use manifests::{Manifest, ManifestHead, MANIFEST_ACCEPT};
pub use retry::RetryPolicy;

/// `http` only when asked for: plain-HTTP registries on loopback or `--insecure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    #[default]
    Https,
    Http,
}

/// How to reach and authenticate to one registry.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub scheme: Scheme,
    /// Extra CA certificates (PEM) to trust, e.g. a buildset registry's.
    pub ca_pem: Option<String>,
    pub credentials: Credentials,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    /// Upload blobs in PATCH chunks of this size instead of one streamed PUT.
    pub chunk_size: Option<u64>,
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            scheme: Scheme::Https,
            ca_pem: None,
            credentials: Credentials::Anonymous,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(30),
            chunk_size: None,
            user_agent: concat!("specreg/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// A client for one registry. Clones share the connection pool and token cache.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// `host[:port]` as the user named it (for messages and credential lookup).
    host: String,
    base: Url,
    http: reqwest::Client,
    credentials: Credentials,
    retry: RetryPolicy,
    chunk_size: Option<u64>,
    auth: Mutex<auth::AuthState>,
}

/// The host a registry name is served from: Docker Hub's API lives elsewhere.
pub fn api_host(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").field("base", &self.inner.base.as_str()).finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// `host` is `host[:port]` (IPv6 in brackets), or a `http://`/`https://` URL whose
    /// scheme then wins over `options.scheme`.
    pub fn new(host: &str, options: ClientOptions) -> Result<Self, ClientError> {
        let (scheme, bare) = if let Some(h) = host.strip_prefix("http://") {
            (Scheme::Http, h)
        } else if let Some(h) = host.strip_prefix("https://") {
            (Scheme::Https, h)
        } else {
            (options.scheme, host)
        };
        let bare = bare.trim_end_matches('/');
        if bare.is_empty() || bare.contains('/') || bare.contains('@') {
            return Err(ClientError::Config(format!("{host:?} is not a registry host[:port]")));
        }
        let scheme_str = if scheme == Scheme::Http { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme_str}://{}/", api_host(bare)))
            .map_err(|e| ClientError::Config(format!("registry {host:?}: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .user_agent(options.user_agent.clone())
            .connect_timeout(options.connect_timeout)
            .pool_max_idle_per_host(32)
            .tcp_nodelay(true)
            .no_proxy_for_loopback(&base);
        if let Some(pem) = &options.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| ClientError::Config(format!("CA certificates for {host}: {e}")))?;
            if certs.is_empty() {
                return Err(ClientError::Config(format!("CA file for {host} holds no certificate")));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build().map_err(|e| ClientError::Config(format!("HTTP client for {host}: {e}")))?;
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                host: bare.to_owned(),
                base,
                http,
                credentials: options.credentials,
                retry: options.retry,
                chunk_size: options.chunk_size,
                auth: Mutex::new(auth::AuthState::default()),
            }),
        })
    }

    /// The registry as named (`host[:port]`), e.g. for image references in reports.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// `GET /v2/`: reachable, speaks the API, and the credentials (if any) are accepted.
    pub async fn ping(&self) -> Result<(), ClientError> {
        let url = self.url("v2/")?;
        let resp = self.send(Method::GET, url, HeaderMap::new(), None, &Scope::none()).await?;
        expect(resp, Method::GET, &[200]).await.map(drop)
    }

    fn url(&self, path: &str) -> Result<Url, ClientError> {
        self.inner
            .base
            .join(path)
            .map_err(|e| ClientError::Config(format!("{path}: {e}")))
    }

    /// Sends a request whose body (if any) can be replayed: answers auth challenges and
    /// retries transient failures.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Option<bytes::Bytes>,
        scope: &Scope,
    ) -> Result<reqwest::Response, ClientError> {
        let retry = &self.inner.retry;
        let mut attempt = 0u32;
        let mut challenged = false;
        loop {
            attempt += 1;
            let mut rb = self.inner.http.request(method.clone(), url.clone()).headers(headers.clone());
            if let Some(value) = self.authorization(scope).await? {
                rb = rb.header(AUTHORIZATION, value);
            }
            if let Some(b) = &body {
                rb = rb.body(b.clone());
            }
            match rb.send().await {
                Ok(resp) if resp.status() == 401 && !challenged => {
                    challenged = true;
                    if self.answer_challenge(resp.headers(), scope).await? {
                        continue;
                    }
                    return Ok(resp);
                }
                Ok(resp) if retry::retryable_status(resp.status().as_u16()) && attempt < retry.attempts => {
                    let wait = retry.delay(attempt, retry::retry_after(resp.headers()));
                    tracing::warn!(%method, url = %display_url(&url), status = resp.status().as_u16(), ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                }
                Ok(resp) => return Ok(resp),
                Err(e) if attempt < retry.attempts && transient_transport(&e) => {
                    let wait = retry.delay(attempt, None);
                    tracing::warn!(%method, url = %display_url(&url), error = %e, ?wait, "retrying after a connection error");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(transport(&method, &url, e)),
            }
        }
    }

    /// Sends a request with a one-shot (streamed) body: authorisation is prepared up
    /// front (the caller made an authorised request in the same scope just before), and
    /// nothing is retried here.
    pub(crate) async fn send_once(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: reqwest::Body,
        scope: &Scope,
    ) -> Result<reqwest::Response, ClientError> {
        let mut rb = self.inner.http.request(method.clone(), url.clone()).headers(headers).body(body);
        if let Some(value) = self.authorization(scope).await? {
            rb = rb.header(AUTHORIZATION, value);
        }
        rb.send().await.map_err(|e| transport(&method, &url, e))
    }
}

trait LoopbackNoProxy {
    fn no_proxy_for_loopback(self, base: &Url) -> Self;
}

impl LoopbackNoProxy for reqwest::ClientBuilder {
    /// A proxy from the environment must not capture loopback registries (tests, tunnels).
    fn no_proxy_for_loopback(self, base: &Url) -> Self {
        let loopback = match base.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            None => false,
        };
        if loopback {
            self.no_proxy()
        } else {
            self
        }
    }
}

fn transient_transport(e: &reqwest::Error) -> bool {
    // A builder or redirect-policy error will fail the same way again.
    !(e.is_builder() || e.is_redirect() || e.is_decode())
}

fn transport(method: &Method, url: &Url, e: reqwest::Error) -> ClientError {
    ClientError::Transport { method: method.to_string(), url: display_url(url), cause: e.without_url() }
}

/// A URL for messages: no query (upload state, presigned signatures) and no userinfo.
pub(crate) fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// Largest error body read for its JSON error codes.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The response if its status is one of `ok`, else a [`ClientError::Status`] carrying the
/// registry's error codes.
pub(crate) async fn expect(resp: reqwest::Response, method: Method, ok: &[u16]) -> Result<reqwest::Response, ClientError> {
    if ok.contains(&resp.status().as_u16()) {
        return Ok(resp);
    }
    Err(status_error(resp, &method).await)
}

pub(crate) async fn status_error(mut resp: reqwest::Response, method: &Method) -> ClientError {
    let status = resp.status().as_u16();
    let url = display_url(resp.url());
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ERROR_BODY {
            break;
        }
    }
    ClientError::Status { method: method.to_string(), url, status, errors: RemoteErrors::parse(&body) }
}

pub(crate) fn header_value(s: &str) -> Result<HeaderValue, ClientError> {
    HeaderValue::from_str(s).map_err(|_| ClientError::Config(format!("{s:?} cannot be sent in a header")))
}
