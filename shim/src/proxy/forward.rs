//! One request through the proxy: the overlay read (buildset registry first, the upstream on
//! a miss), pushes to the buildset registry, and the proxy's own answers.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use specreg_registry::error::{ErrorCode, RegistryError};

use super::client::{Endpoint, HttpClient, Upstreams};
use super::mapping::{self, Kind, MapError, Mapped};
use super::Body;

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const OCI_NAMESPACE: HeaderName = HeaderName::from_static("oci-namespace");
/// Error bodies of misses are read to their end (so the connection is kept) up to this size.
const DRAIN_LIMIT: usize = 64 * 1024;

/// Everything a request needs, shared by all connections.
pub struct State {
    pub client: HttpClient,
    pub buildset: Endpoint,
    /// `Basic ...` for the buildset registry, marked sensitive.
    pub buildset_auth: HeaderValue,
    pub upstreams: Upstreams,
    pub no_upstream: bool,
    pub authoritative: Vec<String>,
    pub read_timeout: Duration,
    /// Hosts served on the interception listener (lower case, no port).
    pub intercepted: Vec<String>,
    /// Ask the buildset registry to redirect blob GETs to signed URLs of its own, so the
    /// client fetches the bytes straight from it: the header value to send (the smallest
    /// blob size redirected), `None` to stream every blob (see `ProxyConfig::blob_redirects`).
    pub blob_redirects: Option<HeaderValue>,
}

/// The request header by which the proxy asks a specreg buildset registry for a redirect
/// (`specreg_registry::auth::blob_url::REDIRECT_HEADER`); other registries ignore it.
const BLOB_REDIRECT: HeaderName = HeaderName::from_static(specreg_registry::auth::blob_url::REDIRECT_HEADER);

/// Where an answer came from, for the log.
#[derive(Debug, Clone, Copy)]
pub(super) enum Source {
    Proxy,
    Buildset,
    Upstream,
}

pub async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let head = method == Method::HEAD;
    let mapped = match mapping::map(req.uri().path(), req.uri().query(), method == Method::PUT) {
        Ok(m) => m,
        Err(MapError::NotFound) => {
            tracing::debug!(%method, path = req.uri().path(), "not an endpoint");
            return registry_error(
                &RegistryError::new(ErrorCode::Unsupported, "no such endpoint").with_status(StatusCode::NOT_FOUND),
                head,
            );
        }
        Err(MapError::Invalid(e)) => {
            tracing::debug!(%method, path = req.uri().path(), error = %e.message, "invalid request");
            return registry_error(&e, head);
        }
    };
    let (mut resp, source) = match mapped.kind {
        Kind::Base => (base(&method), Source::Proxy),
        _ if mapped.is_overlay_read(&method) => overlay(state, &mapped, req).await,
        _ => (to_buildset(state, &mapped, req).await, Source::Buildset),
    };
    tracing::debug!(
        %method,
        image = %mapped.image(),
        source = ?source,
        status = resp.status().as_u16(),
        "request"
    );
    if let Some(ns) = &mapped.ns {
        if let (false, Ok(v)) = (resp.headers().contains_key(OCI_NAMESPACE), HeaderValue::from_str(ns)) {
            resp.headers_mut().insert(OCI_NAMESPACE, v);
        }
    }
    resp
}

/// `GET /v2/`: the proxy needs no client credentials (it listens on loopback only).
pub(super) fn base(method: &Method) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return registry_error(
            &RegistryError::new(ErrorCode::Unsupported, format!("{method} is not supported on /v2/")),
            false,
        );
    }
    let body = if method == Method::HEAD { empty() } else { full(Bytes::from_static(b"{}")) };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, 2)
        .header(API_VERSION, "registry/2.0")
        .body(body)
        .expect("valid response")
}

