//! Content Management: the v1.1 conformance suite's `04_management_test.go` cases, and
//! issue #2's deletes (manifest by digest removes its tags, by tag removes only the tag,
//! blob delete, upload cancel), tag overwrite, and the policy that disables deletes.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

/// The suite's Content Management setup: configs[3] and the layer by POST+PUT, manifests[3]
/// tagged `tagtest0`; returns the number of tags before anything is deleted.
async fn management_setup(reg: &TestRegistry, s: &Suite) -> usize {
    for blob in [&s.configs[3], &s.layer] {
        let r = reg.push_blob_post_put(REPO, blob, &sha256(blob)).await;
        assert_2xx(&r);
    }
    let r = reg.put_manifest(REPO, "tagtest0", OCI_MANIFEST, &s.manifests[3]).await;
    assert_2xx(&r);
    let r = reg.get(&format!("/v2/{REPO}/tags/list")).await;
    assert_status(&r, 200);
    r.json()["tags"].as_array().unwrap().len()
}

async fn managed() -> (TestRegistry, Suite, usize) {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    let n = management_setup(&reg, &s).await;
    (reg, s, n)
}

// ---- v1.1 suite: Content Management / Setup ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_setup_populate_registry_and_count_tags() {
    let (_, _, n) = managed().await;
    assert_eq!(n, 1);
}

