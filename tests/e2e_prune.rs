//! `specreg prune` and `specreg serve --expire` end to end: images pushed with skopeo in
//! every manifest kind (OCI image, OCI index with platform manifests, Docker schema2
//! manifest list, an artifact with a subject), layers shared between kept and expired
//! images. Prune deletes exactly the unreachable blobs (by digest, on disk), kept images
//! still pull completely with skopeo, a dry run deletes nothing, a running server's data
//! directory cannot be pruned offline, and the schedule inside `serve` keeps pushes whole.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

fn specreg() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_specreg"));
    c.env("SPECREG_LOG", "info").env("NO_COLOR", "1");
    c
}

/// Every blob file of a data directory, as digests.
fn stored_blobs(data: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let root = data.join("blobs");
    for alg in std::fs::read_dir(&root).unwrap().flatten() {
        for fan in std::fs::read_dir(alg.path()).unwrap().flatten() {
            for f in std::fs::read_dir(fan.path()).unwrap().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    out.insert(format!("{}:{name}", alg.file_name().to_string_lossy()));
                }
            }
        }
    }
    out
}

/// Every digest a tag reaches (manifests, configs, layers), fetched and checked.
fn reachable(reg: &Registry, repo: &str, reference: &str) -> BTreeSet<String> {
    let m = reg.manifest(repo, reference);
    reg.assert_complete(repo, &m).into_iter().collect()
}

/// Monolithic blob upload over HTTP; returns the digest.
fn post_blob(reg: &Registry, repo: &str, bytes: &[u8]) -> String {
    let d = digest_of(bytes);
    let r = reg.send(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    );
    assert_eq!(r.status, 201, "blob upload\n{}", r.describe());
    d
}

/// An artifact (empty config, one signature blob) whose subject is `subject`, pushed by
/// digest. Returns the artifact's digest and its signature blob's digest.
fn push_referrer(reg: &Registry, repo: &str, subject: &FetchedManifest) -> (String, String) {
    let empty = b"{}";
    post_blob(reg, repo, empty);
    let sig = format!("signature of {} {}", subject.digest, unique_marker("sig")).into_bytes();
    let sig_digest = post_blob(reg, repo, &sig);
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(empty), "size": 2},
        "layers": [{"mediaType": "application/vnd.example.signature", "digest": sig_digest, "size": sig.len()}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.bytes.len()},
    }))
    .unwrap();
    let d = digest_of(&body);
    let r = reg.send("PUT", &format!("/v2/{repo}/manifests/{d}"), &[("Content-Type", OCI_MANIFEST)], &body);
    assert_eq!(r.status, 201, "referrer push\n{}", r.describe());
    (d, sig_digest)
}

/// Two single-arch images sharing their base layer, tagged `a` and `b` in one layout.
/// Returns the base layer's marker too (an image built on it shares that layer).
fn two_images_sharing_base(dir: &Path) -> (String, BuiltImage, BuiltImage) {
    let mut w = OciLayoutWriter::new(dir);
    let base = unique_marker("shared-base");
    let a = w.add_image("amd64", &base, &unique_marker("a"), 64 << 10);
    let b = w.add_image("amd64", &base, &unique_marker("b"), 64 << 10);
    w.tag("a", &a.manifest);
    w.tag("b", &b.manifest);
    (base, a, b)
}

/// The digests of every file skopeo wrote into a `dir:` copy.
fn dir_digests(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| digest_of(&std::fs::read(e.path()).unwrap()))
        .collect()
}

fn prune_json(data: &Path, extra: &[&str]) -> Value {
    let out = run_ok(specreg().args(["prune", "--json", "--data-dir"]).arg(data).args(extra));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("prune --json printed no JSON ({e}):\n{out}"))
}

