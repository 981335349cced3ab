//! The interception side of `specreg use`: which hosts, on which loopback address, how
//! docker will reach them (classic image store or containerd's), and the system trust store.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;
use specreg_shim::configure::docker::{self, ImageStore};
use specreg_shim::configure::{self, Intercept};
use specreg_shim::proxy::mapping::DOCKER_IO;

/// The hosts to intercept: `--intercept` as given (comma-separated and/or repeated;
/// `none` for none), else every configured registry but docker.io when a dockerd runs
/// (only docker needs it: the other clients have per-registry mirrors).
pub fn hosts(given: &[String], registries: &[String], dockerd_present: bool) -> anyhow::Result<Vec<String>> {
    let listed: Vec<String> = given
        .iter()
        .flat_map(|g| g.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    if listed.iter().any(|h| h == "none") {
        if listed.len() > 1 {
            bail!("--intercept none cannot be combined with host names");
        }
        return Ok(Vec::new());
    }
    let mut out: Vec<String> = if given.is_empty() {
        if !dockerd_present {
            return Ok(Vec::new());
        }
        registries.iter().filter(|r| *r != DOCKER_IO && !r.contains(':')).cloned().collect()
    } else {
        listed
    };
    for h in &out {
        if h.contains(':') {
            bail!("--intercept {h}: interception serves port 443 only; give the host without a port");
        }
    }
    out.dedup();
    Ok(out)
}

/// `explicit`, or the address a running proxy already uses, or the first of 127.0.0.2,
/// 127.0.0.3, ... where port 443 is free.
pub fn address(explicit: Option<IpAddr>, running: Option<SocketAddr>) -> anyhow::Result<IpAddr> {
    if let Some(ip) = explicit {
        if !ip.is_loopback() {
            bail!("--intercept-addr {ip} is not a loopback address");
        }
        return Ok(ip);
    }
    if let Some(a) = running {
        return Ok(a.ip());
    }
    for last in 2..=254u8 {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
        if TcpListener::bind(SocketAddr::new(ip, 443)).is_ok() {
            return Ok(ip);
        }
    }
    bail!("port 443 is taken on every address from 127.0.0.2 to 127.0.0.254; choose one with --intercept-addr")
}

/// Which image store dockerd uses: asked with `docker info`, else read from daemon.json.
pub fn image_store(root: &Path) -> Option<ImageStore> {
    if root == Path::new("/") {
        let out = Command::new("docker")
            .args(["info", "--format", "{{json .DriverStatus}}"])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {
                if let Some(s) = docker::image_store(&String::from_utf8_lossy(&o.stdout)) {
                    return Some(s);
                }
            }
            Ok(o) => tracing::warn!(
                status = %o.status,
                stderr = %String::from_utf8_lossy(&o.stderr).trim(),
                "docker info failed; guessing the image store from daemon.json"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot run docker info; guessing the image store from daemon.json"),
        }
    }
    let daemon_json = std::fs::read(root.join(docker::DAEMON_JSON.trim_start_matches('/'))).ok()?;
    docker::image_store_from_config(&daemon_json)
}

/// One line saying which way docker's pulls of non-docker.io registries were set up.
pub fn describe(store: Option<ImageStore>, intercept: Option<&Intercept>, registries: &[String]) -> String {
    let others: Vec<&str> = registries.iter().map(String::as_str).filter(|r| *r != DOCKER_IO).collect();
    let via_hosts = format!("/etc/docker/certs.d/<registry>/hosts.toml (mirror first) for {}", registries.join(", "));
    match (store, intercept.filter(|i| !i.hosts.is_empty())) {
        (Some(ImageStore::Containerd), Some(i)) => format!(
            "docker uses the containerd image store: every registry pulls through {via_hosts}; \
             the TLS interception of {} on {}:443 stays as the fallback",
            i.hosts.join(", "),
            i.addr
        ),
        (Some(ImageStore::Containerd), None) => format!("docker uses the containerd image store: pulls go through {via_hosts}"),
        (Some(ImageStore::Classic), Some(i)) => format!(
            "docker uses its classic image store: docker.io pulls through registry-mirrors, {} through TLS interception on {}:443",
            i.hosts.join(", "),
            i.addr
        ),
        (Some(ImageStore::Classic), None) => format!(
            "docker uses its classic image store: docker.io pulls through registry-mirrors; {} are not intercepted, \
             so docker pulls them from the real registries",
            others.join(", ")
        ),
        (None, Some(i)) => format!(
            "docker's image store is unknown (no dockerd answered): wrote registry-mirrors, {via_hosts}, and TLS interception of {} on {}:443",
            i.hosts.join(", "),
            i.addr
        ),
        (None, None) => format!("docker's image store is unknown (no dockerd answered): wrote registry-mirrors and {via_hosts}"),
    }
}

/// How long Go's resolver (dockerd's) keeps `/etc/hosts` without looking at it again.
const GO_HOSTS_CACHE: Duration = Duration::from_secs(5);
/// A dockerd younger than this may have looked names up while starting.
const YOUNG_DOCKERD: Duration = Duration::from_secs(30);

/// dockerd reads `/etc/hosts` through Go's resolver, which trusts a copy for 5 s after
/// each read: a lookup just before our write would hide the new entries for that long.
/// A dockerd that is still starting up does such lookups, so for a young dockerd we wait
/// until 5 s after the write (a long-running one rarely looks anything up unasked).
pub fn settle_dockerd_resolver(root: &Path, hosts_written_at: Instant) {
    if root != Path::new("/") {
        return;
    }
    let Some(pid) = configure::process::dockerd_pid(root) else { return };
    let Some(age) = process_age(pid) else { return };
    if age > YOUNG_DOCKERD {
        return;
    }
    let wait = GO_HOSTS_CACHE.saturating_sub(hosts_written_at.elapsed()) + Duration::from_millis(200);
    eprintln!(
        "specreg use: dockerd started {} s ago; waiting {:.1} s for its resolver to re-read /etc/hosts",
        age.as_secs(),
        wait.as_secs_f64()
    );
    std::thread::sleep(wait);
}

/// How long ago `pid` started (`/proc/<pid>/stat` field 22 against `/proc/uptime`).
fn process_age(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let start_ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??.max(1) as u64;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    let started = start_ticks as f64 / ticks as f64;
    Some(Duration::from_secs_f64((uptime - started).max(0.0)))
}

/// The `Intercept` of the node setup.
pub fn setup(addr: IpAddr, hosts: Vec<String>) -> Option<configure::Intercept> {
    (!hosts.is_empty()).then_some(Intercept { addr, hosts })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> Vec<String> {
        ["docker.io", "quay.io", "gcr.io", "localhost:5000"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_hosts_are_the_registries_but_docker_io_when_docker_runs() {
        assert_eq!(hosts(&[], &regs(), true).unwrap(), vec!["quay.io", "gcr.io"]);
        assert!(hosts(&[], &regs(), false).unwrap().is_empty());
        assert!(hosts(&["none".into()], &regs(), true).unwrap().is_empty());
        assert_eq!(
            hosts(&["Quay.io,ghcr.io".into(), "gcr.io".into()], &regs(), false).unwrap(),
            vec!["quay.io", "ghcr.io", "gcr.io"]
        );
        assert!(hosts(&["none,quay.io".into()], &regs(), true).is_err());
        assert!(hosts(&["localhost:5000".into()], &regs(), true).is_err());
    }

    #[test]
    fn our_own_process_is_young() {
        let age = process_age(std::process::id() as i32).unwrap();
        assert!(age < Duration::from_secs(3600), "{age:?}");
    }

    #[test]
    fn the_message_says_which_way() {
        let i = Intercept { addr: "127.0.0.2".parse().unwrap(), hosts: vec!["quay.io".into()] };
        let m = describe(Some(ImageStore::Classic), Some(&i), &regs());
        assert!(m.contains("classic image store") && m.contains("quay.io through TLS interception on 127.0.0.2:443"), "{m}");
        let m = describe(Some(ImageStore::Containerd), None, &regs());
        assert!(m.contains("containerd image store") && m.contains("hosts.toml"), "{m}");
    }
}
