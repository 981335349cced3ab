//! `specreg use` end to end (issue #5): a job node is a private mount namespace
//! (`/etc`, `/var`, `/usr/local` overlays, private `/run`, see [`NodeNs`]) with a
//! private dockerd that reads the node's `/etc/docker/daemon.json` and writes the
//! node's `/var/run/docker.pid`. `specreg use --root /` runs inside that namespace,
//! exactly as on a real node: it writes the files the clients read, starts the
//! detached mirror proxy and SIGHUPs that dockerd.
//!
//! Every test has a buildset registry (`specreg serve` with TLS and a generated
//! user, its connection info JSON handed to `use`) holding `library/specimen:1`
//! and `quay.io/org/specimen:1`, and a stand-in upstream (Debian's
//! `docker-registry`) holding *other* images under the same names
//! (`library/specimen:1`, `org/specimen:1`) plus `library/other:1` and
//! `org/other:1`. All six images differ, so the digest a client ends up with
//! proves where its content came from: the buildset registry first, the upstream
//! for misses.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

const SPECREG: &str = env!("CARGO_BIN_EXE_specreg");
const STATE: &str = "/var/lib/specreg/use";
/// A site mirror already configured on the node: `use` must keep it, after ours.
const SITE_MIRROR: &str = "http://127.0.0.1:9/";
const DAEMON_JSON: &str = "{\n  \"debug\": true,\n  \"max-concurrent-downloads\": 3,\n  \"registry-mirrors\": [\"http://127.0.0.1:9/\"]\n}\n";
const CLIENT_CONFIG: &str = "{\n\t\"psFormat\": \"table {{.ID}}\\t{{.Names}}\"\n}\n";

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

// ---------------------------------------------------------------------------
// The fixture: registries, images, a node with dockerd
// ---------------------------------------------------------------------------

struct Digests {
    /// Buildset `library/specimen:1` (manifest, config).
    bs_docker: (String, String),
    /// Buildset `quay.io/org/specimen:1`.
    bs_quay: (String, String),
    /// Upstream `library/specimen:1` and `org/specimen:1` (must never be served).
    up_docker_specimen: String,
    up_quay_specimen: String,
    /// Upstream `library/other:1` and `org/other:1`.
    up_docker_other: (String, String),
    up_quay_other: (String, String),
}

struct Fixture {
    // Drop order: dockerd, then the node (which kills whatever is left in it, e.g.
    // a proxy that an assertion failure left running), then the registries.
    dockerd: Option<Dockerd>,
    node: NodeNs,
    home: TempTree,
    buildset: Registry,
    upstream: Registry,
    d: Digests,
    _work: TempTree,
}

/// Build a one-arch image in a fresh layout and push it to `dst` with skopeo;
/// returns (manifest digest, config digest) after checking what skopeo reports.
fn push_new_image(sk: &Skopeo, work: &Path, name: &str, extra: &[&str], dst: &str) -> (String, String) {
    let dir = work.join(name);
    let img = single_arch_layout(&dir, "1", 64 << 10);
    let pushed = sk.copy_digest(extra, &format!("oci:{}:1", dir.display()), &format!("docker://{dst}"));
    assert_eq!(pushed, img.manifest.digest, "skopeo pushed another manifest than the layout's ({dst})");
    (img.manifest.digest, img.config.digest)
}

