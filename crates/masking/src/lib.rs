//! Masking of personal data in a PostgreSQL database, server side: each table's masked columns
//! are rewritten by `UPDATE`s computed in the server (no row passes through the step), with a
//! keyed SHA-256 digest so the same input gives the same output in every table and every run.
//!
//! Big tables with a single-column integer primary key are masked in batches of rows, each
//! committed with the table's progress (`sandbox_steps.masking_progress`), so an interrupted
//! run resumes where it stopped instead of masking rows twice (which would break determinism:
//! the digest of a digest is another value). When a table is done its columns are recorded in
//! `sandbox_steps.masked_columns` (strategy and the key's fingerprint, never the key): a re-run,
//! or a copy of a masked template database, masks only what is not masked yet.

mod rules;

use std::collections::{BTreeMap, BTreeSet};

use pg_admin::{quoted, sql_error};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Row};
use step_kit::StepError;

pub use rules::{looks_personal, parse, words, Rule, Strategy};

/// Where the markers live, beside run-sql's ledger.
pub const SCHEMA: &str = "sandbox_steps";

/// A column of the database, as the catalog describes it.
#[derive(Debug, Clone)]
pub struct Column {
    pub schema: String,
    pub table: String,
    pub column: String,
    /// `format_type`: the column's type as SQL writes it (`character varying(40)`).
    pub sql_type: String,
    /// `pg_type.typname` of the type (or of a domain's base type).
    pub base_type: String,
    /// `pg_type.typcategory`: `S` for string types (text, varchar, citext, ...).
    pub category: String,
    pub not_null: bool,
    pub generated: bool,
    /// varchar(n) / char(n): n.
    pub max_len: Option<i32>,
}

impl Column {
    pub fn qualified_table(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// The key's fingerprint kept in the markers: whether a column was masked with this key.
pub fn key_id(key: &str) -> String {
    let digest = Sha256::digest(format!("sandbox-steps masking key\n{key}").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// One table's work.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub schema: String,
    pub table: String,
    /// The columns to mask (not `keep`, not masked already with the same rule and key).
    pub columns: Vec<(Column, Strategy)>,
    /// A single-column integer primary key, not masked: the table is masked in batches of it.
    pub batch_key: Option<String>,
    /// The planner's row estimate (for progress).
    pub estimated_rows: u64,
}

impl TablePlan {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    fn sql_name(&self) -> String {
        format!("{}.{}", quoted(&self.schema), quoted(&self.table))
    }

    /// What the markers record of this plan: a resumed batch must continue the same work.
    fn signature(&self, key_id: &str) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|(c, s)| format!("{}={}", c.column, s.label()))
            .collect();
        format!("{key_id};{}", cols.join(","))
    }
}

/// What a run will do.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub tables: Vec<TablePlan>,
    /// Columns masked already (by an earlier run, or in the template this database copies).
    pub already_masked: Vec<String>,
    /// Columns whose rule is `keep`.
    pub kept: Vec<String>,
    /// Personal-looking columns without a rule, with why they look personal.
    pub unmasked: Vec<(String, String)>,
}

impl Plan {
    pub fn masked_columns(&self) -> usize {
        self.tables.iter().map(|t| t.columns.len()).sum()
    }
}

/// The user tables' columns (not PostgreSQL's, not the markers'; partitions are reached
/// through their parent).
pub async fn columns(conn: &mut PgConnection) -> Result<Vec<Column>, StepError> {
    let rows = sqlx::query(
        "SELECT n.nspname::text, c.relname::text, a.attname::text, \
                format_type(a.atttypid, a.atttypmod), \
                coalesce(bt.typname, t.typname)::text, t.typcategory::text, a.attnotnull, \
                a.attgenerated <> '', \
                CASE WHEN coalesce(bt.typname, t.typname) IN ('varchar', 'bpchar') \
                          AND coalesce(nullif(t.typtypmod, -1), a.atttypmod) > 4 \
                     THEN coalesce(nullif(t.typtypmod, -1), a.atttypmod) - 4 END \
         FROM pg_attribute a \
         JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_type t ON t.oid = a.atttypid \
         LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype \
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND a.attnum > 0 \
           AND NOT a.attisdropped \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'sandbox_steps') \
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                           AND d.objid = c.oid AND d.deptype = 'e') \
         ORDER BY 1, 2, a.attnum",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| sql_error("read the tables' columns", e))?;
    Ok(rows
        .into_iter()
        .map(|r| Column {
            schema: r.get(0),
            table: r.get(1),
            column: r.get(2),
            sql_type: r.get(3),
            base_type: r.get(4),
            category: r.get(5),
            not_null: r.get(6),
            generated: r.get(7),
            max_len: r.get(8),
        })
        .collect())
}

