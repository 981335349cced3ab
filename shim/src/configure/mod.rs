//! Node configurators: point every container client on a job node at the local specreg mirror,
//! make them trust it, and give `docker push` credentials for the buildset registry, in a way
//! that can be undone byte for byte.
//!
//! One configurator per client, each split in a pure *plan* function (old file content in, new
//! content out; `None` when the file is already as wanted) and the shared *apply*/*undo*
//! machinery of this module:
//!
//! | Configurator | Files (under [`NodeSetup::root`]) | After apply |
//! |---|---|---|
//! | [`docker`] | `/etc/docker/daemon.json` (`registry-mirrors`, ours first), `/etc/docker/certs.d/<mirror>/ca.crt`, `/etc/docker/certs.d/<buildset>/ca.crt` | SIGHUP dockerd ([`process::dockerd_pid`]) |
//! | [`docker`] (containerd image store) | `/etc/docker/certs.d/<registry>/hosts.toml` per registry, mirror first | nothing (read per pull) |
//! | [`intercept`] | `/etc/docker/certs.d/<intercepted host>/ca.crt`; with `system_trust`, the node CA appended to `/etc/ssl/certs/ca-certificates.crt` | nothing |
//! | [`containers`] | `/etc/containers/registries.conf.d/99-specreg.conf` (or, for a v1 main file, `/etc/containers/registries.conf`), `/etc/containers/certs.d/<mirror>/ca.crt` | SIGHUP cri-o ([`process::crio_pid`]) |
//! | [`containerd`] | `<hosts dir>/<registry>/hosts.toml`, `<hosts dir>/<mirror>/ca.crt` | nothing (warns when `config_path` is unset) |
//! | [`buildkit`] | `/etc/buildkit/buildkitd.toml`, `/etc/buildkit/certs.d/<mirror>/ca.crt` | recreate builders / restart buildkitd |
//! | [`etc_hosts`] | `/etc/hosts` (marked block: the buildset registry's alias when it is an IP, intercepted hosts on the proxy's address) | nothing |
//! | [`credentials`] | the credential store of `docker-credential-specreg`, `~/.docker/config.json` (`credHelpers`) | nothing |
//!
//! How the clients address the mirror (the proxy must accept all three):
//! - docker (`registry-mirrors`, docker.io only) sends bare paths: `/v2/library/alpine/...`;
//! - containers (`registries.conf`) uses a path-prefix mirror, `<mirror>/<registry>`, so the
//!   registry is the first path component (`/v2/quay.io/org/img/...`); docker.io has no prefix
//!   (`/v2/library/alpine/...`), matching docker;
//! - containerd (`hosts.toml`) and BuildKit (`mirrors`) use the bare mirror host and send
//!   `?ns=<registry>` on every request (this also works with BuildKit older than 0.12, which
//!   has no path-style mirrors).
//!
//! [`plan`] reads every file and computes every change without writing; a malformed file stops it
//! with an error naming the file. [`apply`] checks that nothing moved since the plan, records
//! every original (bytes, mode, owner, or "absent") and every directory it will create in the
//! state file *before* touching anything, then writes each file atomically. Running plan+apply
//! again changes nothing: files already as wanted are left alone and the state keeps the
//! originals of the first run. [`undo`] works from the state file alone.

pub mod buildkit;
pub mod containerd;
pub mod containers;
pub mod credentials;
pub mod docker;
pub mod etc_hosts;
pub mod intercept;
pub mod process;

mod error;
mod fsutil;
mod json;
mod state;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use error::ConfigureError;
pub use fsutil::Original;
pub use json::Json;
pub use state::{FileRecord, OriginalRecord, State};

/// Registries mirrored when the caller names none.
pub const DEFAULT_REGISTRIES: [&str; 5] = ["docker.io", "quay.io", "gcr.io", "registry.k8s.io", "ghcr.io"];
/// Host name given to a buildset registry that is known only by IP address.
pub const DEFAULT_BUILDSET_ALIAS: &str = "buildset-registry";

/// A password or token; `Debug` never shows it (the registry's own type).
pub use specreg_registry::auth::Secret;

/// Where the local mirror proxy listens, as the clients will spell it (`127.0.0.1:41234`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorEndpoint {
    pub host: String,
    pub port: u16,
}

