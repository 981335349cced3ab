//! The node shim: client configurators, the mirror proxy and the credential helper.
//! Nothing here yet: `specreg use` arrives with its own issue.

pub mod configure;
pub mod credential_helper;
pub mod proxy;
