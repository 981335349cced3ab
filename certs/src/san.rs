//! Subject alternative names: parsing the strings callers pass in.
//!
//! A string that parses as an IP address (optionally in `[...]` brackets for IPv6)
//! becomes an IP SAN; anything else must be a DNS name, optionally with a leading
//! `*.` wildcard label.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::{Error, Result};

/// One subject alternative name of a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectAltName {
    /// A DNS name, stored lower-case.
    Dns(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
}

impl SubjectAltName {
    /// Parses one SAN string. Surrounding whitespace and one trailing dot are ignored.
    pub fn parse(input: &str) -> Result<Self> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(invalid(input, "empty"));
        }
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            return Ok(SubjectAltName::Ip(ip));
        }
        if let Some(inner) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            return match inner.parse::<IpAddr>() {
                Ok(IpAddr::V6(v6)) => Ok(SubjectAltName::Ip(IpAddr::V6(v6))),
                _ => Err(invalid(input, "brackets must hold an IPv6 address")),
            };
        }
        let name = trimmed
            .strip_suffix('.')
            .unwrap_or(trimmed)
            .to_ascii_lowercase();
        check_dns_name(&name).map_err(|reason| invalid(input, reason))?;
        Ok(SubjectAltName::Dns(name))
    }

    /// Parses a list of SAN strings, dropping duplicates but keeping the first-seen order.
    pub fn parse_all<S: AsRef<str>>(inputs: &[S]) -> Result<Vec<Self>> {
        let mut out: Vec<SubjectAltName> = Vec::with_capacity(inputs.len());
        for input in inputs {
            let san = SubjectAltName::parse(input.as_ref())?;
            if !out.contains(&san) {
                out.push(san);
            }
        }
        Ok(out)
    }

    /// The bare name or address, without the `DNS:`/`IP:` prefix of [`fmt::Display`].
    pub fn value(&self) -> String {
        match self {
            SubjectAltName::Dns(name) => name.clone(),
            SubjectAltName::Ip(ip) => ip.to_string(),
        }
    }

    /// Converts to rcgen's representation.
    pub(crate) fn to_rcgen(&self) -> Result<rcgen::SanType> {
        Ok(match self {
            SubjectAltName::Dns(name) => {
                rcgen::SanType::DnsName(rcgen::string::Ia5String::try_from(name.as_str())?)
            }
            SubjectAltName::Ip(ip) => rcgen::SanType::IpAddress(*ip),
        })
    }
}

impl FromStr for SubjectAltName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        SubjectAltName::parse(s)
    }
}

impl fmt::Display for SubjectAltName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubjectAltName::Dns(name) => write!(f, "DNS:{name}"),
            SubjectAltName::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

fn invalid(input: &str, reason: &'static str) -> Error {
    Error::InvalidSubjectAltName {
        name: input.to_string(),
        reason,
    }
}

/// Checks a lower-cased DNS name: ASCII letters, digits, `-` and `_` in labels of 1 to 63
/// characters, at most 253 characters overall, and `*` only as the whole first label.
fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for (index, label) in name.split('.').enumerate() {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if label == "*" {
            if index != 0 {
                return Err("wildcard is only allowed as the first label");
            }
            if !name.contains('.') {
                return Err("wildcard needs a parent domain");
            }
            continue;
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("label starts or ends with '-'");
        }
        let allowed =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if !label.chars().all(allowed) {
            return Err("only ASCII letters, digits, '-' and '_' are allowed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn ip_strings_become_ip_sans() {
        assert_eq!(
            SubjectAltName::parse("127.0.0.1").unwrap(),
            SubjectAltName::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(
            SubjectAltName::parse("::1").unwrap(),
            SubjectAltName::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(
            SubjectAltName::parse(" [::1] ").unwrap(),
            SubjectAltName::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
    }

    #[test]
    fn other_strings_become_lower_case_dns_sans() {
        assert_eq!(
            SubjectAltName::parse("Registry.Example.COM.").unwrap(),
            SubjectAltName::Dns("registry.example.com".into())
        );
        assert_eq!(
            SubjectAltName::parse("localhost").unwrap(),
            SubjectAltName::Dns("localhost".into())
        );
        assert_eq!(
            SubjectAltName::parse("*.buildset.svc").unwrap(),
            SubjectAltName::Dns("*.buildset.svc".into())
        );
        assert_eq!(
            SubjectAltName::parse("zuul_registry").unwrap(),
            SubjectAltName::Dns("zuul_registry".into())
        );
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in [
            "",
            "   ",
            "a..b",
            "-a.example",
            "a-.example",
            "foo.*.example",
            "*",
            "spaces in.name",
            "ünicode.example",
            "[127.0.0.1]",
            "[nonsense]",
            "host:5000",
        ] {
            let err = SubjectAltName::parse(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidSubjectAltName { .. }),
                "{bad:?} gave {err}"
            );
        }
        let long_label = "a".repeat(64);
        assert!(SubjectAltName::parse(&long_label).is_err());
        let long_name = vec!["abcdefghi"; 30].join(".");
        assert!(SubjectAltName::parse(&long_name).is_err());
    }

    #[test]
    fn parse_all_drops_duplicates_in_order() {
        let sans = SubjectAltName::parse_all(&["b.example", "127.0.0.1", "B.example", "a.example"])
            .unwrap();
        assert_eq!(
            sans,
            vec![
                SubjectAltName::Dns("b.example".into()),
                SubjectAltName::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                SubjectAltName::Dns("a.example".into()),
            ]
        );
    }

    #[test]
    fn display_is_openssl_like() {
        assert_eq!(
            SubjectAltName::parse("x.example").unwrap().to_string(),
            "DNS:x.example"
        );
        assert_eq!(
            SubjectAltName::parse("10.0.0.1").unwrap().to_string(),
            "IP:10.0.0.1"
        );
        assert_eq!(
            SubjectAltName::parse("10.0.0.1").unwrap().value(),
            "10.0.0.1"
        );
        assert_eq!(
            SubjectAltName::parse("x.example").unwrap().value(),
            "x.example"
        );
    }
}
