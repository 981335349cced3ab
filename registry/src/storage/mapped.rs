//! Read-only memory maps of windows of a published blob, handed to the socket as [`Bytes`]:
//! the kernel copies straight from the page cache into the socket, with no intermediate copy
//! into a buffer of ours (a `pread` costs one more copy of every byte served).
//!
//! Safe because a published blob never changes: it is written to a temporary file and
//! renamed into place, so its inode's bytes are fixed, and deleting it (garbage collection)
//! only unlinks the name while the mapping keeps the inode. The caller checks the file's
//! length first, so no window reaches past its end (which would fault with SIGBUS).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use bytes::Bytes;

/// One mapped window; unmapped when the last `Bytes` pointing into it is dropped.
struct Window {
    base: *mut libc::c_void,
    map_len: usize,
    /// Where the requested bytes start inside the (page-aligned) mapping.
    skip: usize,
    len: usize,
}

// SAFETY: the mapping is read-only and its memory is never written by anyone (the file
// is immutable), so sharing or moving it across threads is sound.
unsafe impl Send for Window {}
unsafe impl Sync for Window {}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `base..base+map_len` is a live PROT_READ mapping of file bytes that exist
        // (checked against the file length before mapping); `skip + len <= map_len`.
        unsafe { std::slice::from_raw_parts((self.base as *const u8).add(self.skip), self.len) }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region this window mapped, once.
        unsafe {
            libc::munmap(self.base, self.map_len);
        }
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// Maps `len` bytes of `file` at `pos`, prefaulted (the mapping is made on the blocking
/// reader thread, so the socket writer never waits on a page fault). The caller guarantees
/// `pos + len <= file length` and `len > 0`.
pub fn map_window(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    let aligned = pos - pos % page_size();
    let skip = (pos - aligned) as usize;
    let map_len = skip + len;
    // SAFETY: a fresh read-only shared mapping of a valid descriptor; the result is checked.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            file.as_raw_fd(),
            aligned as libc::off_t,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(Bytes::from_owner(Window { base, map_len, skip, len }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn windows_hold_the_file_bytes_at_any_offset() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let file = File::open(f.path()).unwrap();
        for (pos, len) in [(0usize, 1usize), (0, 20_000), (4095, 2), (4096, 4096), (5000, 15_000), (19_999, 1)] {
            let b = map_window(&file, pos as u64, len).unwrap();
            assert_eq!(&b[..], &data[pos..pos + len], "window {pos}+{len}");
        }
        // The mapping outlives the name: a deleted blob still serves what was mapped.
        let b = map_window(&file, 100, 1000).unwrap();
        let path = f.path().to_owned();
        drop(f);
        assert!(!path.exists());
        assert_eq!(&b[..], &data[100..1100]);
    }
}
