//! `make demo`: the whole sandbox lifecycle on this machine. The library's create-sandbox and
//! delete-sandbox workflows run through [`runner`] against local servers: the harness's git server
//! (an infrastructure repository with a kustomize layout, and an app-of-apps repository), OpenBao,
//! fake-gcs-server (the integration bucket and the nightly database backups), PostgreSQL, the
//! Kubernetes and GitHub API doubles. The same run is a test (`tests/demo.rs`).

pub mod runner;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use testkit::{FakeGcs, GitHubDouble, GitServer, KubeApiDouble, OpenBao, Postgres};

use runner::{Environment, Runner};

const TOKEN: &str = "demo-git-token";
const GITHUB_TOKEN: &str = "demo-github-token";
const KUBE_TOKEN: &str = "demo-kube-token";

/// The end state the demo reports (and its test asserts).
#[derive(Debug, Default)]
pub struct Report {
    pub created_branch: bool,
    pub kustomization_diff: String,
    pub application: Option<String>,
    pub namespaces_after_create: Vec<String>,
    pub secrets_after_create: usize,
    /// Objects under documents/ of sandbox 42's bucket, and of the integration bucket.
    pub documents_copied: usize,
    pub documents_in_integration: usize,
    /// restore-db's outputs for sandbox 42 (backup, tables, rows), and what its database holds,
    /// read as the owner with the credentials restore-db put in Vault.
    pub database: BTreeMap<String, String>,
    pub orders_read_as_owner: String,
    /// Customer 1 as the integration database holds it, and as sandbox 42's (masked by the
    /// setting mask-data, as the owner reads it); and the QA customer the sandbox's SQL script
    /// (setting sql-scripts, run-sql) added after the restore.
    pub customer_in_integration: String,
    pub customer_in_sandbox: String,
    pub fixture_customer: String,
    pub after_delete: AfterDelete,
    pub capacity: CapacityReport,
    pub sweep: SweepReport,
    /// Pull request 42's card (report-status): the states it showed, in order, one comment
    /// throughout; its Markdown when the sandbox was ready, and at the end.
    pub card_states: Vec<String>,
    pub card_comments: usize,
    pub card_when_ready: String,
    pub card_at_end: String,
    pub skipped: Vec<String>,
}

/// What the sweep found and removed: sandbox 44 (its pull request closed, the webhook lost) and
/// 45 (inactive for 100 h, past the 72 h TTL); 46, as idle, was extended by a maintainer's
/// `/extend` and stays.
#[derive(Debug, Default)]
pub struct SweepReport {
    pub summary: String,
    /// The `Expires` row of 46's card after the `/extend`.
    pub extended: String,
    /// The environments it deleted.
    pub deleted: Vec<String>,
    /// What is left of sandboxes 44 and 45 afterwards (branches, Application files, databases).
    pub left: Vec<String>,
}

/// Sleep, wake and the cap on live sandboxes.
#[derive(Debug, Default)]
pub struct CapacityReport {
    /// The sleep commit's diff of #42's kustomization.
    pub sleep_diff: String,
    /// #42's card row while it slept.
    pub sleeping_row: String,
    /// The reactions on the maintainer's `/wake`.
    pub wake_reactions: Vec<String>,
    /// Whether the wake left #42's kustomization byte for byte as before the sleep.
    pub woken_as_before: bool,
    /// admit-sandbox's ConfigMap once #46 waited at the cap of two (its keys).
    pub at_cap: Vec<String>,
    /// #46's card row while it waited.
    pub queue_row: String,
    /// The ConfigMap's keys once #45's sleep gave #46 its slot.
    pub after_sleep: Vec<String>,
}

#[derive(Debug, Default)]
pub struct AfterDelete {
    pub branch_of_closed_pr: bool,
    pub branch_of_open_pr: bool,
    pub application: bool,
    pub namespaces: Vec<String>,
    pub secrets: usize,
    /// Sandbox databases and roles still on the server (drop-db removes them).
    pub databases: Vec<String>,
    pub roles: Vec<String>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The multicall binary next to this executable (or the test's, one level up).
pub fn steps_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("sandbox-steps");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "sandbox-steps is not built next to {}: run `cargo build -p sandbox-steps`",
        exe.display()
    );
}

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  selector:
    matchLabels: {app: shop}
  template:
    metadata:
      labels: {app: shop}
    spec:
      containers:
      - name: api
        image: registry.acme.dev/shop/api:0.1.0
      - name: web
        image: registry.acme.dev/shop/web:0.1.0
