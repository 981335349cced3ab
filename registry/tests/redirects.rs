//! Blob redirects for the node's mirror proxy: with `Specreg-Blob-Redirect`, an authorized
//! blob GET answers `307` to a signed URL on the same server, which opens that one blob of
//! that one repository without credentials, and nothing else.

mod common;

use std::sync::Arc;

use common::*;
use reqwest::Method;
use specreg_registry::auth::{AccessLevel, AuthConfig, CredentialAuth, Secret, User, UserDb};

const REPO: &str = "org/app";
const USER: &str = "builder";
const PASSWORD: &str = "s3cret-pass";

async fn registry_with_auth() -> TestRegistry {
    TestRegistry::start_with(|config| {
        let users = UserDb::new(vec![User {
            name: USER.into(),
            password: Secret::new(PASSWORD),
            access: AccessLevel::Write,
        }]);
        config.authorizer = Arc::new(CredentialAuth::new(AuthConfig::new(users)));
    })
    .await
}

fn basic() -> String {
    format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()))
}

async fn push(reg: &TestRegistry, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let path = with_query(&format!("/v2/{repo}/blobs/uploads/"), "digest", &digest);
    let r = reg
        .send(
            reg.req(Method::POST, &path)
                .header("authorization", basic())
                .header("content-type", OCTET)
                .body(data.to_vec()),
        )
        .await;
    assert_status(&r, 201);
    digest
}

async fn redirect_for(reg: &TestRegistry, repo: &str, digest: &str) -> Resp {
    reg.send(
        reg.req(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
            .header("authorization", basic())
            .header("specreg-blob-redirect", "1"),
    )
    .await
}

#[tokio::test]
async fn an_authorized_blob_get_asking_for_a_redirect_gets_a_signed_url_that_serves_the_bytes() {
    let reg = registry_with_auth().await;
    let data = random_bytes(300_000);
    let digest = push(&reg, REPO, &data).await;

    let r = redirect_for(&reg, REPO, &digest).await;
    assert_status(&r, 307);
    assert_eq!(r.header("docker-content-digest").as_deref(), Some(digest.as_str()));
    let location = r.location();
    let prefix = format!("http://{}/v2/{REPO}/blobs/{digest}?", reg.addr);
    assert!(location.starts_with(&prefix), "{location} should start with {prefix}");

    // No credentials: the signature is the permission.
    let got = reg.get(&location).await;
    assert_status(&got, 200);
    assert_eq!(sha256(&got.body), digest);
    assert_eq!(got.body.len(), data.len());

    // Ranges work on the signed URL too (clients resume interrupted downloads).
    let part = reg
        .send(reg.req(Method::GET, &location).header("range", "bytes=10-19"))
        .await;
    assert_status(&part, 206);
    assert_eq!(&part.body[..], &data[10..20]);
}

#[tokio::test]
async fn a_signed_url_opens_nothing_but_its_own_blob() {
    let reg = registry_with_auth().await;
    let a = push(&reg, REPO, &random_bytes(1000)).await;
    let b = push(&reg, REPO, &random_bytes(1000)).await;
    push(&reg, "org/other", &random_bytes(10)).await;
    let location = redirect_for(&reg, REPO, &a).await.location();
    let query = location.split_once('?').unwrap().1;

    // Another digest, another repository, a tampered signature or expiry: refused.
    for path in [
        format!("/v2/{REPO}/blobs/{b}?{query}"),
        format!("/v2/org/other/blobs/{a}?{query}"),
        format!("/v2/{REPO}/blobs/{a}?{}", query.replace("signature=", "signature=A")),
        format!("/v2/{REPO}/blobs/{a}?{}", query.replace("expires=", "expires=9")),
    ] {
        let r = reg.get(&path).await;
        assert_error(&r, 403, "DENIED");
        assert!(r.text().contains("signed blob URL"), "{}", r.describe());
    }
    // It grants no other action on the blob either.
    let r = reg.delete(&format!("/v2/{REPO}/blobs/{a}?{query}")).await;
    assert_status(&r, 401);
    // And without the signature the usual challenge stands.
    let r = reg.get(&format!("/v2/{REPO}/blobs/{a}")).await;
    assert_status(&r, 401);
}

#[tokio::test]
async fn redirects_are_only_for_authorized_gets_of_blobs_that_exist() {
    let reg = registry_with_auth().await;
    let digest = push(&reg, REPO, &random_bytes(4096)).await;

    // Unauthenticated: the challenge, never a signed URL.
    let r = reg
        .send(
            reg.req(Method::GET, &format!("/v2/{REPO}/blobs/{digest}"))
                .header("specreg-blob-redirect", "1"),
        )
        .await;
    assert_status(&r, 401);
    assert!(r.header("location").is_none());

    // Missing blob: 404, so the proxy falls back to the upstream.
    let missing = sha256(b"not here");
    let r = redirect_for(&reg, REPO, &missing).await;
    assert_error(&r, 404, "BLOB_UNKNOWN");

    // HEAD answers as always (the proxy checks presence with it).
    let r = reg
        .send(
            reg.req(Method::HEAD, &format!("/v2/{REPO}/blobs/{digest}"))
                .header("authorization", basic())
                .header("specreg-blob-redirect", "1"),
        )
        .await;
    assert_status(&r, 200);
    assert_eq!(r.content_length(), Some(4096));

    // Without the header: the bytes, as before.
    let r = reg
        .send(
            reg.req(Method::GET, &format!("/v2/{REPO}/blobs/{digest}"))
                .header("authorization", basic()),
        )
        .await;
    assert_status(&r, 200);
    assert_eq!(sha256(&r.body), digest);
}
