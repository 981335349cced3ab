//! Test harness for the protocol tests: an in-process registry on a random port with its
//! own data directory, a plain HTTP client, and helpers to push blobs and manifests and
//! to check responses against the distribution-spec (status, headers, JSON error bodies).
//!
//! Every test binary includes this module and uses a different subset of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rand::RngCore;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, Method, RequestBuilder};
use serde_json::{json, Value};
use sha2::Digest as _;
use specreg_registry::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ND: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_LAYER_ND_GZ: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCTET: &str = "application/octet-stream";
/// The empty JSON blob `{}` every artifact uses as config.
pub const EMPTY_JSON_DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// The digest of zero bytes.
pub const EMPTY_DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// The spec's manifest size floor (distribution and clients use exactly this cap).
pub const FOUR_MIB: usize = 4 * 1024 * 1024;

// ---- digests and data ------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Sha256,
    Sha512,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::Sha256 => "sha256",
            Alg::Sha512 => "sha512",
        }
    }

    pub fn digest(self, data: &[u8]) -> String {
        match self {
            Alg::Sha256 => sha256(data),
            Alg::Sha512 => sha512(data),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex(&sha2::Sha256::digest(data)))
}

pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex(&sha2::Sha512::digest(data)))
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// A random lower-case alphanumeric string (names, tags, unique annotation values).
pub fn random_name(n: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| CHARS[(rng.next_u32() as usize) % CHARS.len()] as char)
        .collect()
}

/// Standard base64 (the encoding of the descriptor `data` field).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if chunk.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    out
}

/// JSON pretty-printed with tabs, as Go's `json.MarshalIndent(v, "", "\t")` (the v1.1
/// suite's manifests look like this).
pub fn to_json_tabs(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(v, &mut ser).expect("JSON value serialises");
    out
}

pub fn to_json(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON value serialises")
}

/// A descriptor `{mediaType, digest, size}` for content.
pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(data), "size": data.len() })
}

pub fn descriptor_alg(alg: Alg, media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": alg.digest(data), "size": data.len() })
}

/// A unique image config (a random author makes every digest unique).
pub fn image_config() -> Vec<u8> {
    to_json(&json!({
        "architecture": "amd64",
        "os": "linux",
        "author": random_name(16),
        "rootfs": { "type": "layers", "diff_ids": [] },
    }))
}

/// An OCI image manifest over `config` and `layers` (descriptors), with `extra` fields
/// merged into the top-level object.
pub fn oci_manifest(config: &Value, layers: &[Value], extra: Value) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": layers,
    });
    merge(&mut m, extra);
    to_json(&m)
}

pub fn oci_index(manifests: &[Value], extra: Value) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    merge(&mut m, extra);
    to_json(&m)
}

pub fn merge(target: &mut Value, extra: Value) {
    if let (Some(t), Value::Object(e)) = (target.as_object_mut(), extra) {
        for (k, v) in e {
            t.insert(k, v);
        }
    }
}

// ---- responses ---------------------------------------------------------------------------

/// A whole response: status, headers and body bytes.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// A header that must be there.
    pub fn must(&self, name: &str) -> String {
        self.header(name)
            .unwrap_or_else(|| panic!("response {} lacks the {name} header: {:?}", self.status, self.headers))
    }

    pub fn location(&self) -> String {
        let loc = self.must("location");
        assert!(!loc.is_empty(), "empty Location header");
        loc
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }

    /// The error codes of a spec error body.
    pub fn error_codes(&self) -> Vec<String> {
        let v = self.json();
        let errors = v["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("error body has no errors array: {}", self.text()));
        errors
            .iter()
            .map(|e| {
                e["code"]
                    .as_str()
                    .unwrap_or_else(|| panic!("error entry without a code: {}", self.text()))
                    .to_owned()
            })
            .collect()
    }

    pub fn describe(&self) -> String {
        let ct = self.header("content-type").unwrap_or_default();
        let body = if ct.contains("json") || ct.starts_with("text/") || self.body.is_empty() {
            truncate(&self.text(), 600)
        } else {
            format!("<{} bytes of {ct}>", self.body.len())
        };
        format!("{} {:?} {}", self.status, self.headers, body)
    }
}

pub fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_owned()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

/// The spec error format: `status`, `Content-Type: application/json` and a body
/// `{"errors": [{"code": <code>, ...}]}` whose first code is `code`.
#[track_caller]
pub fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "expected {status} {code}, got {}", r.describe());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "error Content-Type is {ct:?}: {}", r.describe());
    let codes = r.error_codes();
    assert_eq!(codes.first().map(String::as_str), Some(code), "error codes: {}", r.describe());
}

