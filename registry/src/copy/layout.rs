//! OCI image layout directories (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) as a
//! copy source or destination. Writes are atomic: a blob appears under its digest only
//! once its bytes are complete, synced and verified.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::CopyError;
use crate::client::{ByteStream, ClientError};
use crate::manifest::MAX_MANIFEST_SIZE;
use crate::reference::Digest;

/// The annotation naming a manifest in `index.json` (what `oci:DIR:NAME` selects).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A manifest entry of `index.json`.
#[derive(Debug, Clone)]
pub struct Entry {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CopyError + '_ {
    move |e| CopyError::Client(ClientError::Io { path: path.display().to_string(), error: e })
}

impl Layout {
    /// An existing layout (it must have `oci-layout` and `index.json`).
    pub fn open(dir: &Path) -> Result<Layout, CopyError> {
        for f in ["oci-layout", "index.json"] {
            if !dir.join(f).is_file() {
                return Err(CopyError::Layout(format!("{} is not an OCI layout: no {f}", dir.display())));
            }
        }
        Ok(Layout { dir: dir.to_owned() })
    }

    /// A destination layout at `dir`, created (directory, `oci-layout`, `index.json`) only
    /// when the first blob is written, so a copy that fails early leaves nothing behind.
    pub fn create_on_write(dir: &Path) -> Layout {
        Layout { dir: dir.to_owned() }
    }

    /// Opens a layout, creating an empty one (directory, `oci-layout`, `index.json`) if needed.
    pub fn open_or_create(dir: &Path) -> Result<Layout, CopyError> {
        let layout = Layout::create_on_write(dir);
        layout.ensure_created()?;
        Ok(layout)
    }

