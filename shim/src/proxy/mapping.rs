//! From a client's request path to the two places it can be answered from: the buildset
//! registry (where every registry but docker.io lives under a `<registry>/` prefix) and
//! the image's own upstream registry.
//!
//! The registry an image belongs to comes from, in this order:
//! 1. containerd's `ns` query parameter (`/v2/org/app/manifests/1?ns=quay.io`);
//! 2. the first path component, when it looks like a registry host by Docker's rule
//!    (it holds a `.` or `:`, is `localhost`, or has an upper-case letter): the layout of a
//!    registries.conf mirror `location = "127.0.0.1:PORT/quay.io"`, which sends
//!    `/v2/quay.io/org/app/...`;
//! 3. otherwise docker.io: dockerd's `registry-mirrors` send `/v2/library/foo/...`.
//!
//! Names, references and digests are validated by the registry's own route parser
//! ([`specreg_registry::server::route`]); this module only peels the registry host off the
//! front of the path.

use std::borrow::Cow;

use specreg_registry::error::{ErrorCode, RegistryError};
use specreg_registry::reference::{Reference, RepoName};
use specreg_registry::server::route::{self, Route, RouteError};

/// Docker Hub, under the names clients use for it.
pub const DOCKER_IO: &str = "docker.io";

/// What kind of answer a request wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/v2/`: answered by the proxy itself.
    Base,
    /// `/v2/_catalog`: the buildset registry's.
    Catalog,
    /// A read of something that may be in the buildset registry or upstream.
    Manifest,
    Blob,
    Tags,
    Referrers,
    /// An upload session (always the buildset registry's).
    Upload,
}

/// A request mapped onto the buildset registry and the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub kind: Kind,
    /// The image's registry, canonical (`docker.io` for Docker Hub and its aliases).
    pub registry: String,
    /// The repository name as the upstream knows it (`org/app`); empty for base/catalog.
    pub name: String,
    /// `:tag`, `@digest` or empty: for messages.
    pub reference: String,
    /// Path and query to send to the buildset registry (`/v2/quay.io/org/app/...`).
    pub buildset_path: String,
    /// Path and query to send to the upstream, relative to its base URL (`/v2/org/app/...`).
    pub upstream_path: String,
    /// The `ns` parameter as sent, echoed in `OCI-Namespace`.
    pub ns: Option<String>,
    /// For referrers: the subject manifest's path in the buildset registry. Referrers are
    /// answered by whichever registry holds the subject (the buildset registry answers an
    /// empty list for any digest, which would hide an upstream image's referrers).
    pub subject_path: Option<String>,
    /// Arrived on the interception listener (the client believes it talks to `registry`).
    pub intercepted: bool,
}

impl Mapped {
    /// `registry/name` (`docker.io/library/foo`, `quay.io/org/app`).
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.registry, self.name)
    }

    /// The image for messages: `quay.io/org/app:1`, `docker.io/library/foo@sha256:...`.
    pub fn image(&self) -> String {
        format!("{}/{}{}", self.registry, self.name, self.reference)
    }

    /// Whether this is a read that may be answered by the upstream on a miss.
    pub fn is_overlay_read(&self, method: &http::Method) -> bool {
        matches!(self.kind, Kind::Manifest | Kind::Blob | Kind::Tags | Kind::Referrers)
            && (method == http::Method::GET || method == http::Method::HEAD)
    }
}

/// Why a request cannot be mapped.
#[derive(Debug)]
pub enum MapError {
    /// Not an endpoint of the distribution API.
    NotFound,
    /// An endpoint with a malformed name, reference, digest or namespace.
    Invalid(RegistryError),
}

/// Docker's rule for "the first component of a reference is a registry host".
pub fn looks_like_host(component: &str) -> bool {
    component.contains(['.', ':'])
        || component == "localhost"
        || component.bytes().any(|b| b.is_ascii_uppercase())
}

/// The canonical spelling of a registry host: lower case, Docker Hub's aliases folded.
pub fn canonical_registry(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_IO.to_owned(),
        _ => host,
    }
}

/// Splits a raw query into its `&`-separated pairs, leaving each byte-exact, and finds `ns`.
fn query_without_ns(query: Option<&str>) -> (Vec<&str>, Option<String>) {
    let mut kept = Vec::new();
    let mut ns = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let key = pair.split('=').next().unwrap_or("");
        if key == "ns" {
            let value = form_urlencoded::parse(pair.as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            if !value.is_empty() {
                ns = Some(value);
            }
        } else {
            kept.push(pair);
        }
    }
    (kept, ns)
}

