//! Manifests and tags: fetched and stored as exact bytes, so digests survive a copy.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, Url};

use super::{display_url, expect, header_value, link, ClientError, RegistryClient, Scope};
use crate::manifest::{self, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, MAX_MANIFEST_SIZE, OCI_INDEX, OCI_MANIFEST};
use crate::reference::{Algorithm, Digest, Reference, RepoName, Tag};

/// Every manifest kind we can copy, so a registry never converts one for us.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

const _: () = {
    // The Accept list above spells out these media types.
    let _ = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST);
};

/// A manifest as the registry serves it.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

/// What `HEAD` tells of a manifest.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    pub media_type: Option<String>,
    pub digest: Option<Digest>,
    pub size: Option<u64>,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The media type proper, without parameters (`; charset=utf-8`).
fn bare_media_type(v: &str) -> String {
    v.split(';').next().unwrap_or(v).trim().to_owned()
}

impl RegistryClient {
    fn manifest_url(&self, repo: &RepoName, reference: &Reference) -> Result<Url, ClientError> {
        self.url(&format!("v2/{repo}/manifests/{reference}"))
    }

    fn accept_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        h
    }

    /// `HEAD` a manifest; `None` if the registry does not have it.
    pub async fn head_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestHead>, ClientError> {
        let url = self.manifest_url(repo, reference)?;
        let resp = self.send(Method::HEAD, url, Self::accept_headers(), None, &Scope::pull(repo)).await?;
        if resp.status() == 404 {
            return Ok(None);
        }
        let resp = expect(resp, Method::HEAD, &[200]).await?;
        let h = resp.headers();
        Ok(Some(ManifestHead {
            media_type: header_str(h, "content-type").map(bare_media_type),
            digest: header_str(h, "docker-content-digest").and_then(|d| Digest::parse(d).ok()),
            size: header_str(h, "content-length").and_then(|v| v.parse().ok()),
        }))
    }

    /// Fetches a manifest's exact bytes. Fetched by digest, the bytes are checked against
    /// it; by tag, the digest is computed (with the algorithm the registry reported).
    pub async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Manifest, ClientError> {
        let url = self.manifest_url(repo, reference)?;
        let resp = self.send(Method::GET, url.clone(), Self::accept_headers(), None, &Scope::pull(repo)).await?;
        let mut resp = expect(resp, Method::GET, &[200]).await?;
        let reported = header_str(resp.headers(), "docker-content-digest").and_then(|d| Digest::parse(d).ok());
        let content_type = header_str(resp.headers(), "content-type").map(bare_media_type);
        let mut body = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| super::transport(&Method::GET, &url, e))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_MANIFEST_SIZE {
                return Err(ClientError::Protocol { url: display_url(&url), message: format!("manifest larger than {MAX_MANIFEST_SIZE} bytes") });
            }
        }
        let bytes = body.freeze();
        let expected = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => reported,
        };
        let algorithm = expected.as_ref().map(Digest::algorithm).unwrap_or(Algorithm::Sha256);
        let digest = algorithm.digest_of(&bytes);
        if let Some(expected) = expected {
            if expected != digest {
                return Err(ClientError::DigestMismatch { url: display_url(&url), expected: expected.to_string(), actual: digest.to_string() });
            }
        }
        // The body's own mediaType beats a generic Content-Type (application/json).
        let media_type = match content_type {
            Some(ct) if ct != "application/json" && !ct.is_empty() => ct,
            _ => manifest::default_media_type(&bytes),
        };
        Ok(Manifest { bytes, media_type, digest })
    }

    /// Stores manifest bytes under a tag or digest; returns the registry's digest (ours
    /// when it reports none).
    pub async fn put_manifest(&self, repo: &RepoName, reference: &Reference, bytes: &Bytes, media_type: &str) -> Result<Digest, ClientError> {
        let url = self.manifest_url(repo, reference)?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, header_value(media_type)?);
        headers.insert(CONTENT_LENGTH, header_value(&bytes.len().to_string())?);
        let resp = self.send(Method::PUT, url, headers, Some(bytes.clone()), &Scope::push(repo)).await?;
        let resp = expect(resp, Method::PUT, &[200, 201, 202, 204]).await?;
        let reported = header_str(resp.headers(), "docker-content-digest").and_then(|d| Digest::parse(d).ok());
        Ok(reported.unwrap_or_else(|| Algorithm::Sha256.digest_of(bytes)))
    }

    /// Deletes a manifest by digest (and with it every tag pointing at it).
    pub async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<(), ClientError> {
        self.delete_reference(repo, &Reference::Digest(digest.clone())).await
    }

    /// Deletes one tag (OCI distribution 1.1: `DELETE /manifests/<tag>`).
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<(), ClientError> {
        self.delete_reference(repo, &Reference::Tag(tag.clone())).await
    }

    async fn delete_reference(&self, repo: &RepoName, reference: &Reference) -> Result<(), ClientError> {
        let url = self.manifest_url(repo, reference)?;
        let resp = self.send(Method::DELETE, url, HeaderMap::new(), None, &Scope::delete(repo)).await?;
        expect(resp, Method::DELETE, &[200, 202, 204]).await.map(drop)
    }

    /// Every tag of a repository, following `Link: <...>; rel="next"` pages. A repository
    /// the registry does not know has no tags.
    pub async fn list_tags(&self, repo: &RepoName) -> Result<Vec<String>, ClientError> {
        self.list_tags_paged(repo, None).await
    }

    /// [`Self::list_tags`] asking for pages of `page_size` tags (`?n=`).
    pub async fn list_tags_paged(&self, repo: &RepoName, page_size: Option<usize>) -> Result<Vec<String>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut url = self.url(&format!("v2/{repo}/tags/list"))?;
        if let Some(n) = page_size {
            url.query_pairs_mut().append_pair("n", &n.to_string());
        }
        let mut tags = Vec::new();
        let mut pages = 0;
        loop {
            pages += 1;
            if pages > 100_000 {
                return Err(ClientError::Protocol { url: display_url(&url), message: "tag list pagination does not end".to_owned() });
            }
            let resp = self.send(Method::GET, url.clone(), HeaderMap::new(), None, &Scope::pull(repo)).await?;
            if resp.status() == 404 && pages == 1 {
                return Ok(Vec::new());
            }
            let resp = expect(resp, Method::GET, &[200]).await?;
            let next = link::next_link(resp.headers().get_all("link").iter().filter_map(|v| v.to_str().ok()));
            let body = resp.bytes().await.map_err(|e| super::transport(&Method::GET, &url, e))?;
            let page: Page = serde_json::from_slice(&body)
                .map_err(|e| ClientError::Protocol { url: display_url(&url), message: format!("tag list is not JSON: {e}") })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(n) => {
                    url = url.join(&n).map_err(|e| ClientError::Protocol { url: display_url(&url), message: format!("bad Link {n:?}: {e}") })?;
                }
                None => return Ok(tags),
            }
        }
    }
}
