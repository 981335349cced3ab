//! A lean keep-alive load generator for requests `wrk` cannot make: wrk 4.1 waits for a
//! body after a HEAD response that carries `Content-Length` (wg/wrk#198), so every HEAD
//! times out. This one writes a pre-formatted request and parses only the status line and
//! `Content-Length`, like wrk, from as many connections as asked, for a fixed time, and
//! reports the same figures (requests/s, p50, p99).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wrk::WrkResult;

fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Status and Content-Length of a response head.
fn parse_head(head: &[u8]) -> Result<(u16, Option<usize>)> {
    let text = std::str::from_utf8(head).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut len = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = Some(v.trim().parse().context("bad Content-Length")?);
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                bail!("chunked responses are not supported by the load generator");
            }
        }
    }
    Ok((status, len))
}

struct ConnStats {
    latencies_us: Vec<u32>,
    non_2xx: u64,
}

async fn one_connection(
    mut s: TcpStream,
    request: std::sync::Arc<Vec<u8>>,
    head: bool,
    deadline: Instant,
) -> Result<ConnStats> {
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut stats = ConnStats {
        latencies_us: Vec::with_capacity(1 << 16),
        non_2xx: 0,
    };
    loop {
        let t0 = Instant::now();
        if t0 >= deadline {
            return Ok(stats);
        }
        s.write_all(&request).await?;
        let head_len = loop {
            if let Some(n) = find_header_end(&buf) {
                break n;
            }
            if s.read_buf(&mut buf).await? == 0 {
                bail!("server closed the connection");
            }
        };
        let (status, len) = parse_head(&buf[..head_len])?;
        let body = if head { 0 } else { len.context("response without Content-Length")? };
        while buf.len() < head_len + body {
            if s.read_buf(&mut buf).await? == 0 {
                bail!("server closed the connection mid-body");
            }
        }
        buf.advance(head_len + body);
        stats.latencies_us.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
        if !(200..300).contains(&status) {
            stats.non_2xx += 1;
        }
    }
}

fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// `method path` with an `Accept` header from `connections` keep-alive connections for
/// `duration`.
pub async fn run(
    addr: SocketAddr,
    method: &str,
    path: &str,
    accept: &str,
    connections: u32,
    duration: Duration,
) -> Result<WrkResult> {
    let request = std::sync::Arc::new(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n").into_bytes(),
    );
    let head = method == "HEAD";
    let mut streams = Vec::new();
    for _ in 0..connections {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        streams.push(s);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(one_connection(s, request.clone(), head, deadline)))
        .collect();
    let mut all = Vec::new();
    let mut non_2xx = 0;
    for t in tasks {
        let st = t.await??;
        all.extend_from_slice(&st.latencies_us);
        non_2xx += st.non_2xx;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok(WrkResult {
        requests_per_sec: all.len() as f64 / elapsed,
        p50_ms: percentile_ms(&all, 50.0),
        p99_ms: percentile_ms(&all, 99.0),
        requests: all.len() as u64,
        non_2xx,
        socket_errors: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_percentiles() {
        let (s, l) = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 527\r\nX: y\r\n\r\n").unwrap();
        assert_eq!((s, l), (200, Some(527)));
        assert_eq!(find_header_end(b"HTTP/1.1 200 OK\r\n\r\nbody"), Some(19));
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile_ms(&v, 50.0), 0.050);
        assert_eq!(percentile_ms(&v, 99.0), 0.099);
    }
}
