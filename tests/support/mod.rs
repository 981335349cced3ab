//! Support code for the end-to-end tests: real clients (skopeo, podman, docker,
//! containerd) against a real `specreg serve` process.
//!
//! Everything a test starts is owned by a guard that kills it (by PID / process
//! group) and removes its temporary directories on `Drop`, also when the test
//! panics. Nothing here writes to the host's `/etc`, `/run` or `/var`: every tool
//! gets private config files, and the private dockerd runs in its own mount
//! namespace with an overlay on `/etc` and a tmpfs on `/run`.
//!
//! Images are built locally by [`OciLayoutWriter`]; nothing is pulled from the
//! internet.
//!
//! `SPECREG_E2E_REGISTRY=distribution` runs the same tests against Debian's
//! `docker-registry` (distribution 2.8) instead of specreg, to check the tests
//! themselves against the reference implementation.
#![allow(dead_code)]

pub mod tag_api;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Every manifest type a test may expect back.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

const SETUP_HINT: &str = "run `scripts/setup-test-deps.sh` as root (CI does) to install the \
     end-to-end test dependencies";

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    let h = Sha256::digest(bytes);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in h.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A marker unique to this process and call, so every test pushes content that no
/// other test (or earlier run) has pushed.
pub fn unique_marker(label: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{label}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Deterministic pseudo-random bytes (xorshift) so payloads do not compress away.
pub fn pseudo_random_bytes(seed: &str, len: usize) -> Vec<u8> {
    let h = Sha256::digest(seed.as_bytes());
    let mut x = u64::from_le_bytes(h[..8].try_into().unwrap()) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Fail (never skip) when the host cannot run these tests.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{what} needs root (private daemons, mount namespaces, container storage); \
         this process runs as uid {euid}. Run the tests as root, as CI does."
    );
}

/// Path of a required external tool; panics with a setup hint when it is missing.
/// `/usr/bin` and `/usr/sbin` (Debian's packages) win over anything in
/// `/usr/local`, so e.g. Debian's docker client is used with Debian's dockerd.
pub fn tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = vec!["/usr/bin".into(), "/usr/sbin".into()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.extend(["/sbin".into(), "/bin".into()]);
    for d in dirs {
        let p = d.join(name);
        if let Ok(md) = fs::metadata(&p) {
            use std::os::unix::fs::PermissionsExt;
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return p;
            }
        }
    }
    panic!("required tool `{name}` is not installed: {SETUP_HINT}");
}

/// A temporary directory with a short path (unix socket paths are limited to 108
/// bytes) that is removed on drop, after unmounting anything still mounted under it.
pub struct TempTree {
    path: PathBuf,
    keep: bool,
}

impl TempTree {
    pub fn new(label: &str) -> TempTree {
        // Lower-case names only: podman derives image names from `oci:` paths.
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = loop {
            let p = PathBuf::from(format!(
                "/tmp/e2e-{label}.{}-{}-{nanos:x}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            match fs::create_dir(&p) {
                Ok(()) => break p,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("create {}: {e}", p.display()),
            }
        };
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        TempTree {
            path,
            keep: std::env::var_os("SPECREG_E2E_KEEP").is_some(),
        }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("SPECREG_E2E_KEEP: leaving {}", self.path.display());
            return;
        }
        unmount_under(&self.path);
        if let Err(e) = fs::remove_dir_all(&self.path) {
            // vfs/overlay leftovers: try once more the blunt way.
            let _ = Command::new("rm").arg("-rf").arg(&self.path).status();
            if self.path.exists() {
                eprintln!("warning: could not remove {}: {e}", self.path.display());
            }
        }
    }
}

/// Lazily unmount every mount point at or below `dir` (deepest first).
pub fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return };
    let prefix = dir.to_string_lossy().to_string();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(|s| s.replace("\\040", " ")))
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let c = std::ffi::CString::new(p).unwrap();
        // SAFETY: valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

// ---------------------------------------------------------------------------
// Keeping tools off the host's /etc, /var and /run
// ---------------------------------------------------------------------------

/// Shell prologue run inside a new mount namespace: `/etc` and `/var` become
/// overlays whose upper layers live under `$E2E_SANDBOX`, `/run` a private tmpfs.
/// Whatever a tool writes there (skopeo's blob-info cache in
/// /var/lib/containers/cache, podman's network locks, dockerd's key.json) lands in
/// the test's temp dir and vanishes with the namespace.
pub const SANDBOX_PROLOGUE: &str = "set -e\n\
     for d in etc var; do mkdir -p \"$E2E_SANDBOX/$d-up\" \"$E2E_SANDBOX/$d-wk\"; \
     mount -t overlay overlay -o \"lowerdir=/$d,upperdir=$E2E_SANDBOX/$d-up,workdir=$E2E_SANDBOX/$d-wk\" /$d; done\n\
     mount -t tmpfs -o mode=755 tmpfs /run\n";

/// A command that runs `program` in a private mount namespace (see
/// [`SANDBOX_PROLOGUE`]) with its overlay layers in a fresh directory under
/// `base`. As non-root (no namespaces possible) the program runs directly.
pub fn sandboxed(base: &Path, program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Command::new(program);
    }
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = base.join(format!("sandbox-{}", N.fetch_add(1, Ordering::Relaxed)));
    fs::create_dir_all(&dir).unwrap();
    let mut c = Command::new(tool("unshare"));
    c.env("E2E_SANDBOX", &dir)
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("{SANDBOX_PROLOGUE}exec \"$@\""))
        .arg("sh")
        .arg(program);
    c
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

pub struct Output {
    pub status: ExitStatus,
    pub stdout_bytes: Vec<u8>,
    pub stdout: String,
    pub stderr: String,
    pub cmdline: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline, self.status, self.stdout, self.stderr
        )
    }
}

fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().to_string();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run `cmd` to completion with no stdin, killing its whole process group after
/// `timeout`. Does not look at the exit status.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    run_timeout_input(cmd, timeout, None)
}

/// Run with `input` on stdin (e.g. `--password-stdin`), 5-minute timeout; no
/// status check. The input never appears in the returned command line.
pub fn run_input(cmd: &mut Command, input: &[u8]) -> Output {
    run_timeout_input(cmd, Duration::from_secs(300), Some(input.to_vec()))
}

