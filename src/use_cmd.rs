//! `specreg use`: point this node's container clients at the buildset registry through a
//! local mirror proxy, and `specreg use --undo` to put everything back.
//!
//! Order matters: every file is planned first (a malformed one stops us before anything
//! changes), then the proxy is started, then the files are written and the daemons
//! reloaded. Our own bookkeeping lives in one state directory.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use specreg_certs::{CaOptions, CertStore, LeafOptions};
use specreg_shim::configure::{self, BuildsetInfo, MirrorEndpoint, NodeSetup, Reload, Secret};

use crate::info::ConnectionInfo;

#[derive(Args)]
pub struct UseArgs {
    /// The buildset registry's connection info (the JSON `specreg serve` writes).
    #[arg(long, required_unless_present = "undo")]
    info: Option<PathBuf>,
    /// Undo a previous `use`: restore every file, stop the proxy, reload the daemons.
    #[arg(long)]
    undo: bool,
    /// Write under this prefix instead of `/` (tests, preparing images). Daemons are
    /// reloaded only when it is `/`.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Registries to redirect (repeatable) [default: docker.io, quay.io, gcr.io,
    /// registry.k8s.io, ghcr.io].
    #[arg(long = "registry")]
    registries: Vec<String>,
    /// Where a registry's misses go: REGISTRY=URL (repeatable).
    #[arg(long = "upstream")]
    upstreams: Vec<String>,
    /// A PEM file of extra CAs the proxy trusts for upstreams.
    #[arg(long)]
    upstream_ca: Option<PathBuf>,
    /// Answer misses with a fast 404 instead of forwarding them upstream.
    #[arg(long)]
    no_upstream: bool,
    /// Name prefix where a miss is an error, never an upstream image (repeatable).
    #[arg(long = "authoritative")]
    authoritative: Vec<String>,
    /// Stream blobs through the proxy instead of redirecting clients to signed URLs on the
    /// buildset registry.
    #[arg(long)]
    stream_blobs: bool,
    /// Redirect only blobs of at least this many bytes (smaller ones are relayed by the
    /// proxy on its open connection).
    #[arg(long, value_name = "BYTES", default_value_t = specreg_shim::proxy::DEFAULT_REDIRECT_MIN_SIZE)]
    redirect_min_size: u64,
    /// Host name for the buildset registry when it is given as an IP address.
    #[arg(long, default_value = "buildset-registry")]
    alias: String,
    /// Home of the job user, whose ~/.docker/config.json gets the credential helper
    /// [default: $HOME].
    #[arg(long)]
    job_user_home: Option<PathBuf>,
    /// Registry hosts docker reaches through TLS interception (comma-separated or
    /// repeated; `none` for none) [default: the registries other than docker.io, when a
    /// dockerd runs].
    #[arg(long = "intercept")]
    intercept: Vec<String>,
    /// Loopback address whose port 443 serves the intercepted hosts [default: the first
    /// of 127.0.0.2, 127.0.0.3, ... with port 443 free].
    #[arg(long)]
    intercept_addr: Option<IpAddr>,
    /// Also add the node CA to the system CA bundle (/etc/ssl/certs/ca-certificates.crt).
    #[arg(long)]
    system_trust: bool,
    /// A fixed address for an upstream host, HOST=IP (repeatable): used instead of DNS
    /// (an intercepted host's own /etc/hosts entry points at the proxy).
    #[arg(long = "resolve")]
    resolve: Vec<String>,
}

/// What `use` itself did, beyond the configured files.
#[derive(Debug, Default, Serialize, Deserialize)]
struct UseState {
    proxy_pid: Option<i32>,
    proxy_addr: Option<SocketAddr>,
    /// The interception listener (`127.0.0.2:443`) and the hosts it serves.
    #[serde(default)]
    intercept_addr: Option<SocketAddr>,
    #[serde(default)]
    intercepted: Vec<String>,
    /// The `docker-credential-specreg` link we created, if any.
    helper_link: Option<PathBuf>,
    /// Directories we created (the state directory's and the link's parents), removed on
    /// undo when empty.
    #[serde(default)]
    created_dirs: Vec<PathBuf>,
}

