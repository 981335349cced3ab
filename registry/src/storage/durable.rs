//! Making the filesystem backend's writes last, at as few flushes as correctness allows.
//!
//! A new name lasts only once its directory is fsynced. Many requests rename into the same
//! few directories (a repository's tags, records, links), so directory fsyncs go through a
//! [group commit](super::group_commit): a caller notes its change after its rename, then
//! waits until one fsync that started after the change has finished. A directory with no
//! unsynced change costs nothing to settle.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::group_commit::{Flushed, Flushes, GroupCommit};

/// Per-directory progress: `noted` counts the changes made, the flushes how many of them
/// an fsync has covered.
#[derive(Default)]
struct DirState {
    noted: u64,
    flushes: Flushes,
}

impl DirState {
    /// No flush runs and every change noted is durable.
    fn idle(&self) -> bool {
        !self.flushes.running() && self.flushes.synced() >= self.noted
    }
}

impl Flushed for DirState {
    type Pending = ();

    fn flushes(&mut self) -> &mut Flushes {
        &mut self.flushes
    }

    fn begin_flush(&mut self) -> (u64, ()) {
        (self.noted, ())
    }

    fn end_flush(&mut self, (): (), _ok: bool) {}
}

type Dir = GroupCommit<DirState>;

/// Write durability for one data directory; with `fsync` off every flush is skipped (the
/// rename-after-complete-write rule still holds, so no name shows partial bytes).
pub(crate) struct Durability {
    fsync: bool,
    dirs: Mutex<HashMap<PathBuf, Arc<Dir>>>,
}

