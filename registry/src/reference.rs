//! The grammar of repository names, tags and digests, in one place.
//!
//! Every other module takes these types, never raw strings, so a value that reaches the
//! storage layer has already been validated: a `RepoName` cannot contain `..`, an absolute
//! path or an upper-case letter, and a `Digest` always has a known algorithm and the right
//! number of lower-case hex characters.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// Longest repository name accepted (clients cap host + "/" + name at 255 characters).
pub const MAX_NAME_LEN: usize = 255;

/// Why a name, tag or digest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid repository name {0:?}")]
    Name(String),
    #[error("invalid tag {0:?}")]
    Tag(String),
    #[error("invalid digest {0:?}")]
    Digest(String),
    #[error("unsupported digest algorithm {0:?}")]
    Algorithm(String),
}

/// A repository name following the distribution-spec grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(valid_component) {
            return Err(ParseError::Name(s.to_owned()));
        }
        Ok(RepoName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path components, each of which is a safe file name.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// `prefix/self`, for namespaced mirrors (`ns=quay.io` turns `org/app` into
    /// `quay.io/org/app`). The prefix is validated as a name component sequence too.
    pub fn with_prefix(&self, prefix: &str) -> Result<Self, ParseError> {
        RepoName::parse(&format!("{prefix}/{}", self.0))
    }
}

