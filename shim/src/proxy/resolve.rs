//! Name resolution for the proxy's own connections.
//!
//! An intercepted host (`quay.io`) is mapped to the proxy itself in `/etc/hosts`, so the
//! system resolver would send the proxy's upstream requests straight back to it. Those hosts
//! are resolved by DNS instead, with the servers of `/etc/resolv.conf` and without the hosts
//! file. A fixed address per host (`--resolve quay.io=192.0.2.7`) comes first, for
//! split-horizon sites and for tests without DNS. Every other name (the buildset registry,
//! upstreams that are not intercepted) goes through the system resolver as before.
//!
//! An answer pointing at the interception listener itself is dropped: following it would
//! loop through the proxy forever.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use hickory_resolver::config::ResolveHosts;
use hickory_resolver::TokioResolver;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use tower_service::Service;

/// Addresses for a name; the port is set by the connector.
pub type Addrs = std::vec::IntoIter<SocketAddr>;

/// How the proxy resolves the hosts it connects to.
#[derive(Clone)]
pub struct UpstreamResolver {
    inner: Arc<Inner>,
    gai: GaiResolver,
}

struct Inner {
    /// Fixed addresses per lower-case host name.
    fixed: HashMap<String, Vec<IpAddr>>,
    /// Hosts resolved by DNS alone (the intercepted ones).
    bypass_hosts: Vec<String>,
    /// The interception listener's address, never a valid answer for those hosts.
    own: Option<IpAddr>,
    /// Built on first use: reading `/etc/resolv.conf` can fail, and most proxies never need it.
    dns: OnceLock<Result<TokioResolver, String>>,
}

impl UpstreamResolver {
    pub fn new(fixed: &[(String, IpAddr)], bypass_hosts: &[String], own: Option<IpAddr>) -> Self {
        let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (host, ip) in fixed {
            map.entry(host.to_ascii_lowercase()).or_default().push(*ip);
        }
        UpstreamResolver {
            inner: Arc::new(Inner {
                fixed: map,
                bypass_hosts: bypass_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                own,
                dns: OnceLock::new(),
            }),
            gai: GaiResolver::new(),
        }
    }
}

impl Inner {
    fn dns(&self) -> Result<&TokioResolver, io::Error> {
        let r = self.dns.get_or_init(|| {
            let mut builder = TokioResolver::builder_tokio().map_err(|e| format!("reading /etc/resolv.conf: {e}"))?;
            // The hosts file is exactly what must not answer here.
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            Ok(builder.build())
        });
        r.as_ref().map_err(|e| io::Error::other(e.clone()))
    }

    async fn resolve_bypassing_hosts(&self, host: &str) -> Result<Vec<IpAddr>, io::Error> {
        let ips: Vec<IpAddr> = match self.fixed.get(host) {
            Some(ips) => ips.clone(),
            None => self
                .dns()?
                .lookup_ip(format!("{host}."))
                .await
                .map_err(|e| io::Error::other(format!("DNS lookup of {host} (bypassing /etc/hosts): {e}")))?
                .iter()
                .collect(),
        };
        let kept: Vec<IpAddr> = ips.into_iter().filter(|ip| Some(*ip) != self.own).collect();
        if kept.is_empty() {
            return Err(io::Error::other(format!(
                "{host} resolves only to the proxy's own interception address; give its real address with --resolve or an --upstream URL"
            )));
        }
        Ok(kept)
    }
}

impl Service<Name> for UpstreamResolver {
    type Response = Addrs;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Addrs, io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let inner = self.inner.clone();
        if inner.fixed.contains_key(&host) || inner.bypass_hosts.contains(&host) {
            return Box::pin(async move {
                let ips = inner.resolve_bypassing_hosts(&host).await?;
                Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect::<Vec<_>>().into_iter())
            });
        }
        let mut gai = self.gai.clone();
        Box::pin(async move {
            let addrs = gai.call(name).await?;
            Ok(addrs.collect::<Vec<_>>().into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn fixed_addresses_win_and_our_own_address_is_never_an_answer() {
        let own: IpAddr = "127.0.0.9".parse().unwrap();
        let up: IpAddr = "127.0.0.1".parse().unwrap();
        let mut r = UpstreamResolver::new(
            &[("Quay.io".into(), own), ("quay.io".into(), up), ("gcr.io".into(), own)],
            &["quay.io".into(), "gcr.io".into()],
            Some(own),
        );
        let got: Vec<SocketAddr> = r.call(name("quay.io")).await.unwrap().collect();
        assert_eq!(got, vec![SocketAddr::new(up, 0)]);
        let err = r.call(name("gcr.io")).await.unwrap_err().to_string();
        assert!(err.contains("own interception address"), "{err}");
        // Anything else: the system resolver (localhost is in every hosts file).
        let got: Vec<SocketAddr> = r.call(name("localhost")).await.unwrap().collect();
        assert!(got.iter().any(|a| a.ip().is_loopback()), "{got:?}");
    }
}
