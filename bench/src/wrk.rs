//! Fixed-duration keep-alive load with `wrk` (Debian package `wrk`), and the parsing of its
//! `--latency` report.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::client::MANIFEST_ACCEPT;

#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub non_2xx: u64,
    pub socket_errors: u64,
}

impl WrkResult {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "requests_per_sec": self.requests_per_sec,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "requests": self.requests,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
        })
    }
}

/// `123.45us`, `1.20ms`, `2.00s`, `1.00m` in milliseconds.
fn parse_duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        "h" => v * 3_600_000.0,
        _ => return None,
    })
}

pub fn parse(output: &str) -> Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut have_rps = false;
    for line in output.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.requests_per_sec = v.trim().parse().context("Requests/sec")?;
            have_rps = true;
        } else if let Some(v) = t.strip_prefix("50%") {
            r.p50_ms = parse_duration_ms(v).ok_or_else(|| anyhow!("bad 50% line {t:?}"))?;
        } else if let Some(v) = t.strip_prefix("99%") {
            r.p99_ms = parse_duration_ms(v).ok_or_else(|| anyhow!("bad 99% line {t:?}"))?;
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // connect 0, read 0, write 0, timeout 0
            r.socket_errors = v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1))
                .filter_map(|n| n.parse::<u64>().ok())
                .sum();
        } else if t.contains(" requests in ") {
            r.requests = t.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    if !have_rps {
        bail!("no Requests/sec line in wrk output:\n{output}");
    }
    Ok(r)
}

/// Runs `wrk -t2 -cN -dD --latency -s script URL` with `method` and an `Accept` header.
pub fn run(wrk: &Path, script_dir: &Path, url: &str, method: &str, connections: u32, duration: Duration) -> Result<WrkResult> {
    let script = script_dir.join(format!("{}.lua", method.to_lowercase()));
    std::fs::write(
        &script,
        format!("wrk.method = \"{method}\"\nwrk.headers[\"Accept\"] = \"{MANIFEST_ACCEPT}\"\n"),
    )?;
    let out = Command::new(wrk)
        .arg("-t2")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("5s")
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(url)
        .output()
        .with_context(|| format!("running {}", wrk.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed ({}): {}{}", out.status, stdout, String::from_utf8_lossy(&out.stderr));
    }
    parse(&stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_report() {
        let out = "Running 2s test @ http://127.0.0.1:5000/v2/x/manifests/t0
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   241.52us  180.10us   7.88ms   93.11%
    Req/Sec    33.93k     2.11k   37.17k    70.00%
  Latency Distribution
     50%  210.00us
     75%  256.00us
     90%  324.00us
     99%    1.02ms
  135012 requests in 2.00s, 46.87MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  67501.24
Transfer/sec:     23.43MB
";
        let r = parse(out).unwrap();
        assert_eq!(r.requests_per_sec, 67501.24);
        assert!((r.p50_ms - 0.21).abs() < 1e-9);
        assert!((r.p99_ms - 1.02).abs() < 1e-9);
        assert_eq!(r.requests, 135012);
        assert_eq!(r.non_2xx, 7);
        assert_eq!(r.socket_errors, 3);
    }
}