/// Creates the marker tables when missing.
pub async fn ensure_markers(conn: &mut PgConnection) -> Result<(), StepError> {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {SCHEMA}; \
         CREATE TABLE IF NOT EXISTS {SCHEMA}.masked_columns (\
            table_name text NOT NULL, column_name text NOT NULL, strategy text NOT NULL, \
            key_id text NOT NULL, masked_at timestamptz NOT NULL DEFAULT now(), \
            PRIMARY KEY (table_name, column_name)); \
         CREATE TABLE IF NOT EXISTS {SCHEMA}.masking_progress (\
            table_name text PRIMARY KEY, signature text NOT NULL, last_key bigint NOT NULL, \
            rows_done bigint NOT NULL)"
    )))
    .execute(&mut *conn)
    .await
    .map(|_| ())
    .map_err(|e| sql_error("create the masking markers (sandbox_steps schema)", e))
}

/// (table, column) → (strategy, key id) of the columns masked already; empty when the markers
/// do not exist.
async fn masked_before(
    conn: &mut PgConnection,
) -> Result<BTreeMap<(String, String), (String, String)>, StepError> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('sandbox_steps.masked_columns') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| sql_error("look for the masking markers", e))?;
    if !exists {
        return Ok(BTreeMap::new());
    }
    let rows = sqlx::query(
        "SELECT table_name, column_name, strategy, key_id FROM sandbox_steps.masked_columns",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| sql_error("read the masking markers", e))?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect())
}

/// Checks the rules against the database and decides what to mask. Refuses (exit 3), before
/// anything changes: a rule for a column that does not exist, a strategy the column's type
/// cannot hold (email in an integer, null in a NOT NULL column, a generated column).
pub async fn plan(
    conn: &mut PgConnection,
    rules: &[Rule],
    key_id: &str,
) -> Result<Plan, StepError> {
    let all = columns(conn).await?;
    let before = masked_before(conn).await?;
    let by_name: BTreeMap<(&str, &str, &str), &Column> = all
        .iter()
        .map(|c| ((c.schema.as_str(), c.table.as_str(), c.column.as_str()), c))
        .collect();
    let mut problems = Vec::new();
    let mut plan = Plan::default();
    let mut tables: BTreeMap<(String, String), Vec<(Column, Strategy)>> = BTreeMap::new();
    let mut ruled = BTreeSet::new();
    for rule in rules {
        ruled.insert((rule.schema.clone(), rule.table.clone(), rule.column.clone()));
        let Some(column) = by_name.get(&(
            rule.schema.as_str(),
            rule.table.as_str(),
            rule.column.as_str(),
        )) else {
            problems.push(format!("{}: no such column in this database", rule.name()));
            continue;
        };
        if let Err(e) = fits(column, &rule.strategy) {
            problems.push(format!("{} ({}): {e}", rule.name(), column.sql_type));
            continue;
        }
        if rule.strategy == Strategy::Keep {
            plan.kept.push(rule.name());
            continue;
        }
        let marker = before.get(&(column.qualified_table(), column.column.clone()));
        if let Some((strategy, id)) = marker {
            let keyless = !rule.strategy.keyed();
            if *strategy == rule.strategy.label() && (keyless || id == key_id) {
                plan.already_masked.push(rule.name());
                continue;
            }
            tracing::warn!(
                "{} was masked with {strategy} (key {id}); masking it again with {} (key {key_id})",
                rule.name(),
                rule.strategy.label()
            );
        }
        tables
            .entry((rule.schema.clone(), rule.table.clone()))
            .or_default()
            .push(((*column).clone(), rule.strategy.clone()));
    }
    if !problems.is_empty() {
        return Err(StepError::precondition(format!(
            "the masking rules do not fit this database, nothing was changed:\n  {}",
            problems.join("\n  ")
        )));
    }
    for c in &all {
        if c.generated || ruled.contains(&(c.schema.clone(), c.table.clone(), c.column.clone())) {
            continue;
        }
        if let Some(why) = looks_personal(&c.column, &c.base_type) {
            plan.unmasked
                .push((format!("{}.{}", c.qualified_table(), c.column), why));
        }
    }
    for ((schema, table), columns) in tables {
        let masked: BTreeSet<&str> = columns.iter().map(|(c, _)| c.column.as_str()).collect();
        let (key, estimate) = batch_key(conn, &schema, &table).await?;
        plan.tables.push(TablePlan {
            batch_key: key.filter(|k| !masked.contains(k.as_str())),
            estimated_rows: estimate,
            schema,
            table,
            columns,
        });
    }
    Ok(plan)
}

