//! `meshctl`: the agentmesh command line. It starts negotiation sessions on a
//! coordinator and follows them live, lists and inspects sessions and workers, cancels
//! sessions and exports transcripts.
//!
//! Exit codes: 0 success (for `run`/`watch`: the session reached CONSENSUS, or a broadcast
//! session COMPLETED), 2 the followed session ended in NO_CONSENSUS, 1 FAILED/CANCELLED or
//! any error. Errors go to
//! stderr as `error: <message>`; a gRPC error is `error: <Code>: <message>`, e.g.
//! `error: NotFound: session xyz not found`.
//!
//! # Layout
//!
//! - `main.rs`: the command-line grammar (clap), logging set-up, dispatch, exit code.
//! - [`commands`]: one function per subcommand — the calls to the coordinator.
//! - [`follow`]: the live follower behind `run` and `watch`, which resumes a broken
//!   `WatchSession` stream from the last seen event seq.
//! - [`render`]: pure formatting of every line, table and the verdict matrix.
//! - [`client`]: connecting to the coordinator, waiting out a failover (`--wait`), and
//!   the error type.

mod client;
mod commands;
mod follow;
mod render;

use clap::{Args, Parser, Subcommand};
use client::{CliError, Coordinator, DEFAULT_COORDINATOR};
use commands::{ExportFormat, RunRequest};
use follow::FollowOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const AFTER_HELP: &str = "\
Exit codes: 0 success (run/watch: CONSENSUS or COMPLETED), 2 NO_CONSENSUS, 1 FAILED, CANCELLED or any error.
Errors print to stderr as `error: <Code>: <message>` (gRPC) or `error: <message>`.
While no coordinator answers (a leader just died, a coordinator restarts, an election is
under way), commands retry for up to --wait and say so on stderr first.
Logging: RUST_LOG (default `warn`), to stderr, as text or JSON (--log-format, MESH_LOG_FORMAT).
Tracing: off unless a collector is configured (--otlp-endpoint, OTEL_EXPORTER_OTLP_ENDPOINT).";

/// The agentmesh command line.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// The coordinator's address; `host:port` means `http://host:port`.
    #[arg(
        long,
        global = true,
        env = "MESH_COORDINATOR",
        default_value = DEFAULT_COORDINATOR,
        value_name = "URL"
    )]
    coordinator: String,

    /// Cluster mode: comma-separated etcd endpoints; meshctl talks to whichever
    /// coordinator the election names as leader.
    #[arg(
        long,
        global = true,
        env = "MESH_ETCD",
        value_delimiter = ',',
        value_name = "ENDPOINTS"
    )]
    etcd: Vec<String>,

    /// How long to keep retrying while no leader answers (connection refused, UNAVAILABLE,
    /// no leader elected), e.g. 15s, 500ms, 0 to fail at once. The default covers the
    /// election TTL (2 s) and a new leader's start-up. A new session is re-sent only when
    /// the request provably reached no leader.
    #[arg(
        long,
        global = true,
        env = "MESH_WAIT",
        default_value = "15s",
        value_parser = agentmesh_proto::parse_duration,
        value_name = "DURATION"
    )]
    wait: Duration,

    #[command(flatten)]
    telemetry: agentmesh_telemetry::TelemetryArgs,

    #[command(flatten)]
    client: agentmesh_discovery::ClientFlags,

    #[command(flatten)]
    etcd_security: agentmesh_discovery::EtcdFlags,

    #[command(subcommand)]
    command: Command,
}

/// How `run` and `watch` behave when the watch stream breaks.
#[derive(Debug, Args)]
struct FollowArgs {
    /// Give up after the coordinator has been unreachable this many seconds in a row.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    reconnect_timeout: u64,
}

