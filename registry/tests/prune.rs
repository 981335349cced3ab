//! Expiry and garbage collection against an in-process server: exactly the unreachable
//! content goes (checked by digest, on disk and over HTTP), a dry run deletes nothing, the
//! server's memory follows storage, pushes racing with the sweep stay whole, and idle
//! upload sessions go after the grace window.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use common::*;
use serde_json::{json, Value};
use specreg_registry::prune::{prune, PruneOptions, PruneReport};

async fn start() -> TestRegistry {
    TestRegistry::start_with(|c| c.policy.track_activity = true).await
}

/// A Docker schema2 manifest over `config` and `layers` (bytes); pushes the blobs.
async fn push_docker_image(reg: &TestRegistry, repo: &str, layers: &[Vec<u8>]) -> (Vec<u8>, BTreeSet<String>) {
    let config = image_config();
    let mut blobs = BTreeSet::new();
    blobs.insert(reg.push_blob(repo, &config).await);
    let mut descs = Vec::new();
    for l in layers {
        blobs.insert(reg.push_blob(repo, l).await);
        descs.push(descriptor(DOCKER_LAYER, l));
    }
    let m = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &config),
        "layers": descs,
    }));
    let d = sha256(&m);
    reg.push_manifest(repo, &d, DOCKER_MANIFEST, &m).await;
    (m, blobs)
}

/// An OCI image over `layers` (bytes), pushed by digest or under `tag`; returns its
/// manifest bytes and the digests of its config and layers.
async fn push_oci_image(
    reg: &TestRegistry,
    repo: &str,
    tag: Option<&str>,
    layers: &[Vec<u8>],
    extra: Value,
) -> (Vec<u8>, BTreeSet<String>) {
    let config = image_config();
    let mut blobs = BTreeSet::new();
    blobs.insert(reg.push_blob(repo, &config).await);
    let mut descs = Vec::new();
    for l in layers {
        blobs.insert(reg.push_blob(repo, l).await);
        descs.push(descriptor(OCI_LAYER_GZ, l));
    }
    let m = oci_manifest(&descriptor(OCI_CONFIG, &config), &descs, extra);
    let d = sha256(&m);
    reg.push_manifest(repo, tag.unwrap_or(&d), OCI_MANIFEST, &m).await;
    (m, blobs)
}

/// An artifact (empty config, one blob) whose subject is `subject`, pushed by digest.
async fn push_referrer(reg: &TestRegistry, repo: &str, subject: &[u8], subject_type: &str) -> (String, String) {
    let empty = b"{}".to_vec();
    reg.push_blob(repo, &empty).await;
    let sig = random_bytes(64);
    let sig_digest = reg.push_blob(repo, &sig).await;
    let m = oci_manifest(
        &descriptor(OCI_EMPTY, &empty),
        &[descriptor("application/vnd.example.signature", &sig)],
        json!({
            "artifactType": "application/vnd.example.signature",
            "subject": { "mediaType": subject_type, "digest": sha256(subject), "size": subject.len() },
        }),
    );
    let d = reg.push_manifest(repo, &sha256(&m), OCI_MANIFEST, &m).await;
    (d, sig_digest)
}

fn docker_list(children: &[&[u8]]) -> Vec<u8> {
    let manifests: Vec<Value> = children
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "mediaType": DOCKER_MANIFEST, "digest": sha256(c), "size": c.len(),
                "platform": { "architecture": (["amd64", "arm64", "s390x"][i % 3]), "os": "linux" },
            })
        })
        .collect();
    to_json(&json!({ "schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": manifests }))
}

fn oci_platform_index(children: &[&[u8]]) -> Vec<u8> {
    let manifests: Vec<Value> = children
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "mediaType": OCI_MANIFEST, "digest": sha256(c), "size": c.len(),
                "platform": { "architecture": (["amd64", "arm64", "ppc64le"][i % 3]), "os": "linux" },
            })
        })
        .collect();
    oci_index(&manifests, json!({}))
}

/// Every blob file under the data directory, as digests.
fn stored_blobs(reg: &TestRegistry) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let root = reg.data_dir.join("blobs");
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

