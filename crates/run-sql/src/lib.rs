//! run-sql: runs SQL scripts (the pull request's migrations, fixtures) against a sandbox
//! database, after restore-db. Each file runs in one transaction with its ledger row
//! (`sandbox_steps.applied_scripts`: name, checksum, time), so a file either applied whole and
//! is recorded, or left nothing; a re-run skips what ran. Statements are split as psql splits
//! them, by the splitter restore-db uses for dumps (`sql-script`).

mod source;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::{Duration, Instant};

use clap::Parser;
use pg_admin::{sql_error, SandboxUrl};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row};
use step_kit::{
    escape_untrusted, CommonArgs, Context, FlagProblems, SecretRef, StepArgs, StepError,
};

use crate::source::{Script, Source};

pub const NAME: &str = "run-sql";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &[
    "database",
    "applied",
    "skipped",
    "statements",
    "scripts",
    "seconds",
];

/// The comment that makes a file run statement by statement, outside a transaction.
pub const NO_TRANSACTION_MARKER: &str = "-- run-sql: no-transaction";

const EXAMPLE: &str = "\
Example:
  run-sql --database-url vault:secret/sandboxes/sbx-pr-42/db#url \\
    --repo https://git.example/acme/infra.git --from-git sandbox/pr-42:db/migrations \\
    --var tenant=acme --vault-addr https://vault.example:8200
  # runs db/migrations/*.sql of the environment branch in name order, each in one transaction,
  # skipping those the ledger says ran; outputs: database=sbx_pr_42 applied=2 skipped=14
  # statements=37 scripts=[{\"name\":\"migrations/0015_orders.sql\",\"status\":\"applied\"},...]

Scripts: plain SQL as psql reads it (dollar-quoted bodies, E'' strings, comments; COPY ... FROM
stdin with its rows); no psql meta-commands (\\i, \\set). Variables are session settings, never
text spliced into SQL: --var tenant=acme is read as current_setting('var.tenant'). A file whose
first lines hold `-- run-sql: no-transaction` runs statement by statement outside a transaction
(for CREATE INDEX CONCURRENTLY, ALTER TYPE ... ADD VALUE); a failure there leaves the statements
before it applied, and the file is not recorded, so it runs again whole: write it re-runnable
(IF NOT EXISTS).

Exit codes: 0 every script applied or skipped; 2 invalid flags; 3 a database outside
--sandbox-prefix, a script the server refuses (file and line shown; nothing of that file stays
unless it is no-transaction), a psql meta-command, an applied script whose content changed
(unless --rerun-changed), no scripts at the source; 4 the server, GCS, git or Vault
unreachable, or the deadline.";

