//! The one error type of the configurators: every variant names the file (or the setting) at fault.

use std::io;
use std::path::PathBuf;

/// What stopped a plan, an apply or an undo.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    /// An existing file that must be edited does not parse, or has a shape we cannot edit.
    #[error("{}: {problem}", path.display())]
    Malformed { path: PathBuf, problem: String },
    /// A filesystem operation failed.
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// The [`NodeSetup`](super::NodeSetup) itself is unusable (bad name, IPv6 literal, ...).
    #[error("invalid node setup: {0}")]
    Setup(String),
    /// A file changed between `plan` and `apply`; nothing was written after the check failed.
    #[error("{}: changed on disk since it was planned; plan again", path.display())]
    ChangedSincePlan { path: PathBuf },
    /// The state file is unreadable, of another root, or inconsistent.
    #[error("state file {}: {problem}", path.display())]
    State { path: PathBuf, problem: String },
    /// The node is configured in a way that our change would break (e.g. a dockerd flag that
    /// duplicates a daemon.json key).
    #[error("{0}")]
    Conflict(String),
}

impl ConfigureError {
    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        ConfigureError::Io {
            path: path.into(),
            action,
            source,
        }
    }

    pub(crate) fn malformed(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        ConfigureError::Malformed {
            path: path.into(),
            problem: problem.into(),
        }
    }
}