/// Like [`assert_error`] with any of several acceptable codes.
#[track_caller]
pub fn assert_error_any(r: &Resp, status: u16, codes: &[&str]) {
    assert_eq!(r.status, status, "expected {status} {codes:?}, got {}", r.describe());
    let got = r.error_codes();
    assert!(
        got.first().is_some_and(|c| codes.contains(&c.as_str())),
        "error codes {got:?}, wanted one of {codes:?}: {}",
        r.describe()
    );
}

/// A HEAD error: the status and no body.
#[track_caller]
pub fn assert_head_error(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{}", r.describe());
    assert!(r.body.is_empty(), "HEAD response has a body: {}", r.describe());
}

#[track_caller]
pub fn assert_status(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "expected {status}, got {}", r.describe());
}

/// The codes every v1.1 conformance run accepts in an error body.
pub const SPEC_ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "MANIFEST_UNVERIFIED",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "TAG_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
];

/// Appends `key=value` to a URL or path that may already carry a query.
pub fn with_query(url: &str, key: &str, value: &str) -> String {
    let enc: String = form_urlencoded::Serializer::new(String::new()).append_pair(key, value).finish();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{enc}")
}

/// The path (and query) of a Location that may be absolute or relative.
pub fn path_of(location: &str) -> String {
    match location.find("://") {
        Some(i) => {
            let rest = &location[i + 3..];
            rest.find('/').map(|j| rest[j..].to_owned()).unwrap_or_else(|| "/".to_owned())
        }
        None => location.to_owned(),
    }
}

// ---- the registry under test -------------------------------------------------------------

type Configure = Box<dyn Fn(&mut ServerConfig) + Send + Sync>;

/// An in-process registry with its own data directory (`root/data`; `root` holds nothing
/// else, so tests can check that nothing was written beside the data directory).
pub struct TestRegistry {
    pub root: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub addr: SocketAddr,
    pub client: Client,
    /// The running server's state (for tests that act on the registry in-process).
    pub app: std::sync::Arc<specreg_registry::server::App>,
    handle: Option<JoinHandle<()>>,
    configure: Option<Configure>,
}

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

async fn spawn(
    data_dir: &Path,
    configure: Option<&Configure>,
) -> (SocketAddr, JoinHandle<()>, std::sync::Arc<specreg_registry::server::App>) {
    let mut config = ServerConfig::new(data_dir);
    if let Some(f) = configure {
        f(&mut config);
    }
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("server binds");
    let addr = server.local_addr();
    let app = server.app();
    (addr, tokio::spawn(server.run()), app)
}

impl TestRegistry {
    pub async fn start() -> Self {
        Self::start_inner(None).await
    }

    /// Starts with a customised configuration (policy, fsync).
    pub async fn start_with(f: impl Fn(&mut ServerConfig) + Send + Sync + 'static) -> Self {
        Self::start_inner(Some(Box::new(f))).await
    }

