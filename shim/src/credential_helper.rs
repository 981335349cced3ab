//! `docker-credential-specreg`: the docker credential helper protocol
//! (docker/docker-credential-helpers `credentials/credentials.go`), backed by a JSON file.
//!
//! | action | stdin | stdout |
//! |---|---|---|
//! | `store` | `{"ServerURL","Username","Secret"}` | nothing |
//! | `get` | server URL | `{"ServerURL","Username","Secret"}`, or `credentials not found in native keychain` + exit 1 |
//! | `erase` | server URL | nothing (erasing a missing entry is not an error) |
//! | `list` | nothing | `{"<ServerURL>": "<Username>", ...}` |
//! | `version` | nothing | version text |
//!
//! Errors go to **stdout** with exit status 1, as clients expect. The store serves only what was
//! stored in it (by `specreg use` or `docker login`), so a stray `credsStore` cannot hide other
//! credentials: everything else is "not found".
//!
//! The store is a 0600 JSON file, [`DEFAULT_STORE_PATH`] unless `SPECREG_CREDENTIAL_STORE` names
//! another ([`store_path_from_env`]). `specreg use` writes it owned by the job user, so that the
//! helper, run by that user's docker CLI, can read it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::configure::{ConfigureError, Secret};

/// The suffix: docker runs `docker-credential-specreg` for `credHelpers` entries naming `specreg`.
pub const HELPER_SUFFIX: &str = "specreg";
/// The executable name docker looks for on `PATH`.
pub const HELPER_BINARY: &str = "docker-credential-specreg";
/// The exact text clients compare to tell "no credentials" from a failure.
pub const NOT_FOUND: &str = "credentials not found in native keychain";
pub const DEFAULT_STORE_PATH: &str = "/var/lib/specreg/credentials.json";
pub const STORE_ENV: &str = "SPECREG_CREDENTIAL_STORE";

/// The store file named by `SPECREG_CREDENTIAL_STORE`, else [`DEFAULT_STORE_PATH`].
pub fn store_path_from_env() -> PathBuf {
    std::env::var_os(STORE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_STORE_PATH.into())
}

/// True when the program was invoked as `docker-credential-specreg` (by `argv[0]`).
pub fn invoked_as_helper(argv0: &str) -> bool {
    Path::new(argv0).file_name().and_then(|n| n.to_str()) == Some(HELPER_BINARY)
}

/// The protocol's credential record.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(rename = "ServerURL")]
    pub server_url: String,
    #[serde(rename = "Username")]
    pub username: String,
    #[serde(rename = "Secret")]
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server_url", &self.server_url)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredEntry {
    #[serde(rename = "ServerURL")]
    server_url: String,
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// The credential store file: `{"version": 1, "credentials": {"<key>": {ServerURL, Username, Secret}}}`,
/// keyed by the normalised server (see [`server_key`]).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialStore {
    version: u32,
    credentials: BTreeMap<String, StoredEntry>,
}

/// `https://host:port/` and `host:port` name the same server: drop the scheme and trailing `/`,
/// lower-case the host part.
pub fn server_key(url: &str) -> String {
    let u = url.trim();
    let lower = u.to_ascii_lowercase();
    let u = if lower.starts_with("https://") {
        &u[8..]
    } else if lower.starts_with("http://") {
        &u[7..]
    } else {
        u
    };
    let u = u.trim_end_matches('/');
    match u.split_once('/') {
        Some((host, rest)) => format!("{}/{rest}", host.to_ascii_lowercase()),
        None => u.to_ascii_lowercase(),
    }
}