impl Fixture {
    /// Registries and images; a node namespace with `daemon_json` as its
    /// `/etc/docker/daemon.json` (`None`: no file) and, if `with_dockerd`, a
    /// private dockerd reading it.
    fn new(daemon_json: Option<&str>, with_dockerd: bool) -> Fixture {
        // dockerd skips certificate checks for 127.0.0.0/8: a buildset registry on
        // a non-loopback address proves that docker trusts the CA `use` installed.
        let ip = host_ipv4().map(|ip| ip.to_string()).unwrap_or_else(|| {
            eprintln!("warning: no non-loopback IPv4 address: docker cannot prove it checks the buildset CA");
            "127.0.0.1".into()
        });
        let buildset = Registry::start_specreg_with(&["--listen", &format!("{ip}:0")]);
        let info = buildset.info().clone();
        let upstream = Registry::start_distribution();
        let sk = Skopeo::new();
        let work = TempTree::new("use-images");
        let creds = info.creds();
        let bs_creds = ["--dest-creds", creds.as_str()];
        let bs = info.registry();
        let up = upstream.addr().to_string();
        let d = Digests {
            bs_docker: push_new_image(&sk, work.path(), "bs-docker", &bs_creds, &format!("{bs}/library/specimen:1")),
            bs_quay: push_new_image(&sk, work.path(), "bs-quay", &bs_creds, &format!("{bs}/quay.io/org/specimen:1")),
            up_docker_specimen: push_new_image(&sk, work.path(), "up-dspec", &[], &format!("{up}/library/specimen:1")).0,
            up_quay_specimen: push_new_image(&sk, work.path(), "up-qspec", &[], &format!("{up}/org/specimen:1")).0,
            up_docker_other: push_new_image(&sk, work.path(), "up-dother", &[], &format!("{up}/library/other:1")),
            up_quay_other: push_new_image(&sk, work.path(), "up-qother", &[], &format!("{up}/org/other:1")),
        };
        assert_eq!(buildset.manifest("library/specimen", "1").digest, d.bs_docker.0);
        assert_eq!(buildset.manifest("quay.io/org/specimen", "1").digest, d.bs_quay.0);

        let node = NodeNs::start();
        if let Some(text) = daemon_json {
            fs::create_dir_all(node.path("/etc/docker")).unwrap();
            fs::write(node.path("/etc/docker/daemon.json"), text).unwrap();
            fs::set_permissions(node.path("/etc/docker/daemon.json"), fs::Permissions::from_mode(0o644)).unwrap();
        } else {
            let _ = fs::remove_file(node.path("/etc/docker/daemon.json"));
        }
        let dockerd = with_dockerd.then(|| Dockerd::start_in_node(&node));
        if let Some(dk) = &dockerd {
            // /var/run is a symlink to /run, which `node.path` cannot follow (an absolute
            // link resolves against our root, not the node's).
            let pidfile = fs::read_to_string(node.path("/run/docker.pid")).expect("dockerd's pid file in the node");
            assert_eq!(pidfile.trim().parse::<i32>().ok(), Some(dk.pid()), "/var/run/docker.pid names our dockerd");
        }
        let home = TempTree::new("use-home");
        fs::create_dir_all(home.join(".docker")).unwrap();
        fs::write(home.join(".docker/config.json"), CLIENT_CONFIG).unwrap();
        fs::set_permissions(home.join(".docker/config.json"), fs::Permissions::from_mode(0o600)).unwrap();
        Fixture { dockerd, node, home, buildset, upstream, d, _work: work }
    }

    fn info(&self) -> &ConnectionInfo {
        self.buildset.info()
    }

    fn dockerd(&self) -> &Dockerd {
        self.dockerd.as_ref().expect("this fixture has a dockerd")
    }

