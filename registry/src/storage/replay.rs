//! Recovery from the journal when a store is opened: the records of the valid prefix are
//! applied again, made durable, and the journal emptied.
//!
//! Only each path's final state is applied (a put, an empty file, an absence, or "leave
//! it"): replaying a path's records one by one would end in the same state, except that a
//! `Present` record must cancel an earlier delete of a blob whose new copy is already on
//! disk, and folding does exactly that. Every apply is idempotent (temp + rename, create,
//! unlink), so a crash during recovery only means recovering again.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::journal::{self, BODY_HEAD, HEADER};

/// A record read back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) path: String,
    pub(crate) kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Put(Vec<u8>),
    Touch,
    Delete,
    Present,
}

/// What the records read from a journal amount to.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) records: Vec<Record>,
    /// Bytes of the valid prefix.
    pub(crate) valid: usize,
    /// Bytes after the valid prefix that are not the journal's zero padding (a torn or
    /// corrupt tail), ignored.
    pub(crate) ignored: usize,
}

/// Reads the valid prefix of a journal: it ends at the first record that is cut short,
/// fails its checksum, or does not continue the sequence.
pub(crate) fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let mut records = Vec::new();
    let mut at = 0usize;
    let mut prev: Option<u64> = None;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let start = at + HEADER;
        if len < BODY_HEAD || bytes.len() - start < len {
            break;
        }
        let body = &bytes[start..start + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let seq = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
        if prev.is_some_and(|p| seq != p + 1) {
            break;
        }
        // From here the record is whole and ours: anything odd is a bug, not a torn tail.
        let path_len = u16::from_le_bytes(body[9..11].try_into().expect("2 bytes")) as usize;
        let Some(raw_path) = body.get(BODY_HEAD..BODY_HEAD + path_len) else {
            return Err(format!("journal record {seq}: path longer than the record"));
        };
        let path = std::str::from_utf8(raw_path)
            .ok()
            .filter(|p| safe_path(p))
            .ok_or_else(|| format!("journal record {seq}: invalid path {:?}", String::from_utf8_lossy(raw_path)))?;
        let data = &body[BODY_HEAD + path_len..];
        let kind = match body[8] {
            1 => Kind::Put(data.to_vec()),
            2 => Kind::Touch,
            3 => Kind::Delete,
            4 => Kind::Present,
            k => return Err(format!("journal record {seq}: unknown kind {k}")),
        };
        records.push(Record { seq, path: path.to_owned(), kind });
        prev = Some(seq);
        at = start + len;
    }
    let ignored = if bytes[at..].iter().all(|b| *b == 0) { 0 } else { bytes.len() - at };
    Ok(Parsed { records, valid: at, ignored })
}

