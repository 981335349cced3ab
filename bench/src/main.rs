//! `specreg-bench`: runs one workload against distribution (Debian `docker-registry`) and
//! specreg (fsync and `--no-fsync`) on loopback, in one run, and prints every figure with
//! the ratio specreg/distribution and the targets of issue #3 (informational only).
//!
//! Run `bench/run.sh [--quick] [--json FILE]`, which builds the release binaries and
//! installs `docker-registry` and `wrk` when missing.

mod baseline;
mod client;
mod copy;
mod load;
mod node;
mod promote;
mod report;
mod servers;
mod workload;
mod wrk;

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use rand::{RngCore, SeedableRng};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use servers::{Server, ServerKind};
use workload::{Phase, Workload};

#[derive(Parser)]
#[command(
    name = "specreg-bench",
    about = "Side-by-side benchmark of specreg and distribution on loopback",
    after_help = "Targets are informational: the exit status is 0 unless something failed."
)]
struct Args {
    /// Small run for CI: 32 MiB blob, 40 small blobs, 40 manifests, 2 s of load.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The specreg binary [default: `specreg` next to this binary, else
    /// <workspace>/target/release/specreg].
    #[arg(long, value_name = "PATH")]
    specreg: Option<PathBuf>,
    /// The distribution binary.
    #[arg(long, value_name = "PATH", default_value = "/usr/bin/docker-registry")]
    distribution: PathBuf,
    /// The wrk binary.
    #[arg(long, value_name = "PATH", default_value = "wrk")]
    wrk: PathBuf,
    /// The curl binary (timed blob pulls).
    #[arg(long, value_name = "PATH", default_value = "curl")]
    curl: PathBuf,
    /// Size of the big blob in MiB [default: 1024, quick 32].
    #[arg(long, value_name = "MIB")]
    blob_mib: Option<u64>,
    /// PATCH size of the chunked push, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    chunk_mib: u64,
    /// Number of 64 KiB blobs pushed [default: 200, quick 40].
    #[arg(long, value_name = "N")]
    small_blobs: Option<usize>,
    /// Number of manifests pushed [default: 200, quick 40].
    #[arg(long, value_name = "N")]
    manifests: Option<usize>,
    /// Runs of each big-blob push and pull; the fastest is reported (helps on a busy machine).
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: usize,
    /// Concurrent clients for small blob and manifest pushes.
    #[arg(long, value_name = "N", default_value_t = 8)]
    concurrency: usize,
    /// Seconds of each manifest HEAD/GET load run [default: 10, quick 2].
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Keep-alive connections of the HEAD/GET load runs.
    #[arg(long, value_name = "N,N", value_delimiter = ',', default_value = "16,64")]
    connections: Vec<u32>,
    /// Servers to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "distribution,specreg-fsync,specreg-no-fsync")]
    servers: Vec<ServerKind>,
    /// Phases to run [default: all]. `node` is specreg only and runs once, after the
    /// servers: `specreg use` / `--undo` time and the mirror proxy's cost (issue #5).
    #[arg(long, value_enum, value_delimiter = ',')]
    phases: Option<Vec<Phase>>,
    /// node phase: size of the blob pulled directly and through the proxy, in MiB
    /// [default: 256, quick 32].
    #[arg(long, value_name = "MIB")]
    node_blob_mib: Option<u64>,
    /// promote phase: size of the big image's layer in MiB [default: 1024, quick 64]; the
    /// small image has 10 MiB (quick 4).
    #[arg(long, value_name = "MIB")]
    promote_big_mib: Option<u64>,
    /// promote phase: timed promotes per image and server [default: 7, quick 3].
    #[arg(long, value_name = "N")]
    promote_runs: Option<usize>,
    /// node phase: `specreg use` + `--undo` cycles [default: 5, quick 3].
    #[arg(long, value_name = "N")]
    use_runs: Option<usize>,
    /// copy phase (best of --repeat, at least 3 in a full run): the smallest of the 10
    /// layers in MiB; layer i is i times it
    /// [default: 4, quick 1: 220 / 55 MiB of gzip data in all].
    #[arg(long, value_name = "MIB")]
    copy_layer_mib: Option<u64>,
    /// copy phase: the skopeo binary.
    #[arg(long, value_name = "PATH", default_value = "skopeo")]
    skopeo: PathBuf,
    /// Directory for the temporary files (blob file, server data) [default: $TMPDIR].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Do not write and delete a scratch file before each big push. The scratch write
    /// makes the push fill recently freed pages: on VMs that hand idle free memory back to
    /// the host, filling pages costs several times more after a pause.
    #[arg(long)]
    no_prewarm: bool,
    /// Keep the temporary directory.
    #[arg(long)]
    keep: bool,
}