    /// `specreg use --info ... --root / --upstream docker.io=... --upstream quay.io=...
    /// --job-user-home HOME` inside the node.
    fn use_cmd(&self) -> Command {
        let up = format!("http://{}", self.upstream.addr());
        let mut c = self.node.cmd(SPECREG);
        c.arg("use")
            .arg("--info")
            .arg(&self.info().path)
            .args(["--root", "/"])
            .args(["--upstream", &format!("docker.io={up}"), "--upstream", &format!("quay.io={up}")])
            // With a dockerd, `use` also intercepts the other registries on port 443 of a
            // loopback address; tests run in parallel, so each node gets its own address.
            .args(["--intercept-addr", &format!("127.200.{}.{}", (self.node.pid() >> 8) & 0xff, (self.node.pid() & 0xff).max(1))])
            // The test images' blobs are tiny: redirect all of them, so docker, podman and
            // ctr must follow the signed URLs (e2e_intercept keeps the default, where such
            // blobs are relayed by the proxy).
            .args(["--redirect-min-size", "1"])
            .arg("--job-user-home")
            .arg(self.home.path())
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NO_COLOR", "1")
            .env_remove("DOCKER_CONFIG");
        match &self.dockerd {
            // `use` checks with `docker info` that dockerd took the mirror.
            Some(dk) => c.env("DOCKER_HOST", format!("unix://{}", dk.sock().display())),
            None => c.env_remove("DOCKER_HOST"),
        };
        c
    }

    fn use_ok(&self) -> Output {
        let o = run_timeout(&mut self.use_cmd(), Duration::from_secs(120));
        assert!(o.success(), "specreg use failed\n{}\n--- proxy log ---\n{}", o.describe(), self.proxy_log());
        o
    }

    fn undo_ok(&self) -> Output {
        let mut c = self.node.cmd(SPECREG);
        c.args(["use", "--undo", "--root", "/"]).env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        if let Some(dk) = &self.dockerd {
            c.env("DOCKER_HOST", format!("unix://{}", dk.sock().display()));
        }
        let o = run_timeout(&mut c, Duration::from_secs(120));
        assert!(o.success(), "specreg use --undo failed\n{}", o.describe());
        o
    }

    fn proxy_log(&self) -> String {
        fs::read_to_string(self.node.path(format!("{STATE}/proxy.log"))).unwrap_or_default()
    }

    fn proxy_pid(&self) -> i32 {
        let t = fs::read_to_string(self.node.path(format!("{STATE}/proxy.pid"))).expect("proxy.pid after use");
        t.trim().parse().unwrap_or_else(|_| panic!("proxy.pid holds {t:?}"))
    }

    /// `127.0.0.1:PORT` the proxy listens on.
    fn proxy_addr(&self) -> String {
        let t = fs::read_to_string(self.node.path(format!("{STATE}/proxy.addr"))).expect("proxy.addr after use");
        t.trim().trim_start_matches("https://").trim_end_matches('/').to_string()
    }

    /// The docker CLI inside the node, as the job user runs it: `DOCKER_CONFIG` is
    /// the `--job-user-home`'s `.docker`, `PATH` starts with `/usr/local/bin`.
    fn docker(&self) -> Command {
        let dk = self.dockerd();
        let mut c = self.node.cmd(tool("docker"));
        c.env("DOCKER_CONFIG", self.home.join(".docker"))
            .env("PATH", "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .arg("-H")
            .arg(format!("unix://{}", dk.sock().display()));
        c
    }

    fn docker_inspect(&self, image: &str, format: &str) -> String {
        run_ok(self.docker().args(["image", "inspect", "--format", format, image])).trim().to_string()
    }

    fn docker_mirrors(&self) -> Vec<String> {
        let out = run_ok(self.docker().args(["info", "--format", "{{json .RegistryConfig.Mirrors}}"]));
        serde_json::from_str::<Value>(out.trim())
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m.as_str().map(String::from))
            .collect()
    }

    /// The trees `use` may touch, as the node sees them.
    fn snapshot(&self, with_mtimes: bool) -> Snapshot {
        let mut s = Snapshot::default();
        for root in ["/etc", "/usr/local/bin", "/var/lib/specreg"] {
            walk(&self.node.path(root), root, with_mtimes, &mut s.0);
        }
        walk(&self.node.path(self.home.path()), p(self.home.path()), with_mtimes, &mut s.0);
        s
    }

    /// Processes in the node other than dockerd (e.g. a proxy).
    fn node_processes_besides_dockerd(&self) -> Vec<(i32, String)> {
        let dk = self.dockerd.as_ref().map(|d| d.pid());
        self.node.processes().into_iter().filter(|(pid, _)| Some(*pid) != dk).collect()
    }
}

