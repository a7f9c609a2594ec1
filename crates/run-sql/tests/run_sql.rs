//! run-sql run for real (its binary) against PostgreSQL, the harness's git server (smart HTTP)
//! and fake-gcs-server.

use std::path::Path;
use std::process::Command;

use testkit::{FakeGcs, GitServer, Postgres, StepRun};

const DB: &str = "sbx_pr_42";
const GIT_TOKEN: &str = "git-tok-run-sql";

/// A function body with semicolons and dollar quotes, an E-string, a comment with a `;`, and a
/// table the next scripts fill.
const INIT: &str = "\
-- 0001: the schema; a comment with a semicolon
CREATE TABLE public.settings (name text PRIMARY KEY, value text NOT NULL);
CREATE FUNCTION public.greet(who text) RETURNS text LANGUAGE plpgsql AS $fn$
BEGIN
  -- a; comment inside
  RETURN $$hello; $$ || who || ';';
END;
$fn$;
INSERT INTO public.settings VALUES ('escaped', E'tab\\there; it''s');
";

/// Variables are read with current_setting, never spliced.
const SEED: &str = "\
INSERT INTO public.settings VALUES ('tenant', current_setting('var.tenant'));
INSERT INTO public.settings VALUES ('greeting', public.greet(current_setting('var.tenant')));
COPY public.settings (name, value) FROM stdin;
copied\ta\\tb
\\.
";

struct World {
    pg: Postgres,
}

impl World {
    fn start() -> World {
        let pg = Postgres::start();
        pg.psql("postgres", &format!("CREATE DATABASE {DB}"));
        World { pg }
    }

    fn run(&self, args: &[&str]) -> StepRun {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> StepRun {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_run-sql"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DB_URL", self.pg.url(DB))
            .env("SBX_OUTPUTS_DIR", dir.path())
            .env("SBX_LOG_FORMAT", "text")
            .args(["--database-url", "env:DB_URL"])
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        StepRun::read(&out, dir.path(), run_sql::OUTPUTS)
    }

    fn sql(&self, query: &str) -> String {
        self.pg.psql(DB, query)
    }

    fn ledger(&self) -> String {
        self.sql("SELECT string_agg(name, ',' ORDER BY name) FROM sandbox_steps.applied_scripts")
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn scripts_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("migrations")).unwrap();
    for (name, text) in files {
        write(&root.path().join("migrations"), name, text);
    }
    root
}

#[test]
fn scripts_run_once_in_name_order_with_variables_bound() {
    let world = World::start();
    let root = scripts_dir(&[("0002_seed.sql", SEED), ("0001_init.sql", INIT)]);
    write(&root.path().join("migrations"), "README.md", "not a script");
    let dir = root.path().join("migrations");
    let from = dir.to_str().unwrap();
    // Quotes, a backslash, a would-be statement, unicode: stored as they are.
    let tenant = "o'brien\\x'); DROP TABLE public.settings; -- ünïcödé $$";
    let first = world
        .run(&["--from", from, "--var", &format!("tenant={tenant}")])
        .ok();
    assert_eq!(first.output("applied"), "2");
    assert_eq!(first.output("skipped"), "0");
    let scripts: serde_json::Value = serde_json::from_str(first.output("scripts")).unwrap();
    assert_eq!(
        scripts,
        serde_json::json!([
            {"name": "migrations/0001_init.sql", "status": "applied"},
            {"name": "migrations/0002_seed.sql", "status": "applied"},
        ])
    );
    assert_eq!(
        world.sql("SELECT value FROM public.settings WHERE name = 'tenant'"),
        tenant
    );
    assert_eq!(
        world.sql("SELECT value FROM public.settings WHERE name = 'greeting'"),
        format!("hello; {tenant};")
    );
    assert_eq!(
        world.sql("SELECT value FROM public.settings WHERE name = 'escaped'"),
        "tab\there; it's"
    );
    assert_eq!(
        world.sql("SELECT value FROM public.settings WHERE name = 'copied'"),
        "a\tb"
    );
    assert_eq!(
        world.ledger(),
        "migrations/0001_init.sql,migrations/0002_seed.sql"
    );

    // A re-run skips both; the variable is not even needed for that.
    let again = world.run(&["--from", from]).ok();
    assert_eq!(again.output("applied"), "0");
    assert_eq!(again.output("skipped"), "2");
    assert_eq!(world.sql("SELECT count(*) FROM public.settings"), "4");
}

