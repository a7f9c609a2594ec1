//! report-status: keeps what a pull request shows of its sandbox: one sticky comment (the card),
//! a GitHub Deployment of the environment with its statuses (the "View deployment" button), and a
//! commit status on the head commit. Idempotent (a re-run writes nothing) and safe when two runs
//! race (one card stays).

mod card;

use std::ffi::OsString;
use std::time::{Duration, SystemTime};

use clap::Parser;
use github::{CommitState, CommitStatus, DeploymentState, DeploymentStatus, GitHub, NewDeployment};
use step_kit::{escape_untrusted, CommonArgs, Context, StepArgs, StepError, VaultFlags};

pub use card::{code_span, parse_failures, shown_state, shown_time, Card, Failure, State};

pub const NAME: &str = "report-status";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &[
    "comment-url",
    "deployment-id",
    "changed",
    "head",
    "superseded",
];

const EXAMPLE: &str = "\
Example:
  report-status --github-repo acme/platform --github-token env:GITHUB_TOKEN --pr-number 42 \\
    --state ready --environment sbx-pr-42 --environment-url https://sbx-pr-42.sandbox.acme.dev \\
    --log-url https://argo.acme.dev/workflows/argo/create-sandbox-x7k2p
  # outputs: comment-url=https://github.com/acme/platform/pull/42#issuecomment-1
  #          deployment-id=7 changed=true

Exit codes: 0 reported (or nothing to change, or a newer report is already there); 2 invalid
flags; 3 the pull request not found, credentials refused (with the permission needed); 4 GitHub
unreachable, 5xx or a rate limit past the deadline, after retries.";

