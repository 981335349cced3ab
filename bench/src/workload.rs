//! The workload run against each server, phase by phase, with its measurements.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::client::{self, Conn, FileBody, OCI_MANIFEST};
use crate::servers::Server;
use crate::load;
use crate::wrk::{self, WrkResult};

pub const GIB: f64 = (1u64 << 30) as f64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Phase {
    /// Monolithic push of the big blob (POST, then one PUT with the whole body).
    Mono,
    /// Chunked push of the big blob (PATCHes with Content-Range, then PUT).
    Chunked,
    /// Pull of the big blob.
    Pull,
    /// Small blob pushes from concurrent clients.
    Small,
    /// Manifest PUTs from concurrent clients.
    Manifests,
    /// Manifest HEAD (built-in generator) and GET (wrk) by tag under keep-alive load.
    Load,
    /// specreg only (issue #5): `specreg use` / `use --undo` wall time on a fresh --root,
    /// and blob and manifest pulls through the mirror proxy against the same pulls
    /// straight from a TLS buildset registry.
    Node,
    /// specreg only against skopeo (issue #7): `specreg copy` and `skopeo copy` of the same
    /// 10-layer image between two local registries, and a re-copy that must move nothing.
    Copy,
    /// specreg promote (issue #8) of a small and a big image, on specreg and distribution:
    /// a manifest-only retag, so the time must not depend on the image size.
    Promote,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Mono,
        Phase::Chunked,
        Phase::Pull,
        Phase::Small,
        Phase::Manifests,
        Phase::Load,
        Phase::Node,
        Phase::Copy,
        Phase::Promote,
    ];
    /// The phases run against every server (all but `node`, `copy` and `promote`, which
    /// start their own).
    pub fn per_server(self) -> bool {
        !matches!(self, Phase::Node | Phase::Copy | Phase::Promote)
    }
}

