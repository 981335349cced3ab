//! The HTTP side of the registry: accepting connections, routing, and one handler module
//! per endpoint family. Handlers know HTTP; [`crate::registry::Registry`] knows the rules.

mod auth;
mod blobs;
pub mod listen;
mod listing;
mod manifests;
mod request;
mod token;
pub mod response;
pub mod route;
mod uploads;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use request::Ctx;
use response::Resp;
use route::Route;

use crate::auth::blob_url::{self, BlobUrlSigner};
use crate::auth::{Access, AllowAll, Authorizer};
use crate::error::{ErrorCode, RegistryError};
use crate::registry::{Policy, Registry};
use crate::storage::fs::FsStorage;
use crate::storage::{Storage, StorageError};

/// Everything `specreg serve` decides before it starts listening.
#[derive(Clone)]
pub struct ServerConfig {
    /// Where the filesystem storage lives.
    pub data_dir: PathBuf,
    /// fsync data before answering 201 (off only for throw-away buildset registries).
    pub fsync: bool,
    pub policy: Policy,
    /// Who may do what; [`AllowAll`] until authentication is configured.
    pub authorizer: Arc<dyn Authorizer>,
    /// Serve TLS with this configuration; plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            fsync: true,
            policy: Policy::default(),
            authorizer: Arc::new(AllowAll),
            tls: None,
        }
    }
}

/// State shared by every connection.
pub struct App {
    pub registry: Registry,
    pub authorizer: Arc<dyn Authorizer>,
    /// Signs the URLs of blob redirects (see [`crate::auth::blob_url`]).
    pub blob_urls: BlobUrlSigner,
    /// Whether clients reach this server over TLS: the scheme of the URLs it hands out.
    pub https: bool,
}

impl App {
    pub fn new(storage: Arc<dyn Storage>, policy: Policy, authorizer: Arc<dyn Authorizer>) -> Self {
        App {
            registry: Registry::new(storage, policy),
            authorizer,
            blob_urls: BlobUrlSigner::random(),
            https: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot open storage: {0}")]
    Storage(#[from] StorageError),
}

/// A bound, not yet running registry server.
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Server {
    pub async fn bind(addr: SocketAddr, config: ServerConfig) -> Result<Server, ServerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Self::from_listener(listener, config)
    }

    pub fn from_listener(listener: TcpListener, config: ServerConfig) -> Result<Server, ServerError> {
        let storage = FsStorage::open(&config.data_dir, config.fsync)?;
        let mut app = App::new(Arc::new(storage), config.policy, config.authorizer);
        app.https = config.tls.is_some();
        Ok(Server {
            listener,
            app: Arc::new(app),
            tls: config.tls.map(tokio_rustls::TlsAcceptor::from),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Serves until the process ends.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `shutdown` completes; then stops accepting (open connections end
    /// with the runtime).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let app = self.app.clone();
        let handler = move |req| handle(app.clone(), req);
        listen::accept_loop(&self.listener, self.tls.clone(), handler, shutdown).await
    }
}

/// The verdict on a blob read through a signed URL, or `None` when the request carries no
/// signature (and goes through the authorizer as usual).
fn signed_blob_read(app: &App, ctx: &Ctx) -> Option<Result<(), blob_url::BlobUrlError>> {
    let Route::Blob(name, digest) = &ctx.route else { return None };
    if !matches!(ctx.method, Method::GET | Method::HEAD) {
        return None;
    }
    let signature = ctx.query(blob_url::SIGNATURE_PARAM)?;
    let expires = ctx.query(blob_url::EXPIRES_PARAM);
    Some(app.blob_urls.verify(name, digest, expires, Some(signature), std::time::SystemTime::now()))
}

/// Answers one request. Every failure becomes the spec's JSON error.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let head = req.method() == Method::HEAD;
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let result = dispatch(&app, req).await;
    match result {
        Ok(resp) => {
            tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
            resp
        }
        Err(err) => {
            if err.status.is_server_error() {
                tracing::error!(%method, %path, status = err.status.as_u16(), error = %err.message, "request failed");
            } else {
                tracing::debug!(%method, %path, status = err.status.as_u16(), code = err.code.as_str(), "request refused");
            }
            response::error(&err, head)
        }
    }
}

async fn dispatch(app: &App, req: Request<Incoming>) -> Result<Resp, RegistryError> {
    if req.uri().path() == crate::auth::TOKEN_PATH {
        return token::issue(app, req).await;
    }
    let mut ctx = match Ctx::new(req) {
        Ok(ctx) => ctx,
        Err(request::CtxError::NotFound) => {
            return Err(RegistryError::new(ErrorCode::Unsupported, "no such endpoint")
                .with_status(StatusCode::NOT_FOUND))
        }
        Err(request::CtxError::Invalid(e)) => return Err(e),
    };
    let action = auth::action_for(&ctx.method, &ctx.route);
    let access = Access {
        repo: ctx.route.repo().cloned(),
        action,
    };
    if let Some(signed) = signed_blob_read(app, &ctx) {
        // A redirect the registry itself signed stands in for the credentials it checked.
        signed.map_err(|e| RegistryError::new(ErrorCode::Denied, e.to_string()).with_status(StatusCode::FORBIDDEN))?;
    } else if let Err(denial) = app.authorizer.check(&ctx.parts, &access) {
        return Ok(ctx.finish(auth::denial_response(denial, ctx.method == Method::HEAD)));
    }
    let m = ctx.method.clone();
    let route = ctx.route.clone();
    let resp = match (&m, route) {
        (&Method::GET | &Method::HEAD, Route::Base) => Ok(response::status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CONTENT_LENGTH, 2)
            .body(if m == Method::HEAD { response::empty() } else { response::full("{}") })
            .expect("valid response")),
        (&Method::GET, Route::Catalog) => listing::catalog(app, &ctx).await,
        (&Method::GET, Route::Tags(name)) => listing::tags(app, &ctx, &name).await,
        (&Method::GET, Route::Referrers(name, d)) => listing::referrers(app, &ctx, &name, &d).await,
        (&Method::GET | &Method::HEAD, Route::Manifest(name, r)) => manifests::get(app, &ctx, &name, &r).await,
        (&Method::PUT, Route::Manifest(name, r)) => manifests::put(app, &mut ctx, &name, &r).await,
        (&Method::DELETE, Route::Manifest(name, r)) => manifests::delete(app, &ctx, &name, &r).await,
        (&Method::GET | &Method::HEAD, Route::Blob(name, d)) => blobs::get(app, &ctx, &name, &d).await,
        (&Method::DELETE, Route::Blob(name, d)) => blobs::delete(app, &ctx, &name, &d).await,
        (&Method::POST, Route::Upload(name, None)) => uploads::start(app, &mut ctx, &name).await,
        (&Method::PATCH, Route::Upload(name, Some(id))) => uploads::patch(app, &mut ctx, &name, &id).await,
        (&Method::PUT, Route::Upload(name, Some(id))) => uploads::put(app, &mut ctx, &name, &id).await,
        (&Method::GET, Route::Upload(name, Some(id))) => uploads::status(app, &ctx, &name, &id).await,
        (&Method::DELETE, Route::Upload(name, Some(id))) => uploads::cancel(app, &ctx, &name, &id).await,
        (_, _) => Err(RegistryError::new(
            ErrorCode::Unsupported,
            format!("{m} is not supported on this endpoint"),
        )),
    }?;
    Ok(ctx.finish(resp))
}