impl MirrorEndpoint {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        MirrorEndpoint {
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for MirrorEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The buildset registry pushes go to.
#[derive(Clone, Debug)]
pub struct BuildsetInfo {
    /// Host name or IP address (IPv4 or IPv6) of the buildset registry.
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: Secret,
    /// CA certificate (PEM) the buildset registry's certificate chains to.
    pub ca_pem: String,
}

/// Which configurators run. All by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clients {
    pub docker: bool,
    pub containers: bool,
    pub containerd: bool,
    pub buildkit: bool,
    pub etc_hosts: bool,
    pub credentials: bool,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            docker: true,
            containers: true,
            containerd: true,
            buildkit: true,
            etc_hosts: true,
            credentials: true,
        }
    }
}

/// Everything the configurators need. Paths other than `root` are the paths the clients see at
/// run time (`/home/zuul`, `/var/lib/specreg/credentials.json`); they are written under `root`.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    /// `/` in production; a scratch directory in tests or when preparing an image.
    pub root: PathBuf,
    pub mirror: MirrorEndpoint,
    /// The node CA (PEM) that issued the mirror proxy's certificate.
    pub mirror_ca_pem: String,
    /// Registries to mirror (`host[:port]`), [`DEFAULT_REGISTRIES`] by default.
    pub registries: Vec<String>,
    pub buildset: BuildsetInfo,
    /// Name for a buildset registry given as an IP; [`DEFAULT_BUILDSET_ALIAS`] when `None`.
    pub buildset_alias: Option<String>,
    /// Home of the user whose `docker push` needs the credentials (`~/.docker/config.json`).
    /// `None` skips the `credHelpers` entry (the credential store is still written).
    pub job_user_home: Option<PathBuf>,
    /// The credential store read by `docker-credential-specreg` (see
    /// [`crate::credential_helper::DEFAULT_STORE_PATH`]).
    pub credential_store: PathBuf,
    pub clients: Clients,
    /// TLS interception for registries docker has no mirror setting for: `/etc/hosts`
    /// sends them to the proxy, docker trusts the node CA for them (see [`intercept`]).
    pub intercept: Option<Intercept>,
    /// Add the node CA to the system trust store too (the system bundle).
    pub system_trust: bool,
}

/// Which hosts the proxy stands in for, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intercept {
    /// The loopback address the proxy listens on (port 443) for all of them.
    pub addr: IpAddr,
    /// Host names without port (`quay.io`).
    pub hosts: Vec<String>,
}

impl NodeSetup {
    /// A setup with the default registries, alias, credential store and every client on.
    pub fn new(
        root: impl Into<PathBuf>,
        mirror: MirrorEndpoint,
        mirror_ca_pem: impl Into<String>,
        buildset: BuildsetInfo,
    ) -> Self {
        NodeSetup {
            root: root.into(),
            mirror,
            mirror_ca_pem: mirror_ca_pem.into(),
            registries: DEFAULT_REGISTRIES.iter().map(|s| s.to_string()).collect(),
            buildset,
            buildset_alias: None,
            job_user_home: None,
            credential_store: PathBuf::from(crate::credential_helper::DEFAULT_STORE_PATH),
            clients: Clients::default(),
            intercept: None,
            system_trust: false,
        }
    }

    /// The run-time path `p` as written under the root.
    pub fn under_root(&self, p: impl AsRef<Path>) -> PathBuf {
        under_root(&self.root, p.as_ref())
    }

    /// The buildset registry's IP address, when it was given as one.
    pub fn buildset_ip(&self) -> Option<IpAddr> {
        self.buildset
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }

    /// The alias written to `/etc/hosts` for an IP-addressed buildset registry.
    pub fn alias(&self) -> &str {
        self.buildset_alias.as_deref().unwrap_or(DEFAULT_BUILDSET_ALIAS)
    }

    /// The `host:port` names under which clients reach the buildset registry (for `certs.d`,
    /// `credHelpers` and the credential store): the host name; for an IP, the alias and, for
    /// IPv4, the address too (an IPv6 literal cannot appear in an image reference).
    pub fn buildset_names(&self) -> Vec<String> {
        let port = self.buildset.port;
        match self.buildset_ip() {
            Some(IpAddr::V4(ip)) => vec![format!("{}:{port}", self.alias()), format!("{ip}:{port}")],
            Some(IpAddr::V6(_)) => vec![format!("{}:{port}", self.alias())],
            None => vec![format!("{}:{port}", self.buildset.host)],
        }
    }

