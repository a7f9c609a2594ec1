//! patch-kustomize: sets the namespace, image versions, generator literals, labels and replica
//! counts of an environment's kustomization on its branch, losslessly (only the changed values'
//! lines move), commits and pushes; puts the environment to sleep and wakes it. Nothing to
//! change: no commit.

use std::ffi::OsString;

use clap::Parser;
use git_remote::{edit_file, read_branch_file, CommitFlags, FileEdit, GitFlags};
use step_kit::{escape_untrusted, CommonArgs, Context, FlagProblems, StepArgs, StepError};

pub mod image;
pub mod kustomization;

pub use image::ImageSet;
pub use kustomization::{asleep, Literal, Patch, PatchError, Sleep};

pub const NAME: &str = "patch-kustomize";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &["commit", "changed", "asleep", "asleep-since"];

const EXAMPLE: &str = "\
Example:
  patch-kustomize --repo https://github.com/acme/infra.git --branch sbx-pr-42 \\
    --file kustomize/environments/sandbox/kustomization.yaml --namespace apps-sbx-pr-42 \\
    --images-from integration:kustomize/environments/integration/kustomization.yaml \\
    --set-image registry.example.com/acme/api=:pr-42 --set-literal app-config/DB_NAME=sbx_pr_42 \\
    --git-token env:GITHUB_TOKEN
  # outputs: commit=<sha> changed=true asleep=false asleep-since=
  patch-kustomize --repo ... --branch sbx-pr-42 --file ... --sleep --sleep-reason idle
  # every Deployment and StatefulSet at 0 replicas; --wake puts back exactly what was there

Exit codes: 0 patched or already as asked; 2 invalid flags, malformed YAML (line and column) or a
file that is not a kustomization; 3 file or branch missing, a protected branch (main, master, the default
branch, --protected-branches), credentials refused; 4 network failure
or timeout after retries.";

/// Patch an environment's kustomization on its branch: namespace, images, literals, labels,
/// replicas; or put it to sleep, or wake it.
///
/// The file is edited in place, keeping comments, key order, quoting, indentation, anchors and
/// line endings: the commit's diff touches only the lines whose values change. `--set-image`
/// follows `kustomize edit set image`: the entry is added when missing, the given fields replaced
/// when present. When nothing changes, nothing is committed (`changed=false`).
///
/// `--sleep` scales every Deployment and StatefulSet the kustomization renders to 0 (a
/// `patches:` entry per kind, and every `replicas:` entry at 0, their counts recorded in the
/// kustomization's own `metadata.annotations`, which kustomize does not render); `--wake`
/// removes the patches and puts the recorded counts back, leaving the file as it was before
/// the sleep. Argo CD syncs either like any commit.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    /// The repository holding the environments (https:// or SSH).
    #[arg(long, value_name = "URL")]
    pub repo: String,

    /// The environment's branch (create-branch made it).
    #[arg(long, value_name = "BRANCH")]
    pub branch: String,

    /// The kustomization to patch, relative to the repository root.
    #[arg(long, value_name = "PATH")]
    pub file: String,

    /// Sets `namespace:`.
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,

    /// Sets an image: NAME=NEWNAME:TAG, NAME=:TAG, NAME=NEWNAME@sha256:DIGEST or
    /// NAME=NEWNAME:TAG@sha256:DIGEST (repeatable or comma-separated; wins over --images-from).
    #[arg(long, value_name = "NAME=REF", value_delimiter = ',')]
    pub set_image: Vec<String>,

    /// Copies the `images:` of another environment's kustomization, BRANCH:PATH in the same
    /// repository (e.g. integration:kustomize/environments/integration/kustomization.yaml).
    #[arg(long, value_name = "BRANCH:PATH")]
    pub images_from: Option<String>,

    /// Sets KEY=VALUE in the literals of the configMapGenerator named GENERATOR, adding either
    /// when absent (repeatable, or one per line: values may hold commas).
    #[arg(long, value_name = "GENERATOR/KEY=VALUE", value_delimiter = '\n')]
    pub set_literal: Vec<String>,

    /// Sets a label, KEY=VALUE, in `commonLabels` (or the first `labels:` entry's pairs when the
    /// file uses those) (repeatable or comma-separated).
    #[arg(long, value_name = "KEY=VALUE", value_delimiter = ',')]
    pub set_label: Vec<String>,

    /// Sets a `replicas:` entry, NAME=COUNT (kustomize's replicas field: the Deployment,
    /// StatefulSet or ReplicaSet named NAME) (repeatable or comma-separated).
    #[arg(long, value_name = "NAME=COUNT", value_delimiter = ',')]
    pub set_replicas: Vec<String>,

    /// Puts the environment to sleep: every Deployment and StatefulSet at 0 replicas, what was
    /// there recorded for --wake. Asleep already: nothing changes.
    #[arg(long)]
    pub sleep: bool,

    /// Why it sleeps, recorded with the time and shown on the card: requested (by hand), idle
    /// (the sweep's --sleep-after), night (the night schedule) or capacity (to make room).
    #[arg(long, value_name = "REASON", default_value = "requested")]
    pub sleep_reason: String,

    /// Wakes the environment: removes what --sleep added and restores the recorded counts (with
    /// the other flags' edits in the same commit). Awake already: nothing changes.
    #[arg(long)]
    pub wake: bool,

    /// The commit message (default: "<branch>: patch <file>").
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,

    /// Log the diff that would be committed; push nothing.
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
    step_kit::run_from(NAME, argv, patch_kustomize)
}

