//! Temporary tag names: the gate pushes `<prefix><tag>` and promote moves it to `<tag>`.
//!
//! Zuul's convention is `change_<N>_` for a change and `<pipeline>_` where there is no
//! change (periodic, post and tag pipelines). The final tag stays inside the temporary
//! one so two tags of one repository never share a temporary tag.

use std::fmt;

use super::PublishError;
use crate::reference::Tag;

/// The prefix that turns a final tag into its temporary tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempPrefix(String);

impl TempPrefix {
    /// `change_<N>_`
    pub fn for_change(change: u64) -> Self {
        TempPrefix(format!("change_{change}_"))
    }

    /// `<pipeline>_`, for builds that belong to no change.
    pub fn for_pipeline(pipeline: &str) -> Result<Self, PublishError> {
        TempPrefix::parse(&format!("{pipeline}_"))
    }

    /// Any prefix that, followed by a tag, still makes a tag. An empty prefix would make
    /// the temporary tag the final tag, which promote could never tell apart.
    pub fn parse(s: &str) -> Result<Self, PublishError> {
        if s.is_empty() || Tag::parse(&format!("{s}x")).is_err() {
            return Err(PublishError::Usage(format!(
                "temporary tag prefix {s:?} cannot start a tag (letters, digits, '_', '.', '-'; not empty)"
            )));
        }
        Ok(TempPrefix(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The temporary tag of `final_tag`; fails when the two together pass the 128
    /// character limit of a tag.
    pub fn temp_tag(&self, final_tag: &Tag) -> Result<Tag, PublishError> {
        let joined = format!("{}{}", self.0, final_tag);
        Tag::parse(&joined).map_err(|_| {
            PublishError::Usage(format!(
                "temporary tag {joined:?} is not a valid tag (a tag has at most 128 characters)"
            ))
        })
    }

    /// The final tag inside a temporary tag, if `tag` carries this prefix.
    pub fn final_tag(&self, tag: &Tag) -> Option<Tag> {
        tag.as_str().strip_prefix(self.0.as_str()).and_then(|t| Tag::parse(t).ok())
    }
}

impl fmt::Display for TempPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }

    #[test]
    fn change_and_pipeline_prefixes() {
        let p = TempPrefix::for_change(1234);
        assert_eq!(p.temp_tag(&tag("latest")).unwrap().as_str(), "change_1234_latest");
        assert_eq!(p.final_tag(&tag("change_1234_1.2")).unwrap().as_str(), "1.2");
        assert_eq!(p.final_tag(&tag("change_123_1.2")), None);
        let p = TempPrefix::for_pipeline("periodic").unwrap();
        assert_eq!(p.temp_tag(&tag("1.2")).unwrap().as_str(), "periodic_1.2");
    }

    #[test]
    fn bad_prefixes_and_overlong_tags_are_refused() {
        for bad in ["", "-x", "a/b", "a:b", ".x"] {
            assert!(TempPrefix::parse(bad).is_err(), "{bad:?}");
        }
        let p = TempPrefix::for_change(1);
        assert!(p.temp_tag(&tag(&"a".repeat(120))).is_err());
        assert!(p.temp_tag(&tag(&"a".repeat(119))).is_ok());
    }
}
