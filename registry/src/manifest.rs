//! What the registry needs to know of a manifest: which blobs and child manifests it
//! references, its subject and its artifact type. The bytes themselves are stored and
//! served exactly as pushed; nothing here re-serialises them.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{ErrorCode, RegistryError};
use crate::reference::Digest;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Largest manifest accepted (the limit distribution and the clients agree on).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// A content descriptor as it appears in manifests.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: Option<String>,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    /// The short-lived OCI artifact manifest draft used `blobs`.
    #[serde(default)]
    blobs: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    /// Docker schema 1.
    #[serde(default, rename = "fsLayers")]
    fs_layers: Option<Vec<FsLayer>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FsLayer {
    blob_sum: String,
}

/// A blob a manifest needs, with the size it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub digest: Digest,
    /// `None` when the manifest format does not state sizes (schema 1).
    pub size: Option<u64>,
}

/// The parts of a manifest the registry acts on.
#[derive(Debug, Clone)]
pub struct ManifestInfo {
    /// The `mediaType` field of the body, if any.
    pub body_media_type: Option<String>,
    /// Blobs that must be present in the repository.
    pub blobs: Vec<BlobRef>,
    /// Child manifests (index, manifest list) that must be present in the repository.
    pub children: Vec<BlobRef>,
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    pub config_media_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestInvalid, msg)
}

fn parse_descriptor_digest(d: &Descriptor, what: &str) -> Result<Digest, RegistryError> {
    Digest::parse(&d.digest).map_err(|_| invalid(format!("{what} has an invalid digest {:?}", d.digest)))
}

fn blob_ref(d: &Descriptor, what: &str) -> Result<BlobRef, RegistryError> {
    if d.size < 0 {
        return Err(invalid(format!("{what} has a negative size")));
    }
    Ok(BlobRef {
        digest: parse_descriptor_digest(d, what)?,
        size: Some(d.size as u64),
    })
}

/// Parses a manifest body pushed with `content_type`.
pub fn parse(body: &[u8], content_type: &str) -> Result<ManifestInfo, RegistryError> {
    let raw: RawManifest = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("manifest is not valid JSON of a known shape: {e}")))?;
    if let Some(mt) = &raw.media_type {
        if !content_type.is_empty() && mt != content_type && !is_v1(mt) {
            return Err(invalid(format!(
                "mediaType {mt:?} in the body does not match Content-Type {content_type:?}"
            )));
        }
    }
    let is_index = matches!(content_type, OCI_INDEX | DOCKER_MANIFEST_LIST) || raw.manifests.is_some();
    let is_schema1 = is_v1(content_type) || raw.schema_version == Some(1) && raw.fs_layers.is_some();

    let mut info = ManifestInfo {
        body_media_type: raw.media_type.clone(),
        blobs: Vec::new(),
        children: Vec::new(),
        subject: None,
        artifact_type: raw.artifact_type.clone(),
        config_media_type: raw.config.as_ref().and_then(|c| c.media_type.clone()),
        annotations: raw.annotations.clone(),
    };

    if is_schema1 {
        for l in raw.fs_layers.iter().flatten() {
            let digest = Digest::parse(&l.blob_sum)
                .map_err(|_| invalid(format!("fsLayer has an invalid blobSum {:?}", l.blob_sum)))?;
            info.blobs.push(BlobRef { digest, size: None });
        }
        return Ok(info);
    }

    if is_index {
        let children = raw
            .manifests
            .as_ref()
            .ok_or_else(|| invalid("an index must have a manifests array"))?;
        for c in children {
            info.children.push(blob_ref(c, "manifests entry")?);
        }
    } else {
        match (&raw.config, &raw.layers, &raw.blobs) {
            (Some(config), layers, _) => {
                info.blobs.push(blob_ref(config, "config")?);
                for l in layers.iter().flatten() {
                    // Non-distributable layers live elsewhere (their `urls`): not required here.
                    if !l.urls.is_empty() {
                        blob_ref(l, "layer")?;
                        continue;
                    }
                    info.blobs.push(blob_ref(l, "layer")?);
                }
            }
            (None, None, Some(blobs)) => {
                for b in blobs {
                    info.blobs.push(blob_ref(b, "blob")?);
                }
            }
            _ => return Err(invalid("an image manifest must have a config descriptor")),
        }
    }
    if let Some(subject) = &raw.subject {
        info.subject = Some(parse_descriptor_digest(subject, "subject")?);
    }
    Ok(info)
}

fn is_v1(mt: &str) -> bool {
    mt == DOCKER_MANIFEST_V1_SIGNED || mt == DOCKER_MANIFEST_V1
}

/// The media type to record when a client pushed without a Content-Type.
pub fn default_media_type(body: &[u8]) -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Probe>(body) {
        Ok(Probe { media_type: Some(mt), .. }) => mt,
        Ok(Probe { manifests: Some(_), .. }) => OCI_INDEX.to_owned(),
        _ => OCI_MANIFEST.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn image_manifest_references_config_and_layers() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"x","digest":"{D2}","size":5}},{{"mediaType":"y","digest":"{D1}","size":9,"urls":["https://example.com/l"]}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":3}}}}"#
        );
        let info = parse(body.as_bytes(), OCI_MANIFEST).unwrap();
        assert_eq!(info.blobs.len(), 2, "the non-distributable layer is not required");
        assert_eq!(info.blobs[1].size, Some(5));
        assert_eq!(info.subject.unwrap().to_string(), D2);
    }

    #[test]
    fn index_references_children() {
        let body = format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":7}}]}}"#);
        let info = parse(body.as_bytes(), OCI_INDEX).unwrap();
        assert_eq!(info.children.len(), 1);
        assert!(info.blobs.is_empty());
    }

    #[test]
    fn mismatched_media_type_is_invalid() {
        let body = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        let err = parse(body.as_bytes(), OCI_MANIFEST).unwrap_err();
        assert_eq!(err.code, ErrorCode::ManifestInvalid);
    }

    #[test]
    fn garbage_is_invalid() {
        assert!(parse(b"not json", OCI_MANIFEST).is_err());
        assert!(parse(b"{}", OCI_MANIFEST).is_err());
        let bad = r#"{"config":{"digest":"sha256:zz","size":1},"layers":[]}"#;
        assert!(parse(bad.as_bytes(), OCI_MANIFEST).is_err());
    }
}
