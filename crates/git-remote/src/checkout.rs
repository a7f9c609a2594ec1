//! The libgit2 side of the library: a shallow, single-branch fetch into a bare repository (a temp
//! dir, or a reusable `--workdir`), commits built in memory (no work tree), and pushes that, when
//! someone else pushed first, fetch again, re-apply the change and push again until the deadline.
//!
//! Everything here blocks: steps call it from `spawn_blocking`. Cancellation (SIGTERM, deadline)
//! is checked in libgit2's progress callbacks, which then abort the transfer.

use std::path::Path;
use std::time::{Duration, Instant};

use git2::{
    CertificateCheckStatus, Cred, CredentialType, ErrorClass, ErrorCode, FetchOptions, Oid,
    PushOptions, RemoteCallbacks, Repository,
};
use step_kit::{escape_untrusted, redact_text, Secret, StepError};
use tokio_util::sync::CancellationToken;

use crate::tree::{self, Odb, TipView};

/// How to authenticate to the remote.
#[derive(Debug, Clone)]
pub enum GitAuth {
    /// No credentials (public repositories, local tests).
    Anonymous,
    /// HTTPS: a token sent as basic auth.
    Token { username: String, token: Secret },
    /// SSH: a private key; the host key is checked against `known_hosts` unless
    /// `insecure_ignore_host_key`.
    SshKey {
        key: Secret,
        known_hosts: Option<String>,
        insecure_ignore_host_key: bool,
    },
}

/// Who commits.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

/// One file change of a commit: the new content, or `None` to delete the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub content: Option<Vec<u8>>,
}

/// What [`Checkout::read_path`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathContent {
    Missing,
    File(Vec<u8>),
    /// The files directly in the directory: (name, content), in name order.
    Dir(Vec<(String, Vec<u8>)>),
}

/// A bare repository holding the shallow tip of one branch of the remote.
pub struct Checkout {
    repo: Repository,
    url: String,
    branch: String,
    auth: GitAuth,
    cancel: CancellationToken,
    tip: Oid,
    _temp: Option<tempfile::TempDir>,
}

const TRACKING_REF: &str = "refs/sandbox-steps/tip";

impl Checkout {
    /// Fetches `branch` (a branch name or a full ref name) of `url` with depth 1 into `workdir`
    /// (created or reused) or a temp dir.
    pub fn fetch(
        url: &str,
        branch: &str,
        auth: GitAuth,
        workdir: Option<&Path>,
        cancel: CancellationToken,
    ) -> Result<Checkout, StepError> {
        let (repo, temp) = match workdir {
            Some(dir) => (open_or_init(dir)?, None),
            None => {
                let temp = temp_dir()?;
                (open_or_init(temp.path())?, Some(temp))
            }
        };
        let mut checkout = Checkout {
            repo,
            url: url.to_owned(),
            branch: branch.to_owned(),
            auth,
            cancel,
            tip: Oid::ZERO_SHA1,
            _temp: temp,
        };
        checkout.refresh()?;
        Ok(checkout)
    }

