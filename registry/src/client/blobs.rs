//! Blobs: existence, verified download streams, and uploads (cross-repository mount,
//! monolithic POST + streamed PUT, or PATCH chunks).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Url};

use super::{display_url, expect, header_value, ClientError, RegistryClient, Scope};
use crate::reference::{Digest, Hasher, RepoName};

/// Blob bytes in flight.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>;

/// Where an upload's bytes come from. `open` may be called again to restart a failed
/// upload from the beginning.
#[async_trait::async_trait]
pub trait BlobSource: Send + Sync {
    async fn open(&self) -> Result<ByteStream, ClientError>;
}

/// How a blob reached the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    /// Linked from another repository of the same registry: no bytes moved.
    Mounted,
    /// Uploaded; the number of bytes sent.
    Uploaded(u64),
}

/// Upload attempts in all (a failed upload restarts with a fresh source stream).
const UPLOAD_ATTEMPTS: u32 = 4;

impl RegistryClient {
    fn blob_url(&self, repo: &RepoName, digest: &Digest) -> Result<Url, ClientError> {
        self.url(&format!("v2/{repo}/blobs/{digest}"))
    }

    /// The blob's size if the repository has it (`HEAD`), `None` if not.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, ClientError> {
        let url = self.blob_url(repo, digest)?;
        let resp = self.send(Method::HEAD, url, HeaderMap::new(), None, &Scope::pull(repo)).await?;
        if resp.status() == 404 {
            return Ok(None);
        }
        let resp = expect(resp, Method::HEAD, &[200]).await?;
        Ok(resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .or(Some(0)))
    }

    /// Downloads a blob as a stream that fails (as its last item) if the bytes do not
    /// hash to `digest` or their count differs from `size` when given.
    pub async fn get_blob(&self, repo: &RepoName, digest: &Digest, size: Option<u64>) -> Result<ByteStream, ClientError> {
        self.blob_stream(repo, digest, size, true).await
    }

    /// Like [`Self::get_blob`] but checking only the size: for a stream that goes straight
    /// into a registry upload, where the registry checks the digest (one hash pass fewer).
    pub async fn get_blob_for_upload(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<ByteStream, ClientError> {
        self.blob_stream(repo, digest, Some(size), false).await
    }

    async fn blob_stream(&self, repo: &RepoName, digest: &Digest, size: Option<u64>, hash: bool) -> Result<ByteStream, ClientError> {
        let url = self.blob_url(repo, digest)?;
        let resp = self.send(Method::GET, url.clone(), HeaderMap::new(), None, &Scope::pull(repo)).await?;
        let resp = expect(resp, Method::GET, &[200]).await?;
        let shown = display_url(&url);
        let method = Method::GET;
        let raw = resp.bytes_stream().map(move |r| {
            r.map_err(|e| ClientError::Transport { method: method.to_string(), url: shown.clone(), cause: e.without_url() })
        });
        Ok(match (hash, size) {
            (false, Some(size)) => size_checked(Box::pin(raw), digest.clone(), size, display_url(&url)),
            _ => verified(Box::pin(raw), digest.clone(), size, display_url(&url)),
        })
    }

    /// Deletes a blob (registries often refuse: 405).
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), ClientError> {
        let url = self.blob_url(repo, digest)?;
        let resp = self.send(Method::DELETE, url, HeaderMap::new(), None, &Scope::delete(repo)).await?;
        expect(resp, Method::DELETE, &[200, 202, 204]).await.map(drop)
    }

    /// Puts a blob into `repo`: mounted from `mount_from` when given and the registry
    /// agrees, else uploaded from `source`. Failed uploads restart from the beginning.
    pub async fn push_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        source: &dyn BlobSource,
        mount_from: Option<&RepoName>,
    ) -> Result<BlobPush, ClientError> {
        let scope = match mount_from {
            Some(from) if from != repo => Scope::push(repo).with_pull_from(from),
            _ => Scope::push(repo),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let location = match self.start_upload(repo, digest, mount_from.filter(|f| *f != repo), &scope).await? {
                Started::Mounted => return Ok(BlobPush::Mounted),
                Started::Upload(location) => location,
            };
            let result = match self.inner.chunk_size {
                Some(chunk) => self.upload_chunked(location, digest, source, chunk, &scope).await,
                None => match self.upload_monolithic(location, digest, size, source, &scope).await {
                    // Too large for one request: this registry wants chunks.
                    Err(ClientError::Status { status: 413, .. }) => {
                        let location = match self.start_upload(repo, digest, None, &scope).await? {
                            Started::Mounted => return Ok(BlobPush::Mounted),
                            Started::Upload(l) => l,
                        };
                        self.upload_chunked(location, digest, source, 16 << 20, &scope).await
                    }
                    other => other,
                },
            };
            match result {
                Ok(n) => return Ok(BlobPush::Uploaded(n)),
                Err(e) if e.is_transient() && attempt < UPLOAD_ATTEMPTS => {
                    let wait = self.inner.retry.delay(attempt, None);
                    tracing::warn!(%repo, %digest, error = %e, ?wait, "restarting the blob upload");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `POST /blobs/uploads/` (with `mount`/`from` when mounting): 201 means mounted,
    /// 202 gives the upload's location.
    async fn start_upload(
        &self,
        repo: &RepoName,
        digest: &Digest,
        mount_from: Option<&RepoName>,
        scope: &Scope,
    ) -> Result<Started, ClientError> {
        let mut url = self.url(&format!("v2/{repo}/blobs/uploads/"))?;
        if let Some(from) = mount_from {
            url.query_pairs_mut()
                .append_pair("mount", &digest.to_string())
                .append_pair("from", from.as_str());
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self.send(Method::POST, url, headers, Some(Bytes::new()), scope).await?;
        let resp = expect(resp, Method::POST, &[201, 202]).await?;
        if resp.status() == 201 {
            tracing::debug!(%repo, %digest, "blob mounted");
            return Ok(Started::Mounted);
        }
        Ok(Started::Upload(self.location(&resp)?))
    }

    fn location(&self, resp: &reqwest::Response) -> Result<Url, ClientError> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ClientError::Protocol { url: display_url(resp.url()), message: "upload response without Location".to_owned() })?;
        resp.url()
            .join(loc)
            .map_err(|e| ClientError::Protocol { url: display_url(resp.url()), message: format!("bad upload Location: {e}") })
    }

    /// One `PUT ?digest=` streaming the whole blob.
    async fn upload_monolithic(
        &self,
        mut location: Url,
        digest: &Digest,
        size: u64,
        source: &dyn BlobSource,
        scope: &Scope,
    ) -> Result<u64, ClientError> {
        location.query_pairs_mut().append_pair("digest", &digest.to_string());
        let stream = source.open().await?;
        let counted = Counted::new(stream);
        let sent = counted.counter();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        headers.insert(CONTENT_LENGTH, header_value(&size.to_string())?);
        let resp = self
            .send_once(Method::PUT, location, headers, reqwest::Body::wrap_stream(counted), scope)
            .await?;
        expect(resp, Method::PUT, &[201, 204]).await?;
        Ok(sent.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// PATCH chunks of at most `chunk` bytes (each held in memory while sent), then the
    /// closing `PUT ?digest=`.
    async fn upload_chunked(
        &self,
        mut location: Url,
        digest: &Digest,
        source: &dyn BlobSource,
        chunk: u64,
        scope: &Scope,
    ) -> Result<u64, ClientError> {
        let chunk = chunk.max(1) as usize;
        let mut stream = source.open().await?;
        let mut offset: u64 = 0;
        let mut buf = BytesMut::with_capacity(chunk.min(16 << 20));
        let mut eof = false;
        loop {
            while !eof && buf.len() < chunk {
                match stream.next().await {
                    Some(piece) => buf.extend_from_slice(&piece?),
                    None => eof = true,
                }
            }
            let take = buf.len().min(chunk);
            if take == 0 {
                break;
            }
            let body = buf.split_to(take).freeze();
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            headers.insert(CONTENT_RANGE, header_value(&format!("{}-{}", offset, offset + take as u64 - 1))?);
            headers.insert(CONTENT_LENGTH, header_value(&take.to_string())?);
            let resp = self.send_once(Method::PATCH, location.clone(), headers, body.into(), scope).await?;
            let resp = expect(resp, Method::PATCH, &[202, 204]).await?;
            location = self.location(&resp)?;
            offset += take as u64;
        }
        location.query_pairs_mut().append_pair("digest", &digest.to_string());
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self.send_once(Method::PUT, location, headers, reqwest::Body::from(Bytes::new()), scope).await?;
        expect(resp, Method::PUT, &[201, 204]).await?;
        Ok(offset)
    }
}

enum Started {
    Mounted,
    Upload(Url),
}

/// Wraps `inner`, hashing and counting; the last item is an error on a mismatch.
pub fn verified(inner: ByteStream, digest: Digest, size: Option<u64>, url: String) -> ByteStream {
    Box::pin(Verified { inner, hasher: Some(digest.algorithm().hasher()), digest, size, seen: 0, url, done: false })
}

/// Wraps `inner`, checking only the byte count against `size`: for copies into a
/// registry, which verifies the digest of every upload itself.
pub fn size_checked(inner: ByteStream, digest: Digest, size: u64, url: String) -> ByteStream {
    Box::pin(Verified { inner, hasher: None, digest, size: Some(size), seen: 0, url, done: false })
}

struct Verified {
    inner: ByteStream,
    /// `None` when only the size is checked.
    hasher: Option<Hasher>,
    digest: Digest,
    size: Option<u64>,
    seen: u64,
    url: String,
    done: bool,
}

impl Stream for Verified {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                if let Some(h) = this.hasher.as_mut() {
                    h.update(&b);
                }
                this.seen += b.len() as u64;
                if this.size.is_some_and(|s| this.seen > s) {
                    this.done = true;
                    return Poll::Ready(Some(Err(ClientError::SizeMismatch { url: this.url.clone(), expected: this.size.unwrap_or(0), actual: this.seen })));
                }
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.done = true;
                if let Some(expected) = this.size.filter(|s| *s != this.seen) {
                    return Poll::Ready(Some(Err(ClientError::SizeMismatch { url: this.url.clone(), expected, actual: this.seen })));
                }
                if let Some(actual) = this.hasher.take().map(Hasher::finish) {
                    if actual != this.digest {
                        return Poll::Ready(Some(Err(ClientError::DigestMismatch {
                            url: this.url.clone(),
                            expected: this.digest.to_string(),
                            actual: actual.to_string(),
                        })));
                    }
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Counts the bytes that pass, readable while the stream is consumed elsewhere.
pub(crate) struct Counted {
    inner: ByteStream,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Counted {
    pub(crate) fn new(inner: ByteStream) -> Self {
        Counted { inner, count: Default::default() }
    }

    pub(crate) fn counter(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.count.clone()
    }
}

impl Stream for Counted {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let r = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(Some(Ok(b))) = &r {
            self.count.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Algorithm;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        Box::pin(futures_util::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>()))
    }

    async fn drain(mut s: ByteStream) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn verification_passes_and_fails() {
        let d = Algorithm::Sha256.digest_of(b"hello world");
        let ok = drain(verified(chunks(&[b"hello ", b"world"]), d.clone(), Some(11), "u".into())).await.unwrap();
        assert_eq!(ok, b"hello world");
        let bad = drain(verified(chunks(&[b"hello ", b"there"]), d.clone(), None, "u".into())).await;
        assert!(matches!(bad, Err(ClientError::DigestMismatch { .. })));
        let short = drain(verified(chunks(&[b"hello"]), d.clone(), Some(11), "u".into())).await;
        assert!(matches!(short, Err(ClientError::SizeMismatch { expected: 11, actual: 5, .. })));
        let long = drain(verified(chunks(&[b"hello world", b"!"]), d.clone(), Some(11), "u".into())).await;
        assert!(matches!(long, Err(ClientError::SizeMismatch { .. })));
        // Size only: other bytes of the right length pass, a wrong length does not.
        let other = drain(size_checked(chunks(&[b"hello there"]), d.clone(), 11, "u".into())).await.unwrap();
        assert_eq!(other, b"hello there");
        let short = drain(size_checked(chunks(&[b"hello"]), d, 11, "u".into())).await;
        assert!(matches!(short, Err(ClientError::SizeMismatch { .. })));
    }
}
