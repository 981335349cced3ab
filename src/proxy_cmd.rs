//! `specreg proxy`: the node-local mirror proxy in the foreground (`specreg use` starts it
//! detached).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use specreg_certs::{CaOptions, CertStore, LeafOptions};
use specreg_registry::auth::Secret;
use specreg_shim::proxy::{BuildsetTarget, InterceptConfig, InterceptedHost, Proxy, ProxyConfig};

use crate::info::ConnectionInfo;

#[derive(Args)]
pub struct ProxyArgs {
    /// The buildset registry's connection info (the JSON `specreg serve` writes).
    #[arg(long)]
    pub info: PathBuf,
    /// Loopback address to listen on; port 0 picks a free one (see --addr-file).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Directory of the node-local CA and the proxy's leaf certificate. Without it the
    /// proxy serves plain HTTP.
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Write the address actually listened on to this file once ready.
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
    /// Where a registry's misses go: REGISTRY=URL (repeatable), e.g.
    /// docker.io=https://mirror.example:5000. Default: the real registry.
    #[arg(long = "upstream")]
    pub upstreams: Vec<String>,
    /// A PEM file of extra CAs to trust for upstreams.
    #[arg(long)]
    pub upstream_ca: Option<PathBuf>,
    /// Answer a miss with a fast 404 instead of forwarding it upstream.
    #[arg(long)]
    pub no_upstream: bool,
    /// Name prefix (e.g. quay.io/org/) where a miss is an error, never an upstream image.
    #[arg(long = "authoritative")]
    pub authoritative: Vec<String>,
    /// Also stand in for this registry host (repeatable): serve it by TLS on
    /// --intercept-listen with a leaf for exactly that name from the node CA in --tls-dir.
    #[arg(long = "intercept", requires = "tls_dir")]
    pub intercept: Vec<String>,
    /// Where intercepted hosts are served (the address /etc/hosts gives them).
    #[arg(long, default_value = "127.0.0.2:443")]
    pub intercept_listen: SocketAddr,
    /// A fixed address for an upstream host, HOST=IP (repeatable), used before DNS.
    #[arg(long = "resolve")]
    pub resolve: Vec<String>,
    /// Stream blobs through the proxy instead of redirecting clients to signed URLs on the
    /// buildset registry (for clients that cannot reach it or do not trust its CA).
    #[arg(long)]
    pub stream_blobs: bool,
    /// Redirect only blobs of at least this many bytes; smaller ones are relayed on the
    /// proxy's open connection to the buildset registry, which is faster for them.
    #[arg(long, value_name = "BYTES", default_value_t = specreg_shim::proxy::DEFAULT_REDIRECT_MIN_SIZE)]
    pub redirect_min_size: u64,
}

/// Splits `HOST=IP`.
pub fn parse_resolve(spec: &str) -> anyhow::Result<(String, IpAddr)> {
    let (host, ip) = spec
        .split_once('=')
        .with_context(|| format!("--resolve {spec:?}: expected HOST=IP"))?;
    let ip: IpAddr = ip
        .trim_matches(['[', ']'])
        .parse()
        .with_context(|| format!("--resolve {spec:?}: {ip:?} is not an IP address"))?;
    if host.is_empty() || host.contains(['/', ':']) {
        bail!("--resolve {spec:?}: expected a host name without port before '='");
    }
    Ok((host.to_ascii_lowercase(), ip))
}

/// The node CA's leaf for one intercepted host, issued into (or loaded from) `tls_dir`.
fn intercept_leaf(tls_dir: &std::path::Path, host: &str) -> anyhow::Result<InterceptedHost> {
    let leaf = LeafOptions {
        name: format!("intercept-{host}"),
        common_name: host.to_owned(),
        subject_alt_names: vec![host.to_owned()],
        ..LeafOptions::default()
    };
    let issued = CertStore::open_or_create(tls_dir, &node_ca_options(), &leaf)
        .with_context(|| format!("issuing the interception certificate for {host}"))?;
    Ok(InterceptedHost {
        host: host.to_owned(),
        chain_pem: format!("{}{}", issued.leaf.cert_pem(), issued.ca.cert_pem()),
        key_pem: issued.leaf.key_pem().to_owned(),
    })
}