    /// Fetches the branch again (depth 1): after a rejected push, the new tip.
    pub fn refresh(&mut self) -> Result<(), StepError> {
        let mut remote = self
            .repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.error("open the remote", e))?;
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks(&self.auth, &self.cancel))
            .depth(1)
            .download_tags(git2::AutotagOption::None);
        let source = if self.branch.starts_with("refs/") {
            self.branch.clone()
        } else {
            format!("refs/heads/{}", self.branch)
        };
        let refspec = format!("+{source}:{TRACKING_REF}");
        remote
            .fetch(&[&refspec], Some(&mut options), None)
            .map_err(|e| self.error(&format!("fetch {}", self.branch), e))?;
        self.tip = self.repo.refname_to_id(TRACKING_REF).map_err(|_| {
            StepError::precondition(format!(
                "branch {} does not exist on {}",
                escape_untrusted(&self.branch),
                redact_text(&self.url)
            ))
        })?;
        Ok(())
    }

    /// The commit the branch pointed to when last fetched.
    pub fn tip(&self) -> Oid {
        self.tip
    }

    /// A file of the tip's tree, or `None` when absent.
    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, StepError> {
        self.read(|view| view.read_file(path))
    }

    /// The names of the files directly in directory `path` of the tip's tree (empty when the
    /// directory is absent), in name order.
    pub fn list_dir(&self, path: &str) -> Result<Vec<String>, StepError> {
        self.read(|view| view.list_dir(path))
    }

    /// A path of the tip's tree read whole: a file's content, or the files directly in a
    /// directory (name order), or nothing when absent.
    pub fn read_path(&self, path: &str) -> Result<PathContent, StepError> {
        self.read(|view| view.read_path(path))
    }

    /// `read` on the tip's tree.
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&TipView) -> Result<T, StepError>,
    ) -> Result<T, StepError> {
        read(&TipView {
            store: &Odb(&self.repo),
            tip: self.tip.into(),
        })
    }

    /// Commits `changes` on top of the tip; `None` when they change nothing.
    pub fn commit(
        &self,
        changes: &[Change],
        identity: &Identity,
        message: &str,
    ) -> Result<Option<Oid>, StepError> {
        let new = tree::commit(
            &mut Odb(&self.repo),
            self.tip.into(),
            changes,
            identity,
            message,
        )?;
        Ok(new.map(|c| tree::git2_oid(&c.id)))
    }

    /// Pushes `commit` to the branch, fast-forward only. `Ok(false)`: refused because the branch
    /// moved (someone else pushed); fetch again and retry.
    pub fn push(&self, commit: Oid) -> Result<bool, StepError> {
        self.push_refspec(&format!("{commit}:refs/heads/{}", self.branch))
    }

    /// Pushes `refspec` (`<src>:<dst>`, or `:<dst>` to delete). `Ok(false)` when the remote
    /// refused the ref update.
    pub fn push_refspec(&self, refspec: &str) -> Result<bool, StepError> {
        // libgit2 pushes from refs: point a local ref at the source object.
        let (force, spec) = refspec
            .strip_prefix('+')
            .map_or(("", refspec), |rest| ("+", rest));
        let refspec = match spec.split_once(':') {
            Some((src, dst)) if src.len() == 40 => {
                let id = Oid::from_str(src).map_err(|e| self.error("parse the commit", e))?;
                self.repo
                    .reference("refs/sandbox-steps/push", id, true, "push")
                    .map_err(|e| self.error("prepare the push", e))?;
                format!("{force}refs/sandbox-steps/push:{dst}")
            }
            _ => refspec.to_owned(),
        };
        let mut remote = self
            .repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.error("open the remote", e))?;
        let mut rejected: Option<String> = None;
        let result = {
            let mut cbs = callbacks(&self.auth, &self.cancel);
            // A refused ref update is not an Err of push(): it only arrives here.
            cbs.push_update_reference(|_, status| {
                if let Some(message) = status {
                    rejected = Some(message.to_owned());
                }
                Ok(())
            });
            let mut options = PushOptions::new();
            options.remote_callbacks(cbs);
            remote.push(&[&refspec], Some(&mut options))
        };
        match result {
            Ok(()) if rejected.is_none() => Ok(true),
            Ok(()) => {
                tracing::info!("push refused: {}", rejected.unwrap_or_default());
                Ok(false)
            }
            Err(e) if e.code() == ErrorCode::NotFastForward => Ok(false),
            Err(e) => Err(self.error("push", e)),
        }
    }

    fn error(&self, what: &str, e: git2::Error) -> StepError {
        Self::classify(&self.url, &self.auth, &self.cancel, what, e)
    }

    /// Maps a libgit2 error: authentication is a precondition (exit 3), network trouble is
    /// transient (exit 4); URLs in the message are redacted.
    fn classify(
        url: &str,
        auth: &GitAuth,
        cancel: &CancellationToken,
        what: &str,
        e: git2::Error,
    ) -> StepError {
        if cancel.is_cancelled() {
            return StepError::transient(format!("{what}: cancelled"));
        }
        let message = format!(
            "cannot {what} ({}): {}",
            redact_text(url),
            redact_text(e.message())
        );
        let auth_failed = e.code() == ErrorCode::Auth
            || e.class() == ErrorClass::Ssh && e.message().contains("authentic");
        let tls = if e.code() == ErrorCode::Certificate {
            Some(step_kit::CERTIFICATE_HINT)
        } else if e.class() == ErrorClass::Ssl {
            step_kit::tls_refusal(e.message())
        } else {
            None
        };
        if let Some(hint) = tls {
            // An untrusted certificate, or a server that does not speak TLS, stays so on a retry.
            return StepError::precondition(message).with_hint(hint);
        }
        // The repository is not there, or not for these credentials: a retry won't change it.
        if e.class() == ErrorClass::Http
            && ["404", "401", "403"]
                .iter()
                .any(|code| e.message().contains(&format!("status code: {code}")))
        {
            return StepError::precondition(message)
                .with_hint("check --repo and that the credentials may read it");
        }
        if auth_failed {
            let hint = match auth {
                GitAuth::SshKey { .. } => {
                    "check --ssh-key (a deploy key with write access) and --known-hosts"
                }
                _ => "check --git-token (read and write access to the contents) and --git-username",
            };
            return StepError::precondition(message).with_hint(hint);
        }
        match e.class() {
            ErrorClass::Net
            | ErrorClass::Os
            | ErrorClass::Http
            | ErrorClass::Ssh
            | ErrorClass::Ssl
            | ErrorClass::Callback => StepError::transient(message),
            _ => StepError::unexpected(message),
        }
    }
}

