//! The committing steps' common move: change one file on one branch, and push.

use step_kit::{escape_untrusted, Context, StepError};

use crate::{
    commit_and_push, Change, Checkout, CommitFlags, GitFlags, Oid, PathContent, Transport,
};

/// One file of one branch, and how its change is described.
#[derive(Debug, Clone)]
pub struct FileEdit {
    pub repo: String,
    pub branch: String,
    /// The file, relative to the repository root (checked by the caller).
    pub path: String,
    /// The commit message.
    pub message: String,
    /// Log what would change; push nothing.
    pub dry_run: bool,
}

/// Refuses (exit 3) to commit to a protected branch (`main`, `master`, `--protected-branches`,
/// the remote's default branch) unless `--allow-protected-branch` says this one is meant, before
/// anything is fetched or pushed.
async fn refuse_protected_branch(
    edit: &FileEdit,
    git: &GitFlags,
    commit: &CommitFlags,
    ctx: &Context,
) -> Result<(), StepError> {
    if commit.allow_protected_branch {
        tracing::info!(
            "--allow-protected-branch: committing to {} even if it is protected",
            escape_untrusted(&edit.branch)
        );
        return Ok(());
    }
    let branch = escape_untrusted(&edit.branch);
    if let Some(pattern) = commit.protection.protecting(&edit.branch) {
        return Err(StepError::precondition(format!(
            "--branch {branch} is protected (pattern {pattern:?}): refusing to commit to it \
             (--allow-protected-branch, where writing it is intended)"
        )));
    }
    let remote = Transport::open(&edit.repo, git, ctx.retry_policy(), ctx.cancel.clone()).await?;
    if remote.advertised_refs().await?.default_branch() == Some(edit.branch.as_str()) {
        return Err(StepError::precondition(format!(
            "--branch {branch} is the remote's default branch: refusing to commit to it \
             (--allow-protected-branch, where writing it is intended)"
        )));
    }
    Ok(())
}

/// Fetches the branch (depth 1), computes the file's new content from its current one (`None`:
/// absent; return `None` to delete it), and when that changes anything commits and pushes, redoing
/// it on a fresh fetch when someone else pushed first, until the step's deadline. Returns the
/// branch's commit afterwards and whether this call pushed it; in a dry run, the branch's commit
/// and whether a real run would push (a dry run reports what a real run would do).
pub async fn edit_file(
    edit: FileEdit,
    git: &GitFlags,
    commit: &CommitFlags,
    ctx: &Context,
    mut compute: impl FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, StepError> + Send + 'static,
) -> Result<(Oid, bool), StepError> {
    refuse_protected_branch(&edit, git, commit, ctx).await?;
    let auth = git.auth(&edit.repo).await?;
    let identity = commit.identity();
    let workdir = git.workdir.clone();
    let (deadline, cancel) = (ctx.deadline.into_std(), ctx.cancel.clone());
    step_kit::doing(format!(
        "fetching, editing and pushing {} on {} of {}",
        edit.path, edit.branch, edit.repo
    ));
    tokio::task::spawn_blocking(move || {
        let FileEdit {
            repo,
            branch,
            path,
            message,
            dry_run,
        } = edit;
        if dry_run {
            let checkout = Checkout::fetch(&repo, &branch, auth, workdir.as_deref(), cancel)?;
            let existing = checkout.read_file(&path)?;
            let wanted = compute(existing.as_deref())?;
            match (&existing, &wanted) {
                (old, new) if old == new => tracing::info!("dry run: {path} unchanged"),
                (_, None) => tracing::info!("dry run: would remove {path}"),
                (old, Some(content)) => tracing::info!(
                    "dry run: would change {path}:\n{}",
                    unified_diff(&path, old.as_deref(), content)
                ),
            }
            return Ok((checkout.tip(), existing != wanted));
        }
        commit_and_push(
            &repo,
            &branch,
            auth,
            workdir.as_deref(),
            &identity,
            &message,
            deadline,
            cancel,
            |checkout| {
                let existing = checkout.read_file(&path)?;
                let wanted = compute(existing.as_deref())?;
                Ok(if wanted == existing {
                    Vec::new()
                } else {
                    vec![Change {
                        path: path.clone(),
                        content: wanted,
                    }]
                })
            },
        )
    })
    .await
    .map_err(|e| StepError::unexpected(format!("git work panicked: {e}")))?
}

/// One file of another branch of `repo` (`None`: absent), fetched with depth 1 into a temp dir
/// (never `--workdir`, which holds the branch being edited).
pub async fn read_branch_file(
    repo: &str,
    branch: &str,
    path: &str,
    git: &GitFlags,
    ctx: &Context,
) -> Result<Option<Vec<u8>>, StepError> {
    let doing = format!("reading {path} of {branch} from {repo}");
    on_branch_tip(repo, branch, path, git, ctx, doing, |c, p| c.read_file(p)).await
}

/// A file or a directory's files of `branch` of `repo`, read in one fetch of depth 1 into a
/// temp dir.
pub async fn read_branch_path(
    repo: &str,
    branch: &str,
    path: &str,
    git: &GitFlags,
    ctx: &Context,
) -> Result<PathContent, StepError> {
    let doing = format!("reading {path} of {branch} from {repo}");
    on_branch_tip(repo, branch, path, git, ctx, doing, |c, p| c.read_path(p)).await
}

/// The names of the files in directory `path` of `branch` of `repo` (empty when absent),
/// fetched with depth 1 into a temp dir.
pub async fn list_branch_dir(
    repo: &str,
    branch: &str,
    path: &str,
    git: &GitFlags,
    ctx: &Context,
) -> Result<Vec<String>, StepError> {
    let doing = format!("listing {path} of {branch} in {repo}");
    on_branch_tip(repo, branch, path, git, ctx, doing, |c, p| c.list_dir(p)).await
}

/// `read(checkout, path)` on a depth-1 fetch of `branch` into a temp dir, off the async threads.
async fn on_branch_tip<T: Send + 'static>(
    repo: &str,
    branch: &str,
    path: &str,
    git: &GitFlags,
    ctx: &Context,
    doing: String,
    read: fn(&Checkout, &str) -> Result<T, StepError>,
) -> Result<T, StepError> {
    let auth = git.auth(repo).await?;
    let (repo, branch, path) = (repo.to_owned(), branch.to_owned(), path.to_owned());
    let cancel = ctx.cancel.clone();
    step_kit::doing(doing);
    tokio::task::spawn_blocking(move || {
        read(&Checkout::fetch(&repo, &branch, auth, None, cancel)?, &path)
    })
    .await
    .map_err(|e| StepError::unexpected(format!("git work panicked: {e}")))?
}

/// `old` to `new` as a unified diff (`/dev/null` for a new file), for dry runs.
fn unified_diff(path: &str, old: Option<&[u8]>, new: &[u8]) -> String {
    let (old_text, new_text) = (
        String::from_utf8_lossy(old.unwrap_or_default()),
        String::from_utf8_lossy(new),
    );
    let old_name = if old.is_some() {
        format!("a/{path}")
    } else {
        "/dev/null".into()
    };
    similar::TextDiff::from_lines(old_text.as_ref(), new_text.as_ref())
        .unified_diff()
        .header(&old_name, &format!("b/{path}"))
        .to_string()
}
