//! The committing steps' common move: change one file on one branch, and push.

use step_kit::{escape_untrusted, Context, StepError};

use crate::checkout::RaceBackoff;
use crate::objects::ObjectId;
use crate::partial::{self, PartialCheckout, PartialError};
use crate::tree::TipView;
use crate::{
    commit_and_push, is_ssh_url, Change, Checkout, CommitFlags, GitFlags, Identity, PathContent,
    Transport,
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

/// Refuses (exit 3) to commit to a branch `--protected-branches` names (and `main`, `master`)
/// unless `--allow-protected-branch` says this one is meant, before anything is fetched.
fn refuse_protected_pattern(edit: &FileEdit, commit: &CommitFlags) -> Result<(), StepError> {
    if commit.allow_protected_branch {
        tracing::info!(
            "--allow-protected-branch: committing to {} even if it is protected",
            escape_untrusted(&edit.branch)
        );
        return Ok(());
    }
    match commit.protection.protecting(&edit.branch) {
        Some(pattern) => Err(StepError::precondition(format!(
            "--branch {} is protected (pattern {pattern:?}): refusing to commit to it \
             (--allow-protected-branch, where writing it is intended)",
            escape_untrusted(&edit.branch)
        ))),
        None => Ok(()),
    }
}

/// Refuses (exit 3) to commit to the remote's default branch, unless `--allow-protected-branch`.
fn refuse_default_branch(
    edit: &FileEdit,
    commit: &CommitFlags,
    default_branch: Option<&str>,
) -> Result<(), StepError> {
    if !commit.allow_protected_branch && default_branch == Some(edit.branch.as_str()) {
        return Err(StepError::precondition(format!(
            "--branch {} is the remote's default branch: refusing to commit to it \
             (--allow-protected-branch, where writing it is intended)",
            escape_untrusted(&edit.branch)
        )));
    }
    Ok(())
}

/// Reads the branch's file, computes its new content from its current one (`None`: absent;
/// return `None` to delete it), and when that changes anything commits and pushes, redoing it on
/// the branch's new commit when someone else pushed first, until the step's deadline. Returns the
/// branch's commit afterwards and whether this call pushed it; in a dry run, the branch's commit
/// and whether a real run would push (a dry run reports what a real run would do).
///
/// HTTP(S) remotes that serve partial fetches get only the commit, the trees on the file's path
/// and the file, and receive a pack of the new objects alone; others (SSH, or a server without
/// filters) a depth-1 fetch of the branch through libgit2.
pub async fn edit_file(
    edit: FileEdit,
    git: &GitFlags,
    commit: &CommitFlags,
    ctx: &Context,
    mut compute: impl FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, StepError> + Send + 'static,
) -> Result<(ObjectId, bool), StepError> {
    refuse_protected_pattern(&edit, commit)?;
    if !is_ssh_url(&edit.repo) {
        if let Some(mut tip) = partial::open(&edit.repo, &edit.branch, git, ctx).await? {
            refuse_default_branch(&edit, commit, tip.default_branch())?;
            step_kit::doing(format!(
                "editing and pushing {} on {} of {}",
                edit.path, edit.branch, edit.repo
            ));
            match edit_partial(&mut tip, &edit, &commit.identity(), ctx, &mut compute).await {
                Ok(result) => {
                    tip.log_traffic();
                    return Ok(result);
                }
                Err(PartialError::Failed(e)) => return Err(e),
                Err(PartialError::Unsupported(why)) => partial::fall_back(&why),
            }
        }
    }
    if !commit.allow_protected_branch {
        let remote =
            Transport::open(&edit.repo, git, ctx.retry_policy(), ctx.cancel.clone()).await?;
        refuse_default_branch(
            &edit,
            commit,
            remote.advertised_refs().await?.default_branch(),
        )?;
    }
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
            report_dry_run(&path, &existing, &wanted);
            return Ok((checkout.tip().into(), existing != wanted));
        }
        let (commit, pushed) = commit_and_push(
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
                Ok(change_to(&path, &existing, wanted).into_iter().collect())
            },
        )?;
        Ok((commit.into(), pushed))
    })
    .await
    .map_err(|e| StepError::unexpected(format!("git work panicked: {e}")))?
}

