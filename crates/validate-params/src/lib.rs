//! validate-params: fail fast on bad parameters and derive every sandbox name safely.
//!
//! The values come from a GitHub webhook, so none is trusted: each is checked, every problem is
//! reported at once (one line each, the value escaped), and the names the later steps use are
//! derived here, once, by the rules of the `naming` crate.

use std::ffi::OsString;

use clap::{Parser, ValueEnum};
use step_kit::{escape_untrusted, CommonArgs, Context, StepArgs, StepError};

pub const NAME: &str = "validate-params";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &[
    "environment",
    "namespace",
    "branch",
    "database",
    "bucket",
    "app-name",
    "hostname",
    "head-ref-slug",
];

const EXAMPLE: &str = "\
Example:
  validate-params --pr-number 42 --head-ref 'feature/JIRA-123_Ünïcode' --repository acme/platform \\
    --namespace-prefix apps- --bucket-prefix acme- --base-domain sandbox.acme.dev \\
    --labels create-sandbox,team-a --require-label create-sandbox
  # outputs: environment=sbx-pr-42 namespace=apps-sbx-pr-42 branch=sbx-pr-42 database=sbx_pr_42
  #          bucket=acme-sbx-pr-42 app-name=sbx-pr-42 hostname=sbx-pr-42.sandbox.acme.dev
  #          head-ref-slug=feature-jira-123-unicode-<hash>

Exit codes: 0 valid (outputs written), 2 invalid parameters (each listed, nothing written),
3 the required label is absent.";

/// Check the parameters of a sandbox workflow and derive its names.
///
/// Checks every parameter at once (pull request number, head ref, repository, prefixes, domain,
/// labels) and reports each problem on its own line; derives the environment, namespace, branch,
/// database, bucket, Argo CD app and host names, each valid for where it is used (DNS-1123 label,
/// PostgreSQL identifier, GCS bucket, git branch). Long or non-ASCII head refs are turned into a
/// slug with a stable hash appended, so two branches never share a sandbox.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    /// The pull request number, e.g. 42.
    #[arg(long, value_name = "N")]
    pub pr_number: String,

    /// The pull request's head branch, as the webhook gives it (slashes, capitals and unicode are
    /// fine; it must be a valid git branch name).
    #[arg(long, value_name = "REF")]
    pub head_ref: String,

    /// The repository of the pull request, `owner/name`.
    #[arg(long, value_name = "OWNER/NAME")]
    pub repository: String,

    /// The repositories this installation serves (comma-separated `owner/name`, compared without
    /// regard to case); another repository is exit 3. Sandbox names come from the pull request's
    /// number, not its repository: two repositories served by one installation would share (and
    /// delete) each other's sandboxes.
    #[arg(long, value_name = "OWNER/NAME,...", value_delimiter = ',')]
    pub repositories: Vec<String>,

    /// Prefix of the environment name; a lowercase letter first, then a-z, 0-9, -.
    #[arg(long, value_name = "PREFIX", default_value = "sbx-pr-")]
    pub env_prefix: String,

    /// Prefix of the Kubernetes namespace (namespace = prefix + environment).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub namespace_prefix: String,

    /// Prefix of the GCS bucket (bucket = prefix + environment); bucket names are global.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub bucket_prefix: String,

    /// Domain under which the sandbox's host name is made (hostname = environment + . + domain);
    /// without it, the host name is the environment alone.
    #[arg(long, value_name = "DOMAIN")]
    pub base_domain: Option<String>,

    /// What the environment is named after: the pull request number or the head ref's slug.
    #[arg(long, value_enum, default_value_t = NameFrom::Pr)]
    pub name_from: NameFrom,

    /// The pull request's labels, comma-separated.
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub labels: Vec<String>,

    /// Stop with exit 3 unless the pull request carries this label.
    #[arg(long, value_name = "LABEL")]
    pub require_label: Option<String>,

    /// Branches the derived branch must never be (globs: `*` any run, `?` one character).
    #[arg(
        long,
        value_name = "GLOBS",
        value_delimiter = ',',
        default_value = "main,master"
    )]
    pub protected_branches: Vec<String>,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl StepArgs for Args {
    const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
    // No network: skip the TLS provider's start-up cost.
    const USES_TLS: bool = false;
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NameFrom {
    Pr,
    Branch,
}

/// Runs the step with `argv` (the first item is the program name); returns the exit code.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> u8 {
    step_kit::run_from(NAME, argv, validate_params)
}

async fn validate_params(args: Args, ctx: Context) -> Result<(), StepError> {
    let names = derive_names(&Params::from(&args)).map_err(|problems| {
        for p in &problems {
            tracing::error!("{p}");
        }
        let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
        StepError::invalid(format!(
            "{} invalid parameter(s): {}",
            problems.len(),
            lines.join("; ")
        ))
    })?;
    let served: Vec<&str> = args
        .repositories
        .iter()
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
        .collect();
    if !served.is_empty()
        && !served
            .iter()
            .any(|r| r.eq_ignore_ascii_case(args.repository.trim()))
    {
        return Err(StepError::precondition(format!(
            "--repository {}: this installation serves {} only (--repositories); sandboxes are \
             named by pull request number, so another repository's would collide with theirs",
            escape_untrusted(&args.repository),
            escape_untrusted(&served.join(","))
        )));
    }
    if let Some(required) = &args.require_label {
        if !args.labels.iter().any(|l| l.trim() == required) {
            return Err(StepError::precondition(format!(
                "the pull request lacks the label {}; labels: {}",
                escape_untrusted(required),
                escape_untrusted(&args.labels.join(","))
            )));
        }
    }
    for (name, value) in names.as_outputs() {
        ctx.outputs.set(name, value)?;
    }
    tracing::info!(
        "sandbox {} in namespace {}",
        names.environment,
        names.namespace
    );
    Ok(())
}

mod derive;
pub use derive::{derive_names, Names, Params, Problem};

impl<'a> From<&'a Args> for Params<'a> {
    fn from(a: &'a Args) -> Self {
        Params {
            pr_number: &a.pr_number,
            head_ref: &a.head_ref,
            repository: &a.repository,
            env_prefix: &a.env_prefix,
            namespace_prefix: &a.namespace_prefix,
            bucket_prefix: &a.bucket_prefix,
            base_domain: a.base_domain.as_deref(),
            name_from: a.name_from,
            protected_branches: &a.protected_branches,
        }
    }
}
