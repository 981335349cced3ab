//! The Push workflow: the v1.1 conformance suite's `02_push_test.go` cases, the redesigned
//! suite's blob-API matrix (for sha256 and sha512: post only, post+put, chunked single,
//! chunked multi, last chunk in the PUT, out-of-order chunks, stream, mount, anonymous
//! mount, mount of a missing blob, cancel, well-known blobs, bad digests) and its data sets
//! (image, index, nested index, artifacts, subjects, data field, non-distributable layers,
//! custom fields, sha512, tag parameters, bad digest, ...), and issue #2's upload and
//! manifest-push items.

mod common;

use std::collections::BTreeMap;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

// =========================================================================================
// v1.1 suite: Push
// =========================================================================================

/// The streamed upload of `testBlobA` into the suite's repository: POST, one PATCH with
/// the blob and no Content-Range; returns the PATCH response.
async fn streamed_patch(reg: &TestRegistry, s: &Suite) -> Resp {
    let r = reg.post(&format!("/v2/{REPO}/blobs/uploads/")).await;
    let loc = r.location();
    reg.send(
        reg.req(Method::PATCH, &loc)
            .header("content-type", OCTET)
            .body(s.blob_a.clone()),
    )
    .await
}

async fn streamed_push(reg: &TestRegistry, s: &Suite) -> Resp {
    let r = streamed_patch(reg, s).await;
    assert_status(&r, 202);
    reg.close_upload(&r.location(), &sha256(&s.blob_a)).await
}

/// The monolithic section's uploads: configs[1] by POST with the body, then again by
/// POST+PUT, and the layer by POST+PUT.
async fn monolithic_uploads(reg: &TestRegistry, s: &Suite) {
    let r = reg.post_blob(REPO, &s.config_digest(1), s.configs[1].clone()).await;
    assert!(r.status == 201 || r.status == 202, "{}", r.describe());
    let r = reg.push_blob_post_put(REPO, &s.configs[1], &s.config_digest(1)).await;
    assert_status(&r, 201);
    let r = reg.push_blob_post_put(REPO, &s.layer, &s.layer_digest()).await;
    assert_status(&r, 201);
}

// ---- Blob Upload Streamed ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_streamed_patch_request_with_blob_in_body_should_yield_202_response() {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    let r = streamed_patch(&reg, &s).await;
    assert_status(&r, 202);
    assert!(!r.location().is_empty());
    assert_eq!(r.must("range"), "0-41");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_streamed_put_request_to_session_url_with_digest_should_yield_201_response() {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    let r = streamed_push(&reg, &s).await;
    assert_status(&r, 201);
    assert_eq!(path_of(&r.location()), format!("/v2/{REPO}/blobs/{}", sha256(&s.blob_a)));
    let g = reg.get(&r.location()).await;
    assert_eq!(&g.body[..], &s.blob_a[..]);
}

