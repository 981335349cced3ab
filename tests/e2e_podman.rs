//! Root podman (private vfs storage and configs) pushing to and pulling from
//! specreg. Proven by digests: the digest podman reports for its push, the
//! digest specreg serves, skopeo's view, and the image ID (config digest) after
//! the pull.

mod support;

use support::*;

fn podman_image_field(p: &Podman, image: &str, field: &str) -> String {
    run_ok(p.cmd().args(["image", "inspect", "--format", field, image]))
        .trim()
        .to_string()
}

#[test]
fn podman_push_pull_roundtrip_by_digest() {
    let reg = Registry::start();
    let p = Podman::new();
    let sk = Skopeo::new();
    let work = TempTree::new("podman-img");
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 3 << 20);
    let policy = p.policy();
    let policy = policy.to_str().unwrap();

    // Load the locally built image into podman's private storage.
    let out = run_ok(p.cmd().args(["pull", "--signature-policy", policy]).arg(format!("oci:{}:v1", src.display())));
    // `podman pull` prints the image ID as its last stdout line.
    let local_id = out.lines().last().unwrap_or_default().trim().to_string();
    assert_eq!(
        format!("sha256:{local_id}"),
        img.config.digest,
        "podman's image ID must be our config digest"
    );

    let target = reg.image("e2e/podman", "1");
    run_ok(p.cmd().args(["tag", &local_id, &target]));
    let digestfile = work.join("push.digest");
    run_ok(
        p.cmd()
            .args(["push", "--tls-verify=false", "--signature-policy", policy, "--digestfile"])
            .arg(&digestfile)
            .arg(&target),
    );
    let pushed = std::fs::read_to_string(&digestfile).unwrap().trim().to_string();
    assert!(pushed.starts_with("sha256:"), "digestfile: {pushed:?}");

    // The registry serves exactly what podman pushed.
    let served = reg.manifest("e2e/podman", "1");
    assert_eq!(served.digest, pushed, "specreg's digest for the tag differs from podman's push");
    assert_eq!(served.json["config"]["digest"], img.config.digest.as_str());
    reg.assert_complete("e2e/podman", &served);
    let raw = sk.inspect_raw(&format!("docker://{target}"));
    assert_eq!(digest_of(&raw), pushed, "skopeo inspect --raw digest");
    // Layers, whatever compression podman chose, must still unpack to our diff_ids:
    // the config (with rootfs.diff_ids) is byte-identical.
    assert_eq!(reg.blob("e2e/podman", &img.config.digest), img.config_bytes);

    // Remove everything locally, then pull it back from the registry.
    run_ok(p.cmd().args(["rmi", "--all", "--force"]));
    let listed = run_ok(p.cmd().args(["images", "--quiet"]));
    assert!(listed.trim().is_empty(), "images left after rmi: {listed}");
    run_ok(p.cmd().args(["pull", "--tls-verify=false", "--signature-policy", policy, &target]));
    let id = podman_image_field(&p, &target, "{{.Id}}");
    assert_eq!(format!("sha256:{id}"), img.config.digest, "pulled image ID (config digest)");
    let digest = podman_image_field(&p, &target, "{{.Digest}}");
    assert_eq!(digest, pushed, "pulled image digest");
    let repo_digests = podman_image_field(&p, &target, "{{range .RepoDigests}}{{.}} {{end}}");
    let want = format!("{}/e2e/podman@{pushed}", reg.addr());
    assert!(
        repo_digests.split_whitespace().any(|d| d == want),
        "RepoDigests {repo_digests:?} lacks {want}"
    );

    // Pull by digest as well.
    run_ok(p.cmd().args(["rmi", "--all", "--force"]));
    let by_digest = format!("{}/e2e/podman@{pushed}", reg.addr());
    run_ok(p.cmd().args(["pull", "--tls-verify=false", "--signature-policy", policy, &by_digest]));
    let id = podman_image_field(&p, &by_digest, "{{.Id}}");
    assert_eq!(format!("sha256:{id}"), img.config.digest, "image pulled by digest");
}

/// podman pushing a docker schema2 manifest (`--format v2s2`).
#[test]
fn podman_push_v2s2() {
    let reg = Registry::start();
    let p = Podman::new();
    let work = TempTree::new("podman-s2");
    let src = work.join("src");
    let img = single_arch_layout(&src, "v1", 256 << 10);
    let policy = p.policy();
    let policy = policy.to_str().unwrap();
    run_ok(p.cmd().args(["pull", "--signature-policy", policy]).arg(format!("oci:{}:v1", src.display())));
    let target = reg.image("e2e/podman-s2", "s2");
    run_ok(p.cmd().args(["tag", &img.config.digest["sha256:".len()..], &target]));
    let digestfile = work.join("push.digest");
    run_ok(
        p.cmd()
            .args(["push", "--format", "v2s2", "--tls-verify=false", "--signature-policy", policy, "--digestfile"])
            .arg(&digestfile)
            .arg(&target),
    );
    let pushed = std::fs::read_to_string(&digestfile).unwrap().trim().to_string();
    let served = reg.manifest("e2e/podman-s2", "s2");
    assert_eq!(served.digest, pushed);
    assert_eq!(served.media_type, DOCKER_MANIFEST);
    assert_eq!(served.json["config"]["mediaType"], DOCKER_CONFIG);
    reg.assert_complete("e2e/podman-s2", &served);

    run_ok(p.cmd().args(["rmi", "--all", "--force"]));
    run_ok(p.cmd().args(["pull", "--tls-verify=false", "--signature-policy", policy, &target]));
    let id = podman_image_field(&p, &target, "{{.Id}}");
    assert_eq!(format!("sha256:{id}"), img.config.digest);
    assert_eq!(podman_image_field(&p, &target, "{{.Digest}}"), pushed);
}
