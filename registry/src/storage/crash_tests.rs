//! Crashes of the journaled filesystem backend, simulated: records are flushed but their
//! files never written (the journal's test switch), or the journal is cut or damaged, then
//! the store is opened again as after a restart. Every result is checked by its bytes.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use super::fs::FsStorage;
use super::journal::FILE_NAME;
use super::{ManifestWrite, RequiredBlob, Storage, StorageError, Unmet, UploadId, UploadMeta};
use crate::reference::{Algorithm, Digest, Reference, RepoName, Tag};
use crate::registry::{Policy, Registry};

fn crash_after_flush(s: &FsStorage, on: bool) {
    s.journal().crash_before_apply.store(on, Ordering::Relaxed);
}

fn journal_len(root: &Path) -> u64 {
    fs::metadata(root.join(FILE_NAME)).unwrap().len()
}

async fn upload(s: &FsStorage, data: &'static [u8]) -> Digest {
    let digest = Algorithm::Sha256.digest_of(data);
    let id = UploadId::random();
    let meta = UploadMeta { repo: "app".into(), algorithm: "sha256".into() };
    s.create_upload(&id, &meta).await.unwrap();
    let body = futures_util::stream::iter([Ok(Bytes::from_static(data))]).boxed();
    s.append_upload(&id, None, body).await.unwrap().unwrap();
    s.finish_upload(&id, &digest).await.unwrap();
    digest
}

#[tokio::test]
async fn records_flushed_but_never_applied_are_written_when_the_store_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let blob = Bytes::from_static(b"{\"manifest\":1}");
    let digest = Algorithm::Sha256.digest_of(&blob);
    {
        let s = FsStorage::open(dir.path(), true).unwrap();
        crash_after_flush(&s, true);
        s.put_small_blob(&digest, blob.clone()).await.unwrap();
        s.put_meta("repos/app/_manifests/sha256/x", b"record").await.unwrap();
        s.touch_meta("repos/app/_blobs/sha256/x").await.unwrap();
        let staged = s.stage_meta("repos/app/_tags/v1", b"tag").await.unwrap();
        s.publish_meta(staged).await.unwrap();
        s.sync_meta("repos/app/_tags/v1").await.unwrap();
        // Nothing reached the files: only the journal holds the writes.
        assert!(s.get_meta("repos/app/_manifests/sha256/x").await.unwrap().is_none());
        assert!(s.get_meta("repos/app/_tags/v1").await.unwrap().is_none());
        assert!(matches!(s.read_small_blob(&digest, 1024).await, Err(StorageError::BlobNotFound(_))));
        assert!(journal_len(dir.path()) > 0);
    }
    let s = FsStorage::open(dir.path(), true).unwrap();
    assert_eq!(s.read_small_blob(&digest, 1024).await.unwrap(), blob);
    assert_eq!(s.get_meta("repos/app/_manifests/sha256/x").await.unwrap().as_deref(), Some(&b"record"[..]));
    assert_eq!(s.get_meta("repos/app/_blobs/sha256/x").await.unwrap().as_deref(), Some(&b""[..]));
    assert_eq!(s.get_meta("repos/app/_tags/v1").await.unwrap().as_deref(), Some(&b"tag"[..]));
    // Replayed, made durable, and the journal emptied.
    assert_eq!(journal_len(dir.path()), 0);
    let mut tags = s.list_meta("repos/app/_tags").await.unwrap();
    tags.sort();
    assert_eq!(tags, ["v1"]);
}

