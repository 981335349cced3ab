//! The filesystem backend.
//!
//! Layout under the data directory:
//! ```text
//! blobs/<alg>/<hex[..2]>/<hex>     content-addressed blobs, one copy each
//! uploads/<id>/data                bytes received so far for a session
//! uploads/<id>/meta.json           the session's repository and digest algorithm
//! meta/<key>                       small metadata objects (tags, manifest records, links)
//! ```
//! Every file becomes visible by rename from a temporary name in the same directory, so no
//! name shows partial bytes. Temporary files start with `.` and are never listed.
//!
//! With durability on, uploaded blobs are flushed (data, then their directory; directory
//! fsyncs are shared between concurrent writers, [`super::durable`]). Small metadata
//! writes (a manifest's content, records, links, tags, deletes) are records of a write-ahead
//! journal instead (`<root>/journal`, [`super::journal`]): a write returns once its record
//! is flushed, one flush shared by all concurrent writers, and its file is then written
//! without a flush of its own. Opening a store replays the journal ([`super::replay`]).
//!
//! A manifest push's first phase (reference check, content, link, record, staged tags) runs
//! as one blocking task with one journal commit for all its records ([`super::push`]): the
//! hops between the runtime and blocking threads, not the flushes, were most of its cost.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::task::spawn_blocking;

use super::durable::Durability;
use super::journal::{self, sync_filesystem, Journal, Op};
use super::push;
use super::replay;
use super::{
    algorithm_of, ByteRange, ByteStream, ManifestWrite, RequiredBlob, Result, StagedMeta, Storage, StorageError,
    Unmet, UploadActivity, UploadId, UploadMeta,
};
use crate::reference::{Algorithm, Digest, Hasher};

/// Bytes gathered from the request body before one write to disk: large enough to keep
/// syscalls few, small enough to keep memory flat.
const WRITE_BATCH: usize = 1 << 20;
/// The most of a refused chunk read only to let the client see the refusal.
const DRAIN_LIMIT: usize = 64 << 20;
/// Size of one read when streaming a blob out.
const READ_CHUNK: usize = 1 << 20;
/// Chunks read ahead of the socket when streaming a blob out.
const READ_AHEAD: usize = 2;

/// State of a session kept in memory between requests. `hasher == None` means the hash
/// state is unknown (after a restart or a failed write) and is rebuilt from the file.
struct Session {
    hasher: Option<Hasher>,
    size: u64,
}

pub struct FsStorage {
    root: PathBuf,
    disk: Arc<Durability>,
    /// With durability on: where metadata writes are recorded before their files.
    journal: Option<Arc<Journal>>,
    sessions: Mutex<HashMap<UploadId, Arc<tokio::sync::Mutex<Session>>>>,
}

impl FsStorage {
    /// Opens (creating when needed) a store under `root`. With `fsync` false, data is
    /// still published by rename only after it was verified, but not forced to disk.
    pub fn open(root: impl Into<PathBuf>, fsync: bool) -> Result<Self> {
        Self::open_with(root.into(), fsync, journal::CHECKPOINT_BYTES)
    }

