//! Docker: `registry-mirrors` in `/etc/docker/daemon.json` (docker.io only; ours first, the
//! others kept) and per-host trust in `/etc/docker/certs.d/<host:port>/ca.crt` for the mirror
//! and the buildset registry. dockerd re-reads `daemon.json` on SIGHUP and `certs.d` on every
//! lookup, so no restart is needed.
//!
//! Docker with the containerd image store (the default from docker 29, `containerd-snapshotter`
//! before) resolves registries through containerd and reads
//! `/etc/docker/certs.d/<registry>/hosts.toml`: one per registry with the mirror first, as for
//! containerd itself, so that every registry goes through the mirror there even without
//! interception. The classic image store ignores files other than `*.crt`, `*.cert` and `*.key`
//! in `certs.d`, so they are written either way; [`image_store`] tells which one dockerd uses.

use std::path::{Path, PathBuf};

use super::json::{detect_indent, Json};
use super::{pem_bytes, process, ConfigureError, FileKind, NewFile, Planner};

pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";
pub const CERTS_D: &str = "/etc/docker/certs.d";

/// The `registry-mirrors` entry for the mirror: docker requires a scheme and the domain root.
pub fn mirror_url(mirror: &super::MirrorEndpoint) -> String {
    format!("https://{mirror}")
}

/// `/etc/docker/certs.d/<host:port>/ca.crt`.
pub fn cert_path(host_port: &str) -> PathBuf {
    Path::new(CERTS_D).join(host_port).join("ca.crt")
}

fn same_mirror(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Plans `daemon.json`: parse (absent or blank = `{}`), prepend `mirror_url` to
/// `registry-mirrors` without duplicates, keep every other key and the key order, keep the
/// file's indentation. `Ok(None)` when our mirror is already first.
pub fn plan_daemon_json(old: Option<&[u8]>, mirror_url: &str) -> Result<Option<Vec<u8>>, String> {
    let mut doc = match old {
        Some(b) if !b.iter().all(u8::is_ascii_whitespace) => Json::parse(b)?,
        _ => Json::Object(Vec::new()),
    };
    if !matches!(doc, Json::Object(_)) {
        return Err(format!("top level is {}, not a JSON object", doc.kind()));
    }
    let mut mirrors: Vec<String> = match doc.get("registry-mirrors") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => items
            .iter()
            .map(|i| match i {
                Json::String(s) => Ok(s.clone()),
                other => Err(format!("\"registry-mirrors\" holds {}, not a string", other.kind())),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("\"registry-mirrors\" is {}, not an array", other.kind())),
    };
    if mirrors.first().is_some_and(|m| same_mirror(m, mirror_url)) {
        return Ok(None);
    }
    mirrors.retain(|m| !same_mirror(m, mirror_url));
    mirrors.insert(0, mirror_url.to_string());
    doc.set(
        "registry-mirrors",
        Json::Array(mirrors.into_iter().map(Json::String).collect()),
    );
    let indent = old.and_then(detect_indent).unwrap_or_else(|| b"  ".to_vec());
    Ok(Some(doc.to_pretty(&indent)))
}

pub(super) fn plan(p: &mut Planner) -> Result<(), ConfigureError> {
    let setup = p.setup;
    if let Some(pid) = process::dockerd_pid(&setup.root) {
        let args = process::cmdline(&setup.root, pid);
        if let Some(flag) = args.iter().find(|a| a.starts_with("--registry-mirror")) {
            return Err(ConfigureError::Conflict(format!(
                "dockerd (pid {pid}) runs with {flag}; adding \"registry-mirrors\" to {DAEMON_JSON} too would stop it \
                 from starting (a directive may not be both a flag and in the configuration file). \
                 Remove the flag from the docker unit first"
            )));
        }
        if let Some(i) = args
            .iter()
            .position(|a| a == "--config-file" || a.starts_with("--config-file="))
        {
            let file = args[i]
                .strip_prefix("--config-file=")
                .or(args.get(i + 1).map(String::as_str))
                .unwrap_or("?");
            if file != DAEMON_JSON {
                p.warn(format!(
                    "dockerd (pid {pid}) reads {file}, not {DAEMON_JSON}: its mirror setting will not change"
                ));
            }
        }
    }
    let url = mirror_url(&setup.mirror);
    p.file(Path::new(DAEMON_JSON), FileKind::DaemonJson, NewFile::SYSTEM, |old| {
        plan_daemon_json(old, &url)
    })?;
    p.exact(
        &cert_path(&setup.mirror.to_string()),
        FileKind::DockerCert,
        &setup.mirror_trust_pem(),
    )?;
    for name in setup.buildset_names() {
        p.exact(
            &cert_path(&name),
            FileKind::DockerCert,
            &pem_bytes(&setup.buildset.ca_pem),
        )?;
    }
    let mirror = setup.mirror.to_string();
    let ca = cert_path(&mirror);
    let ca = ca.to_str().expect("a host:port path is UTF-8");
    for reg in &setup.registries {
        let path = Path::new(CERTS_D).join(reg).join("hosts.toml");
        p.file(&path, FileKind::DockerHostsToml, NewFile::SYSTEM, |old| {
            super::containerd::plan_hosts_toml(old, reg, &mirror, ca)
        })?;
    }
    Ok(())
}

/// Which image store dockerd uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageStore {
    /// graphdrivers (overlay2, vfs, ...): `registry-mirrors` for docker.io, interception for
    /// the other registries.
    Classic,
    /// containerd snapshotters: `certs.d/<registry>/hosts.toml` for every registry.
    Containerd,
}

