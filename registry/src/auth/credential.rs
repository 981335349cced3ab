//! Users with read or write access, over HTTP Basic or Docker's bearer-token flow.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http::header;

use super::scope::{parse_scopes, ResourceAccess};
use super::token::{TokenError, TokenSigner};
use super::users::{AccessLevel, User, UserDb};
use super::{Access, Action, Authorizer, Denial, TokenGrant};

/// Path of the token endpoint, served by the registry itself.
pub const TOKEN_PATH: &str = "/auth/token";

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub users: UserDb,
    /// Let anyone pull (and list) without credentials.
    pub anonymous_read: bool,
    /// The `service` of challenges and the audience of tokens.
    pub service: String,
    pub token_lifetime: Duration,
    /// Scheme of the realm URL: `https` when serving TLS.
    pub tls: bool,
    /// A fixed realm URL; by default it is built from the request's `Host`, so it is
    /// right whatever name or tunnel the client came through.
    pub realm: Option<String>,
}

impl AuthConfig {
    pub fn new(users: UserDb) -> Self {
        AuthConfig {
            users,
            anonymous_read: false,
            service: "specreg".to_owned(),
            token_lifetime: Duration::from_secs(300),
            tls: true,
            realm: None,
        }
    }
}

pub struct CredentialAuth {
    config: AuthConfig,
    signer: TokenSigner,
}

/// Who a request comes from.
enum Identity<'a> {
    Anonymous,
    User(&'a User),
    Token(super::token::Claims),
}

/// The token-scope form of what a request needs: (type, name, action).
fn needed(access: &Access) -> Option<(&'static str, String, &'static str)> {
    let repo = || access.repo.as_ref().map(|r| r.to_string()).unwrap_or_default();
    match access.action {
        Action::Probe => None,
        Action::Pull => Some(("repository", repo(), "pull")),
        Action::Push => Some(("repository", repo(), "push")),
        Action::Delete => Some(("repository", repo(), "delete")),
        Action::Catalog => Some(("registry", "catalog".to_owned(), "*")),
    }
}

fn is_read_only(action: Action) -> bool {
    matches!(action, Action::Probe | Action::Pull | Action::Catalog)
}

/// Splits `Basic <base64(user:password)>` on the first `:` (passwords may hold `:`).
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let decoded = B64.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The request's host, if it is a plausible `host[:port]` (it ends up in a header).
fn request_host(request: &http::request::Parts) -> Option<String> {
    let host = request
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri.authority().map(|a| a.to_string()))?;
    let plausible = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'[' | b']' | b'_'));
    plausible.then_some(host)
}

impl CredentialAuth {
    pub fn new(config: AuthConfig) -> Self {
        CredentialAuth {
            config,
            signer: TokenSigner::random("specreg"),
        }
    }

    fn realm(&self, request: &http::request::Parts) -> String {
        if let Some(r) = &self.config.realm {
            return r.clone();
        }
        let scheme = if self.config.tls { "https" } else { "http" };
        let host = request_host(request).unwrap_or_else(|| "localhost".to_owned());
        format!("{scheme}://{host}{TOKEN_PATH}")
    }

    /// 401 with a bearer challenge for what the request needs.
    fn challenge(&self, request: &http::request::Parts, access: &Access, message: &str, error: Option<&str>) -> Denial {
        let mut value = format!("Bearer realm=\"{}\",service=\"{}\"", self.realm(request), self.config.service);
        if let Some((kind, name, action)) = needed(access) {
            let actions = if action == "push" { "pull,push" } else { action };
            value.push_str(&format!(",scope=\"{kind}:{name}:{actions}\""));
        }
        if let Some(e) = error {
            value.push_str(&format!(",error=\"{e}\""));
        }
        let mut d = Denial::unauthorized(message);
        d.headers.push((header::WWW_AUTHENTICATE, value));
        d
    }

    fn identify(&self, request: &http::request::Parts) -> Result<Identity<'_>, TokenOrBasicError> {
        let Some(value) = request.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Ok(Identity::Anonymous);
        };
        if let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) {
            return self
                .signer
                .verify(token.trim(), &self.config.service)
                .map(Identity::Token)
                .map_err(TokenOrBasicError::Token);
        }
        match basic_credentials(value) {
            Some((name, password)) => self
                .config
                .users
                .verify(&name, &password)
                .map(Identity::User)
                .ok_or(TokenOrBasicError::BadPassword),
            None => Err(TokenOrBasicError::BadPassword),
        }
    }

    /// The scopes granted to `level` out of those requested: the intersection.
    fn grant(level: Option<AccessLevel>, anonymous_read: bool, requested: Vec<ResourceAccess>) -> Vec<ResourceAccess> {
        requested
            .into_iter()
            .filter_map(|mut r| {
                r.actions.retain(|a| match level {
                    Some(l) if r.kind == "registry" => l >= AccessLevel::Read && a == "*",
                    Some(l) => l.allows(a),
                    None if r.kind == "registry" => anonymous_read && a == "*",
                    None => anonymous_read && a == "pull",
                });
                (!r.actions.is_empty()).then_some(r)
            })
            .collect()
    }
}

