//! The write-ahead journal of the filesystem backend's metadata writes (fsync mode).
//!
//! Every small change (a manifest's content, a record, a link, a tag, a delete) is one
//! record appended to `<root>/journal`; it is durable once the journal is flushed, and the
//! file it describes is then written without any flush of its own. One `fdatasync` of the
//! journal is shared by every writer that appended before it started (a group commit), so
//! a manifest push costs a fraction of a flush instead of several file and directory
//! flushes. After a crash [`super::replay`] re-applies the records; a checkpoint flushes
//! the applied files (`syncfs`) and empties the journal once it grows past a limit.
//!
//! Record layout, little-endian: `len: u32`, `crc32(body): u32`, then `len` bytes of body:
//! `seq: u64`, `kind: u8`, `path_len: u16`, the path (relative to the data directory, `/`
//! separated), and the data of a put. Sequence numbers follow each other by one, so a
//! stale or torn tail never reads as a continuation.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::group_commit::{Flushed, Flushes, GroupCommit};

/// The journal's file name in the data directory. Nothing lists the data directory itself
/// (only `blobs/`, `uploads/` and `meta/` below it), so the name is never served.
pub(crate) const FILE_NAME: &str = "journal";

/// A journal past this size is checkpointed: small enough to replay in well under a
/// second, large enough that the `syncfs` it costs is rare (thousands of pushes apart).
pub(crate) const CHECKPOINT_BYTES: u64 = 16 << 20;

/// The file grows in zero-filled steps of this size. A record then overwrites bytes the
/// file already holds, so flushing it writes the data only: no filesystem journal commit
/// for a new file size, which would cost several more device writes per flush.
const GROW: u64 = 1 << 20;

/// Bytes before a record's body: its length and checksum.
pub(crate) const HEADER: usize = 8;
/// Bytes of a body before its path: sequence number, kind, path length.
pub(crate) const BODY_HEAD: usize = 11;

/// What a record does to its path.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op<'a> {
    /// Replace the file with these bytes.
    Put(&'a [u8]),
    /// Create an empty file when missing, else leave it.
    Touch,
    /// Remove the file.
    Delete,
    /// A blob published outside the journal (an upload, flushed on its own) is there: an
    /// earlier delete of it in the journal must not be replayed.
    Present,
}

impl Op<'_> {
    pub(crate) fn kind(&self) -> u8 {
        match self {
            Op::Put(_) => 1,
            Op::Touch => 2,
            Op::Delete => 3,
            Op::Present => 4,
        }
    }
}

/// Encodes one record.
pub(crate) fn encode(seq: u64, path: &str, op: Op<'_>) -> Vec<u8> {
    let data: &[u8] = match op {
        Op::Put(d) => d,
        _ => &[],
    };
    let path_len = u16::try_from(path.len()).expect("storage paths are short");
    let body_len = BODY_HEAD + path.len() + data.len();
    let mut rec = Vec::with_capacity(HEADER + body_len);
    rec.extend_from_slice(&u32::try_from(body_len).expect("journal records are small").to_le_bytes());
    rec.extend_from_slice(&[0; 4]);
    rec.extend_from_slice(&seq.to_le_bytes());
    rec.push(op.kind());
    rec.extend_from_slice(&path_len.to_le_bytes());
    rec.extend_from_slice(path.as_bytes());
    rec.extend_from_slice(data);
    let crc = crc32fast::hash(&rec[HEADER..]);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
    rec
}

/// Operations in flight hold the gate open; a checkpoint closes it and waits until none is
/// left, so it never empties the journal of a record whose file is not written yet.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    active: usize,
    closed: bool,
}

/// Proof that an operation is in flight: records may be appended while it lives.
pub(crate) struct Active<'a>(&'a Gate);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().expect("journal gate");
        s.active -= 1;
        if s.active == 0 {
            self.0.changed.notify_all();
        }
    }
}

/// The checkpoint's exclusive hold of the gate.
struct Closed<'a>(&'a Gate);

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.0.state.lock().expect("journal gate").closed = false;
        self.0.changed.notify_all();
    }
}

impl Gate {
    fn enter(&self) -> Active<'_> {
        let mut s = self.state.lock().expect("journal gate");
        while s.closed {
            s = self.changed.wait(s).expect("journal gate");
        }
        s.active += 1;
        Active(self)
    }

    fn try_enter(&self) -> Option<Active<'_>> {
        let mut s = self.state.lock().expect("journal gate");
        if s.closed {
            return None;
        }
        s.active += 1;
        Some(Active(self))
    }

    fn close(&self) -> Closed<'_> {
        let mut s = self.state.lock().expect("journal gate");
        while s.closed {
            s = self.changed.wait(s).expect("journal gate");
        }
        // Closed first: no new operation enters while the running ones finish.
        s.closed = true;
        while s.active > 0 {
            s = self.changed.wait(s).expect("journal gate");
        }
        Closed(self)
    }
}

