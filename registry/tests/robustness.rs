//! Robustness: concurrent pushes of the same blob (monolithic and chunked) all succeed and
//! leave a readable blob, concurrent PATCHes on one session never interleave, concurrent
//! manifest pushes to one tag leave one consistent target, an open upload survives a
//! server restart (same data directory, new process state), content survives a restart,
//! and a digest mismatch on a chunked upload publishes nothing.

mod common;

use std::sync::Arc;

use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_monolithic_pushes_of_the_same_blob_all_succeed() {
    let reg = Arc::new(TestRegistry::start().await);
    let data = Arc::new(random_bytes(2 * 1024 * 1024 + 3));
    let d = sha256(&data);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (reg, data, d) = (reg.clone(), data.clone(), d.clone());
        tasks.push(tokio::spawn(async move {
            let r = reg.post_blob("conc/repo", &d, data.to_vec()).await;
            // Readable with its full length right after each 201.
            let h = reg.head(&format!("/v2/conc/repo/blobs/{d}")).await;
            (r, h)
        }));
    }
    for t in tasks {
        let (r, h) = t.await.unwrap();
        assert_status(&r, 201);
        assert_eq!(r.must("docker-content-digest"), d);
        assert_status(&h, 200);
        assert_eq!(h.content_length(), Some(data.len() as u64));
    }
    let g = reg.get(&format!("/v2/conc/repo/blobs/{d}")).await;
    assert_eq!(g.body.len(), data.len());
    assert_eq!(sha256(&g.body), d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_chunked_pushes_of_the_same_blob_all_succeed() {
    let reg = Arc::new(TestRegistry::start().await);
    let data = Arc::new(random_bytes(3 * 1024 * 1024 + 11));
    let d = sha256(&data);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (reg, data, d) = (reg.clone(), data.clone(), d.clone());
        // Different repositories for half of them: the content store is shared.
        let repo = if i % 2 == 0 { "conc/a" } else { "conc/b" };
        tasks.push(tokio::spawn(async move {
            let r = reg.push_blob_chunked(repo, &data, 512 * 1024 + i, &d).await;
            let h = reg.head(&format!("/v2/{repo}/blobs/{d}")).await;
            (r, h)
        }));
    }
    for t in tasks {
        let (r, h) = t.await.unwrap();
        assert_status(&r, 201);
        assert_status(&h, 200);
        assert_eq!(h.content_length(), Some(data.len() as u64));
    }
    for repo in ["conc/a", "conc/b"] {
        let g = reg.get(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(g.body.len(), data.len());
        assert_eq!(sha256(&g.body), d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mixed_flows_of_the_same_blob_all_succeed() {
    let reg = Arc::new(TestRegistry::start().await);
    let data = Arc::new(random_bytes(1024 * 1024));
    let d = sha256(&data);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (reg, data, d) = (reg.clone(), data.clone(), d.clone());
        tasks.push(tokio::spawn(async move {
            match i % 4 {
                0 => reg.post_blob("mix/repo", &d, data.to_vec()).await,
                1 => reg.push_blob_post_put("mix/repo", &data, &d).await,
                2 => reg.push_blob_chunked("mix/repo", &data, 100_000, &d).await,
                _ => {
                    let loc = reg.open_upload("mix/repo").await;
                    let r = reg.send(reg.req(Method::PATCH, &loc).body(data.to_vec())).await;
                    reg.close_upload(&r.location(), &d).await
                }
            }
        }));
    }
    for t in tasks {
        assert_status(&t.await.unwrap(), 201);
    }
    let g = reg.get(&format!("/v2/mix/repo/blobs/{d}")).await;
    assert_eq!(sha256(&g.body), d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_on_one_session_never_interleave() {
    let reg = Arc::new(TestRegistry::start().await);
    let loc = reg.open_upload("one/writer").await;
    let a = Arc::new(vec![b'a'; 1024 * 1024]);
    let b = Arc::new(vec![b'b'; 1024 * 1024]);
    let ta = {
        let (reg, loc, a) = (reg.clone(), loc.clone(), a.clone());
        tokio::spawn(async move { reg.patch_chunk(&loc, 0, &a).await })
    };
    let tb = {
        let (reg, loc, b) = (reg.clone(), loc.clone(), b.clone());
        tokio::spawn(async move { reg.patch_chunk(&loc, 0, &b).await })
    };
    let (ra, rb) = (ta.await.unwrap(), tb.await.unwrap());
    let mut statuses = [ra.status, rb.status];
    statuses.sort();
    assert_eq!(statuses, [202, 416], "one chunk wins, the other is out of order: {} / {}", ra.describe(), rb.describe());
    let st = reg.get(&loc).await;
    assert_eq!(st.must("range"), format!("0-{}", a.len() - 1));
    let winner = if ra.status == 202 { &a } else { &b };
    let r = reg.close_upload(&loc, &sha256(winner)).await;
    assert_status(&r, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_manifest_pushes_to_one_tag_leave_one_target() {
    let reg = Arc::new(TestRegistry::start().await);
    let repo = "race/tag";
    let mut images = Vec::new();
    for _ in 0..8 {
        let config = image_config();
        reg.push_blob(repo, &config).await;
        images.push(oci_manifest(&descriptor(OCI_CONFIG, &config), &[], json!({})));
    }
    let mut tasks = Vec::new();
    for m in images.clone() {
        let reg = reg.clone();
        tasks.push(tokio::spawn(async move { reg.put_manifest(repo, "latest", OCI_MANIFEST, &m).await }));
    }
    for t in tasks {
        assert_status(&t.await.unwrap(), 201);
    }
    let g = reg.get(&format!("/v2/{repo}/manifests/latest")).await;
    assert_status(&g, 200);
    let d = g.must("docker-content-digest");
    assert_eq!(sha256(&g.body), d, "the tag's digest header matches the served body");
    assert!(images.iter().any(|m| sha256(m) == d));
    for m in &images {
        assert_status(&reg.head(&format!("/v2/{repo}/manifests/{}", sha256(m))).await, 200);
    }
    assert_eq!(reg.tags(repo).await, vec!["latest"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_chunked_upload_survives_a_server_restart() {
    let mut reg = TestRegistry::start().await;
    let data = random_bytes(3 * 1024 * 1024 + 7);
    let d = sha256(&data);
    let split = 1024 * 1024 + 5;
    let loc = reg.open_upload("restart/repo").await;
    let r = reg.patch_chunk(&loc, 0, &data[..split]).await;
    assert_status(&r, 202);
    let loc = r.location();
    reg.restart().await;
    // The Location is relative to the registry, so it still names the session.
    let st = reg.get(&path_of(&loc)).await;
    assert_status(&st, 204);
    assert_eq!(st.must("range"), format!("0-{}", split - 1));
    // A chunk at the wrong offset is still refused.
    assert_eq!(reg.patch_chunk(&path_of(&loc), 0, &data[..10]).await.status, 416);
    let r = reg.patch_chunk(&path_of(&st.location()), split, &data[split..2 * split]).await;
    assert_status(&r, 202);
    assert_eq!(r.must("range"), format!("0-{}", 2 * split - 1));
    let r = reg
        .send(
            reg.req(Method::PUT, &with_query(&path_of(&r.location()), "digest", &d))
                .header("content-range", format!("{}-{}", 2 * split, data.len() - 1))
                .body(data[2 * split..].to_vec()),
        )
        .await;
    assert_status(&r, 201);
    assert_eq!(r.must("docker-content-digest"), d);
    let g = reg.get(&format!("/v2/restart/repo/blobs/{d}")).await;
    assert_eq!(g.body.len(), data.len());
    assert_eq!(sha256(&g.body), d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sha512_and_streamed_uploads_survive_a_restart() {
    let mut reg = TestRegistry::start().await;
    let data = random_bytes(500_000);
    // A declared sha512 session.
    let r = reg.post(&with_query("/v2/restart/s512/blobs/uploads/", "digest-algorithm", "sha512")).await;
    assert_status(&r, 202);
    let r512 = reg.patch_chunk(&r.location(), 0, &data[..200_000]).await;
    assert_status(&r512, 202);
    // A streamed session (no Content-Range).
    let loc = reg.open_upload("restart/stream").await;
    let rs = reg.send(reg.req(Method::PATCH, &loc).body(data[..300_000].to_vec())).await;
    assert_status(&rs, 202);
    reg.restart().await;
    let r = reg.patch_chunk(&path_of(&r512.location()), 200_000, &data[200_000..]).await;
    assert_status(&r, 202);
    let r = reg.close_upload(&path_of(&r.location()), &sha512(&data)).await;
    assert_status(&r, 201);
    assert_eq!(r.must("docker-content-digest"), sha512(&data));
    let r = reg.send(reg.req(Method::PATCH, &path_of(&rs.location())).body(data[300_000..].to_vec())).await;
    assert_status(&r, 202);
    assert_eq!(r.must("range"), format!("0-{}", data.len() - 1));
    let r = reg.close_upload(&path_of(&r.location()), &sha256(&data)).await;
    assert_status(&r, 201);
    for (repo, d) in [("restart/s512", sha512(&data)), ("restart/stream", sha256(&data))] {
        let g = reg.get(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_status(&g, 200);
        assert_eq!(&g.body[..], &data[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_survives_a_restart() {
    let mut reg = TestRegistry::start().await;
    let repo = "persist/repo";
    let img = reg.push_image(repo, Some("v1"), 2).await;
    reg.push_manifest(repo, "v2", OCI_MANIFEST, &img.manifest).await;
    reg.push_blob(repo, b"{}").await;
    let art = oci_manifest(
        &json!({ "mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2 }),
        &[],
        json!({ "artifactType": "application/vnd.example.sig", "subject": img.descriptor() }),
    );
    let ad = reg.push_manifest(repo, &sha256(&art), OCI_MANIFEST, &art).await;
    let second = reg.push_image(repo, Some("v2"), 1).await;
    assert_status(&reg.delete(&format!("/v2/{repo}/manifests/v1")).await, 202);
    reg.restart().await;
    assert_eq!(reg.tags(repo).await, vec!["v2"], "the overwrite and the tag delete persisted");
    let g = reg.get(&format!("/v2/{repo}/manifests/v2")).await;
    assert_eq!(g.must("docker-content-digest"), second.digest);
    assert_eq!(g.must("content-type"), OCI_MANIFEST);
    let g = reg.get(&format!("/v2/{repo}/manifests/{}", img.digest)).await;
    assert_eq!(&g.body[..], &img.manifest[..]);
    for l in &img.layers {
        let b = reg.get(&format!("/v2/{repo}/blobs/{}", sha256(l))).await;
        assert_eq!(&b.body[..], &l[..]);
    }
    let r = reg.get(&format!("/v2/{repo}/referrers/{}", img.digest)).await;
    assert_eq!(r.json()["manifests"][0]["digest"], ad);
    assert_eq!(reg.get("/v2/_catalog").await.json()["repositories"], json!([repo]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_mismatch_on_a_chunked_upload_publishes_nothing() {
    let reg = TestRegistry::start().await;
    let data = random_bytes(2 * 1024 * 1024);
    let claimed = sha256(&random_bytes(32));
    let loc = reg.open_upload("mm/repo").await;
    let r = reg.patch_chunk(&loc, 0, &data[..1024 * 1024]).await;
    assert_status(&r, 202);
    let r = reg.patch_chunk(&r.location(), 1024 * 1024, &data[1024 * 1024..]).await;
    assert_status(&r, 202);
    let loc = r.location();
    let r = reg.close_upload(&loc, &claimed).await;
    assert_error(&r, 400, "DIGEST_INVALID");
    for d in [&claimed, &sha256(&data)] {
        assert_head_error(&reg.head(&format!("/v2/mm/repo/blobs/{d}")).await, 404);
    }
    // The session is over and its data discarded.
    assert_error(&reg.get(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN");
    let leftovers: Vec<String> = reg
        .files()
        .into_iter()
        .filter(|p| (p.starts_with("data/blobs/") || p.starts_with("data/uploads/")) && reg.root.path().join(p).is_file())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A mismatch on the PUT that carries the last chunk, too.
    let loc = reg.open_upload("mm/repo").await;
    let r = reg.patch_chunk(&loc, 0, &data[..1000]).await;
    let r = reg
        .send(
            reg.req(Method::PUT, &with_query(&r.location(), "digest", &claimed))
                .header("content-range", format!("1000-{}", data.len() - 1))
                .body(data[1000..].to_vec()),
        )
        .await;
    assert_error(&r, 400, "DIGEST_INVALID");
    assert_head_error(&reg.head(&format!("/v2/mm/repo/blobs/{}", sha256(&data))).await, 404);
}

/// A manifest file whose bytes no longer match its digest (a power loss without fsync can
/// leave a renamed file empty) is never served: 500, not the wrong bytes.
#[tokio::test]
async fn a_damaged_manifest_file_is_refused_not_served() {
    let mut reg = TestRegistry::start().await;
    let config = image_config();
    let layer = random_bytes(1000);
    reg.push_blob("dmg/app", &config).await;
    reg.push_blob("dmg/app", &layer).await;
    let manifest = oci_manifest(
        &descriptor("application/vnd.oci.image.config.v1+json", &config),
        &[descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
        json!({}),
    );
    let r = reg.put_manifest("dmg/app", "1", OCI_MANIFEST, &manifest).await;
    assert_status(&r, 201);
    let digest = sha256(&manifest);
    let hex = digest.strip_prefix("sha256:").unwrap();
    let path = reg.data_dir.join("blobs/sha256").join(&hex[..2]).join(hex);
    assert!(path.is_file(), "manifest content at {}", path.display());
    std::fs::write(&path, b"").unwrap();
    // With fsync, the restart replays the write-ahead journal, which still holds the
    // manifest's write: the file is whole again and served.
    reg.restart().await;
    let r = reg.get(&format!("/v2/dmg/app/manifests/{digest}")).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(sha256(&r.body), digest);
    // Damage the journal no longer covers (it was emptied by the replay) stays; a restart
    // empties the manifest cache, so the bytes come from disk.
    std::fs::write(&path, b"").unwrap();
    reg.restart().await;
    for reference in ["1", digest.as_str()] {
        let r = reg.get(&format!("/v2/dmg/app/manifests/{reference}")).await;
        assert_eq!(r.status, 500, "{}", r.describe());
        assert!(r.body.is_empty() || !r.text().contains("schemaVersion"), "{}", r.describe());
    }
}

/// A PATCH whose client goes away mid-body leaves whatever reached the disk; the session
/// then reports that size and a resumed upload from there completes with the right digest
/// (the hash state of the broken request is dropped and rebuilt from the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_cut_off_mid_body_resumes_from_what_the_server_holds() {
    use tokio::io::AsyncWriteExt;
    let reg = TestRegistry::start().await;
    let data = random_bytes(6 * 1024 * 1024 + 13);
    let d = sha256(&data);
    let first = 1024 * 1024 + 3;
    let loc = reg.open_upload("cut/repo").await;
    let r = reg.patch_chunk(&loc, 0, &data[..first]).await;
    assert_status(&r, 202);
    let loc = path_of(&r.location());

    // Promise the rest, send a little over half of it, and hang up.
    let sent = first + (data.len() - first) / 2 + 1;
    let mut sock = tokio::net::TcpStream::connect(reg.addr).await.unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/octet-stream\r\ncontent-range: {first}-{}\r\ncontent-length: {}\r\n\r\n",
        reg.addr,
        data.len() - 1,
        data.len() - first
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&data[first..sent]).await.unwrap();
    sock.shutdown().await.unwrap();
    drop(sock);

    // The server settles on some prefix of what was sent (it may have written part of it).
    let mut resumed = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let st = reg.get(&loc).await;
        assert_status(&st, 204);
        let end: usize = st.must("range").rsplit('-').next().unwrap().parse().unwrap();
        let held = end + 1;
        assert!((first..=sent).contains(&held), "server holds {held} bytes, sent {first}..={sent}");
        let r = reg.patch_chunk(&path_of(&st.location()), held, &data[held..]).await;
        if r.status == 416 {
            continue; // the broken request was still being wound up
        }
        assert_status(&r, 202);
        resumed = Some(r);
        break;
    }
    let r = resumed.expect("the upload resumed");
    let r = reg.close_upload(&path_of(&r.location()), &d).await;
    assert_status(&r, 201);
    assert_eq!(r.must("docker-content-digest"), d);
    let g = reg.get(&format!("/v2/cut/repo/blobs/{d}")).await;
    assert_eq!(g.body.len(), data.len());
    assert_eq!(sha256(&g.body), d);
}
