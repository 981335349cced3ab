//! Reading originals and writing files atomically (temp file in the same directory, fsync,
//! rename, fsync of the directory), keeping mode and owner.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{fchown, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::ConfigureError;

/// The state of a file before we touched it.
#[derive(Clone, PartialEq, Eq)]
pub enum Original {
    /// The file did not exist.
    Absent,
    /// The file existed with these bytes, mode (permission bits) and owner.
    Present {
        bytes: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

impl Original {
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Original::Absent => None,
            Original::Present { bytes, .. } => Some(bytes),
        }
    }
}

impl std::fmt::Debug for Original {
    // Originals can hold secrets (credential store, config.json): never print the bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Original::Absent => f.write_str("Absent"),
            Original::Present { bytes, mode, uid, gid } => write!(
                f,
                "Present {{ {} bytes, mode {:o}, owner {}:{} }}",
                bytes.len(),
                mode,
                uid,
                gid
            ),
        }
    }
}

/// Reads `path` as it is now. A symbolic link is refused: replacing it by rename would turn it
/// into a regular file, and undo could then not restore the link.
pub fn read_original(path: &Path) -> Result<Original, ConfigureError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Original::Absent),
        Err(e) => return Err(ConfigureError::io(path, "inspect", e)),
    };
    if meta.file_type().is_symlink() {
        return Err(ConfigureError::malformed(
            path,
            "is a symbolic link; specreg edits regular files only (point the client at the real file or replace the link)",
        ));
    }
    if !meta.is_file() {
        return Err(ConfigureError::malformed(path, "is not a regular file"));
    }
    let bytes = fs::read(path).map_err(|e| ConfigureError::io(path, "read", e))?;
    Ok(Original::Present {
        bytes,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// Writes `bytes` to `path` atomically with the given mode and owner (`None`: leave the owner of
/// the new file to the process). Falls back to an in-place rewrite when the rename is refused
/// because the target is a mount point (a bind-mounted `/etc/hosts` answers EBUSY).
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<(), ConfigureError> {
    let dir = parent_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.specreg-tmp.{}", std::process::id()));
    let written = (|| -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            let meta = f.metadata()?;
            if meta.uid() != uid || meta.gid() != gid {
                fchown(&f, Some(uid), Some(gid))?;
            }
        }
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        if e.kind() == io::ErrorKind::PermissionDenied {
            // The directory is not writable for us (a credential helper running as the job user
            // under a root-owned state dir): rewrite the file itself if we may.
            if fs::metadata(path).is_ok() {
                return write_in_place(path, bytes);
            }
        }
        return Err(ConfigureError::io(&tmp, "write temporary file", e));
    }
    match fs::rename(&tmp, path) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) || e.raw_os_error() == Some(nix::libc::EXDEV) => {
            let _ = fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), "target is a mount point; rewriting it in place");
            write_in_place(path, bytes)?;
            set_mode_owner(path, mode, owner)?;
            return Ok(());
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(ConfigureError::io(path, "rename temporary file onto", e));
        }
    }
    sync_dir(&dir);
    Ok(())
}

fn write_in_place(path: &Path, bytes: &[u8]) -> Result<(), ConfigureError> {
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| ConfigureError::io(path, "open for rewrite", e))?;
    f.write_all(bytes).map_err(|e| ConfigureError::io(path, "rewrite", e))?;
    f.sync_all().map_err(|e| ConfigureError::io(path, "fsync", e))
}

fn set_mode_owner(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), ConfigureError> {
    let meta = fs::metadata(path).map_err(|e| ConfigureError::io(path, "inspect", e))?;
    if meta.mode() & 0o7777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| ConfigureError::io(path, "set mode of", e))?;
    }
    if let Some((uid, gid)) = owner {
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| ConfigureError::io(path, "set owner of", e))?;
        }
    }
    Ok(())
}

/// Removes a file, syncing its directory. A file already gone is fine.
pub fn remove_file(path: &Path) -> Result<bool, ConfigureError> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(&parent_of(path));
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ConfigureError::io(path, "remove", e)),
    }
}

/// The ancestors of `path` (itself excluded) that do not exist yet, outermost first.
pub fn missing_dirs(path: &Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut cur = path.parent();
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || fs::symlink_metadata(d).is_ok() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    missing.reverse();
    missing
}

/// Creates one directory (its parent must exist) with `mode` and `owner`.
pub fn create_dir(dir: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), ConfigureError> {
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(ConfigureError::io(dir, "create directory", e)),
    }
    set_mode_owner(dir, mode, owner)?;
    sync_dir(&parent_of(dir));
    Ok(())
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Owner of an existing path, for files created on someone's behalf (the job user's home).
pub fn owner_of(path: &Path) -> Result<(u32, u32), ConfigureError> {
    let meta = fs::metadata(path).map_err(|e| ConfigureError::io(path, "inspect", e))?;
    Ok((meta.uid(), meta.gid()))
}