/// Show a sandbox's state on its pull request.
///
/// Writes or edits the pull request's card (one comment, found by a hidden marker naming the pull
/// request, written by these credentials), sets the environment's GitHub Deployment status
/// (queued, in_progress, success with the environment URL, failure, inactive when deleted) and
/// the commit status `--status-context` on the head commit. Each is written only when it differs
/// from what GitHub has. A report older than the card's is dropped (runs can finish out of
/// order); when two runs create a card at once, the oldest comment stays and the others are
/// deleted.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    #[command(flatten)]
    pub github: github::GitHubFlags,

    /// The pull request.
    #[arg(long, value_name = "N")]
    pub pr_number: u64,

    /// The sandbox's state (with --extend-comment: the card's own).
    #[arg(long, value_enum, required_unless_present = "extend_comment")]
    pub state: Option<State>,

    /// The sandbox's environment (validate-params' `environment`), the GitHub Deployment's
    /// environment; without it, the one the card names (an exit handler may not know it).
    #[arg(long, value_name = "NAME")]
    pub environment: Option<String>,

    /// Where the sandbox answers (validate-params' `hostname` as https://...).
    #[arg(long, value_name = "URL")]
    pub environment_url: Option<String>,

    /// The run's page (Argo Workflows' UI): the card's and the deployment's log link.
    #[arg(long, value_name = "URL")]
    pub log_url: Option<String>,

    /// The Argo CD application's page.
    #[arg(long, value_name = "URL")]
    pub app_url: Option<String>,

    /// Argo Workflows' UI: with --workflow, the log link is `<URL>/workflows/<NAMESPACE>/<NAME>`
    /// (unless --log-url is given).
    #[arg(long, value_name = "URL")]
    pub argo_ui_url: Option<String>,

    /// The reporting Workflow, `NAMESPACE/NAME` (`{{workflow.namespace}}/{{workflow.name}}`).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub workflow: Option<String>,

    /// Argo CD's UI: with --app, the application link is `<URL>/applications/<NAMESPACE>/<NAME>`
    /// (unless --app-url is given).
    #[arg(long, value_name = "URL")]
    pub argocd_ui_url: Option<String>,

    /// The Argo CD Application, `NAMESPACE/NAME`.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub app: Option<String>,

    /// The commit the sandbox runs (the deployment's ref); default the pull request's head.
    #[arg(long, value_name = "SHA")]
    pub deployed_commit: Option<String>,

    /// Why it failed: Argo's `workflow.failures` (the failed nodes, as JSON) or a text.
    #[arg(long, value_name = "JSON|TEXT")]
    pub failures: Option<String>,

    /// When the sandbox expires (RFC 3339), shown on the card.
    #[arg(long, value_name = "TIME")]
    pub expires_at: Option<String>,

    /// The sweep's inactivity TTL: the card shows when the sandbox expires, counted from the pull
    /// request's last activity (pushes, labels, comments by people with write access, `/extend`;
    /// its timeline), or that the keep label keeps it. Not for queued, deleting, deleted.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,

    /// An `/extend` or `/wake` comment (its id, from the issue_comment webhook): when its author
    /// has write access, it reacts 👍 and the card shows the new expiry (needs --ttl), its state
    /// and links kept (an expiring card is ready again); otherwise it reacts 😕 and exits 3. Only
    /// the card is written (wake-sandbox then wakes the sandbox).
    #[arg(long, value_name = "COMMENT_ID")]
    pub extend_comment: Option<u64>,

    /// Queued: the sandbox's place in admit-sandbox's queue (its `position` output).
    #[arg(long, value_name = "N")]
    pub queue_position: Option<usize>,

    /// Queued: the queue's length (admit-sandbox's `queued` output).
    #[arg(long, value_name = "M")]
    pub queue_length: Option<usize>,

    /// Sleeping: since when (RFC 3339; patch-kustomize's `asleep-since` output). The card says so
    /// and how to wake it.
    #[arg(long, value_name = "TIME")]
    pub sleeping_since: Option<String>,

    /// Sleeping: why (patch-kustomize's --sleep-reason: requested, idle, night, capacity).
    #[arg(long, value_name = "REASON", default_value = "requested")]
    pub sleep_reason: String,

    /// The commit this run is about (update-sandbox's push): when the pull request's head is no
    /// longer it, nothing is written and the output superseded is true (a newer push has its own
    /// run).
    #[arg(long, value_name = "SHA")]
    pub expect_head: Option<String>,

    /// The label that keeps a sandbox from expiring (named on the card with --expires-at).
    #[arg(long, value_name = "LABEL", default_value = "sandbox-keep")]
    pub keep_label: String,

    /// The commit status's context.
    #[arg(long, value_name = "CONTEXT", default_value = "sandbox-steps/sandbox")]
    pub status_context: String,

    /// The login the card is written as; default the credentials' own (GET /user, or the App's
    /// `<slug>[bot]`). Comments of anyone else are never edited.
    #[arg(long, value_name = "LOGIN")]
    pub comment_author: Option<String>,

    /// Read everything, write nothing; log what would be written.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub vault: VaultFlags,

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
    step_kit::run_from(NAME, argv, report_status)
}

/// An http(s) URL flag, parsed.
fn url_flag(flag: &str, value: &Option<String>) -> Result<Option<url::Url>, StepError> {
    let Some(value) = value.as_deref().filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let url = url::Url::parse(value)
        .map_err(|e| StepError::invalid(format!("{flag} {}: {e}", escape_untrusted(value))))?;
    if !matches!(url.scheme(), "https" | "http") || !url.username().is_empty() {
        return Err(StepError::invalid(format!(
            "{flag} {}: an http(s) URL without credentials",
            escape_untrusted(value)
        )));
    }
    Ok(Some(url))
}

/// `--log-url`, else `<base>/<kind>/<namespace>/<name>` from a UI's base URL and a
/// `NAMESPACE/NAME` flag (both given, or neither is used).
fn link_flag(
    (flag, explicit): (&str, &Option<String>),
    (base_flag, base): (&str, &Option<String>),
    (object_flag, object): (&str, &Option<String>),
    kind: &str,
) -> Result<Option<url::Url>, StepError> {
    if let Some(url) = url_flag(flag, explicit)? {
        return Ok(Some(url));
    }
    let (Some(base), Some(object)) = (
        url_flag(base_flag, base)?,
        object.as_deref().filter(|o| !o.is_empty()),
    ) else {
        return Ok(None);
    };
    let (namespace, name) = object
        .split_once('/')
        .filter(|(ns, name)| {
            naming::check_dns_label(ns).is_ok() && naming::check_dns_subdomain(name).is_ok()
        })
        .ok_or_else(|| {
            StepError::invalid(format!(
                "{object_flag} {}: expected NAMESPACE/NAME (Kubernetes names)",
                escape_untrusted(object)
            ))
        })?;
    let mut url = base;
    url.path_segments_mut()
        .map_err(|_| StepError::invalid(format!("{base_flag}: not a base URL")))?
        .pop_if_empty()
        .extend([kind, namespace, name]);
    Ok(Some(url))
}