    fn open_with(root: PathBuf, fsync: bool, checkpoint_bytes: u64) -> Result<Self> {
        for dir in ["blobs", "uploads", "meta"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(|e| StorageError::io(format!("creating {}", p.display()), e))?;
        }
        // Also without fsync: a journal left by a crashed fsync-mode process holds writes
        // that were acknowledged.
        replay::recover(&root, fsync)
            .map_err(|e| StorageError::io(format!("replaying the journal in {}", root.display()), e))?;
        let journal = if fsync {
            let j = Journal::open(&root, checkpoint_bytes)
                .map_err(|e| StorageError::io(format!("opening the journal in {}", root.display()), e))?;
            // Writers skip names that already exist, trusting them durable: make sure of it
            // for whatever an earlier process left unflushed (and for the journal's name).
            sync_filesystem(&root).map_err(|e| StorageError::io(format!("syncing {}", root.display()), e))?;
            Some(Arc::new(j))
        } else {
            None
        };
        Ok(FsStorage {
            root,
            disk: Arc::new(Durability::new(fsync)),
            journal,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Tests: a store that checkpoints its journal past `bytes`.
    #[cfg(test)]
    pub(crate) fn open_checkpointing_at(root: impl Into<PathBuf>, bytes: u64) -> Result<Self> {
        Self::open_with(root.into(), true, bytes)
    }

    #[cfg(test)]
    pub(crate) fn journal(&self) -> &Journal {
        self.journal.as_deref().expect("fsync mode")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join(blob_rel(d))
    }

    fn upload_dir(&self, id: &UploadId) -> PathBuf {
        self.root.join("uploads").join(id.as_str())
    }

    fn meta_path(&self, key: &str) -> PathBuf {
        self.root.join(meta_rel(key))
    }

    /// The in-memory state of a session, loaded from disk when the server restarted.
    async fn session(&self, id: &UploadId) -> Result<(UploadMeta, Arc<tokio::sync::Mutex<Session>>)> {
        let dir = self.upload_dir(id);
        let meta = blocking(move || read_upload_meta(&dir)).await??;
        let mut map = self.sessions.lock().expect("session map poisoned");
        let entry = map
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(Session {
                    hasher: None,
                    size: u64::MAX,
                }))
            })
            .clone();
        Ok((meta, entry))
    }

    fn forget_session(&self, id: &UploadId) {
        self.sessions.lock().expect("session map poisoned").remove(id);
    }
}

/// A blob's path relative to the data directory (as the journal names it).
fn blob_rel(d: &Digest) -> String {
    let hex = d.hex();
    format!("blobs/{}/{}/{hex}", d.algorithm().as_str(), &hex[..2])
}

/// A metadata object's path relative to the data directory.
fn meta_rel(key: &str) -> String {
    debug_assert!(key.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
    format!("meta/{key}")
}

/// Journal mode: appends `op` for `rel`, waits until the record is durable, then writes
/// the file with `apply` (unflushed: a crash before the next checkpoint replays it). Writing
/// only after the flush means every visible file is covered by a durable record, so a name
/// found existing can be trusted durable. A checkpoint waits while this is in flight.
fn journaled<T: Default>(j: &Journal, rel: &str, op: Op<'_>, apply: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let active = j.enter();
    let seq = j.append(&active, rel, op)?;
    j.commit(seq)?;
    let out = if j.applies() { apply() } else { Ok(T::default()) };
    drop(active);
    j.maybe_checkpoint();
    out
}

/// Creates an empty file; false when it existed.
pub(super) fn create_empty(disk: &Durability, path: &Path) -> io::Result<bool> {
    let create = |p: &Path| OpenOptions::new().write(true).create_new(true).open(p);
    match create(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            disk.create_dir(path.parent().expect("meta path has a parent"))?;
            match create(path) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The size of the blob file `blob` when the link file `link` exists, `None` otherwise.
pub(super) fn linked_size(link: &Path, blob: &Path) -> Result<Option<u64>> {
    match fs::symlink_metadata(link) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => return Ok(None),
        Err(e) => return Err(StorageError::io("reading blob link", e)),
    }
    match fs::metadata(blob) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("reading blob size", e)),
    }
}

/// Removes a file; false when it was not there.
fn remove_if_present(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Journal mode: deletes `path` (`rel` in the journal). The record is flushed *before* the
/// unlink, like every other change: a delete reported done never comes back in a replay,
/// and a blob published again later (by an upload, outside the journal) sees the delete in
/// the journal already and cancels it ([`Journal::keep_blob`]).
fn journaled_delete(j: &Journal, rel: &str, path: &Path) -> io::Result<bool> {
    // Absent: nothing to record (a put racing with this one simply comes after it).
    if fs::symlink_metadata(path).is_err() {
        return Ok(false);
    }
    journaled(j, rel, Op::Delete, || remove_if_present(path))
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    spawn_blocking(f)
        .await
        .map_err(|e| StorageError::io("blocking task", io::Error::other(e)))
}

fn read_upload_meta(dir: &Path) -> Result<UploadMeta> {
    let raw = match fs::read(dir.join("meta.json")) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StorageError::UploadNotFound),
        Err(e) => return Err(StorageError::io("reading upload metadata", e)),
    };
    serde_json::from_slice(&raw).map_err(|e| StorageError::Corrupt(format!("upload metadata: {e}")))
}

