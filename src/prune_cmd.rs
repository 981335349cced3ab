//! `specreg prune`: expiry and garbage collection of a data directory no server is using.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use specreg_registry::prune::{prune, PruneOptions, DEFAULT_GRACE};
use specreg_registry::registry::{Policy, Registry};
use specreg_registry::storage::fs::FsStorage;

use crate::data_lock::DataLock;

#[derive(Args)]
pub struct PruneArgs {
    /// The registry's data directory (as given to `serve --data`).
    #[arg(long, alias = "data")]
    data_dir: PathBuf,
    /// Delete tags last pushed longer ago than this (e.g. 24h, 7d); without it every tag
    /// stays and only unreachable content goes.
    #[arg(long, value_parser = parse_duration)]
    expire: Option<Duration>,
    /// Keep anything written more recently than this, tagged or not (uploads in progress,
    /// manifests pushed by digest before their index) [default: 1h].
    #[arg(long, value_parser = parse_duration)]
    grace: Option<Duration>,
    /// Report what would be freed, delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// A humane duration: `90s`, `15m`, `24h`, `7d`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 30s, 15m, 24h, 7d)"))
}

pub fn run(args: PruneArgs) -> anyhow::Result<()> {
    if !args.data_dir.join("blobs").is_dir() {
        anyhow::bail!("{} is no specreg data directory (it has no blobs/)", args.data_dir.display());
    }
    let _lock = DataLock::acquire(&args.data_dir, "prune").context(
        "refusing to prune beside a running registry: stop it, or let it prune itself with `serve --expire`",
    )?;
    let storage = FsStorage::open(&args.data_dir, true)
        .with_context(|| format!("opening {}", args.data_dir.display()))?;
    let registry = Registry::new(Arc::new(storage), Policy::default());
    let mut opts = PruneOptions::new(args.expire, args.grace.unwrap_or(DEFAULT_GRACE));
    opts.dry_run = args.dry_run;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime
        .block_on(prune(&registry, &opts))
        .with_context(|| format!("pruning {}", args.data_dir.display()))?;
    tracing::info!(
        dry_run = report.dry_run,
        tags = report.tags.len(),
        manifests = report.manifests.len(),
        blob_links = report.blob_links,
        blobs = report.blobs.len(),
        uploads = report.uploads.len(),
        bytes = report.freed_bytes,
        "prune finished"
    );
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).context("writing the report")?;
        writeln!(out)?;
    } else {
        writeln!(out, "specreg prune: {}", report.summary())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humane_durations_parse() {
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("3x").unwrap_err().contains("expected e.g."));
        assert!(parse_duration("").is_err());
    }
}
