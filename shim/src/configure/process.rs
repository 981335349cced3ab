//! Finding the daemons to reload, and reloading them with SIGHUP. Paths are read under the
//! root (`<root>/proc`, `<root>/var/run/docker.pid`), so a scratch root finds nothing.

use std::fs;
use std::path::Path;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{under_root, ConfigureError};

/// Pid files dockerd writes by default.
pub const DOCKERD_PIDFILES: [&str; 2] = ["/var/run/docker.pid", "/run/docker.pid"];
/// Pid files cri-o may write (it writes none by default; `/proc` is scanned then).
pub const CRIO_PIDFILES: [&str; 2] = ["/var/run/crio/crio.pid", "/run/crio/crio.pid"];

/// The running dockerd: from its pid file when that names a live `dockerd`, else the first
/// `dockerd` in `/proc` that shares our mount namespace.
pub fn dockerd_pid(root: &Path) -> Option<i32> {
    daemon_pid(root, &DOCKERD_PIDFILES, "dockerd")
}

/// The running cri-o (`crio`).
pub fn crio_pid(root: &Path) -> Option<i32> {
    daemon_pid(root, &CRIO_PIDFILES, "crio")
}

fn daemon_pid(root: &Path, pidfiles: &[&str], comm: &str) -> Option<i32> {
    for f in pidfiles {
        let Ok(text) = fs::read_to_string(under_root(root, Path::new(f))) else {
            continue;
        };
        if let Ok(pid) = text.trim().parse::<i32>() {
            if pid > 0 && process_name(root, pid).as_deref() == Some(comm) {
                return Some(pid);
            }
        }
    }
    // No pid file: a daemon found by name must see the files we wrote, i.e. share our
    // mount namespace (another namespace's dockerd, a test's or a container's, is not ours).
    pids_by_name(root, comm)
        .into_iter()
        .find(|&pid| same_mount_namespace(root, pid))
}

/// Whether `pid` shares this process's mount namespace; true when either link is
/// unreadable (a scratch root without a real `/proc`), since nothing then says otherwise.
fn same_mount_namespace(root: &Path, pid: i32) -> bool {
    let proc_dir = under_root(root, Path::new("/proc"));
    let ours = fs::read_link(proc_dir.join("self/ns/mnt"));
    let theirs = fs::read_link(proc_dir.join(pid.to_string()).join("ns/mnt"));
    match (ours, theirs) {
        (Ok(a), Ok(b)) => a == b,
        _ => true,
    }
}

/// `/proc/<pid>/comm`, trimmed.
pub fn process_name(root: &Path, pid: i32) -> Option<String> {
    let comm = under_root(root, Path::new("/proc")).join(pid.to_string()).join("comm");
    fs::read_to_string(comm).ok().map(|s| s.trim().to_string())
}

/// Every pid whose `comm` is `name`, in ascending order.
pub fn pids_by_name(root: &Path, name: &str) -> Vec<i32> {
    let Ok(dir) = fs::read_dir(under_root(root, Path::new("/proc"))) else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| process_name(root, pid).as_deref() == Some(name))
        .collect();
    pids.sort_unstable();
    pids
}

/// The arguments of a process (`/proc/<pid>/cmdline`); empty when unreadable.
pub fn cmdline(root: &Path, pid: i32) -> Vec<String> {
    let path = under_root(root, Path::new("/proc"))
        .join(pid.to_string())
        .join("cmdline");
    fs::read(path)
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Sends SIGHUP: dockerd re-reads `daemon.json`, cri-o re-reads `registries.conf`.
pub fn reload(pid: i32) -> Result<(), ConfigureError> {
    kill(Pid::from_raw(pid), Signal::SIGHUP)
        .map_err(|e| ConfigureError::Conflict(format!("cannot send SIGHUP to pid {pid}: {e}")))
}

/// SIGHUP to dockerd.
pub fn reload_dockerd(pid: i32) -> Result<(), ConfigureError> {
    reload(pid)
}

/// SIGHUP to cri-o.
pub fn reload_crio(pid: i32) -> Result<(), ConfigureError> {
    reload(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_daemons_by_pidfile_and_proc_scan_under_a_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert_eq!(dockerd_pid(r), None);
        for (pid, comm) in [(41, "bash"), (42, "dockerd"), (43, "crio")] {
            let d = r.join("proc").join(pid.to_string());
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
            fs::write(d.join("cmdline"), format!("{comm}\0--debug\0")).unwrap();
        }
        assert_eq!(dockerd_pid(r), Some(42));
        assert_eq!(crio_pid(r), Some(43));
        // A stale pid file (pid 41 is not dockerd) falls back to the scan.
        fs::create_dir_all(r.join("var/run")).unwrap();
        fs::write(r.join("var/run/docker.pid"), "41\n").unwrap();
        assert_eq!(dockerd_pid(r), Some(42));
        assert_eq!(cmdline(r, 42), vec!["dockerd".to_string(), "--debug".to_string()]);
    }

    #[test]
    fn reload_reaches_a_real_process() {
        // A child that exits 0 on SIGHUP proves the signal arrived.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("trap 'exit 0' HUP; echo ready; while :; do sleep 0.05; done")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
        reload(child.id() as i32).unwrap();
        assert!(child.wait().unwrap().success());
    }
}
