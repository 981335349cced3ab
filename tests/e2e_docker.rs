//! Docker (Debian's docker.io 20.10: dockerd + CLI) through a private dockerd
//! against specreg. Proven by digests: the digest `docker push` reports, the
//! digest specreg serves for the tag, RepoDigests and the image ID after a pull.

mod support;

use support::*;

fn inspect(d: &Dockerd, image: &str, format: &str) -> String {
    run_ok(d.docker().args(["image", "inspect", "--format", format, image]))
        .trim()
        .to_string()
}

/// Turn a locally built OCI layout into an image inside the private dockerd.
fn load_into_docker(d: &Dockerd, sk: &Skopeo, layout: &std::path::Path, tag: &str, name: &str) {
    let archive = d.dir().join(format!("{}.tar", unique_marker("archive")));
    sk.copy(
        &[],
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker-archive:{}:{name}", archive.display()),
    );
    let out = run_ok(d.docker().arg("load").arg("-i").arg(&archive));
    assert!(out.contains(name), "docker load output: {out}");
    std::fs::remove_file(&archive).unwrap();
}

/// The `digest: sha256:... size: N` that `docker push` prints for `tag`.
fn pushed_digest(push_output: &str, tag: &str) -> String {
    let line = push_output
        .lines()
        .find(|l| l.starts_with(&format!("{tag}: digest: sha256:")))
        .unwrap_or_else(|| panic!("no digest line in docker push output:\n{push_output}"));
    line.split_whitespace().nth(2).unwrap().to_string()
}

#[test]
fn docker_push_pull_roundtrip_by_digest() {
    let reg = Registry::start();
    let sk = Skopeo::new();
    let d = Dockerd::start(&[reg.addr()]);
    let work = TempTree::new("docker-img");
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 4 << 20);

    load_into_docker(&d, &sk, &src, "v1", "e2e-local/app:v1");
    assert_eq!(inspect(&d, "e2e-local/app:v1", "{{.Id}}"), img.config.digest, "loaded image ID");

    let target = reg.image("e2e/app", "1");
    run_ok(d.docker().args(["tag", "e2e-local/app:v1", &target]));
    let out = run_ok(d.docker().args(["push", &target]));
    let pushed = pushed_digest(&out, "1");

    let served = reg.manifest("e2e/app", "1");
    assert_eq!(served.digest, pushed, "specreg's digest for the tag differs from docker push's");
    assert_eq!(served.media_type, DOCKER_MANIFEST, "docker pushes schema2");
    assert_eq!(served.json["config"]["digest"], img.config.digest.as_str());
    reg.assert_complete("e2e/app", &served);
    assert_eq!(reg.blob("e2e/app", &img.config.digest), img.config_bytes);
    assert_eq!(
        inspect(&d, &target, "{{range .RepoDigests}}{{.}} {{end}}"),
        format!("{}/e2e/app@{pushed}", reg.addr()),
        "RepoDigests after push"
    );

    // Remove every local copy, then pull back by tag.
    run_ok(d.docker().args(["rmi", "--force", &target, "e2e-local/app:v1"]));
    let gone = run(d.docker().args(["image", "inspect", &img.config.digest]));
    assert!(!gone.success(), "image still present after docker rmi");
    let out = run_ok(d.docker().args(["pull", &target]));
    assert!(out.contains(&format!("Digest: {pushed}")), "docker pull output:\n{out}");
    assert_eq!(inspect(&d, &target, "{{.Id}}"), img.config.digest, "pulled image ID");
    assert_eq!(
        inspect(&d, &target, "{{range .RepoDigests}}{{.}} {{end}}"),
        format!("{}/e2e/app@{pushed}", reg.addr()),
        "RepoDigests after pull"
    );
    // The layers were really unpacked: docker recorded our diff_ids.
    let layers = inspect(&d, &target, "{{range .RootFS.Layers}}{{.}} {{end}}");
    assert_eq!(layers.split_whitespace().collect::<Vec<_>>(), img.diff_ids);

    // And by digest.
    run_ok(d.docker().args(["rmi", "--force", &target]));
    let by_digest = format!("{}/e2e/app@{pushed}", reg.addr());
    run_ok(d.docker().args(["pull", &by_digest]));
    assert_eq!(inspect(&d, &by_digest, "{{.Id}}"), img.config.digest, "image pulled by digest");
}