/// Run SQL scripts against a sandbox database, once each.
///
/// The scripts come from one source: `--from-git BRANCH:PATH` (a file, or the `.sql` files of a
/// directory, of a branch of `--repo`, read without a checkout), or `--from` (a local path, or
/// `gs://BUCKET/OBJECT`, or `gs://BUCKET/PREFIX/` for the `.sql` objects directly under it).
/// Directories run in name order (`0001_init.sql`, `0002_orders.sql`). The ledger names a
/// script by its directory's last component and its file name (`migrations/0002_orders.sql`),
/// so the same scripts read from git or GCS count as the same.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    /// The sandbox database's connection as its owner, a reference: env:NAME, file:/path or
    /// vault:<mount>/<path>#<key> (restore-db's --owner-secret holds it under `url`). Its
    /// database must be inside --sandbox-prefix.
    #[arg(long, value_name = "SECRET_REF")]
    pub database_url: SecretRef,

    /// The scripts on a branch of --repo: `BRANCH:PATH`, a file or a directory.
    #[arg(long, value_name = "BRANCH:PATH")]
    pub from_git: Option<String>,

    /// The repository --from-git reads (HTTPS or SSH, with the git access flags).
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,

    /// The scripts at a local path (file or directory) or in GCS (`gs://BUCKET/OBJECT`,
    /// `gs://BUCKET/PREFIX/`).
    #[arg(long, value_name = "PATH_OR_GS_URL")]
    pub from: Option<String>,

    /// `NAME=VALUE`, readable in the scripts as `current_setting('var.NAME')` (NAME: lower-case
    /// letters, digits, `_`; VALUE any text without a newline). Repeat the flag, or separate
    /// with newlines.
    #[arg(long, value_name = "NAME=VALUE", value_delimiter = '\n')]
    pub var: Vec<String>,

    /// Run again a script whose content changed since it was applied (default: exit 3: an
    /// applied migration edited afterwards is usually a mistake).
    #[arg(long)]
    pub rerun_changed: bool,

    /// The naming scheme of sandbox databases: scripts run only in databases starting with it.
    #[arg(long, value_name = "PREFIX", default_value = "sbx_")]
    pub sandbox_prefix: String,

    /// Read the scripts and the ledger, say what would run, run nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// A GCS emulator's endpoint for gs:// sources (`http://127.0.0.1:4443`); without it,
    /// Google's with Application Default Credentials.
    #[arg(long, value_name = "URL", env = gcs::EMULATOR_ENV)]
    pub storage_emulator_host: Option<String>,

    #[command(flatten)]
    pub git: git_remote::GitFlags,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl StepArgs for Args {
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

/// Runs the step with `argv` (the first item is the program name); returns the exit code.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> u8 {
    step_kit::run_from(NAME, argv, run_sql)
}

/// A variable's name: what a custom setting's second part may be, lower case.
fn check_var(arg: &str) -> Result<(String, String), String> {
    let (name, value) = arg.split_once('=').ok_or("must be NAME=VALUE")?;
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err("NAME: 1 to 63 of a-z, 0-9 and _, not starting with a digit".into());
    }
    if value.contains('\0') {
        return Err("VALUE: no NUL character (PostgreSQL cannot hold one in text)".into());
    }
    Ok((name.to_owned(), value.to_owned()))
}

fn check_flags(args: &Args) -> Result<(Source, Vec<(String, String)>), StepError> {
    let mut problems = FlagProblems::default();
    let mut vars = BTreeMap::new();
    for arg in args.var.iter().filter(|v| !v.is_empty()) {
        match check_var(arg) {
            Ok((name, value)) => {
                if vars.insert(name.clone(), value).is_some() {
                    problems.push(format!("--var {name}: given twice"));
                }
            }
            Err(e) => problems.check("--var", arg, Err(e)),
        }
    }
    let from = args.from.as_deref().filter(|s| !s.is_empty());
    let from_git = args.from_git.as_deref().filter(|s| !s.is_empty());
    let repo = args.repo.as_deref().filter(|s| !s.is_empty());
    let source = match (from, from_git) {
        (Some(_), Some(_)) | (None, None) => {
            problems.push("give the scripts' source: exactly one of --from and --from-git");
            None
        }
        (Some(from), None) => match Source::parse_from(from) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.check("--from", from, Err(e));
                None
            }
        },
        (None, Some(arg)) => {
            let parsed = arg
                .split_once(':')
                .ok_or_else(|| "must be BRANCH:PATH".to_owned())
                .and_then(|(branch, path)| {
                    naming::check_branch_name(branch)?;
                    naming::check_repo_path(path)?;
                    Ok((branch.to_owned(), path.to_owned()))
                });
            match (parsed, repo) {
                (Ok((branch, path)), Some(repo)) => Some(Source::Git {
                    repo: repo.to_owned(),
                    branch,
                    path,
                }),
                (Ok(_), None) => {
                    problems.push("--from-git needs --repo");
                    None
                }
                (Err(e), _) => {
                    problems.check("--from-git", arg, Err(e));
                    None
                }
            }
        }
    };
    problems.into_result()?;
    Ok((source.expect("checked above"), vars.into_iter().collect()))
}