struct LogState {
    /// Sequence number of the last record appended (0: none yet); the flushes count
    /// records as the changes they make durable.
    appended: u64,
    flushes: Flushes,
    /// Bytes of the file in use; the next record goes here.
    len: u64,
    /// Bytes of the file written (records, then zeros).
    allocated: u64,
    /// Bytes a successful flush covered.
    durable_len: u64,
    /// A copy of the bytes `durable_len..len`: after a failed flush the kernel may have
    /// dropped them as written, so the next flush writes them again from here.
    unsynced: Vec<u8>,
    rewrite: bool,
    /// Blobs a record in the journal deletes (see [`Journal::keep_blob`]).
    deleted_blobs: HashSet<String>,
}

/// What a flush writes: the file's length it makes durable, and the bytes to write again
/// first when the last flush failed (from where).
struct Pending {
    len: u64,
    rewrite: Option<(u64, Vec<u8>)>,
}

impl Flushed for LogState {
    type Pending = Pending;

    fn flushes(&mut self) -> &mut Flushes {
        &mut self.flushes
    }

    fn begin_flush(&mut self) -> (u64, Pending) {
        let rewrite = self.rewrite.then(|| (self.durable_len, self.unsynced.clone()));
        (self.appended, Pending { len: self.len, rewrite })
    }

    fn end_flush(&mut self, pending: Pending, ok: bool) {
        if ok {
            let done = (pending.len - self.durable_len) as usize;
            self.unsynced.drain(..done);
            self.durable_len = pending.len;
            self.rewrite = false;
        } else {
            self.rewrite = true;
        }
    }
}

pub(crate) struct Journal {
    root: PathBuf,
    file: File,
    log: GroupCommit<LogState>,
    gate: Gate,
    checkpoint_bytes: u64,
    checkpointing: AtomicBool,
    /// Tests: records are made durable but their files never written, as in a crash
    /// right after the flush.
    #[cfg(test)]
    pub(crate) crash_before_apply: AtomicBool,
    /// Tests: the next flushes fail.
    #[cfg(test)]
    pub(crate) fail_flush: AtomicBool,
}

impl Journal {
    /// Opens the (empty, already replayed) journal of `root` for appending.
    pub(crate) fn open(root: &Path, checkpoint_bytes: u64) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(root.join(FILE_NAME))?;
        // The replay left it empty; whatever it holds is overwritten from the start.
        let allocated = file.metadata()?.len();
        Ok(Journal {
            root: root.to_path_buf(),
            file,
            log: GroupCommit::new(LogState {
                appended: 0,
                flushes: Flushes::default(),
                len: 0,
                allocated,
                durable_len: 0,
                unsynced: Vec::new(),
                rewrite: false,
                deleted_blobs: HashSet::new(),
            }),
            gate: Gate::default(),
            checkpoint_bytes,
            checkpointing: AtomicBool::new(false),
            #[cfg(test)]
            crash_before_apply: AtomicBool::new(false),
            #[cfg(test)]
            fail_flush: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.log.lock()
    }

    /// Starts an operation; hold the result from the append until the file is written.
    pub(crate) fn enter(&self) -> Active<'_> {
        self.gate.enter()
    }