/// Creates `dir` and its missing parents, appending each one created to `created`.
fn create_dirs(dir: &Path, created: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d {
        if p.exists() {
            break;
        }
        missing.push(p.to_path_buf());
        d = p.parent();
    }
    for p in missing.into_iter().rev() {
        fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
        created.push(p);
    }
    Ok(())
}

fn state_dir(root: &Path) -> PathBuf {
    root.join("var/lib/specreg/use")
}

pub fn run(args: UseArgs) -> anyhow::Result<()> {
    if args.undo {
        return undo(&args.root);
    }
    let started = Instant::now();
    let root = args.root.clone();
    let dir = state_dir(&root);
    let info_path = args.info.clone().expect("clap requires --info without --undo");
    let info = ConnectionInfo::load(&info_path)?;
    let previous: UseState = read_json(&dir.join("use.json"))?.unwrap_or_default();

    // Reuse a running proxy (a second `use` changes nothing), else reserve a port.
    let running = previous.proxy_pid.filter(|pid| is_our_proxy(*pid)).zip(previous.proxy_addr);
    let mirror_addr = match running {
        Some((_, addr)) => addr,
        None => free_loopback_port()?,
    };

    let mut created_dirs = previous.created_dirs.clone();
    create_dirs(&dir, &mut created_dirs)?;
    let tls_dir = dir.join("tls");
    let leaf = LeafOptions { name: "proxy".to_owned(), ..LeafOptions::default() };
    let ca = CaOptions { common_name: "specreg node CA".to_owned(), ..CaOptions::default() };
    let issued = CertStore::open_or_create(&tls_dir, &ca, &leaf).context("preparing the node CA")?;

    let buildset = BuildsetInfo {
        host: info.host.clone(),
        port: info.port,
        username: info.username.clone(),
        password: Secret::new(info.password.clone()),
        ca_pem: info.cert.clone(),
    };
    let mut setup = NodeSetup::new(
        root.clone(),
        MirrorEndpoint::new(mirror_addr.ip().to_string(), mirror_addr.port()),
        issued.ca.cert_pem().to_owned(),
        buildset,
    );
    if !args.registries.is_empty() {
        setup.registries = args.registries.clone();
    }
    setup.buildset_alias = Some(args.alias.clone());
    setup.job_user_home = args.job_user_home.clone().or_else(|| std::env::var_os("HOME").map(PathBuf::from));
    setup.credential_store = PathBuf::from(specreg_shim::credential_helper::DEFAULT_STORE_PATH);
    for r in &args.resolve {
        crate::proxy_cmd::parse_resolve(r)?;
    }
    // A running proxy keeps its interception; otherwise decide it now.
    let (intercept_ip, intercepted) = match running {
        Some(_) => (previous.intercept_addr.map(|a| a.ip()), previous.intercepted.clone()),
        None => {
            let dockerd = configure::process::dockerd_pid(&root).is_some();
            let hosts = crate::use_intercept::hosts(&args.intercept, &setup.registries, dockerd)?;
            let ip = match hosts.is_empty() {
                true => None,
                false => Some(crate::use_intercept::address(args.intercept_addr, None)?),
            };
            (ip, hosts)
        }
    };
    setup.intercept = intercept_ip.and_then(|ip| crate::use_intercept::setup(ip, intercepted.clone()));
    setup.system_trust = args.system_trust;
    let plan = match configure::plan(&setup) {
        Ok(plan) => plan,
        Err(e) => {
            // Nothing was configured: leave no trace of this attempt either.
            if previous.proxy_pid.is_none() {
                let _ = fs::remove_dir_all(&dir);
                for d in created_dirs.iter().rev() {
                    let _ = fs::remove_dir(d);
                }
            }
            return Err(e.into());
        }
    };

    // Every file planned: now start the proxy, then write.
    let helper_link = match &previous.helper_link {
        Some(l) => Some(l.clone()),
        None => install_helper_link(&root, &mut created_dirs)?,
    };
    let intercept_addr = intercept_ip.map(|ip| SocketAddr::new(ip, 443));
    let state = UseState { helper_link, created_dirs, intercept_addr, intercepted: intercepted.clone(), ..previous };
    let state = match running {
        Some((pid, addr)) => UseState { proxy_pid: Some(pid), proxy_addr: Some(addr), ..state },
        None => {
            let info_copy = dir.join("buildset_registry.json");
            specreg_certs::pem_files::write_secret(&info_copy, &fs::read(&info_path)?)?;
            let pid = start_proxy(&args, &dir, &info_copy, &tls_dir, mirror_addr, intercept_addr.zip(Some(&intercepted)))?;
            UseState { proxy_pid: Some(pid), proxy_addr: Some(mirror_addr), ..state }
        }
    };
    write_json(&dir.join("use.json"), &state)?;

    let report = configure::apply(&plan, &dir.join("files.json"))?;
    let hosts_written_at = Instant::now();
    let mut warnings: Vec<&String> = plan.warnings.iter().chain(report.warnings.iter()).collect();
    warnings.dedup();
    for w in warnings {
        eprintln!("specreg use: warning: {w}");
    }
    let elapsed = started.elapsed();
    reload_daemons(&root, &report.reload, Some(mirror_addr))?;
    let hosts_changed = report.written.iter().any(|p| p == &root.join("etc/hosts"));
    if hosts_changed && setup.intercept.is_some() {
        crate::use_intercept::settle_dockerd_resolver(&root, hosts_written_at);
    }
    if setup.clients.docker {
        let store = crate::use_intercept::image_store(&root);
        println!("specreg use: {}", crate::use_intercept::describe(store, setup.intercept.as_ref(), &setup.registries));
    }
    println!(
        "specreg use: mirror proxy on {mirror_addr} for {}; {} files written, {} unchanged ({} ms)",
        info.base_url(),
        report.written.len(),
        report.unchanged.len(),
        elapsed.as_millis()
    );
    Ok(())
}