fn default_specreg() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let sibling = dir.join("specreg");
            if sibling.is_file() {
                return sibling;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/specreg")
}

fn first_line(cmd: &Path, arg: &str) -> Option<String> {
    let out = Command::new(cmd).arg(arg).output().ok()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    text.lines().next().map(|l| l.trim().to_owned())
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Writes `size` random bytes to `path` in 1 MiB writes; returns the hash state of them.
fn generate_blob(path: &Path, size: u64) -> Result<Sha256> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut buf = vec![0u8; 1 << 20];
    let mut h = Sha256::new();
    let mut left = size;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        rng.fill_bytes(&mut buf[..n]);
        h.update(&buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(h)
}

fn main() -> ExitCode {
    // The client reads the blob into fresh 1 MiB buffers. glibc would map and unmap each
    // one (256 page faults per MiB) on the cores the server needs; the heap reuses them.
    // SAFETY: mallopt only changes allocator parameters; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("specreg-bench: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("specreg-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let quick = args.quick;
    let blob_mib = args.blob_mib.unwrap_or(if quick { 32 } else { 1024 });
    let small_count = args.small_blobs.unwrap_or(if quick { 40 } else { 200 }).max(1);
    let manifest_count = args.manifests.unwrap_or(if quick { 40 } else { 200 }).max(1);
    let duration = Duration::from_secs(args.duration.unwrap_or(if quick { 2 } else { 10 }));
    let phases = args.phases.clone().unwrap_or_else(|| Phase::ALL.to_vec());
    let server_phases: Vec<Phase> = phases.iter().copied().filter(|p| p.per_server()).collect();
    let node_phase = phases.contains(&Phase::Node);
    let copy_phase = phases.contains(&Phase::Copy);
    let node_blob_mib = args.node_blob_mib.unwrap_or(if quick { 32 } else { 256 }).max(1);
    let use_runs = args.use_runs.unwrap_or(if quick { 3 } else { 5 }).max(1);
    if blob_mib == 0 || args.chunk_mib == 0 || args.concurrency == 0 {
        bail!("--blob-mib, --chunk-mib and --concurrency must be positive");
    }
    let mut kinds: Vec<ServerKind> = Vec::new();
    for k in ServerKind::ALL {
        if args.servers.contains(&k) && !server_phases.is_empty() {
            kinds.push(k);
        }
    }
    let specreg_bin = args.specreg.clone().unwrap_or_else(default_specreg);
    if (node_phase || copy_phase || phases.contains(&Phase::Promote) || kinds.iter().any(|k| *k != ServerKind::Distribution)) && !specreg_bin.is_file() {
        bail!(
            "no specreg binary at {} (run `cargo build --release -p specreg`, or bench/run.sh, or pass --specreg)",
            specreg_bin.display()
        );
    }
    if kinds.contains(&ServerKind::Distribution) && !args.distribution.is_file() {
        bail!(
            "no distribution binary at {} (`apt-get install -y docker-registry`, or bench/run.sh)",
            args.distribution.display()
        );
    }
    let wrk_version = if phases.contains(&Phase::Load) {
        match Command::new(&args.wrk).arg("-v").output() {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let line = text.lines().next().unwrap_or("");
                line.split(" Copyright").next().unwrap_or("").trim().to_owned()
            }
            Err(e) => bail!("cannot run {} ({e}): `apt-get install -y wrk`, or bench/run.sh", args.wrk.display()),
        }
    } else {
        String::new()
    };

    let tmp = match &args.work_dir {
        Some(d) => tempfile::Builder::new().prefix("specreg-bench-").tempdir_in(d)?,
        None => tempfile::Builder::new().prefix("specreg-bench-").tempdir()?,
    };
    let root = tmp.path().to_owned();
    let size = blob_mib << 20;

    let distribution_version = first_line(&args.distribution, "--version").unwrap_or_default();
    // Other work on the machine skews every figure: say how busy it was.
    let loadavg_start = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "specreg-bench ({}): {blob_mib} MiB blob, {small_count} small blobs, {manifest_count} manifests, {}s load; \
         node: {use_runs} use runs, {node_blob_mib} MiB blob; in {}",
        if quick { "quick" } else { "full" },
        duration.as_secs(),
        root.display()
    );

    let mut server_part = None;
    if !server_phases.is_empty() {

    // The big blob, once, in a file; pushes send it plus a short tail so that each is a new
    // blob for the server (the monolithic push of the file alone is the one pulled).
    let started = Instant::now();
    let blob_path = root.join("blob.bin");
    let state = tokio::task::spawn_blocking({
        let p = blob_path.clone();
        move || generate_blob(&p, size)
    })
    .await??;
    eprintln!("generated {blob_mib} MiB of random data in {:.1} s", started.elapsed().as_secs_f64());
    let file = Arc::new(File::open(&blob_path)?);

    let mut small_blobs = Vec::with_capacity(small_count);
    {
        let mut rng = rand::thread_rng();
        for _ in 0..small_count {
            let mut b = vec![0u8; 64 << 10];
            rng.fill_bytes(&mut b);
            let d = client::sha256_digest(&b);
            small_blobs.push((Bytes::from(b), d));
        }
    }

    // Reference figures.
    eprintln!("measuring SHA-256, loopback and the client alone ...");
    // Each is the best of a few runs: other work on the machine only ever makes them worse.
    let mut sha = f64::INFINITY;
    for _ in 0..4 {
        sha = sha.min(tokio::task::spawn_blocking(|| baseline::sha256_seconds_per_gib(256 << 20)).await?);
    }
    let mut loopback: f64 = 0.0;
    for _ in 0..3 {
        loopback = loopback.max(baseline::loopback_mb_s(if quick { 512 << 20 } else { 2 << 30 }).await?);
    }
    let mut selftest = baseline::client_self_test(&file, size, &args.curl).await?;
    for _ in 0..2 {
        let t = baseline::client_self_test(&file, size, &args.curl).await?;
        selftest.push_mb_s = selftest.push_mb_s.max(t.push_mb_s);
        selftest.pull_mb_s = selftest.pull_mb_s.max(t.pull_mb_s);
    }
    let reference = report::Reference {
        sha256_s_per_gib: sha,
        loopback_mb_s: loopback,
        client_push_mb_s: selftest.push_mb_s,
        client_pull_mb_s: selftest.pull_mb_s,
    };

    let script_dir = root.join("wrk");
    fs::create_dir_all(&script_dir)?;
    let work = Workload {
        file,
        size,
        file_hash: state,
        repeat: args.repeat.max(1),
        chunk: args.chunk_mib << 20,
        small_blobs,
        manifests: manifest_count,
        concurrency: args.concurrency,
        load_duration: duration,
        connections: args.connections.clone(),
        phases: server_phases.clone(),
        wrk: args.wrk.clone(),
        curl: args.curl.clone(),
        script_dir,
        calibrate_load: !quick,
        prewarm_bytes: if args.no_prewarm { 0 } else { size + (64 << 20) },
    };

    let mut results: [Option<workload::ServerResult>; 3] = [None, None, None];
    for kind in &kinds {
        let dir = root.join(kind.key());
        fs::create_dir_all(&dir)?;
        let mut server = match kind {
            ServerKind::Distribution => Server::start_distribution(&args.distribution, &dir)?,
            _ => Server::start_specreg(*kind, &specreg_bin, &dir)?,
        };
        if let Err(e) = client::wait_ready(server.addr, Duration::from_secs(30)).await {
            let _ = server.check_alive();
            bail!("{}: {e:#}; log:\n{}", kind.label(), server.log_tail());
        }
        eprintln!("{} ready on {} (pid {})", kind.label(), server.addr, server.pid);
        let r = match work.run(&mut server).await {
            Ok(r) => r,
            Err(e) => {
                let log = server.log_tail();
                server.stop();
                bail!("{}: {e:#}\nserver log (tail):\n{log}", kind.label());
            }
        };
        server.stop();
        if !args.keep {
            let _ = fs::remove_dir_all(dir.join("data"));
        }
        let idx = ServerKind::ALL.iter().position(|k| k == kind).expect("known kind");
        results[idx] = Some(r);
    }

    let rows = report::rows(
        [results[0].as_ref(), results[1].as_ref(), results[2].as_ref()],
        &reference,
        &report::Shape {
            blob_mib,
            chunk_mib: args.chunk_mib,
            small: small_count,
            manifests: manifest_count,
            concurrency: args.concurrency,
            connections: &args.connections,
        },
    );
    server_part = Some((rows, reference, results));
    }

    let node_result = if node_phase {
        let dir = root.join("node");
        fs::create_dir_all(&dir)?;
        eprintln!("node phase: specreg use / --undo x{use_runs}, {node_blob_mib} MiB pulls direct and through the proxy");
        let cfg = node::NodeConfig {
            specreg: specreg_bin.clone(),
            dir: dir.clone(),
            runs: use_runs,
            blob_size: node_blob_mib << 20,
            // Best of 5 in a full run: single pulls of a few hundred ms vary by 10-20 % on a
            // shared 2-core machine, the size of the ratio being measured.
            pulls: if quick { 3 } else { 5 },
            manifest_gets: 500,
        };
        let r = node::run(&cfg).await?;
        if !args.keep {
            let _ = fs::remove_dir_all(&dir);
        }
        Some(r)
    } else {
        None
    };
    let node_rows = node_result.as_ref().map(report::node_rows);

    let copy_result = if copy_phase {
        let dir = root.join("copy");
        fs::create_dir_all(&dir)?;
        let unit_mib = args.copy_layer_mib.unwrap_or(if quick { 1 } else { 4 }).max(1);
        let repeat = if quick { args.repeat.max(1) } else { args.repeat.max(3) };
        eprintln!("copy phase: specreg copy vs skopeo copy of a 10-layer image, best of {repeat}");
        let cfg = copy::CopyConfig {
            specreg: specreg_bin.clone(),
            skopeo: args.skopeo.clone(),
            dir: dir.clone(),
            layer_unit: unit_mib << 20,
            repeat,
        };
        let r = copy::run(&cfg).await?;
        if !args.keep {
            let _ = fs::remove_dir_all(&dir);
        }
        Some(r)
    } else {
        None
    };

    let promote_rows = if phases.contains(&Phase::Promote) {
        let cfg = promote::PromoteConfig {
            specreg: specreg_bin.clone(),
            distribution: args.distribution.clone(),
            dir: root.clone(),
            small_bytes: if quick { 4 << 20 } else { 10 << 20 },
            big_bytes: args.promote_big_mib.unwrap_or(if quick { 64 } else { 1024 }).max(1) << 20,
            runs: args.promote_runs.unwrap_or(if quick { 3 } else { 7 }).max(1),
        };
        eprintln!(
            "promote phase: {} and {} MiB images, {} promotes each, on specreg and distribution",
            cfg.small_bytes >> 20,
            cfg.big_bytes >> 20,
            cfg.runs
        );
        Some(promote::run(&cfg).await?)
    } else {
        None
    };

    let mut out = String::new();
    out.push_str(&format!(
        "specreg-bench ({} run): {} CPUs ({}), kernel {}\n",
        if quick { "quick" } else { "full" },
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu_model(),
        fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    ));
    let loadavg_end = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let first3 = |s: &str| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    out.push_str(&format!(
        "load average before/after: {} / {} (other work on the machine skews the figures)\n",
        first3(&loadavg_start),
        first3(&loadavg_end)
    ));
    out.push_str(&format!(
        "servers: {distribution_version}; specreg {}{}\n",
        specreg_bin.display(),
        if wrk_version.is_empty() { String::new() } else { format!("; load by {wrk_version}") }
    ));
    if let Some((rows, reference, _)) = &server_part {
        out.push_str(&format!(
            "reference (best of a few runs): SHA-256 {:.3} s/GiB ({:.0} MB/s, one core); loopback TCP {:.0} MB/s \
             (one stream, 1 MiB writes); bench client alone: push {:.0} MB/s; curl alone: pull {:.0} MB/s\n",
            reference.sha256_s_per_gib,
            (1u64 << 30) as f64 / reference.sha256_s_per_gib / 1e6,
            reference.loopback_mb_s,
            reference.client_push_mb_s,
            reference.client_pull_mb_s,
        ));
        if args.repeat > 1 {
            out.push_str(&format!("big-blob push and pull figures: best of {} runs\n", args.repeat));
        }
        out.push_str(
            "MB = 10^6 bytes; CPU = server utime+stime; ratio = specreg / distribution (CPU, latency, RSS: lower is better); \
             targets are informational\n",
        );
        out.push_str(
            "HEAD load by the built-in generator (wrk 4.1 waits for a body after HEAD, wg/wrk#198), GET load by wrk -t2\n\n",
        );
        out.push_str(&report::table(rows));
    }
    if let Some(rows) = &node_rows {
        if server_part.is_some() {
            out.push('\n');
        }
        out.push_str(
            "node (specreg only, issue #5; no distribution equivalent): `specreg use --root` on a fresh root (no daemon \
             reload), wall time around the process; pulls over TLS, direct with Basic auth, proxy with the node CA; \
             manifest GETs sequential on one keep-alive connection\n\n",
        );
        out.push_str(&report::node_table(rows));
    }
    if let Some(c) = &copy_result {
        if server_part.is_some() || node_rows.is_some() {
            out.push('\n');
        }
        out.push_str(&c.table());
    }
    if let Some(rows) = &promote_rows {
        out.push_str(
            "\npromote (issue #8): wall time of one `specreg promote` process (GET temporary tag, PUT final tag, \
             check, remove temporary tag); a manifest-only retag, so big/small should be 1 within noise\n\n",
        );
        out.push_str(&promote::table(rows));
    }
    print!("{out}");

    if let Some(path) = &args.json {
        let no_results: [Option<workload::ServerResult>; 3] = [None, None, None];
        let (results, reference) = match &server_part {
            Some((_, reference, results)) => (results, Some(reference)),
            None => (&no_results, None),
        };
        let servers: serde_json::Map<String, serde_json::Value> = ServerKind::ALL
            .iter()
            .zip(results.iter())
            .filter_map(|(k, r)| r.as_ref().map(|r| (k.key().to_owned(), r.to_json())))
            .collect();
        let doc = json!({
            "mode": if quick { "quick" } else { "full" },
            "config": {
                "blob_bytes": size,
                "chunk_bytes": args.chunk_mib << 20,
                "small_blobs": small_count,
                "small_blob_bytes": 64 << 10,
                "manifests": manifest_count,
                "concurrency": args.concurrency,
                "load_seconds": duration.as_secs(),
                "load_connections": args.connections,
                "big_blob_repetitions": args.repeat.max(1),
                "prewarm": !args.no_prewarm,
                "wrk_threads": 2,
                "phases": phases.iter().map(|p| format!("{p:?}").to_lowercase()).collect::<Vec<_>>(),
                "node_blob_bytes": node_blob_mib << 20,
                "use_runs": use_runs,
            },
            "environment": {
                "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                "cpu_model": cpu_model(),
                "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
                "distribution": distribution_version,
                "specreg": specreg_bin.display().to_string(),
                "wrk": wrk_version,
                "loadavg_start": first3(&loadavg_start),
                "loadavg_end": first3(&loadavg_end),
            },
            "reference": reference.map(|reference| json!({
                "sha256_s_per_gib": reference.sha256_s_per_gib,
                "sha256_mb_per_s": (1u64 << 30) as f64 / reference.sha256_s_per_gib / 1e6,
                "loopback_mb_per_s": reference.loopback_mb_s,
                "client_push_mb_per_s": reference.client_push_mb_s,
                "client_pull_mb_per_s": reference.client_pull_mb_s,
            })),
            "servers": servers,
            "rows": server_part.as_ref().map(|(rows, _, _)| report::rows_json(rows)),
            "node": node_result.as_ref().map(|n| {
                let mut v = n.to_json();
                v["rows"] = report::node_rows_json(node_rows.as_deref().unwrap_or(&[]));
                v
            }),
            "copy": copy_result.as_ref().map(copy::CopyResult::to_json),
            "promote": promote_rows.as_deref().map(promote::to_json),
        });
        let mut bytes = serde_json::to_vec_pretty(&doc)?;
        bytes.push(b'\n');
        fs::write(path, bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }

    if args.keep {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    }
    Ok(())
}
