//! TLS interception end to end (issue #6): docker has a mirror setting for docker.io only,
//! so `specreg use --intercept quay.io` maps `quay.io` in the node's `/etc/hosts` to a
//! loopback address where the proxy serves TLS with a leaf for exactly `quay.io`, signed
//! by the node CA that `/etc/docker/certs.d/quay.io/ca.crt` holds.
//!
//! The node is a private mount namespace ([`NodeNs`], its own `/etc/hosts`) with a
//! private dockerd. The buildset registry holds `quay.io/org/app:1`. The stand-in for the
//! real quay.io is Debian's `docker-registry` with its own TLS certificate for `quay.io`
//! (its own CA), reached through `--upstream quay.io=https://quay.io:PORT` and
//! `--resolve quay.io=127.0.0.1` (the node's `/etc/hosts` sends quay.io to the proxy
//! itself, so the proxy must not use it). The stand-in holds *different* images
//! `org/app:1` (never to be served), `org/other:1` and `gated/missing:1`, so the digest
//! docker ends up with proves where the content came from.
//!
//! docker skips certificate checks for registries on 127.0.0.0/8, so a wrong leaf would
//! not fail its pulls: the certificate is checked separately, with a client trusting only
//! the node CA and asking for `quay.io` by SNI.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const SPECREG: &str = env!("CARGO_BIN_EXE_specreg");
const STATE: &str = "/var/lib/specreg/use";
const ETC_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// The stand-in for the real quay.io: distribution over TLS with a certificate for
/// `quay.io` from its own CA.
struct StandIn {
    _daemon: Daemon,
    /// `127.0.0.1:PORT`
    addr: String,
    port: u16,
    ca_pem: String,
    ca_file: PathBuf,
    _dir: TempTree,
}

