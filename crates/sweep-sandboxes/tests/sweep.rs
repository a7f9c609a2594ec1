//! sweep-sandboxes run for real (its binary) against the harness's servers: git smart HTTP (the
//! infrastructure repository's branches, the app-of-apps repository's Application files), the
//! real Kubernetes API server (namespaces), PostgreSQL (databases and roles), fake-gcs-server
//! (buckets), OpenBao (the sandboxes' Vault folders) and the GitHub double (pull requests).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use testkit::{FakeGcs, GitHubDouble, GitServer, KubeApiServer, OpenBao, Postgres, StepRun};

const GIT_TOKEN: &str = "sweep-git-token";
const GITHUB_TOKEN: &str = "sweep-github-token";
const HOUR: u64 = 3600;

/// What a sandbox has in each backend.
#[derive(Clone, Copy)]
struct Has {
    branch: bool,
    application: bool,
    namespace: bool,
    database: bool,
    bucket: bool,
    secrets: bool,
}

const ALL: Has = Has {
    branch: true,
    application: true,
    namespace: true,
    database: true,
    bucket: true,
    secrets: true,
};

struct World {
    git: GitServer,
    github: GitHubDouble,
    api: KubeApiServer,
    pg: Postgres,
    gcs: FakeGcs,
    bao: OpenBao,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl World {
    /// admit-sandbox's ConfigMap in `argo`, with these pull requests' sandboxes holding a slot
    /// (and one request queued: not a sandbox yet; and sandbox 2 recorded asleep).
    fn admit(&self, prs: &[u64]) {
        self.api.create_namespace("argo");
        let mut data = serde_json::Map::new();
        for pr in prs {
            data.insert(
                format!("admitted.sbx-pr-{pr}"),
                json!(json!({"pr": pr, "requested": "2026-12-01T09:00:00Z",
                             "since": "2026-12-01T09:00:01Z"})
                .to_string()),
            );
        }
        data.insert(
            "asleep.sbx-pr-2".into(),
            json!(json!({"pr": 2, "since": "2026-12-01T20:00:00Z"}).to_string()),
        );
        data.insert(
            "queued.sbx-pr-60".into(),
            json!(json!({"pr": 60, "requested": "2026-12-01T09:00:00Z",
                         "renewed": "2026-12-01T09:00:01Z"})
            .to_string()),
        );
        let (status, body) = self.api.request(
            "POST",
            "/api/v1/namespaces/argo/configmaps",
            Some(json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "sandbox-admission"}, "data": data})),
            None,
        );
        assert_eq!(status, 201, "{body}");
    }

    /// The servers, with the sandboxes of `fleet` (number → what it has) made in each backend,
    /// and `lookalikes` beside them.
    fn start(fleet: &BTreeMap<u64, Has>) -> World {
        let git = GitServer::start(GIT_TOKEN);
        git.create_repo("infra", &[("kustomize/README.md", "environments\n")]);
        let mut apps: Vec<(String, String)> = fleet
            .iter()
            .filter(|(_, has)| has.application)
            .map(|(pr, _)| {
                (
                    format!("apps/sandboxes/sbx-pr-{pr}.yaml"),
                    format!("kind: Application\nmetadata: {{name: sbx-pr-{pr}}}\n"),
                )
            })
            .collect();
        apps.push(("apps/sandboxes/README.md".into(), "sandboxes\n".into()));
        apps.push((
            "apps/sandboxes/sbx-pr-9.yaml.orig".into(),
            "a backup someone left\n".into(),
        ));
        let files: Vec<(&str, &str)> = apps.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
        git.create_repo("gitops", &files);
        let main = git.rev_parse("infra", "refs/heads/main").unwrap();

        let api = KubeApiServer::start();
        let pg = Postgres::start();
        let gcs = FakeGcs::start();
        let bao = OpenBao::start();
        let github = GitHubDouble::start("acme", "platform", GITHUB_TOKEN);

        let backends_started = Instant::now();
        let mut sql = String::new();
        let mut refs = String::new();
        let mut create_databases = Vec::new();
        for (pr, has) in fleet {
            if has.branch {
                refs.push_str(&format!("create refs/heads/sbx-pr-{pr} {main}\n"));
            }
            if has.namespace {
                api.create_namespace(&format!("apps-sbx-pr-{pr}"));
            }
            if has.database {
                sql.push_str(&format!(
                    "CREATE ROLE sbx_pr_{pr}; COMMENT ON ROLE sbx_pr_{pr} IS '{}';\n",
                    pg_admin::ROLE_MARKER
                ));
            }
            if has.bucket {
                gcs.create_bucket(&format!("acme-sbx-pr-{pr}"));
            }
            if has.secrets {
                bao.api(
                    "POST",
                    &format!("secret/data/sandboxes/sbx-pr-{pr}/db"),
                    Some(json!({"data": {"username": format!("sbx_pr_{pr}")}})),
                );
            }
        }
        eprintln!(
            "branches, namespaces, buckets, secrets made in {:.1?}",
            backends_started.elapsed()
        );
        if !sql.is_empty() {
            pg.psql("postgres", &sql);
        }
        for (pr, has) in fleet {
            if has.database {
                create_databases.push("-c".to_owned());
                create_databases.push(format!("CREATE DATABASE sbx_pr_{pr} OWNER sbx_pr_{pr}"));
            }
        }
        // In one git and one psql process each (CREATE DATABASE runs outside a transaction: one
        // -c per statement).
        update_refs(&git, "infra", &refs);
        let databases_started = Instant::now();
        if !create_databases.is_empty() {
            let out = Command::new(pg.bindir().join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    &pg.url("postgres"),
                ])
                .args(&create_databases)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        eprintln!(
            "{} databases created in {:.1?}",
            create_databases.len() / 2,
            databases_started.elapsed()
        );
        // Names that start like a sandbox's and are not one: left alone.
        git.update_ref("infra", "refs/heads/sbx-pr-7-old", &main);
        api.create_namespace("apps-sbx-pr-main");
        pg.psql("postgres", "CREATE DATABASE sbx_pr_007");
        gcs.create_bucket("acme-sbx-pr-12x");
        // Not in the scheme at all.
        git.update_ref("infra", "refs/heads/feature-x", &main);
        api.create_namespace("apps-integration");
        World {
            git,
            github,
            api,
            pg,
            gcs,
            bao,
        }
    }

    fn sweep(&self, extra: &[&str]) -> StepRun {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = self.api.admin_kubeconfig();
        let repo: &[&str] = if extra.contains(&"--github-repo") {
            &[]
        } else {
            &["--github-repo", "acme/platform"]
        };
        let out = Command::new(env!("CARGO_BIN_EXE_sweep-sandboxes"))
            .env_clear()
            .env("SBX_OUTPUTS_DIR", dir.path())
            .env("SBX_LOG_FORMAT", "text")
            .env("GIT_TOKEN", GIT_TOKEN)
            .env("GITHUB_TOKEN", GITHUB_TOKEN)
            .env("ADMIN_URL", self.pg.url("postgres"))
            .env("VAULT_TOKEN", self.bao.root_token())
            .env("STORAGE_EMULATOR_HOST", self.gcs.endpoint())
            .args(repo)
            .args([
                "--github-token",
                "env:GITHUB_TOKEN",
                "--github-api-url",
                &self.github.url(),
                "--infra-repo",
                &self.git.url("infra"),
                "--apps-repo",
                &self.git.url("gitops"),
                "--git-token",
                "env:GIT_TOKEN",
                "--namespace-prefix",
                "apps-",
                "--admin-url",
                "env:ADMIN_URL",
                "--bucket-prefix",
                "acme-",
                "--gcs-project",
                "test-project",
                "--vault-addr",
                &self.bao.addr(),
                "--admission-namespace",
                "argo",
                "--vault-token",
                "env:VAULT_TOKEN",
                "--kubeconfig",
            ])
            .arg(&kubeconfig)
            .args(["--require-label", "create-sandbox"])
            .args(extra)
            .output()
            .unwrap();
        StepRun::read(&out, dir.path(), sweep_sandboxes::OUTPUTS).hiding(&[GIT_TOKEN, GITHUB_TOKEN])
    }
}

