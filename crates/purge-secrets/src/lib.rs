//! purge-secrets: deletes every KV v2 secret under a sandbox's path, data and metadata, so
//! nothing of the sandbox is left in Vault (seeds/000 warns that a soft delete leaves the
//! metadata and every version behind).

use std::ffi::OsString;

use clap::Parser;
use step_kit::{
    escape_untrusted, retry, vault_error, CommonArgs, Context, Progress, StepArgs, StepError,
    VaultFlags,
};

pub const NAME: &str = "purge-secrets";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &["deleted"];

const EXAMPLE: &str = "\
Example:
  purge-secrets --mount secret --path sandboxes/sbx-pr-42 --root sandboxes \\
    --vault-addr https://vault.example:8200 --vault-k8s-role sandbox-steps
  # deletes secret/sandboxes/sbx-pr-42 and every secret below it, all versions and metadata;
  # outputs: deleted=<count>

Exit codes: 0 purged, or nothing there; 2 invalid flags; 3 --path outside --root, login or a
delete refused; 4 Vault unreachable or the deadline, after retries (a re-run deletes the rest).";

/// Delete every KV v2 secret under a sandbox's path, all versions and the metadata.
///
/// Walks `<PATH>` and every folder below it, deleting each secret's metadata (which removes all
/// its versions), and `<PATH>` itself when it is a secret. Only paths strictly below `--root` are
/// touched. Nothing there is success (`deleted=0`), so re-running after a failure finishes the job.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    /// The KV v2 secrets engine's mount.
    #[arg(long, value_name = "MOUNT", default_value = "secret")]
    pub mount: String,

    /// The sandbox's path under the mount (e.g. sandboxes/sbx-pr-42).
    #[arg(long, value_name = "PATH")]
    pub path: String,

    /// Only paths strictly below this one are ever deleted.
    #[arg(long, value_name = "PATH", default_value = "sandboxes")]
    pub root: String,

    /// List what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub vault: VaultFlags,

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
    step_kit::run_from(NAME, argv, purge_secrets)
}

/// A KV path: relative segments of `[A-Za-z0-9._-]`, no `.` or `..` segment.
fn check_kv_path(flag: &str, path: &str) -> Result<(), StepError> {
    if vault::is_valid_path(path) {
        Ok(())
    } else {
        Err(StepError::invalid(format!(
            "{flag} {}: must be a relative path of [A-Za-z0-9._-] segments, without . or .. \
             (e.g. sandboxes/sbx-pr-42)",
            escape_untrusted(path)
        )))
    }
}

async fn purge_secrets(args: Args, ctx: Context) -> Result<(), StepError> {
    if !vault::is_valid_mount(&args.mount) {
        return Err(StepError::invalid(format!(
            "--mount {}: must be one segment of [A-Za-z0-9_-], a KV v2 mount (not Vault's own \
             sys, auth, identity or cubbyhole)",
            escape_untrusted(&args.mount)
        )));
    }
    check_kv_path("--path", &args.path)?;
    check_kv_path("--root", &args.root)?;
    if !vault::is_strictly_below(&args.path, &args.root) {
        return Err(StepError::precondition(format!(
            "--path {} is not below --root {}: refusing to delete it",
            escape_untrusted(&args.path),
            escape_untrusted(&args.root)
        )));
    }
    let vault = args.vault.connect(&ctx).await?;
    let policy = ctx.retry_policy();
    let mount = args.mount.as_str();
    let progress = Progress::new("secrets", 0);
    let mut deleted = 0u64;

    // Depth first, one folder listing held per level: bounded whatever the tree's size.
    let mut secrets = Vec::new();
    let exists = retry(
        &policy,
        "vault read metadata",
        vault::Error::is_transient,
        || vault.kv2_exists(mount, &args.path),
    )
    .await
    .map_err(|e| vault_error("vault", e))?;
    if exists {
        secrets.push(args.path.clone());
        progress.add_total(1);
    }
    let mut folders = vec![args.path.clone()];
    loop {
        if let Some(secret) = secrets.pop() {
            if args.dry_run {
                tracing::info!("dry run: would delete {mount}/{secret} (all versions, metadata)");
            } else {
                retry(&policy, "vault delete", vault::Error::is_transient, || {
                    vault.delete_kv2_for_good(mount, &secret)
                })
                .await
                .map_err(|e| vault_error("vault", e))?;
                tracing::info!("deleted {mount}/{secret}");
            }
            deleted += 1;
            progress.advance(1, 0);
            continue;
        }
        let Some(folder) = folders.pop() else { break };
        let keys = retry(&policy, "vault list", vault::Error::is_transient, || {
            vault.list_kv2(mount, &folder)
        })
        .await
        .map_err(|e| vault_error("vault", e))?;
        for key in keys {
            match key.strip_suffix('/') {
                Some(sub) => folders.push(format!("{folder}/{sub}")),
                None => {
                    secrets.push(format!("{folder}/{key}"));
                    progress.add_total(1);
                }
            }
        }
    }
    progress.finish();
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    tracing::info!("{verb} {deleted} secret(s) under {mount}/{}", args.path);
    ctx.outputs.set("deleted", &deleted.to_string())
}