    /// What a client trusts when it talks to the mirror: the node CA that issued the
    /// proxy's certificate, then the buildset registry's CA, because the proxy redirects
    /// blob downloads to signed URLs on the buildset registry and clients follow a redirect
    /// with the TLS settings of the host they asked (docker, containers/image, containerd).
    pub fn mirror_trust_pem(&self) -> Vec<u8> {
        let mut bundle = pem_bytes(&self.mirror_ca_pem);
        if self.buildset.ca_pem.trim() != self.mirror_ca_pem.trim() {
            bundle.extend_from_slice(&pem_bytes(&self.buildset.ca_pem));
        }
        bundle
    }

    /// Checks names before any file is read.
    pub fn validate(&self) -> Result<(), ConfigureError> {
        let bad = |m: String| Err(ConfigureError::Setup(m));
        if !self.root.is_absolute() {
            return bad(format!("root {} is not an absolute path", self.root.display()));
        }
        if self.mirror.host.parse::<std::net::Ipv6Addr>().is_ok() || self.mirror.host.contains(':') {
            return bad(format!(
                "mirror host {:?} is an IPv6 literal; image references cannot carry one, use 127.0.0.1 or a name",
                self.mirror.host
            ));
        }
        validate_host(&self.mirror.host).map_err(|e| ConfigureError::Setup(format!("mirror host: {e}")))?;
        if self.registries.is_empty() {
            return bad("no registries to mirror".into());
        }
        for r in &self.registries {
            validate_registry(r).map_err(|e| ConfigureError::Setup(format!("registry {r:?}: {e}")))?;
        }
        if self.buildset_ip().is_none() {
            validate_host(&self.buildset.host)
                .map_err(|e| ConfigureError::Setup(format!("buildset registry host: {e}")))?;
        }
        if self.buildset_ip().is_some() || self.buildset_alias.is_some() {
            validate_alias(self.alias())?;
        }
        for (what, pem) in [
            ("mirror CA", &self.mirror_ca_pem),
            ("buildset CA", &self.buildset.ca_pem),
        ] {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return bad(format!("{what} is not a PEM certificate"));
            }
        }
        if let Some(i) = &self.intercept {
            if !i.addr.is_loopback() {
                return bad(format!("interception address {} is not a loopback address", i.addr));
            }
            for h in &i.hosts {
                validate_host(h).map_err(|e| ConfigureError::Setup(format!("intercepted host: {e}")))?;
                if h.chars().any(|c| c.is_ascii_uppercase()) {
                    return bad(format!("intercepted host {h:?}: host names are lower case"));
                }
                if h == crate::proxy::mapping::DOCKER_IO || h.ends_with(".docker.io") {
                    return bad(format!(
                        "intercepted host {h:?}: docker.io goes through dockerd's registry-mirrors, not interception"
                    ));
                }
            }
        }
        if self.clients.credentials && self.buildset.username.is_empty() {
            return bad("buildset username is empty".into());
        }
        if let Some(h) = &self.job_user_home {
            if !h.is_absolute() {
                return bad(format!("job user home {} is not absolute", h.display()));
            }
        }
        if !self.credential_store.is_absolute() {
            return bad(format!(
                "credential store {} is not absolute",
                self.credential_store.display()
            ));
        }
        Ok(())
    }
}

fn validate_host(h: &str) -> Result<(), String> {
    if h.is_empty() || h.len() > 253 {
        return Err("empty or too long".into());
    }
    if h.starts_with(['-', '.']) || h.ends_with(['-', '.']) || h.contains("..") {
        return Err(format!("{h:?} is not a host name"));
    }
    if let Some(c) = h
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "{h:?} contains {c:?}; host names hold letters, digits, '-' and '.'"
        ));
    }
    Ok(())
}

/// A registry name `host[:port]`: it becomes a directory name, so nothing else is allowed.
fn validate_registry(r: &str) -> Result<(), String> {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    if let Some(p) = port {
        p.parse::<u16>().map_err(|_| format!("port {p:?} is not a number"))?;
    }
    if host.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("registry names are lower case".into());
    }
    validate_host(host)
}

fn validate_alias(a: &str) -> Result<(), ConfigureError> {
    if a.contains('_') {
        return Err(ConfigureError::Setup(format!(
            "alias {a:?} contains '_', which docker rejects in a registry name"
        )));
    }
    if a.parse::<IpAddr>().is_ok() {
        return Err(ConfigureError::Setup(format!("alias {a:?} is an address, not a name")));
    }
    validate_host(a).map_err(|e| ConfigureError::Setup(format!("alias: {e}")))
}

