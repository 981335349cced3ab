//! The copy engine between two in-process registries with authentication on, and OCI
//! layouts: byte-exact results, skips, mounts within one run, and what the report says.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use specreg_registry::auth::{AccessLevel, AuthConfig, CredentialAuth, Secret, User, UserDb};
use specreg_registry::client::{ClientOptions, Credentials, RegistryClient, Scheme};
use specreg_registry::copy::layout::Layout;
use specreg_registry::copy::{BlobAction, Copier, CopyOptions, Endpoint, NoProgress};
use specreg_registry::reference::{Reference, RepoName};

async fn registry() -> (TestRegistry, RegistryClient) {
    let reg = TestRegistry::start_with(|cfg| {
        let users = UserDb::new(vec![User { name: "zuul".into(), password: Secret::new("pw"), access: AccessLevel::Write }]);
        let mut ac = AuthConfig::new(users);
        ac.tls = false;
        cfg.authorizer = Arc::new(CredentialAuth::new(ac));
    })
    .await;
    let opts = ClientOptions { scheme: Scheme::Http, credentials: Credentials::basic("zuul", "pw"), ..ClientOptions::default() };
    let client = RegistryClient::new(&reg.addr.to_string(), opts).unwrap();
    (reg, client)
}

fn at(client: &RegistryClient, repo: &str, tag: &str) -> Endpoint {
    Endpoint::Registry { client: client.clone(), repo: RepoName::parse(repo).unwrap(), reference: Some(Reference::parse(tag).unwrap()) }
}

/// Pushes an index of two images sharing a layer; returns (index bytes, child manifests).
async fn push_index(c: &RegistryClient, repo: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
    let r = RepoName::parse(repo).unwrap();
    let shared = random_bytes(150_000);
    let mut children = Vec::new();
    let mut descs = Vec::new();
    for _ in 0..2 {
        let config = image_config();
        let own = random_bytes(90_000);
        for b in [&config, &shared, &own] {
            let d = specreg_registry::reference::Algorithm::Sha256.digest_of(b);
            let src = Mem(Bytes::from(b.clone()));
            c.push_blob(&r, &d, b.len() as u64, &src, None).await.unwrap();
        }
        let m = oci_manifest(&descriptor(OCI_CONFIG, &config), &[descriptor(OCI_LAYER_GZ, &shared), descriptor(OCI_LAYER_GZ, &own)], serde_json::json!({}));
        c.put_manifest(&r, &Reference::parse(&sha256(&m)).unwrap(), &Bytes::from(m.clone()), OCI_MANIFEST).await.unwrap();
        descs.push(descriptor(OCI_MANIFEST, &m));
        children.push(m);
    }
    let index = oci_index(&descs, serde_json::json!({}));
    c.put_manifest(&r, &Reference::parse("v1").unwrap(), &Bytes::from(index.clone()), OCI_INDEX).await.unwrap();
    (index, children)
}

struct Mem(Bytes);

#[async_trait::async_trait]
impl specreg_registry::client::BlobSource for Mem {
    async fn open(&self) -> Result<specreg_registry::client::ByteStream, specreg_registry::client::ClientError> {
        Ok(Box::pin(futures_util::stream::iter([Ok(self.0.clone())])))
    }
}

#[tokio::test]
async fn index_copies_whole_then_skips_then_mounts() {
    let (_a, ca) = registry().await;
    let (_b, cb) = registry().await;
    let (index, children) = push_index(&ca, "org/app").await;
    let copier = Copier::new(CopyOptions { jobs: 4 }, Arc::new(NoProgress));

    let r = copier.copy(&at(&ca, "org/app", "v1"), &at(&cb, "org/app", "v1")).await.unwrap();
    assert_eq!(r.digest, sha256(&index));
    assert_eq!(r.manifests.len(), 3);
    assert_eq!((r.blobs_copied, r.blobs_skipped, r.blobs_mounted), (5, 0, 0), "2 configs, 1 shared, 2 own: {r:#?}");
    assert!(r.blobs.windows(2).all(|w| w[0].size >= w[1].size), "largest first");
    let got = cb.get_manifest(&RepoName::parse("org/app").unwrap(), &Reference::parse("v1").unwrap()).await.unwrap();
    assert_eq!(&got.bytes[..], &index[..], "byte-exact index");
    for m in &children {
        let d = Reference::parse(&sha256(m)).unwrap();
        assert_eq!(&cb.get_manifest(&RepoName::parse("org/app").unwrap(), &d).await.unwrap().bytes[..], &m[..]);
    }

    // Again: nothing moves.
    let again = copier.copy(&at(&ca, "org/app", "v1"), &at(&cb, "org/app", "v1")).await.unwrap();
    assert_eq!((again.bytes_moved, again.blobs_copied, again.blobs_skipped), (0, 0, 5));
    assert!(again.manifests.iter().all(|m| !m.copied));

    // To another repository of the same destination: every blob mounted from org/app.
    let other = copier.copy(&at(&ca, "org/app", "v1"), &at(&cb, "org/other", "v1")).await.unwrap();
    assert_eq!((other.blobs_mounted, other.bytes_moved), (5, 0), "{other:#?}");
    assert!(other.blobs.iter().all(|b| b.action == BlobAction::Mounted { from: "org/app".into() }));

    // Through a layout and back: same digest.
    let dir = tempfile::tempdir().unwrap();
    let layout = Endpoint::Layout { layout: Layout::create_on_write(&dir.path().join("l")), name: Some("saved".into()) };
    let out = copier.copy(&at(&cb, "org/other", "v1"), &layout).await.unwrap();
    assert_eq!(out.digest, sha256(&index));
    let back = Endpoint::Layout { layout: Layout::open(&dir.path().join("l")).unwrap(), name: Some("saved".into()) };
    let r = copier.copy(&back, &at(&ca, "org/restored", "v2")).await.unwrap();
    assert_eq!(r.digest, sha256(&index));
    assert_eq!(r.blobs_mounted, 5, "the source registry's org/app is a mount candidate: {r:#?}");
}
