//! Promote: move final tags to what the gate tested, by manifest alone.
//!
//! Three phases, each finished for every tag before the next starts:
//!
//! 1. **Check.** Every temporary tag is fetched (every manifest type accepted) and must
//!    exist and, when the gate's digest is known, equal it. The final tags' current
//!    manifests are fetched too, so they can be put back. Nothing moves if any check fails.
//! 2. **Move.** The exact bytes go under the final tag with the same media type; the
//!    registry's answer and a fresh look-up of the final tag must both give the tested
//!    digest. No blob is touched, so the time does not depend on the image size. If one
//!    move fails, every final tag moved so far is put back (its old manifest again, or
//!    removed if it did not exist) and the error says what was undone.
//! 3. **Clean.** Temporary tags are removed by tag, never by digest (that would remove
//!    the final tag too). Failures here are reported but undo nothing: the release is done.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

use super::images::PromoteTarget;
use super::location::RepoLocation;
use super::naming::TempPrefix;
use super::PublishError;
use crate::reference::{Digest, Tag};

/// A manifest exactly as a registry served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawManifest {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Bytes,
}

/// The few registry operations promote needs. The real one talks to registries through
/// the client; tests of the logic use an in-memory one.
#[async_trait]
pub trait TagStore: Send + Sync {
    /// The manifest a tag points at, `None` if the tag does not exist.
    async fn get(&self, repo: &RepoLocation, tag: &Tag) -> Result<Option<RawManifest>, PublishError>;
    /// Stores `manifest` under `tag` (same bytes, same media type); returns the digest
    /// the registry reports.
    async fn put(&self, repo: &RepoLocation, tag: &Tag, manifest: &RawManifest) -> Result<Digest, PublishError>;
    /// The digest `tag` resolves to now (`None` if absent).
    async fn resolve(&self, repo: &RepoLocation, tag: &Tag) -> Result<Option<Digest>, PublishError>;
    /// Removes `tag` only; other tags on the same manifest stay.
    async fn delete_tag(&self, repo: &RepoLocation, tag: &Tag) -> Result<(), PublishError>;
}

/// One tag to move, with everything needed to do it and to undo it.
#[derive(Debug, Clone)]
pub struct PlannedMove {
    pub repo: RepoLocation,
    pub temp: Tag,
    pub target: Tag,
    pub manifest: RawManifest,
    /// What the final tag held before (`None`: it did not exist).
    pub previous: Option<RawManifest>,
}

/// What a promote did.
#[derive(Debug, Default)]
pub struct PromoteReport {
    pub moved: Vec<PlannedMove>,
    /// Temporary tags removed.
    pub deleted: Vec<(RepoLocation, Tag)>,
    /// Temporary tags that could not be removed, and why.
    pub not_deleted: Vec<(RepoLocation, Tag, String)>,
}

/// What happened to one moved tag when a later move failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    Restored { repo: RepoLocation, tag: Tag, digest: Digest },
    Removed { repo: RepoLocation, tag: Tag },
    Failed { repo: RepoLocation, tag: Tag, error: String },
}

impl fmt::Display for Undo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Undo::Restored { repo, tag, digest } => write!(f, "{repo}:{tag} restored to {digest}"),
            Undo::Removed { repo, tag } => write!(f, "{repo}:{tag} removed (it did not exist before)"),
            Undo::Failed { repo, tag, error } => write!(f, "{repo}:{tag} COULD NOT be put back: {error}"),
        }
    }
}

/// Phase 1: checks every temporary tag and records every final tag's current manifest.
/// All problems are collected, so one run reports every missing or wrong tag.
pub async fn plan(
    store: &dyn TagStore,
    targets: &[PromoteTarget],
    prefix: &TempPrefix,
) -> Result<Vec<PlannedMove>, PublishError> {
    let mut moves = Vec::new();
    let mut problems = Vec::new();
    for t in targets {
        let temp = prefix.temp_tag(&t.tag)?;
        let manifest = match store.get(&t.repo, &temp).await? {
            Some(m) => m,
            None => {
                // A retried promote: the earlier run moved this tag and removed the
                // temporary one. Only the gate's digest can tell that apart from a
                // missing upload.
                if let Some(expect) = &t.expect {
                    if store.resolve(&t.repo, &t.tag).await?.as_ref() == Some(expect) {
                        tracing::info!(repo = %t.repo, tag = %t.tag, "already promoted");
                        continue;
                    }
                }
                problems.push(format!("{}:{temp} does not exist", t.repo));
                continue;
            }
        };
        if let Some(expect) = &t.expect {
            if &manifest.digest != expect {
                problems.push(format!(
                    "{}:{temp} is {} but the gate tested {expect}",
                    t.repo, manifest.digest
                ));
                continue;
            }
        }
        let previous = store.get(&t.repo, &t.tag).await?;
        moves.push(PlannedMove { repo: t.repo.clone(), temp, target: t.tag.clone(), manifest, previous });
    }
    if !problems.is_empty() {
        return Err(PublishError::Check(problems));
    }
    Ok(moves)
}

