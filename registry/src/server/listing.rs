//! Content discovery: `tags/list`, `_catalog` and the referrers API, with `n`/`last`
//! pagination and `Link` headers.

use http::{header, StatusCode};
use serde::Serialize;

use super::request::Ctx;
use super::response::{self, Resp};
use super::App;
use crate::error::{ErrorCode, RegistryError};
use crate::manifest::OCI_INDEX;
use crate::reference::{Digest, RepoName};

/// The page of `sorted` after `last`, at most `n` long, and whether more remain.
fn page<'a>(sorted: &'a [String], n: Option<usize>, last: Option<&str>) -> (&'a [String], bool) {
    let start = match last {
        Some(last) => sorted.partition_point(|s| s.as_str() <= last),
        None => 0,
    };
    let rest = &sorted[start..];
    match n {
        Some(n) if n < rest.len() => (&rest[..n], true),
        _ => (rest, false),
    }
}

fn page_params(ctx: &Ctx) -> Result<(Option<usize>, Option<String>), RegistryError> {
    let n = match ctx.query("n") {
        Some(raw) => Some(raw.parse::<usize>().map_err(|_| {
            RegistryError::new(ErrorCode::Unsupported, format!("n must be a non-negative integer, not {raw:?}"))
                .with_status(StatusCode::BAD_REQUEST)
        })?),
        None => None,
    };
    Ok((n, ctx.query("last").map(str::to_owned)))
}

fn json_response<T: Serialize>(content_type: &str, value: &T, link: Option<String>) -> Resp {
    let body = serde_json::to_vec(value).expect("listing serialises");
    let mut builder = response::status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(link) = link {
        builder = builder.header(header::LINK, link);
    }
    builder.body(response::full(body)).expect("valid response")
}

fn next_link(ctx: &Ctx, path: &str, n: usize, last: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("n", &n.to_string())
        .append_pair("last", last)
        .finish();
    format!("<{}>; rel=\"next\"", ctx.location(&format!("{path}?{query}")))
}

pub async fn tags(app: &App, ctx: &Ctx, name: &RepoName) -> Result<Resp, RegistryError> {
    let (n, last) = page_params(ctx)?;
    let tags = app
        .registry
        .tags(name)
        .await?
        .ok_or_else(|| RegistryError::new(ErrorCode::NameUnknown, format!("repository {name} is unknown")))?;
    let (items, more) = page(&tags, n, last.as_deref());
    #[derive(Serialize)]
    struct TagList<'a> {
        name: &'a str,
        tags: &'a [String],
    }
    let link = match (more, n, items.last()) {
        (true, Some(n), Some(last)) => Some(next_link(ctx, &format!("{}/tags/list", ctx.base_path()), n, last)),
        _ => None,
    };
    Ok(json_response("application/json", &TagList { name: ctx.path_name(), tags: items }, link))
}

pub async fn catalog(app: &App, ctx: &Ctx) -> Result<Resp, RegistryError> {
    let (n, last) = page_params(ctx)?;
    let names = app.registry.catalog().await?;
    let (items, more) = page(&names, n, last.as_deref());
    #[derive(Serialize)]
    struct Catalog<'a> {
        repositories: &'a [String],
    }
    let link = match (more, n, items.last()) {
        (true, Some(n), Some(last)) => Some(next_link(ctx, "/v2/_catalog", n, last)),
        _ => None,
    };
    Ok(json_response("application/json", &Catalog { repositories: items }, link))
}

pub async fn referrers(app: &App, ctx: &Ctx, name: &RepoName, subject: &Digest) -> Result<Resp, RegistryError> {
    let artifact_type = ctx.query("artifactType").filter(|t| !t.is_empty());
    let manifests = app.registry.referrers(name, subject, artifact_type).await?;
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Index<'a> {
        schema_version: u32,
        media_type: &'a str,
        manifests: &'a [crate::registry::ReferrerDescriptor],
    }
    let mut resp = json_response(
        OCI_INDEX,
        &Index {
            schema_version: 2,
            media_type: OCI_INDEX,
            manifests: &manifests,
        },
        None,
    );
    if artifact_type.is_some() {
        resp.headers_mut()
            .insert("OCI-Filters-Applied", response::hv("artifactType"));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::page;

    #[test]
    fn pages() {
        let v: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(page(&v, None, None), (&v[..], false));
        assert_eq!(page(&v, Some(2), None), (&v[..2], true));
        assert_eq!(page(&v, Some(2), Some("b")), (&v[2..], false));
        assert_eq!(page(&v, Some(0), None), (&v[..0], true));
        assert_eq!(page(&v, None, Some("bb")), (&v[2..], false));
        assert_eq!(page(&v, Some(10), Some("d")), (&v[4..], false));
    }
}
