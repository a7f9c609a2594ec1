//! The step contract, implemented once for every sandbox-steps binary.
//!
//! A step is a clap `Parser` that flattens [`CommonArgs`] and an async function taking the parsed
//! flags and a [`Context`]. [`run`] does everything around it: flags from environment variables,
//! refusing literal secrets on the command line, logging, the step deadline, SIGTERM/SIGINT,
//! mapping the result to the exit codes of DESIGN.md, and the one-line JSON summary.
//!
//! ```no_run
//! use clap::Parser;
//! use step_kit::{CommonArgs, Context, StepArgs, StepError};
//!
//! /// Say hello. Example: `hello --who world`
//! #[derive(Parser)]
//! struct Args {
//!     #[arg(long)]
//!     who: String,
//!     #[command(flatten)]
//!     common: CommonArgs,
//! }
//! impl StepArgs for Args {
//!     fn common(&self) -> &CommonArgs { &self.common }
//! }
//!
//! async fn hello(args: Args, ctx: Context) -> Result<(), StepError> {
//!     ctx.outputs.set("greeting", &format!("hello {}", args.who))
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     step_kit::run("hello", hello)
//! }
//! ```

mod args;
mod error;
mod escape;
mod logging;
mod outputs;
mod progress;
mod redact;
mod retry;
mod runner;
mod secret;
mod vault_flags;

pub use args::{parse_duration, CommonArgs, LogFormat, StepArgs};
pub use error::{
    error_chain, tls_refusal, ErrorKind, FlagProblems, StepError, CERTIFICATE_HINT, NOT_TLS_HINT,
};
pub use escape::escape_untrusted;
pub use outputs::Outputs;
pub use progress::{report_argo_progress, Progress};
pub use redact::{redact_text, redact_url};
pub use retry::{retry, RetryPolicy};
pub use runner::{
    command_with_env, doing, http_client, install_tls_provider, run, run_from, Context, ENV_PREFIX,
};
pub use secret::{Secret, SecretRef};
pub use vault_flags::{vault_error, VaultFlags};

/// Re-exported so steps and their tests use the same versions as the contract.
pub use clap;
pub use tokio;
pub use tracing;
