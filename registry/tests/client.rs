//! The registry client against the in-process server with authentication on: the bearer
//! token flow, every operation the copy engine uses, mounts, chunked uploads, pagination,
//! and retries through a fault-injecting front (a stand-in that answers 503 or drops the
//! connection for the first requests, then forwards to the real server).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use specreg_registry::auth::{AccessLevel, AuthConfig, CredentialAuth, Secret, User, UserDb};
use specreg_registry::client::{BlobPush, BlobSource, ByteStream, ClientError, ClientOptions, Credentials, RegistryClient, RetryPolicy, Scheme};
use specreg_registry::reference::{Algorithm, Digest, Reference, RepoName, Tag};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USER: &str = "zuul";
const PASSWORD: &str = "pa:ss-word";
const READER: &str = "reader";

async fn auth_registry() -> TestRegistry {
    TestRegistry::start_with(|cfg| {
        let users = UserDb::new(vec![
            User { name: USER.into(), password: Secret::new(PASSWORD), access: AccessLevel::Write },
            User { name: READER.into(), password: Secret::new("r"), access: AccessLevel::Read },
        ]);
        let mut ac = AuthConfig::new(users);
        ac.tls = false;
        cfg.authorizer = Arc::new(CredentialAuth::new(ac));
    })
    .await
}

fn client_for(addr: SocketAddr, credentials: Credentials) -> RegistryClient {
    let opts = ClientOptions { scheme: Scheme::Http, credentials, ..ClientOptions::default() };
    RegistryClient::new(&addr.to_string(), opts).unwrap()
}

fn writer(addr: SocketAddr) -> RegistryClient {
    client_for(addr, Credentials::basic(USER, PASSWORD))
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

/// Blob bytes from memory, in 64 KiB pieces; counts how often it was opened.
struct Mem {
    data: Bytes,
    opened: AtomicUsize,
}

impl Mem {
    fn new(data: Vec<u8>) -> Self {
        Mem { data: data.into(), opened: AtomicUsize::new(0) }
    }
    fn digest(&self) -> Digest {
        Algorithm::Sha256.digest_of(&self.data)
    }
}

#[async_trait::async_trait]
impl BlobSource for Mem {
    async fn open(&self) -> Result<ByteStream, ClientError> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        let pieces: Vec<Result<Bytes, ClientError>> =
            self.data.chunks(64 * 1024).map(|c| Ok(self.data.slice_ref(c))).collect();
        Ok(Box::pin(futures_util::stream::iter(pieces)))
    }
}

async fn collect(mut s: ByteStream) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b?);
    }
    Ok(out)
}

/// Pushes a config and one layer and an OCI manifest tagged `tag`; returns the manifest.
async fn push_small_image(c: &RegistryClient, r: &RepoName, tag: &str) -> (Vec<u8>, Digest) {
    let config = Mem::new(image_config());
    let layer = Mem::new(random_bytes(200_000));
    for b in [&config, &layer] {
        assert!(matches!(c.push_blob(r, &b.digest(), b.data.len() as u64, b, None).await.unwrap(), BlobPush::Uploaded(n) if n == b.data.len() as u64));
    }
    let manifest = oci_manifest(&descriptor(OCI_CONFIG, &config.data), &[descriptor(OCI_LAYER_GZ, &layer.data)], serde_json::json!({}));
    let d = c
        .put_manifest(r, &Reference::parse(tag).unwrap(), &Bytes::from(manifest.clone()), OCI_MANIFEST)
        .await
        .unwrap();
    assert_eq!(d.to_string(), sha256(&manifest));
    (manifest, d)
}