/// Whether `strategy` can be written into `column`.
fn fits(column: &Column, strategy: &Strategy) -> Result<(), String> {
    if column.generated && *strategy != Strategy::Keep {
        return Err("a generated column: mask the columns it is computed from".into());
    }
    let text = column.category == "S";
    let len_ok = |need: i32, what: &str| match column.max_len {
        Some(n) if n < need => Err(format!(
            "{what} needs {need} characters, the column holds {n}"
        )),
        _ => Ok(()),
    };
    match strategy {
        Strategy::Hash => {
            if text || hash_int_bits(&column.base_type).is_some() || column.base_type == "uuid" {
                Ok(())
            } else {
                Err("hash masks text, integer and uuid columns".into())
            }
        }
        Strategy::Email => {
            if !text {
                return Err("email masks text columns".into());
            }
            len_ok(EMAIL_LEN, "a masked email")
        }
        Strategy::Name | Strategy::Phone => {
            if !text {
                return Err(format!("{} masks text columns", strategy.label()));
            }
            if *strategy == Strategy::Phone {
                len_ok(PHONE_LEN, "a masked phone number")?;
            }
            Ok(())
        }
        Strategy::Null if column.not_null => {
            Err("null for a NOT NULL column: choose fixed:VALUE or another strategy".into())
        }
        Strategy::Null | Strategy::Fixed(_) | Strategy::Keep => Ok(()),
    }
}

/// `user-` + 16 hex + `@example.com`.
const EMAIL_LEN: i32 = 5 + 16 + 12;
/// `+1555` + 7 digits.
const PHONE_LEN: i32 = 12;

/// The digest bits an integer column's hash keeps (within the type's positive range).
fn hash_int_bits(base_type: &str) -> Option<u32> {
    match base_type {
        "int2" => Some(14),
        "int4" => Some(30),
        "int8" | "numeric" => Some(60),
        _ => None,
    }
}

/// Pseudonyms for the `name` strategy: 32 × 32 combinations.
const FIRST_NAMES: &[&str] = &[
    "Alex", "Sam", "Robin", "Kim", "Jules", "Noa", "Maxime", "Lou", "Charlie", "Eden", "Sasha",
    "Rene", "Dana", "Jamie", "Morgan", "Taylor", "Jordan", "Avery", "Quinn", "Riley", "Casey",
    "Ariel", "Emery", "Rowan", "Sky", "Toni", "Luca", "Mika", "Nico", "Remy", "Kai", "Ira",
];
const LAST_NAMES: &[&str] = &[
    "Moreau",
    "Jansen",
    "Novak",
    "Silva",
    "Berg",
    "Costa",
    "Weber",
    "Kowalski",
    "Dubois",
    "Rossi",
    "Lindqvist",
    "Horvat",
    "Petit",
    "Meyer",
    "Ortega",
    "Nagy",
    "Fischer",
    "Laurent",
    "Visser",
    "Romano",
    "Keller",
    "Popescu",
    "Marin",
    "Blanc",
    "Haas",
    "Lucas",
    "Ferrari",
    "Vogel",
    "Leclerc",
    "Dekker",
    "Sousa",
    "Brandt",
];

