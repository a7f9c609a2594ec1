//! create-argocd-app: writes the sandbox's Argo CD Application into the path an app-of-apps
//! watches, commits and pushes it. Same content: no commit. Lost a push race: fetch, redo, push.

use std::ffi::OsString;

use clap::Parser;
use git_remote::{edit_file, CommitFlags, FileEdit, GitFlags};
use serde_json::{json, Map, Value};
use step_kit::{escape_untrusted, CommonArgs, Context, FlagProblems, StepArgs, StepError};

pub const NAME: &str = "create-argocd-app";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &["commit", "changed", "path"];

/// The annotation holding when the Application was first written (for expiry sweeps).
pub const CREATED_AT: &str = "sandbox-steps.io/created-at";

const EXAMPLE: &str = "\
Example:
  create-argocd-app --repo https://github.com/acme/gitops.git --allow-protected-branch \\
    --path apps/sandboxes --name sbx-pr-42 \\
    --source-repo https://github.com/acme/infra.git --source-path kustomize/environments/sandbox \\
    --target-revision sbx-pr-42 --dest-namespace apps-sbx-pr-42 --pr-number 42 --git-token env:GITHUB_TOKEN
  # writes apps/sandboxes/sbx-pr-42.yaml on main; outputs: commit=<sha> changed=true path=...

Exit codes: 0 written or already the same; 2 invalid flags (names, labels, paths); 3 credentials
refused, branch missing, a protected branch without --allow-protected-branch; 4 network failure
or timeout after retries.";

/// Commit the sandbox's Argo CD Application into the app-of-apps repository.
///
/// Writes `<PATH>/<NAME>.yaml`: an `argoproj.io/v1alpha1` Application (namespace `argocd` by
/// default) with the resources finalizer (deleting it deletes the sandbox's resources), automated
/// sync with prune and self-heal, `CreateNamespace=true`, labels for the environment and pull
/// request, and the creation time as an annotation. The same content again makes no commit; when
/// someone else pushed first, it fetches, writes again and pushes again.
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

    /// The Application's name (validate-params' `app-name`); the file is `<path>/<name>.yaml`.
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// Only Applications whose name starts with this prefix are ever written (as delete-argocd-app
    /// removes only those): the app-of-apps repository holds other teams' Applications too.
    #[arg(long, value_name = "PREFIX", default_value = "sbx-")]
    pub sandbox_prefix: String,

    /// The sandbox's namespace must start with this prefix: an Application never deploys into
    /// kube-system or another team's namespace.
    #[arg(long, value_name = "PREFIX", default_value = "apps-sbx-")]
    pub dest_namespace_prefix: String,

    /// The Argo CD project.
    #[arg(long, value_name = "PROJECT", default_value = "default")]
    pub project: String,

    /// The namespace Argo CD's Applications live in.
    #[arg(long, value_name = "NS", default_value = "argocd")]
    pub app_namespace: String,

    /// The repository holding the sandbox's manifests.
    #[arg(long, value_name = "URL")]
    pub source_repo: String,

    /// The manifests' path in it (the environment's kustomization).
    #[arg(long, value_name = "DIR")]
    pub source_path: String,

    /// The branch, tag or commit Argo CD follows (the environment branch).
    #[arg(long, value_name = "REF")]
    pub target_revision: String,

    /// The namespace the sandbox deploys to.
    #[arg(long, value_name = "NS")]
    pub dest_namespace: String,

    /// The cluster it deploys to.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://kubernetes.default.svc"
    )]
    pub dest_server: String,

    /// The pull request number, as the label `sandbox-steps.io/pr-number`.
    #[arg(long, value_name = "N")]
    pub pr_number: Option<String>,

    /// More labels, KEY=VALUE (repeatable or comma-separated).
    #[arg(long, value_name = "KEY=VALUE", value_delimiter = ',')]
    pub label: Vec<String>,

    /// Annotations, KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub annotation: Vec<String>,

    /// Log the Application that would be written; push nothing.
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
    step_kit::run_from(NAME, argv, create_argocd_app)
}

/// Labels or annotations of the manifest.
type Metadata = Map<String, Value>;

