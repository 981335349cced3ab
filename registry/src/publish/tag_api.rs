//! Docker Hub's and quay's own tag APIs. The OCI API gives neither tag times nor (on
//! most public registries) tag deletion, so promote and cleanup use these where the
//! registry has them:
//!
//! * Docker Hub: `POST <api>/v2/users/login/` with `{"username","password"}` gives a JWT
//!   (separate from the registry's bearer token), sent as `Authorization: JWT <token>`;
//!   tags are listed at `GET <api>/v2/repositories/<ns>/<repo>/tags?page_size=100`
//!   (following `next`) with `last_updated`, deleted at
//!   `DELETE <api>/v2/repositories/<ns>/<repo>/tags/<tag>/`.
//! * Quay: an API token as `Authorization: Bearer <token>`; tags are listed at
//!   `GET <api>/api/v1/repository/<ns>/<repo>/tag/?limit=100&page=N&onlyActiveTags=true`
//!   (while `has_additional`) with `last_modified`/`start_ts`, deleted at
//!   `DELETE <api>/api/v1/repository/<ns>/<repo>/tag/<tag>`.

use std::fmt;

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::cleanup::{from_unix, parse_rfc2822, parse_rfc3339, TagTime};
use super::PublishError;
use crate::reference::{RepoName, Tag};

/// Default API endpoints of the public services.
pub const HUB_API: &str = "https://hub.docker.com";
pub const QUAY_API: &str = "https://quay.io";

/// Pages followed at most, so a looping `next` cannot run forever.
const MAX_PAGES: usize = 100_000;

/// Which tag API a registry has.
#[derive(Clone)]
pub enum TagApi {
    Hub(HubApi),
    Quay(QuayApi),
}

impl TagApi {
    pub async fn list(&self, repo: &RepoName) -> Result<Vec<TagTime>, PublishError> {
        match self {
            TagApi::Hub(h) => h.list_tags(repo).await,
            TagApi::Quay(q) => q.list_tags(repo).await,
        }
    }

    /// Removes one tag; `false` if the service did not have it.
    pub async fn delete(&self, repo: &RepoName, tag: &Tag) -> Result<bool, PublishError> {
        match self {
            TagApi::Hub(h) => h.delete_tag(repo, tag).await,
            TagApi::Quay(q) => q.delete_tag(repo, tag).await,
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            TagApi::Hub(_) => "Docker Hub's tag API",
            TagApi::Quay(_) => "quay's tag API",
        }
    }
}

fn http_client() -> Result<reqwest::Client, PublishError> {
    reqwest::Client::builder()
        .user_agent(concat!("specreg/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30))
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .map_err(|e| PublishError::Registry(format!("HTTP client: {e}")))
}

fn api_error(method: &Method, url: &str, what: impl fmt::Display) -> PublishError {
    PublishError::Registry(format!("{method} {url}: {what}"))
}

/// Sends one request; returns the status and body. The URL is shown without its query.
async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    auth: &str,
    json: Option<serde_json::Value>,
) -> Result<(StatusCode, bytes::Bytes), PublishError> {
    let mut req = http.request(method.clone(), url).header("Authorization", auth).header("Accept", "application/json");
    if let Some(body) = json {
        req = req.header("Content-Type", "application/json").body(body.to_string());
    }
    let shown = url.split('?').next().unwrap_or(url);
    let resp = req.send().await.map_err(|e| api_error(&method, shown, e))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| api_error(&method, shown, e))?;
    Ok((status, body))
}

fn failure(method: &Method, url: &str, status: StatusCode, body: &[u8]) -> PublishError {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_owned();
    api_error(method, url.split('?').next().unwrap_or(url), format!("{status}: {text}"))
}

/// `next` links are followed only on the same API, so the token never goes elsewhere.
fn same_origin(base: &str, next: &str) -> bool {
    next.strip_prefix(base).is_some_and(|rest| rest.starts_with('/'))
}

/// A Docker Hub session (the JWT from the login endpoint).
#[derive(Clone)]
pub struct HubApi {
    http: reqwest::Client,
    base: String,
    jwt: String,
}

impl fmt::Debug for HubApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubApi").field("base", &self.base).finish_non_exhaustive()
    }
}

/// Docker Hub repositories are `<namespace>/<name>`; official images are `library/<name>`.
fn hub_path(repo: &RepoName) -> Result<&str, PublishError> {
    if repo.components().count() != 2 {
        return Err(PublishError::Usage(format!("{repo} is not a Docker Hub repository (namespace/name)")));
    }
    Ok(repo.as_str())
}

impl HubApi {
    /// Logs in; `base` is the API root (`https://hub.docker.com`).
    pub async fn login(base: &str, username: &str, password: &str) -> Result<Self, PublishError> {
        #[derive(Deserialize)]
        struct Login {
            token: String,
        }
        let http = http_client()?;
        let base = base.trim_end_matches('/').to_owned();
        let url = format!("{base}/v2/users/login/");
        let body = serde_json::json!({"username": username, "password": password});
        let (status, bytes) = send(&http, Method::POST, &url, "", Some(body)).await?;
        if !status.is_success() {
            return Err(failure(&Method::POST, &url, status, &bytes));
        }
        let login: Login = serde_json::from_slice(&bytes)
            .map_err(|e| api_error(&Method::POST, &url, format!("unexpected login answer: {e}")))?;
        Ok(HubApi { http, base, jwt: login.token })
    }

