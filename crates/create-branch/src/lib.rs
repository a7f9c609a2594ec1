//! create-branch: creates `refs/heads/<branch>` on the remote at the tip of `--from`.
//!
//! No clone over HTTPS: the remote already has the commit, so one ref update (a compare-and-swap,
//! "create only if absent") is all that travels. SSH remotes go through libgit2 (see
//! `git_remote::Transport`). Re-runs converge: an existing branch is left where it is
//! (`created=false`) unless `--reset` moves it.

use std::ffi::OsString;

use clap::Parser;
use git_remote::{GitFlags, RefUpdate, Transport, ZERO_ID};
use step_kit::{escape_untrusted, CommonArgs, Context, StepArgs, StepError};

pub const NAME: &str = "create-branch";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &["commit", "created", "existed"];

const EXAMPLE: &str = "\
Example:
  GIT_TOKEN=env:GITHUB_TOKEN create-branch --repo https://github.com/acme/infra.git \\
    --branch sbx-pr-42 --from main
  # outputs: commit=<sha of main> created=true (false when the branch was already there)

Exit codes: 0 created or already there, 2 invalid branch name or flags, 3 protected branch,
--reset outside --sandbox-prefix, --from missing, or credentials refused, 4 network failure or
timeout after retries.";

/// Create the environment branch of a sandbox in the infrastructure repository.
///
/// Creates `refs/heads/<BRANCH>` on the remote at the commit of `--from` (a branch, a tag or a
/// commit id) with a single ref update over git's smart HTTP protocol: no clone, so it takes the
/// same few milliseconds on any repository (SSH remotes fetch `--from` with depth 1, then push).
/// An existing branch is not moved unless `--reset` is given. Protected branches (`main`, `master`, the remote's default branch, `--protected-branches`)
/// are refused.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    /// The repository's URL: https:// (no credentials in it) or an SSH remote.
    #[arg(long, value_name = "URL")]
    pub repo: String,

    /// The branch to create, e.g. the `branch` output of validate-params.
    #[arg(long, value_name = "BRANCH")]
    pub branch: String,

    /// Where the branch starts: a branch, a tag, a full ref name or a 40-hex commit id.
    #[arg(long, value_name = "REF", default_value = "main")]
    pub from: String,

    #[command(flatten)]
    pub protection: git_remote::ProtectedBranches,

    /// Move an existing branch to `--from` (a compare-and-swap from the commit seen). Only for
    /// branches under `--sandbox-prefix`: a reset throws away what the branch held.
    #[arg(long)]
    pub reset: bool,

    /// The environment branches' prefix: `--reset` moves only branches that start with it.
    #[arg(long, value_name = "PREFIX", default_value = "sbx-")]
    pub sandbox_prefix: String,

    /// Print what would change, change nothing (outputs: created=false, commit the branch has or
    /// would get).
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub git: GitFlags,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl StepArgs for Args {
    const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

/// Runs the step with `argv` (the first item is the program name); returns the exit code.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> u8 {
    step_kit::run_from(NAME, argv, create_branch)
}

async fn create_branch(args: Args, ctx: Context) -> Result<(), StepError> {
    naming::check_branch_name(&args.branch).map_err(|rule| {
        StepError::invalid(format!(
            "--branch {}: {rule}",
            escape_untrusted(&args.branch)
        ))
    })?;
    let from_is_id = args.from.len() == 40 && args.from.bytes().all(|b| b.is_ascii_hexdigit());
    if from_is_id && args.from.bytes().all(|b| b == b'0') {
        // The null id in a ref update means "delete the ref".
        return Err(StepError::invalid(
            "--from 0000000000000000000000000000000000000000: the null object id is not a commit",
        ));
    }
    naming::check_sandbox_prefix(&args.sandbox_prefix).map_err(|rule| {
        StepError::invalid(format!(
            "--sandbox-prefix {}: {rule}",
            escape_untrusted(&args.sandbox_prefix)
        ))
    })?;
    if !from_is_id {
        naming::check_branch_name(&args.from).map_err(|rule| {
            StepError::invalid(format!("--from {}: {rule}", escape_untrusted(&args.from)))
        })?;
    }
    if let Some(pattern) = args.protection.protecting(&args.branch) {
        return Err(StepError::precondition(format!(
            "--branch {} is protected (pattern {pattern:?}): refusing to create or move it",
            escape_untrusted(&args.branch)
        )));
    }
    if args.reset && !args.branch.starts_with(&args.sandbox_prefix) {
        return Err(StepError::precondition(format!(
            "--reset moves only branches under --sandbox-prefix {}; {} is not one: refusing",
            escape_untrusted(&args.sandbox_prefix),
            escape_untrusted(&args.branch)
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
            "--branch {} is the remote's default branch: refusing to create or move it",
            escape_untrusted(&args.branch)
        )));
    }
    let Some((from_ref, target)) = refs.resolve(&args.from) else {
        return Err(StepError::precondition(format!(
            "--from {} does not exist on {}",
            escape_untrusted(&args.from),
            &remote.url()
        )));
    };
    let ref_name = format!("refs/heads/{}", args.branch);
    let current = refs.branch(&args.branch).map(str::to_owned);

    let old = match &current {
        Some(commit) if *commit == target => {
            tracing::info!("{ref_name} is already at {target} ({from_ref}): nothing to do");
            return write_outputs(&ctx, commit, false, true);
        }
        Some(commit) if !args.reset => {
            tracing::info!(
                "{ref_name} already exists at {commit}; {from_ref} is at {target}: not moved \
                 (--reset moves it)"
            );
            return write_outputs(&ctx, commit, false, true);
        }
        Some(commit) => commit.clone(),
        None => ZERO_ID.to_owned(),
    };
    let verb = if old == ZERO_ID { "create" } else { "move" };
    if args.dry_run {
        tracing::info!(
            "dry run: would {verb} {ref_name} at {target} ({from_ref}) on {}",
            &remote.url()
        );
        return write_outputs(
            &ctx,
            current.as_deref().unwrap_or(&target),
            false,
            current.is_some(),
        );
    }

    let update = RefUpdate {
        name: ref_name.clone(),
        old: old.clone(),
        new: target.clone(),
    };
    match remote.update_ref(&update, &from_ref).await? {
        None => {
            tracing::info!("{verb}d {ref_name} at {target} ({from_ref})");
            write_outputs(&ctx, &target, true, current.is_some())
        }
        Some(reason) => {
            // Refused: either a race lost (another run created or moved it: converge on what is
            // there now), or the remote will not take it (a missing commit, a server-side rule).
            let now = remote.advertised_refs().await?;
            match now.branch(&args.branch) {
                Some(commit) if commit == target || (old == ZERO_ID && !args.reset) => {
                    tracing::info!("{ref_name} was {verb}d concurrently, now at {commit}");
                    write_outputs(&ctx, commit, false, true)
                }
                None if old == ZERO_ID => Err(StepError::precondition(format!(
                    "the remote refused to create {ref_name} at {target}: {reason}"
                ))),
                _ => Err(StepError::transient(format!(
                    "the remote refused to {verb} {ref_name}: {reason}"
                ))),
            }
        }
    }
}

/// `existed`: the branch was there when this run looked (or appeared while it ran).
fn write_outputs(
    ctx: &Context,
    commit: &str,
    created: bool,
    existed: bool,
) -> Result<(), StepError> {
    let flag = |b: bool| if b { "true" } else { "false" };
    ctx.outputs.set("commit", commit)?;
    ctx.outputs.set("created", flag(created))?;
    ctx.outputs.set("existed", flag(existed))
}