fn blob_set(report: &PruneReport) -> BTreeSet<String> {
    report.blobs.iter().map(|b| b.digest.clone()).collect()
}

/// Pulls a manifest and everything it reaches over HTTP, checking every digest.
async fn assert_pulls(reg: &TestRegistry, repo: &str, reference: &str) {
    let r = reg
        .send(reg.req(reqwest::Method::GET, &format!("/v2/{repo}/manifests/{reference}")).header(
            "accept",
            format!("{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}"),
        ))
        .await;
    assert_status(&r, 200);
    let digest = r.must("docker-content-digest");
    assert_eq!(sha256(&r.body), digest, "{repo}:{reference} served other bytes than its digest");
    let m: Value = serde_json::from_slice(&r.body).unwrap();
    if let Some(children) = m["manifests"].as_array() {
        for c in children {
            Box::pin(assert_pulls(reg, repo, c["digest"].as_str().unwrap())).await;
        }
        return;
    }
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_owned()];
    blobs.extend(m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()));
    for b in blobs {
        let r = reg.get(&format!("/v2/{repo}/blobs/{b}")).await;
        assert_status(&r, 200);
        assert_eq!(sha256(&r.body), b, "blob {b} of {repo}:{reference} is damaged");
    }
}

/// The registry of the brief: every manifest kind, kept and expired, with shared content.
/// Returns the blob digests prune must delete, and the references that must still pull.
struct Fixture {
    must_delete: BTreeSet<String>,
    kept_refs: Vec<(&'static str, String)>,
    gone_refs: Vec<(&'static str, String)>,
    upload_location: String,
    /// Between the expired pushes and the kept ones.
    boundary: SystemTime,
}

async fn fixture(reg: &TestRegistry) -> Fixture {
    let mut must_delete = BTreeSet::new();
    let mut gone_refs = Vec::new();
    let shared = random_bytes(500);
    let cross_repo = random_bytes(400);

    // ---- what expires -----------------------------------------------------------------
    // An OCI image sharing one layer with a kept image (same repo) and one with another
    // repository's kept image.
    let own = random_bytes(300);
    let (old_img, old_blobs) =
        push_oci_image(reg, "app", Some("old"), &[shared.clone(), own.clone(), cross_repo.clone()], json!({})).await;
    must_delete.insert(sha256(&old_img));
    must_delete.extend(old_blobs.iter().filter(|d| **d != sha256(&shared) && **d != sha256(&cross_repo)).cloned());
    gone_refs.push(("app", "old".to_owned()));
    gone_refs.push(("app", sha256(&old_img)));
    // A referrer of the expired image goes with it.
    let (old_sig, old_sig_blob) = push_referrer(reg, "app", &old_img, OCI_MANIFEST).await;
    must_delete.insert(old_sig.clone());
    must_delete.insert(old_sig_blob);
    gone_refs.push(("app", old_sig));
    // A Docker manifest list whose children are its alone.
    let (dx, dx_blobs) = push_docker_image(reg, "app", &[random_bytes(200)]).await;
    let old_list = docker_list(&[&dx]);
    reg.push_manifest("app", "list-old", DOCKER_LIST, &old_list).await;
    must_delete.extend([sha256(&old_list), sha256(&dx)]);
    must_delete.extend(dx_blobs);
    gone_refs.push(("app", sha256(&dx)));
    // An OCI index whose second child is also a child of the kept index.
    let (q1, q1_blobs) = push_oci_image(reg, "app", None, &[random_bytes(250)], json!({})).await;
    let (p1, _) = push_oci_image(reg, "app", None, &[random_bytes(260), shared.clone()], json!({})).await;
    let old_index = oci_platform_index(&[&q1, &p1]);
    reg.push_manifest("app", "idx-old", OCI_INDEX, &old_index).await;
    must_delete.extend([sha256(&old_index), sha256(&q1)]);
    must_delete.extend(q1_blobs);
    gone_refs.push(("app", sha256(&q1)));
    // Never tagged at all, and a blob no manifest names.
    let (orphan, orphan_blobs) = push_oci_image(reg, "app", None, &[random_bytes(100)], json!({})).await;
    must_delete.insert(sha256(&orphan));
    must_delete.extend(orphan_blobs);
    gone_refs.push(("app", sha256(&orphan)));
    must_delete.insert(reg.push_blob("app", &random_bytes(700)).await);
    // An upload session left open with some bytes in it.
    let upload_location = reg.open_upload("app").await;
    assert_status(&reg.patch_chunk(&upload_location, 0, &random_bytes(123)).await, 202);

    tokio::time::sleep(Duration::from_millis(30)).await;
    let boundary = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(30)).await;

    // ---- what stays -------------------------------------------------------------------
    let mut kept_refs = Vec::new();
    let (keep_img, _) = push_oci_image(reg, "app", Some("keep"), &[shared.clone(), random_bytes(310)], json!({})).await;
    kept_refs.push(("app", "keep".to_owned()));
    // Its referrer (pushed by digest) stays with it.
    let (sig, _) = push_referrer(reg, "app", &keep_img, OCI_MANIFEST).await;
    kept_refs.push(("app", sig));
    // A Docker list and an OCI index with platform manifests, tagged now.
    let (da, _) = push_docker_image(reg, "app", &[random_bytes(210)]).await;
    let (db, _) = push_docker_image(reg, "app", &[random_bytes(220), shared.clone()]).await;
    let list = docker_list(&[&da, &db]);
    reg.push_manifest("app", "multi", DOCKER_LIST, &list).await;
    kept_refs.push(("app", "multi".to_owned()));
    let (p2, _) = push_oci_image(reg, "app", None, &[random_bytes(270)], json!({})).await;
    let index = oci_platform_index(&[&p1, &p2]);
    reg.push_manifest("app", "idx", OCI_INDEX, &index).await;
    kept_refs.push(("app", "idx".to_owned()));
    // Another repository's image using a layer the expired image also used.
    push_oci_image(reg, "other/team", Some("v1"), std::slice::from_ref(&cross_repo), json!({})).await;
    kept_refs.push(("other/team", "v1".to_owned()));

    Fixture {
        must_delete,
        kept_refs,
        gone_refs,
        upload_location,
        boundary,
    }
}

/// Options that expire what was pushed before `boundary`, with a clock one day later and
/// a grace window that ends at the boundary.
fn opts_at(boundary: SystemTime, dry_run: bool) -> PruneOptions {
    let day = Duration::from_secs(86400);
    let mut o = PruneOptions::new(Some(day), day);
    o.now = boundary + day;
    o.dry_run = dry_run;
    o
}

#[tokio::test]
async fn prune_deletes_exactly_the_unreachable_content() {
    let reg = start().await;
    let fx = fixture(&reg).await;
    let before = stored_blobs(&reg);
    let files_before = reg.files();
    assert!(fx.must_delete.is_subset(&before), "the fixture's digests are all stored");

    // A dry run reports the same set and changes nothing, on disk or over HTTP.
    let dry = prune(&reg.app.registry, &opts_at(fx.boundary, true)).await.unwrap();
    assert!(dry.dry_run);
    assert_eq!(blob_set(&dry), fx.must_delete, "dry run: blobs that would go");
    assert_eq!(reg.files(), files_before, "a dry run deleted or wrote something");
    // (Pulling what is about to go would make it recently used, and so kept: only the
    // tags are checked over HTTP here.)
    assert_eq!(reg.tags("app").await, vec!["idx", "idx-old", "keep", "list-old", "multi", "old"]);

    let report = prune(&reg.app.registry, &opts_at(fx.boundary, false)).await.unwrap();
    assert_eq!(blob_set(&report), fx.must_delete, "blobs deleted");
    let tags: BTreeSet<String> = report.tags.iter().map(|t| format!("{}:{}", t.repository, t.tag)).collect();
    assert_eq!(tags, ["app:idx-old", "app:list-old", "app:old"].map(String::from).into());
    assert_eq!(report.manifests.len(), dry.manifests.len());
    assert_eq!(report.uploads.len(), 1);
    assert_eq!(report.uploads[0].size, 123);
    let blob_bytes: u64 = report.blobs.iter().map(|b| b.size).sum();
    assert_eq!(report.freed_bytes, blob_bytes + 123);

    let after = stored_blobs(&reg);
    assert_eq!(before.difference(&after).cloned().collect::<BTreeSet<_>>(), fx.must_delete, "files removed");

    // The running server serves what stayed, whole, and nothing of what went.
    for (repo, r) in &fx.kept_refs {
        assert_pulls(&reg, repo, r).await;
    }
    for (repo, r) in &fx.gone_refs {
        assert_error(&reg.get(&format!("/v2/{repo}/manifests/{r}")).await, 404, "MANIFEST_UNKNOWN");
    }
    assert_eq!(reg.tags("app").await, vec!["idx", "keep", "multi"]);
    assert_eq!(reg.get(&path_of(&fx.upload_location)).await.status, 404, "the abandoned upload is gone");
    for d in &fx.must_delete {
        assert_eq!(reg.head(&format!("/v2/app/blobs/{d}")).await.status, 404, "{d} still served");
    }
    // The referrers index of the kept image still lists its signature.
    let keep = reg.get("/v2/app/manifests/keep").await;
    let referrers = reg.get(&format!("/v2/app/referrers/{}", keep.must("docker-content-digest"))).await;
    assert_eq!(referrers.json()["manifests"].as_array().unwrap().len(), 1);

    // A second round finds nothing, and a restarted server agrees with the first one.
    let again = prune(&reg.app.registry, &opts_at(fx.boundary, false)).await.unwrap();
    assert!(again.blobs.is_empty() && again.tags.is_empty() && again.manifests.is_empty(), "{}", again.summary());
    let mut reg = reg;
    reg.restart().await;
    for (repo, r) in &fx.kept_refs {
        assert_pulls(&reg, repo, r).await;
    }
}

#[tokio::test]
async fn without_expiry_tags_stay_and_only_garbage_goes() {
    let reg = start().await;
    let fx = fixture(&reg).await;
    let mut o = opts_at(fx.boundary, false);
    o.expire = None;
    let report = prune(&reg.app.registry, &o).await.unwrap();
    assert!(report.tags.is_empty());
    for (repo, r) in fx.kept_refs.iter().chain([&("app", "old".to_owned()), &("app", "list-old".to_owned())]) {
        assert_pulls(&reg, repo, r).await;
    }
    // Only the never-tagged image and the lone blob (and the session) went.
    assert_eq!(report.manifests.len(), 1, "{:?}", report.manifests);
    assert_eq!(report.blobs.len(), 4, "{:?}", report.blobs);
    assert_eq!(report.uploads.len(), 1);
}

/// Content younger than the grace window stays even when nothing references it: a push
/// uploads its blobs before its manifest.
#[tokio::test]
async fn grace_window_protects_fresh_content_and_uploads() {
    let reg = start().await;
    let lone = reg.push_blob("app", &random_bytes(100)).await;
    let (untagged, _) = push_oci_image(&reg, "app", None, &[random_bytes(90)], json!({})).await;
    let loc = reg.open_upload("app").await;
    assert_status(&reg.patch_chunk(&loc, 0, b"abc").await, 202);

    let r = prune(&reg.app.registry, &PruneOptions::new(Some(Duration::from_secs(1)), Duration::from_secs(600)))
        .await
        .unwrap();
    assert!(r.blobs.is_empty() && r.manifests.is_empty() && r.uploads.is_empty(), "{}", r.summary());
    assert_status(&reg.head(&format!("/v2/app/blobs/{lone}")).await, 200);
    assert_pulls(&reg, "app", &sha256(&untagged)).await;
    // The session is whole and can be finished.
    let r = reg.close_upload(&loc, &sha256(b"abc")).await;
    assert_status(&r, 201);
}

/// A tag file of an earlier version (a bare digest) loads, and ages from its file time.
#[tokio::test]
async fn legacy_tags_load_and_expire() {
    let mut reg = start().await;
    let (img, _) = push_oci_image(&reg, "app", None, &[random_bytes(90)], json!({})).await;
    let tag_file = reg.data_dir.join("meta/repos/app/_tags/legacy");
    std::fs::create_dir_all(tag_file.parent().unwrap()).unwrap();
    std::fs::write(&tag_file, format!("{}\n", sha256(&img))).unwrap();
    reg.restart().await;
    assert_pulls(&reg, "app", "legacy").await;

    let day = Duration::from_secs(86400);
    let mut o = PruneOptions::new(Some(day), Duration::ZERO);
    let kept = prune(&reg.app.registry, &o).await.unwrap();
    assert!(kept.tags.is_empty() && kept.blobs.is_empty(), "{}", kept.summary());
    o.now = SystemTime::now() + 2 * day;
    let gone = prune(&reg.app.registry, &o).await.unwrap();
    assert_eq!(gone.tags.len(), 1);
    assert_eq!(gone.blobs.len(), 3, "manifest, config and layer");
    assert_error(&reg.get("/v2/app/manifests/legacy").await, 404, "MANIFEST_UNKNOWN");
    // Nothing is left of the repository: it leaves the catalog too.
    assert_eq!(gone.repositories, vec!["app"]);
    assert_eq!(reg.get("/v2/_catalog").await.json()["repositories"], json!([]));
    assert_error(&reg.get("/v2/app/tags/list").await, 404, "NAME_UNKNOWN");
    // And comes back with the next push.
    push_oci_image(&reg, "app", Some("again"), &[random_bytes(90)], json!({})).await;
    assert_eq!(reg.get("/v2/_catalog").await.json()["repositories"], json!(["app"]));
}

/// A tag pushed again keeps its image alive: its time is renewed (but not rewritten
/// within a minute of the last write).
#[tokio::test]
async fn pushing_a_tag_again_renews_it() {
    let mut reg = start().await;
    let (img, _) = push_oci_image(&reg, "app", Some("v1"), &[random_bytes(90)], json!({})).await;
    let tag_file = reg.data_dir.join("meta/repos/app/_tags/v1");
    let read = || -> Value { serde_json::from_slice(&std::fs::read(&tag_file).unwrap()).unwrap() };
    assert_eq!(read()["digest"], sha256(&img));
    let first = read()["written_unix_ms"].as_u64().unwrap();
    reg.push_manifest("app", "v1", OCI_MANIFEST, &img).await;
    assert_eq!(read()["written_unix_ms"].as_u64().unwrap(), first, "rewritten within a minute");

    // Two days old (as a server restarted on old data would find it), then pushed again.
    let old = first - 2 * 86_400_000;
    std::fs::write(&tag_file, serde_json::to_vec(&json!({"digest": sha256(&img), "written_unix_ms": old})).unwrap())
        .unwrap();
    reg.restart().await;
    reg.push_manifest("app", "v1", OCI_MANIFEST, &img).await;
    assert!(read()["written_unix_ms"].as_u64().unwrap() >= first, "the push renewed the tag");
    let r = prune(&reg.app.registry, &PruneOptions::new(Some(Duration::from_secs(86400)), Duration::ZERO))
        .await
        .unwrap();
    assert!(r.tags.is_empty(), "{}", r.summary());
    assert_pulls(&reg, "app", "v1").await;
}

/// Pushes racing with the sweep: every push answered 201 stays whole. The garbage the
/// sweep works on is the very content the pushes re-use (images whose manifests or tags
/// were deleted), so each HEAD/PUT meets a sweep about to delete it. Half the pushes are
/// of an index naming an old untagged manifest after a HEAD of that manifest only (not of
/// its blobs): what the manifest reaches must stay with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_during_a_sweep_stay_whole() {
    let reg = start().await;
    for round in 0..4 {
        // Garbage: images pushed, then untagged and unreferenced.
        let mut images = Vec::new();
        for i in 0..12 {
            let layers = vec![random_bytes(2000), random_bytes(1500)];
            let tag = format!("tmp-{round}-{i}");
            let (m, blobs) = push_oci_image(&reg, "race", Some(&tag), &layers, json!({})).await;
            // Even: the manifest goes (its blobs stay, linked); odd: only its tag goes.
            let reference = if i % 2 == 0 { sha256(&m) } else { tag };
            assert_status(&reg.delete(&format!("/v2/race/manifests/{reference}")).await, 202);
            images.push((m, blobs, layers));
        }
        // Grace zero with the real clock: everything written so far is fair game, while
        // what requests touch from now on is protected.
        let registry = reg.app.clone();
        let sweeper = tokio::spawn(async move {
            prune(&registry.registry, &PruneOptions::new(None, Duration::ZERO)).await.unwrap()
        });
        let mut pushed = Vec::new();
        for (i, (m, _, layers)) in images.iter().enumerate() {
            if i % 2 == 1 {
                let tag = format!("live-{round}-{i}");
                let child = sha256(m);
                if reg.head(&format!("/v2/race/manifests/{child}")).await.status != 200 {
                    let (m2, _) = push_oci_image(&reg, "race", None, layers, json!({})).await;
                    let index = oci_platform_index(&[&m2]);
                    pushed.push((tag.clone(), reg.push_manifest("race", &tag, OCI_INDEX, &index).await));
                    continue;
                }
                let index = oci_platform_index(&[m]);
                let r = reg.put_manifest("race", &tag, OCI_INDEX, &index).await;
                assert_status(&r, 201);
                pushed.push((tag, sha256(&index)));
                continue;
            }
            // What a client does: HEAD each blob, upload what is missing, PUT the manifest.
            let parsed: Value = serde_json::from_slice(m).unwrap();
            let config_digest = parsed["config"]["digest"].as_str().unwrap().to_owned();
            let config_len = parsed["config"]["size"].as_u64().unwrap();
            let config_present = reg.head(&format!("/v2/race/blobs/{config_digest}")).await.status == 200;
            if !config_present {
                // The config's bytes are gone with it: push an image with a fresh config.
                let (m2, _) = push_oci_image(&reg, "race", Some(&format!("live-{round}-{i}")), layers, json!({})).await;
                pushed.push((format!("live-{round}-{i}"), sha256(&m2)));
                continue;
            }
            assert!(config_len > 0);
            for l in layers {
                if reg.head(&format!("/v2/race/blobs/{}", sha256(l))).await.status != 200 {
                    reg.push_blob("race", l).await;
                }
            }
            let tag = format!("live-{round}-{i}");
            let r = reg.put_manifest("race", &tag, OCI_MANIFEST, m).await;
            assert_status(&r, 201);
            pushed.push((tag, sha256(m)));
        }
        let report = sweeper.await.unwrap();
        for (tag, digest) in &pushed {
            assert_pulls(&reg, "race", tag).await;
            assert_pulls(&reg, "race", digest).await;
        }
        // And a later collection (the pushes now out of the grace window) keeps them too.
        let later = prune(&reg.app.registry, &PruneOptions::new(None, Duration::ZERO)).await.unwrap();
        for (tag, _) in &pushed {
            assert_pulls(&reg, "race", tag).await;
        }
        eprintln!("round {round}: sweep during pushes: {}; after: {}", report.summary(), later.summary());
    }
}

/// A repository whose catalog entry is missing (damaged or older data) is still found:
/// missing it would delete all its content.
#[tokio::test]
async fn repositories_missing_from_the_catalog_keep_their_content() {
    let mut reg = start().await;
    push_oci_image(&reg, "deep/hidden/repo", Some("v1"), &[random_bytes(90)], json!({})).await;
    let entry = reg.data_dir.join("meta/catalog/deep+hidden+repo");
    std::fs::remove_file(&entry).unwrap();
    reg.restart().await;
    let mut o = PruneOptions::new(None, Duration::ZERO);
    o.now = SystemTime::now() + Duration::from_secs(86400);
    let r = prune(&reg.app.registry, &o).await.unwrap();
    assert!(r.blobs.is_empty() && r.manifests.is_empty(), "{}", r.summary());
    assert_pulls(&reg, "deep/hidden/repo", "v1").await;
}
