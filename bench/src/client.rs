//! A minimal HTTP/1.1 client on one hyper connection, request bodies that stream a file
//! range from a blocking reader thread, and the registry operations the workload needs.
//! The same code talks to distribution and to specreg.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::{Bytes, BytesMut};
use http::{header, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

pub type ReqBody = UnsyncBoxBody<Bytes, io::Error>;

/// Size of one read from the blob file (and of one body frame).
pub const FILE_CHUNK: usize = 1 << 20;
/// Frames read ahead of the socket.
const READ_AHEAD: usize = 4;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

pub fn empty() -> ReqBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(data: impl Into<Bytes>) -> ReqBody {
    Full::new(data.into()).map_err(|never| match never {}).boxed_unsync()
}

/// A request body fed by a blocking thread that `pread`s the file in 1 MiB chunks; only
/// `READ_AHEAD` chunks are ever in memory.
pub struct FileBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    remaining: u64,
}

impl FileBody {
    /// `len` bytes of `file` from `offset`, then `tail`.
    pub fn new(file: Arc<File>, offset: u64, len: u64, tail: Bytes) -> FileBody {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let total = len + tail.len() as u64;
        tokio::task::spawn_blocking(move || {
            let end = offset + len;
            let mut pos = offset;
            while pos < end {
                let want = ((end - pos) as usize).min(FILE_CHUNK);
                let read = read_exact_at(&file, want, pos);
                let failed = read.is_err();
                if tx.blocking_send(read).is_err() || failed {
                    return;
                }
                pos += want as u64;
            }
            if !tail.is_empty() {
                let _ = tx.blocking_send(Ok(tail));
            }
        });
        FileBody { rx, remaining: total }
    }

    pub fn boxed(self) -> ReqBody {
        BodyExt::boxed_unsync(self)
    }
}

/// `want` bytes of `file` at `pos`, read into a fresh buffer without zeroing it first.
fn read_exact_at(file: &File, want: usize, pos: u64) -> io::Result<Bytes> {
    use std::os::fd::AsRawFd;
    let mut buf = BytesMut::with_capacity(want);
    while buf.len() < want {
        let filled = buf.len();
        // SAFETY: pread writes at most `want - filled` bytes into the spare capacity,
        // which is at least that large; only the bytes it reports become initialised.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(filled).cast(),
                want - filled,
                (pos + filled as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob file shorter than expected"));
        }
        // SAFETY: pread initialised `n` more bytes.
        unsafe { buf.set_len(filled + n as usize) };
    }
    Ok(buf.freeze())
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match ready!(self.rx.poll_recv(cx)) {
            Some(Ok(b)) => {
                self.remaining = self.remaining.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file reader stopped")))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A body of `len` bytes made of one shared chunk repeated (no copies, no reads): used
/// by the null-sink self-test of the client.
pub struct RepeatBody {
    chunk: Bytes,
    remaining: u64,
}

impl RepeatBody {
    pub fn new(len: u64) -> RepeatBody {
        RepeatBody {
            chunk: Bytes::from(vec![0x5a; FILE_CHUNK]),
            remaining: len,
        }
    }
}

impl Body for RepeatBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = (self.remaining as usize).min(self.chunk.len());
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: http1::SendRequest<ReqBody>,
    host: String,
    /// An `Authorization` value sent with every request.
    auth: Option<String>,
}

/// A rustls client configuration (ring) trusting only the certificates in `ca_pem`.
pub fn tls_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.context("parsing a CA certificate")?)?;
    }
    if roots.is_empty() {
        bail!("no CA certificate in the PEM");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `Basic base64(user:password)`.
pub fn basic_auth(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let bytes = input.as_bytes();
    let mut out = String::from("Basic ");
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(4 << 20)
            .handshake::<_, ReqBody>(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
            auth: None,
        })
    }

    /// HTTPS (HTTP/1.1 over rustls) to `addr`, whose certificate must name its IP address;
    /// `auth` is sent as `Authorization` with every request.
    pub async fn connect_tls(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, auth: Option<String>) -> Result<Conn> {
        Conn::connect_tls_as(addr, None, config, auth).await
    }

    /// Like [`Conn::connect_tls`], but as the host `server_name` (SNI, certificate name and
    /// `Host`) when given: the node proxy's interception listener stands in for `quay.io`.
    pub async fn connect_tls_as(
        addr: SocketAddr,
        server_name: Option<&str>,
        config: &Arc<rustls::ClientConfig>,
        auth: Option<String>,
    ) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let name = match server_name {
            Some(n) => rustls_pki_types::ServerName::try_from(n.to_owned()).with_context(|| format!("server name {n:?}"))?,
            None => rustls_pki_types::ServerName::IpAddress(addr.ip().into()),
        };
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, stream)
            .await
            .with_context(|| format!("TLS handshake with {addr}"))?;
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(4 << 20)
            .handshake::<_, ReqBody>(TokioIo::new(tls))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            host: server_name.map(str::to_owned).unwrap_or_else(|| addr.to_string()),
            auth,
        })
    }

    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: ReqBody,
    ) -> Result<Response<Incoming>> {
        let mut b = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, &self.host);
        if let Some(auth) = &self.auth {
            b = b.header(header::AUTHORIZATION, auth);
        }
        for (k, v) in headers {
            b = b.header(k, *v);
        }
        if let Some(n) = body.size_hint().exact() {
            if method != Method::GET && method != Method::HEAD {
                b = b.header(header::CONTENT_LENGTH, n);
            }
        }
        let req = b.body(body)?;
        self.sender.ready().await.context("connection not ready")?;
        self.sender
            .send_request(req)
            .await
            .with_context(|| format!("{method} {path}"))
    }
}

