//! Publishing: the gate uploads an image under a temporary tag, and after the merge
//! promote moves the final tags to it by manifest alone; `cleanup-tags` removes the
//! temporary tags that no promote took away.
//!
//! This module holds the decisions (names, lists, checks, order, undo, ages); talking to
//! registries goes through [`crate::client`] and the tag APIs in [`tag_api`].

pub mod cleanup;
pub mod images;
pub mod location;
pub mod naming;
pub mod promote;
pub mod remote;
pub mod tag_api;
pub mod upload;

pub use images::PromoteTarget;
pub use location::RepoLocation;
pub use naming::TempPrefix;
pub use promote::{PromoteReport, RawManifest, TagStore, Undo};

/// Why a publishing step failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A bad argument or list file.
    #[error("{0}")]
    Usage(String),
    /// Checks before promote; nothing was changed.
    #[error("nothing was promoted: {}", .0.join("; "))]
    Check(Vec<String>),
    /// A registry answered something other than what the step needed.
    #[error("{0}")]
    Registry(String),
    /// A tag resolved to a digest other than the one just stored.
    #[error("{0}")]
    Mismatch(String),
    /// A move failed and the tags moved before it were put back.
    #[error("promote of {failed} failed ({cause}); undone: {}", undo_list(.undone))]
    RolledBack { failed: String, cause: String, undone: Vec<Undo> },
}

fn undo_list(undone: &[Undo]) -> String {
    if undone.is_empty() {
        return "nothing had moved".to_owned();
    }
    undone.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}