/// A pull: the buildset registry's answer unless it has nothing, then the upstream's.
pub(super) async fn overlay(state: &State, mapped: &Mapped, req: Request<Incoming>) -> (Response<Body>, Source) {
    let (parts, _body) = req.into_parts();

    // Referrers come from whoever holds the subject manifest.
    if let Some(subject) = &mapped.subject_path {
        match ask_buildset(state, mapped, &Method::HEAD, subject, &parts.headers, None).await {
            Ok(Some(resp)) => drain(resp.into_body()).await,
            Ok(None) => return miss(state, mapped, &parts).await,
            Err(resp) => return (resp, Source::Proxy),
        }
    }
    let redirect = match &state.blob_redirects {
        Some(min_size) if mapped.kind == Kind::Blob && parts.method == Method::GET => Some(min_size),
        _ => None,
    };
    match ask_buildset(state, mapped, &parts.method, &mapped.buildset_path, &parts.headers, redirect).await {
        // The signed URL points at the buildset registry itself: hand it on unchanged.
        Ok(Some(resp)) if redirect.is_some() && resp.status() == StatusCode::TEMPORARY_REDIRECT => {
            (relay(resp, |_| None), Source::Buildset)
        }
        Ok(Some(resp)) => (relay(resp, |t| state.buildset.relativize(t)), Source::Buildset),
        Ok(None) => miss(state, mapped, &parts).await,
        Err(resp) => (resp, Source::Proxy),
    }
}

/// A read from the buildset registry with the proxy's credentials: `Ok(None)` when it
/// has nothing (404), `Err` with the answer to give when it cannot be asked. With
/// `ask_redirect` (the smallest size worth it), a blob it holds of at least that size comes
/// back as its `307` to a signed URL; smaller ones come as bytes, on this warm connection.
async fn ask_buildset(
    state: &State,
    mapped: &Mapped,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    ask_redirect: Option<&HeaderValue>,
) -> Result<Option<Response<Incoming>>, Response<Body>> {
    let head = method == Method::HEAD;
    let uri = state
        .buildset
        .uri(path)
        .map_err(|e| bad_gateway(&format!("bad buildset URL: {e}"), head))?;
    let mut req = outgoing(method, uri, headers, Some(&state.buildset_auth), empty());
    if let Some(min_size) = ask_redirect {
        req.headers_mut().insert(BLOB_REDIRECT, min_size.clone());
    }
    match send(&state.client, req, Some(state.read_timeout)).await {
        Err(e) => {
            tracing::warn!(image = %mapped.image(), buildset = %state.buildset, error = %e, "buildset registry unreachable");
            let msg = format!("cannot reach the buildset registry {} for {}: {e}", state.buildset, mapped.image());
            Err(bad_gateway(&msg, head))
        }
        Ok(resp) if resp.status() == StatusCode::NOT_FOUND => {
            drain(resp.into_body()).await;
            Ok(None)
        }
        Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
            drain(resp.into_body()).await;
            Err(credentials_refused(state, head))
        }
        Ok(resp) => Ok(Some(resp)),
    }
}

/// The buildset registry has nothing: an error for authoritative names and with
/// `no_upstream`, else the original request to the upstream.
async fn miss(state: &State, mapped: &Mapped, parts: &http::request::Parts) -> (Response<Body>, Source) {
    let head = parts.method == Method::HEAD;
    let full_name = mapped.full_name();
    if let Some(prefix) = state.authoritative.iter().find(|p| mapping::under_prefix(&full_name, p)) {
        let msg = format!(
            "{} is not in the buildset registry, and names under {prefix} are served only from there",
            mapped.image()
        );
        return (registry_error(&mapping::miss_error(mapped, msg), head), Source::Proxy);
    }
    if state.no_upstream {
        let msg = format!("{} is not in the buildset registry", mapped.image());
        return (registry_error(&mapping::miss_error(mapped, msg), head), Source::Proxy);
    }
    let upstream = match state.upstreams.for_registry(&mapped.registry) {
        Ok(u) => u,
        Err(e) => return (bad_gateway(&format!("no upstream for {}: {e}", mapped.image()), head), Source::Proxy),
    };
    let uri = match upstream.uri(&mapped.upstream_path) {
        Ok(u) => u,
        Err(e) => return (bad_gateway(&format!("bad upstream URL for {}: {e}", mapped.image()), head), Source::Proxy),
    };
    // The client's own headers, Authorization included: its token dance is with the upstream.
    let req = outgoing(&parts.method, uri, &parts.headers, None, empty());
    match send(&state.client, req, Some(state.read_timeout)).await {
        // Through the mirror port a relative target must name the upstream; on the
        // interception listener the client already talks to "the upstream", so absolute
        // targets on it come back to the proxy.
        Ok(resp) if mapped.intercepted => (relay(resp, |t| upstream.relativize(t)), Source::Upstream),
        Ok(resp) => (relay(resp, |t| upstream.absolutize(t)), Source::Upstream),
        Err(e) => {
            tracing::warn!(image = %mapped.image(), %upstream, error = %e, "upstream unreachable");
            let msg = format!("cannot reach the upstream {upstream} for {}: {e}", mapped.image());
            (bad_gateway(&msg, head), Source::Proxy)
        }
    }
}