/// Phase 2: moves every final tag, or none (see the module comment).
pub async fn apply(store: &dyn TagStore, moves: &[PlannedMove]) -> Result<(), PublishError> {
    for (i, m) in moves.iter().enumerate() {
        if let Err(e) = move_one(store, m).await {
            let mut undone = Vec::new();
            // The failed tag itself is undone only if it changed (a PUT that the registry
            // stored although its answer was lost, or a check that failed after the PUT).
            let previous = m.previous.as_ref().map(|p| p.digest.clone());
            if !matches!(store.resolve(&m.repo, &m.target).await, Ok(now) if now == previous) {
                undone.push(undo_one(store, m).await);
            }
            for done in moves[..i].iter().rev() {
                undone.push(undo_one(store, done).await);
            }
            return Err(PublishError::RolledBack {
                failed: format!("{}:{}", m.repo, m.target),
                cause: e.to_string(),
                undone,
            });
        }
        tracing::info!(repo = %m.repo, tag = %m.target, digest = %m.manifest.digest, "final tag moved");
    }
    Ok(())
}

async fn move_one(store: &dyn TagStore, m: &PlannedMove) -> Result<(), PublishError> {
    let stored = store.put(&m.repo, &m.target, &m.manifest).await?;
    if stored != m.manifest.digest {
        return Err(PublishError::Mismatch(format!(
            "the registry stored {}:{} as {stored}, not {}",
            m.repo, m.target, m.manifest.digest
        )));
    }
    match store.resolve(&m.repo, &m.target).await? {
        Some(d) if d == m.manifest.digest => Ok(()),
        other => Err(PublishError::Mismatch(format!(
            "{}:{} resolves to {} after the move, not {}",
            m.repo,
            m.target,
            other.map_or("nothing".to_owned(), |d| d.to_string()),
            m.manifest.digest
        ))),
    }
}

async fn undo_one(store: &dyn TagStore, m: &PlannedMove) -> Undo {
    let (repo, tag) = (m.repo.clone(), m.target.clone());
    let result = match &m.previous {
        Some(prev) => store.put(&m.repo, &m.target, prev).await.and_then(|d| {
            if d == prev.digest {
                Ok(Undo::Restored { repo: repo.clone(), tag: tag.clone(), digest: d })
            } else {
                Err(PublishError::Mismatch(format!("restored as {d}, not {}", prev.digest)))
            }
        }),
        None => match store.resolve(&m.repo, &m.target).await {
            // The PUT that failed may never have created the tag.
            Ok(None) => Ok(Undo::Removed { repo: repo.clone(), tag: tag.clone() }),
            Ok(Some(_)) => store
                .delete_tag(&m.repo, &m.target)
                .await
                .map(|()| Undo::Removed { repo: repo.clone(), tag: tag.clone() }),
            Err(e) => Err(e),
        },
    };
    result.unwrap_or_else(|e| Undo::Failed { repo, tag, error: e.to_string() })
}

/// Phase 3: removes the temporary tags, by tag.
pub async fn clean(store: &dyn TagStore, moves: &[PlannedMove], report: &mut PromoteReport) {
    for m in moves {
        // Two final tags never share a temporary tag, but a list may repeat one.
        if report.deleted.iter().any(|(r, t)| r == &m.repo && t == &m.temp) {
            continue;
        }
        match store.delete_tag(&m.repo, &m.temp).await {
            Ok(()) => report.deleted.push((m.repo.clone(), m.temp.clone())),
            Err(e) => report.not_deleted.push((m.repo.clone(), m.temp.clone(), e.to_string())),
        }
    }
}

