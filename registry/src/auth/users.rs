//! Users, their passwords and what they may do.

use std::fmt;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    /// Pull and list.
    Read,
    /// Pull, push and delete.
    Write,
}

impl AccessLevel {
    /// Whether this level allows a token action (`pull`, `push`, `delete`, `*`).
    pub fn allows(self, action: &str) -> bool {
        match action {
            "pull" => true,
            "push" | "delete" | "*" => self == AccessLevel::Write,
            _ => false,
        }
    }
}

impl std::str::FromStr for AccessLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(AccessLevel::Read),
            "write" => Ok(AccessLevel::Write),
            other => Err(format!("access must be read or write, not {other:?}")),
        }
    }
}

/// A password. Its `Debug` never shows it, so it cannot leak into a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// A secret as read from a file: one trailing newline (`\n` or `\r\n`) is not part of it.
    pub fn from_file_contents(s: &str) -> Self {
        let s = s.strip_suffix('\n').unwrap_or(s);
        let s = s.strip_suffix('\r').unwrap_or(s);
        Secret(s.to_owned())
    }

    /// A random password of 32 URL-safe characters.
    pub fn generate() -> Self {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let bytes: [u8; 32] = rand::random();
        Secret(bytes.iter().map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char).collect())
    }

    /// The plain text, for the connection-info file and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time equality (the lengths are hidden by comparing hashes).
    pub fn matches(&self, candidate: &str) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(candidate.as_bytes());
        a.ct_eq(&b).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password: Secret,
    pub access: AccessLevel,
}

/// The users of one registry.
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    users: Vec<User>,
}

impl UserDb {
    pub fn new(users: Vec<User>) -> Self {
        UserDb { users }
    }

    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// The user whose name and password match. Every user's password is compared, so the
    /// time taken does not tell which names exist.
    pub fn verify(&self, name: &str, password: &str) -> Option<&User> {
        let mut found = None;
        for user in &self.users {
            let name_ok: bool = user.name.as_bytes().ct_eq(name.as_bytes()).into();
            let ok = user.password.matches(password) & name_ok;
            if ok && found.is_none() {
                found = Some(user);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hide_and_compare() {
        let s = Secret::new("p:a:ss");
        assert!(s.matches("p:a:ss"));
        assert!(!s.matches("p:a:s"));
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(Secret::from_file_contents("pw\n").expose(), "pw");
        assert_eq!(Secret::from_file_contents("pw\r\n").expose(), "pw");
        assert_eq!(Secret::from_file_contents("pw\n\n").expose(), "pw\n");
        assert_eq!(Secret::generate().expose().len(), 32);
    }

    #[test]
    fn users_verify() {
        let db = UserDb::new(vec![
            User { name: "r".into(), password: Secret::new("1"), access: AccessLevel::Read },
            User { name: "w".into(), password: Secret::new("2"), access: AccessLevel::Write },
        ]);
        assert_eq!(db.verify("w", "2").unwrap().access, AccessLevel::Write);
        assert!(db.verify("w", "1").is_none());
        assert!(db.verify("x", "2").is_none());
        assert!(AccessLevel::Read.allows("pull") && !AccessLevel::Read.allows("push"));
    }
}