// ---------------------------------------------------------------------------
// Tree snapshots
// ---------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq, Clone)]
enum Entry {
    Absent,
    Dir { mode: u32, uid: u32, gid: u32 },
    /// `sha256` of the bytes; for files over 4 MiB (binaries in /usr/local/bin that
    /// `use` never writes) the identity `dev:ino:mtime` instead, which any write
    /// through the overlay (copy-up, rename) changes.
    File { mode: u32, uid: u32, gid: u32, sha256: String, len: u64 },
    Link(PathBuf),
    Other { mode: u32 },
}

/// Each path shown, with its entry and (when compared) its mtime as seconds and nanoseconds.
type Entries = BTreeMap<String, (Entry, Option<(i64, i64)>)>;

#[derive(Default, PartialEq, Eq)]
struct Snapshot(Entries);

impl Snapshot {
    /// Human-readable differences (empty when equal).
    fn diff(&self, after: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.0 {
            match after.0.get(k) {
                None => out.push(format!("removed: {k} (was {v:?})")),
                Some(w) if w != v => out.push(format!("changed: {k}\n    before {v:?}\n    after  {w:?}")),
                _ => {}
            }
        }
        for (k, v) in &after.0 {
            if !self.0.contains_key(k) {
                out.push(format!("added: {k} ({v:?})"));
            }
        }
        out
    }
}

fn walk(host_path: &Path, shown: &str, with_mtimes: bool, out: &mut Entries) {
    let md = match fs::symlink_metadata(host_path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.insert(shown.to_string(), (Entry::Absent, None));
            return;
        }
        Err(e) => panic!("{}: {e}", host_path.display()),
    };
    let mtime = with_mtimes.then(|| (md.mtime(), md.mtime_nsec()));
    let mode = md.mode() & 0o7777;
    let ft = md.file_type();
    let entry = if ft.is_symlink() {
        Entry::Link(fs::read_link(host_path).unwrap())
    } else if ft.is_dir() {
        Entry::Dir { mode, uid: md.uid(), gid: md.gid() }
    } else if ft.is_file() {
        let sha256 = if md.len() > 4 << 20 {
            format!("identity {}:{}:{}.{}", md.dev(), md.ino(), md.mtime(), md.mtime_nsec())
        } else {
            digest_of(&fs::read(host_path).unwrap_or_else(|e| panic!("{}: {e}", host_path.display())))
        };
        Entry::File { mode, uid: md.uid(), gid: md.gid(), sha256, len: md.len() }
    } else {
        Entry::Other { mode: md.mode() }
    };
    // Directory mtimes change whenever an entry comes and goes; record them too.
    out.insert(shown.to_string(), (entry, mtime));
    if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(host_path).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        for n in names {
            let n = n.to_string_lossy().to_string();
            walk(&host_path.join(&n), &format!("{shown}/{n}"), with_mtimes, out);
        }
    }
}

fn assert_same_tree(before: &Snapshot, after: &Snapshot, what: &str) {
    let diff = before.diff(after);
    assert!(diff.is_empty(), "{what}: the node's files differ:\n{}", diff.join("\n"));
}

/// Whether `pid` is still a live (non-zombie) process.
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rfind(')').map(|i| stat[i + 1..].trim_start().starts_with('Z')).unwrap_or(true),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// 1. docker
// ---------------------------------------------------------------------------

