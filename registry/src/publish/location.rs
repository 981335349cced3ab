//! `REGISTRY/REPO` as the publishing commands take it: which registry, and the
//! repository name within it (parsed by [`RepoName`]).

use std::fmt;

use super::PublishError;
use crate::reference::RepoName;

/// Docker Hub's registry host, as clients write it and as its API answers.
pub const DOCKER_HUB: &str = "docker.io";

/// A repository on a given registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoLocation {
    /// `host[:port]`; Docker Hub is always `docker.io`.
    pub registry: String,
    pub name: RepoName,
}

impl RepoLocation {
    /// Splits `host[:port]/name` the way docker does: the first component is a registry
    /// when it has a `.` or a `:` or is `localhost`; otherwise the repository is on Docker
    /// Hub, where a one-component name lives under `library/`.
    pub fn parse(s: &str) -> Result<Self, PublishError> {
        let bad = || PublishError::Usage(format!("{s:?} is not REGISTRY/REPOSITORY"));
        if s.contains('@') {
            return Err(bad());
        }
        let (registry, path) = match s.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
            _ => (DOCKER_HUB, s),
        };
        let registry = match registry {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
            r => r,
        };
        let path = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        let name = RepoName::parse(&path).map_err(|_| bad())?;
        if registry.is_empty() || registry.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(RepoLocation { registry: registry.to_owned(), name })
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
        for bad in ["", "quay.io/", "quay.io/Org/app", "x/app@sha256:00", "quay.io//a"] {
            assert!(RepoLocation::parse(bad).is_err(), "{bad:?}");
        }
    }
}
