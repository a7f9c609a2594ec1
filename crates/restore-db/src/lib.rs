//! restore-db: restores the newest nightly backup of the integration database from GCS into a
//! fresh sandbox database (seeds/000 step 6).
//!
//! The backup streams from GCS into the server while it downloads (gzip undone on the way):
//! plain dumps are split into statements and COPY blocks here and run through sqlx, so the image
//! needs no psql; custom-format dumps go to `pg_restore` when it is on PATH. The restore runs
//! under a temporary name (`<database>_restoring`) and is renamed when complete, so the final
//! name never holds half a database; a lock per database keeps two runs apart, and a re-run
//! after a crash drops the leftover and starts again.

mod backup;
mod load;
mod owner;
mod restore;
mod statement;

use std::ffi::OsString;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use gcs::{Gcs, Location};
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;
use step_kit::{CommonArgs, Context, SecretRef, StepArgs, StepError, VaultFlags};

pub use backup::{timestamp_in_name, BACKUP_SUFFIXES};
pub use pg_admin::RESTORING_SUFFIX;

use crate::backup::Backup;
use crate::owner::{Endpoint, SecretPath};
use crate::restore::{Libpq, Provenance, Restorer};
use pg_admin::{check_database, check_identifier, check_owner_role, quoted, Admin, AdminUrl};

pub const NAME: &str = "restore-db";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &[
    "backup", "database", "restored", "tables", "rows", "seconds",
];

const EXAMPLE: &str = "\
Example:
  restore-db --backup gs://acme-backups/integration/ --admin-url env:ADMIN_DATABASE_URL \\
    --database sbx_pr_42 --owner-secret vault:secret/sandboxes/sbx-pr-42/db \\
    --vault-addr https://vault.example:8200 --vault-k8s-role sandbox-steps
  # restores the newest backup under integration/ into sbx_pr_42, owned by role sbx_pr_42,
  # whose credentials go to the secret; outputs: backup=gs://acme-backups/integration/
  # app-2024-05-01.sql.gz database=sbx_pr_42 restored=true tables=41 rows=1250000 seconds=38
  # (a re-run: restored=false, nothing changed)

Backups: plain SQL from pg_dump (.sql, or gzip-compressed .sql.gz) is restored natively;
custom format (pg_dump -Fc) through pg_restore, which must then be on PATH. GRANT/REVOKE and
subscriptions of the integration server are left out; OWNER TO names the sandbox's owner.

