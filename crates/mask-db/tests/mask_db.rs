//! mask-db run for real (its binary) against PostgreSQL: a shop's customers and orders masked by
//! rules, a million rows timed with the server's memory watched, strict mode, re-runs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::{Postgres, StepRun};

const KEY: &str = "masking-key-for-tests";

/// Customers with every kind of personal column, orders that carry the customer's email (joined
/// on it) and reference the customer by id.
fn shop(rows: u64) -> String {
    format!(
        "CREATE TABLE public.customers (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, \
           full_name text, phone varchar(20), notes text, country text NOT NULL, \
           api_key text, created_at timestamptz NOT NULL); \
         CREATE TABLE public.orders (id int PRIMARY KEY, customer_id bigint NOT NULL \
           REFERENCES public.customers(id), customer_email text NOT NULL, total_cents int); \
         INSERT INTO public.customers SELECT g, 'Person.' || g || '@mail.example', \
           'Given' || g || ' Family' || (g % 97), '+31 6 ' || lpad(g::text, 8, '0'), \
           CASE WHEN g % 3 = 0 THEN NULL ELSE 'likes ' || g END, 'NL', md5(g::text), \
           timestamptz '2024-01-01' + g * interval '1 second' \
           FROM generate_series(1, {rows}) g; \
         INSERT INTO public.orders SELECT g, 1 + (g * 7) % {rows}, \
           'Person.' || (1 + (g * 7) % {rows}) || '@mail.example', g FROM generate_series(1, {orders}) g;",
        orders = rows / 2
    )
}

const RULES: &str = "\
customers:
  email: email
  full_name: name
  phone: phone
  notes: null
  country: fixed:XX
  api_key: hash
  created_at: keep
orders:
  customer_email: email
";

struct World {
    pg: Postgres,
    rules: tempfile::NamedTempFile,
}

impl World {
    fn start() -> World {
        let rules = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(rules.path(), RULES).unwrap();
        World {
            pg: Postgres::start(),
            rules,
        }
    }

    fn database(&self, name: &str, rows: u64) {
        self.pg.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.pg.psql(name, &shop(rows));
    }

    fn command(&self, database: &str, outputs: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mask-db"));
        cmd.env_clear()
            .env("DB_URL", self.pg.url(database))
            .env("MASK_KEY", KEY)
            .env("SBX_OUTPUTS_DIR", outputs)
            .env("SBX_LOG_FORMAT", "text")
            .args(["--database-url", "env:DB_URL"]);
        // The test's rules and key unless the case gives its own.
        if !args.contains(&"--key") {
            cmd.args(["--key", "env:MASK_KEY"]);
        }
        if !args.contains(&"--rules") {
            cmd.args(["--rules", self.rules.path().to_str().unwrap()]);
        }
        cmd.args(args);
        cmd
    }

    fn run(&self, database: &str, args: &[&str]) -> StepRun {
        let dir = tempfile::tempdir().unwrap();
        let out = self.command(database, dir.path(), args).output().unwrap();
        StepRun::read(&out, dir.path(), mask_db::OUTPUTS)
    }

    fn sql(&self, database: &str, query: &str) -> String {
        self.pg.psql(database, query)
    }

    /// A table's content, as one digest.
    fn digest(&self, database: &str, table: &str) -> String {
        self.sql(
            database,
            &format!("SELECT md5(string_agg(t::text, E'\\n' ORDER BY t::text)) FROM {table} t"),
        )
    }
}

/// The largest private memory (RssAnon, KiB) of the server's processes serving `database`,
/// sampled while `child` runs.
fn watch_backend_memory(database: &str, child: &mut std::process::Child) -> u64 {
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let dir = entry.path();
            let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline);
            if !cmdline.starts_with("postgres: ") || !cmdline.contains(&format!(" {database} ")) {
                continue;
            }
            let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
            let anon = status
                .lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
                .unwrap_or(0);
            peak = peak.max(anon);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    peak
}

