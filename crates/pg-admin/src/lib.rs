//! Sandbox databases on a shared PostgreSQL server, as its admin: the naming rules that keep the
//! steps away from every other database and role, the admin connection (its URL checked without
//! ever showing it), a lock per database, and what restore-db, drop-db and the sweep ask the
//! server. Shared by those steps, so a database restore-db may create is exactly one drop-db may
//! drop.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};
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

/// The comment that marks a role restore-db created for a sandbox: only such a role is ever
/// reused (its password set, its objects' owner) or dropped, never a role that was there before.
pub const ROLE_MARKER: &str = "sandbox-steps: owner of a sandbox database";

/// Role names SQL reads as something else (`GRANT ... TO current_user` would not mean the role).
const RESERVED_ROLES: &[&str] = &[
    "current_user",
    "current_role",
    "session_user",
    "user",
    "public",
    "none",
    "all",
];

/// Checks `--sandbox-prefix`: an identifier of 2 to 30 characters (it is what keeps the steps
/// away from every other database).
pub fn check_sandbox_prefix(prefix: &str) -> Result<(), StepError> {
    check_identifier("--sandbox-prefix", prefix, 30)?;
    if prefix.len() < 2 {
        return Err(StepError::invalid(
            "--sandbox-prefix: at least 2 characters (it is what keeps the steps away from \
             other databases)",
        ));
    }
    Ok(())
}

/// Checks the name of a database a step creates, replaces or drops (`verb`: "restore into",
/// "drop"): an identifier short enough for its temporary name, inside the sandbox naming scheme,
/// not a reserved database nor the admin connection's own.
pub fn check_database(
    flag: &str,
    name: &str,
    prefix: &str,
    admin_database: &str,
    verb: &str,
) -> Result<(), StepError> {
    check_identifier(flag, name, MAX_IDENTIFIER - RESTORING_SUFFIX.len())?;
    if RESERVED.contains(&name) || name == admin_database {
        return Err(StepError::precondition(format!(
            "{flag} {name}: refusing to {verb} {}",
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
             refusing to {verb} it; only sandbox databases are created, replaced or dropped"
        )));
    }
    Ok(())
}

/// Checks the name of a sandbox's owner role: an identifier inside the sandbox naming scheme,
/// not a keyword of SQL, a role of the server's own (`pg_*`, `postgres`) nor the admin.
pub fn check_owner_role(
    flag: &str,
    role: &str,
    prefix: &str,
    admin_user: &str,
) -> Result<(), StepError> {
    check_identifier(flag, role, MAX_IDENTIFIER)?;
    if !role.starts_with(prefix) || role == prefix {
        return Err(StepError::precondition(format!(
            "{flag} {role}: not under --sandbox-prefix {prefix}; a sandbox's owner is a role of \
             the sandbox naming scheme, never another"
        )));
    }
    if RESERVED_ROLES.contains(&role) {
        return Err(StepError::precondition(format!(
            "{flag} {role}: a role name SQL reads as a keyword ({}); name the sandbox's role \
             otherwise",
            RESERVED_ROLES.join(", ")
        )));
    }
    if role.starts_with("pg_") || role == "postgres" || role == admin_user {
        return Err(StepError::precondition(format!(
            "{flag} {role}: a role the server or the admin needs; a sandbox gets a role of its \
             own"
        )));
    }
    Ok(())
}

/// The admin connection's URL, checked: `postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
pub struct AdminUrl {
    pub options: PgConnectOptions,
    /// The URL without its password: host, port and query parameters (sslmode, ...) for libpq
    /// programs and for the logins of other roles on the same server.
    pub without_password: url::Url,
}

impl AdminUrl {
    /// Parses the URL of `--admin-url`; an error never shows it (it holds a password). The
    /// connection names itself `application_name` and never logs statements (they may carry a
    /// role's password verifier).
    pub fn parse(url: &str, application_name: &str) -> Result<AdminUrl, StepError> {
        Self::parse_flag(url, "--admin-url", application_name)
    }

    /// As [`AdminUrl::parse`], for the URL of `flag`.
    fn parse_flag(url: &str, flag: &str, application_name: &str) -> Result<AdminUrl, StepError> {
        let refused = || {
            StepError::invalid(format!(
                "{flag}: not a postgres://USER:PASSWORD@HOST:PORT/DATABASE URL (the value is not \
                 shown: it holds a password)"
            ))
        };
        let parsed = url::Url::parse(url).map_err(|_| refused())?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(refused());
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| refused())?
            .application_name(application_name)
            .disable_statement_logging();
        let mut without_password = parsed;
        let _ = without_password.set_password(None);
        Ok(AdminUrl {
            options,
            without_password,
        })
    }

    /// The database the admin connects to (PostgreSQL's default: the user's name).
    pub fn database(&self) -> &str {
        self.options
            .get_database()
            .unwrap_or(self.options.get_username())
    }

    pub fn user(&self) -> &str {
        self.options.get_username()
    }
}

/// A sandbox database's own connection (`--database-url` of run-sql and mask-db, the owner's):
/// its database checked against the naming rules before anything connects.
pub struct SandboxUrl {
    pub options: PgConnectOptions,
    pub database: String,
}

impl SandboxUrl {
    /// Parses the URL (never shown) and checks its database is a sandbox's (`verb`: what the
    /// step would do to another, in the refusal: "run scripts in", "mask").
    pub fn parse(
        url: &str,
        prefix: &str,
        verb: &str,
        application_name: &str,
    ) -> Result<SandboxUrl, StepError> {
        check_sandbox_prefix(prefix)?;
        let parsed = AdminUrl::parse_flag(url, "--database-url", application_name)?;
        let database = parsed.database().to_owned();
        check_database("--database-url", &database, prefix, "", verb)?;
        Ok(SandboxUrl {
            options: parsed.options,
            database,
        })
    }

