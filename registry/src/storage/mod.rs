//! Where the registry keeps bytes: a content-addressed blob store, resumable upload
//! sessions, and small metadata objects (tags, manifest records, blob links).
//!
//! The trait speaks in objects and keys, not in files, so an object-storage backend can
//! implement it without the handlers changing. The filesystem backend is [`fs::FsStorage`].

#[cfg(test)]
mod crash_tests;
mod durable;
mod group_commit;
pub mod fs;
mod journal;
mod mapped;
mod push;
mod replay;

use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::reference::{Algorithm, Digest};

/// A stream of body bytes, in or out.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob {0} not found")]
    BlobNotFound(Digest),
    #[error("upload session not found")]
    UploadNotFound,
    #[error("content digest {actual} does not match the expected {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("corrupt storage: {0}")]
    Corrupt(String),
}

impl StorageError {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A random, unguessable upload session id (32 lower-case hex characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    pub fn random() -> Self {
        let n: u128 = rand::random();
        UploadId(format!("{n:032x}"))
    }

    /// Accepts only ids this registry could have made, so an id is a safe file name.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32 && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
            .then(|| UploadId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an upload session is for, fixed when it is opened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadMeta {
    /// The repository the session belongs to (requests for another name are refused).
    pub repo: String,
    /// The digest algorithm hashed while streaming.
    pub algorithm: String,
}

/// A byte range of a blob to read: `start..start+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub len: u64,
}

/// The storage backend. Keys of metadata objects are `/`-separated paths built by the
/// registry from validated names, tags and digests only.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Size of a stored blob, or `None` when absent.
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>>;

    /// Streams a blob, or a range of it; the caller has checked the range against the size.
    async fn read_blob(&self, digest: &Digest, range: ByteRange) -> Result<ByteStream>;

    /// Reads a small blob (a manifest) whole.
    async fn read_small_blob(&self, digest: &Digest, max: u64) -> Result<Bytes>;

    /// Stores bytes already verified by the caller to hash to `digest`.
    async fn put_small_blob(&self, digest: &Digest, data: Bytes) -> Result<()>;

    /// Removes a blob's content; false when it was not there.
    async fn delete_blob(&self, digest: &Digest) -> Result<bool>;

    /// Opens an upload session.
    async fn create_upload(&self, id: &UploadId, meta: &UploadMeta) -> Result<()>;

    /// The session's metadata and the number of bytes received so far.
    async fn upload_status(&self, id: &UploadId) -> Result<(UploadMeta, u64)>;

    /// Appends a chunk. When `at` is given it must equal the bytes received so far,
    /// else `Err(Ok(current))` and nothing is consumed. Returns the new size.
    async fn append_upload(
        &self,
        id: &UploadId,
        at: Option<u64>,
        body: ByteStream,
    ) -> Result<Result<u64, u64>>;

    /// Verifies the whole content against `expected` and publishes it atomically under
    /// that digest. On a mismatch the session is removed and nothing is published.
    async fn finish_upload(&self, id: &UploadId, expected: &Digest) -> Result<u64>;

    /// Removes a session and its data; false when it did not exist.
    async fn cancel_upload(&self, id: &UploadId) -> Result<bool>;

    /// Writes a small metadata object atomically (replacing any previous value).
    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<()>;

    /// Creates an empty marker object (a blob link, a catalog entry) durably; false when
    /// it already existed, which then costs no write at all.
    async fn touch_meta(&self, key: &str) -> Result<bool>;

    /// Writes a value for `key` ahead of time, durably but invisibly: readers see nothing
    /// of it until [`Storage::publish_meta`]. Dropping the result discards it.
    async fn stage_meta(&self, key: &str, value: &[u8]) -> Result<StagedMeta> {
        Ok(StagedMeta::new(key, value.to_vec(), None))
    }

    /// Makes a staged value visible under its key, replacing any previous value, at once.
    /// It is durable only after a later [`Storage::sync_meta`] of a key in the same prefix.
    async fn publish_meta(&self, staged: StagedMeta) -> Result<()> {
        self.put_meta(&staged.key, &staged.value).await
    }

    /// Waits until every object published so far next to `key` (same prefix) is durable.
    async fn sync_meta(&self, _key: &str) -> Result<()> {
        Ok(())
    }

    /// Reads a metadata object, `None` when absent.
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// The size of blob `digest` when the marker `link_key` exists (the blob is visible in
    /// a repository), `None` otherwise. A backend may answer both in one step: this is on
    /// the path of every blob HEAD and GET and of every manifest push's reference check.
    async fn linked_blob_size(&self, link_key: &str, digest: &Digest) -> Result<Option<u64>> {
        if self.get_meta(link_key).await?.is_none() {
            return Ok(None);
        }
        self.blob_size(digest).await
    }

    /// The first phase of a manifest push, which a backend may do in one step: checks that
    /// every blob of `required` is linked with its stated size, then writes the manifest's
    /// content, blob link and record (each durable on return, as by [`Storage::put_small_blob`],
    /// [`Storage::touch_meta`] and [`Storage::put_meta`]) and stages the tag values (as by
    /// [`Storage::stage_meta`], returned in the order given). When a requirement is unmet,
    /// nothing is written and the first unmet one is returned.
    async fn write_manifest(&self, required: &[RequiredBlob], write: ManifestWrite) -> Result<Result<Vec<StagedMeta>, Unmet>> {
        write_manifest_in_steps(self, required, write).await
    }

    /// Deletes a metadata object; false when it was not there.
    async fn delete_meta(&self, key: &str) -> Result<bool>;

    /// Names of the objects and sub-prefixes directly under `prefix`.
    async fn list_meta(&self, prefix: &str) -> Result<Vec<String>>;

    // ---- for the garbage collector -------------------------------------------------------

    /// Every stored blob (manifests included: they are blobs too).
    async fn list_blobs(&self) -> Result<Vec<Digest>>;

    /// When a blob's content was last written, `None` when absent.
    async fn blob_modified(&self, digest: &Digest) -> Result<Option<SystemTime>>;

    /// When a metadata object was last written, `None` when absent.
    async fn meta_modified(&self, key: &str) -> Result<Option<SystemTime>>;

    /// Every upload session with its size and the time it last received bytes.
    async fn list_uploads(&self) -> Result<Vec<UploadActivity>>;
}

/// [`Storage::write_manifest`] by the single methods: the references checked one by one,
/// then content, link, record and tag values written concurrently. The trait's default, and
/// for a wrapper that wants to see each step.
pub async fn write_manifest_in_steps<S: Storage + ?Sized>(
    storage: &S,
    required: &[RequiredBlob],
    write: ManifestWrite,
) -> Result<Result<Vec<StagedMeta>, Unmet>> {
    for (index, r) in required.iter().enumerate() {
        let found = storage.linked_blob_size(&r.link_key, &r.digest).await?;
        if !r.satisfied_by(found) {
            return Ok(Err(Unmet { index, found }));
        }
    }
    let stage = write.tags.iter().map(|(key, value)| storage.stage_meta(key, value));
    let (_, _, _, staged) = futures_util::future::try_join4(
        storage.put_small_blob(&write.digest, write.content.clone()),
        storage.touch_meta(&write.link_key),
        async {
            match &write.record {
                Some((key, value)) => storage.put_meta(key, value).await,
                None => Ok(()),
            }
        },
        futures_util::future::try_join_all(stage),
    )
    .await?;
    Ok(Ok(staged))
}

/// A blob a manifest push requires: linked in the repository, of the stated size when the
/// manifest states one.
#[derive(Debug, Clone)]
pub struct RequiredBlob {
    pub link_key: String,
    pub digest: Digest,
    pub size: Option<u64>,
}

impl RequiredBlob {
    /// Whether a blob found linked with size `found` (`None`: not linked) will do.
    pub fn satisfied_by(&self, found: Option<u64>) -> bool {
        found.is_some_and(|f| self.size.is_none_or(|s| s == f))
    }
}

/// The first requirement of [`Storage::write_manifest`] not met, and what was found instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unmet {
    pub index: usize,
    pub found: Option<u64>,
}

