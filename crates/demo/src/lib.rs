//! `make demo`: the whole sandbox lifecycle on this machine. The library's create-sandbox and
//! delete-sandbox workflows run through [`runner`] against local servers: the harness's git server
//! (an infrastructure repository with a kustomize layout, and an app-of-apps repository), OpenBao,
//! the Kubernetes and GitHub API doubles. The same run is a test (`tests/demo.rs`).

pub mod runner;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use testkit::{FakeGcs, GitHubDouble, GitServer, KubeApiDouble, OpenBao};

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
    pub after_delete: AfterDelete,
    pub skipped: Vec<String>,
}

#[derive(Debug, Default)]
pub struct AfterDelete {
    pub branch_of_closed_pr: bool,
    pub branch_of_open_pr: bool,
    pub application: bool,
    pub namespaces: Vec<String>,
    pub secrets: usize,
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
        ("terraform/environments/sbx-pr-42/main.tf", "# the sandbox's infrastructure\n"),
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
            println!("{text}");
        }
    };
    say("Starting local servers: git (smart HTTP), OpenBao, fake-gcs-server, the Kubernetes and GitHub API doubles");
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
    ]);
    let environment = Environment {
        binary: steps_binary(),
        secrets,
        extra_env: vec![
            ("KUBECONFIG".into(), kubeconfig.display().to_string()),
            ("VAULT_TOKEN".into(), bao.root_token().to_owned()),
            ("GITHUB_API_URL".into(), github.url()),
            ("STORAGE_EMULATOR_HOST".into(), gcs.endpoint()),
        ],
        kube,
        scratch: scratch.path().to_owned(),
    };
    let mut runner = Runner::new(&repo_root().join("workflow-templates"), environment);
    runner.verbose = verbose;

    let parameters = |pr: u64, head: &str| {
        BTreeMap::from([
            ("pr-number".to_owned(), pr.to_string()),
            ("head-ref".to_owned(), head.to_owned()),
            ("repository".to_owned(), "acme/platform".to_owned()),
            ("repository-name".to_owned(), "platform".to_owned()),
            ("infra-repo".to_owned(), infra.clone()),
            ("apps-repo".to_owned(), apps.clone()),
            ("vault-addr".to_owned(), bao.addr()),
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
        // What the (skipped) Terraform apply stores for the sandbox in Vault.
        for (path, data) in [
            (
                format!("sandboxes/sbx-pr-{pr}/db"),
                json!({"username": format!("sbx_pr_{pr}"), "password": "generated"}),
            ),
            (
                format!("sandboxes/sbx-pr-{pr}/app/api-key"),
                json!({"value": "generated"}),
            ),
        ] {
            bao.put_kv2(&path, data);
        }
        say(&format!("  (seeded 2 secrets under secret/sandboxes/sbx-pr-{pr}, as the skipped Terraform apply would)"));
    }

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
    };
    report.skipped = runner.state.lock().unwrap().skipped.clone();
    say("\n== After delete-sandbox");
    say(&format!(
        "branch sbx-pr-42: {}; branch sbx-pr-43 (#99 open on it): {}; Application sbx-pr-42: {}; namespaces left: {:?}; secrets left: {}",
        if report.after_delete.branch_of_closed_pr { "still there" } else { "deleted" },
        if report.after_delete.branch_of_open_pr { "kept" } else { "deleted" },
        if report.after_delete.application { "still there" } else { "removed" },
        report.after_delete.namespaces,
        report.after_delete.secrets,
    ));
    say(&format!("\nNot run here ({}):", report.skipped.len()));
    for s in &report.skipped {
        say(&format!("  {s}"));
    }
    Ok(report)
}
