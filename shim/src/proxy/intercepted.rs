//! Requests on the interception listener, where the client believes it talks to the real
//! `quay.io` (or whichever host `/etc/hosts` sent here).
//!
//! - Pulls (manifest, blob, tag and referrer reads) are the same overlay as on the mirror
//!   port: the buildset registry's `quay.io/<repo>` when it has it, else the real registry,
//!   else, for an authoritative name, an error naming the image.
//! - Everything else goes to the real registry as it came, body streamed, the client's own
//!   `Authorization` untouched: pushes, token endpoints on the same host (quay.io's realm is
//!   `https://quay.io/v2/auth`), the catalog.
//! - `GET /v2/` is the real registry's answer, so the client learns its token challenge;
//!   when the real registry cannot be reached the proxy answers it itself, so that images
//!   the buildset registry holds still pull on a node without a way out.

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::forward::{self, Source, State};
use super::intercept::request_host;
use super::mapping::{self, Kind};
use super::Body;

pub async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let head = method == Method::HEAD;
    let Some(host) = request_host(&req).filter(|h| state.intercepted.contains(h)) else {
        let msg = format!(
            "this listener stands in for {} only (request for {:?})",
            state.intercepted.join(", "),
            request_host(&req).unwrap_or_default()
        );
        return forward::json_error(StatusCode::MISDIRECTED_REQUEST, "DENIED", &msg, head);
    };
    let mapped = mapping::map_in(Some(&host), req.uri().path(), req.uri().query(), method == Method::PUT);
    let (resp, source) = match &mapped {
        Ok(m) if m.is_overlay_read(&method) => forward::overlay(state, m, req).await,
        Ok(m) if m.kind == Kind::Base => ping(state, &host, req).await,
        _ => pass_through(state, &host, req).await,
    };
    tracing::debug!(
        %method,
        %host,
        path = %mapped.as_ref().map(|m| m.image()).unwrap_or_default(),
        source = ?source,
        status = resp.status().as_u16(),
        "intercepted request"
    );
    resp
}

/// `/v2/`: the real registry's challenge, or our own "OK" when it is out of reach.
async fn ping(state: &State, host: &str, req: Request<Incoming>) -> (Response<Body>, Source) {
    let head = req.method() == Method::HEAD;
    let (resp, source) = pass_through(state, host, req).await;
    if resp.status() != StatusCode::BAD_GATEWAY || !matches!(source, Source::Proxy) {
        return (resp, source);
    }
    tracing::info!(%host, "upstream unreachable for /v2/; answering it so buildset images still pull");
    (forward::base(&if head { Method::HEAD } else { Method::GET }), Source::Proxy)
}

/// The request to the real registry as it came; the answer back as it came, with links
/// on the real registry turned into paths (which lead back here).
async fn pass_through(state: &State, host: &str, req: Request<Incoming>) -> (Response<Body>, Source) {
    let (parts, body) = req.into_parts();
    let head = parts.method == Method::HEAD;
    let upstream = match state.upstreams.for_registry(host) {
        Ok(u) => u,
        Err(e) => return (forward::bad_gateway(&format!("no upstream for {host}: {e}"), head), Source::Proxy),
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri = match upstream.uri(path) {
        Ok(u) => u,
        Err(e) => return (forward::bad_gateway(&format!("bad upstream URL for {host}: {e}"), head), Source::Proxy),
    };
    let body: Body = body.map_err(Into::into).boxed_unsync();
    let out = forward::outgoing(&parts.method, uri, &parts.headers, None, body);
    // Reads get the timeout; a push's answer comes only after its whole body.
    let timeout = (parts.method == Method::GET || head).then_some(state.read_timeout);
    match forward::send(&state.client, out, timeout).await {
        Ok(resp) => (forward::relay(resp, |t| upstream.relativize(t)), Source::Upstream),
        Err(e) => {
            tracing::warn!(%host, %upstream, error = %e, "upstream unreachable");
            let msg = format!("cannot reach {upstream} (the real {host}): {e}");
            (forward::bad_gateway(&msg, head), Source::Proxy)
        }
    }
}
