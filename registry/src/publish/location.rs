//! `REGISTRY/REPO` as the publishing commands take it: which registry, and the
//! repository name within it (parsed by [`RepoName`]).

use std::fmt;

use super::PublishError;
use crate::reference::{ImageRef, RepoName, DOCKER_HUB};

/// A repository on a given registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoLocation {
    /// `host[:port]`; Docker Hub is always `docker.io`.
    pub registry: String,
    pub name: RepoName,
}

impl RepoLocation {
    /// `host[:port]/name` with docker's rules ([`ImageRef`]): no host means Docker Hub,
    /// where a one-component name lives under `library/`. A tag or digest is refused:
    /// the publishing commands take those separately.
    pub fn parse(s: &str) -> Result<Self, PublishError> {
        let bad = || PublishError::Usage(format!("{s:?} is not REGISTRY/REPOSITORY"));
        let image = ImageRef::parse(s).map_err(|_| bad())?;
        if image.tag.is_some() || image.digest.is_some() {
            return Err(bad());
        }
        let registry = match image.registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
            _ => image.registry,
        };
        Ok(RepoLocation { registry, name: image.repo })
    }

    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB
    }
}

impl fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_and_name_split_like_docker() {
        let l = RepoLocation::parse("quay.io/org/app").unwrap();
        assert_eq!((l.registry.as_str(), l.name.as_str()), ("quay.io", "org/app"));
        let l = RepoLocation::parse("127.0.0.1:5000/a/b/c").unwrap();
        assert_eq!((l.registry.as_str(), l.name.as_str()), ("127.0.0.1:5000", "a/b/c"));
        let l = RepoLocation::parse("localhost/app").unwrap();
        assert_eq!(l.registry, "localhost");
        let l = RepoLocation::parse("org/app").unwrap();
        assert!(l.is_docker_hub());
        assert_eq!(l.name.as_str(), "org/app");
        assert_eq!(RepoLocation::parse("alpine").unwrap().to_string(), "docker.io/library/alpine");
        assert_eq!(RepoLocation::parse("registry-1.docker.io/org/x").unwrap().to_string(), "docker.io/org/x");
        for bad in ["", "quay.io/", "quay.io/Org/app", "x/app@sha256:00", "quay.io//a", "quay.io/a:1"] {
            assert!(RepoLocation::parse(bad).is_err(), "{bad:?}");
        }
    }
}