/// The flags, checked before any request.
struct Report {
    card: Card,
    /// None: the card's own (an `/extend`).
    state: Option<State>,
    ttl: Option<Duration>,
}

fn check(args: &Args) -> Result<Report, StepError> {
    args.github.check()?;
    if args.github.github_repo.is_none() {
        return Err(StepError::invalid("--github-repo is required"));
    }
    if args.pr_number == 0 {
        return Err(StepError::invalid(
            "--pr-number must be a pull request number",
        ));
    }
    let environment = args.environment.clone().filter(|e| !e.is_empty());
    if let Some(env) = &environment {
        naming::check_dns_label(env).map_err(|rule| {
            StepError::invalid(format!("--environment {}: {rule}", escape_untrusted(env)))
        })?;
    }
    let deployed_commit = args.deployed_commit.clone().filter(|c| !c.is_empty());
    for (flag, commit) in [
        ("--deployed-commit", &deployed_commit),
        ("--expect-head", &args.expect_head),
    ] {
        if let Some(commit) = commit.as_deref().filter(|c| !c.is_empty()) {
            naming::check_commit_id(commit, false).map_err(|rule| {
                StepError::invalid(format!("{flag} {}: {rule}", escape_untrusted(commit)))
            })?;
        }
    }
    let expires_at = match args.expires_at.as_deref().filter(|e| !e.is_empty()) {
        Some(at) => Some(humantime::parse_rfc3339_weak(at).map_err(|e| {
            StepError::invalid(format!("--expires-at {}: {e}", escape_untrusted(at)))
        })?),
        None => None,
    };
    let ttl = match args.ttl.as_deref().filter(|t| !t.is_empty()) {
        Some(ttl) => Some(
            step_kit::parse_duration(ttl)
                .map_err(|e| StepError::invalid(format!("--ttl {}: {e}", escape_untrusted(ttl))))?,
        ),
        None => None,
    };
    if args.extend_comment.is_some() && ttl.is_none() {
        return Err(StepError::invalid(
            "--extend-comment needs --ttl: the card shows the new expiry",
        ));
    }
    naming::check_label_value(&args.keep_label).map_err(|rule| {
        StepError::invalid(format!(
            "--keep-label {}: {rule}",
            escape_untrusted(&args.keep_label)
        ))
    })?;
    if args.status_context.is_empty()
        || args.status_context.len() > 255
        || args.status_context.chars().any(char::is_control)
    {
        return Err(StepError::invalid(
            "--status-context: 1 to 255 characters, no control characters",
        ));
    }
    Ok(Report {
        card: Card {
            pr_number: args.pr_number,
            environment,
            state: args.state,
            environment_url: url_flag("--environment-url", &args.environment_url)?,
            log_url: link_flag(
                ("--log-url", &args.log_url),
                ("--argo-ui-url", &args.argo_ui_url),
                ("--workflow", &args.workflow),
                "workflows",
            )?,
            app_url: link_flag(
                ("--app-url", &args.app_url),
                ("--argocd-ui-url", &args.argocd_ui_url),
                ("--app", &args.app),
                "applications",
            )?,
            deployed_commit,
            failures: args
                .failures
                .as_deref()
                .map(parse_failures)
                .unwrap_or_default(),
            expires_at,
            keep_label: args.keep_label.clone(),
            asleep: match args.sleeping_since.as_deref().filter(|t| !t.is_empty()) {
                None => None,
                Some(_) if args.state != Some(State::Sleeping) => {
                    return Err(StepError::invalid(
                        "--sleeping-since goes with --state sleeping",
                    ))
                }
                Some(at) => {
                    let at = humantime::parse_rfc3339_weak(at).map_err(|e| {
                        StepError::invalid(format!(
                            "--sleeping-since {}: {e}",
                            escape_untrusted(at)
                        ))
                    })?;
                    naming::check_sleep_reason(&args.sleep_reason).map_err(|rule| {
                        StepError::invalid(format!(
                            "--sleep-reason {}: {rule}",
                            escape_untrusted(&args.sleep_reason)
                        ))
                    })?;
                    Some((at, args.sleep_reason.clone()))
                }
            },
            queue: match (args.queue_position, args.queue_length) {
                (Some(position), Some(of)) if position >= 1 && position <= of => {
                    Some((position, of))
                }
                (None, None) => None,
                _ => {
                    return Err(StepError::invalid(
                        "--queue-position and --queue-length go together, 1 <= position <= length",
                    ))
                }
            },
            ..Card::default()
        },
        state: args.state.filter(|_| args.extend_comment.is_none()),
        ttl,
    })
}