/// The ledger's row of a script.
struct Applied {
    checksum: String,
}

/// What happens to one script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Run,
    Skip,
    Rerun,
}

impl Decision {
    fn label(self) -> &'static str {
        match self {
            Decision::Run => "applied",
            Decision::Skip => "skipped",
            Decision::Rerun => "re-applied",
        }
    }
}

fn checksum(content: &[u8]) -> String {
    Sha256::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn run_sql(args: Args, ctx: Context) -> Result<(), StepError> {
    let started = Instant::now();
    let (source, vars) = check_flags(&args)?;
    let url = args
        .database_url
        .resolve("--database-url", &args.git.vault)
        .await?;
    let target = SandboxUrl::parse(url.expose(), &args.sandbox_prefix, "run scripts in", NAME)?;
    drop(url);
    let database = target.database.clone();
    ctx.outputs.set("database", &database)?;

    let mut settings = gcs::Settings::from_env();
    settings.emulator = args
        .storage_emulator_host
        .clone()
        .filter(|h| !h.trim().is_empty());
    let scripts = source.read(&args.git, &settings, &ctx).await?;
    if scripts.is_empty() {
        return Err(StepError::precondition(format!(
            "no .sql scripts at {source}: nothing to run (is the path right?)"
        )));
    }
    tracing::info!("{} script(s) at {source}", scripts.len());

    let mut conn = target.connect(&ctx.retry_policy()).await?;
    // One run at a time per database: two would both see a script as not applied.
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('sandbox-steps/run-sql', 0))")
        .execute(&mut conn)
        .await
        .map_err(|e| sql_error("take the run-sql lock", e))?;
    let ledger = read_ledger(&mut conn).await?;

    let mut plan = Vec::new();
    let mut changed = Vec::new();
    for script in &scripts {
        let sum = checksum(&script.content);
        let decision = match ledger.get(&script.name) {
            None => Decision::Run,
            Some(applied) if applied.checksum == sum => Decision::Skip,
            Some(_) if args.rerun_changed => Decision::Rerun,
            Some(_) => {
                changed.push(script.name.clone());
                Decision::Skip
            }
        };
        plan.push((script, sum, decision));
    }
    if !changed.is_empty() {
        return Err(StepError::precondition(format!(
            "applied script(s) changed since they ran: {} (the ledger keeps their checksum); \
             nothing was run. Add a new script instead, or pass --rerun-changed to run them again",
            changed.join(", ")
        )));
    }

    if !args.dry_run && plan.iter().any(|(_, _, d)| *d != Decision::Skip) {
        prepare_session(&mut conn, &vars).await?;
    }
    let mut statements = 0u64;
    let mut report = Vec::new();
    let (mut applied, mut skipped) = (0u64, 0u64);
    for (script, sum, decision) in &plan {
        if *decision == Decision::Skip {
            tracing::info!("{}: applied before, skipped", script.name);
            skipped += 1;
            report.push(serde_json::json!({"name": script.name, "status": "skipped"}));
            continue;
        }
        if args.dry_run {
            tracing::info!("dry run: would run {}", script.name);
            report.push(serde_json::json!({"name": script.name, "status": "would run"}));
            continue;
        }
        step_kit::doing(format!("running {}", script.name));
        let ran = run_script(&mut conn, script, sum).await?;
        tracing::info!(
            "{}: {} ({ran} statements{})",
            script.name,
            decision.label(),
            if script.no_transaction() {
                ", no transaction"
            } else {
                ""
            }
        );
        statements += ran;
        applied += 1;
        report.push(serde_json::json!({"name": script.name, "status": decision.label()}));
    }
    let _ = conn.close().await;
    let outputs = &ctx.outputs;
    outputs.set("applied", &applied.to_string())?;
    outputs.set("skipped", &skipped.to_string())?;
    outputs.set("statements", &statements.to_string())?;
    outputs.set_json("scripts", &serde_json::Value::Array(report))?;
    outputs.set(
        "seconds",
        &format!("{:.1}", started.elapsed().as_secs_f64()),
    )?;
    Ok(())
}

