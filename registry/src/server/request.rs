//! One request, taken apart: its route, query parameters, namespace and body.

use std::borrow::Cow;
use std::io;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{header, Method, Request};
use http_body::Body as _;
use http_body_util::{BodyExt, BodyStream};
use hyper::body::Incoming;

use super::response::{self, Resp};
use super::route::{self, Route, RouteError};
use crate::error::{ErrorCode, RegistryError};
use crate::reference::RepoName;
use crate::storage::ByteStream;

/// Bytes read and dropped past a body's cap before answering 413.
const DRAIN_LIMIT: usize = 16 << 20;

pub enum CtxError {
    NotFound,
    Invalid(RegistryError),
}

pub struct Ctx {
    pub parts: http::request::Parts,
    pub method: Method,
    pub route: Route,
    body: Option<Incoming>,
    query: Vec<(String, String)>,
    /// The `ns` parameter as sent, echoed in `OCI-Namespace` and kept in `Location`s.
    ns: Option<String>,
    /// The repository name as it appears in the path (before any `ns` prefix).
    path_name: Option<String>,
}

impl Ctx {
    pub fn new(req: Request<Incoming>) -> Result<Ctx, CtxError> {
        let (parts, body) = req.into_parts();
        let raw_path = parts.uri.path();
        let path: Cow<'_, str> = percent_encoding::percent_decode_str(raw_path)
            .decode_utf8()
            .map_err(|_| CtxError::NotFound)?;
        let query: Vec<(String, String)> = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let ns = query
            .iter()
            .find(|(k, _)| k == "ns")
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty());
        let prefix = match &ns {
            Some(ns) => route::namespace_prefix(ns).map_err(CtxError::Invalid)?,
            None => None,
        };
        let pushing = parts.method == Method::PUT;
        let route = route::parse(&path, prefix.as_deref(), pushing).map_err(|e| match e {
            RouteError::NotFound => CtxError::NotFound,
            RouteError::Invalid(e) => CtxError::Invalid(e),
        })?;
        let path_name = route.repo().map(|full| match &prefix {
            Some(p) => full.as_str()[p.len() + 1..].to_owned(),
            None => full.as_str().to_owned(),
        });
        Ok(Ctx {
            method: parts.method.clone(),
            parts,
            route,
            body: Some(body),
            query,
            ns,
            path_name,
        })
    }

    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The first value of a query parameter.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn query_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `/v2/<name as requested>` for Location and Link headers.
    pub fn base_path(&self) -> String {
        format!("/v2/{}", self.path_name.as_deref().unwrap_or(""))
    }

    /// A path plus the `ns` parameter, when the request carried one, so clients that
    /// follow the Location stay in the same namespace.
    pub fn location(&self, path: &str) -> String {
        match &self.ns {
            Some(ns) => {
                let enc: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("ns", ns)
                    .finish();
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{path}{sep}{enc}")
            }
            None => path.to_owned(),
        }
    }

    /// The name as the client wrote it (without the namespace prefix).
    pub fn path_name(&self) -> &str {
        self.path_name.as_deref().unwrap_or("")
    }

    /// True when the request certainly has no body.
    pub fn body_is_empty(&self) -> bool {
        match &self.body {
            Some(b) => b.is_end_stream(),
            None => true,
        }
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header(header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
    }

    /// The request body as a stream of chunks (once).
    pub fn take_body_stream(&mut self) -> ByteStream {
        match self.body.take() {
            Some(body) => BodyStream::new(body)
                .filter_map(|frame| async move {
                    match frame {
                        Ok(f) => f.into_data().ok().map(Ok),
                        Err(e) => Some(Err(io::Error::other(e))),
                    }
                })
                .boxed(),
            None => futures_util::stream::empty().boxed(),
        }
    }

    /// Reads the whole body, refusing more than `max` bytes with 413.
    pub async fn read_body_capped(&mut self, max: usize) -> Result<Bytes, RegistryError> {
        let too_large = || {
            RegistryError::new(ErrorCode::SizeInvalid, format!("body larger than {max} bytes"))
                .with_status(http::StatusCode::PAYLOAD_TOO_LARGE)
        };
        let declared_too_large = self.content_length().is_some_and(|n| n > max as u64);
        let Some(mut body) = self.body.take() else { return Ok(Bytes::new()) };
        let mut buf = BytesMut::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                RegistryError::new(ErrorCode::BlobUploadInvalid, format!("reading request body: {e}"))
            })?;
            let Ok(data) = frame.into_data() else { continue };
            seen += data.len();
            // Over the cap: keep reading (and dropping) a while, so the client, still
            // sending, gets to read the 413 instead of a reset connection.
            if declared_too_large || seen > max {
                if seen > max + DRAIN_LIMIT {
                    return Err(too_large());
                }
                buf.clear();
                continue;
            }
            buf.extend_from_slice(&data);
        }
        if declared_too_large || seen > max {
            return Err(too_large());
        }
        Ok(buf.freeze())
    }

    /// Adds the headers every answer to this request carries.
    pub fn finish(&self, mut resp: Resp) -> Resp {
        if let Some(ns) = &self.ns {
            resp.headers_mut().insert("OCI-Namespace", response::hv(ns));
        }
        resp
    }
}

/// Validates a repository name given in a query parameter (`from=` of a mount).
pub fn query_repo(raw: &str, prefix: Option<&str>) -> Option<RepoName> {
    let name = RepoName::parse(raw).ok()?;
    match prefix {
        Some(p) => name.with_prefix(p).ok(),
        None => Some(name),
    }
}

impl Ctx {
    /// The namespace prefix in force for names in query parameters.
    pub fn ns_prefix(&self) -> Option<String> {
        self.ns.as_deref().and_then(|ns| route::namespace_prefix(ns).ok().flatten())
    }
}
