//! Memory stays flat whatever the blob size: a 2 GiB blob pushed (streamed, one PATCH)
//! and pulled back through `specreg serve` leaves the server under 64 MiB resident
//! (VmHWM, the peak over its whole life), and the bytes pulled hash to the digest pushed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use sha2::{Digest, Sha256};

const BLOB: u64 = 2 << 30;
const CHUNK: usize = 1 << 20;
const LIMIT_KIB: u64 = 64 * 1024;

struct Server {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_specreg"))
        .args(["serve", "--listen", "127.0.0.1:0", "--insecure-http", "--no-fsync", "--data"])
        .arg(dir.path().join("data"))
        .env("SPECREG_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start specreg serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line
        .split("listening on http://")
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    Server { child, addr, _dir: dir }
}

/// Reads a response head; returns the status and the headers (lower-cased names).
fn read_head(r: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let code: u16 = status.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    (code, headers)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn two_gib_blob_round_trip_keeps_the_server_small() {
    let server = start();
    let conn = TcpStream::connect(&server.addr).unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);

    write!(w, "POST /v2/mem/big/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
    let (code, h) = read_head(&mut r);
    assert_eq!(code, 202);
    let location = header(&h, "location").unwrap().to_owned();

    // One streamed PATCH of 2 GiB; the content varies per MiB so a mix-up shows.
    write!(w, "PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: {BLOB}\r\n\r\n").unwrap();
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; CHUNK];
    for i in 0..(BLOB / CHUNK as u64) {
        chunk[..8].copy_from_slice(&i.to_le_bytes());
        chunk[CHUNK - 1] = (i % 251) as u8;
        hasher.update(&chunk);
        w.write_all(&chunk).unwrap();
    }
    let (code, h) = read_head(&mut r);
    assert_eq!(code, 202, "PATCH answered {code}");
    assert_eq!(header(&h, "range"), Some(format!("0-{}", BLOB - 1).as_str()));
    let digest = format!("sha256:{:x}", hasher.finalize());

    let location = header(&h, "location").unwrap().to_owned();
    write!(w, "PUT {location}?digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
    let (code, _) = read_head(&mut r);
    assert_eq!(code, 201);

    write!(w, "GET /v2/mem/big/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (code, h) = read_head(&mut r);
    assert_eq!(code, 200);
    assert_eq!(header(&h, "content-length"), Some(BLOB.to_string().as_str()));
    let mut pulled = Sha256::new();
    let mut left = BLOB;
    while left > 0 {
        let n = r.read(&mut chunk[..(left.min(CHUNK as u64) as usize)]).unwrap();
        assert!(n > 0, "connection closed with {left} bytes to go");
        pulled.update(&chunk[..n]);
        left -= n as u64;
    }
    assert_eq!(format!("sha256:{:x}", pulled.finalize()), digest);

    let hwm = vm_hwm_kib(server.child.id());
    eprintln!("server peak resident memory: {hwm} KiB");
    assert!(hwm < LIMIT_KIB, "server peaked at {hwm} KiB, above {LIMIT_KIB} KiB");
}
