//! Answering a registry's challenges: the scheme it asked for, and bearer tokens fetched
//! from its token service and cached per scope until they expire.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, Url};

use super::challenge::{self, Challenge};
use super::{display_url, header_value, retry, ClientError, Credentials, RegistryClient};
use crate::reference::RepoName;

/// The token scopes a request needs, e.g. `repository:org/app:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Scope(Vec<String>);

impl Scope {
    /// For `/v2/` itself.
    pub fn none() -> Self {
        Scope(Vec::new())
    }

    pub fn pull(repo: &RepoName) -> Self {
        Scope(vec![format!("repository:{repo}:pull")])
    }

    pub fn push(repo: &RepoName) -> Self {
        Scope(vec![format!("repository:{repo}:pull,push")])
    }

    pub fn delete(repo: &RepoName) -> Self {
        Scope(vec![format!("repository:{repo}:delete")])
    }

    /// Push to this repository plus pull from `from`, for a cross-repository mount.
    pub fn with_pull_from(mut self, from: &RepoName) -> Self {
        let s = format!("repository:{from}:pull");
        if !self.0.contains(&s) && !self.0.iter().any(|x| x.starts_with(&format!("repository:{from}:"))) {
            self.0.push(s);
        }
        self
    }

    fn merged(&self, more: &[String]) -> Vec<String> {
        let mut all = self.0.clone();
        for s in more {
            if !all.contains(s) {
                all.push(s.clone());
            }
        }
        all
    }

    fn key(&self) -> String {
        let mut k = self.0.clone();
        k.sort();
        k.join(" ")
    }
}

#[derive(Debug, Default)]
pub(super) struct AuthState {
    scheme: Option<Scheme>,
    tokens: HashMap<String, CachedToken>,
}

#[derive(Debug, Clone)]
enum Scheme {
    Basic,
    Bearer { realm: String, service: Option<String> },
}

#[derive(Debug, Clone)]
struct CachedToken {
    value: HeaderValue,
    valid_until: Instant,
}

/// Tokens without `expires_in` are good for 60 s (the token spec's default).
const DEFAULT_TOKEN_LIFETIME: u64 = 60;

impl RegistryClient {
    /// The `Authorization` header for a request in `scope`, fetching a token if the
    /// registry uses bearer tokens and none is cached.
    pub(super) async fn authorization(&self, scope: &Scope) -> Result<Option<HeaderValue>, ClientError> {
        let scheme = {
            let state = self.inner.auth.lock().expect("auth state lock");
            if let Some(t) = state.tokens.get(&scope.key()).filter(|t| t.valid_until > Instant::now()) {
                return Ok(Some(t.value.clone()));
            }
            state.scheme.clone()
        };
        match scheme {
            None => Ok(None),
            Some(Scheme::Basic) => Ok(self.basic_header()),
            Some(Scheme::Bearer { realm, service }) => {
                self.fetch_token(&realm, service.as_deref(), scope, &[]).await.map(Some)
            }
        }
    }

    fn basic_header(&self) -> Option<HeaderValue> {
        match &self.inner.credentials {
            Credentials::Basic { username, password } => {
                let mut v = HeaderValue::from_str(&format!("Basic {}", B64.encode(format!("{username}:{}", password.expose())))).ok()?;
                v.set_sensitive(true);
                Some(v)
            }
            _ => None,
        }
    }

    /// Learns from a 401 how to authenticate; `true` when the request is worth sending
    /// again with what was learnt.
    pub(super) async fn answer_challenge(&self, headers: &HeaderMap, scope: &Scope) -> Result<bool, ClientError> {
        let challenge = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(challenge::parse)
            // Prefer Bearer when a registry offers both.
            .max_by_key(|c| matches!(c, Challenge::Bearer { .. }));
        let Some(challenge) = challenge else { return Ok(false) };
        match challenge {
            Challenge::Basic => {
                let mut state = self.inner.auth.lock().expect("auth state lock");
                let had_basic = matches!(state.scheme, Some(Scheme::Basic));
                state.scheme = Some(Scheme::Basic);
                // Credentials already sent and refused: sending them again will not help.
                Ok(!had_basic && self.basic_header().is_some())
            }
            Challenge::Bearer { realm, service, scopes, .. } => {
                {
                    let mut state = self.inner.auth.lock().expect("auth state lock");
                    state.scheme = Some(Scheme::Bearer { realm: realm.clone(), service: service.clone() });
                    state.tokens.remove(&scope.key());
                }
                self.fetch_token(&realm, service.as_deref(), scope, &scopes).await?;
                Ok(true)
            }
        }
    }