    fn auth(&self) -> String {
        format!("JWT {}", self.jwt)
    }

    pub async fn list_tags(&self, repo: &RepoName) -> Result<Vec<TagTime>, PublishError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            next: Option<String>,
            #[serde(default)]
            results: Vec<Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            name: String,
            #[serde(default)]
            last_updated: Option<String>,
        }
        let mut url = format!("{}/v2/repositories/{}/tags?page_size=100", self.base, hub_path(repo)?);
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let (status, bytes) = send(&self.http, Method::GET, &url, &self.auth(), None).await?;
            if !status.is_success() {
                return Err(failure(&Method::GET, &url, status, &bytes));
            }
            let page: Page = serde_json::from_slice(&bytes)
                .map_err(|e| api_error(&Method::GET, &url, format!("unexpected tag list: {e}")))?;
            for e in page.results {
                // A name the registry grammar refuses cannot be one of our tags.
                let Ok(tag) = Tag::parse(&e.name) else { continue };
                out.push(TagTime { tag, updated: e.last_updated.as_deref().and_then(parse_rfc3339) });
            }
            match page.next {
                Some(next) if same_origin(&self.base, &next) => url = next,
                Some(next) => return Err(api_error(&Method::GET, &url, format!("next page {next:?} is on another host"))),
                None => return Ok(out),
            }
        }
        Err(api_error(&Method::GET, &url, "tag list pagination does not end"))
    }

    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, PublishError> {
        // The documented path ends with a slash.
        let url = format!("{}/v2/repositories/{}/tags/{tag}/", self.base, hub_path(repo)?);
        let (status, bytes) = send(&self.http, Method::DELETE, &url, &self.auth(), None).await?;
        match status.as_u16() {
            200 | 202 | 204 => Ok(true),
            404 => Ok(false),
            _ => Err(failure(&Method::DELETE, &url, status, &bytes)),
        }
    }
}

/// A quay API client (application token).
#[derive(Clone)]
pub struct QuayApi {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl fmt::Debug for QuayApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuayApi").field("base", &self.base).finish_non_exhaustive()
    }
}

impl QuayApi {
    /// `base` is the quay root (`https://quay.io`, or a self-hosted Quay's URL).
    pub fn new(base: &str, token: &str) -> Result<Self, PublishError> {
        if token.is_empty() {
            return Err(PublishError::Usage("the quay API token is empty".into()));
        }
        Ok(QuayApi { http: http_client()?, base: base.trim_end_matches('/').to_owned(), token: token.to_owned() })
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    pub async fn list_tags(&self, repo: &RepoName) -> Result<Vec<TagTime>, PublishError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Vec<Entry>,
            #[serde(default)]
            has_additional: bool,
        }
        #[derive(Deserialize)]
        struct Entry {
            name: String,
            #[serde(default)]
            last_modified: Option<String>,
            #[serde(default)]
            start_ts: Option<i64>,
            /// Set on history entries: the tag no longer points there.
            #[serde(default)]
            end_ts: Option<i64>,
        }
        let mut out = Vec::new();
        for page_no in 1..=MAX_PAGES {
            let url = format!(
                "{}/api/v1/repository/{repo}/tag/?limit=100&page={page_no}&onlyActiveTags=true",
                self.base
            );
            let (status, bytes) = send(&self.http, Method::GET, &url, &self.auth(), None).await?;
            if !status.is_success() {
                return Err(failure(&Method::GET, &url, status, &bytes));
            }
            let page: Page = serde_json::from_slice(&bytes)
                .map_err(|e| api_error(&Method::GET, &url, format!("unexpected tag list: {e}")))?;
            for e in page.tags.into_iter().filter(|e| e.end_ts.is_none()) {
                let Ok(tag) = Tag::parse(&e.name) else { continue };
                let updated = e.last_modified.as_deref().and_then(parse_rfc2822).or_else(|| e.start_ts.and_then(from_unix));
                out.push(TagTime { tag, updated });
            }
            if !page.has_additional {
                return Ok(out);
            }
        }
        Err(PublishError::Registry(format!("{}: tag list pagination does not end", self.base)))
    }

    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool, PublishError> {
        let url = format!("{}/api/v1/repository/{repo}/tag/{tag}", self.base);
        let (status, bytes) = send(&self.http, Method::DELETE, &url, &self.auth(), None).await?;
        match status.as_u16() {
            200 | 202 | 204 => Ok(true),
            404 => Ok(false),
            _ => Err(failure(&Method::DELETE, &url, status, &bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_pages_stay_on_the_api() {
        assert!(same_origin("https://hub.docker.com", "https://hub.docker.com/v2/repositories/a/b/tags?page=2"));
        assert!(!same_origin("https://hub.docker.com", "https://hub.docker.com.evil/v2"));
        assert!(!same_origin("https://hub.docker.com", "https://elsewhere/v2"));
    }

    #[test]
    fn hub_names_have_two_parts() {
        assert!(hub_path(&RepoName::parse("library/alpine").unwrap()).is_ok());
        assert!(hub_path(&RepoName::parse("a/b/c").unwrap()).is_err());
    }
}