/// All three phases.
pub async fn promote(
    store: &dyn TagStore,
    targets: &[PromoteTarget],
    prefix: &TempPrefix,
) -> Result<PromoteReport, PublishError> {
    let moves = plan(store, targets, prefix).await?;
    apply(store, &moves).await?;
    let mut report = PromoteReport::default();
    clean(store, &moves, &mut report).await;
    report.moved = moves;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    use super::*;
    use crate::manifest::{OCI_INDEX, OCI_MANIFEST};
    use crate::reference::Algorithm;

    /// An in-memory registry for the logic alone (the end-to-end tests use real ones).
    #[derive(Default)]
    struct Mem {
        tags: Mutex<BTreeMap<(String, String), RawManifest>>,
        refuse_put: BTreeSet<(String, String)>,
        log: Mutex<Vec<String>>,
    }

    fn key(repo: &RepoLocation, tag: &Tag) -> (String, String) {
        (repo.to_string(), tag.to_string())
    }

    #[async_trait]
    impl TagStore for Mem {
        async fn get(&self, repo: &RepoLocation, tag: &Tag) -> Result<Option<RawManifest>, PublishError> {
            Ok(self.tags.lock().unwrap().get(&key(repo, tag)).cloned())
        }
        async fn put(&self, repo: &RepoLocation, tag: &Tag, m: &RawManifest) -> Result<Digest, PublishError> {
            self.log.lock().unwrap().push(format!("put {repo}:{tag}"));
            if self.refuse_put.contains(&key(repo, tag)) {
                return Err(PublishError::Registry(format!("PUT {repo}:{tag}: 403 denied")));
            }
            self.tags.lock().unwrap().insert(key(repo, tag), m.clone());
            Ok(m.digest.clone())
        }
        async fn resolve(&self, repo: &RepoLocation, tag: &Tag) -> Result<Option<Digest>, PublishError> {
            Ok(self.tags.lock().unwrap().get(&key(repo, tag)).map(|m| m.digest.clone()))
        }
        async fn delete_tag(&self, repo: &RepoLocation, tag: &Tag) -> Result<(), PublishError> {
            self.log.lock().unwrap().push(format!("delete {repo}:{tag}"));
            self.tags.lock().unwrap().remove(&key(repo, tag));
            Ok(())
        }
    }

    fn manifest(seed: &str, media_type: &str) -> RawManifest {
        let bytes = Bytes::from(format!(r#"{{"mediaType":"{media_type}","seed":"{seed}"}}"#));
        RawManifest { media_type: media_type.to_owned(), digest: Algorithm::Sha256.digest_of(&bytes), bytes }
    }

    fn loc(s: &str) -> RepoLocation {
        RepoLocation::parse(s).unwrap()
    }

    fn tag(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }

    fn target(repo: &str, t: &str, expect: Option<&RawManifest>) -> PromoteTarget {
        PromoteTarget { repo: loc(repo), tag: tag(t), expect: expect.map(|m| m.digest.clone()) }
    }

    fn set(mem: &Mem, repo: &str, t: &str, m: &RawManifest) {
        mem.tags.lock().unwrap().insert(key(&loc(repo), &tag(t)), m.clone());
    }

    fn digest_at(mem: &Mem, repo: &str, t: &str) -> Option<Digest> {
        mem.tags.lock().unwrap().get(&key(&loc(repo), &tag(t))).map(|m| m.digest.clone())
    }

    #[tokio::test]
    async fn moves_final_tags_and_removes_only_temporary_ones() {
        let mem = Mem::default();
        let new = manifest("new", OCI_INDEX);
        let old = manifest("old", OCI_MANIFEST);
        set(&mem, "r.io/a", "change_7_latest", &new);
        set(&mem, "r.io/a", "change_7_1.2", &new);
        set(&mem, "r.io/a", "latest", &old);
        set(&mem, "r.io/a", "keep", &new);
        let prefix = TempPrefix::for_change(7);
        let report = promote(&mem, &[target("r.io/a", "latest", Some(&new)), target("r.io/a", "1.2", None)], &prefix)
            .await
            .unwrap();
        assert_eq!(digest_at(&mem, "r.io/a", "latest"), Some(new.digest.clone()));
        assert_eq!(digest_at(&mem, "r.io/a", "1.2"), Some(new.digest.clone()));
        assert_eq!(digest_at(&mem, "r.io/a", "keep"), Some(new.digest.clone()));
        assert_eq!(digest_at(&mem, "r.io/a", "change_7_latest"), None);
        assert_eq!(digest_at(&mem, "r.io/a", "change_7_1.2"), None);
        assert_eq!(report.deleted.len(), 2);
        assert_eq!(report.moved[0].previous.as_ref().unwrap().digest, old.digest);
        // Same media type and bytes as the temporary tag.
        assert_eq!(mem.tags.lock().unwrap()[&key(&loc("r.io/a"), &tag("latest"))], new);
    }

    #[tokio::test]
    async fn a_retried_promote_with_the_gate_digest_is_a_no_op() {
        let mem = Mem::default();
        let new = manifest("new", OCI_MANIFEST);
        set(&mem, "r.io/a", "change_3_latest", &new);
        let prefix = TempPrefix::for_change(3);
        promote(&mem, &[target("r.io/a", "latest", Some(&new))], &prefix).await.unwrap();
        let again = promote(&mem, &[target("r.io/a", "latest", Some(&new))], &prefix).await.unwrap();
        assert!(again.moved.is_empty() && again.deleted.is_empty());
        assert_eq!(digest_at(&mem, "r.io/a", "latest"), Some(new.digest.clone()));
        // Without the digest a missing temporary tag stays an error.
        assert!(matches!(
            promote(&mem, &[target("r.io/a", "latest", None)], &prefix).await,
            Err(PublishError::Check(_))
        ));
    }

    #[tokio::test]
    async fn every_check_fails_before_anything_moves() {
        let mem = Mem::default();
        let tested = manifest("tested", OCI_MANIFEST);
        let other = manifest("other", OCI_MANIFEST);
        set(&mem, "r.io/a", "change_1_latest", &other);
        let err = promote(
            &mem,
            &[target("r.io/a", "latest", Some(&tested)), target("r.io/b", "latest", None)],
            &TempPrefix::for_change(1),
        )
        .await
        .unwrap_err();
        let PublishError::Check(problems) = &err else { panic!("{err}") };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("the gate tested"), "{problems:?}");
        assert!(problems[1].contains("r.io/b:change_1_latest does not exist"), "{problems:?}");
        assert!(mem.log.lock().unwrap().is_empty(), "nothing was written");
    }

    #[tokio::test]
    async fn a_failed_move_puts_every_moved_tag_back() {
        let mut mem = Mem::default();
        mem.refuse_put.insert(key(&loc("r.io/c"), &tag("latest")));
        let new = manifest("new", OCI_MANIFEST);
        let old = manifest("old", OCI_MANIFEST);
        for r in ["r.io/a", "r.io/b", "r.io/c"] {
            set(&mem, r, "p_latest", &new);
        }
        set(&mem, "r.io/a", "latest", &old);
        let prefix = TempPrefix::parse("p_").unwrap();
        let targets: Vec<_> = ["r.io/a", "r.io/b", "r.io/c"].iter().map(|r| target(r, "latest", Some(&new))).collect();
        let err = promote(&mem, &targets, &prefix).await.unwrap_err();
        let PublishError::RolledBack { failed, undone, .. } = &err else { panic!("{err}") };
        assert_eq!(failed, "r.io/c:latest");
        assert_eq!(undone.len(), 2, "c:latest never moved, so only a and b are undone: {undone:?}");
        assert!(undone.contains(&Undo::Restored { repo: loc("r.io/a"), tag: tag("latest"), digest: old.digest.clone() }));
        assert!(undone.contains(&Undo::Removed { repo: loc("r.io/b"), tag: tag("latest") }));
        assert_eq!(digest_at(&mem, "r.io/a", "latest"), Some(old.digest.clone()));
        assert_eq!(digest_at(&mem, "r.io/b", "latest"), None);
        // The temporary tags stay for a second attempt.
        assert_eq!(digest_at(&mem, "r.io/b", "p_latest"), Some(new.digest.clone()));
        let text = err.to_string();
        assert!(text.contains("r.io/c:latest") && text.contains("restored to") && text.contains("removed"), "{text}");
    }
}