    fn ensure_created(&self) -> Result<(), CopyError> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir.join("blobs")).map_err(io_err(dir))?;
        let marker = dir.join("oci-layout");
        if !marker.exists() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = dir.join("index.json");
        if !index.exists() {
            let empty = json!({"schemaVersion": 2, "mediaType": crate::manifest::OCI_INDEX, "manifests": []});
            write_atomic(&index, &serde_json::to_vec_pretty(&empty).expect("JSON serialises"))?;
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn index(&self) -> Result<Value, CopyError> {
        let path = self.dir.join("index.json");
        let text = std::fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&text).map_err(|e| CopyError::Layout(format!("{}: {e}", path.display())))
    }

    /// The entry named `name`, or the only entry when no name is given.
    pub fn resolve(&self, name: Option<&str>) -> Result<Entry, CopyError> {
        let index = self.index()?;
        let entries = index["manifests"].as_array().cloned().unwrap_or_default();
        let chosen: Vec<&Value> = match name {
            Some(n) => entries.iter().filter(|e| e["annotations"][REF_NAME].as_str() == Some(n)).collect(),
            None => entries.iter().collect(),
        };
        let what = name.map(|n| format!("{n:?}")).unwrap_or_else(|| "an image".to_owned());
        match chosen.as_slice() {
            [one] => {
                let digest = one["digest"].as_str().and_then(|d| Digest::parse(d).ok());
                let digest = digest.ok_or_else(|| CopyError::Layout(format!("{}: bad digest in index.json", self.dir.display())))?;
                Ok(Entry {
                    media_type: one["mediaType"].as_str().unwrap_or(crate::manifest::OCI_MANIFEST).to_owned(),
                    digest,
                    size: one["size"].as_u64().unwrap_or(0),
                })
            }
            [] => Err(CopyError::NotFound(format!("{} has no {what}", self.dir.display()))),
            _ => Err(CopyError::Layout(format!("{} holds several images; name one (oci:DIR:NAME)", self.dir.display()))),
        }
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join(digest.algorithm().as_str()).join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// A whole small blob (a manifest), checked against its digest.
    pub async fn read_small(&self, digest: &Digest) -> Result<Bytes, CopyError> {
        let path = self.blob_path(digest);
        let mut f = tokio::fs::File::open(&path).await.map_err(io_err(&path))?;
        let mut buf = Vec::new();
        (&mut f).take(MAX_MANIFEST_SIZE as u64 + 1).read_to_end(&mut buf).await.map_err(io_err(&path))?;
        if buf.len() > MAX_MANIFEST_SIZE {
            return Err(CopyError::Layout(format!("{}: manifest too large", path.display())));
        }
        let actual = digest.algorithm().digest_of(&buf);
        if &actual != digest {
            return Err(CopyError::Client(ClientError::DigestMismatch {
                url: path.display().to_string(),
                expected: digest.to_string(),
                actual: actual.to_string(),
            }));
        }
        Ok(buf.into())
    }

    /// A blob's bytes as a verified stream.
    pub async fn open_blob(&self, digest: &Digest, size: Option<u64>) -> Result<ByteStream, ClientError> {
        let path = self.blob_path(digest);
        let shown = path.display().to_string();
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| ClientError::Io { path: shown.clone(), error: e })?;
        let shown2 = shown.clone();
        let raw = futures_util::stream::unfold(Some(file), move |state| {
            let shown = shown2.clone();
            async move {
                let mut file = state?;
                let mut buf = vec![0u8; 256 * 1024];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(Bytes::from(buf)), Some(file)))
                    }
                    Err(e) => Some((Err(ClientError::Io { path: shown, error: e }), None)),
                }
            }
        });
        Ok(crate::client::verified_stream(Box::pin(raw), digest.clone(), size, shown))
    }

    /// Writes a blob from `stream` (already verified by its producer; checked again
    /// here) to a temporary file, syncs it and renames it into place.
    pub async fn write_blob(&self, digest: &Digest, mut stream: ByteStream) -> Result<u64, CopyError> {
        self.ensure_created()?;
        let path = self.blob_path(digest);
        let parent = path.parent().expect("blob paths have a parent");
        tokio::fs::create_dir_all(parent).await.map_err(io_err(parent))?;
        let tmp = parent.join(format!(".{}.{}.tmp", digest.hex(), rand::random::<u32>()));
        let result = async {
            let mut f = tokio::fs::File::create(&tmp).await.map_err(io_err(&tmp))?;
            let mut hasher = digest.algorithm().hasher();
            let mut n = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                n += chunk.len() as u64;
                f.write_all(&chunk).await.map_err(io_err(&tmp))?;
            }
            f.sync_all().await.map_err(io_err(&tmp))?;
            let actual = hasher.finish();
            if &actual != digest {
                return Err(CopyError::Client(ClientError::DigestMismatch {
                    url: path.display().to_string(),
                    expected: digest.to_string(),
                    actual: actual.to_string(),
                }));
            }
            tokio::fs::rename(&tmp, &path).await.map_err(io_err(&path))?;
            Ok(n)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Stores a manifest's bytes as a blob.
    pub async fn write_small(&self, digest: &Digest, bytes: &Bytes) -> Result<(), CopyError> {
        let one: ByteStream = Box::pin(futures_util::stream::iter([Ok(bytes.clone())]));
        self.write_blob(digest, one).await.map(drop)
    }

    /// Records the manifest in `index.json`, replacing an entry of the same name.
    pub fn add_to_index(&self, entry: &Entry, name: Option<&str>) -> Result<(), CopyError> {
        self.ensure_created()?;
        let mut index = self.index()?;
        let mut manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        manifests.retain(|m| match name {
            Some(n) => m["annotations"][REF_NAME].as_str() != Some(n),
            // An unnamed entry replaces an unnamed entry of the same digest.
            None => !(m["annotations"][REF_NAME].is_null() && m["digest"].as_str() == Some(&entry.digest.to_string())),
        });
        let mut desc = json!({"mediaType": entry.media_type, "digest": entry.digest.to_string(), "size": entry.size});
        if let Some(n) = name {
            desc["annotations"] = json!({ REF_NAME: n });
        }
        manifests.push(desc);
        index["manifests"] = Value::Array(manifests);
        if index.get("schemaVersion").is_none() {
            index["schemaVersion"] = json!(2);
        }
        let path = self.dir.join("index.json");
        write_atomic(&path, &serde_json::to_vec_pretty(&index).expect("JSON serialises"))
    }
}

/// temp + fsync + rename.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CopyError> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}
