//! How the transfer commands reach a registry: credentials (flag, environment, file,
//! connection-info JSON, docker config.json and its credential helpers), trusted CAs and
//! the scheme. One `Access` per side of a copy.

use std::path::{Path, PathBuf};

use anyhow::Context;
use specreg_registry::client::{ClientOptions, Credentials, DockerConfig, RegistryClient, Scheme};

use crate::info::ConnectionInfo;

/// What the flags of one side say (see the `access_args!` structs).
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `USER:PASSWORD`.
    pub creds: Option<String>,
    /// A file holding `USER:PASSWORD` (a trailing newline is not part of it).
    pub creds_file: Option<PathBuf>,
    /// Connection-info JSON as `specreg serve` writes it.
    pub info: Option<PathBuf>,
    /// PEM CA file.
    pub ca: Option<PathBuf>,
    /// A docker `certs.d/<host>`-style directory: every `*.crt` in it is trusted.
    pub cert_dir: Option<PathBuf>,
    /// Plain HTTP.
    pub insecure: bool,
}

/// Declares the clap flags of one side with its own prefix (`--src-creds`, `--to-ca` ...).
macro_rules! access_args {
    ($name:ident, $side:literal, $creds:literal, $creds_file:literal, $info:literal, $ca:literal, $cert_dir:literal, $insecure:literal, $env:literal) => {
        #[derive(clap::Args, Debug, Clone, Default)]
        pub struct $name {
            #[arg(help = concat!("Credentials USER:PASSWORD for the ", $side, " registry."), id = $creds, long = $creds, env = $env, value_name = "USER:PASSWORD", hide_env_values = true)]
            pub creds: Option<String>,
            #[arg(help = concat!("A file holding USER:PASSWORD for the ", $side, " registry."), id = $creds_file, long = $creds_file, value_name = "FILE")]
            pub creds_file: Option<std::path::PathBuf>,
            #[arg(help = concat!("Connection-info JSON (as `specreg serve` writes) of the ", $side, " registry: its credentials and CA; plain HTTP when it has no cert."), id = $info, long = $info, value_name = "FILE")]
            pub info: Option<std::path::PathBuf>,
            #[arg(help = concat!("A PEM CA certificate to trust for the ", $side, " registry."), id = $ca, long = $ca, value_name = "FILE")]
            pub ca: Option<std::path::PathBuf>,
            #[arg(help = concat!("A directory of *.crt CA files (docker certs.d style) for the ", $side, " registry."), id = $cert_dir, long = $cert_dir, value_name = "DIR")]
            pub cert_dir: Option<std::path::PathBuf>,
            #[arg(help = concat!("Talk plain HTTP to the ", $side, " registry."), id = $insecure, long = $insecure)]
            pub insecure: bool,
        }

        impl $name {
            pub fn access(&self) -> $crate::access::Access {
                $crate::access::Access {
                    creds: self.creds.clone(),
                    creds_file: self.creds_file.clone(),
                    info: self.info.clone(),
                    ca: self.ca.clone(),
                    cert_dir: self.cert_dir.clone(),
                    insecure: self.insecure,
                }
            }
        }
    };
}
pub(crate) use access_args;

/// Where docker keeps credentials, overridable with `--authfile`.
pub fn docker_config(authfile: Option<&Path>) -> anyhow::Result<DockerConfig> {
    let path = match authfile {
        Some(p) => p.to_owned(),
        None => match DockerConfig::default_path() {
            Some(p) => p,
            None => return Ok(DockerConfig::default()),
        },
    };
    if authfile.is_some() && !path.exists() {
        anyhow::bail!("--authfile {}: no such file", path.display());
    }
    Ok(DockerConfig::load(&path)?)
}

impl Access {
    /// A client for `host` (`host[:port]`; ignored in favour of the info's when
    /// `host` is `None`). Credentials: flag or env, then file, then info, then docker's
    /// config.json for the host.
    pub fn client(
        &self,
        host: Option<&str>,
        docker: &DockerConfig,
        chunk_size: Option<u64>,
    ) -> anyhow::Result<RegistryClient> {
        let info = match &self.info {
            Some(p) => Some(ConnectionInfo::load(p)?),
            None => None,
        };
        let host = match (host, &info) {
            (Some(h), _) => h.to_owned(),
            (None, Some(i)) => i.host_port(),
            (None, None) => anyhow::bail!("no registry given"),
        };
        let mut options = ClientOptions {
            chunk_size,
            ..ClientOptions::default()
        };
        options.credentials = if let Some(c) = &self.creds {
            Credentials::parse_user_pass(c).context("credentials flag or environment")?
        } else if let Some(f) = &self.creds_file {
            let secret = specreg_registry::client::read_secret_file(f)?;
            Credentials::parse_user_pass(secret.expose())
                .with_context(|| format!("{}", f.display()))?
        } else if let Some(i) = info.as_ref().filter(|i| !i.username.is_empty()) {
            Credentials::basic(i.username.clone(), i.password.clone())
        } else {
            docker
                .lookup(&host)
                .with_context(|| format!("credentials for {host}"))?
        };
        let mut pem = String::new();
        if let Some(i) = &info {
            pem.push_str(&i.cert);
        }
        if let Some(ca) = &self.ca {
            pem.push_str(
                &std::fs::read_to_string(ca)
                    .with_context(|| format!("reading {}", ca.display()))?,
            );
        }
        if let Some(dir) = &self.cert_dir {
            let entries =
                std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
            for e in entries {
                let path = e?.path();
                if path.extension().is_some_and(|x| x == "crt") {
                    pem.push_str(
                        &std::fs::read_to_string(&path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    );
                    pem.push('\n');
                }
            }
        }
        options.ca_pem = (!pem.trim().is_empty()).then_some(pem);
        let plain_info = info.as_ref().is_some_and(|i| i.cert.is_empty());
        options.scheme = if self.insecure || plain_info {
            Scheme::Http
        } else {
            Scheme::Https
        };
        Ok(RegistryClient::new(&host, options)?)
    }
}
