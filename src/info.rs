//! The buildset registry's connection info: the JSON `specreg serve` writes and Zuul jobs
//! pass around as `buildset_registry`.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

#[derive(Clone, Deserialize)]
pub struct ConnectionInfo {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    /// The PEM clients must trust; empty for a plain-HTTP registry.
    #[serde(default)]
    pub cert: String,
}

impl std::fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionInfo")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl ConnectionInfo {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not buildset registry connection info", path.display()))
    }

    /// `host:port`, with brackets around an IPv6 literal.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn base_url(&self) -> String {
        let scheme = if self.cert.is_empty() { "http" } else { "https" };
        format!("{scheme}://{}", self.host_port())
    }
}
