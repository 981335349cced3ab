//! Ordering of a manifest push's writes (issue #3, durability): a tag may become visible only
//! after the manifest's content, blob link and record were written durably, a failed push
//! leaves the old tag and no stray file, and concurrent pushes leave a store that reloads
//! whole. The real filesystem backend runs underneath; a thin wrapper only watches the
//! calls (and fails one on demand) and checks the files on disk at the moment a tag moves.
//! Every test runs twice: with the push's first phase split into the single storage calls
//! (each watched), and with the backend's own batched `write_manifest` (watched as a whole).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use specreg_registry::reference::{Digest, Reference, RepoName, Tag};
use specreg_registry::registry::{Policy, Registry};
use specreg_registry::storage::fs::FsStorage;
use specreg_registry::storage::{
    write_manifest_in_steps, ByteRange, ByteStream, ManifestWrite, RequiredBlob, Result, StagedMeta, Storage,
    StorageError, Unmet, UploadActivity, UploadId, UploadMeta,
};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A manifest that references nothing, so a push needs no blobs; `n` makes it unique.
fn index(n: usize) -> (Bytes, String) {
    let body = format!(r#"{{"schemaVersion":2,"mediaType":"{INDEX}","manifests":[],"annotations":{{"n":"{n}"}}}}"#);
    let hex = format!("{:x}", Sha256::digest(body.as_bytes()));
    (Bytes::from(body), hex)
}

/// Watches the writes: which finished, and what was on disk when a tag was made visible.
struct Watch {
    inner: FsStorage,
    root: PathBuf,
    /// Hand a push's first phase to the backend whole, instead of in single calls.
    batched: bool,
    /// Keys (and `blob:<hex>`) whose write has returned.
    done: Mutex<HashSet<String>>,
    /// Events in order: `publish <key>`, `sync <key>`, `put <key>`.
    events: Mutex<Vec<String>>,
    /// tag key -> manifest hex the test is pushing there.
    expect: Mutex<HashMap<String, String>>,
    /// Problems seen at the moment a tag moved.
    violations: Mutex<Vec<String>>,
    /// Writes to keys containing this fail.
    fail_on: Mutex<Option<String>>,
}

impl Watch {
    fn new(root: &Path, batched: bool) -> Arc<Self> {
        Arc::new(Watch {
            inner: FsStorage::open(root, true).unwrap(),
            root: root.to_path_buf(),
            batched,
            done: Mutex::default(),
            events: Mutex::default(),
            expect: Mutex::default(),
            violations: Mutex::default(),
            fail_on: Mutex::default(),
        })
    }

    fn failing(&self, key: &str) -> Result<()> {
        match &*self.fail_on.lock().unwrap() {
            Some(f) if key.contains(f.as_str()) => {
                Err(StorageError::io("injected", std::io::Error::other(format!("injected failure on {key}"))))
            }
            _ => Ok(()),
        }
    }

    /// A tag is about to become visible: what it names must be complete already.
    fn check_before_tag(&self, key: &str) {
        let Some(hex) = self.expect.lock().unwrap().get(key).cloned() else { return };
        let done = self.done.lock().unwrap();
        let mut problems = Vec::new();
        for needed in [
            format!("blob:{hex}"),
            format!("repos/app/_blobs/sha256/{hex}"),
            format!("repos/app/_manifests/sha256/{hex}"),
        ] {
            if !done.contains(&needed) {
                problems.push(format!("{key} published before {needed} was written"));
            }
        }
        let content = self.root.join("blobs/sha256").join(&hex[..2]).join(&hex);
        match fs::read(&content) {
            Ok(b) if format!("{:x}", Sha256::digest(&b)) == hex => {}
            other => problems.push(format!("{key}: content file not whole on disk: {:?}", other.map(|b| b.len()))),
        }
        for f in [format!("meta/repos/app/_manifests/sha256/{hex}"), format!("meta/repos/app/_blobs/sha256/{hex}")] {
            if !self.root.join(&f).is_file() {
                problems.push(format!("{key}: {f} missing on disk"));
            }
        }
        self.violations.lock().unwrap().extend(problems);
    }

    fn event(&self, e: String) {
        self.events.lock().unwrap().push(e);
    }
}

#[async_trait::async_trait]
impl Storage for Watch {
    async fn blob_size(&self, d: &Digest) -> Result<Option<u64>> {
        self.inner.blob_size(d).await
    }
    async fn read_blob(&self, d: &Digest, r: ByteRange) -> Result<ByteStream> {
        self.inner.read_blob(d, r).await
    }
    async fn read_small_blob(&self, d: &Digest, max: u64) -> Result<Bytes> {
        self.inner.read_small_blob(d, max).await
    }
    async fn put_small_blob(&self, d: &Digest, data: Bytes) -> Result<()> {
        self.failing("blob")?;
        self.inner.put_small_blob(d, data).await?;
        self.done.lock().unwrap().insert(format!("blob:{}", d.hex()));
        Ok(())
    }
    async fn delete_blob(&self, d: &Digest) -> Result<bool> {
        self.inner.delete_blob(d).await
    }
    async fn create_upload(&self, id: &UploadId, m: &UploadMeta) -> Result<()> {
        self.inner.create_upload(id, m).await
    }
    async fn upload_status(&self, id: &UploadId) -> Result<(UploadMeta, u64)> {
        self.inner.upload_status(id).await
    }
    async fn append_upload(&self, id: &UploadId, at: Option<u64>, body: ByteStream) -> Result<Result<u64, u64>> {
        self.inner.append_upload(id, at, body).await
    }
    async fn finish_upload(&self, id: &UploadId, d: &Digest) -> Result<u64> {
        self.inner.finish_upload(id, d).await
    }
    async fn cancel_upload(&self, id: &UploadId) -> Result<bool> {
        self.inner.cancel_upload(id).await
    }
    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.failing(key)?;
        if key.contains("/_tags/") {
            self.check_before_tag(key);
        }
        self.inner.put_meta(key, value).await?;
        self.event(format!("put {key}"));
        self.done.lock().unwrap().insert(key.to_owned());
        Ok(())
    }
    async fn stage_meta(&self, key: &str, value: &[u8]) -> Result<StagedMeta> {
        let staged = self.inner.stage_meta(key, value).await?;
        // Staged is not visible.
        if self.inner.get_meta(key).await?.as_deref() == Some(value) {
            self.violations.lock().unwrap().push(format!("{key} readable while only staged"));
        }
        Ok(staged)
    }
    async fn publish_meta(&self, staged: StagedMeta) -> Result<()> {
        let key = staged.key().to_owned();
        self.check_before_tag(&key);
        self.inner.publish_meta(staged).await?;
        self.event(format!("publish {key}"));
        Ok(())
    }
    async fn sync_meta(&self, key: &str) -> Result<()> {
        self.inner.sync_meta(key).await?;
        self.event(format!("sync {key}"));
        Ok(())
    }
    async fn write_manifest(&self, required: &[RequiredBlob], write: ManifestWrite) -> Result<Result<Vec<StagedMeta>, Unmet>> {
        if !self.batched {
            return write_manifest_in_steps(self, required, write).await;
        }
        let mut written = vec![format!("blob:{}", write.digest.hex()), write.link_key.clone()];
        written.extend(write.record.as_ref().map(|(key, _)| key.clone()));
        for key in ["blob"].into_iter().chain(written[1..].iter().map(String::as_str)) {
            self.failing(key)?;
        }
        let tags = write.tags.clone();
        let out = self.inner.write_manifest(required, write).await?;
        if let Ok(staged) = &out {
            // Staged is not visible.
            for (key, value) in &tags {
                if self.inner.get_meta(key).await?.as_deref() == Some(&value[..]) {
                    self.violations.lock().unwrap().push(format!("{key} readable while only staged"));
                }
            }
            let keys: Vec<&str> = staged.iter().map(|m| m.key()).collect();
            assert_eq!(keys, tags.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(), "staged in the order given");
            self.event("batch".to_owned());
            self.done.lock().unwrap().extend(written);
        }
        Ok(out)
    }
    async fn touch_meta(&self, key: &str) -> Result<bool> {
        self.failing(key)?;
        let created = self.inner.touch_meta(key).await?;
        self.done.lock().unwrap().insert(key.to_owned());
        Ok(created)
    }
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get_meta(key).await
    }
    async fn delete_meta(&self, key: &str) -> Result<bool> {
        self.inner.delete_meta(key).await
    }
    async fn list_meta(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list_meta(prefix).await
    }
    async fn list_blobs(&self) -> Result<Vec<Digest>> {
        self.inner.list_blobs().await
    }
    async fn blob_modified(&self, d: &Digest) -> Result<Option<SystemTime>> {
        self.inner.blob_modified(d).await
    }
    async fn meta_modified(&self, key: &str) -> Result<Option<SystemTime>> {
        self.inner.meta_modified(key).await
    }
    async fn list_uploads(&self) -> Result<Vec<UploadActivity>> {
        self.inner.list_uploads().await
    }
}