#[tokio::test]
async fn bearer_flow_push_pull_round_trip() {
    let reg = auth_registry().await;
    let c = writer(reg.addr);
    c.ping().await.unwrap();
    let r = repo("org/app");
    let (manifest, digest) = push_small_image(&c, &r, "v1").await;

    // By tag: exact bytes, media type, digest.
    let m = c.get_manifest(&r, &Reference::parse("v1").unwrap()).await.unwrap();
    assert_eq!(&m.bytes[..], &manifest[..]);
    assert_eq!(m.media_type, OCI_MANIFEST);
    assert_eq!(m.digest, digest);
    // By digest, verified.
    let m2 = c.get_manifest(&r, &Reference::Digest(digest.clone())).await.unwrap();
    assert_eq!(m2.bytes, m.bytes);
    let head = c.head_manifest(&r, &Reference::parse("v1").unwrap()).await.unwrap().unwrap();
    assert_eq!(head.digest, Some(digest.clone()));
    assert_eq!(head.size, Some(manifest.len() as u64));
    assert!(c.head_manifest(&r, &Reference::parse("absent").unwrap()).await.unwrap().is_none());

    // Blobs come back byte for byte, through the verifying stream.
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = Digest::parse(parsed["layers"][0]["digest"].as_str().unwrap()).unwrap();
    assert_eq!(c.blob_size(&r, &layer).await.unwrap(), Some(200_000));
    let bytes = collect(c.get_blob(&r, &layer, Some(200_000)).await.unwrap()).await.unwrap();
    assert_eq!(Algorithm::Sha256.digest_of(&bytes), layer);
    // A wrong expected size is caught by the stream.
    let short = collect(c.get_blob(&r, &layer, Some(10)).await.unwrap()).await;
    assert!(matches!(short, Err(ClientError::SizeMismatch { .. })), "{short:?}");
    let absent = Algorithm::Sha256.digest_of(b"absent");
    assert_eq!(c.blob_size(&r, &absent).await.unwrap(), None);
    let err = c.get_blob(&r, &absent, None).await.err().expect("absent blob is an error");
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("BLOB_UNKNOWN"), "the registry's code is carried: {err}");

    // Tags, then deleting one tag and the manifest.
    c.put_manifest(&r, &Reference::parse("v2").unwrap(), &m.bytes, &m.media_type).await.unwrap();
    let mut tags = c.list_tags(&r).await.unwrap();
    tags.sort();
    assert_eq!(tags, vec!["v1", "v2"]);
    c.delete_tag(&r, &Tag::parse("v2").unwrap()).await.unwrap();
    assert_eq!(c.list_tags(&r).await.unwrap(), vec!["v1"]);
    c.delete_manifest(&r, &digest).await.unwrap();
    assert!(c.head_manifest(&r, &Reference::Digest(digest)).await.unwrap().is_none());
}