    /// Gets a token for `scope` (plus any scopes the challenge named) and caches it.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
        challenged: &[String],
    ) -> Result<HeaderValue, ClientError> {
        let scopes = scope.merged(challenged);
        let mut url = Url::parse(realm).map_err(|e| ClientError::Protocol {
            url: display_url(&self.inner.base),
            message: format!("token realm {realm:?}: {e}"),
        })?;
        let reply = match &self.inner.credentials {
            Credentials::IdentityToken(refresh) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", refresh.expose().to_owned()),
                    ("client_id", "specreg".to_owned()),
                    ("scope", scopes.join(" ")),
                ];
                if let Some(s) = service {
                    form.push(("service", s.to_owned()));
                }
                self.token_request(Method::POST, &url, None, Some(form)).await?
            }
            creds => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in &scopes {
                        q.append_pair("scope", s);
                    }
                }
                let basic = self.basic_header();
                match self.token_request(Method::GET, &url, basic, None).await {
                    // Some OAuth2 services only take the POST form with a password grant.
                    Err(ClientError::Status { status: 404 | 405, .. }) if matches!(creds, Credentials::Basic { .. }) => {
                        let Credentials::Basic { username, password } = creds else { unreachable!() };
                        url.set_query(None);
                        let mut form = vec![
                            ("grant_type", "password".to_owned()),
                            ("username", username.clone()),
                            ("password", password.expose().to_owned()),
                            ("client_id", "specreg".to_owned()),
                            ("scope", scopes.join(" ")),
                        ];
                        if let Some(s) = service {
                            form.push(("service", s.to_owned()));
                        }
                        self.token_request(Method::POST, &url, None, Some(form)).await?
                    }
                    other => other?,
                }
            }
        };
        let token = reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ClientError::Auth { url: display_url(&url), message: "the token service returned no token".to_owned() })?;
        let mut value = header_value(&format!("Bearer {token}"))?;
        value.set_sensitive(true);
        let lifetime = reply.expires_in.filter(|s| *s > 0).unwrap_or(DEFAULT_TOKEN_LIFETIME);
        // Renew a little early so a token does not expire between lookup and use.
        let margin = (lifetime / 5).min(30);
        let valid_until = Instant::now() + Duration::from_secs(lifetime - margin);
        self.inner
            .auth
            .lock()
            .expect("auth state lock")
            .tokens
            .insert(scope.key(), CachedToken { value: value.clone(), valid_until });
        tracing::debug!(registry = %self.inner.host, scope = %scope.key(), lifetime, "bearer token obtained");
        Ok(value)
    }

    async fn token_request(
        &self,
        method: Method,
        url: &Url,
        basic: Option<HeaderValue>,
        form: Option<Vec<(&str, String)>>,
    ) -> Result<TokenReply, ClientError> {
        let retry = &self.inner.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut rb = self.inner.http.request(method.clone(), url.clone());
            if let Some(b) = &basic {
                rb = rb.header(http::header::AUTHORIZATION, b.clone());
            }
            if let Some(f) = &form {
                let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(f.iter()).finish();
                rb = rb.header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
            }
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) if attempt < retry.attempts && super::transient_transport(&e) => {
                    tokio::time::sleep(retry.delay(attempt, None)).await;
                    continue;
                }
                Err(e) => return Err(super::transport(&method, url, e)),
            };
            let status = resp.status().as_u16();
            if retry::retryable_status(status) && attempt < retry.attempts {
                tokio::time::sleep(retry.delay(attempt, retry::retry_after(resp.headers()))).await;
                continue;
            }
            if status == 401 || status == 403 {
                let err = super::status_error(resp, &method).await;
                return Err(ClientError::Auth { url: display_url(url), message: err.to_string() });
            }
            let resp = super::expect(resp, method.clone(), &[200]).await?;
            let body = resp.bytes().await.map_err(|e| super::transport(&method, url, e))?;
            return serde_json::from_slice(&body).map_err(|e| ClientError::Protocol {
                url: display_url(url),
                message: format!("token response is not JSON: {e}"),
            });
        }
    }
}

#[derive(serde::Deserialize)]
struct TokenReply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let a = RepoName::parse("org/a").unwrap();
        let b = RepoName::parse("org/b").unwrap();
        assert_eq!(Scope::push(&a).with_pull_from(&b).0, vec!["repository:org/a:pull,push", "repository:org/b:pull"]);
        assert_eq!(Scope::push(&a).with_pull_from(&a).0, vec!["repository:org/a:pull,push"]);
        let ab = Scope(Scope::pull(&b).merged(&Scope::push(&a).0));
        assert_eq!(Scope::push(&a).with_pull_from(&b).key(), ab.key(), "the cache key ignores order");
    }
}