fn undo(root: &Path) -> anyhow::Result<()> {
    let dir = state_dir(root);
    let state: Option<UseState> = read_json(&dir.join("use.json"))?;
    let Some(state) = state else {
        println!("specreg use --undo: nothing to undo ({} has no state)", dir.display());
        return Ok(());
    };
    if let Some(pid) = state.proxy_pid {
        stop_proxy(pid);
    }
    let report = configure::undo(root, &dir.join("files.json"))?;
    for w in &report.warnings {
        eprintln!("specreg use --undo: warning: {w}");
    }
    if let Some(link) = &state.helper_link {
        let _ = fs::remove_file(link);
    }
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    // Our directories go too, deepest first, unless something else now lives there.
    for d in state.created_dirs.iter().rev() {
        let _ = fs::remove_dir(d);
    }
    reload_daemons(root, &report.reload, None)?;
    println!(
        "specreg use --undo: {} files restored, {} removed, proxy stopped",
        report.restored.len(),
        report.removed.len()
    );
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `value` unless the file already holds exactly it (a second `use` touches nothing).
fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).expect("state serialises");
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    specreg_certs::pem_files::write_secret(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

/// A port on 127.0.0.1 nobody listens on right now.
fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free loopback port")?;
    Ok(l.local_addr()?)
}

/// Whether `pid` is a running `specreg proxy`.
fn is_our_proxy(pid: i32) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.iter().any(|a| *a == b"proxy") && args.first().is_some_and(|a| a.ends_with(b"specreg"))
}