/// Pushes, upload sessions, deletes and the catalog: the buildset registry's business,
/// with the proxy's credentials. The request body is streamed as it arrives.
async fn to_buildset(state: &State, mapped: &Mapped, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let head = parts.method == Method::HEAD;
    let uri = match state.buildset.uri(&mapped.buildset_path) {
        Ok(u) => u,
        Err(e) => return bad_gateway(&format!("bad buildset URL: {e}"), head),
    };
    let body: Body = body.map_err(Into::into).boxed_unsync();
    let breq = outgoing(&parts.method, uri, &parts.headers, Some(&state.buildset_auth), body);
    // Reads get the timeout; a push's answer comes only after its whole body.
    let timeout = (parts.method == Method::GET || head).then_some(state.read_timeout);
    match send(&state.client, breq, timeout).await {
        Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
            drain(resp.into_body()).await;
            credentials_refused(state, head)
        }
        Ok(resp) => relay(resp, |t| state.buildset.relativize(t)),
        Err(e) => {
            tracing::warn!(image = %mapped.image(), buildset = %state.buildset, error = %e, "buildset registry unreachable");
            bad_gateway(&format!("cannot reach the buildset registry {}: {e}", state.buildset), head)
        }
    }
}

/// Headers that describe one connection, never forwarded (RFC 9110 section 7.6.1).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Copies end-to-end headers, dropping hop-by-hop ones and those the `Connection` header
/// names.
fn copy_end_to_end(src: &HeaderMap, dst: &mut HeaderMap, skip: impl Fn(&HeaderName) -> bool) {
    let listed: Vec<String> = src
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in src {
        if is_hop_by_hop(name) || skip(name) || listed.iter().any(|l| l == name.as_str()) {
            continue;
        }
        dst.append(name.clone(), value.clone());
    }
}

/// The request to send on: the client's headers (less its `Authorization` when `auth`
/// replaces it, and `Expect`, which the proxy's own server side has answered), a fresh
/// `Host`, and `body`.
pub(super) fn outgoing(method: &Method, uri: Uri, headers: &HeaderMap, auth: Option<&HeaderValue>, body: Body) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    let bodiless = method == Method::GET || method == Method::HEAD;
    copy_end_to_end(headers, req.headers_mut(), |name| {
        *name == header::HOST
            || (auth.is_some() && *name == header::AUTHORIZATION)
            || *name == header::EXPECT
            || (bodiless && *name == header::CONTENT_LENGTH)
    });
    if let Some(auth) = auth {
        req.headers_mut().insert(header::AUTHORIZATION, auth.clone());
    }
    req
}

/// Sends a request; the error names what failed, with its causes.
pub(super) async fn send(client: &HttpClient, req: Request<Body>, timeout: Option<Duration>) -> Result<Response<Incoming>, String> {
    let fut = client.request(req);
    let result = match timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => return Err(format!("no answer within {} s", t.as_secs())),
        },
        None => fut.await,
    };
    result.map_err(|e| {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        msg
    })
}

/// Reads a small error body to its end so the connection goes back to the pool.
pub(super) async fn drain(body: Incoming) {
    let _ = tokio::time::timeout(Duration::from_secs(2), Limited::new(body, DRAIN_LIMIT).collect()).await;
}

