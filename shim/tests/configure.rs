//! plan / apply / undo of every configurator on a scratch root full of other people's content:
//! undo leaves every file byte-identical (mode included) and every added file and directory
//! gone; a second `use` changes nothing; a malformed file stops the plan naming the file, with
//! nothing written.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use specreg_shim::configure::{self, BuildsetInfo, ConfigureError, MirrorEndpoint, NodeSetup, Secret};
use specreg_shim::credential_helper;

const MIRROR_CA: &str = "-----BEGIN CERTIFICATE-----\nTk9ERSBDQQ==\n-----END CERTIFICATE-----\n";
const BUILDSET_CA: &str = "-----BEGIN CERTIFICATE-----\nQlVJTERTRVQgQ0E=\n-----END CERTIFICATE-----";

const DAEMON_JSON: &str = "{\n    \"mtu\": 1400,\n    \"registry-mirrors\": [\"https://hub-cache.site.example\"],\n    \"log-opts\": {\"max-size\": \"10m\", \"max-file\": \"3\"}\n}\n";
const REGISTRIES_CONF: &str = "# Site registries.conf (v2)\n# keep this comment\nunqualified-search-registries = [\"docker.io\"]\n\n[[registry]]\n# the site's quay cache\nprefix = \"quay.io\"\nlocation = \"quay.io\"\n\n[[registry.mirror]]\nlocation = \"quay-cache.site.example\"\n";
const HOSTS_TOML: &str =
    "server = \"https://quay.io\"\n\n[host.\"https://quay-cache.site.example\"]\n  capabilities = [\"pull\"]\n";
const CONTAINERD_CONFIG: &str =
    "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n";
const ETC_HOSTS: &str =
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.0.7 node1.site.example node1\n";
const DOCKER_CONFIG: &str = "{\n\t\"auths\": {\n\t\t\"quay.io\": {\n\t\t\t\"auth\": \"dXNlcjpwYXNz\"\n\t\t}\n\t},\n\t\"credsStore\": \"desktop\"\n}";

#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir {
        mode: u32,
    },
    File {
        bytes: Vec<u8>,
        mode: u32,
        mtime_ns: Option<i128>,
    },
}

