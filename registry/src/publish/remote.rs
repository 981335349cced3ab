//! [`TagStore`] on real registries, through [`crate::client`], and the tag times
//! `cleanup-tags` needs from registries without a tag API.
//!
//! Removing one tag, in order of preference:
//! 1. the registry's own tag API (Docker Hub, quay), when configured;
//! 2. the OCI tag delete, `DELETE /v2/<repo>/manifests/<tag>` (specreg, distribution 3);
//! 3. where that is refused (distribution 2.8 answers 400, others 405): the tag is first
//!    pointed at a fresh placeholder manifest that nothing else references, and that
//!    placeholder is deleted by its digest. Deleting the real manifest's digest would
//!    remove every tag on it, the final tag just promoted among them; the placeholder
//!    carries only the one tag.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;

use super::cleanup::{parse_rfc3339, TagTime};
use super::location::RepoLocation;
use super::promote::{RawManifest, TagStore};
use super::tag_api::TagApi;
use super::PublishError;
use crate::client::{BlobSource, ByteStream, ClientError, RegistryClient};
use crate::reference::{Algorithm, Digest, Reference, RepoName, Tag};

/// The OCI empty descriptor's content (`application/vnd.oci.empty.v1+json`).
const EMPTY_JSON: &[u8] = b"{}";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const PLACEHOLDER_TYPE: &str = "application/vnd.specreg.removed-tag.v1";
/// Largest image config read to find `created`.
const MAX_CONFIG: usize = 4 << 20;

fn registry_error(e: ClientError) -> PublishError {
    PublishError::Registry(e.to_string())
}

/// One registry: its client and, if it has one, its tag API.
pub struct Endpoint {
    pub client: RegistryClient,
    pub tag_api: Option<TagApi>,
}

/// Registries by host (`RepoLocation::registry`).
#[derive(Default)]
pub struct RemoteStore {
    endpoints: HashMap<String, Endpoint>,
}

impl RemoteStore {
    pub fn new() -> Self {
        RemoteStore::default()
    }

    pub fn add(&mut self, registry: &str, endpoint: Endpoint) {
        self.endpoints.insert(registry.to_owned(), endpoint);
    }

    pub fn endpoint(&self, repo: &RepoLocation) -> Result<&Endpoint, PublishError> {
        self.endpoints
            .get(&repo.registry)
            .ok_or_else(|| PublishError::Usage(format!("no connection set up for registry {}", repo.registry)))
    }
}

#[async_trait]
impl TagStore for RemoteStore {
    async fn get(&self, repo: &RepoLocation, tag: &Tag) -> Result<Option<RawManifest>, PublishError> {
        let client = &self.endpoint(repo)?.client;
        match client.get_manifest(&repo.name, &Reference::Tag(tag.clone())).await {
            Ok(m) => Ok(Some(RawManifest { media_type: m.media_type, digest: m.digest, bytes: m.bytes })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(registry_error(e)),
        }
    }

    async fn put(&self, repo: &RepoLocation, tag: &Tag, m: &RawManifest) -> Result<Digest, PublishError> {
        let client = &self.endpoint(repo)?.client;
        client
            .put_manifest(&repo.name, &Reference::Tag(tag.clone()), &m.bytes, &m.media_type)
            .await
            .map_err(registry_error)
    }

    async fn resolve(&self, repo: &RepoLocation, tag: &Tag) -> Result<Option<Digest>, PublishError> {
        resolve(&self.endpoint(repo)?.client, &repo.name, tag).await
    }

    async fn delete_tag(&self, repo: &RepoLocation, tag: &Tag) -> Result<(), PublishError> {
        let ep = self.endpoint(repo)?;
        match &ep.tag_api {
            Some(api) => {
                if !api.delete(&repo.name, tag).await? {
                    tracing::warn!(%repo, %tag, "{} did not have the tag any more", api.describe());
                }
                Ok(())
            }
            None => delete_tag_oci(&ep.client, &repo.name, tag).await,
        }
    }
}

/// What a tag points at now: the registry's digest header, else the digest of the bytes.
pub async fn resolve(client: &RegistryClient, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, PublishError> {
    let reference = Reference::Tag(tag.clone());
    match client.head_manifest(repo, &reference).await.map_err(registry_error)? {
        None => Ok(None),
        Some(head) => match head.digest {
            Some(d) => Ok(Some(d)),
            None => match client.get_manifest(repo, &reference).await {
                Ok(m) => Ok(Some(m.digest)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(registry_error(e)),
            },
        },
    }
}

/// Removes one tag by the OCI API, or through a placeholder where that is refused.
pub async fn delete_tag_oci(client: &RegistryClient, repo: &RepoName, tag: &Tag) -> Result<(), PublishError> {
    match client.delete_tag(repo, tag).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => {
            tracing::warn!(%repo, %tag, "the tag was already gone");
            Ok(())
        }
        Err(e) if matches!(e.status(), Some(400 | 405)) => {
            tracing::info!(%repo, %tag, error = %e, "the registry refuses tag deletes; removing the tag through a placeholder manifest");
            delete_tag_via_placeholder(client, repo, tag).await
        }
        Err(e) => Err(registry_error(e)),
    }
}

struct StaticBlob(Bytes);

#[async_trait]
impl BlobSource for StaticBlob {
    async fn open(&self) -> Result<ByteStream, ClientError> {
        let bytes = self.0.clone();
        Ok(Box::pin(futures_util::stream::once(async move { Ok(bytes) })))
    }
}

/// A manifest no one else has: the tag and a random nonce are in its annotations.
fn placeholder_manifest(tag: &Tag) -> Bytes {
    let empty = Algorithm::Sha256.digest_of(EMPTY_JSON);
    let nonce: u128 = rand::random();
    let descriptor = serde_json::json!({"mediaType": EMPTY_MEDIA_TYPE, "digest": empty.to_string(), "size": EMPTY_JSON.len()});
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::manifest::OCI_MANIFEST,
        "artifactType": PLACEHOLDER_TYPE,
        "config": descriptor,
        "layers": [descriptor],
        "annotations": {
            "org.opencontainers.image.description": format!("specreg removed tag {tag}"),
            "dev.specreg.nonce": format!("{nonce:032x}"),
        },
    });
    Bytes::from(serde_json::to_vec(&body).expect("JSON serialises"))
}

