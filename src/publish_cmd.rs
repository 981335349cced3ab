//! `specreg upload`, `specreg promote` and `specreg cleanup-tags`: argument parsing and
//! wiring of registry connections. The decisions live in `specreg_registry::publish`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use specreg_registry::client::{Credentials, DockerConfig, RegistryClient};
use specreg_registry::publish::cleanup::{self, TagPatterns};
use specreg_registry::publish::images::{self, PromoteTarget};
use specreg_registry::publish::remote::{self, Endpoint, RemoteStore};
use specreg_registry::publish::tag_api::{HubApi, QuayApi, TagApi, HUB_API};
use specreg_registry::publish::{promote, RepoLocation, TempPrefix};
use specreg_registry::reference::{Digest, Tag};

use crate::access::{access_args, docker_config};
use crate::copy_cmd::{self, DstAccess, SrcAccess, TransferArgs};

access_args!(RegistryAccess, "target", "creds", "creds-file", "info", "ca", "cert-dir", "insecure", "SPECREG_CREDS");

/// How to reach and log in to the registries of one run (the same flags for each).
#[derive(Args, Debug)]
pub struct AccessArgs {
    #[command(flatten)]
    registry: RegistryAccess,
    /// Docker config.json to read credentials and credential helpers from
    /// [default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json].
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum TagApiKind {
    /// Docker Hub's API for docker.io, quay's for quay.io (when a token is given), the
    /// OCI tag delete elsewhere.
    Auto,
    Hub,
    Quay,
    Oci,
}

/// Where tags are listed with their times and deleted.
#[derive(Args, Debug)]
pub struct TagApiArgs {
    /// Which tag API the registries have.
    #[arg(long, value_enum, default_value = "auto")]
    tag_api: TagApiKind,
    /// Docker Hub's API root.
    #[arg(long, default_value = HUB_API)]
    hub_api: String,
    /// Quay's API root [default: https://<registry>].
    #[arg(long)]
    quay_api: Option<String>,
    /// File holding a quay API token (one trailing newline ignored).
    #[arg(long, env = "QUAY_API_TOKEN_FILE")]
    quay_token_file: Option<PathBuf>,
}

/// Where the temporary tags' prefix comes from.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct PrefixArgs {
    /// The prefix itself, e.g. `change_1234_`.
    #[arg(long)]
    temp_prefix: Option<String>,
    /// A change number: the prefix is `change_<N>_`.
    #[arg(long)]
    change: Option<u64>,
    /// A pipeline name, for builds without a change: the prefix is `<pipeline>_`.
    #[arg(long)]
    pipeline: Option<String>,
}

impl PrefixArgs {
    fn prefix(&self) -> anyhow::Result<TempPrefix> {
        Ok(match (&self.temp_prefix, self.change, &self.pipeline) {
            (Some(p), _, _) => TempPrefix::parse(p)?,
            (None, Some(n), _) => TempPrefix::for_change(n),
            (None, None, Some(p)) => TempPrefix::for_pipeline(p)?,
            _ => bail!("one of --temp-prefix, --change or --pipeline is needed"),
        })
    }
}

