//! drop-db run for real (its binary) against PostgreSQL 15: sandbox databases and roles made the
//! way restore-db makes them (the role marked with pg_admin::ROLE_MARKER, the database owned by
//! it), dropped; everything that is not a sandbox's refused before anything changes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{Postgres, StepRun};

const PASSWORD: &str = "adm1n-s3cret-pw";

struct World {
    pg: Postgres,
}

impl World {
    fn start() -> World {
        World {
            pg: Postgres::start_with_password(PASSWORD),
        }
    }

    /// A sandbox as restore-db leaves it: its marked role owning its database, with a table.
    fn sandbox(&self, name: &str) {
        self.role(name, true);
        self.pg.psql(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER {name} TEMPLATE template0"),
        );
        self.pg.psql(
            name,
            &format!(
                "CREATE TABLE t (id int); ALTER TABLE t OWNER TO {name}; INSERT INTO t VALUES (1)"
            ),
        );
    }

    fn role(&self, name: &str, marked: bool) {
        self.pg.psql(
            "postgres",
            &format!("CREATE ROLE {name} LOGIN PASSWORD 'x'"),
        );
        if marked {
            self.pg.psql(
                "postgres",
                &format!("COMMENT ON ROLE {name} IS '{}'", pg_admin::ROLE_MARKER),
            );
        }
    }

    fn databases(&self) -> Vec<String> {
        self.list("SELECT datname FROM pg_database WHERE datname LIKE 'sbx%' ORDER BY 1")
    }

    fn roles(&self) -> Vec<String> {
        self.list("SELECT rolname FROM pg_roles WHERE rolname LIKE 'sbx%' ORDER BY 1")
    }

