//! restore-db run for real (its binary) against PostgreSQL 15, fake-gcs-server and OpenBao: dumps
//! made with Debian's pg_dump from tests/fixtures/integration.sql, restored, and compared with
//! the source table by table.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::{gzip, FakeGcs, OpenBao, Postgres, StepRun};

const BUCKET: &str = "acme-backups";
const SOURCE: &str = "integration";

/// The servers of one test, with the integration database loaded.
struct World {
    pg: Postgres,
    gcs: FakeGcs,
}

impl World {
    fn start() -> World {
        World::with(Postgres::start())
    }

    fn with(pg: Postgres) -> World {
        let gcs = FakeGcs::start();
        gcs.create_bucket(BUCKET);
        pg.psql("postgres", &format!("CREATE DATABASE {SOURCE}"));
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/integration.sql");
        let sql = std::fs::read_to_string(fixture).unwrap();
        pg.psql(SOURCE, &sql);
        World { pg, gcs }
    }

    /// `pg_dump` of the integration database with extra flags (e.g. `-Fc`).
    fn dump(&self, flags: &[&str]) -> Vec<u8> {
        let out = Command::new(self.pg.bindir().join("pg_dump"))
            .args(flags)
            .arg(self.pg.url(SOURCE))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn upload(&self, name: &str, data: &[u8]) {
        self.gcs
            .put_object(BUCKET, name, "application/octet-stream", data);
    }

    fn step(&self, outputs: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_restore-db"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("STORAGE_EMULATOR_HOST", self.gcs.endpoint())
            .env("ADMIN_DATABASE_URL", self.pg.url("postgres"))
            .env("SBX_OUTPUTS_DIR", outputs)
            .env("SBX_LOG_FORMAT", "text")
            .args(["--admin-url", "env:ADMIN_DATABASE_URL"]);
        cmd
    }

    fn run(&self, args: &[&str]) -> StepRun {
        self.run_with(args, |_| {})
    }

    fn run_with(&self, args: &[&str], adjust: impl FnOnce(&mut Command)) -> StepRun {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = self.step(dir.path());
        cmd.args(args);
        adjust(&mut cmd);
        let out = cmd.output().unwrap();
        StepRun::read(&out, dir.path(), restore_db::OUTPUTS)
    }

    fn databases(&self) -> Vec<String> {
        self.pg
            .psql(
                "postgres",
                "SELECT datname FROM pg_database WHERE NOT datistemplate OR datname LIKE 'sbx%' \
                 ORDER BY 1",
            )
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Every user table's row count and content checksum, the sequences' values and the
    /// materialized view's rows: what a restore must reproduce.
    fn fingerprint(&self, database: &str) -> BTreeMap<String, String> {
        let tables = self.pg.psql(
            database,
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT \
             IN ('pg_catalog', 'information_schema') ORDER BY 1",
        );
        let mut out = BTreeMap::new();
        for table in tables.lines() {
            let sum = self.pg.psql(
                database,
                &format!(
                    "SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, E'\\n' ORDER BY \
                     t::text), '')) FROM {table} t"
                ),
            );
            out.insert(table.to_owned(), sum);
        }
        let sequences = self.pg.psql(
            database,
            "SELECT string_agg(format('%I.%I=%s', schemaname, sequencename, last_value), ',' \
             ORDER BY schemaname, sequencename) FROM pg_sequences",
        );
        out.insert("sequences".into(), sequences);
        out.insert(
            "state_counts".into(),
            self.pg.psql(
                database,
                "SELECT string_agg(state || '=' || n, ',' ORDER BY state) FROM public.state_counts",
            ),
        );
        out
    }

    /// The restored database works, not only holds the rows: functions, the trigger, the view,
    /// the extensions, sequences carrying on where the source stopped.
    fn assert_alive(&self, database: &str) {
        let pg = &self.pg;
        assert_eq!(
            pg.psql(database, "SELECT \"Sales\".\"Total\"(1) = (SELECT sum(amount) FROM \"Sales\".\"Orders\" WHERE customer_id = 1)"),
            "t"
        );
        let audited = pg.psql(database, "SELECT count(*) FROM public.audit_log");
        pg.psql(
            database,
            "INSERT INTO \"Sales\".\"Orders\" (customer_id, amount) VALUES (2, 1.5)",
        );
        assert_eq!(
            pg.psql(database, "SELECT count(*) FROM public.audit_log"),
            (audited.parse::<u64>().unwrap() + 1).to_string(),
            "the trigger fires"
        );
        assert_eq!(
            pg.psql(
                database,
                "SELECT max(\"OrderId\") FROM \"Sales\".\"Orders\""
            ),
            "2001"
        );
        assert_eq!(
            pg.psql(
                database,
                "SELECT count(*) FROM public.customers WHERE email = 'ADA@example.COM'"
            ),
            "1",
            "citext"
        );
        assert_eq!(
            pg.psql(database, "SELECT length(gen_random_bytes(4))"),
            "4",
            "pgcrypto"
        );
        assert_eq!(
            pg.psql(database, "SELECT count(*) FROM public.customer_totals"),
            "4"
        );
    }
}

/// A table large enough that its rows are split over several COPY chunks with --jobs 2 (about
/// 9 MB of rows), with an index and a foreign key to build afterwards.
const BIG_TABLE: &str = "\
CREATE TABLE public.events (id bigint PRIMARY KEY, customer_id bigint REFERENCES public.customers(id), \
payload text, at timestamptz);
INSERT INTO public.events SELECT g, 1 + g % 4, md5(g::text) || E'\\t' || repeat('x', g % 20), \
timestamptz '2024-01-01' + g * interval '1 minute' FROM generate_series(1, 150000) g;
CREATE INDEX events_customer_idx ON public.events (customer_id, at);";

#[test]
fn plain_gzip_and_custom_dumps_restore_the_same_database() {
    let world = World::start();
    world.pg.psql(SOURCE, BIG_TABLE);
    let source = world.fingerprint(SOURCE);
    assert!(source["public.events"].starts_with("150000 "));
    let plain = world.dump(&[]);
    world.upload("integration/app-2024-05-01.sql", &plain);
    world.upload("integration/app-2024-05-02.sql.gz", &gzip(&plain));
    world.upload("integration/app-2024-05-03.dump", &world.dump(&["-Fc"]));
    world.upload("integration/manifest.json", b"{}");
    world.upload("other/app-2024-06-01.sql", b"SELECT 1;");

    let cases = [
        (
            "sbx_plain",
            "gs://acme-backups/integration/app-2024-05-01.sql",
            "1",
        ),
        (
            "sbx_plain_jobs",
            "gs://acme-backups/integration/app-2024-05-01.sql",
            "2",
        ),
        (
            "sbx_gzip",
            "gs://acme-backups/integration/app-2024-05-02.sql.gz",
            "2",
        ),
        // The folder: the newest by the date in the names is the custom-format one.
        ("sbx_custom", "gs://acme-backups/integration/", "1"),
        (
            "sbx_custom_jobs",
            "gs://acme-backups/integration/app-2024-05-03.dump",
            "2",
        ),
    ];
    for (database, backup, jobs) in cases {
        let run = world
            .run(&[
                "--backup",
                backup,
                "--database",
                database,
                "--owner",
                "sbx_owner",
                "--jobs",
                jobs,
            ])
            .ok();
        assert_eq!(run.output("restored"), "true");
        assert_eq!(run.output("database"), database);
        if backup.ends_with('/') {
            assert_eq!(
                run.output("backup"),
                "gs://acme-backups/integration/app-2024-05-03.dump"
            );
            assert!(
                run.text
                    .contains("the newest of 3 by the timestamp in their names"),
                "{}",
                run.text
            );
        }
        assert_eq!(run.output("tables"), "5", "{database}");
        assert_eq!(run.output("rows"), "154004", "{database}");
        assert_eq!(world.fingerprint(database), source, "{database}");
        // Everything belongs to the sandbox's owner, nothing to the integration server's roles.
        assert_eq!(
            world.pg.psql(
                database,
                "SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname \
                 NOT IN ('pg_catalog', 'information_schema')"
            ),
            "sbx_owner",
            "{database}"
        );
        assert_eq!(
            world.pg.psql(
                "postgres",
                &format!(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{database}'"
                )
            ),
            "sbx_owner"
        );
        world.assert_alive(database);
    }
    assert!(!world.databases().iter().any(|d| d.ends_with("_restoring")));
}

#[test]
fn if_exists_fail_skip_and_recreate() {
    let world = World::start();
    world.upload("integration/app-2024-05-01.sql.gz", &gzip(&world.dump(&[])));
    let args = [
        "--backup",
        "gs://acme-backups/integration/",
        "--database",
        "sbx_pr_42",
    ];
    let first = world.run(&args).ok();
    assert_eq!(first.output("restored"), "true");
    world
        .pg
        .psql("sbx_pr_42", "CREATE TABLE public.sandbox_work (note text)");

    let skip = world.run(&args).ok();
    assert_eq!(skip.output("restored"), "false");
    // What the database holds, read from the comment the first run left on it.
    assert_eq!(skip.output("tables"), "4");
    assert_eq!(skip.output("rows"), "4004");
    assert_eq!(
        world.pg.psql(
            "sbx_pr_42",
            "SELECT to_regclass('public.sandbox_work') IS NOT NULL"
        ),
        "t"
    );

    let fail = world.run(&[&args[..], &["--if-exists", "fail"]].concat());
    assert_eq!(fail.code, Some(3), "{}", fail.text);
    assert!(
        fail.text.contains("database sbx_pr_42 exists"),
        "{}",
        fail.text
    );

    let recreate = world
        .run(&[&args[..], &["--if-exists", "recreate"]].concat())
        .ok();
    assert_eq!(recreate.output("restored"), "true");
    assert_eq!(
        world.pg.psql(
            "sbx_pr_42",
            "SELECT to_regclass('public.sandbox_work') IS NULL"
        ),
        "t"
    );
    assert_eq!(world.fingerprint("sbx_pr_42"), world.fingerprint(SOURCE));

    let dry = world
        .run(&[&args[..], &["--if-exists", "recreate", "--dry-run"]].concat())
        .ok();
    assert_eq!(dry.output("restored"), "false");
    assert!(dry.text.contains("dry run: would restore"), "{}", dry.text);
    assert_eq!(
        world.pg.psql("postgres", "SELECT shobj_description(oid, 'pg_database') LIKE 'restore-db: gs://acme-backups/integration/app-2024-05-01.sql.gz generation %' FROM pg_database WHERE datname = 'sbx_pr_42'"),
        "t"
    );
}

#[test]
fn hostile_names_and_bad_flags_change_nothing() {
    let world = World::start();
    world.upload("integration/app-2024-05-01.sql", &world.dump(&[]));
    let before = world.databases();
    let long = format!("sbx_{}", "a".repeat(200));
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["--database", "postgres"],
            3,
            "refusing to restore into",
        ),
        (
            vec!["--database", "template1"],
            3,
            "a database PostgreSQL itself needs",
        ),
        (
            vec!["--database", SOURCE],
            3,
            "outside the sandbox naming scheme",
        ),
        (
            vec!["--database", "main"],
            3,
            "outside the sandbox naming scheme",
        ),
        (
            vec!["--database", "x; DROP DATABASE y"],
            2,
            "lower-case identifier",
        ),
        (
            vec!["--database", "sbx_pr_42\"; DROP DATABASE integration; --"],
            2,
            "lower-case identifier",
        ),
        (vec!["--database", "../x"], 2, "lower-case identifier"),
        (vec!["--database", "sbx/pr/42"], 2, "lower-case identifier"),
        (
            vec!["--database", "sbx_prüfung"],
            2,
            "lower-case identifier",
        ),
        (vec!["--database", ";rm -rf /"], 2, "lower-case identifier"),
        (
            vec!["--database", long.as_str()],
            2,
            "at most 53 characters",
        ),
        (
            vec!["--database", "sbx_pr_42", "--template-db", "sbx_pr_42"],
            3,
            "the template must be a database of its own",
        ),
        (
            vec!["--database", "sbx_pr_42", "--template-db", "template0"],
            3,
            "PostgreSQL itself needs",
        ),
        (
            vec!["--database", "sbx_pr_42", "--owner", "postgres"],
            3,
            "not under --sandbox-prefix",
        ),
        (
            vec!["--database", "sbx_pr_42", "--owner", "pg_read_all_data"],
            3,
            "not under --sandbox-prefix",
        ),
        // A production role: never taken over (its password would go to Vault).
        (
            vec!["--database", "sbx_pr_42", "--owner", "app_prod"],
            3,
            "not under --sandbox-prefix",
        ),
        // Named like a sandbox's, but restore-db did not create it.
        (
            vec!["--database", "sbx_pr_42", "--owner", "sbx_someone"],
            3,
            "restore-db did not create it",
        ),
        (
            vec![
                "--sandbox-prefix",
                "cu",
                "--database",
                "cu_pr_42",
                "--owner",
                "current_user",
            ],
            3,
            "a role name SQL reads as a keyword",
        ),
        // Credentials only below the sandboxes' root of the mount.
        (
            vec![
                "--database",
                "sbx_pr_42",
                "--owner-secret",
                "vault:secret/platform/db",
            ],
            3,
            "not below --owner-secret-root sandboxes",
        ),
        (
            vec!["--database", "sbx_pr_42", "--owner-secret", "vault:sys/x"],
            2,
            "the mount must be",
        ),
        (
            vec!["--database", "sbx_pr_42", "--owner", "Robert'); DROP"],
            2,
            "lower-case identifier",
        ),
        (
            vec!["--database", "sbx_pr_42", "--sandbox-prefix", ""],
            2,
            "--sandbox-prefix",
        ),
        (vec!["--database", "sbx_pr_42", "--jobs", "0"], 2, "--jobs"),
        (
            vec![
                "--database",
                "sbx_pr_42",
                "--owner-secret",
                "vault:secret/x#password",
            ],
            2,
            "no #key",
        ),
    ];
    world.pg.psql(
        "postgres",
        "CREATE ROLE sbx_someone LOGIN PASSWORD 'theirs'",
    );
    for (args, code, message) in cases {
        let run = world.run(&[&["--backup", "gs://acme-backups/integration/"], &args[..]].concat());
        assert_eq!(run.code, Some(code), "{args:?}: {}", run.text);
        assert!(run.text.contains(message), "{args:?}: {}", run.text);
    }
    // Bad backup locations: not GCS, a traversal, nothing under the prefix, a missing object.
    for (backup, code, message) in [
        ("s3://acme-backups/x.sql", 2, "not a gs:// URL"),
        ("gs://acme-backups/../x.sql", 2, ". and .. segments"),
        (
            "gs://acme-backups/nothing-here/",
            3,
            "no backup under \"gs://acme-backups/nothing-here/\"",
        ),
        (
            "gs://acme-backups/integration/missing.sql",
            3,
            "missing.sql",
        ),
        ("gs://no-such-bucket/x/", 3, "no-such-bucket"),
    ] {
        let run = world.run(&["--backup", backup, "--database", "sbx_pr_42"]);
        assert_eq!(run.code, Some(code), "{backup}: {}", run.text);
        assert!(run.text.contains(message), "{backup}: {}", run.text);
    }
    // A literal URL on the command line would show in argv.
    let literal = world.run(&[
        "--backup",
        "gs://acme-backups/integration/",
        "--database",
        "sbx_pr_42",
        "--admin-url",
        "postgres://postgres:hunter2@127.0.0.1/postgres",
    ]);
    assert_eq!(literal.code, Some(2), "{}", literal.text);
    assert!(!literal.text.contains("hunter2"));
    assert_eq!(world.databases(), before);
}