#[tokio::test]
async fn a_torn_or_damaged_tail_is_ignored_and_the_prefix_applied() {
    for damage in ["cut", "flip"] {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = FsStorage::open(dir.path(), true).unwrap();
            crash_after_flush(&s, true);
            for i in 0..3 {
                s.put_meta(&format!("k{i}"), format!("value {i}").as_bytes()).await.unwrap();
            }
        }
        let path = dir.path().join(FILE_NAME);
        let mut bytes = fs::read(&path).unwrap();
        // The records end where the zero padding starts.
        let end = super::replay::parse(&bytes).unwrap().valid;
        match damage {
            "cut" => bytes.truncate(end - 4),
            _ => bytes[end - 1] ^= 1,
        }
        fs::write(&path, &bytes).unwrap();

        let s = FsStorage::open(dir.path(), true).unwrap();
        assert_eq!(s.get_meta("k0").await.unwrap().as_deref(), Some(&b"value 0"[..]), "{damage}");
        assert_eq!(s.get_meta("k1").await.unwrap().as_deref(), Some(&b"value 1"[..]), "{damage}");
        assert_eq!(s.get_meta("k2").await.unwrap(), None, "{damage}");
        assert_eq!(journal_len(dir.path()), 0);
    }
}

#[tokio::test]
async fn a_delete_is_never_undone_by_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = FsStorage::open(dir.path(), true).unwrap();
        // Put and delete, both applied: the journal holds both, in order.
        s.put_meta("gone", b"v").await.unwrap();
        assert!(s.delete_meta("gone").await.unwrap());
        // Put applied, the delete only journaled (crash before the unlink).
        s.put_meta("half", b"v").await.unwrap();
        crash_after_flush(&s, true);
        s.delete_meta("half").await.unwrap();
        assert!(dir.path().join("meta/half").exists());
    }
    let s = FsStorage::open(dir.path(), true).unwrap();
    assert_eq!(s.get_meta("gone").await.unwrap(), None);
    assert_eq!(s.get_meta("half").await.unwrap(), None);
}

#[tokio::test]
async fn a_blob_uploaded_again_after_a_journaled_delete_survives_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let data: &'static [u8] = b"layer bytes";
    let digest;
    {
        let s = FsStorage::open(dir.path(), true).unwrap();
        digest = upload(&s, data).await;
        assert!(s.delete_blob(&digest).await.unwrap());
        // The same content comes back through an upload, flushed outside the journal.
        assert_eq!(upload(&s, data).await, digest);
        // A second digest deleted and not uploaded again stays deleted.
        let other = upload(&s, b"other layer").await;
        assert!(s.delete_blob(&other).await.unwrap());
    }
    let s = FsStorage::open(dir.path(), true).unwrap();
    assert_eq!(s.read_small_blob(&digest, 1024).await.unwrap(), data);
    assert_eq!(s.list_blobs().await.unwrap(), [digest]);
}

fn index(n: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{{"n":"{n}"}}}}"#
    ))
}

#[tokio::test]
async fn a_tag_pushed_twice_keeps_the_last_value_after_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    let repo = RepoName::parse("app").unwrap();
    let tag = Reference::Tag(Tag::parse("v1").unwrap());
    let ct = Some("application/vnd.oci.image.index.v1+json");
    let second;
    {
        let s = Arc::new(FsStorage::open(dir.path(), true).unwrap());
        let reg = Registry::new(s.clone(), Policy::default());
        reg.put_manifest(&repo, &tag, ct, index(1), &[]).await.unwrap();
        // The second push reaches the journal only.
        crash_after_flush(&s, true);
        second = reg.put_manifest(&repo, &tag, ct, index(2), &[]).await.unwrap().digest;
    }
    assert_eq!(second, Algorithm::Sha256.digest_of(&index(2)));
    let reg = Registry::new(Arc::new(FsStorage::open(dir.path(), true).unwrap()), Policy::default());
    let served = reg.get_manifest(&repo, &tag).await.unwrap();
    assert_eq!(served.digest, second);
    assert_eq!(Algorithm::Sha256.digest_of(&served.body), second);
}