fn digests_of(report: &Value, key: &str) -> BTreeSet<String> {
    report[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// Expire after this; what is pushed before the pause is older at prune time, and what
/// is pushed after it must still be younger when prune runs (a few seconds later).
const EXPIRE: &str = "20s";
const PAUSE: Duration = Duration::from_secs(21);

#[test]
fn prune_deletes_exactly_the_unreachable_blobs_and_kept_images_still_pull() {
    let sk = Skopeo::new();
    let work = TempTree::new("prune-e2e");
    let data = work.join("data");
    let data_arg = data.to_string_lossy().into_owned();
    let reg = Registry::start_specreg_with(&["--insecure-http", "--no-fsync", "--data", &data_arg]);

    // ---- what will expire ---------------------------------------------------------------
    let shared = work.join("shared");
    let (_, old_img, keep_img) = two_images_sharing_base(&shared);
    sk.copy(&[], &format!("oci:{}:a", shared.display()), &format!("docker://{}", reg.image("app", "old")));
    let multi = work.join("multi");
    multi_arch_layout(&multi, "multi", 32 << 10);
    let multi_src = format!("oci:{}:multi", multi.display());
    sk.copy(&["--all"], &multi_src, &format!("docker://{}", reg.image("app", "index-old")));
    let gone_index = work.join("gone-index");
    multi_arch_layout(&gone_index, "multi", 32 << 10);
    let gone_src = format!("oci:{}:multi", gone_index.display());
    sk.copy(&["--all"], &gone_src, &format!("docker://{}", reg.image("app", "index-gone")));
    let list = work.join("list");
    multi_arch_layout(&list, "multi", 32 << 10);
    let list_src = format!("oci:{}:multi", list.display());
    sk.copy(&["--all", "--format", "v2s2"], &list_src, &format!("docker://{}", reg.image("app", "list-old")));
    let old_sig = push_referrer(&reg, "app", &reg.manifest("app", "old"));
    let lone_blob = post_blob(&reg, "app", unique_marker("lone").as_bytes());
    // An upload left open with bytes in it.
    let r = reg.send("POST", "/v2/app/blobs/uploads/", &[], b"");
    assert_eq!(r.status, 202, "{}", r.describe());
    let upload = r.header("location").unwrap().to_owned();
    let r = reg.send("PATCH", &upload, &[("Content-Type", "application/octet-stream")], &[7u8; 1000]);
    assert_eq!(r.status, 202, "{}", r.describe());
    let expired_tags = [("app", "old"), ("app", "index-old"), ("app", "index-gone"), ("app", "list-old")];
    let mut gone: BTreeSet<String> = expired_tags.iter().flat_map(|(r, t)| reachable(&reg, r, t)).collect();
    gone.extend([old_sig.0.clone(), old_sig.1.clone(), lone_blob.clone()]);

    std::thread::sleep(PAUSE);

    // ---- what stays ---------------------------------------------------------------------
    // The image sharing the expired one's base layer; a Docker list and an OCI index of
    // their own; the expired index's children again, under another tag of another repo.
    sk.copy(&[], &format!("oci:{}:b", shared.display()), &format!("docker://{}", reg.image("app", "keep")));
    let list2 = work.join("list2");
    multi_arch_layout(&list2, "multi", 32 << 10);
    sk.copy(
        &["--all", "--format", "v2s2"],
        &format!("oci:{}:multi", list2.display()),
        &format!("docker://{}", reg.image("app", "list")),
    );
    sk.copy(&["--all"], &multi_src, &format!("docker://{}", reg.image("other/team", "index")));
    let keep_sig = push_referrer(&reg, "app", &reg.manifest("app", "keep"));

    let kept_tags = [("app", "keep"), ("app", "list"), ("other/team", "index")];
    let mut kept: BTreeSet<String> = kept_tags.iter().flat_map(|(r, t)| reachable(&reg, r, t)).collect();
    kept.extend([keep_sig.0.clone(), keep_sig.1.clone()]);
    let must_delete: BTreeSet<String> = gone.difference(&kept).cloned().collect();
    // The fixture shares what the brief asks: a layer between kept and expired images,
    // and the expired OCI index's content with another repository.
    assert!(kept.contains(&old_img.layers[0].digest) && gone.contains(&old_img.layers[0].digest));
    assert!(!must_delete.contains(&keep_img.layers[0].digest));
    assert!(must_delete.contains(&old_img.layers[1].digest) && must_delete.contains(&old_img.config.digest));

    // Offline prune refuses a directory a server is using.
    let o = run_fails(specreg().args(["prune", "--data-dir"]).arg(&data));
    assert!(o.stderr.contains("in use by specreg serve"), "{}", o.describe());

    let (status, _) = reg.stop_with(libc::SIGTERM, Duration::from_secs(30));
    assert!(status.success(), "serve exited with {status}");
    let before = stored_blobs(&data);
    assert!(must_delete.is_subset(&before));

    let dry = prune_json(&data, &["--expire", EXPIRE, "--grace", "3s", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(digests_of(&dry, "blobs"), must_delete, "dry run: what would go");
    assert_eq!(stored_blobs(&data), before, "a dry run deleted blobs");
    assert!(data.join("uploads").read_dir().unwrap().count() == 1, "a dry run deleted the upload");

    let report = prune_json(&data, &["--expire", EXPIRE, "--grace", "3s"]);
    assert_eq!(digests_of(&report, "blobs"), must_delete, "blobs deleted");
    let tags: BTreeSet<String> = report["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}:{}", t["repository"].as_str().unwrap(), t["tag"].as_str().unwrap()))
        .collect();
    assert_eq!(tags, expired_tags.iter().map(|(r, t)| format!("{r}:{t}")).collect());
    assert_eq!(report["uploads"].as_array().unwrap().len(), 1);
    assert_eq!(report["uploads"][0]["size"], 1000);
    let blob_bytes: u64 = report["blobs"].as_array().unwrap().iter().map(|b| b["size"].as_u64().unwrap()).sum();
    assert_eq!(report["freed_bytes"].as_u64().unwrap(), blob_bytes + 1000);
    let after = stored_blobs(&data);
    assert_eq!(before.difference(&after).cloned().collect::<BTreeSet<_>>(), must_delete, "files deleted");
    assert!(kept.is_subset(&after), "kept content deleted: {:?}", kept.difference(&after).collect::<Vec<_>>());

    // Without --json, one summary line; a second round finds nothing.
    let line = run_ok(specreg().args(["prune", "--data-dir"]).arg(&data).args(["--expire", EXPIRE, "--grace", "3s"]));
    assert!(line.starts_with("specreg prune: freed 0 tags, 0 manifests, 0 blob links, 0 blobs, 0 uploads, 0 bytes, 0 empty repositories"), "{line}");

    // The server on the pruned directory: kept images pull whole with skopeo, the
    // expired ones are gone.
    let reg = Registry::start_specreg_with(&["--insecure-http", "--no-fsync", "--data", &data_arg]);
    for (repo, tag) in kept_tags {
        let m = reg.manifest(repo, tag);
        let src = format!("docker://{}", reg.image(repo, tag));
        let out = work.join(format!("pulled-{}-{tag}", repo.replace('/', "-")));
        let pulled = sk.copy_digest(&["--all"], &src, &format!("dir:{}", out.display()));
        assert_eq!(pulled, m.digest, "skopeo pulled {repo}:{tag} as another digest");
        assert_eq!(digest_of(&sk.inspect_raw(&src)), m.digest);
        let copied = dir_digests(&out);
        for d in reachable(&reg, repo, tag) {
            assert!(copied.contains(&d), "{repo}:{tag}: {d} missing from the pulled copy");
        }
    }
    let refs = reg.get(&format!("/v2/app/referrers/{}", reg.manifest("app", "keep").digest), &[]);
    let refs: Value = serde_json::from_slice(&refs.body).unwrap();
    assert_eq!(refs["manifests"][0]["digest"], keep_sig.0.as_str(), "the kept image's referrer stays");
    for (repo, tag) in expired_tags {
        assert_eq!(reg.get(&format!("/v2/{repo}/manifests/{tag}"), &[]).status, 404);
    }
    for d in &must_delete {
        assert_eq!(reg.head(&format!("/v2/app/blobs/{d}"), &[]).status, 404, "{d} still served");
    }
}

/// `serve --expire` collects on its own schedule while clients push and pull: the expired
/// tag and its blobs go, and every image pushed meanwhile (re-using layers the collector
/// is looking at) pulls back whole.
#[test]
fn serve_expires_on_schedule_while_pushes_stay_whole() {
    let sk = Skopeo::new();
    let work = TempTree::new("prune-sched");
    let reg = Registry::start_specreg_with(&[
        "--insecure-http",
        "--no-fsync",
        "--expire",
        "8s",
        "--prune-interval",
        "1s",
        "--grace",
        "2s",
    ]);
    let shared = work.join("shared");
    let (base, old_img, _) = two_images_sharing_base(&shared);
    sk.copy(&[], &format!("oci:{}:a", shared.display()), &format!("docker://{}", reg.image("app", "old")));
    let old_only = [old_img.manifest.digest.clone(), old_img.config.digest.clone(), old_img.layers[1].digest.clone()];
    // An upload a client walked away from.
    let r = reg.send("POST", "/v2/app/blobs/uploads/", &[], b"");
    assert_eq!(r.status, 202, "{}", r.describe());
    let upload = r.header("location").unwrap().to_owned();
    let r = reg.send("PATCH", &upload, &[("Content-Type", "application/octet-stream")], &[1u8; 500]);
    assert_eq!(r.status, 202, "{}", r.describe());

    // Push new images (sharing the expired image's base layer) and pull each straight
    // back, until the collector has expired the old tag, and a few rounds beyond.
    let start = Instant::now();
    let mut rounds_after_expiry = 0;
    let mut i = 0;
    while rounds_after_expiry < 4 {
        assert!(start.elapsed() < Duration::from_secs(90), "the old tag never expired\n{}", reg.log_tail(40));
        let mut w = OciLayoutWriter::new(&work.join(format!("img{i}")));
        let img = w.add_image("amd64", &base, &unique_marker("live"), 16 << 10);
        w.tag("v", &img.manifest);
        let tag = format!("live{i}");
        let dst = format!("docker://{}", reg.image("app", &tag));
        let pushed = sk.copy_digest(&[], &format!("oci:{}:v", w.dir.display()), &dst);
        assert_eq!(pushed, img.manifest.digest);
        let back = work.join(format!("back{i}"));
        assert_eq!(sk.copy_digest(&[], &dst, &format!("oci:{}:v", back.display())), img.manifest.digest);
        let layout = OciLayout::open(&back);
        for d in img.blob_digests() {
            assert!(layout.has_blob(&d), "pushed image {tag} lost {d}");
        }
        if !reg.tags("app").contains(&"old".to_owned()) {
            rounds_after_expiry += 1;
        }
        i += 1;
    }
    // The old image's own content is gone from disk (its shared base layer is not).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let blobs = stored_blobs(&reg.data);
        if old_only.iter().all(|d| !blobs.contains(d)) {
            assert!(blobs.contains(&old_img.layers[0].digest), "the shared base layer was deleted");
            break;
        }
        assert!(Instant::now() < deadline, "the expired image's blobs stayed\n{}", reg.log_tail(40));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(reg.get(&upload, &[]).status, 404, "the abandoned upload outlived the grace window");
    assert!(reg.log_text().contains("abandoned upload"), "no abandoned upload in the log");
    assert!(reg.log_text().contains("prune finished"), "no report line in the log");
    assert!(reg.log_text().contains("expired tag"), "no expired tag in the log");
}