/// Everything that is the same for every server.
pub struct Workload {
    pub file: Arc<File>,
    pub size: u64,
    /// SHA-256 state after the file's bytes: a blob is the file plus a short tail, so
    /// each push is of a blob the server does not have yet.
    pub file_hash: Sha256,
    /// Repetitions of each big transfer; the best is reported.
    pub repeat: usize,
    pub chunk: u64,
    pub small_blobs: Vec<(Bytes, String)>,
    pub manifests: usize,
    pub concurrency: usize,
    pub load_duration: Duration,
    pub connections: Vec<u32>,
    pub phases: Vec<Phase>,
    pub wrk: PathBuf,
    /// Times the blob pulls.
    pub curl: PathBuf,
    pub script_dir: PathBuf,
    /// Also run the GET load with the built-in generator, to compare it with wrk.
    pub calibrate_load: bool,
    /// Write and delete this many bytes of scratch data before each big push (0: never).
    pub prewarm_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct PushResult {
    pub bytes: u64,
    pub secs: f64,
    pub cpu_s: f64,
    pub requests: u32,
}

impl PushResult {
    pub fn mb_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    pub fn cpu_s_per_gib(&self) -> f64 {
        self.cpu_s * GIB / self.bytes as f64
    }
    fn to_json(&self) -> Value {
        json!({"bytes": self.bytes, "seconds": self.secs, "mb_per_s": self.mb_s(),
               "server_cpu_s": self.cpu_s, "server_cpu_s_per_gib": self.cpu_s_per_gib(),
               "requests": self.requests})
    }
}

#[derive(Debug, Clone)]
pub struct RateResult {
    pub count: usize,
    pub secs: f64,
    pub cpu_s: f64,
}

impl RateResult {
    pub fn per_s(&self) -> f64 {
        self.count as f64 / self.secs
    }
    fn to_json(&self) -> Value {
        json!({"count": self.count, "seconds": self.secs, "per_s": self.per_s(), "server_cpu_s": self.cpu_s})
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Wrk,
    Builtin,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Wrk => "wrk",
            Tool::Builtin => "builtin",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadResult {
    pub method: &'static str,
    pub tool: Tool,
    pub connections: u32,
    pub wrk: WrkResult,
    pub cpu_s: f64,
}

#[derive(Debug, Default)]
pub struct ServerResult {
    pub mono: Option<PushResult>,
    pub chunked: Option<PushResult>,
    pub pull: Option<PushResult>,
    pub small: Option<RateResult>,
    pub manifests: Option<RateResult>,
    pub load: Vec<LoadResult>,
    pub peak_rss_kib: Option<u64>,
    pub total_cpu_s: Option<f64>,
}

impl ServerResult {
    pub fn load(&self, method: &str, tool: Tool, connections: u32) -> Option<&WrkResult> {
        self.load
            .iter()
            .find(|l| l.method == method && l.tool == tool && l.connections == connections)
            .map(|l| &l.wrk)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "monolithic_push": self.mono.as_ref().map(PushResult::to_json),
            "chunked_push": self.chunked.as_ref().map(PushResult::to_json),
            "pull": self.pull.as_ref().map(|p| json!({"bytes": p.bytes, "seconds": p.secs,
                "mb_per_s": p.mb_s(), "server_cpu_s": p.cpu_s, "digest_verified": true})),
            "small_blob_push": self.small.as_ref().map(RateResult::to_json),
            "manifest_put": self.manifests.as_ref().map(RateResult::to_json),
            "manifest_load": self.load.iter().map(|l| {
                let mut v = l.wrk.to_json();
                v["method"] = json!(l.method);
                v["tool"] = json!(l.tool.name());
                v["connections"] = json!(l.connections);
                v["server_cpu_s"] = json!(l.cpu_s);
                v
            }).collect::<Vec<_>>(),
            "peak_rss_kib": self.peak_rss_kib,
            "total_server_cpu_s": self.total_cpu_s,
        })
    }
}

/// Flushes dirty pages left by earlier phases so they are not written back (and charged
/// to nobody, or to the wrong server) during the next timed part.
fn settle() {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
}

/// Writes and deletes `bytes` of scratch data in `dir` (on the server's filesystem), so
/// the pages the next push fills come from memory the kernel freed a moment ago. On a VM
/// with free page reporting (virtio-balloon) pages idle for a few seconds go back to the
/// host, and filling them again costs several times more kernel time (measured here:
/// 1.7 s against 0.3 s per GiB written): without this, whichever server writes first after
/// a pause pays for the hypervisor.
fn prewarm(dir: &std::path::Path, bytes: u64) -> Result<()> {
    use std::io::Write;
    let path = dir.join(".prewarm");
    let mut f = File::create(&path)?;
    let buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    drop(f);
    // Deleted before writeback starts, so it costs no disk I/O.
    std::fs::remove_file(&path)?;
    Ok(())
}

const BIG_REPO: &str = "bench/big";
const SMALL_REPO: &str = "bench/small";
const APP_REPO: &str = "bench/app";

async fn timed<T>(what: &str, limit: Duration, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.with_context(|| what.to_owned()),
        Err(_) => bail!("{what}: no answer within {limit:?}"),
    }
}

fn log(server: &Server, msg: &str) {
    eprintln!("  [{}] {msg}", server.kind.label());
}

/// Connects to `addr` and runs one big push over that connection on a single-threaded
/// runtime of its own thread, as a real client runs one connection: the connection task
/// and the request's task share one thread instead of waking each other across the
/// runtime's workers (as a pull over this client, that hand-off per chunk held it at about
/// 2 GB/s against 3 GB/s on its own thread). Returns the result and the seconds the push
/// took, connection set-up excluded.
fn single_threaded<'a, T, F>(addr: SocketAddr, transfer: impl FnOnce(Conn) -> F + Send + 'a) -> Result<(T, f64)>
where
    T: Send,
    F: std::future::Future<Output = Result<T>> + 'a,
{
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the transfer's runtime")?;
                runtime.block_on(async move {
                    let c = Conn::connect(addr).await?;
                    let start = Instant::now();
                    let out = transfer(c).await?;
                    Ok((out, start.elapsed().as_secs_f64()))
                })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the transfer's thread panicked"))?
    })
}