/// The answer as it came, streamed: status and end-to-end headers unchanged but for
/// `Location` and `Link` targets, which `rewrite` may change.
pub(super) fn relay(resp: Response<Incoming>, rewrite: impl Fn(&str) -> Option<String>) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(body.map_err(Into::into).boxed_unsync());
    *out.status_mut() = parts.status;
    copy_end_to_end(&parts.headers, out.headers_mut(), |_| false);
    let h = out.headers_mut();
    if let Some(new) = h.get(header::LOCATION).and_then(|v| v.to_str().ok()).and_then(&rewrite) {
        if let Ok(v) = HeaderValue::from_str(&new) {
            h.insert(header::LOCATION, v);
        }
    }
    let links: Vec<HeaderValue> = h
        .get_all(header::LINK)
        .iter()
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| rewrite_link(s, &rewrite))
                .and_then(|s| HeaderValue::from_str(&s).ok())
                .unwrap_or_else(|| v.clone())
        })
        .collect();
    if !links.is_empty() {
        h.remove(header::LINK);
        for v in links {
            h.append(header::LINK, v);
        }
    }
    out
}

/// `<target>; rel="next"` with the target rewritten.
fn rewrite_link(value: &str, rewrite: impl Fn(&str) -> Option<String>) -> Option<String> {
    let rest = value.trim_start().strip_prefix('<')?;
    let (target, tail) = rest.split_once('>')?;
    Some(format!("<{}>{tail}", rewrite(target)?))
}

fn credentials_refused(state: &State, head: bool) -> Response<Body> {
    tracing::warn!(buildset = %state.buildset, "the buildset registry refused the proxy's credentials");
    bad_gateway(
        &format!("the buildset registry {} refused the mirror proxy's credentials", state.buildset),
        head,
    )
}

pub(super) fn bad_gateway(message: &str, head: bool) -> Response<Body> {
    json_error(StatusCode::BAD_GATEWAY, "UNAVAILABLE", message, head)
}

pub(super) fn registry_error(e: &RegistryError, head: bool) -> Response<Body> {
    json_error(e.status, e.code.as_str(), &e.message, head)
}

/// The distribution-spec error body `{"errors":[{"code","message","detail"}]}`.
pub(super) fn json_error(status: StatusCode, code: &str, message: &str, head: bool) -> Response<Body> {
    let body = serde_json::to_vec(&serde_json::json!({
        "errors": [{ "code": code, "message": message, "detail": null }]
    }))
    .expect("serialising a JSON value cannot fail");
    let len = body.len();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, len)
        .header(API_VERSION, "registry/2.0")
        .body(if head { empty() } else { full(Bytes::from(body)) })
        .expect("valid response")
}

pub(super) fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut src = HeaderMap::new();
        src.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        src.insert("x-private", HeaderValue::from_static("1"));
        src.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        src.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        src.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer client"));
        src.insert(header::HOST, HeaderValue::from_static("127.0.0.1:1"));
        let proxy_auth = HeaderValue::from_static("Basic cHJveHk6cHc=");
        let uri: Uri = "https://b.example/v2/".parse().unwrap();
        let req = outgoing(&Method::GET, uri.clone(), &src, Some(&proxy_auth), empty());
        let h = req.headers();
        assert_eq!(h.get(header::AUTHORIZATION).unwrap(), "Basic cHJveHk6cHc=");
        assert_eq!(h.get(header::ACCEPT).unwrap(), "application/json");
        assert!(h.get("x-private").is_none() && h.get(header::TRANSFER_ENCODING).is_none());
        assert!(h.get(header::HOST).is_none() && h.get(header::CONNECTION).is_none());
        let req = outgoing(&Method::GET, uri, &src, None, empty());
        assert_eq!(req.headers().get(header::AUTHORIZATION).unwrap(), "Bearer client");
    }

    #[test]
    fn links_are_rewritten() {
        let e = Endpoint::parse("x", "https://up.example:5000").unwrap();
        assert_eq!(
            rewrite_link("</v2/a/tags/list?n=1&last=b>; rel=\"next\"", |t| e.absolutize(t)).unwrap(),
            "<https://up.example:5000/v2/a/tags/list?n=1&last=b>; rel=\"next\""
        );
        assert_eq!(rewrite_link("garbage", |t| e.absolutize(t)), None);
    }
}
