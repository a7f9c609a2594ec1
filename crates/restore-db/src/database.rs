//! The database lifecycle, as the admin user: names checked, a lock per database, create under a
//! temporary name, rename when complete, drop only inside the sandbox naming scheme.

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, Connection, Row};
use step_kit::{escape_untrusted, StepError};

/// The suffix of the temporary name a database is restored under until it is complete.
pub const RESTORING_SUFFIX: &str = "_restoring";

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
const MAX_IDENTIFIER: usize = 63;

/// Databases never created, replaced or dropped, whatever the prefix says.
const RESERVED: &[&str] = &["postgres", "template0", "template1"];

/// A lower-case SQL identifier: `[a-z_][a-z0-9_]*`, at most `max` bytes. Nothing else is
/// accepted, so a name never needs more than double quotes, and reads the same quoted or not.
pub fn check_identifier(flag: &str, name: &str, max: usize) -> Result<(), StepError> {
    let valid = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.len() <= max;
    if valid {
        Ok(())
    } else {
        Err(StepError::invalid(format!(
            "{flag} {}: must be a lower-case identifier ([a-z_][a-z0-9_]*, at most {max} \
             characters), e.g. sbx_pr_42",
            escape_untrusted(name)
        )))
    }
}

/// Checks a database name this step creates (and may drop): an identifier short enough for its
/// temporary name, inside the sandbox naming scheme, not a reserved database nor the admin
/// connection's own.
pub fn check_database(
    flag: &str,
    name: &str,
    prefix: &str,
    admin_database: &str,
) -> Result<(), StepError> {
    check_identifier(flag, name, MAX_IDENTIFIER - RESTORING_SUFFIX.len())?;
    if RESERVED.contains(&name) || name == admin_database {
        return Err(StepError::precondition(format!(
            "{flag} {name}: refusing to restore into {}",
            if name == admin_database {
                "the admin connection's own database"
            } else {
                "a database PostgreSQL itself needs"
            }
        )));
    }
    if !name.starts_with(prefix) || name == prefix {
        return Err(StepError::precondition(format!(
            "{flag} {name}: outside the sandbox naming scheme (--sandbox-prefix {prefix}): \
             restore-db creates and replaces only sandbox databases"
        )));
    }
    Ok(())
}

