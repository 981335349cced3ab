//! Response bodies and builders shared by the handlers.

use std::io;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;

use crate::error::RegistryError;
use crate::storage::ByteStream;

pub type Body = UnsyncBoxBody<Bytes, io::Error>;
pub type Resp = Response<Body>;

pub const API_VERSION: &str = "Docker-Distribution-Api-Version";
pub const CONTENT_DIGEST: &str = "Docker-Content-Digest";
pub const UPLOAD_UUID: &str = "Docker-Upload-UUID";

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn stream(s: ByteStream) -> Body {
    StreamBody::new(s.map(|chunk| chunk.map(Frame::data))).boxed_unsync()
}

/// A response with a status and no body.
pub fn status(code: StatusCode) -> http::response::Builder {
    Response::builder()
        .status(code)
        .header(API_VERSION, "registry/2.0")
}

/// The spec's JSON error body; a HEAD gets the status and headers only.
pub fn error(err: &RegistryError, head: bool) -> Resp {
    let body = err.body();
    let builder = status(err.status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len());
    let body = if head { empty() } else { full(body) };
    builder.body(body).expect("error response is well-formed")
}

/// A header value from a string we built (digests, names, numbers are always valid).
pub fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}