async fn delete_tag_via_placeholder(client: &RegistryClient, repo: &RepoName, tag: &Tag) -> Result<(), PublishError> {
    let empty = Algorithm::Sha256.digest_of(EMPTY_JSON);
    client
        .push_blob(repo, &empty, EMPTY_JSON.len() as u64, &StaticBlob(Bytes::from_static(EMPTY_JSON)), None)
        .await
        .map_err(registry_error)?;
    let body = placeholder_manifest(tag);
    let reference = Reference::Tag(tag.clone());
    let placeholder = client
        .put_manifest(repo, &reference, &body, crate::manifest::OCI_MANIFEST)
        .await
        .map_err(registry_error)?;
    // Only the placeholder's digest is ever deleted, and only while the tag is on it.
    match resolve(client, repo, tag).await? {
        Some(d) if d == placeholder => {}
        other => {
            return Err(PublishError::Mismatch(format!(
                "{repo}:{tag} moved to {} while being removed; left in place",
                other.map_or("nothing".to_owned(), |d| d.to_string())
            )))
        }
    }
    client.delete_manifest(repo, &placeholder).await.map_err(registry_error)?;
    match resolve(client, repo, tag).await? {
        None => Ok(()),
        Some(d) => Err(PublishError::Registry(format!("{repo}:{tag} still resolves to {d} after its removal"))),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestProbe {
    #[serde(default)]
    config: Option<DescriptorProbe>,
    #[serde(default)]
    manifests: Option<Vec<DescriptorProbe>>,
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorProbe {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
}

const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";

/// When each tag of `tags` was made, as far as the OCI API can tell (see
/// [`super::cleanup`]): the manifest's `org.opencontainers.image.created` annotation, else
/// its config's `created`, and for an index the newest of its children. Times are looked
/// up once per manifest digest.
pub struct ImageTimes<'a> {
    client: &'a RegistryClient,
    repo: &'a RepoName,
    by_digest: Mutex<HashMap<Digest, Option<time::OffsetDateTime>>>,
}

impl<'a> ImageTimes<'a> {
    pub fn new(client: &'a RegistryClient, repo: &'a RepoName) -> Self {
        ImageTimes { client, repo, by_digest: Mutex::new(HashMap::new()) }
    }

    pub async fn tag_time(&self, tag: &Tag) -> Result<TagTime, PublishError> {
        let updated = match resolve(self.client, self.repo, tag).await? {
            Some(d) => self.manifest_time(&d, 0).await?,
            None => None,
        };
        Ok(TagTime { tag: tag.clone(), updated })
    }

    async fn manifest_time(&self, digest: &Digest, depth: u32) -> Result<Option<time::OffsetDateTime>, PublishError> {
        if let Some(t) = self.by_digest.lock().expect("cache lock").get(digest) {
            return Ok(*t);
        }
        let m = match self.client.get_manifest(self.repo, &Reference::Digest(digest.clone())).await {
            Ok(m) => m,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(registry_error(e)),
        };
        let probe: Option<ManifestProbe> = serde_json::from_slice(&m.bytes).ok();
        let mut found = None;
        if let Some(p) = probe {
            found = p.annotations.as_ref().and_then(|a| a.get(CREATED_ANNOTATION)).and_then(|s| parse_rfc3339(s));
            if found.is_none() {
                if let Some(children) = p.manifests.filter(|_| depth < 2) {
                    for c in children {
                        let Ok(cd) = Digest::parse(&c.digest) else { continue };
                        if let Some(t) = Box::pin(self.manifest_time(&cd, depth + 1)).await? {
                            found = Some(found.map_or(t, |f: time::OffsetDateTime| f.max(t)));
                        }
                    }
                } else if let Some(cfg) = p.config {
                    found = self.config_time(&cfg).await?;
                }
            }
        }
        self.by_digest.lock().expect("cache lock").insert(digest.clone(), found);
        Ok(found)
    }

    /// `created` of an image config (Docker's and OCI's share the field).
    async fn config_time(&self, cfg: &DescriptorProbe) -> Result<Option<time::OffsetDateTime>, PublishError> {
        use futures_util::StreamExt;
        let is_image_config = matches!(
            cfg.media_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json" | "application/vnd.docker.container.image.v1+json")
        );
        let Ok(digest) = Digest::parse(&cfg.digest) else { return Ok(None) };
        if !is_image_config || cfg.size.is_some_and(|s| s > MAX_CONFIG as u64) {
            return Ok(None);
        }
        let mut stream = self.client.get_blob(self.repo, &digest, cfg.size).await.map_err(registry_error)?;
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk.map_err(registry_error)?);
            if body.len() > MAX_CONFIG {
                return Ok(None);
            }
        }
        #[derive(Deserialize)]
        struct Config {
            #[serde(default)]
            created: Option<String>,
        }
        Ok(serde_json::from_slice::<Config>(&body).ok().and_then(|c| c.created).and_then(|s| parse_rfc3339(&s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_unique_valid_manifests() {
        let t = Tag::parse("change_1_latest").unwrap();
        let (a, b) = (placeholder_manifest(&t), placeholder_manifest(&t));
        assert_ne!(a, b, "two placeholders never share a digest");
        let info = crate::manifest::parse(&a, crate::manifest::OCI_MANIFEST).unwrap();
        assert_eq!(info.blobs.len(), 2);
        assert_eq!(info.artifact_type.as_deref(), Some(PLACEHOLDER_TYPE));
    }
}

/// What one repository's sweep found and did.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Tags listed (every page).
    pub listed: usize,
    /// Tags matching the patterns.
    pub matched: usize,
    /// Matching tags whose age could not be found, kept.
    pub unknown_age: Vec<Tag>,
    /// Stale tags removed (or, in a dry run, that would be).
    pub removed: Vec<Tag>,
    pub failed: Vec<(Tag, String)>,
}

/// Removes the tags of `repo` matching `patterns` that are older than `older_than`.
/// `page_size` is the `n` asked of an OCI tag list (every page is read either way).
#[allow(clippy::too_many_arguments)]
pub async fn cleanup(
    ep: &Endpoint,
    repo: &RepoName,
    patterns: &super::cleanup::TagPatterns,
    older_than: std::time::Duration,
    now: time::OffsetDateTime,
    page_size: Option<usize>,
    dry_run: bool,
) -> Result<CleanupReport, PublishError> {
    let mut report = CleanupReport::default();
    let times: Vec<TagTime> = match &ep.tag_api {
        Some(api) => {
            let all = api.list(repo).await?;
            report.listed = all.len();
            all.into_iter().filter(|t| patterns.matches(&t.tag)).collect()
        }
        None => {
            let all = ep.client.list_tags_paged(repo, page_size).await.map_err(registry_error)?;
            report.listed = all.len();
            let lookup = ImageTimes::new(&ep.client, repo);
            let mut out = Vec::new();
            for name in all {
                let Ok(tag) = Tag::parse(&name) else { continue };
                if patterns.matches(&tag) {
                    out.push(lookup.tag_time(&tag).await?);
                }
            }
            out
        }
    };
    report.matched = times.len();
    report.unknown_age = times.iter().filter(|t| t.updated.is_none()).map(|t| t.tag.clone()).collect();
    for t in super::cleanup::stale(&times, patterns, older_than, now) {
        if dry_run {
            report.removed.push(t.tag.clone());
            continue;
        }
        let result = match &ep.tag_api {
            Some(api) => api.delete(repo, &t.tag).await.map(drop),
            None => delete_tag_oci(&ep.client, repo, &t.tag).await,
        };
        match result {
            Ok(()) => report.removed.push(t.tag.clone()),
            Err(e) => report.failed.push((t.tag.clone(), e.to_string())),
        }
    }
    Ok(report)
}