pub(crate) fn under_root(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// What a file is for; decides which daemon must reload after it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    DaemonJson,
    DockerCert,
    DockerConfig,
    RegistriesConf,
    ContainersCert,
    ContainerdHosts,
    ContainerdCert,
    BuildkitdToml,
    BuildkitCert,
    EtcHosts,
    CredentialStore,
    /// `/etc/docker/certs.d/<registry>/hosts.toml` (docker with the containerd image store).
    DockerHostsToml,
    /// The system CA bundle with the node CA appended.
    SystemTrust,
}

/// One file of the plan.
#[derive(Clone)]
pub struct FileChange {
    /// Real path (root included).
    pub path: PathBuf,
    pub kind: FileKind,
    /// The file as it was when planned.
    pub original: Original,
    /// The content to write; `None` when the file is already as wanted.
    pub new: Option<Vec<u8>>,
    /// Mode and owner for a file that does not exist yet (an existing file keeps its own).
    pub mode: u32,
    pub owner: Option<(u32, u32)>,
    /// Mode and owner for directories created on the way.
    pub dir_mode: u32,
    pub dir_owner: Option<(u32, u32)>,
}

impl fmt::Debug for FileChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileChange")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("original", &self.original)
            .field("new", &self.new.as_ref().map(|b| format!("{} bytes", b.len())))
            .finish()
    }
}

/// Every change `use` would make, computed without writing anything.
#[derive(Clone, Debug)]
pub struct Plan {
    pub root: PathBuf,
    /// Every file considered, in apply order, including those already as wanted.
    pub changes: Vec<FileChange>,
    /// Things the operator should know (containerd `config_path` unset, shadowing entries, ...).
    pub warnings: Vec<String>,
}

impl Plan {
    /// The files that will be written.
    pub fn pending(&self) -> impl Iterator<Item = &FileChange> {
        self.changes.iter().filter(|c| c.new.is_some())
    }

    /// True when the node is already configured as wanted.
    pub fn is_noop(&self) -> bool {
        self.pending().next().is_none()
    }

    /// Which daemons must re-read their configuration once the plan is applied.
    pub fn reload(&self) -> Reload {
        Reload::for_kinds(self.pending().map(|c| c.kind))
    }
}

/// Daemons to reload after a change. The caller signals them ([`process::reload`]) and checks
/// the result (e.g. `docker info` lists the mirror).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reload {
    /// `daemon.json` changed: SIGHUP dockerd.
    pub dockerd: bool,
    /// registries.conf changed: SIGHUP cri-o (podman, buildah and skopeo read it per run).
    pub crio: bool,
    /// buildkitd.toml changed: restart buildkitd / recreate `docker-container` builders.
    pub buildkit: bool,
}

impl Reload {
    fn for_kinds(kinds: impl Iterator<Item = FileKind>) -> Reload {
        let mut r = Reload::default();
        for k in kinds {
            match k {
                FileKind::DaemonJson => r.dockerd = true,
                FileKind::RegistriesConf => r.crio = true,
                FileKind::BuildkitdToml => r.buildkit = true,
                _ => {}
            }
        }
        r
    }
}

#[derive(Clone, Debug, Default)]
pub struct AppliedReport {
    pub written: Vec<PathBuf>,
    pub unchanged: Vec<PathBuf>,
    pub created_dirs: Vec<PathBuf>,
    pub reload: Reload,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct UndoReport {
    /// False when there was no state file (nothing to undo).
    pub had_state: bool,
    /// Files put back to their original bytes.
    pub restored: Vec<PathBuf>,
    /// Files we had created, now removed.
    pub removed: Vec<PathBuf>,
    pub removed_dirs: Vec<PathBuf>,
    /// Directories we created that now hold someone else's files; left in place.
    pub kept_dirs: Vec<PathBuf>,
    pub reload: Reload,
    pub warnings: Vec<String>,
}

/// Collects the changes of every configurator.
pub(crate) struct Planner<'a> {
    pub setup: &'a NodeSetup,
    pub changes: Vec<FileChange>,
    pub warnings: Vec<String>,
}

/// Options for one planned file.
#[derive(Clone, Copy)]
pub(crate) struct NewFile {
    pub mode: u32,
    pub owner: Option<(u32, u32)>,
    pub dir_mode: u32,
    pub dir_owner: Option<(u32, u32)>,
}