#[tokio::test]
async fn a_checkpoint_empties_the_journal_and_the_data_reloads_whole() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Arc::new(FsStorage::open_checkpointing_at(dir.path(), 4096).unwrap());
        let writes = (0..64).map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.put_meta(&format!("repos/app/_tags/t{i}"), &[i as u8; 200]).await })
        });
        for w in writes {
            w.await.unwrap().unwrap();
        }
        // 64 records of over 200 bytes: checkpointed on the way, never far past the limit.
        assert!(s.journal().len() < 4096 + 512, "{}", s.journal().len());
        let on_disk = super::replay::parse(&fs::read(dir.path().join(FILE_NAME)).unwrap()).unwrap();
        assert_eq!((on_disk.valid as u64, on_disk.ignored), (s.journal().len(), 0));
    }
    let s = FsStorage::open(dir.path(), true).unwrap();
    for i in 0..64u8 {
        assert_eq!(s.get_meta(&format!("repos/app/_tags/t{i}")).await.unwrap(), Some(vec![i; 200]));
    }
}

#[tokio::test]
async fn a_failed_flush_fails_the_write_and_a_later_one_tries_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStorage::open(dir.path(), true).unwrap();
    s.journal().fail_flush.store(true, Ordering::Relaxed);
    let err = s.put_meta("first", b"1").await.unwrap_err();
    assert!(matches!(&err, StorageError::Io { .. }) && err.to_string().contains("injected"), "{err}");
    // Not durable, so not written either.
    assert_eq!(s.get_meta("first").await.unwrap(), None);
    assert!(s.touch_meta("link").await.is_err());

    s.journal().fail_flush.store(false, Ordering::Relaxed);
    s.put_meta("second", b"2").await.unwrap();
    assert_eq!(s.get_meta("second").await.unwrap().as_deref(), Some(&b"2"[..]));
    drop(s);
    let s = FsStorage::open(dir.path(), true).unwrap();
    assert_eq!(s.get_meta("second").await.unwrap().as_deref(), Some(&b"2"[..]));
    // The failed writes' records stayed in the journal and were written again by the next
    // flush: like any write that reported an I/O error, they may still take effect.
    assert_eq!(s.get_meta("first").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(s.get_meta("link").await.unwrap().as_deref(), Some(&b""[..]));
}

// ---- the batched first phase of a manifest push (`Storage::write_manifest`) ----------

/// An image manifest referencing `config` and `layer` (with their sizes); `n` makes it unique.
fn image(config: &(Digest, usize), layer: &(Digest, usize), n: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}],"annotations":{{"n":"{n}"}}}}"#,
        config.0, config.1, layer.0, layer.1
    ))
}

const IMAGE: Option<&str> = Some("application/vnd.oci.image.manifest.v1+json");
const INDEX: Option<&str> = Some("application/vnd.oci.image.index.v1+json");

/// Files under `dir` whose name starts with `.` (temporary files left behind).
fn hidden_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(hidden_files(&e.path()));
        } else if e.file_name().to_string_lossy().starts_with('.') {
            out.push(e.path().display().to_string());
        }
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            fs::copy(e.path(), target).unwrap();
        }
    }
}

fn link(hex: &str) -> String {
    format!("repos/app/_blobs/sha256/{hex}")
}

#[tokio::test]
async fn a_push_costs_one_journal_flush_for_its_files_and_one_for_its_tag() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(FsStorage::open(dir.path(), true).unwrap());
    let reg = Registry::new(s.clone(), Policy::default());
    let repo = RepoName::parse("app").unwrap();
    let config = (upload(&s, b"{\"os\":\"linux\"}").await, 14);
    let layer = (upload(&s, b"layer bytes").await, 11);
    reg.link_blob(&repo, &config.0).await.unwrap();
    reg.link_blob(&repo, &layer.0).await.unwrap();
    reg.put_manifest(&repo, &Reference::Tag(Tag::parse("v1").unwrap()), IMAGE, image(&config, &layer, 1), &[])
        .await
        .unwrap();

    // A new manifest under a new tag: content, link and record share one flush, the tag
    // has its own (pushes one at a time here, so no flush is shared with another push).
    let before = s.journal().flushes();
    let body = image(&config, &layer, 2);
    let v2 = Reference::Tag(Tag::parse("v2").unwrap());
    let pushed = reg.put_manifest(&repo, &v2, IMAGE, body.clone(), &[]).await.unwrap();
    assert_eq!(s.journal().flushes() - before, 2);
    let served = reg.get_manifest(&repo, &v2).await.unwrap();
    assert_eq!((served.digest, served.body), (pushed.digest.clone(), body));
    assert_eq!(s.get_meta(&link(pushed.digest.hex())).await.unwrap().as_deref(), Some(&b""[..]));
}

