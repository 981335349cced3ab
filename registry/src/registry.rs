//! The registry's rules on top of storage: which blobs a repository may see, what a
//! manifest push must satisfy, how tags move, and the referrers index. Handlers speak HTTP
//! and call into this; this speaks in validated names and digests and never in HTTP.
//!
//! Each repository's tags and manifest records are held in memory once loaded, so the
//! manifest read path (tag -> digest -> bytes) touches no file on a hit. Writes to a
//! repository are serialised by its own lock and reach storage before memory, so a reader
//! never sees a tag that is not on disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, RegistryError};
use crate::manifest::{self, ManifestInfo};
use crate::prune::activity::Activity;
use crate::reference::{Algorithm, Digest, Reference, RepoName, Tag};
use crate::storage::{
    ByteRange, ByteStream, ManifestWrite, RequiredBlob, StagedMeta, Storage, StorageError, UploadId, UploadMeta,
};

type Result<T> = std::result::Result<T, RegistryError>;

/// How a registry behaves where the spec leaves a choice.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Accept DELETE of manifests, tags and blobs.
    pub delete_enabled: bool,
    /// Accept an index whose child manifests are not (yet) in the repository.
    pub allow_sparse_index: bool,
    /// Bytes of manifest content kept in memory.
    pub manifest_cache_bytes: usize,
    /// Record what requests touch, so a garbage collection may run while serving
    /// ([`crate::prune`]); without it a collection needs the registry idle.
    pub track_activity: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            delete_enabled: true,
            allow_sparse_index: false,
            manifest_cache_bytes: 8 << 20,
            track_activity: false,
        }
    }
}

/// What is recorded of a manifest in a repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ManifestRecord {
    pub(crate) media_type: String,
    pub(crate) size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) subject: Option<String>,
}

/// Where a tag points and when it was last pushed (what expiry goes by).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TagEntry {
    pub(crate) digest: Digest,
    pub(crate) written: SystemTime,
}

/// A tag as stored. Data directories of earlier versions hold the bare digest instead;
/// those tags take the time their object was last written.
#[derive(Serialize, Deserialize)]
struct StoredTag {
    digest: String,
    written_unix_ms: u64,
}

/// A tag pushed again to the same manifest is rewritten (to renew its time) only when its
/// time is older than this, so push storms cost no writes.
const TAG_RENEW_AFTER: Duration = Duration::from_secs(60);

fn stored_tag(digest: &Digest, written: SystemTime) -> Vec<u8> {
    let ms = written.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    serde_json::to_vec(&StoredTag { digest: digest.to_string(), written_unix_ms: ms }).expect("tag serialises")
}

/// The digest of a stored tag and its time, when it has one.
fn parse_stored_tag(raw: &[u8]) -> Option<(Digest, Option<SystemTime>)> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    if text.starts_with('{') {
        let t: StoredTag = serde_json::from_str(text).ok()?;
        let written = UNIX_EPOCH + Duration::from_millis(t.written_unix_ms);
        return Some((Digest::parse(&t.digest).ok()?, Some(written)));
    }
    Some((Digest::parse(text).ok()?, None))
}

#[derive(Default)]
pub(crate) struct RepoState {
    pub(crate) tags: RwLock<BTreeMap<String, TagEntry>>,
    pub(crate) manifests: RwLock<HashMap<Digest, ManifestRecord>>,
    /// Serialises writers of this repository's tags and manifests.
    pub(crate) write: tokio::sync::Mutex<()>,
    in_catalog: AtomicBool,
}

impl RepoState {
    fn is_empty(&self) -> bool {
        !self.in_catalog.load(Ordering::Relaxed)
            && self.tags.read().expect("tags lock").is_empty()
            && self.manifests.read().expect("manifests lock").is_empty()
    }
}

/// A manifest as served: its digest, recorded media type and exact bytes.
#[derive(Debug, Clone)]
pub struct ServedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
}

/// The result of a manifest push.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// One entry of a referrers index.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerDescriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