impl CredentialStore {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let s: CredentialStore = serde_json::from_slice(bytes).map_err(|e| format!("invalid credential store: {e}"))?;
        if s.version != 1 {
            return Err(format!("credential store version {} is not 1", s.version));
        }
        Ok(s)
    }

    /// Loads `path`; an absent file is an empty store.
    pub fn load(path: &Path) -> Result<Self, ConfigureError> {
        match std::fs::read(path) {
            Ok(b) => Self::parse(&b).map_err(|p| ConfigureError::Malformed {
                path: path.into(),
                problem: p,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::new()),
            Err(e) => Err(ConfigureError::Io {
                path: path.into(),
                action: "read",
                source: e,
            }),
        }
    }

    pub fn new() -> Self {
        CredentialStore {
            version: 1,
            credentials: BTreeMap::new(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("serialises");
        b.push(b'\n');
        b
    }

    /// Writes the store atomically, mode 0600. When the directory is not writable (the helper
    /// runs as the job user under a root-owned state dir) the file is rewritten in place.
    pub fn save(&self, path: &Path) -> Result<(), ConfigureError> {
        crate::configure::write_private_file(path, &self.to_bytes())
    }

    pub fn get(&self, server: &str) -> Option<Credentials> {
        self.credentials.get(&server_key(server)).map(|e| Credentials {
            server_url: e.server_url.clone(),
            username: e.username.clone(),
            secret: e.secret.clone(),
        })
    }

    pub fn put(&mut self, c: &Credentials) {
        self.credentials.insert(
            server_key(&c.server_url),
            StoredEntry {
                server_url: c.server_url.clone(),
                username: c.username.clone(),
                secret: c.secret.clone(),
            },
        );
    }

    /// Stores `username`/`secret` for `server` as `specreg use` does.
    pub fn put_secret(&mut self, server: &str, username: &str, secret: &Secret) {
        self.put(&Credentials {
            server_url: server.into(),
            username: username.into(),
            secret: secret.expose().into(),
        });
    }

    pub fn erase(&mut self, server: &str) -> bool {
        self.credentials.remove(&server_key(server)).is_some()
    }

    /// `ServerURL -> Username`, as `list` prints it.
    pub fn list(&self) -> BTreeMap<String, String> {
        self.credentials
            .values()
            .map(|e| (e.server_url.clone(), e.username.clone()))
            .collect()
    }
}

/// Why an action failed; its `Display` is what goes to stdout.
#[derive(Debug, thiserror::Error)]
enum HelperError {
    #[error("{NOT_FOUND}")]
    NotFound,
    #[error("no credentials server URL")]
    MissingServerUrl,
    #[error("no credentials username")]
    MissingUsername,
    #[error("{0}")]
    Other(String),
}

/// Runs one action of the protocol. Returns the exit status (0 or 1); every message, error or
/// not, goes to `output`.
pub fn run(action: &str, input: &mut dyn Read, output: &mut dyn Write, store_path: &Path) -> i32 {
    match run_inner(action, input, output, store_path) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(output, "{e}");
            let _ = output.flush();
            1
        }
    }
}

/// [`run`] on the process's own arguments, stdin and stdout: `docker-credential-specreg <action>`.
pub fn main_with_args(args: &[String]) -> i32 {
    let action = args.get(1).map(String::as_str).unwrap_or("");
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    run(action, &mut stdin.lock(), &mut stdout.lock(), &store_path_from_env())
}

fn read_all(input: &mut dyn Read) -> Result<String, HelperError> {
    let mut s = String::new();
    input
        .read_to_string(&mut s)
        .map_err(|e| HelperError::Other(format!("reading stdin: {e}")))?;
    Ok(s)
}

fn load(path: &Path) -> Result<CredentialStore, HelperError> {
    CredentialStore::load(path).map_err(|e| HelperError::Other(e.to_string()))
}