impl FollowArgs {
    fn options(&self) -> FollowOptions {
        FollowOptions {
            give_up_after: Duration::from_secs(self.reconnect_timeout),
            live_progress: std::io::IsTerminal::is_terminal(&std::io::stdout()),
            ..FollowOptions::default()
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a session on TASK and follow it until it ends.
    ///
    /// Prints `session <id>` first, on its own line. Then, unless --detach, one line per
    /// event:
    ///
    ///   [round 2] REVIEW  awaiting: backend, security
    ///   #3 r1 CONTRIBUTE backend ANALYSIS: <first line of content>
    ///   #8 r1 SYNTHESIZE supervisor PROPOSAL v1: <first line>
    ///   #12 r2 REVIEW security  OBJECT: <first concern> (+1 more)
    ///   #13 r2 REVIEW backend  APPROVE: v2 (sha256 <12 hex digits>)
    ///
    /// and at the end:
    ///
    ///   result: <STATUS> after round <n>
    ///   reason: <why>                         (when there is one)
    ///   final proposal: v<n> sha256 <hash>    (CONSENSUS)
    ///   open objections:                      (NO_CONSENSUS)
    ///     <role>: <concern>
    ///
    /// If the stream breaks, meshctl reconnects and resumes after the last event shown.
    /// Exit code: 0 CONSENSUS (or COMPLETED), 2 NO_CONSENSUS, 1 FAILED, CANCELLED or error.
    #[command(verbatim_doc_comment)]
    Run {
        /// What the participants should negotiate.
        task: String,
        /// Specialist roles, comma-separated; default: the coordinator's six specialists.
        /// The supervisor always takes part.
        #[arg(long, value_delimiter = ',', value_name = "ROLE,...")]
        roles: Vec<String>,
        /// The most review rounds; 0 means the coordinator's default.
        #[arg(long, default_value_t = 0, value_name = "N")]
        max_rounds: u32,
        /// Print the session id and exit 0 without following.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Follow an existing session from its first event; output and exit codes as `run`.
    Watch {
        /// The session id.
        id: String,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// List sessions, newest first.
    ///
    /// Table columns: ID, STATUS, ROUND (round/max), ROLES (count, supervisor
    /// included), ENTRIES, UPDATED (age), TASK (first line, cut to 48 characters).
    ///
    /// --json prints an array, newest first, of objects with the fields id, task, roles,
    /// max_rounds, status (e.g. "REVIEW"), round, created_ms, updated_ms, reason,
    /// final_version, final_hash, open_objections ([{role, concern}]), assignments
    /// ({role: worker_id}) and entry_count.
    #[command(verbatim_doc_comment)]
    Sessions {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a session: status, round, reason, roles and their workers, final hash, open
    /// objections, entry count, and the verdict of each role in each review round.
    ///
    /// --json prints {"session": <as in `sessions --json`>, "verdicts": {"rounds":
    /// [1, 2], "rows": [{"role": "backend", "verdicts": ["OBJECT", "APPROVE"]}]}},
    /// with null where a role gave no verdict in a round.
    #[command(verbatim_doc_comment)]
    Show {
        /// The session id.
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a session; prints `session <id> <STATUS>`.
    Cancel {
        /// The session id.
        id: String,
        /// Why, recorded as the session's reason.
        #[arg(long, default_value = "", value_name = "TEXT")]
        reason: String,
    },
    /// List connected workers by role, then id.
    ///
    /// Table columns: WORKER, ROLE, LOAD (sessions held/capacity), TURNS (completed),
    /// DRAINING (yes/no), VERSION.
    ///
    /// --json prints an array in the same order of objects with the fields worker_id,
    /// role, load, capacity, turns_completed, draining, version and connected_ms.
    #[command(verbatim_doc_comment)]
    Workers {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Export a session's transcript as the markdown communication file or as JSON.
    Export {
        /// The session id.
        id: String,
        /// md: `### [ROLE] [time] UTC` blocks; json: {"session": ..., "entries": [...]}.
        #[arg(long, value_enum, default_value = "md")]
        format: ExportFormat,
        /// Write here instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Check a JSON export offline: the hash chain, every worker signature, and that the
    /// unanimity certificate covers every participant, names the final hash and the chain
    /// head, and is signed by the coordinator (docs/verification.md).
    ///
    /// TARGET is an export file (`meshctl export ID --format json`) or a session id,
    /// whose transcript is fetched and checked here. With --trust FILE, each role's key
    /// and the coordinator's must also be the ones the file names:
    ///
    ///   {"coordinator": "<key>", "roles": {"backend": ["<key>", ...], ...}}
    ///
    /// (keys as 64 hex digits or base64). Exit 0 when valid, printing what was proved;
    /// 1 naming the first broken thing on stderr, e.g.
    /// `INVALID: seq 5 content: its SHA-256 is ..., but the entry records ...`.
    #[command(verbatim_doc_comment)]
    Verify {
        /// An export file, or a session id.
        target: String,
        /// The expected keys.
        #[arg(long, value_name = "FILE")]
        trust: Option<PathBuf>,
    },
}

/// Logs (RUST_LOG, default `warn`; --log-format) and, with a collector configured,
/// trace export.
fn init_telemetry(args: &agentmesh_telemetry::TelemetryArgs) -> agentmesh_telemetry::Guard {
    agentmesh_telemetry::init(agentmesh_telemetry::Options {
        service_name: "meshctl",
        service_version: env!("CARGO_PKG_VERSION"),
        instance_id: agentmesh_telemetry::fresh_instance_id(),
        attributes: Vec::new(),
        log_format: args.log_format,
        default_filter: "warn",
        otlp_endpoint: args.otlp_endpoint.clone(),
        trace_content: false,
    })
}

impl Command {
    /// The subcommand's name, as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Run { .. } => "run",
            Command::Watch { .. } => "watch",
            Command::Sessions { .. } => "sessions",
            Command::Show { .. } => "show",
            Command::Cancel { .. } => "cancel",
            Command::Workers { .. } => "workers",
            Command::Export { .. } => "export",
            Command::Verify { .. } => "verify",
        }
    }
}

/// The command's root span, `meshctl {command}`: a session's trace starts here (the
/// CreateSession call carries its context). Only while tracing is on.
fn root_span(command: &Command) -> tracing::Span {
    if !agentmesh_telemetry::enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "meshctl",
        otel.name = format!("meshctl {}", command.name()),
        otel.kind = "internal",
        process.exit.code = tracing::field::Empty,
    )
}

async fn dispatch(cli: Cli) -> Result<u8, CliError> {
    let credentials = cli.client.credentials().map_err(CliError::Other)?;
    let coordinator = if cli.etcd.is_empty() {
        Coordinator::new(&cli.coordinator)?
    } else {
        let client = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            agentmesh_discovery::connect_etcd_secured(
                &cli.etcd,
                &cli.etcd_security
                    .security()
                    .map_err(|e| CliError::Other(e.to_string()))?,
            ),
        )
        .await
        .map_err(|_| {
            CliError::Other(format!(
                "etcd at {} did not answer within 10s",
                cli.etcd.join(",")
            ))
        })?
        .map_err(|e| {
            CliError::Other(format!("cannot reach etcd at {}: {e}", cli.etcd.join(",")))
        })?;
        let lookup =
            agentmesh_discovery::LeaderLookup::new(client, agentmesh_discovery::DEFAULT_ELECTION);
        Coordinator::elected(&cli.coordinator, lookup, &cli.etcd.join(","))?
    }
    .with_wait(cli.wait)
    .with_credentials(credentials);
    match cli.command {
        Command::Run {
            task,
            roles,
            max_rounds,
            detach,
            follow,
        } => {
            let request = RunRequest {
                task,
                roles,
                max_rounds,
                detach,
            };
            commands::run(&coordinator, request, &follow.options()).await
        }
        Command::Watch { id, follow } => {
            commands::watch(&coordinator, &id, &follow.options()).await
        }
        Command::Sessions { json } => commands::sessions(&coordinator, json).await,
        Command::Show { id, json } => commands::show(&coordinator, &id, json).await,
        Command::Cancel { id, reason } => commands::cancel(&coordinator, &id, reason).await,
        Command::Workers { json } => commands::workers(&coordinator, json).await,
        Command::Export { id, format, output } => {
            commands::export(&coordinator, &id, format, output.as_deref()).await
        }
        Command::Verify { target, trust } => {
            commands::verify(&coordinator, &target, trust.as_deref()).await
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut telemetry = init_telemetry(&cli.telemetry);
    let span = root_span(&cli.command);
    let code = match tracing::Instrument::instrument(dispatch(cli), span.clone()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            agentmesh_telemetry::record_error(&span, "error", &error.to_string());
            1
        }
    };
    // An i64: tracing-opentelemetry exports other integer types as text.
    span.record("process.exit.code", i64::from(code));
    // The root span ends before the exporter sends what is left.
    drop(span);
    telemetry.shutdown();
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_splits_roles_on_commas() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "--coordinator",
            "h:1",
            "run",
            "a task",
            "--roles",
            "backend,security",
            "--max-rounds",
            "3",
        ])
        .unwrap();
        assert_eq!(cli.coordinator, "h:1");
        match cli.command {
            Command::Run {
                task,
                roles,
                max_rounds,
                detach,
                ..
            } => {
                assert_eq!(task, "a task");
                assert_eq!(roles, ["backend", "security"]);
                assert_eq!(max_rounds, 3);
                assert!(!detach);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_coordinator_flag_works_after_the_subcommand() {
        let cli = Cli::try_parse_from(["meshctl", "sessions", "--coordinator", "h:2"]).unwrap();
        assert_eq!(cli.coordinator, "h:2");
    }

    #[test]
    fn wait_defaults_to_the_failover_bound_and_takes_durations() {
        let cli = Cli::try_parse_from(["meshctl", "sessions"]).unwrap();
        assert_eq!(cli.wait, client::DEFAULT_WAIT);
        let cli = Cli::try_parse_from(["meshctl", "sessions", "--wait", "500ms"]).unwrap();
        assert_eq!(cli.wait, Duration::from_millis(500));
        let cli = Cli::try_parse_from(["meshctl", "--wait", "0", "show", "s1"]).unwrap();
        assert_eq!(cli.wait, Duration::ZERO);
        assert!(Cli::try_parse_from(["meshctl", "sessions", "--wait", "soon"]).is_err());
    }

    #[test]
    fn export_formats_are_md_and_json() {
        let cli = Cli::try_parse_from(["meshctl", "export", "s1", "--format", "json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Export {
                format: ExportFormat::Json,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["meshctl", "export", "s1", "--format", "pdf"]).is_err());
    }
}
