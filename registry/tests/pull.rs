//! The Pull workflow: the v1.1 conformance suite's `01_pull_test.go` cases (one test per
//! spec, named after it, each on a registry populated by the suite's setup steps), the
//! redesigned suite's pull checks (ping, HEAD/GET of blobs and manifests with exact
//! headers, range requests, missing manifests), and issue #2's pull items: true
//! Content-Length on HEAD, Range 206/416, Accept negotiation without conversion, manifests
//! served byte for byte with the pushed media type.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

/// The suite's Pull setup: two configs and a layer by POST+PUT, manifest[0] by tag
/// `tagtest0`, manifest[1] by digest. Every step must answer 2xx.
async fn pull_setup(reg: &TestRegistry, s: &Suite) {
    for blob in [&s.configs[0], &s.configs[1], &s.layer] {
        let loc = reg.open_upload(REPO).await;
        let r = reg
            .send(
                reg.req(Method::PUT, &with_query(&loc, "digest", &sha256(blob)))
                    .header("content-type", OCTET)
                    .header("content-length", blob.len().to_string())
                    .body(blob.clone()),
            )
            .await;
        assert_2xx(&r);
    }
    let r = reg.put_manifest(REPO, "tagtest0", OCI_MANIFEST, &s.manifests[0]).await;
    assert_2xx(&r);
    let r = reg.put_manifest(REPO, &s.manifest_digest(1), OCI_MANIFEST, &s.manifests[1]).await;
    assert_2xx(&r);
}

async fn pulled() -> (TestRegistry, Suite) {
    let reg = TestRegistry::start().await;
    let s = Suite::new();
    pull_setup(&reg, &s).await;
    (reg, s)
}

fn manifest_req(reg: &TestRegistry, method: Method, reference: &str) -> reqwest::RequestBuilder {
    reg.req(method, &format!("/v2/{REPO}/manifests/{reference}"))
        .header("accept", OCI_MANIFEST)
}

// ---- v1.1 suite: Pull / Setup -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_setup_populate_registry_with_test_blobs_layer_and_manifests() {
    let (reg, s) = pulled().await;
    assert_eq!(reg.tags(REPO).await, vec!["tagtest0".to_owned()]);
    assert_status(&reg.head(&format!("/v2/{REPO}/manifests/{}", s.manifest_digest(1))).await, 200);
}

