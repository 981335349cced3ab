//! Repository names and namespaces: nested names, names that contain the API's own path
//! words, the name grammar's separators, the `ns` query parameter of containerd and
//! BuildKit (`ns=quay.io` addresses `quay.io/<name>`, `ns=docker.io` addresses `<name>`,
//! answers carry `OCI-Namespace`), and unknown query parameters, which are ignored.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

/// Push, pull, list, refer to and delete in one repository.
async fn round_trip(reg: &TestRegistry, repo: &str) {
    let img = reg.push_image(repo, Some("v1"), 2).await;
    let chunked = random_bytes(3000);
    let r = reg.push_blob_chunked(repo, &chunked, 1000, &sha256(&chunked)).await;
    assert_status(&r, 201);
    assert_eq!(path_of(&r.location()), format!("/v2/{repo}/blobs/{}", sha256(&chunked)));
    let g = reg.get(&format!("/v2/{repo}/manifests/v1")).await;
    assert_status(&g, 200);
    assert_eq!(&g.body[..], &img.manifest[..]);
    let b = reg.get(&format!("/v2/{repo}/blobs/{}", sha256(&img.layers[1]))).await;
    assert_eq!(&b.body[..], &img.layers[1][..]);
    let t = reg.get(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(t.json()["tags"], json!(["v1"]));
    assert_eq!(t.json()["name"], repo);
    let r = reg.get(&format!("/v2/{repo}/referrers/{}", img.digest)).await;
    assert_status(&r, 200);
    assert_status(&reg.delete(&format!("/v2/{repo}/manifests/v1")).await, 202);
    assert_status(&reg.delete(&format!("/v2/{repo}/blobs/{}", sha256(&chunked))).await, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_names_with_many_components() {
    let reg = TestRegistry::start().await;
    round_trip(&reg, "a/b/c/d/e").await;
    round_trip(&reg, "a/b").await;
    round_trip(&reg, "a/b/c/d/e/f/g/h/i/j/k/l").await;
    let r = reg.get("/v2/_catalog").await;
    let repos = r.json()["repositories"].clone();
    for name in ["a/b", "a/b/c/d/e", "a/b/c/d/e/f/g/h/i/j/k/l"] {
        assert!(repos.as_array().unwrap().iter().any(|x| x == name), "{name} missing from {repos}");
    }
    // A parent of a repository is not a repository.
    assert_error(&reg.get("/v2/a/b/c/tags/list").await, 404, "NAME_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_containing_api_path_words() {
    let reg = TestRegistry::start().await;
    for repo in ["x/blobs/y", "x/manifests/y", "x/tags/y", "x/referrers/y", "x/uploads/y", "blobs", "manifests", "tags/list/x", "v2/x"] {
        round_trip(&reg, repo).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_every_separator_of_the_grammar() {
    let reg = TestRegistry::start().await;
    for repo in ["a.b", "a_b", "a__b", "a-b", "a---b", "0", "9x", "a-b.c_d__e/f.g", "quay.io/org/app"] {
        round_trip(&reg, repo).await;
    }
    for bad in ["a..b", "a___b", "a_-b", "-a", "a.", "a/-b", "a._b"] {
        let r = reg.get(&format!("/v2/{bad}/tags/list")).await;
        assert_error(&r, 400, "NAME_INVALID");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_of_255_characters_is_accepted() {
    let reg = TestRegistry::start().await;
    let name = format!("{}/{}", "a".repeat(127), "b".repeat(127));
    assert_eq!(name.len(), 255);
    round_trip(&reg, &name).await;
    let r = reg.get(&format!("/v2/{name}c/tags/list")).await;
    assert_error(&r, 400, "NAME_INVALID");
}

// ---- the ns parameter ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ns_quay_io_addresses_the_prefixed_repository() {
    let reg = TestRegistry::start().await;
    let ns = "ns=quay.io";
    // A chunked upload that follows each Location as given (containerd appends digest=).
    let layer = random_bytes(2000);
    let ld = sha256(&layer);
    let r = reg.post(&format!("/v2/org/app/blobs/uploads/?{ns}")).await;
    assert_status(&r, 202);
    assert_eq!(r.must("oci-namespace"), "quay.io");
    let loc = r.location();
    assert!(loc.contains("ns=quay.io"), "Location keeps the namespace: {loc}");
    let r = reg.patch_chunk(&loc, 0, &layer[..1000]).await;
    assert_status(&r, 202);
    assert_eq!(r.must("oci-namespace"), "quay.io");
    let r = reg.patch_chunk(&r.location(), 1000, &layer[1000..]).await;
    assert_status(&r, 202);
    let st = reg.get(&r.location()).await;
    assert_status(&st, 204);
    let r = reg.close_upload(&r.location(), &ld).await;
    assert_status(&r, 201);
    assert_eq!(r.must("oci-namespace"), "quay.io");
    // A monolithic upload of the config, and the manifest.
    let config = image_config();
    let cd = sha256(&config);
    let r = reg
        .send(reg.req(Method::POST, &format!("/v2/org/app/blobs/uploads/?{ns}&digest={cd}")).body(config.clone()))
        .await;
    assert_status(&r, 201);
    let m = oci_manifest(&descriptor(OCI_CONFIG, &config), &[descriptor(OCI_LAYER_GZ, &layer)], json!({}));
    let md = sha256(&m);
    let r = reg
        .send(reg.req(Method::PUT, &format!("/v2/org/app/manifests/v1?{ns}")).header("content-type", OCI_MANIFEST).body(m.clone()))
        .await;
    assert_status(&r, 201);
    assert_eq!(r.must("oci-namespace"), "quay.io");
    assert_eq!(r.must("docker-content-digest"), md);
    // Pull through the namespace.
    let r = reg.get(&format!("/v2/org/app/manifests/v1?{ns}")).await;
    assert_status(&r, 200);
    assert_eq!(&r.body[..], &m[..]);
    assert_eq!(r.must("oci-namespace"), "quay.io");
    let r = reg.head(&format!("/v2/org/app/blobs/{ld}?{ns}")).await;
    assert_status(&r, 200);
    assert_eq!(r.must("oci-namespace"), "quay.io");
    let r = reg.get(&format!("/v2/org/app/tags/list?{ns}")).await;
    assert_status(&r, 200);
    assert_eq!(r.json()["tags"], json!(["v1"]));
    // The same content under the plain name quay.io/org/app, without ns.
    let r = reg.get("/v2/quay.io/org/app/manifests/v1").await;
    assert_status(&r, 200);
    assert_eq!(&r.body[..], &m[..]);
    assert!(r.header("oci-namespace").is_none(), "no ns, no OCI-Namespace");
    let r = reg.get(&format!("/v2/quay.io/org/app/blobs/{ld}")).await;
    assert_eq!(&r.body[..], &layer[..]);
    assert_status(&reg.head(&format!("/v2/quay.io/org/app/blobs/{cd}")).await, 200);
    // And not under the bare name.
    assert_error(&reg.get("/v2/org/app/manifests/v1").await, 404, "MANIFEST_UNKNOWN");
    assert_error(&reg.get(&format!("/v2/org/app/blobs/{ld}")).await, 404, "BLOB_UNKNOWN");
    let r = reg.get("/v2/_catalog").await;
    assert_eq!(r.json()["repositories"], json!(["quay.io/org/app"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ns_docker_io_addresses_the_plain_name() {
    let reg = TestRegistry::start().await;
    let img = reg.push_image("library/alpine", Some("3"), 1).await;
    let r = reg.get("/v2/library/alpine/manifests/3?ns=docker.io").await;
    assert_status(&r, 200);
    assert_eq!(&r.body[..], &img.manifest[..]);
    assert_eq!(r.must("oci-namespace"), "docker.io");
    // A push with ns=docker.io lands on the plain name too.
    let data = random_bytes(100);
    let d = sha256(&data);
    let r = reg
        .send(reg.req(Method::POST, &format!("/v2/library/busybox/blobs/uploads/?ns=docker.io&digest={d}")).body(data))
        .await;
    assert_status(&r, 201);
    assert_eq!(r.must("oci-namespace"), "docker.io");
    assert_status(&reg.head(&format!("/v2/library/busybox/blobs/{d}")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ns_applies_to_mount_source_and_referrers() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(500);
    let d = reg.push_blob("quay.io/org/base", &data).await;
    // containerd mounts with `from` relative to the same namespace.
    let r = reg
        .post(&format!("/v2/org/app/blobs/uploads/?ns=quay.io&mount={d}&from=org/base"))
        .await;
    assert_status(&r, 201);
    assert_eq!(r.must("oci-namespace"), "quay.io");
    assert_status(&reg.head(&format!("/v2/quay.io/org/app/blobs/{d}")).await, 200);
    let subject = reg.push_image("quay.io/org/app", Some("v1"), 1).await;
    let r = reg.get(&format!("/v2/org/app/referrers/{}?ns=quay.io", subject.digest)).await;
    assert_status(&r, 200);
    assert_eq!(r.must("oci-namespace"), "quay.io");
    assert_eq!(r.must("content-type"), OCI_INDEX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ns_cannot_escape_the_data_directory() {
    let reg = TestRegistry::start().await;
    let m = format!("nsescape{}", random_name(10));
    for ns in [format!("../../{m}"), format!("{m}/../.."), "..".to_owned(), format!("{m}%2F.."), format!("{m}/")] {
        let r = reg.raw("POST", &format!("/v2/org/app/blobs/uploads/?ns={ns}"), &[], b"").await;
        assert_error(&r, 400, "NAME_INVALID");
        let r = reg.raw("GET", &format!("/v2/org/app/tags/list?ns={ns}"), &[], b"").await;
        assert_error(&r, 400, "NAME_INVALID");
    }
    for f in reg.files() {
        assert!(f.starts_with("data") && !f.contains(&m), "{f}");
    }
}

// ---- unknown query parameters ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_query_parameters_are_ignored() {
    let reg = TestRegistry::start().await;
    let q = "foo=bar&x-unknown=1&n_=2";
    assert_status(&reg.get(&format!("/v2/?{q}")).await, 200);
    // Upload flows.
    let data = random_bytes(1000);
    let d = sha256(&data);
    let r = reg.post(&format!("/v2/q/repo/blobs/uploads/?{q}")).await;
    assert_status(&r, 202);
    let r = reg
        .send(reg.req(Method::PATCH, &with_query(&r.location(), "foo", "bar")).header("content-range", "0-999").body(data.clone()))
        .await;
    assert_status(&r, 202);
    assert_status(&reg.get(&with_query(&r.location(), "foo", "bar")).await, 204);
    let r = reg.close_upload(&with_query(&r.location(), "foo", "bar"), &d).await;
    assert_status(&r, 201);
    let d2data = random_bytes(10);
    let d2 = sha256(&d2data);
    let r = reg
        .send(reg.req(Method::POST, &format!("/v2/q/repo/blobs/uploads/?{q}&digest={d2}")).body(d2data))
        .await;
    assert_status(&r, 201);
    // Manifests.
    let config = image_config();
    reg.push_blob("q/repo", &config).await;
    let m = oci_manifest(&descriptor(OCI_CONFIG, &config), &[descriptor(OCI_LAYER, &data)], json!({}));
    let r = reg
        .send(reg.req(Method::PUT, &format!("/v2/q/repo/manifests/v1?{q}")).header("content-type", OCI_MANIFEST).body(m.clone()))
        .await;
    assert_status(&r, 201);
    assert_status(&reg.get(&format!("/v2/q/repo/manifests/v1?{q}")).await, 200);
    assert_status(&reg.head(&format!("/v2/q/repo/manifests/{}?{q}", sha256(&m))).await, 200);
    assert_status(&reg.get(&format!("/v2/q/repo/blobs/{d}?{q}")).await, 200);
    assert_status(&reg.head(&format!("/v2/q/repo/blobs/{d}?{q}")).await, 200);
    let r = reg.get(&format!("/v2/q/repo/tags/list?{q}")).await;
    assert_eq!(r.json()["tags"], json!(["v1"]));
    assert_status(&reg.get(&format!("/v2/_catalog?{q}")).await, 200);
    assert_status(&reg.get(&format!("/v2/q/repo/referrers/{}?{q}", sha256(&m))).await, 200);
    // Deletes.
    assert_status(&reg.delete(&format!("/v2/q/repo/manifests/v1?{q}")).await, 202);
    assert_status(&reg.delete(&format!("/v2/q/repo/blobs/{d2}?{q}")).await, 202);
    let loc = reg.open_upload("q/repo").await;
    assert_status(&reg.delete(&with_query(&loc, "foo", "bar")).await, 204);
}
