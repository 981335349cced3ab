//! The `promote` phase (issue #8): `specreg promote` of a small and a big image, on
//! specreg and on distribution. Promote moves a manifest and no blob, so the two sizes
//! must take the same time within noise; the ratio big/small is the figure to watch.
//!
//! Each run puts the manifest under a fresh temporary tag `change_<run>_latest` (a
//! manifest PUT, not timed) and times the whole `specreg promote` process: the GET of the
//! temporary tag, the PUT of the final tag, the check, and the removal of the temporary tag.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::client::{self, Conn, FileBody, OCI_MANIFEST};
use crate::servers::{Server, ServerKind};

pub struct PromoteConfig {
    pub specreg: PathBuf,
    pub distribution: PathBuf,
    pub dir: PathBuf,
    pub small_bytes: u64,
    pub big_bytes: u64,
    /// Timed promotes per image and server.
    pub runs: usize,
}

/// One server, one image size.
#[derive(Debug, Clone)]
pub struct PromoteRow {
    pub server: &'static str,
    pub image_bytes: u64,
    /// Wall time of each `specreg promote` process, ms.
    pub wall_ms: Vec<f64>,
}

impl PromoteRow {
    pub fn median(&self) -> f64 {
        crate::node::median(&self.wall_ms)
    }
    pub fn min(&self) -> f64 {
        self.wall_ms.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// Pushes an image whose one layer is `size` bytes of the blob file; returns the manifest.
async fn push_image(addr: std::net::SocketAddr, repo: &str, blob: &Path, size: u64, digest: &str) -> Result<Bytes> {
    let mut c = Conn::connect(addr).await?;
    let file = Arc::new(File::open(blob)?);
    client::push_monolithic(&mut c, repo, FileBody::new(file, 0, size, Bytes::new()).boxed(), digest).await?;
    let config = Bytes::from(format!(
        r#"{{"created":"2024-01-01T00:00:00Z","architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{"Labels":{{"bench":"{repo}"}}}}}}"#
    ));
    let config_digest = client::sha256_digest(&config);
    client::push_small(&mut c, repo, config.clone(), &config_digest).await?;
    let manifest = Bytes::from(serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}],
    }))?);
    Ok(manifest)
}

fn promote_once(cfg: &PromoteConfig, addr: std::net::SocketAddr, repo: &str, run: usize, digest: &str) -> Result<f64> {
    let location = format!("{addr}/{repo}");
    let change = run.to_string();
    let started = Instant::now();
    let out = Command::new(&cfg.specreg)
        .args(["promote", "--repo", &location, "--tags", "latest", "--change", &change])
        .args(["--expect-digest", digest, "--insecure"])
        .env("SPECREG_LOG", "warn")
        .env("DOCKER_CONFIG", cfg.dir.join("no-docker-config"))
        .stdin(Stdio::null())
        .output()
        .context("running specreg promote")?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        bail!("specreg promote {location} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(ms)
}

async fn run_server(cfg: &PromoteConfig, server: &Server, blobs: &[(u64, PathBuf, String)]) -> Result<Vec<PromoteRow>> {
    client::wait_ready(server.addr, Duration::from_secs(30)).await?;
    let mut rows = Vec::new();
    for (size, path, blob_digest) in blobs {
        let repo = format!("bench/promote-{}m", size >> 20);
        let manifest = push_image(server.addr, &repo, path, *size, blob_digest).await?;
        let digest = client::sha256_digest(&manifest);
        let mut row = PromoteRow { server: server.kind.label(), image_bytes: *size, wall_ms: Vec::new() };
        for run in 0..cfg.runs {
            let mut c = Conn::connect(server.addr).await?;
            client::put_manifest(&mut c, &repo, &format!("change_{run}_latest"), manifest.clone()).await?;
            drop(c);
            let ms = tokio::task::block_in_place(|| promote_once(cfg, server.addr, &repo, run, &digest))?;
            row.wall_ms.push(ms);
        }
        // The final tag holds the pushed manifest, and the last temporary tag is gone.
        let mut c = Conn::connect(server.addr).await?;
        let served = client::get_manifest(&mut c, &repo, "latest").await?;
        if client::sha256_digest(&served) != digest {
            bail!("{}: {repo}:latest is not the promoted manifest", server.kind.label());
        }
        rows.push(row);
    }
    Ok(rows)
}

pub async fn run(cfg: &PromoteConfig) -> Result<Vec<PromoteRow>> {
    let mut blobs = Vec::new();
    for size in [cfg.small_bytes, cfg.big_bytes] {
        let path = cfg.dir.join(format!("promote-{size}.bin"));
        let hash = tokio::task::spawn_blocking({
            let p = path.clone();
            move || crate::generate_blob(&p, size)
        })
        .await??;
        blobs.push((size, path, format!("sha256:{:x}", sha2::Digest::finalize(hash))));
    }
    let mut rows = Vec::new();
    for kind in [ServerKind::SpecregFsync, ServerKind::Distribution] {
        let dir = cfg.dir.join(format!("promote-{}", kind.key()));
        std::fs::create_dir_all(&dir)?;
        let server = match kind {
            ServerKind::Distribution => Server::start_distribution(&cfg.distribution, &dir)?,
            k => Server::start_specreg(k, &cfg.specreg, &dir)?,
        };
        eprintln!("  [promote] {} on {}", kind.label(), server.addr);
        let result = run_server(cfg, &server, &blobs).await;
        let log = server.log_tail();
        server.stop();
        let _ = std::fs::remove_dir_all(&dir);
        rows.extend(result.with_context(|| format!("promote phase on {}; log tail:\n{log}", kind.label()))?);
    }
    for (_, path, _) in &blobs {
        let _ = std::fs::remove_file(path);
    }
    Ok(rows)
}

/// A table: per server, the small and big image's median and best time and the ratio.
pub fn table(rows: &[PromoteRow]) -> String {
    let mut out = format!(
        "{:<24} {:>10} {:>12} {:>10} {:>14}\n",
        "promote (1 tag)", "image MiB", "median ms", "best ms", "big/small"
    );
    for pair in rows.chunks(2) {
        let small_median = pair[0].median();
        for r in pair {
            let ratio = if std::ptr::eq(r, &pair[0]) { String::new() } else { format!("{:.2}", r.median() / small_median) };
            out.push_str(&format!(
                "{:<24} {:>10} {:>12.1} {:>10.1} {:>14}\n",
                r.server,
                r.image_bytes >> 20,
                r.median(),
                r.min(),
                ratio
            ));
        }
    }
    out
}

pub fn to_json(rows: &[PromoteRow]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| json!({"server": r.server, "image_bytes": r.image_bytes, "wall_ms": r.wall_ms, "median_ms": r.median()}))
            .collect(),
    )
}
