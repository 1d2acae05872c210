//! Which brain a worker thinks with, chosen on the command line.
//!
//! [`BrainArgs`] is flattened into `mesh-worker`'s arguments; [`resolve_role`] settles the
//! role the worker joins as (`--role`, or the role a `--persona` file names); [`build`]
//! turns the arguments into the `Brain` the connection loop calls for every turn.
//!
//! | `--brain` | what answers a turn | needs |
//! | --- | --- | --- |
//! | `scripted` | the deterministic negotiator (tests, demos) | nothing |
//! | `openai` | an OpenAI-compatible `/chat/completions` endpoint | `--model`; a key for api.openai.com |
//! | `anthropic` | an Anthropic Messages `/v1/messages` endpoint | `--model`; a key for api.anthropic.com |
//! | `exec` | a command line: prompt on stdin, reply on stdout | `--exec "CMD ARGS"` |
//!
//! API keys come from `--api-key-env NAME` or `--api-key-file PATH`; without either, from
//! `OPENAI_API_KEY` / `ANTHROPIC_API_KEY` when set. A key is held in an
//! [`ApiKey`], which never prints itself.

use agentmesh_brain::anthropic::{ANTHROPIC_BASE_URL, AnthropicApi, AnthropicConfig};
use agentmesh_brain::exec::ExecApi;
use agentmesh_brain::http::RetryPolicy;
use agentmesh_brain::openai::{OPENAI_BASE_URL, OpenAiApi, OpenAiConfig, ResponseFormat};
use agentmesh_brain::prompt::Budget;
use agentmesh_brain::{ApiKey, Brain, ModelBrain, Persona, ScriptedBrain, TurnSettings};
pub use agentmesh_proto::parse_duration;
use anyhow::{anyhow, bail};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BrainKind {
    /// Deterministic negotiation from per-role concern catalogues (tests, demos).
    Scripted,
    /// An OpenAI-compatible chat completions API (OpenAI, llama.cpp, Ollama, vLLM, ...).
    Openai,
    /// The Anthropic Messages API (Anthropic, or a server that speaks it).
    Anthropic,
    /// Any command line: the prompt on stdin, the reply on stdout.
    Exec,
}

/// How OpenAI-compatible review turns ask for JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResponseFormatArg {
    /// `response_format: json_schema` with the strict verdict schema.
    JsonSchema,
    /// `response_format: json_object`, for servers without schema support.
    JsonObject,
}

#[derive(Debug, Clone, Args)]
pub struct BrainArgs {
    /// How this worker thinks.
    #[arg(long, value_enum, default_value = "scripted", env = "MESH_BRAIN")]
    pub brain: BrainKind,
    /// Delay each scripted turn by this many milliseconds, so a negotiation can be watched.
    #[arg(long, default_value_t = 0)]
    pub think_ms: u64,
    /// The model to ask (openai, anthropic), e.g. gpt-4o-mini or claude-sonnet-4-5.
    #[arg(long, env = "MESH_MODEL")]
    pub model: Option<String>,
    /// The API's base URL. openai: up to `/v1` (default https://api.openai.com/v1);
    /// anthropic: without `/v1` (default https://api.anthropic.com).
    #[arg(long, env = "MESH_BASE_URL")]
    pub base_url: Option<String>,
    /// Read the API key from this environment variable (default: OPENAI_API_KEY or
    /// ANTHROPIC_API_KEY, when set).
    #[arg(long, value_name = "NAME", conflicts_with = "api_key_file")]
    pub api_key_env: Option<String>,
    /// Read the API key from this file (its whole content, trimmed).
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
    /// The command of the exec brain, e.g. "claude -p" or "ollama run llama3.2".
    #[arg(long, value_name = "CMD ARGS")]
    pub exec: Option<String>,
    /// A persona file (YAML front matter + markdown system prompt). Its `role` (or `name`)
    /// is the role the worker joins as when --role is not given. Default: the built-in
    /// persona of the role.
    #[arg(long, value_name = "FILE", env = "MESH_PERSONA")]
    pub persona: Option<PathBuf>,
    /// Sampling temperature (0 to 2).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Most tokens a reply may have (anthropic default: 2048).
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Time one turn may take, all calls and retries included: 90s, 2m, 500ms.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub turn_timeout: Duration,
    /// Prompt size limit in approximate tokens (4 characters each). Older transcript
    /// entries are dropped first; the framework and current proposal never are.
    #[arg(long, default_value_t = 6000)]
    pub prompt_budget: usize,
    /// How openai review turns ask for the verdict JSON.
    #[arg(long, value_enum, default_value = "json-schema")]
    pub response_format: ResponseFormatArg,
    /// Retries of a model call on 429, 5xx and connection errors.
    #[arg(long, default_value_t = 4)]
    pub max_retries: u32,
}