/// `--images-from` split into its branch and file.
pub struct ImagesFrom {
    pub branch: String,
    pub path: String,
}

/// Checks every flag at once; returns the patch (without `--images-from`'s images yet).
pub fn validate<'a>(args: &'a Args) -> Result<(Patch, Option<ImagesFrom>), StepError> {
    let mut problems = FlagProblems::default();
    let mut check =
        |flag: &str, value: &str, result: Result<(), String>| problems.check(flag, value, result);
    check(
        "--branch",
        &args.branch,
        naming::check_branch_name(&args.branch),
    );
    check("--file", &args.file, naming::check_repo_path(&args.file));
    let mut patch = Patch::default();
    if let Some(ns) = &args.namespace {
        check("--namespace", ns, naming::check_dns_label(ns));
        patch.namespace = Some(ns.clone());
    }
    // Blank items come from a template's multi-line parameter (its final newline): not flags.
    let given = |list: &'a [String]| list.iter().filter(|s| !s.trim().is_empty());
    for arg in given(&args.set_image) {
        match ImageSet::parse(arg) {
            Ok(image) => patch.images.push(image),
            Err(rule) => check("--set-image", arg, Err(rule)),
        }
    }
    for arg in given(&args.set_literal) {
        match parse_literal(arg) {
            Ok(literal) => patch.literals.push(literal),
            Err(rule) => check("--set-literal", arg, Err(rule)),
        }
    }
    for arg in given(&args.set_label) {
        match arg.split_once('=') {
            Some((key, value)) => {
                check("--set-label", arg, naming::check_label_key(key));
                check("--set-label", arg, naming::check_label_value(value));
                patch.labels.push((key.to_owned(), value.to_owned()));
            }
            None => check("--set-label", arg, Err("must be KEY=VALUE".into())),
        }
    }
    for arg in given(&args.set_replicas) {
        match parse_replicas(arg) {
            Ok(entry) => patch.replicas.push(entry),
            Err(rule) => check("--set-replicas", arg, Err(rule)),
        }
    }
    if args.sleep && (args.wake || !patch.replicas.is_empty()) {
        check(
            "--sleep",
            "true",
            Err("goes alone: not with --wake or --set-replicas".into()),
        );
    }
    if args.sleep {
        check(
            "--sleep-reason",
            &args.sleep_reason,
            naming::check_sleep_reason(&args.sleep_reason),
        );
        patch.sleep = Some(Sleep {
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            reason: args.sleep_reason.clone(),
        });
    }
    patch.wake = args.wake;
    let images_from = args.images_from.as_ref().and_then(|arg| {
        let Some((branch, path)) = arg.split_once(':') else {
            check("--images-from", arg, Err("must be BRANCH:PATH".into()));
            return None;
        };
        check("--images-from", arg, naming::check_branch_name(branch));
        check("--images-from", arg, naming::check_repo_path(path));
        Some(ImagesFrom {
            branch: branch.to_owned(),
            path: path.to_owned(),
        })
    });
    if patch.namespace.is_none()
        && patch.images.is_empty()
        && patch.literals.is_empty()
        && patch.labels.is_empty()
        && patch.replicas.is_empty()
        && patch.sleep.is_none()
        && !patch.wake
        && images_from.is_none()
    {
        problems.push(
            "nothing to set: give --namespace, --set-image, --images-from, --set-literal, \
             --set-label, --set-replicas, --sleep or --wake",
        );
    }
    problems.into_result()?;
    Ok((patch, images_from))
}

/// `NAME=COUNT`: a Kubernetes object name, a count Kubernetes accepts (an int32, not negative).
fn parse_replicas(arg: &str) -> Result<(String, i32), String> {
    let (name, count) = arg.split_once('=').ok_or("must be NAME=COUNT")?;
    naming::check_dns_subdomain(name).map_err(|rule| format!("name: {rule}"))?;
    let count = count
        .parse::<i32>()
        .ok()
        .filter(|c| *c >= 0)
        .ok_or("COUNT must be a whole number from 0 to 2147483647")?;
    Ok((name.to_owned(), count))
}