/// What the first phase of a manifest push writes: everything but the tags' renames.
#[derive(Debug, Clone)]
pub struct ManifestWrite {
    pub digest: Digest,
    /// The manifest bytes, verified by the caller to hash to `digest`.
    pub content: Bytes,
    /// The manifest's own blob link.
    pub link_key: String,
    /// The manifest record (key, value), when it is to be written.
    pub record: Option<(String, Vec<u8>)>,
    /// Tag values (key, value) to stage.
    pub tags: Vec<(String, Vec<u8>)>,
}

/// A metadata value written ahead by [`Storage::stage_meta`], not yet visible.
pub struct StagedMeta {
    key: String,
    value: Vec<u8>,
    /// Where a backend keeps the staged bytes; removed when dropped unpublished.
    temp: Option<PathBuf>,
}

impl StagedMeta {
    pub(crate) fn new(key: &str, value: Vec<u8>, temp: Option<PathBuf>) -> Self {
        StagedMeta { key: key.to_owned(), value, temp }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The staged bytes, when the backend kept them (a journal records them on publish).
    pub(crate) fn value(&self) -> &[u8] {
        &self.value
    }

    /// Hands the staged file over to the one publishing it.
    pub(crate) fn take_temp(&mut self) -> Option<PathBuf> {
        self.temp.take()
    }
}

impl Drop for StagedMeta {
    fn drop(&mut self) {
        // A small unlink; leaving it would only cost disk space (hidden names are never read).
        if let Some(t) = self.temp.take() {
            let _ = std::fs::remove_file(t);
        }
    }
}

/// What the garbage collector needs of an upload session.
#[derive(Debug, Clone)]
pub struct UploadActivity {
    pub id: UploadId,
    pub size: u64,
    pub last_active: SystemTime,
}

/// Parses a stored algorithm name back (storage never holds anything else).
pub(crate) fn algorithm_of(meta: &UploadMeta) -> Result<Algorithm> {
    Algorithm::parse(&meta.algorithm)
        .map_err(|_| StorageError::Corrupt(format!("upload algorithm {:?}", meta.algorithm)))
}
