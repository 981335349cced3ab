//! buildah (root, private vfs storage) building images FROM scratch and pushing
//! them, alone and as a manifest list (`buildah manifest push --all`), to
//! specreg. Proven by digests and by the file contents of the served layers.

mod support;

use support::*;

/// Build a FROM-scratch image for `arch` holding /marker.txt = `marker`;
/// returns the image ID.
fn build(b: &Buildah, work: &std::path::Path, arch: &str, marker: &str, name: &str) -> String {
    let ctx = work.join(format!("ctx-{arch}"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("marker.txt"), marker).unwrap();
    let policy = b.policy();
    let ctr = run_ok(b.cmd().args(["from", "--signature-policy", policy.to_str().unwrap(), "scratch"]))
        .trim()
        .to_string();
    run_ok(b.cmd().args(["copy", &ctr]).arg(ctx.join("marker.txt")).arg("/marker.txt"));
    run_ok(b.cmd().args(["config", "--arch", arch, "--os", "linux", "--cmd", "/marker.txt", &ctr]));
    let id = run_ok(b.cmd().args(["commit", "--signature-policy", policy.to_str().unwrap(), "--format", "oci", &ctr, name]))
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    run_ok(b.cmd().args(["rm", &ctr]));
    id
}

/// The registry's layers of manifest `m` contain /marker.txt == `marker`.
fn assert_marker(reg: &Registry, repo: &str, m: &FetchedManifest, marker: &str) {
    let layers = m.json["layers"].as_array().expect("layers");
    let found = layers.iter().any(|l| {
        let blob = reg.blob(repo, l["digest"].as_str().unwrap());
        layer_files(&blob)
            .iter()
            .any(|(p, c)| p == "marker.txt" && c == marker.as_bytes())
    });
    assert!(found, "no layer of {} in {repo} holds marker.txt = {marker}", m.digest);
}

#[test]
fn buildah_build_and_push_by_digest() {
    let reg = Registry::start();
    let b = Buildah::new();
    let sk = Skopeo::new();
    let work = TempTree::new("buildah-one");
    let marker = unique_marker("buildah");
    let id = build(&b, work.path(), "amd64", &marker, "e2e-local/one");

    let target = format!("docker://{}", reg.image("e2e/buildah", "1"));
    let df = work.join("digest");
    let policy = b.policy();
    run_ok(
        b.cmd()
            .args(["push", "--tls-verify=false", "--signature-policy", policy.to_str().unwrap(), "--digestfile"])
            .arg(&df)
            .args(["e2e-local/one", &target]),
    );
    let pushed = std::fs::read_to_string(&df).unwrap().trim().to_string();
    let served = reg.manifest("e2e/buildah", "1");
    assert_eq!(served.digest, pushed, "specreg's digest differs from buildah's push");
    assert_eq!(served.media_type, OCI_MANIFEST);
    assert_eq!(
        served.json["config"]["digest"].as_str().unwrap(),
        format!("sha256:{id}"),
        "config digest = buildah's image ID"
    );
    reg.assert_complete("e2e/buildah", &served);
    assert_marker(&reg, "e2e/buildah", &served, &marker);
    assert_eq!(digest_of(&sk.inspect_raw(&target)), pushed);
}

#[test]
fn buildah_manifest_list_push_all() {
    let reg = Registry::start();
    let b = Buildah::new();
    let work = TempTree::new("buildah-list");
    let policy = b.policy();
    let policy = policy.to_str().unwrap();
    let mut markers = Vec::new();
    run_ok(b.cmd().args(["manifest", "create", "e2e-local/list"]));
    for arch in ["amd64", "arm64"] {
        let marker = unique_marker(&format!("buildah-{arch}"));
        let name = format!("e2e-local/img-{arch}");
        build(&b, work.path(), arch, &marker, &name);
        run_ok(b.cmd().args(["manifest", "add", "--arch", arch, "--os", "linux", "e2e-local/list", &name]));
        markers.push((arch, marker));
    }
    let target = format!("docker://{}", reg.image("e2e/buildah-list", "multi"));
    let df = work.join("digest");
    run_ok(
        b.cmd()
            .args(["manifest", "push", "--all", "--tls-verify=false", "--signature-policy", policy, "--digestfile"])
            .arg(&df)
            .args(["e2e-local/list", &target]),
    );
    let pushed = std::fs::read_to_string(&df).unwrap().trim().to_string();
    let served = reg.manifest("e2e/buildah-list", "multi");
    assert_eq!(served.digest, pushed, "specreg's digest for the list differs from buildah's");
    let children = served.json["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2);
    reg.assert_complete("e2e/buildah-list", &served);
    for (arch, marker) in &markers {
        let c = children
            .iter()
            .find(|c| c["platform"]["architecture"] == *arch)
            .unwrap_or_else(|| panic!("no {arch} entry in {}", served.json));
        let m = reg.manifest("e2e/buildah-list", c["digest"].as_str().unwrap());
        assert_marker(&reg, "e2e/buildah-list", &m, marker);
    }
}