";

fn infra_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("kustomize/base/kustomization.yaml", "resources:\n  - deployment.yaml\n"),
        ("kustomize/base/deployment.yaml", DEPLOYMENT),
        (
            "kustomize/components/debug/kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n",
        ),
        (
            "kustomize/environments/integration/kustomization.yaml",
            "# Integration: what sandboxes start from.\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: apps-integration\nbases:\n  - ../../base\nimages:\n  - name: registry.acme.dev/shop/api\n    newTag: 1.42.0\n  - name: registry.acme.dev/shop/web\n    newTag: 2.7.1\n",
        ),
        (
            "kustomize/environments/sandbox/kustomization.yaml",
            "# The sandbox overlay: create-sandbox patches it on the sandbox's branch.\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: apps-sandbox   # set per sandbox\nbases:\n  - ../../base\nimages:\n  - name: registry.acme.dev/shop/api\n    newTag: latest\nconfigMapGenerator:\n  - name: sandbox-config\n    literals:\n      - ENVIRONMENT=sandbox\n",
        ),
        (
            "db/sandbox/0001_qa_customer.sql",
            "-- The QA team's login in every sandbox (run-sql, after the restore and its masking).\n\
             INSERT INTO shop.customers (email, full_name) VALUES ('qa@acme.test', 'QA Robot');\n",
        ),
        ("terraform/sandbox/main.tf", "# the one sandbox module: every sandbox is a workspace of it\nvariable \"environment\" {}\n"),
    ]
}

