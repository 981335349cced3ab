//! The two kinds of place an image is copied from or to: a repository of a registry, or
//! an OCI layout directory. The engine only sees these operations.

use std::sync::Arc;

use super::layout::{Entry, Layout};
use super::CopyError;
use crate::client::{BlobPush, BlobSource, ByteStream, ClientError, Manifest, RegistryClient};
use crate::manifest;
use crate::reference::{Digest, Reference, RepoName};

#[derive(Debug, Clone)]
pub enum Endpoint {
    Registry {
        client: RegistryClient,
        repo: RepoName,
        /// A tag or digest; a destination without one takes the source's tag.
        reference: Option<Reference>,
    },
    Layout {
        layout: Layout,
        /// The `org.opencontainers.image.ref.name` of the image.
        name: Option<String>,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Registry { client, repo, reference } => {
                write!(f, "docker://{}/{repo}", client.host())?;
                match reference {
                    Some(Reference::Tag(t)) => write!(f, ":{t}"),
                    Some(Reference::Digest(d)) => write!(f, "@{d}"),
                    None => Ok(()),
                }
            }
            Endpoint::Layout { layout, name } => {
                write!(f, "oci:{}", layout.dir().display())?;
                match name {
                    Some(n) => write!(f, ":{n}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl Endpoint {
    /// The tag this endpoint names, if any.
    pub fn tag(&self) -> Option<String> {
        match self {
            Endpoint::Registry { reference: Some(Reference::Tag(t)), .. } => Some(t.to_string()),
            Endpoint::Layout { name, .. } => name.clone(),
            _ => None,
        }
    }

    /// The image this endpoint names, as a source.
    pub(super) async fn root_manifest(&self) -> Result<Manifest, CopyError> {
        match self {
            Endpoint::Registry { client, repo, reference } => {
                let reference = reference.clone().unwrap_or_else(|| Reference::parse("latest").expect("a tag"));
                client.get_manifest(repo, &reference).await.map_err(|e| match e {
                    e if e.is_not_found() => CopyError::NotFound(format!("{self}: no such image ({e})")),
                    e => CopyError::Client(e),
                })
            }
            Endpoint::Layout { layout, name } => {
                let entry = layout.resolve(name.as_deref())?;
                let bytes = layout.read_small(&entry.digest).await?;
                Ok(Manifest { media_type: entry.media_type, digest: entry.digest, bytes })
            }
        }
    }

    /// A child manifest by digest; `media_type` is what its parent's descriptor says.
    pub(super) async fn manifest(&self, digest: &Digest, media_type: Option<&str>) -> Result<Manifest, CopyError> {
        match self {
            Endpoint::Registry { client, repo, .. } => Ok(client.get_manifest(repo, &Reference::Digest(digest.clone())).await?),
            Endpoint::Layout { layout, .. } => {
                let bytes = layout.read_small(digest).await?;
                let media_type = media_type.map(str::to_owned).unwrap_or_else(|| manifest::default_media_type(&bytes));
                Ok(Manifest { bytes, media_type, digest: digest.clone() })
            }
        }
    }

    pub(super) async fn has_manifest(&self, digest: &Digest) -> Result<bool, CopyError> {
        match self {
            Endpoint::Registry { client, repo, .. } => {
                Ok(client.head_manifest(repo, &Reference::Digest(digest.clone())).await?.is_some())
            }
            Endpoint::Layout { layout, .. } => Ok(layout.has_blob(digest)),
        }
    }

    /// Stores a manifest under `reference` (a tag, or its digest). Returns the digest the
    /// destination reports.
    pub(super) async fn put_manifest(&self, m: &Manifest, reference: &Reference) -> Result<Digest, CopyError> {
        match self {
            Endpoint::Registry { client, repo, .. } => Ok(client.put_manifest(repo, reference, &m.bytes, &m.media_type).await?),
            Endpoint::Layout { layout, .. } => {
                if !layout.has_blob(&m.digest) {
                    layout.write_small(&m.digest, &m.bytes).await?;
                }
                Ok(m.digest.clone())
            }
        }
    }

    /// Names the root manifest in a layout's `index.json` (registries did it with the PUT).
    pub(super) fn record_root(&self, m: &Manifest, name: Option<&str>) -> Result<(), CopyError> {
        if let Endpoint::Layout { layout, .. } = self {
            let entry = Entry { media_type: m.media_type.clone(), digest: m.digest.clone(), size: m.bytes.len() as u64 };
            layout.add_to_index(&entry, name)?;
        }
        Ok(())
    }

    /// A blob's size, for manifests that do not state it (Docker schema 1).
    pub(super) async fn blob_size(&self, digest: &Digest) -> Result<u64, CopyError> {
        let size = match self {
            Endpoint::Registry { client, repo, .. } => client.blob_size(repo, digest).await?,
            Endpoint::Layout { layout, .. } => std::fs::metadata(layout.blob_path(digest)).ok().map(|m| m.len()),
        };
        size.ok_or_else(|| CopyError::NotFound(format!("{self}: blob {digest} is missing")))
    }

    pub(super) async fn has_blob(&self, digest: &Digest) -> Result<bool, CopyError> {
        match self {
            Endpoint::Registry { client, repo, .. } => Ok(client.blob_size(repo, digest).await?.is_some()),
            Endpoint::Layout { layout, .. } => Ok(layout.has_blob(digest)),
        }
    }

    /// A blob's bytes for `dst`. Registries verify the digest of every upload and the
    /// layout writer hashes what it writes, so a registry source is only size-checked
    /// here: hashing in the client too would be a second pass over every byte.
    pub(super) async fn open_blob(&self, digest: &Digest, size: u64) -> Result<ByteStream, ClientError> {
        match self {
            Endpoint::Registry { client, repo, .. } => client.get_blob_for_upload(repo, digest, size).await,
            Endpoint::Layout { layout, .. } => layout.open_blob(digest, Some(size)).await,
        }
    }

    pub(super) async fn put_blob(
        &self,
        digest: &Digest,
        size: u64,
        source: Arc<dyn BlobSource>,
        mount_from: Option<&RepoName>,
    ) -> Result<BlobPush, CopyError> {
        match self {
            Endpoint::Registry { client, repo, .. } => Ok(client.push_blob(repo, digest, size, source.as_ref(), mount_from).await?),
            Endpoint::Layout { layout, .. } => {
                let stream = source.open().await?;
                Ok(BlobPush::Uploaded(layout.write_blob(digest, stream).await?))
            }
        }
    }

    /// Registry identity for mount bookkeeping: the base URL.
    pub(super) fn registry_key(&self) -> Option<String> {
        match self {
            Endpoint::Registry { client, .. } => Some(client.base_url().to_string()),
            Endpoint::Layout { .. } => None,
        }
    }

    pub(super) fn repo(&self) -> Option<&RepoName> {
        match self {
            Endpoint::Registry { repo, .. } => Some(repo),
            Endpoint::Layout { .. } => None,
        }
    }
}
