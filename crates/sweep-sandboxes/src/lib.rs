//! sweep-sandboxes: the fleet's housekeeping. Finds what every backend holds of the sandboxes
//! (by the naming scheme, so what a crashed run or a lost webhook left is found too), asks GitHub
//! about each one's pull request, and decides: keep, warn (expiry near), expire (inactive past
//! the TTL) or orphan (pull request closed, unlabelled or missing), and which sandboxes to put to
//! sleep (inactive past --sleep-after). It changes nothing itself: the deletions and the sleeps are
//! output lists that the CronWorkflow hands to delete-sandbox and sleep-sandbox.

mod decide;
mod inventory;
mod names;

use std::ffi::OsString;
use std::time::{Duration, SystemTime};

use clap::{Parser, ValueEnum};
use serde_json::{json, Value};
use step_kit::{escape_untrusted, CommonArgs, Context, Progress, SecretRef, StepArgs, StepError};

pub use decide::{decide, human, Action, Decision, Policy, Pull, Resource};
pub use names::Scheme;

pub const NAME: &str = "sweep-sandboxes";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &[
    "deletes",
    "warnings",
    "sleeps",
    "sandboxes",
    "summary",
    "github-requests",
];

const EXAMPLE: &str = "\
Example:
  sweep-sandboxes --github-repo acme/platform --github-token env:GITHUB_TOKEN \\
    --infra-repo https://github.com/acme/infra.git --apps-repo https://github.com/acme/gitops.git \\
    --git-token env:GITHUB_TOKEN --namespace-prefix apps- --admin-url env:ADMIN_DATABASE_URL \\
    --bucket-prefix acme- --gcs-project acme-sandboxes --vault-addr https://vault.example:8200 \\
    --ttl 72h --warn-before 24h --require-label create-sandbox
  # SANDBOX    PR   ACTION  FOUND                                  REASON
  # sbx-pr-42  #42  keep    branch application namespace database  active 2h ago (push)
  # sbx-pr-51  #51  orphan  database role                          pull request closed
  # outputs: deletes=[{\"pr-number\":\"51\",\"environment\":\"sbx-pr-51\",...}] warnings=[] sandboxes=2
  #          summary=\"2 sandboxes: 1 keep, 1 orphan\" github-requests=4

Exit codes: 0 decided (whatever the decisions); 2 invalid flags, or a backend listed in
--inventory without its flags; 3 the repository not visible to the token (every sandbox would
look orphaned: nothing decided), more deletions than --max-deletes, access refused by a backend;
4 a backend or GitHub unreachable, or the deadline.";

/// A backend the sweep takes stock of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Environment branches of --infra-repo.
    Branches,
    /// Application files in --apps-path of --apps-repo.
    Applications,
    /// Namespaces (Kubernetes API).
    Namespaces,
    /// Databases and owner roles (--admin-url).
    Databases,
    /// Buckets of --gcs-project.
    Buckets,
    /// Folders under --vault-root (--vault-addr).
    Secrets,
    /// Slots under the cap on live sandboxes (admit-sandbox's ConfigMap in --admission-namespace).
    Admissions,
}