fn parse_tags(list: &[String]) -> anyhow::Result<Vec<Tag>> {
    let mut tags = Vec::new();
    for t in list.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        let tag = Tag::parse(t).with_context(|| format!("--tags: {t:?}"))?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.is_empty() {
        bail!("--tags names no tag");
    }
    Ok(tags)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

impl AccessArgs {
    /// A client for `registry`, and the user name and password Docker Hub's API login
    /// takes (the same ones: flag or environment, file, then docker's config.json).
    fn client(&self, registry: &str, docker: &DockerConfig) -> anyhow::Result<(RegistryClient, Credentials)> {
        let access = self.registry.access();
        let client = access.client(Some(registry), docker, None)?;
        let credentials = if let Some(c) = &access.creds {
            Credentials::parse_user_pass(c).context("--creds")?
        } else if let Some(f) = &access.creds_file {
            let secret = specreg_registry::client::read_secret_file(f)?;
            Credentials::parse_user_pass(secret.expose()).with_context(|| format!("{}", f.display()))?
        } else {
            docker.lookup(registry).with_context(|| format!("credentials for {registry}"))?
        };
        Ok((client, credentials))
    }
}

impl TagApiArgs {
    async fn tag_api(&self, registry: &str, credentials: &Credentials) -> anyhow::Result<Option<TagApi>> {
        let quay_token = match &self.quay_token_file {
            Some(p) => Some(specreg_registry::client::read_secret_file(p)?.expose().to_owned()),
            None => None,
        };
        let kind = match self.tag_api {
            TagApiKind::Auto if registry == "docker.io" && !credentials.is_anonymous() => TagApiKind::Hub,
            TagApiKind::Auto if registry == "quay.io" && quay_token.is_some() => TagApiKind::Quay,
            TagApiKind::Auto => TagApiKind::Oci,
            k => k,
        };
        Ok(match kind {
            TagApiKind::Hub => {
                let Credentials::Basic { username, password } = credentials else {
                    bail!("Docker Hub's tag API needs a user name and password for {registry} (--creds, --creds-file or docker's config)");
                };
                let api = HubApi::login(&self.hub_api, username, password.expose())
                    .await
                    .with_context(|| format!("logging in to {}", self.hub_api))?;
                Some(TagApi::Hub(api))
            }
            TagApiKind::Quay => {
                let Some(token) = quay_token else { bail!("quay's tag API needs --quay-token-file") };
                let base = self.quay_api.clone().unwrap_or_else(|| format!("https://{registry}"));
                Some(TagApi::Quay(QuayApi::new(&base, &token)?))
            }
            _ => None,
        })
    }
}

/// One connection per registry named by `repos`.
async fn connect(
    repos: impl IntoIterator<Item = &RepoLocation>,
    access: &AccessArgs,
    tag_api: &TagApiArgs,
) -> anyhow::Result<RemoteStore> {
    let registries: BTreeSet<&str> = repos.into_iter().map(|r| r.registry.as_str()).collect();
    let docker = docker_config(access.authfile.as_deref())?;
    let mut store = RemoteStore::new();
    for registry in registries {
        let (client, credentials) = access.client(registry, &docker)?;
        let tag_api = tag_api.tag_api(registry, &credentials).await?;
        store.add(registry, Endpoint { client, tag_api });
    }
    Ok(store)
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// The repository, REGISTRY/REPO (with --tags).
    #[arg(long, conflicts_with = "images", requires = "tags")]
    repo: Option<String>,
    /// Final tags, comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// The digest the gate tested; every temporary tag must hold it.
    #[arg(long, requires = "repo")]
    expect_digest: Option<String>,
    /// Several repositories as one step: a JSON list (see README) or Zuul artifacts.
    #[arg(long)]
    images: Option<PathBuf>,
    #[command(flatten)]
    prefix: PrefixArgs,
    #[command(flatten)]
    access: AccessArgs,
    #[command(flatten)]
    tag_api: TagApiArgs,
}

pub fn promote(args: PromoteArgs) -> anyhow::Result<()> {
    let prefix = args.prefix.prefix()?;
    let targets: Vec<PromoteTarget> = match (&args.images, &args.repo) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            images::parse(&text).with_context(|| format!("reading the image list {}", path.display()))?
        }
        (None, Some(repo)) => {
            let repo = RepoLocation::parse(repo)?;
            let expect = match &args.expect_digest {
                Some(d) => Some(Digest::parse(d).with_context(|| format!("--expect-digest {d:?}"))?),
                None => None,
            };
            parse_tags(&args.tags)?
                .into_iter()
                .map(|tag| PromoteTarget { repo: repo.clone(), tag, expect: expect.clone() })
                .collect()
        }
        (None, None) => bail!("promote needs --repo with --tags, or --images"),
    };
    runtime()?.block_on(async {
        let store = connect(targets.iter().map(|t| &t.repo), &args.access, &args.tag_api).await?;
        let started = std::time::Instant::now();
        let report = promote::promote(&store, &targets, &prefix).await?;
        let mut out = std::io::stdout().lock();
        for m in &report.moved {
            let was = m.previous.as_ref().map_or("new".to_owned(), |p| format!("was {}", p.digest));
            writeln!(out, "promoted {}:{} -> {} ({was})", m.repo, m.target, m.manifest.digest)?;
        }
        for (repo, tag) in &report.deleted {
            writeln!(out, "removed {repo}:{tag}")?;
        }
        writeln!(out, "specreg promote: {} tag(s) in {:.2?}", report.moved.len(), started.elapsed())?;
        for (repo, tag, err) in &report.not_deleted {
            eprintln!("specreg: warning: the temporary tag {repo}:{tag} was not removed: {err}");
        }
        Ok(())
    })
}