/// Every directory and file under `root`, with modes (and mtimes when asked).
fn snapshot(root: &Path, with_mtime: bool) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, dir: &Path, with_mtime: bool, out: &mut BTreeMap<PathBuf, Node>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if m.is_dir() {
                out.insert(
                    rel,
                    Node::Dir {
                        mode: m.mode() & 0o7777,
                    },
                );
                walk(root, &p, with_mtime, out);
            } else {
                let mtime_ns = with_mtime.then(|| m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128);
                out.insert(
                    rel,
                    Node::File {
                        bytes: fs::read(&p).unwrap(),
                        mode: m.mode() & 0o7777,
                        mtime_ns,
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, with_mtime, &mut out);
    out
}

fn write(root: &Path, rel: &str, content: &str, mode: u32) {
    let p = root.join(rel.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn read(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel.trim_start_matches('/'))).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn mode(root: &Path, rel: &str) -> u32 {
    fs::metadata(root.join(rel.trim_start_matches('/'))).unwrap().mode() & 0o7777
}

/// A node with pre-existing configuration everywhere (buildkit and containers certs absent).
fn populated_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(r, "/etc/docker/daemon.json", DAEMON_JSON, 0o644);
    write(r, "/etc/containers/registries.conf", REGISTRIES_CONF, 0o644);
    write(
        r,
        "/etc/containers/registries.conf.d/shortnames.conf",
        "[aliases]\n\"alpine\" = \"docker.io/library/alpine\"\n",
        0o644,
    );
    write(r, "/etc/containerd/config.toml", CONTAINERD_CONFIG, 0o644);
    write(r, "/etc/containerd/certs.d/quay.io/hosts.toml", HOSTS_TOML, 0o640);
    write(r, "/etc/containerd/certs.d/quay.io/client.cert", "client cert\n", 0o644);
    write(r, "/etc/hosts", ETC_HOSTS, 0o644);
    write(r, "/home/zuul/.docker/config.json", DOCKER_CONFIG, 0o600);
    fs::create_dir_all(r.join("var/lib")).unwrap();
    dir
}

fn setup(root: &Path) -> NodeSetup {
    let mut s = NodeSetup::new(
        root,
        MirrorEndpoint::new("127.0.0.1", 41234),
        MIRROR_CA,
        BuildsetInfo {
            host: "10.1.2.3".into(),
            port: 5000,
            username: "zuul".into(),
            password: Secret::new("s3cr3t-pass"),
            ca_pem: BUILDSET_CA.into(),
        },
    );
    s.job_user_home = Some("/home/zuul".into());
    s
}

fn state_file(root: &Path) -> PathBuf {
    root.join("var/lib/specreg/state.json")
}

fn use_node(s: &NodeSetup) -> Result<configure::AppliedReport, ConfigureError> {
    let plan = configure::plan(s)?;
    configure::apply(&plan, &state_file(&s.root))
}

#[test]
fn apply_twice_then_undo_restores_every_byte() {
    let dir = populated_root();
    let r = dir.path();
    let before = snapshot(r, false);
    let s = setup(r);

    let plan = configure::plan(&s).unwrap();
    assert!(!plan.is_noop());
    assert_eq!(
        plan.reload(),
        configure::Reload {
            dockerd: true,
            crio: true,
            buildkit: true
        }
    );
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    // Planning wrote nothing.
    assert_eq!(snapshot(r, false), before);
    let report = configure::apply(&plan, &state_file(r)).unwrap();
    assert!(report.reload.dockerd);

    // docker: our mirror first, the site's kept, other keys and their order kept, 4-space indent.
    let dj = read(r, "/etc/docker/daemon.json");
    let v: serde_json::Value = serde_json::from_str(&dj).unwrap();
    assert_eq!(
        v["registry-mirrors"],
        serde_json::json!(["https://127.0.0.1:41234", "https://hub-cache.site.example"])
    );
    assert_eq!(v["mtu"], 1400);
    assert_eq!(v["log-opts"]["max-file"], "3");
    assert!(
        dj.starts_with("{\n    \"mtu\": 1400,\n    \"registry-mirrors\""),
        "{dj}"
    );
    // The mirror's trust: the node CA, then the buildset CA (blob downloads are redirected there).
    let mirror_trust = format!("{MIRROR_CA}{BUILDSET_CA}\n");
    assert_eq!(read(r, "/etc/docker/certs.d/127.0.0.1:41234/ca.crt"), mirror_trust);
    assert_eq!(
        read(r, "/etc/docker/certs.d/buildset-registry:5000/ca.crt"),
        format!("{BUILDSET_CA}\n")
    );
    assert_eq!(
        read(r, "/etc/docker/certs.d/10.1.2.3:5000/ca.crt"),
        format!("{BUILDSET_CA}\n")
    );

    // containers: main file untouched, drop-in carries the site's quay mirror after ours.
    assert_eq!(read(r, "/etc/containers/registries.conf"), REGISTRIES_CONF);
    let dropin = read(r, "/etc/containers/registries.conf.d/99-specreg.conf");
    assert!(dropin.contains("prefix = \"quay.io\"\nlocation = \"quay.io\"\n\n[[registry.mirror]]\nlocation = \"127.0.0.1:41234/quay.io\"\n\n[[registry.mirror]]\nlocation = \"quay-cache.site.example\"\n"), "{dropin}");
    assert!(
        dropin.contains(
            "prefix = \"docker.io\"\nlocation = \"docker.io\"\n\n[[registry.mirror]]\nlocation = \"127.0.0.1:41234\"\n"
        ),
        "{dropin}"
    );
    for reg in ["gcr.io", "registry.k8s.io", "ghcr.io"] {
        assert!(
            dropin.contains(&format!("location = \"127.0.0.1:41234/{reg}\"")),
            "{reg}: {dropin}"
        );
    }
    assert_eq!(read(r, "/etc/containers/certs.d/127.0.0.1:41234/ca.crt"), mirror_trust);

    // containerd: the existing quay.io hosts.toml keeps its host after ours; others are new.
    let quay = read(r, "/etc/containerd/certs.d/quay.io/hosts.toml");
    assert!(
        quay.find("[host.\"https://127.0.0.1:41234\"]").unwrap()
            < quay.find("[host.\"https://quay-cache.site.example\"]").unwrap(),
        "{quay}"
    );
    assert_eq!(
        mode(r, "/etc/containerd/certs.d/quay.io/hosts.toml"),
        0o640,
        "mode of an edited file is kept"
    );
    let hub = read(r, "/etc/containerd/certs.d/docker.io/hosts.toml");
    assert!(hub.contains("server = \"https://registry-1.docker.io\""), "{hub}");
    assert!(
        hub.contains("ca = \"/etc/containerd/certs.d/127.0.0.1:41234/ca.crt\""),
        "{hub}"
    );
    assert_eq!(read(r, "/etc/containerd/certs.d/127.0.0.1:41234/ca.crt"), mirror_trust);
    assert_eq!(read(r, "/etc/containerd/config.toml"), CONTAINERD_CONFIG);

    // buildkit
    let bk = read(r, "/etc/buildkit/buildkitd.toml");
    assert!(
        bk.contains("[registry.\"quay.io\"]\nmirrors = [\"127.0.0.1:41234\"]"),
        "{bk}"
    );
    assert!(
        bk.contains("ca = [\"/etc/buildkit/certs.d/127.0.0.1:41234/ca.crt\"]"),
        "{bk}"
    );

    // /etc/hosts: the alias in a marked block after the existing lines.
    assert_eq!(
        read(r, "/etc/hosts"),
        format!("{ETC_HOSTS}# specreg begin\n10.1.2.3\tbuildset-registry\n# specreg end\n")
    );

    // credentials: credHelpers merged, no password in config.json, secrets 0600.
    let cfg = read(r, "/home/zuul/.docker/config.json");
    let v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(v["auths"]["quay.io"]["auth"], "dXNlcjpwYXNz");
    assert_eq!(v["credsStore"], "desktop");
    assert_eq!(
        v["credHelpers"],
        serde_json::json!({"buildset-registry:5000": "specreg", "10.1.2.3:5000": "specreg"})
    );
    assert!(!cfg.contains("s3cr3t-pass"));
    assert_eq!(mode(r, "/home/zuul/.docker/config.json"), 0o600);
    assert_eq!(mode(r, "/var/lib/specreg/credentials.json"), 0o600);
    assert_eq!(mode(r, "/var/lib/specreg/state.json"), 0o600);
    let mut out = Vec::new();
    let code = credential_helper::run(
        "get",
        &mut &b"buildset-registry:5000\n"[..],
        &mut out,
        &r.join("var/lib/specreg/credentials.json"),
    );
    assert_eq!(code, 0);
    let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        got,
        serde_json::json!({"ServerURL": "buildset-registry:5000", "Username": "zuul", "Secret": "s3cr3t-pass"})
    );

    // Second `use`: nothing to do, not a byte (state file included) changes.
    let after_first = snapshot(r, true);
    let again = configure::plan(&s).unwrap();
    assert!(again.is_noop(), "{:?}", again.pending().collect::<Vec<_>>());
    let report = configure::apply(&again, &state_file(r)).unwrap();
    assert!(report.written.is_empty() && report.created_dirs.is_empty());
    assert_eq!(snapshot(r, true), after_first);

    // Undo: the tree is exactly as before, added files and directories gone.
    let undone = configure::undo(r, &state_file(r)).unwrap();
    assert!(undone.had_state);
    assert!(undone.kept_dirs.is_empty(), "{:?}", undone.kept_dirs);
    assert!(undone.warnings.is_empty(), "{:?}", undone.warnings);
    assert_eq!(
        undone.reload,
        configure::Reload {
            dockerd: true,
            crio: true,
            buildkit: true
        }
    );
    assert_eq!(snapshot(r, false), before);
    // Undo again: nothing to do.
    assert!(!configure::undo(r, &state_file(r)).unwrap().had_state);
}