#[tokio::test]
async fn a_batch_with_an_unmet_requirement_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStorage::open(dir.path(), true).unwrap();
    let layer = upload(&s, b"layer bytes").await;
    let content = Bytes::from_static(b"{\"manifest\":\"batched\"}");
    let digest = Algorithm::Sha256.digest_of(&content);
    let record_key = format!("repos/app/_manifests/sha256/{}", digest.hex());
    let write = ManifestWrite {
        digest: digest.clone(),
        content: content.clone(),
        link_key: link(digest.hex()),
        record: Some((record_key.clone(), b"record".to_vec())),
        tags: vec![("repos/app/_tags/v1".to_owned(), b"tag".to_vec())],
    };
    let need = |size| RequiredBlob { link_key: link(layer.hex()), digest: layer.clone(), size };

    // Stored but not linked in the repository.
    let out = s.write_manifest(&[need(Some(11))], write.clone()).await.unwrap();
    assert_eq!(out.err(), Some(Unmet { index: 0, found: None }));
    s.touch_meta(&link(layer.hex())).await.unwrap();
    // Linked, but the second requirement states another size.
    let out = s.write_manifest(&[need(Some(11)), need(Some(12))], write.clone()).await.unwrap();
    assert_eq!(out.err(), Some(Unmet { index: 1, found: Some(11) }));

    // Nothing of the manifest anywhere: no file, no staged value, no journal record.
    assert!(matches!(s.read_small_blob(&digest, 1024).await, Err(StorageError::BlobNotFound(_))));
    for key in [link(digest.hex()), record_key.clone(), "repos/app/_tags/v1".to_owned()] {
        assert_eq!(s.get_meta(&key).await.unwrap(), None, "{key}");
    }
    assert!(hidden_files(dir.path()).is_empty(), "{:?}", hidden_files(dir.path()));
    let records = super::replay::parse(&fs::read(dir.path().join(FILE_NAME)).unwrap()).unwrap().records;
    let paths: Vec<&str> = records.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, [format!("meta/{}", link(layer.hex()))]);

    // Met (a size the manifest does not state is not compared): written, the tag staged.
    let staged = match s.write_manifest(&[need(None)], write).await.unwrap() {
        Ok(staged) => staged,
        Err(unmet) => panic!("{unmet:?}"),
    };
    assert_eq!(staged.iter().map(|m| m.key()).collect::<Vec<_>>(), ["repos/app/_tags/v1"]);
    assert_eq!(s.get_meta("repos/app/_tags/v1").await.unwrap(), None);
    assert_eq!(s.read_small_blob(&digest, 1024).await.unwrap(), content);
    assert_eq!(s.get_meta(&record_key).await.unwrap().as_deref(), Some(&b"record"[..]));
    assert_eq!(s.get_meta(&link(digest.hex())).await.unwrap().as_deref(), Some(&b""[..]));
    for m in staged {
        s.publish_meta(m).await.unwrap();
    }
    s.sync_meta("repos/app/_tags/v1").await.unwrap();
    assert_eq!(s.get_meta("repos/app/_tags/v1").await.unwrap().as_deref(), Some(&b"tag"[..]));
    assert!(hidden_files(dir.path()).is_empty(), "{:?}", hidden_files(dir.path()));
}

