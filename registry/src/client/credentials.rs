//! Where credentials come from: flags (`user:password`), secret files, docker's
//! `config.json` (`auths` with a base64 `auth`, `credHelpers`, `credsStore`) and the
//! `docker-credential-<name>` helper protocol.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::ClientError;
use crate::auth::Secret;

/// What to authenticate with.
#[derive(Debug, Clone, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic { username: String, password: Secret },
    /// An OAuth2 refresh token (docker's `identitytoken`), exchanged with the token
    /// service's POST form.
    IdentityToken(Secret),
}

impl Credentials {
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials::Basic { username: username.into(), password: Secret::new(password) }
    }

    /// `user:password` as skopeo's `--creds` takes it (the password may contain `:`).
    pub fn parse_user_pass(s: &str) -> Result<Self, ClientError> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credentials::basic(u, p)),
            _ => Err(ClientError::Credentials("expected USER:PASSWORD".to_owned())),
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Credentials::Anonymous)
    }
}

/// A password from a file, one trailing newline dropped.
pub fn read_secret_file(path: &Path) -> Result<Secret, ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Credentials(format!("reading {}: {e}", path.display())))?;
    Ok(Secret::from_file_contents(&text))
}

/// The parts of docker's `config.json` that hold credentials.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
    /// Where to find `docker-credential-*` programs; `PATH` when unset.
    #[serde(skip)]
    pub helper_dir: Option<PathBuf>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The key docker uses for Docker Hub in `auths` and with helpers.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// `docker.io`, `index.docker.io`, `registry-1.docker.io` and the legacy URL are one registry.
fn is_docker_hub(host: &str) -> bool {
    matches!(host, "docker.io" | "index.docker.io" | "registry-1.docker.io")
}