#[test]
fn a_failing_statement_leaves_nothing_of_its_file_and_a_rerun_completes() {
    let world = World::start();
    let bad = "CREATE TABLE public.half (id int);\nINSERT INTO public.half VALUES (1);\n\n\
               INSERT INTO public.missing VALUES (1);\nCREATE TABLE public.after (id int);\n";
    let root = scripts_dir(&[("0001_init.sql", INIT), ("0002_half.sql", bad)]);
    let from = root.path().join("migrations");
    let from = from.to_str().unwrap();
    let failed = world.run(&["--from", from]);
    assert_eq!(failed.code, Some(3), "{}", failed.text);
    assert!(
        failed.text.contains("migrations/0002_half.sql line 4")
            && failed.text.contains("\"public.missing\" does not exist")
            && failed.text.contains("nothing of this file was applied"),
        "{}",
        failed.text
    );
    assert_eq!(world.sql("SELECT to_regclass('public.half') IS NULL"), "t");
    assert_eq!(world.ledger(), "migrations/0001_init.sql");

    // The fix: the re-run applies the fixed file only.
    write(
        &root.path().join("migrations"),
        "0002_half.sql",
        &bad.replace("public.missing", "public.half"),
    );
    let fixed = world.run(&["--from", from]).ok();
    assert_eq!(
        (fixed.output("applied"), fixed.output("skipped")),
        ("1", "1")
    );
    assert_eq!(world.sql("SELECT count(*) FROM public.half"), "2");
}

#[test]
fn a_changed_applied_script_is_refused_unless_rerun_changed() {
    let world = World::start();
    let root = scripts_dir(&[(
        "0001_t.sql",
        "CREATE TABLE IF NOT EXISTS public.t (id int);\nINSERT INTO public.t VALUES (1);\n",
    )]);
    let from = root.path().join("migrations");
    let from = from.to_str().unwrap();
    world.run(&["--from", from]).ok();
    let dir = root.path().join("migrations");
    write(
        &dir,
        "0001_t.sql",
        "CREATE TABLE IF NOT EXISTS public.t (id int);\nINSERT INTO public.t VALUES (2);\n",
    );
    write(&dir, "0002_new.sql", "CREATE TABLE public.n (id int);\n");
    let refused = world.run(&["--from", from]);
    assert_eq!(refused.code, Some(3), "{}", refused.text);
    assert!(
        refused.text.contains("migrations/0001_t.sql") && refused.text.contains("--rerun-changed"),
        "{}",
        refused.text
    );
    // Nothing ran: not the changed file, not the new one after it.
    assert_eq!(
        world.sql("SELECT string_agg(id::text, ',') FROM public.t"),
        "1"
    );
    assert_eq!(world.sql("SELECT to_regclass('public.n') IS NULL"), "t");

    let rerun = world.run(&["--from", from, "--rerun-changed"]).ok();
    let scripts: serde_json::Value = serde_json::from_str(rerun.output("scripts")).unwrap();
    assert_eq!(scripts[0]["status"], "re-applied");
    assert_eq!(scripts[1]["status"], "applied");
    assert_eq!(
        world.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM public.t"),
        "1,2"
    );
}

#[test]
fn statements_that_cannot_run_in_a_transaction_need_the_marker() {
    let world = World::start();
    world.sql("CREATE TABLE public.big (id int, note text)");
    let concurrent = "CREATE INDEX CONCURRENTLY IF NOT EXISTS big_note ON public.big (note);\n";
    let root = scripts_dir(&[("0001_index.sql", concurrent)]);
    let from = root.path().join("migrations");
    let from = from.to_str().unwrap();
    let refused = world.run(&["--from", from]);
    assert_eq!(refused.code, Some(3), "{}", refused.text);
    assert!(
        refused
            .text
            .contains("cannot run inside a transaction block")
            && refused.text.contains("-- run-sql: no-transaction"),
        "{}",
        refused.text
    );
    write(
        &root.path().join("migrations"),
        "0001_index.sql",
        &format!("-- run-sql: no-transaction\n{concurrent}"),
    );
    world.run(&["--from", from]).ok();
    assert_eq!(
        world.sql("SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.big_note'::regclass"),
        "t"
    );
}

