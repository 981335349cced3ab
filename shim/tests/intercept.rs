//! The proxy's interception listener against in-process registries: a client that believes
//! it talks to `quay.io` (SNI, certificate name and `Host`) gets the buildset registry's
//! `quay.io/<repo>` when present, the upstream's answer otherwise, with the upstream's
//! token challenge and the client's own token passed through; the leaf is for exactly the
//! intercepted host; `/v2/` is answered by the proxy when the real host is out of reach.

mod common;

use std::net::SocketAddr;

use common::*;
use reqwest::StatusCode;
use specreg_certs::{CaOptions, CertStore, LeafOptions};
use specreg_shim::proxy::{InterceptConfig, InterceptedHost, Proxy, ProxyConfig};

/// A node CA and a leaf for `quay.io`; the interception listener on `127.0.0.1:0`.
fn intercept(cfg: &mut ProxyConfig, dir: &std::path::Path) -> String {
    let leaf = LeafOptions {
        name: "intercept-quay.io".into(),
        common_name: "quay.io".into(),
        subject_alt_names: vec!["quay.io".into()],
        ..LeafOptions::default()
    };
    let issued = CertStore::open_or_create(dir, &CaOptions::default(), &leaf).unwrap();
    cfg.intercept = Some(InterceptConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        hosts: vec![InterceptedHost {
            host: "quay.io".into(),
            chain_pem: format!("{}{}", issued.leaf.cert_pem(), issued.ca.cert_pem()),
            key_pem: issued.leaf.key_pem().into(),
        }],
    });
    issued.ca.cert_pem().to_owned()
}

/// Binds and runs the proxy; the interception listener's address.
async fn run(cfg: ProxyConfig) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let proxy = Proxy::bind(cfg).await.unwrap();
    let addr = proxy.intercept_addr().expect("an interception listener");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(proxy.run_until(async {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// A client that reaches `quay.io` at `addr`, trusting `cas`.
fn quay_client(addr: SocketAddr, cas: &[&str]) -> reqwest::Client {
    let mut b = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).resolve("quay.io", addr);
    for ca in cas {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

fn challenge_param(challenge: &str, key: &str) -> String {
    let start = challenge.find(&format!("{key}=\"")).unwrap() + key.len() + 2;
    let len = challenge[start..].find('"').unwrap();
    challenge[start..start + len].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quay_io_is_served_by_the_overlay_with_the_clients_own_token_for_misses() {
    let f = Fixture::new(true).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = proxy_config(&f.buildset, Some(&f.upstream));
    let node_ca = intercept(&mut cfg, dir.path());
    let (addr, stop) = run(cfg).await;
    let up_ca = f.upstream.ca_pem().unwrap();
    let c = quay_client(addr, &[&node_ca, &up_ca]);
    let port = addr.port();
    let url = |p: &str| format!("https://quay.io:{port}{p}");

    // In the buildset registry as quay.io/org/specimen: its content, no client credentials needed.
    let g = fetch(c.get(url("/v2/org/specimen/manifests/1")).header("accept", ACCEPT_MANIFESTS)).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(sha256(&g.body), f.bs_quay.manifest_digest);

    // /v2/ and a miss: the upstream's own challenge, passed through.
    let ping = fetch(c.get(url("/v2/"))).await;
    assert_eq!(ping.status, StatusCode::UNAUTHORIZED, "the real registry's /v2/ answer");
    let miss = fetch(c.get(url("/v2/org/other/manifests/1"))).await;
    assert_eq!(miss.status, StatusCode::UNAUTHORIZED);
    let challenge = miss.header("www-authenticate").expect("a challenge").to_owned();
    let direct = fetch(c.get(f.upstream.url("/v2/org/other/manifests/1"))).await;
    assert_eq!(direct.header("www-authenticate"), Some(challenge.as_str()));

    // The client's token from the upstream's realm, sent through the interception listener.
    let grant = fetch(
        c.get(challenge_param(&challenge, "realm"))
            .query(&[("service", challenge_param(&challenge, "service")), ("scope", challenge_param(&challenge, "scope"))])
            .basic_auth(USER, Some(PASSWORD)),
    )
    .await;
    assert_eq!(grant.status, StatusCode::OK);
    let token = grant.json()["token"].as_str().unwrap().to_owned();
    let g = fetch(c.get(url("/v2/org/other/manifests/1")).bearer_auth(&token).header("accept", ACCEPT_MANIFESTS)).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(sha256(&g.body), f.up_org_other.manifest_digest);
    // The buildset's image still wins with the client's upstream token present.
    let g = fetch(c.get(url("/v2/org/specimen/manifests/1")).bearer_auth(&token).header("accept", ACCEPT_MANIFESTS)).await;
    assert_eq!(sha256(&g.body), f.bs_quay.manifest_digest);

    // Another Host on the same listener is refused.
    let g = fetch(c.get(format!("https://quay.io:{port}/v2/org/specimen/manifests/1")).header("host", "gcr.io")).await;
    assert_eq!(g.status, StatusCode::MISDIRECTED_REQUEST);
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaf_names_only_quay_io_and_v2_works_without_a_way_out() {
    let f = Fixture::new(false).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = proxy_config(&f.buildset, None);
    // The real quay.io is unreachable (nothing listens on port 9 of loopback).
    cfg.upstreams = vec![("quay.io".into(), "https://127.0.0.1:9".into())];
    let node_ca = intercept(&mut cfg, dir.path());
    let (addr, stop) = run(cfg).await;
    let c = quay_client(addr, &[&node_ca]);
    let url = |p: &str| format!("https://quay.io:{}{p}", addr.port());

    let ping = fetch(c.get(url("/v2/"))).await;
    assert_eq!(ping.status, StatusCode::OK, "the proxy answers /v2/ itself");
    let g = fetch(c.get(url("/v2/org/specimen/manifests/1")).header("accept", ACCEPT_MANIFESTS)).await;
    assert_eq!(sha256(&g.body), f.bs_quay.manifest_digest);
    let g = fetch(c.get(url("/v2/org/other/manifests/1"))).await;
    assert_eq!(g.status, StatusCode::BAD_GATEWAY, "a miss says the real registry is out of reach");

    // A client asking for another name gets no certificate at all.
    let other = reqwest::Client::builder()
        .no_proxy()
        .resolve("gcr.io", addr)
        .add_root_certificate(reqwest::Certificate::from_pem(node_ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let e = other.get(format!("https://gcr.io:{}/v2/", addr.port())).send().await;
    assert!(e.is_err(), "a TLS handshake for gcr.io must fail: {e:?}");
    let _ = stop.send(());
}