/// Journal mode: makes a staged tag visible, then appends its record without waiting (the
/// caller holds a lock; [`Storage::sync_meta`] waits later). The staged bytes were flushed
/// when staged, so a crash before the record's flush leaves the tag at its old or its new
/// value, whichever rename the filesystem kept; if the record lasts, a replay rewrites it.
fn publish_journaled(j: &Journal, active: &journal::Active<'_>, rel: &str, temp: &Path, path: &Path, value: &[u8]) -> Result<()> {
    if j.applies() {
        fs::rename(temp, path)
            .inspect_err(|_| {
                let _ = fs::remove_file(temp);
            })
            .map_err(|e| StorageError::io("publishing metadata", e))?;
    } else {
        let _ = fs::remove_file(temp);
    }
    j.append(active, rel, Op::Put(value))
        .map(drop)
        .map_err(|e| StorageError::io("journaling metadata", e))
}

/// Replaces `path` by a temporary file and a rename, without flushing (for state a crash
/// may lose).
fn write_replace(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = Durability::new(false).write_temp(path, data)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// A refused chunk is read and dropped (up to a limit) before the refusal is answered: a
/// server that answers while the client is still sending, then closes, makes the client's
/// kernel see a reset, and the client reports a broken connection instead of the 416.
async fn drain(mut body: ByteStream) {
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = body.next().await {
        seen += chunk.len();
        if seen > DRAIN_LIMIT {
            break;
        }
    }
}

/// Writes every buffer of `batch` to `file` with as few syscalls as possible.
fn write_batch(file: &mut File, batch: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        let n = file.write_vectored(bufs)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "disk accepted no bytes"));
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// Asks the kernel to start writing the file's dirty pages to disk without waiting.
fn start_writeback(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a valid descriptor; failure only loses the head start.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Reads exactly `want` bytes at `pos`.
fn read_exact_at(file: &File, want: usize, pos: u64) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(want);
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob shorter than its recorded size"))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf.freeze())
}

/// Hashes a whole file with the given algorithm (used after a restart or to verify a
/// digest of another algorithm than the one streamed).
fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<(Hasher, u64)> {
    let mut f = File::open(path)?;
    let mut h = algorithm.hasher();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((h, total));
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
}

