//! Publishing end to end: `specreg promote` and `specreg cleanup-tags` against real
//! registries (specreg, and distribution with htpasswd auth), checked by digest with
//! skopeo and by the registries' own answers. Docker Hub's and quay's tag APIs are
//! exercised against local stand-ins (tests/support/tag_api.rs) acting on a real registry.

mod support;

use std::fs;
use std::process::Command;

use serde_json::{json, Value};
use support::tag_api::TagApi;
use support::*;

const ARTIFACT_CONFIG: &str = "application/vnd.example.sbom.config.v1+json";
const ARTIFACT_TYPE: &str = "application/vnd.example.sbom.v1";

/// `specreg ARGS` with a private, empty docker config (never the host's).
fn specreg(work: &TempTree, args: &[&str]) -> Output {
    let docker_config = work.join("docker-config");
    fs::create_dir_all(&docker_config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_specreg"));
    cmd.args(args)
        .env("DOCKER_CONFIG", &docker_config)
        .env_remove("REGISTRY_AUTH_FILE")
        .env("SPECREG_LOG", "warn")
        .env("NO_COLOR", "1");
    run(&mut cmd)
}

/// Registry access flags for `reg`: plain HTTP, and its Basic credentials from a file
/// that ends with a newline (which must not become part of the password).
fn access(work: &TempTree, reg: &Registry) -> Vec<String> {
    let mut a = vec!["--insecure".to_owned()];
    if let Some((user, password)) = creds_of(reg) {
        let file = work.join("registry-creds");
        fs::write(&file, format!("{user}:{password}\n")).unwrap();
        a.extend(["--creds-file".to_owned(), file.display().to_string()]);
    }
    a
}

fn creds_of(reg: &Registry) -> Option<(String, String)> {
    if reg.kind == "distribution" && reg.tags_auth_needed() {
        Some((DIST_USER.to_owned(), DIST_PASSWORD.to_owned()))
    } else {
        None
    }
}

const DIST_USER: &str = "publisher";
const DIST_PASSWORD: &str = "s3cret:with:colons";

trait AuthProbe {
    fn tags_auth_needed(&self) -> bool;
}

impl AuthProbe for Registry {
    /// Whether the registry refuses an anonymous request.
    fn tags_auth_needed(&self) -> bool {
        self.send_exact("GET", "/v2/", &[], b"").status == 401
    }
}

fn push_blob(reg: &Registry, repo: &str, bytes: &[u8]) -> String {
    let digest = digest_of(bytes);
    // Open a session, then one PUT (distribution 2.8 does not read a POST body).
    let r = reg.send("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_eq!(r.status, 202, "POST upload to {repo}:\n{}", r.describe());
    let location = r.header("location").expect("upload Location").to_owned();
    let path = location.split_once("://").map(|(_, rest)| &rest[rest.find('/').unwrap()..]).unwrap_or(&location);
    let sep = if path.contains('?') { '&' } else { '?' };
    let r = reg.send("PUT", &format!("{path}{sep}digest={digest}"), &[("Content-Type", "application/octet-stream")], bytes);
    assert_eq!(r.status, 201, "PUT blob to {repo}:\n{}", r.describe());
    digest
}

fn put_manifest(reg: &Registry, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> String {
    let r = reg.send("PUT", &format!("/v2/{repo}/manifests/{reference}"), &[("Content-Type", media_type)], bytes);
    assert_eq!(r.status, 201, "PUT manifest {repo}:{reference}:\n{}", r.describe());
    digest_of(bytes)
}

/// What a tag resolves to (`None`: 404).
fn resolve(reg: &Registry, repo: &str, tag: &str) -> Option<String> {
    let r = reg.head(&format!("/v2/{repo}/manifests/{tag}"), &[("Accept", MANIFEST_ACCEPT)]);
    match r.status {
        200 => Some(r.header("docker-content-digest").expect("digest header").to_owned()),
        404 => None,
        s => panic!("HEAD {repo}:{tag} answered {s}:\n{}", r.describe()),
    }
}

/// One manifest to publish: its bytes and media type (blobs already pushed).
struct Pushed {
    media_type: String,
    bytes: Vec<u8>,
    digest: String,
}

/// Pushes every blob of a layout image into `repo` and returns its manifest.
fn push_image_blobs(reg: &Registry, repo: &str, layout: &std::path::Path, img: &BuiltImage) {
    push_blob(reg, repo, &img.config_bytes);
    for l in &img.layers {
        let bytes = fs::read(layout.join("blobs/sha256").join(&l.digest["sha256:".len()..])).unwrap();
        push_blob(reg, repo, &bytes);
    }
}

/// The five kinds of manifest a gate may publish, each pushed (blobs and manifest by
/// digest) into its own repository under `base`.
fn push_kinds(reg: &Registry, work: &TempTree, base: &str) -> Vec<(String, Pushed)> {
    let layout = work.join("layout");
    let w = OciLayoutWriter::new(&layout);
    let marker = unique_marker("publish");
    let mut out = Vec::new();

    // An OCI image.
    let img = w.add_image("amd64", &marker, &format!("{marker}-single"), 4096);
    let repo = format!("{base}/single");
    push_image_blobs(reg, &repo, &layout, &img);
    put_manifest(reg, &repo, &img.manifest.digest, OCI_MANIFEST, &img.manifest_bytes);
    out.push((repo, Pushed { media_type: OCI_MANIFEST.into(), digest: img.manifest.digest.clone(), bytes: img.manifest_bytes.clone() }));

    // A multi-arch OCI index.
    let a = w.add_image("amd64", &marker, &format!("{marker}-amd64"), 2048);
    let b = w.add_image("arm64", &marker, &format!("{marker}-arm64"), 2048);
    let idx = w.add_index(&[a.clone(), b.clone()]);
    let repo = format!("{base}/multi");
    for c in [&a, &b] {
        push_image_blobs(reg, &repo, &layout, c);
        put_manifest(reg, &repo, &c.manifest.digest, OCI_MANIFEST, &c.manifest_bytes);
    }
    put_manifest(reg, &repo, &idx.index.digest, OCI_INDEX, &idx.index_bytes);
    out.push((repo, Pushed { media_type: OCI_INDEX.into(), digest: idx.index.digest.clone(), bytes: idx.index_bytes.clone() }));

    // An OCI artifact (non-image config, artifactType).
    let repo = format!("{base}/artifact");
    let cfg = br#"{"tool":"specreg-e2e"}"#.to_vec();
    let payload = format!("sbom of {marker}").into_bytes();
    let (cd, pd) = (push_blob(reg, &repo, &cfg), push_blob(reg, &repo, &payload));
    let bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": ARTIFACT_CONFIG, "digest": cd, "size": cfg.len()},
        "layers": [{"mediaType": "application/spdx+json", "digest": pd, "size": payload.len()}],
        "annotations": {"org.opencontainers.image.created": "2024-05-01T00:00:00Z"}
    }))
    .unwrap();
    let digest = put_manifest(reg, &repo, &digest_of(&bytes), OCI_MANIFEST, &bytes);
    out.push((repo, Pushed { media_type: OCI_MANIFEST.into(), digest, bytes }));

    // A Docker schema 2 image (its own media types must survive the retag).
    let repo = format!("{base}/docker");
    let img = w.add_image("amd64", &marker, &format!("{marker}-docker"), 1024);
    push_image_blobs(reg, &repo, &layout, &img);
    let bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": img.config.digest, "size": img.config.size},
        "layers": img.layers.iter().map(|l| json!({"mediaType": DOCKER_LAYER_GZIP, "digest": l.digest, "size": l.size})).collect::<Vec<_>>()
    }))
    .unwrap();
    let digest = put_manifest(reg, &repo, &digest_of(&bytes), DOCKER_MANIFEST, &bytes);
    out.push((repo, Pushed { media_type: DOCKER_MANIFEST.into(), digest, bytes }));

    // A Docker manifest list over two Docker schema 2 images.
    let repo = format!("{base}/dockerlist");
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let img = w.add_image(arch, &marker, &format!("{marker}-dl-{arch}"), 1024);
        push_image_blobs(reg, &repo, &layout, &img);
        let child = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": img.config.digest, "size": img.config.size},
            "layers": img.layers.iter().map(|l| json!({"mediaType": DOCKER_LAYER_GZIP, "digest": l.digest, "size": l.size})).collect::<Vec<_>>()
        }))
        .unwrap();
        let d = put_manifest(reg, &repo, &digest_of(&child), DOCKER_MANIFEST, &child);
        entries.push(json!({"mediaType": DOCKER_MANIFEST, "digest": d, "size": child.len(),
                            "platform": {"architecture": arch, "os": "linux"}}));
    }
    let bytes = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": entries})).unwrap();
    let digest = put_manifest(reg, &repo, &digest_of(&bytes), DOCKER_LIST, &bytes);
    out.push((repo, Pushed { media_type: DOCKER_LIST.into(), digest, bytes }));
    out
}