async fn report_status(args: Args, ctx: Context) -> Result<(), StepError> {
    let reported_at = SystemTime::now();
    let Report {
        mut card,
        state,
        ttl,
    } = check(&args)?;
    let github = args
        .github
        .connect(&args.vault, ctx.retry_policy(), ctx.deadline)
        .await?
        .expect("--github-repo checked");
    let pr = args.pr_number;
    let Some(pull) = github.pull(pr).await? else {
        return Err(StepError::precondition(format!(
            "pull request #{pr} not found in {}",
            github.repository()
        )));
    };
    ctx.outputs.set("head", &pull.head_sha)?;
    if let Some(expected) = args.expect_head.as_deref().filter(|c| !c.is_empty()) {
        if !pull.head_sha.eq_ignore_ascii_case(expected) {
            tracing::info!(
                "superseded: pull request #{pr}'s head is now {}, this run is for {expected}; \
                 nothing written (the newer push has its own run)",
                pull.head_sha
            );
            ctx.outputs.set("superseded", "true")?;
            return write_outputs(&ctx, None, None, false);
        }
    }
    ctx.outputs.set("superseded", "false")?;
    if let Some(id) = args.extend_comment {
        check_extend(&github, &args, id).await?;
    }
    card.head_commit = pull.head_sha.clone();
    card.head_ref = pull.head_ref.clone();
    let author = match args.comment_author.clone() {
        Some(author) => author,
        None => github.identity().await?,
    };

    let cards = own_cards(&github, pr, &author).await?;
    let newest = cards
        .iter()
        .filter_map(|c| card::parse_marker(&c.body, pr).map(|m| (c, m)))
        .max_by_key(|(_, m)| m.reported_at);
    if let Some((_, newest)) = &newest {
        if newest.reported_at > reported_at {
            tracing::info!(
                "the card of #{pr} holds a newer report ({}); this one ({}) is dropped",
                humantime::format_rfc3339_seconds(newest.reported_at),
                state.map_or("/extend", State::name)
            );
            return write_outputs(
                &ctx,
                cards.first().map(|c| c.html_url.as_str()),
                None,
                false,
            );
        }
        if card.environment.is_none() {
            card.environment = newest.environment.clone();
        }
    }
    let state = match state {
        Some(state) => state,
        // An /extend keeps the card's state; an expiring sandbox is ready again, or sleeping
        // again when it slept when warned (the marker keeps that).
        None => match newest.as_ref().and_then(|(c, _)| shown_state(&c.body)) {
            Some(State::Expiring) if newest.as_ref().is_some_and(|(_, m)| m.asleep.is_some()) => {
                State::Sleeping
            }
            Some(State::Expiring) => State::Ready,
            Some(shown) if !matches!(shown, State::Deleting | State::Deleted) => shown,
            shown => {
                let id = args.extend_comment.expect("no --state: an /extend");
                if !args.dry_run {
                    github.react(id, "confused").await?;
                }
                return Err(StepError::precondition(format!(
                    "/extend on pull request #{pr}: no sandbox to extend ({})",
                    shown.map_or("no card".to_owned(), |s| format!(
                        "its card says {}",
                        s.name()
                    ))
                )));
            }
        },
    };
    card.state = Some(state);
    // A report that knows less than the card (an /extend, the sweep's warning) keeps what the
    // card links to.
    if let Some((_, marker)) =
        newest.filter(|_| args.extend_comment.is_some() || state == State::Expiring)
    {
        card.environment_url = card.environment_url.or(marker.environment_url);
        card.log_url = card.log_url.or(marker.log_url);
        card.app_url = card.app_url.or(marker.app_url);
        card.deployed_commit = card.deployed_commit.or(marker.deployed_commit);
        card.asleep = card.asleep.or(marker.asleep);
    }
    let shows_expiry = !matches!(state, State::Queued | State::Deleting | State::Deleted);
    if let Some(ttl) = ttl.filter(|_| shows_expiry && card.expires_at.is_none()) {
        card.kept = pull.labels.contains(&args.keep_label);
        if !card.kept {
            let activity = github.activity(&pull).await?;
            tracing::info!(
                "last activity on #{pr}: {} at {}; expires {} later",
                activity.what,
                humantime::format_rfc3339_seconds(activity.at),
                humantime::format_duration(ttl)
            );
            card.expires_at = Some(activity.at + ttl);
        }
    }
    let body = card.render(reported_at);
    let mut changed = false;

    // The card: edit the oldest of ours, or create it; then make sure only one stays.
    let comment_url = match cards.first() {
        Some(existing) if card::content(&existing.body) == card::content(&body) => {
            tracing::info!("card of #{pr} already says {}", state.name());
            Some(existing.html_url.clone())
        }
        Some(existing) if args.dry_run => {
            tracing::info!("dry run: would edit the card {}", existing.html_url);
            Some(existing.html_url.clone())
        }
        Some(existing) => {
            let updated = github.update_comment(existing.id, &body).await?;
            tracing::info!(
                "card of #{pr} now says {}: {}",
                state.name(),
                updated.html_url
            );
            changed = true;
            Some(updated.html_url)
        }
        None if args.dry_run => {
            tracing::info!("dry run: would create the card of #{pr}:\n{body}");
            None
        }
        None => {
            let created = github.create_comment(pr, &body).await?;
            tracing::info!(
                "card of #{pr} created, {}: {}",
                state.name(),
                created.html_url
            );
            changed = true;
            Some(created.html_url)
        }
    };
    let comment_url = if changed {
        Some(settle_race(&github, pr, &author, &body).await?)
    } else {
        comment_url
    };
    if cards.len() > 1 && !args.dry_run && !changed {
        settle_race(&github, pr, &author, &body).await?;
    }

    if let Some(id) = args.extend_comment {
        // Only the card: the deployment and the commit status say the same as before.
        if !args.dry_run {
            github.react(id, "+1").await?;
        }
        tracing::info!(
            "/extend on #{pr}: {}; {} GitHub requests",
            card.expires_at
                .map_or("kept by its label".to_owned(), |at| format!(
                    "expires {}",
                    humantime::format_rfc3339_seconds(at)
                )),
            github.requests()
        );
        return write_outputs(&ctx, comment_url.as_deref(), None, changed);
    }
    let deployment = match &card.environment {
        Some(env) => {
            let commit = card
                .deployed_commit
                .clone()
                .unwrap_or_else(|| pull.head_sha.clone());
            report_deployment(&github, &args, state, &card, env, &commit, &mut changed).await?
        }
        None => {
            tracing::info!("no environment known yet: no GitHub Deployment");
            None
        }
    };
    report_commit_status(&github, &args, state, &card, &pull.head_sha, &mut changed).await?;
    tracing::info!(
        "{} GitHub requests; {}",
        github.requests(),
        if changed {
            "changed"
        } else {
            "nothing to change"
        }
    );
    write_outputs(&ctx, comment_url.as_deref(), deployment, changed)
}