/// Keeps the faster of two transfers.
fn keep_best(slot: &mut Option<PushResult>, p: PushResult) {
    if slot.as_ref().is_none_or(|b| p.mb_s() > b.mb_s()) {
        *slot = Some(p);
    }
}

impl Workload {
    fn digest_with(&self, tail: &[u8]) -> String {
        let mut h = self.file_hash.clone();
        h.update(tail);
        format!("sha256:{:x}", h.finalize())
    }

    /// Untimed preparation of a big push: flush earlier dirty data, then prewarm.
    async fn before_big_push(&self, server: &Server) -> Result<()> {
        settle();
        if self.prewarm_bytes > 0 {
            let (dir, n) = (server.dir.clone(), self.prewarm_bytes);
            tokio::task::spawn_blocking(move || prewarm(&dir, n)).await??;
        }
        Ok(())
    }

    fn has(&self, p: Phase) -> bool {
        self.phases.contains(&p)
    }

    /// A generous bound for one big transfer: 10 s plus 20 MB/s.
    fn big_limit(&self) -> Duration {
        Duration::from_secs(10 + self.size / 20_000_000)
    }

    pub async fn run(&self, server: &mut Server) -> Result<ServerResult> {
        let mut r = ServerResult::default();
        let cpu_start = server.cpu_seconds()?;
        let addr = server.addr;

        if self.has(Phase::Mono) || self.has(Phase::Pull) {
            // Repetition k > 0 pushes the file plus a tail, so every push is a new blob;
            // repetition 0 (the file alone) is the blob pulled afterwards.
            let reps = if self.has(Phase::Mono) { self.repeat } else { 1 };
            for k in 0..reps {
                let tail = if k == 0 { Bytes::new() } else { Bytes::from(format!("specreg-bench-m{k}\n")) };
                let digest = self.digest_with(&tail);
                self.before_big_push(server).await?;
                let cpu0 = server.cpu_seconds()?;
                let (body_tail, want) = (tail.clone(), digest.as_str());
                let ((), secs) = single_threaded(addr, |mut c| async move {
                    let body = FileBody::new(self.file.clone(), 0, self.size, body_tail).boxed();
                    timed("monolithic push", self.big_limit(), client::push_monolithic(&mut c, BIG_REPO, body, want)).await
                })?;
                let cpu_s = server.cpu_seconds()? - cpu0;
                let p = PushResult {
                    bytes: self.size + tail.len() as u64,
                    secs,
                    cpu_s,
                    requests: 2,
                };
                log(server, &format!("monolithic push: {:.0} MB/s, {:.2} CPU s/GiB", p.mb_s(), p.cpu_s_per_gib()));
                if self.has(Phase::Mono) {
                    keep_best(&mut r.mono, p);
                }
                server.check_alive()?;
            }
        }

        if self.has(Phase::Chunked) {
            for k in 0..self.repeat {
                let tail = Bytes::from(format!("specreg-bench-c{k}\n"));
                let digest = self.digest_with(&tail);
                self.before_big_push(server).await?;
                let cpu0 = server.cpu_seconds()?;
                let (tail_ref, want) = (&tail, digest.as_str());
                let (patches, secs) = single_threaded(addr, |mut c| async move {
                    timed(
                        "chunked push",
                        self.big_limit(),
                        client::push_chunked(&mut c, BIG_REPO, &self.file, self.size, tail_ref, self.chunk, want),
                    )
                    .await
                })?;
                let cpu_s = server.cpu_seconds()? - cpu0;
                let p = PushResult {
                    bytes: self.size + tail.len() as u64,
                    secs,
                    cpu_s,
                    requests: patches + 2,
                };
                log(server, &format!("chunked push ({patches} PATCHes): {:.0} MB/s, {:.2} CPU s/GiB", p.mb_s(), p.cpu_s_per_gib()));
                keep_best(&mut r.chunked, p);
                server.check_alive()?;
            }
        }

        if self.has(Phase::Pull) {
            let digest = self.digest_with(&Bytes::new());
            settle();
            // The blob was just written, so it is in the page cache for both servers alike:
            // this measures the serving path, not the disk. curl is the client: one thread
            // and one read loop, so the client is not what limits the figure.
            let url = format!("http://{addr}/v2/{BIG_REPO}/blobs/{digest}");
            for _ in 0..self.repeat {
                let cpu0 = server.cpu_seconds()?;
                let (n, secs) = timed("pull", self.big_limit(), client::curl_get(&self.curl, &url)).await?;
                let cpu_s = server.cpu_seconds()? - cpu0;
                if n != self.size {
                    bail!("pull returned {n} bytes, expected {}", self.size);
                }
                let p = PushResult {
                    bytes: n,
                    secs,
                    cpu_s,
                    requests: 1,
                };
                log(server, &format!("pull: {:.0} MB/s", p.mb_s()));
                keep_best(&mut r.pull, p);
            }
            // The digest is checked on one more, untimed GET.
            let mut c = Conn::connect(addr).await?;
            let (n2, d) = timed("verifying pull", self.big_limit(), async {
                let resp = client::get_blob(&mut c, BIG_REPO, &digest).await?;
                client::drain_hashed(resp).await
            })
            .await?;
            if n2 != self.size || d != digest {
                bail!("pulled blob is {n2} bytes with digest {d}, expected {} bytes {digest}", self.size);
            }
            log(server, "pulled blob digest verified");
            server.check_alive()?;
        }

        if self.has(Phase::Small) {
            settle();
            let blobs = Arc::new(self.small_blobs.clone());
            let (secs, cpu_s) = self
                .concurrently(server, "small blob pushes", blobs.len(), move |mut c, i| {
                    let blobs = blobs.clone();
                    async move {
                        let (data, digest) = &blobs[i];
                        client::push_small(&mut c, SMALL_REPO, data.clone(), digest).await?;
                        Ok(c)
                    }
                })
                .await?;
            let rr = RateResult {
                count: self.small_blobs.len(),
                secs,
                cpu_s,
            };
            log(server, &format!("small blob pushes: {:.0} blobs/s", rr.per_s()));
            r.small = Some(rr);
            server.check_alive()?;
        }

        let need_manifests = self.has(Phase::Manifests) || self.has(Phase::Load);
        let mut first_manifest = None;
        if need_manifests {
            settle();
            let mut c = Conn::connect(addr).await?;
            let config = Bytes::from_static(
                br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#,
            );
            let config_digest = client::sha256_digest(&config);
            let layer: Bytes = self.small_blobs[0].0.clone();
            let layer_digest = self.small_blobs[0].1.clone();
            client::push_small(&mut c, APP_REPO, config.clone(), &config_digest).await?;
            client::push_small(&mut c, APP_REPO, layer.clone(), &layer_digest).await?;
            let count = if self.has(Phase::Manifests) { self.manifests } else { 1 };
            let bodies: Arc<Vec<Bytes>> = Arc::new(
                (0..count)
                    .map(|i| {
                        Bytes::from(
                            serde_json::to_vec(&json!({
                                "schemaVersion": 2,
                                "mediaType": OCI_MANIFEST,
                                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                           "digest": config_digest, "size": config.len()},
                                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                            "digest": layer_digest, "size": layer.len()}],
                                "annotations": {"org.example.specreg-bench.index": i.to_string()},
                            }))
                            .expect("manifest serialises"),
                        )
                    })
                    .collect(),
            );
            first_manifest = Some(bodies[0].clone());
            settle();
            let b = bodies.clone();
            let (secs, cpu_s) = self
                .concurrently(server, "manifest PUTs", count, move |mut c, i| {
                    let b = b.clone();
                    async move {
                        client::put_manifest(&mut c, APP_REPO, &format!("t{i}"), b[i].clone()).await?;
                        Ok(c)
                    }
                })
                .await?;
            if self.has(Phase::Manifests) {
                let rr = RateResult { count, secs, cpu_s };
                log(server, &format!("manifest PUTs: {:.0} ops/s", rr.per_s()));
                r.manifests = Some(rr);
            }
            server.check_alive()?;
        }

        if self.has(Phase::Load) {
            let mut c = Conn::connect(addr).await?;
            let got = client::get_manifest(&mut c, APP_REPO, "t0").await?;
            if Some(&got) != first_manifest.as_ref() {
                bail!("GET of tag t0 does not return the pushed manifest bytes");
            }
            drop(c);
            settle();
            let path = format!("/v2/{APP_REPO}/manifests/t0");
            let url = format!("http://{addr}{path}");
            // HEAD by the built-in generator (wrk cannot do HEAD), GET by wrk, and GET by
            // the built-in generator too, to show the two tools agree.
            let mut runs = vec![("HEAD", Tool::Builtin), ("GET", Tool::Wrk)];
            if self.calibrate_load {
                runs.push(("GET", Tool::Builtin));
            }
            for (method, tool) in runs {
                for &conns in &self.connections {
                    let cpu0 = server.cpu_seconds()?;
                    let res = match tool {
                        Tool::Wrk => {
                            let (wrk, dir, url2, dur) =
                                (self.wrk.clone(), self.script_dir.clone(), url.clone(), self.load_duration);
                            tokio::task::spawn_blocking(move || wrk::run(&wrk, &dir, &url2, method, conns, dur)).await??
                        }
                        Tool::Builtin => {
                            let limit = self.load_duration + Duration::from_secs(30);
                            timed(
                                "load",
                                limit,
                                load::run(addr, method, &path, client::MANIFEST_ACCEPT, conns, self.load_duration),
                            )
                            .await?
                        }
                    };
                    let cpu_s = server.cpu_seconds()? - cpu0;
                    log(
                        server,
                        &format!(
                            "manifest {method} x{conns} ({}): {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
                            tool.name(),
                            res.requests_per_sec,
                            res.p50_ms,
                            res.p99_ms
                        ),
                    );
                    if res.requests == 0 || res.non_2xx * 100 > res.requests {
                        bail!(
                            "manifest {method} load: {} of {} answers were not 2xx",
                            res.non_2xx,
                            res.requests
                        );
                    }
                    if res.socket_errors > 0 {
                        log(server, &format!("warning: wrk reports {} socket errors", res.socket_errors));
                    }
                    r.load.push(LoadResult {
                        method,
                        tool,
                        connections: conns,
                        wrk: res,
                        cpu_s,
                    });
                    server.check_alive()?;
                }
            }
        }

        r.total_cpu_s = Some(server.cpu_seconds()? - cpu_start);
        r.peak_rss_kib = Some(server.peak_rss_kib()?);
        Ok(r)
    }

    /// Runs `count` operations from `self.concurrency` clients, each on its own
    /// keep-alive connection; returns wall seconds and server CPU seconds.
    async fn concurrently<F, Fut>(&self, server: &Server, what: &str, count: usize, op: F) -> Result<(f64, f64)>
    where
        F: Fn(Conn, usize) -> Fut + Send + Sync + Clone + 'static,
        Fut: std::future::Future<Output = Result<Conn>> + Send,
    {
        let mut conns = Vec::new();
        for _ in 0..self.concurrency {
            conns.push(Conn::connect(server.addr).await?);
        }
        let next = Arc::new(AtomicUsize::new(0));
        let cpu0 = server.cpu_seconds()?;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for mut c in conns {
            let next = next.clone();
            let op = op.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return anyhow::Ok(());
                    }
                    c = op(c, i).await?;
                }
            }));
        }
        let limit = Duration::from_secs(60 + count as u64);
        for t in tasks {
            timed(what, limit, async { t.await? }).await?;
        }
        let secs = start.elapsed().as_secs_f64();
        Ok((secs, server.cpu_seconds()? - cpu0))
    }
}