/// The remote's refs and HEAD through libgit2 (for SSH remotes; HTTP ones use [`crate::Remote`]).
pub fn list_refs(
    url: &str,
    auth: &GitAuth,
    cancel: &CancellationToken,
) -> Result<crate::Advertisement, StepError> {
    let temp = temp_dir()?;
    let repo = open_or_init(temp.path())?;
    let fail = |what: &str, e: git2::Error| Checkout::classify(url, auth, cancel, what, e);
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| fail("open the remote", e))?;
    let connection = remote
        .connect_auth(git2::Direction::Fetch, Some(callbacks(auth, cancel)), None)
        .map_err(|e| fail("connect to", e))?;
    let mut ad = crate::Advertisement::default();
    for head in connection.list().map_err(|e| fail("list the refs of", e))? {
        if head.name() == "HEAD" {
            ad.head = head.symref_target().map(str::to_owned);
            continue;
        }
        let name = head.name().strip_suffix("^{}").unwrap_or(head.name());
        ad.refs.insert(name.to_owned(), head.oid().to_string());
    }
    Ok(ad)
}

/// What the temporary directories of a fetch are called: the prefix, then the pid of the
/// process that made it.
const TEMP_PREFIX: &str = "sandbox-steps-git.";

/// A temporary directory for a fetch, named after this process (`sandbox-steps-git.<pid>.XXXX`),
/// after reclaiming those of processes that no longer run: a step killed with SIGKILL (the OOM
/// killer, a node drain on a laptop's long-lived machine) cannot remove its own.
fn temp_dir() -> Result<tempfile::TempDir, StepError> {
    reclaim_stale_temp_dirs(&std::env::temp_dir());
    tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{}.", std::process::id()))
        .tempdir()
        .map_err(|e| StepError::unexpected(format!("cannot create a temp dir: {e}")))
}

/// Removes `<dir>/sandbox-steps-git.<pid>.*` directories of this user whose process is gone
/// (checked in /proc; a pid reused since only delays the reclaim). Best effort: errors are
/// ignored, a concurrent run's directory is never touched (its process runs).
pub(crate) fn reclaim_stale_temp_dirs(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TEMP_PREFIX))
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = entry
            .metadata()
            .is_ok_and(|m| m.is_dir() && Some(m.uid()) == uid);
        if ours && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::debug!("removing {} (its process is gone)", entry.path().display());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn open_or_init(dir: &Path) -> Result<Repository, StepError> {
    let opened = if dir.join("HEAD").is_file() {
        Repository::open_bare(dir)
    } else {
        std::fs::create_dir_all(dir)
            .map_err(|e| StepError::unexpected(format!("cannot create {}: {e}", dir.display())))?;
        Repository::init_bare(dir)
    };
    opened.map_err(|e| {
        StepError::unexpected(format!(
            "cannot open the git workdir {}: {}",
            dir.display(),
            e.message()
        ))
    })
}