fn run_inner(action: &str, input: &mut dyn Read, output: &mut dyn Write, store_path: &Path) -> Result<(), HelperError> {
    let io = |e: std::io::Error| HelperError::Other(format!("writing stdout: {e}"));
    match action {
        "get" => {
            let url = read_all(input)?.trim().to_string();
            if url.is_empty() {
                return Err(HelperError::MissingServerUrl);
            }
            let creds = load(store_path)?.get(&url).ok_or(HelperError::NotFound)?;
            // Clients expect the ServerURL they asked for.
            let creds = Credentials {
                server_url: url,
                ..creds
            };
            serde_json::to_writer(&mut *output, &creds).map_err(|e| HelperError::Other(e.to_string()))?;
            writeln!(output).map_err(io)?;
        }
        "store" => {
            let text = read_all(input)?;
            let creds: Credentials = serde_json::from_str(&text)
                .map_err(|e| HelperError::Other(format!("error reading credentials from stdin: {e}")))?;
            if creds.server_url.trim().is_empty() {
                return Err(HelperError::MissingServerUrl);
            }
            if creds.username.trim().is_empty() {
                return Err(HelperError::MissingUsername);
            }
            let mut store = load(store_path)?;
            store.put(&creds);
            store.save(store_path).map_err(|e| HelperError::Other(e.to_string()))?;
        }
        "erase" => {
            let url = read_all(input)?.trim().to_string();
            if url.is_empty() {
                return Err(HelperError::MissingServerUrl);
            }
            let mut store = load(store_path)?;
            if store.erase(&url) {
                store.save(store_path).map_err(|e| HelperError::Other(e.to_string()))?;
            }
        }
        "list" => {
            serde_json::to_writer(&mut *output, &load(store_path)?.list())
                .map_err(|e| HelperError::Other(e.to_string()))?;
            writeln!(output).map_err(io)?;
        }
        "version" => {
            writeln!(output, "{HELPER_BINARY} (specreg) {}", env!("CARGO_PKG_VERSION")).map_err(io)?;
        }
        other => {
            return Err(HelperError::Other(format!(
                "unknown action {other:?}; usage: {HELPER_BINARY} <store|get|erase|list|version>"
            )))
        }
    }
    output.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn call(action: &str, stdin: &str, store: &Path) -> (i32, String) {
        let mut out = Vec::new();
        let code = run(action, &mut stdin.as_bytes(), &mut out, store);
        (code, String::from_utf8(out).unwrap())
    }

    #[test]
    fn protocol_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("state/credentials.json");
        std::fs::create_dir_all(store.parent().unwrap()).unwrap();

        assert_eq!(
            call("get", "buildset-registry:5000\n", &store),
            (1, format!("{NOT_FOUND}\n"))
        );
        assert_eq!(call("list", "", &store), (0, "{}\n".to_string()));

        let (code, out) = call(
            "store",
            r#"{"ServerURL":"buildset-registry:5000","Username":"zuul","Secret":"s3cr3t"}"#,
            &store,
        );
        assert_eq!((code, out.as_str()), (0, ""));
        assert_eq!(std::fs::metadata(&store).unwrap().permissions().mode() & 0o777, 0o600);

        let (code, out) = call("get", "  https://buildset-registry:5000/ \n", &store);
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ServerURL": "https://buildset-registry:5000/", "Username": "zuul", "Secret": "s3cr3t"})
        );

        assert_eq!(
            call("list", "", &store),
            (0, "{\"buildset-registry:5000\":\"zuul\"}\n".to_string())
        );
        // Hosts it does not hold are "not found", never another host's secret.
        assert_eq!(call("get", "quay.io", &store).0, 1);

        assert_eq!(call("erase", "buildset-registry:5000", &store), (0, String::new()));
        assert_eq!(
            call("get", "buildset-registry:5000", &store),
            (1, format!("{NOT_FOUND}\n"))
        );
        assert_eq!(call("erase", "buildset-registry:5000", &store), (0, String::new()));
    }

    #[test]
    fn errors_go_to_stdout_with_status_1() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("credentials.json");
        assert_eq!(call("get", "  \n", &store), (1, "no credentials server URL\n".into()));
        assert_eq!(
            call("store", r#"{"ServerURL":"x:1","Username":"","Secret":"p"}"#, &store),
            (1, "no credentials username\n".into())
        );
        let (code, out) = call("store", "not json", &store);
        assert_eq!(code, 1);
        assert!(out.starts_with("error reading credentials from stdin"), "{out}");
        let (code, out) = call("frobnicate", "", &store);
        assert_eq!(code, 1);
        assert!(out.contains("unknown action"), "{out}");
        let (code, out) = call("version", "", &store);
        assert_eq!(code, 0);
        assert!(out.starts_with(HELPER_BINARY));
        std::fs::write(&store, "{broken").unwrap();
        let (code, out) = call("get", "x:1", &store);
        assert_eq!(code, 1);
        assert!(
            out.contains("credentials.json") && out.contains("invalid credential store"),
            "{out}"
        );
    }

    #[test]
    fn names() {
        assert!(invoked_as_helper("/usr/local/bin/docker-credential-specreg"));
        assert!(!invoked_as_helper("specreg"));
        assert_eq!(server_key("HTTPS://Reg.Example:5000/"), "reg.example:5000");
        assert_eq!(server_key("https://index.docker.io/v1/"), "index.docker.io/v1");
    }
}