fn join_query(path: String, pairs: &[Cow<'_, str>]) -> String {
    if pairs.is_empty() {
        path
    } else {
        let mut s = path;
        s.push('?');
        s.push_str(&pairs.join("&"));
        s
    }
}

/// Maps a request's path and query (as on the wire). `pushing` is true for `PUT`, where a
/// malformed tag is a bad request rather than an unknown manifest.
pub fn map(raw_path: &str, raw_query: Option<&str>, pushing: bool) -> Result<Mapped, MapError> {
    map_in(None, raw_path, raw_query, pushing)
}

/// Like [`map`], for a request whose registry is known from where it arrived: on the
/// interception listener the client talks to `quay.io` itself, so the whole path is the
/// repository name and no `ns` or host prefix applies.
pub fn map_in(
    registry: Option<&str>,
    raw_path: &str,
    raw_query: Option<&str>,
    pushing: bool,
) -> Result<Mapped, MapError> {
    let path = percent_encoding::percent_decode_str(raw_path)
        .decode_utf8()
        .map_err(|_| MapError::NotFound)?;
    let rest = match path.strip_prefix("/v2") {
        Some("") | Some("/") => "",
        Some(r) => r.strip_prefix('/').ok_or(MapError::NotFound)?,
        None => return Err(MapError::NotFound),
    };
    let registry_forced = registry.is_some();
    let (pairs, ns) = match registry {
        // `ns` means nothing to the real registry: the query goes on as it came.
        Some(_) => (raw_query.unwrap_or("").split('&').filter(|p| !p.is_empty()).collect(), None),
        None => query_without_ns(raw_query),
    };

    // Which registry, and the path from the repository name on.
    let first = rest.split_once('/');
    let (registry, name_rest) = match (registry, &ns, first) {
        (Some(r), _, _) => (canonical_registry(r), rest),
        (None, ns, first) => registry_from(ns, first, rest),
    };
    let prefix = route::namespace_prefix(&registry).map_err(MapError::Invalid)?;

    let route = route::parse(&format!("/v2/{name_rest}"), prefix.as_deref(), pushing).map_err(|e| match e {
        RouteError::NotFound => MapError::NotFound,
        RouteError::Invalid(e) => MapError::Invalid(e),
    })?;
    let (kind, reference) = match &route {
        Route::Base => (Kind::Base, String::new()),
        Route::Catalog => (Kind::Catalog, String::new()),
        Route::Manifest(_, r) => match r {
            Reference::Tag(t) => (Kind::Manifest, format!(":{t}")),
            Reference::Digest(d) => (Kind::Manifest, format!("@{d}")),
        },
        Route::Blob(_, d) => (Kind::Blob, format!("@{d}")),
        Route::Tags(_) => (Kind::Tags, String::new()),
        Route::Referrers(_, d) => (Kind::Referrers, format!("@{d}")),
        Route::Upload(..) => (Kind::Upload, String::new()),
    };

    // The route parser took the name from the front of `name_rest` as written; the
    // buildset path puts the prefixed name in its place.
    let (name, buildset_path) = match route.repo() {
        Some(full) => {
            let written = match &prefix {
                Some(p) => &full.as_str()[p.len() + 1..],
                None => full.as_str(),
            };
            let suffix = &name_rest[written.len()..];
            (written.to_owned(), format!("/v2/{full}{suffix}"))
        }
        None => (String::new(), format!("/v2/{name_rest}")),
    };

    // A cross-repository mount names its source in the same namespace as the target.
    let buildset_pairs: Vec<Cow<'_, str>> = pairs
        .iter()
        .map(|pair| match &prefix {
            Some(p) if pair.split('=').next() == Some("from") => prefixed_from(pair, p),
            _ => Cow::Borrowed(*pair),
        })
        .collect();
    let subject_path = match &route {
        Route::Referrers(full, d) => Some(format!("/v2/{full}/manifests/{d}")),
        _ => None,
    };
    let upstream_pairs: Vec<Cow<'_, str>> = pairs.iter().map(|p| Cow::Borrowed(*p)).collect();

    Ok(Mapped {
        kind,
        registry,
        name,
        reference,
        buildset_path: join_query(buildset_path, &buildset_pairs),
        upstream_path: join_query(format!("/v2/{name_rest}"), &upstream_pairs),
        ns,
        subject_path,
        intercepted: registry_forced,
    })
}

/// The registry from `ns`, else from a host-like first path component, else docker.io;
/// with the rest of the path from the repository name on.
fn registry_from<'a>(ns: &Option<String>, first: Option<(&'a str, &'a str)>, rest: &'a str) -> (String, &'a str) {
    match (ns, first) {
        (Some(ns), Some((first, after))) if canonical_registry(first) == canonical_registry(ns) => {
            (canonical_registry(ns), after)
        }
        (Some(ns), _) => (canonical_registry(ns), rest),
        (None, Some((first, after))) if looks_like_host(first) => (canonical_registry(first), after),
        (None, _) => (DOCKER_IO.to_owned(), rest),
    }
}