/// `GENERATOR/KEY=VALUE`: a generator name (DNS subdomain), a ConfigMap key, any single-line value.
fn parse_literal(arg: &str) -> Result<Literal, String> {
    let (generator, pair) = arg.split_once('/').ok_or("must be GENERATOR/KEY=VALUE")?;
    let (key, value) = pair.split_once('=').ok_or("must be GENERATOR/KEY=VALUE")?;
    naming::check_dns_subdomain(generator).map_err(|rule| format!("generator: {rule}"))?;
    let key_ok = !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !key_ok {
        return Err("key must be 1 to 253 of [A-Za-z0-9._-] (a ConfigMap key)".into());
    }
    if value.chars().any(char::is_control) {
        return Err("value must be one line without control characters".into());
    }
    Ok(Literal {
        generator: generator.to_owned(),
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

/// The `images:` of another kustomization, as sets (each entry's fields copied as they are).
pub fn images_of(text: &str) -> Result<Vec<ImageSet>, String> {
    let text = text
        .strip_prefix(kustomization::BYTE_ORDER_MARK)
        .unwrap_or(text);
    kustomization::check_limits(text)?;
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let Some(images) = value.get("images") else {
        return Ok(Vec::new());
    };
    let images = images.as_sequence().ok_or("images: is not a list")?;
    let field = |entry: &serde_yaml::Value, key: &str| {
        entry.get(key).and_then(|v| v.as_str()).map(str::to_owned)
    };
    images
        .iter()
        .map(|entry| {
            let name = field(entry, "name").ok_or("an images: entry without name")?;
            Ok(ImageSet {
                new_name: field(entry, "newName"),
                new_tag: field(entry, "newTag"),
                digest: field(entry, "digest"),
                name,
            })
        })
        .collect()
}

/// `--set-image` over `--images-from`, field by field, in the order first seen.
fn merge_images(from: Vec<ImageSet>, explicit: &[ImageSet]) -> Vec<ImageSet> {
    let mut merged = from;
    for image in explicit {
        match merged.iter_mut().find(|m| m.name == image.name) {
            Some(existing) => *existing = existing.overridden_by(image),
            None => merged.push(image.clone()),
        }
    }
    merged
}

async fn patch_kustomize(args: Args, ctx: Context) -> Result<(), StepError> {
    let (mut patch, images_from) = validate(&args)?;
    if let Some(from) = images_from {
        let text = read_branch_file(&args.repo, &from.branch, &from.path, &args.git, &ctx)
            .await?
            .ok_or_else(|| {
                StepError::precondition(format!(
                    "--images-from: {} does not exist on branch {}",
                    escape_untrusted(&from.path),
                    escape_untrusted(&from.branch)
                ))
            })?;
        let images = images_of(&String::from_utf8_lossy(&text)).map_err(|e| {
            StepError::invalid(format!(
                "--images-from {}:{}: {e}",
                escape_untrusted(&from.branch),
                escape_untrusted(&from.path)
            ))
        })?;
        tracing::info!(
            "{} image(s) from {}:{}",
            images.len(),
            from.branch,
            from.path
        );
        patch.images = merge_images(images, &patch.images);
    }
    let file = args.file.clone();
    let edit = FileEdit {
        repo: args.repo.clone(),
        branch: args.branch.clone(),
        path: file.clone(),
        message: args
            .message
            .clone()
            .unwrap_or_else(|| format!("{}: patch {}", args.branch, args.file)),
        dry_run: args.dry_run,
    };
    // The sleep the file records as the last (re-)application left it, for the asleep outputs.
    let result = std::sync::Arc::new(std::sync::Mutex::new(None::<Sleep>));
    let result_of_edit = result.clone();
    let (commit, changed) = edit_file(edit, &args.git, &args.commit, &ctx, move |existing| {
        let existing = existing.ok_or_else(|| {
            StepError::precondition(format!(
                "{} does not exist on the branch",
                escape_untrusted(&file)
            ))
        })?;
        let text = std::str::from_utf8(existing).map_err(|e| {
            StepError::invalid(format!("{}: not UTF-8: {e}", escape_untrusted(&file)))
        })?;
        match patch.apply(text) {
            Ok(patched) => {
                *result_of_edit.lock().expect("not poisoned") = asleep(&patched);
                Ok(Some(patched.into_bytes()))
            }
            Err(PatchError::Invalid(why)) => Err(StepError::invalid(format!(
                "{}: {why}",
                escape_untrusted(&file)
            ))),
            Err(PatchError::Unfaithful(why)) => Err(StepError::unexpected(format!(
                "{}: {why}",
                escape_untrusted(&file)
            ))),
        }
    })
    .await?;
    let state = match (args.dry_run, changed) {
        (false, true) => "patched and pushed",
        (false, false) => "already as asked; nothing committed",
        (true, true) => "dry run: a real run would patch and push this; nothing committed",
        (true, false) => "dry run: already as asked; a real run would commit nothing",
    };
    tracing::info!("{}: {state} (commit {commit})", args.file);
    let asleep = result.lock().expect("not poisoned").clone();
    if let Some(sleep) = &asleep {
        tracing::info!("asleep since {} ({})", sleep.since, sleep.reason);
    }
    ctx.outputs.set("commit", &commit.to_string())?;
    ctx.outputs
        .set("changed", if changed { "true" } else { "false" })?;
    ctx.outputs
        .set("asleep", if asleep.is_some() { "true" } else { "false" })?;
    ctx.outputs.set(
        "asleep-since",
        asleep.as_ref().map_or("", |s| s.since.as_str()),
    )
}