#[test]
fn a_million_customers_masked_server_side_deterministic_joinable_unique() {
    let world = World::start();
    let rows = 1_000_000;
    world.database("sbx_mask_a", rows);
    let joined_before = world.sql(
        "sbx_mask_a",
        "SELECT count(*) FROM public.orders o JOIN public.customers c ON c.email = o.customer_email",
    );
    assert_eq!(joined_before, (rows / 2).to_string());

    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = world
        .command("sbx_mask_a", dir.path(), &["--batch-rows", "200000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let peak_kib = watch_backend_memory("sbx_mask_a", &mut child);
    let out = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    let run = StepRun::read(&out, dir.path(), mask_db::OUTPUTS).ok();
    eprintln!(
        "mask-db: {rows} customers + {} orders in {:.1} s; the server's private memory for the \
         session peaked at {} MiB",
        rows / 2,
        elapsed.as_secs_f64(),
        peak_kib / 1024
    );
    assert!(
        peak_kib < 128 * 1024,
        "set-based updates hold no rows in the server's session memory: {peak_kib} KiB"
    );
    assert!(
        run.text.contains("in batches of 200000 by id"),
        "{}",
        run.text
    );
    let columns: serde_json::Value = serde_json::from_str(run.output("columns")).unwrap();
    assert_eq!(columns["public.customers.email"], rows);
    assert_eq!(columns["public.customers.notes"], rows - rows / 3);
    assert_eq!(columns["public.orders.customer_email"], rows / 2);
    assert!(columns.get("public.customers.created_at").is_none());

    let db = "sbx_mask_a";
    // Nothing of the originals is left.
    assert_eq!(
        world.sql(
            db,
            "SELECT count(*) FROM public.customers WHERE email LIKE '%mail.example' OR full_name \
             LIKE 'Given%' OR phone LIKE '+31%' OR notes IS NOT NULL OR country <> 'XX' OR \
             api_key = md5(id::text)"
        ),
        "0"
    );
    // Valid shapes, unique emails, joins still match.
    assert_eq!(
        world.sql(
            db,
            "SELECT count(*) FROM public.customers WHERE email !~ '^user-[0-9a-f]{16}@example\\.com$' \
             OR full_name !~ '^[A-Z][a-z]+ [A-Z][a-z]+$' OR phone !~ '^\\+1555[0-9]{7}$'"
        ),
        "0"
    );
    assert_eq!(
        world.sql(db, "SELECT count(DISTINCT email) FROM public.customers"),
        rows.to_string()
    );
    assert_eq!(
        world.sql(
            db,
            "SELECT count(*) FROM public.orders o JOIN public.customers c ON c.email = o.customer_email"
        ),
        joined_before,
        "the same email gives the same mask in both tables"
    );
    assert_eq!(
        world.sql(
            db,
            "SELECT count(*) FROM public.orders o JOIN public.customers c ON c.id = o.customer_id"
        ),
        joined_before
    );
    assert_eq!(
        world.sql(db, "SELECT min(created_at)::date FROM public.customers"),
        "2024-01-01",
        "keep keeps"
    );

    // A re-run masks nothing (the markers say so) and changes nothing.
    let before = world.digest(db, "public.customers");
    let again = world.run(db, &[]).ok();
    assert_eq!(again.output("masked-values"), "0");
    assert_eq!(again.output("already-masked"), "7");
    assert_eq!(world.digest(db, "public.customers"), before);
}

#[test]
fn the_same_key_gives_the_same_values_and_another_key_others() {
    let world = World::start();
    for db in ["sbx_det_a", "sbx_det_b", "sbx_det_c"] {
        world.database(db, 2_000);
    }
    world.run("sbx_det_a", &["--batch-rows", "300"]).ok();
    // One statement instead of batches: the same values.
    world.run("sbx_det_b", &["--batch-rows", "100000"]).ok();
    assert_eq!(
        world.digest("sbx_det_a", "public.customers"),
        world.digest("sbx_det_b", "public.customers")
    );
    assert_eq!(
        world.digest("sbx_det_a", "public.orders"),
        world.digest("sbx_det_b", "public.orders")
    );
    let dir = tempfile::tempdir().unwrap();
    let out = world
        .command("sbx_det_c", dir.path(), &[])
        .env("MASK_KEY", "another-key")
        .output()
        .unwrap();
    StepRun::read(&out, dir.path(), mask_db::OUTPUTS).ok();
    assert_ne!(
        world.sql(
            "sbx_det_a",
            "SELECT email FROM public.customers WHERE id = 1"
        ),
        world.sql(
            "sbx_det_c",
            "SELECT email FROM public.customers WHERE id = 1"
        )
    );
    // The key never shows, in the markers either.
    let markers = world.sql(
        "sbx_det_a",
        "SELECT string_agg(t::text, ' ') FROM sandbox_steps.masked_columns t",
    );
    assert!(!markers.contains(KEY), "{markers}");
}

#[test]
fn strict_mode_refuses_a_personal_column_without_a_rule_before_changing_anything() {
    let world = World::start();
    let db = "sbx_strict";
    world.database(db, 100);
    // A migration added a column nobody wrote a rule for.
    world.sql(
        db,
        "ALTER TABLE public.customers ADD COLUMN billing_email text; \
         UPDATE public.customers SET billing_email = email; \
         CREATE TABLE public.sessions (id int PRIMARY KEY, seen_from inet, state text)",
    );
    let before = world.digest(db, "public.customers");
    let refused = world.run(db, &[]);
    assert_eq!(refused.code, Some(3), "{}", refused.text);
    assert!(
        refused.text.contains("public.customers.billing_email")
            && refused
                .text
                .contains("public.sessions.seen_from (its type inet)")
            && !refused.text.contains("public.sessions.state"),
        "{}",
        refused.text
    );
    assert_eq!(
        world.digest(db, "public.customers"),
        before,
        "nothing masked"
    );

    let allowed = world.run(db, &["--allow-unmasked"]).ok();
    let unmasked: Vec<String> = serde_json::from_str(allowed.output("unmasked")).unwrap();
    assert_eq!(unmasked.len(), 2, "{unmasked:?}");
    assert_eq!(
        world.sql(
            db,
            "SELECT count(*) FROM public.customers WHERE email LIKE '%mail.example'"
        ),
        "0"
    );
}

#[test]
fn rules_that_do_not_fit_and_bad_flags_change_nothing() {
    let world = World::start();
    let db = "sbx_bad";
    world.database(db, 10);
    let before = world.digest(db, "public.customers");
    let rules_file = |text: &str| {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    };
    for (rules, code, says) in [
        ("customers:\n  id: email\n", 3, "email masks text columns"),
        (
            "customers:\n  country: null\n",
            3,
            "null for a NOT NULL column",
        ),
        (
            "customers:\n  nickname: name\n",
            3,
            "public.customers.nickname: no such column",
        ),
        (
            "clients:\n  email: email\n",
            3,
            "public.clients.email: no such column",
        ),
        (
            "customers:\n  email: rot13\n",
            2,
            "customers.email: unknown strategy \"rot13\"",
        ),
        ("customers: [email]\n", 2, "the masking rules"),
    ] {
        let file = rules_file(rules);
        let run = world.run(
            db,
            &["--rules", file.path().to_str().unwrap(), "--allow-unmasked"],
        );
        assert_eq!(run.code, Some(code), "{rules}: {}", run.text);
        assert!(run.text.contains(says), "{rules}: {}", run.text);
    }
    // Keyed rules without a key: the template passes an empty SBX_KEY when none is set.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mask-db"))
        .env_clear()
        .env("DB_URL", world.pg.url(db))
        .env("SBX_KEY", "")
        .env("SBX_OUTPUTS_DIR", dir.path())
        .args(["--database-url", "env:DB_URL"])
        .args(["--rules", world.rules.path().to_str().unwrap()])
        .output()
        .unwrap();
    let run = StepRun::read(&out, dir.path(), mask_db::OUTPUTS);
    assert_eq!(run.code, Some(2), "{}", run.text);
    assert!(
        run.text.contains("--key: the rules use keyed strategies"),
        "{}",
        run.text
    );
    // Databases outside the naming scheme, hostile names.
    for database in ["postgres", "main", "sbx_", "prod_app"] {
        let run = world.run(database, &[]);
        assert_eq!(run.code, Some(3), "{database}: {}", run.text);
        assert!(run.text.contains("refusing to mask"), "{}", run.text);
    }
    for prefix in ["x", "../x", ";rm -rf /"] {
        let run = world.run(db, &["--sandbox-prefix", prefix]);
        assert_eq!(run.code, Some(2), "{prefix}: {}", run.text);
    }
    // A dry run reports and masks nothing.
    let dry = world.run(db, &["--dry-run"]).ok();
    assert!(
        dry.text.contains("dry run: would mask public.customers"),
        "{}",
        dry.text
    );
    assert_eq!(world.digest(db, "public.customers"), before);
    assert!(!dry.text.contains(KEY));
}

#[test]
fn a_run_stopped_half_way_resumes_after_its_committed_batches() {
    let world = World::start();
    for db in ["sbx_resume", "sbx_whole"] {
        world.database(db, 5_000);
    }
    // A trigger that refuses one row of the third batch: the run stops there (the server
    // refusing an update, exit 3), its first two batches committed.
    world.sql(
        "sbx_resume",
        "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.id = 2500 THEN RAISE EXCEPTION 'refused: row %', NEW.id; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse BEFORE UPDATE ON public.customers FOR EACH ROW \
         EXECUTE FUNCTION public.refuse()",
    );
    let stopped = world.run("sbx_resume", &["--batch-rows", "1000"]);
    assert_eq!(stopped.code, Some(3), "{}", stopped.text);
    assert!(
        stopped.text.contains("refused: row 2500"),
        "{}",
        stopped.text
    );
    assert_eq!(
        world.sql(
            "sbx_resume",
            "SELECT count(*) FILTER (WHERE email LIKE 'user-%') || ' ' || \
             (SELECT last_key FROM sandbox_steps.masking_progress) FROM public.customers"
        ),
        "2000 2000",
        "two batches committed with their progress"
    );
    world.sql("sbx_resume", "DROP TRIGGER refuse ON public.customers");
    let resumed = world.run("sbx_resume", &["--batch-rows", "1000"]).ok();
    assert!(
        resumed
            .text
            .contains("resuming after key 2000 (2000 rows masked before)"),
        "{}",
        resumed.text
    );
    let columns: serde_json::Value = serde_json::from_str(resumed.output("columns")).unwrap();
    assert_eq!(columns["public.customers.email"], 3000);
    // No row masked twice: the same values as a database masked in one go.
    world.run("sbx_whole", &[]).ok();
    assert_eq!(
        world.digest("sbx_resume", "public.customers"),
        world.digest("sbx_whole", "public.customers")
    );
    assert_eq!(
        world.sql(
            "sbx_resume",
            "SELECT count(*) FROM sandbox_steps.masking_progress"
        ),
        "0"
    );
}