/// An `/extend` comment: on this pull request, the command, by someone with write access (else
/// it gets 😕 and the step exits 3).
async fn check_extend(github: &GitHub, args: &Args, id: u64) -> Result<(), StepError> {
    let pr = args.pr_number;
    let comment = github.comment(id).await?.ok_or_else(|| {
        StepError::precondition(format!("comment {id} not found in {}", github.repository()))
    })?;
    if !comment.issue_url.ends_with(&format!("/issues/{pr}")) {
        return Err(StepError::precondition(format!(
            "comment {id} is not on pull request #{pr}"
        )));
    }
    let Some(command) = github::command_of(&comment.body) else {
        return Err(StepError::precondition(format!(
            "comment {id} is not an {} or {} command (its first word)",
            github::EXTEND_COMMAND,
            github::WAKE_COMMAND
        )));
    };
    let login = github::shown_login(&comment.author);
    let bot = comment.author.ends_with("[bot]");
    if bot || !github.can_write(&comment.author).await? {
        if !args.dry_run {
            github.react(id, "confused").await?;
        }
        return Err(StepError::precondition(format!(
            "{command} by @{login} on #{pr} refused: {command} needs write access to {} \
             (comments of others do not count as activity either)",
            github.repository()
        )));
    }
    tracing::info!("{command} by @{login} on #{pr}: write access, accepted");
    Ok(())
}

