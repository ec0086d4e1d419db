//! `flux`: the command-line entry point. Parses arguments, wires the library crates
//! together and renders; the logic lives in `flux-proxy`, `flux-store`, `flux-ingest`,
//! `flux-recorder` and `flux-replay`.

mod commands;
mod output;
mod render;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Flux: a PostgreSQL proxy that records what every request did, and the CLI that
/// answers production questions from that record.
#[derive(Debug, Parser)]
#[command(name = "flux", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `flux_proxy=debug`.
    #[arg(long, global = true, env = "FLUX_LOG", default_value = "info")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy in front of a PostgreSQL server.
    Proxy(Box<commands::proxy::ProxyArgs>),
    /// Row history and column blame from the record.
    #[command(subcommand)]
    State(commands::state::StateCommand),
    /// Requests as they are recorded: method, path, status, duration, request id, error.
    Tail(commands::tail::TailArgs),
    /// A request's span tree with durations and its statements, or `diff` of two requests.
    Trace(commands::trace::TraceArgs),
    /// Why a request failed: root cause, location, data changes, a suggestion.
    Why(commands::why::WhyArgs),
    /// Replay recorded requests against the current code (`flux incident replay 14:00..14:05`).
    #[command(subcommand)]
    Incident(commands::incident::IncidentCommand),
    /// Find the commit that broke a recorded request (`flux bug bisect --request ID`).
    #[command(subcommand)]
    Bug(commands::bug::BugCommand),
    /// The data dir itself: per-family sizes and time ranges, compaction.
    #[command(subcommand)]
    Store(commands::store::StoreCommand),
    /// Load OTLP/JSON trace files (one export per line) into a data dir, offline.
    Ingest(commands::ingest::IngestArgs),
}

fn main() -> ExitCode {
    // clap exits with status 2 on usage errors, 0 for --help/--version.
    let cli = Cli::parse();
    // A replay runs a proxy, a gateway and an OTLP receiver in-process: their start and
    // stop notes would only interleave with the report.
    let quiet = matches!(cli.command, Command::Incident(_) | Command::Bug(_))
        && std::env::var_os("FLUX_LOG").is_none()
        && cli.log == "info";
    init_logging(if quiet { "warn" } else { &cli.log });
    let result = match cli.command {
        Command::Proxy(args) => commands::proxy::run(*args),
        Command::State(command) => commands::state::run(command),
        Command::Why(args) => commands::why::run(args),
        Command::Tail(args) => commands::tail::run(args),
        Command::Trace(args) => commands::trace::run(args),
        Command::Ingest(args) => commands::ingest::run(args),
        Command::Store(command) => commands::store::run(command),
        // Its own exit statuses: 1 when a replayed request fails, 2 when it cannot run.
        Command::Incident(command) => return commands::incident::run(command),
        Command::Bug(command) => return commands::bug::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line on stderr, where the logs go too.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .init();
}