const LEDGER: &str = "sandbox_steps.applied_scripts";

async fn read_ledger(conn: &mut PgConnection) -> Result<BTreeMap<String, Applied>, StepError> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('sandbox_steps.applied_scripts') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| sql_error("look for the ledger", e))?;
    if !exists {
        return Ok(BTreeMap::new());
    }
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT name, checksum FROM {LEDGER}"
    )))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| sql_error("read the ledger", e))?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get(0), Applied { checksum: r.get(1) }))
        .collect())
}

/// Before the first script runs: the ledger table, created when missing, and the variables as
/// this session's settings (`var.NAME`, bound, never spliced).
async fn prepare_session(
    conn: &mut PgConnection,
    vars: &[(String, String)],
) -> Result<(), StepError> {
    for (name, value) in vars {
        sqlx::query("SELECT set_config('var.' || $1, $2, false)")
            .bind(name)
            .bind(value)
            .execute(&mut *conn)
            .await
            .map_err(|e| sql_error(&format!("set --var {name}"), e))?;
    }
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS sandbox_steps; \
         CREATE TABLE IF NOT EXISTS {LEDGER} (name text PRIMARY KEY, checksum text NOT NULL, \
           statements integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )))
    .execute(&mut *conn)
    .await
    .map(|_| ())
    .map_err(|e| sql_error("create the ledger (schema sandbox_steps)", e))
}

async fn record(
    conn: &mut PgConnection,
    name: &str,
    sum: &str,
    statements: u64,
) -> Result<(), StepError> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {LEDGER} (name, checksum, statements) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, \
         statements = excluded.statements, applied_at = now()"
    )))
    .bind(name)
    .bind(sum)
    .bind(statements.min(i32::MAX as u64) as i32)
    .execute(&mut *conn)
    .await
    .map(|_| ())
    .map_err(|e| sql_error("record the script in the ledger", e))
}

/// Whether a statement ends or starts a transaction: inside a file run in one transaction it
/// would commit half the file.
fn transaction_control(text: &str) -> Option<&'static str> {
    let first: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase();
    match first.as_str() {
        "BEGIN" => Some("BEGIN"),
        "START" if text.to_ascii_uppercase().contains("TRANSACTION") => Some("START TRANSACTION"),
        "COMMIT" | "END" => Some("COMMIT"),
        "ROLLBACK" if !text.to_ascii_uppercase().contains(" TO ") => Some("ROLLBACK"),
        "ABORT" => Some("ROLLBACK"),
        _ => None,
    }
}

/// A script's statement refused by the server: exit 3 with the file and line.
fn script_error(script: &Script, line: u64, e: sqlx::Error) -> StepError {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let mut err = StepError::precondition(format!(
                "{} line {line}: {} (SQLSTATE {code}){}",
                script.name,
                db.message(),
                if script.no_transaction() {
                    "; the statements before it stay applied (no-transaction file)"
                } else {
                    "; nothing of this file was applied"
                }
            ));
            if code == "25001" {
                err = err.with_hint(format!(
                    "this statement cannot run inside a transaction: put `{NO_TRANSACTION_MARKER}` \
                     on the file's first line (and make it re-runnable)"
                ));
            }
            err
        }
        other => StepError::transient(format!(
            "{} line {line}: the connection failed: {other}",
            script.name
        )),
    }
}

