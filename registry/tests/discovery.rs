//! Content Discovery: the v1.1 conformance suite's `03_discovery_test.go` cases (tag
//! listing with `n`/`last`, and the referrers API over the suite's artifacts: config-typed
//! and artifactType-typed manifests, an index with a subject, and a referrer whose subject
//! was never pushed), the redesigned suite's "empty" checks, and issue #2's tags/list and
//! _catalog pagination with Link headers and the referrers API details.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const ART_A: &str = "application/vnd.nhl.peanut.butter.bagel";
const ART_B: &str = "application/vnd.nba.strawberry.jam.croissant";
const ART_INDEX: &str = "application/vnd.food.stand";
const ANNOTATION: &str = "org.opencontainers.conformance.test";

/// The discovery workflow's content, built as `setup.go` builds it.
struct Refs {
    s: Suite,
    ref_blob_a: Vec<u8>,
    ref_blob_b: Vec<u8>,
    /// (body, annotation value) of each referrer of manifests[4], and C (subject manifests[3]).
    manifest_a_config: Vec<u8>,
    manifest_a_layer: Vec<u8>,
    manifest_b_config: Vec<u8>,
    manifest_b_layer: Vec<u8>,
    manifest_c_layer: Vec<u8>,
    index: Vec<u8>,
}

fn empty_json_desc() -> Value {
    json!({ "mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2 })
}

impl Refs {
    fn new() -> Self {
        let s = Suite::new();
        let ref_blob_a = b"NHL Peanut Butter on my NHL bagel".to_vec();
        let ref_blob_b = b"NBA Strawberry Jam on my NBA croissant".to_vec();
        let subject4 = json!({ "mediaType": OCI_MANIFEST, "size": s.manifests[4].len(), "digest": s.manifest_digest(4) });
        let subject3 = json!({ "mediaType": OCI_MANIFEST, "size": s.manifests[3].len(), "digest": s.manifest_digest(3) });
        let config_artifact = |blob: &[u8], at: &str, note: &str| {
            to_json_tabs(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": { "mediaType": at, "size": blob.len(), "digest": sha256(blob) },
                "layers": [empty_json_desc()],
                "subject": subject4,
                "annotations": { ANNOTATION: note },
            }))
        };
        let layer_artifact = |blob: &[u8], at: &str, subject: &Value, note: Option<&str>| {
            let mut m = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": at,
                "config": empty_json_desc(),
                "layers": [{ "mediaType": at, "size": blob.len(), "digest": sha256(blob) }],
                "subject": subject,
            });
            if let Some(n) = note {
                m["annotations"] = json!({ ANNOTATION: n });
            }
            to_json_tabs(&m)
        };
        let manifest_a_config = config_artifact(&ref_blob_a, ART_A, "test config a");
        let manifest_b_config = config_artifact(&ref_blob_b, ART_B, "test config b");
        let manifest_a_layer = layer_artifact(&ref_blob_a, ART_A, &subject4, Some("test layer a"));
        let manifest_b_layer = layer_artifact(&ref_blob_b, ART_B, &subject4, Some("test layer b"));
        let manifest_c_layer = layer_artifact(&ref_blob_b, ART_B, &subject3, None);
        let index = to_json_tabs(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": ART_INDEX,
            "manifests": [
                { "mediaType": OCI_MANIFEST, "size": manifest_a_config.len(), "digest": sha256(&manifest_a_config) },
                { "mediaType": OCI_MANIFEST, "size": manifest_a_layer.len(), "digest": sha256(&manifest_a_layer) },
            ],
            "subject": subject4,
            "annotations": { ANNOTATION: "test index" },
        }));
        Refs {
            s,
            ref_blob_a,
            ref_blob_b,
            manifest_a_config,
            manifest_a_layer,
            manifest_b_config,
            manifest_b_layer,
            manifest_c_layer,
            index,
        }
    }

    /// The annotation each referrer of manifests[4] must be listed with.
    fn annotations(&self) -> Vec<(String, &'static str)> {
        vec![
            (sha256(&self.manifest_a_config), "test config a"),
            (sha256(&self.manifest_a_layer), "test layer a"),
            (sha256(&self.manifest_b_config), "test config b"),
            (sha256(&self.manifest_b_layer), "test layer b"),
            (sha256(&self.index), "test index"),
        ]
    }
}

