//! The copy engine: moves an image (a single manifest, or an index / manifest list with
//! every platform) from one [`Endpoint`] to another, byte for byte so the digest stays.
//!
//! Order of work: walk the source's manifests (root first, children by digest), note
//! which the destination already has; move the blobs of the missing ones in parallel
//! (bounded, largest first) — skipped when the destination has them, mounted when another
//! repository of the destination registry is known to have them, else streamed from
//! source to destination with no temporary file; then put the manifests children first,
//! the root last under its tag, and check the destination's digest equals the source's.
//!
//! A [`Copier`] remembers, per registry, which repository holds which blob (written to it
//! or read from it), so copying several images in one run (pull-ahead, push-intermediate)
//! mounts shared base layers instead of uploading them again.

mod endpoint;
pub mod layout;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

pub use endpoint::Endpoint;

use crate::client::{BlobPush, BlobSource, ByteStream, ClientError, Manifest};
use crate::manifest;
use crate::reference::{Digest, Reference, RepoName};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    NotFound(String),
    #[error("OCI layout: {0}")]
    Layout(String),
    #[error("manifest {digest}: {message}")]
    Manifest { digest: String, message: String },
    /// The destination stored different bytes than the source's (it rewrote them).
    #[error("{destination} stored the image as {actual}, not the source's {expected}")]
    DigestChanged { destination: String, expected: String, actual: String },
}

/// What happened to one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum BlobAction {
    Copied,
    /// The destination already had it.
    Skipped,
    Mounted { from: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct BlobReport {
    pub digest: String,
    pub size: u64,
    #[serde(flatten)]
    pub action: BlobAction,
    /// Bytes sent for this blob (0 unless copied).
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ManifestReport {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// `false` when the destination already had it.
    pub copied: bool,
}

/// What a copy did, printed by `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub source: String,
    pub destination: String,
    pub digest: String,
    pub media_type: String,
    pub manifests: Vec<ManifestReport>,
    pub blobs: Vec<BlobReport>,
    /// Blob bytes sent to the destination (manifests not counted).
    pub bytes_moved: u64,
    pub blobs_copied: usize,
    pub blobs_skipped: usize,
    pub blobs_mounted: usize,
    pub seconds: f64,
}

/// Hooks for progress display; every method has a no-op default.
pub trait Progress: Send + Sync {
    fn image_started(&self, _source: &str, _blobs: usize, _bytes: u64) {}
    fn blob_started(&self, _digest: &Digest, _size: u64) {}
    fn blob_bytes(&self, _digest: &Digest, _n: u64) {}
    fn blob_finished(&self, _digest: &Digest, _size: u64, _action: &BlobAction) {}
    fn manifest_put(&self, _digest: &Digest, _media_type: &str, _copied: bool) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Blobs moved at the same time.
    pub jobs: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions { jobs: 8 }
    }
}

pub struct Copier {
    options: CopyOptions,
    progress: Arc<dyn Progress>,
    /// Destination registry → blob → a repository known to hold it.
    known: Mutex<HashMap<String, HashMap<Digest, RepoName>>>,
}

/// A manifest of the image being copied, and whether the destination has it.
struct Node {
    manifest: Manifest,
    present: bool,
}

impl Copier {
    pub fn new(options: CopyOptions, progress: Arc<dyn Progress>) -> Self {
        Copier { options, progress, known: Mutex::new(HashMap::new()) }
    }

