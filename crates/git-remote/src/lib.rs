//! Git remotes: ref listing and ref updates spoken directly over git's smart HTTP protocol,
//! partial checkouts for edits over HTTPS, and (through libgit2, in [`Checkout`]) shallow
//! fetches, in-memory commits and pushes that retry when someone else pushed first, over HTTPS or
//! SSH.
//!
//! Creating or deleting a branch needs no clone: the remote already has the commit, so only a ref
//! update travels. [`Remote::advertised_refs`] reads the refs (and the default branch) from the
//! upload-pack advertisement; [`Remote::update_refs`] sends receive-pack commands, each a
//! compare-and-swap on the ref's old value, with an empty pack when a ref is set. That is ~20 ms
//! whatever the size of the repository, where a shallow clone and push take half a second.
//!
//! Editing one file ([`edit_file`]) needs the commit, the trees on the file's path and the file:
//! over HTTPS those are fetched by id with protocol v2 (a partial checkout, in memory), and the
//! new objects pushed as one small pack, a kilobyte or so whatever the size of the repository.
//! Servers without filters (and SSH remotes) get a depth-1 fetch through libgit2 instead.
//!
//! Credentials: a token sent as HTTP basic auth (user `x-access-token` by default, as GitHub
//! expects). URLs with credentials inside are refused; URLs are redacted in every message.

mod checkout;
mod edit;
mod objects;
mod partial;
mod pktline;
mod protocol_v2;
mod smart_http;
mod transport;
mod tree;

pub use checkout::{
    commit_and_push, host_key_known, Change, Checkout, GitAuth, Identity, PathContent,
};
pub use edit::{edit_file, list_branch_dir, read_branch_file, read_branch_path, FileEdit};
pub use git2::Oid;
pub use objects::ObjectId;
pub use transport::{is_ssh_url, CommitFlags, GitFlags, ProtectedBranches, Transport};

pub use smart_http::{Advertisement, Credentials, RefUpdate, RefUpdateResult, Remote, ZERO_ID};

use step_kit::StepError;

/// Names that are never a sandbox branch, whatever `--protected-branches` says.
pub const ALWAYS_PROTECTED: &[&str] = &["main", "master"];

/// The pattern protecting `branch`, if any: `main`, `master`, or one of `patterns` (globs),
/// matched without regard to case (`MAIN` is main to a reader, and to case-insensitive file
/// systems). The remote's default branch is checked separately, once the refs are read.
pub fn protected_by(branch: &str, patterns: &[String]) -> Option<String> {
    let branch = branch.to_lowercase();
    ALWAYS_PROTECTED
        .iter()
        .map(|p| p.to_string())
        .chain(patterns.iter().map(|p| p.trim().to_owned()))
        .find(|p| !p.is_empty() && naming::glob_match(&p.to_lowercase(), &branch))
}

impl Credentials {
    /// The credentials of `--git-token` and `--git-username`; none without a token.
    pub async fn from_flags(flags: &GitFlags) -> Result<Option<Credentials>, StepError> {
        match &flags.git_token {
            Some(reference) => Ok(Some(Credentials {
                username: flags.git_username.clone(),
                token: reference.resolve("--git-token", &flags.vault).await?,
            })),
            None => Ok(None),
        }
    }
}