#[async_trait::async_trait]
impl Storage for FsStorage {
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(digest);
        blocking(move || match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("reading blob size", e)),
        })
        .await?
    }

    async fn linked_blob_size(&self, link_key: &str, digest: &Digest) -> Result<Option<u64>> {
        let (link, blob) = (self.meta_path(link_key), self.blob_path(digest));
        // Two stats on one blocking thread instead of a read and a stat on two.
        blocking(move || linked_size(&link, &blob)).await?
    }

    async fn write_manifest(&self, required: &[RequiredBlob], write: ManifestWrite) -> Result<Result<Vec<StagedMeta>, Unmet>> {
        let target = |rel: String| push::Target { path: self.root.join(&rel), rel };
        let plan = push::Plan {
            required: required
                .iter()
                .map(|r| (self.meta_path(&r.link_key), self.blob_path(&r.digest), r.clone()))
                .collect(),
            content: target(blob_rel(&write.digest)),
            bytes: write.content,
            link: target(meta_rel(&write.link_key)),
            record: write.record.map(|(key, value)| (target(meta_rel(&key)), value)),
            tags: write
                .tags
                .into_iter()
                .map(|(key, value)| {
                    let path = self.meta_path(&key);
                    (key, path, value)
                })
                .collect(),
        };
        let (disk, journal) = (self.disk.clone(), self.journal.clone());
        blocking(move || push::run(plan, &disk, journal.as_deref())).await?
    }

    async fn read_blob(&self, digest: &Digest, range: ByteRange) -> Result<ByteStream> {
        let path = self.blob_path(digest);
        let d = digest.clone();
        let end = range.start + range.len;
        let file = blocking(move || {
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StorageError::BlobNotFound(d)),
                Err(e) => return Err(StorageError::io("opening blob", e)),
            };
            // Mapping past the end would fault: a short file is refused up front.
            let len = f.metadata().map_err(|e| StorageError::io("opening blob", e))?.len();
            if len < end {
                return Err(StorageError::Corrupt(format!("blob {d} holds {len} bytes, fewer than the {end} asked for")));
            }
            Ok(f)
        })
        .await??;
        // One blocking reader per response keeps a few windows ahead of the socket: no
        // task spawn per chunk, one mmap each (a pread where mapping fails).
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
        spawn_blocking(move || {
            let mut pos = range.start;
            while pos < end {
                let want = ((end - pos) as usize).min(READ_CHUNK);
                let read = super::mapped::map_window(&file, pos, want).or_else(|_| read_exact_at(&file, want, pos));
                let failed = read.is_err();
                if let Ok(b) = &read {
                    pos += b.len() as u64;
                }
                // A closed channel means the client went away.
                if tx.blocking_send(read).is_err() || failed {
                    return;
                }
            }
        });
        Ok(tokio_stream_from(rx))
    }

    async fn read_small_blob(&self, digest: &Digest, max: u64) -> Result<Bytes> {
        let path = self.blob_path(digest);
        let d = digest.clone();
        blocking(move || {
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StorageError::BlobNotFound(d))
                }
                Err(e) => return Err(StorageError::io("opening blob", e)),
            };
            let mut buf = Vec::new();
            f.take(max + 1)
                .read_to_end(&mut buf)
                .map_err(|e| StorageError::io("reading blob", e))?;
            if buf.len() as u64 > max {
                return Err(StorageError::Corrupt(format!("blob {d} is larger than {max} bytes")));
            }
            Ok(Bytes::from(buf))
        })
        .await?
    }

    async fn put_small_blob(&self, digest: &Digest, data: Bytes) -> Result<()> {
        let path = self.blob_path(digest);
        let disk = self.disk.clone();
        if let Some(j) = self.journal.clone() {
            let rel = blob_rel(digest);
            return blocking(move || {
                // Existing: written after its record was flushed, or flushed by an upload.
                if path.exists() {
                    return Ok(());
                }
                journaled(&j, &rel, Op::Put(&data), || disk.write_unflushed(&path, &data))
            })
            .await?
            .map_err(|e| StorageError::io("writing blob", e));
        }
        blocking(move || {
            if path.exists() {
                // Maybe renamed by a concurrent writer that has not flushed it yet.
                return disk.settle(path.parent().expect("blob path has a parent"));
            }
            disk.write_atomic(&path, &data)
        })
        .await?
        .map_err(|e| StorageError::io("writing blob", e))
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        if let Some(j) = self.journal.clone() {
            let rel = blob_rel(digest);
            return blocking(move || journaled_delete(&j, &rel, &path))
                .await?
                .map_err(|e| StorageError::io("deleting blob", e));
        }
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StorageError::io("deleting blob", e)),
        })
        .await?
    }

    async fn create_upload(&self, id: &UploadId, meta: &UploadMeta) -> Result<()> {
        let dir = self.upload_dir(id);
        let json = serde_json::to_vec(meta).expect("upload metadata serialises");
        // Not fsynced: a session lost in a crash only makes the client start over.
        blocking(move || {
            fs::create_dir_all(&dir)?;
            File::create(dir.join("data"))?;
            write_replace(&dir.join("meta.json"), &json)
        })
        .await?
        .map_err(|e| StorageError::io("creating upload session", e))?;
        let algorithm = algorithm_of(meta)?;
        self.sessions.lock().expect("session map poisoned").insert(
            id.clone(),
            Arc::new(tokio::sync::Mutex::new(Session {
                hasher: Some(algorithm.hasher()),
                size: 0,
            })),
        );
        Ok(())
    }

    async fn upload_status(&self, id: &UploadId) -> Result<(UploadMeta, u64)> {
        let (meta, session) = self.session(id).await?;
        let mut s = session.lock().await;
        if s.size == u64::MAX {
            let data = self.upload_dir(id).join("data");
            s.size = blocking(move || fs::metadata(data).map(|m| m.len()))
                .await?
                .map_err(|e| StorageError::io("reading upload size", e))?;
        }
        Ok((meta, s.size))
    }

    async fn append_upload(
        &self,
        id: &UploadId,
        at: Option<u64>,
        mut body: ByteStream,
    ) -> Result<Result<u64, u64>> {
        let (meta, session) = self.session(id).await?;
        let algorithm = algorithm_of(&meta)?;
        // One writer per session: a second PATCH waits for the first.
        let mut s = session.lock().await;
        let data_path = self.upload_dir(id).join("data");
        if s.size == u64::MAX || s.hasher.is_none() {
            let p = data_path.clone();
            let (h, size) = blocking(move || hash_file(&p, algorithm))
                .await?
                .map_err(|e| StorageError::io("re-reading upload data", e))?;
            s.hasher = Some(h);
            s.size = size;
        }
        if let Some(at) = at {
            if at != s.size {
                let size = s.size;
                drop(s);
                drain(body).await;
                return Ok(Err(size));
            }
        }
        let p = data_path.clone();
        let file = blocking(move || OpenOptions::new().append(true).open(p))
            .await?
            .map_err(|e| StorageError::io("opening upload data", e))?;

        // Pipeline: each chunk is hashed as it arrives from the socket, while it is still
        // in this core's cache, and gathered into a batch; a blocking thread writes the
        // previous batch meanwhile. The receive and the hash run on one core, the copy into
        // the page cache on the other. The hasher sees exactly the bytes handed to the
        // writer; when a write fails, the hash state is dropped and rebuilt from the disk.
        let mut hasher = s.hasher.take().expect("hasher present");
        let mut file = Some(file);
        let mut pending: Option<tokio::task::JoinHandle<(File, io::Result<u64>)>> = None;
        let mut written = 0u64;
        let mut failure: Option<StorageError> = None;
        let mut finished = false;
        while !finished {
            let mut batch: Vec<Bytes> = Vec::new();
            let mut batch_len = 0usize;
            while batch_len < WRITE_BATCH {
                match body.next().await {
                    Some(Ok(chunk)) => {
                        if !chunk.is_empty() {
                            hasher.update(&chunk);
                            batch_len += chunk.len();
                            batch.push(chunk);
                        }
                    }
                    Some(Err(e)) => {
                        failure = Some(StorageError::io("reading request body", e));
                        finished = true;
                        break;
                    }
                    None => {
                        finished = true;
                        break;
                    }
                }
            }
            if let Some(job) = pending.take() {
                let (f, res) = job.await.map_err(|e| StorageError::io("writer task", io::Error::other(e)))?;
                match res {
                    Ok(n) => written += n,
                    Err(e) => {
                        failure.get_or_insert(StorageError::io("writing upload data", e));
                        finished = true;
                    }
                }
                file = Some(f);
            }
            if batch.is_empty() || failure.is_some() {
                continue;
            }
            let mut f = file.take().expect("writer returned the file");
            let fsync = self.disk.enabled();
            pending = Some(spawn_blocking(move || {
                let res = write_batch(&mut f, &batch);
                // Start write-back now, so the final fsync waits only for the tail.
                if fsync && res.is_ok() {
                    start_writeback(&f);
                }
                (f, res.map(|()| batch_len as u64))
            }));
        }
        if let Some(job) = pending.take() {
            let (f, res) = job.await.map_err(|e| StorageError::io("writer task", io::Error::other(e)))?;
            match res {
                Ok(n) => written += n,
                Err(e) => {
                    failure.get_or_insert(StorageError::io("writing upload data", e));
                }
            }
            file = Some(f);
        }
        match (failure, file) {
            (None, Some(_)) => {
                s.hasher = Some(hasher);
                s.size += written;
                Ok(Ok(s.size))
            }
            (failure, _) => {
                // The file may hold part of a batch: forget the hash state and size so the
                // next request rebuilds both from what is really on disk.
                s.hasher = None;
                s.size = u64::MAX;
                Err(failure.unwrap_or_else(|| StorageError::Corrupt("writer state lost".into())))
            }
        }
    }

    async fn finish_upload(&self, id: &UploadId, expected: &Digest) -> Result<u64> {
        let (meta, session) = self.session(id).await?;
        let algorithm = algorithm_of(&meta)?;
        let mut s = session.lock().await;
        let dir = self.upload_dir(id);
        let data_path = dir.join("data");
        let (actual, size) = match (s.hasher.take(), s.size) {
            (Some(h), size) if size != u64::MAX && h.algorithm() == expected.algorithm() => {
                (h.finish(), size)
            }
            _ => {
                // After a restart, or when the client names another algorithm than the
                // one streamed: hash the stored bytes.
                let alg = if expected.algorithm() != algorithm { expected.algorithm() } else { algorithm };
                let p = data_path.clone();
                let (h, size) = blocking(move || hash_file(&p, alg))
                    .await?
                    .map_err(|e| StorageError::io("hashing upload data", e))?;
                (h.finish(), size)
            }
        };
        // Whatever happens next, this session is over.
        s.size = u64::MAX;
        drop(s);
        self.forget_session(id);
        if &actual != expected {
            let d = dir.clone();
            blocking(move || fs::remove_dir_all(d)).await?.ok();
            return Err(StorageError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let blob = self.blob_path(expected);
        let rel = blob_rel(expected);
        let disk = self.disk.clone();
        let journal = self.journal.clone();
        blocking(move || -> io::Result<()> {
            disk.data(&File::open(&data_path)?)?;
            let parent = blob.parent().expect("blob path has a parent");
            disk.create_dir(parent)?;
            // Concurrent pushes of one digest all rename identical bytes: last one wins.
            fs::rename(&data_path, &blob)?;
            disk.changed(parent)?;
            // Flushed on its own, but a delete of this digest still in the journal must
            // not be replayed over it.
            if let Some(j) = &journal {
                j.keep_blob(&rel)?;
            }
            fs::remove_dir_all(&dir)
        })
        .await?
        .map_err(|e| StorageError::io("publishing blob", e))?;
        Ok(size)
    }

    async fn cancel_upload(&self, id: &UploadId) -> Result<bool> {
        let dir = self.upload_dir(id);
        let existed = blocking(move || match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StorageError::io("removing upload session", e)),
        })
        .await??;
        self.forget_session(id);
        Ok(existed)
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        let path = self.meta_path(key);
        let value = value.to_vec();
        let disk = self.disk.clone();
        if let Some(j) = self.journal.clone() {
            let rel = meta_rel(key);
            return blocking(move || journaled(&j, &rel, Op::Put(&value), || disk.write_unflushed(&path, &value)))
                .await?
                .map_err(|e| StorageError::io("writing metadata", e));
        }
        blocking(move || disk.write_atomic(&path, &value))
            .await?
            .map_err(|e| StorageError::io("writing metadata", e))
    }

    async fn stage_meta(&self, key: &str, value: &[u8]) -> Result<StagedMeta> {
        let path = self.meta_path(key);
        let disk = self.disk.clone();
        // Flushed under a hidden name in both modes. With the journal the rename comes
        // before the value's record is flushed, so this flush (beside the push's other
        // writes, no added wait) is what keeps a crash after the rename from leaving an
        // empty file, on any filesystem.
        let bytes = value.to_vec();
        let temp = blocking(move || disk.write_temp(&path, &bytes))
            .await?
            .map_err(|e| StorageError::io("staging metadata", e))?;
        // The journal records the value when it is published.
        let kept = if self.journal.is_some() { value.to_vec() } else { Vec::new() };
        Ok(StagedMeta::new(key, kept, Some(temp)))
    }

    async fn publish_meta(&self, mut staged: StagedMeta) -> Result<()> {
        let path = self.meta_path(staged.key());
        let temp = staged
            .take_temp()
            .ok_or_else(|| StorageError::Corrupt(format!("metadata {} was staged elsewhere", staged.key())))?;
        if let Some(j) = &self.journal {
            let rel = meta_rel(staged.key());
            // Done in place like the rename below; only while a checkpoint holds the
            // journal, on a blocking thread instead.
            if let Some(active) = j.try_enter() {
                return publish_journaled(j, &active, &rel, &temp, &path, staged.value());
            }
            let j = j.clone();
            return blocking(move || {
                let active = j.enter();
                publish_journaled(&j, &active, &rel, &temp, &path, staged.value())
            })
            .await?;
        }
        // One rename within a directory, no flush: done in place, because callers hold a
        // lock around it and a hop to a blocking thread would be most of their hold time.
        fs::rename(&temp, &path)
            .inspect_err(|_| {
                let _ = fs::remove_file(&temp);
            })
            .map_err(|e| StorageError::io("publishing metadata", e))?;
        self.disk.note(path.parent().expect("meta path has a parent"));
        Ok(())
    }

    async fn sync_meta(&self, key: &str) -> Result<()> {
        if let Some(j) = self.journal.clone() {
            // The journal is one ordered log: waiting for all of it is as cheap as for a key.
            let seq = j.appended();
            // Under load a flush is usually running already (another push's): wait for it
            // here rather than on a blocking thread, a thread switch less per push.
            if j.join_running_flush(seq).await {
                return Ok(());
            }
            // No flush running (or the last one failed): run one, which blocks.
            return blocking(move || {
                let active = j.enter();
                let res = j.commit(seq);
                drop(active);
                j.maybe_checkpoint();
                res
            })
            .await?
            .map_err(|e| StorageError::io("syncing metadata", e));
        }
        if !self.disk.enabled() {
            // Nothing is ever pending: no hop to a blocking thread for nothing.
            return Ok(());
        }
        let path = self.meta_path(key);
        let disk = self.disk.clone();
        blocking(move || disk.settle(path.parent().expect("meta path has a parent")))
            .await?
            .map_err(|e| StorageError::io("syncing metadata", e))
    }

    async fn touch_meta(&self, key: &str) -> Result<bool> {
        let path = self.meta_path(key);
        let disk = self.disk.clone();
        if let Some(j) = self.journal.clone() {
            let rel = meta_rel(key);
            return blocking(move || {
                // Existing: created after its record was flushed, so durable already.
                if path.exists() {
                    return Ok(false);
                }
                journaled(&j, &rel, Op::Touch, || create_empty(&disk, &path))
            })
            .await?
            .map_err(|e| StorageError::io("writing metadata", e));
        }
        blocking(move || -> io::Result<bool> {
            let created = create_empty(&disk, &path)?;
            // An empty file has no data to flush: only its directory entry must last. One
            // found existing may be a concurrent writer's, not flushed yet.
            let dir = path.parent().expect("meta path has a parent");
            if created {
                disk.changed(dir)?;
            } else {
                disk.settle(dir)?;
            }
            Ok(created)
        })
        .await?
        .map_err(|e| StorageError::io("writing metadata", e))
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.meta_path(key);
        blocking(move || match fs::read(&path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => Ok(None),
            Err(e) => Err(StorageError::io("reading metadata", e)),
        })
        .await?
    }

    async fn delete_meta(&self, key: &str) -> Result<bool> {
        let path = self.meta_path(key);
        if let Some(j) = self.journal.clone() {
            let rel = meta_rel(key);
            return blocking(move || journaled_delete(&j, &rel, &path))
                .await?
                .map_err(|e| StorageError::io("deleting metadata", e));
        }
        let disk = self.disk.clone();
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => {
                disk.changed(path.parent().expect("meta path has a parent"))
                    .map_err(|e| StorageError::io("deleting metadata", e))?;
                Ok(true)
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Ok(false),
            Err(e) => Err(StorageError::io("deleting metadata", e)),
        })
        .await?
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<String>> {
        let path = self.meta_path(prefix);
        blocking(move || {
            let entries = match fs::read_dir(&path) {
                Ok(e) => e,
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                    return Ok(Vec::new())
                }
                Err(e) => return Err(StorageError::io("listing metadata", e)),
            };
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| StorageError::io("listing metadata", e))?;
                if let Some(name) = entry.file_name().to_str() {
                    if !name.starts_with('.') {
                        names.push(name.to_owned());
                    }
                }
            }
            Ok(names)
        })
        .await?
    }

    async fn list_blobs(&self) -> Result<Vec<Digest>> {
        let root = self.root.join("blobs");
        blocking(move || walk_blobs(&root)).await?.map_err(|e| StorageError::io("listing blobs", e))
    }

    async fn blob_modified(&self, digest: &Digest) -> Result<Option<SystemTime>> {
        let path = self.blob_path(digest);
        blocking(move || modified(&path)).await?.map_err(|e| StorageError::io("reading blob time", e))
    }

    async fn meta_modified(&self, key: &str) -> Result<Option<SystemTime>> {
        let path = self.meta_path(key);
        blocking(move || modified(&path)).await?.map_err(|e| StorageError::io("reading metadata time", e))
    }

    async fn list_uploads(&self) -> Result<Vec<UploadActivity>> {
        let root = self.root.join("uploads");
        blocking(move || walk_uploads(&root)).await?.map_err(|e| StorageError::io("listing uploads", e))
    }
}

