//! containerd: `<hosts dir>/<registry>/hosts.toml` per registry with the mirror first
//! (`capabilities = ["pull", "resolve"]`, `ca` = the node CA written next to it), and the node
//! CA in `<hosts dir>/<mirror>/ca.crt`.
//!
//! The hosts dir is the first directory of the CRI `config_path` in
//! `/etc/containerd/config.toml` when it is set (v2: `[plugins."io.containerd.grpc.v1.cri".registry]`,
//! v3: `[plugins."io.containerd.cri.v1.images".registry]`, v1: `[plugins.cri.registry]`), else
//! `/etc/containerd/certs.d` with a warning: `config.toml` is not edited (changing it needs a
//! containerd restart), and `ctr` needs `--hosts-dir` in any case. Files under the hosts dir
//! take effect without a restart.
//!
//! An existing `hosts.toml` is edited, not replaced: its `server`, root keys and hosts stay, our
//! host is put first. Its original bytes go to the state file and undo restores them; it is
//! never deleted. Sibling files in the directory (client certificates) are never touched.
//! The mirror is addressed bare (`https://<mirror>`); containerd adds `?ns=<registry>`.

use std::path::PathBuf;

use toml_edit::{Array, DocumentMut, Item, Table};

use super::{ConfigureError, FileKind, NewFile, Planner};

pub const CONFIG: &str = "/etc/containerd/config.toml";
pub const DEFAULT_HOSTS_DIR: &str = "/etc/containerd/certs.d";

const HEADER: &str = "# Written by `specreg use`: pulls try the specreg mirror first.\n\
                      # `specreg use --undo` removes this file.\n";

/// Where containerd looks for hosts.toml files, and what the operator should know about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostsDir {
    /// Run-time path of the directory we write to.
    pub dir: PathBuf,
    /// Set when CRI pulls will not read that directory as things stand.
    pub warning: Option<String>,
}

const CRI_TABLES: [(&str, &str); 3] = [
    ("io.containerd.cri.v1.images", "version 3"),
    ("io.containerd.grpc.v1.cri", "version 2"),
    ("cri", "version 1"),
];

/// Reads `config_path` from containerd's `config.toml` (`None`: the file is absent).
pub fn hosts_dir_from_config(config: Option<&[u8]>) -> HostsDir {
    let default = PathBuf::from(DEFAULT_HOSTS_DIR);
    let Some(bytes) = config else {
        return HostsDir {
            dir: default,
            warning: Some(format!(
                "containerd: {CONFIG} does not exist. containerd 2.x then reads hosts.toml from \
                 /etc/containerd/certs.d:/etc/docker/certs.d, but containerd 1.x CRI pulls ignore hosts.toml; \
                 set config_path = \"{DEFAULT_HOSTS_DIR}\" under [plugins.\"io.containerd.grpc.v1.cri\".registry] \
                 (1.x) and restart containerd. `ctr` needs --hosts-dir {DEFAULT_HOSTS_DIR}"
            )),
        };
    };
    let doc = match std::str::from_utf8(bytes)
        .map_err(|e| e.to_string())
        .and_then(|t| t.parse::<DocumentMut>().map_err(|e| e.to_string()))
    {
        Ok(d) => d,
        Err(e) => {
            return HostsDir {
                dir: default,
                warning: Some(format!(
                    "containerd: {CONFIG} does not parse ({}); assuming {DEFAULT_HOSTS_DIR}",
                    e.trim_end()
                )),
            }
        }
    };
    let plugins = doc.get("plugins").and_then(Item::as_table_like);
    let mut deprecated = false;
    for (plugin, _) in CRI_TABLES {
        let Some(registry) = plugins
            .and_then(|p| p.get(plugin))
            .and_then(Item::as_table_like)
            .and_then(|t| t.get("registry"))
            .and_then(Item::as_table_like)
        else {
            continue;
        };
        if let Some(cp) = registry
            .get("config_path")
            .and_then(Item::as_str)
            .filter(|s| !s.is_empty())
        {
            let first = cp.split(':').next().unwrap_or(cp);
            return HostsDir {
                dir: PathBuf::from(first),
                warning: None,
            };
        }
        deprecated |= registry.contains_key("mirrors") || registry.contains_key("configs");
    }
    let mut w = format!(
        "containerd: {CONFIG} sets no config_path for CRI registries ([plugins.\"io.containerd.cri.v1.images\".registry] \
         in a version 3 config, [plugins.\"io.containerd.grpc.v1.cri\".registry] in version 2), so CRI pulls do not \
         read the hosts.toml files written under {DEFAULT_HOSTS_DIR}; set config_path = \"{DEFAULT_HOSTS_DIR}\" \
         there and restart containerd (specreg does not edit config.toml). `ctr` needs --hosts-dir {DEFAULT_HOSTS_DIR}"
    );
    if deprecated {
        w.push_str("; remove the deprecated registry.mirrors/registry.configs tables too, CRI rejects them next to config_path");
    }
    HostsDir {
        dir: default,
        warning: Some(w),
    }
}

