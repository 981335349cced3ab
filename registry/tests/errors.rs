//! Error paths: every error is the spec's JSON body with the right code and status,
//! absent things are 404 (never 5xx), malformed digests are DIGEST_INVALID, a digest
//! mismatch stores nothing, invalid names are NAME_INVALID and never touch the disk
//! outside (or inside) the data directory, and the redesigned suite's manifest error
//! cases ("missing-manifest", "invalid-digest-format").

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_a_spec_json_error_body_with_its_status() {
    let reg = TestRegistry::start().await;
    let repo = "err/repo";
    reg.push_image(repo, Some("v1"), 1).await;
    let absent = sha256(b"absent");
    let upload = "0123456789abcdef0123456789abcdef";
    let cases: Vec<(Method, String, Vec<u8>, u16, &str)> = vec![
        (Method::GET, format!("/v2/{repo}/blobs/{absent}"), vec![], 404, "BLOB_UNKNOWN"),
        (Method::GET, format!("/v2/{repo}/manifests/nope"), vec![], 404, "MANIFEST_UNKNOWN"),
        (Method::GET, format!("/v2/{repo}/manifests/{absent}"), vec![], 404, "MANIFEST_UNKNOWN"),
        (Method::GET, "/v2/no/such/repo/tags/list".to_owned(), vec![], 404, "NAME_UNKNOWN"),
        (Method::GET, format!("/v2/{repo}/blobs/uploads/{upload}"), vec![], 404, "BLOB_UPLOAD_UNKNOWN"),
        (Method::GET, format!("/v2/{repo}/blobs/sha256:abc"), vec![], 400, "DIGEST_INVALID"),
        (Method::GET, "/v2/Err/Repo/tags/list".to_owned(), vec![], 400, "NAME_INVALID"),
        (Method::PUT, format!("/v2/{repo}/manifests/bad"), b"not json".to_vec(), 400, "MANIFEST_INVALID"),
        (Method::DELETE, format!("/v2/{repo}/blobs/{absent}"), vec![], 404, "BLOB_UNKNOWN"),
        (Method::DELETE, format!("/v2/{repo}/manifests/{absent}"), vec![], 404, "MANIFEST_UNKNOWN"),
        (Method::POST, format!("/v2/{repo}/manifests/v1"), vec![], 405, "UNSUPPORTED"),
    ];
    for (method, path, body, status, code) in cases {
        let r = reg
            .send(reg.req(method.clone(), &path).header("content-type", OCI_MANIFEST).body(body))
            .await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.describe());
        assert_error(&r, status, code);
    }
    // A manifest whose blobs are missing.
    let m = oci_manifest(&descriptor(OCI_CONFIG, b"missing config"), &[], json!({}));
    assert_error(&reg.put_manifest(repo, "x", OCI_MANIFEST, &m).await, 400, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_errors_carry_status_and_no_body() {
    let reg = TestRegistry::start().await;
    reg.push_image("err/head", Some("v1"), 1).await;
    for (path, status) in [
        (format!("/v2/err/head/blobs/{}", sha256(b"x")), 404),
        ("/v2/err/head/manifests/missing".to_owned(), 404),
        (format!("/v2/err/head/manifests/{}", sha256(b"x")), 404),
        ("/v2/err/head/blobs/sha256:zz".to_owned(), 400),
        ("/v2/ERR/head/manifests/v1".to_owned(), 400),
    ] {
        let r = reg.head(&path).await;
        assert_head_error(&r, status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_things_are_404_never_5xx() {
    let reg = TestRegistry::start().await;
    reg.push_image("known/repo", Some("v1"), 1).await;
    let d = sha256(&random_bytes(8));
    let d512 = sha512(&random_bytes(8));
    let id = "fedcba9876543210fedcba9876543210";
    for repo in ["known/repo", "unknown/repo", "a/b/c/d/e/f"] {
        let cases = [
            (Method::GET, format!("/v2/{repo}/blobs/{d}")),
            (Method::HEAD, format!("/v2/{repo}/blobs/{d}")),
            (Method::GET, format!("/v2/{repo}/blobs/{d512}")),
            (Method::DELETE, format!("/v2/{repo}/blobs/{d}")),
            (Method::GET, format!("/v2/{repo}/manifests/{d}")),
            (Method::HEAD, format!("/v2/{repo}/manifests/{d}")),
            (Method::GET, format!("/v2/{repo}/manifests/{d512}")),
            (Method::GET, format!("/v2/{repo}/manifests/latest")),
            (Method::HEAD, format!("/v2/{repo}/manifests/latest")),
            (Method::DELETE, format!("/v2/{repo}/manifests/latest")),
            (Method::DELETE, format!("/v2/{repo}/manifests/{d}")),
            (Method::GET, format!("/v2/{repo}/blobs/uploads/{id}")),
            (Method::PATCH, format!("/v2/{repo}/blobs/uploads/{id}")),
            (Method::PUT, format!("/v2/{repo}/blobs/uploads/{id}?digest={d}")),
            (Method::DELETE, format!("/v2/{repo}/blobs/uploads/{id}")),
            (Method::GET, format!("/v2/{repo}/blobs/uploads/not-a-session-id")),
        ];
        for (method, path) in cases {
            let r = reg.send(reg.req(method.clone(), &path).header("range", "bytes=0-10")).await;
            assert_eq!(r.status, 404, "{method} {path}: {}", r.describe());
            if method != Method::HEAD {
                assert!(
                    SPEC_ERROR_CODES.contains(&r.error_codes()[0].as_str()),
                    "{method} {path}: {}",
                    r.describe()
                );
            }
        }
    }
    // Unknown endpoints are 404 too.
    for path in ["/v1/", "/v2/only-a-name", "/v2/a/b/unknown/thing", "/v2/a/blobs/", "/v2/a/manifests/"] {
        let r = reg.get(path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.describe());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_methods_are_405_unsupported() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image("meth/repo", Some("v1"), 1).await;
    let d = sha256(&img.config);
    for (method, path) in [
        (Method::POST, "/v2/meth/repo/manifests/v1".to_owned()),
        (Method::PATCH, "/v2/meth/repo/manifests/v1".to_owned()),
        (Method::PUT, format!("/v2/meth/repo/blobs/{d}")),
        (Method::POST, format!("/v2/meth/repo/blobs/{d}")),
        (Method::PUT, "/v2/meth/repo/tags/list".to_owned()),
        (Method::DELETE, "/v2/meth/repo/tags/list".to_owned()),
        (Method::DELETE, "/v2/_catalog".to_owned()),
        (Method::PUT, format!("/v2/meth/repo/referrers/{d}")),
    ] {
        let r = reg.send(reg.req(method.clone(), &path).body(Vec::<u8>::new())).await;
        assert_eq!(r.status, 405, "{method} {path}: {}", r.describe());
        assert_error(&r, 405, "UNSUPPORTED");
    }
    // Nothing changed.
    assert_status(&reg.get("/v2/meth/repo/manifests/v1").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_digests_are_digest_invalid() {
    let reg = TestRegistry::start().await;
    let hex64 = "a".repeat(64);
    let bad = [
        "sha256:abc".to_owned(),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}", "g".repeat(64)),
        format!("sha256:{}", "a".repeat(65)),
        format!("sha512:{hex64}"),
        format!("md5:{}", "a".repeat(32)),
        format!("sha256{hex64}"),
        format!("sha256::{hex64}"),
        "sha256:".to_owned(),
        format!(":{hex64}"),
    ];
    for d in &bad {
        // In a path.
        let enc: String = percent_encode(d);
        let r = reg.get(&format!("/v2/dig/repo/blobs/{enc}")).await;
        assert_error(&r, 400, "DIGEST_INVALID");
        let r = reg.get(&format!("/v2/dig/repo/referrers/{enc}")).await;
        assert_error(&r, 400, "DIGEST_INVALID");
        // As the digest of an upload.
        let r = reg.post_blob("dig/repo", d, b"data".to_vec()).await;
        assert_error(&r, 400, "DIGEST_INVALID");
        let loc = reg.open_upload("dig/repo").await;
        let r = reg.send(reg.req(Method::PUT, &with_query(&loc, "digest", d)).body(b"data".to_vec())).await;
        assert_error(&r, 400, "DIGEST_INVALID");
        // As a mount.
        let r = reg.post(&with_query("/v2/dig/repo/blobs/uploads/", "mount", d)).await;
        assert!(r.status == 400 || r.status == 202, "mount={d}: {}", r.describe());
    }
    // A manifest reference with a ':' is a digest, never a tag.
    let r = reg.get("/v2/dig/repo/manifests/sha256:abc").await;
    assert_error(&r, 400, "DIGEST_INVALID");
    assert!(reg.get("/v2/_catalog").await.json()["repositories"].as_array().unwrap().is_empty(), "nothing was stored");
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b":-._".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_mismatch_stores_nothing() {
    let reg = TestRegistry::start().await;
    let repo = "mismatch/repo";
    let data = random_bytes(5000);
    let claimed = sha256(b"something else entirely");
    let actual = sha256(&data);
    let flows: Vec<(&str, Resp)> = vec![
        ("monolithic", reg.post_blob(repo, &claimed, data.clone()).await),
        ("post+put", reg.push_blob_post_put(repo, &data, &claimed).await),
        ("chunked", reg.push_blob_chunked(repo, &data, 2000, &claimed).await),
    ];
    for (flow, r) in flows {
        assert_eq!(r.status, 400, "{flow}: {}", r.describe());
        assert_error(&r, 400, "DIGEST_INVALID");
        for d in [&claimed, &actual] {
            assert_head_error(&reg.head(&format!("/v2/{repo}/blobs/{d}")).await, 404);
        }
    }
    // A sha512 claim over other content.
    let r = reg.post_blob(repo, &sha512(b"other"), data.clone()).await;
    assert_error(&r, 400, "DIGEST_INVALID");
    assert_head_error(&reg.head(&format!("/v2/{repo}/blobs/{}", sha512(&data))).await, 404);
    // No file at all was published in the blob store.
    let published: Vec<String> = reg
        .files()
        .into_iter()
        .filter(|p| p.starts_with("data/blobs/") && reg.root.path().join(p).is_file())
        .collect();
    assert!(published.is_empty(), "blob files after mismatches only: {published:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_digest_format_manifest_put_and_get() {
    // The redesigned suite's "invalid-digest-format".
    let reg = TestRegistry::start().await;
    let img = reg.push_image(REPO, None, 1).await;
    let r = reg.put_manifest(REPO, "sha256:baddigeststring", OCI_MANIFEST, &img.manifest).await;
    assert_error(&r, 400, "DIGEST_INVALID");
    let r = reg
        .send(
            reg.req(Method::GET, &format!("/v2/{REPO}/manifests/sha256:baddigeststring"))
                .header("accept", OCI_INDEX)
                .header("accept", OCI_MANIFEST),
        )
        .await;
    assert!(r.status == 400 || r.status == 404, "{}", r.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_are_manifest_invalid() {
    let reg = TestRegistry::start().await;
    let repo = "inv/repo";
    let config = image_config();
    reg.push_blob(repo, &config).await;
    let cfg = descriptor(OCI_CONFIG, &config);
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("not JSON", OCI_MANIFEST, b"blablabla".to_vec()),
        ("truncated JSON", OCI_MANIFEST, b"{\"schemaVersion\": 2, \"config\"".to_vec()),
        ("empty object", OCI_MANIFEST, b"{}".to_vec()),
        ("a JSON array", OCI_MANIFEST, b"[]".to_vec()),
        ("empty body", OCI_MANIFEST, Vec::new()),
        ("mediaType differs from Content-Type", OCI_INDEX, oci_manifest(&cfg, &[], json!({}))),
        ("config digest malformed", OCI_MANIFEST, to_json(&json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": { "mediaType": OCI_CONFIG, "digest": "sha256:zz", "size": 2 }, "layers": [] }))),
        ("negative size", OCI_MANIFEST, to_json(&json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": { "mediaType": OCI_CONFIG, "digest": sha256(&config), "size": -1 }, "layers": [] }))),
        ("index without manifests", OCI_INDEX, to_json(&json!({ "schemaVersion": 2, "mediaType": OCI_INDEX }))),
        ("layers is not a list", OCI_MANIFEST, to_json(&json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": "x" }))),
    ];
    for (what, mt, body) in cases {
        let r = reg.put_manifest(repo, "bad", mt, &body).await;
        assert_eq!(r.status, 400, "{what}: {}", r.describe());
        assert_error(&r, 400, "MANIFEST_INVALID");
    }
    assert_error(&reg.get(&format!("/v2/{repo}/manifests/bad")).await, 404, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tags_are_refused() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image("tag/repo", None, 1).await;
    let too_long = "t".repeat(129);
    for tag in ["-leading-dash", ".leading-dot", too_long.as_str(), "white%20space", "semi;colon"] {
        let r = reg.put_manifest("tag/repo", tag, OCI_MANIFEST, &img.manifest).await;
        assert_eq!(r.status, 400, "tag {tag:?}: {}", r.describe());
        assert_error_any(&r, 400, &["MANIFEST_INVALID", "TAG_INVALID"]);
    }
    // The longest valid tag.
    let longest = format!("_{}", "t".repeat(127));
    assert_status(&reg.put_manifest("tag/repo", &longest, OCI_MANIFEST, &img.manifest).await, 201);
    assert!(reg.tags("tag/repo").await.iter().all(|t| *t == longest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_numeric_page_size_is_a_client_error() {
    let reg = TestRegistry::start().await;
    reg.push_image("page/repo", Some("v1"), 1).await;
    for path in ["/v2/page/repo/tags/list?n=abc", "/v2/page/repo/tags/list?n=-1", "/v2/_catalog?n=x"] {
        let r = reg.get(path).await;
        assert!((400..500).contains(&r.status), "{path}: {}", r.describe());
        assert!(!r.error_codes().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_session_belongs_to_its_repository() {
    let reg = TestRegistry::start().await;
    let loc = reg.open_upload("owner/repo").await;
    let id = path_of(&loc).rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
    let other = format!("/v2/thief/repo/blobs/uploads/{id}");
    assert_error(&reg.get(&other).await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(&reg.patch_chunk(&other, 0, b"x").await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(&reg.close_upload(&other, EMPTY_DIGEST).await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(&reg.delete(&other).await, 404, "BLOB_UPLOAD_UNKNOWN");
    // Still intact for its owner.
    let r = reg.get(&loc).await;
    assert_status(&r, 204);
    assert_status(&reg.close_upload(&loc, EMPTY_DIGEST).await, 201);
}

// ---- names ---------------------------------------------------------------------------------

/// Every request shape that could create something for a name.
async fn try_all_endpoints(reg: &TestRegistry, name_path: &str) -> Vec<Resp> {
    let body = oci_manifest(&descriptor(OCI_CONFIG, b"c"), &[], json!({}));
    let d = sha256(b"payload");
    let mut out = Vec::new();
    out.push(reg.raw("POST", &format!("/v2/{name_path}/blobs/uploads/"), &[], b"").await);
    out.push(reg.raw("POST", &format!("/v2/{name_path}/blobs/uploads/?digest={d}"), &[], b"payload").await);
    out.push(reg.raw("PUT", &format!("/v2/{name_path}/manifests/latest"), &[("Content-Type", OCI_MANIFEST)], &body).await);
    out.push(reg.raw("GET", &format!("/v2/{name_path}/tags/list"), &[], b"").await);
    out.push(reg.raw("GET", &format!("/v2/{name_path}/manifests/latest"), &[], b"").await);
    out.push(reg.raw("GET", &format!("/v2/{name_path}/blobs/{d}"), &[], b"").await);
    out.push(reg.raw("GET", &format!("/v2/{name_path}/referrers/{d}"), &[], b"").await);
    out.push(reg.raw("DELETE", &format!("/v2/{name_path}/blobs/{d}"), &[], b"").await);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_are_name_invalid_and_touch_no_disk() {
    let reg = TestRegistry::start().await;
    let m = format!("escape{}", random_name(12));
    let bad_names = [
        format!("Upper{m}"),
        format!("{m}/UPPER"),
        format!("a/../../../../{m}"),
        format!("../{m}"),
        format!("{m}/.."),
        format!("a/%2e%2e/%2e%2e/%2e%2e/{m}"),
        format!("a/%2E%2E/%2E%2E/{m}"),
        format!("a%2F..%2F..%2F..%2F{m}"),
        format!("..%2F..%2F{m}"),
        format!("a//{m}"),
        format!("/{m}"),
        format!("{m}/./x"),
        format!(".{m}"),
        format!("{m}-"),
        format!("{m}%00x"),
        format!("{m}%20x"),
        format!("{m}:5000/x"),
        "a".repeat(256),
    ];
    for name in &bad_names {
        for r in try_all_endpoints(&reg, name).await {
            assert_eq!(r.status, 400, "name {name:?}: {}", r.describe());
            assert_error(&r, 400, "NAME_INVALID");
        }
    }
    // Nothing beside the data directory, nothing named after the marker anywhere.
    let files = reg.files();
    for f in &files {
        assert!(f == "data" || f.starts_with("data/"), "{f} is outside the data directory");
        assert!(!f.contains(&m), "{f} was created for an invalid name");
        assert!(!f.to_lowercase().contains("upper"), "{f}");
    }
    let parent = reg.root.path().parent().unwrap();
    for e in std::fs::read_dir(parent).unwrap().flatten() {
        assert!(!e.file_name().to_string_lossy().contains(&m), "{:?} escaped the data directory", e.path());
    }
    // No repository was recorded.
    let r = reg.get("/v2/_catalog").await;
    assert_eq!(r.json()["repositories"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_ids_cannot_name_files() {
    let reg = TestRegistry::start().await;
    let loc = reg.open_upload("id/repo").await;
    assert_status(&reg.get(&loc).await, 204);
    for id in ["..", "..%2F..%2Fmeta", "%2e%2e", "0123456789abcdef0123456789abcdeF", "0123456789abcdef0123456789abcdef0", "meta.json", "%00"] {
        for method in ["GET", "PATCH", "PUT", "DELETE"] {
            let target = format!("/v2/id/repo/blobs/uploads/{id}?digest={EMPTY_DIGEST}");
            let r = reg.raw(method, &target, &[], b"x").await;
            assert_eq!(r.status, 404, "{method} {id}: {}", r.describe());
        }
    }
    // The real session is untouched.
    assert_status(&reg.get(&loc).await, 204);
    for f in reg.files() {
        assert!(f.starts_with("data"), "{f}");
    }
}
