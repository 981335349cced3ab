//! Test harness for the mirror proxy: in-process specreg registries on loopback (the
//! buildset registry, TLS with its own CA and a write user; a stand-in upstream, TLS with
//! another CA), images pushed over HTTP, and the proxy in front of them.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use sha2::Digest as _;
use specreg_certs::{CaOptions, CertStore, LeafOptions};
use specreg_registry::auth::{AccessLevel, AuthConfig, CredentialAuth, Secret, User, UserDb};
use specreg_registry::{Server, ServerConfig};
use specreg_shim::proxy::{BuildsetTarget, Proxy, ProxyConfig};
use tokio::task::JoinHandle;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const USER: &str = "writer";
pub const PASSWORD: &str = "s3cret:with-colon";

pub fn sha256(data: &[u8]) -> String {
    let d = sha2::Sha256::digest(data);
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// TLS material for a server on 127.0.0.1 / localhost, in its own directory.
pub struct Tls {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
    pub dir: tempfile::TempDir,
}

impl Tls {
    pub fn new() -> Tls {
        let dir = tempfile::tempdir().unwrap();
        let leaf = LeafOptions {
            subject_alt_names: vec!["127.0.0.1".into(), "localhost".into()],
            ..LeafOptions::default()
        };
        let issued = CertStore::open_or_create(dir.path(), &CaOptions::default(), &leaf).unwrap();
        Tls {
            ca_pem: issued.ca.cert_pem().to_owned(),
            server: Arc::new(issued.server_config().unwrap()),
            dir,
        }
    }

    /// A directory holding `ca.crt`, for skopeo's `--cert-dir`.
    pub fn cert_dir(&self) -> PathBuf {
        let d = self.dir.path().join("client-certs");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ca.crt"), &self.ca_pem).unwrap();
        d
    }
}

/// An in-process specreg registry.
pub struct Registry {
    pub addr: SocketAddr,
    pub tls: Option<Tls>,
    pub authenticated: bool,
    _data: tempfile::TempDir,
    task: JoinHandle<()>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Registry {
    /// `tls`: serve HTTPS with a fresh CA; `auth`: require the write user for everything.
    pub async fn start(tls: bool, auth: bool) -> Registry {
        let data = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::new(data.path());
        cfg.fsync = false;
        let tls = tls.then(Tls::new);
        cfg.tls = tls.as_ref().map(|t| t.server.clone());
        if auth {
            let users = UserDb::new(vec![User {
                name: USER.into(),
                password: Secret::new(PASSWORD),
                access: AccessLevel::Write,
            }]);
            let mut ac = AuthConfig::new(users);
            ac.tls = tls.is_some();
            cfg.authorizer = Arc::new(CredentialAuth::new(ac));
        }
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), cfg).await.unwrap();
        let addr = server.local_addr();
        let task = tokio::spawn(server.run());
        Registry {
            addr,
            tls,
            authenticated: auth,
            _data: data,
            task,
        }
    }

    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub fn ca_pem(&self) -> Option<String> {
        self.tls.as_ref().map(|t| t.ca_pem.clone())
    }

    /// A request with the write user's Basic credentials when the registry wants them.
    pub fn req(&self, client: &Client, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = client.request(method, self.url(path));
        if self.authenticated {
            rb.basic_auth(USER, Some(PASSWORD))
        } else {
            rb
        }
    }

    pub async fn push_blob(&self, client: &Client, name: &str, data: Vec<u8>) -> String {
        let digest = sha256(&data);
        let r = self
            .req(client, Method::POST, &format!("/v2/{name}/blobs/uploads/?digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(data)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "blob push to {name}: {}", r.text().await.unwrap());
        digest
    }

    /// Pushes a one-layer image; returns it.
    pub async fn push_image(&self, client: &Client, name: &str, tag: &str, label: &str, layer_size: usize) -> Image {
        let layer: Vec<u8> = (0..layer_size).map(|i| (i % 251) as u8 ^ label.len() as u8).chain(label.bytes()).collect();
        let layer_digest = self.push_blob(client, name, layer.clone()).await;
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Labels": { "specimen": label } },
            "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        }))
        .unwrap();
        let config_digest = self.push_blob(client, name, config.clone()).await;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
            "layers": [{ "mediaType": OCI_LAYER, "digest": layer_digest, "size": layer.len() }],
        }))
        .unwrap();
        let r = self
            .req(client, Method::PUT, &format!("/v2/{name}/manifests/{tag}"))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "manifest push to {name}: {}", r.text().await.unwrap());
        Image {
            manifest_digest: sha256(&manifest),
            manifest,
            config_digest,
            config,
            layer_digest,
            layer,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Image {
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub config_digest: String,
    pub config: Vec<u8>,
    pub layer_digest: String,
    pub layer: Vec<u8>,
}

/// A test HTTP client trusting the given CAs, following no redirects, using no proxy.
pub fn client(cas: &[&str]) -> Client {
    client_with(cas, reqwest::redirect::Policy::none())
}

/// The same, following redirects as container clients do (dropping `Authorization` when
/// the host changes).
pub fn following_client(cas: &[&str]) -> Client {
    client_with(cas, reqwest::redirect::Policy::limited(5))
}

fn client_with(cas: &[&str], redirects: reqwest::redirect::Policy) -> Client {
    let mut b = Client::builder().no_proxy().redirect(redirects);
    for ca in cas {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// A running proxy.
pub struct RunningProxy {
    pub addr: SocketAddr,
    pub tls: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningProxy {
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The proxy configuration for `buildset` (credentials of the write user) with every
/// registry's misses going to `upstream`.
pub fn proxy_config(buildset: &Registry, upstream: Option<&Registry>) -> ProxyConfig {
    let target = BuildsetTarget {
        url: buildset.base_url(),
        username: USER.into(),
        password: Secret::new(PASSWORD),
        ca_pem: buildset.ca_pem(),
    };
    let mut cfg = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), target);
    if let Some(up) = upstream {
        cfg.upstreams = vec![("docker.io".into(), up.base_url()), ("quay.io".into(), up.base_url())];
        cfg.upstream_ca_pem = up.ca_pem();
    }
    cfg
}

pub async fn start_proxy(cfg: ProxyConfig) -> RunningProxy {
    let tls = cfg.tls.is_some();
    let proxy = Proxy::bind(cfg).await.unwrap();
    let addr = proxy.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(proxy.run_until(async {
        let _ = rx.await;
    }));
    RunningProxy {
        addr,
        tls,
        stop: Some(tx),
        task: Some(task),
    }
}

/// What a GET or HEAD returned.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or_default().to_owned()
    }
}

pub async fn fetch(rb: reqwest::RequestBuilder) -> Got {
    let r = rb.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.bytes().await.unwrap().to_vec();
    Got { status, headers, body }
}

pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// The fixture of issue #5: a buildset registry with `library/specimen:1` and
/// `quay.io/org/specimen:1`; an upstream with `library/other:1`, `org/other:1` and its own
/// (different) `library/specimen:1` and `org/specimen:1`, so precedence shows by digest.
pub struct Fixture {
    pub buildset: Registry,
    pub upstream: Registry,
    pub bs_library: Image,
    pub bs_quay: Image,
    pub up_library_other: Image,
    pub up_org_other: Image,
    pub up_library_specimen: Image,
    pub up_org_specimen: Image,
}

impl Fixture {
    pub async fn new(upstream_auth: bool) -> Fixture {
        let buildset = Registry::start(true, true).await;
        let upstream = Registry::start(true, upstream_auth).await;
        let bc = client(&[&buildset.ca_pem().unwrap()]);
        let uc = client(&[&upstream.ca_pem().unwrap()]);
        let bs_library = buildset.push_image(&bc, "library/specimen", "1", "buildset library/specimen", 4096).await;
        let bs_quay = buildset.push_image(&bc, "quay.io/org/specimen", "1", "buildset quay.io/org/specimen", 4096).await;
        let up_library_other = upstream.push_image(&uc, "library/other", "1", "upstream library/other", 100_000).await;
        let up_org_other = upstream.push_image(&uc, "org/other", "1", "upstream org/other", 5000).await;
        let up_library_specimen = upstream.push_image(&uc, "library/specimen", "1", "upstream library/specimen", 4096).await;
        let up_org_specimen = upstream.push_image(&uc, "org/specimen", "1", "upstream org/specimen", 4096).await;
        Fixture {
            buildset,
            upstream,
            bs_library,
            bs_quay,
            up_library_other,
            up_org_other,
            up_library_specimen,
            up_org_specimen,
        }
    }

    /// A client trusting both registries' CAs (and `extra`).
    pub fn client(&self, extra: &[&str]) -> Client {
        let b = self.buildset.ca_pem().unwrap();
        let u = self.upstream.ca_pem().unwrap();
        let mut cas: Vec<&str> = vec![&b, &u];
        cas.extend_from_slice(extra);
        client(&cas)
    }

    /// A client trusting both registries' CAs (and `extra`) that follows redirects.
    pub fn following_client(&self, extra: &[&str]) -> Client {
        let b = self.buildset.ca_pem().unwrap();
        let u = self.upstream.ca_pem().unwrap();
        let mut cas: Vec<&str> = vec![&b, &u];
        cas.extend_from_slice(extra);
        following_client(&cas)
    }
}