fn app() -> RepoName {
    RepoName::parse("app").unwrap()
}

fn tag_ref(t: &str) -> Reference {
    Reference::Tag(Tag::parse(t).unwrap())
}

async fn push(reg: &Registry, watch: &Watch, tag: &str, n: usize) -> std::result::Result<String, String> {
    let (body, hex) = index(n);
    watch.expect.lock().unwrap().insert(format!("repos/app/_tags/{tag}"), hex.clone());
    reg.put_manifest(&app(), &tag_ref(tag), Some(INDEX), body, &[])
        .await
        .map(|p| {
            assert_eq!(p.digest.hex(), hex);
            hex
        })
        .map_err(|e| e.to_string())
}

/// Names in a directory that start with `.` (temporary files left behind).
fn hidden_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            out.extend(hidden_files(&e.path()));
        } else if name.starts_with('.') {
            out.push(e.path().display().to_string());
        }
    }
    out
}

/// Reads a tag straight from the files: the manifest hex it names.
fn tag_on_disk(root: &Path, tag: &str) -> Option<String> {
    let raw = fs::read(root.join("meta/repos/app/_tags").join(tag)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    v["digest"].as_str().map(|d| d.trim_start_matches("sha256:").to_owned())
}

#[tokio::test]
async fn a_tag_moves_only_after_content_link_and_record_are_written_and_is_flushed_before_the_push_returns() {
    for batched in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let watch = Watch::new(dir.path(), batched);
        let reg = Registry::new(watch.clone(), Policy::default());

        let first = push(&reg, &watch, "v1", 1).await.unwrap();
        let second = push(&reg, &watch, "v1", 2).await.unwrap();
        assert_ne!(first, second);
        assert!(watch.violations.lock().unwrap().is_empty(), "{:?}", watch.violations.lock().unwrap());

        // Each push: the tag is published, then flushed, before the push returned.
        let events = watch.events.lock().unwrap().clone();
        let tag_events: Vec<&String> = events.iter().filter(|e| e.ends_with("/_tags/v1") || *e == "batch").collect();
        let mut want = vec!["publish repos/app/_tags/v1", "sync repos/app/_tags/v1"];
        if batched {
            want.insert(0, "batch");
        }
        assert_eq!(tag_events, [want.clone(), want].concat(), "{events:?}");
        assert_eq!(tag_on_disk(dir.path(), "v1").as_deref(), Some(second.as_str()));
        let served = reg.get_manifest(&app(), &tag_ref("v1")).await.unwrap();
        assert_eq!(served.digest.hex(), second);
        assert_eq!(format!("{:x}", Sha256::digest(&served.body)), second);
        assert!(hidden_files(dir.path()).is_empty(), "{:?}", hidden_files(dir.path()));
    }
}