fn git(server: &GitServer, repo: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("git")
        .args(args)
        .current_dir(server.repo_path(repo))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn namespaces(runner: &Runner) -> Vec<String> {
    runner
        .state
        .lock()
        .unwrap()
        .objects
        .iter()
        .filter_map(|o| o.strip_prefix("Namespace//").map(str::to_owned))
        .collect()
}

fn count_secrets(bao: &OpenBao, path: &str) -> usize {
    let mut count = 0;
    let mut folders = vec![path.to_owned()];
    while let Some(folder) = folders.pop() {
        if bao.status("GET", &format!("secret/metadata/{folder}")) == 200 {
            count += 1;
        }
        if bao.status("LIST", &format!("secret/metadata/{folder}")) != 200 {
            continue;
        }
        let listing = bao.api("LIST", &format!("secret/metadata/{folder}"), None);
        for key in listing["data"]["keys"].as_array().into_iter().flatten() {
            let key = key.as_str().unwrap();
            match key.strip_suffix('/') {
                Some(sub) => folders.push(format!("{folder}/{sub}")),
                None => {
                    count += usize::from(
                        bao.status("GET", &format!("secret/metadata/{folder}/{key}")) == 200,
                    )
                }
            }
        }
    }
    count
}

/// Runs the lifecycle: create sandboxes for pull requests 42 and 43, then delete both: 42 closed,
/// 43 with its label removed while another pull request (CI's) is still open against its branch,
/// which keeps that branch. `verbose` prints each step as it runs.
pub fn run(verbose: bool) -> Result<Report, String> {
    let say = |text: &str| {
        if verbose {
            println!("{}", runner::wrap_text(text));
        }
    };
    say("Starting local servers: git (smart HTTP), OpenBao, fake-gcs-server, PostgreSQL, the Kubernetes and GitHub API doubles");
    let git_server = GitServer::start(TOKEN);
    let infra = git_server.create_repo("infra", &infra_files());
    let apps = git_server.create_repo(
        "gitops",
        &[
            ("apps/sandboxes/.keep", ""),
            ("apps/platform.yaml", "# platform apps\n"),
        ],
    );
    let bao = OpenBao::start();
    let gcs = FakeGcs::start();
    gcs.create_bucket("acme-integration");
    for i in 0..25 {
        let name = format!("documents/invoices/2026/invoice-{i:03}.pdf");
        gcs.put_object(
            "acme-integration",
            &name,
            "application/pdf",
            format!("invoice {i}").as_bytes(),
        );
    }
    gcs.put_object(
        "acme-integration",
        "exports/nightly.csv",
        "text/csv",
        b"not copied\n",
    );
    let pg = Postgres::start_with_password("demo-admin-password");
    nightly_backups(&pg, &gcs)?;
    let kube = KubeApiDouble::start(KUBE_TOKEN);
    let github = GitHubDouble::start("acme", "platform", GITHUB_TOKEN);
    github.add_pull(42, "open", "feature/JIRA-42-checkout");
    github.add_pull(43, "open", "feature/JIRA-43-search");
    // A pull request still open against sandbox 43's branch (CI bumping an image there).
    github.add_pull(99, "open", "sbx-pr-43");
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let kubeconfig = scratch.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, KUBE_TOKEN);

    let secrets = BTreeMap::from([
        (
            "sandbox-steps-git".to_owned(),
            BTreeMap::from([("token".to_owned(), TOKEN.to_owned())]),
        ),
        (
            "sandbox-steps-github".to_owned(),
            BTreeMap::from([("token".to_owned(), GITHUB_TOKEN.to_owned())]),
        ),
        (
            "sandbox-steps-db-admin".to_owned(),
            BTreeMap::from([("url".to_owned(), pg.url("postgres"))]),
        ),
        // The setting mask-data: the rules and the key, as install step 2 creates them.
        (
            "sandbox-steps-masking".to_owned(),
            BTreeMap::from([
                (
                    "rules.yaml".to_owned(),
                    "shop.customers:\n  email: email\n  full_name: name\n".to_owned(),
                ),
                ("key".to_owned(), "demo-masking-key".to_owned()),
            ]),
        ),
    ]);
    let environment = Environment {
        binary: steps_binary(),
        secrets,
        extra_env: vec![
            ("KUBECONFIG".into(), kubeconfig.display().to_string()),
            ("VAULT_TOKEN".into(), bao.root_token().to_owned()),
            ("SBX_GITHUB_API_URL".into(), github.url()),
            ("STORAGE_EMULATOR_HOST".into(), gcs.endpoint()),
        ],
        kube,
        scratch: scratch.path().to_owned(),
    };
    let mut runner = Runner::new(&repo_root().join("workflow-templates"), environment);
    runner.verbose = verbose;
    // The data settings of install/example, on: the sandboxes' SQL scripts and masking.
    runner.install_settings(&BTreeMap::from([
        ("sql-scripts".to_owned(), "db/sandbox".to_owned()),
        ("mask-data".to_owned(), "true".to_owned()),
    ]));

    let parameters = |pr: u64, head: &str| {
        BTreeMap::from([
            ("pr-number".to_owned(), pr.to_string()),
            ("head-ref".to_owned(), head.to_owned()),
            ("repository".to_owned(), "acme/platform".to_owned()),
            ("repository-name".to_owned(), "platform".to_owned()),
            ("infra-repo".to_owned(), infra.clone()),
            ("apps-repo".to_owned(), apps.clone()),
            ("vault-addr".to_owned(), bao.addr()),
            (
                "database-backups".to_owned(),
                "gs://acme-integration-backups/nightly/".to_owned(),
            ),
            // No Argo CD runs here to sync the committed Application: nothing to wait for.
            ("wait-healthy".to_owned(), "false".to_owned()),
        ])
    };

    let mut report = Report::default();
    for (pr, head) in [
        (42, "feature/JIRA-42-checkout"),
        (43, "feature/JIRA-43-search"),
    ] {
        say(&format!(
            "\n== create-sandbox for acme/platform#{pr} ({head})"
        ));
        gcs.create_bucket(&format!("acme-sbx-pr-{pr}"));
        say(&format!(
            "  (created bucket acme-sbx-pr-{pr}, as the skipped Terraform apply would)"
        ));
        runner.run_workflow("create-sandbox", None, &parameters(pr, head), "argo")?;
        // What the (skipped) Terraform apply stores for the sandbox in Vault (restore-db wrote
        // the database owner's credentials, sandboxes/sbx-pr-N/db, itself).
        bao.put_kv2(
            &format!("sandboxes/sbx-pr-{pr}/app/api-key"),
            json!({"value": "generated"}),
        );
        say(&format!("  (seeded secret/sandboxes/sbx-pr-{pr}/app/api-key, as the skipped Terraform apply would)"));
    }

    report.card_when_ready = card_of(&github, 42);
    say("\n== The card on acme/platform#42 (report-status), once ready:");
    say_block(verbose, &report.card_when_ready);

    // A push to #42: update-sandbox (no images of the pull request's own are configured here,
    // so the sandbox keeps its versions and the card follows the new head).
    let pushed = "5ca1ab1e".repeat(5);
    github.set_pull_head(42, &pushed);
    say(&format!(
        "\n== update-sandbox for acme/platform#42 (a push: head {})",
        &pushed[..12]
    ));
    let mut update = parameters(42, "feature/JIRA-42-checkout");
    update.insert("head-sha".to_owned(), pushed.clone());
    runner.run_workflow("update-sandbox", None, &update, "argo")?;

    report.created_branch = git(
        &git_server,
        "infra",
        &["rev-parse", "--verify", "sbx-pr-42"],
    )
    .0;
    report.kustomization_diff = git(
        &git_server,
        "infra",
        &[
            "diff",
            "main",
            "sbx-pr-42",
            "--",
            "kustomize/environments/sandbox",
        ],
    )
    .1;
    let (found, text) = git(
        &git_server,
        "gitops",
        &["show", "main:apps/sandboxes/sbx-pr-42.yaml"],
    );
    report.application = found.then_some(text);
    report.namespaces_after_create = namespaces(&runner);
    report.secrets_after_create = count_secrets(&bao, "sandboxes/sbx-pr-42");
    report.documents_copied = gcs.list("acme-sbx-pr-42", "documents/").len();
    report.documents_in_integration = gcs.list("acme-integration", "documents/").len();
    report.database = runner
        .state
        .lock()
        .unwrap()
        .first_outputs_of("restore-database");
    let owner = bao.api("GET", "secret/data/sandboxes/sbx-pr-42/db", None);
    report.orders_read_as_owner = psql_as(
        &pg,
        owner["data"]["data"]["url"].as_str().unwrap_or_default(),
        "SELECT current_user || ' reads ' || count(*) || ' orders' FROM shop.orders",
    );
    let customer = "SELECT id || ' | ' || email || ' | ' || full_name FROM shop.customers WHERE";
    report.customer_in_integration = pg.psql("integration", &format!("{customer} id = 1"));
    let owner_url = owner["data"]["data"]["url"].as_str().unwrap_or_default();
    report.customer_in_sandbox = psql_as(&pg, owner_url, &format!("{customer} id = 1"));
    report.fixture_customer = psql_as(&pg, owner_url, &format!("{customer} email LIKE 'qa@%'"));

    say("\n== Sandbox sbx-pr-42 is up");
    say(&format!(
        "branch sbx-pr-42 of the infra repository; its kustomization diff:\n{}",
        report.kustomization_diff
    ));
    say(&format!(
        "Application apps/sandboxes/sbx-pr-42.yaml:\n{}",
        report.application.clone().unwrap_or_default()
    ));
    say(&format!(
        "namespaces: {:?}; secrets under sandboxes/sbx-pr-42: {}",
        report.namespaces_after_create, report.secrets_after_create
    ));
    say(&format!(
        "bucket acme-sbx-pr-42: {} of the integration bucket's {} documents copied (server side)",
        report.documents_copied, report.documents_in_integration
    ));
    say(&format!(
        "database sbx_pr_42: {} restored, {} tables, {} rows; with the credentials in \
         secret/sandboxes/sbx-pr-42/db: {}",
        report.database.get("backup").map_or("?", String::as_str),
        report.database.get("tables").map_or("?", String::as_str),
        report.database.get("rows").map_or("?", String::as_str),
        report.orders_read_as_owner
    ));
    say(&format!(
        "personal data masked (mask-data: restore-db before the name, mask-db after the \
         scripts):\n  integration: {}\n  sbx_pr_42:   {}\n  and run-sql's fixture (db/sandbox): {}",
        report.customer_in_integration, report.customer_in_sandbox, report.fixture_customer
    ));

    // #42 idle: the sweep (its sleep-after) puts it to sleep; here sleep-sandbox runs as the
    // sweep's `sleep` step submits it. Then a maintainer comments /wake (the Sensor on
    // issue_comment submits wake-sandbox).
    let kustomization = "kustomize/environments/sandbox/kustomization.yaml";
    let show_42 = format!("sbx-pr-42:{kustomization}");
    let before_sleep = git(&git_server, "infra", &["show", &show_42]).1;
    say("\n== sleep-sandbox for acme/platform#42 (idle, as the sweep's sleep-after decides)");
    let mut sleep = parameters(42, "feature/JIRA-42-checkout");
    sleep.insert("reason".to_owned(), "idle".to_owned());
    runner.run_workflow("sleep-sandbox", None, &sleep, "argo")?;
    report.capacity.sleep_diff = git(
        &git_server,
        "infra",
        &["diff", "sbx-pr-42~1", "sbx-pr-42", "--", kustomization],
    )
    .1;
    report.capacity.sleeping_row = card_of(&github, 42)
        .lines()
        .find(|l| l.starts_with("| Sleeping |"))
        .unwrap_or_default()
        .to_owned();
    say(&format!(
        "the sleep, one commit on sbx-pr-42 (every Deployment and StatefulSet at 0; what was \
         there recorded):\n{}#42's card: {}",
        report.capacity.sleep_diff, report.capacity.sleeping_row
    ));
    github.set_permission("maintainer", "write");
    let wake_comment = github.add_comment(42, "maintainer", "/wake");
    say("\n== wake-sandbox for acme/platform#42 (a maintainer commented /wake)");
    let mut wake = parameters(42, "feature/JIRA-42-checkout");
    wake.insert("comment-id".to_owned(), wake_comment.to_string());
    runner.run_workflow("wake-sandbox", None, &wake, "argo")?;
    report.capacity.wake_reactions = github.reactions(wake_comment);
    report.capacity.woken_as_before =
        git(&git_server, "infra", &["show", &show_42]).1 == before_sleep;
    say(&format!(
        "the comment's reactions: {:?}; the kustomization as before the sleep: {}",
        report.capacity.wake_reactions, report.capacity.woken_as_before
    ));

    // Pull request 42 is merged and closed; 43 loses its label but stays open.
    github.set_pull_state(42, "closed");
    for (pr, head, why) in [
        (42, "feature/JIRA-42-checkout", "closed"),
        (
            43,
            "feature/JIRA-43-search",
            "label removed; CI's pull request #99 still open on sbx-pr-43",
        ),
    ] {
        say(&format!(
            "\n== delete-sandbox for acme/platform#{pr} ({why})"
        ));
        runner.run_workflow("delete-sandbox", None, &parameters(pr, head), "argo")?;
    }
    report.after_delete = AfterDelete {
        branch_of_closed_pr: git(
            &git_server,
            "infra",
            &["rev-parse", "--verify", "sbx-pr-42"],
        )
        .0,
        branch_of_open_pr: git(
            &git_server,
            "infra",
            &["rev-parse", "--verify", "sbx-pr-43"],
        )
        .0,
        application: git(
            &git_server,
            "gitops",
            &["show", "main:apps/sandboxes/sbx-pr-42.yaml"],
        )
        .0,
        namespaces: namespaces(&runner),
        secrets: count_secrets(&bao, "sandboxes/sbx-pr-42")
            + count_secrets(&bao, "sandboxes/sbx-pr-43"),
        databases: pg
            .psql(
                "postgres",
                "SELECT datname FROM pg_database WHERE datname LIKE 'sbx\\_%' ORDER BY 1",
            )
            .lines()
            .map(str::to_owned)
            .collect(),
        roles: pg
            .psql(
                "postgres",
                "SELECT rolname FROM pg_roles WHERE rolname LIKE 'sbx\\_%' ORDER BY 1",
            )
            .lines()
            .map(str::to_owned)
            .collect(),
    };
    say("\n== After delete-sandbox");
    say(&format!(
        "branch sbx-pr-42: {}; branch sbx-pr-43 (#99 open on it): {}; Application sbx-pr-42: {}; namespaces left: {:?}; secrets left: {}",
        if report.after_delete.branch_of_closed_pr { "still there" } else { "deleted" },
        if report.after_delete.branch_of_open_pr { "kept" } else { "deleted" },
        if report.after_delete.application { "still there" } else { "removed" },
        report.after_delete.namespaces,
        report.after_delete.secrets,
    ));
    say(&format!(
        "databases left: {:?}; roles left: {:?} (drop-db); left for the skipped Terraform \
         destroy: buckets acme-sbx-pr-42, acme-sbx-pr-43",
        report.after_delete.databases, report.after_delete.roles
    ));
    // The sweep: sandbox 44's pull request is closed but its webhook was lost; 45's has been
    // inactive for 100 hours (past the 72 h TTL). The installation's settings are the templates'
    // defaults (the sweep's delete-sandbox Workflows get them so).
    for pr in [42, 43] {
        gcs.delete_bucket(&format!("acme-sbx-pr-{pr}"));
    }
    say("  (deleted buckets acme-sbx-pr-42, acme-sbx-pr-43, as the skipped Terraform destroy would)");
    let hours_ago = |h: u64| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() - h * 3600)
            .unwrap_or_default()
    };
    github.add_pull_with(
        44,
        "open",
        "feature/JIRA-44-cart",
        &["create-sandbox"],
        hours_ago(1),
    );
    github.add_pull_with(
        45,
        "open",
        "feature/JIRA-45-export",
        &["create-sandbox"],
        hours_ago(100),
    );
    github.add_pull_with(
        46,
        "open",
        "feature/JIRA-46-search",
        &["create-sandbox"],
        hours_ago(100),
    );
    // A cap of two live sandboxes (install setting max-sandboxes) and three pull requests
    // asking: #44 and #45 are admitted, #46 waits its turn with its place on its card, until
    // #45, idle for 100 h, is put to sleep and its slot goes to #46.
    say(
        "\n== create-sandbox for acme/platform#44, #45 and #46 at a cap of two live sandboxes \
         (max-sandboxes: 2): they run at once",
    );
    let capped = |pr: u64, head: &str| {
        let mut p = parameters(pr, head);
        p.insert("max-sandboxes".to_owned(), "2".to_owned());
        p.insert(
            "requested-at".to_owned(),
            format!("2026-12-01T09:0{}:00Z", pr - 44),
        );
        p
    };
    let admission_keys = || {
        runner
            .env()
            .kube
            .configmap_data("argo", "sandbox-admission")
            .unwrap_or_default()
            .into_keys()
            .collect::<Vec<String>>()
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| -> Result<(), String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while !done() {
            if std::time::Instant::now() > deadline {
                return Err(format!("the demo waited 300 s for {what}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Ok(())
    };
    for pr in [44, 45, 46] {
        gcs.create_bucket(&format!("acme-sbx-pr-{pr}"));
    }
    std::thread::scope(|scope| -> Result<(), String> {
        let runner = &runner;
        let first: Vec<_> = [(44, "feature/JIRA-44-cart"), (45, "feature/JIRA-45-export")]
            .into_iter()
            .map(|(pr, head)| {
                let parameters = capped(pr, head);
                scope
                    .spawn(move || runner.run_workflow("create-sandbox", None, &parameters, "argo"))
            })
            .collect();
        wait_for("#44 and #45 admitted", &|| {
            let keys = admission_keys();
            keys.contains(&"admitted.sbx-pr-44".to_owned())
                && keys.contains(&"admitted.sbx-pr-45".to_owned())
        })?;
        let third_parameters = capped(46, "feature/JIRA-46-search");
        let third = scope
            .spawn(move || runner.run_workflow("create-sandbox", None, &third_parameters, "argo"));
        wait_for("#46's card to show its place", &|| {
            card_of(&github, 46).contains("| Queue |")
        })?;
        report.capacity.at_cap = admission_keys();
        report.capacity.queue_row = card_of(&github, 46)
            .lines()
            .find(|l| l.starts_with("| Queue |"))
            .unwrap_or_default()
            .to_owned();
        say(&format!(
            "admit-sandbox's ConfigMap: {:?}; #46's card: {}",
            report.capacity.at_cap, report.capacity.queue_row
        ));
        for run in first {
            run.join().map_err(|_| "a create panicked".to_owned())??;
        }
        say("\n== sleep-sandbox for acme/platform#45 (idle for 100 h): its slot goes to #46");
        let mut sleep = parameters(45, "feature/JIRA-45-export");
        sleep.insert("reason".to_owned(), "idle".to_owned());
        runner.run_workflow("sleep-sandbox", None, &sleep, "argo")?;
        third.join().map_err(|_| "a create panicked".to_owned())??;
        report.capacity.after_sleep = admission_keys();
        say(&format!(
            "#46 created; admit-sandbox's ConfigMap: {:?}",
            report.capacity.after_sleep
        ));
        Ok(())
    })?;
    github.set_pull_state(44, "closed");
    // A maintainer comments `/extend` on #46: the Sensor on issue_comment would submit
    // extend-sandbox; report-status checks the write access, reacts, and the card shows the new
    // expiry. The sweep reads the same comment from the pull request's timeline.
    let comment = github.add_comment(46, "maintainer", "/extend\nreviewing it tomorrow");
    say(
        "\n== extend-sandbox for acme/platform#46 (a maintainer commented /extend; idle for 100 h)",
    );
    runner.run_workflow(
        "extend-sandbox",
        None,
        &BTreeMap::from([
            ("pr-number".to_owned(), "46".to_owned()),
            ("repository".to_owned(), "acme/platform".to_owned()),
            ("comment-id".to_owned(), comment.to_string()),
        ]),
        "argo",
    )?;
    report.sweep.extended = card_of(&github, 46)
        .lines()
        .find(|l| l.starts_with("| Expires |"))
        .unwrap_or_default()
        .to_owned();
    say(&format!(
        "  the comment's reactions: {:?}; #46's card: {}",
        github.reactions(comment),
        report.sweep.extended
    ));
    runner.install_settings(&parameters(0, ""));
    say(
        "\n== sweep (apply: true): #44 was closed and its webhook lost; #45 has been inactive for 100 h \
         (ttl 72 h), #46 too but extended; namespaces are not taken stock of here (this runner \
         keeps them itself)",
    );
    runner.run_workflow(
        "sweep",
        None,
        &BTreeMap::from([
            ("apply".to_owned(), "true".to_owned()),
            ("gcs-project".to_owned(), "demo".to_owned()),
            (
                "inventory".to_owned(),
                "branches,applications,databases,buckets,secrets".to_owned(),
            ),
        ]),
        "argo",
    )?;
    let decided = runner.state.lock().unwrap().first_outputs_of("decide");
    report.sweep.summary = decided.get("summary").cloned().unwrap_or_default();
    let deletes: Vec<serde_json::Value> =
        serde_json::from_str(decided.get("deletes").map_or("[]", String::as_str))
            .map_err(|e| e.to_string())?;
    report.sweep.deleted = deletes
        .iter()
        .filter_map(|d| d["environment"].as_str().map(str::to_owned))
        .collect();
    for pr in [44, 45] {
        if git(
            &git_server,
            "infra",
            &["rev-parse", "--verify", &format!("sbx-pr-{pr}")],
        )
        .0
        {
            report.sweep.left.push(format!("branch sbx-pr-{pr}"));
        }
        if git(
            &git_server,
            "gitops",
            &["show", &format!("main:apps/sandboxes/sbx-pr-{pr}.yaml")],
        )
        .0
        {
            report.sweep.left.push(format!("Application sbx-pr-{pr}"));
        }
        let database = pg.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = 'sbx_pr_{pr}'"),
        );
        if database != "0" {
            report.sweep.left.push(format!("database sbx_pr_{pr}"));
        }
    }
    say(&format!(
        "the sweep decided: {}; deleted {:?}; left of them: {:?}",
        report.sweep.summary, report.sweep.deleted, report.sweep.left
    ));

    report.card_at_end = card_of(&github, 42);
    report.card_comments = github
        .comments(42)
        .iter()
        .filter(|c| c.body.contains("sandbox-steps:card"))
        .count();
    // Every state the card showed, from what report-status wrote (created, then edited).
    for body in github.comment_history(42) {
        let state = report_status::shown_state(&body).map_or("?", |s| s.name());
        let state = state.to_owned();
        if report.card_states.last() != Some(&state) {
            report.card_states.push(state);
        }
    }
    say(&format!(
        "\n== The card on acme/platform#42: {} comment, states {}; at the end:",
        report.card_comments,
        report.card_states.join(" → ")
    ));
    say_block(verbose, &report.card_at_end);

    report.skipped = runner.state.lock().unwrap().skipped.clone();
    say(&format!("\nNot run here ({}):", report.skipped.len()));
    for s in &report.skipped {
        say(&format!("  {s}"));
    }
    Ok(report)
}

/// The integration database (a small shop) and three nights of its backups, `pg_dump | gzip` as
/// a nightly job writes them; the newest night has the most orders.
fn nightly_backups(pg: &Postgres, gcs: &FakeGcs) -> Result<(), String> {
    pg.psql("postgres", "CREATE DATABASE integration");
    pg.psql(
        "integration",
        "CREATE SCHEMA shop; \
         CREATE TABLE shop.customers (id serial PRIMARY KEY, email text UNIQUE NOT NULL, \
         full_name text); \
         CREATE TABLE shop.orders (id serial PRIMARY KEY, customer_id int REFERENCES \
         shop.customers, amount numeric(10, 2), note text); \
         CREATE FUNCTION shop.total(c int) RETURNS numeric LANGUAGE sql AS $$ \
         SELECT coalesce(sum(amount), 0) FROM shop.orders WHERE customer_id = c; $$; \
         INSERT INTO shop.customers (email, full_name) SELECT 'customer' || g || '@example.com', \
         (ARRAY['Ada Lovelace', 'Grace Hopper', 'Alan Turing', 'Barbara Liskov'])[1 + g % 4] \
         FROM generate_series(1, 50) g;",
    );
    gcs.create_bucket("acme-integration-backups");
    for (night, orders) in [
        ("2026-11-20", 800),
        ("2026-11-21", 900),
        ("2026-11-22", 1000),
    ] {
        pg.psql(
            "integration",
            &format!(
                "TRUNCATE shop.orders; INSERT INTO shop.orders (customer_id, amount, note) SELECT \
                 1 + g % 50, g * 1.25, 'order ' || g || E';\tnight {night}' FROM \
                 generate_series(1, {orders}) g"
            ),
        );
        let dump = Command::new(pg.bindir().join("pg_dump"))
            .arg(pg.url("integration"))
            .output()
            .map_err(|e| format!("pg_dump: {e}"))?;
        if !dump.status.success() {
            return Err(format!(
                "pg_dump: {}",
                String::from_utf8_lossy(&dump.stderr)
            ));
        }
        let gzipped = testkit::gzip(&dump.stdout);
        gcs.put_object(
            "acme-integration-backups",
            &format!("nightly/shop-{night}.sql.gz"),
            "application/gzip",
            &gzipped,
        );
    }
    Ok(())
}

/// Pull request `pr`'s card, without its hidden marker line.
fn card_of(github: &GitHubDouble, pr: u64) -> String {
    github
        .comments(pr)
        .iter()
        .find(|c| c.body.contains("sandbox-steps:card"))
        .map(|c| {
            c.body
                .split_once('\n')
                .map_or("", |(_, rest)| rest)
                .to_owned()
        })
        .unwrap_or_default()
}

/// A block of text (the card's Markdown), indented, as it is.
fn say_block(verbose: bool, text: &str) {
    if verbose {
        for line in text.lines() {
            println!("    {line}");
        }
    }
}

/// One query through `psql` with a connection URL (the owner's, from Vault).
fn psql_as(pg: &Postgres, url: &str, sql: &str) -> String {
    let out = Command::new(pg.bindir().join("psql"))
        .args(["-X", "-A", "-t", "-d", url, "-c", sql])
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => format!("failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => format!("failed: {e}"),
    }
}