/// Starts `specreg proxy` detached in its own session (CI runners kill their process
/// group when a step ends), logging to the state directory; waits until it listens.
fn start_proxy(
    args: &UseArgs,
    dir: &Path,
    info: &Path,
    tls_dir: &Path,
    addr: SocketAddr,
    intercept: Option<(SocketAddr, &Vec<String>)>,
) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().context("finding the specreg binary")?;
    let addr_file = dir.join("proxy.addr");
    let _ = fs::remove_file(&addr_file);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("proxy.log"))
        .context("opening the proxy log")?;
    let mut cmd = Command::new(exe);
    cmd.arg("proxy")
        .arg("--info")
        .arg(info)
        .arg("--tls-dir")
        .arg(tls_dir)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--addr-file")
        .arg(&addr_file);
    for u in &args.upstreams {
        cmd.arg("--upstream").arg(u);
    }
    if let Some(ca) = &args.upstream_ca {
        cmd.arg("--upstream-ca").arg(ca);
    }
    if args.no_upstream {
        cmd.arg("--no-upstream");
    }
    for a in &args.authoritative {
        cmd.arg("--authoritative").arg(a);
    }
    for r in &args.resolve {
        cmd.arg("--resolve").arg(r);
    }
    if let Some((listen, hosts)) = intercept {
        cmd.arg("--intercept-listen").arg(listen.to_string());
        for h in hosts {
            cmd.arg("--intercept").arg(h);
        }
    }
    if args.stream_blobs {
        cmd.arg("--stream-blobs");
    }
    cmd.arg("--redirect-min-size").arg(args.redirect_min_size.to_string());
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env("NO_COLOR", "1");
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
    }
    let mut child = cmd.spawn().context("starting specreg proxy")?;
    let pid = child.id() as i32;
    fs::write(dir.join("proxy.pid"), format!("{pid}\n")).context("writing the proxy pidfile")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if addr_file.exists() {
            return Ok(pid);
        }
        if let Some(status) = child.try_wait()? {
            let log = fs::read_to_string(dir.join("proxy.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "specreg proxy exited ({status}) before listening; its log ends with:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("specreg proxy did not start listening within 10 s (log in {})", dir.join("proxy.log").display());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stop_proxy(pid: i32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    if !is_our_proxy(pid) {
        return;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_our_proxy(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if is_our_proxy(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// `docker-credential-specreg` on PATH, as a link to this binary (which dispatches on
/// its name). Returns the link when we created it.
fn install_helper_link(root: &Path, created_dirs: &mut Vec<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    let link = root.join("usr/local/bin").join(specreg_shim::credential_helper::HELPER_BINARY);
    if fs::symlink_metadata(&link).is_ok() {
        return Ok(None);
    }
    let exe = std::env::current_exe().context("finding the specreg binary")?;
    create_dirs(link.parent().expect("link has a parent"), created_dirs)?;
    std::os::unix::fs::symlink(&exe, &link).with_context(|| format!("linking {}", link.display()))?;
    Ok(Some(link))
}

/// SIGHUP to dockerd and cri-o when their files changed, and a check that dockerd took
/// the mirror. Only for the real root: under a prefix the daemons are someone else's.
fn reload_daemons(root: &Path, reload: &Reload, mirror: Option<SocketAddr>) -> anyhow::Result<()> {
    if root != Path::new("/") {
        return Ok(());
    }
    if reload.dockerd {
        if let Some(pid) = configure::process::dockerd_pid(root) {
            configure::process::reload_dockerd(pid)?;
            if let Some(addr) = mirror {
                verify_docker_mirror(addr);
            }
        }
    }
    if reload.crio {
        if let Some(pid) = configure::process::crio_pid(root) {
            configure::process::reload_crio(pid)?;
        }
    }
    if reload.buildkit {
        eprintln!("specreg use: buildkitd reads buildkitd.toml only at start: restart it (or recreate buildx builders) to use the mirror");
    }
    Ok(())
}

/// Waits (briefly) until `docker info` lists our mirror; says so when it does not.
fn verify_docker_mirror(addr: SocketAddr) {
    let want = format!("{addr}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("docker")
            .args(["info", "--format", "{{json .RegistryConfig.Mirrors}}"])
            .stderr(Stdio::null())
            .output();
        match out {
            Ok(o) if String::from_utf8_lossy(&o.stdout).contains(&want) => return,
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(o) => {
                eprintln!(
                    "specreg use: warning: dockerd was reloaded but does not list the mirror {want} (mirrors: {})",
                    String::from_utf8_lossy(&o.stdout).trim()
                );
                return;
            }
            Err(_) => return, // no docker CLI: nothing to check with
        }
    }
}
