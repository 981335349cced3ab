//! One process at a time owns a data directory: `serve` holds the lock while it runs, and
//! an offline `prune` refuses to start beside it (its in-memory view of tags would go stale
//! and it would not see what the server's clients are about to use).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Held until dropped (the kernel drops it with the process, whatever way it ends).
pub struct DataLock {
    _lock: Flock<File>,
}

pub fn lock_path(data: &Path) -> PathBuf {
    data.join("specreg.lock")
}

impl DataLock {
    /// Takes the lock of `data` for `what` (written into the file for the error message
    /// of the next taker), or fails naming the holder.
    pub fn acquire(data: &Path, what: &str) -> anyhow::Result<DataLock> {
        let path = lock_path(data);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                file.read_to_string(&mut holder).ok();
                let holder = holder.trim();
                let holder = if holder.is_empty() { "another process" } else { holder };
                bail!("{} is in use by {holder} (lock file {})", data.display(), path.display());
            }
            Err((_, e)) => bail!("locking {}: {e}", path.display()),
        };
        // Only the holder writes the file, so it names who holds it.
        lock.set_len(0).ok();
        lock.rewind().ok();
        write!(lock, "specreg {what} (pid {})", std::process::id()).ok();
        Ok(DataLock { _lock: lock })
    }
}