async fn post_put(reg: &TestRegistry, data: &[u8]) {
    let r = reg.push_blob_post_put(REPO, data, &sha256(data)).await;
    assert_2xx(&r);
}

async fn put_expect_subject(reg: &TestRegistry, body: &[u8], media_type: &str, subject: &str) {
    let r = reg.put_manifest(REPO, &sha256(body), media_type, body).await;
    assert_2xx(&r);
    assert_eq!(r.header("oci-subject").as_deref(), Some(subject), "OCI-Subject: {}", r.describe());
}

/// The suite's Content Discovery setup, every step of it.
async fn discovery_setup(reg: &TestRegistry, refs: &Refs) {
    let s = &refs.s;
    // Populate registry with test blob, test layer, and four tags.
    post_put(reg, &s.configs[2]).await;
    post_put(reg, &s.layer).await;
    for i in 0..4 {
        let r = reg.put_manifest(REPO, &format!("test{i}"), OCI_MANIFEST, &s.manifests[2]).await;
        assert_2xx(&r);
    }
    // References setup.
    assert_eq!(sha256(b"{}"), EMPTY_JSON_DIGEST);
    post_put(reg, b"{}").await;
    post_put(reg, &refs.ref_blob_a).await;
    let subject4 = s.manifest_digest(4);
    put_expect_subject(reg, &refs.manifest_a_config, OCI_MANIFEST, &subject4).await;
    put_expect_subject(reg, &refs.manifest_a_layer, OCI_MANIFEST, &subject4).await;
    put_expect_subject(reg, &refs.index, OCI_INDEX, &subject4).await;
    post_put(reg, &s.configs[4]).await;
    post_put(reg, &s.layer).await;
    let r = reg.put_manifest(REPO, "tagtest0", OCI_MANIFEST, &s.manifests[4]).await;
    assert_2xx(&r);
    post_put(reg, &refs.ref_blob_b).await;
    put_expect_subject(reg, &refs.manifest_b_config, OCI_MANIFEST, &subject4).await;
    put_expect_subject(reg, &refs.manifest_b_layer, OCI_MANIFEST, &subject4).await;
    // A referrer of a subject that has not been pushed.
    put_expect_subject(reg, &refs.manifest_c_layer, OCI_MANIFEST, &s.manifest_digest(3)).await;
}

async fn discovered() -> (TestRegistry, Refs) {
    let reg = TestRegistry::start().await;
    let refs = Refs::new();
    discovery_setup(&reg, &refs).await;
    (reg, refs)
}

fn tag_list(r: &Resp) -> Vec<String> {
    assert_status(r, 200);
    serde_json::from_value(r.json()["tags"].clone()).expect("tags is a list of strings")
}

fn referrers(r: &Resp) -> Vec<Value> {
    assert_status(r, 200);
    assert_eq!(r.must("content-type"), OCI_INDEX);
    let v = r.json();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    v["manifests"].as_array().cloned().expect("manifests is an array, never null")
}

// ---- v1.1 suite: Content Discovery / Setup ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_setup_populate_registry_with_tags_and_references() {
    let (reg, _) = discovered().await;
    assert_eq!(reg.tags(REPO).await, vec!["tagtest0", "test0", "test1", "test2", "test3"]);
}