impl StandIn {
    fn start() -> StandIn {
        let dir = TempTree::new("standin-quay");
        let leaf = specreg_certs::LeafOptions {
            name: "quay".into(),
            common_name: "quay.io".into(),
            subject_alt_names: vec!["quay.io".into()],
            ..Default::default()
        };
        let ca = specreg_certs::CaOptions { common_name: "stand-in quay.io CA".into(), ..Default::default() };
        let issued = specreg_certs::CertStore::open_or_create(dir.join("tls"), &ca, &leaf).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.join("config.yml");
        fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n  tls:\n    certificate: {crt}\n    key: {key}\n",
                data = dir.join("data").display(),
                crt = issued.paths.leaf_cert.display(),
                key = issued.paths.leaf_key.display(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(tool("docker-registry"));
        cmd.arg("serve").arg(&cfg);
        let mut daemon = Daemon::spawn("stand-in quay.io", cmd, dir.join("registry.log"));
        let ca_pem = issued.ca.cert_pem().to_owned();
        let ca_file = dir.join("standin-ca.pem");
        fs::write(&ca_file, &ca_pem).unwrap();
        let start = Instant::now();
        loop {
            match https(&addr, "quay.io", &ca_pem, "GET", "/v2/", &[], b"") {
                Ok(r) if r.status == 200 => break,
                other => {
                    daemon.assert_running();
                    assert!(start.elapsed() < Duration::from_secs(60), "stand-in quay.io not ready: {:?}", other.err());
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        StandIn { _daemon: daemon, addr, port, ca_pem, ca_file, _dir: dir }
    }

    /// The manifest under `repo:tag`, as JSON, with its digest.
    fn manifest(&self, repo: &str, tag: &str) -> (String, Value) {
        let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
        let r = https(&self.addr, "quay.io", &self.ca_pem, "GET", &format!("/v2/{repo}/manifests/{tag}"), &[("Accept", accept)], b"")
            .unwrap();
        assert_eq!(r.status, 200, "stand-in manifest {repo}:{tag}\n{}", r.describe());
        (digest_of(&r.body), serde_json::from_slice(&r.body).unwrap())
    }
}

/// Builds a one-arch image in a fresh layout and copies it to `dst`; (manifest, config).
fn push_image(sk: &Skopeo, work: &Path, name: &str, extra: &[&str], dst: &str) -> (String, String) {
    let dir = work.join(name);
    let img = single_arch_layout(&dir, "1", 64 << 10);
    let pushed = sk.copy_digest(extra, &format!("oci:{}:1", dir.display()), &format!("docker://{dst}"));
    assert_eq!(pushed, img.manifest.digest, "skopeo pushed another manifest than the layout's ({dst})");
    (img.manifest.digest, img.config.digest)
}

/// A loopback address of our own for the interception listener (port 443 is shared by
/// every test on the machine).
fn own_loopback() -> String {
    let pid = std::process::id();
    format!("127.{}.{}.{}", 100 + (pid >> 16) % 100, (pid >> 8) & 0xff, (pid & 0xff).max(1))
}

/// Path -> (mode, owner, sha256) of every file and directory under the node's `roots`.
fn snapshot(node: &NodeNs, roots: &[&str]) -> BTreeMap<String, String> {
    fn walk(host: &Path, shown: &str, out: &mut BTreeMap<String, String>) {
        let Ok(md) = fs::symlink_metadata(host) else {
            out.insert(shown.into(), "absent".into());
            return;
        };
        let desc = if md.is_dir() {
            format!("dir {:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid())
        } else if md.file_type().is_symlink() {
            format!("link {}", fs::read_link(host).unwrap().display())
        } else {
            format!("file {:o} {}:{} {}", md.mode() & 0o7777, md.uid(), md.gid(), digest_of(&fs::read(host).unwrap()))
        };
        out.insert(shown.into(), desc);
        if md.is_dir() {
            let mut names: Vec<String> =
                fs::read_dir(host).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            for n in names {
                walk(&host.join(&n), &format!("{shown}/{n}"), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    for r in roots {
        walk(&node.path(r), r, &mut out);
    }
    out
}

fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => d.push(format!("removed {k}: {v}")),
            Some(w) if w != v => d.push(format!("changed {k}: {v} -> {w}")),
            _ => {}
        }
    }
    for (k, v) in after {
        if !before.contains_key(k) {
            d.push(format!("added {k}: {v}"));
        }
    }
    d
}

#[test]
fn docker_pulls_and_pushes_quay_io_through_interception() {
    // Registries and images.
    let buildset = Registry::start_specreg_with(&["--listen", "127.0.0.1:0"]);
    let info = buildset.info().clone();
    let standin = StandIn::start();
    let sk = Skopeo::new();
    let work = TempTree::new("intercept-images");
    let creds = info.creds();
    let bs = info.registry();
    let (bs_app, bs_app_config) =
        push_image(&sk, work.path(), "bs-app", &["--dest-creds", creds.as_str()], &format!("{bs}/quay.io/org/app:1"));
    // Seeding the stand-in only: its certificate names quay.io, not 127.0.0.1.
    let plain = ["--dest-tls-verify=false"];
    let up_app = push_image(&sk, work.path(), "up-app", &plain, &format!("{}/org/app:1", standin.addr)).0;
    let (up_other, up_other_config) = push_image(&sk, work.path(), "up-other", &plain, &format!("{}/org/other:1", standin.addr));
    let up_gated = push_image(&sk, work.path(), "up-gated", &plain, &format!("{}/gated/missing:1", standin.addr)).0;
    assert_eq!(buildset.manifest("quay.io/org/app", "1").digest, bs_app);
    assert_eq!(standin.manifest("org/other", "1").0, up_other);

    // The node: its own /etc/hosts, a dockerd reading its /etc/docker.
    let node = NodeNs::start();
    fs::write(node.path("/etc/hosts"), ETC_HOSTS).unwrap();
    fs::create_dir_all(node.path("/etc/docker")).unwrap();
    fs::write(node.path("/etc/docker/daemon.json"), "{\n  \"debug\": true\n}\n").unwrap();
    let dockerd = Dockerd::start_in_node(&node);
    let home = TempTree::new("intercept-home");
    let watched = ["/etc/hosts", "/etc/docker", "/etc/ssl/certs", "/usr/local/share/ca-certificates", "/var/lib/specreg", "/usr/local/bin"];
    let before = snapshot(&node, &watched);
    let docker = || {
        let mut c = node.cmd(tool("docker"));
        c.env("DOCKER_CONFIG", home.join(".docker"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .arg("-H")
            .arg(format!("unix://{}", dockerd.sock().display()));
        c
    };
    let proxy_log = || fs::read_to_string(node.path(format!("{STATE}/proxy.log"))).unwrap_or_default();

    // specreg use, inside the node (dockerd has just started: `use` waits out its
    // resolver's /etc/hosts cache, so the pull right after must see quay.io mapped).
    let ip = own_loopback();
    let mut c = node.cmd(SPECREG);
    c.arg("use")
        .arg("--info")
        .arg(&info.path)
        .args(["--root", "/", "--intercept", "quay.io", "--intercept-addr", &ip])
        .args(["--upstream", &format!("quay.io=https://quay.io:{}", standin.port)])
        .arg("--upstream-ca")
        .arg(&standin.ca_file)
        .args(["--resolve", "quay.io=127.0.0.1", "--authoritative", "quay.io/gated/", "--system-trust"])
        .arg("--job-user-home")
        .arg(home.path())
        .env("PATH", "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DOCKER_HOST", format!("unix://{}", dockerd.sock().display()));
    let o = run_timeout(&mut c, Duration::from_secs(120));
    assert!(o.success(), "specreg use failed\n{}\n--- proxy log ---\n{}", o.describe(), proxy_log());
    assert!(
        o.stdout.contains(&format!("docker uses its classic image store: docker.io pulls through registry-mirrors, quay.io through TLS interception on {ip}:443")),
        "use says which way docker pulls quay.io\n{}",
        o.describe()
    );

    // The node's files: /etc/hosts maps quay.io to the listener; docker trusts the node CA for quay.io.
    let hosts = fs::read_to_string(node.path("/etc/hosts")).unwrap();
    // (The buildset registry is known by IP, so it gets its alias too.)
    assert_eq!(
        hosts,
        format!("{ETC_HOSTS}# specreg begin\n{}\tbuildset-registry\n{ip}\tquay.io\n# specreg end\n", info.host)
    );
    let node_ca = fs::read_to_string(node.path(format!("{STATE}/tls/ca.crt"))).expect("node CA");
    // The node CA, and the buildset registry's, where blob downloads are redirected.
    assert_eq!(
        fs::read_to_string(node.path("/etc/docker/certs.d/quay.io/ca.crt")).unwrap(),
        format!("{}\n{}\n", node_ca.trim_end(), info.cert.trim_end())
    );
    let hosts_toml = fs::read_to_string(node.path("/etc/docker/certs.d/quay.io/hosts.toml")).unwrap();
    assert!(hosts_toml.contains("server = \"https://quay.io\""), "{hosts_toml}");

    // The listener presents a leaf for exactly quay.io, from the node CA: a client trusting
    // only the node CA accepts it as quay.io, and refuses the stand-in's own CA.
    let listener = format!("{ip}:443");
    let certs = tls_peer_certs(&listener, "quay.io", &node_ca).unwrap_or_else(|e| panic!("TLS to {listener} as quay.io: {e}"));
    let leaf = x509_names(&certs[0]);
    assert_eq!(leaf, vec!["quay.io".to_string()], "SANs of the interception leaf");
    assert!(tls_peer_certs(&listener, "quay.io", &standin.ca_pem).is_err(), "the leaf must not chain to the stand-in's CA");
    assert!(tls_peer_certs(&listener, "gcr.io", &node_ca).is_err(), "no certificate for a host not intercepted");
    // The same check with curl, as another TLS client would see quay.io on the node.
    let out = run(node
        .cmd(tool("curl"))
        .args(["-sS", "--cacert"])
        .arg(node.path(format!("{STATE}/tls/ca.crt")))
        .args(["https://quay.io/v2/org/app/manifests/1", "-H", "Accept: application/vnd.oci.image.manifest.v1+json"]));
    assert!(out.success(), "curl through the node's /etc/hosts\n{}", out.describe());
    assert_eq!(digest_of(&out.stdout_bytes), bs_app, "curl got the buildset manifest");

    // --system-trust: the node CA is in the node's system store too, so curl trusts the
    // interception listener with no --cacert.
    let bundle = fs::read_to_string(node.path("/etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(bundle.contains(node_ca.trim()), "the node CA is in the system bundle");
    let out = run(node.cmd(tool("curl")).args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "https://quay.io/v2/org/app/manifests/1"]));
    assert_eq!(out.stdout.trim(), "200", "curl with the system store\n{}", out.describe());

    // 1. In the buildset registry: its digest, never the stand-in's.
    let out = run_ok(docker().args(["pull", "quay.io/org/app:1"]));
    assert!(
        out.contains(&format!("Digest: {bs_app}")),
        "docker pull quay.io/org/app:1: expected the buildset digest {bs_app} (stand-in has {up_app})\n{out}\n{}",
        proxy_log()
    );
    let id = run_ok(docker().args(["image", "inspect", "--format", "{{.Id}}", "quay.io/org/app:1"]));
    assert_eq!(id.trim(), bs_app_config, "image ID of quay.io/org/app:1");

    // 2. Not in the buildset registry: the real (stand-in) quay.io's image.
    let out = run_ok(docker().args(["pull", "quay.io/org/other:1"]));
    assert!(out.contains(&format!("Digest: {up_other}")), "docker pull quay.io/org/other:1: expected {up_other}\n{out}");
    let id = run_ok(docker().args(["image", "inspect", "--format", "{{.Id}}", "quay.io/org/other:1"]));
    assert_eq!(id.trim(), up_other_config, "image ID of quay.io/org/other:1");

    // 3. Authoritative prefix: a miss is an error naming the image, never the stand-in's image.
    let o = run_fails(docker().args(["pull", "quay.io/gated/missing:1"]));
    let want = "quay.io/gated/missing:1 is not in the buildset registry, and names under quay.io/gated/ are served only from there";
    assert!(o.stderr.contains(want), "docker pull of an authoritative miss should say {want:?}\n{}", o.describe());
    eprintln!("docker on the authoritative miss: {}", o.stderr.trim());
    let images = run_ok(docker().args(["images", "--digests", "--format", "{{.Repository}}@{{.Digest}}"]));
    assert!(!images.contains(&up_gated), "the stand-in's gated image must not arrive\n{images}");

    // 4. A push to quay.io goes to the real (stand-in) quay.io, content intact.
    run_ok(docker().args(["tag", "quay.io/org/app:1", "quay.io/org/pushed:1"]));
    let out = run_ok(docker().args(["push", "quay.io/org/pushed:1"]));
    let pushed = out
        .lines()
        .find_map(|l| l.split_whitespace().skip_while(|w| *w != "digest:").nth(1))
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{out}"))
        .to_string();
    let (served, manifest) = standin.manifest("org/pushed", "1");
    assert_eq!(served, pushed, "the stand-in holds what docker pushed");
    assert_eq!(manifest["config"]["digest"], bs_app_config.as_str(), "pushed config");
    assert!(buildset.get("/v2/quay.io/org/pushed/tags/list", &[]).status != 200, "the push must not land in the buildset registry");

    // 5. Undo: every file as before, no listener, no proxy.
    let pid: i32 = fs::read_to_string(node.path(format!("{STATE}/proxy.pid"))).unwrap().trim().parse().unwrap();
    let mut c = node.cmd(SPECREG);
    c.args(["use", "--undo", "--root", "/"])
        .env("PATH", "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DOCKER_HOST", format!("unix://{}", dockerd.sock().display()));
    let o = run_timeout(&mut c, Duration::from_secs(120));
    assert!(o.success(), "specreg use --undo failed\n{}", o.describe());
    let after = snapshot(&node, &watched);
    let d = diff(&before, &after);
    assert!(d.is_empty(), "files differ after --undo:\n{}", d.join("\n"));
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z")), "proxy {pid} still runs");
    assert!(TcpStream::connect_timeout(&listener.parse().unwrap(), Duration::from_secs(2)).is_err(), "{listener} still accepts");
    let left: Vec<(i32, String)> =
        node.processes().into_iter().filter(|(p, _)| *p != dockerd.pid()).collect();
    assert!(left.is_empty(), "processes left in the node: {left:?}");
}

/// The DNS names of a certificate's subjectAltName extension.
fn x509_names(der: &[u8]) -> Vec<String> {
    let info = specreg_certs::inspect_certificate(der).expect("a parsable certificate");
    info.subject_alt_names.iter().map(|n| n.value()).collect()
}