/// Take stock of every sandbox and decide, per sandbox, keep, sleep, warn, expire or orphan.
///
/// Lists each backend in --inventory by the naming scheme (environment `<env-prefix><PR>`;
/// namespace, bucket, database and Vault folder derived as validate-params derives them), joins
/// what it finds by pull request, then asks GitHub for each pull request: closed, missing or
/// without --require-label is an orphan; --keep-label keeps it; otherwise inactivity past --ttl
/// expires it, and within --warn-before of that warns. Activity, read from the pull request's
/// timeline, is a push, a label change, or a comment or review by someone with write access
/// (`/extend` is such a comment); comments of others, bots and the card do not count. With
/// --sleep-after, an awake sandbox inactive that long is put to sleep (the asleep ones are known
/// from admit-sandbox's ConfigMap). Names that start like a sandbox's but are not one are left
/// alone. Nothing is deleted or put to sleep here: those are the `deletes` and `sleeps` outputs.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    #[command(flatten)]
    pub github: github::GitHubFlags,

    /// The environments' prefix (validate-params' --env-prefix): a sandbox is `<prefix><PR>`.
    #[arg(long, value_name = "PREFIX", default_value = "sbx-pr-")]
    pub env_prefix: String,

    /// The backends to take stock of, each needing its flags.
    #[arg(
        long,
        value_enum,
        value_name = "BACKEND,...",
        value_delimiter = ',',
        default_value = "branches,applications,namespaces,databases,buckets,secrets,admissions"
    )]
    pub inventory: Vec<Backend>,

    /// The infrastructure repository (branches).
    #[arg(long, value_name = "URL")]
    pub infra_repo: Option<String>,

    /// The app-of-apps repository (applications).
    #[arg(long, value_name = "URL")]
    pub apps_repo: Option<String>,

    /// The directory of the Application files in --apps-repo.
    #[arg(long, value_name = "PATH", default_value = "apps/sandboxes")]
    pub apps_path: String,

    /// The branch of --apps-repo that Argo CD reads.
    #[arg(long, value_name = "BRANCH", default_value = "main")]
    pub apps_branch: String,

    /// The namespaces' prefix (validate-params' --namespace-prefix).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub namespace_prefix: String,

    /// The admin connection of the sandboxes' PostgreSQL server, as a reference (databases).
    #[arg(long, value_name = "SECRET_REF")]
    pub admin_url: Option<SecretRef>,

    /// The buckets' prefix (validate-params' --bucket-prefix).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub bucket_prefix: String,

    /// The Google Cloud project whose buckets are listed (buckets).
    #[arg(long, value_name = "PROJECT")]
    pub gcs_project: Option<String>,

    /// A GCS emulator's endpoint, used with anonymous credentials.
    #[arg(long, value_name = "URL", env = gcs::EMULATOR_ENV)]
    pub storage_emulator_host: Option<String>,

    /// The KV v2 mount of the sandboxes' secrets (secrets).
    #[arg(long, value_name = "MOUNT", default_value = "secret")]
    pub vault_mount: String,

    /// The folder holding one folder per sandbox (purge-secrets' --root).
    #[arg(long, value_name = "PATH", default_value = "sandboxes")]
    pub vault_root: String,

    /// The namespace of admit-sandbox's ConfigMap (the workflows': `{{workflow.namespace}}`).
    #[arg(long, value_name = "NS")]
    pub admission_namespace: Option<String>,

    /// admit-sandbox's ConfigMap.
    #[arg(long, value_name = "NAME", default_value = admission::CONFIGMAP)]
    pub admission_configmap: String,

    /// A sandbox whose pull request has been inactive this long expires.
    #[arg(long, value_name = "DURATION", default_value = "72h", value_parser = step_kit::parse_duration)]
    pub ttl: Duration,

    /// How long before expiry a warning is due.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = step_kit::parse_duration)]
    pub warn_before: Duration,

    /// A pull request with this label never expires, and is never put to sleep.
    #[arg(long, value_name = "LABEL", default_value = "sandbox-keep")]
    pub keep_label: String,

    /// A sandbox whose pull request has been inactive this long is put to sleep (the `sleeps`
    /// output, for sleep-sandbox); 0s: every awake sandbox (the night schedule). Empty: none.
    #[arg(long, value_name = "DURATION")]
    pub sleep_after: Option<String>,

    /// Why the sandboxes in `sleeps` sleep, as their cards say: idle, or night.
    #[arg(long, value_name = "REASON", default_value = "idle")]
    pub sleep_reason: String,

    /// Only pull requests with this label have a sandbox (the create Sensor's label); without
    /// it the sandbox is an orphan.
    #[arg(long, value_name = "LABEL")]
    pub require_label: Option<String>,

    /// More deletions than this at once is exit 3 and none is listed: a safety stop against a
    /// misconfiguration (another repository, a wrong prefix) that would make the fleet look
    /// orphaned. Raise it for a deliberate clean-up.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub max_deletes: usize,

    #[command(flatten)]
    pub git: git_remote::GitFlags,

    #[command(flatten)]
    pub kube: kube_access::KubeFlags,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl StepArgs for Args {
    // Room to wait out a GitHub rate limit with many sandboxes.
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

/// Runs the step with `argv` (the first item is the program name); returns the exit code.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> u8 {
    step_kit::run_from(NAME, argv, sweep)
}

