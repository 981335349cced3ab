//! The Zuul transfers between a buildset registry (BR) and the intermediate registry
//! (IR): `specreg pull-ahead` (IR → BR, pre-run) and `specreg push-intermediate`
//! (BR → IR, post-run). See zuul-workflow.md §5.5–5.6 and §6 for the contracts.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};
use specreg_registry::client::{DockerConfig, RegistryClient};
use specreg_registry::copy::{CopyReport, Endpoint};
use specreg_registry::reference::{ImageRef, Reference, RepoName, Tag};

use crate::access::{access_args, Access};
use crate::copy_cmd::{print_summary, runtime, TransferArgs};
use crate::info::ConnectionInfo;

access_args!(FromAccess, "--from", "from-creds", "from-creds-file", "from-info", "from-ca", "from-cert-dir", "from-insecure", "SPECREG_FROM_CREDS");
access_args!(ToAccess, "--to", "to-creds", "to-creds-file", "to-info", "to-ca", "to-cert-dir", "to-insecure", "SPECREG_TO_CREDS");

#[derive(Args)]
pub struct PullAheadArgs {
    /// The `zuul.artifacts` list as JSON: the list itself, or an object with
    /// `artifacts` or `zuul.artifacts` (absent means none).
    #[arg(long, value_name = "FILE")]
    pub artifacts: PathBuf,
    /// The buildset registry: its connection-info JSON (as `specreg serve` writes) or HOST[:PORT].
    #[arg(long, value_name = "INFO|HOST")]
    pub to: String,
    /// Access to the intermediate registry the artifact URLs name.
    #[command(flatten)]
    pub from_access: FromAccess,
    #[command(flatten)]
    pub to_access: ToAccess,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

#[derive(Args)]
pub struct PushIntermediateArgs {
    /// The Zuul build id (`zuul.build`), prefixed to every tag in the IR.
    #[arg(long)]
    pub build: String,
    /// An image of the buildset registry to push, REPO:TAG (repeatable).
    #[arg(long = "image", required = true, value_name = "REPO:TAG")]
    pub images: Vec<String>,
    /// The buildset registry: its connection-info JSON or HOST[:PORT].
    #[arg(long, value_name = "INFO|HOST")]
    pub from: String,
    /// The intermediate registry: connection-info JSON or HOST[:PORT].
    #[arg(long, value_name = "INFO|HOST")]
    pub to: String,
    #[command(flatten)]
    pub from_access: FromAccess,
    #[command(flatten)]
    pub to_access: ToAccess,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

/// A registry named by connection-info JSON (an existing file) or by `host[:port]`.
/// Returns the client and the `host[:port]` to write into image references.
fn target(spec: &str, access: &Access, docker: &DockerConfig, chunk: Option<u64>) -> anyhow::Result<(RegistryClient, String)> {
    let path = PathBuf::from(spec);
    if path.is_file() {
        let info = ConnectionInfo::load(&path)?;
        let access = Access { info: Some(path), ..access.clone() };
        let client = access.client(None, docker, chunk)?;
        return Ok((client, info.host_port()));
    }
    if spec.contains('/') {
        bail!("{spec:?}: neither a connection-info file nor HOST[:PORT]");
    }
    Ok((access.client(Some(spec), docker, chunk)?, spec.to_owned()))
}

/// The artifact list, wherever it sits in the document.
fn artifact_list(doc: &Value) -> Vec<Value> {
    let list = if doc.is_array() {
        doc
    } else if let Some(a) = doc.pointer("/zuul/artifacts") {
        a
    } else {
        doc.get("artifacts").unwrap_or(&Value::Null)
    };
    list.as_array().cloned().unwrap_or_default()
}

/// What an artifact asks to be copied.
#[derive(Debug, PartialEq, Eq)]
struct Wanted {
    name: String,
    source: ImageRef,
    repo: RepoName,
    tag: Tag,
}

/// Picks the container images out of the artifacts, in list order; others are skipped
/// with a log line.
fn wanted_images(artifacts: &[Value]) -> anyhow::Result<Vec<Wanted>> {
    let mut out = Vec::new();
    for a in artifacts {
        let name = a["name"].as_str().unwrap_or("(unnamed)").to_owned();
        let Some(meta) = a.get("metadata").filter(|m| m.is_object()) else {
            tracing::info!(artifact = %name, "skipped: no metadata");
            continue;
        };
        if meta["type"].as_str() != Some("container_image") {
            tracing::info!(artifact = %name, kind = %meta["type"], "skipped: not a container_image");
            continue;
        }
        let url = a["url"].as_str().with_context(|| format!("artifact {name}: no url"))?;
        let source = ImageRef::parse(url.strip_prefix("docker://").unwrap_or(url))
            .with_context(|| format!("artifact {name}: url {url:?}"))?;
        let repository = meta["repository"].as_str().with_context(|| format!("artifact {name}: no metadata.repository"))?;
        let repository = repository.strip_prefix("docker.io/").unwrap_or(repository);
        let repo = RepoName::parse(repository).with_context(|| format!("artifact {name}"))?;
        let tag = Tag::parse(meta["tag"].as_str().unwrap_or("latest")).with_context(|| format!("artifact {name}"))?;
        out.push(Wanted { name, source, repo, tag });
    }
    Ok(out)
}

pub fn pull_ahead(args: PullAheadArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.artifacts).with_context(|| format!("reading {}", args.artifacts.display()))?;
    let doc: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", args.artifacts.display()))?;
    let wanted = wanted_images(&artifact_list(&doc))?;
    let docker = args.transfer.docker_config()?;
    let from_access = args.from_access.access();
    let chunk = args.transfer.chunk_size;
    let rt = runtime()?;
    let reports = rt.block_on(async {
        let (br, _) = target(&args.to, &args.to_access.access(), &docker, chunk)?;
        br.ping().await.with_context(|| format!("the buildset registry {} is not usable", args.to))?;
        let copier = args.transfer.copier();
        // One client per intermediate registry, checked once: a clear error when it is down.
        let mut sources: HashMap<String, RegistryClient> = HashMap::new();
        let mut reports = Vec::new();
        // In list order: Zuul puts the nearest change last, so its copy lands last and
        // its digest is what the tag ends up naming.
        for w in &wanted {
            let client = match sources.get(&w.source.registry) {
                Some(c) => c.clone(),
                None => {
                    let c = from_access.client(Some(&w.source.registry), &docker, chunk)?;
                    c.ping().await.with_context(|| format!("the intermediate registry {} is unreachable or refuses us", w.source.registry))?;
                    sources.insert(w.source.registry.clone(), c.clone());
                    c
                }
            };
            let src = Endpoint::Registry { client, repo: w.source.repo.clone(), reference: Some(w.source.reference()) };
            let dst = Endpoint::Registry { client: br.clone(), repo: w.repo.clone(), reference: Some(Reference::Tag(w.tag.clone())) };
            let report = copier.copy(&src, &dst).await.with_context(|| format!("artifact {}: copying {src} to {dst}", w.name))?;
            print_summary(&report);
            reports.push(report);
        }
        anyhow::Ok(reports)
    })?;
    eprintln!("pull-ahead: {} image(s) copied into the buildset registry", reports.len());
    if args.transfer.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

/// `REPO[:TAG]` (the tag after the last `/`), `latest` by default.
fn split_image(s: &str) -> anyhow::Result<(String, Tag)> {
    let (repo, tag) = match s.rfind(':') {
        Some(i) if !s[i..].contains('/') => (&s[..i], &s[i + 1..]),
        _ => (s, "latest"),
    };
    RepoName::parse(repo).with_context(|| format!("--image {s}"))?;
    Ok((repo.to_owned(), Tag::parse(tag).with_context(|| format!("--image {s}"))?))
}

/// The document a Zuul job returns for the pushed images.
fn artifacts_document(ir_host: &str, build: &str, images: &[(String, Tag)]) -> Value {
    let artifacts: Vec<Value> = images
        .iter()
        .map(|(repo, tag)| {
            json!({
                "name": format!("{repo}:{tag}"),
                "url": format!("docker://{ir_host}/{repo}:{build}_{tag}"),
                "metadata": {"type": "container_image", "repository": repo, "tag": tag.as_str()},
            })
        })
        .collect();
    json!({"zuul": {"artifacts": artifacts}})
}

pub fn push_intermediate(args: PushIntermediateArgs) -> anyhow::Result<()> {
    let images = args.images.iter().map(|i| split_image(i)).collect::<anyhow::Result<Vec<_>>>()?;
    if args.build.is_empty() {
        bail!("--build must not be empty");
    }
    // The IR tags must be valid before anything moves.
    let mut plan = Vec::new();
    for (repo, tag) in &images {
        let ir_tag = Tag::parse(&format!("{}_{tag}", args.build))
            .with_context(|| format!("{repo}:{tag}: the intermediate tag {}_{tag} is not a valid tag (too long?)", args.build))?;
        let br_repo = RepoName::parse(repo.strip_prefix("docker.io/").unwrap_or(repo))?;
        plan.push((br_repo, tag.clone(), RepoName::parse(repo)?, ir_tag));
    }
    let docker = args.transfer.docker_config()?;
    let chunk = args.transfer.chunk_size;
    let rt = runtime()?;
    let (ir_host, reports) = rt.block_on(async {
        let (br, _) = target(&args.from, &args.from_access.access(), &docker, chunk)?;
        let (ir, ir_host) = target(&args.to, &args.to_access.access(), &docker, chunk)?;
        br.ping().await.with_context(|| format!("the buildset registry {} is not usable", args.from))?;
        ir.ping().await.with_context(|| format!("the intermediate registry {} is unreachable or refuses us", args.to))?;
        let copier = args.transfer.copier();
        let mut reports: Vec<CopyReport> = Vec::new();
        for (br_repo, tag, ir_repo, ir_tag) in &plan {
            let src = Endpoint::Registry { client: br.clone(), repo: br_repo.clone(), reference: Some(Reference::Tag(tag.clone())) };
            let dst = Endpoint::Registry { client: ir.clone(), repo: ir_repo.clone(), reference: Some(Reference::Tag(ir_tag.clone())) };
            let report = copier.copy(&src, &dst).await.with_context(|| format!("copying {src} to {dst}"))?;
            print_summary(&report);
            reports.push(report);
        }
        anyhow::Ok((ir_host, reports))
    })?;
    let _ = reports;
    println!("{}", serde_json::to_string_pretty(&artifacts_document(&ir_host, &args.build, &images))?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_filtered_in_order() {
        let doc = json!({"zuul": {"artifacts": [
            {"name": "docs", "url": "https://logs/x"},
            {"name": "other", "url": "https://x", "metadata": {"type": "docs_archive"}},
            {"name": "org/app:latest", "url": "docker://ir.example:5000/docker.io/org/app:b1_latest",
             "metadata": {"type": "container_image", "repository": "docker.io/org/app", "tag": "latest"}},
            {"name": "quay.io/org/x:1", "url": "docker://ir.example:5000/quay.io/org/x:b2_1",
             "metadata": {"type": "container_image", "repository": "quay.io/org/x", "tag": "1"}},
        ]}});
        let w = wanted_images(&artifact_list(&doc)).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].repo.as_str(), w[0].tag.as_str()), ("org/app", "latest"), "docker.io/ dropped");
        assert_eq!(w[0].source.registry, "ir.example:5000");
        assert_eq!(w[0].source.repo.as_str(), "docker.io/org/app", "the IR keeps the prefix");
        assert_eq!(w[1].repo.as_str(), "quay.io/org/x");
        assert!(artifact_list(&json!({"zuul": {}})).is_empty(), "missing artifacts are none");
        assert_eq!(artifact_list(&json!([{"a": 1}])).len(), 1);
    }

    #[test]
    fn document_shape() {
        let images = vec![split_image("org/app:v1").unwrap(), split_image("localhost/x").unwrap()];
        assert_eq!(images[1], ("localhost/x".to_owned(), Tag::parse("latest").unwrap()));
        let doc = artifacts_document("[::1]:5000", "abc", &images);
        assert_eq!(
            doc,
            json!({"zuul": {"artifacts": [
                {"name": "org/app:v1", "url": "docker://[::1]:5000/org/app:abc_v1",
                 "metadata": {"type": "container_image", "repository": "org/app", "tag": "v1"}},
                {"name": "localhost/x:latest", "url": "docker://[::1]:5000/localhost/x:abc_latest",
                 "metadata": {"type": "container_image", "repository": "localhost/x", "tag": "latest"}},
            ]}})
        );
        assert!(split_image("Bad:1").is_err());
    }
}