#[test]
fn second_use_with_another_port_keeps_the_first_originals() {
    let dir = populated_root();
    let r = dir.path();
    let before = snapshot(r, false);
    let mut s = setup(r);
    use_node(&s).unwrap();
    s.mirror.port = 45000;
    let report = use_node(&s).unwrap();
    assert!(!report.written.is_empty());
    let v: serde_json::Value = serde_json::from_str(&read(r, "/etc/docker/daemon.json")).unwrap();
    assert_eq!(
        v["registry-mirrors"],
        serde_json::json!([
            "https://127.0.0.1:45000",
            "https://127.0.0.1:41234",
            "https://hub-cache.site.example"
        ])
    );
    configure::undo(r, &state_file(r)).unwrap();
    assert_eq!(snapshot(r, false), before);
}

#[test]
fn fresh_node_undo_removes_everything_it_created() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    fs::create_dir_all(r.join("home/job")).unwrap();
    let before = snapshot(r, false);
    let mut s = setup(r);
    s.job_user_home = Some("/home/job".into());
    s.buildset.host = "buildset.example".into();
    let report = use_node(&s).unwrap();
    assert!(report.created_dirs.iter().any(|d| d.ends_with("etc/buildkit")));
    assert_eq!(mode(r, "/home/job/.docker"), 0o700);
    assert_eq!(mode(r, "/home/job/.docker/config.json"), 0o600);
    assert!(!r.join("etc/hosts").exists(), "no alias for a named buildset registry");
    let v: serde_json::Value = serde_json::from_str(&read(r, "/home/job/.docker/config.json")).unwrap();
    assert_eq!(
        v["credHelpers"],
        serde_json::json!({"buildset.example:5000": "specreg"})
    );
    let undone = configure::undo(r, &state_file(r)).unwrap();
    assert!(undone.removed.len() > 10, "{:?}", undone.removed);
    assert_eq!(snapshot(r, false), before);
}