enum TokenOrBasicError {
    Token(TokenError),
    BadPassword,
}

impl Authorizer for CredentialAuth {
    fn check(&self, request: &http::request::Parts, access: &Access) -> Result<(), Denial> {
        let read_only = is_read_only(access.action);
        let anonymous_ok = self.config.anonymous_read && read_only;
        let identity = match self.identify(request) {
            Ok(i) => i,
            // Docker sends its Docker Hub credentials to mirrors: with anonymous reads on,
            // unknown credentials still may pull.
            Err(_) if anonymous_ok => return Ok(()),
            Err(TokenOrBasicError::Token(e)) => {
                return Err(self.challenge(request, access, &format!("{e}"), Some("invalid_token")))
            }
            Err(TokenOrBasicError::BadPassword) => {
                return Err(self.challenge(request, access, "invalid user name or password", None))
            }
        };
        let allowed = match (&identity, needed(access)) {
            // The probe always challenges anonymous clients, even with anonymous reads:
            // docker and containers/image decide from it whether to send credentials at
            // all, and a write user would otherwise never authenticate its pushes.
            (Identity::Anonymous, None) => false,
            (Identity::Anonymous, _) => anonymous_ok,
            (_, None) => true,
            (Identity::User(u), Some((_, _, action))) => u.access.allows(if action == "*" { "pull" } else { action }),
            (Identity::Token(claims), Some((kind, name, action))) => {
                claims.access.iter().any(|r| r.allows(kind, &name, action))
            }
        };
        if allowed || (anonymous_ok && !matches!(identity, Identity::Anonymous)) {
            return Ok(());
        }
        match identity {
            Identity::Anonymous => Err(self.challenge(request, access, "authentication required", None)),
            Identity::User(u) => Err(Denial::denied(format!("user {} may not {}", u.name, describe(access)))),
            // An anonymous token lacking the scope: the answer is to authenticate.
            Identity::Token(claims) if claims.sub.is_empty() => Err(self.challenge(
                request,
                access,
                &format!("authentication required to {}", describe(access)),
                Some("insufficient_scope"),
            )),
            Identity::Token(_) => Err(Denial::denied(format!("the token does not allow to {}", describe(access)))),
        }
    }

    fn issue_token(&self, request: &http::request::Parts, form: &[(String, String)]) -> Option<Result<TokenGrant, Denial>> {
        let param = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        // The OAuth2 form carries the credentials in the body; the GET form in Basic.
        let level = match (param("grant_type"), param("username"), param("password")) {
            (Some("password"), Some(name), Some(password)) => match self.config.users.verify(name, password) {
                Some(u) => Some(u.access),
                None => return Some(Err(Denial::unauthorized("invalid user name or password"))),
            },
            (Some(_), _, _) => {
                // Refresh tokens are not issued: containerd falls back to the GET form.
                return Some(Err(Denial::unauthorized("only the password grant is supported")));
            }
            _ => match self.identify(request) {
                Ok(Identity::User(u)) => Some(u.access),
                Ok(Identity::Anonymous) if self.config.anonymous_read => None,
                Ok(Identity::Anonymous) => {
                    return Some(Err(Denial::unauthorized("credentials are required for a token")))
                }
                // Docker sends its Docker Hub login to mirrors: with anonymous reads on,
                // unknown credentials get the anonymous (pull-only) token.
                Ok(Identity::Token(_)) | Err(_) if self.config.anonymous_read => None,
                Ok(Identity::Token(_)) | Err(_) => {
                    return Some(Err(Denial::unauthorized("invalid user name or password")))
                }
            },
        };
        let requested = parse_scopes(form.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()));
        let granted = Self::grant(level, self.config.anonymous_read, requested);
        let subject = match level {
            Some(_) => param("username")
                .map(str::to_owned)
                .or_else(|| {
                    request
                        .headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(basic_credentials)
                        .map(|(u, _)| u)
                })
                .unwrap_or_default(),
            None => String::new(),
        };
        let (token, claims) = self
            .signer
            .issue(&subject, &self.config.service, self.config.token_lifetime, granted);
        Some(Ok(TokenGrant {
            access_token: token.clone(),
            token,
            expires_in: claims.exp - claims.iat,
            issued_at: rfc3339(claims.iat),
        }))
    }
}

fn describe(access: &Access) -> String {
    let what = match access.action {
        Action::Probe => "access the registry",
        Action::Pull => "pull from",
        Action::Push => "push to",
        Action::Delete => "delete from",
        Action::Catalog => "list the catalog",
    };
    match &access.repo {
        Some(r) => format!("{what} {r}"),
        None => what.to_owned(),
    }
}

fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::users::Secret;
    use crate::reference::RepoName;

    fn auth(anonymous_read: bool) -> CredentialAuth {
        let users = UserDb::new(vec![
            User { name: "reader".into(), password: Secret::new("r:pw"), access: AccessLevel::Read },
            User { name: "writer".into(), password: Secret::new("w:pw"), access: AccessLevel::Write },
        ]);
        let mut c = AuthConfig::new(users);
        c.anonymous_read = anonymous_read;
        CredentialAuth::new(c)
    }

    fn req(authz: Option<String>) -> http::request::Parts {
        let mut b = http::Request::builder().uri("/v2/").header("host", "reg.example:5000");
        if let Some(a) = authz {
            b = b.header("authorization", a);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn basic(u: &str, p: &str) -> Option<String> {
        Some(format!("Basic {}", B64.encode(format!("{u}:{p}"))))
    }

    fn access(action: Action) -> Access {
        Access { repo: Some(RepoName::parse("org/app").unwrap()), action }
    }

    #[test]
    fn basic_users_get_their_level() {
        let a = auth(false);
        assert!(a.check(&req(basic("writer", "w:pw")), &access(Action::Push)).is_ok());
        assert!(a.check(&req(basic("reader", "r:pw")), &access(Action::Pull)).is_ok());
        let d = a.check(&req(basic("reader", "r:pw")), &access(Action::Push)).unwrap_err();
        assert_eq!(d.error.status, 403);
        let d = a.check(&req(basic("writer", "nope")), &access(Action::Pull)).unwrap_err();
        assert_eq!(d.error.status, 401);
        let d = a.check(&req(None), &access(Action::Pull)).unwrap_err();
        assert_eq!(d.error.status, 401);
        let (_, challenge) = &d.headers[0];
        assert_eq!(
            challenge,
            "Bearer realm=\"https://reg.example:5000/auth/token\",service=\"specreg\",scope=\"repository:org/app:pull\""
        );
    }

    #[test]
    fn anonymous_read_lets_any_credentials_pull() {
        let a = auth(true);
        assert!(a.check(&req(None), &access(Action::Pull)).is_ok());
        // The probe still challenges, so clients holding credentials send them.
        let probe = Access { repo: None, action: Action::Probe };
        assert_eq!(a.check(&req(None), &probe).unwrap_err().error.status, 401);
        let form = vec![("scope".to_owned(), "repository:org/app:pull,push".to_owned())];
        let grant = a.issue_token(&req(basic("hub-user", "hub-pw")), &form).unwrap().unwrap();
        let bearer = Some(format!("Bearer {}", grant.token));
        assert!(a.check(&req(bearer.clone()), &access(Action::Pull)).is_ok());
        // Anonymous tokens lacking a scope are told to authenticate.
        assert_eq!(a.check(&req(bearer), &access(Action::Push)).unwrap_err().error.status, 401);
        assert!(a.check(&req(basic("hub-user", "hub-pw")), &access(Action::Pull)).is_ok());
        assert_eq!(a.check(&req(None), &access(Action::Push)).unwrap_err().error.status, 401);
    }

    #[test]
    fn tokens_carry_the_intersection_of_asked_and_allowed() {
        let a = auth(false);
        let form = vec![("scope".to_owned(), "repository:org/app:pull,push".to_owned())];
        let grant = a.issue_token(&req(basic("reader", "r:pw")), &form).unwrap().unwrap();
        let bearer = Some(format!("Bearer {}", grant.token));
        assert!(a.check(&req(bearer.clone()), &access(Action::Pull)).is_ok());
        assert_eq!(a.check(&req(bearer.clone()), &access(Action::Push)).unwrap_err().error.status, 403);
        let other = Access { repo: Some(RepoName::parse("org/other").unwrap()), action: Action::Pull };
        assert_eq!(a.check(&req(bearer), &other).unwrap_err().error.status, 403);

        let grant = a.issue_token(&req(basic("writer", "w:pw")), &form).unwrap().unwrap();
        assert!(a.check(&req(Some(format!("Bearer {}", grant.token))), &access(Action::Push)).is_ok());

        assert!(a.issue_token(&req(None), &form).unwrap().is_err());
        assert!(a.issue_token(&req(basic("writer", "bad")), &form).unwrap().is_err());
        let d = a.check(&req(Some("Bearer forged.token.here".into())), &access(Action::Pull)).unwrap_err();
        assert_eq!(d.error.status, 401);
    }

    #[test]
    fn oauth2_password_grant() {
        let a = auth(false);
        let form: Vec<(String, String)> = [("grant_type", "password"), ("username", "writer"), ("password", "w:pw"), ("scope", "repository:org/app:push")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let grant = a.issue_token(&req(None), &form).unwrap().unwrap();
        assert!(a.check(&req(Some(format!("Bearer {}", grant.access_token))), &access(Action::Push)).is_ok());
    }
}