/// dockerd, after `use` SIGHUPs it, pulls `docker.io/library/specimen:1` from the
/// buildset registry and `docker.io/library/other:1` from the stand-in upstream,
/// through the mirror; `docker push` to the buildset registry works with the
/// credential helper and no password in `config.json`.
#[test]
fn docker_pulls_through_the_mirror_and_pushes_with_the_helper() {
    let f = Fixture::new(Some(DAEMON_JSON), true);
    assert_eq!(f.docker_mirrors(), vec![SITE_MIRROR.to_string()], "mirrors before use");
    let o = f.use_ok();
    assert!(!o.stderr.contains("does not list the mirror"), "use: dockerd did not take the mirror\n{}", o.describe());
    let mirror = f.proxy_addr();
    assert!(mirror.starts_with("127.0.0.1:"), "proxy address {mirror}");
    assert!(o.stdout.contains(&mirror), "use names the mirror it started\n{}", o.describe());

    // daemon.json: ours first, the site's mirror and every other key kept.
    let dj: Value = serde_json::from_slice(&fs::read(f.node.path("/etc/docker/daemon.json")).unwrap()).unwrap();
    let want_ours = format!("https://{mirror}");
    let mirrors: Vec<&str> = dj["registry-mirrors"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert_eq!(mirrors.len(), 2, "daemon.json mirrors: {mirrors:?}");
    assert_eq!(mirrors[0].trim_end_matches('/'), want_ours, "ours first: {mirrors:?}");
    assert_eq!(mirrors[1], SITE_MIRROR, "the site mirror is kept second: {mirrors:?}");
    assert_eq!(dj["debug"], true);
    assert_eq!(dj["max-concurrent-downloads"], 3);
    // dockerd reloaded (SIGHUP, no restart): it lists ours first.
    let live = f.docker_mirrors();
    assert_eq!(live.len(), 2, "docker info mirrors after use: {live:?}");
    assert_eq!(live[0].trim_end_matches('/'), want_ours, "docker info mirrors after use: {live:?}");
    // The mirror's trust: the node CA, then the buildset registry's (blob downloads are
    // redirected to signed URLs there, which dockerd fetches with the mirror's TLS settings).
    let ca = fs::read_to_string(f.node.path(format!("{STATE}/tls/ca.crt"))).expect("node CA");
    assert_eq!(
        fs::read_to_string(f.node.path(format!("/etc/docker/certs.d/{mirror}/ca.crt"))).expect("certs.d for the mirror"),
        format!("{ca}{}\n", f.info().cert.trim_end())
    );

    // A speculative image: the buildset's digest, not the upstream's.
    let out = run_ok(f.docker().args(["pull", "docker.io/library/specimen:1"]));
    let (bs_manifest, bs_config) = &f.d.bs_docker;
    assert!(
        out.contains(&format!("Digest: {bs_manifest}")),
        "docker pull specimen: expected the buildset digest {bs_manifest} (upstream has {})\n{out}",
        f.d.up_docker_specimen
    );
    assert_eq!(f.docker_inspect("specimen:1", "{{.Id}}"), *bs_config, "image ID of specimen:1");
    assert_eq!(
        f.docker_inspect("specimen:1", "{{range .RepoDigests}}{{.}} {{end}}"),
        format!("specimen@{bs_manifest}"),
        "RepoDigests of specimen:1"
    );
    // A miss: served by the stand-in upstream through the proxy.
    let out = run_ok(f.docker().args(["pull", "docker.io/library/other:1"]));
    let (up_manifest, up_config) = &f.d.up_docker_other;
    assert!(out.contains(&format!("Digest: {up_manifest}")), "docker pull other: expected the upstream digest\n{out}");
    assert_eq!(f.docker_inspect("other:1", "{{.Id}}"), *up_config, "image ID of other:1");

    // docker push to the buildset registry through docker-credential-specreg.
    let info = f.info().clone();
    let bs = info.registry();
    let cfg_text = fs::read_to_string(f.home.join(".docker/config.json")).unwrap();
    let cfg: Value = serde_json::from_str(&cfg_text).unwrap();
    assert_eq!(cfg["credHelpers"][&bs], "specreg", "credHelpers for {bs} in config.json:\n{cfg_text}");
    assert_eq!(cfg["psFormat"], "table {{.ID}}\t{{.Names}}", "other keys kept:\n{cfg_text}");
    assert!(cfg["auths"].get(&bs).is_none(), "no auths entry for {bs}:\n{cfg_text}");
    assert!(!cfg_text.contains(&info.password), "config.json holds the password:\n{cfg_text}");
    assert!(!cfg_text.contains(&b64(info.creds().as_bytes())), "config.json holds base64 credentials");
    let helper = f.node.path("/usr/local/bin/docker-credential-specreg");
    assert_eq!(fs::read_link(&helper).expect("helper symlink"), PathBuf::from(SPECREG));

    let target = format!("{bs}/e2e/pushed:1");
    run_ok(f.docker().args(["tag", "specimen:1", &target]));
    let out = run_ok(f.docker().args(["push", &target]));
    let pushed = out
        .lines()
        .find(|l| l.starts_with("1: digest: sha256:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{out}"))
        .to_string();
    let served = f.buildset.manifest("e2e/pushed", "1");
    assert_eq!(served.digest, pushed, "buildset digest for e2e/pushed:1 vs docker push's");
    assert_eq!(served.json["config"]["digest"], bs_config.as_str());
    f.buildset.assert_complete("e2e/pushed", &served);
    let after = fs::read_to_string(f.home.join(".docker/config.json")).unwrap();
    assert!(!after.contains(&info.password), "config.json holds the password after the push:\n{after}");

    f.undo_ok();
    assert_eq!(f.docker_mirrors(), vec![SITE_MIRROR.to_string()], "mirrors after use --undo");
}

// ---------------------------------------------------------------------------
// 2. podman
// ---------------------------------------------------------------------------

/// podman (reading the node's `/etc/containers`) pulls `quay.io/org/specimen:1`
/// from the buildset registry and `quay.io/org/other:1` from the stand-in.
#[test]
fn podman_pulls_quay_through_registries_conf() {
    let f = Fixture::new(Some(DAEMON_JSON), true);
    f.use_ok();
    let mirror = f.proxy_addr();
    let dropin = fs::read_to_string(f.node.path("/etc/containers/registries.conf.d/99-specreg.conf"))
        .expect("the registries.conf drop-in");
    assert!(dropin.contains(&format!("{mirror}/quay.io")), "drop-in mirrors quay.io through {mirror}:\n{dropin}");
    let pm = Podman::new();
    let policy = pm.policy();
    let pull = |image: &str| {
        let o = run(pm.cmd_in(&f.node).args(["pull", "--signature-policy", p(&policy), image]));
        assert!(o.success(), "podman pull {image}\n{}\n--- proxy log ---\n{}", o.describe(), f.proxy_log());
        let field = |fmt: &str| run_ok(pm.cmd_in(&f.node).args(["image", "inspect", "--format", fmt, image])).trim().to_string();
        (field("{{.Digest}}"), format!("sha256:{}", field("{{.Id}}")))
    };
    let (digest, id) = pull("quay.io/org/specimen:1");
    assert_eq!(
        digest, f.d.bs_quay.0,
        "podman pull quay.io/org/specimen:1: expected the buildset digest (upstream has {})",
        f.d.up_quay_specimen
    );
    assert_eq!(id, f.d.bs_quay.1, "image ID of quay.io/org/specimen:1");
    let (digest, id) = pull("quay.io/org/other:1");
    assert_eq!((digest, id), f.d.up_quay_other.clone(), "quay.io/org/other:1 from the stand-in upstream");
    // docker.io through the same drop-in: the un-prefixed buildset name.
    let (digest, _) = pull("docker.io/library/specimen:1");
    assert_eq!(digest, f.d.bs_docker.0, "podman pull docker.io/library/specimen:1");
    f.undo_ok();
}

// ---------------------------------------------------------------------------
// 3. containerd
// ---------------------------------------------------------------------------

/// The digest column of `ctr images ls` for `name`.
fn ctr_image_digest(out: &str, name: &str) -> String {
    for line in out.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.first() == Some(&name) {
            return cols[2].to_string();
        }
    }
    panic!("image {name} not listed by ctr:\n{out}");
}