/// The role a worker joins as: `--role` when given, else the `role` (or `name`) in the
/// `--persona` file's front matter.
pub fn resolve_role(cli_role: Option<&str>, args: &BrainArgs) -> anyhow::Result<String> {
    let role = match (cli_role, &args.persona) {
        (Some(role), _) => role.to_string(),
        (None, Some(path)) => {
            let persona = Persona::load(path)?;
            persona.mesh_role().map(str::to_string).ok_or_else(|| {
                anyhow!(
                    "persona {} names no role: add `role:` (or `name:`) to its front matter, \
                     or pass --role",
                    path.display()
                )
            })?
        }
        (None, None) => {
            bail!("--role is required (or --persona FILE whose front matter names the role)")
        }
    };
    agentmesh_core::session::validate_role(&role).map_err(|why| anyhow!("--role: {why}"))?;
    Ok(role)
}

/// Builds the brain the arguments describe. `role` is the role the worker joins as.
pub fn build(args: &BrainArgs, role: &str) -> anyhow::Result<Arc<dyn Brain>> {
    check(args)?;
    if args.brain == BrainKind::Scripted {
        return Ok(Arc::new(ScriptedBrain::new(Duration::from_millis(
            args.think_ms,
        ))));
    }
    let persona = match &args.persona {
        Some(path) => Persona::load(path)?,
        None => Persona::for_role(role),
    };
    let settings = TurnSettings {
        turn_timeout: args.turn_timeout,
        budget: Budget::tokens(args.prompt_budget),
    };
    let retry = RetryPolicy {
        max_retries: args.max_retries,
        ..RetryPolicy::default()
    };
    let brain: Arc<dyn Brain> = match args.brain {
        BrainKind::Scripted => unreachable!("handled above"),
        BrainKind::Openai => {
            let mut config = OpenAiConfig::new(model(args)?);
            config.base_url = args
                .base_url
                .clone()
                .unwrap_or_else(|| OPENAI_BASE_URL.into());
            config.api_key = api_key(args, "OPENAI_API_KEY", &config.base_url, OPENAI_BASE_URL)?;
            config.temperature = args.temperature;
            config.max_tokens = args.max_tokens;
            config.response_format = match args.response_format {
                ResponseFormatArg::JsonSchema => ResponseFormat::JsonSchema,
                ResponseFormatArg::JsonObject => ResponseFormat::JsonObject,
            };
            config.retry = retry;
            tracing::info!(brain = "openai", model = %config.model, base_url = %config.base_url,
                key = if config.api_key.is_some() { "set" } else { "none" }, persona = %persona.source, "brain ready");
            Arc::new(ModelBrain::new(OpenAiApi::new(config)?, persona, settings))
        }
        BrainKind::Anthropic => {
            let mut config = AnthropicConfig::new(model(args)?);
            config.base_url = args
                .base_url
                .clone()
                .unwrap_or_else(|| ANTHROPIC_BASE_URL.into());
            config.api_key = api_key(
                args,
                "ANTHROPIC_API_KEY",
                &config.base_url,
                ANTHROPIC_BASE_URL,
            )?;
            config.temperature = args.temperature;
            config.max_tokens = args.max_tokens;
            config.retry = retry;
            tracing::info!(brain = "anthropic", model = %config.model, base_url = %config.base_url,
                key = if config.api_key.is_some() { "set" } else { "none" }, persona = %persona.source, "brain ready");
            Arc::new(ModelBrain::new(
                AnthropicApi::new(config)?,
                persona,
                settings,
            ))
        }
        BrainKind::Exec => {
            let command = args.exec.as_deref().expect("checked");
            let api = ExecApi::parse(command).map_err(|why| anyhow!("--exec: {why}"))?;
            tracing::info!(brain = "exec", command = %command, persona = %persona.source, "brain ready");
            Arc::new(ModelBrain::new(api, persona, settings))
        }
    };
    Ok(brain)
}

