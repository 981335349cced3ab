//! TLS interception, the node side: docker has a mirror setting for docker.io only, so for
//! every other registry `/etc/hosts` (see [`super::etc_hosts`]) sends the host to the
//! proxy's interception listener, and docker must trust the node CA for exactly those hosts:
//! `/etc/docker/certs.d/<host>/ca.crt` (with the buildset registry's CA, where blob
//! downloads are redirected). The system trust store is left alone unless
//! [`super::NodeSetup::system_trust`] asks for the node CA there too
//! (`/usr/local/share/ca-certificates/specreg-node-ca.crt`, then `update-ca-certificates`).

use std::path::Path;

use super::{docker, pem_bytes, ConfigureError, FileKind, Planner};

/// Where Debian's `update-ca-certificates` picks up local CAs.
pub const SYSTEM_TRUST_FILE: &str = "/usr/local/share/ca-certificates/specreg-node-ca.crt";

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
        p.exact(Path::new(SYSTEM_TRUST_FILE), FileKind::SystemTrust, &pem_bytes(&setup.mirror_ca_pem))?;
    }
    Ok(())
}
