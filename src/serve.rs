//! `specreg serve`: run the registry.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use specreg_registry::{Server, ServerConfig};

#[derive(Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, default_value = "[::]:5000")]
    listen: SocketAddr,
    /// Directory holding blobs, manifests, tags and upload sessions.
    #[arg(long, default_value = "./specreg-data")]
    data: PathBuf,
    /// Serve plain HTTP without TLS or authentication (tests, loopback only setups).
    #[arg(long)]
    insecure_http: bool,
    /// Do not fsync before answering (for throw-away buildset registries); blobs are still
    /// verified before they become visible.
    #[arg(long)]
    no_fsync: bool,
    /// Refuse DELETE requests with 405 UNSUPPORTED.
    #[arg(long)]
    no_delete: bool,
    /// Accept an index whose child manifests are not in the repository.
    #[arg(long)]
    allow_sparse_index: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    if !args.insecure_http {
        bail!("TLS is not available yet: pass --insecure-http to serve plain HTTP");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut config = ServerConfig::new(&args.data);
        config.fsync = !args.no_fsync;
        config.policy.delete_enabled = !args.no_delete;
        config.policy.allow_sparse_index = args.allow_sparse_index;
        let server = Server::bind(args.listen, config)
            .await
            .with_context(|| format!("starting the registry with data in {}", args.data.display()))?;
        let addr = server.local_addr();
        tracing::info!(%addr, data = %args.data.display(), fsync = !args.no_fsync, "registry ready");
        let mut out = std::io::stdout().lock();
        writeln!(out, "specreg serve: listening on http://{addr}")?;
        out.flush()?;
        drop(out);
        server.run_until(shutdown_signal()).await;
        tracing::info!("shutting down");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