/// `ctr images pull --hosts-dir /etc/containerd/certs.d` (the node's hosts.toml
/// files) gets `quay.io/org/specimen:1` from the buildset registry and
/// `docker.io/library/other:1` from the stand-in.
#[test]
fn containerd_pulls_through_hosts_toml() {
    let f = Fixture::new(Some(DAEMON_JSON), true);
    f.use_ok();
    let mirror = f.proxy_addr();
    let hosts = fs::read_to_string(f.node.path("/etc/containerd/certs.d/quay.io/hosts.toml")).expect("quay.io hosts.toml");
    assert!(hosts.contains(&format!("https://{mirror}")), "quay.io hosts.toml names the mirror:\n{hosts}");
    let ctr = || {
        let mut c = f.node.cmd(tool("ctr"));
        c.arg("--address").arg(&f.dockerd().containerd().sock).args(["--namespace", "e2e"]);
        c
    };
    let pull = |image: &str| {
        let o = run(ctr().args(["images", "pull", "--hosts-dir", "/etc/containerd/certs.d", image]));
        assert!(o.success(), "ctr pull {image}\n{}\n--- proxy log ---\n{}", o.describe(), f.proxy_log());
        ctr_image_digest(&run_ok(ctr().args(["images", "ls"])), image)
    };
    let got = pull("quay.io/org/specimen:1");
    assert_eq!(got, f.d.bs_quay.0, "ctr pull quay.io/org/specimen:1: expected the buildset digest (upstream has {})", f.d.up_quay_specimen);
    let config = run(ctr().args(["content", "get", &f.d.bs_quay.1]));
    assert!(config.success() && digest_of(&config.stdout_bytes) == f.d.bs_quay.1, "config blob fetched\n{}", config.describe());
    let got = pull("docker.io/library/other:1");
    assert_eq!(got, f.d.up_docker_other.0, "ctr pull docker.io/library/other:1 from the stand-in upstream");
    let got = pull("docker.io/library/specimen:1");
    assert_eq!(got, f.d.bs_docker.0, "ctr pull docker.io/library/specimen:1 from the buildset registry");
    f.undo_ok();
}