// ---- v1.1 suite: Manifest delete ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_delete_request_to_manifest_tag_should_return_202_unless_tag_deletion_is_disallowed() {
    let (reg, _, _) = managed().await;
    let r = reg.delete(&format!("/v2/{REPO}/manifests/tagtest0")).await;
    // 400 UNSUPPORTED and 405 are conformant; specreg deletes tags.
    assert_status(&r, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_delete_request_to_manifest_digest_should_yield_202_response_unless_already_deleted() {
    let (reg, s, _) = managed().await;
    assert_status(&reg.delete(&format!("/v2/{REPO}/manifests/tagtest0")).await, 202);
    let r = reg.delete(&format!("/v2/{REPO}/manifests/{}", s.manifest_digest(3))).await;
    // Deleting the tag left the manifest, so this delete finds it.
    assert_status(&r, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_get_request_to_deleted_manifest_url_should_yield_404_response_unless_delete_is_disallowed() {
    let (reg, s, _) = managed().await;
    assert_status(&reg.delete(&format!("/v2/{REPO}/manifests/tagtest0")).await, 202);
    assert_status(&reg.delete(&format!("/v2/{REPO}/manifests/{}", s.manifest_digest(3))).await, 202);
    let r = reg.get(&format!("/v2/{REPO}/manifests/{}", s.manifest_digest(3))).await;
    assert_error(&r, 404, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_get_request_to_tags_list_should_reflect_manifest_deletion() {
    let (reg, s, before) = managed().await;
    assert_status(&reg.delete(&format!("/v2/{REPO}/manifests/tagtest0")).await, 202);
    assert_status(&reg.delete(&format!("/v2/{REPO}/manifests/{}", s.manifest_digest(3))).await, 202);
    let r = reg.get(&format!("/v2/{REPO}/tags/list")).await;
    assert_status(&r, 200);
    let now = r.json()["tags"].as_array().map(|a| a.len()).unwrap_or(0);
    assert!(now < before, "{now} tags, {before} before");
}

// ---- v1.1 suite: Blob delete ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_delete_request_to_blob_url_should_yield_202_response() {
    let (reg, s, _) = managed().await;
    for d in [s.config_digest(3), s.layer_digest()] {
        let r = reg.delete(&format!("/v2/{REPO}/blobs/{d}")).await;
        assert_status(&r, 202);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_get_request_to_deleted_blob_url_should_yield_404_response() {
    let (reg, s, _) = managed().await;
    assert_status(&reg.delete(&format!("/v2/{REPO}/blobs/{}", s.config_digest(3))).await, 202);
    let r = reg.get(&format!("/v2/{REPO}/blobs/{}", s.config_digest(3))).await;
    assert_error(&r, 404, "BLOB_UNKNOWN");
}

// ---- issue #2: deletes ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_manifest_by_digest_removes_its_tags() {
    let reg = TestRegistry::start().await;
    let repo = "del/digest";
    let img = reg.push_image(repo, Some("a"), 1).await;
    reg.push_manifest(repo, "b", OCI_MANIFEST, &img.manifest).await;
    let other = reg.push_image(repo, Some("keep"), 1).await;
    let r = reg.delete(&format!("/v2/{repo}/manifests/{}", img.digest)).await;
    assert_status(&r, 202);
    for reference in ["a", "b", img.digest.as_str()] {
        assert_error(&reg.get(&format!("/v2/{repo}/manifests/{reference}")).await, 404, "MANIFEST_UNKNOWN");
        assert_head_error(&reg.head(&format!("/v2/{repo}/manifests/{reference}")).await, 404);
    }
    assert_eq!(reg.tags(repo).await, vec!["keep"]);
    assert_status(&reg.get(&format!("/v2/{repo}/manifests/{}", other.digest)).await, 200);
    // The blobs stay: deleting a manifest is not deleting its content.
    assert_status(&reg.head(&format!("/v2/{repo}/blobs/{}", sha256(&img.config))).await, 200);
    // A second delete finds nothing.
    let r = reg.delete(&format!("/v2/{repo}/manifests/{}", img.digest)).await;
    assert_error(&r, 404, "MANIFEST_UNKNOWN");
    // And the manifest can be pushed again.
    reg.push_manifest(repo, "a", OCI_MANIFEST, &img.manifest).await;
    assert_status(&reg.get(&format!("/v2/{repo}/manifests/a")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_manifest_by_tag_removes_only_the_tag() {
    let reg = TestRegistry::start().await;
    let repo = "del/tag";
    let img = reg.push_image(repo, Some("a"), 1).await;
    reg.push_manifest(repo, "b", OCI_MANIFEST, &img.manifest).await;
    let r = reg.delete(&format!("/v2/{repo}/manifests/a")).await;
    assert_status(&r, 202);
    assert_error(&reg.get(&format!("/v2/{repo}/manifests/a")).await, 404, "MANIFEST_UNKNOWN");
    let g = reg.get(&format!("/v2/{repo}/manifests/b")).await;
    assert_status(&g, 200);
    assert_eq!(g.must("docker-content-digest"), img.digest);
    assert_status(&reg.get(&format!("/v2/{repo}/manifests/{}", img.digest)).await, 200);
    assert_eq!(reg.tags(repo).await, vec!["b"]);
    // Unknown tag.
    assert_error(&reg.delete(&format!("/v2/{repo}/manifests/a")).await, 404, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_blob_then_404_and_other_repositories_keep_it() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(1000);
    let d = reg.push_blob("del/blob", &data).await;
    let mount = with_query(&with_query("/v2/del/other/blobs/uploads/", "mount", &d), "from", "del/blob");
    assert_status(&reg.post(&mount).await, 201);
    let r = reg.delete(&format!("/v2/del/blob/blobs/{d}")).await;
    assert_status(&r, 202);
    assert_head_error(&reg.head(&format!("/v2/del/blob/blobs/{d}")).await, 404);
    assert_error(&reg.get(&format!("/v2/del/blob/blobs/{d}")).await, 404, "BLOB_UNKNOWN");
    assert_error(&reg.delete(&format!("/v2/del/blob/blobs/{d}")).await, 404, "BLOB_UNKNOWN");
    let g = reg.get(&format!("/v2/del/other/blobs/{d}")).await;
    assert_status(&g, 200);
    assert_eq!(&g.body[..], &data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_upload_session_cancels_it() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(500);
    let loc = reg.open_upload("cancel/repo").await;
    let r = reg.patch_chunk(&loc, 0, &data).await;
    assert_status(&r, 202);
    let loc = r.location();
    let r = reg.delete(&loc).await;
    assert_status(&r, 204);
    assert_error(&reg.get(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(&reg.patch_chunk(&loc, 500, b"more").await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(&reg.close_upload(&loc, &sha256(&data)).await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(&reg.delete(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_head_error(&reg.head(&format!("/v2/cancel/repo/blobs/{}", sha256(&data))).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_referrer_removes_it_from_the_referrers_list() {
    let reg = TestRegistry::start().await;
    let repo = "del/ref";
    let subject = reg.push_image(repo, Some("v1"), 1).await;
    reg.push_blob(repo, b"{}").await;
    let art = oci_manifest(
        &json!({ "mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2 }),
        &[],
        json!({ "artifactType": "application/vnd.example.sig", "subject": subject.descriptor() }),
    );
    let ad = reg.push_manifest(repo, &sha256(&art), OCI_MANIFEST, &art).await;
    let path = format!("/v2/{repo}/referrers/{}", subject.digest);
    assert_eq!(reg.get(&path).await.json()["manifests"].as_array().unwrap().len(), 1);
    assert_status(&reg.delete(&format!("/v2/{repo}/manifests/{ad}")).await, 202);
    let r = reg.get(&path).await;
    assert_status(&r, 200);
    assert_eq!(r.json()["manifests"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_overwrite_replaces_the_target() {
    let reg = TestRegistry::start().await;
    let repo = "over/write";
    let first = reg.push_image(repo, Some("latest"), 1).await;
    let second = reg.push_image(repo, Some("latest"), 1).await;
    let g = reg.get(&format!("/v2/{repo}/manifests/latest")).await;
    assert_eq!(g.must("docker-content-digest"), second.digest);
    assert_eq!(&g.body[..], &second.manifest[..]);
    assert_eq!(reg.tags(repo).await, vec!["latest"]);
    // Across media types too: a list pushed over an image tag replaces it, and back.
    let list = oci_index(&[first.descriptor()], json!({}));
    let ld = reg.push_manifest(repo, "latest", OCI_INDEX, &list).await;
    let g = reg.get(&format!("/v2/{repo}/manifests/latest")).await;
    assert_eq!(g.must("docker-content-digest"), ld);
    assert_eq!(g.must("content-type"), OCI_INDEX);
    reg.push_manifest(repo, "latest", OCI_MANIFEST, &second.manifest).await;
    let g = reg
        .send(reg.req(Method::GET, &format!("/v2/{repo}/manifests/latest")).header("accept", format!("{OCI_INDEX}, {OCI_MANIFEST}")))
        .await;
    assert_eq!(g.must("docker-content-digest"), second.digest, "no stale list shadows the newer image");
    assert_eq!(g.must("content-type"), OCI_MANIFEST);
    // The replaced manifests are still there by digest.
    assert_status(&reg.get(&format!("/v2/{repo}/manifests/{}", first.digest)).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_disabled_answer_405_unsupported() {
    let reg = TestRegistry::start_with(|c| c.policy.delete_enabled = false).await;
    let repo = "nodel/repo";
    let img = reg.push_image(repo, Some("v1"), 1).await;
    for path in [
        format!("/v2/{repo}/manifests/v1"),
        format!("/v2/{repo}/manifests/{}", img.digest),
        format!("/v2/{repo}/blobs/{}", sha256(&img.config)),
    ] {
        let r = reg.delete(&path).await;
        assert_error(&r, 405, "UNSUPPORTED");
    }
    // Nothing was removed.
    assert_status(&reg.get(&format!("/v2/{repo}/manifests/v1")).await, 200);
    assert_status(&reg.head(&format!("/v2/{repo}/blobs/{}", sha256(&img.config))).await, 200);
    // Cancelling an upload is not a content delete and still works.
    let loc = reg.open_upload(repo).await;
    assert_status(&reg.delete(&loc).await, 204);
}