pub struct Registry {
    storage: Arc<dyn Storage>,
    policy: Policy,
    repos: RwLock<HashMap<RepoName, Arc<RepoState>>>,
    cache: Mutex<ManifestCache>,
    pub(crate) activity: Activity,
    /// One collection at a time.
    pub(crate) pruning: tokio::sync::Mutex<()>,
}

/// Manifest bytes by digest. Content-addressed, so an entry can never be stale; bounded
/// by total size, dropping arbitrary entries when full.
#[derive(Default)]
struct ManifestCache {
    entries: HashMap<Digest, Bytes>,
    bytes: usize,
}

pub(crate) fn tag_key(repo: &RepoName, tag: &str) -> String {
    format!("repos/{repo}/_tags/{tag}")
}
fn tags_prefix(repo: &RepoName) -> String {
    format!("repos/{repo}/_tags")
}
pub(crate) fn manifest_key(repo: &RepoName, d: &Digest) -> String {
    format!("repos/{repo}/_manifests/{}/{}", d.algorithm(), d.hex())
}
fn manifests_prefix(repo: &RepoName, alg: Algorithm) -> String {
    format!("repos/{repo}/_manifests/{alg}")
}
pub(crate) fn blob_link_key(repo: &RepoName, d: &Digest) -> String {
    format!("repos/{repo}/_blobs/{}/{}", d.algorithm(), d.hex())
}
pub(crate) fn blob_links_prefix(repo: &RepoName, alg: Algorithm) -> String {
    format!("repos/{repo}/_blobs/{alg}")
}
/// Catalog entries are flat: `/` in a name becomes `+`, which no name contains.
fn catalog_key(repo: &RepoName) -> String {
    format!("catalog/{}", repo.as_str().replace('/', "+"))
}

/// A blob a manifest references, found missing in `repo` (`found == None`) or of another size.
fn missing_blob(repo: &RepoName, blob: &manifest::BlobRef, found: Option<u64>) -> RegistryError {
    let msg = match found {
        None => format!("blob {} referenced by the manifest is unknown in {repo}", blob.digest),
        Some(size) => format!("blob {} is {size} bytes, the manifest says {}", blob.digest, blob.size.unwrap_or_default()),
    };
    RegistryError::new(ErrorCode::ManifestBlobUnknown, msg)
        .with_detail(serde_json::json!({ "digest": blob.digest.to_string() }))
}

fn digest_invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::DigestInvalid, msg)
}

fn manifest_unknown(repo: &RepoName, r: &dyn std::fmt::Display) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestUnknown, format!("manifest {r} is unknown in {repo}"))
}

fn blob_unknown(repo: &RepoName, d: &Digest) -> RegistryError {
    RegistryError::new(ErrorCode::BlobUnknown, format!("blob {d} is unknown in {repo}"))
}