    async fn start_inner(configure: Option<Configure>) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let data_dir = root.path().join("data");
        let (addr, handle, app) = spawn(&data_dir, configure.as_ref()).await;
        TestRegistry {
            root,
            data_dir,
            addr,
            client: client(),
            app,
            handle: Some(handle),
            configure,
        }
    }

    /// Stops the server and starts a new one on the same data directory (a new port and
    /// a new client, so no connection to the old server is reused).
    pub async fn restart(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
            let _ = h.await;
        }
        self.client = client();
        let (addr, handle, app) = spawn(&self.data_dir, self.configure.as_ref()).await;
        self.addr = addr;
        self.app = app;
        self.handle = Some(handle);
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("http://{}{}", self.addr, path)
        }
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn send(&self, rb: RequestBuilder) -> Resp {
        let resp = rb.send().await.expect("request is answered");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("response body");
        Resp { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.req(Method::GET, path)).await
    }

    pub async fn head(&self, path: &str) -> Resp {
        self.send(self.req(Method::HEAD, path)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.req(Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str) -> Resp {
        self.send(self.req(Method::POST, path)).await
    }

    /// A raw HTTP/1.1 request, for what an URL library would rewrite (`..` segments,
    /// percent-encoded dots, empty segments) or add (an `Accept` header).
    pub async fn raw(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        raw_request(self.addr, method, target, headers, body).await
    }

    // ---- blobs ---------------------------------------------------------------------------

    /// Monolithic upload (`POST ?digest=` with the body); asserts 201 and returns the digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        self.push_blob_alg(repo, data, Alg::Sha256).await
    }

    pub async fn push_blob_alg(&self, repo: &str, data: &[u8], alg: Alg) -> String {
        let digest = alg.digest(data);
        let r = self.post_blob(repo, &digest, data.to_vec()).await;
        assert_status(&r, 201);
        digest
    }

    pub async fn post_blob(&self, repo: &str, digest: &str, data: Vec<u8>) -> Resp {
        let path = with_query(&format!("/v2/{repo}/blobs/uploads/"), "digest", digest);
        self.send(
            self.req(Method::POST, &path)
                .header("content-type", OCTET)
                .body(data),
        )
        .await
    }

    /// Opens an upload session; asserts 202 and returns the Location.
    pub async fn open_upload(&self, repo: &str) -> String {
        let r = self.post(&format!("/v2/{repo}/blobs/uploads/")).await;
        assert_status(&r, 202);
        r.location()
    }

    /// `POST` then `PUT <location>?digest=` with the whole body (the containerd flow).
    pub async fn push_blob_post_put(&self, repo: &str, data: &[u8], digest: &str) -> Resp {
        let loc = self.open_upload(repo).await;
        self.send(
            self.req(Method::PUT, &with_query(&loc, "digest", digest))
                .header("content-type", OCTET)
                .body(data.to_vec()),
        )
        .await
    }

    /// A `PATCH` of one chunk with `Content-Range: start-end`.
    pub async fn patch_chunk(&self, location: &str, start: usize, chunk: &[u8]) -> Resp {
        let range = format!("{}-{}", start, start + chunk.len().saturating_sub(1));
        self.send(
            self.req(Method::PATCH, location)
                .header("content-type", OCTET)
                .header("content-range", range)
                .body(chunk.to_vec()),
        )
        .await
    }

    /// A closing `PUT <location>?digest=` with no body.
    pub async fn close_upload(&self, location: &str, digest: &str) -> Resp {
        self.send(
            self.req(Method::PUT, &with_query(location, "digest", digest))
                .header("content-type", OCTET)
                .header("content-length", "0"),
        )
        .await
    }

    /// A chunked upload (`POST`, `PATCH`es with `Content-Range`, closing `PUT`); returns
    /// the closing response.
    pub async fn push_blob_chunked(&self, repo: &str, data: &[u8], chunk: usize, digest: &str) -> Resp {
        let mut loc = self.open_upload(repo).await;
        let mut start = 0;
        for c in data.chunks(chunk.max(1)) {
            let r = self.patch_chunk(&loc, start, c).await;
            assert_status(&r, 202);
            assert_eq!(r.must("range"), format!("0-{}", start + c.len() - 1));
            loc = r.location();
            start += c.len();
        }
        self.close_upload(&loc, digest).await
    }

    // ---- manifests -----------------------------------------------------------------------

    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Resp {
        self.send(
            self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
                .header("content-type", media_type)
                .body(body.to_vec()),
        )
        .await
    }

    /// Pushes a manifest; asserts 201 and returns its sha256 digest.
    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
        let r = self.put_manifest(repo, reference, media_type, body).await;
        assert_status(&r, 201);
        let digest = if reference.contains(':') { reference.to_owned() } else { sha256(body) };
        assert_eq!(r.must("docker-content-digest"), digest);
        digest
    }

    /// Uploads a random config and `layers` random layers and pushes an OCI image manifest
    /// (tagged when `tag` is given, else by digest).
    pub async fn push_image(&self, repo: &str, tag: Option<&str>, layers: usize) -> Image {
        self.push_image_with(repo, tag, layers, json!({})).await
    }

    pub async fn push_image_with(&self, repo: &str, tag: Option<&str>, layers: usize, extra: Value) -> Image {
        let config = image_config();
        self.push_blob(repo, &config).await;
        let mut layer_blobs = Vec::new();
        let mut layer_descs = Vec::new();
        for _ in 0..layers {
            let l = random_bytes(300);
            self.push_blob(repo, &l).await;
            layer_descs.push(descriptor(OCI_LAYER_GZ, &l));
            layer_blobs.push(l);
        }
        let manifest = oci_manifest(&descriptor(OCI_CONFIG, &config), &layer_descs, extra);
        let digest = sha256(&manifest);
        self.push_manifest(repo, tag.unwrap_or(&digest), OCI_MANIFEST, &manifest).await;
        Image {
            config,
            layers: layer_blobs,
            manifest,
            digest,
        }
    }

    /// Tags of a repository (asserting 200).
    pub async fn tags(&self, repo: &str) -> Vec<String> {
        let r = self.get(&format!("/v2/{repo}/tags/list")).await;
        assert_status(&r, 200);
        r.json()["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    }

    /// Every path under the test root, relative to it, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(self.root.path(), self.root.path(), &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(root, &p, out);
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// An image pushed by [`TestRegistry::push_image`].
#[derive(Debug, Clone)]
pub struct Image {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
    pub digest: String,
}

impl Image {
    pub fn descriptor(&self) -> Value {
        json!({ "mediaType": OCI_MANIFEST, "digest": self.digest, "size": self.manifest.len() })
    }
}

// ---- raw HTTP ------------------------------------------------------------------------------

async fn raw_request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write request");
    stream.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head: bool) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head_text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let name = reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).expect("header name");
            headers.append(name, HeaderValue::from_str(v.trim()).expect("header value"));
        }
    }
    let rest = &raw[split + 4..];
    let body = if head {
        Vec::new()
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_str().unwrap_or("").contains("chunked"))
    {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Resp {
        status,
        headers,
        body: Bytes::from(body),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

// ---- the v1.1 conformance suite's fixtures --------------------------------------------------

/// The data the v1.1 Go suite (`conformance/setup.go`) generates: one config and one
/// manifest per workflow (index 0 pull, 1 push, 2 discovery, 3 management, 4 referrers'
/// subject), a shared layer, and manifests that carry the config inline as `data` plus an
/// unknown field, pretty-printed with tabs.
pub struct Suite {
    pub configs: Vec<Vec<u8>>,
    pub layer: Vec<u8>,
    pub manifests: Vec<Vec<u8>>,
    /// The push workflow's manifest with `"layers": []`.
    pub empty_layer_manifest: Vec<u8>,
    /// `testBlobA`: 42 random bytes (streamed upload, cross-mount).
    pub blob_a: Vec<u8>,
    /// `testBlobB`: 42 random bytes uploaded in two chunks of 22 and 20 bytes.
    pub blob_b: Vec<u8>,
}

impl Suite {
    pub fn new() -> Self {
        let configs: Vec<Vec<u8>> = (0..5)
            .map(|_| {
                to_json_tabs(&json!({
                    "architecture": "amd64",
                    "os": "linux",
                    "rootfs": { "type": "layers", "diff_ids": [] },
                    "author": random_name(16),
                }))
            })
            .collect();
        // Stands in for the suite's small gzipped tarball; the registry never looks inside.
        let mut layer = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03".to_vec();
        layer.extend(random_bytes(120));
        let layer_desc = descriptor(OCI_LAYER_GZ, &layer);
        let config_desc = |c: &[u8]| {
            json!({
                "mediaType": OCI_CONFIG,
                "digest": sha256(c),
                "size": c.len(),
                "data": base64(c),
                "newUnspecifiedField": base64(b"hello world"),
            })
        };
        let manifests = configs
            .iter()
            .map(|c| {
                to_json_tabs(&json!({
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": config_desc(c),
                    "layers": [layer_desc.clone()],
                }))
            })
            .collect();
        let empty_layer_manifest = to_json_tabs(&json!({
            "schemaVersion": 2,
            "config": config_desc(&configs[1]),
            "layers": [],
        }));
        Suite {
            configs,
            layer,
            manifests,
            empty_layer_manifest,
            blob_a: random_bytes(42),
            blob_b: random_bytes(42),
        }
    }

    pub fn config_digest(&self, i: usize) -> String {
        sha256(&self.configs[i])
    }

    pub fn manifest_digest(&self, i: usize) -> String {
        sha256(&self.manifests[i])
    }

    pub fn layer_digest(&self) -> String {
        sha256(&self.layer)
    }
}

impl Default for Suite {
    fn default() -> Self {
        Self::new()
    }
}

/// The suite's `dummyDigest`: the digest of "hello world", never pushed.
pub fn dummy_digest() -> String {
    sha256(b"hello world")
}

/// The suite's `nonexistentManifest` reference.
pub const NONEXISTENT_MANIFEST: &str = ".INVALID_MANIFEST_NAME";

/// The suite's repository (`OCI_NAMESPACE`) and cross-mount repository.
pub const REPO: &str = "conformance/repo1";
pub const REPO2: &str = "conformance/repo2";

/// Accepts the 2xx statuses the suite's setup steps accept.
#[track_caller]
pub fn assert_2xx(r: &Resp) {
    assert!((200..300).contains(&r.status), "expected 2xx, got {}", r.describe());
}