/// Modification time of a file, `None` when it does not exist.
fn modified(path: &Path) -> io::Result<Option<SystemTime>> {
    match fs::metadata(path) {
        Ok(m) => m.modified().map(Some),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Names in a directory that are not temporary files; empty when it does not exist.
fn visible_names(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        if let Some(name) = entry?.file_name().to_str() {
            if !name.starts_with('.') {
                names.push(name.to_owned());
            }
        }
    }
    Ok(names)
}

/// Every blob under `blobs/<alg>/<xx>/<hex>`; names that are no digest are skipped.
fn walk_blobs(root: &Path) -> io::Result<Vec<Digest>> {
    let mut out = Vec::new();
    for alg in visible_names(root)? {
        for fan in visible_names(&root.join(&alg))? {
            for hex in visible_names(&root.join(&alg).join(&fan))? {
                if let Ok(d) = Digest::parse(&format!("{alg}:{hex}")) {
                    out.push(d);
                }
            }
        }
    }
    Ok(out)
}

/// Sessions under `uploads/`: activity is the newest of the data and metadata files.
fn walk_uploads(root: &Path) -> io::Result<Vec<UploadActivity>> {
    let mut out = Vec::new();
    for name in visible_names(root)? {
        let Some(id) = UploadId::parse(&name) else { continue };
        let dir = root.join(&name);
        let data = fs::metadata(dir.join("data")).ok();
        let times = [data.as_ref().and_then(|m| m.modified().ok()), modified(&dir.join("meta.json"))?, modified(&dir)?];
        // A session that vanished meanwhile is gone already.
        let Some(last_active) = times.into_iter().flatten().max() else { continue };
        out.push(UploadActivity { id, size: data.map_or(0, |m| m.len()), last_active });
    }
    Ok(out)
}

/// Turns a channel of chunks into a boxed stream.
fn tokio_stream_from(rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>) -> ByteStream {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
        .boxed()
}
