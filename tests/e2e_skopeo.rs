//! skopeo (containers/image) against specreg: OCI layout -> registry -> OCI
//! layout, multi-arch with `--all`, and docker schema2 / manifest list
//! conversions. Every check compares digests and bytes.

mod support;

use support::*;

/// OCI layout -> specreg -> new OCI layout: same manifest digest, same blobs.
/// The top layer carries 6 MiB of incompressible data so the upload is larger
/// than common chunk sizes.
#[test]
fn skopeo_copy_oci_roundtrip_by_digest() {
    let reg = Registry::start();
    let sk = Skopeo::new();
    let work = TempTree::new("skopeo-oci");
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 6 << 20);

    let dst_ref = format!("docker://{}", reg.image("e2e/skopeo-oci", "v1"));
    let pushed = sk.copy_digest(&[], &format!("oci:{}:v1", src.display()), &dst_ref);
    assert_eq!(pushed, img.manifest.digest, "skopeo pushed a different manifest than the layout's");

    // What the registry serves, by tag and by digest.
    let by_tag = reg.manifest("e2e/skopeo-oci", "v1");
    assert_eq!(by_tag.digest, img.manifest.digest);
    assert_eq!(by_tag.bytes, img.manifest_bytes, "manifest bytes must be served unchanged");
    assert_eq!(by_tag.media_type, OCI_MANIFEST);
    let by_digest = reg.manifest("e2e/skopeo-oci", &img.manifest.digest);
    assert_eq!(by_digest.bytes, img.manifest_bytes);
    let blobs = reg.assert_complete("e2e/skopeo-oci", &by_tag);
    for d in img.blob_digests() {
        assert!(blobs.contains(&d), "blob {d} not reachable from the served manifest");
    }
    assert_eq!(reg.blob("e2e/skopeo-oci", &img.config.digest), img.config_bytes);
    assert_eq!(reg.tags("e2e/skopeo-oci"), vec!["v1".to_string()]);

    // skopeo's own view of the remote manifest.
    let raw = sk.inspect_raw(&dst_ref);
    assert_eq!(digest_of(&raw), img.manifest.digest, "skopeo inspect --raw digest");

    // And back into a fresh layout.
    let dst = work.join("dst");
    sk.copy(&[], &dst_ref, &format!("oci:{}:copy", dst.display()));
    let out = OciLayout::open(&dst);
    let desc = out.resolve("copy");
    assert_eq!(desc.digest, img.manifest.digest, "round-tripped manifest digest");
    assert_eq!(out.blob(&desc.digest), img.manifest_bytes);
    let src_layout = OciLayout::open(&src);
    for d in img.blob_digests() {
        assert_eq!(out.blob(&d), src_layout.blob(&d), "blob {d} differs after the round trip");
    }
}

