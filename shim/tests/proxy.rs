//! The mirror proxy against in-process registries on loopback: a TLS buildset registry
//! with a write user, and a TLS stand-in upstream with its own CA. Every result is checked
//! by digest.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;

async fn proxy_for(f: &Fixture) -> RunningProxy {
    start_proxy(proxy_config(&f.buildset, Some(&f.upstream))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildset_content_wins_by_digest() {
    let f = Fixture::new(false).await;
    let proxy = proxy_for(&f).await;
    let c = f.client(&[]);

    let g = fetch(c.get(proxy.url("/v2/"))).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.header("docker-distribution-api-version"), Some("registry/2.0"));

    for (path, want) in [
        ("/v2/library/specimen/manifests/1", &f.bs_library),
        ("/v2/library/specimen/manifests/1?ns=docker.io", &f.bs_library),
        ("/v2/quay.io/org/specimen/manifests/1", &f.bs_quay),
        ("/v2/org/specimen/manifests/1?ns=quay.io", &f.bs_quay),
    ] {
        let g = fetch(c.get(proxy.url(path)).header("accept", ACCEPT_MANIFESTS)).await;
        assert_eq!(g.status, StatusCode::OK, "{path}: {:?}", String::from_utf8_lossy(&g.body));
        assert_eq!(g.header("docker-content-digest"), Some(want.manifest_digest.as_str()), "{path}");
        assert_eq!(sha256(&g.body), want.manifest_digest, "{path}");
        assert_eq!(g.header("content-type"), Some(OCI_MANIFEST));

        let h = fetch(c.head(proxy.url(path)).header("accept", ACCEPT_MANIFESTS)).await;
        assert_eq!(h.status, StatusCode::OK, "HEAD {path}");
        assert_eq!(h.header("docker-content-digest"), Some(want.manifest_digest.as_str()));
        assert_eq!(h.header("content-length"), Some(want.manifest.len().to_string().as_str()));
        assert!(h.body.is_empty());
    }
    // The upstream holds other images under the same names: the buildset registry won.
    assert_ne!(f.bs_library.manifest_digest, f.up_library_specimen.manifest_digest);
    assert_ne!(f.bs_quay.manifest_digest, f.up_org_specimen.manifest_digest);

    // containerd's ns is echoed.
    let g = fetch(c.get(proxy.url("/v2/org/specimen/manifests/1?ns=quay.io"))).await;
    assert_eq!(g.header("oci-namespace"), Some("quay.io"));

    // The proxied answer carries the buildset registry's headers unchanged.
    let direct = fetch(
        f.buildset
            .req(&c, reqwest::Method::GET, "/v2/quay.io/org/specimen/manifests/1")
            .header("accept", ACCEPT_MANIFESTS),
    )
    .await;
    let via = fetch(c.get(proxy.url("/v2/quay.io/org/specimen/manifests/1")).header("accept", ACCEPT_MANIFESTS)).await;
    for h in ["content-type", "content-length", "docker-content-digest", "etag"] {
        assert_eq!(direct.header(h), via.header(h), "{h}");
    }
    assert_eq!(direct.body, via.body);

    // Blobs, by both spellings of the namespace, byte-exact (following the redirect).
    let img = &f.bs_quay;
    let follow = f.following_client(&[]);
    let g = fetch(follow.get(proxy.url(&format!("/v2/quay.io/org/specimen/blobs/{}", img.layer_digest)))).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body, img.layer);
    assert_eq!(g.header("docker-content-digest"), Some(img.layer_digest.as_str()));
    let g = fetch(follow.get(proxy.url(&format!("/v2/org/specimen/blobs/{}?ns=quay.io", img.config_digest)))).await;
    assert_eq!(g.body, img.config);

    // Tags and by-digest manifests.
    let g = fetch(c.get(proxy.url("/v2/quay.io/org/specimen/tags/list"))).await;
    assert_eq!(g.json()["tags"], serde_json::json!(["1"]));
    let g = fetch(c.get(proxy.url(&format!("/v2/library/specimen/manifests/{}", f.bs_library.manifest_digest)))).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(sha256(&g.body), f.bs_library.manifest_digest);

    // The client's own (Docker Hub) credentials never reach the buildset registry; the
    // proxy uses its own.
    let g = fetch(c.get(proxy.url("/v2/library/specimen/manifests/1")).bearer_auth("hub-token-for-someone-else")).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(sha256(&g.body), f.bs_library.manifest_digest);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_are_served_by_the_upstream() {
    let f = Fixture::new(false).await;
    let proxy = proxy_for(&f).await;
    let c = f.client(&[]);

    for (path, want) in [
        ("/v2/library/other/manifests/1", &f.up_library_other),
        ("/v2/library/other/manifests/1?ns=docker.io", &f.up_library_other),
        ("/v2/quay.io/org/other/manifests/1", &f.up_org_other),
        ("/v2/org/other/manifests/1?ns=quay.io", &f.up_org_other),
    ] {
        let g = fetch(c.get(proxy.url(path)).header("accept", ACCEPT_MANIFESTS)).await;
        assert_eq!(g.status, StatusCode::OK, "{path}: {:?}", String::from_utf8_lossy(&g.body));
        assert_eq!(g.header("docker-content-digest"), Some(want.manifest_digest.as_str()), "{path}");
        assert_eq!(sha256(&g.body), want.manifest_digest);
        let h = fetch(c.head(proxy.url(path)).header("accept", ACCEPT_MANIFESTS)).await;
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.header("docker-content-digest"), Some(want.manifest_digest.as_str()));
    }

    // Its blobs stream byte-exact, with the upstream's headers.
    let img = &f.up_library_other;
    for (digest, bytes) in [(&img.layer_digest, &img.layer), (&img.config_digest, &img.config)] {
        let path = format!("/v2/library/other/blobs/{digest}");
        let via = fetch(c.get(proxy.url(&path))).await;
        let direct = fetch(c.get(f.upstream.url(&path))).await;
        assert_eq!(via.status, StatusCode::OK);
        assert_eq!(&via.body, bytes);
        assert_eq!(sha256(&via.body), **digest);
        for h in ["content-type", "content-length", "docker-content-digest", "etag"] {
            assert_eq!(direct.header(h), via.header(h), "{h}");
        }
    }
    let g = fetch(c.get(proxy.url(&format!("/v2/org/other/blobs/{}?ns=quay.io", f.up_org_other.layer_digest)))).await;
    assert_eq!(g.body, f.up_org_other.layer);

    // Tags of a name only the upstream has.
    let g = fetch(c.get(proxy.url("/v2/library/other/tags/list"))).await;
    assert_eq!(g.json(), serde_json::json!({"name": "library/other", "tags": ["1"]}));

    // Referrers of an upstream image come from the upstream (the buildset registry lacks
    // the subject); those of a buildset image from the buildset registry.
    let uc = client(&[&f.upstream.ca_pem().unwrap()]);
    let empty = f.upstream.push_blob(&uc, "library/other", b"{}".to_vec()).await;
    let subject = &f.up_library_other;
    let artifact = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 },
        "layers": [{ "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 }],
        "subject": { "mediaType": OCI_MANIFEST, "digest": subject.manifest_digest, "size": subject.manifest.len() },
    }))
    .unwrap();
    let artifact_digest = sha256(&artifact);
    let r = f
        .upstream
        .req(&uc, reqwest::Method::PUT, &format!("/v2/library/other/manifests/{artifact_digest}"))
        .header("content-type", OCI_MANIFEST)
        .body(artifact)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let g = fetch(c.get(proxy.url(&format!("/v2/library/other/referrers/{}", subject.manifest_digest)))).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.json()["manifests"][0]["digest"], artifact_digest.as_str(), "{}", g.json());
    let g = fetch(c.get(proxy.url(&format!("/v2/library/specimen/referrers/{}", f.bs_library.manifest_digest)))).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.json()["manifests"], serde_json::json!([]));

    // A name nobody has: the upstream's own 404, passed through.
    let g = fetch(c.get(proxy.url("/v2/library/nothing/manifests/1"))).await;
    assert_eq!(g.status, StatusCode::NOT_FOUND);
    assert_eq!(g.error_code(), "MANIFEST_UNKNOWN");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_pass_through() {
    let f = Fixture::new(false).await;
    let proxy = proxy_for(&f).await;
    let c = f.following_client(&[]);

    let cases = [
        (format!("/v2/library/specimen/blobs/{}", f.bs_library.layer_digest), &f.bs_library.layer, 10usize, 19usize),
        (format!("/v2/library/other/blobs/{}", f.up_library_other.layer_digest), &f.up_library_other.layer, 1000, 64_999),
    ];
    for (path, bytes, from, to) in cases {
        let g = fetch(c.get(proxy.url(&path)).header("range", format!("bytes={from}-{to}"))).await;
        assert_eq!(g.status, StatusCode::PARTIAL_CONTENT, "{path}");
        assert_eq!(g.header("content-range"), Some(format!("bytes {from}-{to}/{}", bytes.len()).as_str()));
        assert_eq!(g.body, bytes[from..=to]);
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildset_blobs_are_redirected_to_signed_urls_upstream_blobs_are_streamed() {
    let f = Fixture::new(false).await;
    let c = f.client(&[]);
    let img = &f.bs_library;
    let path = format!("/v2/library/specimen/blobs/{}", img.layer_digest);
    let size = img.layer.len() as u64;

    // By default only blobs of 1 MiB and more are redirected: this small layer comes
    // through the proxy itself, byte-exact.
    let proxy = proxy_for(&f).await;
    let g = fetch(c.get(proxy.url(&path))).await;
    assert_eq!(g.status, StatusCode::OK, "{:?}", String::from_utf8_lossy(&g.body));
    assert_eq!(g.body, img.layer);
    proxy.stop().await;
    // One byte over the threshold: still relayed.
    let mut cfg = proxy_config(&f.buildset, Some(&f.upstream));
    cfg.blob_redirects = Some(size + 1);
    let proxy = start_proxy(cfg).await;
    let g = fetch(c.get(proxy.url(&path))).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body, img.layer);
    proxy.stop().await;

    // At the threshold: a 307 straight to the buildset registry, whose signed URL needs no
    // credentials and opens that blob only.
    let mut cfg = proxy_config(&f.buildset, Some(&f.upstream));
    cfg.blob_redirects = Some(size);
    let proxy = start_proxy(cfg).await;
    let g = fetch(c.get(proxy.url(&path))).await;
    assert_eq!(g.status, StatusCode::TEMPORARY_REDIRECT, "{:?}", String::from_utf8_lossy(&g.body));
    let location = g.header("location").unwrap().to_owned();
    let want_prefix = format!("{}/v2/library/specimen/blobs/{}?", f.buildset.base_url(), img.layer_digest);
    assert!(location.starts_with(&want_prefix), "{location}");
    let direct = fetch(c.get(&location)).await;
    assert_eq!(direct.status, StatusCode::OK);
    assert_eq!(sha256(&direct.body), img.layer_digest);
    let other = location.replace(&img.layer_digest, &img.config_digest);
    assert_eq!(fetch(c.get(&other)).await.status, StatusCode::FORBIDDEN);

    // HEAD is answered by the proxy as before (presence checks stay one round trip).
    let h = fetch(c.head(proxy.url(&path))).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.header("content-length"), Some(img.layer.len().to_string().as_str()));

    // A blob the buildset registry lacks comes from the upstream through the proxy.
    let up = &f.up_library_other;
    let g = fetch(c.get(proxy.url(&format!("/v2/library/other/blobs/{}", up.layer_digest)))).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(sha256(&g.body), up.layer_digest);
    proxy.stop().await;

    // With redirects off the proxy streams the buildset registry's blob itself.
    let mut cfg = proxy_config(&f.buildset, Some(&f.upstream));
    cfg.blob_redirects = None;
    let proxy = start_proxy(cfg).await;
    let g = fetch(c.get(proxy.url(&path))).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body, img.layer);
    proxy.stop().await;
}