/// Runs one script and records it; returns the number of statements.
async fn run_script(conn: &mut PgConnection, script: &Script, sum: &str) -> Result<u64, StepError> {
    let in_transaction = !script.no_transaction();
    if in_transaction {
        sqlx::raw_sql("BEGIN")
            .execute(&mut *conn)
            .await
            .map_err(|e| sql_error("begin the script's transaction", e))?;
    }
    let result = run_items(conn, script, in_transaction).await;
    let result = match result {
        Ok(n) => record(conn, &script.name, sum, n).await.map(|_| n),
        Err(e) => Err(e),
    };
    if in_transaction {
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = sqlx::raw_sql(AssertSqlSafe(end.to_owned()))
            .execute(&mut *conn)
            .await;
        if let (Ok(_), Err(e)) = (&result, ended) {
            return Err(script_error(script, 0, e));
        }
    }
    result
}

async fn run_items(
    conn: &mut PgConnection,
    script: &Script,
    in_transaction: bool,
) -> Result<u64, StepError> {
    use sql_script::Item;
    let mut reader = sql_script::Reader::new(&script.content[..], 1 << 20);
    let mut count = 0u64;
    loop {
        let item = reader
            .next()
            .await
            .map_err(|e| StepError::precondition(format!("{}: {e}", script.name)))?;
        let Some(item) = item else { break };
        match item {
            Item::Sql { text, line } => {
                if in_transaction {
                    if let Some(what) = transaction_control(&text) {
                        return Err(StepError::precondition(format!(
                            "{} line {line}: {what} in a file run in one transaction (run-sql \
                             wraps each file in one): remove it, or put `{NO_TRANSACTION_MARKER}` \
                             on the file's first line",
                            script.name
                        )));
                    }
                }
                sqlx::raw_sql(AssertSqlSafe(text))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| script_error(script, line, e))?;
                count += 1;
            }
            Item::CopyStart {
                statement, line, ..
            } => {
                let mut copy_in = conn
                    .copy_in_raw(&statement)
                    .await
                    .map_err(|e| script_error(script, line, e))?;
                loop {
                    let next = reader
                        .next()
                        .await
                        .map_err(|e| StepError::precondition(format!("{}: {e}", script.name)))?;
                    match next {
                        Some(Item::CopyData(rows)) => copy_in
                            .send(rows)
                            .await
                            .map(|_| ())
                            .map_err(|e| script_error(script, line, e))?,
                        Some(Item::CopyEnd) | None => {
                            copy_in
                                .finish()
                                .await
                                .map_err(|e| script_error(script, line, e))?;
                            count += 1;
                            break;
                        }
                        Some(_) => unreachable!("a COPY block holds rows only"),
                    }
                }
            }
            Item::CopyData(_) | Item::CopyEnd => unreachable!("rows come after CopyStart"),
            Item::Meta { command, line } => {
                return Err(StepError::precondition(format!(
                    "{} line {line}: the psql meta-command \\{}: run-sql runs SQL only (no \
                     psql); write it as SQL",
                    script.name,
                    escape_untrusted(command.split_whitespace().next().unwrap_or(""))
                )));
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_checked() {
        assert_eq!(
            check_var("tenant=a'b\\c=d").unwrap(),
            ("tenant".into(), "a'b\\c=d".into())
        );
        for bad in [
            "Tenant=x",
            "1x=y",
            "a-b=1",
            "x",
            "=1",
            "a.b=1",
            &format!("{}=1", "a".repeat(64)),
        ] {
            assert!(check_var(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn transaction_control_is_found_at_the_start_only() {
        assert_eq!(transaction_control("COMMIT;"), Some("COMMIT"));
        assert_eq!(transaction_control("  begin;"), Some("BEGIN"));
        assert_eq!(transaction_control("END;"), Some("COMMIT"));
        assert_eq!(transaction_control("ROLLBACK TO SAVEPOINT a;"), None);
        assert_eq!(transaction_control("SAVEPOINT a;"), None);
        assert_eq!(transaction_control("SELECT 'COMMIT';"), None);
        assert_eq!(transaction_control("CREATE TABLE begin_x (a int);"), None);
    }
}