fn run_timeout_input(cmd: &mut Command, timeout: Duration, input: Option<Vec<u8>>) -> Output {
    let line = cmdline(cmd);
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{line}`: {e} ({SETUP_HINT})"));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
            // Dropping stdin closes it: the tool sees EOF.
        });
    }
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > timeout {
            kill_group(child.id() as i32, libc::SIGKILL);
            let _ = child.wait();
            let stdout = String::from_utf8_lossy(&t_out.join().unwrap()).to_string();
            let stderr = String::from_utf8_lossy(&t_err.join().unwrap()).to_string();
            panic!(
                "command timed out after {timeout:?}: {line}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout_bytes = t_out.join().unwrap();
    Output {
        status,
        stdout: String::from_utf8_lossy(&stdout_bytes).to_string(),
        stdout_bytes,
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).to_string(),
        cmdline: line,
    }
}

/// Run with a 5-minute timeout; no status check.
pub fn run(cmd: &mut Command) -> Output {
    run_timeout(cmd, Duration::from_secs(300))
}

/// Run and panic with the full output unless it exits 0; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(o.success(), "command failed\n{}", o.describe());
    o.stdout
}

/// Run and panic unless it exits non-zero; returns the output.
pub fn run_fails(cmd: &mut Command) -> Output {
    let o = run(cmd);
    assert!(!o.success(), "command unexpectedly succeeded\n{}", o.describe());
    o
}

fn kill_group(pgid: i32, sig: i32) {
    if pgid > 0 {
        // SAFETY: plain syscall.
        unsafe { libc::kill(-pgid, sig) };
    }
}

fn kill_pid(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: plain syscall.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Whether any non-zombie process is left in process group `pgid`.
fn group_alive(pgid: i32) -> bool {
    let Ok(rd) = fs::read_dir("/proc") else { return false };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = fs::read_to_string(format!("/proc/{name}/stat")) else { continue };
        // pid (comm) state ppid pgrp ...
        let Some(close) = stat.rfind(')') else { continue };
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if rest.len() > 2 && rest[0] != "Z" && rest[2].parse::<i32>().ok() == Some(pgid) {
            return true;
        }
    }
    false
}

/// A long-running child process in its own process group. Drop: SIGTERM to the
/// leader, then to the group, then SIGKILL to the group; always reaped.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    /// Spawn `cmd` in a new process group with stdout+stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Daemon {
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        let line = cmdline(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} (`{line}`): {e} ({SETUP_HINT})"));
        Daemon { name: name.into(), child: Some(child), log }
    }

    pub fn from_child(name: &str, child: Child, log: PathBuf) -> Daemon {
        Daemon { name: name.into(), child: Some(child), log }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                panic!(
                    "{} exited early with {st}\n--- log {} ---\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 200)
                );
            }
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// SIGTERM, wait up to `grace`; returns the exit status (SIGKILL after grace).
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.stop_with(libc::SIGTERM, grace)
    }

    /// Send `sig` to the leader, wait up to `grace`, then SIGKILL the group.
    pub fn stop_with(&mut self, sig: i32, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id() as i32;
        kill_pid(pid, sig);
        let start = Instant::now();
        let mut status = None;
        while start.elapsed() < grace {
            if let Ok(Some(st)) = child.try_wait() {
                status = Some(st);
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        if status.is_none() {
            eprintln!("{} (pid {pid}) ignored signal {sig} for {grace:?}; sending SIGKILL", self.name);
            kill_group(pid, libc::SIGKILL);
            status = child.wait().ok();
        }
        // Anything else left in its process group.
        if group_alive(pid) {
            kill_group(pid, libc::SIGTERM);
            let start = Instant::now();
            while group_alive(pid) && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            kill_group(pid, libc::SIGKILL);
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!(
                "--- last lines of {} log ({}) ---\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 80)
            );
        }
        self.stop(Duration::from_secs(20));
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool, mut check: impl FnMut()) {
    let start = Instant::now();
    loop {
        if f() {
            return;
        }
        check();
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------
// Minimal HTTP/1.1 client (plain HTTP on loopback)
// ---------------------------------------------------------------------------

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn describe(&self) -> String {
        let mut s = format!("HTTP {}\n", self.status);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\n"));
        }
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(2000)]).to_string();
        s.push_str(&body);
        s
    }
}

/// One request over a fresh connection (`Connection: close`).
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: reading response: {e}"));
    parse_response(method, &raw).unwrap_or_else(|e| {
        panic!(
            "{method} http://{addr}{path}: bad response ({e}): {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(500)])
        )
    })
}

fn parse_response(method: &str, raw: &[u8]) -> Result<HttpResponse, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|e| e.to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let resp = HttpResponse { status, headers, body: Vec::new() };
    if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(resp);
    }
    let chunked = resp
        .header("transfer-encoding")
        .map(|v| v.to_ascii_lowercase().contains("chunked"))
        .unwrap_or(false);
    let body = if chunked {
        let mut out = Vec::new();
        let mut p = rest;
        loop {
            let nl = p.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
            let size_str = std::str::from_utf8(&p[..nl]).map_err(|e| e.to_string())?;
            let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16)
                .map_err(|e| e.to_string())?;
            p = &p[nl + 2..];
            if size == 0 {
                break;
            }
            if p.len() < size + 2 {
                return Err("truncated chunk".into());
            }
            out.extend_from_slice(&p[..size]);
            p = &p[size + 2..];
        }
        out
    } else if let Some(cl) = resp.header("content-length") {
        let n: usize = cl.parse().map_err(|_| "bad content-length")?;
        if rest.len() < n {
            return Err(format!("body truncated: {} of {n} bytes", rest.len()));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse { body, ..resp })
}

// ---------------------------------------------------------------------------
// The registry under test
// ---------------------------------------------------------------------------

pub struct Registry {
    daemon: Daemon,
    addr: String,
    pub kind: &'static str,
    pub data: PathBuf,
    /// How a `start_specreg_with*` registry was started (kept for `restart`).
    launch: Option<Launch>,
    /// The `specreg serve: listening on ...` line (empty for distribution).
    announce: String,
    /// The connection info JSON the server wrote, if it named one.
    info: Option<ConnectionInfo>,
    /// The CA the helper methods trust; `Some` means they speak HTTPS.
    ca_pem: Option<String>,
    /// Credentials the helper methods send (HTTP Basic) unless told otherwise.
    creds: Option<(String, String)>,
    _dir: TempTree,
}

/// Arguments and environment of a `specreg serve` started by a test.
#[derive(Clone, Debug)]
struct Launch {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Registry {
    /// The registry under test: `specreg serve`, unless
    /// `SPECREG_E2E_REGISTRY=distribution` asks for Debian's docker-registry.
    pub fn start() -> Registry {
        match std::env::var("SPECREG_E2E_REGISTRY").as_deref() {
            Ok("distribution") => Registry::start_distribution(),
            Ok("specreg") | Err(_) => Registry::start_specreg(),
            Ok(other) => panic!("SPECREG_E2E_REGISTRY={other}: expected specreg or distribution"),
        }
    }

    pub fn start_specreg() -> Registry {
        Registry::spawn_specreg(TempTree::new("specreg"))
    }

    /// Stop the server (SIGTERM; it must exit within 30s) and start it again on
    /// the same data directory (on a new port). Returns the exit status too.
    pub fn restart(self) -> (ExitStatus, Registry) {
        let Registry { mut daemon, kind, launch, _dir: dir, .. } = self;
        let status = daemon
            .stop(Duration::from_secs(30))
            .expect("registry already stopped");
        drop(daemon);
        let reg = match (kind, launch) {
            ("specreg", Some(launch)) => Registry::spawn_specreg_launch(dir, launch),
            ("specreg", None) => Registry::spawn_specreg(dir),
            _ => Registry::spawn_distribution(dir),
        };
        (status, reg)
    }

    /// Plain HTTP without users: the registry-agnostic tests' setup.
    fn spawn_specreg(dir: TempTree) -> Registry {
        let launch = Launch {
            args: vec!["--insecure-http".to_owned(), "--no-fsync".to_owned()],
            env: Vec::new(),
        };
        let reg = Registry::spawn_specreg_launch(dir, launch);
        reg.wait_ready();
        reg
    }

    /// `specreg serve ARGS` as an operator runs it: TLS, users and the connection
    /// info file unless ARGS say otherwise. `--listen 127.0.0.1:0` and `--data
    /// <temp>/data` are added unless ARGS give them or a `--config` file is used
    /// (then the file must say `listen` and `data`).
    ///
    /// When the server names an info file, it is read ([`Registry::info`]) and the
    /// helper methods (`get`, `manifest`, `blob`, ...) trust its `cert` over HTTPS
    /// and send its username/password as Basic credentials (change with
    /// [`Registry::set_ca_pem`] / [`Registry::set_credentials`]).
    pub fn start_specreg_with(args: &[&str]) -> Registry {
        Registry::start_specreg_env(args, &[])
    }

    /// [`Registry::start_specreg_with`] with extra environment (e.g. a password
    /// variable or `SPECREG_LOG`).
    pub fn start_specreg_env(args: &[&str], env: &[(&str, &str)]) -> Registry {
        let launch = Launch {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        Registry::spawn_specreg_launch(TempTree::new("specreg"), launch)
    }

    fn spawn_specreg_launch(dir: TempTree, launch: Launch) -> Registry {
        let given = |flag: &str| {
            let eq = format!("{flag}=");
            launch.args.iter().position(|a| a == flag || a.starts_with(&eq))
        };
        let with_config = given("--config").is_some();
        let data = match given("--data") {
            Some(i) if launch.args[i] == "--data" => PathBuf::from(&launch.args[i + 1]),
            Some(i) => PathBuf::from(&launch.args[i]["--data=".len()..]),
            None => dir.join("data"),
        };
        let mut args: Vec<std::ffi::OsString> = vec!["serve".into()];
        if given("--listen").is_none() && !with_config {
            args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        if given("--data").is_none() && !with_config {
            args.extend(["--data".into(), data.clone().into_os_string()]);
        }
        args.extend(launch.args.iter().map(Into::into));
        let log = dir.join("specreg.log");
        let bin = env!("CARGO_BIN_EXE_specreg");
        let mut cmd = Command::new(bin);
        cmd.args(&args)
            .env("SPECREG_LOG", std::env::var("SPECREG_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::OpenOptions::new().create(true).append(true).open(&log).unwrap())
            .process_group(0);
        let line = cmdline(&cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout_log = dir.join("specreg.stdout");
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().create(true).append(true).open(stdout_log).ok();
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = f.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if !sent && line.contains("listening on http") {
                    let _ = tx.send(line);
                    sent = true;
                }
            }
        });
        let mut daemon = Daemon::from_child("specreg", child, log);
        let start = Instant::now();
        let announce = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => break l,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    daemon.assert_running();
                    if start.elapsed() > Duration::from_secs(60) {
                        panic!(
                            "`{line}` printed no `listening on` line within 60s\n{}",
                            daemon.log_tail(100)
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(200));
                    daemon.assert_running();
                    panic!("`{line}` closed stdout without a `listening on` line");
                }
            }
        };
        let tls = announce.contains("listening on https://");
        let after = announce.split_once("://").map(|(_, a)| a).unwrap_or_default();
        let addr: String = after.chars().take_while(|c| !c.is_whitespace() && *c != '/').collect();
        assert!(
            addr.contains(':') && !addr.ends_with(":0"),
            "specreg announced `{addr}` in {announce:?}, expected the real address and port"
        );
        let info = announce.split_once("connection info in ").map(|(_, rest)| {
            let path = rest.split(';').next().unwrap_or_default().trim();
            ConnectionInfo::read(Path::new(path))
        });
        let ca_pem = match (&info, tls) {
            (Some(i), true) => Some(i.cert.clone()),
            _ => None,
        };
        let creds = info.as_ref().map(|i| (i.username.clone(), i.password.clone()));
        let reg = Registry {
            daemon,
            addr,
            kind: "specreg",
            data,
            launch: Some(launch),
            announce,
            info,
            ca_pem,
            creds,
            _dir: dir,
        };
        // The line is printed once the socket is bound: no readiness probe needed
        // (a bare TCP probe would only add a failed TLS handshake to the log).
        reg
    }

    /// Debian's docker-registry (distribution 2.8) with filesystem storage.
    pub fn start_distribution() -> Registry {
        Registry::spawn_distribution(TempTree::new("distribution"))
    }

    /// Distribution with its htpasswd auth (bcrypt entries written by `htpasswd -B`):
    /// every request needs `user`/`password` as HTTP Basic, which the helper methods send.
    pub fn start_distribution_htpasswd(user: &str, password: &str) -> Registry {
        let dir = TempTree::new("distribution");
        let file = dir.join("htpasswd");
        let out = run_ok(Command::new(tool("htpasswd")).args(["-Bbn", user, password]));
        fs::write(&file, out).unwrap();
        let auth = format!("auth:\n  htpasswd:\n    realm: specreg-tests\n    path: {}\n", file.display());
        let mut reg = Registry::spawn_distribution_with(dir, &auth);
        reg.creds = Some((user.to_owned(), password.to_owned()));
        reg
    }

    fn spawn_distribution(dir: TempTree) -> Registry {
        Registry::spawn_distribution_with(dir, "")
    }

    /// `extra` is appended to the YAML config (top-level sections such as `auth:`).
    fn spawn_distribution_with(dir: TempTree, extra: &str) -> Registry {
        let bin = tool("docker-registry");
        let data = dir.join("data");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.join("config.yml");
        fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                 delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{extra}",
                data.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg(&cfg);
        let daemon = Daemon::spawn("docker-registry", cmd, dir.join("registry.log"));
        let reg = Registry {
            daemon,
            addr,
            kind: "distribution",
            data,
            launch: None,
            announce: String::new(),
            info: None,
            ca_pem: None,
            creds: None,
            _dir: dir,
        };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&self) {
        let addr = self.addr.clone();
        let start = Instant::now();
        loop {
            if let Ok(mut s) = TcpStream::connect(&addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let req = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
                let mut buf = Vec::new();
                if s.write_all(req.as_bytes()).is_ok() && s.read_to_end(&mut buf).is_ok() {
                    if let Ok(r) = parse_response("GET", &buf) {
                        // 401: a registry that wants credentials (htpasswd) is up too.
                        assert!(
                            r.status == 200 || r.status == 401,
                            "GET /v2/ on {} {addr}:\n{}",
                            self.kind,
                            r.describe()
                        );
                        return;
                    }
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} at {addr} did not answer GET /v2/ within 60s\n{}",
                self.kind,
                self.daemon.log_tail(100)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `127.0.0.1:PORT/<repo>:<tag>` style reference.
    pub fn image(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.addr)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.daemon.log_tail(lines)
    }

    /// Send `sig` (SIGTERM, SIGINT) and wait up to `grace`; returns the exit
    /// status and how long the server took (SIGKILL after `grace`).
    pub fn stop_with(mut self, sig: i32, grace: Duration) -> (ExitStatus, Duration) {
        let t = Instant::now();
        let st = self.daemon.stop_with(sig, grace).expect("registry already stopped");
        (st, t.elapsed())
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        self.send("GET", path, headers, b"")
    }

    pub fn head(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        self.send("HEAD", path, headers, b"")
    }

    /// One request: plain HTTP, or HTTPS trusting [`Registry::ca_pem`]; with the
    /// registry's credentials as HTTP Basic unless `headers` hold an
    /// `Authorization` already. Panics on transport errors.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        let has_auth = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        let basic;
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let (false, Some((u, p))) = (has_auth, &self.creds) {
            basic = basic_auth(u, p);
            all.push(("Authorization", &basic));
        }
        self.send_exact(method, path, &all, body)
    }

    /// Like [`Registry::send`] but with exactly `headers` (no credentials added).
    pub fn send_exact(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        match &self.ca_pem {
            None => http(&self.addr, method, path, headers, body),
            Some(ca) => https(&self.addr, host_of(&self.addr), ca, method, path, headers, body)
                .unwrap_or_else(|e| panic!("{method} https://{}{path}: {e}", self.addr)),
        }
    }

    /// Whether the helper methods speak HTTPS.
    pub fn is_tls(&self) -> bool {
        self.ca_pem.is_some()
    }

    /// The CA PEM the helper methods trust.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    pub fn set_ca_pem(&mut self, ca_pem: Option<String>) {
        self.ca_pem = ca_pem;
    }

    /// Credentials the helper methods send; `None`: anonymous.
    pub fn set_credentials(&mut self, creds: Option<(&str, &str)>) {
        self.creds = creds.map(|(u, p)| (u.to_string(), p.to_string()));
    }

    /// The connection info file the server wrote (panics if it named none).
    pub fn info(&self) -> &ConnectionInfo {
        self.info.as_ref().expect("this registry announced no connection info file")
    }

    /// The `specreg serve: listening on ...` line.
    pub fn announce(&self) -> &str {
        &self.announce
    }

    /// Everything the server wrote to stdout so far.
    pub fn stdout_text(&self) -> String {
        fs::read_to_string(self._dir.join("specreg.stdout")).unwrap_or_default()
    }

    /// Everything the server logged (stderr) so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.daemon.log).unwrap_or_default()
    }

    /// Panics with the log if the server process has exited.
    pub fn assert_running(&mut self) {
        self.daemon.assert_running();
    }

    /// GET and HEAD a manifest by tag or digest with every manifest type accepted.
    /// Asserts: 200, `Docker-Content-Digest` equals sha256 of the body, HEAD gives
    /// the same digest, the true `Content-Length` and the same `Content-Type`, and
    /// a digest reference returns exactly the requested digest.
    pub fn manifest(&self, repo: &str, reference: &str) -> FetchedManifest {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let hdrs = [("Accept", MANIFEST_ACCEPT)];
        let g = self.get(&path, &hdrs);
        assert_eq!(g.status, 200, "GET {path} on {}:\n{}", self.kind, g.describe());
        let digest = digest_of(&g.body);
        assert_eq!(
            g.header("docker-content-digest"),
            Some(digest.as_str()),
            "GET {path}: Docker-Content-Digest must be the sha256 of the body\n{}",
            g.describe()
        );
        if reference.starts_with("sha256:") {
            assert_eq!(digest, reference, "GET {path} returned other content");
        }
        let media_type = g
            .header("content-type")
            .unwrap_or_else(|| panic!("GET {path}: no Content-Type\n{}", g.describe()))
            .to_string();
        let h = self.head(&path, &hdrs);
        assert_eq!(h.status, 200, "HEAD {path}:\n{}", h.describe());
        assert_eq!(
            h.header("docker-content-digest"),
            Some(digest.as_str()),
            "HEAD {path}: wrong Docker-Content-Digest\n{}",
            h.describe()
        );
        assert_eq!(
            h.header("content-length").and_then(|v| v.parse::<usize>().ok()),
            Some(g.body.len()),
            "HEAD {path}: Content-Length must be the manifest size\n{}",
            h.describe()
        );
        assert_eq!(h.header("content-type"), Some(media_type.as_str()), "HEAD {path}: Content-Type");
        let json: Value = serde_json::from_slice(&g.body)
            .unwrap_or_else(|e| panic!("GET {path}: body is not JSON: {e}"));
        FetchedManifest { media_type, digest, bytes: g.body, json }
    }

    /// GET a blob and check its bytes hash to `digest`; HEAD must give the true size.
    pub fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let g = self.get(&path, &[]);
        assert_eq!(g.status, 200, "GET {path} on {}:\n{}", self.kind, g.describe());
        assert_eq!(digest_of(&g.body), digest, "GET {path}: content does not match its digest");
        let h = self.head(&path, &[]);
        assert_eq!(h.status, 200, "HEAD {path}:\n{}", h.describe());
        assert_eq!(
            h.header("content-length").and_then(|v| v.parse::<usize>().ok()),
            Some(g.body.len()),
            "HEAD {path}: Content-Length must be the blob size\n{}",
            h.describe()
        );
        g.body
    }

    /// Tags listed for `repo`.
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let path = format!("/v2/{repo}/tags/list");
        let g = self.get(&path, &[]);
        assert_eq!(g.status, 200, "GET {path}:\n{}", g.describe());
        let v: Value = serde_json::from_slice(&g.body).expect("tags/list JSON");
        v["tags"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    /// Check that every blob and child manifest a manifest refers to is served with
    /// the right bytes (recursively for indexes/lists). Returns all digests seen.
    pub fn assert_complete(&self, repo: &str, m: &FetchedManifest) -> Vec<String> {
        let mut seen = vec![m.digest.clone()];
        if let Some(children) = m.json["manifests"].as_array() {
            for c in children {
                let d = c["digest"].as_str().expect("child digest");
                let child = self.manifest(repo, d);
                assert_eq!(
                    child.bytes.len() as u64,
                    c["size"].as_u64().unwrap(),
                    "child {d}: size in the index differs from served bytes"
                );
                seen.extend(self.assert_complete(repo, &child));
            }
        } else {
            let mut descs = vec![m.json["config"].clone()];
            descs.extend(m.json["layers"].as_array().cloned().unwrap_or_default());
            for d in descs {
                let dg = d["digest"].as_str().expect("descriptor digest");
                let bytes = self.blob(repo, dg);
                assert_eq!(bytes.len() as u64, d["size"].as_u64().unwrap(), "blob {dg}: size");
                seen.push(dg.to_string());
            }
        }
        seen
    }
}

