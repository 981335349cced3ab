//! Token scopes: `repository:<name>:<actions>` and `registry:catalog:*`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::reference::RepoName;

/// One grant: a resource and the actions allowed on it. Serialised as the `access`
/// claim entries Docker's token format uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAccess {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: BTreeSet<String>,
}

impl ResourceAccess {
    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.kind == kind && self.name == name && (self.actions.contains(action) || self.actions.contains("*"))
    }
}

/// Parses one scope string. Returns `None` for anything malformed or for a resource we
/// do not serve, which then simply grants nothing. Repository names may hold `:` only
/// through a registry host prefix, so the actions are after the last `:`.
pub fn parse_scope(scope: &str) -> Option<ResourceAccess> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions: BTreeSet<String> = actions
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    match kind {
        "repository" => {
            RepoName::parse(name).ok()?;
        }
        "registry" if name == "catalog" => {}
        _ => return None,
    }
    Some(ResourceAccess {
        kind: kind.to_owned(),
        name: name.to_owned(),
        actions,
    })
}

/// All scopes of a token request: `scope` may repeat and may hold several scopes
/// separated by spaces.
pub fn parse_scopes<'a>(values: impl Iterator<Item = &'a str>) -> Vec<ResourceAccess> {
    values
        .flat_map(|v| v.split(' '))
        .filter(|s| !s.is_empty())
        .filter_map(parse_scope)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_or_grant_nothing() {
        let s = parse_scope("repository:library/alpine:pull,push").unwrap();
        assert!(s.allows("repository", "library/alpine", "push"));
        assert!(!s.allows("repository", "library/alpine", "delete"));
        assert!(parse_scope("registry:catalog:*").unwrap().allows("registry", "catalog", "x"));
        assert!(parse_scope("repository:UPPER:pull").is_none());
        assert!(parse_scope("repository:x").is_none());
        assert!(parse_scope("garbage").is_none());
        assert!(parse_scope("").is_none());
        let all = parse_scopes(["repository:a:pull repository:b:push", "", "repository:c:*"].into_iter());
        assert_eq!(all.len(), 3);
    }
}