impl NewFile {
    pub const SYSTEM: NewFile = NewFile {
        mode: 0o644,
        owner: None,
        dir_mode: 0o755,
        dir_owner: None,
    };
}

impl<'a> Planner<'a> {
    /// Reads `runtime_path` under the root and plans it with `compute(old) -> new or None`.
    /// A `compute` error becomes [`ConfigureError::Malformed`] naming the file.
    pub fn file(
        &mut self,
        runtime_path: &Path,
        kind: FileKind,
        opts: NewFile,
        compute: impl FnOnce(Option<&[u8]>) -> Result<Option<Vec<u8>>, String>,
    ) -> Result<(), ConfigureError> {
        let path = self.setup.under_root(runtime_path);
        let original = fsutil::read_original(&path)?;
        let new = compute(original.bytes()).map_err(|problem| ConfigureError::malformed(&path, problem))?;
        self.push(FileChange {
            path,
            kind,
            original,
            new,
            mode: opts.mode,
            owner: opts.owner,
            dir_mode: opts.dir_mode,
            dir_owner: opts.dir_owner,
        })
    }

    /// A file whose whole content we own (a CA certificate).
    pub fn exact(&mut self, runtime_path: &Path, kind: FileKind, content: &[u8]) -> Result<(), ConfigureError> {
        self.file(runtime_path, kind, NewFile::SYSTEM, |old| Ok(exact(old, content)))
    }

    fn push(&mut self, change: FileChange) -> Result<(), ConfigureError> {
        if let Some(prev) = self.changes.iter().find(|c| c.path == change.path) {
            let want = |c: &FileChange| c.new.clone().or_else(|| c.original.bytes().map(<[u8]>::to_vec));
            if want(prev) != want(&change) {
                return Err(ConfigureError::Setup(format!(
                    "{} would be written twice with different content",
                    change.path.display()
                )));
            }
            return Ok(());
        }
        self.changes.push(change);
        Ok(())
    }

    pub fn warn(&mut self, w: impl Into<String>) {
        self.warnings.push(w.into());
    }
}

/// `Some(content)` unless the file already holds exactly that.
pub(crate) fn exact(old: Option<&[u8]>, content: &[u8]) -> Option<Vec<u8>> {
    (old != Some(content)).then(|| content.to_vec())
}

/// A PEM with exactly one trailing newline.
pub(crate) fn pem_bytes(pem: &str) -> Vec<u8> {
    let mut s = pem.trim_end().to_string();
    s.push('\n');
    s.into_bytes()
}

/// Writes a file that holds secrets atomically: mode 0600 when new; an existing file keeps its
/// mode and owner.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), ConfigureError> {
    match fsutil::read_original(path)? {
        Original::Present { mode, uid, gid, .. } => fsutil::atomic_write(path, bytes, mode, Some((uid, gid))),
        Original::Absent => fsutil::atomic_write(path, bytes, 0o600, None),
    }
}

