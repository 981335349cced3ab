//! specreg next to the reference implementation (Debian's docker-registry,
//! distribution 2.8), and specreg across a restart. Proven by digests.

mod support;

use support::*;

/// skopeo copy --all: OCI layout -> specreg -> distribution -> specreg (another
/// repository). Every hop keeps the index digest; both registries serve the
/// same bytes for every child and blob.
#[test]
fn copy_between_specreg_and_distribution() {
    let reg = Registry::start();
    let dist = Registry::start_distribution();
    let sk = Skopeo::new();
    let work = TempTree::new("interop");
    let src = work.join("src");
    let idx = multi_arch_layout(&src, "multi", 1 << 20);

    let a = format!("docker://{}", reg.image("e2e/interop", "v1"));
    let b = format!("docker://{}", dist.image("e2e/from-specreg", "v1"));
    let c = format!("docker://{}", reg.image("e2e/back-again", "v1"));
    assert_eq!(sk.copy_digest(&["--all"], &format!("oci:{}:multi", src.display()), &a), idx.index.digest);
    assert_eq!(sk.copy_digest(&["--all"], &a, &b), idx.index.digest, "specreg -> distribution");
    assert_eq!(sk.copy_digest(&["--all"], &b, &c), idx.index.digest, "distribution -> specreg");

    let m_reg = reg.manifest("e2e/back-again", "v1");
    let m_dist = dist.manifest("e2e/from-specreg", "v1");
    assert_eq!(m_reg.digest, idx.index.digest);
    assert_eq!(m_dist.digest, idx.index.digest);
    assert_eq!(m_reg.media_type, m_dist.media_type, "Content-Type differs from distribution's");
    let mut seen_reg = reg.assert_complete("e2e/back-again", &m_reg);
    let mut seen_dist = dist.assert_complete("e2e/from-specreg", &m_dist);
    seen_reg.sort();
    seen_dist.sort();
    assert_eq!(seen_reg, seen_dist);
    for d in seen_reg.iter().filter(|d| !idx.children.iter().any(|c| &c.manifest.digest == *d) && **d != idx.index.digest) {
        assert_eq!(reg.blob("e2e/back-again", d), dist.blob("e2e/from-specreg", d), "blob {d}");
    }
}

/// Data survives a clean stop (SIGTERM) and a restart on the same data dir.
#[test]
fn content_survives_restart() {
    let reg = Registry::start();
    let sk = Skopeo::new();
    let work = TempTree::new("restart");
    let src = work.join("src");
    let idx = multi_arch_layout(&src, "multi", 512 << 10);
    let img = &idx.children[0];
    let dst = format!("docker://{}", reg.image("e2e/persist", "v1"));
    assert_eq!(sk.copy_digest(&["--all"], &format!("oci:{}:multi", src.display()), &dst), idx.index.digest);

    let kind = reg.kind;
    let (status, reg) = reg.restart();
    if kind == "specreg" {
        assert!(status.success(), "specreg should exit 0 on SIGTERM, got {status}");
    }
    let m = reg.manifest("e2e/persist", "v1");
    assert_eq!(m.digest, idx.index.digest, "tag after restart");
    reg.assert_complete("e2e/persist", &m);
    assert_eq!(reg.tags("e2e/persist"), vec!["v1".to_string()]);

    if std::env::consts::ARCH == "x86_64" {
        let out = work.join("out");
        sk.copy(&[], &format!("docker://{}", reg.image("e2e/persist", "v1")), &format!("oci:{}:x", out.display()));
        let l = OciLayout::open(&out);
        assert_eq!(l.resolve("x").digest, img.manifest.digest, "amd64 child pulled after restart");
    }
}

/// `specreg serve` stops promptly and cleanly on SIGTERM and on SIGINT (Ctrl-C).
#[test]
fn stops_on_sigterm_and_sigint() {
    for (name, sig) in [("SIGTERM", libc::SIGTERM), ("SIGINT", libc::SIGINT)] {
        let reg = Registry::start();
        // An idle keep-alive connection must not hold the shutdown up.
        let mut idle = std::net::TcpStream::connect(reg.addr()).unwrap();
        use std::io::Write;
        write!(idle, "GET /v2/ HTTP/1.1\r\nHost: {}\r\n\r\n", reg.addr()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let kind = reg.kind;
        let (status, took) = reg.stop_with(sig, std::time::Duration::from_secs(30));
        assert!(took < std::time::Duration::from_secs(20), "{kind} took {took:?} to stop on {name}");
        if kind == "specreg" {
            assert!(status.success(), "specreg exited with {status} on {name}");
        }
        drop(idle);
    }
}