impl Registry {
    pub fn new(storage: Arc<dyn Storage>, policy: Policy) -> Self {
        Registry {
            activity: Activity::new(policy.track_activity),
            storage,
            policy,
            repos: RwLock::new(HashMap::new()),
            cache: Mutex::new(ManifestCache::default()),
            pruning: tokio::sync::Mutex::new(()),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The in-memory state of a repository for reading, loaded from storage on first
    /// use. A repository that holds nothing is not kept, so requests for random names
    /// cannot fill memory.
    async fn repo(&self, name: &RepoName) -> Result<Arc<RepoState>> {
        self.repo_state(name, false).await
    }

    /// The state of a repository about to be written: always kept in memory, since
    /// writers update it after storage.
    pub(crate) async fn repo_mut(&self, name: &RepoName) -> Result<Arc<RepoState>> {
        self.repo_state(name, true).await
    }

    async fn repo_state(&self, name: &RepoName, for_write: bool) -> Result<Arc<RepoState>> {
        if let Some(r) = self.repos.read().expect("repos lock").get(name) {
            return Ok(r.clone());
        }
        let loaded = self.load_repo(name).await?;
        if !for_write && loaded.is_empty() {
            return Ok(Arc::new(loaded));
        }
        let mut repos = self.repos.write().expect("repos lock");
        // A racing loader may have won; only an inserted state is ever written to.
        Ok(repos.entry(name.clone()).or_insert_with(|| Arc::new(loaded)).clone())
    }

    async fn load_repo(&self, name: &RepoName) -> Result<RepoState> {
        let state = RepoState::default();
        let mut tags = BTreeMap::new();
        for tag in self.storage.list_meta(&tags_prefix(name)).await? {
            let key = tag_key(name, &tag);
            if let Some(raw) = self.storage.get_meta(&key).await? {
                let (digest, written) =
                    parse_stored_tag(&raw).ok_or_else(|| StorageError::Corrupt(format!("tag {name}:{tag}")))?;
                let written = match written {
                    Some(t) => t,
                    None => self.storage.meta_modified(&key).await?.unwrap_or_else(SystemTime::now),
                };
                tags.insert(tag, TagEntry { digest, written });
            }
        }
        let mut manifests = HashMap::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            for hex in self.storage.list_meta(&manifests_prefix(name, alg)).await? {
                let Ok(digest) = Digest::parse(&format!("{alg}:{hex}")) else { continue };
                if let Some(raw) = self.storage.get_meta(&manifest_key(name, &digest)).await? {
                    let record: ManifestRecord = serde_json::from_slice(&raw)
                        .map_err(|e| StorageError::Corrupt(format!("manifest record {digest}: {e}")))?;
                    manifests.insert(digest, record);
                }
            }
        }
        let in_catalog = !tags.is_empty() || !manifests.is_empty();
        *state.tags.write().expect("tags lock") = tags;
        *state.manifests.write().expect("manifests lock") = manifests;
        state.in_catalog.store(in_catalog, Ordering::Relaxed);
        Ok(state)
    }

    /// Drops a repository that holds nothing any more (no tag, manifest or blob link) from
    /// the catalog. The collector calls this with the activity lock held exclusively, so
    /// no push is adding to the repository meanwhile.
    pub(crate) async fn uncatalog_if_empty(&self, name: &RepoName, state: &RepoState) -> Result<bool> {
        let _writer = state.write.lock().await;
        if !state.tags.read().expect("tags lock").is_empty()
            || !state.manifests.read().expect("manifests lock").is_empty()
        {
            return Ok(false);
        }
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            if !self.storage.list_meta(&blob_links_prefix(name, alg)).await?.is_empty() {
                return Ok(false);
            }
        }
        let removed = self.storage.delete_meta(&catalog_key(name)).await?;
        state.in_catalog.store(false, Ordering::Relaxed);
        Ok(removed)
    }

