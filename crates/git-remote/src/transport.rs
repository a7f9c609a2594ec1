//! One way for the git steps to reach a remote, whatever its URL: HTTP(S) remotes are spoken to
//! directly over smart HTTP ([`Remote`]: no clone at all); SSH remotes go through libgit2, which
//! fetches the one commit it must push from (depth 1).

use std::path::PathBuf;

use step_kit::{escape_untrusted, RetryPolicy, StepError};
use tokio_util::sync::CancellationToken;

use crate::checkout::{list_refs, Checkout, GitAuth, Identity};
use crate::{Advertisement, Credentials, RefUpdate, Remote, ZERO_ID};

/// The flags every git step shares (flattened into its own).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Git access")]
pub struct GitFlags {
    /// The token for HTTPS remotes, as a reference: env:NAME, file:/path or
    /// vault:<mount>/<path>#<key>. Sent as HTTP basic auth.
    #[arg(long, value_name = "SECRET_REF")]
    pub git_token: Option<step_kit::SecretRef>,

    /// The user name sent with the token.
    #[arg(long, value_name = "USER", default_value = "x-access-token")]
    pub git_username: String,

    /// The private key for SSH remotes (ssh://… or git@host:path), as a reference.
    #[arg(long, value_name = "SECRET_REF")]
    pub ssh_key: Option<step_kit::SecretRef>,

    /// OpenSSH known_hosts file the SSH host key is checked against.
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,

    /// Accept any SSH host key (unsafe: a spoofed server would get the pushes).
    #[arg(long)]
    pub insecure_ignore_host_key: bool,

    /// A directory kept between runs (e.g. an Argo volume) for the SSH path's fetches; a temp dir
    /// otherwise. HTTPS remotes need none.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,

    /// Vault, for secret references of the form vault:<mount>/<path>#<key>.
    #[command(flatten)]
    pub vault: step_kit::VaultFlags,
}

impl GitFlags {
    /// The credentials libgit2 uses for `url`: the SSH key (with the host-key policy) for SSH
    /// remotes, else the token.
    pub async fn auth(&self, url: &str) -> Result<GitAuth, StepError> {
        if !is_ssh_url(url) {
            if self.ssh_key.is_some() {
                return Err(StepError::invalid(
                    "--ssh-key is for ssh:// remotes; HTTPS remotes take --git-token",
                ));
            }
            crate::smart_http::check_http_url(url)?;
            return Ok(match Credentials::from_flags(self).await? {
                Some(c) => GitAuth::Token {
                    username: c.username,
                    token: c.token,
                },
                None => GitAuth::Anonymous,
            });
        }
        let Some(key) = &self.ssh_key else {
            return Err(StepError::invalid(format!(
                "--repo {} is an SSH remote: give --ssh-key",
                escape_untrusted(url)
            )));
        };
        let known_hosts =
            match &self.known_hosts {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                    StepError::precondition(format!(
                        "cannot read --known-hosts {}: {e}",
                        path.display()
                    ))
                })?),
                None if self.insecure_ignore_host_key => None,
                None => return Err(StepError::invalid(
                    "an SSH remote needs --known-hosts (or, knowingly, --insecure-ignore-host-key)",
                )),
            };
        Ok(GitAuth::SshKey {
            key: key.resolve("--ssh-key", &self.vault).await?,
            known_hosts,
            insecure_ignore_host_key: self.insecure_ignore_host_key,
        })
    }
}

/// The branches a step never writes (creates, moves, commits to, deletes), for every step that
/// writes a branch: defined once, checked by [`crate::protected_by`].
#[derive(Debug, Clone, clap::Args)]
pub struct ProtectedBranches {
    /// Branches never written (globs: `*` any run, `?` one character, compared without regard to
    /// case); `main`, `master` and the remote's default branch are always protected.
    #[arg(
        long,
        value_name = "GLOBS",
        value_delimiter = ',',
        default_value = "main,master"
    )]
    pub protected_branches: Vec<String>,
}

impl ProtectedBranches {
    /// The pattern protecting `branch`, if any (the remote's default branch is checked apart).
    pub fn protecting(&self, branch: &str) -> Option<String> {
        crate::protected_by(branch, &self.protected_branches)
    }
}

/// Who commits, for the steps that commit.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Commits")]
pub struct CommitFlags {
    /// Author (and committer) name of the commits.
    #[arg(long, value_name = "NAME", default_value = "sandbox-steps")]
    pub author_name: String,

    /// Author (and committer) email of the commits.
    #[arg(
        long,
        value_name = "EMAIL",
        default_value = "sandbox-steps@users.noreply.github.com"
    )]
    pub author_email: String,

    #[command(flatten)]
    pub protection: ProtectedBranches,

    /// Commit to `--branch` although it is protected. For the one branch meant to be written:
    /// the app-of-apps repository's branch Argo CD watches (create-/delete-argocd-app's templates
    /// name that branch and pass this). Without it a protected branch is refused (exit 3).
    #[arg(long)]
    pub allow_protected_branch: bool,
}

