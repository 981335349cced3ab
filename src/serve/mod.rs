//! `specreg serve`: run the registry (TLS and users by default).

mod config;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use specreg_certs::{CaOptions, CertStore, KeyAlgorithm, LeafOptions};
use specreg_registry::auth::{AuthConfig, Authorizer, CredentialAuth, UserDb};
use specreg_registry::{Server, ServerConfig};

use config::{FileConfig, UserSpec};

#[derive(Args)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address and port to listen on [default: [::]:5000].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory holding blobs, manifests, tags, upload sessions, certs and generated
    /// passwords [default: ./specreg-data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Serve plain HTTP (no TLS). Without users, also without authentication.
    #[arg(long)]
    insecure_http: bool,
    /// A certificate chain (PEM) to serve instead of a generated one.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Extra name or address for the generated certificate (repeatable), e.g. an alias
    /// such as `buildset-registry`.
    #[arg(long = "san")]
    sans: Vec<String>,
    /// Key type of a generated CA: ecdsa or rsa.
    #[arg(long)]
    ca_key: Option<String>,
    /// The host clients use to reach this registry, written to the info file (and added
    /// to the certificate) [default: the listen address, or this host's first address].
    #[arg(long)]
    public_host: Option<String>,
    /// A user: NAME:ACCESS[:file=PATH|env=VAR], ACCESS being read or write (repeatable).
    /// Without a password source one is generated and kept in the data directory.
    /// [default: one generated write user, zuul]
    #[arg(long = "user")]
    users: Vec<UserSpec>,
    /// Let anyone pull without credentials.
    #[arg(long)]
    anonymous_read: bool,
    /// Where to write the connection info JSON [default: <data>/buildset_registry.json].
    #[arg(long)]
    info_file: Option<PathBuf>,
    /// Do not fsync before answering (for throw-away buildset registries); blobs are
    /// still verified before they become visible.
    #[arg(long)]
    no_fsync: bool,
    /// Refuse DELETE requests with 405 UNSUPPORTED.
    #[arg(long)]
    no_delete: bool,
    /// Accept an index whose child manifests are not in the repository.
    #[arg(long)]
    allow_sparse_index: bool,
    /// Delete tags last pushed longer ago than this (e.g. 24h, 7d), and then whatever no
    /// kept tag reaches, every --prune-interval (an intermediate registry).
    #[arg(long, value_parser = crate::prune_cmd::parse_duration)]
    expire: Option<Duration>,
    /// How often to collect garbage while serving [default: 1h when --expire is given].
    /// Without --expire, tags stay and only unreachable content is collected.
    #[arg(long, value_parser = crate::prune_cmd::parse_duration)]
    prune_interval: Option<Duration>,
    /// What the collector never deletes: anything written, linked or used within this
    /// window [default: 1h].
    #[arg(long, value_parser = crate::prune_cmd::parse_duration)]
    grace: Option<Duration>,
}

/// When and how the server collects garbage.
struct PruneSchedule {
    expire: Option<Duration>,
    interval: Duration,
    grace: Duration,
}

/// Everything decided, flags merged over the file.
struct Settings {
    listen: SocketAddr,
    data: PathBuf,
    insecure_http: bool,
    fsync: bool,
    delete: bool,
    allow_sparse_index: bool,
    anonymous_read: bool,
    info_file: PathBuf,
    public_host: Option<String>,
    sans: Vec<String>,
    tls_files: Option<(PathBuf, PathBuf)>,
    ca_key: KeyAlgorithm,
    cert_validity_days: Option<u32>,
    token_lifetime: Duration,
    service: String,
    users: Vec<UserSpec>,
    prune: Option<PruneSchedule>,
}

fn file_duration(value: Option<String>, key: &str) -> anyhow::Result<Option<Duration>> {
    value
        .map(|v| crate::prune_cmd::parse_duration(&v).map_err(|e| anyhow::anyhow!("{key} = {v:?}: {e}")))
        .transpose()
}