/// `"name"` (names are checked identifiers, so no quote can be inside).
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` as an SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

pub fn sql_error(what: &str, e: sqlx::Error) -> StepError {
    match e {
        sqlx::Error::Database(db) => StepError::precondition(format!(
            "{what}: {} (SQLSTATE {})",
            db.message(),
            db.code().as_deref().unwrap_or("?")
        )),
        other => StepError::transient(format!("{what}: {other}")),
    }
}

/// The admin connection.
pub struct Admin {
    pub conn: PgConnection,
    pub options: PgConnectOptions,
}

impl Admin {
    pub async fn connect(options: &PgConnectOptions) -> Result<Admin, StepError> {
        let conn = PgConnection::connect_with(options).await.map_err(|e| {
            let kind_hint = match &e {
                sqlx::Error::Database(_) => "",
                _ => " (is the server reachable?)",
            };
            let err = sql_error("connect as admin (--admin-url)", e);
            StepError::new(err.kind, format!("{err}{kind_hint}"))
        })?;
        Ok(Admin {
            conn,
            options: options.clone(),
        })
    }

    pub async fn execute(&mut self, sql: String) -> Result<(), StepError> {
        let what = sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut self.conn)
            .await
            .map(|_| ())
            .map_err(|e| sql_error(&what, e))
    }

    /// Waits for the lock of `name` (held until the connection closes: a killed run releases
    /// it), so two restores of one database, or two clones of one template, never overlap.
    pub async fn lock(&mut self, name: &str) -> Result<(), StepError> {
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(format!("restore-db/{name}"))
            .execute(&mut self.conn)
            .await
            .map(|_| ())
            .map_err(|e| sql_error("take the restore lock", e))
    }

    pub async fn database_exists(&mut self, name: &str) -> Result<bool, StepError> {
        sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut self.conn)
            .await
            .map(|row| row.is_some())
            .map_err(|e| sql_error("look up the database", e))
    }

    /// The comment restore-db left on a database (what was restored into it).
    pub async fn database_comment(&mut self, name: &str) -> Result<Option<String>, StepError> {
        sqlx::query(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
        )
        .bind(name)
        .fetch_optional(&mut self.conn)
        .await
        .map(|row| row.and_then(|r| r.get::<Option<String>, _>(0)))
        .map_err(|e| sql_error("read the database comment", e))
    }

    pub async fn role_exists(&mut self, name: &str) -> Result<bool, StepError> {
        sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(name)
            .fetch_optional(&mut self.conn)
            .await
            .map(|row| row.is_some())
            .map_err(|e| sql_error("look up the role", e))
    }

    /// The comment on role `name` (`COMMENT ON ROLE`), if the role exists and has one.
    pub async fn role_comment(&mut self, name: &str) -> Result<Option<String>, StepError> {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
        )
        .bind(name)
        .fetch_optional(&mut self.conn)
        .await
        .map(Option::flatten)
        .map_err(|e| sql_error("read the role's comment", e))
    }

    /// What role `name` may do beyond its own objects: its server-wide attributes (SUPERUSER,
    /// CREATEDB, ...) and the roles it is a member of. Empty for a sandbox's owner.
    pub async fn role_powers(&mut self, name: &str) -> Result<Vec<String>, StepError> {
        sqlx::query_scalar::<_, Vec<String>>(
            "SELECT array_remove(ARRAY[CASE WHEN rolsuper THEN 'SUPERUSER' END, \
             CASE WHEN rolcreatedb THEN 'CREATEDB' END, CASE WHEN rolcreaterole THEN 'CREATEROLE' \
             END, CASE WHEN rolreplication THEN 'REPLICATION' END, CASE WHEN rolbypassrls THEN \
             'BYPASSRLS' END], NULL) || ARRAY(SELECT 'member of ' || quote_ident(g.rolname) FROM \
             pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid ORDER \
             BY 1) FROM pg_roles r WHERE rolname = $1",
        )
        .bind(name)
        .fetch_optional(&mut self.conn)
        .await
        .map(Option::unwrap_or_default)
        .map_err(|e| sql_error("read the role's attributes", e))
    }

    /// Drops a database this step owns the name of (checked by the caller), closing the
    /// sessions still connected to it.
    pub async fn drop_database(&mut self, name: &str) -> Result<(), StepError> {
        if !self.database_exists(name).await? {
            return Ok(());
        }
        // A template cannot be dropped until it is unmarked.
        self.execute(format!("ALTER DATABASE {} IS_TEMPLATE false", quoted(name)))
            .await?;
        self.execute(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quoted(name)
        ))
        .await
    }

    pub async fn rename_database(&mut self, from: &str, to: &str) -> Result<(), StepError> {
        self.execute(format!(
            "ALTER DATABASE {} RENAME TO {}",
            quoted(from),
            quoted(to)
        ))
        .await
    }

    pub async fn comment_database(&mut self, name: &str, comment: &str) -> Result<(), StepError> {
        self.execute(format!(
            "COMMENT ON DATABASE {} IS {}",
            quoted(name),
            literal(comment)
        ))
        .await
    }

    /// The options of a connection to `database` with the admin's credentials.
    pub fn options_for(&self, database: &str) -> PgConnectOptions {
        self.options.clone().database(database)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_inside_the_scheme_only() {
        let check = |name: &str| check_database("--database", name, "sbx_", "postgres");
        assert!(check("sbx_pr_42").is_ok());
        let too_long = format!("sbx_{}", "a".repeat(60));
        for (name, code) in [
            ("postgres", 3),
            ("template1", 3),
            ("integration", 3),
            ("sbx_", 3),
            ("Sbx_pr_42", 2),
            ("sbx-pr-42", 2),
            ("x; DROP DATABASE y", 2),
            ("sbx_pr_42\"; DROP DATABASE y; --", 2),
            ("../x", 2),
            ("", 2),
            ("sbx_prüfung", 2),
            (too_long.as_str(), 2),
        ] {
            let err = check(name).unwrap_err();
            assert_eq!(err.exit_code(), code, "{name}: {err}");
        }
        let own = check_database("--database", "sbx_admin", "sbx_", "sbx_admin").unwrap_err();
        assert_eq!(own.exit_code(), 3);
    }

    #[test]
    fn quoting() {
        assert_eq!(quoted("sbx_pr_42"), "\"sbx_pr_42\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