/// Our cards on pull request `pr`, oldest first: comments by `author` that start with its marker.
async fn own_cards(
    github: &GitHub,
    pr: u64,
    author: &str,
) -> Result<Vec<github::Comment>, StepError> {
    let mut cards: Vec<github::Comment> = github
        .issue_comments(pr)
        .await?
        .into_iter()
        .filter(|c| c.author == author && card::parse_marker(&c.body, pr).is_some())
        .collect();
    cards.sort_by_key(|c| c.id);
    Ok(cards)
}

/// After writing: when runs raced and each created a card, the oldest stays (every run agrees
/// which), the others are deleted, and the one that stays gets this report unless it holds a
/// newer one. Returns the card's URL.
async fn settle_race(
    github: &GitHub,
    pr: u64,
    author: &str,
    body: &str,
) -> Result<String, StepError> {
    let cards = own_cards(github, pr, author).await?;
    let Some((keep, extra)) = cards.split_first() else {
        // Deleted meanwhile (by a person): the next report creates it again.
        return Ok(String::new());
    };
    for duplicate in extra {
        if github.delete_comment(duplicate.id).await? {
            tracing::info!("deleted a second card of #{pr} ({})", duplicate.html_url);
        }
    }
    let ours = card::parse_marker(body, pr).map(|m| m.reported_at);
    let theirs = card::parse_marker(&keep.body, pr).map(|m| m.reported_at);
    if card::content(&keep.body) != card::content(body) && ours >= theirs {
        github.update_comment(keep.id, body).await?;
    }
    Ok(keep.html_url.clone())
}

/// The deployment status this state sets, if any.
fn deployment_state(state: State) -> Option<DeploymentState> {
    match state {
        State::Queued => Some(DeploymentState::Queued),
        State::Creating | State::Updating => Some(DeploymentState::InProgress),
        State::Ready => Some(DeploymentState::Success),
        State::Failed => Some(DeploymentState::Failure),
        State::Deleted => Some(DeploymentState::Inactive),
        State::Sleeping | State::Expiring | State::Deleting => None,
    }
}

