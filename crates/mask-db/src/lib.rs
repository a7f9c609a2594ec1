//! mask-db: masks personal data in a sandbox database (after restore-db and run-sql), so a copy
//! of integration data in a hundred short-lived environments holds no real customer's email,
//! name or phone. The work is the `masking` crate's, shared with restore-db (which masks before
//! a database, or a template, gets its name).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use pg_admin::SandboxUrl;
use sqlx::Connection;
use step_kit::{CommonArgs, Context, SecretRef, StepArgs, StepError, VaultFlags};

pub const NAME: &str = "mask-db";

/// The files this step writes in `--outputs-dir`.
pub const OUTPUTS: &[&str] = &[
    "database",
    "masked-values",
    "columns",
    "already-masked",
    "unmasked",
    "seconds",
];

const EXAMPLE: &str = "\
Example:
  mask-db --database-url vault:secret/sandboxes/sbx-pr-42/db#url \\
    --rules /etc/sandbox-steps/masking/rules.yaml --key vault:secret/sandbox-steps/masking#key \\
    --vault-addr https://vault.example:8200
  # masks every column the rules name, server side; outputs: database=sbx_pr_42
  # masked-values=2412 columns={\"public.customers.email\":1000,...} already-masked=0
  # (a re-run: masked-values=0 already-masked=6, nothing changed)

Rules (YAML): table (schema public) or schema.table → column → strategy:
  customers:
    email: email        # user-<16 hex>@example.com: valid, unique, the same for the same input
    full_name: name     # a pseudonym (\"Alex Moreau\")
    phone: phone        # +1555 and seven digits
    customer_ref: hash  # keyed digest in the column's type (text, integers, uuid): joins match
    notes: null
    country: fixed:NL
    created_at: keep    # reviewed: not personal
Keyed strategies use --key: the same key gives the same values in every sandbox and every run;
keep it secret (whoever has it can test guesses of an original value). NULL stays NULL.

Strict (the default): a column whose name or type looks personal (email, phone, name, address,
birth, ip, token, password, ...; inet) and that no rule covers fails the run before anything
changes, so a column added by a migration cannot leak silently. Give it a strategy, or keep.

Exit codes: 0 masked (or masked already); 2 invalid flags or rules; 3 a database outside
--sandbox-prefix, strict mode finding unmasked columns, a rule that does not fit (no such
column, email in an integer, null in a NOT NULL column), the server refusing an update; 4 the
server or Vault unreachable, or the deadline: a re-run resumes (batches already masked are
kept).";

/// Mask personal data in a sandbox database by rules, server side.
///
/// Each table's masked columns are rewritten by `UPDATE`s computed in the server; big tables
/// with an integer primary key in batches (`--batch-rows`), each committed with its progress so
/// a re-run resumes. Masked columns are recorded in `sandbox_steps.masked_columns` (strategy
/// and the key's fingerprint): a re-run, or a database copied from a masked template
/// (restore-db `--template-db` with `--mask-rules`), masks only what is not masked yet.
#[derive(Debug, Parser)]
#[command(name = NAME, version, after_help = EXAMPLE)]
pub struct Args {
    /// The sandbox database's connection as its owner, a reference: env:NAME, file:/path or
    /// vault:<mount>/<path>#<key> (restore-db's --owner-secret holds it under `url`). Its
    /// database must be inside --sandbox-prefix.
    #[arg(long, value_name = "SECRET_REF")]
    pub database_url: SecretRef,

    /// The masking rules, a YAML file (see below; in a cluster, a ConfigMap mounted as a file).
    #[arg(long, value_name = "FILE")]
    pub rules: PathBuf,

    /// The masking key, a reference (env:NAME, file:/path, vault:<mount>/<path>#<key>); needed
    /// when a rule is hash, email, name or phone. Never printed; the markers keep a fingerprint.
    #[arg(long, value_name = "SECRET_REF")]
    pub key: Option<SecretRef>,

    /// Only log personal-looking columns no rule covers, instead of failing (strict mode off).
    #[arg(long)]
    pub allow_unmasked: bool,

    /// Rows per batch (and per transaction) in tables with an integer primary key.
    #[arg(long, value_name = "N", default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub batch_rows: u64,

    /// The naming scheme of sandbox databases: only databases starting with it are masked.
    #[arg(long, value_name = "PREFIX", default_value = "sbx_")]
    pub sandbox_prefix: String,

    /// Check the rules against the database and say what would be masked, change nothing.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub vault: VaultFlags,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl StepArgs for Args {
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

/// Runs the step with `argv` (the first item is the program name); returns the exit code.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> u8 {
    step_kit::run_from(NAME, argv, mask_db)
}

async fn mask_db(args: Args, ctx: Context) -> Result<(), StepError> {
    let started = Instant::now();
    let loaded = masking::load(
        &args.rules,
        "--rules",
        args.key.as_ref(),
        "--key",
        &args.vault,
    )
    .await?;
    let url = args
        .database_url
        .resolve("--database-url", &args.vault)
        .await?;
    let target = SandboxUrl::parse(url.expose(), &args.sandbox_prefix, "mask", NAME)?;
    drop(url);
    let database = target.database.clone();
    ctx.outputs.set("database", &database)?;
    let mut conn = target.connect(&ctx.retry_policy()).await?;
    let report = masking::mask(
        &mut conn,
        &masking::Options {
            rules: &loaded.rules,
            key: loaded.key.as_ref().map(|k| k.expose()),
            allow_unmasked: args.allow_unmasked,
            batch_rows: args.batch_rows,
            dry_run: args.dry_run,
        },
    )
    .await?;
    let _ = conn.close().await;
    let outputs = &ctx.outputs;
    let total: u64 = report.counts.values().sum();
    outputs.set("masked-values", &total.to_string())?;
    outputs.set_json(
        "columns",
        &serde_json::to_value(&report.counts).expect("counts"),
    )?;
    outputs.set("already-masked", &report.already_masked.to_string())?;
    outputs.set_json(
        "unmasked",
        &serde_json::to_value(&report.unmasked).expect("names"),
    )?;
    outputs.set(
        "seconds",
        &format!("{:.1}", started.elapsed().as_secs_f64()),
    )?;
    Ok(())
}
