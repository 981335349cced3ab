//! Expiry and garbage collection: drop tags older than the expiry, then everything no kept
//! tag reaches (manifests, repository links, blobs), then idle upload sessions.
//!
//! Mark and sweep, per repository for manifests and links and across the registry for
//! blob content. Whatever was written, linked, or touched by a request within the grace
//! window is a root, so content an ongoing push just uploaded (before its manifest
//! arrives) survives. The sweep re-checks every candidate under the exclusive side of
//! [`activity::Activity`]'s lock, so a concurrent push either sees content gone and sends
//! it again, or the sweep sees the push and keeps the content. Memory (tags, manifest
//! records, cached manifest bytes) is updated with storage, so a running server never
//! serves what was deleted.

pub(crate) mod activity;
mod report;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

pub use report::{PruneReport, PrunedBlob, PrunedManifest, PrunedTag, PrunedUpload};

use crate::error::{ErrorCode, RegistryError};
use crate::manifest;
use crate::reference::{Algorithm, Digest, RepoName};
use crate::registry::{
    blob_link_key, blob_links_prefix, manifest_key, tag_key, ManifestRecord, Registry, RepoState, TagEntry,
};

type Result<T> = std::result::Result<T, RegistryError>;

/// What one collection does.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Tags last pushed longer ago than this are deleted; `None` keeps every tag.
    pub expire: Option<Duration>,
    /// Nothing written, linked or touched more recently than this is deleted.
    pub grace: Duration,
    /// Report what would be freed; delete nothing.
    pub dry_run: bool,
    /// The clock the ages are measured against (injectable for tests).
    pub now: SystemTime,
}

impl PruneOptions {
    pub fn new(expire: Option<Duration>, grace: Duration) -> Self {
        PruneOptions {
            expire,
            grace,
            dry_run: false,
            now: SystemTime::now(),
        }
    }
}

/// The default grace window: longer than any push takes between its first blob and its
/// manifest.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// What a repository keeps and drops, decided before anything is deleted.
struct RepoPlan {
    expired_tags: Vec<(String, TagEntry)>,
    dead_manifests: Vec<Digest>,
    dead_links: Vec<Digest>,
    /// Manifests kept and every digest they (or fresh links) need in this repository.
    needed: HashSet<Digest>,
    /// Whether some tag stays.
    keeps_tags: bool,
}

/// Runs one collection over every repository of `registry`.
pub async fn prune(registry: &Registry, opts: &PruneOptions) -> Result<PruneReport> {
    let _one_at_a_time = registry.pruning.lock().await;
    let grace_start = opts.now.checked_sub(opts.grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let expire_before = opts.expire.map(|e| opts.now.checked_sub(e).unwrap_or(SystemTime::UNIX_EPOCH));
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..PruneReport::default()
    };
    let c = Collector {
        registry,
        grace_start,
        expire_before,
        dry_run: opts.dry_run,
    };

    // Every digest a kept manifest or a kept link of any repository needs.
    let mut keep: HashSet<Digest> = HashSet::new();
    for repo in repositories(registry).await? {
        let state = registry.repo_mut(&repo).await?;
        let plan = c.plan_repo(&repo, &state, &mut report).await?;
        let needed = c.apply_repo(&repo, &state, plan, &mut report).await?;
        keep.extend(needed);
    }
    c.sweep_blobs(&keep, &mut report).await?;
    c.sweep_uploads(&mut report).await?;
    if !opts.dry_run {
        registry.activity.forget_before(grace_start);
    }
    Ok(report)
}

/// Every repository: the catalog's and, in case an entry is missing there, every
/// directory of repository metadata (a repository missed would lose all its blobs).
async fn repositories(registry: &Registry) -> Result<Vec<RepoName>> {
    let mut found: BTreeSet<String> = registry.catalog().await?.into_iter().collect();
    let storage = registry.storage();
    // Name components never start with `_`; the `_tags`/`_manifests`/`_blobs` objects do.
    let mut work = vec![String::new()];
    while let Some(prefix) = work.pop() {
        let key = if prefix.is_empty() { "repos".to_owned() } else { format!("repos/{prefix}") };
        for child in storage.list_meta(&key).await? {
            if child.starts_with('_') {
                if !prefix.is_empty() {
                    found.insert(prefix.clone());
                }
            } else if prefix.is_empty() {
                work.push(child);
            } else {
                work.push(format!("{prefix}/{child}"));
            }
        }
    }
    let mut repos = Vec::with_capacity(found.len());
    for name in found {
        match RepoName::parse(&name) {
            Ok(r) => repos.push(r),
            Err(_) => tracing::warn!(repository = %name, "skipping an entry that is no repository name"),
        }
    }
    Ok(repos)
}

struct Collector<'a> {
    registry: &'a Registry,
    grace_start: SystemTime,
    expire_before: Option<SystemTime>,
    dry_run: bool,
}

/// What a set of root manifests reaches in one repository.
#[derive(Default)]
struct Reach {
    manifests: HashSet<Digest>,
    /// The manifests and every blob they reference.
    digests: HashSet<Digest>,
}