    /// Connects, retrying a refused or reset connection (a server restarting) within `policy`.
    pub async fn connect(&self, policy: &step_kit::RetryPolicy) -> Result<PgConnection, StepError> {
        let what = format!("connect to {} (--database-url)", self.database);
        step_kit::retry(
            policy,
            &what,
            |e: &StepError| e.kind == step_kit::ErrorKind::Transient,
            || async {
                PgConnection::connect_with(&self.options)
                    .await
                    .map_err(|e| sql_error(&what, e))
            },
        )
        .await
    }
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

    /// Takes the lock of `name` if it is free; false when another session holds it.
    pub async fn try_lock(&mut self, name: &str) -> Result<bool, StepError> {
        sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(format!("restore-db/{name}"))
            .fetch_one(&mut self.conn)
            .await
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

    /// Drops a database whose name the caller checked, closing the sessions still connected to
    /// it (`WITH (FORCE)`, PostgreSQL 13 and later).
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

    /// What drop-db shows and checks before it drops `name`: `None` when there is no such
    /// database.
    pub async fn database_info(&mut self, name: &str) -> Result<Option<DatabaseInfo>, StepError> {
        sqlx::query(
            "SELECT d.datistemplate, pg_get_userbyid(d.datdba), \
             CASE WHEN d.datallowconn THEN pg_database_size(d.oid) END, \
             (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid) \
             FROM pg_database d WHERE d.datname = $1",
        )
        .bind(name)
        .fetch_optional(&mut self.conn)
        .await
        .map(|row| {
            row.map(|r| DatabaseInfo {
                is_template: r.get(0),
                owner: r.get(1),
                size_bytes: r.get(2),
                connections: r.get(3),
            })
        })
        .map_err(|e| sql_error("look up the database", e))
    }

    /// Drops role `name` (checked by the caller). PostgreSQL refuses while the role still owns
    /// objects or holds privileges anywhere on the server; that refusal is returned as it is.
    pub async fn drop_role(&mut self, name: &str) -> Result<(), StepError> {
        self.execute(format!("DROP ROLE IF EXISTS {}", quoted(name)))
            .await
    }

    /// The databases whose names start with `prefix`, in name order (the sweep's inventory).
    pub async fn databases_with_prefix(&mut self, prefix: &str) -> Result<Vec<String>, StepError> {
        sqlx::query_scalar::<_, String>(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname",
        )
        .bind(prefix)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| sql_error("list the sandbox databases", e))
    }

    /// The roles restore-db created ([`ROLE_MARKER`]) whose names start with `prefix`, in name
    /// order (the sweep's inventory).
    pub async fn marked_roles_with_prefix(
        &mut self,
        prefix: &str,
    ) -> Result<Vec<String>, StepError> {
        sqlx::query_scalar::<_, String>(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) AND \
             shobj_description(oid, 'pg_authid') = $2 ORDER BY rolname",
        )
        .bind(prefix)
        .bind(ROLE_MARKER)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| sql_error("list the sandbox roles", e))
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

/// A database as drop-db sees it before dropping it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// Marked as a template (restore-db's `--template-db`): never dropped by drop-db.
    pub is_template: bool,
    pub owner: String,
    /// `None` for a database that refuses connections (its size cannot be asked).
    pub size_bytes: Option<i64>,
    /// Sessions connected to it now.
    pub connections: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_inside_the_scheme_only() {
        let check = |name: &str| check_database("--database", name, "sbx_", "postgres", "drop");
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
        let own =
            check_database("--database", "sbx_admin", "sbx_", "sbx_admin", "drop").unwrap_err();
        assert_eq!(own.exit_code(), 3);
    }

    #[test]
    fn owner_roles_inside_the_scheme_only() {
        let check = |role: &str| check_owner_role("--owner", role, "sbx_", "sbx_admin");
        assert!(check("sbx_pr_42").is_ok());
        for (role, code) in [
            ("postgres", 3),
            ("app", 3),
            ("sbx_", 3),
            ("sbx_admin", 3),
            ("SBX_x", 2),
            ("sbx_x; DROP ROLE y", 2),
        ] {
            let err = check(role).unwrap_err();
            assert_eq!(err.exit_code(), code, "{role}: {err}");
        }
        let keyword = check_owner_role("--owner", "current_user", "cu", "admin").unwrap_err();
        assert_eq!(keyword.exit_code(), 3);
        let server = check_owner_role("--owner", "pg_monitor", "pg", "admin").unwrap_err();
        assert_eq!(server.exit_code(), 3);
    }

    #[test]
    fn admin_urls_are_checked_without_showing_them() {
        let url = AdminUrl::parse(
            "postgres://admin:s%40cret@db.internal:6432/postgres?sslmode=require",
            "test",
        )
        .unwrap();
        assert_eq!(url.options.get_host(), "db.internal");
        assert_eq!(url.options.get_port(), 6432);
        assert_eq!(url.database(), "postgres");
        assert_eq!(url.user(), "admin");
        assert!(!url.without_password.as_str().contains("cret"));
        for bad in [
            "mysql://a:hunter2@x/y",
            "hunter2",
            "postgres://a:hunter2@[x/y",
        ] {
            let Err(err) = AdminUrl::parse(bad, "test") else {
                panic!("accepted")
            };
            assert_eq!(err.exit_code(), 2);
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quoted("sbx_pr_42"), "\"sbx_pr_42\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