/// The callbacks of every transfer: credentials (offered once: libgit2 would replay wrong ones
/// up to 15 times), the host key check for SSH, and cancellation.
fn callbacks<'a>(auth: &'a GitAuth, cancel: &'a CancellationToken) -> RemoteCallbacks<'a> {
    let mut cbs = RemoteCallbacks::new();
    let mut offered = false;
    cbs.credentials(move |_url, username, allowed| {
        if offered {
            return Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Callback,
                "the remote refused the credentials",
            ));
        }
        offered = true;
        match auth {
            GitAuth::Token { username, token }
                if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
            {
                Cred::userpass_plaintext(username, token.expose())
            }
            GitAuth::SshKey { key, .. }
                if allowed.contains(CredentialType::SSH_MEMORY)
                    || allowed.contains(CredentialType::SSH_KEY) =>
            {
                Cred::ssh_key_from_memory(username.unwrap_or("git"), None, key.expose(), None)
            }
            GitAuth::SshKey { .. } if allowed.contains(CredentialType::USERNAME) => {
                offered = false;
                Cred::username(username.unwrap_or("git"))
            }
            _ => Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Callback,
                "the remote wants credentials this step was not given",
            )),
        }
    });
    cbs.certificate_check(move |cert, host| match auth {
        GitAuth::SshKey {
            known_hosts,
            insecure_ignore_host_key,
            ..
        } => {
            if *insecure_ignore_host_key {
                return Ok(CertificateCheckStatus::CertificateOk);
            }
            let Some(hostkey) = cert.as_hostkey().and_then(|k| k.hostkey()) else {
                return Err(certificate_error("the server sent no SSH host key"));
            };
            match known_hosts {
                Some(known) if host_key_known(known, host, hostkey) => {
                    Ok(CertificateCheckStatus::CertificateOk)
                }
                Some(_) => Err(certificate_error(&format!(
                    "the SSH host key of {host} is not in --known-hosts"
                ))),
                None => Err(certificate_error(
                    "no --known-hosts to check the SSH host key against (or --insecure-ignore-host-key)",
                )),
            }
        }
        // HTTPS certificates were checked by the TLS stack already.
        _ => Ok(CertificateCheckStatus::CertificatePassthrough),
    });
    cbs.transfer_progress(move |_| !cancel.is_cancelled());
    cbs.push_transfer_progress(move |_, _, _| {});
    cbs
}

fn certificate_error(message: &str) -> git2::Error {
    git2::Error::new(ErrorCode::Certificate, ErrorClass::Callback, message)
}

/// Whether `known_hosts` (OpenSSH format, plain host names) lists `key` for `host`. libgit2
/// gives the host without the port, so entries `host` and `[host]:port` both match.
pub fn host_key_known(known_hosts: &str, host: &str, key: &[u8]) -> bool {
    use base64::Engine;
    let decode = |text: &str| base64::engine::general_purpose::STANDARD.decode(text).ok();
    known_hosts.lines().any(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            return false;
        }
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(encoded)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        let host_matches = hosts.split(',').any(|h| {
            let name = h
                .strip_prefix('[')
                .and_then(|rest| rest.split_once(']'))
                .map_or(h, |(name, _)| name);
            name == host
        });
        host_matches && decode(encoded).as_deref() == Some(key)
    })
}

/// Fetch, change, commit, push; when the push is refused because someone else pushed, fetch the
/// new tip, compute the change again on it and push again, with backoff, until `deadline`.
/// `change` gets the current checkout and returns the file changes; none (or no difference)
/// means no commit. Returns the branch's commit afterwards and whether this call pushed it.
#[allow(clippy::too_many_arguments)]
pub fn commit_and_push(
    url: &str,
    branch: &str,
    auth: GitAuth,
    workdir: Option<&Path>,
    identity: &Identity,
    message: &str,
    deadline: Instant,
    cancel: CancellationToken,
    mut change: impl FnMut(&Checkout) -> Result<Vec<Change>, StepError>,
) -> Result<(Oid, bool), StepError> {
    let mut checkout = Checkout::fetch(url, branch, auth, workdir, cancel.clone())?;
    let mut backoff = RaceBackoff::new(deadline);
    loop {
        let changes = change(&checkout)?;
        let Some(commit) = checkout.commit(&changes, identity, message)? else {
            return Ok((checkout.tip(), false));
        };
        if checkout.push(commit)? {
            return Ok((commit, true));
        }
        std::thread::sleep(backoff.next(branch, &cancel)?);
        checkout.refresh()?;
    }
}

