//! Maps a request path to an endpoint of the distribution API.
//!
//! A repository name spans several path segments, so a path is read from its end: the
//! fixed suffix nearest the end (`/manifests/<ref>`, `/blobs/<digest>`, ...) wins and the
//! name is everything before it. Names, digests and references are validated here, before
//! any handler or storage sees them.

use crate::error::{ErrorCode, RegistryError};
use crate::reference::{Digest, Reference, RepoName};
use crate::storage::UploadId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, Reference),
    Blob(RepoName, Digest),
    /// `None`: `/blobs/uploads/` (open a session); `Some`: one session.
    Upload(RepoName, Option<UploadId>),
    Referrers(RepoName, Digest),
}

impl Route {
    pub fn repo(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags(n)
            | Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::Upload(n, _)
            | Route::Referrers(n, _) => Some(n),
        }
    }
}

/// Why a path is not an endpoint: unknown paths are 404s; known shapes with bad parts
/// carry the spec error.
#[derive(Debug)]
pub enum RouteError {
    NotFound,
    Invalid(RegistryError),
}

enum Kind {
    Tags,
    Manifest,
    Blob,
    Upload,
    Referrers,
}

/// Splits `s` at its last `/`: (before, after). `None` when there is no `/`.
fn split_last(s: &str) -> Option<(&str, &str)> {
    s.rfind('/').map(|i| (&s[..i], &s[i + 1..]))
}

/// Finds the endpoint suffix of `rest` (the path after `/v2/`): the kind, where the name
/// ends, and the last segment (reference, digest or upload id; may be empty). Only byte
/// searches for `/`: this runs on every request.
fn classify(rest: &str) -> Option<(Kind, &str, &str)> {
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some((Kind::Tags, name, ""));
    }
    let (head, tail) = split_last(rest)?;
    let (before, prev) = split_last(head)?;
    match prev {
        "manifests" => Some((Kind::Manifest, before, tail)),
        "referrers" => Some((Kind::Referrers, before, tail)),
        // `/blobs/uploads` without the trailing slash opens a session too.
        "blobs" if tail == "uploads" => Some((Kind::Upload, before, "")),
        "blobs" => Some((Kind::Blob, before, tail)),
        "uploads" => {
            let (name, blobs) = split_last(before)?;
            (blobs == "blobs").then_some((Kind::Upload, name, tail))
        }
        _ => None,
    }
}

/// Parses a percent-decoded path. `ns` is the namespace prefix to apply to the name
/// (from containerd's `ns` query parameter), already mapped to a name prefix. `pushing`
/// tells whether a malformed manifest reference is a bad tag to store (400) or simply a
/// manifest that cannot exist (404).
pub fn parse(path: &str, ns_prefix: Option<&str>, pushing: bool) -> Result<Route, RouteError> {
    let rest = match path.strip_prefix("/v2") {
        Some("") | Some("/") => return Ok(Route::Base),
        Some(r) => r.strip_prefix('/').ok_or(RouteError::NotFound)?,
        None => return Err(RouteError::NotFound),
    };
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    let (kind, raw_name, tail) = classify(rest).ok_or(RouteError::NotFound)?;
    let name = RepoName::parse(raw_name).map_err(|e| RouteError::Invalid(e.into()))?;
    let name = match ns_prefix {
        Some(prefix) => name.with_prefix(prefix).map_err(|e| RouteError::Invalid(e.into()))?,
        None => name,
    };
    let invalid = |e: crate::reference::ParseError| RouteError::Invalid(e.into());
    Ok(match kind {
        Kind::Tags => Route::Tags(name),
        Kind::Manifest => {
            if tail.is_empty() {
                return Err(RouteError::NotFound);
            }
            Route::Manifest(name, Reference::parse(tail).map_err(|e| match e {
                crate::reference::ParseError::Tag(t) if pushing => RouteError::Invalid(RegistryError::new(
                    ErrorCode::ManifestInvalid,
                    format!("invalid tag {t:?}"),
                )),
                crate::reference::ParseError::Tag(t) => RouteError::Invalid(RegistryError::new(
                    ErrorCode::ManifestUnknown,
                    format!("manifest {t:?} is unknown"),
                )),
                other => invalid(other),
            })?)
        }
        Kind::Blob => {
            if tail.is_empty() {
                return Err(RouteError::NotFound);
            }
            Route::Blob(name, Digest::parse(tail).map_err(invalid)?)
        }
        Kind::Referrers => Route::Referrers(name, Digest::parse(tail).map_err(invalid)?),
        Kind::Upload => {
            if tail.is_empty() {
                Route::Upload(name, None)
            } else {
                // An id we never issued cannot name a session.
                let id = UploadId::parse(tail).ok_or_else(|| {
                    RouteError::Invalid(RegistryError::new(
                        ErrorCode::BlobUploadUnknown,
                        "upload session is unknown",
                    ))
                })?;
                Route::Upload(name, Some(id))
            }
        }
    })
}