/// skopeo's view: the raw manifest's digest.
fn skopeo_digest(sk: &Skopeo, reg: &Registry, repo: &str, tag: &str) -> String {
    let mut cmd = sk.cmd();
    cmd.args(["inspect", "--raw", "--tls-verify=false"]);
    let creds;
    if let Some((u, p)) = creds_of(reg) {
        creds = format!("{u}:{p}");
        cmd.args(["--creds", &creds]);
    }
    cmd.arg(format!("docker://{}", reg.image(repo, tag)));
    let o = run(&mut cmd);
    assert!(o.success(), "skopeo inspect {repo}:{tag}\n{}", o.describe());
    digest_of(&o.stdout_bytes)
}

/// The whole promote story on one registry: wrong digests stop everything; OCI image,
/// OCI index, OCI artifact, Docker image and Docker manifest list move by manifest;
/// temporary tags go; other tags on the same digests stay.
fn promote_suite(reg: &Registry) {
    let work = TempTree::new("publish");
    let sk = Skopeo::new();
    let kinds = push_kinds(reg, &work, "gate");
    let addr = reg.addr().to_owned();
    let acc = access(&work, reg);
    let acc: Vec<&str> = acc.iter().map(String::as_str).collect();

    // Gate state: temporary tags for two final tags, a "keep" tag on the same digest,
    // and, for the single image, an older final tag that must move.
    for (repo, p) in &kinds {
        for t in ["change_42_latest", "change_42_1.0", "keep"] {
            put_manifest(reg, repo, t, &p.media_type, &p.bytes);
        }
    }
    let (single_repo, single) = &kinds[0];
    let (multi_repo, multi) = &kinds[1];
    put_manifest(reg, single_repo, "latest", OCI_MANIFEST, &{
        // An unrelated older manifest: the multi-arch index's first child.
        let child = &reg.manifest(multi_repo, &multi.digest).json["manifests"][0]["digest"];
        let m = reg.manifest(multi_repo, child.as_str().unwrap());
        push_image_blobs_from(reg, multi_repo, single_repo, &m);
        m.bytes
    });

    // 1. A wrong --expect-digest: refused before anything moves.
    let wrong = digest_of(b"not what the gate tested");
    let single_loc = format!("{addr}/{single_repo}");
    let mut args = vec!["promote", "--repo", &single_loc, "--tags", "latest,1.0", "--change", "42", "--expect-digest", &wrong];
    args.extend(&acc);
    let o = specreg(&work, &args);
    assert!(!o.success(), "promote with a wrong digest must fail\n{}", o.describe());
    assert!(o.stderr.contains("nothing was promoted") && o.stderr.contains("the gate tested"), "{}", o.describe());
    assert_ne!(resolve(reg, single_repo, "latest").as_deref(), Some(single.digest.as_str()));
    assert_eq!(resolve(reg, single_repo, "1.0"), None);
    assert_eq!(resolve(reg, single_repo, "change_42_latest").as_deref(), Some(single.digest.as_str()));

    // 2. The single image, with the right digest.
    let mut args = vec!["promote", "--repo", &single_loc, "--tags", "latest,1.0", "--change", "42", "--expect-digest", &single.digest];
    args.extend(&acc);
    let o = specreg(&work, &args);
    assert!(o.success(), "{}", o.describe());

    // 3. The others as one buildset, from a list file with the tested digests.
    let entries: Vec<Value> = kinds[1..]
        .iter()
        .map(|(repo, p)| json!({"repository": format!("{addr}/{repo}"), "tags": ["latest", "1.0"], "digest": p.digest}))
        .collect();
    let list = json!({ "images": entries });
    let list_file = work.join("images.json");
    fs::write(&list_file, list.to_string()).unwrap();
    let list_path = list_file.display().to_string();
    let mut args = vec!["promote", "--images", &list_path, "--temp-prefix", "change_42_"];
    args.extend(&acc);
    let o = specreg(&work, &args);
    assert!(o.success(), "{}", o.describe());
    assert!(o.stdout.contains("specreg promote: 8 tag(s)"), "{}", o.describe());
    // A retried job finds the temporary tags gone and the final tags on the tested
    // digests: nothing to do, and no error.
    let o = specreg(&work, &args);
    assert!(o.success(), "a retried promote must succeed\n{}", o.describe());
    assert!(o.stdout.contains("specreg promote: 0 tag(s)"), "{}", o.describe());

    for (repo, p) in &kinds {
        for t in ["latest", "1.0"] {
            let m = reg.manifest(repo, t);
            assert_eq!(m.digest, p.digest, "{repo}:{t}");
            assert_eq!(m.bytes, p.bytes, "{repo}:{t}: same bytes as the temporary tag");
            assert_eq!(m.media_type, p.media_type, "{repo}:{t}: same media type");
            assert_eq!(skopeo_digest(&sk, reg, repo, t), p.digest, "skopeo sees {repo}:{t}");
        }
        for t in ["change_42_latest", "change_42_1.0"] {
            assert_eq!(resolve(reg, repo, t), None, "{repo}:{t} must be gone");
        }
        assert_eq!(resolve(reg, repo, "keep").as_deref(), Some(p.digest.as_str()), "{repo}:keep untouched");
        let mut tags = reg.tags(repo);
        tags.sort();
        assert_eq!(tags, ["1.0", "keep", "latest"], "{repo}: tags after promote");
        // Every blob still reachable: nothing was moved or lost.
        reg.assert_complete(repo, &reg.manifest(repo, "latest"));
    }
}

