//! In-process reference figures: the cost of SHA-256 alone, the loopback TCP limit, and
//! what the benchmark's own HTTP client can do against a server that does nothing (so a
//! slow client is never mistaken for a slow registry).

use std::convert::Infallible;
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::{self, Conn, FileBody, ReqBody, RepeatBody};

/// Seconds of one core to SHA-256 one GiB (`sha2` 0.10, 1 MiB updates, after warm-up).
pub fn sha256_seconds_per_gib(total: usize) -> f64 {
    let mut buf = vec![0u8; 1 << 20];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut buf);
    let mut warm = Sha256::new();
    for _ in 0..32 {
        warm.update(&buf);
    }
    std::hint::black_box(warm.finalize());
    let rounds = (total >> 20).max(1);
    let start = Instant::now();
    let mut h = Sha256::new();
    for _ in 0..rounds {
        h.update(&buf);
    }
    std::hint::black_box(h.finalize());
    let secs = start.elapsed().as_secs_f64();
    secs * (1u64 << 30) as f64 / (rounds << 20) as f64
}

/// One TCP stream over loopback, `total` bytes in 1 MiB writes; MB/s (10^6 bytes).
pub async fn loopback_mb_s(total: u64) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let receiver = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let r = s.read(&mut buf).await?;
            if r == 0 {
                break;
            }
            n += r as u64;
        }
        anyhow::Ok(n)
    });
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await?;
    let buf = vec![0x5au8; 1 << 20];
    let mut sent = 0u64;
    while sent < total {
        let n = ((total - sent) as usize).min(buf.len());
        s.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    s.shutdown().await?;
    drop(s);
    let got = receiver.await??;
    let secs = start.elapsed().as_secs_f64();
    if got != total {
        bail!("loopback receiver got {got} of {total} bytes");
    }
    Ok(total as f64 / secs / 1e6)
}

/// A server that discards what it is sent (PUT) or sends `n` bytes (GET /<n>).
async fn null_server() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let resp: Response<ReqBody> = if req.method() == Method::GET {
                        let n: u64 = req.uri().path().trim_start_matches('/').parse().unwrap_or(0);
                        Response::builder()
                            .header(http::header::CONTENT_LENGTH, n)
                            .body(RepeatBody::new(n).boxed_unsync())
                            .unwrap()
                    } else {
                        let mut body = req.into_body();
                        while let Some(Ok(_)) = body.frame().await {}
                        Response::builder()
                            .status(StatusCode::CREATED)
                            .header(http::header::CONTENT_LENGTH, 0)
                            .body(client::empty())
                            .unwrap()
                    };
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

pub struct ClientSelfTest {
    pub push_mb_s: f64,
    pub pull_mb_s: f64,
}

/// The clients alone: the bench client pushing the blob file (same body code as the real
/// pushes) into a null sink in this process, and curl pulling `size` bytes from a null
/// source in this process.
pub async fn client_self_test(file: &Arc<File>, size: u64, curl: &Path) -> Result<ClientSelfTest> {
    let addr = null_server().await?;
    let mut c = Conn::connect(addr).await?;
    // Warm-up on a slice, then the measured run.
    let warm = size.min(64 << 20);
    client::curl_get(curl, &format!("http://{addr}/{warm}")).await?;
    for (len, measured) in [(warm, false), (size, true)] {
        let start = Instant::now();
        let body = FileBody::new(file.clone(), 0, len, Bytes::new()).boxed();
        let resp = c.request(Method::PUT, "/sink", &[], body).await?;
        client::drain(resp).await?;
        if measured {
            let push = len as f64 / start.elapsed().as_secs_f64() / 1e6;
            let (n, secs) = client::curl_get(curl, &format!("http://{addr}/{size}")).await?;
            if n != size {
                bail!("null source sent {n} of {size} bytes");
            }
            return Ok(ClientSelfTest {
                push_mb_s: push,
                pull_mb_s: size as f64 / secs / 1e6,
            });
        }
    }
    unreachable!()
}