#[test]
fn scripts_come_from_a_branch_and_from_gcs_under_the_same_names() {
    let world = World::start();
    let server = GitServer::start(GIT_TOKEN);
    let url = server.create_repo(
        "infra",
        &[
            ("db/migrations/0001_init.sql", INIT),
            ("db/migrations/0002_seed.sql", SEED),
            ("db/migrations/notes.txt", "not a script"),
            ("kustomization.yaml", "resources: []\n"),
        ],
    );
    let git = |extra: &[&str]| {
        let mut args = vec![
            "--repo",
            &url,
            "--git-token",
            "env:T_GIT",
            "--var",
            "tenant=acme",
        ];
        args.extend_from_slice(extra);
        world.run_env(&args, &[("T_GIT", GIT_TOKEN)])
    };
    let from_git = git(&["--from-git", "main:db/migrations"]).ok();
    assert_eq!(from_git.output("applied"), "2");
    assert_eq!(
        world.ledger(),
        "migrations/0001_init.sql,migrations/0002_seed.sql"
    );
    // A file on its own.
    let missing = git(&["--from-git", "main:db/absent"]);
    assert_eq!(missing.code, Some(3), "{}", missing.text);

    let gcs = FakeGcs::start();
    gcs.create_bucket("acme-sql");
    for (name, text) in [
        ("nightly/migrations/0001_init.sql", INIT),
        ("nightly/migrations/0002_seed.sql", SEED),
        (
            "nightly/migrations/0003_more.sql",
            "INSERT INTO public.settings VALUES ('more', 'x');\n",
        ),
        ("nightly/migrations/old/0000.sql", "SELECT 1/0;\n"),
    ] {
        gcs.put_object("acme-sql", name, "application/sql", text.as_bytes());
    }
    let from_gcs = world
        .run_env(
            &[
                "--from",
                "gs://acme-sql/nightly/migrations/",
                "--var",
                "tenant=acme",
            ],
            &[("STORAGE_EMULATOR_HOST", &gcs.endpoint())],
        )
        .ok();
    assert_eq!(from_gcs.output("applied"), "1", "{}", from_gcs.text);
    assert_eq!(from_gcs.output("skipped"), "2");
    assert_eq!(
        world.sql("SELECT value FROM public.settings WHERE name = 'more'"),
        "x"
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let world = World::start();
    let root = scripts_dir(&[("0001_init.sql", INIT)]);
    let from = root.path().join("migrations");
    let from = from.to_str().unwrap();
    for (args, code, says) in [
        (vec!["--from", from, "--var", "Tenant=x"], 2, "--var"),
        (vec!["--from", from, "--var", "a;rm -rf /=1"], 2, "--var"),
        (
            vec!["--from", from, "--var", "x=1", "--var", "x=2"],
            2,
            "given twice",
        ),
        (vec![], 2, "exactly one of --from and --from-git"),
        (
            vec!["--from", from, "--from-git", "main:db"],
            2,
            "exactly one",
        ),
        (
            vec![
                "--from-git",
                "main:../x",
                "--repo",
                "https://git.example/x.git",
            ],
            2,
            "--from-git",
        ),
        (vec!["--from-git", "main:db"], 2, "--from-git needs --repo"),
        (
            vec![
                "--from-git",
                "ma in:db",
                "--repo",
                "https://git.example/x.git",
            ],
            2,
            "--from-git",
        ),
        (vec!["--from", "gs://"], 2, "--from"),
        (
            vec!["--from", "/nonexistent/dir"],
            3,
            "cannot read /nonexistent/dir",
        ),
        (
            vec!["--from", from, "--sandbox-prefix", "x"],
            2,
            "--sandbox-prefix",
        ),
    ] {
        let run = world.run(&args);
        assert_eq!(run.code, Some(code), "{args:?}: {}", run.text);
        assert!(run.text.contains(says), "{args:?}: {}", run.text);
    }
    // Databases outside the sandbox naming scheme.
    for database in ["postgres", "main", "sbx_", "app_prod"] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_run-sql"))
            .env_clear()
            .env("DB_URL", world.pg.url(database))
            .env("SBX_OUTPUTS_DIR", dir.path())
            .args(["--database-url", "env:DB_URL", "--from", from])
            .output()
            .unwrap();
        let run = StepRun::read(&out, dir.path(), run_sql::OUTPUTS);
        assert_eq!(run.code, Some(3), "{database}: {}", run.text);
        assert!(
            run.text.contains("refusing to run scripts in"),
            "{}",
            run.text
        );
    }
    // Psql meta-commands and transaction control in a transactional file.
    for (text, says) in [
        ("SELECT 1;\n\\i other.sql\n", "the psql meta-command"),
        (
            "CREATE TABLE public.c (id int);\nCOMMIT;\n",
            "COMMIT in a file run in one transaction",
        ),
        (
            "CREATE TABLE public.c (id int);\nSELECT 'open;\n",
            "a quote is not closed",
        ),
    ] {
        let bad = scripts_dir(&[("0001_bad.sql", text)]);
        let run = world.run(&["--from", bad.path().join("migrations").to_str().unwrap()]);
        assert_eq!(run.code, Some(3), "{text}: {}", run.text);
        assert!(run.text.contains(says), "{text}: {}", run.text);
        assert_eq!(world.sql("SELECT to_regclass('public.c') IS NULL"), "t");
    }
    // Nothing ran anywhere: no ledger either.
    assert_eq!(
        world.sql("SELECT to_regclass('sandbox_steps.applied_scripts') IS NULL"),
        "f",
        "the ledger is created before the first script runs"
    );
    assert_eq!(
        world.sql("SELECT count(*) FROM sandbox_steps.applied_scripts"),
        "0"
    );
    assert_eq!(
        world.sql("SELECT to_regclass('public.settings') IS NULL"),
        "t"
    );
}

#[test]
fn a_dry_run_says_what_would_run_and_runs_nothing() {
    let world = World::start();
    let root = scripts_dir(&[("0001_init.sql", INIT)]);
    let from = root.path().join("migrations");
    let from = from.to_str().unwrap();
    let dry = world.run(&["--from", from, "--dry-run"]).ok();
    assert!(
        dry.text
            .contains("dry run: would run migrations/0001_init.sql"),
        "{}",
        dry.text
    );
    assert_eq!(
        world.sql("SELECT to_regclass('public.settings') IS NULL"),
        "t"
    );
    assert_eq!(
        world.sql("SELECT to_regclass('sandbox_steps.applied_scripts') IS NULL"),
        "t"
    );
}