/// Flags that do not fit the chosen brain.
fn check(args: &BrainArgs) -> anyhow::Result<()> {
    let model_brain = args.brain != BrainKind::Scripted;
    let http = matches!(args.brain, BrainKind::Openai | BrainKind::Anthropic);
    if args.brain == BrainKind::Exec && args.exec.is_none() {
        bail!("--brain exec needs --exec \"CMD ARGS\"");
    }
    if args.exec.is_some() && args.brain != BrainKind::Exec {
        bail!("--exec is only used with --brain exec");
    }
    if !http {
        for (given, flag) in [
            (args.model.is_some(), "--model"),
            (args.base_url.is_some(), "--base-url"),
            (args.api_key_env.is_some(), "--api-key-env"),
            (args.api_key_file.is_some(), "--api-key-file"),
            (args.temperature.is_some(), "--temperature"),
            (args.max_tokens.is_some(), "--max-tokens"),
        ] {
            if given {
                bail!("{flag} is only used with --brain openai or anthropic");
            }
        }
    }
    if model_brain && args.think_ms > 0 {
        bail!("--think-ms is only used with --brain scripted");
    }
    if let Some(t) = args.temperature
        && !(0.0..=2.0).contains(&t)
    {
        bail!("--temperature must be between 0 and 2, not {t}");
    }
    if args.max_tokens == Some(0) {
        bail!("--max-tokens must be at least 1");
    }
    if args.prompt_budget < 256 {
        bail!("--prompt-budget must be at least 256 tokens");
    }
    if args.turn_timeout.is_zero() {
        bail!("--turn-timeout must be more than 0");
    }
    Ok(())
}

fn model(args: &BrainArgs) -> anyhow::Result<String> {
    match args.model.as_deref().map(str::trim) {
        Some(m) if !m.is_empty() => Ok(m.to_string()),
        _ => bail!(
            "--brain {} needs --model NAME",
            match args.brain {
                BrainKind::Anthropic => "anthropic",
                _ => "openai",
            }
        ),
    }
}