async fn report_deployment(
    github: &GitHub,
    args: &Args,
    state: State,
    card: &Card,
    environment: &str,
    commit: &str,
    changed: &mut bool,
) -> Result<Option<u64>, StepError> {
    let Some(wanted) = deployment_state(state) else {
        return Ok(None);
    };
    let status = DeploymentStatus {
        state: wanted,
        environment_url: card
            .environment_url
            .as_ref()
            .filter(|_| wanted == DeploymentState::Success)
            .map(|u| u.to_string()),
        log_url: card.log_url.as_ref().map(|u| u.to_string()),
        description: Some(format!("sandbox {}", state.name())),
    };
    if wanted == DeploymentState::Inactive {
        // Every deployment of the environment, whatever commit it had.
        let mut last = None;
        for deployment in github.deployments(environment, None).await? {
            last.get_or_insert(deployment.id);
            let latest = github.latest_deployment_status(deployment.id).await?;
            if latest.is_some_and(|s| s.state == DeploymentState::Inactive) {
                continue;
            }
            if args.dry_run {
                tracing::info!("dry run: would mark deployment {} inactive", deployment.id);
                continue;
            }
            github
                .create_deployment_status(deployment.id, &status)
                .await?;
            tracing::info!("deployment {} of {environment} inactive", deployment.id);
            *changed = true;
        }
        return Ok(last);
    }
    let existing = github
        .deployments(environment, Some(commit))
        .await?
        .into_iter()
        .next();
    let deployment = match existing {
        Some(deployment) => deployment,
        None if args.dry_run => {
            tracing::info!(
                "dry run: would create a deployment of {environment} at {commit}, {:?}",
                wanted
            );
            return Ok(None);
        }
        None => {
            let deployment = github
                .create_deployment(&NewDeployment {
                    sha: commit.to_owned(),
                    environment: environment.to_owned(),
                    description: format!("sandbox of pull request #{}", args.pr_number),
                })
                .await?;
            tracing::info!("deployment {} of {environment} created", deployment.id);
            *changed = true;
            deployment
        }
    };
    let latest = github.latest_deployment_status(deployment.id).await?;
    let same = latest.as_ref().is_some_and(|l| {
        l.state == status.state
            && l.environment_url.as_deref().unwrap_or_default()
                == status.environment_url.as_deref().unwrap_or_default()
            && l.log_url.as_deref().unwrap_or_default()
                == status.log_url.as_deref().unwrap_or_default()
    });
    if same {
        tracing::info!("deployment {} already {:?}", deployment.id, wanted);
    } else if args.dry_run {
        tracing::info!(
            "dry run: would set deployment {} {:?}",
            deployment.id,
            wanted
        );
    } else {
        github
            .create_deployment_status(deployment.id, &status)
            .await?;
        tracing::info!(
            "deployment {} of {environment}: {:?}",
            deployment.id,
            wanted
        );
        *changed = true;
    }
    Ok(Some(deployment.id))
}

async fn report_commit_status(
    github: &GitHub,
    args: &Args,
    state: State,
    card: &Card,
    head: &str,
    changed: &mut bool,
) -> Result<(), StepError> {
    let (status_state, description) = match state {
        State::Queued => (CommitState::Pending, "sandbox queued"),
        State::Creating => (CommitState::Pending, "sandbox being created"),
        State::Updating => (CommitState::Pending, "sandbox being updated"),
        State::Ready => (CommitState::Success, "sandbox ready"),
        State::Failed => (CommitState::Failure, "sandbox failed"),
        State::Sleeping => (CommitState::Success, "sandbox sleeping"),
        State::Expiring => (CommitState::Success, "sandbox expiring"),
        State::Deleting => (CommitState::Pending, "sandbox being deleted"),
        State::Deleted => (CommitState::Success, "sandbox deleted"),
    };
    let target = match state {
        State::Ready | State::Sleeping | State::Expiring => card.environment_url.as_ref(),
        _ => card.log_url.as_ref(),
    };
    let wanted = CommitStatus {
        context: args.status_context.clone(),
        state: status_state,
        description: Some(description.to_owned()),
        target_url: target.map(|u| u.to_string()),
    };
    let current = github.commit_status(head, &args.status_context).await?;
    if current.as_ref() == Some(&wanted) {
        tracing::info!(
            "commit status {} already {:?}",
            args.status_context,
            status_state
        );
    } else if args.dry_run {
        tracing::info!(
            "dry run: would set commit status {} {:?}",
            args.status_context,
            status_state
        );
    } else {
        github.create_commit_status(head, &wanted).await?;
        tracing::info!("commit status {}: {:?}", args.status_context, status_state);
        *changed = true;
    }
    Ok(())
}

fn write_outputs(
    ctx: &Context,
    comment_url: Option<&str>,
    deployment: Option<u64>,
    changed: bool,
) -> Result<(), StepError> {
    ctx.outputs
        .set("comment-url", comment_url.unwrap_or_default())?;
    ctx.outputs.set(
        "deployment-id",
        &deployment.map(|d| d.to_string()).unwrap_or_default(),
    )?;
    ctx.outputs
        .set("changed", if changed { "true" } else { "false" })
}
