//! Runs a step under the contract: parse, check, log, run with a deadline and signal handling,
//! map the result to an exit code, print the JSON summary.

use std::ffi::OsString;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{logging, Outputs, RetryPolicy, SecretRef, StepArgs, StepError};

/// What a running step gets besides its flags.
#[derive(Debug, Clone)]
pub struct Context {
    pub outputs: Arc<Outputs>,
    /// Cancelled on SIGTERM/SIGINT or at the deadline. Async work is dropped anyway; blocking work
    /// (e.g. libgit2 in `spawn_blocking`) checks it to stop early.
    pub cancel: CancellationToken,
    /// When the step's `--timeout` runs out.
    pub deadline: Instant,
}

impl Context {
    /// The network retry policy, bounded by the step's deadline.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::network().with_deadline(self.deadline)
    }
}

/// How long blocking work (libgit2's transfers) gets to notice the cancellation before the
/// process exits anyway. The step's timer fires this much before the deadline, so that the
/// deadline holds (a pod's activeDeadlineSeconds, a caller's budget).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);

/// What the step is doing now, for the message of a deadline or a signal: set by [`doing`] and
/// by every [`crate::retry`].
static DOING: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Records what the step is doing now (`"fetching sbx-pr-42 from https://…"`): a deadline or a
/// signal then says what it interrupted.
pub fn doing(what: impl Into<String>) {
    *DOING.lock().unwrap_or_else(|e| e.into_inner()) = Some(what.into());
}

/// ` while <what>` when the step said what it was doing.
fn while_doing() -> String {
    DOING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|what| format!(" while {}", crate::redact_text(what)))
        .unwrap_or_default()
}

/// The whole `main` of a step: `fn main() -> ExitCode { step_kit::run("my-step", my_step) }`.
pub fn run<A, F, Fut>(name: &str, step: F) -> ExitCode
where
    A: StepArgs,
    F: FnOnce(A, Context) -> Fut,
    Fut: Future<Output = Result<(), StepError>>,
{
    ExitCode::from(run_from(name, std::env::args_os(), step))
}

/// [`run`] with explicit arguments (the first is the program name); returns the exit code.
pub fn run_from<A, F, Fut, I, T>(name: &str, argv: I, step: F) -> u8
where
    A: StepArgs,
    F: FnOnce(A, Context) -> Fut,
    Fut: Future<Output = Result<(), StepError>>,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: A = match parse_from(argv) {
        Ok(args) => args,
        Err(ParseFailure::Clap(err)) => {
            // --help and --version print and exit 0; usage errors exit 2 (clap's own code).
            let _ = err.print();
            if !err.use_stderr() {
                return 0;
            }
            // clap's message without its usage block, on one line.
            let rendered = err.to_string();
            let message: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .map(str::trim)
                .collect();
            let err = StepError::invalid(message.join(" ").trim_start_matches("error: "));
            print_summary(name, None, Err(&err));
            return err.exit_code();
        }
        Err(ParseFailure::Step(err)) => {
            eprintln!("error: {err}");
            print_summary(name, None, Err(&err));
            return err.exit_code();
        }
    };
    let common = args.common().clone();
    logging::init(name, common.log_format, common.log_level);
    if A::USES_TLS {
        install_tls_provider();
    }

    let timeout = args.timeout();
    let outputs = Arc::new(Outputs::new(&common.outputs_dir));
    let runtime = match runtime_for::<A>() {
        Ok(rt) => rt,
        Err(e) => {
            let err = StepError::unexpected(format!("cannot start the async runtime: {e}"));
            print_summary(name, Some(&outputs), Err(&err));
            return err.exit_code();
        }
    };
    let cancel = CancellationToken::new();
    let result = runtime.block_on(async {
        let ctx = Context {
            outputs: outputs.clone(),
            cancel: cancel.clone(),
            deadline: Instant::now() + timeout,
        };
        // Early by the shutdown's grace (when the budget allows it), so the exit is within it.
        let deadline = if timeout > SHUTDOWN_GRACE * 4 {
            ctx.deadline - SHUTDOWN_GRACE
        } else {
            ctx.deadline
        };
        let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
        tokio::select! {
            result = step(args, ctx) => result,
            _ = tokio::time::sleep_until(deadline) => Err(StepError::transient(format!(
                "timed out after {} (--timeout){}; a re-run resumes from here",
                humantime::format_duration(timeout),
                while_doing()
            ))),
            _ = terminate.recv() => Err(StepError::transient(format!(
                "stopped by SIGTERM{}; a re-run resumes from here",
                while_doing()
            ))),
            _ = interrupt.recv() => Err(StepError::transient(format!(
                "stopped by SIGINT{}; a re-run resumes from here",
                while_doing()
            ))),
        }
    });
    cancel.cancel();
    runtime.shutdown_timeout(SHUTDOWN_GRACE);

    match &result {
        Ok(()) => tracing::info!("{name}: done"),
        Err(err) => tracing::error!(
            exit_code = err.exit_code(),
            kind = err.kind.as_str(),
            "{name} failed: {err}"
        ),
    }
    print_summary(name, Some(&outputs), result.as_ref().map(|_| ()));
    result.map_or_else(|e| e.exit_code(), |()| 0)
}

