//! cleanup-branch: deletes the sandbox's environment branch, unless an open pull request still
//! uses it as its head; never a protected branch, never one outside the sandbox naming scheme.

use std::ffi::OsString;

use clap::Parser;
use git_remote::{GitFlags, RefUpdate, Transport, ZERO_ID};
use step_kit::{escape_untrusted, CommonArgs, Context, StepArgs, StepError};

pub const NAME: &str = "cleanup-branch";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &["deleted", "reason"];

const EXAMPLE: &str = "\
Example:
  cleanup-branch --repo https://github.com/acme/infra.git --branch sbx-pr-42 \\
    --git-token env:GITHUB_TOKEN --github-repo acme/infra --github-token env:GITHUB_TOKEN
  # outputs: deleted=true reason=deleted
  #      or: deleted=false reason=absent | reason=open-pr #17

Exit codes: 0 deleted, already absent, or kept for an open pull request; 2 invalid flags;
3 protected branch or outside --sandbox-prefix, credentials refused; 4 network failure, rate
limit past the deadline, or timeout after retries.";

/// Delete the environment branch of a sandbox from the infrastructure repository.
///
/// Deletes `refs/heads/<BRANCH>` with one compare-and-swap ref update (no clone), only when the
/// branch starts with `--sandbox-prefix`, is not protected nor the remote's default branch, and
/// (with `--github-repo`) no open pull request has it as its head. A branch already gone is
/// success.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    /// The repository's URL: https:// (no credentials in it) or an SSH remote.
    #[arg(long, value_name = "URL")]
    pub repo: String,

    /// The branch to delete, e.g. the `branch` output of validate-params.
    #[arg(long, value_name = "BRANCH")]
    pub branch: String,

    /// Only branches starting with this prefix are ever deleted.
    #[arg(long, value_name = "PREFIX", default_value = "sbx-")]
    pub sandbox_prefix: String,

    #[command(flatten)]
    pub protection: git_remote::ProtectedBranches,

    /// With --github-repo, an open pull request whose head is the branch keeps it.
    #[command(flatten)]
    pub github: github::GitHubFlags,

    /// Log what would happen, delete nothing (outputs: deleted=false, reason=dry-run).
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub git: GitFlags,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl StepArgs for Args {
    // Room to wait out a GitHub rate limit.
    const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10 * 60);
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

/// Runs the step with `argv` (the first item is the program name); returns the exit code.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> u8 {
    step_kit::run_from(NAME, argv, cleanup_branch)
}

async fn cleanup_branch(args: Args, ctx: Context) -> Result<(), StepError> {
    let branch = escape_untrusted(&args.branch);
    naming::check_branch_name(&args.branch)
        .map_err(|rule| StepError::invalid(format!("--branch {branch}: {rule}")))?;
    naming::check_sandbox_prefix(&args.sandbox_prefix).map_err(|rule| {
        StepError::invalid(format!(
            "--sandbox-prefix {}: {rule}",
            escape_untrusted(&args.sandbox_prefix)
        ))
    })?;
    args.github.check()?;
    if !args.branch.starts_with(&args.sandbox_prefix) {
        return Err(StepError::precondition(format!(
            "--branch {branch} does not start with the sandbox prefix {}: refusing to delete it",
            escape_untrusted(&args.sandbox_prefix)
        )));
    }
    if let Some(pattern) = args.protection.protecting(&args.branch) {
        return Err(StepError::precondition(format!(
            "--branch {branch} is protected (pattern {pattern:?}): refusing to delete it"
        )));
    }

    let remote = Transport::open(
        &args.repo,
        &args.git,
        ctx.retry_policy(),
        ctx.cancel.clone(),
    )
    .await?;
    let refs = remote.advertised_refs().await?;
    if refs.default_branch() == Some(args.branch.as_str()) {
        return Err(StepError::precondition(format!(
            "--branch {branch} is the remote's default branch: refusing to delete it"
        )));
    }
    let Some(commit) = refs.branch(&args.branch).map(str::to_owned) else {
        tracing::info!("branch {branch} is already absent");
        return write_outputs(&ctx, false, "absent");
    };

    let github = args
        .github
        .connect(&args.git.vault, ctx.retry_policy(), ctx.deadline)
        .await?;
    if let Some(gh) = github {
        let open = gh.open_pulls_with_head(&args.branch).await?;
        if let Some(number) = open.iter().min() {
            tracing::info!("branch {branch} kept: open pull request #{number} uses it");
            return write_outputs(&ctx, false, &format!("open-pr #{number}"));
        }
    }

    let ref_name = format!("refs/heads/{}", args.branch);
    if args.dry_run {
        tracing::info!(
            "dry run: would delete {ref_name} (at {commit}) on {}",
            &remote.url()
        );
        return write_outputs(&ctx, false, "dry-run");
    }
    let update = RefUpdate {
        name: ref_name.clone(),
        old: commit.clone(),
        new: ZERO_ID.to_owned(),
    };
    match remote.update_ref(&update, &ref_name).await? {
        None => {
            tracing::info!("deleted {ref_name} (was at {commit})");
            write_outputs(&ctx, true, "deleted")
        }
        Some(reason) => match remote.advertised_refs().await?.branch(&args.branch) {
            None => {
                tracing::info!("{ref_name} was deleted concurrently");
                write_outputs(&ctx, false, "absent")
            }
            // Someone pushed to it meanwhile: a re-run decides again with the new state.
            Some(now) => Err(StepError::transient(format!(
                "the remote refused to delete {ref_name} ({reason}); it moved from {commit} to {now}"
            ))),
        },
    }
}

fn write_outputs(ctx: &Context, deleted: bool, reason: &str) -> Result<(), StepError> {
    ctx.outputs
        .set("deleted", if deleted { "true" } else { "false" })?;
    ctx.outputs.set("reason", reason)
}
