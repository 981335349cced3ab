//! `WWW-Authenticate` challenges (RFC 7235 auth-params, as registries send them):
//! `Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull"`.

/// The scheme a registry asks for, with the parameters a token request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        /// Space-separated scopes in one parameter; kept split.
        scopes: Vec<String>,
        /// `error="insufficient_scope"` and the like.
        error: Option<String>,
    },
}

/// Parses one header value; `None` for schemes we cannot answer or a Bearer without realm.
pub fn parse(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = match value.find(char::is_whitespace) {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, ""),
    };
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let get = |k: &str| params.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
    let realm = get("realm").filter(|r| !r.is_empty())?;
    Some(Challenge::Bearer {
        realm,
        service: get("service"),
        scopes: params
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("scope"))
            .flat_map(|(_, v)| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect(),
        error: get("error"),
    })
}

/// `k=v` or `k="quoted, with \"escapes\""`, separated by commas.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' || c.is_whitespace() {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() {
            return out;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            // A bare token (e.g. token68): nothing we use.
            continue;
        }
        chars.next();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim_end().to_owned();
        }
        out.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_style_bearer() {
        let c = parse(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#).unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scopes: vec!["repository:library/alpine:pull".into()],
                error: None,
            }
        );
    }

    #[test]
    fn spacing_case_escapes_and_multiple_scopes() {
        let c = parse(r#"bearer  realm = "https://a/t?x=1,2" , service=reg, scope="repository:a:pull repository:b:pull,push", error="insufficient_scope""#).unwrap();
        let Challenge::Bearer { realm, service, scopes, error } = c else { panic!("bearer expected") };
        assert_eq!(realm, "https://a/t?x=1,2");
        assert_eq!(service.as_deref(), Some("reg"));
        assert_eq!(scopes, vec!["repository:a:pull", "repository:b:pull,push"]);
        assert_eq!(error.as_deref(), Some("insufficient_scope"));
        let c = parse(r#"Bearer realm="a\"b""#).unwrap();
        assert!(matches!(c, Challenge::Bearer { realm, .. } if realm == "a\"b"));
    }

    #[test]
    fn basic_and_unknown() {
        assert_eq!(parse(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse("BASIC"), Some(Challenge::Basic));
        assert_eq!(parse("Negotiate abc"), None);
        assert_eq!(parse(r#"Bearer service="x""#), None, "no realm, no token");
    }
}
