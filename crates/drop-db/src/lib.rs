//! drop-db: drops a sandbox's database and its owner role on a shared PostgreSQL server, the
//! counterpart of restore-db in delete-sandbox. Only names restore-db could have created are
//! ever touched, by the rules both take from `pg-admin`.

use std::ffi::OsString;

use clap::Parser;
use pg_admin::{
    check_database, check_owner_role, Admin, AdminUrl, DatabaseInfo, RESTORING_SUFFIX, ROLE_MARKER,
};
use step_kit::{CommonArgs, Context, SecretRef, StepArgs, StepError, VaultFlags};

pub const NAME: &str = "drop-db";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &["database", "dropped", "role-dropped", "connections"];

const EXAMPLE: &str = "\
Example:
  drop-db --admin-url env:ADMIN_DATABASE_URL --database sbx_pr_42
  # drops sbx_pr_42 (closing its 3 sessions), a leftover sbx_pr_42_restoring, and the role
  # sbx_pr_42; outputs: database=sbx_pr_42 dropped=true role-dropped=true connections=3
  # (a re-run: dropped=false role-dropped=false, nothing changed)

Exit codes: 0 dropped, or nothing there; 2 invalid flags or names; 3 a name outside
--sandbox-prefix, a template database, a database or role restore-db did not create, or the
server refusing (the role still owns objects elsewhere: the message names them); 4 the server
or Vault unreachable, or the deadline: a re-run finishes the job.";

/// Drop a sandbox's database and its owner role on a shared PostgreSQL server.
///
/// Drops `--database` (its sessions closed first), the `<database>_restoring` a crashed
/// restore-db may have left, then the owner role. Refuses, before changing anything: names
/// outside `--sandbox-prefix`, PostgreSQL's own databases and the admin's, a template (restore-db
/// `--template-db`: the sandboxes are copies of it and it stays), a database owned by another
/// role than the sandbox's, a role restore-db did not create or that has rights beyond its own
/// objects. Nothing there is success, so re-running after a failure finishes the job.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    /// The admin connection, `postgres://USER:PASSWORD@HOST:PORT/DATABASE`, as a reference:
    /// env:NAME, file:/path or vault:<mount>/<path>#<key>. The user needs CREATEROLE and to own
    /// the database or be a member of its owner (restore-db's admin is).
    #[arg(long, value_name = "SECRET_REF")]
    pub admin_url: SecretRef,

    /// The sandbox database to drop, e.g. sbx_pr_42 (validate-params' `database` output).
    #[arg(long, value_name = "NAME")]
    pub database: String,

    /// The sandbox's owner role, dropped after the database (default: the database's name, as
    /// restore-db names it).
    #[arg(long, value_name = "ROLE")]
    pub owner: Option<String>,

    /// The naming scheme of sandbox databases: only names starting with it are dropped.
    #[arg(long, value_name = "PREFIX", default_value = "sbx_")]
    pub sandbox_prefix: String,

    /// Show what would be dropped (size, sessions), drop nothing.
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
    step_kit::run_from(NAME, argv, drop_db)
}

/// The checked flags.
struct Plan {
    admin: AdminUrl,
    owner: String,
    /// The database, then its temporary name of a restore.
    databases: [String; 2],
}

fn check_flags(args: &Args, admin_url: &str) -> Result<Plan, StepError> {
    let prefix = &args.sandbox_prefix;
    pg_admin::check_sandbox_prefix(prefix)?;
    let admin = AdminUrl::parse(admin_url, NAME)?;
    check_database(
        "--database",
        &args.database,
        prefix,
        admin.database(),
        "drop",
    )?;
    let owner = args.owner.clone().unwrap_or_else(|| args.database.clone());
    check_owner_role("--owner", &owner, prefix, admin.user())?;
    let databases = [
        args.database.clone(),
        format!("{}{RESTORING_SUFFIX}", args.database),
    ];
    Ok(Plan {
        admin,
        owner,
        databases,
    })
}

/// What was found, checked before anything is dropped.
struct Found {
    databases: Vec<(String, DatabaseInfo)>,
    role: bool,
}