/// Copies the blobs of `m` (an image manifest in `from`) into `to`.
fn push_image_blobs_from(reg: &Registry, from: &str, to: &str, m: &FetchedManifest) {
    let mut descs = vec![m.json["config"].clone()];
    descs.extend(m.json["layers"].as_array().cloned().unwrap_or_default());
    for d in descs {
        let bytes = reg.blob(from, d["digest"].as_str().unwrap());
        push_blob(reg, to, &bytes);
    }
}

#[test]
fn promote_on_specreg() {
    let reg = Registry::start_specreg();
    promote_suite(&reg);
}

#[test]
fn promote_on_distribution_with_htpasswd() {
    let reg = Registry::start_distribution_htpasswd(DIST_USER, DIST_PASSWORD);
    assert!(reg.tags_auth_needed(), "distribution must demand credentials");
    promote_suite(&reg);
}

/// Makes the registry fail, for real, to store `repo:tag`: the path where it would write
/// the tag is taken by something it cannot replace.
fn block_tag_write(reg: &Registry, repo: &str, tag: &str) {
    match reg.kind {
        // specreg writes a tag as a file renamed into meta/repos/<repo>/_tags/<tag>; a
        // non-empty directory there makes the rename fail.
        "specreg" => fs::create_dir_all(reg.data.join(format!("meta/repos/{repo}/_tags/{tag}/blocked"))).unwrap(),
        // distribution links a tag into _manifests/tags/<tag>/index/ before writing its
        // current/link: a regular file named `index` makes the first step fail, while a
        // GET (which reads current/link only) still finds no tag.
        _ => {
            let dir = reg.data.join(format!("docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("index"), b"blocked").unwrap();
        }
    }
}

/// A buildset of three repositories where the third final tag cannot be stored: the two
/// moved before it are put back (one to its old manifest, one removed), the error says
/// so, and every temporary tag is still there for another attempt.
fn rollback_suite(reg: &Registry) {
    let work = TempTree::new("publish-rollback");
    let addr = reg.addr().to_owned();
    let acc = access(&work, reg);
    let acc: Vec<&str> = acc.iter().map(String::as_str).collect();
    let kinds = push_kinds(reg, &work, "rb");
    // a = single (has an old "latest"), b = multi (no "latest"), c = artifact (blocked).
    let (a, b, c) = (&kinds[0], &kinds[1], &kinds[2]);
    let old = &kinds[3].1; // the Docker image, as a's previous "latest"
    push_image_blobs_from(reg, &kinds[3].0, &a.0, &reg.manifest(&kinds[3].0, &old.digest));
    put_manifest(reg, &a.0, "latest", &old.media_type, &old.bytes);
    for (repo, p) in [a, b, c] {
        put_manifest(reg, repo, "check_latest", &p.media_type, &p.bytes);
    }
    block_tag_write(reg, &c.0, "latest");

    let entries: Vec<Value> = [a, b, c]
        .iter()
        .map(|(repo, p)| json!({"repository": format!("{addr}/{repo}"), "tags": ["latest"], "digest": p.digest}))
        .collect();
    let list = json!({ "images": entries });
    let list_file = work.join("images.json");
    fs::write(&list_file, list.to_string()).unwrap();
    let list_path = list_file.display().to_string();
    let mut args = vec!["promote", "--images", &list_path, "--pipeline", "check"];
    args.extend(&acc);
    let o = specreg(&work, &args);
    assert!(!o.success(), "promote must fail when a PUT fails\n{}", o.describe());
    let err = &o.stderr;
    assert!(err.contains(&format!("promote of {addr}/{}:latest failed", c.0)), "{}", o.describe());
    assert!(err.contains(&format!("{addr}/{}:latest restored to {}", a.0, old.digest)), "{}", o.describe());
    assert!(err.contains(&format!("{addr}/{}:latest removed", b.0)), "{}", o.describe());

    assert_eq!(resolve(reg, &a.0, "latest").as_deref(), Some(old.digest.as_str()), "a:latest back to its old manifest");
    assert_eq!(reg.manifest(&a.0, "latest").media_type, DOCKER_MANIFEST, "restored with its own media type");
    assert_eq!(resolve(reg, &b.0, "latest"), None, "b:latest did not exist before");
    for (repo, p) in [a, b, c] {
        assert_eq!(resolve(reg, repo, "check_latest").as_deref(), Some(p.digest.as_str()), "{repo}: temporary tag kept");
    }
}

#[test]
fn promote_rolls_back_on_specreg() {
    let reg = Registry::start_specreg();
    rollback_suite(&reg);
}

#[test]
fn promote_rolls_back_on_distribution() {
    let reg = Registry::start_distribution_htpasswd(DIST_USER, DIST_PASSWORD);
    rollback_suite(&reg);
}

/// Promote through Docker Hub's and quay's tag APIs: the temporary tag is removed by the
/// service's own endpoint (seen by the stand-in, with its auth scheme) and is gone from
/// the registry; nothing else is deleted.
#[test]
fn promote_deletes_through_hub_and_quay_tag_apis() {
    let reg = Registry::start_specreg();
    let work = TempTree::new("publish-apis");
    let kinds = push_kinds(&reg, &work, "org");
    let (repo, p) = &kinds[0]; // org/single
    let addr = reg.addr().to_owned();
    let loc = format!("{addr}/{repo}");

    let hub = TagApi::hub(&addr, "hubuser", "hub-password");
    let pw = work.join("hub-password");
    fs::write(&pw, "hubuser:hub-password\n").unwrap();
    for t in ["change_5_latest", "keep"] {
        put_manifest(&reg, repo, t, &p.media_type, &p.bytes);
    }
    let hub_url = hub.url();
    let pw_path = pw.display().to_string();
    let o = specreg(&work, &[
        "promote", "--repo", &loc, "--tags", "latest", "--change", "5", "--insecure",
        "--tag-api", "hub", "--hub-api", &hub_url, "--creds-file", &pw_path,
    ]);
    assert!(o.success(), "{}", o.describe());
    let seen = hub.seen();
    assert!(seen.iter().any(|s| s.method == "POST" && s.path == "/v2/users/login/" && s.status == 200), "{seen:?}");
    let del = seen.iter().find(|s| s.method == "DELETE").unwrap_or_else(|| panic!("no DELETE: {seen:?}"));
    assert_eq!(del.path, format!("/v2/repositories/{repo}/tags/change_5_latest/"));
    assert!(del.authorization.as_deref().is_some_and(|a| a.starts_with("JWT jwt-")), "{del:?}");
    assert_eq!(del.status, 204);
    assert_eq!(resolve(&reg, repo, "change_5_latest"), None);
    assert_eq!(resolve(&reg, repo, "latest").as_deref(), Some(p.digest.as_str()));
    assert_eq!(resolve(&reg, repo, "keep").as_deref(), Some(p.digest.as_str()));

    let quay = TagApi::quay(&addr, "quay-token-123");
    let tok = work.join("quay-token");
    fs::write(&tok, "quay-token-123\n").unwrap();
    put_manifest(&reg, repo, "change_6_2.0", &p.media_type, &p.bytes);
    let (quay_url, tok_path) = (quay.url(), tok.display().to_string());
    let o = specreg(&work, &[
        "promote", "--repo", &loc, "--tags", "2.0", "--change", "6", "--insecure",
        "--tag-api", "quay", "--quay-api", &quay_url, "--quay-token-file", &tok_path,
    ]);
    assert!(o.success(), "{}", o.describe());
    let seen = quay.seen();
    let del = seen.iter().find(|s| s.method == "DELETE").unwrap_or_else(|| panic!("no DELETE: {seen:?}"));
    assert_eq!(del.path, format!("/api/v1/repository/{repo}/tag/change_6_2.0"));
    assert_eq!(del.authorization.as_deref(), Some("Bearer quay-token-123"));
    assert_eq!(del.status, 204);
    assert_eq!(resolve(&reg, repo, "change_6_2.0"), None);
    assert_eq!(resolve(&reg, repo, "2.0").as_deref(), Some(p.digest.as_str()));
    assert_eq!(resolve(&reg, repo, "keep").as_deref(), Some(p.digest.as_str()));
}

/// A config with `created` at `when` and a one-layer image on it; returns the manifest.
fn push_dated_image(reg: &Registry, repo: &str, when: &str, marker: &str) -> Pushed {
    let layer = pseudo_random_bytes(marker, 512);
    let ld = push_blob(reg, repo, &layer);
    let cfg = serde_json::to_vec(&json!({
        "created": when, "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest_of(&layer)]},
        "config": {"Labels": {"marker": marker}}
    }))
    .unwrap();
    let cd = push_blob(reg, repo, &cfg);
    let bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": cfg.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}]
    }))
    .unwrap();
    let digest = put_manifest(reg, repo, &digest_of(&bytes), OCI_MANIFEST, &bytes);
    Pushed { media_type: OCI_MANIFEST.into(), bytes, digest }
}