/// `git update-ref --stdin` in the server's repository `name`.
fn update_refs(git: &GitServer, name: &str, commands: &str) {
    use std::io::Write;
    let mut child = Command::new(testkit::git_binary())
        .args(["update-ref", "--stdin"])
        .current_dir(git.repo_path(name))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(commands.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// A JSON-list output of the run.
fn json(run: &StepRun, name: &str) -> Vec<Value> {
    serde_json::from_str(run.output(name)).unwrap()
}

/// The pull request numbers of a JSON list, by action.
/// The keys of a JSON object, e.g. an item of an output list the workflow `sweep` loops over.
fn keys_of(item: &Value) -> BTreeSet<&str> {
    item.as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

fn by_action(list: &[Value]) -> BTreeMap<String, BTreeSet<u64>> {
    let mut out: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for item in list {
        let action = item["action"].as_str().unwrap_or("warn").to_owned();
        let pr = item["pr-number"].as_str().unwrap().parse().unwrap();
        out.entry(action).or_default().insert(pr);
    }
    out
}

#[test]
fn a_fleet_in_mixed_states_gets_one_decision_each() {
    let half = Has {
        branch: false,
        application: false,
        namespace: false,
        database: true,
        bucket: false,
        secrets: true,
    };
    let incomplete = Has {
        branch: true,
        application: false,
        namespace: true,
        database: false,
        bucket: false,
        secrets: false,
    };
    let mut fleet = BTreeMap::new();
    for pr in 1..=51 {
        let has = match pr {
            51 => Has {
                application: false,
                namespace: false,
                database: false,
                bucket: false,
                secrets: false,
                ..ALL
            },
            39..=42 => half,
            43..=45 => Has {
                database: false,
                bucket: false,
                secrets: false,
                ..ALL
            },
            48..=50 => incomplete,
            _ => ALL,
        };
        fleet.insert(pr, has);
    }
    let world = World::start(&fleet);
    let t = now();
    let labelled = ["create-sandbox"];
    for pr in 1..=50u64 {
        let head = format!("feature/pr-{pr}");
        match pr {
            1..=20 | 48..=50 => world
                .github
                .add_pull_with(pr, "open", &head, &labelled, t - HOUR),
            21..=25 => world
                .github
                .add_pull_with(pr, "open", &head, &labelled, t - 60 * HOUR),
            26..=30 => world
                .github
                .add_pull_with(pr, "open", &head, &labelled, t - 80 * HOUR),
            31..=33 => world.github.add_pull_with(
                pr,
                "open",
                &head,
                &["create-sandbox", "sandbox-keep"],
                t - 500 * HOUR,
            ),
            34..=42 => world
                .github
                .add_pull_with(pr, "closed", &head, &labelled, t - 2 * HOUR),
            43..=45 => {} // no pull request of that number
            46..=47 => world.github.add_pull_with(pr, "open", &head, &[], t - HOUR),
            51 => world
                .github
                .add_pull_with(pr, "closed", &head, &labelled, t - HOUR),
            _ => unreachable!(),
        }
    }
    // What counts as activity (the pull request's timeline): a comment by someone with write
    // access, `/extend` being one; not a stranger's, a bot's, a reader's `/extend` or the card,
    // though each moves GitHub's updated_at.
    world.github.set_permission("alice", "write");
    world.github.set_permission("bob", "maintain");
    world.github.set_permission("carol", "read");
    world
        .github
        .add_comment_at(21, "alice", "/extend\nstill reviewing", t - HOUR);
    world
        .github
        .add_comment_at(23, "bob", "looks good", t - 2 * HOUR);
    world
        .github
        .add_comment_at(26, "stranger", "any news?", t - HOUR);
    world
        .github
        .add_comment_at(27, "ci[bot]", "coverage 81%", t - HOUR);
    world
        .github
        .add_comment_at(28, "carol", "/extend", t - HOUR);
    world.github.add_comment_at(
        29,
        testkit::TOKEN_USER,
        "<!-- sandbox-steps:card pr=29 environment=sbx-pr-29 at=2026-11-30T10:00:00Z -->\n### x",
        t - HOUR,
    );
    assert!(world.github.pull(26).unwrap().updated_at >= t - HOUR);
    // A pull request whose head is sandbox 51's branch (CI bumping an image there).
    world.github.add_pull(99, "open", "sbx-pr-51");
    // Slots under the cap: 1's (a live sandbox), and 52's, whose create was admitted and left
    // nothing else before its pull request was closed: the slot alone is an orphan to delete.
    world.admit(&[1, 52]);
    world.github.add_pull_with(
        52,
        "closed",
        "feature/pr-52",
        &["create-sandbox"],
        now() - HOUR,
    );

    let run = world.sweep(&[]).ok();
    let deletes = json(&run, "deletes");
    let decided = by_action(&deletes);
    assert_eq!(decided["expire"], (26..=30).collect(), "{}", run.text);
    assert_eq!(
        decided["orphan"],
        (34..=47).chain([52]).collect(),
        "{}",
        run.text
    );
    assert_eq!(
        by_action(&json(&run, "warnings"))["warn"],
        [22, 24, 25].into(),
        "{}",
        run.text
    );
    assert_eq!(run.outputs["sandboxes"], "52");
    assert_eq!(
        run.outputs["summary"],
        "52 sandboxes: 29 keep, 3 warn, 5 expire, 15 orphan"
    );
    // One request for the repository, one per sandbox, one timeline per open, labelled, unkept
    // pull request (33), one permission per collaborator whose comment is newer than the rest
    // (alice, bob, carol), one for the branch left alone.
    assert_eq!(run.outputs["github-requests"], "90", "{}", run.text);
    // The reasons, as the table shows them.
    let line = |pr: u64| {
        run.text
            .lines()
            .find(|l| l.contains(&format!("sbx-pr-{pr} ")))
            .unwrap_or_else(|| panic!("no row for {pr}: {}", run.text))
            .to_owned()
    };
    assert!(
        line(1).contains("keep") && line(1).contains("active 1h ago (push)"),
        "{}",
        line(1)
    );
    assert!(line(1).contains("secrets admission"), "{}", line(1));
    assert!(
        line(2).contains("secrets asleep") && line(2).ends_with("; asleep"),
        "{}",
        line(2)
    );
    assert!(
        line(52).contains("orphan") && line(52).contains(" admission "),
        "{}",
        line(52)
    );
    assert!(
        line(21).contains("keep") && line(21).contains("(/extend by @alice)"),
        "{}",
        line(21)
    );
    assert!(line(23).contains("(comment by @bob)"), "{}", line(23));
    for pr in 26..=29 {
        assert!(line(pr).contains("expire"), "{}", line(pr));
    }
    // 60 h idle: 12 h left (a minute less once the seconds of this test have passed).
    assert!(
        line(22).contains("inactive for 2d 12h: expires in 1"),
        "{}",
        line(22)
    );
    assert!(
        line(27).contains("inactive for 3d 8h (ttl 3d)"),
        "{}",
        line(27)
    );
    assert!(
        line(32).contains("label sandbox-keep keeps it"),
        "{}",
        line(32)
    );
    assert!(line(35).contains("pull request closed"), "{}", line(35));
    assert!(
        line(40).contains("database role secrets") && line(40).contains("orphan"),
        "{}",
        line(40)
    );
    assert!(line(44).contains("no such pull request"), "{}", line(44));
    assert!(
        line(46).contains("label create-sandbox removed"),
        "{}",
        line(46)
    );
    assert!(
        line(49).contains("incomplete (no Application"),
        "{}",
        line(49)
    );
    // Each delete names the pull request and the environment, never the head branch (its
    // author's text; Argo shows the items in node names).
    let delete_of = |pr: u64| {
        deletes
            .iter()
            .find(|d| d["pr-number"].as_str() == Some(pr.to_string().as_str()))
            .unwrap()
            .clone()
    };
    // The keys the workflow `sweep` loops over (tests/wiring.rs, ITEM_KEYS).
    let item = delete_of(35);
    assert_eq!(
        keys_of(&item),
        BTreeSet::from(["pr-number", "environment", "action", "reason"])
    );
    assert_eq!(delete_of(44)["environment"], "sbx-pr-44");
    let warnings: Vec<serde_json::Value> = serde_json::from_str(run.output("warnings")).unwrap();
    assert!(!warnings.is_empty());
    for warning in &warnings {
        assert_eq!(
            keys_of(warning),
            BTreeSet::from(["pr-number", "environment", "expires-at", "reason"])
        );
    }
    // The lookalikes are reported and left out.
    for name in [
        "branch sbx-pr-7-old",
        "namespace apps-sbx-pr-main",
        "database sbx_pr_007",
        "bucket acme-sbx-pr-12x",
        "application sbx-pr-9.yaml.orig",
    ] {
        assert!(
            run.text.contains(&format!("left alone: {name} looks like")),
            "{name}: {}",
            run.text
        );
    }
    assert!(!run.text.contains("feature-x") && !run.text.contains("apps-integration"));

    // The sweep changes nothing: everything is where it was.
    assert!(world
        .git
        .rev_parse("infra", "refs/heads/sbx-pr-35")
        .is_some());
    assert_eq!(world.api.get("/api/v1/namespaces/apps-sbx-pr-35").0, 200);
    assert_eq!(
        world.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'sbx\\_pr\\_%'"
        ),
        "45",
        "44 sandboxes' databases and a lookalike"
    );

    // Without --sleep-after nothing sleeps. With it, the awake, complete, unkept sandboxes
    // inactive that long (1-25 but 2, asleep already: warned ones too); not the kept (31-33) or
    // the incomplete (48-50), nor what is deleted.
    assert!(json(&run, "sleeps").is_empty());
    let sleepy = world
        .sweep(&["--sleep-after", "30m", "--sleep-reason", "night"])
        .ok();
    let sleeps = json(&sleepy, "sleeps");
    let slept: BTreeSet<u64> = sleeps
        .iter()
        .map(|s| s["pr-number"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        slept,
        (1..=25).filter(|pr| *pr != 2).collect(),
        "{}",
        sleepy.text
    );
    for item in &sleeps {
        assert_eq!(
            keys_of(item),
            BTreeSet::from(["pr-number", "environment", "reason"])
        );
        assert_eq!(item["reason"], "night");
    }
    assert_eq!(
        sleepy.outputs["summary"],
        "52 sandboxes: 8 keep, 21 sleep, 3 warn, 5 expire, 15 orphan"
    );
    let bad = world.sweep(&["--sleep-after", "soon"]);
    assert_eq!(bad.code, Some(2), "{}", bad.text);
    let bad = world.sweep(&["--sleep-after", "1h", "--sleep-reason", "capacity"]);
    assert_eq!(bad.code, Some(2), "{}", bad.text);

    // The safety stop: more deletions than --max-deletes lists none.
    let stopped = world.sweep(&["--max-deletes", "10"]);
    assert_eq!(stopped.code, Some(3), "{}", stopped.text);
    assert!(stopped
        .text
        .contains("20 sandboxes to delete, more than --max-deletes 10"));
    assert!(!stopped.outputs.contains_key("deletes"));

    // Only some backends: what is found changes, the decisions of what is found do not.
    let partial = world.sweep(&["--inventory", "databases,secrets"]).ok();
    let decided = by_action(&json(&partial, "deletes"));
    assert_eq!(decided["orphan"], (34..=42).chain(46..=47).collect());
}

#[test]
fn a_token_that_cannot_see_the_repository_decides_nothing() {
    let fleet = BTreeMap::from([(1, ALL)]);
    let world = World::start(&fleet);
    let run = world.sweep(&["--github-repo", "acme/other"]);
    assert_eq!(run.code, Some(3), "{}", run.text);
    assert!(
        run.text.contains("every sandbox would look orphaned"),
        "{}",
        run.text
    );
    assert!(run.outputs.is_empty());
}

#[test]
fn bad_flags_are_exit_2_before_any_request() {
    let world = World::start(&BTreeMap::new());
    for (extra, says) in [
        (vec!["--env-prefix", "../x"], "--env-prefix"),
        (vec!["--env-prefix", ";rm -rf /"], "--env-prefix"),
        (vec!["--namespace-prefix", "Apps_"], "--namespace-prefix"),
        (vec!["--apps-path", "../etc"], "--apps-path"),
        (vec!["--ttl", "1h", "--warn-before", "2h"], "--warn-before"),
        (vec!["--github-repo", "acme/platform/x"], "--github-repo"),
        (vec!["--ttl", "soon"], "--ttl"),
    ] {
        let run = world.sweep(&extra);
        assert_eq!(run.code, Some(2), "{extra:?}: {}", run.text);
        assert!(run.text.contains(says), "{extra:?}: {}", run.text);
    }
    assert!(world.github.requests().is_empty());
}

/// The sweep's cost with 500 sandboxes: GitHub requests per sandbox and wall time, every backend
/// filled (printed for the notes; the bounds are loose, the figures are what matters).
#[test]
fn five_hundred_sandboxes_cost_two_github_requests_each_at_most() {
    let mut fleet = BTreeMap::new();
    for pr in 1..=500 {
        fleet.insert(pr, ALL);
    }
    let filled = Instant::now();
    let world = World::start(&fleet);
    let t = now();
    for pr in 1..=500u64 {
        let state = if pr % 5 == 0 { "closed" } else { "open" };
        world
            .github
            .add_pull_with(pr, state, "feature/x", &["create-sandbox"], t - HOUR);
    }
    eprintln!(
        "500 sandboxes made in every backend in {:.1?}",
        filled.elapsed()
    );
    let started = Instant::now();
    let run = world.sweep(&["--max-deletes", "500"]).ok();
    let took = started.elapsed();
    let requests: u64 = run.outputs["github-requests"].parse().unwrap();
    eprintln!(
        "sweep of 500 sandboxes (6 backends): {:.2?}, {requests} GitHub requests ({:.3} per \
         sandbox)",
        took,
        requests as f64 / 500.0
    );
    // The repository, each pull request, and the timeline of each open one (400).
    assert_eq!(requests, 901);
    assert_eq!(
        run.outputs["summary"],
        "500 sandboxes: 400 keep, 100 orphan"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
}