    /// Copies `src` to `dst`. A destination without a tag or digest takes the source's
    /// tag, or is stored by digest alone.
    pub async fn copy(&self, src: &Endpoint, dst: &Endpoint) -> Result<CopyReport, CopyError> {
        let started = Instant::now();
        let root = src.root_manifest().await?;
        let nodes = self.walk(src, dst, root.clone()).await?;

        // Blobs of the manifests the destination lacks, once each, largest first.
        let mut present_blobs: HashSet<Digest> = HashSet::new();
        let mut wanted: Vec<(Digest, u64)> = Vec::new();
        let mut seen = HashSet::new();
        for node in &nodes {
            let info = parse(&node.manifest)?;
            for b in info.blobs {
                if !seen.insert(b.digest.clone()) {
                    continue;
                }
                if node.present {
                    present_blobs.insert(b.digest.clone());
                    wanted.push((b.digest, b.size.unwrap_or(0)));
                    continue;
                }
                let size = match b.size {
                    Some(s) => s,
                    None => src.blob_size(&b.digest).await?,
                };
                wanted.push((b.digest, size));
            }
        }
        wanted.sort_by_key(|w| std::cmp::Reverse(w.1));
        let total: u64 = wanted.iter().filter(|(d, _)| !present_blobs.contains(d)).map(|(_, s)| s).sum();
        self.progress.image_started(&src.to_string(), wanted.len(), total);

        let blobs = self.move_blobs(src, dst, wanted, &present_blobs).await?;
        // The source repository holds these blobs too (its manifests reference them): a
        // later copy into its registry in this run can mount from it.
        let src_registry = src.registry_key();
        for b in &blobs {
            if let Ok(d) = Digest::parse(&b.digest) {
                self.remember(&src_registry, src, &d);
            }
        }

        // Children first, so no registry sees a reference to a manifest it lacks.
        let mut manifests = Vec::new();
        for node in nodes.iter().skip(1).rev() {
            let m = &node.manifest;
            if !node.present {
                let got = dst.put_manifest(m, &Reference::Digest(m.digest.clone())).await?;
                check_digest(dst, &m.digest, &got)?;
            }
            self.progress.manifest_put(&m.digest, &m.media_type, !node.present);
            manifests.push(ManifestReport { digest: m.digest.to_string(), media_type: m.media_type.clone(), size: m.bytes.len() as u64, copied: !node.present });
        }
        let target = match dst {
            Endpoint::Registry { reference: Some(r), .. } => r.clone(),
            Endpoint::Layout { name: Some(n), .. } => Reference::parse(n).unwrap_or(Reference::Digest(root.digest.clone())),
            _ => match src.tag().and_then(|t| Reference::parse(&t).ok()) {
                Some(r @ Reference::Tag(_)) => r,
                _ => Reference::Digest(root.digest.clone()),
            },
        };
        if let Reference::Digest(d) = &target {
            if d != &root.digest {
                return Err(CopyError::DigestChanged { destination: dst.to_string(), expected: root.digest.to_string(), actual: d.to_string() });
            }
        }
        // The root is put even when present: its tag may point elsewhere.
        let got = dst.put_manifest(&root, &target).await?;
        check_digest(dst, &root.digest, &got)?;
        let name = match (dst, &target) {
            (Endpoint::Layout { name: Some(n), .. }, _) => Some(n.clone()),
            (Endpoint::Layout { .. }, Reference::Tag(t)) => Some(t.to_string()),
            _ => None,
        };
        dst.record_root(&root, name.as_deref())?;
        self.progress.manifest_put(&root.digest, &root.media_type, !nodes[0].present);
        manifests.push(ManifestReport { digest: root.digest.to_string(), media_type: root.media_type.clone(), size: root.bytes.len() as u64, copied: !nodes[0].present });

        let count = |f: fn(&BlobAction) -> bool| blobs.iter().filter(|b| f(&b.action)).count();
        Ok(CopyReport {
            source: src.to_string(),
            destination: dst.to_string(),
            digest: root.digest.to_string(),
            media_type: root.media_type.clone(),
            bytes_moved: blobs.iter().map(|b| b.bytes).sum(),
            blobs_copied: count(|a| *a == BlobAction::Copied),
            blobs_skipped: count(|a| *a == BlobAction::Skipped),
            blobs_mounted: count(|a| matches!(a, BlobAction::Mounted { .. })),
            manifests,
            blobs,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Every manifest of the image, root first, each child after its parent; `present`
    /// when the destination has it (then so are its blobs and children).
    async fn walk(&self, src: &Endpoint, dst: &Endpoint, root: Manifest) -> Result<Vec<Node>, CopyError> {
        let present = dst.has_manifest(&root.digest).await?;
        let mut nodes = vec![Node { manifest: root, present }];
        let mut seen: HashSet<Digest> = nodes.iter().map(|n| n.manifest.digest.clone()).collect();
        let mut i = 0;
        while i < nodes.len() {
            let info = parse(&nodes[i].manifest)?;
            let parent_present = nodes[i].present;
            let raw: serde_json::Value = serde_json::from_slice(&nodes[i].manifest.bytes).unwrap_or_default();
            for (k, child) in info.children.iter().enumerate() {
                if !seen.insert(child.digest.clone()) {
                    continue;
                }
                let media_type = raw["manifests"][k]["mediaType"].as_str();
                let m = src.manifest(&child.digest, media_type).await?;
                let present = parent_present || dst.has_manifest(&m.digest).await?;
                nodes.push(Node { manifest: m, present });
            }
            i += 1;
        }
        Ok(nodes)
    }

    async fn move_blobs(
        &self,
        src: &Endpoint,
        dst: &Endpoint,
        wanted: Vec<(Digest, u64)>,
        present: &HashSet<Digest>,
    ) -> Result<Vec<BlobReport>, CopyError> {
        let sem = Arc::new(tokio::sync::Semaphore::new(self.options.jobs.max(1)));
        let registry = dst.registry_key();
        // The source repository is a mount candidate when it lives on the destination registry.
        let same_registry_src = match (src.registry_key(), &registry, src.repo()) {
            (Some(a), Some(b), Some(repo)) if &a == b && Some(repo) != dst.repo() => Some(repo.clone()),
            _ => None,
        };
        let mut tasks = tokio::task::JoinSet::new();
        let mut order = Vec::new();
        for (index, (digest, size)) in wanted.into_iter().enumerate() {
            order.push(digest.clone());
            if present.contains(&digest) {
                self.progress.blob_finished(&digest, size, &BlobAction::Skipped);
                self.remember(&registry, dst, &digest);
                tasks.spawn(async move { Ok::<_, CopyError>((index, BlobReport { digest: digest.to_string(), size, action: BlobAction::Skipped, bytes: 0 })) });
                continue;
            }
            let mount_from = self.mount_candidate(&registry, dst, &digest).or_else(|| same_registry_src.clone());
            let (src, dst, sem, progress) = (src.clone(), dst.clone(), sem.clone(), self.progress.clone());
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await.expect("semaphore open");
                progress.blob_started(&digest, size);
                let action = if dst.has_blob(&digest).await? {
                    (BlobAction::Skipped, 0)
                } else {
                    let source: Arc<dyn BlobSource> = Arc::new(EndpointBlob { src, digest: digest.clone(), size, progress: progress.clone() });
                    match dst.put_blob(&digest, size, source, mount_from.as_ref()).await? {
                        BlobPush::Mounted => (BlobAction::Mounted { from: mount_from.map(|r| r.to_string()).unwrap_or_default() }, 0),
                        BlobPush::Uploaded(n) => (BlobAction::Copied, n),
                    }
                };
                progress.blob_finished(&digest, size, &action.0);
                Ok((index, BlobReport { digest: digest.to_string(), size, action: action.0, bytes: action.1 }))
            });
        }
        let mut reports: Vec<Option<BlobReport>> = vec![None; order.len()];
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok((i, r))) => {
                    self.remember(&registry, dst, &order[i]);
                    reports[i] = Some(r);
                }
                Ok(Err(e)) => {
                    tasks.abort_all();
                    return Err(e);
                }
                Err(e) => {
                    tasks.abort_all();
                    return Err(CopyError::Layout(format!("a blob transfer task failed: {e}")));
                }
            }
        }
        Ok(reports.into_iter().flatten().collect())
    }

    /// Notes that `at` (a repository of `registry`) holds `digest`.
    fn remember(&self, registry: &Option<String>, at: &Endpoint, digest: &Digest) {
        if let (Some(reg), Some(repo)) = (registry, at.repo()) {
            let mut known = self.known.lock().expect("mount map lock");
            known.entry(reg.clone()).or_default().entry(digest.clone()).or_insert_with(|| repo.clone());
        }
    }

    fn mount_candidate(&self, registry: &Option<String>, dst: &Endpoint, digest: &Digest) -> Option<RepoName> {
        let reg = registry.as_ref()?;
        let known = self.known.lock().expect("mount map lock");
        known.get(reg)?.get(digest).filter(|r| Some(*r) != dst.repo()).cloned()
    }
}

fn parse(m: &Manifest) -> Result<manifest::ManifestInfo, CopyError> {
    manifest::parse(&m.bytes, &m.media_type).map_err(|e| CopyError::Manifest { digest: m.digest.to_string(), message: e.message })
}

fn check_digest(dst: &Endpoint, expected: &Digest, got: &Digest) -> Result<(), CopyError> {
    if expected != got {
        return Err(CopyError::DigestChanged { destination: dst.to_string(), expected: expected.to_string(), actual: got.to_string() });
    }
    Ok(())
}

/// A blob of the source endpoint, reopened on every upload attempt, reporting progress.
struct EndpointBlob {
    src: Endpoint,
    digest: Digest,
    size: u64,
    progress: Arc<dyn Progress>,
}

#[async_trait::async_trait]
impl BlobSource for EndpointBlob {
    async fn open(&self) -> Result<ByteStream, ClientError> {
        use futures_util::StreamExt;
        let stream = self.src.open_blob(&self.digest, self.size).await?;
        let (progress, digest) = (self.progress.clone(), self.digest.clone());
        Ok(Box::pin(stream.inspect(move |r| {
            if let Ok(b) = r {
                progress.blob_bytes(&digest, b.len() as u64);
            }
        })))
    }
}