// ---------------------------------------------------------------------------
// 4. undo
// ---------------------------------------------------------------------------

/// `use --undo` restores every touched file byte for byte (content, mode, owner),
/// removes what `use` added (drop-ins, certs.d, the helper link, the state dir)
/// and stops the proxy; dockerd is reloaded back to the site mirror only.
#[test]
fn undo_restores_every_file_and_stops_the_proxy() {
    let f = Fixture::new(Some(DAEMON_JSON), true);
    // A hosts.toml of the site's own for docker.io, which `use` must restore.
    let site_hosts = "server = \"https://registry-1.docker.io\"\n\n[host.\"http://127.0.0.1:9\"]\n  capabilities = [\"pull\"]\n";
    fs::create_dir_all(f.node.path("/etc/containerd/certs.d/docker.io")).unwrap();
    fs::write(f.node.path("/etc/containerd/certs.d/docker.io/hosts.toml"), site_hosts).unwrap();
    fs::set_permissions(f.node.path("/etc/containerd/certs.d/docker.io/hosts.toml"), fs::Permissions::from_mode(0o640)).unwrap();
    let before = f.snapshot(false);

    f.use_ok();
    let pid = f.proxy_pid();
    assert!(alive(pid), "proxy pid {pid} is not running after use");
    let during = f.snapshot(false);
    let changed = before.diff(&during);
    for want in [
        "/etc/docker/daemon.json",
        "/etc/containers/registries.conf.d/99-specreg.conf",
        "/etc/containerd/certs.d/docker.io/hosts.toml",
        "/etc/containerd/certs.d/quay.io/hosts.toml",
        "/usr/local/bin/docker-credential-specreg",
        "/var/lib/specreg/credentials.json",
        "/etc/hosts",
    ] {
        assert!(changed.iter().any(|l| l.contains(&format!(" {want}"))), "use did not touch {want}; changes:\n{}", changed.join("\n"));
    }
    assert!(changed.iter().any(|l| l.contains(".docker/config.json")), "use did not touch config.json");
    // The proxy answers (so there is something to stop).
    let r = https(&f.proxy_addr(), "127.0.0.1", &fs::read_to_string(f.node.path(format!("{STATE}/tls/ca.crt"))).unwrap(), "GET", "/v2/", &[], b"");
    assert!(r.is_ok(), "the proxy does not answer /v2/ over TLS with the node CA: {r:?}");

    let o = f.undo_ok();
    assert_same_tree(&before, &f.snapshot(false), &format!("after use --undo ({})", o.stdout.trim()));
    assert!(!alive(pid), "proxy pid {pid} still running after use --undo");
    let left = f.node_processes_besides_dockerd();
    assert!(left.is_empty(), "processes left in the node after use --undo: {left:?}");
    assert_eq!(f.docker_mirrors(), vec![SITE_MIRROR.to_string()], "dockerd mirrors after use --undo");
}