/// `key="value"` from a `WWW-Authenticate` challenge.
fn challenge_param(challenge: &str, key: &str) -> String {
    let start = challenge.find(&format!("{key}=\"")).unwrap() + key.len() + 2;
    let len = challenge[start..].find('"').unwrap();
    challenge[start..start + len].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_challenge_passes_through_and_the_token_dance_works() {
    let f = Fixture::new(true).await;
    let proxy = proxy_for(&f).await;
    let c = f.client(&[]);

    let path = "/v2/library/other/manifests/1";
    let direct = fetch(c.get(f.upstream.url(path))).await;
    let via = fetch(c.get(proxy.url(path))).await;
    assert_eq!(direct.status, StatusCode::UNAUTHORIZED);
    assert_eq!(via.status, StatusCode::UNAUTHORIZED);
    let challenge = via.header("www-authenticate").expect("a challenge").to_owned();
    assert_eq!(direct.header("www-authenticate"), Some(challenge.as_str()));
    assert_eq!(direct.header("docker-distribution-api-version"), via.header("docker-distribution-api-version"));
    assert_eq!(direct.body, via.body);

    // The client gets a token from the upstream's realm and retries through the proxy.
    let realm = challenge_param(&challenge, "realm");
    let service = challenge_param(&challenge, "service");
    let scope = challenge_param(&challenge, "scope");
    let grant = fetch(
        c.get(&realm)
            .query(&[("service", service.as_str()), ("scope", scope.as_str())])
            .basic_auth(USER, Some(PASSWORD)),
    )
    .await;
    assert_eq!(grant.status, StatusCode::OK);
    let token = grant.json()["token"].as_str().unwrap().to_owned();
    let g = fetch(c.get(proxy.url(path)).bearer_auth(&token).header("accept", ACCEPT_MANIFESTS)).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(sha256(&g.body), f.up_library_other.manifest_digest);

    // Speculative images are still served with the same client credentials present.
    let g = fetch(c.get(proxy.url("/v2/library/specimen/manifests/1")).bearer_auth(&token)).await;
    assert_eq!(sha256(&g.body), f.bs_library.manifest_digest);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_without_an_upstream() {
    let f = Fixture::new(false).await;
    let c = f.client(&[]);
    // An upstream nobody listens on: forwarding would show as 502.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = proxy_config(&f.buildset, None);
    cfg.upstreams = vec![("docker.io".into(), format!("https://{dead}"))];
    cfg.no_upstream = true;
    let quiet = start_proxy(cfg.clone()).await;

    let t0 = Instant::now();
    let g = fetch(c.get(quiet.url("/v2/library/other/manifests/1"))).await;
    assert!(t0.elapsed() < Duration::from_secs(2), "a miss took {:?}", t0.elapsed());
    assert_eq!(g.status, StatusCode::NOT_FOUND);
    assert_eq!(g.error_code(), "MANIFEST_UNKNOWN");
    let msg = g.json()["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("docker.io/library/other:1"), "{msg}");
    let g = fetch(c.get(quiet.url(&format!("/v2/library/other/blobs/{}", f.up_library_other.layer_digest)))).await;
    assert_eq!((g.status, g.error_code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"));
    let g = fetch(c.head(quiet.url("/v2/library/other/manifests/1"))).await;
    assert_eq!(g.status, StatusCode::NOT_FOUND);
    assert!(g.body.is_empty());
    // Hits are unaffected.
    let g = fetch(c.get(quiet.url("/v2/library/specimen/manifests/1"))).await;
    assert_eq!(sha256(&g.body), f.bs_library.manifest_digest);
    quiet.stop().await;

    // Without --no-upstream the same miss is a 502 naming the upstream and the image.
    cfg.no_upstream = false;
    let loud = start_proxy(cfg).await;
    let g = fetch(c.get(loud.url("/v2/library/other/manifests/1"))).await;
    assert_eq!(g.status, StatusCode::BAD_GATEWAY);
    assert_eq!(g.error_code(), "UNAVAILABLE");
    let msg = g.json()["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains(&dead.to_string()) && msg.contains("docker.io/library/other:1"), "{msg}");
    loud.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authoritative_prefixes_never_fall_back() {
    let f = Fixture::new(false).await;
    let c = f.client(&[]);
    let mut cfg = proxy_config(&f.buildset, Some(&f.upstream));
    cfg.authoritative = vec!["quay.io/org/".into()];
    let proxy = start_proxy(cfg).await;

    let g = fetch(c.get(proxy.url("/v2/quay.io/org/other/manifests/1"))).await;
    assert_eq!((g.status, g.error_code().as_str()), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"));
    let msg = g.json()["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("quay.io/org/other:1") && msg.contains("quay.io/org/"), "{msg}");
    let g = fetch(c.get(proxy.url("/v2/quay.io/org/specimen/manifests/1"))).await;
    assert_eq!(sha256(&g.body), f.bs_quay.manifest_digest);
    let g = fetch(c.get(proxy.url("/v2/library/other/manifests/1"))).await;
    assert_eq!(sha256(&g.body), f.up_library_other.manifest_digest);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_through_the_proxy_land_in_the_buildset_registry() {
    let f = Fixture::new(false).await;
    let proxy = proxy_for(&f).await;
    let c = f.client(&[]);
    let absolute = |loc: &str| {
        assert!(loc.starts_with('/'), "Location {loc} should lead back through the proxy");
        proxy.url(loc)
    };

    // A chunked upload the way containerd does it, with ns on the first request.
    let layer: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let layer_digest = sha256(&layer);
    let r = c.post(proxy.url("/v2/org/pushed/blobs/uploads/?ns=quay.io")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let r = c
        .patch(absolute(&loc))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", 100_000 - 1))
        .body(layer[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{}{sep}digest={layer_digest}", absolute(&loc)))
        .header("content-type", "application/octet-stream")
        .body(layer[100_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());

    // A monolithic config push in the registries.conf path layout.
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let config_digest = sha256(&config);
    let r = c
        .post(proxy.url(&format!("/v2/quay.io/org/pushed/blobs/uploads/?digest={config_digest}")))
        .header("content-type", "application/octet-stream")
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": OCI_LAYER, "digest": layer_digest, "size": layer.len() }],
    }))
    .unwrap();
    let r = c
        .put(proxy.url("/v2/org/pushed/manifests/1?ns=quay.io"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    absolute(r.headers()["location"].to_str().unwrap());

    // In the buildset registry under quay.io/, by digest; and readable back through the proxy.
    let direct = fetch(f.buildset.req(&c, reqwest::Method::GET, "/v2/quay.io/org/pushed/manifests/1")).await;
    assert_eq!(direct.status, StatusCode::OK);
    assert_eq!(sha256(&direct.body), sha256(&manifest));
    let blob = fetch(f.buildset.req(&c, reqwest::Method::GET, &format!("/v2/quay.io/org/pushed/blobs/{layer_digest}"))).await;
    assert_eq!(blob.body, layer);
    let via = fetch(c.get(proxy.url("/v2/quay.io/org/pushed/manifests/1"))).await;
    assert_eq!(sha256(&via.body), sha256(&manifest));
    proxy.stop().await;
}

/// skopeo with private configuration: no policy, registries.conf or auth file of the host.
struct Skopeo {
    dir: tempfile::TempDir,
}

impl Skopeo {
    fn new(registries_conf: &str) -> Skopeo {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.json"), r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        std::fs::write(dir.path().join("registries.conf"), registries_conf).unwrap();
        std::fs::create_dir_all(dir.path().join("registries.d")).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        Skopeo { dir }
    }

    /// `skopeo inspect ARGS`, run off the runtime's threads; the JSON it printed.
    async fn inspect(&self, args: &[&str]) -> serde_json::Value {
        let p = self.dir.path();
        let mut cmd = Command::new("skopeo");
        cmd.env("REGISTRY_AUTH_FILE", p.join("auth.json"))
            .env("TMPDIR", p.join("tmp"))
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .arg("--policy")
            .arg(p.join("policy.json"))
            .arg("--registries-conf")
            .arg(p.join("registries.conf"))
            .arg("--registries.d")
            .arg(p.join("registries.d"))
            .arg("inspect")
            .args(args);
        let shown = format!("{cmd:?}");
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("cannot run skopeo (is it installed?): {e}"));
        assert!(
            out.status.success(),
            "{shown} failed\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_through_the_tls_proxy() {
    let f = Fixture::new(false).await;
    let node = Tls::new();
    let mut cfg = proxy_config(&f.buildset, Some(&f.upstream));
    cfg.tls = Some(node.server.clone());
    let proxy = start_proxy(cfg).await;
    // As `use` writes it: the node CA for the proxy, and the buildset registry's CA, where
    // blob downloads are redirected.
    let cert_dir = node.cert_dir();
    std::fs::write(cert_dir.join("buildset-ca.crt"), f.buildset.ca_pem().unwrap()).unwrap();
    let cert_dir = cert_dir.to_str().unwrap();
    let addr = proxy.addr;

    // The proxy addressed as a registry of its own, as `registries.conf` mirrors address it.
    let skopeo = Skopeo::new("");
    let got = skopeo
        .inspect(&["--cert-dir", cert_dir, &format!("docker://{addr}/quay.io/org/specimen:1")])
        .await;
    assert_eq!(got["Digest"], f.bs_quay.manifest_digest.as_str());
    assert_eq!(got["Labels"]["specimen"], "buildset quay.io/org/specimen");
    let got = skopeo.inspect(&["--cert-dir", cert_dir, &format!("docker://{addr}/library/other:1")]).await;
    assert_eq!(got["Digest"], f.up_library_other.manifest_digest.as_str());

    // A real mirror configuration: quay.io's primary location is a closed loopback port,
    // so only the mirror can answer (and nothing leaves the machine).
    let conf = format!(
        "[[registry]]\nprefix = \"quay.io\"\nlocation = \"127.0.0.1:1\"\n\
         [[registry.mirror]]\nlocation = \"{addr}/quay.io\"\n"
    );
    let skopeo = Skopeo::new(&conf);
    let got = skopeo
        .inspect(&["--no-tags", "--cert-dir", cert_dir, "docker://quay.io/org/specimen:1"])
        .await;
    assert_eq!(got["Digest"], f.bs_quay.manifest_digest.as_str());
    let got = skopeo.inspect(&["--no-tags", "--cert-dir", cert_dir, "docker://quay.io/org/other:1"]).await;
    assert_eq!(got["Digest"], f.up_org_other.manifest_digest.as_str());
    proxy.stop().await;
}