/// Reads a whole (small) response body.
pub async fn read_body(resp: Response<Incoming>) -> Result<Bytes> {
    Ok(resp.into_body().collect().await?.to_bytes())
}

/// Reads and discards a body, returning its length.
pub async fn drain(resp: Response<Incoming>) -> Result<u64> {
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            n += d.len() as u64;
        }
    }
    Ok(n)
}

/// Reads a body, hashing it.
pub async fn drain_hashed(resp: Response<Incoming>) -> Result<(u64, String)> {
    let mut body = resp.into_body();
    let mut n = 0u64;
    let mut h = Sha256::new();
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            n += d.len() as u64;
            h.update(d);
        }
    }
    Ok((n, format!("sha256:{:x}", h.finalize())))
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

async fn expect_status(resp: Response<Incoming>, want: StatusCode, what: &str) -> Result<Response<Incoming>> {
    if resp.status() == want {
        return Ok(resp);
    }
    let status = resp.status();
    let body = read_body(resp).await.unwrap_or_default();
    bail!(
        "{what}: expected {want}, got {status}: {}",
        String::from_utf8_lossy(&body[..body.len().min(400)])
    )
}

/// The path (and query) of a `Location` header; distribution answers absolute URLs.
fn location_path(resp: &Response<Incoming>) -> Result<String> {
    let loc = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("response without a Location header"))?;
    let rest = loc.strip_prefix("http://").or_else(|| loc.strip_prefix("https://"));
    Ok(match rest {
        Some(r) => r.find('/').map(|i| r[i..].to_owned()).unwrap_or_else(|| "/".into()),
        None => loc.to_owned(),
    })
}

fn with_query(loc: &str, key: &str, value: &str) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}{key}={value}")
}

fn check_digest_header(resp: &Response<Incoming>, digest: &str) -> Result<()> {
    match resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
        Some(d) if d == digest => Ok(()),
        Some(d) => bail!("server reports digest {d}, expected {digest}"),
        None => Ok(()),
    }
}

/// `POST /v2/<repo>/blobs/uploads/`: opens a session, returns its location.
pub async fn start_upload(c: &mut Conn, repo: &str) -> Result<String> {
    let resp = c
        .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], empty())
        .await?;
    let resp = expect_status(resp, StatusCode::ACCEPTED, "opening an upload").await?;
    let loc = location_path(&resp)?;
    drain(resp).await?;
    Ok(loc)
}

/// POST to open, then one `PUT ?digest=` carrying the whole body.
pub async fn push_monolithic(c: &mut Conn, repo: &str, body: ReqBody, digest: &str) -> Result<()> {
    let loc = start_upload(c, repo).await?;
    let resp = c
        .request(
            Method::PUT,
            &with_query(&loc, "digest", digest),
            &[(header::CONTENT_TYPE, "application/octet-stream")],
            body,
        )
        .await?;
    let resp = expect_status(resp, StatusCode::CREATED, "monolithic PUT").await?;
    check_digest_header(&resp, digest)?;
    drain(resp).await?;
    Ok(())
}