/// `from=<name>` with the name moved under `prefix`; unchanged when it is not a valid name
/// (the registry then simply finds nothing to mount and opens an upload session).
fn prefixed_from<'a>(pair: &'a str, prefix: &str) -> Cow<'a, str> {
    let Some((_, value)) = form_urlencoded::parse(pair.as_bytes()).next() else {
        return Cow::Borrowed(pair);
    };
    match RepoName::parse(&value).and_then(|n| n.with_prefix(prefix)) {
        Ok(prefixed) => Cow::Owned(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("from", prefixed.as_str())
                .finish(),
        ),
        Err(_) => Cow::Borrowed(pair),
    }
}

/// Whether `full_name` (`registry/name`) falls under an authoritative prefix: a prefix
/// ending in `/` matches anything below it; one without matches that name and its
/// sub-repositories, never a longer sibling (`quay.io/org/app` does not cover `app2`).
pub fn under_prefix(full_name: &str, prefix: &str) -> bool {
    let prefix = prefix.trim();
    if prefix.is_empty() {
        return false;
    }
    if prefix.ends_with('/') {
        return full_name.starts_with(prefix);
    }
    full_name == prefix
        || (full_name.starts_with(prefix) && full_name.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// The error a miss is answered with: the spec code of the endpoint.
pub fn miss_error(mapped: &Mapped, message: String) -> RegistryError {
    let code = match mapped.kind {
        Kind::Manifest => ErrorCode::ManifestUnknown,
        Kind::Blob => ErrorCode::BlobUnknown,
        _ => ErrorCode::NameUnknown,
    };
    RegistryError::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn m(path: &str, query: Option<&str>) -> Mapped {
        map(path, query, false).unwrap_or_else(|e| panic!("{path}: {e:?}"))
    }

    #[test]
    fn docker_hub_names_are_unprefixed() {
        let x = m("/v2/library/foo/manifests/1", None);
        assert_eq!(x.kind, Kind::Manifest);
        assert_eq!(x.registry, "docker.io");
        assert_eq!(x.name, "library/foo");
        assert_eq!(x.buildset_path, "/v2/library/foo/manifests/1");
        assert_eq!(x.upstream_path, "/v2/library/foo/manifests/1");
        assert_eq!(x.image(), "docker.io/library/foo:1");
        let x = m("/v2/library/foo/manifests/1", Some("ns=docker.io"));
        assert_eq!(x.buildset_path, "/v2/library/foo/manifests/1");
        assert_eq!(x.ns.as_deref(), Some("docker.io"));
        let x = m("/v2/docker.io/library/foo/manifests/1", None);
        assert_eq!((x.registry.as_str(), x.buildset_path.as_str()), ("docker.io", "/v2/library/foo/manifests/1"));
        let x = m("/v2/library/foo/manifests/1", Some("ns=registry-1.docker.io"));
        assert_eq!(x.registry, "docker.io");
    }

    #[test]
    fn path_prefix_and_ns_give_the_registry() {
        let x = m("/v2/quay.io/org/app/manifests/1", None);
        assert_eq!(x.registry, "quay.io");
        assert_eq!(x.name, "org/app");
        assert_eq!(x.buildset_path, "/v2/quay.io/org/app/manifests/1");
        assert_eq!(x.upstream_path, "/v2/org/app/manifests/1");

        let x = m("/v2/org/app/manifests/1", Some("ns=quay.io"));
        assert_eq!(x.buildset_path, "/v2/quay.io/org/app/manifests/1");
        assert_eq!(x.upstream_path, "/v2/org/app/manifests/1");
        assert_eq!(x.ns.as_deref(), Some("quay.io"));

        // Following a Location the buildset registry gave, with containerd's ns added.
        let x = m("/v2/quay.io/org/app/manifests/1", Some("ns=quay.io"));
        assert_eq!(x.buildset_path, "/v2/quay.io/org/app/manifests/1");

        let x = m(&format!("/v2/localhost:5000/x/blobs/{D}"), None);
        assert_eq!(x.registry, "localhost:5000");
        assert_eq!(x.buildset_path, format!("/v2/localhost-5000/x/blobs/{D}"));
        assert_eq!(x.upstream_path, format!("/v2/x/blobs/{D}"));
        assert_eq!(x.kind, Kind::Blob);
        assert_eq!(x.subject_path, None);

        let x = m(&format!("/v2/org/app/referrers/{D}"), Some("ns=quay.io&artifactType=a%2Fb"));
        assert_eq!(x.buildset_path, format!("/v2/quay.io/org/app/referrers/{D}?artifactType=a%2Fb"));
        assert_eq!(x.subject_path, Some(format!("/v2/quay.io/org/app/manifests/{D}")));

        let x = m("/v2/localhost/x/tags/list", None);
        assert_eq!((x.registry.as_str(), x.kind), ("localhost", Kind::Tags));
    }

    #[test]
    fn buildset_paths_map_back_to_themselves() {
        // A Location from the buildset registry, followed through the proxy, reaches the
        // same repository.
        for p in ["/v2/quay.io/org/app/manifests/1", "/v2/localhost-5000/x/manifests/1", "/v2/library/a/manifests/1"] {
            assert_eq!(m(p, None).buildset_path, p);
        }
    }

    #[test]
    fn queries_keep_everything_but_ns() {
        let x = m("/v2/org/app/tags/list", Some("n=10&ns=quay.io&last=a%2Db"));
        assert_eq!(x.buildset_path, "/v2/quay.io/org/app/tags/list?n=10&last=a%2Db");
        assert_eq!(x.upstream_path, "/v2/org/app/tags/list?n=10&last=a%2Db");
        let x = m("/v2/org/app/blobs/uploads/", Some(&format!("ns=quay.io&mount={D}&from=org/base")));
        assert_eq!(x.kind, Kind::Upload);
        assert_eq!(x.buildset_path, format!("/v2/quay.io/org/app/blobs/uploads/?mount={D}&from=quay.io%2Forg%2Fbase"));
    }

    #[test]
    fn base_catalog_and_errors() {
        assert_eq!(m("/v2/", None).kind, Kind::Base);
        assert_eq!(m("/v2", None).kind, Kind::Base);
        assert_eq!(m("/v2/_catalog", None).kind, Kind::Catalog);
        assert!(matches!(map("/v1/x", None, false), Err(MapError::NotFound)));
        assert!(matches!(map("/v2/quay.io/org", None, false), Err(MapError::NotFound)));
        assert!(matches!(map("/v2/quay.io/../x/manifests/1", None, false), Err(MapError::Invalid(_))));
        assert!(matches!(map("/v2/x/manifests/1", Some("ns=..%2Fx"), false), Err(MapError::Invalid(_))));
        assert!(matches!(map("/v2/x/blobs/sha256:nothex", None, false), Err(MapError::Invalid(_))));
    }

    #[test]
    fn intercepted_requests_name_their_registry_by_the_listener() {
        let x = map_in(Some("quay.io"), "/v2/org/app/manifests/1", Some("ns=x.io&n=1"), false).unwrap();
        assert_eq!(x.registry, "quay.io");
        assert_eq!(x.name, "org/app");
        assert_eq!(x.buildset_path, "/v2/quay.io/org/app/manifests/1?ns=x.io&n=1");
        assert_eq!(x.upstream_path, "/v2/org/app/manifests/1?ns=x.io&n=1");
        assert_eq!(x.ns, None);
        // A first component that looks like a host is part of the name here.
        let x = map_in(Some("quay.io"), "/v2/quay.io/app/manifests/1", None, false).unwrap();
        assert_eq!((x.name.as_str(), x.buildset_path.as_str()), ("quay.io/app", "/v2/quay.io/quay.io/app/manifests/1"));
        let x = map_in(Some("quay.io"), "/v2/", None, false).unwrap();
        assert_eq!(x.kind, Kind::Base);
        assert!(matches!(map_in(Some("quay.io"), "/v2/auth", None, false), Err(MapError::NotFound)));
    }

    #[test]
    fn hosts_by_docker_rule() {
        assert!(looks_like_host("quay.io") && looks_like_host("localhost") && looks_like_host("a:5000"));
        assert!(!looks_like_host("library") && !looks_like_host("my-org"));
    }

    #[test]
    fn authoritative_prefixes_respect_components() {
        assert!(under_prefix("quay.io/org/app", "quay.io/org/"));
        assert!(under_prefix("quay.io/org/app", "quay.io/org"));
        assert!(under_prefix("quay.io/org/app", "quay.io/org/app"));
        assert!(!under_prefix("quay.io/org/app2", "quay.io/org/app"));
        assert!(!under_prefix("quay.io/other/app", "quay.io/org/"));
        assert!(!under_prefix("quay.io/org/app", ""));
    }
}