pub struct FetchedManifest {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
    pub json: Value,
}

// ---------------------------------------------------------------------------
// Building images: an OCI image layout written in Rust
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    pub fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub arch: String,
    pub manifest: Descriptor,
    pub manifest_bytes: Vec<u8>,
    pub config: Descriptor,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<String>,
    pub marker: String,
}

impl BuiltImage {
    /// Config and layer digests.
    pub fn blob_digests(&self) -> Vec<String> {
        let mut v = vec![self.config.digest.clone()];
        v.extend(self.layers.iter().map(|l| l.digest.clone()));
        v
    }
}

#[derive(Clone, Debug)]
pub struct BuiltIndex {
    pub index: Descriptor,
    pub index_bytes: Vec<u8>,
    pub children: Vec<BuiltImage>,
}

/// Writes an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`).
pub struct OciLayoutWriter {
    pub dir: PathBuf,
    refs: BTreeMap<String, Descriptor>,
}

impl OciLayoutWriter {
    pub fn new(dir: &Path) -> OciLayoutWriter {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let w = OciLayoutWriter { dir: dir.to_path_buf(), refs: BTreeMap::new() };
        w.write_index();
        w
    }

    pub fn add_blob(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
        let digest = digest_of(bytes);
        let p = self.dir.join("blobs/sha256").join(&digest["sha256:".len()..]);
        fs::write(p, bytes).unwrap();
        Descriptor { media_type: media_type.into(), digest, size: bytes.len() as u64 }
    }