#[test]
fn a_dump_the_server_refuses_leaves_no_database() {
    let world = World::start();
    let mut dump = world.dump(&[]);
    dump.extend_from_slice(b"\nCREATE EXTENSION no_such_extension;\n");
    world.upload("bad/app.sql", &dump);
    let run = world.run(&[
        "--backup",
        "gs://acme-backups/bad/app.sql",
        "--database",
        "sbx_bad",
    ]);
    assert_eq!(run.code, Some(3), "{}", run.text);
    let lines = std::str::from_utf8(&dump).unwrap().lines().count();
    assert!(
        run.text.contains(&format!("dump line {lines}")),
        "{}",
        run.text
    );
    assert!(run.text.contains("no_such_extension"), "{}", run.text);

    // Rows the server refuses, loaded over two connections: the error comes back, nothing hangs.
    let mut bad_rows = world.dump(&[]);
    bad_rows.extend_from_slice(
        b"\nCREATE TABLE public.bad (n int);\nCOPY public.bad (n) FROM stdin;\n1\nx\n\\.\n",
    );
    world.upload("bad/rows.sql", &bad_rows);
    let rows = world.run(&[
        "--backup",
        "gs://acme-backups/bad/rows.sql",
        "--database",
        "sbx_rows",
        "--jobs",
        "2",
    ]);
    assert_eq!(rows.code, Some(3), "{}", rows.text);
    assert!(
        rows.text.contains("invalid input syntax for type integer"),
        "{}",
        rows.text
    );

    // Truncated in the middle of the rows: gzip's end is missing.
    let gz = gzip(&world.dump(&[]));
    world.upload("bad/cut.sql.gz", &gz[..gz.len() * 2 / 3]);
    let cut = world.run(&[
        "--backup",
        "gs://acme-backups/bad/cut.sql.gz",
        "--database",
        "sbx_cut",
    ]);
    assert_eq!(cut.code, Some(3), "{}", cut.text);

    // Custom format without pg_restore on PATH: said plainly.
    world.upload("bad/app.dump", &world.dump(&["-Fc"]));
    let no_tool = world.run_with(
        &[
            "--backup",
            "gs://acme-backups/bad/app.dump",
            "--database",
            "sbx_custom",
        ],
        |cmd| {
            cmd.env("PATH", "/nonexistent");
        },
    );
    assert_eq!(no_tool.code, Some(3), "{}", no_tool.text);
    assert!(
        no_tool.text.contains("pg_restore is not on PATH"),
        "{}",
        no_tool.text
    );

    let left: Vec<String> = world
        .databases()
        .into_iter()
        .filter(|d| d.starts_with("sbx"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn killed_mid_restore_a_rerun_restores_it_whole() {
    let world = World::start();
    world.pg.psql(
        SOURCE,
        "CREATE TABLE public.bulk AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 1500000) g",
    );
    world.upload("integration/app-2024-05-01.sql", &world.dump(&[]));
    let args = [
        "--backup",
        "gs://acme-backups/integration/",
        "--database",
        "sbx_pr_9",
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut child = world
        .step(dir.path())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until rows are arriving in the temporary database, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let copying = world.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'sbx_pr_9_restoring' AND query LIKE 'COPY public.bulk%'",
        );
        if copying != "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restore never reached the bulk table"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!world.databases().contains(&"sbx_pr_9".to_owned()));
    let run = world.run(&args).ok();
    assert_eq!(run.output("restored"), "true");
    assert_eq!(world.fingerprint("sbx_pr_9"), world.fingerprint(SOURCE));
    assert!(!world.databases().iter().any(|d| d.ends_with("_restoring")));
}

#[test]
fn the_owner_secret_is_written_once_and_works() {
    let world = World::with(Postgres::start_with_password("admin-pw"));
    let bao = OpenBao::start();
    world.upload("integration/app-2024-05-01.sql", &world.dump(&[]));
    let args = [
        "--backup",
        "gs://acme-backups/integration/",
        "--database",
        "sbx_pr_42",
        "--owner-secret",
        "vault:secret/sandboxes/sbx-pr-42/db",
    ];
    let vault = |cmd: &mut Command| {
        cmd.env("VAULT_ADDR", bao.addr())
            .env("VAULT_TOKEN", bao.root_token());
    };
    let first = world.run_with(&args, vault).ok();
    let secret = bao.api("GET", "secret/data/sandboxes/sbx-pr-42/db", None);
    let data = &secret["data"]["data"];
    let password = data["password"].as_str().unwrap().to_owned();
    assert_eq!(password.len(), 43);
    assert_eq!(data["username"], "sbx_pr_42");
    assert_eq!(data["database"], "sbx_pr_42");
    assert_eq!(data["host"], "127.0.0.1");
    assert_eq!(data["port"], world.pg.port().to_string());
    let url = data["url"].as_str().unwrap();
    // The generated password opens the database as its owner (the server checks passwords).
    let out = Command::new(world.pg.bindir().join("psql"))
        .args(["-X", "-A", "-t", "-d", url, "-c"])
        .arg("SELECT current_user || ' ' || count(*) FROM public.customers")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sbx_pr_42 4",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong = Command::new(world.pg.bindir().join("psql"))
        .args([
            "-X",
            "-d",
            &url.replace(&password, "wrong"),
            "-c",
            "SELECT 1",
        ])
        .output()
        .unwrap();
    assert!(!wrong.status.success());

    // A re-run, even recreating the database, keeps the secret (still version 1) and the role's
    // password.
    let again = world
        .run_with(&[&args[..], &["--if-exists", "recreate"]].concat(), vault)
        .ok();
    let metadata = bao.api("GET", "secret/metadata/sandboxes/sbx-pr-42/db", None);
    assert_eq!(metadata["data"]["current_version"], 1);
    let out = Command::new(world.pg.bindir().join("psql"))
        .args(["-X", "-A", "-t", "-d", url, "-c", "SELECT 1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    for run in [&first, &again] {
        assert!(!run.text.contains(&password), "the password was logged");
        assert!(
            !run.text.contains("admin-pw"),
            "the admin password was logged"
        );
    }

    // A secret holding someone else's credentials is not overwritten.
    bao.put_kv2(
        "sandboxes/sbx-pr-7/db",
        serde_json::json!({"username": "someone", "password": "x"}),
    );
    let clash = world.run_with(
        &[
            "--backup",
            "gs://acme-backups/integration/",
            "--database",
            "sbx_pr_7",
            "--owner-secret",
            "vault:secret/sandboxes/sbx-pr-7/db",
        ],
        vault,
    );
    assert_eq!(clash.code, Some(3), "{}", clash.text);
    assert!(!world.databases().contains(&"sbx_pr_7".to_owned()));
}

#[test]
fn the_template_is_restored_once_and_copied_per_sandbox() {
    let world = World::start();
    world.pg.psql(SOURCE, BIG_TABLE);
    world.upload("integration/app-2024-05-01.sql.gz", &gzip(&world.dump(&[])));
    let source = world.fingerprint(SOURCE);
    let run = |database: &str| {
        world
            .run(&[
                "--backup",
                "gs://acme-backups/integration/",
                "--database",
                database,
                "--owner",
                database,
                "--template-db",
                "sbx_template",
            ])
            .ok()
    };
    let first = run("sbx_pr_1");
    assert!(
        first.text.contains(
            "restoring gs://acme-backups/integration/app-2024-05-01.sql.gz into it first"
        ),
        "{}",
        first.text
    );
    let second = run("sbx_pr_2");
    assert!(
        second.text.contains("holds this backup already"),
        "{}",
        second.text
    );
    assert_eq!(second.output("rows"), "154004");
    for (database, owner) in [("sbx_pr_1", "sbx_pr_1"), ("sbx_pr_2", "sbx_pr_2")] {
        assert_eq!(world.fingerprint(database), source);
        assert_eq!(
            world.pg.psql(database, "SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"),
            owner
        );
        world.assert_alive(database);
    }
    // The template is nobody's sandbox: it takes no connections and its objects stay its own.
    assert_eq!(
        world.pg.psql("postgres", "SELECT datistemplate::text || ' ' || datallowconn::text FROM pg_database WHERE datname = 'sbx_template'"),
        "true false"
    );

    // A newer backup: the template is restored anew before the next copy.
    world.pg.psql(
        SOURCE,
        "INSERT INTO public.empty_table VALUES (1, 'new night')",
    );
    world.upload("integration/app-2024-05-02.sql.gz", &gzip(&world.dump(&[])));
    let third = run("sbx_pr_3");
    assert!(third.text.contains("into it first"), "{}", third.text);
    assert_eq!(
        world
            .pg
            .psql("sbx_pr_3", "SELECT note FROM public.empty_table"),
        "new night"
    );
    assert_eq!(
        world
            .pg
            .psql("sbx_pr_1", "SELECT count(*) FROM public.empty_table"),
        "0"
    );
}

/// Masking rules for the fixture: every personal-looking column has one (strict mode).
const MASK_RULES: &str = "\
customers:
  email: email
  DisplayName: name
  notes: null
  api_key: hash
audit_log:
  table_name: keep
";

#[test]
fn masking_happens_before_the_name_and_once_in_the_template() {
    let world = World::start();
    world.upload("integration/app-2024-05-01.sql", &world.dump(&[]));
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rules.path(), MASK_RULES).unwrap();
    let rules_path = rules.path().to_str().unwrap().to_owned();
    let run = |database: &str, template: Option<&str>| {
        let mut args = vec![
            "--backup",
            "gs://acme-backups/integration/",
            "--database",
            database,
            "--mask-rules",
            &rules_path,
            "--mask-key",
            "env:MASK_KEY",
        ];
        if let Some(t) = template {
            args.extend(["--template-db", t]);
        }
        world
            .run_with(&args, |cmd| {
                cmd.env("MASK_KEY", "the-masking-key");
            })
            .ok()
    };
    let emails = |database: &str| {
        world.pg.psql(
            database,
            "SELECT string_agg(email || '|' || coalesce(\"DisplayName\", '-') || '|' || \
             coalesce(notes, '-'), ',' ORDER BY id) FROM public.customers",
        )
    };
    let first = run("sbx_pr_1", Some("sbx_template"));
    assert!(
        first
            .text
            .contains("masking sbx_template_restoring before it gets its name"),
        "{}",
        first.text
    );
    let masked = emails("sbx_pr_1");
    assert!(
        !masked.contains("example.com|Ada") && !masked.contains("bob@"),
        "{masked}"
    );
    assert_eq!(masked.matches("@example.com|").count(), 4, "{masked}");
    assert!(!masked.contains("tab"), "notes emptied: {masked}");
    // The second copy reuses the masked template: masked already, nothing masked again.
    let second = run("sbx_pr_2", Some("sbx_template"));
    assert!(
        second.text.contains("holds this backup already"),
        "{}",
        second.text
    );
    assert!(!second.text.contains("masking sbx"), "{}", second.text);
    assert_eq!(emails("sbx_pr_2"), masked);
    // The copy carries the markers (so mask-db after run-sql masks only new columns), owned by
    // the sandbox's owner like everything else in it.
    assert_eq!(
        world.pg.psql(
            "sbx_pr_2",
            "SELECT count(*) || ' ' || pg_get_userbyid(c.relowner) FROM \
             sandbox_steps.masked_columns, pg_class c WHERE c.oid = \
             'sandbox_steps.masked_columns'::regclass GROUP BY c.relowner"
        ),
        "4 sbx_pr_2"
    );
    // Without a template: masked before the rename, with the same values (same key).
    let direct = run("sbx_pr_3", None);
    assert!(
        direct
            .text
            .contains("masking sbx_pr_3_restoring before it gets its name"),
        "{}",
        direct.text
    );
    assert_eq!(emails("sbx_pr_3"), masked);
    // Other rules: the template is restored and masked anew.
    std::fs::write(
        rules.path(),
        MASK_RULES.replace("  api_key: hash\n", "  api_key: hash\n  profile: null\n"),
    )
    .unwrap();
    let third = run("sbx_pr_4", Some("sbx_template"));
    assert!(third.text.contains("into it first"), "{}", third.text);
    assert_eq!(
        world
            .pg
            .psql("sbx_pr_4", "SELECT count(profile) FROM public.customers"),
        "0"
    );

    // Strict: a personal-looking column without a rule fails the restore; no database appears.
    std::fs::write(rules.path(), "customers:\n  email: email\n").unwrap();
    let strict = world.run_with(
        &[
            "--backup",
            "gs://acme-backups/integration/",
            "--database",
            "sbx_pr_5",
            "--mask-rules",
            &rules_path,
            "--mask-key",
            "env:MASK_KEY",
        ],
        |cmd| {
            cmd.env("MASK_KEY", "the-masking-key");
        },
    );
    assert_eq!(strict.code, Some(3), "{}", strict.text);
    assert!(
        strict.text.contains("public.customers.DisplayName"),
        "{}",
        strict.text
    );
    let databases = world.databases();
    assert!(
        !databases.iter().any(|d| d.starts_with("sbx_pr_5")),
        "{databases:?}"
    );
}

/// An admin as managed servers give one: CREATEDB and CREATEROLE, not superuser; on a server that
/// checks passwords, so the owner's login is real.
fn managed_admin(world: &World) -> String {
    world.pg.psql(
        "postgres",
        "CREATE ROLE restore_admin LOGIN CREATEDB CREATEROLE PASSWORD 'managed-pw'",
    );
    format!(
        "postgres://restore_admin:managed-pw@127.0.0.1:{}/postgres",
        world.pg.port()
    )
}

/// The admin's password still opens the server.
fn admin_can_log_in(world: &World, url: &str) -> bool {
    Command::new(world.pg.bindir().join("psql"))
        .args(["-X", "-A", "-t", "-d", url, "-c", "SELECT 1"])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn the_dump_runs_with_the_owners_rights_only() {
    let world = World::with(Postgres::start_with_password("admin-pw"));
    let admin = managed_admin(&world);
    world.pg.psql("postgres", "CREATE DATABASE victim");
    world
        .pg
        .psql("victim", "CREATE TABLE precious AS SELECT 1 AS n");
    let as_admin = |cmd: &mut Command| {
        cmd.env("ADMIN_DATABASE_URL", &admin);
    };

    // A real dump restores with this admin, plain and custom format, and the owner owns it all.
    world.upload("integration/app.sql", &world.dump(&[]));
    world.upload("integration/app.dump", &world.dump(&["-Fc"]));
    let source = world.fingerprint(SOURCE);
    for (database, backup) in [("sbx_plain", "app.sql"), ("sbx_custom", "app.dump")] {
        let location = format!("gs://acme-backups/integration/{backup}");
        world
            .run_with(&["--backup", &location, "--database", database], as_admin)
            .ok();
        assert_eq!(world.fingerprint(database), source, "{database}");
        world.assert_alive(database);
    }

    // Each of these reaches outside the sandbox; as the owner, the server refuses it.
    let hostile = [
        "DROP DATABASE victim;",
        "ALTER DATABASE victim RENAME TO gone;",
        "ALTER ROLE restore_admin WITH PASSWORD 'pwned';",
        "CREATE ROLE intruder LOGIN CREATEROLE;",
        "RESET ROLE;\nDROP DATABASE victim;",
        "SET SESSION AUTHORIZATION restore_admin;\nDROP DATABASE victim;",
        "SET ROLE restore_admin;\nDROP DATABASE victim;",
        "DO $$ BEGIN EXECUTE 'ALTER ROLE restore_admin PASSWORD ''pwned'''; END $$;",
        "GRANT restore_admin TO CURRENT_USER;\nSET ROLE restore_admin;\nDROP DATABASE victim;",
        "ALTER ROLE CURRENT_USER CREATEDB;",
        "CREATE EXTENSION dblink;",
        "COPY (SELECT 1) TO '/tmp/restore-db-escape';",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'victim' AND pid <> pg_backend_pid() AND pg_terminate_backend(pid) IS NULL;\nDELETE FROM pg_catalog.pg_database WHERE datname = 'victim';",
    ];
    for (i, sql) in hostile.iter().enumerate() {
        let name = format!("hostile/{i}.sql");
        world.upload(
            &name,
            format!("SET client_encoding = 'UTF8';\n{sql}\n").as_bytes(),
        );
        let database = format!("sbx_hostile_{i}");
        let run = world.run_with(
            &[
                "--backup",
                &format!("gs://acme-backups/{name}"),
                "--database",
                &database,
            ],
            as_admin,
        );
        assert_eq!(run.code, Some(3), "{sql}: {}", run.text);
        assert!(!world.databases().contains(&database), "{sql}");
        assert_eq!(
            world.pg.psql("victim", "SELECT n FROM precious"),
            "1",
            "{sql}"
        );
        assert!(
            admin_can_log_in(&world, &admin),
            "{sql}: the admin's password changed"
        );
        assert_eq!(
            world.pg.psql(
                "postgres",
                "SELECT count(*) FROM pg_roles WHERE rolname = 'intruder' OR (rolname LIKE 'sbx%' \
                 AND (rolcreatedb OR rolcreaterole OR rolsuper))"
            ),
            "0",
            "{sql}"
        );
    }
    assert!(!Path::new("/tmp/restore-db-escape").exists());

    // A --no-owner dump: everything restored is the owner's, who can write to it.
    world.upload("integration/no-owner.sql", &world.dump(&["--no-owner"]));
    world
        .run_with(
            &[
                "--backup",
                "gs://acme-backups/integration/no-owner.sql",
                "--database",
                "sbx_no_owner",
            ],
            as_admin,
        )
        .ok();
    assert_eq!(
        world.pg.psql(
            "sbx_no_owner",
            "SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname NOT IN \
             ('pg_catalog', 'information_schema')"
        ),
        "sbx_no_owner"
    );
    assert_eq!(
        world.pg.psql(
            "sbx_no_owner",
            "SET ROLE sbx_no_owner; INSERT INTO public.customers (email) VALUES \
             ('x@example.com') RETURNING email"
        ),
        "x@example.com"
    );

    // An owner role that gained server-wide rights is not used.
    world.pg.psql("postgres", "ALTER ROLE sbx_plain CREATEDB");
    let powerful = world.run_with(
        &[
            "--backup",
            "gs://acme-backups/integration/app.sql",
            "--database",
            "sbx_plain",
            "--if-exists",
            "recreate",
        ],
        as_admin,
    );
    assert_eq!(powerful.code, Some(3), "{}", powerful.text);
    assert!(powerful.text.contains("CREATEDB"), "{}", powerful.text);
    assert!(!powerful.text.contains("managed-pw"));
}

#[test]
fn untrusted_extensions_only_as_the_admin_and_only_when_allowed() {
    let world = World::start();
    let dump = "SET client_encoding = 'UTF8';\nCREATE EXTENSION IF NOT EXISTS pg_buffercache WITH \
                SCHEMA public;\nCOMMENT ON EXTENSION pg_buffercache IS 'shared buffer cache';\n\
                CREATE TABLE public.t (n int);\n";
    world.upload("ext/app.sql", dump.as_bytes());
    let args = [
        "--backup",
        "gs://acme-backups/ext/app.sql",
        "--database",
        "sbx_ext",
    ];
    let refused = world.run(&args);
    assert_eq!(refused.code, Some(3), "{}", refused.text);
    assert!(refused.text.contains("pg_buffercache"), "{}", refused.text);
    assert!(refused.text.contains("dump line 2"), "{}", refused.text);
    let allowed = world
        .run(&[&args[..], &["--extensions-as-admin", "pg_buffercache"]].concat())
        .ok();
    assert!(
        allowed
            .text
            .contains("as the admin (--extensions-as-admin)"),
        "{}",
        allowed.text
    );
    assert_eq!(
        world.pg.psql(
            "sbx_ext",
            "SELECT extname || ' ' || pg_catalog.pg_get_userbyid(c.relowner) FROM pg_extension, \
             pg_class c WHERE extname = 'pg_buffercache' AND c.relname = 't'"
        ),
        "pg_buffercache sbx_ext"
    );
}

/// Forwards `port` to `to` on loopback, starting only after `after`: until then a connection to
/// `port` is refused, as a database server still starting (or a proxy sidecar) refuses it.
fn forward_later(port: u16, to: u16, after: Duration) {
    use std::net::{TcpListener, TcpStream};
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let server = TcpStream::connect(("127.0.0.1", to)).unwrap();
            for (mut from, mut into) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
}

#[test]
fn a_refused_connection_is_retried_until_the_server_answers() {
    let world = World::start();
    world.upload("integration/app.sql", &world.dump(&[]));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    forward_later(port, world.pg.port(), Duration::from_secs(2));
    let started = Instant::now();
    let run = world
        .run_with(
            &[
                "--backup",
                "gs://acme-backups/integration/app.sql",
                "--database",
                "sbx_late",
            ],
            |cmd| {
                cmd.env(
                    "ADMIN_DATABASE_URL",
                    format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                );
            },
        )
        .ok();
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        run.text
            .contains("connect to the database server failed, retrying"),
        "{}",
        run.text
    );
    assert_eq!(run.output("restored"), "true");
}

#[test]
fn help_shows_the_steps_own_deadline() {
    let out = Command::new(env!("CARGO_BIN_EXE_restore-db"))
        .env_clear()
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    let timeout = &help[help.find("--timeout").unwrap()..];
    let timeout = &timeout[..timeout.find("\n  -").unwrap_or(timeout.len())];
    assert!(timeout.contains("[default: 45m]"), "{timeout}");
}