#[derive(Args, Debug)]
pub struct CleanupArgs {
    /// Repositories to sweep, REGISTRY/REPO (repeatable).
    #[arg(long = "repo", required = true)]
    repos: Vec<String>,
    /// Minimum age of a tag to remove, e.g. 24h, 90m, 2d.
    #[arg(long, default_value = "24h")]
    older_than: String,
    /// Shell-style tag patterns (`*`, `?`), e.g. 'change_*' (repeatable).
    #[arg(long = "pattern", required = true)]
    patterns: Vec<String>,
    /// Only print what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Tags per page asked of an OCI registry's tag list (`n`); all pages are read.
    #[arg(long)]
    page_size: Option<usize>,
    #[command(flatten)]
    access: AccessArgs,
    #[command(flatten)]
    tag_api: TagApiArgs,
}

pub fn cleanup_tags(args: CleanupArgs) -> anyhow::Result<()> {
    let repos: Vec<RepoLocation> = args.repos.iter().map(|r| RepoLocation::parse(r)).collect::<Result<_, _>>()?;
    let patterns = TagPatterns::new(args.patterns.clone())?;
    let older_than = cleanup::parse_age(&args.older_than)?;
    runtime()?.block_on(async {
        let store = connect(repos.iter(), &args.access, &args.tag_api).await?;
        let mut failures = 0;
        let mut out = std::io::stdout().lock();
        for repo in &repos {
            let ep = store.endpoint(repo)?;
            let now = cleanup::now();
            let r = remote::cleanup(ep, &repo.name, &patterns, older_than, now, args.page_size, args.dry_run)
                .await
                .with_context(|| format!("sweeping {repo}"))?;
            let verb = if args.dry_run { "would remove" } else { "removed" };
            for t in &r.removed {
                writeln!(out, "{verb} {repo}:{t}")?;
            }
            for t in &r.unknown_age {
                writeln!(out, "kept {repo}:{t} (its age is unknown)")?;
            }
            for (t, e) in &r.failed {
                eprintln!("specreg: error: removing {repo}:{t}: {e}");
            }
            failures += r.failed.len();
            writeln!(
                out,
                "specreg cleanup-tags: {repo}: {} tags, {} matching, {} {verb}",
                r.listed,
                r.matched,
                r.removed.len()
            )?;
        }
        if failures > 0 {
            bail!("{failures} tag(s) could not be removed");
        }
        Ok(())
    })
}

#[derive(Args)]
pub struct UploadArgs {
    /// The tested image: docker://HOST[:PORT]/REPO[:TAG|@DIGEST] or oci:DIR[:NAME].
    source: String,
    /// The final repository, REGISTRY/REPO.
    #[arg(long)]
    to: String,
    /// Final tags, comma-separated or repeated; each is uploaded as <prefix><tag>.
    #[arg(long, value_delimiter = ',', required = true)]
    tags: Vec<String>,
    #[command(flatten)]
    prefix: PrefixArgs,
    #[command(flatten)]
    src: SrcAccess,
    #[command(flatten)]
    dst: DstAccess,
    /// Talk plain HTTP to both registries.
    #[arg(long)]
    insecure: bool,
    #[command(flatten)]
    transfer: TransferArgs,
    /// Write the image list `promote --images` takes, with the uploaded digest.
    #[arg(long, value_name = "FILE")]
    write_images: Option<PathBuf>,
}

pub fn upload(args: UploadArgs) -> anyhow::Result<()> {
    let prefix = args.prefix.prefix()?;
    let tags = parse_tags(&args.tags)?;
    let temp_tags: Vec<Tag> = tags.iter().map(|t| prefix.temp_tag(t)).collect::<Result<_, _>>()?;
    let repo = RepoLocation::parse(&args.to)?;
    let docker = args.transfer.docker_config()?;
    let (src_access, dst_access) = copy_cmd::side_accesses(&args.src, &args.dst, args.insecure);
    let chunk = args.transfer.chunk_size;
    let (report, digest) = copy_cmd::runtime()?.block_on(async {
        let src = copy_cmd::endpoint(&args.source, &src_access, &docker, chunk, false).context("source")?;
        let client = dst_access.client(Some(&repo.registry), &docker, chunk).context("destination")?;
        let copier = args.transfer.copier();
        specreg_registry::publish::upload::upload(&copier, &src, &client, &repo, &temp_tags)
            .await
            .with_context(|| format!("uploading {} to {repo}", args.source))
    })?;
    copy_cmd::print_summary(&report);
    let mut out = std::io::stdout().lock();
    for t in &temp_tags {
        writeln!(out, "uploaded {repo}:{t} {digest}")?;
    }
    if args.transfer.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    }
    if let Some(path) = &args.write_images {
        write_atomic(path, images::list_json(&repo, &tags, &digest).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Temp file beside `path`, fsync, rename: a reader sees the old list or the new one.
fn write_atomic(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