/// The host[:port] part of an `auths` key (`https://host:port/v1/` → `host:port`).
fn normalize_key(key: &str) -> String {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    if is_docker_hub(&k) {
        "docker.io".to_owned()
    } else {
        k
    }
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
    }

    pub fn parse(text: &str) -> Result<Self, ClientError> {
        serde_json::from_str(text).map_err(|e| ClientError::Credentials(format!("docker config.json: {e}")))
    }

    /// Loads a config file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|e| ClientError::Credentials(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerConfig::default()),
            Err(e) => Err(ClientError::Credentials(format!("reading {}: {e}", path.display()))),
        }
    }

    /// Credentials for `host` (`host[:port]` as in an image reference): a registry
    /// specific helper first, then `auths`, then the default store, as docker does.
    pub fn lookup(&self, host: &str) -> Result<Credentials, ClientError> {
        let wanted = normalize_key(host);
        let helper = self
            .cred_helpers
            .iter()
            .find(|(k, _)| normalize_key(k) == wanted)
            .map(|(_, v)| v.as_str());
        if let Some(name) = helper {
            return self.run_helper(name, &wanted);
        }
        if let Some(entry) = self.auths.iter().find(|(k, _)| normalize_key(k) == wanted).map(|(_, v)| v) {
            let creds = entry_credentials(entry, host)?;
            if !creds.is_anonymous() {
                return Ok(creds);
            }
        }
        match &self.creds_store {
            Some(store) if !store.is_empty() => self.run_helper(store, &wanted),
            _ => Ok(Credentials::Anonymous),
        }
    }

    /// `docker-credential-<name> get`, the server on stdin, JSON on stdout. "Not found"
    /// (a failing exit) is no credentials, as docker treats it.
    fn run_helper(&self, name: &str, host: &str) -> Result<Credentials, ClientError> {
        let program = format!("docker-credential-{name}");
        let path = match &self.helper_dir {
            Some(dir) => dir.join(&program),
            None => PathBuf::from(&program),
        };
        let server = if host == "docker.io" { DOCKER_HUB_KEY } else { host };
        let mut child = Command::new(&path)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ClientError::Credentials(format!("running {program}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading is answered by its exit status.
            let _ = stdin.write_all(server.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| ClientError::Credentials(format!("running {program}: {e}")))?;
        if !out.status.success() {
            tracing::debug!(helper = %program, registry = %host, "credential helper has no credentials");
            return Ok(Credentials::Anonymous);
        }
        #[derive(serde::Deserialize)]
        struct HelperReply {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let reply: HelperReply = serde_json::from_slice(&out.stdout)
            .map_err(|e| ClientError::Credentials(format!("{program} answered no credential JSON: {e}")))?;
        if reply.secret.is_empty() {
            return Ok(Credentials::Anonymous);
        }
        // Docker's convention: the user `<token>` marks an identity (refresh) token.
        if reply.username == "<token>" {
            return Ok(Credentials::IdentityToken(Secret::new(reply.secret)));
        }
        Ok(Credentials::Basic { username: reply.username, password: Secret::new(reply.secret) })
    }
}

fn entry_credentials(entry: &AuthEntry, host: &str) -> Result<Credentials, ClientError> {
    if let Some(token) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Credentials::IdentityToken(Secret::new(token)));
    }
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = B64
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| ClientError::Credentials(format!("the auth entry for {host} is not base64 of user:password")))?;
        return Credentials::parse_user_pass(&decoded)
            .map_err(|_| ClientError::Credentials(format!("the auth entry for {host} is not user:password")));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Credentials::basic(u.clone(), p.clone())),
        _ => Ok(Credentials::Anonymous),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn basic(c: &Credentials) -> (String, String) {
        match c {
            Credentials::Basic { username, password } => (username.clone(), password.expose().to_owned()),
            other => panic!("basic credentials expected, got {other:?}"),
        }
    }

    #[test]
    fn auths_base64_and_key_forms() {
        let cfg = DockerConfig::parse(&format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "https://reg.example:5000/v2/": {{"auth": "{}"}},
                "plain.example": {{"username": "u", "password": "p"}},
                "tok.example": {{"identitytoken": "refresh"}}
            }}}}"#,
            B64.encode("hub:pw"),
            B64.encode("zuul:a:b:c")
        ))
        .unwrap();
        assert_eq!(basic(&cfg.lookup("docker.io").unwrap()), ("hub".into(), "pw".into()));
        assert_eq!(basic(&cfg.lookup("registry-1.docker.io").unwrap()), ("hub".into(), "pw".into()));
        assert_eq!(basic(&cfg.lookup("reg.example:5000").unwrap()), ("zuul".into(), "a:b:c".into()));
        assert_eq!(basic(&cfg.lookup("plain.example").unwrap()), ("u".into(), "p".into()));
        assert!(matches!(cfg.lookup("tok.example").unwrap(), Credentials::IdentityToken(t) if t.expose() == "refresh"));
        assert!(cfg.lookup("reg.example").unwrap().is_anonymous(), "the port is part of the key");
        assert!(cfg.lookup("other.example").unwrap().is_anonymous());
    }

    #[test]
    fn bad_auth_field_is_an_error() {
        let cfg = DockerConfig::parse(r#"{"auths": {"r.example": {"auth": "%%%"}}}"#).unwrap();
        assert!(matches!(cfg.lookup("r.example"), Err(ClientError::Credentials(_))));
    }

    fn helper(dir: &Path, name: &str, script: &str) {
        let path = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn cred_helpers_then_auths_then_store() {
        let dir = tempfile::tempdir().unwrap();
        // Echoes the server it was asked about, so the test sees what it was given.
        helper(
            dir.path(),
            "per",
            r#"[ "$1" = get ] || exit 3; read s; printf '{"ServerURL":"%s","Username":"per-%s","Secret":"s1"}' "$s" "$s""#,
        );
        helper(
            dir.path(),
            "store",
            r#"read s; case "$s" in known.example) printf '{"Username":"<token>","Secret":"rt"}';; *) echo "credentials not found in native keychain"; exit 1;; esac"#,
        );
        let mut cfg = DockerConfig::parse(&format!(
            r#"{{"auths": {{"a.example": {{"auth": "{}"}}, "h.example": {{"auth": "{}"}}}},
                "credHelpers": {{"h.example": "per", "docker.io": "per"}},
                "credsStore": "store"}}"#,
            B64.encode("au:ap"),
            B64.encode("ignored:x")
        ))
        .unwrap();
        cfg.helper_dir = Some(dir.path().to_owned());
        assert_eq!(basic(&cfg.lookup("h.example").unwrap()), ("per-h.example".into(), "s1".into()), "helper beats auths");
        assert_eq!(
            basic(&cfg.lookup("docker.io").unwrap()),
            ("per-https://index.docker.io/v1/".into(), "s1".into()),
            "docker hub goes to helpers under its legacy key"
        );
        assert_eq!(basic(&cfg.lookup("a.example").unwrap()), ("au".into(), "ap".into()));
        assert!(matches!(cfg.lookup("known.example").unwrap(), Credentials::IdentityToken(t) if t.expose() == "rt"));
        assert!(cfg.lookup("unknown.example").unwrap().is_anonymous(), "not found is anonymous");
    }

    #[test]
    fn missing_helper_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = DockerConfig::parse(r#"{"credsStore": "absent"}"#).unwrap();
        cfg.helper_dir = Some(dir.path().to_owned());
        assert!(matches!(cfg.lookup("x.example"), Err(ClientError::Credentials(m)) if m.contains("docker-credential-absent")));
    }

    #[test]
    fn user_pass_and_secret_files() {
        assert_eq!(basic(&Credentials::parse_user_pass("zuul:p:w").unwrap()), ("zuul".into(), "p:w".into()));
        assert!(Credentials::parse_user_pass("nopass").is_err());
        assert!(Credentials::parse_user_pass(":x").is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(read_secret_file(&f).unwrap().expose(), "s3cret");
        assert!(DockerConfig::load(&dir.path().join("absent.json")).unwrap().lookup("x").unwrap().is_anonymous());
    }
}
