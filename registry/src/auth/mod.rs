//! Who may do what. Every request is checked by an [`Authorizer`] before its handler runs:
//! [`AllowAll`] for a plain-HTTP test registry, [`CredentialAuth`] for users with read or
//! write access, HTTP Basic and Docker's bearer-token flow.

pub mod blob_url;
mod credential;
pub mod scope;
pub mod token;
pub mod users;

use http::StatusCode;

pub use credential::{AuthConfig, CredentialAuth, TOKEN_PATH};
pub use users::{AccessLevel, Secret, User, UserDb};

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

    pub fn denied(message: impl Into<String>) -> Self {
        Denial {
            error: RegistryError::new(ErrorCode::Denied, message),
            headers: Vec::new(),
        }
    }
}

/// A token issued by the token endpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenGrant {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
}

pub trait Authorizer: Send + Sync + 'static {
    fn check(&self, request: &http::request::Parts, access: &Access) -> Result<(), Denial>;

    /// Answers the token endpoint (`/auth/token`; `form` holds the query or the OAuth2
    /// form body). `None` when this authorizer issues no tokens.
    fn issue_token(&self, _request: &http::request::Parts, _form: &[(String, String)]) -> Option<Result<TokenGrant, Denial>> {
        None
    }
}

/// Lets everything through: a registry started with `--insecure-http` and no users.
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn check(&self, _: &http::request::Parts, _: &Access) -> Result<(), Denial> {
        Ok(())
    }
}