/// Checks every flag at once; returns the labels and annotations.
fn validate(args: &Args) -> Result<(Metadata, Metadata), StepError> {
    let mut problems = FlagProblems::default();
    let mut check =
        |flag: &str, value: &str, result: Result<(), String>| problems.check(flag, value, result);
    check("--name", &args.name, naming::check_dns_label(&args.name));
    check("--path", &args.path, naming::check_repo_path(&args.path));
    check(
        "--branch",
        &args.branch,
        naming::check_branch_name(&args.branch),
    );
    check(
        "--app-namespace",
        &args.app_namespace,
        naming::check_dns_label(&args.app_namespace),
    );
    check(
        "--dest-namespace",
        &args.dest_namespace,
        naming::check_dns_label(&args.dest_namespace),
    );
    check(
        "--project",
        &args.project,
        naming::check_dns_subdomain(&args.project),
    );
    check(
        "--source-path",
        &args.source_path,
        naming::check_repo_path(&args.source_path),
    );
    check(
        "--target-revision",
        &args.target_revision,
        naming::check_branch_name(&args.target_revision),
    );
    for (flag, url) in [
        ("--source-repo", &args.source_repo),
        ("--dest-server", &args.dest_server),
    ] {
        let ok = url.starts_with("https://")
            || url.starts_with("http://")
            || url.starts_with("ssh://")
            || git_remote::is_ssh_url(url);
        let clean = !url.chars().any(|c| c.is_control() || c.is_whitespace());
        let result = if !(ok && clean) {
            Err("must be a URL".to_owned())
        } else if carries_credentials(url) {
            Err(
                "credentials inside the URL are refused: they would be committed to the \
                 app-of-apps repository's history (Argo CD reads repository credentials from \
                 its own Secrets)"
                    .to_owned(),
            )
        } else {
            Ok(())
        };
        check(flag, &step_kit::redact_url(url), result);
    }
    if let Some(pr) = &args.pr_number {
        let ok = !pr.is_empty() && pr.len() <= 10 && pr.bytes().all(|b| b.is_ascii_digit());
        check(
            "--pr-number",
            pr,
            if ok {
                Ok(())
            } else {
                Err("must be a number".into())
            },
        );
    }
    let mut labels = Map::new();
    labels.insert(MANAGED_BY.0.into(), json!(MANAGED_BY.1));
    labels.insert("sandbox-steps.io/environment".into(), json!(args.name));
    if let Some(pr) = &args.pr_number {
        labels.insert("sandbox-steps.io/pr-number".into(), json!(pr));
    }
    for pair in &args.label {
        match pair.split_once('=') {
            Some((key, value)) => {
                check("--label", pair, naming::check_label_key(key));
                check("--label", pair, naming::check_label_value(value));
                labels.insert(key.to_owned(), json!(value));
            }
            None => check("--label", pair, Err("must be KEY=VALUE".into())),
        }
    }
    let mut annotations = Map::new();
    for pair in &args.annotation {
        match pair.split_once('=') {
            Some((key, value)) => {
                check("--annotation", pair, naming::check_label_key(key));
                annotations.insert(key.to_owned(), json!(value));
            }
            None => check("--annotation", pair, Err("must be KEY=VALUE".into())),
        }
    }
    for (flag, prefix) in [
        ("--sandbox-prefix", &args.sandbox_prefix),
        ("--dest-namespace-prefix", &args.dest_namespace_prefix),
    ] {
        check(flag, prefix, naming::check_sandbox_prefix(prefix));
    }
    problems.into_result()?;
    // Valid, but outside the sandboxes: a precondition no retry changes.
    if !args.name.starts_with(&args.sandbox_prefix) {
        return Err(StepError::precondition(format!(
            "--name {} does not start with the sandbox prefix {}: refusing to write it",
            escape_untrusted(&args.name),
            escape_untrusted(&args.sandbox_prefix)
        )));
    }
    if !args.dest_namespace.starts_with(&args.dest_namespace_prefix) {
        return Err(StepError::precondition(format!(
            "--dest-namespace {} does not start with {}: a sandbox deploys only into its own \
             namespace",
            escape_untrusted(&args.dest_namespace),
            escape_untrusted(&args.dest_namespace_prefix)
        )));
    }
    Ok((labels, annotations))
}

/// Whether a repository or server URL holds credentials: a user or password in an http(s) or
/// ssh:// URL's authority (`https://TOKEN@host`, `https://user:token@host`, `ssh://git:pw@host`).
/// The scp-like `git@host:path` names only the SSH user, which is not a secret.
fn carries_credentials(url: &str) -> bool {
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
            !parsed.username().is_empty() || parsed.password().is_some()
        }
        Ok(parsed) if parsed.scheme() == "ssh" => parsed.password().is_some(),
        _ => false,
    }
}

/// The label every Application this step writes carries; a file without it was written by
/// someone else and is never replaced.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "sandbox-steps");