// ---------------------------------------------------------------------------
// 5. a malformed daemon.json
// ---------------------------------------------------------------------------

/// A daemon.json that does not parse stops `use` before anything changes: exit 1,
/// an error naming the file, the node's files identical, no proxy started.
#[test]
fn malformed_daemon_json_changes_nothing() {
    let f = Fixture::new(Some("{\"debug\": true,\n \"registry-mirrors\": [\n"), false);
    let before = f.snapshot(true);
    let o = run_timeout(&mut f.use_cmd(), Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(1), "use with a malformed daemon.json must exit 1\n{}", o.describe());
    assert!(
        o.stderr.contains("specreg: error: /etc/docker/daemon.json"),
        "the error must name /etc/docker/daemon.json\n{}",
        o.describe()
    );
    assert_same_tree(&before, &f.snapshot(true), "after a refused use");
    let left = f.node.processes();
    assert!(left.is_empty(), "processes left in the node after a refused use: {left:?}");
}

// ---------------------------------------------------------------------------
// 6. use twice
// ---------------------------------------------------------------------------

/// A second `use` writes nothing (bytes, modes and mtimes identical) and keeps the
/// same proxy; dockerd lists our mirror once.
#[test]
fn use_twice_changes_nothing_more() {
    let f = Fixture::new(Some(DAEMON_JSON), true);
    f.use_ok();
    let pid = f.proxy_pid();
    let first = f.snapshot(true);
    std::thread::sleep(Duration::from_millis(50));
    let o = f.use_ok();
    let second = f.snapshot(true);
    assert_same_tree(&first, &second, &format!("after a second use ({})", o.stdout.trim()));
    assert_eq!(f.proxy_pid(), pid, "a second use must keep the proxy");
    assert!(alive(pid), "proxy pid {pid} died during the second use");
    let mine: Vec<(i32, String)> = f.node_processes_besides_dockerd();
    assert_eq!(mine.iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec![pid], "exactly one proxy in the node: {mine:?}");
    let mirror = format!("https://{}", f.proxy_addr());
    let live = f.docker_mirrors();
    assert_eq!(live.iter().filter(|m| m.trim_end_matches('/') == mirror).count(), 1, "dockerd mirrors: {live:?}");
    // And the node still works: a pull through the unchanged setup.
    let out = run_ok(f.docker().args(["pull", "docker.io/library/specimen:1"]));
    assert!(out.contains(&format!("Digest: {}", f.d.bs_docker.0)), "docker pull after a second use:\n{out}");
    f.undo_ok();
}
