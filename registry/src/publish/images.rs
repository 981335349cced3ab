//! The `--images FILE` of a whole-buildset promote: which repositories and tags move
//! together, and the digest the gate tested for each.
//!
//! Two shapes are read (JSON):
//!
//! * specreg's own list:
//!   `{"images": [{"repository": "quay.io/org/app", "tags": ["latest", "1.2"], "digest": "sha256:..."}]}`
//!   (`digest` optional; a bare array of such entries is accepted too);
//! * Zuul artifacts, as a job receives them or returns them: `{"zuul": {"artifacts": [...]}}`
//!   or the bare array. Items whose `metadata.type` is not `container_image` are skipped
//!   (so are items without `metadata`); `metadata.repository` and `metadata.tag` name the
//!   image; the expected digest is `metadata.digest`, or the `@sha256:...` of `url` when
//!   the artifact points at a digest. For one repository:tag listed twice the later item
//!   wins, as Zuul's list puts the nearest change last.

use serde::Deserialize;
use serde_json::Value;

use super::location::RepoLocation;
use super::PublishError;
use crate::reference::{Digest, Tag};

/// One final tag to publish, and what its temporary tag must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromoteTarget {
    pub repo: RepoLocation,
    pub tag: Tag,
    pub expect: Option<Digest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageEntry {
    repository: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    digest: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImagesDoc {
    images: Vec<ImageEntry>,
}

fn bad(msg: impl Into<String>) -> PublishError {
    PublishError::Usage(msg.into())
}

fn tag(s: &str) -> Result<Tag, PublishError> {
    Tag::parse(s).map_err(|_| bad(format!("{s:?} is not a valid tag")))
}

fn digest(s: &str) -> Result<Digest, PublishError> {
    Digest::parse(s).map_err(|_| bad(format!("{s:?} is not a valid digest")))
}

/// Reads either shape; fails on anything else, and on a list that names nothing.
pub fn parse(text: &str) -> Result<Vec<PromoteTarget>, PublishError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let targets = if doc.get("images").is_some() {
        let d: ImagesDoc = serde_json::from_value(doc).map_err(|e| bad(e.to_string()))?;
        from_entries(d.images)?
    } else if let Some(artifacts) = doc.get("zuul").map(|z| z.get("artifacts")) {
        // A job that received no artifacts may have no `artifacts` key at all.
        from_artifacts(artifacts.cloned().unwrap_or(Value::Array(Vec::new())))?
    } else if let Value::Array(items) = &doc {
        if items.iter().any(|i| i.get("repository").is_some()) {
            let entries: Vec<ImageEntry> = serde_json::from_value(doc).map_err(|e| bad(e.to_string()))?;
            from_entries(entries)?
        } else {
            from_artifacts(doc)?
        }
    } else {
        return Err(bad("expected {\"images\": [...]}, {\"zuul\": {\"artifacts\": [...]}} or a list"));
    };
    if targets.is_empty() {
        return Err(bad("the list names no image to promote"));
    }
    Ok(targets)
}

fn from_entries(entries: Vec<ImageEntry>) -> Result<Vec<PromoteTarget>, PublishError> {
    let mut out = Vec::new();
    for e in entries {
        let repo = RepoLocation::parse(&e.repository)?;
        let expect = e.digest.as_deref().map(digest).transpose()?;
        let tags = e.tags.unwrap_or_else(|| vec!["latest".to_owned()]);
        for t in tags {
            push_or_replace(&mut out, PromoteTarget { repo: repo.clone(), tag: tag(&t)?, expect: expect.clone() });
        }
    }
    Ok(out)
}