/// The pauses between the attempts of a push that lost a race (someone else pushed first):
/// 200 ms doubling up to 10 s, each ± 50% so racing runs spread out, until the deadline.
pub(crate) struct RaceBackoff {
    delay: Duration,
    attempt: u32,
    deadline: Instant,
}

impl RaceBackoff {
    pub fn new(deadline: Instant) -> RaceBackoff {
        RaceBackoff {
            delay: Duration::from_millis(200),
            attempt: 1,
            deadline,
        }
    }

    /// The pause before fetching `branch` again, or the error that ends the attempts (the
    /// deadline would pass, or the step is cancelled).
    pub fn next(
        &mut self,
        branch: &str,
        cancel: &CancellationToken,
    ) -> Result<Duration, StepError> {
        let pause = jittered(self.delay);
        if Instant::now() + pause >= self.deadline || cancel.is_cancelled() {
            return Err(StepError::transient(format!(
                "push to {branch} refused {} time(s): others keep pushing; gave up at the deadline",
                self.attempt
            )));
        }
        tracing::info!(
            "{branch} moved on the remote; fetching it again (attempt {})",
            self.attempt
        );
        self.delay = (self.delay * 2).min(Duration::from_secs(10));
        self.attempt += 1;
        Ok(pause)
    }
}

/// `delay` ± 50%, from the clock's low bits (jitter needs no strong randomness).
fn jittered(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.5 + f64::from(nanos % 1000) / 1000.0;
    delay.mul_f64(factor)
}

#[cfg(test)]
mod classify_tests {
    use super::*;

    fn kind_of(code: ErrorCode, class: ErrorClass, message: &str) -> step_kit::ErrorKind {
        let e = git2::Error::new(code, class, message);
        Checkout::classify(
            "https://git.example.com/acme/infra.git",
            &GitAuth::Anonymous,
            &CancellationToken::new(),
            "fetch",
            e,
        )
        .kind
    }

    #[test]
    fn missing_repositories_and_refused_certificates_are_not_retried() {
        use step_kit::ErrorKind::{Precondition, Transient};
        let http = |m| kind_of(ErrorCode::GenericError, ErrorClass::Http, m);
        assert_eq!(http("unexpected http status code: 404"), Precondition);
        assert_eq!(http("unexpected http status code: 403"), Precondition);
        assert_eq!(http("unexpected http status code: 502"), Transient);
        let ssl = |m| kind_of(ErrorCode::GenericError, ErrorClass::Ssl, m);
        assert_eq!(
            ssl("the SSL certificate is invalid: certificate verify failed"),
            Precondition
        );
        assert_eq!(
            ssl("SSL error: syscall failure: Connection reset by peer"),
            Transient
        );
        assert_eq!(
            kind_of(ErrorCode::Certificate, ErrorClass::Ssl, "x"),
            Precondition
        );
        assert_eq!(
            kind_of(
                ErrorCode::GenericError,
                ErrorClass::Net,
                "failed to connect"
            ),
            Transient
        );
    }
}

#[cfg(test)]
mod temp_dir_tests {
    use super::*;

    #[test]
    fn directories_of_dead_processes_are_reclaimed_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22: no process has this pid.
        let dead = tmp.path().join(format!("{TEMP_PREFIX}99999999.abc"));
        let live = tmp
            .path()
            .join(format!("{TEMP_PREFIX}{}.def", std::process::id()));
        let unrelated = tmp.path().join("sandbox-steps-gitx.1.x");
        let old_style = tmp.path().join(format!("{TEMP_PREFIX}Ab3xYz"));
        for dir in [&dead, &live, &unrelated, &old_style] {
            std::fs::create_dir_all(dir.join("objects")).unwrap();
        }
        reclaim_stale_temp_dirs(tmp.path());
        assert!(!dead.exists());
        assert!(live.exists() && unrelated.exists() && old_style.exists());
        // What the fetches create carries this process's pid.
        let made = temp_dir().unwrap();
        let name = made
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            name.starts_with(&format!("{TEMP_PREFIX}{}.", std::process::id())),
            "{name}"
        );
    }
}
