//! The exec brain's endpoint: any command line that reads a prompt on stdin and writes
//! its reply on stdout (`claude -p`, `llm`, `ollama run MODEL`, a script of your own).
//!
//! For each call the command is started afresh, without a shell (`--exec "CMD ARGS"` is
//! split like a shell would, quotes included; use `sh -c '...'` for pipes):
//!
//! - **stdin**: the system prompt, then the conversation, separated by `---` lines;
//! - **environment**: the worker's, plus `MESH_SESSION_ID`, `MESH_ROLE`, `MESH_ROUND`,
//!   `MESH_MAX_ROUNDS`, `MESH_PHASE`, `MESH_TURN` (`frame`, `contribute`, `answer`,
//!   `synthesize`, `review`), `MESH_ATTEMPT`, and on review turns
//!   `MESH_PROPOSAL_VERSION`, `MESH_PROPOSAL_HASH` and `MESH_REVIEW_SCHEMA` (the verdict's
//!   JSON schema);
//! - **stdout**: the reply. On review turns it must hold the JSON verdict
//!   `{"verdict": "APPROVE"|"OBJECT", "concerns": [...], "summary": "..."}`.
//!
//! A non-zero exit fails the turn with the end of stderr. The command runs in its own
//! process group; when the turn times out the whole group is killed (SIGKILL) and the
//! child reaped, and the child is also `kill_on_drop`, so an abandoned turn leaves
//! nothing running.

use crate::BrainError;
use crate::model::{Completion, ModelApi, ModelRequest, Speaker};
use crate::prompt::ReviewChannel;
use std::process::Stdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::time::Instant;

/// The most stdout a reply may have.
pub const MAX_STDOUT: usize = 4 * 1024 * 1024;
/// How much of stderr an error quotes.
const STDERR_TAIL: usize = 800;

/// A command line run once per model call.
#[derive(Debug, Clone)]
pub struct ExecApi {
    argv: Vec<String>,
}

impl ExecApi {
    /// From `--exec "CMD ARGS"`.
    pub fn parse(command: &str) -> Result<Self, String> {
        let argv = split_command(command)?;
        if argv.is_empty() {
            return Err("--exec names no command".into());
        }
        Ok(ExecApi { argv })
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    fn shown(&self) -> String {
        self.argv.join(" ")
    }

    async fn run(
        &self,
        stdin: String,
        request: &ModelRequest,
        deadline: Instant,
    ) -> Result<Completion, BrainError> {
        let mut command = Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .envs(request.turn_env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = command.spawn().map_err(|e| {
            BrainError::Failed(format!("exec: cannot start `{}`: {e}", self.shown()))
        })?;
        let pid = child.id().unwrap_or(0);
        // Kills the whole group if this future is dropped before the child is done.
        let mut group = GroupGuard {
            pgid: pid as i32,
            armed: pid != 0,
        };
        let mut stdin_pipe = child.stdin.take();
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");

        let work = async {
            let write = async {
                if let Some(mut pipe) = stdin_pipe.take() {
                    // A command that does not read its stdin closes the pipe: fine.
                    let _ = pipe.write_all(stdin.as_bytes()).await;
                    let _ = pipe.shutdown().await;
                }
            };
            let read_out = async {
                let mut buf = Vec::new();
                (&mut stdout)
                    .take(MAX_STDOUT as u64 + 1)
                    .read_to_end(&mut buf)
                    .await
                    .map(|_| buf)
            };
            let read_err = async {
                let mut buf = Vec::new();
                let _ = (&mut stderr).take(256 * 1024).read_to_end(&mut buf).await;
                buf
            };
            let ((), out, err) = tokio::join!(write, read_out, read_err);
            (out, err)
        };
        let (out, err) = match tokio::time::timeout_at(deadline, work).await {
            Ok(output) => output,
            Err(_) => {
                group.kill();
                let _ = child.kill().await; // SIGKILL (again) and reap
                return Err(BrainError::Failed(format!(
                    "exec: `{}` did not finish within the turn timeout; killed it (pid {pid})",
                    self.shown()
                )));
            }
        };
        let out = out.map_err(|e| {
            BrainError::Failed(format!(
                "exec: reading the stdout of `{}`: {e}",
                self.shown()
            ))
        })?;
        if out.len() > MAX_STDOUT {
            group.kill();
            let _ = child.kill().await;
            return Err(BrainError::Failed(format!(
                "exec: `{}` wrote more than {MAX_STDOUT} bytes to stdout; killed it (pid {pid})",
                self.shown()
            )));
        }
        let status = match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(status) => status.map_err(|e| {
                BrainError::Failed(format!("exec: waiting for `{}`: {e}", self.shown()))
            })?,
            Err(_) => {
                group.kill();
                let _ = child.kill().await;
                return Err(BrainError::Failed(format!(
                    "exec: `{}` closed its output but did not exit within the turn timeout; killed it (pid {pid})",
                    self.shown()
                )));
            }
        };
        group.armed = false;
        if !status.success() {
            let how = match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => "was killed by a signal".to_string(),
            };
            let err = String::from_utf8_lossy(&err);
            let tail = tail_chars(err.trim(), STDERR_TAIL);
            return Err(BrainError::Failed(format!(
                "exec: `{}` {how}{}",
                self.shown(),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            )));
        }
        Ok(Completion {
            text: String::from_utf8_lossy(&out).into_owned(),
            ..Completion::default()
        })
    }
}