/// `skopeo copy --all` of an OCI index (linux/amd64 + linux/arm64): the index
/// digest is preserved and both children (with all blobs) are in the registry and
/// in the copy.
#[test]
fn skopeo_copy_all_multiarch_index() {
    let reg = Registry::start();
    let sk = Skopeo::new();
    let work = TempTree::new("skopeo-multi");
    let src = work.join("src");
    let idx = multi_arch_layout(&src, "multi", 512 << 10);

    let dst_ref = format!("docker://{}", reg.image("e2e/multi", "v1"));
    let pushed = sk.copy_digest(&["--all"], &format!("oci:{}:multi", src.display()), &dst_ref);
    assert_eq!(pushed, idx.index.digest, "skopeo --all pushed a different index");

    let served = reg.manifest("e2e/multi", "v1");
    assert_eq!(served.digest, idx.index.digest);
    assert_eq!(served.media_type, OCI_INDEX);
    assert_eq!(served.bytes, idx.index_bytes);
    let all = reg.assert_complete("e2e/multi", &served);
    for c in &idx.children {
        assert!(all.contains(&c.manifest.digest), "child {} ({}) missing", c.manifest.digest, c.arch);
        let m = reg.manifest("e2e/multi", &c.manifest.digest);
        assert_eq!(m.bytes, c.manifest_bytes, "child {} bytes", c.arch);
        assert_eq!(m.media_type, OCI_MANIFEST);
        for d in c.blob_digests() {
            assert!(all.contains(&d));
        }
    }

    let dst = work.join("dst");
    sk.copy(&["--all"], &dst_ref, &format!("oci:{}:copy", dst.display()));
    let out = OciLayout::open(&dst);
    let desc = out.resolve("copy");
    assert_eq!(desc.digest, idx.index.digest, "index digest after the round trip");
    assert_eq!(out.blob(&desc.digest), idx.index_bytes);
    for c in &idx.children {
        assert_eq!(out.blob(&c.manifest.digest), c.manifest_bytes, "child {} in the copy", c.arch);
        for d in c.blob_digests() {
            assert!(out.has_blob(&d), "blob {d} of {} missing from the copy", c.arch);
            out.blob(&d);
        }
    }

    // Without --all skopeo picks this host's platform child: amd64 on CI.
    if std::env::consts::ARCH == "x86_64" {
        let one = work.join("one");
        sk.copy(&[], &dst_ref, &format!("oci:{}:one", one.display()));
        let d = OciLayout::open(&one).resolve("one");
        assert_eq!(d.digest, idx.children[0].manifest.digest, "platform selection from the index");
    }
}

/// `--format v2s2`: skopeo converts to docker schema2 media types; the registry
/// must serve exactly the manifest skopeo pushed, and `dir:` keeps it verbatim on
/// the way back.
#[test]
fn skopeo_copy_docker_schema2() {
    let reg = Registry::start();
    let sk = Skopeo::new();
    let work = TempTree::new("skopeo-s2");
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 1 << 20);

    let dst_ref = format!("docker://{}", reg.image("e2e/schema2", "s2"));
    let pushed = sk.copy_digest(&["--format", "v2s2"], &format!("oci:{}:v1", src.display()), &dst_ref);
    assert_ne!(pushed, img.manifest.digest, "a v2s2 manifest cannot have the OCI manifest's digest");

    let served = reg.manifest("e2e/schema2", "s2");
    assert_eq!(served.digest, pushed, "served digest differs from the one skopeo pushed");
    assert_eq!(served.media_type, DOCKER_MANIFEST);
    assert_eq!(served.json["mediaType"], DOCKER_MANIFEST);
    assert_eq!(served.json["config"]["mediaType"], DOCKER_CONFIG);
    assert_eq!(served.json["config"]["digest"], img.config.digest.as_str(), "config blob unchanged");
    let layers = served.json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), img.layers.len());
    for (l, orig) in layers.iter().zip(&img.layers) {
        assert_eq!(l["mediaType"], DOCKER_LAYER_GZIP);
        assert_eq!(l["digest"], orig.digest.as_str(), "gzip layers are reused as they are");
    }
    reg.assert_complete("e2e/schema2", &served);
    assert_eq!(digest_of(&sk.inspect_raw(&dst_ref)), pushed);

    // dir: transport keeps the manifest bytes verbatim.
    let out = work.join("dir-out");
    sk.copy(&[], &dst_ref, &format!("dir:{}", out.display()));
    let m = std::fs::read(out.join("manifest.json")).unwrap();
    assert_eq!(digest_of(&m), pushed, "manifest after pulling into dir:");
    for l in &img.layers {
        let hex = &l.digest["sha256:".len()..];
        let b = std::fs::read(out.join(hex)).expect("layer in dir: copy");
        assert_eq!(digest_of(&b), l.digest);
    }
}

