//! `specreg`: the command line. Argument parsing and wiring only; the work happens in the
//! `specreg-registry`, `specreg-certs` and `specreg-shim` crates.

mod serve;

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPECREG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("specreg: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