// ---- Blob Upload Monolithic ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_monolithic_get_nonexistent_blob_should_result_in_404_response() {
    let reg = TestRegistry::start().await;
    let r = reg.get(&format!("/v2/{REPO}/blobs/{}", dummy_digest())).await;
    assert_error(&r, 404, "BLOB_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_monolithic_post_request_with_digest_and_blob_should_yield_a_201_or_202() {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    let r = reg.post_blob(REPO, &s.config_digest(1), s.configs[1].clone()).await;
    assert!(!r.location().is_empty());
    // Both are conformant; specreg implements the monolithic POST, so 201.
    assert_status(&r, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_monolithic_get_request_to_blob_url_from_prior_request_should_yield_200_or_404_based_on_response_code() {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    let post = reg.post_blob(REPO, &s.config_digest(1), s.configs[1].clone()).await;
    let r = reg.get(&format!("/v2/{REPO}/blobs/{}", s.config_digest(1))).await;
    if post.status == 202 {
        assert_status(&r, 404);
    } else {
        assert_status(&r, 200);
        assert_eq!(&r.body[..], &s.configs[1][..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_monolithic_post_request_should_yield_a_session_id() {
    let reg = TestRegistry::start().await;
    let r = reg.post(&format!("/v2/{REPO}/blobs/uploads/")).await;
    assert_status(&r, 202);
    let loc = r.location();
    let uuid = r.must("docker-upload-uuid");
    assert!(loc.contains(&uuid), "Location {loc} names the session {uuid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_monolithic_put_upload_of_a_blob_should_yield_a_201_response() {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    let r = reg.push_blob_post_put(REPO, &s.configs[1], &s.config_digest(1)).await;
    assert_status(&r, 201);
    assert!(!r.location().is_empty());
    assert_eq!(r.must("docker-content-digest"), s.config_digest(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_monolithic_get_request_to_existing_blob_should_yield_200_response() {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    monolithic_uploads(&reg, &s).await;
    let r = reg.get(&format!("/v2/{REPO}/blobs/{}", s.config_digest(1))).await;
    assert_status(&r, 200);
    assert_eq!(&r.body[..], &s.configs[1][..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_monolithic_put_upload_of_a_layer_blob_should_yield_a_201_response() {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    let r = reg.push_blob_post_put(REPO, &s.layer, &s.layer_digest()).await;
    assert_status(&r, 201);
    assert!(!r.location().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_monolithic_get_request_to_existing_layer_should_yield_200_response() {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    monolithic_uploads(&reg, &s).await;
    let r = reg.get(&format!("/v2/{REPO}/blobs/{}", s.layer_digest())).await;
    assert_status(&r, 200);
    assert_eq!(&r.body[..], &s.layer[..]);
}

// ---- Blob Upload Chunked (testBlobB in chunks of 22 and 20 bytes) -----------------------------

struct Chunks {
    c1: Vec<u8>,
    c2: Vec<u8>,
    r1: String,
    r2: String,
    digest: String,
}

fn chunks(s: &Suite) -> Chunks {
    let split = s.blob_b.len() / 2 + 1;
    Chunks {
        c1: s.blob_b[..split].to_vec(),
        c2: s.blob_b[split..].to_vec(),
        r1: format!("0-{}", split - 1),
        r2: format!("{}-{}", split, s.blob_b.len() - 1),
        digest: sha256(&s.blob_b),
    }
}

async fn patch_with_range(reg: &TestRegistry, loc: &str, range: &str, body: &[u8]) -> Resp {
    reg.send(
        reg.req(Method::PATCH, loc)
            .header("content-type", OCTET)
            .header("content-length", body.len().to_string())
            .header("content-range", range)
            .body(body.to_vec()),
    )
    .await
}

async fn post_empty(reg: &TestRegistry) -> Resp {
    reg.send(
        reg.req(Method::POST, &format!("/v2/{REPO}/blobs/uploads/"))
            .header("content-length", "0"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_chunked_out_of_order_blob_upload_should_return_416() {
    let reg = TestRegistry::start().await;
    let c = chunks(&Suite::new());
    let post = post_empty(&reg).await;
    assert_status(&post, 202);
    assert!(post.header("oci-chunk-min-length").is_none_or(|v| v.parse::<usize>().unwrap() <= c.c1.len()));
    let r = patch_with_range(&reg, &post.location(), &c.r2, &c.c2).await;
    assert_error(&r, 416, "BLOB_UPLOAD_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_chunked_patch_request_with_first_chunk_should_return_202() {
    let reg = TestRegistry::start().await;
    let c = chunks(&Suite::new());
    let post = post_empty(&reg).await;
    let r = patch_with_range(&reg, &post.location(), &c.r1, &c.c1).await;
    assert_status(&r, 202);
    assert_eq!(r.must("range"), c.r1);
    assert!(!r.location().is_empty());
    assert!(r.header("docker-upload-uuid").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_chunked_retry_previous_blob_chunk_should_return_416() {
    let reg = TestRegistry::start().await;
    let c = chunks(&Suite::new());
    let post = post_empty(&reg).await;
    assert_status(&patch_with_range(&reg, &post.location(), &c.r1, &c.c1).await, 202);
    // The retry goes to the Location of the POST, as the suite does.
    let r = patch_with_range(&reg, &post.location(), &c.r1, &c.c1).await;
    assert_eq!(r.status, 416, "{}", r.describe());
    // It tells the client where to resume.
    assert_eq!(r.must("range"), c.r1);
    assert!(!r.location().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_chunked_get_on_stale_blob_upload_should_return_204_with_a_range_and_location() {
    let reg = TestRegistry::start().await;
    let c = chunks(&Suite::new());
    let post = post_empty(&reg).await;
    assert_status(&patch_with_range(&reg, &post.location(), &c.r1, &c.c1).await, 202);
    assert_eq!(patch_with_range(&reg, &post.location(), &c.r1, &c.c1).await.status, 416);
    let r = reg.get(&post.location()).await;
    assert_status(&r, 204);
    assert!(!r.location().is_empty());
    assert_eq!(r.must("range"), c.r1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_chunked_patch_request_with_second_chunk_should_return_202() {
    let reg = TestRegistry::start().await;
    let c = chunks(&Suite::new());
    let post = post_empty(&reg).await;
    assert_status(&patch_with_range(&reg, &post.location(), &c.r1, &c.c1).await, 202);
    let status = reg.get(&post.location()).await;
    let r = patch_with_range(&reg, &status.location(), &c.r2, &c.c2).await;
    assert_status(&r, 202);
    assert!(!r.location().is_empty());
    assert_eq!(r.must("range"), "0-41");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_chunked_put_request_with_digest_should_return_201() {
    let reg = TestRegistry::start().await;
    let c = chunks(&Suite::new());
    let post = post_empty(&reg).await;
    assert_status(&patch_with_range(&reg, &post.location(), &c.r1, &c.c1).await, 202);
    let r2 = patch_with_range(&reg, &post.location(), &c.r2, &c.c2).await;
    assert_status(&r2, 202);
    let r = reg.close_upload(&r2.location(), &c.digest).await;
    assert_status(&r, 201);
    assert_eq!(path_of(&r.location()), format!("/v2/{REPO}/blobs/{}", c.digest));
    assert_eq!(r.must("docker-content-digest"), c.digest);
    let g = reg.get(&r.location()).await;
    assert_eq!(sha256(&g.body), c.digest);
}

// ---- Cross-Repository Blob Mount ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_cross_mounting_of_a_blob_without_the_from_argument_should_yield_session_id() {
    let reg = TestRegistry::start().await;
    let r = reg
        .post(&with_query(&format!("/v2/{REPO2}/blobs/uploads/"), "mount", &dummy_digest()))
        .await;
    assert_status(&r, 202);
    assert!(path_of(&r.location()).starts_with(&format!("/v2/{REPO2}/blobs/uploads/")));
}

async fn mount_testblob_a(reg: &TestRegistry, s: &Suite) -> Resp {
    assert_status(&streamed_push(reg, s).await, 201);
    let path = with_query(
        &with_query(&format!("/v2/{REPO2}/blobs/uploads/"), "mount", &sha256(&s.blob_a)),
        "from",
        REPO,
    );
    reg.post(&path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_post_request_to_mount_another_repositorys_blob_should_return_201_or_202() {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    let r = mount_testblob_a(&reg, &s).await;
    // The suite accepts both; the blob exists in `from`, so specreg mounts it.
    assert_status(&r, 201);
    assert_eq!(r.must("docker-content-digest"), sha256(&s.blob_a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_get_request_to_test_digest_within_cross_mount_namespace_should_return_200() {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    let r = mount_testblob_a(&reg, &s).await;
    assert_status(&r, 201);
    assert_eq!(path_of(&r.location()), format!("/v2/{REPO2}/blobs/{}", sha256(&s.blob_a)));
    let g = reg.get(&r.location()).await;
    assert_status(&g, 200);
    assert_eq!(&g.body[..], &s.blob_a[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_cross_mounting_of_nonexistent_blob_should_yield_session_id() {
    let reg = TestRegistry::start().await;
    reg.push_blob(REPO, b"something else").await;
    let path = with_query(
        &with_query(&format!("/v2/{REPO2}/blobs/uploads/"), "mount", &dummy_digest()),
        "from",
        REPO,
    );
    let r = reg.post(&path).await;
    assert_status(&r, 202);
    assert!(path_of(&r.location()).starts_with(&format!("/v2/{REPO2}/blobs/uploads/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_cross_mounting_without_from_and_automatic_content_discovery_disabled_should_return_a_202() {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    assert_status(&mount_testblob_a(&reg, &s).await, 201);
    let r = reg
        .post(&with_query(&format!("/v2/{REPO2}/blobs/uploads/"), "mount", &sha256(&s.blob_a)))
        .await;
    assert_status(&r, 202);
}

// ---- Manifest Upload -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_manifest_upload_get_nonexistent_manifest_should_return_404() {
    let reg = TestRegistry::start().await;
    let r = reg.get(&format!("/v2/{REPO}/manifests/{NONEXISTENT_MANIFEST}")).await;
    assert_eq!(r.status, 404, "{}", r.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_put_should_accept_a_manifest_upload() {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    monolithic_uploads(&reg, &s).await;
    for i in 0..4 {
        let r = reg.put_manifest(REPO, &format!("test{i}"), OCI_MANIFEST, &s.manifests[1]).await;
        assert_status(&r, 201);
        assert_eq!(path_of(&r.location()), format!("/v2/{REPO}/manifests/{}", s.manifest_digest(1)));
        assert_eq!(r.must("docker-content-digest"), s.manifest_digest(1));
    }
    assert_eq!(reg.tags(REPO).await, vec!["test0", "test1", "test2", "test3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_registry_should_accept_a_manifest_upload_with_no_layers() {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    monolithic_uploads(&reg, &s).await;
    let r = reg.put_manifest(REPO, "emptylayer", OCI_MANIFEST, &s.empty_layer_manifest).await;
    assert_status(&r, 201);
    assert!(!r.location().is_empty());
    let g = reg.get(&r.location()).await;
    assert_eq!(&g.body[..], &s.empty_layer_manifest[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_get_request_to_manifest_url_digest_should_yield_200_response() {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    monolithic_uploads(&reg, &s).await;
    reg.push_manifest(REPO, "test0", OCI_MANIFEST, &s.manifests[1]).await;
    let r = reg
        .send(
            reg.req(Method::GET, &format!("/v2/{REPO}/manifests/{}", s.manifest_digest(1)))
                .header("accept", OCI_MANIFEST),
        )
        .await;
    assert_status(&r, 200);
    assert_eq!(&r.body[..], &s.manifests[1][..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_teardown_delete_manifest_and_blobs_created_in_tests() {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    monolithic_uploads(&reg, &s).await;
    reg.push_manifest(REPO, "test0", OCI_MANIFEST, &s.manifests[1]).await;
    reg.push_manifest(REPO, "emptylayer", OCI_MANIFEST, &s.empty_layer_manifest).await;
    assert_status(&reg.delete(&format!("/v2/{REPO}/manifests/{}", s.manifest_digest(1))).await, 202);
    assert_status(&reg.delete(&format!("/v2/{REPO}/manifests/{}", sha256(&s.empty_layer_manifest))).await, 202);
    assert_status(&reg.delete(&format!("/v2/{REPO}/blobs/{}", s.config_digest(1))).await, 202);
    assert_status(&reg.delete(&format!("/v2/{REPO}/blobs/{}", s.layer_digest())).await, 202);
}

// =========================================================================================
// Redesigned suite: blob APIs, for sha256 and sha512
// =========================================================================================

/// What the redesigned suite checks after each successful push: HEAD (status, empty body,
/// true Content-Length, digest header), GET (body, length, digest header), then delete
/// (202) and HEAD 404.
async fn verify_then_delete(reg: &TestRegistry, repo: &str, digest: &str, data: &[u8]) {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let h = reg.head(&path).await;
    assert_status(&h, 200);
    assert!(h.body.is_empty());
    assert_eq!(h.content_length(), Some(data.len() as u64), "HEAD Content-Length");
    assert_eq!(h.must("docker-content-digest"), digest);
    let g = reg.get(&path).await;
    assert_status(&g, 200);
    assert_eq!(&g.body[..], data);
    assert_eq!(g.content_length(), Some(data.len() as u64));
    assert_eq!(g.must("docker-content-digest"), digest);
    assert_status(&reg.delete(&path).await, 202);
    assert_head_error(&reg.head(&path).await, 404);
}

/// The suite's check of a completed upload: the digest header and the body at Location.
async fn verify_location(reg: &TestRegistry, r: &Resp, repo: &str, digest: &str, data: &[u8]) {
    assert_eq!(r.must("docker-content-digest"), digest);
    let loc = r.location();
    assert_eq!(path_of(&loc), format!("/v2/{repo}/blobs/{digest}"));
    let g = reg.get(&loc).await;
    assert_status(&g, 200);
    assert_eq!(&g.body[..], data);
}

/// The suite's chunked upload (`BlobPatchChunked`): three chunks of at least 1024 bytes,
/// optionally sending the last chunk with the PUT and optionally preceding every chunk
/// with an out-of-order one (which must be 416, after which an upload-status GET gives
/// the resume point). Returns the closing response.
async fn suite_chunked(reg: &TestRegistry, repo: &str, data: &[u8], digest: &str, out_of_order: bool, put_last: bool) -> Resp {
    let post = reg
        .send(reg.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/")).header("content-length", "0"))
        .await;
    assert_status(&post, 202);
    let mut loc = post.location();
    let mut chunk = data.len() / 3 + 1;
    if let Some(min) = post.header("oci-chunk-min-length") {
        chunk = chunk.max(min.parse().unwrap());
    }
    chunk = chunk.max(1024).min(data.len());
    let len = data.len() as i64;
    let mut last: i64 = -1;
    while last < len - 1 {
        if out_of_order {
            let url = loc.clone();
            let mut bad_start = (last + 1) as usize + chunk;
            if bad_start >= data.len() {
                bad_start = 0;
            }
            let bad_last = (bad_start + chunk - 1).min(data.len() - 1);
            let (method, target) = if put_last && bad_last == data.len() - 1 {
                (Method::PUT, with_query(&url, "digest", digest))
            } else {
                (Method::PATCH, url.clone())
            };
            let r = reg
                .send(
                    reg.req(method.clone(), &target)
                        .header("content-type", OCTET)
                        .header("content-range", format!("{bad_start}-{bad_last}"))
                        .body(data[bad_start..=bad_last].to_vec()),
                )
                .await;
            assert_eq!(r.status, 416, "out-of-order {method} {bad_start}-{bad_last}: {}", r.describe());
            assert!(!r.location().is_empty());
            let st = reg.get(&url).await;
            assert_status(&st, 204);
            loc = st.location();
            let range = st.must("range");
            let end: i64 = range
                .strip_prefix("0-")
                .unwrap_or_else(|| panic!("Range {range:?} lacks the 0- prefix"))
                .parse()
                .unwrap();
            if last >= 0 {
                assert_eq!(end, last, "resume point after a refused chunk");
            }
        }
        let start = (last + 1) as usize;
        last = ((start + chunk - 1).min(data.len() - 1)) as i64;
        let body = data[start..=last as usize].to_vec();
        let range = format!("{start}-{last}");
        if put_last && last == len - 1 {
            return reg
                .send(
                    reg.req(Method::PUT, &with_query(&loc, "digest", digest))
                        .header("content-type", OCTET)
                        .header("content-range", range)
                        .body(body),
                )
                .await;
        }
        let r = reg
            .send(
                reg.req(Method::PATCH, &loc)
                    .header("content-type", OCTET)
                    .header("content-range", range)
                    .body(body),
            )
            .await;
        assert_status(&r, 202);
        loc = r.location();
    }
    reg.close_upload(&loc, digest).await
}

/// The suite's streamed upload: POST, one PATCH with the whole body and no Content-Range,
/// PUT with an empty body.
async fn suite_stream(reg: &TestRegistry, repo: &str, data: &[u8], digest: &str) -> Resp {
    let loc = reg.open_upload(repo).await;
    let r = reg
        .send(reg.req(Method::PATCH, &loc).header("content-type", OCTET).body(data.to_vec()))
        .await;
    assert_status(&r, 202);
    reg.close_upload(&r.location(), digest).await
}

/// A blob of `n` random bytes and its digest.
fn blob(alg: Alg, n: usize) -> (Vec<u8>, String) {
    let b = random_bytes(n);
    let d = alg.digest(&b);
    (b, d)
}

async fn blobs_get_missing(alg: Alg) {
    let reg = TestRegistry::start().await;
    let (_, d) = blob(alg, 512);
    let r = reg.get(&format!("/v2/{REPO}/blobs/{d}")).await;
    assert_error(&r, 404, "BLOB_UNKNOWN");
}

async fn blobs_post_only(alg: Alg) {
    let reg = TestRegistry::start().await;
    let (b, d) = blob(alg, 512);
    let r = reg.post_blob(REPO, &d, b.clone()).await;
    assert_status(&r, 201);
    verify_location(&reg, &r, REPO, &d, &b).await;
    verify_then_delete(&reg, REPO, &d, &b).await;
}

async fn blobs_post_put(alg: Alg) {
    let reg = TestRegistry::start().await;
    let (b, d) = blob(alg, 512);
    let r = reg.push_blob_post_put(REPO, &b, &d).await;
    assert_status(&r, 201);
    verify_location(&reg, &r, REPO, &d, &b).await;
    verify_then_delete(&reg, REPO, &d, &b).await;
}

async fn blobs_chunked(alg: Alg, size: usize, out_of_order: bool, put_last: bool) {
    let reg = TestRegistry::start().await;
    let (b, d) = blob(alg, size);
    let r = suite_chunked(&reg, REPO, &b, &d, out_of_order, put_last).await;
    assert_status(&r, 201);
    verify_location(&reg, &r, REPO, &d, &b).await;
    verify_then_delete(&reg, REPO, &d, &b).await;
}

async fn blobs_chunked_single(alg: Alg) {
    blobs_chunked(alg, 512, false, false).await
}
async fn blobs_chunked_multi(alg: Alg) {
    blobs_chunked(alg, 1024 * 3 - 5, false, false).await
}
async fn blobs_chunked_multi_and_put_chunk(alg: Alg) {
    blobs_chunked(alg, 1024 * 3 - 5, false, true).await
}
async fn blobs_chunked_out_of_order(alg: Alg) {
    blobs_chunked(alg, 1024 * 3 - 5, true, false).await
}
async fn blobs_chunked_out_of_order_and_put_chunk(alg: Alg) {
    blobs_chunked(alg, 1024 * 3 - 5, true, true).await
}

async fn blobs_stream(alg: Alg) {
    let reg = TestRegistry::start().await;
    let (b, d) = blob(alg, 512);
    let r = suite_stream(&reg, REPO, &b, &d).await;
    assert_status(&r, 201);
    verify_location(&reg, &r, REPO, &d, &b).await;
    verify_then_delete(&reg, REPO, &d, &b).await;
}

async fn blobs_mount(alg: Alg) {
    let reg = TestRegistry::start().await;
    let (b, d) = blob(alg, 512);
    reg.push_blob_alg(REPO2, &b, alg).await;
    let r = reg
        .post(&with_query(&with_query(&format!("/v2/{REPO}/blobs/uploads/"), "mount", &d), "from", REPO2))
        .await;
    assert_status(&r, 201);
    verify_location(&reg, &r, REPO, &d, &b).await;
    verify_then_delete(&reg, REPO, &d, &b).await;
    // The source keeps its blob.
    verify_then_delete(&reg, REPO2, &d, &b).await;
}

async fn blobs_mount_anonymous(alg: Alg) {
    let reg = TestRegistry::start().await;
    let (b, d) = blob(alg, 512);
    reg.push_blob_alg(REPO2, &b, alg).await;
    let r = reg.post(&with_query(&format!("/v2/{REPO}/blobs/uploads/"), "mount", &d)).await;
    // 201 (automatic mount) or 202 (an ordinary session, which the suite then completes).
    let done = match r.status {
        201 => r,
        202 => {
            let put = reg
                .send(
                    reg.req(Method::PUT, &with_query(&r.location(), "digest", &d))
                        .header("content-type", OCTET)
                        .body(b.clone()),
                )
                .await;
            assert_status(&put, 201);
            put
        }
        _ => panic!("anonymous mount: {}", r.describe()),
    };
    verify_location(&reg, &done, REPO, &d, &b).await;
    verify_then_delete(&reg, REPO, &d, &b).await;
}

async fn blobs_mount_missing(alg: Alg) {
    let reg = TestRegistry::start().await;
    let (b, d) = blob(alg, 512);
    reg.push_blob(REPO2, b"unrelated").await;
    let r = reg
        .post(&with_query(&with_query(&format!("/v2/{REPO}/blobs/uploads/"), "mount", &d), "from", REPO2))
        .await;
    assert_eq!(r.status, 202, "a mount of a blob `from` lacks must fall back to a session: {}", r.describe());
    let put = reg
        .send(
            reg.req(Method::PUT, &with_query(&r.location(), "digest", &d))
                .header("content-type", OCTET)
                .body(b.clone()),
        )
        .await;
    assert_status(&put, 201);
    verify_location(&reg, &put, REPO, &d, &b).await;
    // Still absent from the source.
    assert_head_error(&reg.head(&format!("/v2/{REPO2}/blobs/{d}")).await, 404);
}

async fn blobs_post_cancel(alg: Alg) {
    let reg = TestRegistry::start().await;
    let (b, d) = blob(alg, 512);
    let loc = reg.open_upload(REPO).await;
    assert_status(&reg.patch_chunk(&loc, 0, &b[..100]).await, 202);
    let r = reg
        .send(reg.req(Method::DELETE, &loc).header("content-length", "0"))
        .await;
    assert_status(&r, 204);
    assert_error(&reg.get(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_head_error(&reg.head(&format!("/v2/{REPO}/blobs/{d}")).await, 404);
}

/// The well-known contents: the empty blob and `{}`.
async fn blobs_well_known(alg: Alg) {
    let reg = TestRegistry::start().await;
    for content in [&b""[..], &b"{}"[..]] {
        let d = alg.digest(content);
        for (i, method) in ["post only", "post+put", "stream"].iter().enumerate() {
            let r = match i {
                0 => reg.post_blob(REPO, &d, content.to_vec()).await,
                1 => reg.push_blob_post_put(REPO, content, &d).await,
                _ => suite_stream(&reg, REPO, content, &d).await,
            };
            assert_eq!(r.status, 201, "{method} of {:?}: {}", String::from_utf8_lossy(content), r.describe());
            verify_location(&reg, &r, REPO, &d, content).await;
            verify_then_delete(&reg, REPO, &d, content).await;
        }
    }
    if alg == Alg::Sha256 {
        assert_eq!(alg.digest(b"{}"), EMPTY_JSON_DIGEST);
        assert_eq!(alg.digest(b""), EMPTY_DIGEST);
    }
}

/// Each upload flow with content that does not match the declared digest: 400
/// DIGEST_INVALID and nothing published.
async fn blobs_bad_digest(alg: Alg) {
    let reg = TestRegistry::start().await;
    let flows = ["post only", "post+put", "chunked", "chunked and put chunk", "stream"];
    for flow in flows {
        let (good, d) = blob(alg, 1024 * 3 - 5);
        let mut bad = good.clone();
        bad.extend_from_slice(b"oh no");
        let r = match flow {
            "post only" => reg.post_blob(REPO, &d, bad.clone()).await,
            "post+put" => reg.push_blob_post_put(REPO, &bad, &d).await,
            "chunked" => suite_chunked(&reg, REPO, &bad, &d, false, false).await,
            "chunked and put chunk" => suite_chunked(&reg, REPO, &bad, &d, false, true).await,
            _ => suite_stream(&reg, REPO, &bad, &d).await,
        };
        assert_eq!(r.status, 400, "{flow}: {}", r.describe());
        assert_error(&r, 400, "DIGEST_INVALID");
        // Published neither under the declared digest nor under the content's own.
        assert_head_error(&reg.head(&format!("/v2/{REPO}/blobs/{d}")).await, 404);
        assert_head_error(&reg.head(&format!("/v2/{REPO}/blobs/{}", alg.digest(&bad))).await, 404);
    }
}

macro_rules! for_both_algorithms {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sha256() {
                    super::$name(super::Alg::Sha256).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sha512() {
                    super::$name(super::Alg::Sha512).await
                }
            }
        )*
    };
}

for_both_algorithms!(
    blobs_get_missing,
    blobs_post_only,
    blobs_post_put,
    blobs_chunked_single,
    blobs_chunked_multi,
    blobs_chunked_multi_and_put_chunk,
    blobs_chunked_out_of_order,
    blobs_chunked_out_of_order_and_put_chunk,
    blobs_stream,
    blobs_mount,
    blobs_mount_anonymous,
    blobs_mount_missing,
    blobs_post_cancel,
    blobs_well_known,
    blobs_bad_digest,
);

// =========================================================================================
// Redesigned suite: data sets
// =========================================================================================

struct Manifest {
    digest: String,
    body: Vec<u8>,
    media_type: String,
    subject: Option<String>,
}

/// Generated content, pushed and checked the way the redesigned suite does.
#[derive(Default)]
struct DataSet {
    blobs: Vec<(String, Vec<u8>)>,
    /// In push order (children first); the suite deletes in reverse order.
    manifests: Vec<Manifest>,
    tags: BTreeMap<String, String>,
    /// Subject digest -> the referrer descriptors the referrers API must list.
    referrers: BTreeMap<String, Vec<Value>>,
    /// Tags are pushed as `?tag=` on the digest PUT.
    tag_param: bool,
    /// Manifests whose body does not hash to their digest (a 400 is expected).
    bad: Vec<String>,
}

#[derive(Clone, Default)]
struct Opts {
    alg: Option<Alg>,
    annotations: Option<serde_json::Map<String, Value>>,
    annotation_uniq: bool,
    artifact_type: Option<String>,
    config_media_type: Option<String>,
    config_bytes: Option<Vec<u8>>,
    extra_field: bool,
    layer_bytes: Option<Vec<u8>>,
    layer_count: Option<usize>,
    layer_media_type: Option<String>,
    uncompressed: bool,
    platform: Option<Value>,
    platforms: Option<Vec<Value>>,
    set_data: bool,
    subject: Option<Value>,
    tag: Option<String>,
}

fn platform(arch: &str) -> Value {
    json!({ "architecture": arch, "os": "linux" })
}

impl DataSet {
    fn alg(o: &Opts) -> Alg {
        o.alg.unwrap_or(Alg::Sha256)
    }

    fn add_blob(&mut self, data: Vec<u8>, media_type: &str, o: &Opts) -> Value {
        let d = Self::alg(o).digest(&data);
        let mut desc = json!({ "mediaType": media_type, "digest": d, "size": data.len() });
        if o.set_data {
            desc["data"] = json!(base64(&data));
        }
        if !self.blobs.iter().any(|(x, _)| *x == d) {
            self.blobs.push((d, data));
        }
        desc
    }

    /// A layer (random bytes standing in for a tar, gzipped or not) and the digest of its
    /// "uncompressed" content for the config's diff_ids.
    fn gen_layer(&mut self, n: usize, o: &Opts) -> (Value, String) {
        let text = format!(
            "Conformance test file contents for file number {n}.\nTodays lucky number is {}\n",
            random_name(12)
        );
        let mut data = if o.uncompressed { Vec::new() } else { b"\x1f\x8b\x08\x00".to_vec() };
        data.extend_from_slice(text.as_bytes());
        data.extend(random_bytes(200));
        let mt = if o.uncompressed { OCI_LAYER } else { OCI_LAYER_GZ };
        (self.add_blob(data, mt, o), Self::alg(o).digest(text.as_bytes()))
    }

    fn with_extra(mut v: Value, o: &Opts) -> Value {
        if o.extra_field {
            v[format!("customField{}", random_name(6))] = json!(random_name(10));
        }
        v
    }

    fn gen_config(&mut self, platform: &Value, diff_ids: &[String], o: &Opts) -> Value {
        let config = Self::with_extra(
            json!({
                "author": "OCI Conformance Test",
                "architecture": platform["architecture"],
                "os": platform["os"],
                "rootfs": { "type": "layers", "diff_ids": diff_ids },
            }),
            o,
        );
        self.add_blob(to_json(&config), OCI_CONFIG, o)
    }

    fn annotations(o: &Opts) -> Option<Value> {
        let mut a = o.annotations.clone();
        if o.annotation_uniq {
            a.get_or_insert_with(Default::default)
                .insert(format!("org.example.{}", random_name(16)), json!(random_name(16)));
        }
        a.map(Value::Object)
    }

    fn add_manifest(&mut self, body: Vec<u8>, media_type: &str, o: &Opts, artifact_type: Option<Value>, annotations: Option<Value>) -> Value {
        let d = Self::alg(o).digest(&body);
        let mut desc = json!({ "mediaType": media_type, "digest": d, "size": body.len() });
        if o.set_data {
            desc["data"] = json!(base64(&body));
        }
        let subject = o.subject.as_ref().map(|s| s["digest"].as_str().unwrap().to_owned());
        if let Some(s) = &subject {
            let mut r = json!({ "mediaType": media_type, "digest": d, "size": body.len() });
            if let Some(at) = artifact_type {
                r["artifactType"] = at;
            }
            if let Some(a) = annotations {
                r["annotations"] = a;
            }
            self.referrers.entry(s.clone()).or_default().push(r);
        }
        if let Some(t) = &o.tag {
            self.tags.insert(t.clone(), d.clone());
        }
        self.manifests.push(Manifest {
            digest: d,
            body,
            media_type: media_type.to_owned(),
            subject,
        });
        desc
    }

    fn gen_manifest(&mut self, config: Value, layers: Vec<Value>, o: &Opts) -> Value {
        let mut m = json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers });
        if let Some(at) = &o.artifact_type {
            m["artifactType"] = json!(at);
        }
        if let Some(s) = &o.subject {
            m["subject"] = s.clone();
        }
        let annotations = Self::annotations(o);
        if let Some(a) = &annotations {
            m["annotations"] = a.clone();
        }
        let m = Self::with_extra(m, o);
        // The referrers API reports artifactType, or the config's media type without one.
        let at = o.artifact_type.clone().map(Value::from).or_else(|| Some(config["mediaType"].clone()));
        self.add_manifest(to_json(&m), OCI_MANIFEST, o, at, annotations)
    }

    fn gen_manifest_full(&mut self, o: &Opts) -> Value {
        let count = o.layer_count.unwrap_or(2);
        let plat = o.platform.clone().unwrap_or_else(|| platform("amd64"));
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for l in 0..count {
            match &o.layer_media_type {
                Some(mt) if !mt.starts_with("application/vnd.oci.image.layer.v1.") => {
                    let data = o.layer_bytes.clone().unwrap_or_else(|| random_bytes(2048));
                    let desc = self.add_blob(data, mt, o);
                    diff_ids.push(desc["digest"].as_str().unwrap().to_owned());
                    layers.push(desc);
                }
                _ => {
                    let (desc, diff) = self.gen_layer(l, o);
                    layers.push(desc);
                    diff_ids.push(diff);
                }
            }
        }
        let config = match o.config_media_type.as_deref() {
            None | Some(OCI_CONFIG) => self.gen_config(&plat, &diff_ids, o),
            Some(mt) => self.add_blob(o.config_bytes.clone().unwrap_or_default(), mt, o),
        };
        self.gen_manifest(config, layers, o)
    }

    fn gen_index(&mut self, platforms: &[Option<Value>], manifests: &[Value], o: &Opts) -> Value {
        let entries: Vec<Value> = manifests
            .iter()
            .zip(platforms)
            .map(|(m, p)| {
                let mut e = m.clone();
                if let Some(p) = p {
                    e["platform"] = p.clone();
                }
                e
            })
            .collect();
        let mut ind = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries });
        if let Some(at) = &o.artifact_type {
            ind["artifactType"] = json!(at);
        }
        if let Some(s) = &o.subject {
            ind["subject"] = s.clone();
        }
        let annotations = Self::annotations(o);
        if let Some(a) = &annotations {
            ind["annotations"] = a.clone();
        }
        let ind = Self::with_extra(ind, o);
        let at = o.artifact_type.clone().map(Value::from);
        self.add_manifest(to_json(&ind), OCI_INDEX, o, at, annotations)
    }

    /// An index over one full image per platform; like the suite, every option (tag,
    /// subject, artifact type...) also applies to the child images.
    fn gen_index_full(&mut self, o: &Opts) -> Value {
        let platforms = o.platforms.clone().unwrap_or_else(|| vec![platform("amd64"), platform("arm64")]);
        let mut children = Vec::new();
        for p in &platforms {
            let mut co = o.clone();
            co.platform = Some(p.clone());
            children.push(self.gen_manifest_full(&co));
        }
        let plats: Vec<Option<Value>> = platforms.into_iter().map(Some).collect();
        self.gen_index(&plats, &children, o)
    }

    /// The tag-param data sets: every manifest gets a numbered tag, all pushed as `?tag=`.
    fn tag_every_manifest(&mut self, prefix: &str) {
        for (i, m) in self.manifests.iter().enumerate() {
            self.tags.insert(format!("{prefix}-{i}"), m.digest.clone());
        }
        self.tag_param = true;
    }
}

fn opts() -> Opts {
    Opts::default()
}

fn tagged(tag: &str) -> Opts {
    Opts {
        tag: Some(tag.to_owned()),
        ..Opts::default()
    }
}

fn artifact_opts(artifact_type: &str) -> Opts {
    Opts {
        artifact_type: Some(artifact_type.to_owned()),
        config_media_type: Some(OCI_EMPTY.to_owned()),
        config_bytes: Some(b"{}".to_vec()),
        layer_count: Some(1),
        layer_media_type: Some(artifact_type.to_owned()),
        ..Opts::default()
    }
}

const EXAMPLE_CONF1: &str = "application/vnd.example.oci.conformance.v1";
const EXAMPLE_CONF2: &str = "application/vnd.example.oci.conformance.v2";

fn conformance_annotation() -> Option<serde_json::Map<String, Value>> {
    let mut m = serde_json::Map::new();
    m.insert("org.opencontainers.conformance".into(), json!("hello conformance test"));
    Some(m)
}

/// Pushes a data set and checks it as the redesigned suite does: blobs through rotating
/// upload flows, manifests by digest (OCI-Subject, Location, digest header), tags, tag
/// listing with `last`, HEAD and GET of every tag, manifest and blob, the referrers API
/// with and without the artifactType filter, then deletes of tags, manifests and blobs,
/// each followed by a HEAD that must be 404.
async fn run_data_set(td: DataSet) {
    let reg = TestRegistry::start().await;
    let repo = REPO;
    // -- push blobs
    for (i, (d, data)) in td.blobs.iter().enumerate() {
        let r = match i % 4 {
            0 => reg.post_blob(repo, d, data.clone()).await,
            1 => reg.push_blob_post_put(repo, data, d).await,
            2 => suite_chunked(&reg, repo, data, d, false, false).await,
            _ => suite_stream(&reg, repo, data, d).await,
        };
        assert_status(&r, 201);
        verify_location(&reg, &r, repo, d, data).await;
    }
    // -- push manifests by digest
    for m in &td.manifests {
        let mut path = format!("/v2/{repo}/manifests/{}", m.digest);
        if td.tag_param {
            for (tag, d) in &td.tags {
                if *d == m.digest {
                    path = with_query(&path, "tag", tag);
                }
            }
        }
        let r = reg
            .send(reg.req(Method::PUT, &path).header("content-type", &m.media_type).body(m.body.clone()))
            .await;
        if td.bad.contains(&m.digest) {
            assert_error(&r, 400, "DIGEST_INVALID");
            continue;
        }
        assert_eq!(r.status, 201, "manifest {}: {}", m.digest, r.describe());
        assert_eq!(r.must("docker-content-digest"), m.digest);
        if let Some(s) = &m.subject {
            assert_eq!(r.header("oci-subject").as_deref(), Some(s.as_str()), "OCI-Subject on {}", m.digest);
        }
        let g = reg
            .send(reg.req(Method::GET, &r.location()).header("accept", OCI_INDEX).header("accept", OCI_MANIFEST))
            .await;
        assert_status(&g, 200);
        assert_eq!(g.must("content-type"), m.media_type);
        assert_eq!(g.content_length(), Some(m.body.len() as u64));
        assert_eq!(&g.body[..], &m.body[..]);
    }
    // -- push tags
    if !td.tag_param {
        for (tag, d) in &td.tags {
            let m = td.manifests.iter().find(|m| m.digest == *d).unwrap();
            let r = reg.put_manifest(repo, tag, &m.media_type, &m.body).await;
            assert_eq!(r.status, 201, "tag {tag}: {}", r.describe());
            if let Some(s) = &m.subject {
                assert_eq!(r.header("oci-subject").as_deref(), Some(s.as_str()));
            }
        }
    }
    // -- tag listing, and the `last` parameter
    if !td.tags.is_empty() {
        let listed = reg.tags(repo).await;
        for tag in td.tags.keys() {
            assert!(listed.contains(tag), "tag {tag} missing from {listed:?}");
        }
        if listed.len() >= 2 {
            let mut sorted = listed.clone();
            sorted.sort();
            let end = sorted.len() / 2;
            let last = &sorted[end - 1];
            let r = reg.get(&with_query(&format!("/v2/{repo}/tags/list"), "last", last)).await;
            assert_status(&r, 200);
            let partial: Vec<String> = serde_json::from_value(r.json()["tags"].clone()).unwrap();
            for t in &sorted[..end] {
                assert!(!partial.contains(t), "{t} listed after last={last}");
            }
            for t in &sorted[end..] {
                assert!(partial.contains(t), "{t} missing after last={last}");
            }
        }
    }
    // -- HEAD and GET of tags, manifests and blobs
    let good = |d: &String| !td.bad.contains(d);
    for (reference, m) in td
        .tags
        .iter()
        .map(|(t, d)| (t.clone(), td.manifests.iter().find(|m| m.digest == *d).unwrap()))
        .chain(td.manifests.iter().filter(|m| good(&m.digest)).map(|m| (m.digest.clone(), m)))
    {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let h = reg.send(reg.req(Method::HEAD, &path).header("accept", OCI_INDEX).header("accept", OCI_MANIFEST)).await;
        assert_status(&h, 200);
        assert!(h.body.is_empty());
        assert_eq!(h.must("content-type"), m.media_type, "HEAD {reference}");
        assert_eq!(h.content_length(), Some(m.body.len() as u64), "HEAD {reference}");
        assert_eq!(h.must("docker-content-digest"), m.digest, "HEAD {reference}");
        let g = reg.send(reg.req(Method::GET, &path).header("accept", OCI_INDEX).header("accept", OCI_MANIFEST)).await;
        assert_status(&g, 200);
        assert_eq!(g.must("content-type"), m.media_type, "GET {reference}");
        assert_eq!(&g.body[..], &m.body[..], "GET {reference}");
        assert_eq!(g.must("docker-content-digest"), m.digest, "GET {reference}");
    }
    for (d, data) in &td.blobs {
        let path = format!("/v2/{repo}/blobs/{d}");
        let h = reg.head(&path).await;
        assert_status(&h, 200);
        assert_eq!(h.content_length(), Some(data.len() as u64));
        assert_eq!(h.must("docker-content-digest"), *d);
        let g = reg.get(&path).await;
        assert_status(&g, 200);
        assert_eq!(&g.body[..], &data[..]);
        assert_eq!(g.must("docker-content-digest"), *d);
    }
    // -- referrers, unfiltered and filtered by each artifact type
    for (subject, goals) in &td.referrers {
        let path = format!("/v2/{repo}/referrers/{subject}");
        let r = reg.get(&path).await;
        let listed = referrers_index(&r);
        for goal in goals {
            assert!(listed.iter().any(|l| referrer_matches(l, goal)), "referrer {goal} missing from {listed:?}");
        }
        let mut types: Vec<Option<String>> = goals.iter().map(|g| g["artifactType"].as_str().map(str::to_owned)).collect();
        types.sort();
        types.dedup();
        for at in types {
            let at = at.unwrap_or_default();
            let r = reg.get(&with_query(&path, "artifactType", &at)).await;
            let listed = referrers_index(&r);
            let applied = r.header("oci-filters-applied").unwrap_or_default();
            assert!(
                applied.split(',').any(|f| f.trim() == "artifactType"),
                "OCI-Filters-Applied is {applied:?} for artifactType={at:?}"
            );
            for goal in goals.iter().filter(|g| g["artifactType"].as_str().unwrap_or("") == at) {
                assert!(listed.iter().any(|l| referrer_matches(l, goal)), "filtered referrer {goal} missing");
            }
            for l in &listed {
                assert_eq!(l["artifactType"].as_str().unwrap_or(""), at, "filter for {at:?} let through {l}");
            }
        }
    }
    // -- deletes: tags, manifests (last pushed first), blobs; each then HEAD 404
    for tag in td.tags.keys() {
        let path = format!("/v2/{repo}/manifests/{tag}");
        assert_status(&reg.delete(&path).await, 202);
        assert_head_error(&reg.head(&path).await, 404);
    }
    for m in td.manifests.iter().rev() {
        let path = format!("/v2/{repo}/manifests/{}", m.digest);
        let r = reg.delete(&path).await;
        if good(&m.digest) {
            assert_status(&r, 202);
        } else {
            assert!(r.status == 404 || r.status == 202, "{}", r.describe());
        }
        assert_head_error(&reg.head(&path).await, 404);
    }
    for (d, _) in &td.blobs {
        let path = format!("/v2/{repo}/blobs/{d}");
        assert_status(&reg.delete(&path).await, 202);
        assert_head_error(&reg.head(&path).await, 404);
    }
}

/// The manifests of a referrers response, after checking it is an OCI index.
fn referrers_index(r: &Resp) -> Vec<Value> {
    assert_status(r, 200);
    assert_eq!(r.must("content-type"), OCI_INDEX);
    let v = r.json();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    v["manifests"].as_array().cloned().unwrap_or_default()
}

fn referrer_matches(listed: &Value, goal: &Value) -> bool {
    let annotations_ok = match goal["annotations"].as_object() {
        None => true,
        Some(want) => want.iter().all(|(k, v)| listed["annotations"][k] == *v),
    };
    listed["digest"] == goal["digest"]
        && listed["mediaType"] == goal["mediaType"]
        && listed["size"] == goal["size"]
        && listed["artifactType"].as_str().unwrap_or("") == goal["artifactType"].as_str().unwrap_or("")
        && annotations_ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_image() {
    let mut td = DataSet::default();
    td.gen_manifest_full(&tagged("image"));
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_image_uncompressed() {
    let mut td = DataSet::default();
    td.gen_manifest_full(&Opts { uncompressed: true, ..tagged("image-uncompressed") });
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_large_manifest() {
    // 390 annotations of 10000 bytes: a manifest of about 3.9 MB, under the 4 MiB cap.
    let mut a = serde_json::Map::new();
    for i in 0..390 {
        a.insert(format!("large-annotation-{i}"), json!("A".repeat(10000)));
    }
    let mut td = DataSet::default();
    td.gen_manifest_full(&Opts { annotations: Some(a), ..tagged("large-manifest") });
    assert!(td.manifests[0].body.len() > 3_900_000 && td.manifests[0].body.len() < FOUR_MIB);
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_index() {
    let mut td = DataSet::default();
    td.gen_index_full(&tagged("index"));
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_nested_index() {
    let mut td = DataSet::default();
    let i1 = td.gen_index_full(&opts());
    let i2 = td.gen_index_full(&opts());
    td.gen_index(&[None, None], &[i1, i2], &tagged("index-of-index"));
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_empty_index() {
    let mut td = DataSet::default();
    td.gen_index_full(&Opts { platforms: Some(vec![]), ..tagged("index") });
    assert!(String::from_utf8_lossy(&td.manifests[0].body).contains("\"manifests\":[]"));
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_artifact() {
    let mut td = DataSet::default();
    td.gen_manifest_full(&Opts { tag: Some("artifact".into()), ..artifact_opts(EXAMPLE_CONF1) });
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_artifact_index() {
    let mut td = DataSet::default();
    td.gen_index_full(&Opts { tag: Some("artifact-index".into()), ..artifact_opts(EXAMPLE_CONF1) });
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_artifact_without_layers() {
    let mut td = DataSet::default();
    td.gen_manifest_full(&Opts {
        tag: Some("artifact-without-layers".into()),
        layer_bytes: Some(b"{}".to_vec()),
        layer_media_type: Some(OCI_EMPTY.into()),
        ..artifact_opts(EXAMPLE_CONF1)
    });
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_artifacts_with_subject() {
    let mut td = DataSet::default();
    let subject = td.gen_manifest_full(&tagged("image"));
    td.gen_manifest_full(&Opts { subject: Some(subject.clone()), ..opts() });
    for (at, layer_mt, tag) in [
        (EXAMPLE_CONF1, EXAMPLE_CONF1, "tagged-artifact1"),
        (EXAMPLE_CONF2, OCTET, "tagged-artifact2"),
    ] {
        td.gen_manifest_full(&Opts {
            annotations: conformance_annotation(),
            annotation_uniq: true,
            layer_media_type: Some(layer_mt.into()),
            subject: Some(subject.clone()),
            tag: Some(tag.into()),
            ..artifact_opts(at)
        });
    }
    assert_eq!(td.referrers[subject["digest"].as_str().unwrap()].len(), 3);
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_index_with_subject() {
    let mut td = DataSet::default();
    let subject = td.gen_index_full(&tagged("index"));
    td.gen_index_full(&Opts {
        annotations: conformance_annotation(),
        annotation_uniq: true,
        subject: Some(subject.clone()),
        tag: Some("tagged-artifact".into()),
        ..artifact_opts(EXAMPLE_CONF1)
    });
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_missing_subject() {
    let mut td = DataSet::default();
    let missing = json!({ "mediaType": OCI_MANIFEST, "size": 123, "digest": sha256(b"missing content") });
    td.gen_manifest_full(&Opts {
        annotations: conformance_annotation(),
        annotation_uniq: true,
        subject: Some(missing),
        tag: Some("tagged-artifact".into()),
        ..artifact_opts(EXAMPLE_CONF1)
    });
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_data_field() {
    let mut td = DataSet::default();
    td.gen_manifest_full(&Opts { set_data: true, ..tagged("data-field") });
    assert!(String::from_utf8_lossy(&td.manifests[0].body).contains("\"data\":"));
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_non_distributable_layers() {
    // Two non-distributable layers (with urls, never pushed) and one normal layer.
    let mut td = DataSet::default();
    let o = opts();
    let nd = |mt: &str, size: u64| {
        let d = sha256(&random_bytes(256));
        let hex = d.trim_start_matches("sha256:").to_owned();
        json!({ "mediaType": mt, "digest": d, "size": size, "urls": [format!("https://store.example.com/blobs/sha256/{hex}")] })
    };
    let l0 = nd(OCI_LAYER_ND_GZ, 123456);
    let l1 = nd(OCI_LAYER_ND, 12345);
    let (l2, diff2) = td.gen_layer(1, &o);
    let diffs = vec![sha256(&random_bytes(256)), l1["digest"].as_str().unwrap().to_owned(), diff2];
    let config = td.gen_config(&platform("amd64"), &diffs, &o);
    td.gen_manifest(config, vec![l0, l1, l2], &tagged("non-distributable-image"));
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_custom_fields() {
    let mut td = DataSet::default();
    td.gen_index_full(&Opts { extra_field: true, ..tagged("custom-fields") });
    assert!(String::from_utf8_lossy(&td.manifests[0].body).contains("customField"));
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_no_layers() {
    let mut td = DataSet::default();
    td.gen_manifest_full(&Opts { layer_count: Some(0), ..tagged("no-layers") });
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_sha512() {
    // Every blob and manifest by sha512; no tags (only pushed by digest).
    let mut td = DataSet::default();
    td.gen_index_full(&Opts { alg: Some(Alg::Sha512), ..opts() });
    assert!(td.manifests.iter().all(|m| m.digest.starts_with("sha512:")));
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_tag_param_sha256() {
    let mut td = DataSet::default();
    td.gen_index_full(&tagged("tag-param-sha256"));
    td.tag_every_manifest("tag-param-sha256");
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_tag_param_sha512() {
    let mut td = DataSet::default();
    td.gen_index_full(&Opts { alg: Some(Alg::Sha512), ..tagged("tag-param-sha512") });
    td.tag_every_manifest("tag-param-sha512");
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_bad_digest_image() {
    // Two spaces appended to the manifest: its digest no longer matches the body.
    let mut td = DataSet::default();
    td.gen_manifest_full(&opts());
    let m = td.manifests.last_mut().unwrap();
    m.body.extend_from_slice(b"  ");
    td.bad.push(m.digest.clone());
    run_data_set(td).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_param_push_answers_oci_tag_header_listing_each_tag() {
    // The redesigned suite (version 1.1+dev) requires `OCI-Tag` on a PUT with `?tag=`.
    let reg = TestRegistry::start().await;
    let img = reg.push_image(REPO, None, 1).await;
    let path = with_query(&with_query(&format!("/v2/{REPO}/manifests/{}", img.digest), "tag", "one"), "tag", "two");
    let r = reg
        .send(reg.req(Method::PUT, &path).header("content-type", OCI_MANIFEST).body(img.manifest.clone()))
        .await;
    assert_status(&r, 201);
    let listed: Vec<String> = r
        .header_all("oci-tag")
        .iter()
        .flat_map(|v| v.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>())
        .collect();
    for t in ["one", "two"] {
        assert!(listed.iter().any(|x| x == t), "OCI-Tag lacks {t}: {}", r.describe());
    }
}

// =========================================================================================
// Issue #2: uploads
// =========================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monolithic_post_with_digest_publishes_before_answering() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(100_000);
    let d = sha256(&data);
    let r = reg.post_blob("mono/repo", &d, data.clone()).await;
    assert_status(&r, 201);
    assert_eq!(r.must("docker-content-digest"), d);
    assert_eq!(path_of(&r.location()), format!("/v2/mono/repo/blobs/{d}"));
    // Readable right away, with its true size.
    let h = reg.head(&format!("/v2/mono/repo/blobs/{d}")).await;
    assert_status(&h, 200);
    assert_eq!(h.content_length(), Some(100_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_opens_session_with_location_uuid_and_empty_range() {
    let reg = TestRegistry::start().await;
    let r = reg.post("/v2/sess/repo/blobs/uploads/").await;
    assert_status(&r, 202);
    let loc = r.location();
    let uuid = r.must("docker-upload-uuid");
    assert!(path_of(&loc).starts_with("/v2/sess/repo/blobs/uploads/"), "{loc}");
    assert!(loc.contains(&uuid));
    if let Some(range) = r.header("range") {
        assert_eq!(range, "0-0", "never 0--1");
    }
    // Also without the trailing slash.
    assert_status(&reg.post("/v2/sess/repo/blobs/uploads").await, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_status_and_resume_headers() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(3000);
    let d = sha256(&data);
    let loc = reg.open_upload("chunk/repo").await;
    // Status of a fresh session.
    let st = reg.get(&loc).await;
    assert_status(&st, 204);
    assert_eq!(st.must("range"), "0-0");
    assert!(!st.location().is_empty());
    // First chunk.
    let r = reg.patch_chunk(&loc, 0, &data[..1000]).await;
    assert_status(&r, 202);
    assert_eq!(r.must("range"), "0-999");
    assert!(r.header("docker-upload-uuid").is_some());
    let loc = r.location();
    // Status: 204 + Range + Location (+ the session id).
    let st = reg.get(&loc).await;
    assert_status(&st, 204);
    assert_eq!(st.must("range"), "0-999");
    assert!(!st.location().is_empty());
    assert!(st.header("docker-upload-uuid").is_some());
    // A chunk that skips ahead: 416 with where to resume.
    let r = reg.patch_chunk(&loc, 2000, &data[2000..]).await;
    assert_eq!(r.status, 416, "{}", r.describe());
    assert_eq!(r.must("range"), "0-999");
    assert!(!r.location().is_empty());
    // A retried (already received) chunk: 416 too.
    let r = reg.patch_chunk(&loc, 0, &data[..1000]).await;
    assert_eq!(r.status, 416, "{}", r.describe());
    // Nothing of the refused chunks was kept.
    assert_eq!(reg.get(&loc).await.must("range"), "0-999");
    let r = reg.patch_chunk(&loc, 1000, &data[1000..2000]).await;
    assert_status(&r, 202);
    assert_eq!(r.must("range"), "0-1999");
    // The last chunk in the closing PUT, with its Content-Range.
    let r = reg
        .send(
            reg.req(Method::PUT, &with_query(&r.location(), "digest", &d))
                .header("content-type", OCTET)
                .header("content-range", "2000-2999")
                .body(data[2000..].to_vec()),
        )
        .await;
    assert_status(&r, 201);
    assert_eq!(r.must("docker-content-digest"), d);
    let g = reg.get(&format!("/v2/chunk/repo/blobs/{d}")).await;
    assert_eq!(&g.body[..], &data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_put_with_misplaced_content_range_is_416() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(200);
    let loc = reg.open_upload("chunk/repo").await;
    let r = reg.patch_chunk(&loc, 0, &data[..100]).await;
    assert_status(&r, 202);
    let r = reg
        .send(
            reg.req(Method::PUT, &with_query(&r.location(), "digest", &sha256(&data)))
                .header("content-range", "150-249")
                .body(data[100..].to_vec()),
        )
        .await;
    assert_eq!(r.status, 416, "{}", r.describe());
    assert_eq!(r.must("range"), "0-99");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_put_with_last_chunk_without_content_range_appends_it() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(5000);
    let d = sha256(&data);
    let loc = reg.open_upload("chunk/repo").await;
    let r = reg.patch_chunk(&loc, 0, &data[..2500]).await;
    assert_status(&r, 202);
    let r = reg
        .send(reg.req(Method::PUT, &with_query(&r.location(), "digest", &d)).body(data[2500..].to_vec()))
        .await;
    assert_status(&r, 201);
    let g = reg.get(&format!("/v2/chunk/repo/blobs/{d}")).await;
    assert_eq!(sha256(&g.body), d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_without_digest_is_400_digest_invalid() {
    let reg = TestRegistry::start().await;
    let loc = reg.open_upload("nodigest/repo").await;
    let r = reg.patch_chunk(&loc, 0, b"some data").await;
    assert_status(&r, 202);
    let r = reg.send(reg.req(Method::PUT, &r.location()).body(Vec::<u8>::new())).await;
    assert_error(&r, 400, "DIGEST_INVALID");
    // With a last chunk too.
    let loc = reg.open_upload("nodigest/repo").await;
    let r = reg.send(reg.req(Method::PUT, &loc).body(b"whole body".to_vec())).await;
    assert_error(&r, 400, "DIGEST_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_upload_with_chunked_transfer_encoding_then_empty_put() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(3 * 1024 * 1024 + 17);
    let d = sha256(&data);
    let loc = reg.open_upload("stream/repo").await;
    // One PATCH, no Content-Range, no Content-Length: chunked transfer encoding.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = data.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
    let r = reg.send(reg.req(Method::PATCH, &loc).header("content-type", OCTET).body(body)).await;
    assert_status(&r, 202);
    assert_eq!(r.must("range"), format!("0-{}", data.len() - 1));
    let r = reg.close_upload(&r.location(), &d).await;
    assert_status(&r, 201);
    assert_eq!(r.must("docker-content-digest"), d);
    let h = reg.head(&format!("/v2/stream/repo/blobs/{d}")).await;
    assert_eq!(h.content_length(), Some(data.len() as u64));
    let g = reg.get(&format!("/v2/stream/repo/blobs/{d}")).await;
    assert_eq!(sha256(&g.body), d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_blob_through_every_flow() {
    let reg = TestRegistry::start().await;
    let repo = "empty/blob";
    let check = |r: Resp| {
        assert_status(&r, 201);
        assert_eq!(r.must("docker-content-digest"), EMPTY_DIGEST);
    };
    check(reg.post_blob(repo, EMPTY_DIGEST, Vec::new()).await);
    check(reg.push_blob_post_put(repo, b"", EMPTY_DIGEST).await);
    // POST then PUT ?digest= with no PATCH at all.
    let loc = reg.open_upload(repo).await;
    check(reg.close_upload(&loc, EMPTY_DIGEST).await);
    // An empty streamed PATCH.
    let loc = reg.open_upload(repo).await;
    let r = reg.send(reg.req(Method::PATCH, &loc).body(Vec::<u8>::new())).await;
    assert_status(&r, 202);
    assert_eq!(r.must("range"), "0-0");
    check(reg.close_upload(&r.location(), EMPTY_DIGEST).await);
    let h = reg.head(&format!("/v2/{repo}/blobs/{EMPTY_DIGEST}")).await;
    assert_status(&h, 200);
    assert_eq!(h.content_length(), Some(0));
    assert_eq!(h.must("docker-content-digest"), EMPTY_DIGEST);
    let g = reg.get(&format!("/v2/{repo}/blobs/{EMPTY_DIGEST}")).await;
    assert_status(&g, 200);
    assert!(g.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_repo_mount_201_with_location_and_digest() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(4000);
    let d = reg.push_blob("src/repo", &data).await;
    let r = reg
        .post(&with_query(&with_query("/v2/dst/repo/blobs/uploads/", "mount", &d), "from", "src/repo"))
        .await;
    assert_status(&r, 201);
    assert_eq!(path_of(&r.location()), format!("/v2/dst/repo/blobs/{d}"));
    assert_eq!(r.must("docker-content-digest"), d);
    let h = reg.head(&format!("/v2/dst/repo/blobs/{d}")).await;
    assert_status(&h, 200);
    assert_eq!(h.content_length(), Some(4000));
    // crane's extra `origin=` parameter is ignored.
    let r = reg
        .post(&with_query(
            &with_query(&with_query("/v2/dst2/repo/blobs/uploads/", "mount", &d), "from", "src/repo"),
            "origin",
            "registry.example.com",
        ))
        .await;
    assert_status(&r, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_repo_mount_of_blob_absent_from_source_is_202_session() {
    let reg = TestRegistry::start().await;
    let elsewhere = reg.push_blob("other/repo", b"only here").await;
    for from in ["src/repo", "never/created", "other/repo2"] {
        let r = reg
            .post(&with_query(&with_query("/v2/dst/repo/blobs/uploads/", "mount", &elsewhere), "from", from))
            .await;
        assert_status(&r, 202);
        assert!(path_of(&r.location()).starts_with("/v2/dst/repo/blobs/uploads/"));
        assert!(r.header("docker-upload-uuid").is_some());
        // The session is usable.
        let put = reg
            .send(reg.req(Method::PUT, &with_query(&r.location(), "digest", &elsewhere)).body(b"only here".to_vec()))
            .await;
        assert_status(&put, 201);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_chunked_upload_with_digest_algorithm_declared() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(70_000);
    let d = sha512(&data);
    let r = reg.post(&with_query("/v2/s512/repo/blobs/uploads/", "digest-algorithm", "sha512")).await;
    assert_status(&r, 202);
    let mut loc = r.location();
    for (i, c) in data.chunks(30_000).enumerate() {
        let r = reg.patch_chunk(&loc, i * 30_000, c).await;
        assert_status(&r, 202);
        loc = r.location();
    }
    let r = reg.close_upload(&loc, &d).await;
    assert_status(&r, 201);
    assert_eq!(r.must("docker-content-digest"), d);
    assert_eq!(path_of(&r.location()), format!("/v2/s512/repo/blobs/{d}"));
    let g = reg.get(&format!("/v2/s512/repo/blobs/{d}")).await;
    assert_eq!(g.must("docker-content-digest"), d);
    assert_eq!(sha512(&g.body), d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_monolithic_upload_and_undeclared_chunked_upload() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(10_000);
    let d = sha512(&data);
    let r = reg.post_blob("s512/repo", &d, data.clone()).await;
    assert_status(&r, 201);
    assert_eq!(r.must("docker-content-digest"), d);
    // A chunked upload that names sha512 only at the closing PUT.
    let data2 = random_bytes(10_000);
    let d2 = sha512(&data2);
    let r = reg.push_blob_chunked("s512/repo", &data2, 4000, &d2).await;
    assert_status(&r, 201);
    assert_eq!(r.must("docker-content-digest"), d2);
    for (dd, bytes) in [(&d, &data), (&d2, &data2)] {
        let g = reg.get(&format!("/v2/s512/repo/blobs/{dd}")).await;
        assert_status(&g, 200);
        assert_eq!(&g.body[..], &bytes[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_digest_algorithm_is_digest_invalid() {
    let reg = TestRegistry::start().await;
    let r = reg.post(&with_query("/v2/alg/repo/blobs/uploads/", "digest-algorithm", "md5")).await;
    assert_error(&r, 400, "DIGEST_INVALID");
    let r = reg.post_blob("alg/repo", "md5:5eb63bbbe01eeed093cb22bb8f5acdc3", b"hello world".to_vec()).await;
    assert_error(&r, 400, "DIGEST_INVALID");
}

// =========================================================================================
// Issue #2: manifest pushes
// =========================================================================================

/// Pushes a config blob and returns a manifest over it whose body is padded by an
/// annotation to exactly `len` bytes.
async fn manifest_of_length(reg: &TestRegistry, repo: &str, len: usize) -> Vec<u8> {
    let config = image_config();
    reg.push_blob(repo, &config).await;
    let base = oci_manifest(&descriptor(OCI_CONFIG, &config), &[], json!({ "annotations": { "pad": "" } }));
    assert!(base.len() <= len);
    let body = oci_manifest(
        &descriptor(OCI_CONFIG, &config),
        &[],
        json!({ "annotations": { "pad": "x".repeat(len - base.len()) } }),
    );
    assert_eq!(body.len(), len);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_of_exactly_4_mib_is_accepted() {
    let reg = TestRegistry::start().await;
    let body = manifest_of_length(&reg, "big/repo", FOUR_MIB).await;
    let r = reg.put_manifest("big/repo", "exact", OCI_MANIFEST, &body).await;
    assert_ne!(r.status, 413, "exactly 4 MiB must not be too large");
    assert_status(&r, 201);
    let g = reg.get("/v2/big/repo/manifests/exact").await;
    assert_eq!(g.body.len(), FOUR_MIB);
    assert_eq!(sha256(&g.body), sha256(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_above_4_mib_is_413_and_not_stored() {
    let reg = TestRegistry::start().await;
    let body = manifest_of_length(&reg, "big/repo", FOUR_MIB + 1).await;
    let r = reg.put_manifest("big/repo", "over", OCI_MANIFEST, &body).await;
    assert_eq!(r.status, 413, "{}", r.describe());
    assert!(!r.error_codes().is_empty(), "413 carries a spec error body");
    assert_error(&reg.get("/v2/big/repo/manifests/over").await, 404, "MANIFEST_UNKNOWN");
    // Without a Content-Length (chunked transfer encoding) the cap holds as well.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let r = reg
        .send(
            reg.req(Method::PUT, "/v2/big/repo/manifests/over2")
                .header("content-type", OCI_MANIFEST)
                .body(reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.describe());
    assert_error(&reg.get("/v2/big/repo/manifests/over2").await, 404, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_with_missing_config_or_layer_is_manifest_blob_unknown() {
    let reg = TestRegistry::start().await;
    let repo = "refs/repo";
    let config = image_config();
    let layer = random_bytes(100);
    // The config is missing.
    reg.push_blob(repo, &layer).await;
    let m = oci_manifest(&descriptor(OCI_CONFIG, &config), &[descriptor(OCI_LAYER_GZ, &layer)], json!({}));
    let r = reg.put_manifest(repo, "a", OCI_MANIFEST, &m).await;
    assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");
    assert_error(&reg.get(&format!("/v2/{repo}/manifests/{}", sha256(&m))).await, 404, "MANIFEST_UNKNOWN");
    // A layer is missing.
    reg.push_blob(repo, &config).await;
    let other = random_bytes(100);
    let m = oci_manifest(&descriptor(OCI_CONFIG, &config), &[descriptor(OCI_LAYER_GZ, &layer), descriptor(OCI_LAYER_GZ, &other)], json!({}));
    let r = reg.put_manifest(repo, "a", OCI_MANIFEST, &m).await;
    assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");
    assert_error(&reg.get(&format!("/v2/{repo}/manifests/a")).await, 404, "MANIFEST_UNKNOWN");
    // A blob pushed to another repository does not count.
    reg.push_blob("elsewhere/repo", &other).await;
    let r = reg.put_manifest(repo, "a", OCI_MANIFEST, &m).await;
    assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_with_wrong_blob_size_is_manifest_blob_unknown() {
    let reg = TestRegistry::start().await;
    let repo = "refs/repo";
    let config = image_config();
    let layer = random_bytes(100);
    reg.push_blob(repo, &config).await;
    reg.push_blob(repo, &layer).await;
    for (csize, lsize) in [(config.len() + 1, 100), (config.len(), 0), (config.len(), 99)] {
        let m = oci_manifest(
            &json!({ "mediaType": OCI_CONFIG, "digest": sha256(&config), "size": csize }),
            &[json!({ "mediaType": OCI_LAYER_GZ, "digest": sha256(&layer), "size": lsize })],
            json!({}),
        );
        let r = reg.put_manifest(repo, "sized", OCI_MANIFEST, &m).await;
        assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");
    }
    // Docker schema2 too.
    let m = to_json(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": DOCKER_CONFIG, "digest": sha256(&config), "size": config.len() },
        "layers": [{ "mediaType": DOCKER_LAYER, "digest": sha256(&layer), "size": 7 }],
    }));
    let r = reg.put_manifest(repo, "docker", DOCKER_MANIFEST, &m).await;
    assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_with_missing_child_manifest_is_manifest_unknown() {
    let reg = TestRegistry::start().await;
    let repo = "idx/repo";
    let img = reg.push_image(repo, None, 1).await;
    let ghost = json!({ "mediaType": OCI_MANIFEST, "digest": sha256(b"never pushed"), "size": 12, "platform": platform("arm64") });
    for (mt, body) in [
        (OCI_INDEX, oci_index(&[img.descriptor(), ghost.clone()], json!({}))),
        (DOCKER_LIST, to_json(&json!({ "schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [ghost.clone()] }))),
    ] {
        let r = reg.put_manifest(repo, "multi", mt, &body).await;
        assert!(r.status == 400 || r.status == 404, "{}", r.describe());
        assert_error(&r, r.status, "MANIFEST_UNKNOWN");
        assert_error(&reg.get(&format!("/v2/{repo}/manifests/multi")).await, 404, "MANIFEST_UNKNOWN");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_index_accepted_when_policy_allows() {
    // The redesigned suite's "sparse" data (off by default there): an index listing a
    // platform that was never pushed.
    let reg = TestRegistry::start_with(|c| c.policy.allow_sparse_index = true).await;
    let repo = "sparse/repo";
    let img = reg.push_image(repo, None, 1).await;
    let rand_desc = json!({ "mediaType": OCI_MANIFEST, "digest": sha256(&random_bytes(1024)), "size": 1024, "platform": platform("arm64") });
    let mut first = img.descriptor();
    first["platform"] = platform("amd64");
    let body = oci_index(&[first, rand_desc], json!({}));
    let d = reg.push_manifest(repo, "sparse-index", OCI_INDEX, &body).await;
    let g = reg.get(&format!("/v2/{repo}/manifests/sparse-index")).await;
    assert_status(&g, 200);
    assert_eq!(g.must("docker-content-digest"), d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_by_digest_with_body_that_does_not_hash_to_it_is_digest_invalid() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image("dig/repo", Some("t"), 1).await;
    let mut other = img.manifest.clone();
    other.push(b'\n');
    let r = reg.put_manifest("dig/repo", &img.digest, OCI_MANIFEST, &other).await;
    assert_error(&r, 400, "DIGEST_INVALID");
    // The stored manifest is untouched.
    let g = reg.get(&format!("/v2/dig/repo/manifests/{}", img.digest)).await;
    assert_eq!(&g.body[..], &img.manifest[..]);
    assert_error(&reg.get(&format!("/v2/dig/repo/manifests/{}", sha256(&other))).await, 404, "MANIFEST_UNKNOWN");
    // A sha512 reference with a sha256-only body match is refused too.
    let r = reg.put_manifest("dig/repo", &sha512(&other), OCI_MANIFEST, &img.manifest).await;
    assert_error(&r, 400, "DIGEST_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_put_answers_location_and_digest() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image("loc/repo", None, 1).await;
    let r = reg.put_manifest("loc/repo", "latest", OCI_MANIFEST, &img.manifest).await;
    assert_status(&r, 201);
    assert_eq!(path_of(&r.location()), format!("/v2/loc/repo/manifests/{}", img.digest));
    assert_eq!(r.must("docker-content-digest"), img.digest);
    assert!(r.header("oci-subject").is_none(), "no subject, no OCI-Subject");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_with_subject_answers_oci_subject() {
    let reg = TestRegistry::start().await;
    let repo = "subj/repo";
    let subject = reg.push_image(repo, Some("v1"), 1).await;
    reg.push_blob(repo, b"{}").await;
    let sig = random_bytes(64);
    reg.push_blob(repo, &sig).await;
    let art = oci_manifest(
        &json!({ "mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2 }),
        &[descriptor("application/vnd.example.signature", &sig)],
        json!({ "artifactType": "application/vnd.example.signature", "subject": subject.descriptor() }),
    );
    let r = reg.put_manifest(repo, &sha256(&art), OCI_MANIFEST, &art).await;
    assert_status(&r, 201);
    assert_eq!(r.must("oci-subject"), subject.digest);
    // An index with a subject too.
    let idx = oci_index(&[], json!({ "artifactType": "application/vnd.example.list", "subject": subject.descriptor() }));
    let r = reg.put_manifest(repo, &sha256(&idx), OCI_INDEX, &idx).await;
    assert_status(&r, 201);
    assert_eq!(r.must("oci-subject"), subject.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_tag_parameters_on_one_put() {
    let reg = TestRegistry::start().await;
    let repo = "multi/tag";
    let img = reg.push_image(repo, None, 1).await;
    let path = with_query(
        &with_query(&with_query(&format!("/v2/{repo}/manifests/{}", img.digest), "tag", "a"), "tag", "b"),
        "tag",
        "c",
    );
    let r = reg.send(reg.req(Method::PUT, &path).header("content-type", OCI_MANIFEST).body(img.manifest.clone())).await;
    assert_status(&r, 201);
    for t in ["a", "b", "c"] {
        let g = reg.head(&format!("/v2/{repo}/manifests/{t}")).await;
        assert_status(&g, 200);
        assert_eq!(g.must("docker-content-digest"), img.digest, "tag {t}");
    }
    // Combined with a tag reference.
    let path = with_query(&format!("/v2/{repo}/manifests/d"), "tag", "e");
    let r = reg.send(reg.req(Method::PUT, &path).header("content-type", OCI_MANIFEST).body(img.manifest.clone())).await;
    assert_status(&r, 201);
    assert_eq!(reg.tags(repo).await, vec!["a", "b", "c", "d", "e"]);
    // An invalid tag parameter fails the whole push and tags nothing.
    let img2 = reg.push_image(repo, None, 1).await;
    let path = with_query(&with_query(&format!("/v2/{repo}/manifests/{}", img2.digest), "tag", "f"), "tag", "-bad");
    let r = reg.send(reg.req(Method::PUT, &path).header("content-type", OCI_MANIFEST).body(img2.manifest.clone())).await;
    assert_eq!(r.status, 400, "{}", r.describe());
    assert_error(&reg.get(&format!("/v2/{repo}/manifests/f")).await, 404, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_distributable_layers_need_not_be_pushed() {
    let reg = TestRegistry::start().await;
    let repo = "nd/repo";
    let config = image_config();
    reg.push_blob(repo, &config).await;
    let ghost = sha256(b"foreign layer");
    let m = oci_manifest(
        &descriptor(OCI_CONFIG, &config),
        &[json!({ "mediaType": OCI_LAYER_ND_GZ, "digest": ghost, "size": 123456, "urls": ["https://example.com/layer"] })],
        json!({}),
    );
    let r = reg.put_manifest(repo, "nd", OCI_MANIFEST, &m).await;
    assert_status(&r, 201);
    // Docker's foreign layers are the same thing.
    let dm = to_json(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": DOCKER_CONFIG, "digest": sha256(&config), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": ghost, "size": 99, "urls": ["https://example.com/l"] }],
    }));
    assert_status(&reg.put_manifest(repo, "nd-docker", DOCKER_MANIFEST, &dm).await, 201);
}