/// Installs the one rustls crypto provider (aws-lc-rs) for every TLS client of every crate: two
/// providers compiled in make rustls panic at client creation. Idempotent. It costs about 1 ms,
/// so steps without network skip it (`StepArgs::USES_TLS`).
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// The HTTP client of the steps' REST calls (GitHub, OCI registries): the one TLS stack, 10 s to
/// connect, 30 s per request, the sandbox-steps user agent.
pub fn http_client() -> Result<reqwest::Client, StepError> {
    install_tls_provider();
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(30))
        .user_agent(concat!("sandbox-steps/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| StepError::unexpected(format!("cannot build the HTTP client: {e}")))
}

/// A current-thread runtime unless the step asks for workers: most steps wait on the network, and
/// starting and joining worker threads was a third of a short step's run time.
fn runtime_for<A: StepArgs>() -> std::io::Result<tokio::runtime::Runtime> {
    match A::WORKER_THREADS {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.min(std::thread::available_parallelism().map_or(2, |p| p.get())))
            .enable_all()
            .build(),
    }
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal, StepError> {
    tokio::signal::unix::signal(kind)
        .map_err(|e| StepError::unexpected(format!("cannot install a signal handler: {e}")))
}

/// The one-line JSON summary on stdout: the outputs, and the error when there is one.
fn print_summary(name: &str, outputs: Option<&Outputs>, result: Result<(), &StepError>) {
    let mut summary = serde_json::json!({
        "step": name,
        "ok": result.is_ok(),
        "exit_code": result.map_or_else(|e| e.exit_code(), |()| 0),
        "outputs": outputs.map(Outputs::values).unwrap_or_default(),
    });
    if let Err(err) = result {
        summary["error"] = crate::redact_text(&err.to_string()).into();
        summary["error_kind"] = err.kind.as_str().into();
    }
    println!("{summary}");
}

pub(crate) enum ParseFailure {
    Clap(clap::Error),
    Step(StepError),
}

/// The prefix of every flag's environment variable: `--name` ↔ `SBX_NAME`. Without it, variables
/// that shells and CI systems set themselves (`NAME`, `HOSTNAME`, `PATH`, `BRANCH`, `TIMEOUT`, ...)
/// would silently fill flags.
pub const ENV_PREFIX: &str = "SBX_";

/// The step's clap command with an environment variable for every flag that has none:
/// `--git-token` ↔ `SBX_GIT_TOKEN` ([`ENV_PREFIX`]). Flags are defined once, in the step's
/// `Parser`; one that names its own variable keeps it (the Vault flags: `VAULT_ADDR`,
/// `VAULT_TOKEN`, ..., the variables Vault's own CLI reads).
pub fn command_with_env(cmd: Command) -> Command {
    cmd.mut_args(|arg| {
        let skip = arg.is_positional() || matches!(arg.get_id().as_str(), "help" | "version");
        let explicit = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        match arg.get_long() {
            Some(long) if !skip => {
                let env = explicit.unwrap_or_else(|| {
                    format!(
                        "{ENV_PREFIX}{}",
                        long.replace('-', "_").to_ascii_uppercase()
                    )
                });
                // An empty variable counts as unset, so the flag's default applies: templates
                // pass optional parameters nobody set as `value: ""`. (clap reads the variable
                // here, when the arg is defined.)
                if std::env::var_os(&env).is_some_and(|v| v.is_empty()) {
                    std::env::remove_var(&env);
                }
                arg.env(env)
            }
            _ => arg,
        }
    })
}

/// Parses a step's flags (from argv and the environment) and refuses literal secrets given on the
/// command line.
pub(crate) fn parse_from<A, I, T>(argv: I) -> Result<A, ParseFailure>
where
    A: StepArgs,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    // `--help` shows the step's own deadline as the default of --timeout.
    let mut cmd = command_with_env(A::command()).mut_arg("timeout", |arg| {
        arg.default_value(humantime::format_duration(A::DEFAULT_TIMEOUT).to_string())
    });
    let matches = cmd
        .try_get_matches_from_mut(argv)
        .map_err(ParseFailure::Clap)?;
    refuse_literal_secrets_in_argv(&cmd, &matches).map_err(ParseFailure::Step)?;
    A::from_arg_matches(&matches).map_err(|e| ParseFailure::Clap(e.format(&mut cmd)))
}

fn refuse_literal_secrets_in_argv(cmd: &Command, matches: &ArgMatches) -> Result<(), StepError> {
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let Ok(Some(value)) = matches.try_get_one::<SecretRef>(id) else {
            continue;
        };
        if value.is_literal() && matches.value_source(id) == Some(ValueSource::CommandLine) {
            let flag = arg.get_long().unwrap_or(id);
            return Err(StepError::invalid(format!(
                "--{flag}: a literal secret on the command line is refused (it would show in argv \
                 and the Argo UI); pass a reference: env:NAME, file:/path or \
                 vault:<mount>/<path>#<key>"
            )));
        }
    }
    Ok(())
}
