//! A 64 MiB blob through the proxy, from the buildset registry and from the upstream, with
//! the process's peak memory watched. Its own test binary, so no other test's allocations
//! share the peak.

mod common;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use reqwest::StatusCode;
use sha2::Digest as _;

const MIB: usize = 1024 * 1024;
const SIZE: usize = 64 * MIB;

/// 64 one-MiB chunks of a pattern seeded by `seed`, and their digest.
fn big_blob(seed: u8) -> (Bytes, String) {
    let chunk: Bytes = (0..MIB).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect::<Vec<u8>>().into();
    let mut h = sha2::Sha256::new();
    for _ in 0..SIZE / MIB {
        h.update(&chunk);
    }
    let digest = format!("sha256:{}", h.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>());
    (chunk, digest)
}

async fn push_streamed(reg: &Registry, client: &reqwest::Client, name: &str, chunk: Bytes, digest: &str) {
    let stream = futures_util::stream::iter((0..SIZE / MIB).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let r = reg
        .req(client, reqwest::Method::POST, &format!("/v2/{name}/blobs/uploads/?digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
}

/// (current resident set, peak resident set) in KiB, from /proc/self/status.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak resident set size to the current one (Linux 4.0+).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_blob_streams_with_flat_memory() {
    let buildset = Registry::start(true, true).await;
    let upstream = Registry::start(true, false).await;
    let (bs_ca, up_ca) = (buildset.ca_pem().unwrap(), upstream.ca_pem().unwrap());
    let c = client(&[&bs_ca, &up_ca]);
    let (bs_chunk, bs_digest) = big_blob(1);
    let (up_chunk, up_digest) = big_blob(2);
    push_streamed(&buildset, &c, "library/big", bs_chunk, &bs_digest).await;
    push_streamed(&upstream, &c, "library/huge", up_chunk, &up_digest).await;
    // The proxy streams the buildset registry's blob itself here (no redirect), so both
    // paths through it are measured.
    let mut cfg = proxy_config(&buildset, Some(&upstream));
    cfg.blob_redirects = None;
    let proxy = start_proxy(cfg).await;

    for path in [format!("/v2/library/big/blobs/{bs_digest}"), format!("/v2/library/huge/blobs/{up_digest}")] {
        let can_reset = reset_peak();
        let (before, _) = rss_kib();
        let r = c.get(proxy.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.content_length(), Some(SIZE as u64));
        let mut h = sha2::Sha256::new();
        let mut n = 0usize;
        let mut body = r.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            n += chunk.len();
            h.update(&chunk);
        }
        let got = format!("sha256:{}", h.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>());
        assert_eq!(n, SIZE);
        assert!(path.ends_with(&got), "{path}: got {got}");
        let (_, peak) = rss_kib();
        let growth_mib = peak.saturating_sub(before) / 1024;
        eprintln!("{path}: resident {} MiB before, peak {} MiB during the pull", before / 1024, peak / 1024);
        if can_reset {
            // Holding the blob anywhere (proxy, registries or client) would take 64 MiB.
            assert!(growth_mib < 32, "the peak grew by {growth_mib} MiB while streaming 64 MiB");
        }
    }

    // The instrument works: a client that does hold the whole blob shows in the peak.
    if reset_peak() {
        let (before, _) = rss_kib();
        let body = c.get(proxy.url(&format!("/v2/library/big/blobs/{bs_digest}"))).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(body.len(), SIZE);
        let (_, peak) = rss_kib();
        assert!(peak.saturating_sub(before) / 1024 >= 60, "holding 64 MiB did not show: {before} -> {peak} KiB");
    }
    proxy.stop().await;
}
