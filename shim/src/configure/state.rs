//! The state file: what `apply` touched and how to put it back. `undo` works from it alone.
//!
//! ```json
//! { "version": 1, "root": "/", "files": [ { "path": "/etc/docker/daemon.json", "kind": "daemon-json",
//!   "original": { "state": "present", "base64": "...", "mode": 420, "uid": 0, "gid": 0 },
//!   "written_sha256": "..." } ], "created_dirs": ["/etc/docker/certs.d/127.0.0.1:41234"] }
//! ```
//! Paths are the real paths written (root prefix included). The file is written atomically with
//! mode 0600: originals can hold secrets.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::fsutil::{self, Original};
use super::{ConfigureError, FileKind};

pub const STATE_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub root: PathBuf,
    pub files: Vec<FileRecord>,
    /// Directories we created, parents before children.
    pub created_dirs: Vec<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: PathBuf,
    pub kind: FileKind,
    pub original: OriginalRecord,
    /// sha256 of the bytes we last wrote; undo warns when the file changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_sha256: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum OriginalRecord {
    Absent,
    Present {
        base64: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

impl From<&Original> for OriginalRecord {
    fn from(o: &Original) -> Self {
        match o {
            Original::Absent => OriginalRecord::Absent,
            Original::Present { bytes, mode, uid, gid } => OriginalRecord::Present {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
                mode: *mode,
                uid: *uid,
                gid: *gid,
            },
        }
    }
}

impl OriginalRecord {
    pub fn to_original(&self) -> Result<Original, String> {
        Ok(match self {
            OriginalRecord::Absent => Original::Absent,
            OriginalRecord::Present { base64, mode, uid, gid } => Original::Present {
                bytes: base64::engine::general_purpose::STANDARD
                    .decode(base64)
                    .map_err(|e| format!("bad base64 in original: {e}"))?,
                mode: *mode,
                uid: *uid,
                gid: *gid,
            },
        })
    }
}

impl State {
    pub fn new(root: &Path) -> Self {
        State {
            version: STATE_VERSION,
            root: root.to_path_buf(),
            files: Vec::new(),
            created_dirs: Vec::new(),
        }
    }

    pub fn record(&self, path: &Path) -> Option<&FileRecord> {
        self.files.iter().find(|r| r.path == path)
    }

    /// Loads the state file; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<State>, ConfigureError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ConfigureError::io(path, "read", e)),
        };
        let state: State = serde_json::from_slice(&bytes).map_err(|e| ConfigureError::State {
            path: path.into(),
            problem: format!("does not parse: {e}"),
        })?;
        if state.version != STATE_VERSION {
            return Err(ConfigureError::State {
                path: path.into(),
                problem: format!("version {} is not the supported {STATE_VERSION}", state.version),
            });
        }
        Ok(Some(state))
    }

    pub fn save(&self, path: &Path) -> Result<(), ConfigureError> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("state serialises");
        bytes.push(b'\n');
        fsutil::atomic_write(path, &bytes, 0o600, None)
    }

    /// Every recorded path must lie under the recorded root, and the root must be the one the
    /// caller expects, so a damaged or foreign state file cannot make undo write elsewhere.
    pub fn check(&self, state_path: &Path, root: &Path) -> Result<(), ConfigureError> {
        let err = |problem: String| ConfigureError::State {
            path: state_path.into(),
            problem,
        };
        if self.root != root {
            return Err(err(format!(
                "was written for root {}, not {}",
                self.root.display(),
                root.display()
            )));
        }
        let dotdot = |p: &Path| p.components().any(|c| c == std::path::Component::ParentDir);
        for p in &self.files.iter().map(|r| &r.path).collect::<Vec<_>>() {
            if !p.starts_with(root) || dotdot(p) {
                return Err(err(format!("records {} outside root {}", p.display(), root.display())));
            }
        }
        // Directories made for the state file itself may lie outside the root.
        for p in &self.created_dirs {
            if !(p.starts_with(root) || state_path.starts_with(p)) || dotdot(p) {
                return Err(err(format!("records {} outside root {}", p.display(), root.display())));
            }
        }
        Ok(())
    }
}
