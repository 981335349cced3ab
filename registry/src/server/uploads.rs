//! Blob uploads: `POST` (monolithic, session, mount), `PATCH`, `PUT`, status `GET` and
//! cancelling `DELETE` on `/v2/<name>/blobs/uploads/`.

use http::{header, StatusCode};

use super::request::{query_repo, Ctx};
use super::response::{self, Resp, CONTENT_DIGEST, UPLOAD_UUID};
use super::App;
use crate::auth::{Access, Action};
use crate::error::{ErrorCode, RegistryError};
use crate::reference::{Algorithm, Digest, RepoName};
use crate::storage::UploadId;

/// The `Range` header value for `size` bytes received (`0-0` when empty, as distribution
/// sends and clients expect; never `0--1`).
fn range_value(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// The `digest` query parameter, required on a closing PUT.
fn required_digest(ctx: &Ctx) -> Result<Digest, RegistryError> {
    let raw = ctx
        .query("digest")
        .ok_or_else(|| RegistryError::new(ErrorCode::DigestInvalid, "the digest parameter is required"))?;
    Ok(Digest::parse(raw)?)
}

fn session_response(ctx: &Ctx, status: StatusCode, id: &UploadId, size: u64) -> Resp {
    let location = ctx.location(&format!("{}/blobs/uploads/{}", ctx.base_path(), id.as_str()));
    response::status(status)
        .header(header::LOCATION, location)
        .header(header::RANGE, range_value(size))
        .header(header::CONTENT_LENGTH, 0)
        .header(UPLOAD_UUID, id.as_str())
        .body(response::empty())
        .expect("valid response")
}

fn created_response(ctx: &Ctx, digest: &Digest) -> Resp {
    let location = ctx.location(&format!("{}/blobs/{digest}", ctx.base_path()));
    response::status(StatusCode::CREATED)
        .header(header::LOCATION, location)
        .header(header::CONTENT_LENGTH, 0)
        .header(CONTENT_DIGEST, digest.to_string())
        .body(response::empty())
        .expect("valid response")
}

fn out_of_order(ctx: &Ctx, id: &UploadId, current: u64) -> Resp {
    let err = RegistryError::new(
        ErrorCode::BlobUploadInvalid,
        format!("chunk does not start at the {current} bytes received so far"),
    )
    .with_status(StatusCode::RANGE_NOT_SATISFIABLE);
    let mut resp = response::error(&err, false);
    let location = ctx.location(&format!("{}/blobs/uploads/{}", ctx.base_path(), id.as_str()));
    let h = resp.headers_mut();
    h.insert(header::LOCATION, response::hv(&location));
    h.insert(header::RANGE, response::hv(&range_value(current)));
    h.insert(UPLOAD_UUID, response::hv(id.as_str()));
    resp
}

/// The start offset a `Content-Range: <start>-<end>` claims, `Err` when malformed.
fn content_range_start(ctx: &Ctx) -> Result<Option<u64>, ()> {
    let Some(v) = ctx.header(header::CONTENT_RANGE) else { return Ok(None) };
    // Some clients send `bytes <start>-<end>/<total>`; accept both shapes.
    let v = v.trim().trim_start_matches("bytes").trim();
    let v = v.split('/').next().unwrap_or("");
    let (a, b) = v.split_once('-').ok_or(())?;
    let start: u64 = a.trim().parse().map_err(|_| ())?;
    let end: u64 = b.trim().parse().map_err(|_| ())?;
    if end < start {
        return Err(());
    }
    Ok(Some(start))
}

/// `POST /v2/<name>/blobs/uploads/`: a mount, a monolithic upload, or a new session.
pub async fn start(app: &App, ctx: &mut Ctx, name: &RepoName) -> Result<Resp, RegistryError> {
    if let Some(mount) = ctx.query("mount") {
        let digest = Digest::parse(mount)?;
        let from = ctx.query("from").and_then(|f| query_repo(f, ctx.ns_prefix().as_deref()));
        if let Some(from) = from {
            // Mounting reads `from`: the caller must be allowed to pull it.
            let may_read = app
                .authorizer
                .check(
                    &ctx.parts,
                    &Access {
                        repo: Some(from.clone()),
                        action: Action::Pull,
                    },
                )
                .is_ok();
            if may_read && app.registry.mount_blob(name, &from, &digest).await? {
                return Ok(created_response(ctx, &digest));
            }
        }
        // Not mountable: an ordinary session, never an error.
    }

    if let Some(raw) = ctx.query("digest") {
        let digest = Digest::parse(raw)?;
        let id = app.registry.start_upload(name, digest.algorithm()).await?;
        let body = ctx.take_body_stream();
        let appended = app.registry.append_upload(name, &id, None, body).await;
        if let Err(e) = appended {
            let _ = app.registry.cancel_upload(name, &id).await;
            return Err(e);
        }
        app.registry.finish_upload(name, &id, &digest).await?;
        return Ok(created_response(ctx, &digest));
    }

    let algorithm = match ctx.query("digest-algorithm") {
        Some(a) => Algorithm::parse(a)?,
        None => Algorithm::Sha256,
    };
    let id = app.registry.start_upload(name, algorithm).await?;
    Ok(session_response(ctx, StatusCode::ACCEPTED, &id, 0))
}

/// Appends the request body where its `Content-Range` says (or at the end without one).
/// `Err(response)`: the 416 to answer when the chunk does not fit.
async fn append_body(app: &App, ctx: &mut Ctx, name: &RepoName, id: &UploadId) -> Result<Result<u64, Resp>, RegistryError> {
    let Ok(at) = content_range_start(ctx) else {
        let current = app.registry.upload_offset(name, id).await?;
        return Ok(Err(out_of_order(ctx, id, current)));
    };
    let body = ctx.take_body_stream();
    Ok(app.registry.append_upload(name, id, at, body).await?.map_err(|current| out_of_order(ctx, id, current)))
}

/// `PATCH`: one chunk, in order.
pub async fn patch(app: &App, ctx: &mut Ctx, name: &RepoName, id: &UploadId) -> Result<Resp, RegistryError> {
    Ok(match append_body(app, ctx, name, id).await? {
        Ok(size) => session_response(ctx, StatusCode::ACCEPTED, id, size),
        Err(resp) => resp,
    })
}

/// `PUT ?digest=`: closes the session, with or without a last chunk.
pub async fn put(app: &App, ctx: &mut Ctx, name: &RepoName, id: &UploadId) -> Result<Resp, RegistryError> {
    let digest = required_digest(ctx)?;
    if !ctx.body_is_empty() && ctx.content_length() != Some(0) {
        if let Err(resp) = append_body(app, ctx, name, id).await? {
            return Ok(resp);
        }
    }
    app.registry.finish_upload(name, id, &digest).await?;
    Ok(created_response(ctx, &digest))
}

/// `GET`: how much the session has received.
pub async fn status(app: &App, ctx: &Ctx, name: &RepoName, id: &UploadId) -> Result<Resp, RegistryError> {
    let size = app.registry.upload_offset(name, id).await?;
    Ok(session_response(ctx, StatusCode::NO_CONTENT, id, size))
}

/// `DELETE`: cancels the session and drops its data.
pub async fn cancel(app: &App, _ctx: &Ctx, name: &RepoName, id: &UploadId) -> Result<Resp, RegistryError> {
    app.registry.cancel_upload(name, id).await?;
    Ok(response::status(StatusCode::NO_CONTENT)
        .header(header::CONTENT_LENGTH, 0)
        .body(response::empty())
        .expect("valid response"))
}
