//! The `copy` phase (issue #7): `specreg copy` against `skopeo copy` of the same
//! 10-layer image between two local registries in the same run, and a second
//! `specreg copy` of an image already at the destination (it must move no blob bytes).
//!
//! Source and destinations are specreg servers (plain HTTP, `--no-fsync`, so the figures
//! are the clients'). Every timed copy goes into a destination registry started for it,
//! so neither tool can mount or skip blobs left by an earlier run (skopeo keeps a blob
//! cache across runs that would otherwise let it mount).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::client;
use crate::servers::{Server, ServerKind};

pub struct CopyConfig {
    pub specreg: PathBuf,
    pub skopeo: PathBuf,
    pub dir: PathBuf,
    /// Size of the smallest layer; layer i (0-based) is (i+1) times this.
    pub layer_unit: u64,
    /// Timed copies per tool; the fastest is kept.
    pub repeat: usize,
}

#[derive(Debug, Default)]
pub struct CopyResult {
    pub layers: usize,
    pub image_bytes: u64,
    pub skopeo_s: Vec<f64>,
    pub specreg_s: Vec<f64>,
    pub recopy_specreg_s: f64,
    pub recopy_bytes_moved: u64,
    pub recopy_skopeo_s: f64,
    pub skopeo_version: String,
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

impl CopyResult {
    /// skopeo time / specreg time: how many times faster specreg is.
    pub fn speedup(&self) -> f64 {
        best(&self.skopeo_s) / best(&self.specreg_s)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "layers": self.layers,
            "image_bytes": self.image_bytes,
            "skopeo_seconds": self.skopeo_s,
            "specreg_seconds": self.specreg_s,
            "skopeo_best_seconds": best(&self.skopeo_s),
            "specreg_best_seconds": best(&self.specreg_s),
            "speedup": self.speedup(),
            "speedup_target": 2.0,
            "recopy_specreg_seconds": self.recopy_specreg_s,
            "recopy_bytes_moved": self.recopy_bytes_moved,
            "recopy_skopeo_seconds": self.recopy_skopeo_s,
            "skopeo": self.skopeo_version,
        })
    }

    pub fn table(&self) -> String {
        let mb = self.image_bytes as f64 / 1e6;
        let mut out = String::new();
        out.push_str(&format!(
            "copy ({} layers, {:.1} MB, specreg -> specreg over loopback, best of {}; fresh destination per copy)\n",
            self.layers,
            mb,
            self.specreg_s.len()
        ));
        out.push_str(&format!("  skopeo copy            {:>8.3} s  {:>7.1} MB/s   ({})\n", best(&self.skopeo_s), mb / best(&self.skopeo_s), self.skopeo_version));
        out.push_str(&format!("  specreg copy           {:>8.3} s  {:>7.1} MB/s\n", best(&self.specreg_s), mb / best(&self.specreg_s)));
        out.push_str(&format!(
            "  speedup (skopeo/specreg) {:>6.2}x   target >= 2x: {}\n",
            self.speedup(),
            if self.speedup() >= 2.0 { "met" } else { "MISSED" }
        ));
        out.push_str(&format!(
            "  re-copy, image already there: specreg {:.3} s, {} blob bytes moved (target 0: {}); skopeo {:.3} s\n",
            self.recopy_specreg_s,
            self.recopy_bytes_moved,
            if self.recopy_bytes_moved == 0 { "met" } else { "MISSED" },
            self.recopy_skopeo_s
        ));
        out
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a blob into the layout; returns its descriptor parts.
fn add_blob(dir: &Path, bytes: &[u8]) -> Result<(String, u64)> {
    let digest = hex(&Sha256::digest(bytes));
    fs::write(dir.join("blobs/sha256").join(&digest), bytes)?;
    Ok((format!("sha256:{digest}"), bytes.len() as u64))
}

/// An OCI layout with one image of 10 gzip layers of incompressible data (real gzip, so
/// neither tool has a reason to recompress), sizes 1..10 times `unit`.
fn build_layout(dir: &Path, unit: u64) -> Result<u64> {
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut rng = rand::thread_rng();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut total = 0;
    for i in 0..10u64 {
        let mut raw = vec![0u8; (unit * (i + 1)) as usize];
        rng.fill_bytes(&mut raw);
        diff_ids.push(format!("sha256:{}", hex(&Sha256::digest(&raw))));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw)?;
        let gz = gz.finish()?;
        let (digest, size) = add_blob(dir, &gz)?;
        total += size;
        layers.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))?;
    let (cd, cs) = add_blob(dir, &config)?;
    total += cs;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers,
    }))?;
    let (md, ms) = add_blob(dir, &manifest)?;
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(total)
}

