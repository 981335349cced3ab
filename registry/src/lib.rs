//! specreg's OCI distribution registry: the name/tag/digest grammar ([`reference`]), the
//! storage trait and its filesystem backend ([`storage`]), the registry rules
//! ([`registry`]) and the HTTP server ([`server`]).

pub mod auth;
pub mod client;
pub mod copy;
pub mod error;
pub mod manifest;
pub mod prune;
pub mod publish;
pub mod reference;
pub mod registry;
pub mod server;
pub mod storage;

pub use error::{ErrorCode, RegistryError};
pub use server::{Server, ServerConfig, ServerError};