    async fn ensure_in_catalog(&self, name: &RepoName, state: &RepoState) -> Result<()> {
        if !state.in_catalog.load(Ordering::Relaxed) {
            self.storage.touch_meta(&catalog_key(name)).await?;
            state.in_catalog.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether the repository has ever held anything.
    pub async fn repo_exists(&self, name: &RepoName) -> Result<bool> {
        let state = self.repo(name).await?;
        if state.in_catalog.load(Ordering::Relaxed) {
            return Ok(true);
        }
        Ok(self.storage.get_meta(&catalog_key(name)).await?.is_some())
    }

    // ---- blobs -------------------------------------------------------------------------

    /// Size of a blob visible in `repo`, `None` when not visible there. A client told
    /// "present" may rely on it: the blob counts as used for the collector's grace window.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let _in_use = self.activity.shared().await;
        self.activity.touch(digest);
        self.linked_blob_size(repo, digest).await
    }

    /// [`Self::blob_size`] for callers already holding the activity lock.
    async fn linked_blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.storage.linked_blob_size(&blob_link_key(repo, digest), digest).await?)
    }

    pub async fn read_blob(&self, digest: &Digest, range: ByteRange) -> Result<ByteStream> {
        Ok(self.storage.read_blob(digest, range).await?)
    }

    /// Makes a stored blob visible in `repo`.
    pub async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let _in_use = self.activity.shared().await;
        self.activity.touch(digest);
        self.link_blob_locked(repo, digest).await
    }

    async fn link_blob_locked(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let state = self.repo_mut(repo).await?;
        self.storage.touch_meta(&blob_link_key(repo, digest)).await?;
        self.ensure_in_catalog(repo, &state).await
    }

    /// Removes a blob from `repo`'s view. Its bytes stay while other repositories link
    /// them; reclaiming unreferenced content is the garbage collector's job.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.require_delete()?;
        if !self.storage.delete_meta(&blob_link_key(repo, digest)).await? {
            return Err(blob_unknown(repo, digest));
        }
        Ok(())
    }

    /// Cross-repository mount: true when `digest` is readable in `from` and is now linked
    /// into `repo`.
    pub async fn mount_blob(&self, repo: &RepoName, from: &RepoName, digest: &Digest) -> Result<bool> {
        let _in_use = self.activity.shared().await;
        self.activity.touch(digest);
        if self.linked_blob_size(from, digest).await?.is_none() {
            return Ok(false);
        }
        self.link_blob_locked(repo, digest).await?;
        Ok(true)
    }

    fn require_delete(&self) -> Result<()> {
        if self.policy.delete_enabled {
            Ok(())
        } else {
            Err(RegistryError::new(ErrorCode::Unsupported, "deletes are disabled on this registry"))
        }
    }

    // ---- uploads -----------------------------------------------------------------------

    pub async fn start_upload(&self, repo: &RepoName, algorithm: Algorithm) -> Result<UploadId> {
        let id = UploadId::random();
        let meta = UploadMeta {
            repo: repo.to_string(),
            algorithm: algorithm.as_str().to_owned(),
        };
        self.storage.create_upload(&id, &meta).await?;
        Ok(id)
    }

    /// Bytes received so far by a session of `repo`.
    pub async fn upload_offset(&self, repo: &RepoName, id: &UploadId) -> Result<u64> {
        let (meta, size) = self.storage.upload_status(id).await?;
        if meta.repo != repo.as_str() {
            return Err(StorageError::UploadNotFound.into());
        }
        Ok(size)
    }

    /// Appends a chunk; `Err(Ok(current))` when `at` is not the current offset.
    pub async fn append_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        at: Option<u64>,
        body: ByteStream,
    ) -> Result<std::result::Result<u64, u64>> {
        self.upload_offset(repo, id).await?;
        Ok(self.storage.append_upload(id, at, body).await?)
    }

    /// Verifies and publishes an upload, then links it into `repo`.
    pub async fn finish_upload(&self, repo: &RepoName, id: &UploadId, digest: &Digest) -> Result<u64> {
        self.upload_offset(repo, id).await?;
        // Publishing and linking form one step for the collector: it never sees the new
        // bytes unlinked, and never deletes an older copy just replaced by them.
        let _in_use = self.activity.shared().await;
        self.activity.touch(digest);
        let size = self.storage.finish_upload(id, digest).await?;
        self.link_blob_locked(repo, digest).await?;
        Ok(size)
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        self.upload_offset(repo, id).await?;
        self.storage.cancel_upload(id).await?;
        Ok(())
    }

    // ---- manifests ---------------------------------------------------------------------

    /// Resolves a reference to a digest and its record in `repo`.
    fn resolve(&self, repo: &RepoName, state: &RepoState, reference: &Reference) -> Result<(Digest, ManifestRecord)> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => state
                .tags
                .read()
                .expect("tags lock")
                .get(t.as_str())
                .map(|e| e.digest.clone())
                .ok_or_else(|| manifest_unknown(repo, t))?,
        };
        let record = state
            .manifests
            .read()
            .expect("manifests lock")
            .get(&digest)
            .cloned()
            .ok_or_else(|| manifest_unknown(repo, &digest))?;
        Ok((digest, record))
    }

    /// Digest, media type and size of a manifest, without its bytes (HEAD).
    pub async fn stat_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<(Digest, String, u64)> {
        let state = self.repo(repo).await?;
        let _in_use = self.activity.shared().await;
        let (digest, record) = self.resolve(repo, &state, reference)?;
        self.activity.touch(&digest);
        Ok((digest, record.media_type, record.size))
    }

    pub async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<ServedManifest> {
        let state = self.repo(repo).await?;
        let _in_use = self.activity.shared().await;
        let (digest, record) = self.resolve(repo, &state, reference)?;
        self.activity.touch(&digest);
        let body = self.manifest_bytes(&digest).await?;
        Ok(ServedManifest {
            digest,
            media_type: record.media_type,
            body,
        })
    }

    pub(crate) async fn manifest_bytes(&self, digest: &Digest) -> Result<Bytes> {
        if let Some(b) = self.cache.lock().expect("cache lock").entries.get(digest) {
            return Ok(b.clone());
        }
        let body = self
            .storage
            .read_small_blob(digest, manifest::MAX_MANIFEST_SIZE as u64)
            .await?;
        // Checked once per cache fill (manifests are small): without fsync, a power loss
        // can leave a renamed file without its bytes, and that must never be served.
        if digest.algorithm().digest_of(&body) != *digest {
            return Err(StorageError::Corrupt(format!("stored manifest {digest} does not match its digest")).into());
        }
        self.cache_manifest(digest, &body);
        Ok(body)
    }

    /// Forgets cached bytes of content the collector deleted.
    pub(crate) fn evict_cached(&self, digest: &Digest) {
        let mut cache = self.cache.lock().expect("cache lock");
        if let Some(old) = cache.entries.remove(digest) {
            cache.bytes -= old.len();
        }
    }

    fn cache_manifest(&self, digest: &Digest, body: &Bytes) {
        let cap = self.policy.manifest_cache_bytes;
        if body.len() > cap / 4 {
            return;
        }
        let mut cache = self.cache.lock().expect("cache lock");
        while cache.bytes + body.len() > cap {
            let Some(victim) = cache.entries.keys().next().cloned() else { break };
            if let Some(old) = cache.entries.remove(&victim) {
                cache.bytes -= old.len();
            }
        }
        if cache.entries.insert(digest.clone(), body.clone()).is_none() {
            cache.bytes += body.len();
        }
    }

    /// Stores a manifest under `reference` (a tag or its own digest) and `extra_tags`.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        extra_tags: &[Tag],
    ) -> Result<PushedManifest> {
        let media_type = match content_type {
            Some(ct) if !ct.is_empty() => ct.to_owned(),
            _ => manifest::default_media_type(&body),
        };
        let info = manifest::parse(&body, &media_type)?;
        let digest = match reference {
            Reference::Digest(d) => {
                let actual = d.algorithm().digest_of(&body);
                if &actual != d {
                    return Err(digest_invalid(format!(
                        "manifest content hashes to {actual}, not to {d}"
                    )));
                }
                actual
            }
            Reference::Tag(_) => Algorithm::Sha256.digest_of(&body),
        };
        let state = self.repo_mut(repo).await?;
        // Held until the tags are written: the collector cannot delete anything this
        // manifest relies on between the checks below and the record's write.
        let _in_use = self.activity.shared().await;
        self.activity.touch(&digest);
        self.activity
            .touch_all(info.blobs.iter().chain(&info.children).map(|b| &b.digest));
        // Child manifests are checked in memory here; blobs by storage, in the same step as
        // the first writes below (nothing is written when one is missing).
        self.check_children(repo, &state, &info)?;

        let record = ManifestRecord {
            media_type,
            size: body.len() as u64,
            subject: info.subject.as_ref().map(|s| s.to_string()),
        };
        let mut tags: Vec<&str> = extra_tags.iter().map(Tag::as_str).collect();
        if let Reference::Tag(t) = reference {
            tags.push(t.as_str());
        }

        // Crash safety without a flush per step (the order is what matters, not the count):
        // 1. Content, blob link and record are written, each durable on return (bytes
        //    flushed before the rename that names them, the rename flushed after, or both
        //    covered by a flushed journal record); with them the new tag values are written
        //    and flushed under hidden names. A backend does this in one step where it can
        //    ([`Storage::write_manifest`]).
        // 2. Only then, under the repository's lock, the tags are renamed into place: a tag
        //    that survives a crash names a manifest whose content, link and record survive
        //    too, and the lock keeps disk and memory in the same order of tag moves.
        // 3. Outside the lock, the tags' directory is flushed (one flush shared by all
        //    concurrent pushes) before the caller answers 201.
        // A crash before 3 leaves each tag at its old or its new value, never missing.
        // Content, link and record are idempotent per digest, so they need no lock.
        let now = SystemTime::now();
        let tag_value = stored_tag(&digest, now);
        let recent = |state: &RepoState, tag: &str| {
            state.tags.read().expect("tags lock").get(tag).is_some_and(|e| {
                e.digest == digest && now.duration_since(e.written).map_or(true, |age| age < TAG_RENEW_AFTER)
            })
        };
        let record_json = serde_json::to_vec(&record).expect("record serialises");
        let known = |state: &RepoState| {
            state
                .manifests
                .read()
                .expect("manifests lock")
                .get(&digest)
                .is_some_and(|r| r.media_type == record.media_type)
        };
        // Re-pushing a known manifest (a new tag on the same image) rewrites nothing.
        let wrote_record = !known(&state);
        let link_key = blob_link_key(repo, &digest);
        let record_key = manifest_key(repo, &digest);
        let to_stage: Vec<&str> = tags.iter().copied().filter(|t| !recent(&state, t)).collect();
        let required: Vec<RequiredBlob> = info
            .blobs
            .iter()
            .map(|b| RequiredBlob { link_key: blob_link_key(repo, &b.digest), digest: b.digest.clone(), size: b.size })
            .collect();
        let write = ManifestWrite {
            digest: digest.clone(),
            content: body.clone(),
            link_key,
            record: wrote_record.then(|| (record_key.clone(), record_json.clone())),
            tags: to_stage.iter().map(|t| (tag_key(repo, t), tag_value.clone())).collect(),
        };
        let staged = match self.storage.write_manifest(&required, write).await? {
            Ok(staged) => staged,
            Err(unmet) => return Err(missing_blob(repo, &info.blobs[unmet.index], unmet.found)),
        };
        self.cache_manifest(&digest, &body);
        let mut staged: HashMap<&str, StagedMeta> = to_stage.into_iter().zip(staged).collect();
        {
            let _writer = state.write.lock().await;
            if !known(&state) {
                // Deleted meanwhile, after we found it known: write the record again.
                if !wrote_record {
                    self.storage.put_meta(&record_key, &record_json).await?;
                }
                state
                    .manifests
                    .write()
                    .expect("manifests lock")
                    .insert(digest.clone(), record);
            }
            for tag in &tags {
                // Dropping an unused staged value discards it.
                let staged = staged.remove(tag);
                if recent(&state, tag) {
                    continue;
                }
                match staged {
                    Some(s) => self.storage.publish_meta(s).await?,
                    // Moved elsewhere since the check above: write it here, durably.
                    None => self.storage.put_meta(&tag_key(repo, tag), &tag_value).await?,
                }
                state.tags.write().expect("tags lock").insert(
                    (*tag).to_owned(),
                    TagEntry {
                        digest: digest.clone(),
                        written: now,
                    },
                );
            }
        }
        // Also when every tag was recent: a concurrent push may have moved it unflushed.
        if let Some(tag) = tags.first() {
            self.storage.sync_meta(&tag_key(repo, tag)).await?;
        }
        self.ensure_in_catalog(repo, &state).await?;
        Ok(PushedManifest {
            digest,
            subject: info.subject,
        })
    }

    fn check_children(&self, repo: &RepoName, state: &RepoState, info: &ManifestInfo) -> Result<()> {
        if self.policy.allow_sparse_index {
            return Ok(());
        }
        let manifests = state.manifests.read().expect("manifests lock");
        for child in &info.children {
            match manifests.get(&child.digest) {
                None => {
                    return Err(RegistryError::new(
                        ErrorCode::ManifestUnknown,
                        format!("child manifest {} is unknown in {repo}", child.digest),
                    )
                    .with_status(http::StatusCode::BAD_REQUEST)
                    .with_detail(serde_json::json!({ "digest": child.digest.to_string() })))
                }
                Some(r) if child.size.is_some_and(|s| s != r.size) => {
                    return Err(RegistryError::new(
                        ErrorCode::ManifestInvalid,
                        format!("child manifest {} is {} bytes, the index says {}", child.digest, r.size, child.size.unwrap_or_default()),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// By digest: removes the manifest and every tag on it. By tag: removes the tag only.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        self.require_delete()?;
        let state = self.repo_mut(repo).await?;
        let _writer = state.write.lock().await;
        match reference {
            Reference::Tag(t) => {
                if !state.tags.read().expect("tags lock").contains_key(t.as_str()) {
                    return Err(manifest_unknown(repo, t));
                }
                self.storage.delete_meta(&tag_key(repo, t.as_str())).await?;
                state.tags.write().expect("tags lock").remove(t.as_str());
            }
            Reference::Digest(d) => {
                if !state.manifests.read().expect("manifests lock").contains_key(d) {
                    return Err(manifest_unknown(repo, d));
                }
                let tags: Vec<String> = state
                    .tags
                    .read()
                    .expect("tags lock")
                    .iter()
                    .filter(|(_, v)| v.digest == *d)
                    .map(|(k, _)| k.clone())
                    .collect();
                // Tags first, so no tag ever points at a missing manifest.
                for t in tags {
                    self.storage.delete_meta(&tag_key(repo, &t)).await?;
                    state.tags.write().expect("tags lock").remove(&t);
                }
                self.storage.delete_meta(&manifest_key(repo, d)).await?;
                state.manifests.write().expect("manifests lock").remove(d);
            }
        }
        Ok(())
    }

    /// Tags of `repo` in lexical order, `None` when the repository is unknown.
    pub async fn tags(&self, repo: &RepoName) -> Result<Option<Vec<String>>> {
        let state = self.repo(repo).await?;
        let tags: Vec<String> = state.tags.read().expect("tags lock").keys().cloned().collect();
        if tags.is_empty() && !self.repo_exists(repo).await? {
            return Ok(None);
        }
        Ok(Some(tags))
    }

    /// Every repository name, sorted.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .storage
            .list_meta("catalog")
            .await?
            .into_iter()
            .map(|n| n.replace('+', "/"))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Descriptors of the manifests in `repo` whose subject is `subject`, optionally only
    /// those of one artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ReferrerDescriptor>> {
        let state = self.repo(repo).await?;
        let subject_str = subject.to_string();
        let mut found: Vec<(Digest, ManifestRecord)> = state
            .manifests
            .read()
            .expect("manifests lock")
            .iter()
            .filter(|(_, r)| r.subject.as_deref() == Some(subject_str.as_str()))
            .map(|(d, r)| (d.clone(), r.clone()))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::with_capacity(found.len());
        for (digest, record) in found {
            let body = match self.manifest_bytes(&digest).await {
                Ok(b) => b,
                Err(e) if e.code == ErrorCode::BlobUnknown => continue,
                Err(e) => return Err(e),
            };
            let info = manifest::parse(&body, &record.media_type)?;
            let artifact = info.artifact_type.clone().or(info.config_media_type.clone());
            if let Some(want) = artifact_type {
                if artifact.as_deref() != Some(want) {
                    continue;
                }
            }
            out.push(ReferrerDescriptor {
                media_type: record.media_type.clone(),
                digest: digest.to_string(),
                size: record.size,
                artifact_type: artifact,
                annotations: info.annotations.clone(),
            });
        }
        Ok(out)
    }
}
