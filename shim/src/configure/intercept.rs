//! TLS interception, the node side: docker has a mirror setting for docker.io only, so for
//! every other registry `/etc/hosts` (see [`super::etc_hosts`]) sends the host to the
//! proxy's interception listener, and docker must trust the node CA for exactly those hosts:
//! `/etc/docker/certs.d/<host>/ca.crt` (with the buildset registry's CA, where blob
//! downloads are redirected). The system trust store is left alone unless
//! [`super::NodeSetup::system_trust`] asks for the node CA there too: it is appended to the
//! system bundle `/etc/ssl/certs/ca-certificates.crt` (what OpenSSL, curl, Go and Python
//! read). `update-ca-certificates` is not run: it rewrites links and keystores (Java's)
//! that could then not be put back byte for byte, while the bundle is one file that undo
//! restores exactly. (A later `update-ca-certificates` by someone else drops the node CA.)

use std::path::Path;

use super::{docker, pem_bytes, ConfigureError, FileKind, NewFile, Planner};

/// The system CA bundle (Debian, Ubuntu; also what Go and curl look for first).
pub const SYSTEM_TRUST_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The bundle with `ca_pem` appended; `None` when it already holds it.
pub fn plan_bundle(old: Option<&[u8]>, ca_pem: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let old = old.unwrap_or(b"");
    let text = std::str::from_utf8(old).map_err(|e| format!("not UTF-8: {e}"))?;
    let pem = std::str::from_utf8(ca_pem).map_err(|e| format!("node CA is not UTF-8: {e}"))?;
    if text.contains(pem.trim()) {
        return Ok(None);
    }
    let mut new = text.to_owned();
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(pem);
    Ok(Some(new.into_bytes()))
}

pub(super) fn plan(p: &mut Planner) -> Result<(), ConfigureError> {
    let setup = p.setup;
    if let Some(i) = &setup.intercept {
        if setup.clients.docker {
            for host in &i.hosts {
                // The buildset CA too: blob GETs are redirected to the buildset registry.
                p.exact(&docker::cert_path(host), FileKind::DockerCert, &setup.mirror_trust_pem())?;
            }
        }
        if !setup.clients.etc_hosts && !i.hosts.is_empty() {
            p.warn("interception needs /etc/hosts entries, which are switched off: intercepted hosts still go to the real registries");
        }
    }
    if setup.system_trust {
        let pem = pem_bytes(&setup.mirror_ca_pem);
        p.file(Path::new(SYSTEM_TRUST_FILE), FileKind::SystemTrust, NewFile::SYSTEM, |old| plan_bundle(old, &pem))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_gets_the_node_ca_once() {
        let ca = b"-----BEGIN CERTIFICATE-----\nTk9ERQ==\n-----END CERTIFICATE-----\n";
        let old = b"-----BEGIN CERTIFICATE-----\nU1lTVEVN\n-----END CERTIFICATE-----";
        let new = plan_bundle(Some(old), ca).unwrap().unwrap();
        assert_eq!(new, [&old[..], b"\n", &ca[..]].concat());
        assert_eq!(plan_bundle(Some(&new), ca).unwrap(), None);
        assert_eq!(plan_bundle(None, ca).unwrap().unwrap(), ca.to_vec());
    }
}
