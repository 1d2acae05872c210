//! One function per subcommand: call the coordinator, hand the answer to [`crate::render`],
//! write the result. Each returns the process exit code, or the error that makes it 1.

use crate::client::{CliError, Coordinator, Retry};
use crate::follow::{self, FollowOptions};
use crate::render::{self, TokenUsage, VerdictMatrix};
use agentmesh_core::{Entry, SessionSummary};
use agentmesh_proto::v1;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::Instrument;

/// The formats of `meshctl export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// The communication file: `### [ROLE] [YYYY-MM-DD HH:MM:SS] UTC` blocks.
    Md,
    /// The lossless `{"session": {...}, "entries": [...]}` document.
    Json,
}

/// What `meshctl run` asks for.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub task: String,
    pub roles: Vec<String>,
    pub max_rounds: u32,
    pub detach: bool,
}

/// Creates a session, prints `session <id>`, then follows it unless detached.
pub async fn run(
    coordinator: &Coordinator,
    request: RunRequest,
    options: &FollowOptions,
) -> Result<u8, CliError> {
    let create = v1::CreateSessionRequest {
        task: request.task,
        roles: request.roles,
        max_rounds: request.max_rounds,
        ..Default::default()
    };
    // Retried only while the request provably reached no leader: a second CreateSession
    // that a leader did receive would start a second session (see `Retry::NotReached`).
    // The call's CLIENT span (tracing on) goes in its metadata: the session's trace
    // continues on the coordinator.
    let span = client_span("CreateSession");
    let session = coordinator
        .call(Retry::NotReached, |mut client| {
            let mut create = tonic::Request::new(create.clone());
            agentmesh_telemetry::propagation::inject_metadata(&span, create.metadata_mut());
            async move { client.create_session(create).await }
        })
        .instrument(span.clone())
        .await
        .inspect_err(|e| agentmesh_telemetry::record_error(&span, "error", &e.to_string()))?;
    drop(span);
    let mut out = std::io::stdout();
    // The id comes first and alone, flushed, so a script can read it and detach.
    writeln!(out, "session {}", session.id)?;
    out.flush()?;
    if request.detach {
        return Ok(0);
    }
    // The session exists now, so even failing to connect the watch is worth retrying.
    let last = follow::follow(coordinator, None, &session.id, 1, options, &mut out).await?;
    Ok(follow::exit_code(last.status))
}

/// A SessionService call's CLIENT span (`Span::none()` while tracing is off).
fn client_span(method: &'static str) -> tracing::Span {
    if !agentmesh_telemetry::enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "rpc",
        otel.name = format!("agentmesh.v1.SessionService/{method}"),
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = "agentmesh.v1.SessionService",
        rpc.method = method,
    )
}

/// Follows an existing session from its first event.
pub async fn watch(
    coordinator: &Coordinator,
    session_id: &str,
    options: &FollowOptions,
) -> Result<u8, CliError> {
    // Connected up front, waiting for a leader as the one-shot commands do: a coordinator
    // that cannot be reached within --wait is an error, not something to follow.
    let client = coordinator
        .retrying(Retry::Idempotent, || coordinator.connect_watch())
        .await?;
    let mut out = std::io::stdout();
    let last = follow::follow(coordinator, Some(client), session_id, 1, options, &mut out).await?;
    Ok(follow::exit_code(last.status))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn summary_of(session: &v1::Session) -> Result<SessionSummary, CliError> {
    SessionSummary::try_from(session).map_err(CliError::Other)
}

fn print(text: &str) -> Result<u8, CliError> {
    let mut out = std::io::stdout();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(0)
}

fn print_json(value: &impl Serialize) -> Result<u8, CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Other(format!("cannot encode JSON: {e}")))?;
    print(&format!("{text}\n"))
}

/// Lists sessions newest first, as a table or as a JSON array of session summaries.
pub async fn sessions(coordinator: &Coordinator, json: bool) -> Result<u8, CliError> {
    let mut sessions = coordinator
        .call(Retry::Idempotent, |mut client| async move {
            client.list_sessions(v1::ListSessionsRequest {}).await
        })
        .await?
        .sessions;
    render::sort_sessions(&mut sessions);
    if json {
        let summaries = sessions
            .iter()
            .map(summary_of)
            .collect::<Result<Vec<_>, _>>()?;
        print_json(&summaries)
    } else {
        print(&render::sessions_table(&sessions, now_ms()))
    }
}

/// The `meshctl show --json` document.
#[derive(Serialize)]
struct ShowDoc<'a> {
    session: SessionSummary,
    verdicts: &'a VerdictMatrix,
    tokens: &'a TokenUsage,
    /// Each sign-off (APPROVE), marked verified only once checked here.
    signoffs: &'a [render::SignOff],
    certificate: &'a render::CertificateCheck,
}