fn settings(args: ServeArgs) -> anyhow::Result<Settings> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let data = args.data.or(file.data).unwrap_or_else(|| PathBuf::from("./specreg-data"));
    let ca_key = match args.ca_key.or(file.ca_key).as_deref() {
        None | Some("ecdsa") => KeyAlgorithm::EcdsaP256,
        Some("rsa") => KeyAlgorithm::Rsa2048,
        Some(other) => bail!("--ca-key must be ecdsa or rsa, not {other:?}"),
    };
    let tls_files = match (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key)) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => bail!("a TLS certificate needs its key, and a key its certificate"),
    };
    let mut users: Vec<UserSpec> = args.users;
    if users.is_empty() {
        users = file.users.into_iter().map(UserSpec::from).collect();
    }
    let expire = args.expire.or(file_duration(file.expire, "expire")?);
    let interval = args.prune_interval.or(file_duration(file.prune_interval, "prune_interval")?);
    let grace = args.grace.or(file_duration(file.grace, "grace")?);
    let prune = match (expire, interval) {
        (None, None) => None,
        (expire, interval) => {
            let interval = interval.unwrap_or(Duration::from_secs(3600));
            if interval.is_zero() {
                bail!("--prune-interval must be longer than zero");
            }
            Some(PruneSchedule {
                expire,
                interval,
                grace: grace.unwrap_or(specreg_registry::prune::DEFAULT_GRACE),
            })
        }
    };
    if prune.is_none() && grace.is_some() {
        bail!("--grace only matters with --expire or --prune-interval");
    }
    let mut sans = file.san;
    sans.extend(args.sans);
    Ok(Settings {
        listen: args.listen.or(file.listen).unwrap_or_else(|| "[::]:5000".parse().expect("valid address")),
        info_file: args.info_file.or(file.info_file).unwrap_or_else(|| data.join("buildset_registry.json")),
        data,
        insecure_http: args.insecure_http || file.insecure_http.unwrap_or(false),
        fsync: !args.no_fsync && file.fsync.unwrap_or(true),
        delete: !args.no_delete && file.delete.unwrap_or(true),
        allow_sparse_index: args.allow_sparse_index || file.allow_sparse_index.unwrap_or(false),
        anonymous_read: args.anonymous_read || file.anonymous_read.unwrap_or(false),
        public_host: args.public_host.or(file.public_host),
        sans,
        tls_files,
        ca_key,
        cert_validity_days: file.cert_validity_days,
        token_lifetime: Duration::from_secs(file.token_lifetime_secs.unwrap_or(300)),
        service: file.service.unwrap_or_else(|| "specreg".to_owned()),
        users,
        prune,
    })
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut s = settings(args)?;
    std::fs::create_dir_all(&s.data).with_context(|| format!("creating data directory {}", s.data.display()))?;
    let _lock = crate::data_lock::DataLock::acquire(&s.data, "serve")?;

    let public_host = s.public_host.clone().unwrap_or_else(|| default_public_host(s.listen));
    let tls = if s.insecure_http { None } else { Some(tls_material(&s, &public_host)?) };

    // Users: none at all only for a plain-HTTP registry without any configured.
    let user_specs = if s.users.is_empty() && !s.insecure_http {
        vec!["zuul:write".parse::<UserSpec>().map_err(anyhow::Error::msg)?]
    } else {
        s.users.clone()
    };
    let auth_dir = s.data.join("auth");
    let users = user_specs
        .iter()
        .map(|u| u.resolve(&auth_dir))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let first_user = users.first().cloned();
    let authorizer: Arc<dyn Authorizer> = if users.is_empty() {
        Arc::new(specreg_registry::auth::AllowAll)
    } else {
        let mut c = AuthConfig::new(UserDb::new(users));
        c.anonymous_read = s.anonymous_read;
        c.tls = tls.is_some();
        c.service = s.service.clone();
        c.token_lifetime = s.token_lifetime;
        Arc::new(CredentialAuth::new(c))
    };

    let mut config = ServerConfig::new(&s.data);
    config.fsync = s.fsync;
    config.policy.delete_enabled = s.delete;
    config.policy.allow_sparse_index = s.allow_sparse_index;
    // The collector runs beside requests: they must record what they rely on.
    config.policy.track_activity = s.prune.is_some();
    config.authorizer = authorizer;
    config.tls = tls.as_ref().map(|t| t.server.clone());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(s.listen, config)
            .await
            .with_context(|| format!("starting the registry with data in {}", s.data.display()))?;
        let addr = server.local_addr();
        let scheme = if tls.is_some() { "https" } else { "http" };

        if let Some(user) = &first_user {
            let info = serde_json::json!({
                "host": public_host,
                "port": addr.port(),
                "username": user.name,
                "password": user.password.expose(),
                "cert": tls.as_ref().map(|t| t.ca_pem.clone()).unwrap_or_default(),
            });
            let bytes = serde_json::to_vec_pretty(&info).expect("info serialises");
            specreg_certs::pem_files::write_secret(&s.info_file, &bytes)
                .with_context(|| format!("writing connection info to {}", s.info_file.display()))?;
        }
        tracing::info!(%addr, data = %s.data.display(), fsync = s.fsync, tls = tls.is_some(), "registry ready");
        if let Some(schedule) = s.prune.take() {
            tokio::spawn(prune_periodically(server.app(), schedule));
        }
        let mut out = std::io::stdout().lock();
        let mut line = format!("specreg serve: listening on {scheme}://{addr}");
        if let Some(user) = &first_user {
            line.push_str(&format!(
                " as {}:{}; user {}; connection info in {}",
                host_for_url(&public_host),
                addr.port(),
                user.name,
                s.info_file.display()
            ));
        }
        if let Some(t) = &tls {
            line.push_str(&format!("; {} {}", t.trust_label, t.ca_fingerprint));
        }
        writeln!(out, "{line}")?;
        out.flush()?;
        drop(out);
        server.run_until(crate::shutdown_signal()).await;
        tracing::info!("shutting down");
        Ok(())
    })
}

