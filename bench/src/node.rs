//! The `node` phase (issue #5), specreg only: the wall time of `specreg use` and
//! `specreg use --undo` on a fresh `--root`, and the cost of the mirror proxy that `use`
//! starts: the same blob and manifest pulled straight from the buildset registry (TLS,
//! Basic auth) and through the proxy (TLS with the node CA, no auth).
//!
//! distribution has no equivalent, so these figures are absolute, not ratios to it.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{header, Method, StatusCode};
use serde_json::{json, Value};

use crate::client::{self, Conn, FileBody, MANIFEST_ACCEPT, OCI_MANIFEST};
use crate::servers::Server;

/// The buildset repository the proxy maps `docker.io/library/specimen` to.
const REPO: &str = "library/specimen";
const TAG: &str = "1";
/// The several-layer image: `IMAGE_TAG` in `REPO`, its layers slices of the blob file
/// weighted 1..=IMAGE_LAYERS, pulled on `IMAGE_WORKERS` connections (docker's default
/// `max-concurrent-downloads` is 3).
const IMAGE_TAG: &str = "layered";
const IMAGE_LAYERS: u64 = 6;
const IMAGE_WORKERS: usize = 3;
/// TLS interception (issue #6): the proxy stands in for `INTERCEPT_HOST` on port 443 of
/// `INTERCEPT_ADDR`; a client asking that host for `REPO` gets the buildset registry's
/// `INTERCEPT_HOST/REPO`, where the same layered image is pushed.
const INTERCEPT_HOST: &str = "quay.io";
const INTERCEPT_ADDR: &str = "127.83.71.1";

pub struct NodeConfig {
    pub specreg: PathBuf,
    /// Scratch directory (server data, the node roots, the blob file).
    pub dir: PathBuf,
    /// `use` + `--undo` cycles.
    pub runs: usize,
    pub blob_size: u64,
    /// Timed pulls of the blob per path; the fastest is kept.
    pub pulls: usize,
    /// Sequential manifest GETs per path on one keep-alive connection.
    pub manifest_gets: usize,
}

#[derive(Debug, Default)]
pub struct NodeResult {
    pub runs: usize,
    /// `specreg use` wall time around the process, ms, one per run.
    pub use_wall_ms: Vec<f64>,
    /// The `(N ms)` figure `use` prints, one per run.
    pub use_printed_ms: Vec<f64>,
    pub undo_wall_ms: Vec<f64>,
    pub files_written: Option<u64>,
    pub blob_bytes: u64,
    pub pulls: usize,
    /// Best pull time, seconds.
    pub direct_blob_s: f64,
    pub proxy_blob_s: f64,
    /// The proxy's CPU (utime+stime) per GiB relayed, over the timed proxy pulls.
    pub proxy_cpu_s_per_gib: Option<f64>,
    /// The several-layer image pulled as a container client does (manifest, then config and
    /// layers on `IMAGE_WORKERS` connections, following redirects).
    pub image_layers: usize,
    pub image_bytes: u64,
    pub direct_image_s: f64,
    pub proxy_image_s: f64,
    /// Blob GETs the proxy answered with a redirect to the buildset registry, per image pull.
    pub proxy_image_redirects: usize,
    /// The same image pulled through TLS interception (as `quay.io/library/specimen`) and,
    /// alternating with it, straight from the buildset registry; `None` when not measured
    /// (port 443 needs root).
    pub intercept: Option<InterceptResult>,
    pub manifest_gets: usize,
    pub direct_manifest_mean_ms: f64,
    pub proxy_manifest_mean_ms: f64,
    pub direct_manifest_p50_ms: f64,
    pub proxy_manifest_p50_ms: f64,
}

#[derive(Debug, Default)]
pub struct InterceptResult {
    pub direct_image_s: f64,
    pub intercept_image_s: f64,
    pub redirects: usize,
}

impl InterceptResult {
    pub fn ratio(&self) -> f64 {
        self.intercept_image_s / self.direct_image_s
    }
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

impl NodeResult {
    pub fn direct_mb_s(&self) -> f64 {
        self.blob_bytes as f64 / self.direct_blob_s / 1e6
    }
    pub fn proxy_mb_s(&self) -> f64 {
        self.blob_bytes as f64 / self.proxy_blob_s / 1e6
    }
    pub fn blob_ratio(&self) -> f64 {
        self.proxy_blob_s / self.direct_blob_s
    }
    pub fn image_ratio(&self) -> f64 {
        self.proxy_image_s / self.direct_image_s
    }
    pub fn direct_image_mb_s(&self) -> f64 {
        self.image_bytes as f64 / self.direct_image_s / 1e6
    }
    pub fn proxy_image_mb_s(&self) -> f64 {
        self.image_bytes as f64 / self.proxy_image_s / 1e6
    }
    pub fn manifest_ratio(&self) -> f64 {
        self.proxy_manifest_mean_ms / self.direct_manifest_mean_ms
    }