impl Durability {
    pub(crate) fn new(fsync: bool) -> Self {
        Durability {
            fsync,
            dirs: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.fsync
    }

    /// Flushes a file's bytes (and its size), not its name.
    pub(crate) fn data(&self, f: &File) -> io::Result<()> {
        if self.fsync {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Records that `dir` changed (call after the rename or create) and waits until the
    /// change is on disk.
    pub(crate) fn changed(&self, dir: &Path) -> io::Result<()> {
        if !self.fsync {
            return Ok(());
        }
        // The entry is held from the change to the wait: were it dropped in between (as
        // idle, after someone else's fsync), the wait would find a fresh entry that never
        // counts up to `mark`.
        let d = self.dir(dir);
        let mark = {
            let mut s = d.lock();
            s.noted += 1;
            s.noted
        };
        self.wait_synced(dir, d, mark)
    }

    /// Records that `dir` changed without waiting; [`Durability::settle`] waits later.
    pub(crate) fn note(&self, dir: &Path) {
        if self.fsync {
            let d = self.dir(dir);
            d.lock().noted += 1;
        }
    }

    /// Waits until every change noted in `dir` so far is on disk: a name this process
    /// made visible (maybe for another request) is durable when this returns.
    pub(crate) fn settle(&self, dir: &Path) -> io::Result<()> {
        if !self.fsync {
            return Ok(());
        }
        // An absent entry means nothing is pending: entries go only once fully synced.
        let Some(d) = self.dirs.lock().expect("dir sync map").get(dir).cloned() else {
            return Ok(());
        };
        let mark = d.lock().noted;
        self.wait_synced(dir, d, mark)
    }

    fn dir(&self, dir: &Path) -> Arc<Dir> {
        self.dirs
            .lock()
            .expect("dir sync map")
            .entry(dir.to_path_buf())
            .or_default()
            .clone()
    }

    /// Waits until an fsync covering change number `mark` finished, running it when no
    /// one else does.
    fn wait_synced(&self, path: &Path, d: Arc<Dir>, mark: u64) -> io::Result<()> {
        let result = d
            .wait_durable(mark, |()| File::open(path).and_then(|f| f.sync_all()))
            .map_err(|f| f.to_error(&format!("syncing {}", path.display())));
        let idle = d.lock().idle();
        drop(d);
        if idle {
            self.forget_if_idle(path);
        }
        result
    }

    /// Drops a directory's entry once nothing is pending and no one holds it, so the map
    /// stays as small as the set of directories being written.
    fn forget_if_idle(&self, path: &Path) {
        let mut dirs = self.dirs.lock().expect("dir sync map");
        if let Some(d) = dirs.get(path) {
            // The map holds the only reference: no caller can note a change meanwhile.
            if Arc::strong_count(d) == 1 && d.lock().idle() {
                dirs.remove(path);
            }
        }
    }

    /// Creates `dir` and its missing parents; each new directory is made durable in its
    /// parent, since a file renamed into a directory that vanishes in a crash is lost too.
    pub(crate) fn create_dir(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let parent = dir.parent().expect("storage directories have a parent");
        self.create_dir(parent)?;
        match fs::create_dir(dir) {
            Ok(()) => self.changed(parent),
            // Made by a concurrent writer, who may not have synced it yet.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.settle(parent),
            Err(e) => Err(e),
        }
    }

    /// Writes `data` to a new hidden file next to `path`, flushed; the caller renames it.
    pub(crate) fn write_temp(&self, path: &Path, data: &[u8]) -> io::Result<PathBuf> {
        self.temp_file(path, data, self.fsync)
    }

    /// [`Durability::write_temp`] without flushing the bytes (a journal record holds them);
    /// a new directory is still made durable, since uploads rename into existing ones.
    pub(crate) fn write_temp_unflushed(&self, path: &Path, data: &[u8]) -> io::Result<PathBuf> {
        self.temp_file(path, data, false)
    }

    /// Replaces `path` with `data` by temp + rename, flushing nothing but new directories.
    pub(crate) fn write_unflushed(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let tmp = self.write_temp_unflushed(path, data)?;
        fs::rename(&tmp, path).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }

    fn temp_file(&self, path: &Path, data: &[u8], flush: bool) -> io::Result<PathBuf> {
        let dir = path.parent().expect("storage paths have a parent");
        self.create_dir(dir)?;
        let tmp = dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(data)?;
            if flush {
                f.sync_data()?;
            }
            Ok(())
        });
        match written {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Replaces `path` with `data` atomically and durably: bytes flushed before the rename
    /// makes them visible, the rename flushed before this returns.
    pub(crate) fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let tmp = self.write_temp(path, data)?;
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.changed(path.parent().expect("storage paths have a parent"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_changes_share_fsyncs_and_all_return() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Arc::new(Durability::new(true));
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (d, root) = (d.clone(), tmp.path().to_path_buf());
                std::thread::spawn(move || d.write_atomic(&root.join("sub").join(format!("f{i}")), b"x"))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        for i in 0..16 {
            assert_eq!(fs::read(tmp.path().join("sub").join(format!("f{i}"))).unwrap(), b"x");
        }
        // Nothing pending: every entry was dropped again.
        assert!(d.dirs.lock().unwrap().is_empty());
    }

    #[test]
    fn racing_changes_and_settles_on_one_directory_all_return() {
        // A wait that lost its directory entry to another thread's clean-up used to fsync
        // forever; every call here must return, and soon.
        let tmp = tempfile::tempdir().unwrap();
        let d = Arc::new(Durability::new(true));
        let dir = tmp.path().join("tags");
        fs::create_dir(&dir).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for t in 0..8 {
            let (d, dir, tx) = (d.clone(), dir.clone(), tx.clone());
            std::thread::spawn(move || {
                for i in 0..150 {
                    let f = dir.join(format!("t{t}-{i}"));
                    File::create(&f).unwrap();
                    match i % 3 {
                        0 => d.changed(&dir).unwrap(),
                        1 => {
                            d.note(&dir);
                            d.settle(&dir).unwrap();
                        }
                        _ => d.settle(&dir).unwrap(),
                    }
                }
                tx.send(()).unwrap();
            });
        }
        for _ in 0..8 {
            rx.recv_timeout(std::time::Duration::from_secs(120))
                .expect("a writer is stuck waiting for a directory fsync");
        }
        assert!(d.dirs.lock().unwrap().is_empty());
    }

    #[test]
    fn a_failed_fsync_is_reported_to_the_change_it_covered() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Durability::new(true);
        let gone = tmp.path().join("gone");
        // The directory does not exist: opening it for the fsync fails.
        let err = d.changed(&gone).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