/// Refuses (exit 3) to replace (or, for delete-argocd-app, remove) a file that is not an
/// Application this step wrote.
pub fn check_ours(file: &str, existing: &[u8]) -> Result<(), StepError> {
    let value: Value = serde_yaml::from_slice(existing).unwrap_or(Value::Null);
    let ours =
        value["kind"] == "Application" && value["metadata"]["labels"][MANAGED_BY.0] == MANAGED_BY.1;
    if ours {
        Ok(())
    } else {
        Err(StepError::precondition(format!(
            "{file} exists and was not written by sandbox-steps (no label {}={}): refusing to \
             replace or remove it",
            MANAGED_BY.0, MANAGED_BY.1
        )))
    }
}

/// The Application manifest. `created_at` is kept from the file already there, so the same
/// sandbox gives the same bytes.
pub fn application(
    args: &Args,
    labels: &Map<String, Value>,
    annotations: &Map<String, Value>,
    created_at: &str,
) -> String {
    let mut annotations = annotations.clone();
    annotations.insert(CREATED_AT.into(), json!(created_at));
    let app = json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {
            "name": args.name,
            "namespace": args.app_namespace,
            "labels": labels,
            "annotations": annotations,
            "finalizers": ["resources-finalizer.argocd.argoproj.io"],
        },
        "spec": {
            "project": args.project,
            "source": {
                "repoURL": args.source_repo,
                "path": args.source_path,
                "targetRevision": args.target_revision,
            },
            "destination": { "server": args.dest_server, "namespace": args.dest_namespace },
            "syncPolicy": {
                "automated": { "prune": true, "selfHeal": true },
                "syncOptions": ["CreateNamespace=true"],
            },
        },
    });
    format!(
        "# Written by sandbox-steps create-argocd-app; delete-argocd-app removes it.\n{}",
        serde_yaml::to_string(&app).expect("an Application serializes")
    )
}

/// The creation time recorded in an existing Application file, if any.
fn recorded_creation(existing: &[u8]) -> Option<String> {
    let value: Value = serde_yaml::from_slice(existing).ok()?;
    value["metadata"]["annotations"][CREATED_AT]
        .as_str()
        .map(str::to_owned)
}

async fn create_argocd_app(args: Args, ctx: Context) -> Result<(), StepError> {
    let (labels, annotations) = validate(&args)?;
    let file = format!("{}/{}.yaml", args.path.trim_end_matches('/'), args.name);
    let edit = FileEdit {
        repo: args.repo.clone(),
        branch: args.branch.clone(),
        path: file.clone(),
        message: format!("{}: Argo CD Application", args.name),
        dry_run: args.dry_run,
    };
    let (git, commit_flags) = (args.git.clone(), args.commit.clone());
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let (path, dry_run) = (file.clone(), args.dry_run);
    let (commit, changed) = edit_file(edit, &git, &commit_flags, &ctx, move |existing| {
        if let Some(existing) = existing {
            check_ours(&path, existing)?;
        }
        let created = existing
            .and_then(recorded_creation)
            .unwrap_or_else(|| now.clone());
        Ok(Some(
            application(&args, &labels, &annotations, &created).into_bytes(),
        ))
    })
    .await?;
    let state = match (dry_run, changed) {
        (false, true) => "written and pushed",
        (false, false) => "already up to date",
        (true, true) => "dry run: a real run would write and push it; nothing committed",
        (true, false) => "dry run: already up to date; a real run would commit nothing",
    };
    tracing::info!("{file}: {state} (commit {commit})");
    ctx.outputs.set("commit", &commit.to_string())?;
    ctx.outputs
        .set("changed", if changed { "true" } else { "false" })?;
    ctx.outputs.set("path", &file)
}

#[cfg(test)]
mod tests {
    use super::carries_credentials;

    #[test]
    fn urls_with_credentials_are_told_apart_from_ssh_users() {
        for url in [
            "https://x-access-token:ghp_x@github.com/acme/infra.git",
            "https://ghp_x@github.com/acme/infra.git",
            "http://user:pw@git.local/infra.git",
            "ssh://git:pw@github.com/acme/infra.git",
        ] {
            assert!(carries_credentials(url), "{url}");
        }
        for url in [
            "https://github.com/acme/infra.git",
            "git@github.com:acme/infra.git",
            "ssh://git@github.com/acme/infra.git",
            "https://kubernetes.default.svc",
        ] {
            assert!(!carries_credentials(url), "{url}");
        }
    }
}
