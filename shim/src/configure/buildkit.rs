//! BuildKit: `[registry."<registry>"] mirrors = ["<mirror>", ...]` in
//! `/etc/buildkit/buildkitd.toml` (ours first, other mirrors and keys kept, edited with a
//! format-preserving TOML editor) and `[registry."<mirror>"] ca = ["<node CA>"]` so BuildKit
//! trusts the mirror. Mirrors are the bare `host:port`: BuildKit sends `?ns=<registry>`, and
//! path-style mirrors would need BuildKit 0.12 or newer.
//!
//! BuildKit reads the file only at start: restart buildkitd, or recreate the
//! `docker-container` builder (`docker buildx create --buildkitd-config <file> --driver-opt
//! network=host`). Docker's default builder ignores this file altogether.

use std::path::{Path, PathBuf};

use toml_edit::{Array, DocumentMut, Item, Table, Value};

use super::{ConfigureError, FileKind, NewFile, Planner};

pub const CONFIG: &str = "/etc/buildkit/buildkitd.toml";
pub const CERTS_D: &str = "/etc/buildkit/certs.d";

const HEADER: &str = "# Written by `specreg use`; `specreg use --undo` removes this file.\n";

/// `/etc/buildkit/certs.d/<host:port>/ca.crt`, named in `ca` for the mirror.
pub fn cert_path(host_port: &str) -> PathBuf {
    Path::new(CERTS_D).join(host_port).join("ca.crt")
}

fn strings(item: Option<&Item>, what: &str) -> Result<Vec<String>, String> {
    match item {
        None => Ok(Vec::new()),
        Some(i) => i
            .as_array()
            .ok_or_else(|| format!("{what} is not an array"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{what} holds a non-string"))
            })
            .collect(),
    }
}

/// Sets `table[key]` to `wanted` unless it already holds exactly that list (so an unchanged
/// array keeps its formatting).
fn set_list(table: &mut Table, key: &str, current: &[String], wanted: Vec<String>) {
    if current != wanted.as_slice() {
        let arr: Array = wanted.into_iter().map(Value::from).collect();
        match table.get_mut(key).and_then(Item::as_value_mut) {
            Some(v) => {
                let decor = v.decor().clone();
                *v = Value::Array(arr);
                *v.decor_mut() = decor;
            }
            None => {
                table.insert(key, toml_edit::value(arr));
            }
        }
    }
}

fn registry_table<'d>(registry: &'d mut Table, name: &str) -> Result<&'d mut Table, String> {
    if !registry.contains_key(name) {
        registry.insert(name, Item::Table(Table::new()));
    }
    registry[name]
        .as_table_mut()
        .ok_or_else(|| format!("registry.{name:?} is not a table"))
}

/// Plans `buildkitd.toml`. `mirror` is `host:port`; `ca_path` the run-time path of the node CA.
pub fn plan_buildkitd(
    old: Option<&[u8]>,
    registries: &[String],
    mirror: &str,
    ca_path: &str,
) -> Result<Option<Vec<u8>>, String> {
    let text = match old {
        Some(b) => std::str::from_utf8(b).map_err(|e| format!("not UTF-8: {e}"))?,
        None => "",
    };
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| format!("invalid TOML: {}", e.to_string().trim_end()))?;
    if old.is_none() {
        doc.decor_mut().set_prefix(HEADER);
    }
    if !doc.contains_key("registry") {
        let mut t = Table::new();
        t.set_implicit(true);
        doc.insert("registry", Item::Table(t));
    }
    let registry = doc["registry"].as_table_mut().ok_or("\"registry\" is not a table")?;
    for reg in registries {
        let t = registry_table(registry, reg)?;
        let current = strings(t.get("mirrors"), &format!("registry.{reg:?}.mirrors"))?;
        let wanted: Vec<String> = std::iter::once(mirror.to_string())
            .chain(current.iter().filter(|m| *m != mirror).cloned())
            .collect();
        set_list(t, "mirrors", &current, wanted);
    }
    let t = registry_table(registry, mirror)?;
    let current = strings(t.get("ca"), &format!("registry.{mirror:?}.ca"))?;
    if !current.iter().any(|c| c == ca_path) {
        let wanted = current
            .iter()
            .cloned()
            .chain(std::iter::once(ca_path.to_string()))
            .collect();
        set_list(t, "ca", &current, wanted);
    }
    let new = doc.to_string();
    Ok((old.map(|_| text) != Some(new.as_str())).then(|| new.into_bytes()))
}

pub(super) fn plan(p: &mut Planner) -> Result<(), ConfigureError> {
    let setup = p.setup;
    let mirror = setup.mirror.to_string();
    let ca = cert_path(&mirror);
    let ca_str = ca.to_string_lossy().into_owned();
    p.exact(&ca, FileKind::BuildkitCert, &setup.mirror_trust_pem())?;
    p.file(Path::new(CONFIG), FileKind::BuildkitdToml, NewFile::SYSTEM, |old| {
        plan_buildkitd(old, &setup.registries, &mirror, &ca_str)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "127.0.0.1:41234";
    const CA: &str = "/etc/buildkit/certs.d/127.0.0.1:41234/ca.crt";

    fn regs() -> Vec<String> {
        vec!["docker.io".into(), "quay.io".into()]
    }

    #[test]
    fn new_file() {
        let t = String::from_utf8(plan_buildkitd(None, &regs(), M, CA).unwrap().unwrap()).unwrap();
        assert!(
            t.contains("[registry.\"docker.io\"]\nmirrors = [\"127.0.0.1:41234\"]\n"),
            "{t}"
        );
        assert!(
            t.contains("[registry.\"127.0.0.1:41234\"]\nca = [\"/etc/buildkit/certs.d/127.0.0.1:41234/ca.crt\"]\n"),
            "{t}"
        );
        assert_eq!(plan_buildkitd(Some(t.as_bytes()), &regs(), M, CA).unwrap(), None);
    }

    #[test]
    fn keeps_content_and_other_mirrors() {
        let old = "# site buildkit\ndebug = true\n\n[worker.oci]\n  max-parallelism = 4\n\n[registry.\"docker.io\"]\n  # hub cache\n  mirrors = [\"hub-cache.site\"]\n  http = false\n";
        let t = String::from_utf8(plan_buildkitd(Some(old.as_bytes()), &regs(), M, CA).unwrap().unwrap()).unwrap();
        assert!(
            t.starts_with("# site buildkit\ndebug = true\n\n[worker.oci]\n  max-parallelism = 4\n"),
            "{t}"
        );
        assert!(
            t.contains("  # hub cache\n  mirrors = [\"127.0.0.1:41234\", \"hub-cache.site\"]\n  http = false\n"),
            "{t}"
        );
        assert_eq!(plan_buildkitd(Some(t.as_bytes()), &regs(), M, CA).unwrap(), None);
    }

    #[test]
    fn malformed() {
        assert!(plan_buildkitd(Some(b"[registry"), &regs(), M, CA)
            .unwrap_err()
            .contains("invalid TOML"));
        assert!(
            plan_buildkitd(Some(b"[registry.\"docker.io\"]\nmirrors = \"x\"\n"), &regs(), M, CA)
                .unwrap_err()
                .contains("not an array")
        );
    }
}