/// A session's details and its per-round verdicts, computed from its transcript.
pub async fn show(coordinator: &Coordinator, session_id: &str, json: bool) -> Result<u8, CliError> {
    let (session, entries) = transcript(coordinator, session_id).await?;
    let matrix = VerdictMatrix::from_transcript(&session.roles, &entries);
    let tokens = TokenUsage::from_transcript(&session.roles, &entries);
    // Sign-offs are marked verified only after this process checked them: the chain up
    // to each, its signature, and the certificate (`agentmesh_core::verify`).
    let summary = summary_of(&session)?;
    let core_entries = entries
        .iter()
        .map(Entry::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(CliError::Other)?;
    let doc = agentmesh_core::export::ExportDoc::new(&summary, &core_entries);
    let (signoffs, certificate) = render::check_signoffs(&doc);
    if json {
        print_json(&ShowDoc {
            session: summary,
            verdicts: &matrix,
            tokens: &tokens,
            signoffs: &signoffs,
            certificate: &certificate,
        })
    } else {
        print(
            &(render::session_details(&session, &matrix)
                + &render::token_table(&tokens)
                + &render::signoff_table(&signoffs, &certificate)),
        )
    }
}

/// Checks a JSON export offline (a file, or session `target`'s transcript fetched now):
/// the chain, every signature, the certificate, and with `trust` the keys. Prints what
/// was proved and exits 0, or names the first broken thing (seq and field) and exits 1.
pub async fn verify(
    coordinator: &Coordinator,
    target: &str,
    trust: Option<&Path>,
) -> Result<u8, CliError> {
    let trust = trust
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::Other(format!("cannot read {}: {e}", path.display())))?;
            agentmesh_core::trust::TrustFile::parse(&text)
                .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))
        })
        .transpose()?;
    let path = Path::new(target);
    let text = if path.is_file() {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::Other(format!("cannot read {}: {e}", path.display())))?
    } else {
        let (session, wire_entries) = transcript(coordinator, target).await?;
        let entries = wire_entries
            .iter()
            .map(Entry::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(CliError::Other)?;
        agentmesh_core::export::json(&summary_of(&session)?, &entries)
    };
    match agentmesh_core::verify::verify_json(&text, trust.as_ref()) {
        Ok(verified) => print(&render::verified(&verified)),
        Err(broken) => {
            let mut err = std::io::stderr();
            writeln!(err, "INVALID: {broken}")?;
            Ok(1)
        }
    }
}

/// Cancels a session and prints `session <id> <STATUS>` with the status it now has.
pub async fn cancel(
    coordinator: &Coordinator,
    session_id: &str,
    reason: String,
) -> Result<u8, CliError> {
    let cancel = v1::CancelSessionRequest {
        session_id: session_id.to_string(),
        reason,
    };
    // Idempotent in effect: if a lost answer hid a cancel that happened, the retry is
    // refused as "already ended (CANCELLED)"; nothing is done twice.
    let session = coordinator
        .call(Retry::Idempotent, |mut client| {
            let cancel = cancel.clone();
            async move { client.cancel_session(cancel).await }
        })
        .await?;
    print(&format!(
        "session {} {}\n",
        session.id,
        agentmesh_proto::status_name(session.status)
    ))
}

/// One worker in `meshctl workers --json`.
#[derive(Debug, Serialize, PartialEq)]
pub struct WorkerDoc {
    pub worker_id: String,
    pub role: String,
    pub load: u32,
    pub capacity: u32,
    pub turns_completed: u64,
    pub draining: bool,
    pub version: String,
    pub connected_ms: i64,
    /// Holds a stream to the coordinator.
    pub connected: bool,
    /// Registered under a live lease (always true in embedded mode).
    pub leased: bool,
    pub address: String,
}

impl From<&v1::WorkerInfo> for WorkerDoc {
    fn from(w: &v1::WorkerInfo) -> Self {
        WorkerDoc {
            worker_id: w.worker_id.clone(),
            role: w.role.clone(),
            load: w.load,
            capacity: w.capacity,
            turns_completed: w.turns_completed,
            draining: w.draining,
            version: w.version.clone(),
            connected_ms: w.connected_ms,
            connected: w.connected,
            leased: w.leased,
            address: w.address.clone(),
        }
    }
}

/// Lists the workers the coordinator knows — connected or registered — by role, then id.
pub async fn workers(coordinator: &Coordinator, json: bool) -> Result<u8, CliError> {
    let mut workers = coordinator
        .call(Retry::Idempotent, |mut client| async move {
            client.list_workers(v1::ListWorkersRequest {}).await
        })
        .await?
        .workers;
    render::sort_workers(&mut workers);
    if json {
        print_json(&workers.iter().map(WorkerDoc::from).collect::<Vec<_>>())
    } else {
        print(&render::workers_table(&workers))
    }
}

/// Writes a session's transcript as markdown or JSON, to `output` or stdout.
pub async fn export(
    coordinator: &Coordinator,
    session_id: &str,
    format: ExportFormat,
    output: Option<&Path>,
) -> Result<u8, CliError> {
    let (session, wire_entries) = transcript(coordinator, session_id).await?;
    let entries = wire_entries
        .iter()
        .map(Entry::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(CliError::Other)?;
    let text = match format {
        ExportFormat::Md => agentmesh_core::export::markdown(&entries),
        ExportFormat::Json => {
            let mut text = agentmesh_core::export::json(&summary_of(&session)?, &entries);
            text.push('\n');
            text
        }
    };
    match output {
        Some(path) => {
            std::fs::write(path, text)
                .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))?;
            Ok(0)
        }
        None => print(&text),
    }
}

/// The session and its entries, in one call so both describe the same moment.
async fn transcript(
    coordinator: &Coordinator,
    session_id: &str,
) -> Result<(v1::Session, Vec<v1::Entry>), CliError> {
    let request = v1::GetTranscriptRequest {
        session_id: session_id.to_string(),
    };
    let transcript = coordinator
        .call(Retry::Idempotent, |mut client| {
            let request = request.clone();
            async move { client.get_transcript(request).await }
        })
        .await?;
    let session = transcript.session.ok_or_else(|| {
        CliError::Other(format!(
            "the coordinator sent the transcript of {session_id} without its session"
        ))
    })?;
    Ok((session, transcript.entries))
}