/// The node CA, as `use` creates it.
pub fn node_ca_options() -> CaOptions {
    CaOptions { common_name: "specreg node CA".to_owned(), ..CaOptions::default() }
}

/// Splits `REGISTRY=URL`.
pub fn parse_upstream(spec: &str) -> anyhow::Result<(String, String)> {
    let (reg, url) = spec
        .split_once('=')
        .with_context(|| format!("--upstream {spec:?}: expected REGISTRY=URL"))?;
    if reg.is_empty() || !(url.starts_with("https://") || url.starts_with("http://")) {
        bail!("--upstream {spec:?}: expected REGISTRY=URL with an http(s) URL");
    }
    Ok((reg.to_owned(), url.trim_end_matches('/').to_owned()))
}

pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let info = ConnectionInfo::load(&args.info)?;
    let tls = match &args.tls_dir {
        Some(dir) => {
            let leaf = LeafOptions { name: "proxy".to_owned(), ..LeafOptions::default() };
            let issued = CertStore::open_or_create(dir, &node_ca_options(), &leaf)
                .context("preparing the proxy's certificates")?;
            let chain = format!("{}{}", issued.leaf.cert_pem(), issued.ca.cert_pem());
            Some(Arc::new(specreg_certs::server_config(&chain, issued.leaf.key_pem())?))
        }
        None => None,
    };
    let buildset = BuildsetTarget {
        url: info.base_url(),
        username: info.username.clone(),
        password: Secret::new(info.password.clone()),
        ca_pem: (!info.cert.is_empty()).then(|| info.cert.clone()),
    };
    let mut config = ProxyConfig::new(args.listen, buildset);
    config.tls = tls;
    config.upstreams = args.upstreams.iter().map(|u| parse_upstream(u)).collect::<anyhow::Result<_>>()?;
    config.upstream_ca_pem = match &args.upstream_ca {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    config.no_upstream = args.no_upstream;
    config.authoritative = args.authoritative.clone();
    config.resolve = args.resolve.iter().map(|r| parse_resolve(r)).collect::<anyhow::Result<_>>()?;
    if !args.intercept.is_empty() {
        let dir = args.tls_dir.as_deref().expect("clap requires --tls-dir with --intercept");
        let hosts = args
            .intercept
            .iter()
            .map(|h| intercept_leaf(dir, &h.to_ascii_lowercase()))
            .collect::<anyhow::Result<_>>()?;
        config.intercept = Some(InterceptConfig { listen: args.intercept_listen, hosts });
    }
    config.blob_redirects = (!args.stream_blobs).then_some(args.redirect_min_size);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let proxy = Proxy::bind(config).await.context("starting the proxy")?;
        let addr = proxy.local_addr();
        if let Some(path) = &args.addr_file {
            specreg_certs::pem_files::write_secret(path, addr.to_string().as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        tracing::info!(%addr, buildset = %info.base_url(), "proxy ready");
        let mut out = std::io::stdout().lock();
        writeln!(out, "specreg proxy: listening on {addr} for {}", info.base_url())?;
        if let Some(i) = proxy.intercept_addr() {
            writeln!(out, "specreg proxy: standing in for {} on {i}", args.intercept.join(", "))?;
        }
        out.flush()?;
        drop(out);
        proxy.run_until(crate::shutdown_signal()).await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::{parse_resolve, parse_upstream};

    #[test]
    fn upstreams_parse() {
        assert_eq!(
            parse_upstream("docker.io=https://mirror:5000/").unwrap(),
            ("docker.io".to_owned(), "https://mirror:5000".to_owned())
        );
        assert!(parse_upstream("docker.io").is_err());
        assert!(parse_upstream("docker.io=ftp://x").is_err());
    }

    #[test]
    fn resolve_overrides_parse() {
        assert_eq!(parse_resolve("Quay.io=127.0.0.1").unwrap(), ("quay.io".to_owned(), "127.0.0.1".parse().unwrap()));
        assert_eq!(parse_resolve("gcr.io=[::1]").unwrap().1, "::1".parse::<std::net::IpAddr>().unwrap());
        assert!(parse_resolve("quay.io").is_err());
        assert!(parse_resolve("quay.io:443=127.0.0.1").is_err());
        assert!(parse_resolve("quay.io=nowhere").is_err());
    }
}