/// One component: alphanumerics separated by `.`, `_`, `__` or runs of `-`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or one or more '-'.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_alnum(b[i]) {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RepoName {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RepoName::parse(s)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if ok {
            Ok(Tag(s.to_owned()))
        } else {
            Err(ParseError::Tag(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The digest algorithms the registry can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Number of hex characters in an encoded digest of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(ParseError::Algorithm(other.to_owned())),
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Digest of a whole in-memory buffer (manifests, small bodies).
    pub fn digest_of(self, data: &[u8]) -> Digest {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A running hash over streamed content.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, bytes): (Algorithm, Vec<u8>) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        Digest {
            algorithm,
            hex: hex_lower(&bytes),
        }
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

/// A content digest `algorithm:hex`, with a supported algorithm and canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| ParseError::Digest(s.to_owned()))?;
        let algorithm = match Algorithm::parse(alg) {
            Ok(a) => a,
            // A well-formed but unknown algorithm is "unsupported"; anything else malformed.
            Err(e) if valid_algorithm_grammar(alg) && !hex.is_empty() => return Err(e),
            Err(_) => return Err(ParseError::Digest(s.to_owned())),
        };
        let ok = hex.len() == algorithm.hex_len()
            && hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
        if !ok {
            return Err(ParseError::Digest(s.to_owned()));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lower-case hex part, safe as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

fn valid_algorithm_grammar(s: &str) -> bool {
    !s.is_empty()
        && s.split(['+', '.', '_', '-'])
            .all(|p| !p.is_empty() && p.bytes().all(is_alnum))
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl FromStr for Digest {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

/// What follows `/manifests/`: a tag or a digest (a `:` makes it a digest).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.contains(':') {
            Digest::parse(s).map(Reference::Digest)
        } else {
            Tag::parse(s).map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// Docker Hub's registry name, implied by references without a host.
pub const DOCKER_HUB: &str = "docker.io";

/// An image reference `[host[:port]/]repo[:tag][@digest]`, as docker and skopeo write them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]` (IPv6 in brackets), `docker.io` when none was given.
    pub registry: String,
    pub repo: RepoName,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses a reference. The first path component is a registry when it holds a `.` or
    /// a `:`, or is `localhost` (docker's rule); otherwise the image is on Docker Hub,
    /// where a one-component name lives under `library/`.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::Name(s.to_owned());
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d)?)),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[') => {
                (first.to_owned(), path)
            }
            _ => (DOCKER_HUB.to_owned(), rest),
        };
        if registry.is_empty() || registry.contains(char::is_whitespace) {
            return Err(bad());
        }
        // A `:` after the last `/` starts the tag.
        let (name, tag) = match path.rfind(':') {
            Some(i) if !path[i..].contains('/') => (&path[..i], Some(Tag::parse(&path[i + 1..])?)),
            _ => (path, None),
        };
        let name = if registry == DOCKER_HUB && !name.contains('/') { format!("library/{name}") } else { name.to_owned() };
        Ok(ImageRef { registry, repo: RepoName::parse(&name)?, tag, digest })
    }

    /// What to fetch: the digest when there is one, else the tag (`latest` by default).
    pub fn reference(&self) -> Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => Reference::Digest(d.clone()),
            (None, Some(t)) => Reference::Tag(t.clone()),
            (None, None) => Reference::Tag(Tag::parse("latest").expect("latest is a tag")),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_grammar() {
        for ok in [
            "a",
            "library/alpine",
            "quay.io/org/app",
            "a/b/c/d/e/f",
            "foo__bar",
            "foo_bar",
            "foo---bar",
            "a.b-c_d__e",
            "0",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "",
            "/abs",
            "a/",
            "a//b",
            "..",
            "a/../b",
            "a/./b",
            ".a",
            "a.",
            "A",
            "library/Alpine",
            "foo___bar",
            "foo_-bar",
            "foo..bar",
            "-a",
            "a-",
            "a b",
            "a%2fb",
            "a\\b",
            "a\0b",
            "ü",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?} should be invalid");
        }
        assert!(RepoName::parse(&"a".repeat(256)).is_err());
        assert!(RepoName::parse(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn tags_follow_the_grammar() {
        for ok in ["latest", "1.0", "_x", "v1-rc.2", "sha256-abc", &"a".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "..", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_are_canonical() {
        let d = Algorithm::Sha256.digest_of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        let d512 = Algorithm::Sha512.digest_of(b"abc");
        assert_eq!(d512.hex().len(), 128);
        assert_eq!(Digest::parse(&d512.to_string()).unwrap(), d512);

        let upper = d.to_string().to_uppercase().replacen("SHA256", "sha256", 1);
        assert!(Digest::parse(&upper).is_err());
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse("sha256").is_err());
        assert!(Digest::parse(":abc").is_err());
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
        assert!(matches!(
            Digest::parse("md5:abcd"),
            Err(ParseError::Algorithm(_))
        ));
    }

    #[test]
    fn references_split_on_colon() {
        assert!(matches!(Reference::parse("v1"), Ok(Reference::Tag(_))));
        let d = Algorithm::Sha256.digest_of(b"x").to_string();
        assert!(matches!(Reference::parse(&d), Ok(Reference::Digest(_))));
        assert!(Reference::parse("sha256:nothex").is_err());
    }
    #[test]
    fn image_references() {
        let r = ImageRef::parse("127.0.0.1:5000/org/app:v1").unwrap();
        assert_eq!((r.registry.as_str(), r.repo.as_str(), r.tag.as_ref().map(Tag::as_str)), ("127.0.0.1:5000", "org/app", Some("v1")));
        let r = ImageRef::parse("alpine").unwrap();
        assert_eq!((r.registry.as_str(), r.repo.as_str()), ("docker.io", "library/alpine"));
        assert_eq!(r.reference().to_string(), "latest");
        let r = ImageRef::parse("org/app:1.0").unwrap();
        assert_eq!((r.registry.as_str(), r.repo.as_str()), ("docker.io", "org/app"));
        let d = Algorithm::Sha256.digest_of(b"x");
        let r = ImageRef::parse(&format!("localhost/a/b:t@{d}")).unwrap();
        assert_eq!(r.registry, "localhost");
        assert_eq!(r.reference(), Reference::Digest(d.clone()));
        assert_eq!(r.to_string(), format!("localhost/a/b:t@{d}"));
        let r = ImageRef::parse("[::1]:5000/quay.io/org/x").unwrap();
        assert_eq!((r.registry.as_str(), r.repo.as_str(), r.tag.is_none()), ("[::1]:5000", "quay.io/org/x", true));
        assert!(ImageRef::parse("host:5000/Bad").is_err());
        assert!(ImageRef::parse("host:5000/a:b:c").is_err());
        assert!(ImageRef::parse("a@sha256:zz").is_err());
    }
}