fn rfc3339(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap();
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// cleanup-tags on the OCI API: 130 matching tags over several pages (the registry is
/// asked for pages of 25), ages from the images' `created`: only the stale matching
/// ones go.
#[test]
fn cleanup_tags_by_image_age_with_pagination() {
    let reg = Registry::start_specreg();
    let work = TempTree::new("publish-cleanup");
    let repo = "sweep/app";
    let now = now_unix();
    // 25 hours old, 2 days and 1 second old, 1 hour old.
    let old = push_dated_image(&reg, repo, &rfc3339(now - 25 * 3600), &unique_marker("old"));
    let older = push_dated_image(&reg, repo, &rfc3339(now - 2 * 86400 - 1), &unique_marker("older"));
    let fresh = push_dated_image(&reg, repo, &rfc3339(now - 3600), &unique_marker("fresh"));
    let mut expect_gone = Vec::new();
    let mut expect_kept = vec!["latest".to_owned(), "stable".to_owned()];
    for i in 0..130 {
        let (p, stale) = match i % 3 {
            0 => (&old, true),
            1 => (&older, true),
            _ => (&fresh, false),
        };
        let t = format!("change_{i}_latest");
        put_manifest(&reg, repo, &t, &p.media_type, &p.bytes);
        if stale { expect_gone.push(t) } else { expect_kept.push(t) }
    }
    put_manifest(&reg, repo, "latest", &old.media_type, &old.bytes);
    put_manifest(&reg, repo, "stable", &older.media_type, &older.bytes);
    assert_eq!(reg.tags(repo).len(), 132);

    let loc = format!("{}/{repo}", reg.addr());
    // A dry run names the same tags and removes none.
    let o = specreg(&work, &["cleanup-tags", "--repo", &loc, "--older-than", "24h", "--pattern", "change_*", "--page-size", "25", "--insecure", "--dry-run"]);
    assert!(o.success(), "{}", o.describe());
    assert!(o.stdout.contains(&format!("132 tags, 130 matching, {} would remove", expect_gone.len())), "{}", o.describe());
    assert_eq!(reg.tags(repo).len(), 132, "a dry run removes nothing");
    let o = specreg(&work, &["cleanup-tags", "--repo", &loc, "--older-than", "24h", "--pattern", "change_*", "--page-size", "25", "--insecure"]);
    assert!(o.success(), "{}", o.describe());
    assert!(o.stdout.contains(&format!("132 tags, 130 matching, {} removed", expect_gone.len())), "{}", o.describe());
    let mut left = reg.tags(repo);
    left.sort();
    expect_kept.sort();
    assert_eq!(left, expect_kept);
    for t in &expect_gone {
        assert!(o.stdout.contains(&format!("removed {loc}:{t}\n")), "{t} not reported\n{}", o.describe());
    }
    // The stale images' manifests are still there for their other tags.
    assert_eq!(resolve(&reg, repo, "latest").as_deref(), Some(old.digest.as_str()));
}

/// cleanup-tags through the hub and quay stand-ins: ages come from the services'
/// `last_updated` / `last_modified`, 150 tags take two pages of 100.
#[test]
fn cleanup_tags_through_hub_and_quay_apis() {
    let reg = Registry::start_specreg();
    let work = TempTree::new("publish-cleanup-apis");
    let now = now_unix();
    for (flavour, repo) in [("hub", "org/hubapp"), ("quay", "org/quayapp")] {
        let img = push_dated_image(&reg, repo, &rfc3339(now), &unique_marker(flavour));
        let api = if flavour == "hub" { TagApi::hub(reg.addr(), "u", "p") } else { TagApi::quay(reg.addr(), "tok") };
        let mut gone = Vec::new();
        for i in 0..150 {
            let t = format!("change_{i}_x");
            put_manifest(&reg, repo, &t, &img.media_type, &img.bytes);
            // The service says: even tags last set two days ago, odd ones an hour ago.
            let age = if i % 2 == 0 { 2 * 86400 } else { 3600 };
            api.set_updated(repo, &t, now - age);
            if i % 2 == 0 {
                gone.push(t);
            }
        }
        put_manifest(&reg, repo, "latest", &img.media_type, &img.bytes);
        api.set_updated(repo, "latest", now - 10 * 86400);
        let secret = work.join(format!("{flavour}-secret"));
        fs::write(&secret, if flavour == "hub" { "u:p\n" } else { "tok\n" }).unwrap();
        let (url, secret) = (api.url(), secret.display().to_string());
        let loc = format!("{}/{repo}", reg.addr());
        let mut args = vec!["cleanup-tags", "--repo", &loc, "--older-than", "1d", "--pattern", "change_*", "--insecure", "--tag-api", flavour];
        if flavour == "hub" {
            args.extend(["--hub-api", &url, "--creds-file", &secret]);
        } else {
            args.extend(["--quay-api", &url, "--quay-token-file", &secret]);
        }
        let o = specreg(&work, &args);
        assert!(o.success(), "{}", o.describe());
        assert!(o.stdout.contains("151 tags, 150 matching, 75 removed"), "{}", o.describe());
        let left = reg.tags(repo);
        assert_eq!(left.len(), 76, "{left:?}");
        for t in &gone {
            assert!(!left.contains(t), "{t} should be gone");
        }
        assert!(left.contains(&"latest".to_owned()));
        let lists = api.seen().iter().filter(|s| s.method == "GET" && s.status == 200).count();
        assert_eq!(lists, 2, "{flavour}: 150 tags are two pages of 100");
        let deletes = api.seen().iter().filter(|s| s.method == "DELETE" && s.status == 204).count();
        assert_eq!(deletes, 75, "{flavour}: each stale tag deleted through the API");
    }
}

/// The gate-to-release path: `specreg upload` of an OCI layout (through the copy engine)
/// leaves only temporary tags and writes the image list; `specreg promote --images` of
/// that list moves the final tags to the uploaded digest and removes the temporary tags.
fn upload_then_promote(reg: &Registry, multi_arch: bool) {
    let work = TempTree::new("publish-upload");
    let sk = Skopeo::new();
    let layout = work.join("layout");
    let digest = if multi_arch {
        multi_arch_layout(&layout, "tested", 64 << 10).index.digest
    } else {
        single_arch_layout(&layout, "tested", 64 << 10).manifest.digest
    };
    let repo = if multi_arch { "up/multi" } else { "up/single" };
    let loc = format!("{}/{repo}", reg.addr());
    let list = work.join("images.json").display().to_string();
    let src = format!("oci:{}:tested", layout.display());
    let mut args = vec!["upload", &src, "--to", &loc, "--tags", "latest,2.1", "--change", "77", "--insecure", "--write-images", &list];
    let creds_file = work.join("dst-creds").display().to_string();
    if let Some((u, p)) = creds_of(reg) {
        fs::write(&creds_file, format!("{u}:{p}\n")).unwrap();
        args.extend(["--dst-creds-file", &creds_file]);
    }
    let o = specreg(&work, &args);
    assert!(o.success(), "{}", o.describe());
    for t in ["change_77_latest", "change_77_2.1"] {
        assert!(o.stdout.contains(&format!("uploaded {loc}:{t} {digest}")), "{}", o.describe());
        assert_eq!(skopeo_digest(&sk, reg, repo, t), digest, "{repo}:{t} as skopeo sees it");
    }
    let mut tags = reg.tags(repo);
    tags.sort();
    assert_eq!(tags, ["change_77_2.1", "change_77_latest"], "upload sets temporary tags only");
    let written: Value = serde_json::from_str(&fs::read_to_string(&list).unwrap()).unwrap();
    assert_eq!(written["images"][0]["digest"], digest.as_str());
    reg.assert_complete(repo, &reg.manifest(repo, "change_77_latest"));

    let acc = access(&work, reg);
    let mut args = vec!["promote", "--images", &list, "--change", "77"];
    args.extend(acc.iter().map(String::as_str));
    let o = specreg(&work, &args);
    assert!(o.success(), "{}", o.describe());
    for t in ["latest", "2.1"] {
        assert_eq!(skopeo_digest(&sk, reg, repo, t), digest, "{repo}:{t} after promote");
    }
    let mut tags = reg.tags(repo);
    tags.sort();
    assert_eq!(tags, ["2.1", "latest"]);
}

#[test]
fn upload_then_promote_on_specreg() {
    let reg = Registry::start_specreg();
    upload_then_promote(&reg, false);
}

#[test]
fn upload_then_promote_multi_arch_on_distribution() {
    let reg = Registry::start_distribution_htpasswd(DIST_USER, DIST_PASSWORD);
    upload_then_promote(&reg, true);
}

/// cleanup-tags on distribution 2.8 with htpasswd: its OCI API refuses tag deletes, so
/// every stale tag goes through a placeholder manifest; tags sharing a digest with a stale
/// tag (here `latest`) must survive.
#[test]
fn cleanup_tags_on_distribution() {
    let reg = Registry::start_distribution_htpasswd(DIST_USER, DIST_PASSWORD);
    let work = TempTree::new("publish-cleanup-dist");
    let repo = "sweep/dist";
    let now = now_unix();
    let old = push_dated_image(&reg, repo, &rfc3339(now - 3 * 86400), &unique_marker("old"));
    let fresh = push_dated_image(&reg, repo, &rfc3339(now - 60), &unique_marker("fresh"));
    let mut kept = vec!["latest".to_owned()];
    for i in 0..24 {
        let (p, t) = if i % 2 == 0 { (&old, format!("change_{i}_a")) } else { (&fresh, format!("change_{i}_a")) };
        put_manifest(&reg, repo, &t, &p.media_type, &p.bytes);
        if i % 2 == 1 {
            kept.push(t);
        }
    }
    put_manifest(&reg, repo, "latest", &old.media_type, &old.bytes);
    let loc = format!("{}/{repo}", reg.addr());
    let mut args = vec!["cleanup-tags", "--repo", &loc, "--older-than", "2d", "--pattern", "change_*", "--page-size", "10"];
    let acc = access(&work, &reg);
    args.extend(acc.iter().map(String::as_str));
    let o = specreg(&work, &args);
    assert!(o.success(), "{}", o.describe());
    assert!(o.stdout.contains("25 tags, 24 matching, 12 removed"), "{}", o.describe());
    let mut left = reg.tags(repo);
    left.sort();
    kept.sort();
    assert_eq!(left, kept);
    assert_eq!(resolve(&reg, repo, "latest").as_deref(), Some(old.digest.as_str()), "latest kept its manifest");
    reg.assert_complete(repo, &reg.manifest(repo, "latest"));
}
