//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use http::{header, Method, StatusCode};

use super::request::Ctx;
use super::response::{self, Resp, CONTENT_DIGEST};
use super::App;
use crate::error::{ErrorCode, RegistryError};
use crate::manifest::MAX_MANIFEST_SIZE;
use crate::reference::{Reference, RepoName, Tag};

/// Serves the stored bytes with the stored media type. `Accept` is not used to convert
/// or refuse: a byte-exact manifest in the pushed type is the only thing we can serve,
/// and clients that asked for something else still cope better with it than with a 404.
pub async fn get(app: &App, ctx: &Ctx, name: &RepoName, reference: &Reference) -> Result<Resp, RegistryError> {
    let builder = |digest: &str, media_type: &str, size: u64| {
        response::status(StatusCode::OK)
            .header(header::CONTENT_TYPE, media_type)
            .header(header::CONTENT_LENGTH, size)
            .header(CONTENT_DIGEST, digest)
            .header(header::ETAG, format!("\"{digest}\""))
    };
    if ctx.method == Method::HEAD {
        let (digest, media_type, size) = app.registry.stat_manifest(name, reference).await?;
        return Ok(builder(&digest.to_string(), &media_type, size)
            .body(response::empty())
            .expect("valid response"));
    }
    let m = app.registry.get_manifest(name, reference).await?;
    Ok(builder(&m.digest.to_string(), &m.media_type, m.body.len() as u64)
        .body(response::full(m.body))
        .expect("valid response"))
}

pub async fn put(app: &App, ctx: &mut Ctx, name: &RepoName, reference: &Reference) -> Result<Resp, RegistryError> {
    let content_type = ctx
        .header(header::CONTENT_TYPE)
        .map(|ct| ct.split(';').next().unwrap_or("").trim().to_owned());
    let extra_tags = ctx
        .query_all("tag")
        .map(|t| {
            Tag::parse(t).map_err(|_| RegistryError::new(ErrorCode::ManifestInvalid, format!("invalid tag {t:?}")))
        })
        .collect::<Result<Vec<Tag>, _>>()?;
    let body = ctx.read_body_capped(MAX_MANIFEST_SIZE).await?;
    let pushed = app
        .registry
        .put_manifest(name, reference, content_type.as_deref(), body, &extra_tags)
        .await?;
    let location = ctx.location(&format!("{}/manifests/{}", ctx.base_path(), pushed.digest));
    let mut builder = response::status(StatusCode::CREATED)
        .header(header::LOCATION, location)
        .header(header::CONTENT_LENGTH, 0)
        .header(CONTENT_DIGEST, pushed.digest.to_string());
    if let Some(subject) = &pushed.subject {
        builder = builder.header("OCI-Subject", subject.to_string());
    }
    // Tags applied by `?tag=` are confirmed one header each.
    for tag in &extra_tags {
        builder = builder.header("OCI-Tag", tag.as_str());
    }
    Ok(builder.body(response::empty()).expect("valid response"))
}

pub async fn delete(app: &App, _ctx: &Ctx, name: &RepoName, reference: &Reference) -> Result<Resp, RegistryError> {
    app.registry.delete_manifest(name, reference).await?;
    Ok(response::status(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .body(response::empty())
        .expect("valid response"))
}