    /// [`Journal::enter`] without waiting: `None` while a checkpoint runs.
    pub(crate) fn try_enter(&self) -> Option<Active<'_>> {
        self.gate.try_enter()
    }

    /// Appends one record (not yet durable) and returns its sequence number.
    pub(crate) fn append(&self, _active: &Active<'_>, path: &str, op: Op<'_>) -> io::Result<u64> {
        let mut s = self.lock();
        self.append_locked(&mut s, path, op)
    }

    fn append_locked(&self, s: &mut LogState, path: &str, op: Op<'_>) -> io::Result<u64> {
        let seq = s.appended + 1;
        let rec = encode(seq, path, op);
        let end = s.len + rec.len() as u64;
        if end > s.allocated {
            let grown = end.div_ceil(GROW) * GROW;
            let zeros = vec![0u8; (grown - s.allocated) as usize];
            self.file.write_all_at(&zeros, s.allocated)?;
            s.allocated = grown;
        }
        // Written under the lock, so the file holds records in sequence order. A failed
        // write consumes nothing: the next record overwrites whatever part of it landed.
        self.file.write_all_at(&rec, s.len)?;
        s.len += rec.len() as u64;
        s.unsynced.extend_from_slice(&rec);
        s.appended = seq;
        if matches!(op, Op::Delete) && path.starts_with("blobs/") {
            s.deleted_blobs.insert(path.to_owned());
        }
        Ok(seq)
    }

    /// An upload published blob `path` outside the journal. When a record still in the
    /// journal deletes that blob, a replay would delete the new copy too: a `Present`
    /// record after the delete cancels it, and is made durable before this returns. Blobs
    /// never deleted since the last checkpoint (nearly all) cost nothing here.
    pub(crate) fn keep_blob(&self, path: &str) -> io::Result<()> {
        let active = self.enter();
        let seq = {
            let mut s = self.lock();
            if !s.deleted_blobs.contains(path) {
                return Ok(());
            }
            self.append_locked(&mut s, path, Op::Present)?
        };
        self.commit(seq)?;
        drop(active);
        Ok(())
    }

    /// Waits until record `seq` is durable, flushing the journal when no one else does:
    /// a flush covers every record appended before it started.
    pub(crate) fn commit(&self, seq: u64) -> io::Result<()> {
        self.log
            .wait_durable(seq, |pending| {
                self.flush(pending)
                    .inspect_err(|e| tracing::warn!(error = %e, "flushing the journal failed"))
            })
            .map_err(|f| f.to_error("flushing the journal"))
    }

    /// Writes again what a failed flush may have lost, then flushes the file.
    fn flush(&self, pending: &Pending) -> io::Result<()> {
        if let Some((at, bytes)) = &pending.rewrite {
            self.file.write_all_at(bytes, *at)?;
        }
        #[cfg(test)]
        if self.fail_flush.load(Ordering::Relaxed) {
            return Err(io::Error::other("injected flush failure"));
        }
        self.file.sync_data()
    }

    /// The sequence number of the last record appended.
    pub(crate) fn appended(&self) -> u64 {
        self.lock().appended
    }

    /// Waits, without holding a thread, for a flush someone else runs: true once record
    /// `seq` is durable, false when the caller has to [`Journal::commit`] it.
    pub(crate) async fn join_running_flush(&self, seq: u64) -> bool {
        self.log.join_running(seq).await
    }

    /// Checkpoints when the journal has grown past its limit and no other checkpoint runs.
    /// Call it with no [`Active`] held. A failure is only logged: the journal stays whole
    /// and the next operation tries again.
    pub(crate) fn maybe_checkpoint(&self) {
        if self.lock().len < self.checkpoint_bytes || self.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = self.checkpoint() {
            tracing::warn!(error = %e, "journal checkpoint failed");
        }
        self.checkpointing.store(false, Ordering::Release);
    }

    /// Makes every applied file durable, then empties the journal. Operations wait while it
    /// runs; those already in flight finish (and write their files) first.
    pub(crate) fn checkpoint(&self) -> io::Result<()> {
        let _closed = self.gate.close();
        // Every record appended so far has its file written now (its operation ended).
        sync_filesystem(&self.root)?;
        let mut s = self.log.wait_idle(self.lock());
        self.file.set_len(0)?;
        s.len = 0;
        s.allocated = 0;
        s.durable_len = 0;
        s.unsynced.clear();
        s.rewrite = false;
        // The shorter size must last before new records go in at offset 0, or a crash
        // could bring old records back behind them.
        self.file.sync_data()?;
        let appended = s.appended;
        s.flushes.made_durable(appended);
        s.deleted_blobs.clear();
        self.log.notify_ended();
        tracing::debug!("journal checkpointed");
        Ok(())
    }

    /// Whether files should be written after their records (always, outside tests).
    pub(crate) fn applies(&self) -> bool {
        #[cfg(test)]
        if self.crash_before_apply.load(Ordering::Relaxed) {
            return false;
        }
        true
    }

    /// Tests: flushes of the journal started so far.
    #[cfg(test)]
    pub(crate) fn flushes(&self) -> u64 {
        self.lock().flushes.attempts()
    }

    /// Bytes currently in the journal.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.lock().len
    }
}

/// Flushes everything pending on the filesystem holding `root`.
pub(crate) fn sync_filesystem(root: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = File::open(root)?;
    // SAFETY: a plain syscall on a valid descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_appends_share_flushes_and_land_in_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let j = Arc::new(Journal::open(dir.path(), CHECKPOINT_BYTES).unwrap());
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let j = j.clone();
                std::thread::spawn(move || {
                    let active = j.enter();
                    let seq = j.append(&active, &format!("meta/k{i}"), Op::Put(b"v")).unwrap();
                    j.commit(seq).unwrap();
                    seq
                })
            })
            .collect();
        let mut seqs: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        seqs.sort();
        assert_eq!(seqs, (1..=16).collect::<Vec<_>>());
        let s = j.lock();
        assert_eq!((s.flushes.synced(), s.durable_len, s.unsynced.len()), (16, s.len, 0));
        // The flushes were shared: fewer than one per record.
        assert!(s.flushes.attempts() < 16, "{} flushes for 16 records", s.flushes.attempts());
    }

    #[test]
    fn a_checkpoint_empties_the_journal_and_counts_everything_durable() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), 64).unwrap();
        let active = j.enter();
        j.append(&active, "meta/a", Op::Put(&[7; 100])).unwrap();
        drop(active);
        j.maybe_checkpoint();
        assert_eq!(j.len(), 0);
        assert_eq!(std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(), 0);
        assert_eq!(j.lock().flushes.synced(), 1);
        j.commit(j.appended()).unwrap();
    }
}
