//! `specreg serve` settings: a TOML file, overridden by flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use specreg_registry::auth::{AccessLevel, Secret, User};

/// The TOML file. Every field is optional; flags win over it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    pub insecure_http: Option<bool>,
    pub fsync: Option<bool>,
    pub delete: Option<bool>,
    pub allow_sparse_index: Option<bool>,
    pub anonymous_read: Option<bool>,
    pub info_file: Option<PathBuf>,
    pub public_host: Option<String>,
    #[serde(default)]
    pub san: Vec<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `ecdsa` (default) or `rsa`, for a generated CA.
    pub ca_key: Option<String>,
    pub cert_validity_days: Option<u32>,
    pub token_lifetime_secs: Option<u64>,
    pub service: Option<String>,
    /// Humane durations (`7d`, `24h`), as the flags of the same names.
    pub expire: Option<String>,
    pub prune_interval: Option<String>,
    pub grace: Option<String>,
    #[serde(default)]
    pub users: Vec<FileUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUser {
    pub name: String,
    pub access: AccessLevel,
    /// A file holding the password (one trailing newline is ignored).
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }
}

/// Where a user's password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    File(PathBuf),
    Env(String),
    /// Generated once and kept in the data directory.
    Generated,
}

/// A user as given on the command line: `NAME:ACCESS[:file=PATH|env=VAR]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub name: String,
    pub access: AccessLevel,
    pub source: PasswordSource,
}

impl std::str::FromStr for UserSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ':');
        let name = parts.next().unwrap_or_default();
        let access = parts.next().ok_or("expected NAME:ACCESS[:file=PATH|env=VAR]")?;
        let access: AccessLevel = access.parse()?;
        let source = match parts.next() {
            None => PasswordSource::Generated,
            Some(src) => match src.split_once('=') {
                Some(("file", p)) => PasswordSource::File(PathBuf::from(p)),
                Some(("env", v)) => PasswordSource::Env(v.to_owned()),
                _ => return Err(format!("password source must be file=PATH or env=VAR, not {src:?}")),
            },
        };
        validate_user_name(name)?;
        Ok(UserSpec { name: name.to_owned(), access, source })
    }
}

fn validate_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(':') || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("invalid user name {name:?}"));
    }
    Ok(())
}

impl From<FileUser> for UserSpec {
    fn from(u: FileUser) -> Self {
        let source = match (u.password_file, u.password_env) {
            (Some(p), _) => PasswordSource::File(p),
            (None, Some(v)) => PasswordSource::Env(v),
            (None, None) => PasswordSource::Generated,
        };
        UserSpec { name: u.name, access: u.access, source }
    }
}

impl UserSpec {
    /// Reads (or generates and stores under `state_dir`) the password.
    pub fn resolve(&self, state_dir: &Path) -> anyhow::Result<User> {
        let password = match &self.source {
            PasswordSource::File(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading the password of user {} from {}", self.name, p.display()))?;
                Secret::from_file_contents(&text)
            }
            PasswordSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Secret::new(v),
                _ => bail!("environment variable {var} (password of user {}) is not set", self.name),
            },
            PasswordSource::Generated => {
                // Kept so a restarted registry keeps the password its clients hold.
                let path = state_dir.join(format!("{}.password", self.name));
                match std::fs::read_to_string(&path) {
                    Ok(text) => Secret::from_file_contents(&text),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let secret = Secret::generate();
                        specreg_certs::pem_files::ensure_dir(state_dir)?;
                        specreg_certs::pem_files::write_secret(&path, secret.expose().as_bytes())?;
                        secret
                    }
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                }
            }
        };
        if password.expose().is_empty() {
            bail!("the password of user {} is empty", self.name);
        }
        Ok(User { name: self.name.clone(), password, access: self.access })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_specs_parse() {
        let u: UserSpec = "zuul:write".parse().unwrap();
        assert_eq!(u.source, PasswordSource::Generated);
        let u: UserSpec = "ro:read:file=/run/pw".parse().unwrap();
        assert_eq!(u.source, PasswordSource::File("/run/pw".into()));
        let u: UserSpec = "ro:read:env=RO_PW".parse().unwrap();
        assert_eq!(u.source, PasswordSource::Env("RO_PW".into()));
        assert!("zuul".parse::<UserSpec>().is_err());
        assert!("zuul:admin".parse::<UserSpec>().is_err());
        assert!("zuul:read:pw".parse::<UserSpec>().is_err());
        assert!(":read".parse::<UserSpec>().is_err());
    }

    #[test]
    fn config_files_parse_and_refuse_unknown_keys() {
        let c: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:5000\"\nanonymous_read = true\n[[users]]\nname = \"zuul\"\naccess = \"write\"\npassword_env = \"PW\"\n",
        )
        .unwrap();
        assert_eq!(c.users.len(), 1);
        assert!(toml::from_str::<FileConfig>("lissten = 1").is_err());
        let c: FileConfig = toml::from_str("expire = \"7d\"\nprune_interval = \"1h\"\ngrace = \"30m\"\n").unwrap();
        assert_eq!(c.expire.as_deref(), Some("7d"));
        assert_eq!(c.prune_interval.as_deref(), Some("1h"));
        assert_eq!(c.grace.as_deref(), Some("30m"));
    }

    #[test]
    fn generated_passwords_persist() {
        let dir = tempfile::tempdir().unwrap();
        let spec: UserSpec = "zuul:write".parse().unwrap();
        let a = spec.resolve(dir.path()).unwrap();
        let b = spec.resolve(dir.path()).unwrap();
        assert_eq!(a.password, b.password);
        assert_eq!(specreg_certs::pem_files::file_mode(&dir.path().join("zuul.password")).unwrap(), 0o600);
    }
}