/// The upstream containerd falls back to: docker.io lives at registry-1.docker.io.
pub fn upstream_server(registry: &str) -> String {
    match registry {
        "docker.io" => "https://registry-1.docker.io".to_string(),
        r => format!("https://{r}"),
    }
}

fn our_host_table(ca_path: &str) -> Table {
    let mut t = Table::new();
    t.insert("capabilities", toml_edit::value(Array::from_iter(["pull", "resolve"])));
    t.insert("ca", toml_edit::value(ca_path));
    t
}

fn is_ours(t: &Table, ca_path: &str) -> bool {
    let caps: Vec<&str> = t
        .get("capabilities")
        .and_then(Item::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    caps == ["pull", "resolve"] && t.get("ca").and_then(Item::as_str) == Some(ca_path)
}

/// Plans one `hosts.toml`. `mirror` is `host:port`; `ca_path` the run-time path of the node CA.
pub fn plan_hosts_toml(
    old: Option<&[u8]>,
    registry: &str,
    mirror: &str,
    ca_path: &str,
) -> Result<Option<Vec<u8>>, String> {
    let url = format!("https://{mirror}");
    let Some(old) = old else {
        let mut doc = DocumentMut::new();
        doc.decor_mut().set_prefix(HEADER);
        doc.insert("server", toml_edit::value(upstream_server(registry)));
        let mut host = Table::new();
        host.set_implicit(true);
        host.insert(&url, Item::Table(our_host_table(ca_path)));
        doc.insert("host", Item::Table(host));
        return Ok(Some(doc.to_string().into_bytes()));
    };
    let text = std::str::from_utf8(old).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| format!("invalid TOML: {}", e.to_string().trim_end()))?;
    let mut hosts: Vec<(toml_edit::Key, Item)> = Vec::new();
    let mut host_table = match doc.remove("host") {
        None => {
            let mut t = Table::new();
            t.set_implicit(true);
            t
        }
        Some(Item::Table(t)) => t,
        Some(_) => return Err("\"host\" is not a table of [host.\"<url>\"] tables".into()),
    };
    let keys: Vec<String> = host_table.iter().map(|(k, _)| k.to_string()).collect();
    for k in keys {
        let (key, item) = host_table.remove_entry(&k).expect("listed");
        if !item.is_table() {
            return Err(format!("host.{k:?} is not a table"));
        }
        hosts.push((key, item));
    }
    if let Some((k, Item::Table(t))) = hosts.first() {
        if k.get() == url && is_ours(t, ca_path) {
            return Ok(None);
        }
    }
    let first_pos = hosts
        .iter()
        .filter_map(|(_, i)| i.as_table().and_then(Table::position))
        .min();
    let mut ours = our_host_table(ca_path);
    ours.set_position(first_pos);
    host_table.insert(&url, Item::Table(ours));
    for (key, item) in hosts {
        if key.get() != url {
            host_table.insert_formatted(&key, item);
        }
    }
    doc.insert("host", Item::Table(host_table));
    let new = doc.to_string();
    new.parse::<DocumentMut>()
        .map_err(|e| format!("edited file would not parse (a bug): {e}"))?;
    Ok((new != text).then(|| new.into_bytes()))
}