#[test]
fn undo_keeps_directories_that_gained_foreign_files_and_warns_about_edits() {
    let dir = populated_root();
    let r = dir.path();
    let s = setup(r);
    use_node(&s).unwrap();
    write(
        r,
        "/etc/docker/certs.d/127.0.0.1:41234/client.cert",
        "someone's\n",
        0o644,
    );
    write(r, "/etc/buildkit/buildkitd.toml", "# hand edit\n", 0o644);
    let undone = configure::undo(r, &state_file(r)).unwrap();
    // The directory and, because of it, its parent (which we created too) stay.
    assert_eq!(
        undone.kept_dirs,
        vec![
            r.join("etc/docker/certs.d/127.0.0.1:41234"),
            r.join("etc/docker/certs.d")
        ]
    );
    assert!(
        undone
            .warnings
            .iter()
            .any(|w| w.contains("buildkitd.toml") && w.contains("changed after")),
        "{:?}",
        undone.warnings
    );
    assert!(!r.join("etc/buildkit").exists());
    assert_eq!(
        read(r, "/etc/docker/certs.d/127.0.0.1:41234/client.cert"),
        "someone's\n"
    );
    assert!(!r.join("etc/docker/certs.d/127.0.0.1:41234/ca.crt").exists());
}

fn assert_malformed_stops_everything(rel: &str, content: &str, expect: &str) {
    let dir = populated_root();
    let r = dir.path();
    write(r, rel, content, 0o644);
    let before = snapshot(r, true);
    let err = use_node(&setup(r)).unwrap_err();
    let msg = err.to_string();
    let full = r.join(rel.trim_start_matches('/'));
    assert!(
        matches!(err, ConfigureError::Malformed { ref path, .. } if *path == full),
        "{msg}"
    );
    assert!(msg.starts_with(&format!("{}: ", full.display())), "{msg}");
    assert!(msg.contains(expect), "{msg}");
    assert_eq!(snapshot(r, true), before, "{rel}: something was written");
}