/// The SQL expression of `strategy` for `column`: `$1` is the key, `fixed` the parameter
/// number of a fixed value. NULL stays NULL.
fn expression(column: &Column, strategy: &Strategy, fixed: usize) -> Option<String> {
    let c = quoted(&column.column);
    let digest = format!("sha256(convert_to($1 || chr(31) || ({c})::text, 'UTF8'))");
    let hex = format!("encode({digest}, 'hex')");
    let fit = |expr: String| match column.max_len {
        Some(n) => format!("left({expr}, {n})"),
        None => expr,
    };
    let array = |names: &[&str]| {
        let quoted: Vec<String> = names.iter().map(|n| pg_admin::literal(n)).collect();
        format!("(ARRAY[{}]::text[])", quoted.join(","))
    };
    let masked = match strategy {
        Strategy::Keep => return None,
        Strategy::Null => return Some("NULL".into()),
        Strategy::Fixed(_) => format!("${fixed}::{}", column.sql_type),
        Strategy::Hash => match hash_int_bits(&column.base_type) {
            Some(bits) => {
                let digits = bits.div_ceil(4);
                format!(
                    "(('x' || left({hex}, {digits}))::bit({})::bigint)::{}",
                    digits * 4,
                    column.sql_type
                )
            }
            None if column.base_type == "uuid" => format!("left({hex}, 32)::uuid"),
            None => fit(format!("left({hex}, 64)")),
        },
        Strategy::Email => format!("'user-' || left({hex}, 16) || '@example.com'"),
        Strategy::Name => fit(format!(
            "{}[1 + get_byte({digest}, 0) % {}] || ' ' || {}[1 + get_byte({digest}, 1) % {}]",
            array(FIRST_NAMES),
            FIRST_NAMES.len(),
            array(LAST_NAMES),
            LAST_NAMES.len()
        )),
        Strategy::Phone => format!(
            "'+1555' || lpad(((('x' || left({hex}, 8))::bit(32)::bigint) % 10000000)::text, 7, '0')"
        ),
    };
    Some(format!("CASE WHEN {c} IS NULL THEN NULL ELSE {masked} END"))
}