    /// A gzip layer holding `files` (path, content, mode) under directories created
    /// as needed. Returns (descriptor, diff_id).
    pub fn add_layer(&self, files: &[(&str, Vec<u8>, u32)]) -> (Descriptor, String) {
        let tar = make_tar(files);
        let diff_id = digest_of(&tar);
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        (self.add_blob(OCI_LAYER_GZIP, &gz), diff_id)
    }

    /// A two-layer linux image for `arch`. The first layer is shared by all images
    /// built with the same `base_marker`; the second holds `marker` and
    /// `payload_len` bytes of incompressible data.
    pub fn add_image(&self, arch: &str, base_marker: &str, marker: &str, payload_len: usize) -> BuiltImage {
        let (base, base_diff) = self.add_layer(&[
            ("etc/os-release", b"ID=specreg-e2e\n".to_vec(), 0o644),
            ("e2e/base.txt", format!("{base_marker}\n").into_bytes(), 0o644),
            ("bin/hello", b"#!/bin/sh\necho hello from specreg e2e\n".to_vec(), 0o755),
        ]);
        let (top, top_diff) = self.add_layer(&[
            ("e2e/marker.txt", format!("{marker}\n").into_bytes(), 0o644),
            ("e2e/arch.txt", format!("{arch}\n").into_bytes(), 0o644),
            ("e2e/payload.bin", pseudo_random_bytes(marker, payload_len), 0o644),
        ]);
        let config = json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/hello"],
                "Labels": {"specreg.e2e.marker": marker}
            },
            "rootfs": {"type": "layers", "diff_ids": [base_diff, top_diff]},
            "history": [
                {"created": "2024-01-01T00:00:00Z", "created_by": "specreg e2e base"},
                {"created": "2024-01-01T00:00:00Z", "created_by": "specreg e2e top"}
            ]
        });
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_desc = self.add_blob(OCI_CONFIG, &config_bytes);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [base.to_json(), top.to_json()],
            "annotations": {"org.opencontainers.image.description": marker}
        });
        let manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap();
        let manifest_desc = self.add_blob(OCI_MANIFEST, &manifest_bytes);
        BuiltImage {
            arch: arch.into(),
            manifest: manifest_desc,
            manifest_bytes,
            config: config_desc,
            config_bytes,
            layers: vec![base, top],
            diff_ids: vec![base_diff, top_diff],
            marker: marker.into(),
        }
    }

    /// An OCI image index over `children` (platform from each child's arch).
    pub fn add_index(&self, children: &[BuiltImage]) -> BuiltIndex {
        let manifests: Vec<Value> = children
            .iter()
            .map(|c| {
                let mut d = c.manifest.to_json();
                d["platform"] = json!({"architecture": c.arch, "os": "linux"});
                d
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        let index_bytes = serde_json::to_vec_pretty(&index).unwrap();
        let desc = self.add_blob(OCI_INDEX, &index_bytes);
        BuiltIndex { index: desc, index_bytes, children: children.to_vec() }
    }

    /// Point `tag` (org.opencontainers.image.ref.name) at `desc` in index.json.
    pub fn tag(&mut self, tag: &str, desc: &Descriptor) {
        self.refs.insert(tag.into(), desc.clone());
        self.write_index();
    }

    fn write_index(&self) {
        let manifests: Vec<Value> = self
            .refs
            .iter()
            .map(|(t, d)| {
                let mut v = d.to_json();
                v["annotations"] = json!({"org.opencontainers.image.ref.name": t});
                v
            })
            .collect();
        let idx = json!({"schemaVersion": 2, "manifests": manifests});
        fs::write(self.dir.join("index.json"), serde_json::to_vec_pretty(&idx).unwrap()).unwrap();
    }
}

fn make_tar(files: &[(&str, Vec<u8>, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs_done: Vec<String> = Vec::new();
    for (path, content, mode) in files {
        // Parent directories first, once each.
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..parts.len() {
            let d = parts[..i].join("/") + "/";
            if !dirs_done.contains(&d) {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_mtime(1_704_067_200);
                h.set_uid(0);
                h.set_gid(0);
                b.append_data(&mut h, &d, std::io::empty()).unwrap();
                dirs_done.push(d);
            }
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(*mode);
        h.set_size(content.len() as u64);
        h.set_mtime(1_704_067_200);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, path, &content[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// A single-arch (linux/amd64) image tagged `tag` in a new layout at `dir`.
pub fn single_arch_layout(dir: &Path, tag: &str, payload_len: usize) -> BuiltImage {
    let mut w = OciLayoutWriter::new(dir);
    let marker = unique_marker("single");
    let img = w.add_image("amd64", &marker, &marker, payload_len);
    w.tag(tag, &img.manifest);
    img
}

/// A linux/amd64 + linux/arm64 image index tagged `tag` in a new layout at `dir`.
/// The children share their base layer and are also tagged `amd64`/`arm64`.
pub fn multi_arch_layout(dir: &Path, tag: &str, payload_len: usize) -> BuiltIndex {
    let mut w = OciLayoutWriter::new(dir);
    let base = unique_marker("multi-base");
    let amd = w.add_image("amd64", &base, &unique_marker("multi-amd64"), payload_len);
    let arm = w.add_image("arm64", &base, &unique_marker("multi-arm64"), payload_len);
    w.tag(&amd.arch, &amd.manifest);
    w.tag(&arm.arch, &arm.manifest);
    let idx = w.add_index(&[amd, arm]);
    w.tag(tag, &idx.index);
    idx
}

/// Reads an OCI image layout (e.g. one skopeo wrote).
pub struct OciLayout {
    pub dir: PathBuf,
}

impl OciLayout {
    pub fn open(dir: &Path) -> OciLayout {
        let l: Value = serde_json::from_slice(&fs::read(dir.join("oci-layout")).expect("oci-layout"))
            .expect("oci-layout JSON");
        assert_eq!(l["imageLayoutVersion"], "1.0.0");
        OciLayout { dir: dir.to_path_buf() }
    }

    /// The descriptor index.json gives for `tag`.
    pub fn resolve(&self, tag: &str) -> Descriptor {
        let idx: Value = serde_json::from_slice(&fs::read(self.dir.join("index.json")).unwrap()).unwrap();
        for m in idx["manifests"].as_array().expect("index.json manifests") {
            if m["annotations"]["org.opencontainers.image.ref.name"] == tag {
                return Descriptor {
                    media_type: m["mediaType"].as_str().unwrap_or_default().into(),
                    digest: m["digest"].as_str().unwrap().into(),
                    size: m["size"].as_u64().unwrap(),
                };
            }
        }
        panic!("tag {tag} not in {}/index.json:\n{idx:#}", self.dir.display());
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_file()
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let (alg, hex) = digest.split_once(':').expect("digest");
        self.dir.join("blobs").join(alg).join(hex)
    }

    /// A blob's bytes; asserts they hash to `digest`.
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let b = fs::read(self.blob_path(digest))
            .unwrap_or_else(|e| panic!("blob {digest} missing from {}: {e}", self.dir.display()));
        assert_eq!(digest_of(&b), digest, "blob file content does not match its name");
        b
    }

    pub fn json(&self, digest: &str) -> Value {
        serde_json::from_slice(&self.blob(digest)).unwrap()
    }
}

// ---------------------------------------------------------------------------
// Client tools with private configuration
// ---------------------------------------------------------------------------

const POLICY_JSON: &str = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;
const REGISTRIES_CONF: &str = "unqualified-search-registries = []\nshort-name-mode = \"permissive\"\n";

/// Write the private containers/image configuration into `dir` and return the
/// environment that points the tools at it.
fn containers_env(dir: &Path) -> Vec<(String, PathBuf)> {
    fs::create_dir_all(dir.join("registries.d")).unwrap();
    fs::create_dir_all(dir.join("tmp")).unwrap();
    fs::write(dir.join("policy.json"), POLICY_JSON).unwrap();
    fs::write(dir.join("registries.conf"), REGISTRIES_CONF).unwrap();
    fs::write(dir.join("auth.json"), "{}").unwrap();
    vec![
        ("CONTAINERS_REGISTRIES_CONF".into(), dir.join("registries.conf")),
        ("REGISTRY_AUTH_FILE".into(), dir.join("auth.json")),
        ("TMPDIR".into(), dir.join("tmp")),
    ]
}

/// skopeo with a private policy, registries.conf, registries.d and auth file.
pub struct Skopeo {
    bin: PathBuf,
    dir: TempTree,
    env: Vec<(String, PathBuf)>,
}

impl Skopeo {
    pub fn new() -> Skopeo {
        let bin = tool("skopeo");
        let dir = TempTree::new("skopeo");
        let env = containers_env(dir.path());
        Skopeo { bin, dir, env }
    }

    pub fn cmd(&self) -> Command {
        let mut c = sandboxed(self.dir.path(), &self.bin);
        c.envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--policy")
            .arg(self.dir.join("policy.json"))
            .arg("--registries.d")
            .arg(self.dir.join("registries.d"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"));
        c
    }

    /// `skopeo copy [extra] SRC DST`, plain HTTP on both sides.
    pub fn copy(&self, extra: &[&str], src: &str, dst: &str) -> String {
        run_ok(
            self.cmd()
                .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
                .args(extra)
                .args([src, dst]),
        )
    }

    /// `skopeo copy --digestfile` and return the digest it wrote.
    pub fn copy_digest(&self, extra: &[&str], src: &str, dst: &str) -> String {
        let f = self.dir.join(format!("digest-{}", unique_marker("d")));
        let mut args: Vec<&str> = extra.to_vec();
        let fs_ = f.to_string_lossy().to_string();
        args.push("--digestfile");
        args.push(&fs_);
        self.copy(&args, src, dst);
        fs::read_to_string(&f).expect("digestfile").trim().to_string()
    }

    /// Raw manifest bytes as skopeo sees them.
    pub fn inspect_raw(&self, image: &str) -> Vec<u8> {
        let o = run(self.cmd().args(["inspect", "--raw", "--tls-verify=false", image]));
        assert!(o.success(), "skopeo inspect --raw failed\n{}", o.describe());
        o.stdout.into_bytes()
    }
}

/// Root podman with private root/runroot/tmpdir, vfs storage, private configs.
pub struct Podman {
    bin: PathBuf,
    dir: TempTree,
    env: Vec<(String, PathBuf)>,
}

impl Podman {
    pub fn new() -> Podman {
        let bin = tool("podman");
        require_root("podman end-to-end test");
        let dir = TempTree::new("podman");
        let mut env = containers_env(dir.path());
        fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
                dir.join("runroot").display(),
                dir.join("root").display()
            ),
        )
        .unwrap();
        fs::write(
            dir.join("containers.conf"),
            "[engine]\nevents_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\n",
        )
        .unwrap();
        env.push(("CONTAINERS_STORAGE_CONF".into(), dir.join("storage.conf")));
        env.push(("CONTAINERS_CONF".into(), dir.join("containers.conf")));
        env.push(("XDG_CONFIG_HOME".into(), dir.join("xdg-config")));
        Podman { bin, dir, env }
    }

    pub fn cmd(&self) -> Command {
        let mut c = sandboxed(self.dir.path(), &self.bin);
        c.envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.join("libpod-tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .arg("--network-config-dir")
            .arg(self.dir.join("networks"));
        c
    }

    pub fn policy(&self) -> PathBuf {
        self.dir.join("policy.json")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Nothing keeps running (no containers are started); storage is plain vfs
        // directories removed with the temp tree. Unmount anything podman left.
        unmount_under(self.dir.path());
    }
}

/// Root buildah with private vfs storage and private configs (same layout as
/// [`Podman`]).
pub struct Buildah {
    bin: PathBuf,
    dir: TempTree,
    env: Vec<(String, PathBuf)>,
}

impl Buildah {
    pub fn new() -> Buildah {
        let bin = tool("buildah");
        require_root("buildah end-to-end test");
        let dir = TempTree::new("buildah");
        let mut env = containers_env(dir.path());
        fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
                dir.join("runroot").display(),
                dir.join("root").display()
            ),
        )
        .unwrap();
        fs::write(dir.join("containers.conf"), "[engine]\nevents_logger = \"none\"\n").unwrap();
        env.push(("CONTAINERS_STORAGE_CONF".into(), dir.join("storage.conf")));
        env.push(("CONTAINERS_CONF".into(), dir.join("containers.conf")));
        env.push(("XDG_CONFIG_HOME".into(), dir.join("xdg-config")));
        Buildah { bin, dir, env }
    }

    pub fn cmd(&self) -> Command {
        let mut c = sandboxed(self.dir.path(), &self.bin);
        c.envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--registries-conf")
            .arg(self.dir.join("registries.conf"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    pub fn policy(&self) -> PathBuf {
        self.dir.join("policy.json")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        unmount_under(self.dir.path());
    }
}

/// Paths and contents of the regular files in a (possibly gzip-compressed) layer.
pub fn layer_files(blob: &[u8]) -> Vec<(String, Vec<u8>)> {
    let tar_bytes = if blob.starts_with(&[0x1f, 0x8b]) {
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(blob).read_to_end(&mut v).expect("gunzip layer");
        v
    } else {
        blob.to_vec()
    };
    let mut out = Vec::new();
    let mut a = tar::Archive::new(&tar_bytes[..]);
    for e in a.entries().expect("layer tar") {
        let mut e = e.expect("layer tar entry");
        if e.header().entry_type().is_file() {
            let p = e.path().unwrap().to_string_lossy().trim_start_matches("./").to_string();
            let mut c = Vec::new();
            e.read_to_end(&mut c).unwrap();
            out.push((p, c));
        }
    }
    out
}

/// A private containerd: own root, state, sockets and opt dir.
pub struct Containerd {
    pub sock: PathBuf,
    daemon: Daemon,
}

impl Containerd {
    pub fn start(dir: &Path) -> Containerd {
        let bin = tool("containerd");
        require_root("a private containerd");
        fs::create_dir_all(dir).unwrap();
        let sock = dir.join("containerd.sock");
        let cfg = dir.join("containerd.toml");
        fs::write(
            &cfg,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
                 [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
                root = dir.join("containerd/root").display(),
                state = dir.join("containerd/state").display(),
                sock = sock.display(),
                opt = dir.join("containerd/opt").display(),
            ),
        )
        .unwrap();
        let mut cmd = sandboxed(dir, &bin);
        cmd.arg("--config").arg(&cfg);
        let mut daemon = Daemon::spawn("containerd", cmd, dir.join("containerd.log"));
        let s = sock.clone();
        wait_until(
            "the private containerd socket",
            Duration::from_secs(60),
            || std::os::unix::net::UnixStream::connect(&s).is_ok(),
            || daemon.assert_running(),
        );
        Containerd { sock, daemon }
    }

    /// `ctr --address SOCK --namespace e2e ...`
    pub fn ctr(&self) -> Command {
        let mut c = Command::new(tool("ctr"));
        c.arg("--address").arg(&self.sock).args(["--namespace", "e2e"]);
        c
    }
}

/// A private dockerd (vfs storage, own data/exec roots, sockets and containerd)
/// in its own mount namespace: `/etc` is an overlay whose writes (the daemon's
/// key.json, ...) land in the temp dir, and `/run` is a private tmpfs.
pub struct Dockerd {
    sock: PathBuf,
    client_config: PathBuf,
    docker_bin: PathBuf,
    dockerd: Option<Daemon>,
    containerd: Option<Containerd>,
    dir: TempTree,
}

impl Dockerd {
    /// `insecure` are `host:port` registries reachable over plain HTTP.
    pub fn start(insecure: &[&str]) -> Dockerd {
        Dockerd::start_with(insecure, None)
    }

    /// Like [`Dockerd::start`], and inside the daemon's mount namespace
    /// `/etc/docker/certs.d` is a bind mount of `certs_d` (the host's is never
    /// touched): `certs_d/<host:port>/ca.crt` makes dockerd trust that CA for that
    /// registry. dockerd reads the directory on every registry access, so CAs may
    /// be added while it runs. Note that dockerd never verifies certificates of
    /// registries on 127.0.0.0/8 (always "insecure" for docker): use a
    /// non-loopback address (see [`host_ipv4`]) to test CA trust.
    pub fn start_with_certs_d(insecure: &[&str], certs_d: &Path) -> Dockerd {
        Dockerd::start_with(insecure, Some(certs_d))
    }

    fn start_with(insecure: &[&str], certs_d: Option<&Path>) -> Dockerd {
        let docker_bin = tool("docker");
        let dockerd_bin = tool("dockerd");
        let unshare = tool("unshare");
        tool("runc");
        require_root("the docker end-to-end test (private dockerd in a mount namespace)");
        let dir = TempTree::new("dockerd");
        let containerd = Containerd::start(dir.path());
        let sock = dir.join("docker.sock");
        let mut regs: Vec<String> = insecure.iter().map(|s| s.to_string()).collect();
        regs.push("127.0.0.0/8".into());
        fs::write(
            dir.join("daemon.json"),
            serde_json::to_vec_pretty(&json!({"insecure-registries": regs, "debug": true})).unwrap(),
        )
        .unwrap();
        for d in ["sandbox", "data", "exec", "client"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        fs::write(dir.join("client/config.json"), "{}").unwrap();
        let certs_mount = match certs_d {
            Some(c) => {
                fs::create_dir_all(c).unwrap();
                format!("mkdir -p /etc/docker/certs.d\nmount --bind '{}' /etc/docker/certs.d\n", c.display())
            }
            None => String::new(),
        };
        let script = format!(
            "{SANDBOX_PROLOGUE}{certs_mount}\
             exec {dockerd} --containerd {csock} --storage-driver vfs \
               --data-root {d}/data --exec-root {d}/exec --pidfile {d}/docker.pid \
               -H unix://{sock} --bridge none --iptables=false --ip6tables=false \
               --ip-masq=false --userland-proxy=false --config-file {d}/daemon.json\n",
            d = dir.path().display(),
            dockerd = dockerd_bin.display(),
            csock = containerd.sock.display(),
            sock = sock.display(),
        );
        fs::write(dir.join("start.sh"), &script).unwrap();
        let mut cmd = Command::new(unshare);
        cmd.env("E2E_SANDBOX", dir.join("sandbox"))
            .args(["--mount", "--propagation", "private", "sh"])
            .arg(dir.join("start.sh"));
        let mut dockerd = Daemon::spawn("dockerd", cmd, dir.join("dockerd.log"));
        let s = sock.clone();
        wait_until(
            "the private dockerd to answer /_ping",
            Duration::from_secs(120),
            || ping_unix(&s),
            || dockerd.assert_running(),
        );
        Dockerd {
            sock,
            client_config: dir.join("client"),
            docker_bin,
            dockerd: Some(dockerd),
            containerd: Some(containerd),
            dir,
        }
    }

    /// `docker -H unix://SOCK` with a private client config dir.
    pub fn docker(&self) -> Command {
        let mut c = Command::new(&self.docker_bin);
        c.env("DOCKER_CONFIG", &self.client_config)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()));
        c
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.dockerd.as_ref().map(|d| d.log_tail(lines)).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // dockerd first (it talks to containerd while shutting down), then containerd.
        drop(self.dockerd.take());
        drop(self.containerd.take());
        // The TempTree (declared last) unmounts and removes the vfs dirs.
    }
}

fn ping_unix(sock: &Path) -> bool {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200")
}

// ---------------------------------------------------------------------------
// TLS, credentials and the connection info file
// ---------------------------------------------------------------------------

/// The connection info JSON `specreg serve` writes (`buildset_registry.json`).
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub path: PathBuf,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    /// PEM of the CA clients must trust.
    pub cert: String,
    pub json: Value,
}

impl ConnectionInfo {
    pub fn read(path: &Path) -> ConnectionInfo {
        let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading connection info {}: {e}", path.display()));
        let json: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("connection info {} is not JSON: {e}", path.display()));
        let s = |k: &str| {
            json[k]
                .as_str()
                .unwrap_or_else(|| panic!("connection info {}: no string {k:?}:\n{json:#}", path.display()))
                .to_string()
        };
        ConnectionInfo {
            path: path.to_path_buf(),
            host: s("host"),
            port: json["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_else(|| panic!("connection info {}: no port:\n{json:#}", path.display())),
            username: s("username"),
            password: s("password"),
            cert: json["cert"].as_str().unwrap_or_default().to_string(),
            json,
        }
    }

    /// `host:port` as image references spell it (IPv6 in brackets).
    pub fn registry(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `user:password` for `--creds`.
    pub fn creds(&self) -> String {
        format!("{}:{}", self.username, self.password)
    }

    /// Write `cert` as `dir/ca.crt` (a `--cert-dir` for podman/skopeo) and return `dir`.
    pub fn write_cert_dir(&self, dir: &Path) -> PathBuf {
        write_ca_dir(dir, &self.cert)
    }
}

/// Create `dir` holding `ca.crt` = `ca_pem`; returns `dir`.
pub fn write_ca_dir(dir: &Path, ca_pem: &str) -> PathBuf {
    assert!(ca_pem.contains("BEGIN CERTIFICATE"), "not a PEM certificate: {ca_pem:?}");
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("ca.crt"), ca_pem).unwrap();
    dir.to_path_buf()
}

/// The host part of `host:port` (brackets removed).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// This machine's first IPv4 address that is not loopback.
pub fn host_ipv4() -> Option<std::net::Ipv4Addr> {
    let mut found = None;
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below; we only read it in between.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return None;
        }
        let mut p = ifap;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() && i32::from((*a).sa_family) == libc::AF_INET {
                let sin = &*(a as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() && !ip.is_unspecified() {
                    found = Some(ip);
                    break;
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    found
}

const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_encode_with(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding.
pub fn b64(bytes: &[u8]) -> String {
    b64_encode_with(bytes, B64_STD, true)
}

/// URL-safe base64 without padding (JWT segments).
pub fn b64url(bytes: &[u8]) -> String {
    b64_encode_with(bytes, B64_URL, false)
}

/// Decode URL-safe or standard base64, padded or not.
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `Basic <base64(user:password)>`
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", b64(format!("{user}:{password}").as_bytes()))
}

/// DER bytes of every certificate in a PEM bundle.
pub fn pem_certs_der(pem: &str) -> Vec<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.expect("PEM certificate").as_ref().to_vec())
        .collect()
}

/// SHA-256 fingerprint as `openssl x509 -fingerprint -sha256` prints it
/// (upper-case hex pairs joined by `:`).
pub fn sha256_fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A TLS connection to `addr` verifying the server as `server_name` against
/// exactly the CAs in `ca_pem`. Errors (certificate, name, connection) as text.
pub fn tls_connect(
    addr: &str,
    server_name: &str,
    ca_pem: &str,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let config = specreg_certs::client_config_trusting(ca_pem).map_err(|e| format!("bad CA PEM: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("bad server name {server_name:?}: {e}"))?;
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| format!("TLS client: {e}"))?;
    let mut tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| format!("TLS handshake with {addr} as {server_name}: {e}"))?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// The certificates (DER, leaf first) `addr` presents, verified as above.
pub fn tls_peer_certs(addr: &str, server_name: &str, ca_pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let s = tls_connect(addr, server_name, ca_pem)?;
    Ok(s.conn
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect())
}

/// One HTTP/1.1 request over TLS (see [`tls_connect`]); `Host` is `addr`.
pub fn https(
    addr: &str,
    server_name: &str,
    ca_pem: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse, String> {
    let mut s = tls_connect(addr, server_name, ca_pem)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| format!("sending: {e}"))?;
    s.write_all(body).map_err(|e| format!("sending: {e}"))?;
    s.flush().map_err(|e| format!("sending: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A peer closing without close_notify: what arrived is checked below.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    }
    parse_response(method, &raw).map_err(|e| {
        format!(
            "bad response ({e}): {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(500)])
        )
    })
}

// ---------------------------------------------------------------------------
// A job node in a mount namespace (for `specreg use --root /`)
// ---------------------------------------------------------------------------

/// A long-lived private mount namespace standing in for a job node: `/etc`, `/var`
/// and `/usr/local` are overlays whose upper layers live in a temp dir, `/run` is a
/// private tmpfs. `specreg use --root /`, daemons and clients all run inside it
/// through `nsenter`, so they see the same files while the host's stay untouched.
/// The namespace is held open by a `sleep` process; on drop every process left in
/// the namespace (e.g. the detached `specreg proxy`) is killed, by pid.
pub struct NodeNs {
    holder: Option<Daemon>,
    pid: i32,
    mnt_ns: String,
    dir: TempTree,
}

pub const NODE_PROLOGUE: &str = "set -e\n\
     for d in etc var usr/local; do n=$(echo $d | tr / _); mkdir -p \"$E2E_SANDBOX/$n-up\" \"$E2E_SANDBOX/$n-wk\"; \
     mount -t overlay overlay -o \"lowerdir=/$d,upperdir=$E2E_SANDBOX/$n-up,workdir=$E2E_SANDBOX/$n-wk\" /$d; done\n\
     mount -t tmpfs -o mode=755 tmpfs /run\n";

impl NodeNs {
    pub fn start() -> NodeNs {
        require_root("a job node in a mount namespace");
        let dir = TempTree::new("node");
        let mut cmd = Command::new(tool("unshare"));
        cmd.env("E2E_SANDBOX", dir.join("sandbox"))
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!("{NODE_PROLOGUE}exec sleep 100000"));
        let mut holder = Daemon::spawn("node namespace", cmd, dir.join("node.log"));
        let pid = holder.pid();
        wait_until(
            "the node namespace to be set up",
            Duration::from_secs(30),
            || fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim() == "sleep").unwrap_or(false),
            || holder.assert_running(),
        );
        let mnt_ns = fs::read_link(format!("/proc/{pid}/ns/mnt"))
            .expect("node mount namespace")
            .to_string_lossy()
            .to_string();
        let own = fs::read_link("/proc/self/ns/mnt").unwrap().to_string_lossy().to_string();
        assert_ne!(mnt_ns, own, "the node must have its own mount namespace");
        NodeNs { holder: Some(holder), pid, mnt_ns, dir }
    }

    /// `nsenter --mount=/proc/PID/ns/mnt -- program`: `program` sees the node's files.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(tool("nsenter"));
        c.arg(format!("--mount=/proc/{}/ns/mnt", self.pid)).arg("--").arg(program);
        c
    }

    /// The node's view of the absolute path `p`, as the host can read and write it
    /// (`/proc/PID/root/p`).
    pub fn path(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(p.strip_prefix("/").unwrap_or(p))
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Pids (other than the namespace holder) living in the node's mount namespace.
    pub fn processes(&self) -> Vec<(i32, String)> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir("/proc") else { return out };
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            if pid == self.pid {
                continue;
            }
            let Ok(ns) = fs::read_link(format!("/proc/{pid}/ns/mnt")) else { continue };
            if ns.to_string_lossy() != self.mnt_ns {
                continue;
            }
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat.rfind(')').map(|i| stat[i + 1..].trim_start().starts_with('Z')).unwrap_or(false);
            if zombie {
                continue;
            }
            let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim().to_string())
                .unwrap_or_default();
            out.push((pid, cmdline));
        }
        out
    }

    /// Kill every process left in the namespace (SIGTERM, then SIGKILL).
    pub fn kill_all(&self) {
        for sig in [libc::SIGTERM, libc::SIGKILL] {
            let left = self.processes();
            if left.is_empty() {
                return;
            }
            for (pid, _) in &left {
                kill_pid(*pid, sig);
            }
            let start = Instant::now();
            while !self.processes().is_empty() && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for NodeNs {
    fn drop(&mut self) {
        let left = self.processes();
        if !left.is_empty() {
            eprintln!("node namespace: killing leftover processes {left:?}");
        }
        self.kill_all();
        drop(self.holder.take());
    }
}

impl Dockerd {
    /// A private dockerd inside `node` as a job node runs it: it reads
    /// `/etc/docker/daemon.json` (write it first through [`NodeNs::path`], or none
    /// is used) and writes `/var/run/docker.pid`, both the node's. Data and exec
    /// roots, sockets and its containerd are private, as in [`Dockerd::start`].
    pub fn start_in_node(node: &NodeNs) -> Dockerd {
        let docker_bin = tool("docker");
        let dockerd_bin = tool("dockerd");
        tool("runc");
        require_root("a private dockerd in a node namespace");
        let dir = TempTree::new("dockerd");
        let containerd = Containerd::start(dir.path());
        let sock = dir.join("docker.sock");
        for d in ["data", "exec", "client"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        fs::write(dir.join("client/config.json"), "{}").unwrap();
        let mut cmd = node.cmd(&dockerd_bin);
        cmd.arg("--containerd")
            .arg(&containerd.sock)
            .args(["--storage-driver", "vfs", "--data-root"])
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .args(["--pidfile", "/var/run/docker.pid", "-H"])
            .arg(format!("unix://{}", sock.display()))
            .args([
                "--bridge",
                "none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                "--config-file",
                "/etc/docker/daemon.json",
            ]);
        let mut dockerd = Daemon::spawn("dockerd", cmd, dir.join("dockerd.log"));
        let s = sock.clone();
        wait_until(
            "the private dockerd to answer /_ping",
            Duration::from_secs(120),
            || ping_unix(&s),
            || dockerd.assert_running(),
        );
        Dockerd {
            sock,
            client_config: dir.join("client"),
            docker_bin,
            dockerd: Some(dockerd),
            containerd: Some(containerd),
            dir,
        }
    }

    /// The dockerd process id.
    pub fn pid(&self) -> i32 {
        self.dockerd.as_ref().map(|d| d.pid()).unwrap_or(-1)
    }

    /// The daemon's API socket.
    pub fn sock(&self) -> &Path {
        &self.sock
    }

    /// The private containerd dockerd uses (for `ctr`).
    pub fn containerd(&self) -> &Containerd {
        self.containerd.as_ref().expect("containerd running")
    }
}

impl Podman {
    /// Like [`Podman::cmd`] but inside `node` (no private sandbox, and no
    /// `CONTAINERS_REGISTRIES_CONF`: podman reads the node's
    /// `/etc/containers/registries.conf` and `registries.conf.d`, and its
    /// `/etc/containers/certs.d`).
    pub fn cmd_in(&self, node: &NodeNs) -> Command {
        let mut c = node.cmd(&self.bin);
        c.envs(self.env.iter().filter(|(k, _)| k != "CONTAINERS_REGISTRIES_CONF").map(|(k, v)| (k, v)))
            .env_remove("CONTAINERS_REGISTRIES_CONF")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.join("libpod-tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .arg("--network-config-dir")
            .arg(self.dir.join("networks"));
        c
    }
}