/// Reads the node and computes every change. Writes nothing.
pub fn plan(setup: &NodeSetup) -> Result<Plan, ConfigureError> {
    setup.validate()?;
    let mut p = Planner {
        setup,
        changes: Vec::new(),
        warnings: Vec::new(),
    };
    if setup.clients.docker {
        docker::plan(&mut p)?;
    }
    if setup.clients.containers {
        containers::plan(&mut p)?;
    }
    if setup.clients.containerd {
        containerd::plan(&mut p)?;
    }
    if setup.clients.buildkit {
        buildkit::plan(&mut p)?;
    }
    if setup.clients.etc_hosts {
        etc_hosts::plan(&mut p)?;
    }
    intercept::plan(&mut p)?;
    if setup.clients.credentials {
        credentials::plan(&mut p)?;
    }
    Ok(Plan {
        root: setup.root.clone(),
        changes: p.changes,
        warnings: p.warnings,
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the plan. Fails before writing anything if a planned file changed since `plan`.
/// The state file (`state_file`, a real path) records every original before the first write;
/// an existing state file (a second `use`) keeps the originals it already holds.
pub fn apply(plan: &Plan, state_file: &Path) -> Result<AppliedReport, ConfigureError> {
    for c in &plan.changes {
        if fsutil::read_original(&c.path)? != c.original {
            return Err(ConfigureError::ChangedSincePlan { path: c.path.clone() });
        }
    }
    let mut report = AppliedReport {
        unchanged: plan
            .changes
            .iter()
            .filter(|c| c.new.is_none() && c.original != Original::Absent)
            .map(|c| c.path.clone())
            .collect(),
        reload: plan.reload(),
        warnings: plan.warnings.clone(),
        ..Default::default()
    };
    let existing = State::load(state_file)?;
    if let Some(s) = &existing {
        s.check(state_file, &plan.root)?;
    }
    if existing.is_some() && plan.is_noop() {
        return Ok(report);
    }
    let mut state = existing.unwrap_or_else(|| State::new(&plan.root));

    // Directories: those for the state file first (it must exist before anything else changes).
    let state_dirs = fsutil::missing_dirs(state_file);
    // (directory, the change that needs it: its dir_mode and owner apply)
    let mut dirs: Vec<(PathBuf, &FileChange)> = Vec::new();
    for c in plan.pending() {
        for d in fsutil::missing_dirs(&c.path) {
            if !dirs.iter().any(|(p, _)| *p == d) {
                dirs.push((d, c));
            }
        }
    }
    for d in state_dirs.iter().chain(dirs.iter().map(|(d, _)| d)) {
        if !state.created_dirs.contains(d) {
            state.created_dirs.push(d.clone());
        }
    }
    for c in plan.pending() {
        if state.record(&c.path).is_none() {
            state.files.push(FileRecord {
                path: c.path.clone(),
                kind: c.kind,
                original: (&c.original).into(),
                written_sha256: None,
            });
        }
    }
    for d in &state_dirs {
        fsutil::create_dir(d, 0o755, None)?;
    }
    state.save(state_file)?;

    for (d, c) in &dirs {
        fsutil::create_dir(d, c.dir_mode, c.dir_owner)?;
        report.created_dirs.push(d.clone());
    }
    for c in plan.pending() {
        let bytes = c.new.as_deref().expect("pending");
        let (mode, owner) = match &c.original {
            Original::Present { mode, uid, gid, .. } => (*mode, Some((*uid, *gid))),
            Original::Absent => (c.mode, c.owner),
        };
        fsutil::atomic_write(&c.path, bytes, mode, owner)?;
        tracing::info!(path = %c.path.display(), kind = ?c.kind, "written");
        if let Some(r) = state.files.iter_mut().find(|r| r.path == c.path) {
            r.written_sha256 = Some(sha256_hex(bytes));
        }
        report.written.push(c.path.clone());
    }
    state.save(state_file)?;
    Ok(report)
}

/// Restores every file recorded in `state_file` byte-exact (mode and owner too), removes the
/// files and then the (empty) directories `apply` created, and finally the state file.
/// Without a state file there is nothing to undo (`had_state == false`). On an error the state
/// file is kept, so undo can be run again.
pub fn undo(root: &Path, state_file: &Path) -> Result<UndoReport, ConfigureError> {
    let mut report = UndoReport::default();
    let Some(state) = State::load(state_file)? else {
        report
            .warnings
            .push(format!("no state file at {}: nothing to undo", state_file.display()));
        return Ok(report);
    };
    report.had_state = true;
    state.check(state_file, root)?;
    report.reload = Reload::for_kinds(state.files.iter().map(|r| r.kind));
    for rec in state.files.iter().rev() {
        let original = rec.original.to_original().map_err(|problem| ConfigureError::State {
            path: state_file.into(),
            problem,
        })?;
        let current = fsutil::read_original(&rec.path)?;
        if let (Some(sum), Some(now)) = (&rec.written_sha256, current.bytes()) {
            if *sum != sha256_hex(now) {
                report.warnings.push(format!(
                    "{} changed after specreg wrote it; restoring the original anyway",
                    rec.path.display()
                ));
            }
        }
        match &original {
            Original::Absent => {
                if fsutil::remove_file(&rec.path)? {
                    report.removed.push(rec.path.clone());
                }
            }
            Original::Present { bytes, mode, uid, gid } => {
                if current != original {
                    fsutil::atomic_write(&rec.path, bytes, *mode, Some((*uid, *gid)))?;
                }
                report.restored.push(rec.path.clone());
            }
        }
    }
    fsutil::remove_file(state_file)?;
    for d in state.created_dirs.iter().rev() {
        match std::fs::remove_dir(d) {
            Ok(()) => report.removed_dirs.push(d.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                report.warnings.push(format!(
                    "{} holds files specreg did not write; left in place",
                    d.display()
                ));
                report.kept_dirs.push(d.clone());
            }
            Err(e) => return Err(ConfigureError::io(d, "remove directory", e)),
        }
    }
    Ok(report)
}