impl CommitFlags {
    pub fn identity(&self) -> Identity {
        Identity {
            name: self.author_name.clone(),
            email: self.author_email.clone(),
        }
    }
}

/// Whether `url` is an SSH remote: `ssh://…`, or the scp-like `user@host:path`.
pub fn is_ssh_url(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://") {
        return scheme == "ssh" || scheme == "git+ssh";
    }
    matches!(url.split_once(':'), Some((host, _)) if !host.contains('/') && host.contains('@'))
}

pub enum Transport {
    SmartHttp(Remote),
    Libgit2 {
        url: String,
        auth: GitAuth,
        workdir: Option<PathBuf>,
        cancel: CancellationToken,
    },
}

impl Transport {
    /// Chooses the transport for `url` and resolves the credentials it needs.
    pub async fn open(
        url: &str,
        flags: &GitFlags,
        policy: RetryPolicy,
        cancel: CancellationToken,
    ) -> Result<Transport, StepError> {
        if !is_ssh_url(url) {
            if flags.ssh_key.is_some() {
                return Err(StepError::invalid(
                    "--ssh-key is for ssh:// remotes; HTTPS remotes take --git-token",
                ));
            }
            let credentials = Credentials::from_flags(flags).await?;
            return Ok(Transport::SmartHttp(Remote::new(url, credentials, policy)?));
        }
        Ok(Transport::Libgit2 {
            url: url.to_owned(),
            auth: flags.auth(url).await?,
            workdir: flags.workdir.clone(),
            cancel,
        })
    }

    pub fn url(&self) -> String {
        match self {
            Transport::SmartHttp(remote) => remote.url().to_owned(),
            Transport::Libgit2 { url, .. } => step_kit::redact_url(url),
        }
    }

    /// The remote's refs and its HEAD.
    pub async fn advertised_refs(&self) -> Result<Advertisement, StepError> {
        match self {
            Transport::SmartHttp(remote) => remote.advertised_refs().await,
            Transport::Libgit2 {
                url, auth, cancel, ..
            } => {
                let (url, auth, cancel) = (url.clone(), auth.clone(), cancel.clone());
                blocking(move || list_refs(&url, &auth, &cancel)).await
            }
        }
    }

    /// Sets ref `update.name` from `update.old` to `update.new` ([`ZERO_ID`]: absent). `source`
    /// names a ref of the remote at `update.new` (libgit2 fetches it to push from). Returns the
    /// remote's reason when it refused.
    pub async fn update_ref(
        &self,
        update: &RefUpdate,
        source: &str,
    ) -> Result<Option<String>, StepError> {
        match self {
            Transport::SmartHttp(remote) => {
                let results = remote.update_refs(std::slice::from_ref(update)).await?;
                Ok(results.into_iter().next().and_then(|r| r.rejected))
            }
            Transport::Libgit2 {
                url,
                auth,
                workdir,
                cancel,
            } => {
                let (url, auth, workdir, cancel) =
                    (url.clone(), auth.clone(), workdir.clone(), cancel.clone());
                let update = update.clone();
                let source = source.to_owned();
                blocking(move || {
                    if update.new == ZERO_ID {
                        // libgit2 has no compare-and-swap: check the ref is still where it was.
                        let checkout =
                            Checkout::fetch(&url, &update.name, auth, workdir.as_deref(), cancel)?;
                        if checkout.tip().to_string() != update.old {
                            return Ok(Some(format!(
                                "{} moved to {}",
                                update.name,
                                checkout.tip()
                            )));
                        }
                        let pushed = checkout.push_refspec(&format!(":{}", update.name))?;
                        return Ok((!pushed).then(|| "refused".to_owned()));
                    }
                    let checkout =
                        Checkout::fetch(&url, &source, auth, workdir.as_deref(), cancel)?;
                    if checkout.tip().to_string() != update.new {
                        return Ok(Some(format!("{source} moved to {}", checkout.tip())));
                    }
                    // A move (--reset) may not be a fast-forward: force it; a create is not forced,
                    // so a branch created meanwhile elsewhere is refused, not overwritten.
                    let force = if update.old == ZERO_ID { "" } else { "+" };
                    let pushed =
                        checkout.push_refspec(&format!("{force}{}:{}", update.new, update.name))?;
                    Ok((!pushed).then(|| "refused".to_owned()))
                })
                .await
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StepError> + Send + 'static,
) -> Result<T, StepError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StepError::unexpected(format!("git work panicked: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::is_ssh_url;

    #[test]
    fn ssh_urls() {
        for ssh in [
            "ssh://git@github.com/a/b.git",
            "git@github.com:a/b.git",
            "git+ssh://h/x",
        ] {
            assert!(is_ssh_url(ssh), "{ssh}");
        }
        for not in [
            "https://github.com/a/b.git",
            "http://127.0.0.1:1/x.git",
            "/srv/x.git",
            "C:/x",
        ] {
            assert!(!is_ssh_url(not), "{not}");
        }
    }
}