/// A flag's value when given and not empty (the templates pass "" for "not set").
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.trim().is_empty())
}

fn check_flags(args: &Args) -> Result<(Scheme, Policy), StepError> {
    args.github.check()?;
    if given(&args.github.github_repo).is_none() {
        return Err(StepError::invalid(
            "--github-repo is required: the pull requests decide what stays",
        ));
    }
    let prefix_ok = args
        .env_prefix
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase())
        && args
            .env_prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && args.env_prefix.len() >= 2;
    if !prefix_ok {
        return Err(StepError::invalid(format!(
            "--env-prefix {}: a lower-case letter, then a-z, 0-9 and -, at least 2 characters",
            escape_untrusted(&args.env_prefix)
        )));
    }
    for (flag, prefix) in [
        ("--namespace-prefix", &args.namespace_prefix),
        ("--bucket-prefix", &args.bucket_prefix),
    ] {
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(StepError::invalid(format!(
                "{flag} {}: only a-z, 0-9 and -",
                escape_untrusted(prefix)
            )));
        }
    }
    naming::check_repo_path(&args.apps_path).map_err(|rule| {
        StepError::invalid(format!(
            "--apps-path {}: {rule}",
            escape_untrusted(&args.apps_path)
        ))
    })?;
    if let Some(namespace) = given(&args.admission_namespace) {
        naming::check_dns_label(namespace).map_err(|rule| {
            StepError::invalid(format!(
                "--admission-namespace {}: {rule}",
                escape_untrusted(namespace)
            ))
        })?;
    }
    naming::check_dns_subdomain(&args.admission_configmap).map_err(|rule| {
        StepError::invalid(format!(
            "--admission-configmap {}: {rule}",
            escape_untrusted(&args.admission_configmap)
        ))
    })?;
    if !vault::is_valid_mount(&args.vault_mount) || !vault::is_valid_path(&args.vault_root) {
        return Err(StepError::invalid(
            "--vault-mount is one segment of [A-Za-z0-9_-], --vault-root a relative path of \
             [A-Za-z0-9._-] segments",
        ));
    }
    for backend in &args.inventory {
        let missing = match backend {
            Backend::Branches => given(&args.infra_repo).is_none().then_some("--infra-repo"),
            Backend::Applications => given(&args.apps_repo).is_none().then_some("--apps-repo"),
            Backend::Namespaces => None,
            Backend::Databases => args.admin_url.is_none().then_some("--admin-url"),
            Backend::Buckets => given(&args.gcs_project)
                .is_none()
                .then_some("--gcs-project"),
            Backend::Secrets => given(&args.git.vault.vault_addr)
                .is_none()
                .then_some("--vault-addr"),
            Backend::Admissions => given(&args.admission_namespace)
                .is_none()
                .then_some("--admission-namespace"),
        };
        if let Some(flag) = missing {
            return Err(StepError::invalid(format!(
                "--inventory {} needs {flag} (or leave it out of --inventory)",
                backend
                    .to_possible_value()
                    .map(|v| v.get_name().to_owned())
                    .unwrap_or_default()
            )));
        }
    }
    if args.warn_before >= args.ttl {
        return Err(StepError::invalid(format!(
            "--warn-before {} is not shorter than --ttl {}",
            human(args.warn_before),
            human(args.ttl)
        )));
    }
    let scheme = Scheme {
        environment_prefix: args.env_prefix.clone(),
        namespace_prefix: args.namespace_prefix.clone(),
        bucket_prefix: args.bucket_prefix.clone(),
    };
    let sleep_after = given(&args.sleep_after)
        .map(|text| {
            step_kit::parse_duration(text).map_err(|e| {
                StepError::invalid(format!("--sleep-after {}: {e}", escape_untrusted(text)))
            })
        })
        .transpose()?;
    if !matches!(args.sleep_reason.as_str(), "idle" | "night") {
        return Err(StepError::invalid(format!(
            "--sleep-reason {}: idle or night",
            escape_untrusted(&args.sleep_reason)
        )));
    }
    let policy = Policy {
        ttl: args.ttl,
        warn_before: args.warn_before,
        keep_label: args.keep_label.clone(),
        require_label: given(&args.require_label).map(str::to_owned),
        sleep_after,
    };
    Ok((scheme, policy))
}