/// A single-column integer primary key (its name) and the planner's row estimate.
async fn batch_key(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<(Option<String>, u64), StepError> {
    let row = sqlx::query(
        "SELECT (SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                 WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnkeyatts = 1 \
                   AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)), \
                greatest(c.reltuples, 0)::bigint \
         FROM pg_class c WHERE c.oid = to_regclass(format('%I.%I', $1::text, $2::text))",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| sql_error(&format!("look up {schema}.{table}'s primary key"), e))?;
    Ok((row.get(0), row.get::<i64, _>(1).max(0) as u64))
}

/// Rows masked, per column (`schema.table.column`).
pub type Counts = BTreeMap<String, u64>;

/// Applies `plan`. Each table's batches commit with the table's progress; its columns are
/// recorded as masked in the transaction of its last batch.
pub async fn apply(
    conn: &mut PgConnection,
    plan: &Plan,
    key: &str,
    key_id: &str,
    batch_rows: u64,
) -> Result<Counts, StepError> {
    ensure_markers(conn).await?;
    let mut counts = Counts::new();
    for table in &plan.tables {
        let masked = mask_table(conn, table, key, key_id, batch_rows.max(1)).await?;
        for ((column, _), rows) in table.columns.iter().zip(masked) {
            counts.insert(format!("{}.{}", table.qualified(), column.column), rows);
        }
    }
    Ok(counts)
}

async fn mask_table(
    conn: &mut PgConnection,
    table: &TablePlan,
    key: &str,
    key_id: &str,
    batch_rows: u64,
) -> Result<Vec<u64>, StepError> {
    let name = table.qualified();
    let sql_name = table.sql_name();
    let mut sets = Vec::new();
    let mut counted = Vec::new();
    let mut any_not_null = Vec::new();
    let mut fixed_values = Vec::new();
    for (column, strategy) in &table.columns {
        if let Strategy::Fixed(v) = strategy {
            fixed_values.push(v.clone());
        }
        // $1 is the key; in batches $2 and $3 are the key range, then the fixed values.
        let first_fixed = if table.batch_key.is_some() { 4 } else { 2 };
        let Some(expr) = expression(column, strategy, first_fixed + fixed_values.len() - 1) else {
            continue;
        };
        let c = quoted(&column.column);
        sets.push(format!("{c} = {expr}"));
        counted.push(format!("count({c})"));
        any_not_null.push(format!("{c} IS NOT NULL"));
    }
    let signature = table.signature(key_id);
    let progress = step_kit::Progress::new(&format!("rows of {name}"), table.estimated_rows);
    let mut totals = vec![0u64; counted.len()];
    let where_range = match &table.batch_key {
        Some(k) => format!("{} > $2 AND {} <= $3", quoted(k), quoted(k)),
        None => "true".to_owned(),
    };
    let count_sql = format!(
        "SELECT {} FROM {sql_name} WHERE {where_range}",
        counted.join(", ")
    );
    let update_sql = format!(
        "UPDATE {sql_name} SET {} WHERE {where_range} AND ({})",
        sets.join(", "),
        any_not_null.join(" OR ")
    );
    // Resume a batch run of the same work; other work is started over.
    let mut last_key: Option<i64> = None;
    if table.batch_key.is_some() {
        let row = sqlx::query(
            "SELECT signature, last_key, rows_done FROM sandbox_steps.masking_progress \
             WHERE table_name = $1",
        )
        .bind(&name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| sql_error("read the masking progress", e))?;
        if let Some(row) = row {
            let (sig, at, done): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
            if sig == signature {
                tracing::info!("{name}: resuming after key {at} ({done} rows masked before)");
                last_key = Some(at);
                progress.advance(done as u64, 0);
            } else {
                tracing::warn!(
                    "{name}: an interrupted masking with other rules or another key; starting \
                     over (rows it reached are masked twice)"
                );
            }
        }
    }
    loop {
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(|e| sql_error("begin a masking transaction", e))?;
        let upper: Option<i64> = match &table.batch_key {
            Some(k) => {
                let k = quoted(k);
                sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT max({k})::bigint FROM (SELECT {k} FROM {sql_name} \
                     WHERE $1::bigint IS NULL OR {k} > $1 ORDER BY {k} LIMIT {batch_rows}) s"
                )))
                .bind(last_key)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| sql_error(&format!("find {name}'s next batch"), e))?
            }
            None => None,
        };
        let done_after = table.batch_key.is_none() || upper.is_none();
        let mut rows_now = 0;
        if table.batch_key.is_none() || upper.is_some() {
            let range = upper.map(|to| (last_key.unwrap_or(i64::MIN), to));
            let mut count_q = sqlx::query(AssertSqlSafe(count_sql.clone())).bind(key);
            if let Some((from, to)) = range {
                count_q = count_q.bind(from).bind(to);
            }
            let row = count_q
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| sql_error(&format!("count {name}'s values"), e))?;
            for (i, total) in totals.iter_mut().enumerate() {
                *total += row.get::<i64, _>(i) as u64;
            }
            let mut update = sqlx::query(AssertSqlSafe(update_sql.clone())).bind(key);
            if let Some((from, to)) = range {
                update = update.bind(from).bind(to);
            }
            for v in &fixed_values {
                update = update.bind(v);
            }
            rows_now = update
                .execute(&mut *tx)
                .await
                .map_err(|e| sql_error(&format!("mask {name}"), e))?
                .rows_affected();
            progress.advance(rows_now, 0);
        }
        if done_after {
            sqlx::query("DELETE FROM sandbox_steps.masking_progress WHERE table_name = $1")
                .bind(&name)
                .execute(&mut *tx)
                .await
                .map_err(|e| sql_error("clear the masking progress", e))?;
            for (column, strategy) in &table.columns {
                sqlx::query(
                    "INSERT INTO sandbox_steps.masked_columns (table_name, column_name, \
                     strategy, key_id) VALUES ($1, $2, $3, $4) ON CONFLICT (table_name, \
                     column_name) DO UPDATE SET strategy = excluded.strategy, key_id = \
                     excluded.key_id, masked_at = now()",
                )
                .bind(&name)
                .bind(&column.column)
                .bind(strategy.label())
                .bind(if strategy.keyed() { key_id } else { "" })
                .execute(&mut *tx)
                .await
                .map_err(|e| sql_error("record the masked columns", e))?;
            }
        } else {
            let to = upper.expect("a batch has an upper key");
            sqlx::query(
                "INSERT INTO sandbox_steps.masking_progress (table_name, signature, last_key, \
                 rows_done) VALUES ($1, $2, $3, $4) ON CONFLICT (table_name) DO UPDATE SET \
                 signature = excluded.signature, last_key = excluded.last_key, rows_done = \
                 masking_progress.rows_done + $4",
            )
            .bind(&name)
            .bind(&signature)
            .bind(to)
            .bind(rows_now as i64)
            .execute(&mut *tx)
            .await
            .map_err(|e| sql_error("record the masking progress", e))?;
            last_key = Some(to);
        }
        tx.commit()
            .await
            .map_err(|e| sql_error(&format!("commit {name}'s masking"), e))?;
        if done_after {
            break;
        }
    }
    progress.finish();
    Ok(totals)
}