fn from_artifacts(list: Value) -> Result<Vec<PromoteTarget>, PublishError> {
    let Value::Array(items) = list else {
        return Err(bad("zuul.artifacts is not a list"));
    };
    let mut out = Vec::new();
    for item in items {
        let Some(meta) = item.get("metadata") else { continue };
        if meta.get("type").and_then(Value::as_str) != Some("container_image") {
            continue;
        }
        let field = |k: &str| {
            meta.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("container_image artifact without metadata.{k}: {item}")))
        };
        let repo = RepoLocation::parse(field("repository")?)?;
        let t = tag(field("tag")?)?;
        let expect = match meta.get("digest").and_then(Value::as_str) {
            Some(d) => Some(digest(d)?),
            None => match item.get("url").and_then(Value::as_str).and_then(|u| u.rsplit_once('@')) {
                Some((_, d)) => Some(digest(d)?),
                None => None,
            },
        };
        push_or_replace(&mut out, PromoteTarget { repo, tag: t, expect });
    }
    Ok(out)
}

/// specreg's list for one repository, as `upload --write-images` writes it for promote.
pub fn list_json(repo: &RepoLocation, tags: &[Tag], digest: &Digest) -> String {
    let doc = serde_json::json!({"images": [{
        "repository": repo.to_string(),
        "tags": tags.iter().map(Tag::as_str).collect::<Vec<_>>(),
        "digest": digest.to_string(),
    }]});
    serde_json::to_string_pretty(&doc).expect("JSON serialises") + "\n"
}

/// Keeps list order; a repeated repository:tag takes the later entry's digest.
fn push_or_replace(out: &mut Vec<PromoteTarget>, t: PromoteTarget) {
    match out.iter_mut().find(|o| o.repo == t.repo && o.tag == t.tag) {
        Some(o) => *o = t,
        None => out.push(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn written_lists_read_back() {
        let repo = RepoLocation::parse("quay.io/org/a").unwrap();
        let tags = vec![Tag::parse("latest").unwrap(), Tag::parse("1.2").unwrap()];
        let d = Digest::parse(D1).unwrap();
        let t = parse(&list_json(&repo, &tags, &d)).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t.iter().all(|t| t.repo == repo && t.expect.as_ref() == Some(&d)));
    }

    #[test]
    fn specreg_list() {
        let text = format!(
            r#"{{"images": [{{"repository": "quay.io/org/a", "tags": ["latest", "1.2"], "digest": "{D1}"}},
                          {{"repository": "127.0.0.1:5000/b"}}]}}"#
        );
        let t = parse(&text).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].repo.to_string(), "quay.io/org/a");
        assert_eq!(t[1].tag.as_str(), "1.2");
        assert_eq!(t[1].expect.as_ref().unwrap().to_string(), D1);
        assert_eq!((t[2].tag.as_str(), t[2].expect.is_none()), ("latest", true));
        assert!(parse(r#"{"images": [{"repository": "x.io/a", "tag": "typo"}]}"#).is_err());
        assert!(parse(r#"{"images": []}"#).is_err());
    }

    #[test]
    fn zuul_artifacts_nearest_change_wins() {
        let text = format!(
            r#"{{"zuul": {{"artifacts": [
              {{"name": "docs", "url": "http://x/docs"}},
              {{"name": "q/a:latest", "url": "docker://ir:5000/quay.io/org/a:b1_latest",
                "metadata": {{"type": "container_image", "repository": "quay.io/org/a", "tag": "latest", "digest": "{D1}"}}}},
              {{"name": "other", "metadata": {{"type": "docs"}}}},
              {{"name": "q/a:latest", "url": "docker://ir:5000/quay.io/org/a@{D2}",
                "metadata": {{"type": "container_image", "repository": "quay.io/org/a", "tag": "latest"}}}},
              {{"name": "b:1", "url": "docker://ir:5000/org/b:b2_1",
                "metadata": {{"type": "container_image", "repository": "org/b", "tag": "1"}}}}
            ]}}}}"#
        );
        let t = parse(&text).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].expect.as_ref().unwrap().to_string(), D2, "the later item wins");
        assert_eq!(t[1].repo.to_string(), "docker.io/org/b");
        assert!(t[1].expect.is_none());
        assert!(parse(r#"{"zuul": {}}"#).is_err(), "no artifacts: nothing to promote");
        assert!(parse(r#"[{"metadata": {"type": "container_image", "tag": "x"}}]"#).is_err());
    }
}