fn timed(cmd: &mut Command, what: &str) -> Result<(f64, String)> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{what} failed ({}):\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}

async fn start(cfg: &CopyConfig, name: &str) -> Result<Server> {
    let dir = cfg.dir.join(name);
    fs::create_dir_all(&dir)?;
    let server = Server::start_specreg(ServerKind::SpecregNoFsync, &cfg.specreg, &dir)?;
    client::wait_ready(server.addr, Duration::from_secs(30)).await?;
    Ok(server)
}

fn specreg_copy(cfg: &CopyConfig, src: &str, dst: &str) -> Result<(f64, Value)> {
    let mut cmd = Command::new(&cfg.specreg);
    cmd.args(["copy", "--insecure", "--json", src, dst]).env("SPECREG_LOG", "warn").env("DOCKER_CONFIG", cfg.dir.join("no-docker-config"));
    let (secs, out) = timed(&mut cmd, "specreg copy")?;
    let report: Value = serde_json::from_str(&out).context("specreg copy --json output")?;
    Ok((secs, report))
}

fn skopeo_copy(cfg: &CopyConfig, src: &str, dst: &str) -> Result<(f64, String)> {
    let digest_file = cfg.dir.join("skopeo.digest");
    let tmp = cfg.dir.join("skopeo-tmp");
    fs::create_dir_all(&tmp)?;
    let mut cmd = Command::new(&cfg.skopeo);
    cmd.arg("--insecure-policy")
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--digestfile"])
        .arg(&digest_file)
        .args([src, dst])
        .env("TMPDIR", &tmp);
    let (secs, _) = timed(&mut cmd, "skopeo copy")?;
    Ok((secs, fs::read_to_string(&digest_file)?.trim().to_owned()))
}

pub async fn run(cfg: &CopyConfig) -> Result<CopyResult> {
    let mut r = CopyResult { layers: 10, ..CopyResult::default() };
    r.skopeo_version = Command::new(&cfg.skopeo)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .with_context(|| format!("running {} (apt-get install -y skopeo, or bench/run.sh)", cfg.skopeo.display()))?;
    let layout = cfg.dir.join("layout");
    r.image_bytes = build_layout(&layout, cfg.layer_unit)?;

    let source = start(cfg, "source").await?;
    let result = measure(cfg, &layout, &source, &mut r).await;
    let log = source.log_tail();
    source.stop();
    result.with_context(|| format!("copy phase; source registry log (tail):\n{log}"))?;
    Ok(r)
}

async fn measure(cfg: &CopyConfig, layout: &Path, source: &Server, r: &mut CopyResult) -> Result<()> {
    let src = format!("docker://{}/bench/image:v1", source.addr);
    let (_, seeded) = specreg_copy(cfg, &format!("oci:{}:v1", layout.display()), &src)?;
    let digest = seeded["digest"].as_str().unwrap_or_default().to_owned();
    let mut last_specreg_dst = None;
    let mut last_skopeo_dst = None;
    for i in 0..cfg.repeat.max(1) {
        // Alternate which tool goes first, so neither always meets a warmer page cache.
        for tool in if i % 2 == 0 { ["skopeo", "specreg"] } else { ["specreg", "skopeo"] } {
            let dst = start(cfg, &format!("{tool}-{i}")).await?;
            let target = format!("docker://{}/bench/copied:v1", dst.addr);
            if tool == "skopeo" {
                let (secs, d) = skopeo_copy(cfg, &src, &target)?;
                if d != digest {
                    bail!("skopeo stored {d}, the source is {digest}: not a byte-exact copy");
                }
                r.skopeo_s.push(secs);
                if let Some(old) = last_skopeo_dst.replace((dst, target)) {
                    old.0.stop();
                }
            } else {
                let (secs, report) = specreg_copy(cfg, &src, &target)?;
                if report["digest"] != digest.as_str() || report["blobs_copied"] != 11 {
                    bail!("specreg copy did not copy the whole image: {report:#}");
                }
                r.specreg_s.push(secs);
                if let Some(old) = last_specreg_dst.replace((dst, target)) {
                    old.0.stop();
                }
            }
            eprintln!("copy: {tool} run {} done", i + 1);
        }
    }
    if let Some((dst, target)) = last_specreg_dst {
        let (secs, report) = specreg_copy(cfg, &src, &target)?;
        r.recopy_specreg_s = secs;
        r.recopy_bytes_moved = report["bytes_moved"].as_u64().unwrap_or(u64::MAX);
        dst.stop();
    }
    if let Some((dst, target)) = last_skopeo_dst {
        r.recopy_skopeo_s = skopeo_copy(cfg, &src, &target)?.0;
        dst.stop();
    }
    let _ = File::open(layout.join("index.json"))?;
    Ok(())
}