/// The image store from `docker info --format '{{json .DriverStatus}}'` (a list of
/// `[key, value]` pairs): the containerd store reports
/// `["driver-type", "io.containerd.snapshotter.v1"]`. `None` when the text does not parse.
pub fn image_store(driver_status_json: &str) -> Option<ImageStore> {
    let v: serde_json::Value = serde_json::from_str(driver_status_json.trim()).ok()?;
    // Graph drivers without status (vfs) answer `null`; the containerd store always
    // reports its driver type.
    let pairs = match &v {
        serde_json::Value::Null => return Some(ImageStore::Classic),
        other => other.as_array()?,
    };
    let containerd = pairs.iter().any(|p| {
        p.as_array().is_some_and(|kv| {
            kv.first().and_then(|k| k.as_str()) == Some("driver-type")
                && kv.get(1).and_then(|v| v.as_str()).is_some_and(|v| v.starts_with("io.containerd.snapshotter"))
        })
    });
    Some(if containerd { ImageStore::Containerd } else { ImageStore::Classic })
}

/// The image store `daemon.json` asks for, when dockerd cannot be asked: the
/// `containerd-snapshotter` feature flag (docker 24 to 28). `None`: not said.
pub fn image_store_from_config(daemon_json: &[u8]) -> Option<ImageStore> {
    let v: serde_json::Value = serde_json::from_slice(daemon_json).ok()?;
    match v.get("features")?.get("containerd-snapshotter")?.as_bool()? {
        true => Some(ImageStore::Containerd),
        false => Some(ImageStore::Classic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "https://127.0.0.1:41234";

    fn s(b: Option<Vec<u8>>) -> String {
        String::from_utf8(b.expect("changed")).unwrap()
    }

    #[test]
    fn absent_file_gets_only_the_mirror() {
        assert_eq!(
            s(plan_daemon_json(None, M).unwrap()),
            "{\n  \"registry-mirrors\": [\n    \"https://127.0.0.1:41234\"\n  ]\n}\n"
        );
        assert!(plan_daemon_json(Some(b"  \n"), M).unwrap().is_some());
    }

    #[test]
    fn prepends_keeps_other_mirrors_keys_order_and_indent() {
        let old = b"{\n\t\"mtu\": 1400,\n\t\"registry-mirrors\": [\"https://site-mirror.example\", \"https://127.0.0.1:41234/\"],\n\t\"debug\": true\n}\n";
        let new = s(plan_daemon_json(Some(old), M).unwrap());
        let v: serde_json::Value = serde_json::from_str(&new).unwrap();
        assert_eq!(v["mtu"], 1400);
        assert_eq!(v["debug"], true);
        assert_eq!(
            v["registry-mirrors"],
            serde_json::json!([M, "https://site-mirror.example"])
        );
        assert!(new.find("mtu").unwrap() < new.find("registry-mirrors").unwrap());
        assert!(new.find("registry-mirrors").unwrap() < new.find("debug").unwrap());
        assert!(new.contains("\n\t\"mtu\""), "{new}");
        // Second run: already first, nothing to do.
        assert_eq!(plan_daemon_json(Some(new.as_bytes()), M).unwrap(), None);
    }

    #[test]
    fn image_store_is_read_from_driver_status() {
        assert_eq!(
            image_store(r#"[["driver-type","io.containerd.snapshotter.v1"]]"#),
            Some(ImageStore::Containerd)
        );
        assert_eq!(
            image_store(r#"[["Backing Filesystem","extfs"],["Supports d_type","true"]]"#),
            Some(ImageStore::Classic)
        );
        assert_eq!(image_store("null"), Some(ImageStore::Classic));
        assert_eq!(image_store("garbage"), None);
        assert_eq!(
            image_store_from_config(br#"{"features": {"containerd-snapshotter": true}}"#),
            Some(ImageStore::Containerd)
        );
        assert_eq!(image_store_from_config(br#"{"mtu": 1400}"#), None);
    }

    #[test]
    fn malformed_files_are_refused() {
        assert!(plan_daemon_json(Some(b"{\"mtu\": 1400,"), M)
            .unwrap_err()
            .contains("invalid JSON"));
        assert!(plan_daemon_json(Some(b"[1]"), M)
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(plan_daemon_json(Some(b"{\"registry-mirrors\": \"x\"}"), M)
            .unwrap_err()
            .contains("not an array"));
        assert!(plan_daemon_json(Some(b"{\"registry-mirrors\": [1]}"), M)
            .unwrap_err()
            .contains("not a string"));
    }
}