/// A relative path below `blobs/` or `meta/` without empty, `.` or `..` components.
fn safe_path(p: &str) -> bool {
    let mut parts = p.split('/');
    matches!(parts.next(), Some("blobs" | "meta"))
        && p.split('/').count() >= 2
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

/// The state each path ends in, in order of each path's last record.
pub(crate) fn fold(records: Vec<Record>) -> Vec<(String, Kind)> {
    let mut last: HashMap<String, (u64, Kind)> = HashMap::new();
    for r in records {
        let prev = last.remove(&r.path).map(|(_, k)| k);
        let next = match (prev, r.kind) {
            // Touching keeps the bytes a put wrote.
            (Some(Kind::Put(b)), Kind::Touch) => Kind::Put(b),
            (_, k) => k,
        };
        last.insert(r.path, (r.seq, next));
    }
    let mut out: Vec<(u64, String, Kind)> = last.into_iter().map(|(p, (s, k))| (s, p, k)).collect();
    out.sort_by_key(|(s, _, _)| *s);
    out.into_iter().map(|(_, p, k)| (p, k)).collect()
}

/// Applies the journal of `root`, if any, and makes the result durable. With `keep` the
/// journal file stays (empty, flushed) for the next writer; without, it is removed. Returns
/// the number of records replayed.
pub(crate) fn recover(root: &Path, keep: bool) -> io::Result<usize> {
    let path = root.join(journal::FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    if bytes.is_empty() {
        if !keep {
            fs::remove_file(&path)?;
            File::open(root)?.sync_all()?;
        }
        return Ok(0);
    }
    let parsed = parse(&bytes).map_err(|m| io::Error::new(io::ErrorKind::InvalidData, m))?;
    if parsed.ignored > 0 {
        tracing::warn!(bytes = parsed.ignored, "ignoring a torn or corrupt journal tail");
    }
    let (count, bytes_valid) = (parsed.records.len(), parsed.valid);
    for (rel, kind) in fold(parsed.records) {
        apply(&root.join(&rel), &kind).map_err(|e| io::Error::new(e.kind(), format!("replaying {rel}: {e}")))?;
    }
    // One flush of the whole filesystem makes every replayed file and directory durable:
    // cheaper and simpler than tracking them, and it runs once per start.
    journal::sync_filesystem(root)?;
    // Only then may the journal go: emptied and flushed, so it cannot come back.
    if keep {
        let f = OpenOptions::new().write(true).open(&path)?;
        f.set_len(0)?;
        f.sync_all()?;
    } else {
        fs::remove_file(&path)?;
        File::open(root)?.sync_all()?;
    }
    tracing::info!(records = count, bytes = bytes_valid, "replayed the journal");
    Ok(count)
}

fn apply(path: &Path, kind: &Kind) -> io::Result<()> {
    let dir = path.parent().expect("journal paths have a parent");
    match kind {
        Kind::Put(data) => {
            fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
            let written = File::create(&tmp).and_then(|mut f| f.write_all(data)).and_then(|()| fs::rename(&tmp, path));
            if written.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            written
        }
        Kind::Touch => {
            fs::create_dir_all(dir)?;
            OpenOptions::new().write(true).create(true).truncate(false).open(path).map(drop)
        }
        Kind::Delete => match fs::remove_file(path) {
            Err(e) if !matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Err(e),
            _ => Ok(()),
        },
        Kind::Present => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::journal::{encode, Op};

    fn log(records: &[(u64, &str, Op<'_>)]) -> Vec<u8> {
        records.iter().flat_map(|(s, p, o)| encode(*s, p, *o)).collect()
    }

    #[test]
    fn the_valid_prefix_is_read_and_a_torn_tail_ignored() {
        let full = log(&[(1, "meta/a", Op::Put(b"one")), (2, "meta/b", Op::Touch), (3, "meta/a", Op::Delete)]);
        let all = parse(&full).unwrap();
        assert_eq!(all.records.len(), 3);
        assert_eq!((all.valid, all.ignored), (full.len(), 0));
        // Zero padding after the records is no torn tail.
        let mut padded = full.clone();
        padded.extend_from_slice(&[0; 100]);
        let p = parse(&padded).unwrap();
        assert_eq!((p.records.len(), p.valid, p.ignored), (3, full.len(), 0));
        assert_eq!(all.records[0].kind, Kind::Put(b"one".to_vec()));
        // Cut inside the last record: two remain.
        let cut = parse(&full[..full.len() - 3]).unwrap();
        assert_eq!(cut.valid, full.len() - encode(3, "meta/a", Op::Delete).len());
        assert_eq!(cut.records.len(), 2);
        assert!(cut.ignored > 0);
        // A flipped byte in the second record ends the log before it.
        let mut flipped = full.clone();
        let second = encode(1, "meta/a", Op::Put(b"one")).len();
        flipped[second + HEADER + 12] ^= 0x40;
        assert_eq!(parse(&flipped).unwrap().records.len(), 1);
        // A record that does not continue the sequence is a stale tail.
        let gap = log(&[(1, "meta/a", Op::Touch), (3, "meta/b", Op::Touch)]);
        assert_eq!(parse(&gap).unwrap().records.len(), 1);
    }

    #[test]
    fn a_whole_record_with_an_unsafe_path_is_refused() {
        assert!(parse(&encode(1, "meta/../../etc/passwd", Op::Touch)).is_err());
        assert!(parse(&encode(1, "uploads/x", Op::Touch)).is_err());
        assert!(parse(&encode(1, "meta", Op::Touch)).is_err());
    }

    #[test]
    fn folding_keeps_each_paths_last_state_and_a_present_cancels_a_delete() {
        let records = parse(&log(&[
            (1, "meta/t", Op::Put(b"old")),
            (2, "blobs/x", Op::Put(b"x")),
            (3, "meta/t", Op::Put(b"new")),
            (4, "blobs/x", Op::Delete),
            (5, "meta/l", Op::Put(b"kept")),
            (6, "meta/l", Op::Touch),
            (7, "blobs/y", Op::Delete),
            (8, "blobs/y", Op::Present),
        ]))
        .unwrap()
        .records;
        let folded = fold(records);
        assert_eq!(
            folded,
            vec![
                ("meta/t".to_owned(), Kind::Put(b"new".to_vec())),
                ("blobs/x".to_owned(), Kind::Delete),
                ("meta/l".to_owned(), Kind::Put(b"kept".to_vec())),
                ("blobs/y".to_owned(), Kind::Present),
            ]
        );
    }
}