    fn list(&self, sql: &str) -> Vec<String> {
        self.pg
            .psql("postgres", sql)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn run(&self, args: &[&str]) -> StepRun {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_drop-db"))
            .env_clear()
            .env("ADMIN_DATABASE_URL", self.pg.url("postgres"))
            .env("SBX_OUTPUTS_DIR", dir.path())
            .env("SBX_LOG_FORMAT", "text")
            .args(["--admin-url", "env:ADMIN_DATABASE_URL"])
            .args(args)
            .output()
            .unwrap();
        StepRun::read(&out, dir.path(), drop_db::OUTPUTS).hiding(&[PASSWORD])
    }

    /// A session connected to `database` until it is killed.
    fn session(&self, database: &str) -> Child {
        let child = Command::new(self.pg.bindir().join("psql"))
            .args([
                "-X",
                "-q",
                "-d",
                &self.pg.url(database),
                "-c",
                "SELECT pg_sleep(600)",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while self.pg.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'"),
        ) == "0"
        {
            assert!(started.elapsed() < Duration::from_secs(10), "no session");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }
}

#[test]
fn drops_the_database_a_restores_leftover_and_the_role_closing_sessions() {
    let w = World::start();
    w.sandbox("sbx_pr_42");
    // What a restore-db killed half way leaves: the temporary database, owned by the same role.
    w.pg.psql(
        "postgres",
        "CREATE DATABASE sbx_pr_42_restoring OWNER sbx_pr_42 TEMPLATE template0",
    );
    w.sandbox("sbx_pr_7");
    let mut session = w.session("sbx_pr_42");

    let run = w.run(&["--database", "sbx_pr_42"]).ok();
    assert_eq!(run.output("database"), "sbx_pr_42");
    assert_eq!(run.output("dropped"), "true");
    assert_eq!(run.output("role-dropped"), "true");
    assert_eq!(run.output("connections"), "1", "{}", run.text);
    assert_eq!(w.databases(), ["sbx_pr_7"]);
    assert_eq!(w.roles(), ["sbx_pr_7"]);
    let _ = session.kill();
    let _ = session.wait();

    // A re-run finds nothing and says so.
    let again = w.run(&["--database", "sbx_pr_42"]).ok();
    assert_eq!(again.output("dropped"), "false");
    assert_eq!(again.output("role-dropped"), "false");
    assert!(again.text.contains("nothing to drop"), "{}", again.text);

    // A crash after the database but before the role: the re-run drops the role.
    w.pg.psql("postgres", "DROP DATABASE sbx_pr_7");
    let rest = w.run(&["--database", "sbx_pr_7"]).ok();
    assert_eq!(rest.output("dropped"), "false");
    assert_eq!(rest.output("role-dropped"), "true");
    assert!(w.roles().is_empty());
}

#[test]
fn dry_run_shows_what_it_would_drop_and_changes_nothing() {
    let w = World::start();
    w.sandbox("sbx_pr_42");
    let run = w.run(&["--database", "sbx_pr_42", "--dry-run"]).ok();
    assert_eq!(run.output("dropped"), "false");
    assert_eq!(run.output("role-dropped"), "false");
    assert!(
        run.text
            .contains("would drop database sbx_pr_42 (owner sbx_pr_42, "),
        "{}",
        run.text
    );
    assert!(
        run.text.contains("would drop role sbx_pr_42"),
        "{}",
        run.text
    );
    assert_eq!(w.databases(), ["sbx_pr_42"]);
    assert_eq!(w.roles(), ["sbx_pr_42"]);
}

#[test]
fn names_outside_the_scheme_are_refused_before_connecting() {
    let w = World::start();
    w.sandbox("sbx_pr_42");
    let long = format!("sbx_{}", "a".repeat(200));
    for (database, code) in [
        ("postgres", 3),
        ("template1", 3),
        ("main", 3),
        ("integration", 3),
        ("sbx_", 3),
        ("../x", 2),
        (";rm -rf /", 2),
        ("sbx_pr_42; DROP DATABASE postgres", 2),
        ("sbx-pr-42", 2),
        ("Sbx_pr_42", 2),
        ("sbx_prüfung", 2),
        ("sbx_pr_42\u{202e}", 2),
        ("", 2),
        (long.as_str(), 2),
    ] {
        let run = w.run(&["--database", database]);
        assert_eq!(run.code, Some(code), "{database:?}: {}", run.text);
    }
    let owner = w.run(&["--database", "sbx_pr_42", "--owner", "postgres"]);
    assert_eq!(owner.code, Some(3), "{}", owner.text);
    let prefix = w.run(&["--database", "sbx_pr_42", "--sandbox-prefix", "s"]);
    assert_eq!(prefix.code, Some(2), "{}", prefix.text);
    let admin = w.run(&["--database", "sbx_pr_42", "--admin-url", "env:NOT_SET"]);
    assert_eq!(admin.code, Some(2), "{}", admin.text);
    assert_eq!(w.databases(), ["sbx_pr_42"]);
    assert_eq!(w.roles(), ["sbx_pr_42"]);
}

#[test]
fn what_restore_db_did_not_create_is_refused_and_nothing_changes() {
    let w = World::start();
    // A role of the same name that someone made by hand (no marker).
    w.role("sbx_pr_1", false);
    w.pg.psql("postgres", "CREATE DATABASE sbx_pr_1 OWNER sbx_pr_1");
    let run = w.run(&["--database", "sbx_pr_1"]);
    assert_eq!(run.code, Some(3), "{}", run.text);
    assert!(run.text.contains("did not create it"), "{}", run.text);

    // A database in the scheme owned by another role than the sandbox's.
    w.role("sbx_pr_2", true);
    w.pg.psql("postgres", "CREATE DATABASE sbx_pr_2 OWNER sbx_pr_1");
    let run = w.run(&["--database", "sbx_pr_2"]);
    assert_eq!(run.code, Some(3), "{}", run.text);
    assert!(run.text.contains("owned by sbx_pr_1"), "{}", run.text);

    // A marked role that has been given server-wide rights since.
    w.sandbox("sbx_pr_3");
    w.pg.psql("postgres", "ALTER ROLE sbx_pr_3 CREATEDB");
    let run = w.run(&["--database", "sbx_pr_3"]);
    assert_eq!(run.code, Some(3), "{}", run.text);
    assert!(run.text.contains("CREATEDB"), "{}", run.text);

    assert_eq!(w.databases(), ["sbx_pr_1", "sbx_pr_2", "sbx_pr_3"]);
    assert_eq!(w.roles(), ["sbx_pr_1", "sbx_pr_2", "sbx_pr_3"]);
}

#[test]
fn the_template_of_the_sandboxes_is_never_dropped_nor_touched() {
    let w = World::start();
    // restore-db --template-db: a template restored once, each sandbox a copy of it.
    w.sandbox("sbx_template");
    w.pg.psql(
        "postgres",
        "ALTER DATABASE sbx_template WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
    );
    w.role("sbx_pr_5", true);
    w.pg.psql(
        "postgres",
        "CREATE DATABASE sbx_pr_5 TEMPLATE sbx_template OWNER sbx_pr_5",
    );
    let refused = w.run(&["--database", "sbx_template"]);
    assert_eq!(refused.code, Some(3), "{}", refused.text);
    assert!(refused.text.contains("template"), "{}", refused.text);

    w.run(&["--database", "sbx_pr_5"]).ok();
    assert_eq!(w.databases(), ["sbx_template"]);
    assert_eq!(
        w.pg.psql(
            "postgres",
            "SELECT datistemplate || ' ' || datallowconn FROM pg_database WHERE datname = \
             'sbx_template'"
        ),
        "true false"
    );
    // It still makes sandboxes.
    w.role("sbx_pr_6", true);
    w.pg.psql(
        "postgres",
        "CREATE DATABASE sbx_pr_6 TEMPLATE sbx_template OWNER sbx_pr_6",
    );
    assert_eq!(w.pg.psql("sbx_pr_6", "SELECT count(*) FROM t"), "1");
}

#[test]
fn a_role_still_owning_objects_elsewhere_is_exit_3_with_the_way_out() {
    let w = World::start();
    w.sandbox("sbx_pr_8");
    w.sandbox("sbx_pr_9");
    // sbx_pr_8's role owns a table in another sandbox's database.
    w.pg.psql(
        "sbx_pr_9",
        "CREATE TABLE stray (id int); ALTER TABLE stray OWNER TO sbx_pr_8",
    );
    let run = w.run(&["--database", "sbx_pr_8"]);
    assert_eq!(run.code, Some(3), "{}", run.text);
    assert!(run.text.contains("DROP OWNED BY sbx_pr_8"), "{}", run.text);
    // The database is gone, the role stays: after the way out, a re-run finishes.
    assert_eq!(w.databases(), ["sbx_pr_9"]);
    w.pg.psql("sbx_pr_9", "DROP OWNED BY sbx_pr_8");
    let rest = w.run(&["--database", "sbx_pr_8"]).ok();
    assert_eq!(rest.output("role-dropped"), "true");
    assert_eq!(w.roles(), ["sbx_pr_9"]);
}

#[test]
fn an_unreachable_server_is_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_drop-db"))
        .env_clear()
        .env(
            "ADMIN_DATABASE_URL",
            format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"),
        )
        .env("SBX_OUTPUTS_DIR", dir.path())
        .args([
            "--admin-url",
            "env:ADMIN_DATABASE_URL",
            "--database",
            "sbx_pr_42",
            "--timeout",
            "3s",
        ])
        .output()
        .unwrap();
    let run = StepRun::read(&out, dir.path(), drop_db::OUTPUTS).hiding(&[PASSWORD]);
    assert_eq!(run.code, Some(4), "{}", run.text);
}