#[test]
fn malformed_daemon_json_stops_use_before_anything_changes() {
    assert_malformed_stops_everything("/etc/docker/daemon.json", "{\"mtu\": 1400,\n", "invalid JSON");
    assert_malformed_stops_everything("/etc/docker/daemon.json", "[\"not an object\"]", "not a JSON object");
}

#[test]
fn malformed_registries_conf_stops_use_before_anything_changes() {
    assert_malformed_stops_everything(
        "/etc/containers/registries.conf",
        "[[registry]\nprefix = \"quay.io\"\n",
        "invalid TOML",
    );
}

#[test]
fn malformed_buildkitd_toml_stops_use_before_anything_changes() {
    assert_malformed_stops_everything(
        "/etc/buildkit/buildkitd.toml",
        "[registry.\"docker.io\"]\nmirrors = \"nope\"\n",
        "not an array",
    );
    assert_malformed_stops_everything("/etc/buildkit/buildkitd.toml", "debug = \n", "invalid TOML");
}

#[test]
fn malformed_hosts_toml_and_config_json_stop_use_too() {
    assert_malformed_stops_everything(
        "/etc/containerd/certs.d/quay.io/hosts.toml",
        "server = [",
        "invalid TOML",
    );
    assert_malformed_stops_everything("/home/zuul/.docker/config.json", "{\"auths\": ", "invalid JSON");
    assert_malformed_stops_everything("/etc/hosts", "# specreg begin\n1.2.3.4 x\n", "without");
}

#[test]
fn a_file_changed_between_plan_and_apply_stops_apply() {
    let dir = populated_root();
    let r = dir.path();
    let plan = configure::plan(&setup(r)).unwrap();
    write(r, "/etc/hosts", "changed\n", 0o644);
    let before = snapshot(r, true);
    let err = configure::apply(&plan, &state_file(r)).unwrap_err();
    assert!(
        matches!(err, ConfigureError::ChangedSincePlan { ref path } if path.ends_with("etc/hosts")),
        "{err}"
    );
    assert_eq!(snapshot(r, true), before);
}