/// POST, `PATCH`es of `chunk` bytes with `Content-Range`, then an empty `PUT ?digest=`.
/// The blob is `size` bytes of `file` followed by `tail` (sent with the last PATCH).
pub async fn push_chunked(
    c: &mut Conn,
    repo: &str,
    file: &Arc<File>,
    size: u64,
    tail: &Bytes,
    chunk: u64,
    digest: &str,
) -> Result<u32> {
    let mut loc = start_upload(c, repo).await?;
    let mut pos = 0u64;
    let mut patches = 0u32;
    while pos < size {
        let end = (pos + chunk).min(size);
        // The tail rides on the last PATCH.
        let this_tail = if end == size { tail.clone() } else { Bytes::new() };
        let last = end - 1 + this_tail.len() as u64;
        let body = FileBody::new(file.clone(), pos, end - pos, this_tail).boxed();
        let range = format!("{pos}-{last}");
        let resp = c
            .request(
                Method::PATCH,
                &loc,
                &[
                    (header::CONTENT_TYPE, "application/octet-stream"),
                    (header::CONTENT_RANGE, &range),
                ],
                body,
            )
            .await?;
        let resp = expect_status(resp, StatusCode::ACCEPTED, "PATCH").await?;
        loc = location_path(&resp)?;
        drain(resp).await?;
        pos = end;
        patches += 1;
    }
    let resp = c
        .request(Method::PUT, &with_query(&loc, "digest", digest), &[], empty())
        .await?;
    let resp = expect_status(resp, StatusCode::CREATED, "closing PUT").await?;
    check_digest_header(&resp, digest)?;
    drain(resp).await?;
    Ok(patches)
}

/// A small blob already in memory, by POST + PUT.
pub async fn push_small(c: &mut Conn, repo: &str, data: Bytes, digest: &str) -> Result<()> {
    push_monolithic(c, repo, full(data), digest).await
}

pub async fn put_manifest(c: &mut Conn, repo: &str, reference: &str, body: Bytes) -> Result<String> {
    let digest = sha256_digest(&body);
    let resp = c
        .request(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[(header::CONTENT_TYPE, OCI_MANIFEST)],
            full(body),
        )
        .await?;
    let resp = expect_status(resp, StatusCode::CREATED, "manifest PUT").await?;
    check_digest_header(&resp, &digest)?;
    drain(resp).await?;
    Ok(digest)
}

/// GET of a manifest, returning its bytes (checks the request works before a load run).
pub async fn get_manifest(c: &mut Conn, repo: &str, reference: &str) -> Result<Bytes> {
    let resp = c
        .request(
            Method::GET,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[(header::ACCEPT, MANIFEST_ACCEPT)],
            empty(),
        )
        .await?;
    let resp = expect_status(resp, StatusCode::OK, "manifest GET").await?;
    read_body(resp).await
}

pub async fn get_blob(c: &mut Conn, repo: &str, digest: &str) -> Result<Response<Incoming>> {
    let resp = c
        .request(Method::GET, &format!("/v2/{repo}/blobs/{digest}"), &[], empty())
        .await?;
    expect_status(resp, StatusCode::OK, "blob GET").await
}

/// Waits until `GET /v2/` answers (any status: 200, or 401 with auth).
pub async fn wait_ready(addr: SocketAddr, timeout: std::time::Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let attempt = async {
            let mut c = Conn::connect(addr).await?;
            let resp = c.request(Method::GET, "/v2/", &[], empty()).await?;
            let ok = resp.status() == StatusCode::OK;
            drain(resp).await?;
            anyhow::Ok(ok)
        };
        if let Ok(Ok(true)) = tokio::time::timeout(std::time::Duration::from_secs(2), attempt).await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{addr} did not answer GET /v2/ with 200 within {timeout:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Downloads `url` with curl into /dev/null: the bytes received and the seconds from the
/// connection being open to the last byte (curl's own clock, so process start-up is not
/// counted). curl is the leanest real client here: one thread, one read loop.
pub async fn curl_get(curl: &Path, url: &str) -> Result<(u64, f64)> {
    let mut cmd = std::process::Command::new(curl);
    cmd.args(["--silent", "--show-error", "--fail", "--output", "/dev/null"])
        .args(["--write-out", "%{size_download} %{time_connect} %{time_total}"])
        .arg(url);
    let what = format!("{} GET {url}", curl.display());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .with_context(|| format!("running {what} (`apt-get install -y curl`, or bench/run.sh)"))?;
    if !out.status.success() {
        bail!("{what}: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<f64> = text.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let [bytes, connected, total] = fields[..] else {
        bail!("{what}: unexpected --write-out {text:?}");
    };
    Ok((bytes as u64, total - connected))
}