/// The rules file and the key, as a step's flags name them.
pub struct Loaded {
    pub rules: Vec<Rule>,
    /// Read only when a rule needs it.
    pub key: Option<step_kit::Secret>,
    /// The rules' and the key's fingerprints (`rules <hex> key <hex|none>`), never the key.
    pub fingerprint: String,
}

/// Reads and parses the rules file of `rules_flag` (exit 2 when unreadable or not rules), and
/// resolves the key of `key_flag` when a rule is keyed (then required). An empty key reference
/// counts as none: the templates pass "" when there is no key.
pub async fn load(
    rules: &std::path::Path,
    rules_flag: &str,
    key: Option<&step_kit::SecretRef>,
    key_flag: &str,
    vault: &step_kit::VaultFlags,
) -> Result<Loaded, StepError> {
    let text = std::fs::read(rules).map_err(|e| {
        StepError::invalid(format!(
            "{rules_flag} {}: cannot read it: {e}",
            rules.display()
        ))
    })?;
    let parsed = parse(&String::from_utf8_lossy(&text))?;
    let key = match key {
        _ if !needs_key(&parsed) => None,
        Some(step_kit::SecretRef::Literal(empty)) if empty.expose().is_empty() => None,
        Some(r) => Some(r.resolve(key_flag, vault).await?),
        None => None,
    };
    if needs_key(&parsed) && key.is_none() {
        return Err(StepError::invalid(format!(
            "{key_flag}: the rules use keyed strategies (hash, email, name, phone): give the \
             key's secret reference"
        )));
    }
    let rules_id: String = Sha256::digest(&text)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let key_id = key.as_ref().map(|k| key_id(k.expose()));
    Ok(Loaded {
        rules: parsed,
        key,
        fingerprint: format!(
            "rules {rules_id} key {}",
            key_id.as_deref().unwrap_or("none")
        ),
    })
}

/// How [`mask`] runs.
pub struct Options<'a> {
    pub rules: &'a [Rule],
    /// Required when a rule is keyed ([`needs_key`]).
    pub key: Option<&'a str>,
    /// Log personal-looking columns without a rule instead of refusing to run.
    pub allow_unmasked: bool,
    pub batch_rows: u64,
    pub dry_run: bool,
}

/// What [`mask`] did.
#[derive(Debug, Default)]
pub struct Report {
    pub counts: Counts,
    pub already_masked: usize,
    /// Personal-looking columns without a rule (only with `allow_unmasked`).
    pub unmasked: Vec<String>,
}

