//! The token endpoint of Docker's bearer-token flow (`GET` with Basic credentials, or the
//! OAuth2 `POST` form that containerd tries first).

use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::response::{self, Resp};
use super::App;
use crate::error::{ErrorCode, RegistryError};

/// A token request form is a few hundred bytes; anything much larger is not one.
const MAX_FORM: usize = 64 << 10;

pub async fn issue(app: &App, req: Request<Incoming>) -> Result<Resp, RegistryError> {
    let (parts, body) = req.into_parts();
    let mut form: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    match parts.method {
        Method::GET => {}
        Method::POST => {
            let bytes = Limited::new(body, MAX_FORM)
                .collect()
                .await
                .map_err(|_| RegistryError::new(ErrorCode::Unsupported, "token request body too large or unreadable").with_status(StatusCode::BAD_REQUEST))?
                .to_bytes();
            form.extend(form_urlencoded::parse(&bytes).into_owned());
        }
        _ => {
            return Err(RegistryError::new(ErrorCode::Unsupported, "the token endpoint takes GET or POST"));
        }
    }
    let Some(result) = app.authorizer.issue_token(&parts, &form) else {
        return Err(RegistryError::new(ErrorCode::Unsupported, "this registry issues no tokens")
            .with_status(StatusCode::NOT_FOUND));
    };
    match result {
        Ok(grant) => {
            let body = serde_json::to_vec(&grant).expect("token grant serialises");
            Ok(response::status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, body.len())
                .header(header::CACHE_CONTROL, "no-store")
                .body(response::full(body))
                .expect("valid response"))
        }
        Err(denial) => Ok(super::auth::denial_response(denial, false)),
    }
}
