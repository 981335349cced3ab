//! Starting, watching and stopping the registries under test.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServerKind {
    Distribution,
    SpecregFsync,
    SpecregNoFsync,
}

impl ServerKind {
    pub const ALL: [ServerKind; 3] = [ServerKind::Distribution, ServerKind::SpecregFsync, ServerKind::SpecregNoFsync];

    pub fn label(self) -> &'static str {
        match self {
            ServerKind::Distribution => "distribution",
            ServerKind::SpecregFsync => "specreg fsync",
            ServerKind::SpecregNoFsync => "specreg no-fsync",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            ServerKind::Distribution => "distribution",
            ServerKind::SpecregFsync => "specreg_fsync",
            ServerKind::SpecregNoFsync => "specreg_no_fsync",
        }
    }
}

pub struct Server {
    pub kind: ServerKind,
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub log_path: PathBuf,
    /// The directory holding the server's data directory (same filesystem).
    pub dir: PathBuf,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process (all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let raw = fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces: fields are counted after its ')'.
    let after = &raw[raw.rfind(')').ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // f[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11).ok_or_else(|| anyhow!("short stat"))?.parse()?;
    let stime: u64 = f.get(12).ok_or_else(|| anyhow!("short stat"))?.parse()?;
    Ok((utime + stime) as f64 / clock_ticks())
}

/// A `/proc/<pid>/status` field in KiB (VmHWM, VmRSS).
pub fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let raw = fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in raw.lines() {
        if let Some(rest) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
            let n = rest.trim().trim_end_matches("kB").trim();
            return Ok(n.parse()?);
        }
    }
    bail!("no {field} in /proc/{pid}/status")
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn tail_of(path: &Path) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl Server {
    /// `specreg serve --listen 127.0.0.1:0 --data DIR --insecure-http [--no-fsync]`; the
    /// address is read from the `listening on http://ADDR` line.
    pub fn start_specreg(kind: ServerKind, bin: &Path, dir: &Path) -> Result<Server> {
        Server::spawn_specreg(kind, bin, dir, false)
    }

    /// `specreg serve --listen 127.0.0.1:0 --data DIR` as a buildset registry: TLS, the
    /// generated user, connection info in `DIR/data/buildset_registry.json`.
    pub fn start_specreg_tls(bin: &Path, dir: &Path) -> Result<Server> {
        Server::spawn_specreg(ServerKind::SpecregFsync, bin, dir, true)
    }

    fn spawn_specreg(kind: ServerKind, bin: &Path, dir: &Path, tls: bool) -> Result<Server> {
        let data = dir.join("data");
        fs::create_dir_all(&data)?;
        let log_path = dir.join("server.log");
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(&data);
        if !tls {
            cmd.arg("--insecure-http");
        }
        if kind == ServerKind::SpecregNoFsync {
            cmd.arg("--no-fsync");
        }
        cmd.env("SPECREG_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log_path)?);
        let mut child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // `listening on http://ADDR` or `listening on https://ADDR as NAME; ...`
                if let Some(i) = line.find("listening on ") {
                    let rest = &line[i + "listening on ".len()..];
                    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
                    let addr = rest.split_whitespace().next().unwrap_or("").trim_end_matches(';').to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                // Keep draining so the server never blocks on a full pipe.
            }
        });
        let mut server = Server {
            kind,
            child,
            pid,
            addr: "127.0.0.1:0".parse().unwrap(),
            log_path,
            dir: dir.to_owned(),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => {
                server.addr = a.parse().with_context(|| format!("specreg printed address {a:?}"))?;
                Ok(server)
            }
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                bail!(
                    "specreg did not report its address within 30 s (exit: {status:?}); log:\n{}",
                    tail_of(&server.log_path)
                )
            }
        }
    }

    /// `docker-registry serve CONFIG` with filesystem storage under `dir`.
    pub fn start_distribution(bin: &Path, dir: &Path) -> Result<Server> {
        let data = dir.join("data");
        fs::create_dir_all(&data)?;
        let port = free_port()?;
        let config = dir.join("config.yml");
        // The Debian default config minus auth and health checks; blob descriptors cached
        // in memory as that config does; no access log (specreg logs no requests either).
        fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
                 cache:\n    blobdescriptor: inmemory\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                data.display()
            ),
        )?;
        let log_path = dir.join("server.log");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("server.out"))?)
            .stderr(File::create(&log_path)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        Ok(Server {
            kind: ServerKind::Distribution,
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log_path,
            dir: dir.to_owned(),
        })
    }

    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(self.pid)
    }

    pub fn peak_rss_kib(&self) -> Result<u64> {
        status_kib(self.pid, "VmHWM")
    }

    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); log:\n{}",
                self.kind.label(),
                tail_of(&self.log_path)
            );
        }
        Ok(())
    }

    pub fn log_tail(&self) -> String {
        tail_of(&self.log_path)
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: signalling the child we spawned, by its pid.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}