#[tokio::test]
async fn credentials_are_checked() {
    let reg = auth_registry().await;
    let r = repo("org/app");
    push_small_image(&writer(reg.addr), &r, "v1").await;

    let anon = client_for(reg.addr, Credentials::Anonymous);
    let err = anon.get_manifest(&r, &Reference::parse("v1").unwrap()).await.unwrap_err();
    assert!(matches!(err, ClientError::Status { status: 401, .. } | ClientError::Auth { .. }), "{err}");

    let wrong = client_for(reg.addr, Credentials::basic(USER, "nope"));
    let err = wrong.ping().await.unwrap_err();
    assert!(matches!(err, ClientError::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("nope"), "no secret in errors: {err}");

    // A read-only user pulls but cannot push.
    let reader = client_for(reg.addr, Credentials::basic(READER, "r"));
    let m = reader.get_manifest(&r, &Reference::parse("v1").unwrap()).await.unwrap();
    let err = reader.put_manifest(&r, &Reference::parse("v9").unwrap(), &m.bytes, &m.media_type).await.unwrap_err();
    assert!(matches!(err.status(), Some(401 | 403)), "{err}");
}

#[tokio::test]
async fn cross_repository_mount_and_chunked_upload() {
    let reg = auth_registry().await;
    let c = writer(reg.addr);
    let (a, b) = (repo("org/a"), repo("org/b"));
    let blob = Mem::new(random_bytes(300_000));
    let d = blob.digest();
    assert_eq!(c.push_blob(&a, &d, 300_000, &blob, None).await.unwrap(), BlobPush::Uploaded(300_000));
    assert_eq!(c.push_blob(&b, &d, 300_000, &blob, Some(&a)).await.unwrap(), BlobPush::Mounted);
    assert_eq!(blob.opened.load(Ordering::SeqCst), 1, "a mount reads no bytes");
    assert_eq!(c.blob_size(&b, &d).await.unwrap(), Some(300_000));

    // A mount from a repository without the blob falls back to an upload.
    let other = Mem::new(random_bytes(1000));
    let res = c.push_blob(&repo("org/c"), &other.digest(), 1000, &other, Some(&a)).await.unwrap();
    assert_eq!(res, BlobPush::Uploaded(1000));

    // PATCH chunks of 64 KiB: 5 chunks for 300 000 bytes, the digest checked by the server.
    let chunked = writer_with_chunks(reg.addr, 64 * 1024);
    let big = Mem::new(random_bytes(300_000));
    let res = chunked.push_blob(&repo("org/d"), &big.digest(), 300_000, &big, None).await.unwrap();
    assert_eq!(res, BlobPush::Uploaded(300_000));
    let back = collect(c.get_blob(&repo("org/d"), &big.digest(), Some(300_000)).await.unwrap()).await.unwrap();
    assert_eq!(&back[..], &big.data[..]);

    // A wrong digest is refused by the registry, not stored.
    let liar = Mem::new(random_bytes(100));
    let claimed = Algorithm::Sha256.digest_of(b"something else");
    let err = c.push_blob(&repo("org/e"), &claimed, 100, &liar, None).await.unwrap_err();
    assert!(err.to_string().contains("DIGEST_INVALID"), "{err}");
}

fn writer_with_chunks(addr: SocketAddr, chunk: u64) -> RegistryClient {
    let opts = ClientOptions {
        scheme: Scheme::Http,
        credentials: Credentials::basic(USER, PASSWORD),
        chunk_size: Some(chunk),
        ..ClientOptions::default()
    };
    RegistryClient::new(&addr.to_string(), opts).unwrap()
}

#[tokio::test]
async fn tag_listing_follows_every_page() {
    let reg = auth_registry().await;
    let c = writer(reg.addr);
    let r = repo("org/many");
    let (manifest, _) = push_small_image(&c, &r, "t00").await;
    let manifest = Bytes::from(manifest);
    let mut want = vec!["t00".to_owned()];
    for i in 1..23 {
        let t = format!("t{i:02}");
        c.put_manifest(&r, &Reference::parse(&t).unwrap(), &manifest, OCI_MANIFEST).await.unwrap();
        want.push(t);
    }
    let mut got = c.list_tags_paged(&r, Some(5)).await.unwrap();
    got.sort();
    assert_eq!(got, want, "5 pages of 5 joined");
    assert!(c.list_tags(&repo("org/none")).await.unwrap().is_empty());
}

/// What the fault-injecting front does to the first connections.
#[derive(Clone, Copy)]
enum Fault {
    /// Answers `503 Service Unavailable`.
    Unavailable,
    /// Closes the connection after reading the request head.
    Drop,
}

/// A TCP front that spoils the first `bad` connections, then forwards to `upstream`.
async fn faulty_front(upstream: SocketAddr, fault: Fault, bad: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if n < bad {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => head.extend_from_slice(&buf[..k]),
                        }
                    }
                    if let Fault::Unavailable = fault {
                        let _ = sock
                            .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .await;
                    }
                    return;
                }
                let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut sock, &mut up).await;
            });
        }
    });
    (addr, seen)
}

fn fast_retry_client(addr: SocketAddr) -> RegistryClient {
    let opts = ClientOptions {
        scheme: Scheme::Http,
        credentials: Credentials::basic(USER, PASSWORD),
        retry: RetryPolicy { attempts: 5, base_delay: std::time::Duration::from_millis(10), ..RetryPolicy::default() },
        ..ClientOptions::default()
    };
    RegistryClient::new(&addr.to_string(), opts).unwrap()
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let reg = auth_registry().await;
    let r = repo("org/app");
    let (manifest, digest) = push_small_image(&writer(reg.addr), &r, "v1").await;

    for fault in [Fault::Unavailable, Fault::Drop] {
        let (front, seen) = faulty_front(reg.addr, fault, 3).await;
        let c = fast_retry_client(front);
        let m = c.get_manifest(&r, &Reference::parse("v1").unwrap()).await.unwrap();
        assert_eq!(&m.bytes[..], &manifest[..]);
        assert_eq!(m.digest, digest);
        assert!(seen.load(Ordering::SeqCst) >= 4, "three spoilt connections, then success");
    }

    // A blob upload whose first attempts fail restarts and lands intact.
    let (front, _) = faulty_front(reg.addr, Fault::Unavailable, 2).await;
    let c = fast_retry_client(front);
    let blob = Mem::new(random_bytes(50_000));
    let res = c.push_blob(&repo("org/up"), &blob.digest(), 50_000, &blob, None).await.unwrap();
    assert_eq!(res, BlobPush::Uploaded(50_000));
    assert_eq!(writer(reg.addr).blob_size(&repo("org/up"), &blob.digest()).await.unwrap(), Some(50_000));

    // Out of attempts: the 503 is reported with its URL.
    let (front, _) = faulty_front(reg.addr, Fault::Unavailable, 100).await;
    let err = fast_retry_client(front).ping().await.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    assert!(err.to_string().contains("/v2/"), "{err}");
}