/// [`edit_file`] on a partial checkout: the same loop as [`commit_and_push`], with the objects
/// fetched on demand and a refusal that is not a race (the branch did not move) reported as such.
async fn edit_partial(
    tip: &mut PartialCheckout,
    edit: &FileEdit,
    identity: &Identity,
    ctx: &Context,
    compute: &mut impl FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, StepError>,
) -> Result<(ObjectId, bool), PartialError> {
    let mut backoff = RaceBackoff::new(ctx.deadline.into_std());
    loop {
        tip.fetch_path(&edit.path, false).await?;
        let existing = tip.view().read_file(&edit.path)?;
        let wanted = compute(existing.as_deref())?;
        if edit.dry_run {
            report_dry_run(&edit.path, &existing, &wanted);
            return Ok((tip.tip(), existing != wanted));
        }
        let Some(change) = change_to(&edit.path, &existing, wanted) else {
            return Ok((tip.tip(), false));
        };
        let Some(new) = tip.commit(&[change], identity, &edit.message)? else {
            return Ok((tip.tip(), false));
        };
        let Some(reason) = tip.push(&new).await? else {
            return Ok((new.id, true));
        };
        let refused = tip.tip();
        tokio::time::sleep(backoff.next(&edit.branch, &ctx.cancel)?).await;
        tip.refresh().await?;
        if tip.tip() == refused {
            return Err(PartialError::Failed(StepError::precondition(format!(
                "the remote refused the push to {}: {}",
                escape_untrusted(&edit.branch),
                escape_untrusted(&reason)
            ))));
        }
    }
}

/// The change that turns `existing` into `wanted` at `path`, if they differ.
fn change_to(path: &str, existing: &Option<Vec<u8>>, wanted: Option<Vec<u8>>) -> Option<Change> {
    (&wanted != existing).then(|| Change {
        path: path.to_owned(),
        content: wanted,
    })
}

fn report_dry_run(path: &str, existing: &Option<Vec<u8>>, wanted: &Option<Vec<u8>>) {
    match (existing, wanted) {
        (old, new) if old == new => tracing::info!("dry run: {path} unchanged"),
        (_, None) => tracing::info!("dry run: would remove {path}"),
        (old, Some(content)) => tracing::info!(
            "dry run: would change {path}:\n{}",
            unified_diff(path, old.as_deref(), content)
        ),
    }
}

/// One file of another branch of `repo` (`None`: absent), never through `--workdir` (which
/// holds the branch being edited).
pub async fn read_branch_file(
    repo: &str,
    branch: &str,
    path: &str,
    git: &GitFlags,
    ctx: &Context,
) -> Result<Option<Vec<u8>>, StepError> {
    let doing = format!("reading {path} of {branch} from {repo}");
    on_branch_tip(repo, branch, path, false, git, ctx, doing, |t, p| {
        t.read_file(p)
    })
    .await
}

/// A file, or a directory's files, of `branch` of `repo`.
pub async fn read_branch_path(
    repo: &str,
    branch: &str,
    path: &str,
    git: &GitFlags,
    ctx: &Context,
) -> Result<PathContent, StepError> {
    let doing = format!("reading {path} of {branch} from {repo}");
    on_branch_tip(repo, branch, path, true, git, ctx, doing, |t, p| {
        t.read_path(p)
    })
    .await
}

/// The names of the files in directory `path` of `branch` of `repo` (empty when absent).
pub async fn list_branch_dir(
    repo: &str,
    branch: &str,
    path: &str,
    git: &GitFlags,
    ctx: &Context,
) -> Result<Vec<String>, StepError> {
    let doing = format!("listing {path} of {branch} in {repo}");
    on_branch_tip(repo, branch, path, false, git, ctx, doing, |t, p| {
        t.list_dir(p)
    })
    .await
}

/// `read(tip, path)` on the tip of `branch`: a partial checkout of the path (with `dir_files`,
/// the files of a directory too) where the remote serves one, else a depth-1 fetch into a temp
/// dir, off the async threads.
#[allow(clippy::too_many_arguments)]
async fn on_branch_tip<T: Send + 'static>(
    repo: &str,
    branch: &str,
    path: &str,
    dir_files: bool,
    git: &GitFlags,
    ctx: &Context,
    doing: String,
    read: fn(&TipView, &str) -> Result<T, StepError>,
) -> Result<T, StepError> {
    step_kit::doing(doing);
    if !is_ssh_url(repo) {
        if let Some(mut tip) = partial::open(repo, branch, git, ctx).await? {
            match tip.fetch_path(path, dir_files).await {
                Ok(()) => {
                    tip.log_traffic();
                    return read(&tip.view(), path);
                }
                Err(PartialError::Failed(e)) => return Err(e),
                Err(PartialError::Unsupported(why)) => partial::fall_back(&why),
            }
        }
    }
    let auth = git.auth(repo).await?;
    let (repo, branch, path) = (repo.to_owned(), branch.to_owned(), path.to_owned());
    let cancel = ctx.cancel.clone();
    tokio::task::spawn_blocking(move || {
        Checkout::fetch(&repo, &branch, auth, None, cancel)?.read(|view| read(view, &path))
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
