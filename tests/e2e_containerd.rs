//! containerd (Debian's 1.6, driven by `ctr`) against specreg. containerd's
//! pusher uses the POST + PUT upload flow, unlike skopeo/podman/docker.
//! Proven by digests: the image digest containerd records after the pull and the
//! bytes it fetched, compared with what we built and what specreg serves.

mod support;

use std::path::Path;
use support::*;

/// Pack an OCI layout directory into an oci-archive tar for `ctr images import`.
fn tar_layout(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    b.mode(tar::HeaderMode::Deterministic);
    for entry in ["oci-layout", "index.json"] {
        b.append_path_with_name(dir.join(entry), entry).unwrap();
    }
    b.append_dir("blobs", dir).unwrap();
    b.append_dir("blobs/sha256", dir).unwrap();
    let mut blobs: Vec<_> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    blobs.sort();
    for name in blobs {
        let rel = Path::new("blobs/sha256").join(&name);
        b.append_path_with_name(dir.join(&rel), &rel).unwrap();
    }
    b.finish().unwrap();
}

/// The digest column of `ctr images ls` for `name`.
fn image_digest(c: &Containerd, name: &str) -> String {
    let out = run_ok(c.ctr().args(["images", "ls"]));
    for line in out.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.first() == Some(&name) {
            return cols[2].to_string();
        }
    }
    panic!("image {name} not listed by ctr:\n{out}");
}

fn content_bytes(c: &Containerd, digest: &str) -> Vec<u8> {
    let o = run(c.ctr().args(["content", "get", digest]));
    assert!(o.success(), "ctr content get {digest}\n{}", o.describe());
    o.stdout_bytes
}

#[test]
fn containerd_push_pull_multiarch_by_digest() {
    let reg = Registry::start();
    let work = TempTree::new("containerd");
    let c = Containerd::start(&work.join("daemon"));
    let src = work.join("src");
    let idx = multi_arch_layout(&src, "multi", 2 << 20);
    let archive = work.join("image.tar");
    tar_layout(&src, &archive);

    let base = format!("{}/e2e/ctr", reg.addr());
    let name = format!("{base}:multi");
    run_ok(
        c.ctr()
            .args(["images", "import", "--all-platforms", "--no-unpack", "--base-name", &base])
            .arg(&archive),
    );
    assert_eq!(image_digest(&c, &name), idx.index.digest, "imported index digest");

    run_ok(c.ctr().args(["images", "push", "--plain-http", &name]));
    let served = reg.manifest("e2e/ctr", "multi");
    assert_eq!(served.digest, idx.index.digest, "containerd must push the index unchanged");
    assert_eq!(served.bytes, idx.index_bytes);
    let all = reg.assert_complete("e2e/ctr", &served);
    for ch in &idx.children {
        for d in ch.blob_digests() {
            assert!(all.contains(&d), "{} blob {d} missing in the registry", ch.arch);
        }
    }

    // Forget everything (the import also created the per-arch tags), then pull back.
    let names: Vec<String> = run_ok(c.ctr().args(["images", "ls", "--quiet"]))
        .lines()
        .map(String::from)
        .collect();
    assert!(names.contains(&name), "{names:?}");
    run_ok(c.ctr().args(["images", "rm", "--sync"]).args(&names));
    let left = run_ok(c.ctr().args(["content", "ls", "--quiet"]));
    assert!(left.trim().is_empty(), "content left after removing all images:\n{left}");
    run_ok(c.ctr().args(["images", "pull", "--plain-http", "--all-platforms", &name]));
    assert_eq!(image_digest(&c, &name), idx.index.digest, "pulled index digest");
    assert_eq!(content_bytes(&c, &idx.index.digest), idx.index_bytes);
    for ch in &idx.children {
        assert_eq!(content_bytes(&c, &ch.manifest.digest), ch.manifest_bytes, "{} manifest", ch.arch);
        assert_eq!(content_bytes(&c, &ch.config.digest), ch.config_bytes, "{} config", ch.arch);
        for l in &ch.layers {
            let b = content_bytes(&c, &l.digest);
            assert_eq!(digest_of(&b), l.digest, "{} layer", ch.arch);
        }
    }
}