    pub fn to_json(&self) -> Value {
        json!({
            "use_runs": self.runs,
            "use_wall_ms": self.use_wall_ms,
            "use_wall_ms_median": median(&self.use_wall_ms),
            "use_wall_ms_max": max(&self.use_wall_ms),
            "use_printed_ms": self.use_printed_ms,
            "use_printed_ms_median": median(&self.use_printed_ms),
            "undo_wall_ms": self.undo_wall_ms,
            "undo_wall_ms_median": median(&self.undo_wall_ms),
            "undo_wall_ms_max": max(&self.undo_wall_ms),
            "files_written": self.files_written,
            "blob_bytes": self.blob_bytes,
            "blob_pulls_per_path": self.pulls,
            "direct_blob_seconds": self.direct_blob_s,
            "proxy_blob_seconds": self.proxy_blob_s,
            "direct_blob_mb_per_s": self.direct_mb_s(),
            "proxy_blob_mb_per_s": self.proxy_mb_s(),
            "blob_proxy_over_direct": self.blob_ratio(),
            "proxy_cpu_s_per_gib": self.proxy_cpu_s_per_gib,
            "manifest_gets_per_path": self.manifest_gets,
            "direct_manifest_mean_ms": self.direct_manifest_mean_ms,
            "proxy_manifest_mean_ms": self.proxy_manifest_mean_ms,
            "direct_manifest_p50_ms": self.direct_manifest_p50_ms,
            "proxy_manifest_p50_ms": self.proxy_manifest_p50_ms,
            "manifest_proxy_over_direct": self.manifest_ratio(),
            "image_layers": self.image_layers,
            "image_bytes": self.image_bytes,
            "direct_image_seconds": self.direct_image_s,
            "proxy_image_seconds": self.proxy_image_s,
            "image_proxy_over_direct": self.image_ratio(),
            "proxy_image_redirects": self.proxy_image_redirects,
            "intercept": self.intercept.as_ref().map(|i| json!({
                "host": INTERCEPT_HOST,
                "listen": format!("{INTERCEPT_ADDR}:443"),
                "direct_image_seconds": i.direct_image_s,
                "intercept_image_seconds": i.intercept_image_s,
                "image_intercept_over_direct": i.ratio(),
                "redirects": i.redirects,
            })),
        })
    }
}

/// The fields of `buildset_registry.json` the bench needs.
struct Info {
    addr: SocketAddr,
    auth: String,
    tls: Arc<rustls::ClientConfig>,
}

fn load_info(path: &Path) -> Result<Info> {
    let v: Value = serde_json::from_slice(&fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        .with_context(|| format!("parsing {}", path.display()))?;
    let field = |k: &str| {
        v.get(k)
            .ok_or_else(|| anyhow!("{}: no {k}", path.display()))
            .cloned()
    };
    let host = field("host")?.as_str().unwrap_or_default().to_owned();
    let port = field("port")?.as_u64().ok_or_else(|| anyhow!("port is not a number"))? as u16;
    let user = field("username")?.as_str().unwrap_or_default().to_owned();
    let password = field("password")?.as_str().unwrap_or_default().to_owned();
    let cert = field("cert")?.as_str().unwrap_or_default().to_owned();
    let ip: std::net::IpAddr = host
        .trim_matches(['[', ']'])
        .parse()
        .with_context(|| format!("{}: host {host:?} is not an IP address", path.display()))?;
    Ok(Info {
        addr: SocketAddr::new(ip, port),
        auth: client::basic_auth(&user, &password),
        tls: client::tls_config(cert.as_bytes()).context("the buildset registry's cert")?,
    })
}

/// Waits until `GET /v2/` over TLS answers 200.
async fn wait_ready_tls(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>, auth: Option<&str>, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut last;
    loop {
        let attempt = async {
            let mut c = Conn::connect_tls(addr, tls, auth.map(str::to_owned)).await?;
            let resp = c.request(Method::GET, "/v2/", &[], client::empty()).await?;
            let status = resp.status();
            client::drain(resp).await?;
            anyhow::Ok(status)
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(StatusCode::OK)) => return Ok(()),
            Ok(Ok(s)) => last = format!("status {s}"),
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => last = "timeout".into(),
        }
        if Instant::now() > deadline {
            bail!("{addr} did not answer GET /v2/ with 200 within {limit:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a command to completion with stdout/stderr in files (`use` starts a detached proxy:
/// a pipe could stay open after `use` exits); returns the wall time and the output.
fn run_timed(cmd: &mut Command, out_dir: &Path, name: &str) -> Result<(f64, String)> {
    let out_path = out_dir.join(format!("{name}.out"));
    let err_path = out_dir.join(format!("{name}.err"));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?);
    let started = Instant::now();
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let out = fs::read_to_string(&out_path).unwrap_or_default();
    let err = fs::read_to_string(&err_path).unwrap_or_default();
    if !status.success() {
        bail!("{cmd:?} failed ({status}):\n{out}{err}");
    }
    Ok((ms, out))
}

/// `... (N ms)` and `N files written` from the line `use` prints.
fn parse_use_line(out: &str) -> Result<(f64, Option<u64>)> {
    let line = out
        .lines()
        .find(|l| l.starts_with("specreg use:") && l.contains("mirror proxy on"))
        .ok_or_else(|| anyhow!("`specreg use` printed no summary line: {out:?}"))?;
    let ms = line
        .rsplit_once('(')
        .and_then(|(_, r)| r.strip_suffix(')'))
        .and_then(|r| r.trim().strip_suffix("ms"))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no `(N ms)` in {line:?}"))?;
    let written = line
        .split_once("; ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    Ok((ms, written))
}

/// A fresh node root: `etc/docker/daemon.json` holding `{"mtu":1400}` and `home/`.
fn fresh_root(dir: &Path) -> Result<PathBuf> {
    let root = std::path::absolute(dir)?;
    fs::create_dir_all(root.join("etc/docker"))?;
    fs::create_dir_all(root.join("home"))?;
    fs::write(root.join("etc/docker/daemon.json"), "{\"mtu\":1400}\n")?;
    Ok(root)
}

/// Makes sure the proxy a failed run may have left behind is stopped: `--undo`, then, if
/// its pid file remains, SIGTERM to that pid.
fn cleanup_root(specreg: &Path, root: &Path) {
    let _ = Command::new(specreg)
        .arg("use")
        .arg("--undo")
        .arg("--root")
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let pidfile = root.join("var/lib/specreg/use/proxy.pid");
    if let Some(pid) = fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
        if pid > 1 {
            // SAFETY: signalling the proxy this run started, by the pid it recorded.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

async fn pull_blob(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>, auth: Option<&str>, redirect_tls: &Arc<rustls::ClientConfig>, digest: &str, size: u64, hash: bool) -> Result<f64> {
    let started = Instant::now();
    let mut p = Puller::new(addr, tls.clone(), auth.map(str::to_owned), redirect_tls.clone());
    p.blob(digest, size, hash).await?;
    Ok(started.elapsed().as_secs_f64())
}

/// The several-layer image in the buildset registry.
pub struct Image {
    manifest: Bytes,
    /// Config and layers, largest first (the order a client starts them in does not
    /// matter much; largest first keeps the three connections busy to the end).
    blobs: Vec<(String, u64)>,
}

impl Image {
    fn bytes(&self) -> u64 {
        self.blobs.iter().map(|(_, n)| n).sum()
    }
}

/// Pushes `REPO:IMAGE_TAG`: layers that are consecutive slices of the blob file, sized
/// 1..=IMAGE_LAYERS parts, and the config already pushed.
async fn push_layered_image(c: &mut Conn, blob_path: &Path, size: u64, config: &Bytes, config_digest: &str) -> Result<Image> {
    push_layered_image_to(c, REPO, blob_path, size, config, config_digest).await
}

/// [`push_layered_image`] into `repo`.
async fn push_layered_image_to(
    c: &mut Conn,
    repo: &str,
    blob_path: &Path,
    size: u64,
    config: &Bytes,
    config_digest: &str,
) -> Result<Image> {
    let parts: u64 = (1..=IMAGE_LAYERS).sum();
    let mut slices = Vec::new();
    let mut offset = 0;
    for w in 1..=IMAGE_LAYERS {
        let len = if w == IMAGE_LAYERS { size - offset } else { size * w / parts };
        slices.push((offset, len));
        offset += len;
    }
    let digests = tokio::task::spawn_blocking({
        let path = blob_path.to_owned();
        let slices = slices.clone();
        move || -> Result<Vec<String>> {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = File::open(&path)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut out = Vec::new();
            for (off, len) in slices {
                f.seek(SeekFrom::Start(off))?;
                let mut h = <sha2::Sha256 as sha2::Digest>::new();
                let mut left = len;
                while left > 0 {
                    let n = (left as usize).min(buf.len());
                    f.read_exact(&mut buf[..n])?;
                    sha2::Digest::update(&mut h, &buf[..n]);
                    left -= n as u64;
                }
                out.push(format!("sha256:{:x}", sha2::Digest::finalize(h)));
            }
            Ok(out)
        }
    })
    .await??;
    let file = Arc::new(File::open(blob_path)?);
    let mut layers = Vec::new();
    let mut blobs = vec![(config_digest.to_owned(), config.len() as u64)];
    for ((off, len), digest) in slices.iter().zip(&digests) {
        client::push_monolithic(c, repo, FileBody::new(file.clone(), *off, *len, Bytes::new()).boxed(), digest).await?;
        layers.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": len}));
        blobs.push((digest.clone(), *len));
    }
    let manifest = Bytes::from(serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))?);
    client::put_manifest(c, repo, IMAGE_TAG, manifest.clone()).await?;
    blobs.sort_by_key(|b| std::cmp::Reverse(b.1));
    Ok(Image { manifest, blobs })
}

/// One client connection to its entry point (the registry, or the proxy) and, once a
/// redirect names it, one to the redirect's target; both kept alive, as a container
/// client keeps them.
struct Puller {
    entry: SocketAddr,
    /// The host the entry point is asked as (SNI and `Host`); its IP address when `None`.
    entry_name: Option<String>,
    entry_tls: Arc<rustls::ClientConfig>,
    entry_auth: Option<String>,
    redirect_tls: Arc<rustls::ClientConfig>,
    conn: Option<Conn>,
    redirected: Option<(SocketAddr, Conn)>,
    redirects: usize,
}

impl Puller {
    fn new(entry: SocketAddr, entry_tls: Arc<rustls::ClientConfig>, entry_auth: Option<String>, redirect_tls: Arc<rustls::ClientConfig>) -> Puller {
        Puller { entry, entry_name: None, entry_tls, entry_auth, redirect_tls, conn: None, redirected: None, redirects: 0 }
    }

    /// The entry point asked as `name` (the interception listener).
    fn asked_as(mut self, name: Option<&str>) -> Puller {
        self.entry_name = name.map(str::to_owned);
        self
    }

    async fn entry(&mut self) -> Result<&mut Conn> {
        if self.conn.is_none() {
            self.conn = Some(
                Conn::connect_tls_as(self.entry, self.entry_name.as_deref(), &self.entry_tls, self.entry_auth.clone()).await?,
            );
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    async fn manifest(&mut self, tag: &str) -> Result<Bytes> {
        client::get_manifest(self.entry().await?, REPO, tag).await
    }

    /// GETs a blob, following one redirect (with no credentials, as clients do when the
    /// host changes); checks its size, and its digest when `hash`.
    async fn blob(&mut self, digest: &str, size: u64, hash: bool) -> Result<()> {
        let entry = self.entry;
        let resp = self
            .entry()
            .await?
            .request(Method::GET, &format!("/v2/{REPO}/blobs/{digest}"), &[], client::empty())
            .await?;
        let resp = if resp.status() == StatusCode::TEMPORARY_REDIRECT {
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| anyhow!("307 from {entry} without a Location"))?
                .to_owned();
            client::drain(resp).await?;
            let uri: http::Uri = location.parse().with_context(|| format!("Location {location:?}"))?;
            let target: SocketAddr = uri
                .authority()
                .ok_or_else(|| anyhow!("Location {location:?} names no host"))?
                .as_str()
                .parse()
                .with_context(|| format!("Location {location:?}: not IP:port"))?;
            let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
            if self.redirected.as_ref().map(|(a, _)| *a) != Some(target) {
                let c = Conn::connect_tls(target, &self.redirect_tls, None).await?;
                self.redirected = Some((target, c));
            }
            self.redirects += 1;
            let (_, c) = self.redirected.as_mut().expect("just connected");
            c.request(Method::GET, &path, &[], client::empty()).await?
        } else {
            resp
        };
        if resp.status() != StatusCode::OK {
            bail!("blob {digest} via {entry}: {}", resp.status());
        }
        let n = if hash {
            let (n, got) = client::drain_hashed(resp).await?;
            if got != digest {
                bail!("blob via {entry} has digest {got}, expected {digest}");
            }
            n
        } else {
            client::drain(resp).await?
        };
        if n != size {
            bail!("blob {digest} via {entry}: {n} bytes, expected {size}");
        }
        Ok(())
    }
}

/// A container client's pull of the image: the manifest by tag, then every blob on
/// `IMAGE_WORKERS` connections. Returns the seconds taken and the redirects followed.
async fn pull_image(
    entry: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    auth: Option<&str>,
    redirect_tls: &Arc<rustls::ClientConfig>,
    image: &Image,
    hash: bool,
) -> Result<(f64, usize)> {
    pull_image_as(entry, None, tls, auth, redirect_tls, image, hash).await
}

/// [`pull_image`] with the entry point asked as the host `name`.
async fn pull_image_as(
    entry: SocketAddr,
    name: Option<&str>,
    tls: &Arc<rustls::ClientConfig>,
    auth: Option<&str>,
    redirect_tls: &Arc<rustls::ClientConfig>,
    image: &Image,
    hash: bool,
) -> Result<(f64, usize)> {
    let started = Instant::now();
    let mut first = Puller::new(entry, tls.clone(), auth.map(str::to_owned), redirect_tls.clone()).asked_as(name);
    let got = first.manifest(IMAGE_TAG).await?;
    if got != image.manifest {
        bail!("the image manifest via {entry} differs from the one pushed");
    }
    let queue = Arc::new(std::sync::Mutex::new(image.blobs.clone()));
    let mut tasks = Vec::new();
    for i in 0..IMAGE_WORKERS {
        let mut p = if i == 0 {
            std::mem::replace(&mut first, Puller::new(entry, tls.clone(), None, redirect_tls.clone()))
        } else {
            Puller::new(entry, tls.clone(), auth.map(str::to_owned), redirect_tls.clone()).asked_as(name)
        };
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                // Largest first: the queue is sorted largest first, taken from the front.
                let next = {
                    let mut q = queue.lock().expect("queue lock");
                    (!q.is_empty()).then(|| q.remove(0))
                };
                let Some((digest, size)) = next else { break };
                p.blob(&digest, size, hash).await?;
            }
            anyhow::Ok(p.redirects)
        }));
    }
    let mut redirects = 0;
    for t in tasks {
        redirects += t.await??;
    }
    Ok((started.elapsed().as_secs_f64(), redirects))
}

/// `count` sequential manifest GETs by tag on one keep-alive connection; the latencies in ms.
/// Runs two image pulls alternately `runs` times, so drift on the machine hits both alike;
/// the fastest of each, in seconds.
async fn best_alternating<FA, FB>(
    runs: usize,
    limit: Duration,
    names: (&str, &str),
    mut first: impl FnMut() -> FA,
    mut second: impl FnMut() -> FB,
) -> Result<(f64, f64)>
where
    FA: std::future::Future<Output = Result<(f64, usize)>>,
    FB: std::future::Future<Output = Result<(f64, usize)>>,
{
    let (mut best_a, mut best_b) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..runs.max(1) {
        let (a, _) = tokio::time::timeout(limit, first())
            .await
            .map_err(|_| anyhow!("{}: no answer within {limit:?}", names.0))??;
        let (b, _) = tokio::time::timeout(limit, second())
            .await
            .map_err(|_| anyhow!("{}: no answer within {limit:?}", names.1))??;
        best_a = best_a.min(a);
        best_b = best_b.min(b);
    }
    Ok((best_a, best_b))
}

async fn manifest_gets(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>, auth: Option<&str>, count: usize, want: &Bytes) -> Result<Vec<f64>> {
    let mut c = Conn::connect_tls(addr, tls, auth.map(str::to_owned)).await?;
    let path = format!("/v2/{REPO}/manifests/{TAG}");
    // Warm-up: the first requests set up the proxy's pooled connection upstream.
    for _ in 0..20 {
        let got = client::get_manifest(&mut c, REPO, TAG).await?;
        if got != *want {
            bail!("manifest from {addr} differs from the one pushed");
        }
    }
    let mut lat = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        let resp = c
            .request(Method::GET, &path, &[(header::ACCEPT, MANIFEST_ACCEPT)], client::empty())
            .await?;
        if resp.status() != StatusCode::OK {
            bail!("manifest GET via {addr}: {}", resp.status());
        }
        client::drain(resp).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(lat)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

pub async fn run(cfg: &NodeConfig) -> Result<NodeResult> {
    let mut r = NodeResult {
        runs: cfg.runs,
        blob_bytes: cfg.blob_size,
        pulls: cfg.pulls,
        manifest_gets: cfg.manifest_gets,
        ..NodeResult::default()
    };
    let server_dir = cfg.dir.join("buildset");
    fs::create_dir_all(&server_dir)?;
    let mut server = Server::start_specreg_tls(&cfg.specreg, &server_dir)?;
    let result = run_with(cfg, &mut server, &server_dir, &mut r).await;
    let log = server.log_tail();
    server.stop();
    result.with_context(|| format!("node phase; buildset registry log (tail):\n{log}"))?;
    Ok(r)
}

async fn run_with(cfg: &NodeConfig, server: &mut Server, server_dir: &Path, r: &mut NodeResult) -> Result<()> {
    let info_path = std::path::absolute(server_dir.join("data/buildset_registry.json"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !info_path.is_file() {
        server.check_alive()?;
        if Instant::now() > deadline {
            bail!("no {} after 10 s", info_path.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info = load_info(&info_path)?;
    if info.addr != server.addr {
        eprintln!("  [node] note: connection info names {}, serve printed {}", info.addr, server.addr);
    }
    wait_ready_tls(info.addr, &info.tls, Some(&info.auth), Duration::from_secs(30)).await?;
    eprintln!("  [node] buildset registry (TLS, auth) on {} (pid {})", info.addr, server.pid);

    // The image: a blob of `blob_size` random bytes, a config, a manifest tagged 1.
    let blob_path = cfg.dir.join("node-blob.bin");
    let size = cfg.blob_size;
    let hash = tokio::task::spawn_blocking({
        let p = blob_path.clone();
        move || crate::generate_blob(&p, size)
    })
    .await??;
    let digest = format!("sha256:{:x}", sha2::Digest::finalize(hash));
    let file = Arc::new(File::open(&blob_path)?);
    let mut c = Conn::connect_tls(info.addr, &info.tls, Some(info.auth.clone())).await?;
    client::push_monolithic(&mut c, REPO, FileBody::new(file, 0, size, Bytes::new()).boxed(), &digest).await?;
    let config = Bytes::from_static(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#,
    );
    let config_digest = client::sha256_digest(&config);
    client::push_small(&mut c, REPO, config.clone(), &config_digest).await?;
    let manifest = Bytes::from(serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest, "size": size}],
    }))?);
    client::put_manifest(&mut c, REPO, TAG, manifest.clone()).await?;
    let image = push_layered_image(&mut c, &blob_path, size, &config, &config_digest).await?;
    // The same image where interception looks for quay.io/library/specimen.
    let intercept = can_bind_443();
    if intercept {
        client::push_small(&mut c, &format!("{INTERCEPT_HOST}/{REPO}"), config.clone(), &config_digest).await?;
        let again =
            push_layered_image_to(&mut c, &format!("{INTERCEPT_HOST}/{REPO}"), &blob_path, size, &config, &config_digest)
                .await?;
        if again.manifest != image.manifest {
            bail!("the image pushed for interception differs from the first");
        }
    } else {
        eprintln!("  [node] interception not measured: port 443 needs root");
    }
    drop(c);
    let _ = fs::remove_file(&blob_path);
    eprintln!(
        "  [node] pushed {REPO}:{TAG} with a {} MiB layer, {REPO}:{IMAGE_TAG} with {IMAGE_LAYERS} layers",
        size >> 20
    );
    r.image_layers = IMAGE_LAYERS as usize;
    r.image_bytes = image.bytes();

    let runs = cfg.runs.max(1);
    for i in 0..runs {
        let root = fresh_root(&cfg.dir.join(format!("root{i}")))?;
        let outcome = use_cycle(cfg, &info_path, &root, &info, &digest, &manifest, &image, i + 1 == runs, r).await;
        if outcome.is_err() {
            cleanup_root(&cfg.specreg, &root);
        }
        outcome?;
    }
    if intercept {
        let root = fresh_root(&cfg.dir.join("root-intercept"))?;
        let outcome = intercept_cycle(cfg, &info_path, &root, &info, &image, r).await;
        if outcome.is_err() {
            cleanup_root(&cfg.specreg, &root);
        }
        outcome?;
    }
    Ok(())
}

/// Whether this process may listen on port 443 (root, or CAP_NET_BIND_SERVICE).
fn can_bind_443() -> bool {
    let addr: SocketAddr = format!("{INTERCEPT_ADDR}:443").parse().expect("a socket address");
    std::net::TcpListener::bind(addr).is_ok()
}

/// `use --intercept quay.io` on a fresh root; the layered image pulled as
/// `quay.io/library/specimen` through the interception listener (SNI quay.io, the node
/// CA), alternating with the direct pull; `--undo`.
async fn intercept_cycle(cfg: &NodeConfig, info_path: &Path, root: &Path, info: &Info, image: &Image, r: &mut NodeResult) -> Result<()> {
    let outs = root.parent().unwrap_or(root).to_owned();
    let mut cmd = Command::new(&cfg.specreg);
    cmd.arg("use")
        .arg("--info")
        .arg(info_path)
        .arg("--root")
        .arg(root)
        .args(["--job-user-home", "/home", "--intercept", INTERCEPT_HOST, "--intercept-addr", INTERCEPT_ADDR]);
    let out_dir = outs.clone();
    tokio::task::spawn_blocking(move || run_timed(&mut cmd, &out_dir, "intercept-use")).await??;
    let hosts = fs::read_to_string(root.join("etc/hosts"))?;
    if !hosts.contains(&format!("{INTERCEPT_ADDR}\t{INTERCEPT_HOST}")) {
        bail!("/etc/hosts after `use --intercept` does not map {INTERCEPT_HOST}: {hosts:?}");
    }
    let state = root.join("var/lib/specreg/use");
    let node_tls = client::tls_config(&fs::read(state.join("tls/ca.crt"))?).context("the node CA")?;
    let listener: SocketAddr = format!("{INTERCEPT_ADDR}:443").parse()?;
    let size = cfg.blob_size;
    let limit = Duration::from_secs(30 + size / 20_000_000);
    let direct_auth = Some(info.auth.as_str());
    let name = Some(INTERCEPT_HOST);

    // Untimed, checked: the interception listener serves the exact image.
    let (_, redirects) =
        tokio::time::timeout(limit * 2, pull_image_as(listener, name, &node_tls, None, &info.tls, image, true))
            .await
            .map_err(|_| anyhow!("verifying the intercepted pull: no answer within {:?}", limit * 2))??;
    let (direct_image_s, intercept_image_s) = best_alternating(
        cfg.pulls,
        limit,
        ("direct image pull", "intercepted image pull"),
        || pull_image(info.addr, &info.tls, direct_auth, &info.tls, image, false),
        || pull_image_as(listener, name, &node_tls, None, &info.tls, image, false),
    )
    .await?;
    let res = InterceptResult { direct_image_s, intercept_image_s, redirects };
    eprintln!(
        "  [node] {IMAGE_LAYERS}-layer image pull as {INTERCEPT_HOST}/{REPO} through interception: {:.3} s vs {:.3} s direct ({:.2}x the time, {redirects} blobs redirected)",
        res.intercept_image_s,
        res.direct_image_s,
        res.ratio()
    );
    r.intercept = Some(res);

    let mut cmd = Command::new(&cfg.specreg);
    cmd.arg("use").arg("--undo").arg("--root").arg(root);
    tokio::task::spawn_blocking(move || run_timed(&mut cmd, &outs, "intercept-undo")).await??;
    if TcpStream::connect(listener).is_ok() {
        bail!("{listener} still accepts after `use --undo`");
    }
    Ok(())
}

/// One `use`, the proxy measures when `measure`, one `--undo`.
#[allow(clippy::too_many_arguments)]
async fn use_cycle(
    cfg: &NodeConfig,
    info_path: &Path,
    root: &Path,
    info: &Info,
    digest: &str,
    manifest: &Bytes,
    image: &Image,
    measure: bool,
    r: &mut NodeResult,
) -> Result<()> {
    let outs = root.parent().unwrap_or(root).to_owned();
    let name = root.file_name().and_then(|n| n.to_str()).unwrap_or("root").to_owned();
    let mut cmd = Command::new(&cfg.specreg);
    cmd.arg("use")
        .arg("--info")
        .arg(info_path)
        .arg("--root")
        .arg(root)
        .arg("--job-user-home")
        .arg("/home");
    let (wall, out) = {
        let outs = outs.clone();
        let name = name.clone();
        tokio::task::spawn_blocking(move || run_timed(&mut cmd, &outs, &format!("{name}-use"))).await??
    };
    let (printed, written) = parse_use_line(&out)?;
    let daemon = fs::read_to_string(root.join("etc/docker/daemon.json"))?;
    if !daemon.contains("1400") || !daemon.contains("registry-mirrors") {
        bail!("daemon.json after `use` lacks mtu or registry-mirrors: {daemon}");
    }
    r.use_wall_ms.push(wall);
    r.use_printed_ms.push(printed);
    r.files_written = written.or(r.files_written);
    eprintln!("  [node] use: {wall:.1} ms wall, printed {printed:.0} ms");

    if measure {
        measure_proxy(cfg, root, info, digest, manifest, image, r).await?;
    }

    let mut cmd = Command::new(&cfg.specreg);
    cmd.arg("use").arg("--undo").arg("--root").arg(root);
    let (undo_wall, _) =
        tokio::task::spawn_blocking(move || run_timed(&mut cmd, &outs, &format!("{name}-undo"))).await??;
    let daemon = fs::read_to_string(root.join("etc/docker/daemon.json"))?;
    if daemon != "{\"mtu\":1400}\n" {
        bail!("daemon.json after `use --undo` is not the original: {daemon:?}");
    }
    r.undo_wall_ms.push(undo_wall);
    eprintln!("  [node] use --undo: {undo_wall:.1} ms wall");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn measure_proxy(
    cfg: &NodeConfig,
    root: &Path,
    info: &Info,
    digest: &str,
    manifest: &Bytes,
    image: &Image,
    r: &mut NodeResult,
) -> Result<()> {
    let state = root.join("var/lib/specreg/use");
    let addr_text = fs::read_to_string(state.join("proxy.addr"))?;
    let proxy: SocketAddr = addr_text
        .trim()
        .parse()
        .with_context(|| format!("proxy.addr holds {addr_text:?}"))?;
    let node_ca = fs::read(state.join("tls/ca.crt"))?;
    let node_tls = client::tls_config(&node_ca).context("the node CA")?;
    wait_ready_tls(proxy, &node_tls, None, Duration::from_secs(10)).await?;
    let size = cfg.blob_size;
    let limit = Duration::from_secs(30 + size / 20_000_000);
    let direct_auth = Some(info.auth.as_str());

    // Untimed: both paths give the exact bytes (and the page cache holds the blob).
    let check = async {
        pull_blob(info.addr, &info.tls, direct_auth, &info.tls, digest, size, true).await?;
        pull_blob(proxy, &node_tls, None, &info.tls, digest, size, true).await
    };
    tokio::time::timeout(limit * 2, check)
        .await
        .map_err(|_| anyhow!("verifying pulls: no answer within {:?}", limit * 2))??;

    // Alternating, so drift on the machine hits both alike; the fastest of each is kept.
    r.direct_blob_s = f64::INFINITY;
    r.proxy_blob_s = f64::INFINITY;
    let proxy_pid = fs::read_to_string(state.join("proxy.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let proxy_cpu = || proxy_pid.and_then(|pid| crate::servers::cpu_seconds(pid).ok());
    let mut cpu_total = Some(0.0);
    for _ in 0..cfg.pulls.max(1) {
        let d = tokio::time::timeout(limit, pull_blob(info.addr, &info.tls, direct_auth, &info.tls, digest, size, false))
            .await
            .map_err(|_| anyhow!("direct pull: no answer within {limit:?}"))??;
        let cpu_before = proxy_cpu();
        let p = tokio::time::timeout(limit, pull_blob(proxy, &node_tls, None, &info.tls, digest, size, false))
            .await
            .map_err(|_| anyhow!("proxy pull: no answer within {limit:?}"))??;
        cpu_total = match (cpu_total, cpu_before, proxy_cpu()) {
            (Some(t), Some(a), Some(b)) => Some(t + b - a),
            _ => None,
        };
        r.direct_blob_s = r.direct_blob_s.min(d);
        r.proxy_blob_s = r.proxy_blob_s.min(p);
    }
    r.proxy_cpu_s_per_gib =
        cpu_total.map(|c| c * crate::workload::GIB / (size as f64 * cfg.pulls.max(1) as f64));
    eprintln!(
        "  [node] blob pull: direct {:.0} MB/s, through the proxy {:.0} MB/s ({:.2}x the time)",
        r.direct_mb_s(),
        r.proxy_mb_s(),
        r.blob_ratio()
    );

    // The several-layer image, as a container client pulls it; checked once, then timed
    // alternately, the fastest of each kept.
    let check = async {
        pull_image(info.addr, &info.tls, direct_auth, &info.tls, image, true).await?;
        pull_image(proxy, &node_tls, None, &info.tls, image, true).await
    };
    let (_, redirects) = tokio::time::timeout(limit * 2, check)
        .await
        .map_err(|_| anyhow!("verifying image pulls: no answer within {:?}", limit * 2))??;
    r.proxy_image_redirects = redirects;
    (r.direct_image_s, r.proxy_image_s) = best_alternating(
        cfg.pulls,
        limit,
        ("direct image pull", "proxy image pull"),
        || pull_image(info.addr, &info.tls, direct_auth, &info.tls, image, false),
        || pull_image(proxy, &node_tls, None, &info.tls, image, false),
    )
    .await?;
    eprintln!(
        "  [node] {IMAGE_LAYERS}-layer image pull: direct {:.0} MB/s, through the proxy {:.0} MB/s ({:.2}x the time, {redirects} blobs redirected)",
        r.direct_image_mb_s(),
        r.proxy_image_mb_s(),
        r.image_ratio()
    );

    let n = cfg.manifest_gets.max(1);
    let d = manifest_gets(info.addr, &info.tls, direct_auth, n, manifest).await?;
    let p = manifest_gets(proxy, &node_tls, None, n, manifest).await?;
    r.direct_manifest_mean_ms = mean(&d);
    r.proxy_manifest_mean_ms = mean(&p);
    r.direct_manifest_p50_ms = median(&d);
    r.proxy_manifest_p50_ms = median(&p);
    eprintln!(
        "  [node] manifest GET x{n}: direct {:.3} ms, through the proxy {:.3} ms mean",
        r.direct_manifest_mean_ms, r.proxy_manifest_mean_ms
    );
    Ok(())
}