impl Collector<'_> {
    /// Within the grace window: written after its start, or touched by a request since.
    fn is_recent(&self, digest: &Digest, written: Option<SystemTime>) -> bool {
        written.is_some_and(|t| t > self.grace_start) || self.registry.activity.touched_since(digest, self.grace_start)
    }

    fn is_expired(&self, entry: &TagEntry) -> bool {
        self.expire_before.is_some_and(|before| entry.written <= before)
    }

    /// Mark: the closure of `roots` over child manifests and blobs, then over the
    /// referrers of what is kept, until nothing is added.
    async fn reach(
        &self,
        repo: &RepoName,
        roots: Vec<Digest>,
        records: &HashMap<Digest, ManifestRecord>,
        report: &mut PruneReport,
    ) -> Result<Reach> {
        let mut reach = Reach::default();
        let mut work = roots;
        loop {
            while let Some(d) = work.pop() {
                if !reach.manifests.insert(d.clone()) {
                    continue;
                }
                reach.digests.insert(d.clone());
                let Some(record) = records.get(&d) else {
                    // A child of a sparse index, or a manifest deleted by a client.
                    report.dangling.push(format!("{repo}@{d}: manifest is not in the repository"));
                    continue;
                };
                let body = match self.registry.manifest_bytes(&d).await {
                    Ok(b) => b,
                    Err(e) if e.code == ErrorCode::BlobUnknown => {
                        report.dangling.push(format!("{repo}@{d}: manifest content is missing"));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match manifest::parse(&body, &record.media_type) {
                    Ok(info) => {
                        reach.digests.extend(info.blobs.into_iter().map(|b| b.digest));
                        work.extend(info.children.into_iter().map(|c| c.digest));
                    }
                    // Stored bytes were accepted once; keep what it is, follow nothing.
                    Err(e) => {
                        tracing::warn!(repository = %repo, digest = %d, error = %e.message, "cannot parse a stored manifest")
                    }
                }
            }
            work = records
                .iter()
                .filter(|(d, r)| {
                    !reach.manifests.contains(*d)
                        && r.subject
                            .as_deref()
                            .and_then(|s| Digest::parse(s).ok())
                            .is_some_and(|s| reach.manifests.contains(&s))
                })
                .map(|(d, _)| d.clone())
                .collect();
            if work.is_empty() {
                return Ok(reach);
            }
        }
    }

    async fn plan_repo(&self, repo: &RepoName, state: &RepoState, report: &mut PruneReport) -> Result<RepoPlan> {
        let storage = self.registry.storage();
        let tags: Vec<(String, TagEntry)> =
            state.tags.read().expect("tags lock").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let records: HashMap<Digest, ManifestRecord> = state.manifests.read().expect("manifests lock").clone();

        let (expired_tags, kept_tags): (Vec<_>, Vec<_>) = tags.into_iter().partition(|(_, e)| self.is_expired(e));
        let keeps_tags = !kept_tags.is_empty();
        let mut roots: Vec<Digest> = kept_tags.into_iter().map(|(_, e)| e.digest).collect();
        for digest in records.keys() {
            let written = storage.meta_modified(&manifest_key(repo, digest)).await?;
            if self.is_recent(digest, written) {
                roots.push(digest.clone());
            }
        }
        let reach = self.reach(repo, roots, &records, report).await?;
        let mut dead_manifests: Vec<Digest> = records.keys().filter(|d| !reach.manifests.contains(*d)).cloned().collect();
        dead_manifests.sort();

        let mut needed = reach.digests;
        let mut dead_links = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            for hex in storage.list_meta(&blob_links_prefix(repo, alg)).await? {
                let Ok(digest) = Digest::parse(&format!("{alg}:{hex}")) else { continue };
                if needed.contains(&digest) {
                    continue;
                }
                let written = storage.meta_modified(&blob_link_key(repo, &digest)).await?;
                if self.is_recent(&digest, written) {
                    needed.insert(digest);
                } else {
                    dead_links.push(digest);
                }
            }
        }
        dead_links.sort();
        Ok(RepoPlan {
            expired_tags,
            dead_manifests,
            dead_links,
            needed,
            keeps_tags,
        })
    }

    /// Deletes what the plan found dead and still is; returns what the repository keeps.
    async fn apply_repo(
        &self,
        repo: &RepoName,
        state: &RepoState,
        plan: RepoPlan,
        report: &mut PruneReport,
    ) -> Result<HashSet<Digest>> {
        let storage = self.registry.storage();
        let mut needed = plan.needed;
        for (tag, entry) in plan.expired_tags {
            if !self.dry_run {
                let _writer = state.write.lock().await;
                // Pushed again since the plan: it stays, and so does what it reaches
                // (that push touched its manifest, which the re-check below keeps).
                if state.tags.read().expect("tags lock").get(&tag) != Some(&entry) {
                    continue;
                }
                storage.delete_meta(&tag_key(repo, &tag)).await?;
                state.tags.write().expect("tags lock").remove(&tag);
            }
            tracing::info!(repository = %repo, %tag, digest = %entry.digest, dry_run = self.dry_run, "expired tag");
            report.tags.push(PrunedTag {
                repository: repo.to_string(),
                tag,
                digest: entry.digest.to_string(),
            });
        }

        if self.dry_run {
            for digest in &plan.dead_manifests {
                tracing::info!(repository = %repo, %digest, dry_run = true, "unreachable manifest");
                report.manifests.push(PrunedManifest {
                    repository: repo.to_string(),
                    digest: digest.to_string(),
                });
            }
            report.blob_links += plan.dead_links.len();
            if !plan.keeps_tags && needed.is_empty() {
                report.repositories.push(repo.to_string());
            }
            return Ok(needed);
        }

        if !plan.dead_manifests.is_empty() {
            // One section per repository: requests wait for it, and every candidate is
            // re-checked inside it, so none is deleted after a request relied on it.
            let _sweep = self.registry.activity.exclusive().await;
            let _writer = state.write.lock().await;
            let tagged: HashSet<Digest> =
                state.tags.read().expect("tags lock").values().map(|e| e.digest.clone()).collect();
            let mut survivors = Vec::new();
            for digest in &plan.dead_manifests {
                let written = storage.meta_modified(&manifest_key(repo, digest)).await?;
                if tagged.contains(digest) || self.is_recent(digest, written) {
                    survivors.push(digest.clone());
                }
            }
            // A push touches the manifests it names, not what they reach in turn: keep
            // all of that with them.
            let records = state.manifests.read().expect("manifests lock").clone();
            let saved = self.reach(repo, survivors, &records, report).await?;
            needed.extend(saved.digests);
            for digest in plan.dead_manifests {
                if saved.manifests.contains(&digest) {
                    continue;
                }
                storage.delete_meta(&manifest_key(repo, &digest)).await?;
                state.manifests.write().expect("manifests lock").remove(&digest);
                tracing::info!(repository = %repo, %digest, "unreachable manifest");
                report.manifests.push(PrunedManifest {
                    repository: repo.to_string(),
                    digest: digest.to_string(),
                });
            }
        }

        if !plan.dead_links.is_empty() {
            let _sweep = self.registry.activity.exclusive().await;
            for digest in plan.dead_links {
                let key = blob_link_key(repo, &digest);
                let written = storage.meta_modified(&key).await?;
                let has_record = state.manifests.read().expect("manifests lock").contains_key(&digest);
                if needed.contains(&digest) || has_record || self.is_recent(&digest, written) {
                    needed.insert(digest);
                    continue;
                }
                storage.delete_meta(&key).await?;
                report.blob_links += 1;
            }
        }
        if needed.is_empty() {
            let _sweep = self.registry.activity.exclusive().await;
            if self.registry.uncatalog_if_empty(repo, state).await? {
                tracing::info!(repository = %repo, "empty repository");
                report.repositories.push(repo.to_string());
            }
        }
        Ok(needed)
    }

    async fn sweep_blobs(&self, keep: &HashSet<Digest>, report: &mut PruneReport) -> Result<()> {
        let storage = self.registry.storage();
        let mut blobs = storage.list_blobs().await?;
        blobs.sort();
        for digest in blobs {
            if keep.contains(&digest) {
                continue;
            }
            let _sweep = if self.dry_run {
                None
            } else {
                Some(self.registry.activity.exclusive().await)
            };
            // Re-checked under the lock: a push since the plan touched what it uses, and
            // an upload finishing now writes a new file (a new time).
            let written = storage.blob_modified(&digest).await?;
            if written.is_none() || self.is_recent(&digest, written) {
                continue;
            }
            let Some(size) = storage.blob_size(&digest).await? else { continue };
            if !self.dry_run {
                if !storage.delete_blob(&digest).await? {
                    continue;
                }
                self.registry.evict_cached(&digest);
            }
            tracing::info!(%digest, size, dry_run = self.dry_run, "unreferenced blob");
            report.freed_bytes += size;
            report.blobs.push(PrunedBlob {
                digest: digest.to_string(),
                size,
            });
        }
        Ok(())
    }

    async fn sweep_uploads(&self, report: &mut PruneReport) -> Result<()> {
        let storage = self.registry.storage();
        let mut uploads = storage.list_uploads().await?;
        uploads.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        for u in uploads {
            if u.last_active > self.grace_start {
                continue;
            }
            if !self.dry_run {
                // Not while a completion (which holds the lock shared) moves its data.
                let _sweep = self.registry.activity.exclusive().await;
                if !storage.cancel_upload(&u.id).await? {
                    continue;
                }
            }
            tracing::info!(upload = u.id.as_str(), size = u.size, dry_run = self.dry_run, "abandoned upload");
            report.freed_bytes += u.size;
            report.uploads.push(PrunedUpload {
                id: u.id.as_str().to_owned(),
                size: u.size,
            });
        }
        Ok(())
    }
}