/// Maps containerd's `ns` parameter to a repository prefix: docker.io and its aliases
/// have none (Docker's own mirror requests are un-prefixed); any other registry host
/// becomes the first name component(s), with a port's `:` turned into `-`.
pub fn namespace_prefix(ns: &str) -> Result<Option<String>, RegistryError> {
    let host = ns.trim().to_ascii_lowercase();
    if matches!(host.as_str(), "docker.io" | "index.docker.io" | "registry-1.docker.io") {
        return Ok(None);
    }
    let prefix = host.replace(':', "-");
    RepoName::parse(&prefix)
        .map(|_| Some(prefix))
        .map_err(|_| RegistryError::new(ErrorCode::NameInvalid, format!("invalid namespace {ns:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn route(p: &str) -> Route {
        parse(p, None, false).unwrap_or_else(|e| panic!("{p}: {e:?}"))
    }

    #[test]
    fn routes_by_the_suffix_nearest_the_end() {
        assert_eq!(route("/v2/"), Route::Base);
        assert_eq!(route("/v2"), Route::Base);
        assert_eq!(route("/v2/_catalog"), Route::Catalog);
        let n = |s: &str| RepoName::parse(s).unwrap();
        assert_eq!(route("/v2/a/b/c/tags/list"), Route::Tags(n("a/b/c")));
        assert!(matches!(route("/v2/a/blobs/manifests/latest"), Route::Manifest(r, _) if r == n("a/blobs")));
        assert!(matches!(route(&format!("/v2/a/manifests/x/blobs/{D}")), Route::Blob(r, _) if r == n("a/manifests/x")));
        assert_eq!(route("/v2/a/blobs/uploads/"), Route::Upload(n("a"), None));
        assert_eq!(route("/v2/a/blobs/uploads"), Route::Upload(n("a"), None));
        let id = UploadId::random();
        assert_eq!(route(&format!("/v2/a/blobs/uploads/{}", id.as_str())), Route::Upload(n("a"), Some(id)));
        assert!(matches!(route(&format!("/v2/a/referrers/{D}")), Route::Referrers(..)));
        assert!(matches!(route(&format!("/v2/a/manifests/{D}")), Route::Manifest(_, Reference::Digest(_))));
    }

    #[test]
    fn bad_parts_are_spec_errors() {
        let code = |p: &str| match parse(p, None, true) {
            Err(RouteError::Invalid(e)) => e.code,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(code("/v2/A/tags/list"), ErrorCode::NameInvalid);
        assert_eq!(code("/v2/a/../b/tags/list"), ErrorCode::NameInvalid);
        assert_eq!(code("/v2//etc/tags/list"), ErrorCode::NameInvalid);
        assert_eq!(code("/v2/a/blobs/sha256:abc"), ErrorCode::DigestInvalid);
        assert_eq!(code("/v2/a/manifests/-bad"), ErrorCode::ManifestInvalid);
        assert_eq!(code("/v2/a/blobs/uploads/nope"), ErrorCode::BlobUploadUnknown);
        assert!(matches!(parse("/v1/x", None, false), Err(RouteError::NotFound)));
        assert!(matches!(parse("/v2/a", None, false), Err(RouteError::NotFound)));
        assert!(matches!(parse("/v2/a/manifests/-bad", None, false), Err(RouteError::Invalid(e)) if e.code == ErrorCode::ManifestUnknown && e.status == 404));
    }

    #[test]
    fn namespaces_prefix_names() {
        assert_eq!(namespace_prefix("docker.io").unwrap(), None);
        assert_eq!(namespace_prefix("quay.io").unwrap().as_deref(), Some("quay.io"));
        assert_eq!(namespace_prefix("localhost:5000").unwrap().as_deref(), Some("localhost-5000"));
        assert!(namespace_prefix("../x").is_err());
        let r = parse("/v2/org/app/tags/list", Some("quay.io"), false).unwrap();
        assert_eq!(r, Route::Tags(RepoName::parse("quay.io/org/app").unwrap()));
    }
}