/// Collects garbage every interval, the first time one interval after start.
async fn prune_periodically(app: Arc<specreg_registry::server::App>, schedule: PruneSchedule) {
    use specreg_registry::prune::{prune, PruneOptions};
    let human = |d: Duration| humantime::format_duration(d).to_string();
    tracing::info!(
        expire = schedule.expire.map_or_else(|| "never".to_owned(), human),
        interval = human(schedule.interval),
        grace = human(schedule.grace),
        "garbage collection scheduled"
    );
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + schedule.interval, schedule.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let opts = PruneOptions::new(schedule.expire, schedule.grace);
        match prune(&app.registry, &opts).await {
            Ok(report) => tracing::info!(
                tags = report.tags.len(),
                manifests = report.manifests.len(),
                blob_links = report.blob_links,
                blobs = report.blobs.len(),
                uploads = report.uploads.len(),
                bytes = report.freed_bytes,
                "prune finished: {}",
                report.summary()
            ),
            // A failed round (a full disk, a read error) is retried at the next tick.
            Err(e) => tracing::error!(error = %e, "prune failed"),
        }
    }
}

struct TlsMaterial {
    server: Arc<rustls::ServerConfig>,
    /// What clients must trust.
    ca_pem: String,
    ca_fingerprint: String,
    /// `CA` for a generated CA; `cert` for given files (the first certificate of the chain).
    trust_label: &'static str,
}

fn tls_material(s: &Settings, public_host: &str) -> anyhow::Result<TlsMaterial> {
    if let Some((cert, key)) = &s.tls_files {
        let chain = std::fs::read_to_string(cert).with_context(|| format!("reading {}", cert.display()))?;
        let key_pem = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
        let server = specreg_certs::server_config(&chain, &key_pem).context("loading the given certificate")?;
        let fp = specreg_certs::sha256_fingerprint_pem(&chain)?;
        return Ok(TlsMaterial { server: Arc::new(server), ca_pem: chain, ca_fingerprint: fp, trust_label: "cert" });
    }
    let mut names = host_names_and_addresses();
    names.push(public_host.trim_matches(|c| c == '[' || c == ']').to_owned());
    if !s.listen.ip().is_unspecified() {
        names.push(s.listen.ip().to_string());
    }
    names.extend(s.sans.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    let ca = CaOptions { key_algorithm: s.ca_key, ..CaOptions::default() };
    let mut leaf = LeafOptions { subject_alt_names: names, key_algorithm: s.ca_key, ..LeafOptions::default() };
    if let Some(days) = s.cert_validity_days {
        leaf.validity_days = days;
        leaf.renew_before_days = leaf.renew_before_days.min(days / 2);
    }
    let issued = CertStore::open_or_create(s.data.join("tls"), &ca, &leaf).context("preparing TLS certificates")?;
    let chain = format!("{}{}", issued.leaf.cert_pem(), issued.ca.cert_pem());
    let server = specreg_certs::server_config(&chain, issued.leaf.key_pem()).context("building the TLS configuration")?;
    Ok(TlsMaterial {
        server: Arc::new(server),
        ca_pem: issued.ca.cert_pem().to_owned(),
        ca_fingerprint: issued.ca.fingerprint(),
        trust_label: "CA",
    })
}

/// This host's name, `localhost`, and every address of its interfaces.
fn host_names_and_addresses() -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if let Ok(h) = nix::unistd::gethostname() {
        if let Some(h) = h.to_str() {
            names.push(h.to_owned());
        }
    }
    for ip in interface_addresses() {
        names.push(ip.to_string());
    }
    names
}

fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        // Link-local IPv6 addresses need a zone and are no use in a certificate.
        .filter(|ip| !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
        .collect()
}

/// The listen address when it is specific; otherwise this host's first IPv4 address
/// that is not loopback (IPv6 literals break image references), else 127.0.0.1.
fn default_public_host(listen: SocketAddr) -> String {
    if !listen.ip().is_unspecified() {
        return listen.ip().to_string();
    }
    interface_addresses()
        .into_iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "127.0.0.1".to_owned())
}

fn host_for_url(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