pub fn needs_key(rules: &[Rule]) -> bool {
    rules.iter().any(|r| r.strategy.keyed())
}

/// Plans, checks (strict mode) and applies the rules, logging what happens. The checks come
/// before any change: a refused run leaves the database as it was.
pub async fn mask(conn: &mut PgConnection, options: &Options<'_>) -> Result<Report, StepError> {
    let key = options.key.unwrap_or("");
    if needs_key(options.rules) && key.is_empty() {
        return Err(StepError::invalid(
            "the masking rules use keyed strategies (hash, email, name, phone): give the key",
        ));
    }
    let id = if key.is_empty() {
        String::new()
    } else {
        key_id(key)
    };
    // One masking at a time per database: two would mask the same rows twice.
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('sandbox-steps/mask', 0))")
        .execute(&mut *conn)
        .await
        .map_err(|e| sql_error("take the masking lock", e))?;
    let plan = plan(conn, options.rules, &id).await?;
    let unmasked: Vec<String> = plan
        .unmasked
        .iter()
        .map(|(column, why)| format!("{column} ({why})"))
        .collect();
    if !unmasked.is_empty() {
        if !options.allow_unmasked {
            return Err(StepError::precondition(format!(
                "strict mode: {} column(s) look personal and no rule covers them, nothing was \
                 masked:\n  {}\nGive each a strategy (keep for the ones reviewed as not \
                 personal), or allow unmasked columns",
                unmasked.len(),
                unmasked.join("\n  ")
            )));
        }
        tracing::warn!(
            "allowed unmasked: {} personal-looking column(s) without a rule: {}",
            unmasked.len(),
            unmasked.join(", ")
        );
    }
    if !plan.already_masked.is_empty() {
        tracing::info!(
            "masked already with the same rule and key (an earlier run, or the template this \
             database copies): {}",
            plan.already_masked.join(", ")
        );
    }
    let mut report = Report {
        already_masked: plan.already_masked.len(),
        unmasked,
        ..Report::default()
    };
    for table in &plan.tables {
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|(c, s)| format!("{} ({})", c.column, s.label()))
            .collect();
        tracing::info!(
            "{}{}: {} (~{} rows, {})",
            if options.dry_run {
                "dry run: would mask "
            } else {
                "masking "
            },
            table.qualified(),
            columns.join(", "),
            table.estimated_rows,
            match &table.batch_key {
                Some(k) => format!("in batches of {} by {k}", options.batch_rows),
                None => "in one statement".into(),
            }
        );
    }
    if options.dry_run {
        return Ok(report);
    }
    report.counts = apply(conn, &plan, key, &id, options.batch_rows).await?;
    for (column, rows) in &report.counts {
        tracing::info!("{column}: {rows} value(s) masked");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, base: &str, category: &str, max_len: Option<i32>) -> Column {
        Column {
            schema: "public".into(),
            table: "t".into(),
            column: name.into(),
            sql_type: base.into(),
            base_type: base.into(),
            category: category.into(),
            not_null: name == "id",
            generated: false,
            max_len,
        }
    }

    #[test]
    fn strategies_that_do_not_fit_the_column_are_refused() {
        let email = column("email", "varchar", "S", Some(20));
        assert!(fits(&email, &Strategy::Email)
            .unwrap_err()
            .contains("needs 33 characters"));
        assert!(fits(&column("n", "int4", "N", None), &Strategy::Email).is_err());
        assert!(fits(&column("id", "int8", "N", None), &Strategy::Null).is_err());
        assert!(fits(&column("id", "int8", "N", None), &Strategy::Hash).is_ok());
        assert!(fits(&column("at", "timestamptz", "D", None), &Strategy::Hash).is_err());
        assert!(fits(&column("at", "timestamptz", "D", None), &Strategy::Keep).is_ok());
    }

    #[test]
    fn the_key_id_names_the_key_without_revealing_it() {
        let id = key_id("s3cret");
        assert_eq!(id.len(), 16);
        assert_eq!(id, key_id("s3cret"));
        assert_ne!(id, key_id("s3cret2"));
        assert!(!id.contains("s3cret"));
    }
}