// ---- v1.1 suite: Pull / Pull blobs --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_head_request_to_nonexistent_blob_should_result_in_404_response() {
    let (reg, _) = pulled().await;
    let r = reg.head(&format!("/v2/{REPO}/blobs/{}", dummy_digest())).await;
    assert_head_error(&r, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_head_request_to_existing_blob_should_yield_200() {
    let (reg, s) = pulled().await;
    let r = reg.head(&format!("/v2/{REPO}/blobs/{}", s.config_digest(0))).await;
    assert_status(&r, 200);
    assert_eq!(r.must("docker-content-digest"), s.config_digest(0));
    assert_eq!(r.content_length(), Some(s.configs[0].len() as u64), "HEAD carries the true size");
    assert!(r.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_get_nonexistent_blob_should_result_in_404_response() {
    let (reg, _) = pulled().await;
    let r = reg.get(&format!("/v2/{REPO}/blobs/{}", dummy_digest())).await;
    assert_error(&r, 404, "BLOB_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_get_request_to_existing_blob_url_should_yield_200() {
    let (reg, s) = pulled().await;
    let r = reg.get(&format!("/v2/{REPO}/blobs/{}", s.config_digest(0))).await;
    assert_status(&r, 200);
    assert_eq!(&r.body[..], &s.configs[0][..]);
    assert_eq!(r.must("docker-content-digest"), s.config_digest(0));
}

// ---- v1.1 suite: Pull / Pull manifests ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_head_request_to_nonexistent_manifest_should_return_404() {
    // The suite uses the reference ".INVALID_MANIFEST_NAME" (not even a valid tag) and
    // accepts only 404.
    let (reg, _) = pulled().await;
    let r = reg.send(manifest_req(&reg, Method::HEAD, NONEXISTENT_MANIFEST)).await;
    assert_head_error(&r, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_head_request_to_manifest0_path_digest_should_yield_200_response() {
    let (reg, s) = pulled().await;
    let r = reg.send(manifest_req(&reg, Method::HEAD, &s.manifest_digest(0))).await;
    assert_status(&r, 200);
    assert_eq!(r.must("docker-content-digest"), s.manifest_digest(0));
    assert_eq!(r.content_length(), Some(s.manifests[0].len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_head_request_to_manifest1_path_digest_should_yield_200_response() {
    let (reg, s) = pulled().await;
    let r = reg.send(manifest_req(&reg, Method::HEAD, &s.manifest_digest(1))).await;
    assert_status(&r, 200);
    assert_eq!(r.must("docker-content-digest"), s.manifest_digest(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_head_request_to_manifest_path_tag_should_yield_200_response() {
    let (reg, s) = pulled().await;
    let r = reg.send(manifest_req(&reg, Method::HEAD, "tagtest0")).await;
    assert_status(&r, 200);
    assert_eq!(r.must("docker-content-digest"), s.manifest_digest(0));
    assert_eq!(r.content_length(), Some(s.manifests[0].len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_get_nonexistent_manifest_should_return_404() {
    let (reg, _) = pulled().await;
    let r = reg.send(manifest_req(&reg, Method::GET, NONEXISTENT_MANIFEST)).await;
    assert_eq!(r.status, 404, "{}", r.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_get_request_to_manifest0_path_digest_should_yield_200_response() {
    let (reg, s) = pulled().await;
    let r = reg.send(manifest_req(&reg, Method::GET, &s.manifest_digest(0))).await;
    assert_status(&r, 200);
    assert_eq!(&r.body[..], &s.manifests[0][..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_get_request_to_manifest1_path_digest_should_yield_200_response() {
    let (reg, s) = pulled().await;
    let r = reg.send(manifest_req(&reg, Method::GET, &s.manifest_digest(1))).await;
    assert_status(&r, 200);
    assert_eq!(&r.body[..], &s.manifests[1][..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_get_request_to_manifest_path_tag_should_yield_200_response() {
    let (reg, s) = pulled().await;
    let r = reg.send(manifest_req(&reg, Method::GET, "tagtest0")).await;
    assert_status(&r, 200);
    assert_eq!(&r.body[..], &s.manifests[0][..]);
    assert_eq!(r.must("docker-content-digest"), s.manifest_digest(0));
}

// ---- v1.1 suite: Pull / Error codes -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_error_codes_400_response_body_should_contain_oci_conforming_json_message() {
    let (reg, _) = pulled().await;
    // The suite sends this as a GET with a body ("blablabla") and the v1.0 suite as a PUT.
    for method in [Method::GET, Method::PUT] {
        let r = reg
            .send(
                reg.req(method.clone(), &format!("/v2/{REPO}/manifests/sha256:totallywrong"))
                    .header("content-type", OCI_MANIFEST)
                    .body("blablabla"),
            )
            .await;
        assert!(r.status == 400 || r.status == 404, "{method}: {}", r.describe());
        if r.status == 400 {
            let codes = r.error_codes();
            assert!(!codes.is_empty());
            assert!(SPEC_ERROR_CODES.contains(&codes[0].as_str()), "{method}: {codes:?}");
        }
    }
}

// ---- v1.1 suite: Pull / Teardown --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_teardown_delete_manifests_and_blobs_created_in_setup() {
    let (reg, s) = pulled().await;
    for d in [s.manifest_digest(0), s.manifest_digest(1)] {
        let r = reg.delete(&format!("/v2/{REPO}/manifests/{d}")).await;
        assert_status(&r, 202);
    }
    for d in [s.config_digest(0), s.config_digest(1), s.layer_digest()] {
        let r = reg.delete(&format!("/v2/{REPO}/blobs/{d}")).await;
        assert_status(&r, 202);
    }
}

// ---- redesigned suite: ping, missing manifests, range requests ---------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_get_v2_answers_200_with_api_version() {
    let reg = TestRegistry::start().await;
    for path in ["/v2/", "/v2"] {
        let r = reg.get(path).await;
        assert_status(&r, 200);
        assert_eq!(r.must("docker-distribution-api-version"), "registry/2.0");
    }
    let r = reg.head("/v2/").await;
    assert_status(&r, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_manifest_by_digest_and_by_tag_is_404_manifest_unknown() {
    let reg = TestRegistry::start().await;
    reg.push_image("conformance/repo1", Some("present"), 1).await;
    let absent = sha256(&random_bytes(1024));
    let r = reg
        .send(
            reg.req(Method::GET, &format!("/v2/{REPO}/manifests/{absent}"))
                .header("accept", OCI_INDEX)
                .header("accept", OCI_MANIFEST),
        )
        .await;
    assert_error(&r, 404, "MANIFEST_UNKNOWN");
    let tag = format!("missing-{}", random_name(20));
    let r = reg.get(&format!("/v2/{REPO}/manifests/{tag}")).await;
    assert_error(&r, 404, "MANIFEST_UNKNOWN");
    // And in a repository that was never pushed.
    let r = reg.get("/v2/never/pushed/manifests/latest").await;
    assert_error_any(&r, 404, &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]);
}

/// The redesigned suite's "range requests" on a 2048-byte blob; a 200 with the whole blob
/// counts as a failure there ("range request unsupported").
async fn range_requests(alg: Alg) {
    let reg = TestRegistry::start().await;
    let blob = random_bytes(2048);
    let digest = reg.push_blob_alg(REPO, &blob, alg).await;
    let path = format!("/v2/{REPO}/blobs/{digest}");
    let get = |range: &'static str| {
        let reg = &reg;
        let path = path.clone();
        async move { reg.send(reg.req(Method::GET, &path).header("range", range)).await }
    };
    for (range, start, end) in [
        ("bytes=500-1499", 500usize, 1499usize),
        ("bytes=500-", 500, 2047),
        ("bytes=-500", 1548, 2047),
        ("bytes=2000-5000", 2000, 2047),
    ] {
        let r = get(range).await;
        assert_eq!(r.status, 206, "{range}: {}", r.describe());
        assert_eq!(&r.body[..], &blob[start..=end], "{range}");
        assert_eq!(r.content_length(), Some((end - start + 1) as u64), "{range}");
        assert_eq!(r.must("content-range"), format!("bytes {start}-{end}/2048"), "{range}");
    }
    // A start beyond the end: 416 with the size.
    let r = get("bytes=5000-10000").await;
    assert_eq!(r.status, 416, "bytes=5000-10000: {}", r.describe());
    assert_eq!(r.must("content-range"), "bytes */2048");
    // An inverted range: the suite wants 416, not the whole blob.
    let r = get("bytes=500-0").await;
    assert_eq!(r.status, 416, "bytes=500-0: {}", r.describe());
}

mod range_requests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sha256() {
        super::range_requests(super::Alg::Sha256).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sha512() {
        super::range_requests(super::Alg::Sha512).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_starting_exactly_at_the_end_is_416_with_size() {
    let reg = TestRegistry::start().await;
    let blob = random_bytes(100);
    let d = reg.push_blob(REPO, &blob).await;
    let r = reg
        .send(reg.req(Method::GET, &format!("/v2/{REPO}/blobs/{d}")).header("range", "bytes=100-"))
        .await;
    assert_eq!(r.status, 416, "{}", r.describe());
    assert_eq!(r.must("content-range"), "bytes */100");
    // The last byte exactly.
    let r = reg
        .send(reg.req(Method::GET, &format!("/v2/{REPO}/blobs/{d}")).header("range", "bytes=99-99"))
        .await;
    assert_status(&r, 206);
    assert_eq!(&r.body[..], &blob[99..]);
    assert_eq!(r.must("content-range"), "bytes 99-99/100");
}

// ---- issue #2: blob GET/HEAD headers --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_head_and_get_carry_true_length_type_and_digest() {
    let reg = TestRegistry::start().await;
    for size in [1usize, 4096, 1 << 20] {
        let blob = random_bytes(size);
        let d = reg.push_blob(REPO, &blob).await;
        let path = format!("/v2/{REPO}/blobs/{d}");
        let h = reg.head(&path).await;
        assert_status(&h, 200);
        assert_eq!(h.content_length(), Some(size as u64), "HEAD Content-Length is the blob size");
        assert_eq!(h.must("docker-content-digest"), d);
        assert!(h.body.is_empty());
        let g = reg.get(&path).await;
        assert_status(&g, 200);
        assert_eq!(g.content_length(), Some(size as u64));
        assert_eq!(g.must("content-type"), OCTET);
        assert_eq!(g.must("docker-content-digest"), d);
        assert_eq!(sha256(&g.body), d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_is_visible_only_in_repositories_that_uploaded_or_mounted_it() {
    // distribution's link semantics, which the registry follows: a blob pushed to one
    // repository is unknown in another until mounted there.
    let reg = TestRegistry::start().await;
    let d = reg.push_blob("one/repo", b"scoped content").await;
    assert_status(&reg.head(&format!("/v2/one/repo/blobs/{d}")).await, 200);
    let r = reg.get(&format!("/v2/other/repo/blobs/{d}")).await;
    assert_error(&r, 404, "BLOB_UNKNOWN");
}

// ---- issue #2: manifests GET/HEAD, Accept negotiation, exact bytes, media types ---------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_get_and_head_by_tag_and_digest_carry_type_length_and_digest() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image(REPO, Some("v1"), 2).await;
    for reference in ["v1", img.digest.as_str()] {
        let path = format!("/v2/{REPO}/manifests/{reference}");
        let g = reg.send(reg.req(Method::GET, &path).header("accept", OCI_MANIFEST)).await;
        assert_status(&g, 200);
        assert_eq!(&g.body[..], &img.manifest[..]);
        assert_eq!(g.must("content-type"), OCI_MANIFEST);
        assert_eq!(g.content_length(), Some(img.manifest.len() as u64));
        assert_eq!(g.must("docker-content-digest"), img.digest);
        let h = reg.send(reg.req(Method::HEAD, &path).header("accept", OCI_MANIFEST)).await;
        assert_status(&h, 200);
        assert!(h.body.is_empty());
        assert_eq!(h.must("content-type"), OCI_MANIFEST);
        assert_eq!(h.content_length(), Some(img.manifest.len() as u64), "HEAD carries the manifest size");
        assert_eq!(h.must("docker-content-digest"), img.digest, "digest of the content, not of the empty HEAD body");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_served_without_accept_header() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image(REPO, Some("v1"), 1).await;
    // reqwest always adds an Accept header, so this one is written by hand.
    let r = reg.raw("GET", &format!("/v2/{REPO}/manifests/v1"), &[], b"").await;
    assert_status(&r, 200);
    assert_eq!(&r.body[..], &img.manifest[..]);
    assert_eq!(r.must("content-type"), OCI_MANIFEST);
    assert_eq!(r.must("docker-content-digest"), img.digest);
    let r = reg.raw("HEAD", &format!("/v2/{REPO}/manifests/{}", img.digest), &[], b"").await;
    assert_status(&r, 200);
    assert_eq!(r.content_length(), Some(img.manifest.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_served_for_accept_star_star() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image(REPO, Some("v1"), 1).await;
    let r = reg
        .send(reg.req(Method::GET, &format!("/v2/{REPO}/manifests/v1")).header("accept", "*/*"))
        .await;
    assert_status(&r, 200);
    assert_eq!(&r.body[..], &img.manifest[..]);
    assert_eq!(r.must("content-type"), OCI_MANIFEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_served_unconverted_when_accept_does_not_list_its_type() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image(REPO, Some("v1"), 1).await;
    for accept in [
        DOCKER_MANIFEST,
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/json, text/plain;q=0.5",
        "garbage/;;;=",
    ] {
        let r = reg
            .send(reg.req(Method::GET, &format!("/v2/{REPO}/manifests/v1")).header("accept", accept))
            .await;
        assert_status(&r, 200);
        assert_eq!(&r.body[..], &img.manifest[..], "Accept {accept:?}");
        assert_eq!(r.must("content-type"), OCI_MANIFEST, "Accept {accept:?}: still the pushed type");
        assert_eq!(r.must("docker-content-digest"), img.digest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_bytes_stored_exactly_with_odd_whitespace_and_key_order() {
    let reg = TestRegistry::start().await;
    let config = image_config();
    let cd = reg.push_blob(REPO, &config).await;
    let body = format!(
        "\n  {{ \"layers\" :[ ],\r\n\t\"config\":{{\"size\":{},   \"digest\":\"{cd}\",\"mediaType\":\"{OCI_CONFIG}\"}},\n\"mediaType\"  : \"{OCI_MANIFEST}\",   \"schemaVersion\":2 }}\n\n",
        config.len()
    );
    let digest = sha256(body.as_bytes());
    let r = reg.put_manifest(REPO, "odd", OCI_MANIFEST, body.as_bytes()).await;
    assert_status(&r, 201);
    assert_eq!(r.must("docker-content-digest"), digest, "digest over the bytes as sent");
    for reference in ["odd", digest.as_str()] {
        let g = reg.get(&format!("/v2/{REPO}/manifests/{reference}")).await;
        assert_status(&g, 200);
        assert_eq!(&g.body[..], body.as_bytes(), "served byte for byte");
        assert_eq!(g.must("docker-content-digest"), digest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_without_media_type_field_is_served_with_pushed_content_type() {
    let reg = TestRegistry::start().await;
    let config = image_config();
    reg.push_blob(REPO, &config).await;
    let body = to_json(&json!({ "schemaVersion": 2, "config": descriptor(OCI_CONFIG, &config), "layers": [] }));
    let d = reg.push_manifest(REPO, "nomt", OCI_MANIFEST, &body).await;
    for reference in ["nomt", d.as_str()] {
        let r = reg.get(&format!("/v2/{REPO}/manifests/{reference}")).await;
        assert_status(&r, 200);
        assert_eq!(r.must("content-type"), OCI_MANIFEST);
        assert_eq!(&r.body[..], &body[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_manifest_and_manifest_list_round_trip_with_their_types() {
    let reg = TestRegistry::start().await;
    let repo = "docker/image";
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = to_json(&json!({ "architecture": arch, "os": "linux", "rootfs": { "type": "layers", "diff_ids": [] }, "x": random_name(8) }));
        let layer = random_bytes(500);
        reg.push_blob(repo, &config).await;
        reg.push_blob(repo, &layer).await;
        let m = to_json(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": descriptor(DOCKER_CONFIG, &config),
            "layers": [descriptor(DOCKER_LAYER, &layer)],
        }));
        let d = reg.push_manifest(repo, &format!("v1-{arch}"), DOCKER_MANIFEST, &m).await;
        children.push(json!({ "mediaType": DOCKER_MANIFEST, "digest": d, "size": m.len(), "platform": { "architecture": arch, "os": "linux" } }));
    }
    let list = to_json(&json!({ "schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": children }));
    let ld = reg.push_manifest(repo, "v1", DOCKER_LIST, &list).await;
    let r = reg.send(reg.req(Method::GET, &format!("/v2/{repo}/manifests/v1")).header("accept", DOCKER_LIST)).await;
    assert_status(&r, 200);
    assert_eq!(r.must("content-type"), DOCKER_LIST);
    assert_eq!(&r.body[..], &list[..]);
    assert_eq!(r.must("docker-content-digest"), ld);
    let r = reg.get(&format!("/v2/{repo}/manifests/v1-amd64")).await;
    assert_status(&r, 200);
    assert_eq!(r.must("content-type"), DOCKER_MANIFEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_index_and_artifact_round_trip_with_their_types() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image(REPO, None, 1).await;
    let index = oci_index(&[img.descriptor()], json!({}));
    let id = reg.push_manifest(REPO, "idx", OCI_INDEX, &index).await;
    let r = reg.get(&format!("/v2/{REPO}/manifests/idx")).await;
    assert_eq!(r.must("content-type"), OCI_INDEX);
    assert_eq!(r.must("docker-content-digest"), id);

    // An artifact of an arbitrary type, with the empty config and an arbitrary layer type.
    reg.push_blob(REPO, b"{}").await;
    let payload = b"signature payload".to_vec();
    reg.push_blob(REPO, &payload).await;
    let art = oci_manifest(
        &json!({ "mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2 }),
        &[descriptor("application/vnd.example.any+thing", &payload)],
        json!({ "artifactType": "application/vnd.example.whatever.v1" }),
    );
    let ad = reg.push_manifest(REPO, "art", OCI_MANIFEST, &art).await;
    let r = reg.get(&format!("/v2/{REPO}/manifests/{ad}")).await;
    assert_status(&r, 200);
    assert_eq!(&r.body[..], &art[..]);
    assert_eq!(r.must("content-type"), OCI_MANIFEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_manifest_pushed_and_pulled_by_sha512_digest() {
    let reg = TestRegistry::start().await;
    let config = image_config();
    let layer = random_bytes(256);
    reg.push_blob_alg(REPO, &config, Alg::Sha512).await;
    reg.push_blob_alg(REPO, &layer, Alg::Sha512).await;
    let m = oci_manifest(
        &descriptor_alg(Alg::Sha512, OCI_CONFIG, &config),
        &[descriptor_alg(Alg::Sha512, OCI_LAYER_GZ, &layer)],
        json!({}),
    );
    let d = sha512(&m);
    let r = reg.put_manifest(REPO, &d, OCI_MANIFEST, &m).await;
    assert_status(&r, 201);
    assert_eq!(r.must("docker-content-digest"), d, "answered with the sha512 digest");
    assert_eq!(path_of(&r.location()), format!("/v2/{REPO}/manifests/{d}"));
    let g = reg.get(&format!("/v2/{REPO}/manifests/{d}")).await;
    assert_status(&g, 200);
    assert_eq!(&g.body[..], &m[..]);
    assert_eq!(g.must("docker-content-digest"), d);
    let h = reg.head(&format!("/v2/{REPO}/manifests/{d}")).await;
    assert_status(&h, 200);
    assert_eq!(h.must("docker-content-digest"), d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_content_type_is_served_without_parameters() {
    let reg = TestRegistry::start().await;
    let config = image_config();
    reg.push_blob(REPO, &config).await;
    let m = oci_manifest(&descriptor(OCI_CONFIG, &config), &[], json!({}));
    let r = reg.put_manifest(REPO, "params", &format!("{OCI_MANIFEST}; charset=utf-8"), &m).await;
    assert_status(&r, 201);
    for method in [Method::GET, Method::HEAD] {
        let g = reg.send(reg.req(method.clone(), &format!("/v2/{REPO}/manifests/params"))).await;
        assert_status(&g, 200);
        assert_eq!(g.must("content-type"), OCI_MANIFEST, "{method}");
    }
}
