//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`, with Range support.

use http::{header, StatusCode};

use super::request::Ctx;
use super::response::{self, Resp, CONTENT_DIGEST};
use super::App;
use crate::auth::blob_url;
use crate::error::{ErrorCode, RegistryError};
use crate::reference::{Digest, RepoName};
use crate::storage::ByteRange;

/// What a `Range` header asks of a blob of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    Whole,
    Part(ByteRange),
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n`; of several ranges only the first is
/// served. Anything unparsable is ignored (the whole blob is served), as RFC 9110 allows.
fn parse_range(value: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    let first = spec.split(',').next().unwrap_or("").trim();
    let Some((a, b)) = first.split_once('-') else { return RangeRequest::Whole };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        // Suffix: the last n bytes.
        let Ok(n) = b.parse::<u64>() else { return RangeRequest::Whole };
        if n == 0 {
            return RangeRequest::Unsatisfiable;
        }
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let Ok(start) = a.parse::<u64>() else { return RangeRequest::Whole };
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(e) if e >= start => e.min(size.saturating_sub(1)),
                // An end before the start: the conformance suite wants 416, not the whole blob.
                Ok(_) => return RangeRequest::Unsatisfiable,
                Err(_) => return RangeRequest::Whole,
            }
        };
        (start, end)
    };
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Part(ByteRange {
        start,
        len: end - start + 1,
    })
}

pub async fn get(app: &App, ctx: &Ctx, name: &RepoName, digest: &Digest) -> Result<Resp, RegistryError> {
    let size = app
        .registry
        .blob_size(name, digest)
        .await?
        .ok_or_else(|| RegistryError::new(ErrorCode::BlobUnknown, format!("blob {digest} is unknown in {name}")))?;
    let head = ctx.method == http::Method::HEAD;
    if !head && blob_url::wants_redirect(ctx.header(blob_url::REDIRECT_HEADER), size) {
        if let Some(resp) = redirect(app, ctx, name, digest) {
            return Ok(resp);
        }
    }
    let (status, range) = match parse_range(ctx.header(header::RANGE), size) {
        RangeRequest::Whole => (StatusCode::OK, ByteRange { start: 0, len: size }),
        RangeRequest::Part(r) => (StatusCode::PARTIAL_CONTENT, r),
        RangeRequest::Unsatisfiable => {
            let err = RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("range not satisfiable for a blob of {size} bytes"),
            )
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE);
            let mut resp = response::error(&err, head);
            resp.headers_mut()
                .insert(header::CONTENT_RANGE, response::hv(&format!("bytes */{size}")));
            return Ok(resp);
        }
    };
    let mut builder = response::status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, range.len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""))
        .header(CONTENT_DIGEST, digest.to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", range.start, range.start + range.len - 1),
        );
    }
    let body = if head || range.len == 0 {
        response::empty()
    } else {
        response::stream(app.registry.read_blob(digest, range).await?)
    };
    Ok(builder.body(body).expect("valid response"))
}

/// `307` to a signed URL of this blob on this server, for a client (the node's mirror
/// proxy) that would rather hand the bytes' path to its own client. `None` when the request
/// does not say which host it addressed.
fn redirect(app: &App, ctx: &Ctx, name: &RepoName, digest: &Digest) -> Option<Resp> {
    let host = ctx
        .header(header::HOST)
        .or_else(|| ctx.parts.uri.authority().map(|a| a.as_str()))?;
    let scheme = if app.https { "https" } else { "http" };
    let query = app.blob_urls.sign(name, digest, std::time::SystemTime::now());
    let location = format!("{scheme}://{host}/v2/{name}/blobs/{digest}?{query}");
    let location = http::HeaderValue::from_str(&location).ok()?;
    Some(
        response::status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, location)
            .header(header::CONTENT_LENGTH, 0)
            .header(CONTENT_DIGEST, digest.to_string())
            .body(response::empty())
            .expect("valid response"),
    )
}

pub async fn delete(app: &App, _ctx: &Ctx, name: &RepoName, digest: &Digest) -> Result<Resp, RegistryError> {
    app.registry.delete_blob(name, digest).await?;
    Ok(response::status(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .header(CONTENT_DIGEST, digest.to_string())
        .body(response::empty())
        .expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: u64, len: u64) -> RangeRequest {
        RangeRequest::Part(ByteRange { start, len })
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeRequest::Whole);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), part(0, 5));
        assert_eq!(parse_range(Some("bytes=5-"), 10), part(5, 5));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), part(5, 5));
        assert_eq!(parse_range(Some("bytes=-3"), 10), part(7, 3));
        assert_eq!(parse_range(Some("bytes=0-0,5-6"), 10), part(0, 1));
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeRequest::Whole);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), RangeRequest::Whole);
    }
}
