//! What a collection freed (or, in a dry run, would free), for log lines and `--json`.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PrunedTag {
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PrunedManifest {
    pub repository: String,
    pub digest: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PrunedBlob {
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PrunedUpload {
    pub id: String,
    pub size: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Tags older than the expiry.
    pub tags: Vec<PrunedTag>,
    /// Manifests no kept tag reaches, per repository.
    pub manifests: Vec<PrunedManifest>,
    /// Repository links to blobs that repository no longer uses.
    pub blob_links: usize,
    /// Stored content (layers, configs, manifest bytes) no repository uses any more.
    pub blobs: Vec<PrunedBlob>,
    /// Repositories left with nothing, dropped from the catalog.
    pub repositories: Vec<String>,
    /// Upload sessions idle for longer than the grace window.
    pub uploads: Vec<PrunedUpload>,
    /// Bytes of blobs and upload data removed.
    pub freed_bytes: u64,
    /// References to content that is missing (kept as they are; logged).
    pub dangling: Vec<String>,
}

impl PruneReport {
    /// One line for logs and the CLI.
    pub fn summary(&self) -> String {
        format!(
            "{}{} tags, {} manifests, {} blob links, {} blobs, {} uploads, {} bytes, {} empty repositories{}",
            if self.dry_run { "would free " } else { "freed " },
            self.tags.len(),
            self.manifests.len(),
            self.blob_links,
            self.blobs.len(),
            self.uploads.len(),
            self.freed_bytes,
            self.repositories.len(),
            if self.dangling.is_empty() {
                String::new()
            } else {
                format!(" ({} dangling references kept)", self.dangling.len())
            }
        )
    }
}