#[tokio::test]
async fn a_batched_push_cut_anywhere_in_the_journal_reloads_with_a_whole_tag() {
    // The second push reaches the journal only (a crash right after its flushes); then the
    // store is reopened from every prefix of the journal, cut at a record boundary or inside
    // a record. The tag must name the old or the new manifest, and whichever it names must
    // be whole: content, record and blob link.
    let dir = tempfile::tempdir().unwrap();
    let repo = RepoName::parse("app").unwrap();
    let v1 = Reference::Tag(Tag::parse("v1").unwrap());
    let (old, new);
    {
        let s = Arc::new(FsStorage::open(dir.path(), true).unwrap());
        let reg = Registry::new(s.clone(), Policy::default());
        old = reg.put_manifest(&repo, &v1, INDEX, index(1), &[]).await.unwrap().digest;
        crash_after_flush(&s, true);
        new = reg.put_manifest(&repo, &v1, INDEX, index(2), &[]).await.unwrap().digest;
    }
    let journal = fs::read(dir.path().join(FILE_NAME)).unwrap();
    let valid = super::replay::parse(&journal).unwrap().valid;
    let mut cuts = vec![0];
    let mut at = 0;
    while at < valid {
        let len = u32::from_le_bytes(journal[at..at + 4].try_into().unwrap()) as usize + super::journal::HEADER;
        cuts.extend([at + len / 2, at + len]);
        at += len;
    }
    let mut served = HashMap::new();
    for cut in cuts {
        let copy = tempfile::tempdir().unwrap();
        copy_tree(dir.path(), copy.path());
        fs::write(copy.path().join(FILE_NAME), &journal[..cut]).unwrap();
        let s = Arc::new(FsStorage::open(copy.path(), true).unwrap());
        let reg = Registry::new(s.clone(), Policy::default());
        // Serving checks the content against its digest and needs the record.
        let m = reg.get_manifest(&repo, &v1).await.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert!(m.digest == old || m.digest == new, "cut at {cut}: {}", m.digest);
        assert_eq!(s.get_meta(&link(m.digest.hex())).await.unwrap().as_deref(), Some(&b""[..]), "cut at {cut}");
        *served.entry(m.digest == new).or_insert(0) += 1;
    }
    // Both outcomes happened: the cuts did reach before and after the new tag's record.
    assert!(served.get(&false).is_some_and(|n| *n > 0) && served.get(&true).is_some_and(|n| *n > 0), "{served:?}");
}

#[tokio::test]
async fn a_push_whose_journal_flush_fails_leaves_the_old_tag_and_no_staged_file() {
    let dir = tempfile::tempdir().unwrap();
    let repo = RepoName::parse("app").unwrap();
    let v1 = Reference::Tag(Tag::parse("v1").unwrap());
    let old;
    {
        let s = Arc::new(FsStorage::open(dir.path(), true).unwrap());
        let reg = Registry::new(s.clone(), Policy::default());
        old = reg.put_manifest(&repo, &v1, INDEX, index(1), &[]).await.unwrap().digest;
        s.journal().fail_flush.store(true, Ordering::Relaxed);
        let err = reg.put_manifest(&repo, &v1, INDEX, index(2), &[]).await.unwrap_err();
        assert!(err.message.contains("injected"), "{err}");
        s.journal().fail_flush.store(false, Ordering::Relaxed);
        assert_eq!(reg.get_manifest(&repo, &v1).await.unwrap().digest, old);
        assert!(hidden_files(dir.path()).is_empty(), "{:?}", hidden_files(dir.path()));
    }
    // The failed push's records may still take effect after a restart (as any write that
    // reported an I/O error), but its tag was never published.
    let reg = Registry::new(Arc::new(FsStorage::open(dir.path(), true).unwrap()), Policy::default());
    let m = reg.get_manifest(&repo, &v1).await.unwrap();
    assert_eq!((m.digest.clone(), Algorithm::Sha256.digest_of(&m.body)), (old.clone(), old));
}