#[tokio::test]
async fn a_push_failing_before_the_tag_leaves_the_old_tag_and_no_stray_file() {
    for (failing, batched) in ["_manifests/", "_blobs/", "blob"].into_iter().flat_map(|f| [(f, false), (f, true)]) {
        let dir = tempfile::tempdir().unwrap();
        let watch = Watch::new(dir.path(), batched);
        let reg = Registry::new(watch.clone(), Policy::default());
        let old = push(&reg, &watch, "latest", 1).await.unwrap();

        *watch.fail_on.lock().unwrap() = Some(failing.to_owned());
        let err = push(&reg, &watch, "latest", 2).await.unwrap_err();
        assert!(err.contains("injected"), "{failing}: {err}");
        *watch.fail_on.lock().unwrap() = None;

        // The staged tag value was discarded, the tag still names the old manifest, on disk
        // and served, also after a restart.
        assert!(hidden_files(dir.path()).is_empty(), "{failing}: {:?}", hidden_files(dir.path()));
        assert_eq!(tag_on_disk(dir.path(), "latest").as_deref(), Some(old.as_str()), "{failing}");
        assert_eq!(reg.get_manifest(&app(), &tag_ref("latest")).await.unwrap().digest.hex(), old);
        let reopened = Registry::new(Arc::new(FsStorage::open(dir.path(), true).unwrap()), Policy::default());
        let served = reopened.get_manifest(&app(), &tag_ref("latest")).await.unwrap();
        assert_eq!(format!("{:x}", Sha256::digest(&served.body)), old, "{failing}");
        assert!(watch.violations.lock().unwrap().is_empty(), "{:?}", watch.violations.lock().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_keep_the_order_and_reload_whole() {
    for batched in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let watch = Watch::new(dir.path(), batched);
        let reg = Arc::new(Registry::new(watch.clone(), Policy::default()));

        // 24 pushes to their own tags and 24 more racing for one shared tag.
        let mut tasks = Vec::new();
        for n in 0..48 {
            let (reg, watch) = (reg.clone(), watch.clone());
            tasks.push(tokio::spawn(async move {
                let tag = if n < 24 { format!("t{n}") } else { "shared".to_owned() };
                // The shared tag's expected manifest is whichever push publishes: check the
                // order for the own tags only.
                if n >= 24 {
                    let (body, hex) = index(n);
                    let p = reg.put_manifest(&app(), &tag_ref(&tag), Some(INDEX), body, &[]).await.unwrap();
                    assert_eq!(p.digest.hex(), hex);
                    return (tag, hex);
                }
                let hex = push(&reg, &watch, &tag, n).await.unwrap();
                (tag, hex)
            }));
        }
        let mut pushed = HashMap::new();
        let mut shared = HashSet::new();
        for t in tasks {
            let (tag, hex) = t.await.unwrap();
            if tag == "shared" {
                shared.insert(hex);
            } else {
                pushed.insert(tag, hex);
            }
        }
        assert!(watch.violations.lock().unwrap().is_empty(), "{:?}", watch.violations.lock().unwrap());
        assert!(hidden_files(dir.path()).is_empty(), "{:?}", hidden_files(dir.path()));

        // Memory and disk agree on the shared tag, and it names one of the racing manifests.
        let served = reg.get_manifest(&app(), &tag_ref("shared")).await.unwrap().digest.hex().to_owned();
        assert_eq!(tag_on_disk(dir.path(), "shared").as_deref(), Some(served.as_str()));
        assert!(shared.contains(&served));

        // A fresh process finds every tag and every manifest whole.
        drop(reg);
        let reopened = Registry::new(Arc::new(FsStorage::open(dir.path(), true).unwrap()), Policy::default());
        for (tag, hex) in pushed.iter().chain([(&"shared".to_owned(), &served)]) {
            let m = reopened.get_manifest(&app(), &tag_ref(tag)).await.unwrap();
            assert_eq!(&format!("{:x}", Sha256::digest(&m.body)), hex, "{tag}");
        }
        let mut tags = reopened.tags(&app()).await.unwrap().unwrap();
        tags.sort();
        assert_eq!(tags.len(), 25, "{tags:?}");
    }
}