/// One sandbox's row: what was found, its pull request, the decision.
struct Row {
    pr: u64,
    environment: String,
    found: Vec<&'static str>,
    decision: Decision,
}

async fn sweep(args: Args, ctx: Context) -> Result<(), StepError> {
    let (scheme, policy) = check_flags(&args)?;
    let github = args
        .github
        .connect(&args.git.vault, ctx.retry_policy(), ctx.deadline)
        .await?
        .expect("--github-repo checked");
    // A token that cannot see the repository gets 404 for every pull request: every sandbox would
    // look orphaned. Refuse before taking stock.
    if !github.repository_visible().await? {
        return Err(StepError::precondition(format!(
            "GitHub repository {} not found, or not visible with --github-token: refusing to \
             sweep (every sandbox would look orphaned)",
            github.repository()
        )));
    }

    let mut stock = inventory::Inventory::default();
    for backend in &args.inventory {
        match backend {
            Backend::Branches => {
                let repo = given(&args.infra_repo).expect("checked");
                inventory::branches(&mut stock, &args, repo, &scheme, &ctx).await?
            }
            Backend::Applications => {
                let repo = given(&args.apps_repo).expect("checked");
                inventory::applications(&mut stock, &args, repo, &scheme, &ctx).await?
            }
            Backend::Namespaces => inventory::namespaces(&mut stock, &args, &scheme).await?,
            Backend::Databases => {
                let url = args
                    .admin_url
                    .as_ref()
                    .expect("checked")
                    .resolve("--admin-url", &args.git.vault)
                    .await?;
                inventory::databases(&mut stock, url.expose(), &scheme).await?
            }
            Backend::Buckets => {
                let project = given(&args.gcs_project).expect("checked");
                inventory::buckets(&mut stock, &args, project, &scheme, &ctx).await?
            }
            Backend::Secrets => inventory::secrets(&mut stock, &args, &scheme, &ctx).await?,
            Backend::Admissions => {
                let namespace = given(&args.admission_namespace).expect("checked");
                inventory::admissions(&mut stock, &args, namespace, &scheme).await?
            }
        }
    }
    let counts: Vec<String> = stock
        .counts
        .iter()
        .map(|(backend, n)| format!("{n} {backend}"))
        .collect();
    tracing::info!(
        "found {} sandboxes ({})",
        stock.sandboxes.len(),
        counts.join(", ")
    );
    for name in &stock.lookalikes {
        tracing::info!("left alone: {name} looks like a sandbox's name but is not one");
    }

    let now = SystemTime::now();
    let progress = Progress::new("pull requests", stock.sandboxes.len() as u64);
    let mut rows = Vec::with_capacity(stock.sandboxes.len());
    for (pr, found) in &stock.sandboxes {
        let pull = github.pull(*pr).await?;
        progress.advance(1, 0);
        let environment = scheme.environment(*pr);
        let mut last = None;
        let pull = match pull {
            None => Pull::Missing,
            Some(p) => {
                // The timeline (one more request, more for a long one) only where the decision
                // depends on it.
                let last_activity = if policy.needs_activity(p.open, &p.labels) {
                    let activity = github.activity(&p).await?;
                    tracing::debug!(
                        "#{pr}: last activity {} at {}",
                        activity.what,
                        humantime::format_rfc3339_seconds(activity.at)
                    );
                    last = Some(activity.what);
                    activity.at
                } else {
                    p.updated_at
                };
                Pull::Found {
                    open: p.open,
                    labels: p.labels,
                    last_activity,
                }
            }
        };
        let mut decision = decide(found, &pull, &policy, now);
        if let Some(what) = last {
            // What the clock counts from, for whoever reads the table.
            decision.reason = match decision.reason.split_once(';') {
                Some((head, tail)) => format!("{head} ({what});{tail}"),
                None => format!("{} ({what})", decision.reason),
            };
        }
        // Only the branch is left, and an open pull request has it as its head (CI bumping an
        // image there): cleanup-branch keeps such a branch, so deleting would change nothing,
        // every sweep again. One more request, only for these.
        if decision.action.deletes() && found.iter().all(|r| *r == Resource::Branch) {
            if let Some(other) = github.open_pulls_with_head(&environment).await?.first() {
                decision = Decision {
                    action: Action::Keep,
                    reason: format!(
                        "{}; only its branch is left, the head of open pull request #{other}",
                        decision.reason
                    ),
                    expires_at: None,
                    sleep: false,
                };
            }
        }
        rows.push(Row {
            pr: *pr,
            environment,
            found: found.iter().map(|r| r.name()).collect(),
            decision,
        });
    }

    print_table(&rows);
    let deletes: Vec<Value> = rows
        .iter()
        .filter(|r| r.decision.action.deletes())
        .map(|r| {
            json!({
                "pr-number": r.pr.to_string(),
                "environment": r.environment,
                "action": r.decision.action.name(),
                "reason": r.decision.reason,
            })
        })
        .collect();
    if deletes.len() > args.max_deletes {
        return Err(StepError::precondition(format!(
            "{} sandboxes to delete, more than --max-deletes {}: refusing to list any (check \
             --github-repo, --env-prefix and the token; raise --max-deletes for a deliberate \
             clean-up)",
            deletes.len(),
            args.max_deletes
        )));
    }
    let warnings: Vec<Value> = rows
        .iter()
        .filter(|r| r.decision.action == Action::Warn)
        .map(|r| {
            json!({
                "pr-number": r.pr.to_string(),
                "environment": r.environment,
                "expires-at": r.decision.expires_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                "reason": r.decision.reason,
            })
        })
        .collect();
    let sleeps: Vec<Value> = rows
        .iter()
        .filter(|r| r.decision.sleep)
        .map(|r| {
            json!({
                "pr-number": r.pr.to_string(),
                "environment": r.environment,
                "reason": args.sleep_reason,
            })
        })
        .collect();
    let summary = summary(&rows);
    tracing::info!("{summary}; {} GitHub requests", github.requests());
    let outputs = &ctx.outputs;
    outputs.set_json("deletes", &Value::Array(deletes))?;
    outputs.set_json("warnings", &Value::Array(warnings))?;
    outputs.set_json("sleeps", &Value::Array(sleeps))?;
    outputs.set("sandboxes", &rows.len().to_string())?;
    outputs.set("summary", &summary)?;
    outputs.set("github-requests", &github.requests().to_string())
}

