//! `cleanup-tags`: which temporary tags are stale.
//!
//! A tag's age is `now - <when it was last set>`, in whole elapsed seconds (never a
//! seconds-of-the-day component). Where that time comes from depends on the registry:
//!
//! * Docker Hub's and quay's tag APIs report it (`last_updated`, `last_modified`/`start_ts`);
//! * the OCI distribution API has no tag timestamps, so the image's own `created` time
//!   is used (the config's `created`; for an index, its newest child's; an artifact's
//!   `org.opencontainers.image.created` annotation). A tag whose time cannot be found is
//!   kept: deleting a tag of unknown age could remove something a gate is still using.

use std::time::Duration;

use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::OffsetDateTime;

use super::PublishError;
use crate::reference::Tag;

/// Shell-style patterns (`*` any run of characters, `?` one character), matched against
/// the whole tag. Several patterns: a tag matching any of them is selected.
#[derive(Debug, Clone)]
pub struct TagPatterns(Vec<String>);

impl TagPatterns {
    pub fn new(patterns: Vec<String>) -> Result<Self, PublishError> {
        if patterns.is_empty() || patterns.iter().any(String::is_empty) {
            return Err(PublishError::Usage("at least one non-empty --pattern is needed".into()));
        }
        Ok(TagPatterns(patterns))
    }

    pub fn matches(&self, tag: &Tag) -> bool {
        self.0.iter().any(|p| glob_match(p.as_bytes(), tag.as_str().as_bytes()))
    }
}

/// Iterative glob with one backtracking point (the last `*`): linear in practice.
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// `24h`, `90m`, `2d`, `1h 30m`, `86400s`...
pub fn parse_age(s: &str) -> Result<Duration, PublishError> {
    humantime::parse_duration(s.trim())
        .map_err(|e| PublishError::Usage(format!("{s:?} is not a duration like 24h or 90m: {e}")))
}

/// Elapsed time since `then`, in whole seconds; zero for a time in the future (a clock
/// ahead of ours must not make a tag look old).
pub fn age(now: OffsetDateTime, then: OffsetDateTime) -> Duration {
    let secs = (now - then).whole_seconds();
    Duration::from_secs(secs.max(0) as u64)
}

/// RFC 3339 (image configs, Docker Hub's `last_updated` such as `2024-01-02T03:04:05.123456Z`).
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s.trim(), &Rfc3339).ok()
}

/// Quay's `last_modified`, `Tue, 02 Jan 2024 03:04:05 -0000` (RFC 2822).
pub fn parse_rfc2822(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s.trim(), &Rfc2822).ok()
}

/// Seconds since the epoch (quay's `start_ts`).
pub fn from_unix(secs: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs).ok()
}

/// The current time (UTC).
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A tag and when it was last set, if known.
#[derive(Debug, Clone)]
pub struct TagTime {
    pub tag: Tag,
    pub updated: Option<OffsetDateTime>,
}

/// The tags matching `patterns` whose age exceeds `older_than`; tags of unknown age are
/// never selected.
pub fn stale<'a>(
    tags: &'a [TagTime],
    patterns: &TagPatterns,
    older_than: Duration,
    now: OffsetDateTime,
) -> Vec<&'a TagTime> {
    tags.iter()
        .filter(|t| patterns.matches(&t.tag))
        .filter(|t| t.updated.is_some_and(|u| age(now, u) > older_than))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }

    #[test]
    fn globs_match_whole_tags() {
        let p = TagPatterns::new(vec!["change_*".into(), "periodic_?.*".into()]).unwrap();
        assert!(p.matches(&tag("change_12_latest")));
        assert!(p.matches(&tag("change_")));
        assert!(!p.matches(&tag("xchange_1")));
        assert!(!p.matches(&tag("latest")));
        assert!(p.matches(&tag("periodic_1.2")));
        assert!(!p.matches(&tag("periodic_12.2")));
        assert!(glob_match(b"*a*b*c", b"xxaxxbxxbc"));
        assert!(!glob_match(b"*a*b*c", b"xxaxxbxxbcd"));
        assert!(glob_match(b"**", b""));
        assert!(TagPatterns::new(vec![]).is_err());
    }

    #[test]
    fn ages_count_total_seconds() {
        let now = parse_rfc3339("2024-03-10T12:00:00Z").unwrap();
        // Two days and one second: a seconds-of-the-day reading would say 1 s.
        let then = parse_rfc3339("2024-03-08T11:59:59Z").unwrap();
        assert_eq!(age(now, then), Duration::from_secs(2 * 86400 + 1));
        assert_eq!(age(then, now), Duration::ZERO);
        assert_eq!(parse_age("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_age("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_age("yesterday").is_err());
    }

    #[test]
    fn registry_timestamp_formats() {
        let hub = parse_rfc3339("2024-01-02T03:04:05.123456Z").unwrap();
        let quay = parse_rfc2822("Tue, 02 Jan 2024 03:04:05 -0000").unwrap();
        assert_eq!(hub.unix_timestamp(), quay.unix_timestamp());
        assert_eq!(from_unix(quay.unix_timestamp()).unwrap(), quay);
        assert!(parse_rfc3339("02/01/2024").is_none());
    }

    #[test]
    fn only_old_matching_tags_of_known_age_are_stale() {
        let now = parse_rfc3339("2024-03-10T12:00:00Z").unwrap();
        let at = |s: &str| parse_rfc3339(s);
        let tags = vec![
            TagTime { tag: tag("change_1_latest"), updated: at("2024-03-01T00:00:00Z") },
            TagTime { tag: tag("change_2_latest"), updated: at("2024-03-10T11:00:00Z") },
            TagTime { tag: tag("change_3_latest"), updated: None },
            TagTime { tag: tag("latest"), updated: at("2020-01-01T00:00:00Z") },
        ];
        let p = TagPatterns::new(vec!["change_*".into()]).unwrap();
        let s = stale(&tags, &p, parse_age("24h").unwrap(), now);
        assert_eq!(s.iter().map(|t| t.tag.as_str()).collect::<Vec<_>>(), ["change_1_latest"]);
    }
}