async fn drop_db(args: Args, ctx: Context) -> Result<(), StepError> {
    let admin_url = args.admin_url.resolve("--admin-url", &args.vault).await?;
    let plan = check_flags(&args, admin_url.expose())?;
    drop(admin_url);
    let outputs = &ctx.outputs;
    outputs.set("database", &args.database)?;

    let mut admin = Admin::connect(&plan.admin.options).await?;
    // restore-db holds this lock while it restores: a restore still running (a create that was
    // cancelled, its pod not yet gone) finishes or dies before its database is dropped.
    if !admin.try_lock(&args.database).await? {
        tracing::info!(
            "waiting for the restore of {} to end (restore-db holds its lock)",
            args.database
        );
        admin.lock(&args.database).await?;
    }
    let found = survey(&mut admin, &plan).await?;

    let connections: i64 = found.databases.iter().map(|(_, i)| i.connections).sum();
    for (name, info) in &found.databases {
        let size = info
            .size_bytes
            .map(|b| format!("{b} bytes"))
            .unwrap_or_else(|| "size unknown".into());
        if args.dry_run {
            tracing::info!(
                "dry run: would drop database {name} (owner {}, {size}, {} sessions closed)",
                info.owner,
                info.connections
            );
        } else {
            admin.drop_database(name).await?;
            tracing::info!(
                "dropped database {name} (owner {}, {size}, {} sessions closed)",
                info.owner,
                info.connections
            );
        }
    }
    if found.databases.is_empty() {
        tracing::info!(
            "no database {} (nor a restore's leftover): nothing to drop",
            args.database
        );
    }
    if found.role {
        if args.dry_run {
            tracing::info!("dry run: would drop role {}", plan.owner);
        } else {
            admin.drop_role(&plan.owner).await.map_err(|e| {
                StepError::new(
                    e.kind,
                    format!(
                        "{e}; the role still owns objects or holds privileges in another \
                         database: REASSIGN OWNED BY or DROP OWNED BY {} there, then re-run",
                        plan.owner
                    ),
                )
            })?;
            tracing::info!("dropped role {}", plan.owner);
        }
    } else {
        tracing::info!("no role {}: nothing to drop", plan.owner);
    }
    let done = |found: bool| {
        if found && !args.dry_run {
            "true"
        } else {
            "false"
        }
    };
    outputs.set("dropped", done(!found.databases.is_empty()))?;
    outputs.set("role-dropped", done(found.role))?;
    outputs.set(
        "connections",
        &if args.dry_run { 0 } else { connections }.to_string(),
    )
}

/// Finds the databases and the role, and refuses (before anything changes) what is not a
/// sandbox's: a template, a database another role owns, a role restore-db did not create.
async fn survey(admin: &mut Admin, plan: &Plan) -> Result<Found, StepError> {
    let mut databases = Vec::new();
    for name in &plan.databases {
        let Some(info) = admin.database_info(name).await? else {
            continue;
        };
        if info.is_template {
            return Err(StepError::precondition(format!(
                "database {name} is a template (restore-db --template-db): the sandboxes are \
                 copies of it; drop-db drops sandboxes, never their template"
            )));
        }
        if info.owner != plan.owner {
            return Err(StepError::precondition(format!(
                "database {name} is owned by {}, not by the sandbox's role {}: restore-db did not \
                 create it for this sandbox; refusing to drop it",
                info.owner, plan.owner
            )));
        }
        databases.push((name.clone(), info));
    }
    let role = admin.role_exists(&plan.owner).await?;
    if role {
        let comment = admin.role_comment(&plan.owner).await?;
        if comment.as_deref() != Some(ROLE_MARKER) {
            return Err(StepError::precondition(format!(
                "role {}: restore-db did not create it (no comment {ROLE_MARKER:?}): refusing to \
                 drop a role that was there before",
                plan.owner
            )));
        }
        let powers = admin.role_powers(&plan.owner).await?;
        if !powers.is_empty() {
            return Err(StepError::precondition(format!(
                "role {} has rights beyond its own database ({}): not a sandbox's owner as \
                 restore-db makes them; refusing to drop it",
                plan.owner,
                powers.join(", ")
            )));
        }
    }
    Ok(Found { databases, role })
}