/// `12 sandboxes: 7 keep, 1 warn, 2 expire, 2 orphan`.
fn summary(rows: &[Row]) -> String {
    let mut parts = Vec::new();
    for action in [
        Action::Keep,
        Action::Sleep,
        Action::Warn,
        Action::Expire,
        Action::Orphan,
    ] {
        let n = rows.iter().filter(|r| r.decision.action == action).count();
        if n > 0 {
            parts.push(format!("{n} {}", action.name()));
        }
    }
    if parts.is_empty() {
        "no sandboxes".into()
    } else {
        format!("{} sandboxes: {}", rows.len(), parts.join(", "))
    }
}

/// The decisions as a table in the log, one line per sandbox.
fn print_table(rows: &[Row]) {
    let found: Vec<String> = rows.iter().map(|r| r.found.join(" ")).collect();
    let width = |values: &mut dyn Iterator<Item = usize>, header: &str| {
        values.max().unwrap_or(0).max(header.len())
    };
    let env_w = width(&mut rows.iter().map(|r| r.environment.len()), "SANDBOX");
    let pr_w = width(&mut rows.iter().map(|r| r.pr.to_string().len() + 1), "PR");
    let found_w = width(&mut found.iter().map(String::len), "FOUND");
    tracing::info!(
        "{:env_w$}  {:pr_w$}  {:6}  {:found_w$}  REASON",
        "SANDBOX",
        "PR",
        "ACTION",
        "FOUND"
    );
    for (row, found) in rows.iter().zip(&found) {
        tracing::info!(
            "{:env_w$}  {:pr_w$}  {:6}  {:found_w$}  {}",
            row.environment,
            format!("#{}", row.pr),
            row.decision.action.name(),
            found,
            row.decision.reason
        );
    }
}