/// `--all --format v2s2` turns the OCI index into a docker manifest list with
/// schema2 children.
#[test]
fn skopeo_copy_all_as_docker_manifest_list() {
    let reg = Registry::start();
    let sk = Skopeo::new();
    let work = TempTree::new("skopeo-list");
    let src = work.join("src");
    let idx = multi_arch_layout(&src, "multi", 64 << 10);

    let dst_ref = format!("docker://{}", reg.image("e2e/list", "v1"));
    let pushed = sk.copy_digest(
        &["--all", "--format", "v2s2"],
        &format!("oci:{}:multi", src.display()),
        &dst_ref,
    );
    let served = reg.manifest("e2e/list", "v1");
    assert_eq!(served.digest, pushed);
    assert_eq!(served.media_type, DOCKER_LIST);
    let children = served.json["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2);
    let mut archs = Vec::new();
    for c in children {
        assert_eq!(c["mediaType"], DOCKER_MANIFEST);
        archs.push(c["platform"]["architecture"].as_str().unwrap().to_string());
        let m = reg.manifest("e2e/list", c["digest"].as_str().unwrap());
        assert_eq!(m.media_type, DOCKER_MANIFEST);
    }
    archs.sort();
    assert_eq!(archs, vec!["amd64", "arm64"]);
    reg.assert_complete("e2e/list", &served);

    // The children still carry the configs we built (OCI -> schema2 keeps them).
    let mut configs: Vec<String> = children
        .iter()
        .map(|c| {
            let m = reg.manifest("e2e/list", c["digest"].as_str().unwrap());
            m.json["config"]["digest"].as_str().unwrap().to_string()
        })
        .collect();
    configs.sort();
    let mut want: Vec<String> = idx.children.iter().map(|c| c.config.digest.clone()).collect();
    want.sort();
    assert_eq!(configs, want);

    // And back, verbatim, into a dir: copy (manifest.json is the list itself).
    let out = work.join("dir-out");
    sk.copy(&["--all"], &dst_ref, &format!("dir:{}", out.display()));
    let list = std::fs::read(out.join("manifest.json")).unwrap();
    assert_eq!(digest_of(&list), pushed, "manifest list after pulling into dir:");
    for c in children {
        let d = c["digest"].as_str().unwrap();
        let m = std::fs::read(out.join(format!("{}.manifest.json", &d["sha256:".len()..])))
            .unwrap_or_else(|e| panic!("child {d} missing from the dir: copy: {e}"));
        assert_eq!(digest_of(&m), d);
    }
}

/// Two skopeo processes pushing the same image to two tags at the same time:
/// both must succeed and both tags must resolve to the same digest.
#[test]
fn skopeo_concurrent_pushes_of_the_same_image() {
    let reg = Registry::start();
    let sk = Skopeo::new();
    let work = TempTree::new("skopeo-conc");
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 2 << 20);
    let src_ref = format!("oci:{}:v1", src.display());
    std::thread::scope(|s| {
        let hs: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|t| {
                let dst = format!("docker://{}", reg.image("e2e/concurrent", t));
                let src_ref = src_ref.clone();
                let sk = &sk;
                s.spawn(move || sk.copy_digest(&[], &src_ref, &dst))
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().expect("concurrent skopeo copy"), img.manifest.digest);
        }
    });
    for t in ["a", "b", "c"] {
        let m = reg.manifest("e2e/concurrent", t);
        assert_eq!(m.digest, img.manifest.digest, "tag {t}");
        reg.assert_complete("e2e/concurrent", &m);
    }
    let mut tags = reg.tags("e2e/concurrent");
    tags.sort();
    assert_eq!(tags, vec!["a", "b", "c"]);
}

