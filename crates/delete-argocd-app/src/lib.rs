//! delete-argocd-app: removes the sandbox's Application file from the app-of-apps path, commits
//! and pushes. Argo CD then deletes the Application, and its resources finalizer the sandbox.

use std::ffi::OsString;

use clap::Parser;
use git_remote::{edit_file, CommitFlags, FileEdit, GitFlags};
use step_kit::{escape_untrusted, CommonArgs, Context, StepArgs, StepError};

pub const NAME: &str = "delete-argocd-app";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &["commit", "deleted", "path"];

const EXAMPLE: &str = "\
Example:
  delete-argocd-app --repo https://github.com/acme/gitops.git --allow-protected-branch \\
    --path apps/sandboxes --name sbx-pr-42 \\
    --git-token env:GITHUB_TOKEN
  # removes apps/sandboxes/sbx-pr-42.yaml from main; outputs: commit=<sha> deleted=true path=...

Exit codes: 0 removed or already absent; 2 invalid flags; 3 a name outside --sandbox-prefix, a
file create-argocd-app did not write (no app.kubernetes.io/managed-by=sandbox-steps label),
a protected branch without --allow-protected-branch, credentials refused; 4 network failure or timeout after retries.";

/// Remove the sandbox's Argo CD Application from the app-of-apps repository.
///
/// Deletes `<PATH>/<NAME>.yaml` with a commit, only for names starting with `--sandbox-prefix` and
/// files create-argocd-app wrote (its label).
/// Already absent is success (`deleted=false`). When someone else pushed first, it fetches and
/// tries again.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    /// The app-of-apps repository (https:// or SSH).
    #[arg(long, value_name = "URL")]
    pub repo: String,

    /// Its branch the app-of-apps watches.
    #[arg(long, value_name = "BRANCH", default_value = "main")]
    pub branch: String,

    /// The directory the app-of-apps watches, relative to the repository root.
    #[arg(long, value_name = "DIR")]
    pub path: String,

    /// The Application's name; the file is `<path>/<name>.yaml`.
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// Only Applications whose name starts with this prefix are ever removed.
    #[arg(long, value_name = "PREFIX", default_value = "sbx-")]
    pub sandbox_prefix: String,

    /// Log what would be removed; push nothing.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub commit: CommitFlags,

    #[command(flatten)]
    pub git: GitFlags,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl StepArgs for Args {
    const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5 * 60);
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

/// Runs the step with `argv` (the first item is the program name); returns the exit code.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> u8 {
    step_kit::run_from(NAME, argv, delete_argocd_app)
}

async fn delete_argocd_app(args: Args, ctx: Context) -> Result<(), StepError> {
    let checks = [
        ("--name", &args.name, naming::check_dns_label(&args.name)),
        ("--path", &args.path, naming::check_repo_path(&args.path)),
        (
            "--branch",
            &args.branch,
            naming::check_branch_name(&args.branch),
        ),
    ];
    for (flag, value, result) in checks {
        result.map_err(|rule| {
            StepError::invalid(format!("{flag} {}: {rule}", escape_untrusted(value)))
        })?;
    }
    naming::check_sandbox_prefix(&args.sandbox_prefix).map_err(|rule| {
        StepError::invalid(format!(
            "--sandbox-prefix {}: {rule}",
            escape_untrusted(&args.sandbox_prefix)
        ))
    })?;
    if !args.name.starts_with(&args.sandbox_prefix) {
        return Err(StepError::precondition(format!(
            "--name {} does not start with the sandbox prefix {}: refusing to remove it",
            escape_untrusted(&args.name),
            escape_untrusted(&args.sandbox_prefix)
        )));
    }
    let file = format!("{}/{}.yaml", args.path.trim_end_matches('/'), args.name);
    let edit = FileEdit {
        repo: args.repo.clone(),
        branch: args.branch.clone(),
        path: file.clone(),
        message: format!("{}: remove the Argo CD Application", args.name),
        dry_run: args.dry_run,
    };
    let checked = file.clone();
    let (commit, deleted) = edit_file(edit, &args.git, &args.commit, &ctx, move |existing| {
        if let Some(bytes) = existing {
            create_argocd_app::check_ours(&checked, bytes)?;
        }
        Ok(None)
    })
    .await?;
    let state = match (args.dry_run, deleted) {
        (false, true) => "removed",
        (false, false) => "already absent",
        (true, true) => "dry run: a real run would remove it; nothing committed",
        (true, false) => "dry run: already absent; a real run would commit nothing",
    };
    tracing::info!("{file}: {state} (commit {commit})");
    ctx.outputs.set("commit", &commit.to_string())?;
    ctx.outputs
        .set("deleted", if deleted { "true" } else { "false" })?;
    ctx.outputs.set("path", &file)
}