Exit codes: 0 restored, or already there (--if-exists skip); 2 invalid flags or names; 3 the
database exists (--if-exists fail), a name outside --sandbox-prefix, no backup found, a dump
the server refuses (the statement's line is shown), access refused; 4 GCS, the server or Vault
unreachable, or the deadline: a re-run starts the restore again.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IfExists {
    /// Exit 3.
    Fail,
    /// Leave it as it is: exit 0 with restored=false.
    Skip,
    /// Restore anew, then replace it (only databases inside --sandbox-prefix).
    Recreate,
}

/// Restore the newest nightly backup from GCS into a fresh sandbox database.
///
/// `--backup` names one object, or a folder (ending in `/`) whose newest backup is taken: by the
/// timestamp in the names when every name carries one, else by update time. The database is
/// created (owned by `--owner`, a role created when missing), the backup streamed into it, and
/// only then given its name. With `--template-db`, the backup is restored once into that
/// template (kept while the backup is unchanged) and each sandbox database is a copy of it.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    /// `gs://BUCKET/OBJECT`, or `gs://BUCKET/PREFIX/` for the newest backup under the prefix
    /// (objects ending in .sql, .sql.gz, .dump, .pgdump or .backup).
    #[arg(long, value_name = "URL", value_parser = parse_location)]
    pub backup: Location,

    /// The admin connection, `postgres://USER:PASSWORD@HOST:PORT/DATABASE`, as a reference:
    /// env:NAME, file:/path or vault:<mount>/<path>#<key> (a literal only from ADMIN_URL). The
    /// user needs CREATEDB and CREATEROLE (or superuser).
    #[arg(long, value_name = "SECRET_REF")]
    pub admin_url: SecretRef,

    /// The sandbox database to create, e.g. sbx_pr_42: a lower-case identifier starting with
    /// --sandbox-prefix.
    #[arg(long, value_name = "NAME")]
    pub database: String,

    /// The role owning the database and everything restored into it (created when missing,
    /// under --sandbox-prefix; default: the database's name). The dump runs as this role, never
    /// as the admin.
    #[arg(long, value_name = "ROLE")]
    pub owner: Option<String>,

    /// Where to keep the owner's credentials: `vault:<mount>/<path>` (KV v2; keys username,
    /// password, host, port, database, url). Written once with a generated password; a re-run
    /// keeps it.
    #[arg(long, value_name = "VAULT_PATH", value_parser = parse_secret_path)]
    pub owner_secret: Option<SecretPath>,

    /// When the database already exists.
    #[arg(long, value_enum, default_value_t = IfExists::Skip)]
    pub if_exists: IfExists,

    /// Connections loading at once (1-16): with more than 1, the rows of each table are split
    /// over that many connections and index builds run in parallel. For servers with cores to
    /// spare.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub jobs: u16,

    /// Restore the backup once into this database (inside --sandbox-prefix; kept while the
    /// backup is unchanged) and create the sandbox database as a copy of it: seconds, whatever
    /// the size.
    #[arg(long, value_name = "NAME")]
    pub template_db: Option<String>,

    /// Where --owner-secret may write: only paths strictly below this one, in the same mount (as
    /// purge-secrets' --root, which removes them).
    #[arg(long, value_name = "PATH", default_value = "sandboxes")]
    pub owner_secret_root: String,

    /// Extensions PostgreSQL does not mark trusted (e.g. postgis) that the dump may create: its
    /// `CREATE EXTENSION` and `COMMENT ON EXTENSION` for these run as the admin (plain dumps).
    /// Every other statement runs as the owner. Allow only extensions you trust.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub extensions_as_admin: Vec<String>,

    /// Masking rules (a YAML file, as mask-db's --rules): applied to the restored data before the
    /// database gets its name, so it never holds unmasked personal data under its name; with
    /// --template-db, once in the template (every copy is masked; the template is restored
    /// anew when the rules or the key change). Strict, as mask-db: a personal-looking column
    /// without a rule fails the restore.
    #[arg(long, value_name = "FILE")]
    pub mask_rules: Option<std::path::PathBuf>,

    /// The masking key, a reference (env:NAME, file:/path, vault:<mount>/<path>#<key>); needed
    /// when a rule is hash, email, name or phone.
    #[arg(long, value_name = "SECRET_REF")]
    pub mask_key: Option<SecretRef>,

    /// With --mask-rules: only log personal-looking columns no rule covers (strict mode off).
    #[arg(long)]
    pub mask_allow_unmasked: bool,

    /// The naming scheme of sandbox databases: only names starting with it are created, replaced
    /// or dropped.
    #[arg(long, value_name = "PREFIX", default_value = "sbx_")]
    pub sandbox_prefix: String,

    /// Choose the backup and check the database, change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// A GCS emulator's endpoint (`http://127.0.0.1:4443`, or `host:port`), used with anonymous
    /// credentials; without it, Google's endpoint with Application Default Credentials.
    #[arg(long, value_name = "URL", env = gcs::EMULATOR_ENV)]
    pub storage_emulator_host: Option<String>,

    #[command(flatten)]
    pub vault: VaultFlags,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl StepArgs for Args {
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(45 * 60);
    /// One thread reads and splits the dump while the other feeds the connections.
    const WORKER_THREADS: usize = 2;
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

fn parse_location(s: &str) -> Result<Location, String> {
    s.parse()
}

fn parse_secret_path(s: &str) -> Result<SecretPath, String> {
    s.parse()
}

/// Runs the step with `argv` (the first item is the program name); returns the exit code.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> u8 {
    step_kit::run_from(NAME, argv, restore_db)
}

/// The masking applied to restored data before it gets its name (`--mask-rules`).
struct Masking {
    loaded: masking::Loaded,
    allow_unmasked: bool,
}

async fn masking_of(args: &Args) -> Result<Option<Masking>, StepError> {
    let key = args
        .mask_key
        .as_ref()
        .filter(|r| !matches!(r, SecretRef::Literal(empty) if empty.expose().is_empty()));
    let Some(rules) = args
        .mask_rules
        .as_ref()
        .filter(|p| !p.as_os_str().is_empty())
    else {
        if key.is_some() {
            return Err(StepError::invalid("--mask-key without --mask-rules"));
        }
        return Ok(None);
    };
    let loaded = masking::load(rules, "--mask-rules", key, "--mask-key", &args.vault).await?;
    Ok(Some(Masking {
        loaded,
        allow_unmasked: args.mask_allow_unmasked,
    }))
}

/// Masks a restored database, connected as the role that restored it.
async fn mask_restored(
    admin: &Admin,
    database: &str,
    login: &restore::Login,
    masking: &Masking,
) -> Result<(), StepError> {
    tracing::info!(
        "masking {database} before it gets its name ({})",
        masking.loaded.fingerprint
    );
    let options = admin
        .options_for(database)
        .username(&login.role)
        .password(login.password.expose());
    let mut conn = sqlx::postgres::PgConnection::connect_with(&options)
        .await
        .map_err(|e| pg_admin::sql_error(&format!("connect to {database} to mask it"), e))?;
    let result = masking::mask(
        &mut conn,
        &masking::Options {
            rules: &masking.loaded.rules,
            key: masking.loaded.key.as_ref().map(|k| k.expose()),
            allow_unmasked: masking.allow_unmasked,
            batch_rows: 50_000,
            dry_run: false,
        },
    )
    .await;
    let _ = conn.close().await;
    result.map(|_| ())
}

/// The checked flags.
struct Plan {
    admin: PgConnectOptions,
    libpq: Libpq,
    owner: String,
}

fn check_flags(args: &Args, admin_url: &str) -> Result<Plan, StepError> {
    let prefix = &args.sandbox_prefix;
    pg_admin::check_sandbox_prefix(prefix)?;
    let admin_url = AdminUrl::parse(admin_url, NAME)?;
    let admin_database = admin_url.database().to_owned();
    let verb = "restore into";
    check_database("--database", &args.database, prefix, &admin_database, verb)?;
    if let Some(template) = &args.template_db {
        check_database("--template-db", template, prefix, &admin_database, verb)?;
        if template == &args.database {
            return Err(StepError::precondition(format!(
                "--template-db {template} is --database: the template must be a database of its \
                 own"
            )));
        }
        // The template's objects belong to a role named after it.
        check_owner_role("--template-db", template, prefix, admin_url.user())?;
    }
    let owner = args.owner.clone().unwrap_or_else(|| args.database.clone());
    check_owner_role("--owner", &owner, prefix, admin_url.user())?;
    if args.template_db.as_deref() == Some(owner.as_str()) {
        return Err(StepError::precondition(format!(
            "--owner {owner}: the template's own role (objects in --template-db belong to a role \
             named after it)"
        )));
    }
    if let Some(secret) = &args.owner_secret {
        if !vault::is_valid_path(&args.owner_secret_root) {
            return Err(StepError::invalid(format!(
                "--owner-secret-root {}: must be a relative path of [A-Za-z0-9._-] segments",
                step_kit::escape_untrusted(&args.owner_secret_root)
            )));
        }
        if !vault::is_strictly_below(&secret.path, &args.owner_secret_root) {
            return Err(StepError::precondition(format!(
                "--owner-secret {secret}: not below --owner-secret-root {}: restore-db writes \
                 credentials only there",
                args.owner_secret_root
            )));
        }
    }
    for name in &args.extensions_as_admin {
        check_identifier("--extensions-as-admin", name, 63)?;
    }
    Ok(Plan {
        libpq: Libpq {
            url: admin_url.without_password,
        },
        admin: admin_url.options,
        owner,
    })
}

async fn restore_db(args: Args, ctx: Context) -> Result<(), StepError> {
    let started = Instant::now();
    let admin_url = args.admin_url.resolve("--admin-url", &args.vault).await?;
    let plan = check_flags(&args, admin_url.expose())?;
    drop(admin_url);
    let masking = masking_of(&args).await?;

    let mut settings = gcs::Settings::from_env();
    settings.emulator = args
        .storage_emulator_host
        .clone()
        .filter(|h| !h.trim().is_empty());
    let gcs = Gcs::connect(&settings).await?;
    let policy = ctx.retry_policy();
    let backup = backup::choose(&gcs, &args.backup, &policy).await?;
    tracing::info!(
        "backup: {} ({} bytes, generation {}): {}",
        backup.url(),
        backup.entry.size,
        backup.entry.generation,
        backup.reason
    );
    let outputs = &ctx.outputs;
    outputs.set("backup", &backup.url())?;
    outputs.set("database", &args.database)?;

    // A refused or reset connection (a server restarting, a proxy starting beside the pod) is
    // retried within the deadline, as every step retries its network calls.
    let mut admin = step_kit::retry(
        &policy,
        "connect to the database server",
        |e: &StepError| e.kind == step_kit::ErrorKind::Transient,
        || Admin::connect(&plan.admin),
    )
    .await?;
    admin.lock(&args.database).await?;
    if admin.database_exists(&args.database).await? {
        match args.if_exists {
            IfExists::Fail => {
                return Err(StepError::precondition(format!(
                    "database {} exists (--if-exists fail); --if-exists skip keeps it, \
                     recreate restores it anew",
                    args.database
                )))
            }
            IfExists::Skip => {
                let comment = admin.database_comment(&args.database).await?;
                let known = comment.as_deref().and_then(Provenance::parse);
                tracing::info!(
                    "database {} exists: kept as it is (--if-exists skip){}",
                    args.database,
                    known
                        .as_ref()
                        .map(|p| format!("; it holds {} generation {}", p.backup, p.generation))
                        .unwrap_or_default()
                );
                let (tables, rows) = known.map_or((0, 0), |p| (p.tables, p.rows));
                return finish(&ctx, false, tables, rows, started);
            }
            IfExists::Recreate => tracing::info!(
                "database {} exists: restoring anew, then replacing it (--if-exists recreate)",
                args.database
            ),
        }
    }
    if args.dry_run {
        tracing::info!(
            "dry run: would restore {} into {}{} as {}{}, then rename it to {}",
            backup.url(),
            args.database,
            RESTORING_SUFFIX,
            plan.owner,
            args.template_db
                .as_deref()
                .map(|t| format!(" (through template {t})"))
                .unwrap_or_default(),
            args.database
        );
        if let Some(m) = &masking {
            tracing::info!(
                "dry run: would mask it first with {} rule(s) ({})",
                m.loaded.rules.len(),
                m.loaded.fingerprint
            );
        }
        return finish(&ctx, false, 0, 0, started);
    }

    let endpoint = Endpoint {
        host: plan.admin.get_host().to_owned(),
        port: plan.admin.get_port(),
    };
    let secret = args.owner_secret.as_ref().map(|p| (p, &args.vault));
    let login = owner::ensure_owner(
        &mut admin,
        &ctx,
        &plan.owner,
        secret,
        &endpoint,
        &args.database,
    )
    .await?;

    let restorer = Restorer {
        gcs,
        policy,
        jobs: usize::from(args.jobs),
        libpq: plan.libpq.clone(),
        extensions_as_admin: args.extensions_as_admin.clone(),
    };
    let temp = format!("{}{RESTORING_SUFFIX}", args.database);
    // A leftover of a run that died (we hold the lock: no live run uses it).
    admin.drop_database(&temp).await?;
    let restored = match &args.template_db {
        None => {
            create_database(&mut admin, &temp, &plan.owner, None).await?;
            let restored = async {
                let mut restored = restorer.restore(&admin, &temp, &backup, &login).await?;
                if let Some(masking) = &masking {
                    mask_restored(&admin, &temp, &login, masking).await?;
                    restored.masked = Some(masking.loaded.fingerprint.clone());
                }
                Ok::<_, StepError>(restored)
            }
            .await;
            match restored {
                Ok(p) => p,
                Err(e) => {
                    // Best effort: a re-run drops it anyway.
                    let _ = admin.drop_database(&temp).await;
                    return Err(e);
                }
            }
        }
        Some(template) => {
            let provenance = ensure_template(
                &mut admin,
                &ctx,
                &restorer,
                template,
                &backup,
                &endpoint,
                masking.as_ref(),
            )
            .await?;
            clone_template(&mut admin, template, &temp, &plan.owner).await?;
            provenance
        }
    };
    if admin.database_exists(&args.database).await? {
        admin.drop_database(&args.database).await?;
    }
    admin.rename_database(&temp, &args.database).await?;
    admin
        .comment_database(&args.database, &restored.comment())
        .await?;
    tracing::info!(
        "restored {} into {}: {} tables, {} rows",
        backup.url(),
        args.database,
        restored.tables,
        restored.rows
    );
    let _ = sqlx::Connection::close(admin.conn).await;
    finish(&ctx, true, restored.tables, restored.rows, started)
}

fn finish(
    ctx: &Context,
    restored: bool,
    tables: u64,
    rows: u64,
    started: Instant,
) -> Result<(), StepError> {
    let outputs = &ctx.outputs;
    outputs.set("restored", if restored { "true" } else { "false" })?;
    outputs.set("tables", &tables.to_string())?;
    outputs.set("rows", &rows.to_string())?;
    outputs.set(
        "seconds",
        &format!("{:.1}", started.elapsed().as_secs_f64()),
    )?;
    Ok(())
}

async fn create_database(
    admin: &mut Admin,
    name: &str,
    owner: &str,
    template: Option<&str>,
) -> Result<(), StepError> {
    let mut sql = format!("CREATE DATABASE {}", quoted(name));
    match template {
        // FILE_COPY: a copy of the files, not a replay of every page through the WAL; for a
        // template of hundreds of MB, seconds instead of minutes.
        Some(t) => sql.push_str(&format!(" TEMPLATE {} STRATEGY FILE_COPY", quoted(t))),
        // template0: nothing of template1's local additions, as pg_dump's docs ask.
        None => sql.push_str(" TEMPLATE template0"),
    }
    sql.push_str(&format!(" OWNER {}", quoted(owner)));
    admin.execute(sql).await
}

/// Restores the backup into the template when it holds another backup (or nothing), then
/// returns what the template holds.
async fn ensure_template(
    admin: &mut Admin,
    ctx: &Context,
    restorer: &Restorer,
    template: &str,
    backup: &Backup,
    endpoint: &Endpoint,
    masking: Option<&Masking>,
) -> Result<Provenance, StepError> {
    admin.lock(template).await?;
    let source = Provenance::source(&backup.url(), backup.entry.generation);
    let masked = masking.map(|m| m.loaded.fingerprint.clone());
    if let Some(comment) = admin.database_comment(template).await? {
        if let Some(p) = Provenance::parse(&comment) {
            if Provenance::source(&p.backup, p.generation) == source && p.masked == masked {
                tracing::info!("template {template} holds this backup already: copying it");
                return Ok(p);
            }
        }
    }
    tracing::info!(
        "template {template}: restoring {} into it first",
        backup.url()
    );
    // The template's objects belong to a role named after it (the dump runs as that role), so
    // each copy can hand them to its own owner (REASSIGN OWNED) without touching anything
    // outside that copy. It logs in only while the template is restored.
    let login = owner::ensure_owner(admin, ctx, template, None, endpoint, template).await?;
    let temp = format!("{template}{RESTORING_SUFFIX}");
    admin.drop_database(&temp).await?;
    create_database(admin, &temp, template, None).await?;
    let restored = async {
        let mut restored = restorer.restore(admin, &temp, backup, &login).await?;
        if let Some(masking) = masking {
            mask_restored(admin, &temp, &login, masking).await?;
            restored.masked = Some(masking.loaded.fingerprint.clone());
        }
        Ok::<_, StepError>(restored)
    }
    .await;
    admin
        .execute(format!(
            "ALTER ROLE {} NOLOGIN PASSWORD NULL",
            quoted(template)
        ))
        .await?;
    let restored = match restored {
        Ok(p) => p,
        Err(e) => {
            let _ = admin.drop_database(&temp).await;
            return Err(e);
        }
    };
    admin.drop_database(template).await?;
    admin.rename_database(&temp, template).await?;
    admin
        .comment_database(template, &restored.comment())
        .await?;
    // Connections would block every copy; restore-db never needs one to it again.
    admin
        .execute(format!(
            "ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
            quoted(template)
        ))
        .await?;
    Ok(restored)
}

async fn clone_template(
    admin: &mut Admin,
    template: &str,
    temp: &str,
    owner: &str,
) -> Result<(), StepError> {
    create_database(admin, temp, owner, Some(template)).await?;
    let new_owner = quoted(owner);
    let mut conn = sqlx::postgres::PgConnection::connect_with(&admin.options_for(temp))
        .await
        .map_err(|e| pg_admin::sql_error("connect to the copy", e))?;
    let result = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "REASSIGN OWNED BY {} TO {new_owner}",
        quoted(template)
    )))
    .execute(&mut conn)
    .await;
    let _ = sqlx::Connection::close(conn).await;
    if let Err(e) = result {
        let _ = admin.drop_database(temp).await;
        return Err(pg_admin::sql_error(
            "hand the copy's objects to its owner",
            e,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provenance_round_trips_through_the_comment() {
        let p = Provenance {
            backup: "gs://acme-backups/integration/app-2024-05-01.sql.gz".into(),
            generation: 1714528800123456,
            tables: 41,
            rows: 1250000,
            masked: None,
        };
        assert_eq!(Provenance::parse(&p.comment()), Some(p.clone()));
        let masked = Provenance {
            masked: Some("rules 0123456789abcdef key fedcba9876543210".into()),
            ..p.clone()
        };
        assert_eq!(Provenance::parse(&masked.comment()), Some(masked));
        assert_eq!(
            Provenance::parse("a database comment of someone else"),
            None
        );
    }

    #[test]
    fn libpq_urls_keep_the_admin_urls_server_without_its_password() {
        let admin = AdminUrl::parse(
            "postgres://admin:s%40cret@db.internal:6432/postgres?sslmode=require",
            NAME,
        )
        .unwrap();
        let libpq = Libpq {
            url: admin.without_password,
        };
        assert_eq!(
            libpq.url_for("sbx_pr_42", "sbx_pr_42_restoring"),
            "postgres://sbx_pr_42@db.internal:6432/sbx_pr_42_restoring?sslmode=require"
        );
    }
}