/// `skopeo list-tags`, `_catalog` and `skopeo delete` (DELETE by digest).
#[test]
fn skopeo_list_tags_catalog_and_delete() {
    let reg = Registry::start();
    let sk = Skopeo::new();
    let work = TempTree::new("skopeo-del");
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 16 << 10);
    let src_ref = format!("oci:{}:v1", src.display());
    for t in ["one", "two", "three"] {
        sk.copy(&[], &src_ref, &format!("docker://{}", reg.image("e2e/tags", t)));
    }
    let out = run_ok(sk.cmd().args(["list-tags", "--tls-verify=false"]).arg(format!("docker://{}/e2e/tags", reg.addr())));
    let v: serde_json::Value = serde_json::from_str(&out).expect("list-tags JSON");
    let mut tags: Vec<&str> = v["Tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    tags.sort();
    assert_eq!(tags, vec!["one", "three", "two"]);

    let cat = reg.get("/v2/_catalog", &[]);
    assert_eq!(cat.status, 200, "{}", cat.describe());
    let cat: serde_json::Value = serde_json::from_slice(&cat.body).unwrap();
    assert!(
        cat["repositories"].as_array().unwrap().iter().any(|r| r == "e2e/tags"),
        "_catalog lacks e2e/tags: {cat}"
    );

    // skopeo delete resolves the tag and DELETEs the manifest by digest: every tag
    // pointing at it goes away.
    run_ok(sk.cmd().args(["delete", "--tls-verify=false"]).arg(format!("docker://{}", reg.image("e2e/tags", "two"))));
    let path = format!("/v2/e2e/tags/manifests/{}", img.manifest.digest);
    let r = reg.get(&path, &[("Accept", MANIFEST_ACCEPT)]);
    assert_eq!(r.status, 404, "manifest still served after delete:\n{}", r.describe());
    for t in ["one", "two", "three"] {
        let r = reg.head(&format!("/v2/e2e/tags/manifests/{t}"), &[("Accept", MANIFEST_ACCEPT)]);
        assert_eq!(r.status, 404, "tag {t} still resolves after its manifest was deleted");
    }
    let o = run(sk.cmd().args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{}", reg.image("e2e/tags", "one"))));
    assert!(!o.success(), "skopeo still finds the deleted image:\n{}", o.stdout);
}

/// With fsync (the default), a push's metadata lasts through the write-ahead journal
/// (`<data>/journal`): skopeo pushes, the server stops without emptying the journal, and
/// the restart replays it; the image then comes back whole by tag and by digest.
#[test]
fn skopeo_push_to_an_fsync_registry_is_replayed_after_a_restart() {
    let reg = Registry::start_specreg_with(&["--insecure-http"]);
    let sk = Skopeo::new();
    let work = TempTree::new("skopeo-journal");
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 1 << 20);
    let dst_ref = format!("docker://{}", reg.image("e2e/journal", "v1"));
    let pushed = sk.copy_digest(&[], &format!("oci:{}:v1", src.display()), &dst_ref);
    assert_eq!(pushed, img.manifest.digest);
    // The push went through the journal: it holds records (zero padding follows them).
    let journal = reg.data.join("journal");
    let before = std::fs::read(&journal).expect("the fsync mode keeps a journal");
    assert!(before.iter().any(|b| *b != 0), "no journal record after a push");

    let (status, reg) = reg.restart();
    assert!(status.success(), "{status:?}");
    // Replayed and emptied on open.
    assert!(std::fs::read(&journal).unwrap().iter().all(|b| *b == 0));
    let by_tag = reg.manifest("e2e/journal", "v1");
    assert_eq!(by_tag.digest, img.manifest.digest);
    assert_eq!(by_tag.bytes, img.manifest_bytes);
    reg.assert_complete("e2e/journal", &by_tag);
    assert_eq!(reg.blob("e2e/journal", &img.config.digest), img.config_bytes);
    let dst = work.join("dst");
    let back = format!("docker://{}", reg.image("e2e/journal", "v1"));
    sk.copy(&[], &back, &format!("oci:{}:copy", dst.display()));
    let out = OciLayout::open(&dst);
    let src_layout = OciLayout::open(&src);
    for d in img.blob_digests() {
        assert_eq!(out.blob(&d), src_layout.blob(&d), "blob {d} differs after the restart");
    }
}
