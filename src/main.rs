//! `specreg`: the command line. Argument parsing and wiring only; the work happens in the
//! `specreg-registry`, `specreg-certs` and `specreg-shim` crates.

mod access;
mod allocator;
mod copy_cmd;
mod data_lock;
mod info;
mod progress;
mod proxy_cmd;
mod prune_cmd;
mod publish_cmd;
mod serve;
mod use_cmd;
mod use_intercept;
mod zuul_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "specreg", version, about = "Speculative container-image registry for CI gating")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an OCI registry (a buildset or intermediate registry).
    Serve(serve::ServeArgs),
    /// Expire old tags and delete what no kept tag reaches, in a data directory no
    /// server is using.
    Prune(prune_cmd::PruneArgs),
    /// Set this node's container clients up to pull through the buildset registry.
    Use(use_cmd::UseArgs),
    /// Run the node-local mirror proxy in the foreground.
    Proxy(proxy_cmd::ProxyArgs),
    /// Copy an image or a whole index between registries and OCI layouts, byte for byte.
    Copy(copy_cmd::CopyArgs),
    /// Copy the container images of `zuul.artifacts` from the intermediate registry into
    /// the buildset registry (the nearest change ahead wins).
    PullAhead(zuul_cmd::PullAheadArgs),
    /// Copy images built in this buildset to the intermediate registry as
    /// <repo>:<build>_<tag> and print the Zuul artifacts document.
    PushIntermediate(zuul_cmd::PushIntermediateArgs),
    /// Upload the tested image to its final repository under temporary tags only
    /// (<prefix><tag>), for promote to move after the merge.
    Upload(publish_cmd::UploadArgs),
    /// Promote: move final tags to the gate's temporary tags by manifest alone, then
    /// remove the temporary tags (one repository, or a whole buildset with --images).
    Promote(publish_cmd::PromoteArgs),
    /// Remove stale temporary tags (e.g. change_*) older than a given age.
    CleanupTags(publish_cmd::CleanupArgs),
    /// The docker credential helper protocol (also as `docker-credential-specreg`).
    CredentialHelper {
        /// get, store, erase, list or version.
        action: String,
    },
}

fn main() -> std::process::ExitCode {
    allocator::tune();
    // Called by docker as `docker-credential-specreg <action>`.
    let argv: Vec<String> = std::env::args().collect();
    if argv.first().is_some_and(|a| specreg_shim::credential_helper::invoked_as_helper(a)) {
        return exit_code(specreg_shim::credential_helper::main_with_args(&argv));
    }
    let cli = Cli::parse();
    // `use` speaks through its own summary lines; servers log what they do.
    let default_level = if matches!(cli.command, Command::Use(_)) { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPECREG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Use(args) => use_cmd::run(args),
        Command::Prune(args) => prune_cmd::run(args),
        Command::Proxy(args) => proxy_cmd::run(args),
        Command::Copy(args) => copy_cmd::run(args),
        Command::PullAhead(args) => zuul_cmd::pull_ahead(args),
        Command::PushIntermediate(args) => zuul_cmd::push_intermediate(args),
        Command::Upload(args) => publish_cmd::upload(args),
        Command::Promote(args) => publish_cmd::promote(args),
        Command::CleanupTags(args) => publish_cmd::cleanup_tags(args),
        Command::CredentialHelper { action } => {
            let args = vec!["docker-credential-specreg".to_owned(), action];
            return exit_code(specreg_shim::credential_helper::main_with_args(&args));
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("specreg: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn exit_code(code: i32) -> std::process::ExitCode {
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
