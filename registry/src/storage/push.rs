//! The filesystem backend's first phase of a manifest push as one blocking step: the
//! reference check, then the manifest's content, blob link and record under one journal
//! commit, and the staged tag values. One hop to a blocking thread per push instead of one
//! per stat and per file: on a fast disk the hops, not the flushes, were most of a push's
//! cost (thread switches, issue #3).

use std::io;
use std::path::PathBuf;

use bytes::Bytes;

use super::durable::Durability;
use super::fs::{create_empty, linked_size};
use super::journal::{Journal, Op};
use super::{RequiredBlob, Result, StagedMeta, StorageError, Unmet};

/// A file to write: where it is, and its name in the journal.
pub(super) struct Target {
    pub(super) path: PathBuf,
    pub(super) rel: String,
}

/// A [`super::ManifestWrite`] with its keys resolved to files.
pub(super) struct Plan {
    /// Each requirement with its link file and blob file.
    pub(super) required: Vec<(PathBuf, PathBuf, RequiredBlob)>,
    pub(super) content: Target,
    pub(super) bytes: Bytes,
    pub(super) link: Target,
    pub(super) record: Option<(Target, Vec<u8>)>,
    /// Tag values to stage: key, file, value.
    pub(super) tags: Vec<(String, PathBuf, Vec<u8>)>,
}

/// Runs the plan on the calling (blocking) thread; see [`super::Storage::write_manifest`].
pub(super) fn run(mut plan: Plan, disk: &Durability, journal: Option<&Journal>) -> Result<Result<Vec<StagedMeta>, Unmet>> {
    for (index, (link, blob, r)) in plan.required.iter().enumerate() {
        let found = linked_size(link, blob)?;
        if !r.satisfied_by(found) {
            return Ok(Err(Unmet { index, found }));
        }
    }
    let tags = std::mem::take(&mut plan.tags);
    let stage = || stage_tags(disk, tags, journal.is_some());
    let staged = match journal {
        Some(j) => write_journaled(j, disk, &plan, stage)?,
        None => {
            let staged = stage()?;
            write_direct(disk, &plan).map_err(|e| StorageError::io("writing manifest", e))?;
            staged
        }
    };
    Ok(Ok(staged))
}

/// Writes the tag values under hidden names, flushed in both modes as by `stage_meta`: with
/// the journal the tag's rename comes before its record is flushed, and must not leave an
/// empty file. Dropped on an error, the staged values remove their files.
fn stage_tags(disk: &Durability, tags: Vec<(String, PathBuf, Vec<u8>)>, journaled: bool) -> Result<Vec<StagedMeta>> {
    let mut staged = Vec::with_capacity(tags.len());
    for (key, path, value) in tags {
        let temp = disk.write_temp(&path, &value).map_err(|e| StorageError::io("staging metadata", e))?;
        // The journal records the value when it is published.
        let kept = if journaled { value } else { Vec::new() };
        staged.push(StagedMeta::new(&key, kept, Some(temp)));
    }
    Ok(staged)
}

/// Journal mode: the records of the new files, then the tag values staged (`stage`), then one
/// commit for all records and the files (unflushed, as single journaled writes are).
fn write_journaled(
    j: &Journal,
    disk: &Durability,
    p: &Plan,
    stage: impl FnOnce() -> Result<Vec<StagedMeta>>,
) -> Result<Vec<StagedMeta>> {
    let failed = |e| StorageError::io("writing manifest", e);
    // Existing content or link was written after its record was flushed (or flushed by an
    // upload): durable already.
    let new_content = !p.content.path.exists();
    let new_link = !p.link.path.exists();
    let active = j.enter();
    let mut last = None;
    if new_content {
        last = Some(j.append(&active, &p.content.rel, Op::Put(&p.bytes)).map_err(failed)?);
    }
    if new_link {
        last = Some(j.append(&active, &p.link.rel, Op::Touch).map_err(failed)?);
    }
    if let Some((t, value)) = &p.record {
        last = Some(j.append(&active, &t.rel, Op::Put(value)).map_err(failed)?);
    }
    // The tag values' own flush runs while the records wait: a concurrent push's journal
    // flush may cover them meanwhile, and the commit below then has nothing left to wait for.
    // Even when staging fails, the records appended are committed and their files written
    // (as every record's are), and only then is the failure reported.
    let staged = stage();
    // Records are durable in sequence order: waiting for the last covers all of them.
    if let Some(seq) = last {
        j.commit(seq).map_err(failed)?;
    }
    if j.applies() {
        if new_content {
            disk.write_unflushed(&p.content.path, &p.bytes).map_err(failed)?;
        }
        if new_link {
            create_empty(disk, &p.link.path).map_err(failed)?;
        }
        if let Some((t, value)) = &p.record {
            disk.write_unflushed(&t.path, value).map_err(failed)?;
        }
    }
    drop(active);
    j.maybe_checkpoint();
    staged
}

/// Without the journal: the single writes' own steps, one after the other.
fn write_direct(disk: &Durability, p: &Plan) -> io::Result<()> {
    let parent = |t: &Target| t.path.parent().expect("storage paths have a parent").to_path_buf();
    if p.content.path.exists() {
        // Maybe renamed by a concurrent writer that has not flushed it yet.
        disk.settle(&parent(&p.content))?;
    } else {
        disk.write_atomic(&p.content.path, &p.bytes)?;
    }
    if create_empty(disk, &p.link.path)? {
        disk.changed(&parent(&p.link))?;
    } else {
        disk.settle(&parent(&p.link))?;
    }
    if let Some((t, value)) = &p.record {
        disk.write_atomic(&t.path, value)?;
    }
    Ok(())
}