/// Docker pulling an OCI index pushed by skopeo: dockerd picks the linux/amd64
/// child, and the RepoDigest is the index digest.
#[test]
fn docker_pulls_multiarch_oci_index() {
    if std::env::consts::ARCH != "x86_64" {
        panic!("this test expects an x86_64 host (it checks that docker selects the amd64 child)");
    }
    let reg = Registry::start();
    let sk = Skopeo::new();
    let d = Dockerd::start(&[reg.addr()]);
    let work = TempTree::new("docker-multi");
    let src = work.join("src");
    let idx = multi_arch_layout(&src, "multi", 256 << 10);
    let target = reg.image("e2e/multi", "1");
    let pushed = sk.copy_digest(&["--all"], &format!("oci:{}:multi", src.display()), &format!("docker://{target}"));
    assert_eq!(pushed, idx.index.digest);

    let out = run_ok(d.docker().args(["pull", &target]));
    assert!(out.contains(&format!("Digest: {}", idx.index.digest)), "docker pull output:\n{out}");
    let amd64 = &idx.children[0];
    assert_eq!(amd64.arch, "amd64");
    assert_eq!(inspect(&d, &target, "{{.Id}}"), amd64.config.digest, "docker must pick linux/amd64");
    assert_eq!(inspect(&d, &target, "{{.Architecture}}"), "amd64");
    assert_eq!(
        inspect(&d, &target, "{{range .RepoDigests}}{{.}} {{end}}"),
        format!("{}/e2e/multi@{}", reg.addr(), idx.index.digest)
    );
}

/// `docker manifest create` + `docker manifest push` (the CLI talks to the
/// registry itself): a docker manifest list over two pushed images.
#[test]
fn docker_manifest_create_and_push() {
    let reg = Registry::start();
    let sk = Skopeo::new();
    let d = Dockerd::start(&[reg.addr()]);
    let work = TempTree::new("docker-manifest");
    let src = work.join("src");
    let idx = multi_arch_layout(&src, "multi", 64 << 10);

    // Push each child as its own schema2 image, as CI jobs building per arch do.
    let mut child_digests = Vec::new();
    for c in &idx.children {
        let t = reg.image("e2e/parts", &c.arch);
        let dg = sk.copy_digest(
            &["--format", "v2s2"],
            &format!("oci:{}:{}", src.display(), c.arch),
            &format!("docker://{t}"),
        );
        child_digests.push((c.arch.clone(), dg));
    }

    let list = reg.image("e2e/parts", "list");
    let mut create = d.docker();
    create.args(["manifest", "create", "--insecure", &list]);
    for (arch, _) in &child_digests {
        create.arg(reg.image("e2e/parts", arch));
    }
    run_ok(&mut create);
    for (arch, _) in &child_digests {
        run_ok(d.docker().args(["manifest", "annotate", "--arch", arch, "--os", "linux", &list, &reg.image("e2e/parts", arch)]));
    }
    let out = run_ok(d.docker().args(["manifest", "push", "--insecure", &list]));
    let pushed = out
        .lines()
        .rev()
        .find(|l| l.trim().starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in docker manifest push output:\n{out}"))
        .trim()
        .to_string();

    let served = reg.manifest("e2e/parts", "list");
    assert_eq!(served.digest, pushed, "specreg's digest for the list differs from docker's");
    assert_eq!(served.media_type, DOCKER_LIST);
    let mut got: Vec<(String, String)> = served.json["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want = child_digests.clone();
    want.sort();
    assert_eq!(got, want, "list entries must be the pushed per-arch manifests");
    reg.assert_complete("e2e/parts", &served);
}
