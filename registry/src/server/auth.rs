//! The access-control seam: every request is checked against an [`Authorizer`] before
//! its handler runs. Authentication (Basic, tokens) plugs in here without touching the
//! handlers.

use http::{Method, StatusCode};

use super::response::{self, Resp};
use super::route::Route;
use crate::error::{ErrorCode, RegistryError};
use crate::reference::RepoName;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `GET /v2/`: the client's probe, allowed to anyone authenticated.
    Probe,
    Pull,
    Push,
    Delete,
    Catalog,
}

/// The repository (if any) and the action of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub repo: Option<RepoName>,
    pub action: Action,
}

/// A refusal: the error plus headers such as `WWW-Authenticate`.
#[derive(Debug, Clone)]
pub struct Denial {
    pub error: RegistryError,
    pub headers: Vec<(http::HeaderName, String)>,
}

impl Denial {
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Denial {
            error: RegistryError::new(ErrorCode::Unauthorized, message).with_status(StatusCode::UNAUTHORIZED),
            headers: Vec::new(),
        }
    }

    pub fn into_response(self, head: bool) -> Resp {
        let mut resp = response::error(&self.error, head);
        for (name, value) in self.headers {
            resp.headers_mut().append(name, response::hv(&value));
        }
        resp
    }
}

pub trait Authorizer: Send + Sync + 'static {
    fn check(&self, request: &http::request::Parts, access: &Access) -> Result<(), Denial>;
}

/// Lets everything through: a registry started with `--insecure-http` and no users.
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn check(&self, _: &http::request::Parts, _: &Access) -> Result<(), Denial> {
        Ok(())
    }
}

/// The action a request needs, from its method and route.
pub fn action_for(method: &Method, route: &Route) -> Action {
    match route {
        Route::Base => Action::Probe,
        Route::Catalog => Action::Catalog,
        _ if *method == Method::DELETE && !matches!(route, Route::Upload(..)) => Action::Delete,
        _ if matches!(*method, Method::GET | Method::HEAD) && !matches!(route, Route::Upload(..)) => Action::Pull,
        _ => Action::Push,
    }
}
