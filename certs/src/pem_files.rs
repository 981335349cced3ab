//! PEM files on disk: durable, atomic writes with the right permissions, and reads that
//! tell "absent" apart from "unreadable".
//!
//! A write goes to a fresh temporary file in the target's directory, is flushed with
//! `fsync`, renamed over the target, and the directory is `fsync`ed so the rename itself
//! survives a crash. Readers therefore see either the old file or the complete new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Permission bits of private key files.
pub const KEY_FILE_MODE: u32 = 0o600;
/// Permission bits of certificate files.
pub const CERT_FILE_MODE: u32 = 0o644;
/// Permission bits of a certificate directory this crate creates.
pub const DIR_MODE: u32 = 0o700;

/// Writes a private key: mode 0600, atomically and durably.
pub fn write_private_key(path: &Path, pem: &str) -> Result<()> {
    write_atomically(path, pem.as_bytes(), KEY_FILE_MODE)
}

/// Writes a certificate: mode 0644, atomically and durably.
pub fn write_certificate(path: &Path, pem: &str) -> Result<()> {
    write_atomically(path, pem.as_bytes(), CERT_FILE_MODE)
}

/// Writes any other secret (a password file, connection info holding a password):
/// mode 0600, atomically and durably.
pub fn write_secret(path: &Path, data: &[u8]) -> Result<()> {
    write_atomically(path, data, KEY_FILE_MODE)
}

/// Reads a UTF-8 file, returning `Ok(None)` if it does not exist.
pub fn read_if_exists(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

/// Creates `dir` (mode 0700) and its parents if missing. An existing directory is left as is.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder
        .create(dir)
        .map_err(|e| Error::io("creating directory", dir, e))
}

/// The permission bits of `path` (unix only).
#[cfg(unix)]
pub fn file_mode(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = fs::metadata(path).map_err(|e| Error::io("reading metadata of", path, e))?;
    Ok(metadata.permissions().mode() & 0o777)
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = parent_dir(path);
    let (temp_path, mut file) = create_temp_file(path, mode)?;
    let result = fill_and_rename(&mut file, contents, mode, &temp_path, path);
    if result.is_err() {
        // Best effort: the temporary file is useless now, and the original error matters more.
        let _ = fs::remove_file(&temp_path);
        return result;
    }
    sync_dir(&dir)
}

fn fill_and_rename(
    file: &mut File,
    contents: &[u8],
    mode: u32,
    temp_path: &Path,
    path: &Path,
) -> Result<()> {
    // Set the mode explicitly: the mode given at creation is reduced by the umask.
    set_mode(file, mode).map_err(|e| Error::io("setting permissions of", temp_path, e))?;
    file.write_all(contents)
        .map_err(|e| Error::io("writing", temp_path, e))?;
    file.sync_all()
        .map_err(|e| Error::io("syncing", temp_path, e))?;
    fs::rename(temp_path, path).map_err(|e| Error::io("renaming into place", path, e))
}

/// Creates a new, empty temporary file next to `path` that no other writer can share.
fn create_temp_file(path: &Path, mode: u32) -> Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = parent_dir(path);
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pem".to_string());
    let pid = std::process::id();
    let mut attempts = 0;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp_path = dir.join(format!(".{base}.tmp-{pid}-{n}"));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        match options.open(&temp_path) {
            Ok(file) => return Ok((temp_path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => {
                attempts += 1;
            }
            Err(e) => return Err(Error::io("creating temporary file", temp_path, e)),
        }
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(unix)]
fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_file: &File, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    let handle = File::open(dir).map_err(|e| Error::io("opening directory", dir, e))?;
    handle
        .sync_all()
        .map_err(|e| Error::io("syncing directory", dir, e))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn key_files_are_0600_and_cert_files_0644() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("x.key");
        let cert = dir.path().join("x.crt");
        write_private_key(&key, "secret").unwrap();
        write_certificate(&cert, "public").unwrap();
        assert_eq!(file_mode(&key).unwrap(), 0o600);
        assert_eq!(file_mode(&cert).unwrap(), 0o644);
        assert_eq!(fs::read_to_string(&key).unwrap(), "secret");
        assert_eq!(fs::read_to_string(&cert).unwrap(), "public");
    }

    #[test]
    fn overwriting_replaces_content_fixes_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("x.key");
        fs::write(&key, "old and world readable").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        }
        write_private_key(&key, "new").unwrap();
        assert_eq!(fs::read_to_string(&key).unwrap(), "new");
        assert_eq!(file_mode(&key).unwrap(), 0o600);
        assert_eq!(entries(dir.path()), vec!["x.key".to_string()]);
    }

    #[test]
    fn failed_write_reports_the_path_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails.
        let target = dir.path().join("taken");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), "x").unwrap();
        let err = write_certificate(&target, "data").unwrap_err();
        match err {
            Error::Io { path, .. } => assert_eq!(path, target),
            other => panic!("unexpected error {other}"),
        }
        assert_eq!(entries(dir.path()), vec!["taken".to_string()]);
    }

    #[test]
    fn writing_into_a_missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_certificate(&dir.path().join("nope/x.crt"), "data").unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }

    #[test]
    fn read_if_exists_tells_absent_from_present() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.crt");
        assert_eq!(read_if_exists(&path).unwrap(), None);
        write_certificate(&path, "text").unwrap();
        assert_eq!(read_if_exists(&path).unwrap().as_deref(), Some("text"));
        // A directory where a file is expected is an error, not "absent".
        assert!(read_if_exists(dir.path()).is_err());
    }

    #[test]
    fn ensure_dir_creates_private_directories_and_accepts_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        ensure_dir(&nested).unwrap();
        assert_eq!(file_mode(&nested).unwrap(), 0o700);
        ensure_dir(&nested).unwrap();
    }
}