/// The text a command reads on stdin.
pub fn render_stdin(request: &ModelRequest) -> String {
    let mut out = request.system.trim().to_string();
    for (speaker, text) in &request.messages {
        out.push_str("\n\n---\n\n");
        if *speaker == Speaker::Assistant {
            out.push_str("Your previous reply was:\n\n");
        }
        out.push_str(text.trim());
    }
    out.push('\n');
    out
}

impl ModelApi for ExecApi {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn review_channel(&self) -> ReviewChannel {
        ReviewChannel::JsonReply
    }

    async fn complete(
        &self,
        request: &ModelRequest,
        deadline: Instant,
    ) -> Result<Completion, BrainError> {
        self.run(render_stdin(request), request, deadline).await
    }
}

/// SIGKILLs a process group when dropped while armed.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl GroupGuard {
    fn kill(&mut self) {
        if self.armed && self.pgid > 0 {
            // SAFETY: killpg only sends a signal; the group is the one we created.
            unsafe {
                libc::killpg(self.pgid, libc::SIGKILL);
            }
        }
        self.armed = false;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail_chars(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        text.to_string()
    } else {
        format!("...{}", text.chars().skip(n - max).collect::<String>())
    }
}

/// Splits a command line into words like a POSIX shell would, without expanding
/// anything: whitespace separates words, `'...'` is literal, `"..."` allows `\"` and
/// `\\`, and a backslash outside quotes escapes the next character.
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated ' quote in {line:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated \" quote in {line:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated \" quote in {line:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(format!("trailing backslash in {line:?}")),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_like_a_shell() {
        assert_eq!(split_command("claude -p").unwrap(), ["claude", "-p"]);
        assert_eq!(
            split_command(r#"sh -c 'cat; echo "done"'  x\ y "a \"q\" b" '' "#).unwrap(),
            ["sh", "-c", r#"cat; echo "done""#, "x y", r#"a "q" b"#, ""]
        );
        assert!(split_command("echo 'open").is_err());
        assert!(split_command("echo \"open").is_err());
        assert!(split_command("echo \\").is_err());
        assert!(split_command("   ").unwrap().is_empty());
        assert!(ExecApi::parse("  ").is_err());
    }

    #[test]
    fn stdin_holds_system_then_conversation() {
        let request = ModelRequest {
            system: "SYS".into(),
            messages: vec![
                (Speaker::User, "ask".into()),
                (Speaker::Assistant, "bad".into()),
                (Speaker::User, "fix it".into()),
            ],
            review: true,
            instruction: crate::prompt::Instruction::Review,
            turn_env: vec![],
        };
        assert_eq!(
            render_stdin(&request),
            "SYS\n\n---\n\nask\n\n---\n\nYour previous reply was:\n\nbad\n\n---\n\nfix it\n"
        );
    }
}