pub(super) fn plan(p: &mut Planner) -> Result<(), ConfigureError> {
    let setup = p.setup;
    let config = super::fsutil::read_original(&setup.under_root(CONFIG))?;
    let hosts = hosts_dir_from_config(config.bytes());
    if let Some(w) = hosts.warning {
        p.warn(w);
    }
    let mirror = setup.mirror.to_string();
    let ca = hosts.dir.join(&mirror).join("ca.crt");
    let ca_str = ca
        .to_str()
        .ok_or_else(|| ConfigureError::Setup(format!("{} is not UTF-8", ca.display())))?
        .to_string();
    p.exact(&ca, FileKind::ContainerdCert, &setup.mirror_trust_pem())?;
    for reg in &setup.registries {
        let path = hosts.dir.join(reg).join("hosts.toml");
        p.file(&path, FileKind::ContainerdHosts, NewFile::SYSTEM, |old| {
            plan_hosts_toml(old, reg, &mirror, &ca_str)
        })?;
        if let Some((h, port)) = reg.rsplit_once(':') {
            let windows_form = hosts.dir.join(format!("{h}_{port}_"));
            if setup.under_root(&windows_form).exists() {
                p.warn(format!(
                    "containerd: {} exists and is read before {}",
                    windows_form.display(),
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "127.0.0.1:41234";
    const CA: &str = "/etc/containerd/certs.d/127.0.0.1:41234/ca.crt";

    #[test]
    fn new_file() {
        let t = String::from_utf8(plan_hosts_toml(None, "docker.io", M, CA).unwrap().unwrap()).unwrap();
        assert!(t.contains("server = \"https://registry-1.docker.io\""), "{t}");
        assert!(t.contains("[host.\"https://127.0.0.1:41234\"]\ncapabilities = [\"pull\", \"resolve\"]\nca = \"/etc/containerd/certs.d/127.0.0.1:41234/ca.crt\"\n"), "{t}");
        assert_eq!(plan_hosts_toml(Some(t.as_bytes()), "docker.io", M, CA).unwrap(), None);
        let q = String::from_utf8(plan_hosts_toml(None, "quay.io", M, CA).unwrap().unwrap()).unwrap();
        assert!(q.contains("server = \"https://quay.io\""));
    }

    #[test]
    fn existing_file_keeps_its_hosts_after_ours() {
        let old = "# site\nserver = \"https://quay.io\"\n\n[host.\"https://cache.site:5000\"]\n  capabilities = [\"pull\"]\n  # keep me\n  skip_verify = true\n\n[host.\"https://other.site\"]\n  capabilities = [\"pull\", \"resolve\"]\n";
        let t = String::from_utf8(
            plan_hosts_toml(Some(old.as_bytes()), "quay.io", M, CA)
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        let ours = t.find("[host.\"https://127.0.0.1:41234\"]").expect(&t);
        let cache = t.find("[host.\"https://cache.site:5000\"]").unwrap();
        let other = t.find("[host.\"https://other.site\"]").unwrap();
        assert!(ours < cache && cache < other, "{t}");
        assert!(t.starts_with("# site\nserver = \"https://quay.io\"\n"), "{t}");
        assert!(t.contains("  # keep me\n  skip_verify = true\n"), "{t}");
        assert_eq!(
            plan_hosts_toml(Some(t.as_bytes()), "quay.io", M, CA).unwrap(),
            None,
            "{t}"
        );
    }

    #[test]
    fn malformed() {
        assert!(plan_hosts_toml(Some(b"server = "), "quay.io", M, CA)
            .unwrap_err()
            .contains("invalid TOML"));
        assert!(plan_hosts_toml(Some(b"host = 1\n"), "quay.io", M, CA)
            .unwrap_err()
            .contains("not a table"));
    }

    #[test]
    fn config_path_detection() {
        let none = hosts_dir_from_config(None);
        assert!(none.warning.unwrap().contains("does not exist"));
        let v2 = br#"version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
"#;
        assert_eq!(
            hosts_dir_from_config(Some(v2)),
            HostsDir {
                dir: PathBuf::from("/etc/containerd/certs.d"),
                warning: None
            }
        );
        let v3 = b"version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = '/srv/hosts'\n";
        assert_eq!(hosts_dir_from_config(Some(v3)).dir, PathBuf::from("/srv/hosts"));
        let unset = b"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\nendpoint = [\"https://x\"]\n";
        let d = hosts_dir_from_config(Some(unset));
        let w = d.warning.unwrap();
        assert!(w.contains("sets no config_path") && w.contains("deprecated"), "{w}");
    }
}