// ---- v1.1 suite: listing tags -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_get_request_to_list_tags_should_yield_200_response() {
    let (reg, _) = discovered().await;
    let r = reg.get(&format!("/v2/{REPO}/tags/list")).await;
    assert_eq!(tag_list(&r), vec!["tagtest0", "test0", "test1", "test2", "test3"]);
    assert_eq!(r.json()["name"], REPO);
    assert!(r.must("content-type").starts_with("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_get_number_of_tags_should_be_limitable_by_n_query_parameter() {
    let (reg, _) = discovered().await;
    let num_tags = reg.tags(REPO).await.len();
    let n = num_tags / 2;
    let r = reg.get(&format!("/v2/{REPO}/tags/list?n={n}")).await;
    assert_eq!(tag_list(&r).len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_get_start_of_tag_is_set_by_last_query_parameter() {
    let (reg, _) = discovered().await;
    let all = reg.tags(REPO).await;
    let n = all.len() / 2;
    let first = tag_list(&reg.get(&format!("/v2/{REPO}/tags/list?n={n}")).await);
    let last = &first[n - 1];
    let r = reg.get(&with_query(&format!("/v2/{REPO}/tags/list?n={n}"), "last", last)).await;
    let page = tag_list(&r);
    assert!(page.len() <= n);
    assert_eq!(page, all[n..2 * n].to_vec(), "the page starts right after {last}");
}

// ---- v1.1 suite: listing references -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_get_request_to_nonexistent_blob_should_result_in_empty_200_response() {
    let (reg, _) = discovered().await;
    let r = reg.get(&format!("/v2/{REPO}/referrers/{}", dummy_digest())).await;
    assert!(referrers(&r).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_get_request_to_existing_blob_should_yield_200() {
    let (reg, refs) = discovered().await;
    let r = reg.get(&format!("/v2/{REPO}/referrers/{}", refs.s.manifest_digest(4))).await;
    let list = referrers(&r);
    assert_eq!(list.len(), 5, "{list:?}");
    assert_ne!(list[0]["digest"], list[1]["digest"]);
    let expected = refs.annotations();
    for m in &list {
        let d = m["digest"].as_str().unwrap();
        let note = expected.iter().find(|(x, _)| x == d).unwrap_or_else(|| panic!("unexpected referrer {d}")).1;
        let ann = m["annotations"].as_object().expect("annotations");
        assert_eq!(ann.len(), 1, "{m}");
        assert_eq!(ann[ANNOTATION], note);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_get_request_to_existing_blob_with_filter_should_yield_200() {
    let (reg, refs) = discovered().await;
    let r = reg
        .get(&with_query(&format!("/v2/{REPO}/referrers/{}", refs.s.manifest_digest(4)), "artifactType", ART_A))
        .await;
    let list = referrers(&r);
    // Filtering is optional in the suite, but specreg implements it.
    assert_eq!(r.must("oci-filters-applied"), "artifactType");
    assert_eq!(list.len(), 2, "{list:?}");
    let expected = refs.annotations();
    for m in &list {
        assert_eq!(m["artifactType"], ART_A);
        let d = m["digest"].as_str().unwrap();
        let note = expected.iter().find(|(x, _)| x == d).unwrap().1;
        assert_eq!(m["annotations"][ANNOTATION], note);
        assert_eq!(m["annotations"].as_object().unwrap().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_get_request_to_missing_manifest_should_yield_200() {
    let (reg, refs) = discovered().await;
    let r = reg.get(&format!("/v2/{REPO}/referrers/{}", refs.s.manifest_digest(3))).await;
    let list = referrers(&r);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["digest"], sha256(&refs.manifest_c_layer));
}

// ---- v1.1 suite: Content Discovery / Teardown --------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_teardown_delete_created_manifests_tags_and_blobs() {
    let (reg, refs) = discovered().await;
    let s = &refs.s;
    for reference in [
        sha256(&refs.index),
        s.manifest_digest(2),
        s.manifest_digest(4),
        sha256(&refs.manifest_a_config),
        sha256(&refs.manifest_a_layer),
        "tagtest0".to_owned(),
        sha256(&refs.manifest_b_config),
        sha256(&refs.manifest_b_layer),
        sha256(&refs.manifest_c_layer),
    ] {
        let r = reg.delete(&format!("/v2/{REPO}/manifests/{reference}")).await;
        // The suite sends the tag through its digest route; 2xx or 404 are both fine
        // (deleting manifests[4] already removed its tag).
        assert!(r.status == 202 || r.status == 404, "{reference}: {}", r.describe());
        if r.status == 404 {
            assert_eq!(reference, "tagtest0", "only the tag can be gone already");
        }
    }
    for d in [s.config_digest(2), s.layer_digest(), s.config_digest(4), sha256(&refs.ref_blob_a), sha256(&refs.ref_blob_b), EMPTY_JSON_DIGEST.to_owned()] {
        let r = reg.delete(&format!("/v2/{REPO}/blobs/{d}")).await;
        assert!(r.status == 202 || r.status == 404, "{d}: {}", r.describe());
    }
    assert!(reg.tags(REPO).await.is_empty());
}

// ---- redesigned suite: "empty" ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_repository_tag_list_and_referrers() {
    let reg = TestRegistry::start().await;
    // Tag list of a repository never pushed: 200 or 404 for the suite; NAME_UNKNOWN here.
    let r = reg.get(&format!("/v2/{REPO}/tags/list")).await;
    assert_error(&r, 404, "NAME_UNKNOWN");
    // Referrers of any digest in it: an empty index, never a 404.
    let r = reg.get(&format!("/v2/{REPO}/referrers/{}", sha256(&random_bytes(16)))).await;
    assert!(referrers(&r).is_empty());
}

// ---- issue #2: tags/list and _catalog ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_is_lexical_and_paginates_with_link_headers() {
    let reg = TestRegistry::start().await;
    let repo = "page/repo";
    let img = reg.push_image(repo, Some("b"), 1).await;
    for t in ["a", "c", "d", "B", "0", "e-1", "e_2", "e.3"] {
        reg.push_manifest(repo, t, OCI_MANIFEST, &img.manifest).await;
    }
    let mut all = vec!["0", "B", "a", "b", "c", "d", "e-1", "e.3", "e_2"];
    all.sort();
    let r = reg.get(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(tag_list(&r), all);
    assert!(r.header("link").is_none(), "no Link without n");
    // Page by page.
    let r = reg.get(&format!("/v2/{repo}/tags/list?n=2")).await;
    assert_eq!(tag_list(&r), all[..2]);
    assert_eq!(r.must("link"), format!("</v2/{repo}/tags/list?n=2&last={}>; rel=\"next\"", all[1]));
    let mut seen = tag_list(&r);
    let mut next = r.header("link");
    while let Some(link) = next {
        let url = link.trim_start_matches('<').split('>').next().unwrap().to_owned();
        assert!(link.ends_with("; rel=\"next\""), "{link}");
        let r = reg.get(&url).await;
        let page = tag_list(&r);
        assert!(!page.is_empty() && page.len() <= 2);
        seen.extend(page);
        next = r.header("link");
    }
    assert_eq!(seen, all);
    // `last` alone, and a `last` that is not a tag.
    let r = reg.get(&format!("/v2/{repo}/tags/list?last=c")).await;
    assert_eq!(tag_list(&r), all[all.iter().position(|t| *t == "c").unwrap() + 1..]);
    let r = reg.get(&format!("/v2/{repo}/tags/list?last=bb")).await;
    assert_eq!(tag_list(&r), vec!["c", "d", "e-1", "e.3", "e_2"]);
    // A page that ends exactly at the end has no Link.
    let r = reg.get(&format!("/v2/{repo}/tags/list?n={}", all.len())).await;
    assert_eq!(tag_list(&r), all);
    assert!(r.header("link").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_does_not_list_digests() {
    let reg = TestRegistry::start().await;
    let repo = "digests/repo";
    let img = reg.push_image(repo, None, 1).await;
    assert!(reg.tags(repo).await.is_empty(), "a push by digest creates no tag");
    reg.push_manifest(repo, "v1", OCI_MANIFEST, &img.manifest).await;
    assert_eq!(reg.tags(repo).await, vec!["v1"]);
    // The referrers fallback tag schema is an ordinary tag.
    let fallback = img.digest.replace(':', "-");
    reg.push_manifest(repo, &fallback, OCI_MANIFEST, &img.manifest).await;
    assert_eq!(reg.tags(repo).await, vec![fallback, "v1".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_of_unknown_repository_is_404_name_unknown() {
    let reg = TestRegistry::start().await;
    reg.push_image("known/repo", Some("v1"), 1).await;
    for repo in ["unknown/repo", "known", "known/repo/sub"] {
        let r = reg.get(&format!("/v2/{repo}/tags/list")).await;
        assert_error(&r, 404, "NAME_UNKNOWN");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_lists_repositories_with_pagination() {
    let reg = TestRegistry::start().await;
    for repo in ["gamma/x", "alpha", "delta", "beta"] {
        reg.push_image(repo, Some("v1"), 1).await;
    }
    let r = reg.get("/v2/_catalog").await;
    assert_status(&r, 200);
    assert_eq!(r.json()["repositories"], json!(["alpha", "beta", "delta", "gamma/x"]));
    let r = reg.get("/v2/_catalog?n=2").await;
    assert_status(&r, 200);
    assert_eq!(r.json()["repositories"], json!(["alpha", "beta"]));
    assert_eq!(r.must("link"), "</v2/_catalog?n=2&last=beta>; rel=\"next\"");
    let link = r.must("link");
    let url = link.trim_start_matches('<').split('>').next().unwrap();
    let r = reg.get(url).await;
    assert_eq!(r.json()["repositories"], json!(["delta", "gamma/x"]));
    assert!(r.header("link").is_none());
    let r = reg.get("/v2/_catalog?n=1&last=delta").await;
    assert_eq!(r.json()["repositories"], json!(["gamma/x"]));
    assert!(r.header("link").is_none());
    // A name with '/' as `last` is encoded and followed correctly.
    let r = reg.get("/v2/_catalog?n=1&last=beta").await;
    assert_eq!(r.json()["repositories"], json!(["delta"]));
    let link = r.must("link");
    let url = link.trim_start_matches('<').split('>').next().unwrap();
    let r = reg.get(url).await;
    assert_eq!(r.json()["repositories"], json!(["gamma/x"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_of_empty_registry_is_empty_list() {
    let reg = TestRegistry::start().await;
    let r = reg.get("/v2/_catalog").await;
    assert_status(&r, 200);
    assert_eq!(r.json()["repositories"], json!([]));
}

// ---- issue #2: referrers API -------------------------------------------------------------------

async fn push_referrer(reg: &TestRegistry, repo: &str, subject: &Image, artifact_type: Option<&str>, config_type: &str, note: &str) -> (String, usize) {
    let cfg = if config_type == OCI_EMPTY { b"{}".to_vec() } else { random_bytes(40) };
    reg.push_blob(repo, &cfg).await;
    let payload = random_bytes(64);
    reg.push_blob(repo, &payload).await;
    let mut extra = json!({ "subject": subject.descriptor(), "annotations": { "note": note } });
    if let Some(at) = artifact_type {
        extra["artifactType"] = json!(at);
    }
    let m = oci_manifest(&descriptor(config_type, &cfg), &[descriptor("application/vnd.example.payload", &payload)], extra);
    let d = reg.push_manifest(repo, &sha256(&m), OCI_MANIFEST, &m).await;
    (d, m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_list_descriptors_with_artifact_type_and_annotations() {
    let reg = TestRegistry::start().await;
    let repo = "ref/repo";
    let subject = reg.push_image(repo, Some("v1"), 1).await;
    let (sig, sig_size) = push_referrer(&reg, repo, &subject, Some("application/vnd.example.sig"), OCI_EMPTY, "sig").await;
    let (sbom, _) = push_referrer(&reg, repo, &subject, None, "application/vnd.example.sbom.config", "sbom").await;
    let r = reg.get(&format!("/v2/{repo}/referrers/{}", subject.digest)).await;
    let list = referrers(&r);
    assert!(r.header("oci-filters-applied").is_none(), "no filter, no OCI-Filters-Applied");
    assert_eq!(list.len(), 2);
    let sig_entry = list.iter().find(|m| m["digest"] == sig).expect("signature listed");
    assert_eq!(sig_entry["mediaType"], OCI_MANIFEST);
    assert_eq!(sig_entry["size"], sig_size);
    assert_eq!(sig_entry["artifactType"], "application/vnd.example.sig");
    assert_eq!(sig_entry["annotations"], json!({ "note": "sig" }));
    // Without artifactType, the config media type stands in.
    let sbom_entry = list.iter().find(|m| m["digest"] == sbom).expect("sbom listed");
    assert_eq!(sbom_entry["artifactType"], "application/vnd.example.sbom.config");
    // Filtered.
    let r = reg
        .get(&with_query(&format!("/v2/{repo}/referrers/{}", subject.digest), "artifactType", "application/vnd.example.sig"))
        .await;
    let list = referrers(&r);
    assert_eq!(r.must("oci-filters-applied"), "artifactType");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], sig);
    // A filter nothing matches: an empty list, still filtered.
    let r = reg
        .get(&with_query(&format!("/v2/{repo}/referrers/{}", subject.digest), "artifactType", "application/none"))
        .await;
    assert!(referrers(&r).is_empty());
    assert_eq!(r.must("oci-filters-applied"), "artifactType");
    // The subject itself has no referrers of its own, and neither has a random digest.
    let r = reg.get(&format!("/v2/{repo}/referrers/{sig}")).await;
    assert!(referrers(&r).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_are_per_repository() {
    let reg = TestRegistry::start().await;
    let subject = reg.push_image("ref/one", Some("v1"), 1).await;
    push_referrer(&reg, "ref/one", &subject, Some("application/vnd.example.sig"), OCI_EMPTY, "x").await;
    let r = reg.get(&format!("/v2/ref/two/referrers/{}", subject.digest)).await;
    assert!(referrers(&r).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_of_sha512_subject() {
    let reg = TestRegistry::start().await;
    let repo = "ref/s512";
    let config = image_config();
    reg.push_blob_alg(repo, &config, Alg::Sha512).await;
    let m = oci_manifest(&descriptor_alg(Alg::Sha512, OCI_CONFIG, &config), &[], json!({}));
    let subject = sha512(&m);
    assert_status(&reg.put_manifest(repo, &subject, OCI_MANIFEST, &m).await, 201);
    reg.push_blob(repo, b"{}").await;
    let art = oci_manifest(
        &json!({ "mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2 }),
        &[],
        json!({ "artifactType": "application/vnd.example.x", "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": m.len() } }),
    );
    let r = reg.put_manifest(repo, &sha256(&art), OCI_MANIFEST, &art).await;
    assert_status(&r, 201);
    assert_eq!(r.must("oci-subject"), subject);
    let list = referrers(&reg.get(&format!("/v2/{repo}/referrers/{subject}")).await);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], sha256(&art));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_with_unknown_query_parameters() {
    let reg = TestRegistry::start().await;
    let subject = reg.push_image("ref/q", Some("v1"), 1).await;
    let r = reg
        .send(reg.req(Method::GET, &format!("/v2/ref/q/referrers/{}?foo=bar&n=10", subject.digest)))
        .await;
    assert!(referrers(&r).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_filter_on_a_type_containing_plus() {
    // '+' must arrive percent-encoded (a bare '+' in a query is a space); the filter
    // compares the decoded value.
    let reg = TestRegistry::start().await;
    let repo = "ref/plus";
    let subject = reg.push_image(repo, Some("v1"), 1).await;
    let (image_referrer, _) = push_referrer(&reg, repo, &subject, None, OCI_CONFIG, "img").await;
    push_referrer(&reg, repo, &subject, Some("application/vnd.example.sig"), OCI_EMPTY, "sig").await;
    let r = reg
        .get(&with_query(&format!("/v2/{repo}/referrers/{}", subject.digest), "artifactType", OCI_CONFIG))
        .await;
    let list = referrers(&r);
    assert_eq!(r.must("oci-filters-applied"), "artifactType");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["digest"], image_referrer);
    assert_eq!(list[0]["artifactType"], OCI_CONFIG);
}