/// The key from `--api-key-env`, `--api-key-file`, or the conventional variable. The
/// vendor's own endpoint needs one; a local server usually does not.
fn api_key(
    args: &BrainArgs,
    conventional: &str,
    base_url: &str,
    vendor_url: &str,
) -> anyhow::Result<Option<ApiKey>> {
    if let Some(name) = &args.api_key_env {
        return ApiKey::from_env(name)
            .map(Some)
            .map_err(|why| anyhow!("--api-key-env: {why}"));
    }
    if let Some(path) = &args.api_key_file {
        return ApiKey::from_file(path)
            .map(Some)
            .map_err(|why| anyhow!("--api-key-file: {why}"));
    }
    match ApiKey::from_env(conventional) {
        Ok(key) => Ok(Some(key)),
        Err(_) if base_url.trim_end_matches('/') == vendor_url => bail!(
            "{vendor_url} needs an API key: set {conventional}, or pass --api-key-env NAME or \
             --api-key-file PATH"
        ),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        brain: BrainArgs,
    }

    fn args(flags: &[&str]) -> BrainArgs {
        let mut argv = vec!["mesh-worker"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).expect("flags parse").brain
    }

    fn scratch(name: &str, content: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agentmesh-brains-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn defaults_build_the_scripted_brain() {
        let a = args(&[]);
        assert_eq!(a.brain, BrainKind::Scripted);
        assert_eq!(a.turn_timeout, Duration::from_secs(120));
        assert_eq!(a.prompt_budget, 6000);
        assert_eq!(build(&a, "backend").unwrap().name(), "scripted");
    }

    #[test]
    fn every_brain_builds_from_its_flags() {
        let key = scratch("key", "sk-flag-test-123\n");
        let a = args(&[
            "--brain",
            "openai",
            "--model",
            "m",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--api-key-file",
            key.to_str().unwrap(),
            "--temperature",
            "0.3",
            "--max-tokens",
            "100",
            "--turn-timeout",
            "90s",
            "--prompt-budget",
            "2000",
            "--response-format",
            "json-object",
        ]);
        assert_eq!(a.turn_timeout, Duration::from_secs(90));
        assert_eq!(a.response_format, ResponseFormatArg::JsonObject);
        assert_eq!(build(&a, "backend").unwrap().name(), "openai");
        assert!(!format!("{a:?}").contains("sk-flag-test-123"));

        let a = args(&[
            "--brain",
            "anthropic",
            "--model",
            "m",
            "--base-url",
            "http://127.0.0.1:9",
        ]);
        assert_eq!(build(&a, "security").unwrap().name(), "anthropic");

        let a = args(&[
            "--brain",
            "exec",
            "--exec",
            "claude -p",
            "--turn-timeout",
            "2m",
        ]);
        assert_eq!(a.turn_timeout, Duration::from_secs(120));
        assert_eq!(build(&a, "devops").unwrap().name(), "exec");
    }

    #[test]
    fn misfit_flags_are_refused_with_the_reason() {
        let cases: [(&[&str], &str); 9] = [
            (
                &["--brain", "openai", "--base-url", "http://127.0.0.1:9/v1"],
                "needs --model",
            ),
            (&["--brain", "exec"], "needs --exec"),
            (&["--exec", "claude -p"], "only used with --brain exec"),
            (
                &["--model", "m"],
                "only used with --brain openai or anthropic",
            ),
            (
                &["--brain", "exec", "--exec", "x", "--temperature", "1"],
                "--temperature is only",
            ),
            (
                &[
                    "--brain",
                    "openai",
                    "--model",
                    "m",
                    "--base-url",
                    "http://x/v1",
                    "--temperature",
                    "3",
                ],
                "between 0 and 2",
            ),
            (
                &[
                    "--brain",
                    "openai",
                    "--model",
                    "m",
                    "--base-url",
                    "http://x/v1",
                    "--prompt-budget",
                    "10",
                ],
                "at least 256",
            ),
            (&["--brain", "exec", "--exec", "'open"], "unterminated"),
            (
                &[
                    "--brain",
                    "openai",
                    "--model",
                    "m",
                    "--base-url",
                    "http://x/v1",
                    "--api-key-env",
                    "AGENTMESH_SURELY_UNSET",
                ],
                "AGENTMESH_SURELY_UNSET is not set",
            ),
        ];
        for (flags, needle) in cases {
            let err = match build(&args(flags), "backend") {
                Ok(_) => panic!("{flags:?} built"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(needle), "{flags:?}: {err}");
        }
        let cli = Cli::try_parse_from(["w", "--api-key-env", "A", "--api-key-file", "/k"]);
        assert!(cli.is_err(), "--api-key-env and --api-key-file conflict");
        assert!(parse_duration("5x").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn the_role_comes_from_the_flag_or_the_persona() {
        let persona = scratch(
            "payments.md",
            "---\nname: payments\ndescription: Owns the ledger.\n---\nYou are the payments engineer.\n",
        );
        let with_persona = args(&["--persona", persona.to_str().unwrap()]);
        assert_eq!(resolve_role(None, &with_persona).unwrap(), "payments");
        assert_eq!(
            resolve_role(Some("backend"), &with_persona).unwrap(),
            "backend"
        );
        let err = resolve_role(None, &args(&[])).unwrap_err().to_string();
        assert!(err.contains("--role is required"), "{err}");
        assert!(resolve_role(Some("Bad Role"), &args(&[])).is_err());

        let nameless = scratch("nameless.md", "---\ndescription: d\n---\nbody\n");
        let err = resolve_role(None, &args(&["--persona", nameless.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("names no role"), "{err}");

        let broken = scratch(
            "broken.md",
            "---\ndescription: d\nthis is not yaml\n---\nbody\n",
        );
        let err = resolve_role(None, &args(&["--persona", broken.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("broken.md:3:"),
            "the error names the file and line: {err}"
        );

        // The persona becomes the system prompt of a model brain.
        let a = args(&[
            "--brain",
            "exec",
            "--exec",
            "cat",
            "--persona",
            persona.to_str().unwrap(),
        ]);
        assert_eq!(build(&a, "payments").unwrap().name(), "exec");
    }
}
