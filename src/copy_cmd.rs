//! `specreg copy SRC DST`: one image (or a whole index) between registries and OCI
//! layout directories.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use specreg_registry::client::DockerConfig;
use specreg_registry::copy::layout::Layout;
use specreg_registry::copy::{Copier, CopyOptions, CopyReport, Endpoint};
use specreg_registry::reference::ImageRef;

use crate::access::{access_args, docker_config, Access};

access_args!(SrcAccess, "source", "src-creds", "src-creds-file", "src-info", "src-ca", "src-cert-dir", "src-insecure", "SPECREG_SRC_CREDS");
access_args!(DstAccess, "destination", "dst-creds", "dst-creds-file", "dst-info", "dst-ca", "dst-cert-dir", "dst-insecure", "SPECREG_DST_CREDS");

/// Flags every transfer command shares.
#[derive(Args, Debug, Clone)]
pub struct TransferArgs {
    /// Blobs transferred at the same time.
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
    /// Docker config.json to read credentials and credential helpers from
    /// [default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json].
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Upload blobs in PATCH chunks of this many bytes instead of one streamed PUT.
    #[arg(long, value_name = "BYTES")]
    pub chunk_size: Option<u64>,
    /// Print a JSON report of what moved on stdout.
    #[arg(long)]
    pub json: bool,
}

impl TransferArgs {
    pub fn copier(&self) -> Copier {
        Copier::new(CopyOptions { jobs: self.jobs.max(1) }, crate::progress::for_stderr())
    }

    pub fn docker_config(&self) -> anyhow::Result<DockerConfig> {
        docker_config(self.authfile.as_deref())
    }
}

#[derive(Args)]
pub struct CopyArgs {
    /// The image to copy: docker://HOST[:PORT]/REPO[:TAG|@DIGEST] or oci:DIR[:NAME].
    pub source: String,
    /// Where to: docker://HOST[:PORT]/REPO[:TAG] (the source's tag when none) or oci:DIR[:NAME].
    pub destination: String,
    #[command(flatten)]
    pub src: SrcAccess,
    #[command(flatten)]
    pub dst: DstAccess,
    /// Talk plain HTTP to both registries.
    #[arg(long)]
    pub insecure: bool,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

/// Parses `docker://REF` or `oci:DIR[:NAME]` into an endpoint.
pub fn endpoint(spec: &str, access: &Access, docker: &DockerConfig, chunk_size: Option<u64>, create_layout: bool) -> anyhow::Result<Endpoint> {
    if let Some(rest) = spec.strip_prefix("docker://") {
        let image = ImageRef::parse(rest).with_context(|| format!("{spec}: not an image reference"))?;
        let client = access.client(Some(&image.registry), docker, chunk_size)?;
        let reference = (image.tag.is_some() || image.digest.is_some()).then(|| image.reference());
        return Ok(Endpoint::Registry { client, repo: image.repo, reference });
    }
    if let Some(rest) = spec.strip_prefix("oci:") {
        let (dir, name) = match rest.split_once(':') {
            Some((d, n)) if !n.is_empty() => (d, Some(n.to_owned())),
            Some((d, _)) => (d, None),
            None => (rest, None),
        };
        let dir = Path::new(dir);
        let layout = if create_layout { Layout::create_on_write(dir) } else { Layout::open(dir)? };
        return Ok(Endpoint::Layout { layout, name });
    }
    anyhow::bail!("{spec}: expected docker://HOST/REPO[:TAG] or oci:DIR[:NAME]")
}

pub fn print_summary(r: &CopyReport) {
    eprintln!(
        "copied {} -> {} {} ({} manifests; blobs: {} copied, {} already there, {} mounted; {} bytes moved in {:.2}s)",
        r.source,
        r.destination,
        r.digest,
        r.manifests.len(),
        r.blobs_copied,
        r.blobs_skipped,
        r.blobs_mounted,
        r.bytes_moved,
        r.seconds
    );
}

/// The source's and the destination's access, with a shared `--insecure` applied to both.
pub fn side_accesses(src: &SrcAccess, dst: &DstAccess, insecure: bool) -> (Access, Access) {
    let (mut src, mut dst) = (src.access(), dst.access());
    src.insecure |= insecure;
    dst.insecure |= insecure;
    (src, dst)
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

pub fn run(args: CopyArgs) -> anyhow::Result<()> {
    let docker = args.transfer.docker_config()?;
    let (src_access, dst_access) = side_accesses(&args.src, &args.dst, args.insecure);
    let chunk = args.transfer.chunk_size;
    let rt = runtime()?;
    let report = rt.block_on(async {
        let src = endpoint(&args.source, &src_access, &docker, chunk, false).context("source")?;
        let dst = endpoint(&args.destination, &dst_access, &docker, chunk, true).context("destination")?;
        let copier = args.transfer.copier();
        copier
            .copy(&src, &dst)
            .await
            .with_context(|| format!("copying {} to {}", args.source, args.destination))
    })?;
    print_summary(&report);
    if args.transfer.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