#[test]
fn dockerd_flag_conflict_and_missing_config_path_are_reported() {
    let dir = populated_root();
    let r = dir.path();
    // A fake /proc under the root: dockerd started with --registry-mirror.
    write(r, "/proc/4242/comm", "dockerd\n", 0o644);
    fs::write(
        r.join("proc/4242/cmdline"),
        "/usr/bin/dockerd\0--registry-mirror=https://x\0",
    )
    .unwrap();
    write(r, "/var/run/docker.pid", "4242", 0o644);
    assert_eq!(configure::process::dockerd_pid(r), Some(4242));
    let err = configure::plan(&setup(r)).unwrap_err().to_string();
    assert!(err.contains("--registry-mirror") && err.contains("pid 4242"), "{err}");

    fs::write(r.join("proc/4242/cmdline"), "/usr/bin/dockerd\0-H\0fd://\0").unwrap();
    write(r, "/etc/containerd/config.toml", "version = 2\n", 0o644);
    let plan = configure::plan(&setup(r)).unwrap();
    assert!(
        plan.warnings.iter().any(|w| w.contains("sets no config_path")),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn invalid_setups_are_refused() {
    let dir = populated_root();
    let mut s = setup(dir.path());
    s.buildset_alias = Some("build_set".into());
    assert!(configure::plan(&s).unwrap_err().to_string().contains("'_'"));
    let mut s = setup(dir.path());
    s.mirror.host = "::1".into();
    assert!(configure::plan(&s).unwrap_err().to_string().contains("IPv6"));
    let mut s = setup(dir.path());
    s.registries = vec!["quay.io/../etc".into()];
    assert!(configure::plan(&s).is_err());
    let mut s = setup(dir.path());
    s.buildset.host = "fd00::5".into();
    assert_eq!(s.buildset_names(), vec!["buildset-registry:5000".to_string()]);
}

/// The real containers/image parser (skopeo) reads the generated drop-in and tries the mirror
/// at the path-prefixed location. Skipped where skopeo is not installed.
#[test]
fn skopeo_reads_the_drop_in_and_tries_the_mirror_first() {
    if std::process::Command::new("skopeo").arg("--version").output().is_err() {
        eprintln!("skopeo not installed; skipped");
        return;
    }
    let dir = populated_root();
    let r = dir.path();
    let mut s = setup(r);
    s.mirror.port = 1; // nothing listens: connection refused at once
    use_node(&s).unwrap();
    let conf = r.join("etc/containers/registries.conf.d/99-specreg.conf");
    for (image, tried) in [
        ("quay.io/org/specimen:1", "127.0.0.1:1/quay.io/org/specimen:1"),
        ("docker.io/library/specimen:1", "127.0.0.1:1/library/specimen:1"),
        ("registry.k8s.io/pause:3.9", "127.0.0.1:1/registry.k8s.io/pause:3.9"),
    ] {
        let out = std::process::Command::new("skopeo")
            .env("HOME", r)
            .args(["--debug", "--registries-conf"])
            .arg(&conf)
            .args(["inspect", "--retry-times", "0", &format!("docker://{image}")])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains(&format!("Trying to access \\\"{tried}\\\"")),
            "{image}: {log}"
        );
        assert!(!log.contains("mixing sysregistry"), "{log}");
    }
}

/// A v1 main file is converted in place; skopeo parses the result (v1 and v2 mixed would be
/// refused) and tries the mirror. Undo brings the v1 file back byte-exact.
#[test]
fn skopeo_reads_a_converted_v1_registries_conf() {
    if std::process::Command::new("skopeo").arg("--version").output().is_err() {
        eprintln!("skopeo not installed; skipped");
        return;
    }
    let dir = populated_root();
    let r = dir.path();
    let v1 = "# distro v1 file\n[registries.search]\nregistries = ['docker.io', 'quay.io']\n\n[registries.insecure]\nregistries = ['local.test:5000']\n";
    write(r, "/etc/containers/registries.conf", v1, 0o644);
    let before = snapshot(r, false);
    let mut s = setup(r);
    s.mirror.port = 1;
    use_node(&s).unwrap();
    assert!(!r.join("etc/containers/registries.conf.d/99-specreg.conf").exists());
    let conf = r.join("etc/containers/registries.conf");
    let out = std::process::Command::new("skopeo")
        .env("HOME", r)
        .args(["--debug", "--registries-conf"])
        .arg(&conf)
        .args(["inspect", "--retry-times", "0", "docker://quay.io/org/specimen:1"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("Trying to access \\\"127.0.0.1:1/quay.io/org/specimen:1\\\""),
        "{}\n{log}",
        read(r, "/etc/containers/registries.conf")
    );
    configure::undo(r, &state_file(r)).unwrap();
    assert_eq!(snapshot(r, false), before);
}

/// Files made for the job user belong to them (the helper runs as that user); directories
/// outside their home stay the caller's. Needs root to chown; skipped otherwise.
#[test]
fn job_user_files_belong_to_the_job_user() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("not root; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let home = r.join("home/job");
    fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(4321), Some(4322)).unwrap();
    let mut s = setup(r);
    s.job_user_home = Some("/home/job".into());
    use_node(&s).unwrap();
    let owner = |rel: &str| {
        let m = fs::metadata(r.join(rel)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(owner("home/job/.docker"), (4321, 4322));
    assert_eq!(owner("home/job/.docker/config.json"), (4321, 4322));
    assert_eq!(owner("var/lib/specreg/credentials.json"), (4321, 4322));
    assert_eq!(owner("var/lib/specreg"), (0, 0));
    assert_eq!(owner("etc/docker/daemon.json"), (0, 0));
    // An edited file keeps its owner.
    let cfg = r.join("home/job/.docker/config.json");
    let before = fs::read(&cfg).unwrap();
    configure::undo(r, &state_file(r)).unwrap();
    assert!(!cfg.exists() && !before.is_empty());
    write(r, "/home/job/.docker/config.json", DOCKER_CONFIG, 0o640);
    std::os::unix::fs::chown(&cfg, Some(4321), Some(4322)).unwrap();
    use_node(&s).unwrap();
    assert_eq!(owner("home/job/.docker/config.json"), (4321, 4322));
    assert_eq!(mode(r, "/home/job/.docker/config.json"), 0o640);
    configure::undo(r, &state_file(r)).unwrap();
    assert_eq!(read(r, "/home/job/.docker/config.json"), DOCKER_CONFIG);
    assert_eq!(owner("home/job/.docker/config.json"), (4321, 4322));
}

const SYSTEM_BUNDLE: &str = "-----BEGIN CERTIFICATE-----\nU1lTVEVN\n-----END CERTIFICATE-----\n";

#[test]
fn interception_files_and_system_trust_undo_byte_exact() {
    let dir = populated_root();
    let r = dir.path();
    // An existing docker certs.d entry for quay.io (a client certificate) must survive.
    write(r, "/etc/docker/certs.d/quay.io/client.cert", "site client cert\n", 0o644);
    write(r, "/etc/ssl/certs/ca-certificates.crt", SYSTEM_BUNDLE, 0o644);
    let before = snapshot(r, false);
    let mut s = setup(r);
    s.intercept = Some(configure::Intercept {
        addr: "127.0.0.2".parse().unwrap(),
        hosts: vec!["quay.io".into(), "gcr.io".into()],
    });
    s.system_trust = true;
    let report = use_node(&s).unwrap();
    assert!(report.written.iter().any(|p| p.ends_with("etc/ssl/certs/ca-certificates.crt")));
    assert_eq!(
        read(r, "/etc/hosts"),
        format!("{ETC_HOSTS}# specreg begin\n10.1.2.3\tbuildset-registry\n127.0.0.2\tquay.io gcr.io\n# specreg end\n")
    );
    for host in ["quay.io", "gcr.io"] {
        assert_eq!(read(r, &format!("/etc/docker/certs.d/{host}/ca.crt")), format!("{MIRROR_CA}{BUILDSET_CA}\n"));
    }
    assert_eq!(read(r, "/etc/docker/certs.d/quay.io/client.cert"), "site client cert\n");
    assert_eq!(read(r, configure::intercept::SYSTEM_TRUST_FILE), format!("{SYSTEM_BUNDLE}{MIRROR_CA}"));
    // hosts.toml for docker's containerd image store: every registry, the mirror first.
    for reg in ["docker.io", "quay.io", "gcr.io", "registry.k8s.io", "ghcr.io"] {
        let t = read(r, &format!("/etc/docker/certs.d/{reg}/hosts.toml"));
        assert!(
            t.contains("[host.\"https://127.0.0.1:41234\"]\ncapabilities = [\"pull\", \"resolve\"]\nca = \"/etc/docker/certs.d/127.0.0.1:41234/ca.crt\"\n"),
            "{reg}: {t}"
        );
    }
    // A second run changes nothing.
    let after = snapshot(r, true);
    let again = use_node(&s).unwrap();
    assert!(again.written.is_empty(), "{:?}", again.written);
    assert_eq!(snapshot(r, true), after);

    configure::undo(r, &state_file(r)).unwrap();
    assert_eq!(snapshot(r, false), before);
}

#[test]
fn docker_io_is_never_intercepted() {
    let dir = populated_root();
    let mut s = setup(dir.path());
    s.intercept = Some(configure::Intercept { addr: "127.0.0.2".parse().unwrap(), hosts: vec!["docker.io".into()] });
    let e = configure::plan(&s).unwrap_err().to_string();
    assert!(e.contains("registry-mirrors"), "{e}");
    s.intercept = Some(configure::Intercept { addr: "10.0.0.1".parse().unwrap(), hosts: vec!["quay.io".into()] });
    let e = configure::plan(&s).unwrap_err().to_string();
    assert!(e.contains("not a loopback"), "{e}");
}
